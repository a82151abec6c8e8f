"""Job consumer: claims the oldest job, works on it, records it as done, and repeats.

The claim, the work and the record are one transaction. If the consumer dies mid-job the transaction
rolls back and the job is queued again, so a job is recorded exactly once (its work may run twice).

Configuration comes from the environment:
  DATABASE_URL      a libpq connection string, URI or key=value (required)
  PROCESS_TIME_MIN  shortest simulated work, in seconds (default 2)
  PROCESS_TIME_MAX  longest simulated work, in seconds (default 10)
  HOSTNAME          the name in each log line (Kubernetes sets it to the pod's name)

SIGTERM or SIGINT: finish the job in hand, commit it, exit 0. A second signal exits at once; the job
in hand then rolls back and stays queued.
"""

import logging
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
RECORD_SQL = "INSERT INTO done_jobs (id) VALUES (%s)"
# A consumer at work is "idle in transaction" to the server, which ends such a session after this long.
TIMEOUT_SQL = "SELECT setting::float / 1000 FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"

IDLE_WAIT = 1.0  # seconds between two looks at an empty queue
RETRY_WAIT = 2.0  # seconds between two attempts to reach the database
CONNECT_TIMEOUT = 10  # seconds; a host that drops packets would otherwise block a connect for minutes

log = logging.getLogger("consumer")


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
        raise ConfigError("DATABASE_URL is not set: give a connection string such as "
                          "postgresql://user:password@host:5432/dbname")
    try:
        parts = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        # The parser's message quotes the string, password included, so it is not repeated here.
        raise ConfigError("DATABASE_URL is not a valid connection string: use a URI such as "
                          "postgresql://user:password@host:5432/dbname, or key=value pairs") from None
    # The parser accepts any port; libpq would reject it only when connecting, again and again.
    if any(port and not port.isdigit() for port in parts.get("port", "").split(",")):
        raise ConfigError(f"DATABASE_URL has a port that is not a number: {parts['port']!r}")
    low = seconds(env, "PROCESS_TIME_MIN", 2.0)
    high = seconds(env, "PROCESS_TIME_MAX", 10.0)
    if low > high:
        raise ConfigError(f"PROCESS_TIME_MIN ({low:g}) is above PROCESS_TIME_MAX ({high:g})")
    name = env.get("HOSTNAME") or socket.gethostname()
    return url, low, high, name


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
            # Leaving by an exception rolls the transaction back: the job in hand stays queued.
            raise SystemExit(f"{signal.Signals(signum).name} again: exiting now, the job in hand stays queued")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def connect(url, name, high, stop):
    while not stop.is_set():
        try:
            conn = psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT)
            with conn, conn.cursor() as cur:
                cur.execute(TIMEOUT_SQL)
                timeout = cur.fetchone()[0]
        except psycopg2.Error as error:
            log.warning("[%s] Cannot connect to the database (%s); retrying in %gs", name, reason(error), RETRY_WAIT)
            stop.wait(RETRY_WAIT)
        else:
            log.info("[%s] Connected to the database; waiting for jobs", name)
            if 0 < timeout <= high:
                log.warning("[%s] PROCESS_TIME_MAX (%gs) is not below the server's idle_in_transaction_session_timeout "
                            "(%gs): a longer job will be cut off and done again", name, high, timeout)
            return conn
    return None


def work_one(conn, low, high, name, stop):
    """Claim, work on and record one job. Returns False when the queue is empty."""
    with conn:  # commits when the block ends, rolls back if it raises
        with conn.cursor() as cur:
            cur.execute(CLAIM_SQL)
            job = cur.fetchone()
            if job is None:
                return False
            job_id, payload = job
            log.info("[%s] Processing job %s: %s", name, job_id, payload)
            process_time = random.uniform(low, high)
            started = time.monotonic()
            if stop.wait(process_time):
                log.info("[%s] Stop requested: finishing job %s first", name, job_id)
                time.sleep(max(0.0, started + process_time - time.monotonic()))
            cur.execute(RECORD_SQL, (job_id,))
    log.info("[%s] Completed job %s in %.2fs", name, job_id, process_time)
    return True


def main():
    try:
        url, low, high, name = read_config(os.environ)
    except ConfigError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    stop = stop_on_signals()

    conn = None
    while not stop.is_set():
        if conn is None:
            conn = connect(url, name, high, stop)
            if conn is None:
                break
        try:
            if not work_one(conn, low, high, name, stop):
                stop.wait(IDLE_WAIT)
        except psycopg2.errors.UndefinedTable as error:
            log.warning("[%s] %s: has db/init.sql been applied? Retrying in %gs", name, reason(error), RETRY_WAIT)
            stop.wait(RETRY_WAIT)
        except psycopg2.Error as error:
            # Whatever failed, the claim was not committed: it rolls back (on the server, if the connection
            # died) and the job is queued again. A new connection is the one state known to be clean.
            what = "Lost the database connection" if conn.closed else "Database error"
            log.warning("[%s] %s (%s); reconnecting in %gs", name, what, reason(error), RETRY_WAIT)
            conn.close()
            conn = None
            stop.wait(RETRY_WAIT)
    if conn is not None:
        conn.close()
    log.info("[%s] Stopped", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
