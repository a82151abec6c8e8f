"""Job pusher: inserts a job (20 random letters) into the queue every few seconds.

Configuration comes from the environment:
  DATABASE_URL       a libpq connection string, URI or key=value (required)
  PUSH_INTERVAL_MIN  shortest pause between two jobs, in seconds (default 1)
  PUSH_INTERVAL_MAX  longest pause between two jobs, in seconds (default 3)
  PUSH_COUNT         exit 0 after this many jobs (default 0: never)

SIGTERM or SIGINT: exit 0 at once. A job is counted only once its commit is known to have landed.
"""

import math
import os
import random
import re
import select
import signal
import string
import sys

import psycopg2

INSERT_SQL = "INSERT INTO jobs (payload) VALUES (%s) RETURNING id"
# A job a consumer has recorded is in done_jobs, any other is still in jobs; one statement sees both
# tables at the same instant, so a landed job is found in exactly one of them.
LANDED_SQL = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = %s) OR EXISTS (SELECT 1 FROM done_jobs WHERE id = %s)"

RETRY_WAIT = 2.0  # seconds between two attempts to reach the database
CONNECT_TIMEOUT = 10  # seconds; a host that drops packets would otherwise block a connect for minutes


class ConfigError(Exception):
    pass


def seconds(env, name, default):
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number of seconds, 0 or more, got {raw!r}")
    return value


def read_config(env):
    url = env.get("DATABASE_URL", "")
    if not url.strip():
        raise ConfigError(
            "DATABASE_URL is not set: give a connection string such as postgresql://user:password@host:5432/dbname"
        )
    try:
        parts = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        # The parser's message quotes the string, password included, so it is not repeated here.
        raise ConfigError(
            "DATABASE_URL is not a valid connection string: use a URI such as "
            "postgresql://user:password@host:5432/dbname, or key=value pairs"
        ) from None
    # The parser accepts any port; libpq would reject it only when connecting, again and again.
    if any(port and not port.isdigit() for port in parts.get("port", "").split(",")):
        raise ConfigError(f"DATABASE_URL has a port that is not a number: {parts['port']!r}")
    low = seconds(env, "PUSH_INTERVAL_MIN", 1.0)
    high = seconds(env, "PUSH_INTERVAL_MAX", 3.0)
    if low > high:
        raise ConfigError(f"PUSH_INTERVAL_MIN ({low:g}) is above PUSH_INTERVAL_MAX ({high:g})")
    raw = env.get("PUSH_COUNT", "0")
    if not re.fullmatch(r"[0-9]+", raw.strip()):
        raise ConfigError(f"PUSH_COUNT must be a whole number, 0 for no limit, got {raw!r}")
    return url, low, high, int(raw)


def say(line):
    """One line of output. print, as in the consumer, where the logging module cost more per job than the
    claim itself; the two loops then read alike."""
    print(line, flush=True)


def reason(error):
    """The first line of a database error: libpq's messages run over several lines."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class StopRequest:
    """Set once SIGTERM or SIGINT arrives; wait() sleeps but returns as soon as it is set.

    Not threading.Event: a signal handler runs in the main thread between two bytecodes, possibly while
    that thread holds the Event's internal lock inside wait(), and Event.set() would then block forever.
    A pipe needs no lock: set() writes a byte to it, and wait() is a select() that the byte ends at once.
    """

    def __init__(self):
        self._set = False
        self._read, self._write = os.pipe()

    def wake_on_signals(self):
        """Have the interpreter write to the pipe the instant a signal arrives, before any handler runs.

        A handler runs only between two bytecodes: a signal that lands just as wait() enters its select()
        would be handled only when that select ends, a whole wait later (up to PUSH_INTERVAL_MAX or
        RETRY_WAIT). The wakeup fd is written in C, at once, so the select ends at once.
        """
        os.set_blocking(self._write, False)  # as set_wakeup_fd requires
        signal.set_wakeup_fd(self._write)

    def set(self):
        self._set = True
        os.write(self._write, b"!")

    def is_set(self):
        return self._set

    def wait(self, seconds):
        select.select([self._read], [], [], seconds)
        return self._set


def stop_on_signals():
    stop = StopRequest()

    def handle(signum, frame):
        if stop.is_set():
            raise SystemExit(f"{signal.Signals(signum).name} again: exiting now")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wake_on_signals()
    return stop


def connect(url, stop):
    while not stop.is_set():
        try:
            conn = psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT)
        except psycopg2.Error as error:
            say(f"Cannot connect to the database ({reason(error)}); retrying in {RETRY_WAIT:g}s")
            stop.wait(RETRY_WAIT)
        else:
            say("Connected to the database")
            return conn
    return None


def landed(conn, job_id):
    with conn:
        with conn.cursor() as cur:
            cur.execute(LANDED_SQL, (job_id, job_id))
            return cur.fetchone()[0]


def main():
    try:
        url, low, high, count = read_config(os.environ)
    except ConfigError as error:
        print(f"pusher: {error}", file=sys.stderr)
        return 2
    stop = stop_on_signals()

    conn = None
    pushed = 0
    unsure = None  # (id, payload) of a job whose commit was cut off: it may or may not have landed
    while not stop.is_set() and (count == 0 or pushed < count):
        if conn is None:
            conn = connect(url, stop)
            if conn is None:
                break
        try:
            if unsure is not None:
                # Pushing again blindly could queue the job twice; not pushing could lose it. Look it up.
                job_id, payload = unsure
                if landed(conn, job_id):
                    pushed += 1
                    say(f"Pushed job {job_id}: {payload} (its commit was cut off, but it landed)")
                else:
                    say(f"Job {job_id} did not land; pushing a new one")
                unsure = None
                continue
            payload = "".join(random.choices(string.ascii_letters, k=20))
            with conn.cursor() as cur:
                cur.execute(INSERT_SQL, (payload,))
                job_id = cur.fetchone()[0]
            unsure = (job_id, payload)
            conn.commit()
            unsure = None
            pushed += 1
            say(f"Pushed job {job_id}: {payload}")
        except psycopg2.errors.UndefinedTable as error:
            conn.rollback()
            say(f"{reason(error)}: has db/init.sql been applied? Retrying in {RETRY_WAIT:g}s")
            stop.wait(RETRY_WAIT)
            continue
        except psycopg2.Error as error:
            # If the insert was sent but its commit's answer never came, `unsure` holds it for a look-up.
            what = "Lost the database connection" if conn.closed else "Database error"
            say(f"{what} ({reason(error)}); reconnecting in {RETRY_WAIT:g}s")
            conn.close()
            conn = None
            stop.wait(RETRY_WAIT)
            continue
        if count == 0 or pushed < count:
            stop.wait(random.uniform(low, high))
    if conn is not None:
        conn.close()
    say(f"Stopped after pushing {pushed} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
