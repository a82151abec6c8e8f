"""Job pusher: inserts a job (20 random letters) into the queue every few seconds.

Configuration comes from the environment:
  DATABASE_URL       a libpq connection string, URI or key=value (required)
  PUSH_INTERVAL_MIN  shortest pause between two jobs, in seconds (default 1)
  PUSH_INTERVAL_MAX  longest pause between two jobs, in seconds (default 3)
  PUSH_COUNT         exit 0 after this many jobs (default 0: never)

SIGTERM, SIGINT or SIGHUP: exit 0 at once. A job is counted only once its commit is known to have landed.
"""

import math
import os
import random
import re
import select
import signal
import string
import sys
import time

import psycopg2

INSERT_SQL = "INSERT INTO jobs (payload) VALUES (%s) RETURNING id"
# A landed job is still queued, done, or set aside by now; one statement sees the three tables at the same
# instant, so it is found in exactly one of them.
LANDED_SQL = """
    SELECT EXISTS (SELECT FROM jobs WHERE id = %(id)s) OR EXISTS (SELECT FROM done_jobs WHERE id = %(id)s)
        OR EXISTS (SELECT FROM failed_jobs WHERE id = %(id)s)
"""

# What a second stop signal, which exits at once, leaves behind (stop_on_signals()).
ABORTED = "a job whose commit had not landed is not pushed"

# ---------------------------------------------------------------------------------------------------------
# From here to "end of the shared lines", pusher/pusher.py and consumer/consumer.py are the same, line for
# line (tests/test_style.py checks it): each image holds only its own folder, so neither can import them.

RETRY_WAIT = 2.0  # seconds between two attempts to reach the database
CONNECT_TIMEOUT = 10  # seconds; a host that drops packets would otherwise block a connect for minutes
# Once a stop is requested, a statement the server has not answered gets this long before the loop gives
# it up and exits, so that it exits within the grace period Kubernetes and Compose give it (30 s) even
# when the server does not answer; what it had not committed rolls back.
STOP_WAIT = 5.0  # seconds
SHOWN = 200  # characters of a payload or a message in one line of output; the rest is left out


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


def database_url(env):
    """DATABASE_URL, checked. No message quotes any part of it: in a malformed string, part of the password
    can end up anywhere (an unencoded / ends the host, so what follows the : becomes a port; an unencoded @
    makes the rest of the password a host name), and libpq's own errors would quote those parts."""
    url = env.get("DATABASE_URL", "")
    example = "postgresql://user:password@host:5432/dbname"
    if not url.strip():
        raise ConfigError(f"DATABASE_URL is not set: give a connection string such as {example}")
    encode = "percent-encode any / @ : ? # or % in the password (%2F %40 %3A %3F %23 %25)"
    try:
        parts = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        raise ConfigError(
            f"DATABASE_URL is not a valid connection string: use a URI such as {example} ({encode}), or key=value pairs"
        ) from None
    hosts = parts.get("host", "").split(",")
    if not all(re.fullmatch(r"[A-Za-z0-9._-]*|[0-9A-Fa-f:.]+|/.*", host) for host in hosts):
        raise ConfigError(f"DATABASE_URL has a host that is not a host name: {encode}")
    if not all(port.isdigit() for port in parts.get("port", "").split(",") if port):
        raise ConfigError(f"DATABASE_URL has a port that is not a number: {encode}")
    if re.match(r"postgres(ql)?://", url):
        # libpq takes the user and password from before the first @ or /, whichever comes first: an @ after
        # the first / means a / in the password cut it short.
        before_query = url.split("://", 1)[1].split("?", 1)[0]
        if "@" in before_query.partition("/")[2]:
            raise ConfigError(f"DATABASE_URL has an @ after its host: {encode}")
    return url


def printable(text):
    """text as one line that drives no terminal: newlines, escape sequences and every other character that
    is not printable are written as Python escapes (\\n, \\x1b), backslashes doubled, so a payload or a
    message can neither forge a line nor change the screen; cut to SHOWN characters."""
    shown = "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode() for c in text[:SHOWN])
    return shown + (f"... ({len(text)} characters)" if len(text) > SHOWN else "")


def reason(error):
    """The first line of a database error, printable: libpq's messages run over several lines."""
    lines = str(error).strip().splitlines()
    return printable(lines[0]) if lines else type(error).__name__


class StopRequest:
    """Set once SIGTERM, SIGINT or SIGHUP arrives, or the output is closed; wait() sleeps but returns as soon
    as it is set.

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

    def fileno(self):
        return self._read

    def wait(self, seconds, *others):
        """Also returns as soon as one of `others` (anything with a fileno()) has something to read."""
        select.select([self._read, *others], [], [], seconds)
        return self._set


# The stop request, which stop_on_signals() makes. say() and wait_for_server() read it as well: they run deep
# inside the loop, where handing it down would thread it through every call.
stop = None


def stop_on_signals():
    """SIGTERM (Kubernetes' and Compose's stop), SIGINT (Ctrl-C) and SIGHUP (a closed terminal) request a
    stop; a second one exits at once."""
    global stop
    stop = StopRequest()

    def handle(signum, frame):
        if stop.is_set():
            # Leaving by an exception rolls back what was not committed.
            raise SystemExit(f"{signal.Signals(signum).name} again: exiting now; {ABORTED}")
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)
    stop.wake_on_signals()
    # Every wait for the server goes through wait_for_server(), which a stop request can end.
    psycopg2.extensions.set_wait_callback(wait_for_server)
    return stop


def say(line):
    """One line of output. print, not the logging module: at thousands of jobs a second, logging's
    bookkeeping for the lines of each job took more time than the claim itself (docs/performance.md)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Whoever read the output is gone (the terminal of `make run`, a pipe's reader): stop the way a
        # signal would, and send what is still said nowhere instead of failing again at every line.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if stop is not None:
            stop.set()


def wait_for_server(conn):
    """psycopg2 calls this whenever it waits for the server (set_wait_callback). It waits as psycopg2 would,
    for the socket to be readable or writable as poll() asks, but it also wakes for a stop request, and
    gives up on a connect after CONNECT_TIMEOUT (libpq enforces connect_timeout only when it waits itself)
    and on anything else STOP_WAIT after a stop request. The connection is then unusable: its caller closes
    it, and the server rolls back what it had not committed."""
    connect_by = time.monotonic() + CONNECT_TIMEOUT if conn.status == psycopg2.extensions.STATUS_SETUP else math.inf
    stop_by = math.inf
    while (state := conn.poll()) != psycopg2.extensions.POLL_OK:
        now = time.monotonic()
        if stop is not None and stop.is_set() and stop_by == math.inf:
            stop_by = now + STOP_WAIT
        if now >= min(connect_by, stop_by):
            what = "timeout expired" if connect_by <= stop_by else f"no answer {STOP_WAIT:g}s after the stop request"
            raise psycopg2.OperationalError(what)
        socket = [conn.fileno()]
        readable = socket if state == psycopg2.extensions.POLL_READ else []
        writable = socket if state == psycopg2.extensions.POLL_WRITE else []
        woken_by_stop = [stop] if stop_by == math.inf and stop is not None else []
        timeout = min(connect_by, stop_by) - now
        select.select(readable + woken_by_stop, writable, [], None if timeout == math.inf else timeout)


# End of the shared lines.
# ---------------------------------------------------------------------------------------------------------


def read_config(env):
    url = database_url(env)
    low = seconds(env, "PUSH_INTERVAL_MIN", 1.0)
    high = seconds(env, "PUSH_INTERVAL_MAX", 3.0)
    if low > high:
        raise ConfigError(f"PUSH_INTERVAL_MIN ({low:g}) is above PUSH_INTERVAL_MAX ({high:g})")
    raw = env.get("PUSH_COUNT", "0")
    if not re.fullmatch(r"[0-9]+", raw.strip()):
        raise ConfigError(f"PUSH_COUNT must be a whole number, 0 for no limit, got {raw!r}")
    return url, low, high, int(raw)


def connect(url):
    while not stop.is_set():
        try:
            conn = psycopg2.connect(url)
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
            cur.execute(LANDED_SQL, {"id": job_id})
            return cur.fetchone()[0]


def main():
    try:
        url, low, high, count = read_config(os.environ)
    except ConfigError as error:
        print(f"pusher: {error}", file=sys.stderr)
        return 2
    stop_on_signals()

    conn = None
    pushed = 0
    unsure = None  # (id, payload) of a job whose commit was cut off: it may or may not have landed
    while not stop.is_set() and (count == 0 or pushed < count):
        if conn is None:
            conn = connect(url)
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
