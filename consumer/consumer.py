"""Job consumer: claims the oldest job, works on it, records it as done, and repeats.

The claim, the work and the record are one transaction. If the consumer dies mid-job the transaction
rolls back and the job is queued again, so a job is recorded exactly once (its work may run twice).

When the queue is empty the consumer sleeps until the database notifies it of a new job (LISTEN; the
trigger in db/init.sql notifies on every insert) or, failing that, until POLL_INTERVAL has passed.

Configuration comes from the environment:
  DATABASE_URL      a libpq connection string, URI or key=value (required)
  PROCESS_TIME_MIN  shortest simulated work, in seconds (default 2)
  PROCESS_TIME_MAX  longest simulated work, in seconds (default 10)
  POLL_INTERVAL     longest sleep on an empty queue with no notification, in seconds (default 30)
  HOSTNAME          the name in each log line and of its database session (Kubernetes sets it to the pod's name)

SIGTERM or SIGINT: finish the job in hand, commit it, exit 0. A second signal exits at once; the job
in hand then rolls back and stays queued.
"""

import collections
import math
import os
import random
import select
import signal
import socket
import sys
import time

import psycopg2

# Taking the job out of the queue is the claim. FOR UPDATE SKIP LOCKED makes concurrent consumers pass
# over a job another consumer holds instead of waiting for it, so no two consumers get the same job.
CLAIM_SQL = """
    DELETE FROM jobs
    WHERE id = (
        SELECT id FROM jobs
        ORDER BY created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, payload
"""
RECORD_SQL = "INSERT INTO done_jobs (id) VALUES ($1)"
# Prepared once per connection, so that the server parses and plans them once, not for every job: that
# was a third of the server's time per job (README, Performance).
PREPARE_SQL = f"PREPARE claim AS {CLAIM_SQL}; PREPARE record (integer) AS {RECORD_SQL}"
# A job takes two round trips: the claim's message opens its transaction, the record's closes it.
# (psycopg2 would send BEGIN and COMMIT as round trips of their own; in autocommit mode it sends each
# message as it is.)
CLAIM_MESSAGE = "BEGIN; EXECUTE claim"
RECORD_MESSAGE = "EXECUTE record (%s); COMMIT"
EMPTY_SQL = "ROLLBACK"  # ends the transaction of a claim that found nothing
# db/init.sql's trigger notifies this channel whenever jobs are inserted.
CHANNEL = "jobs"
LISTEN_SQL = f"LISTEN {CHANNEL}"
# A consumer at work is "idle in transaction" to the server, which ends such a session after this long.
TIMEOUT_SQL = "SELECT setting::float / 1000 FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"

RETRY_WAIT = 2.0  # seconds between two attempts to reach the database
CONNECT_TIMEOUT = 10  # seconds; a host that drops packets would otherwise block a connect for minutes
# The bounds the server puts on its clients (db/server-settings.conf), put by the consumer on the server:
# a connection that dies without a word (the server's node gone, a NAT that forgot it) fails after about
# a minute, while the consumer sleeps or waits for an answer, instead of after the kernel's hours.
KEEPALIVES = {
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,  # seconds, seconds, probes
    "tcp_user_timeout": 60_000,
}  # milliseconds


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
    low = seconds(env, "PROCESS_TIME_MIN", 2.0)
    high = seconds(env, "PROCESS_TIME_MAX", 10.0)
    if low > high:
        raise ConfigError(f"PROCESS_TIME_MIN ({low:g}) is above PROCESS_TIME_MAX ({high:g})")
    poll = seconds(env, "POLL_INTERVAL", 30.0)
    if poll == 0:
        raise ConfigError("POLL_INTERVAL must be above 0: 0 would ask the server without a pause")
    name = env.get("HOSTNAME") or socket.gethostname()
    return url, low, high, poll, name


def say(name, line):
    """One line of output, prefixed with the consumer's name.

    print, not the logging module: at thousands of jobs a second, logging's bookkeeping for the two lines
    of each job took more of the consumer's time than the claim itself (README, Performance).
    """
    print(f"[{name}] {line}", flush=True)


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
        would be handled only when that select ends, a whole wait later (up to POLL_INTERVAL or the grace
        period). The wakeup fd is written in C, at once, so the select ends at once.
        """
        os.set_blocking(self._write, False)  # as set_wakeup_fd requires
        signal.set_wakeup_fd(self._write)

    def set(self):
        self._set = True
        os.write(self._write, b"!")

    def is_set(self):
        return self._set

    def wait(self, seconds, *others):
        """Also returns as soon as one of `others` (anything with a fileno()) has something to read."""
        select.select([self._read, *others], [], [], seconds)
        return self._set


def stop_on_signals():
    stop = StopRequest()

    def handle(signum, frame):
        if stop.is_set():
            # Leaving by an exception rolls the transaction back: the job in hand stays queued.
            raise SystemExit(f"{signal.Signals(signum).name} again: exiting now, the job in hand stays queued")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wake_on_signals()
    return stop


def connect(url, name, high, stop):
    while not stop.is_set():
        conn = None
        try:
            # Named after the consumer (in Kubernetes, its pod), so pg_stat_activity tells who holds which job.
            conn = psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT, application_name=name, **KEEPALIVES)
            # Each message is then sent as it is: the claim's and the record's begin and end the transaction.
            conn.autocommit = True
            # psycopg2 appends each notification it reads to conn.notifies, a list that would grow for as
            # long as the consumer stays busy. Whether one came matters, not which: keep only the latest.
            conn.notifies = collections.deque(maxlen=1)
            with conn.cursor() as cur:
                cur.execute(TIMEOUT_SQL)
                timeout = cur.fetchone()[0]
                cur.execute(PREPARE_SQL)
                cur.execute(LISTEN_SQL)
        except psycopg2.Error as error:
            if conn is not None:
                conn.close()
            if isinstance(error, psycopg2.errors.UndefinedTable):
                say(name, f"{reason(error)}: has db/init.sql been applied? Retrying in {RETRY_WAIT:g}s")
            else:
                say(name, f"Cannot connect to the database ({reason(error)}); retrying in {RETRY_WAIT:g}s")
            stop.wait(RETRY_WAIT)
        else:
            say(name, "Connected to the database; waiting for jobs")
            if 0 < timeout <= high:
                say(
                    name,
                    f"PROCESS_TIME_MAX ({high:g}s) is not below the server's idle_in_transaction_session_timeout "
                    f"({timeout:g}s): a longer job will be cut off and done again",
                )
            return conn
    return None


def work_one(conn, low, high, name, stop):
    """Claim, work on and record one job. Returns False when the queue is empty.

    If anything here raises, the transaction is left open: the caller closes the connection, and the
    server rolls the claim back.
    """
    with conn.cursor() as cur:
        cur.execute(CLAIM_MESSAGE)
        job = cur.fetchone()
        if job is None:
            cur.execute(EMPTY_SQL)
            return False
        job_id, payload = job
        say(name, f"Processing job {job_id}: {payload}")
        process_time = random.uniform(low, high)
        started = time.monotonic()
        if stop.wait(process_time):
            say(name, f"Stop requested: finishing job {job_id} first")
            time.sleep(max(0.0, started + process_time - time.monotonic()))
        cur.execute(RECORD_MESSAGE, (job_id,))
    say(name, f"Completed job {job_id} in {process_time:.2f}s")
    return True


def wait_for_jobs(conn, poll, stop):
    """Sleep until a notification comes, a stop is requested, or `poll` seconds pass.

    The notification of a job inserted while this consumer was busy arrived with an earlier answer and
    is already in conn.notifies: then there is no sleep at all. The poll is the fallback for jobs no
    notification announces: one whose claim was rolled back, one inserted while the connection was
    silently lost (the next claim finds out and reconnects), one behind a proxy that drops notifications.
    """
    if not conn.notifies:
        stop.wait(poll, conn)
        conn.poll()  # reads what came: a notification, or the error of a connection the server closed
    conn.notifies.clear()


def main():
    try:
        url, low, high, poll, name = read_config(os.environ)
    except ConfigError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 2
    stop = stop_on_signals()

    conn = None
    while not stop.is_set():
        if conn is None:
            conn = connect(url, name, high, stop)
            if conn is None:
                break
        try:
            if not work_one(conn, low, high, name, stop):
                wait_for_jobs(conn, poll, stop)
        except psycopg2.Error as error:
            # Whatever failed, the claim was not committed: closing the connection rolls it back on the
            # server and the job is queued again. A new connection is the one state known to be clean.
            if isinstance(error, psycopg2.errors.UndefinedTable):
                say(name, f"{reason(error)}: has db/init.sql been applied? Retrying in {RETRY_WAIT:g}s")
            else:
                what = "Lost the database connection" if conn.closed else "Database error"
                say(name, f"{what} ({reason(error)}); reconnecting in {RETRY_WAIT:g}s")
            conn.close()
            conn = None
            stop.wait(RETRY_WAIT)
    if conn is not None:
        conn.close()
    say(name, "Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
