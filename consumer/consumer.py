"""Job consumer: claims the oldest job, works on it, records it as done, and repeats.

The claim, the work and the record are one transaction. If the consumer dies mid-job the transaction
rolls back and the job is queued again, so a job is recorded exactly once (its work may run twice).

A job that can never be completed (its record fails, or it kills every consumer that takes it) would come
back for ever, first in line, and stall the queue. So each claim is counted in job_attempts, on a second
connection that commits at once, since whatever the claim's own transaction writes dies with a consumer
that dies; a job claimed MAX_ATTEMPTS times without being recorded is set aside, into failed_jobs with its
payload and the reason, by the claim that finds it spent.

When the queue is empty the consumer sleeps until the database notifies it of a new job (LISTEN; the
trigger in db/init.sql notifies on every insert) or, failing that, until POLL_INTERVAL has passed.

Configuration comes from the environment:
  DATABASE_URL      a libpq connection string, URI or key=value (required)
  PROCESS_TIME_MIN  shortest simulated work, in seconds (default 2)
  PROCESS_TIME_MAX  longest simulated work, in seconds (default 10)
  POLL_INTERVAL     longest sleep on an empty queue with no notification, in seconds (default 30)
  MAX_ATTEMPTS      claims of one job without a record before it is set aside (default 3)
  HOSTNAME          the name in each log line and of its database sessions (Kubernetes sets the pod's name)

SIGTERM, SIGINT or SIGHUP: finish the job in hand, commit it, exit 0. A second signal exits at once; the
job in hand then rolls back and stays queued.
"""

import collections
import math
import os
import random
import re
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
    RETURNING id, payload, created_at
"""
# The record ends the job's attempts: its row in job_attempts goes in the same statement.
RECORD_SQL = """
    WITH attempts AS (DELETE FROM job_attempts WHERE job_id = $1)
    INSERT INTO done_jobs (id, created_at) VALUES ($1, $2)
"""
# A spent job moves to failed_jobs in the claim's transaction, so it is in exactly one of the two tables.
# The reason is what the consumer of the last attempt noted, or that it stopped without a word. Always one
# row, even if the attempts row is gone: the job must never leave jobs for nowhere.
SET_ASIDE_SQL = """
    WITH attempts AS (DELETE FROM job_attempts WHERE job_id = $1 RETURNING attempts, consumer, last_error)
    INSERT INTO failed_jobs (id, payload, created_at, attempts, reason)
    SELECT $1, $2, $3, coalesce(attempts.attempts, 0),
           coalesce(attempts.consumer, 'its consumer') || ': '
           || coalesce(attempts.last_error, 'stopped without a word before recording it (killed, out of memory,'
                                            || ' or its node lost)')
    FROM (VALUES (1)) AS one LEFT JOIN attempts ON true
"""
# Prepared once per connection, so that the server parses and plans them once, not for every job
# (docs/performance.md measures what that saves).
PREPARE_SQL = (
    f"PREPARE claim AS {CLAIM_SQL}; PREPARE record (bigint, timestamptz) AS {RECORD_SQL};"
    f" PREPARE set_aside (bigint, text, timestamptz) AS {SET_ASIDE_SQL}"
)
# A job takes two round trips on this connection: the claim's message opens its transaction, the record's
# closes it. (psycopg2 would send BEGIN and COMMIT as round trips of their own; in autocommit mode it sends
# each message as it is.)
CLAIM_MESSAGE = "BEGIN; EXECUTE claim"
RECORD_MESSAGE = "EXECUTE record (%s, %s); COMMIT"
SET_ASIDE_MESSAGE = "EXECUTE set_aside (%s, %s, %s); COMMIT"
EMPTY_SQL = "ROLLBACK"  # ends the transaction of a claim that found nothing
# db/init.sql's trigger notifies this channel whenever jobs are inserted.
CHANNEL = "jobs"
LISTEN_SQL = f"LISTEN {CHANNEL}"
# A consumer at work is "idle in transaction" to the server, which ends such a session after this long.
TIMEOUT_SQL = "SELECT setting::float / 1000 FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'"
# The server cancels any statement of the consumer's that runs longer than this: a record stuck behind a
# lock, say, or one whose consumer gave up waiting for it (STOP_WAIT). Its job then returns to the queue.
STATEMENT_TIMEOUT_SQL = "SET statement_timeout = '10s'"

# The second connection, for the attempts: one more round trip per job, whose commit does not wait for the
# disk (a count lost in a crash of the server costs one more attempt, no more). A claim counts as an
# attempt unless the job already has MAX_ATTEMPTS: then nothing is written, no row comes back, and the job
# is set aside. The new attempt forgets the last one's error.
NOTE_SQL = """
    INSERT INTO job_attempts AS a (job_id, consumer) VALUES ($1, $2)
    ON CONFLICT (job_id) DO UPDATE
        SET attempts = a.attempts + 1, consumer = excluded.consumer, last_error = NULL, last_attempt_at = now()
        WHERE a.attempts < $3
    RETURNING attempts
"""
# Why an attempt failed, if the consumer lives to say it, and whether it was the job's own fault; if not, the
# attempt is given back. Nothing changes if another consumer has claimed the job since.
FAILED_SQL = """
    UPDATE job_attempts SET last_error = $3, attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END
    WHERE job_id = $1 AND consumer = $2
"""
ATTEMPTS_SETUP_SQL = (
    "SET synchronous_commit = off; "
    f"PREPARE note (bigint, text, integer) AS {NOTE_SQL}; PREPARE failed (bigint, text, text, boolean) AS {FAILED_SQL}"
)
NOTE_MESSAGE = "EXECUTE note (%s, %s, %s)"
FAILED_MESSAGE = "EXECUTE failed (%s, %s, %s, %s)"
# The errors that are the job's own fault: its record breaks a rule of the table (a constraint, SQLSTATE
# class 23) or holds data the server refuses (class 22). Any other (a lost connection, a timeout, a missing
# right) is the server's or the network's, and would fail any job: it costs the job no attempt.
JOBS_FAULT = ("22", "23")

# The bounds the server puts on its clients (db/server-settings.conf), put by the consumer on the server:
# a connection that dies without a word (the server's node gone, a NAT that forgot it) fails after about
# a minute, while the consumer sleeps or waits for an answer, instead of after the kernel's hours.
KEEPALIVES = {
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,  # seconds, seconds, probes
    "tcp_user_timeout": 60_000,  # milliseconds
}

# What a second stop signal, which exits at once, leaves behind (stop_on_signals()).
ABORTED = "the job in hand stays queued"

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
    low = seconds(env, "PROCESS_TIME_MIN", 2.0)
    high = seconds(env, "PROCESS_TIME_MAX", 10.0)
    if low > high:
        raise ConfigError(f"PROCESS_TIME_MIN ({low:g}) is above PROCESS_TIME_MAX ({high:g})")
    poll = seconds(env, "POLL_INTERVAL", 30.0)
    if poll == 0:
        raise ConfigError("POLL_INTERVAL must be above 0: 0 would ask the server without a pause")
    raw = env.get("MAX_ATTEMPTS", "3")
    if not re.fullmatch(r"[0-9]+", raw.strip()) or int(raw) < 1:
        raise ConfigError(f"MAX_ATTEMPTS must be a whole number, 1 or more, got {raw!r}")
    name = printable(env.get("HOSTNAME") or socket.gethostname())
    return url, low, high, poll, int(raw), name


def connect(url, name, high):
    """Both connections, (claims, attempts), or None once a stop is requested."""
    while not stop.is_set():
        claims = attempts = None
        try:
            # Named after the consumer (in Kubernetes, its pod), so pg_stat_activity tells who holds which job.
            claims = psycopg2.connect(url, application_name=name, **KEEPALIVES)
            # Each message is then sent as it is: the claim's and the record's begin and end the transaction.
            claims.autocommit = True
            # psycopg2 appends each notification it reads to conn.notifies, a list that would grow for as
            # long as the consumer stays busy. Whether one came matters, not which: keep only the latest.
            claims.notifies = collections.deque(maxlen=1)
            with claims.cursor() as cur:
                cur.execute(TIMEOUT_SQL)
                timeout = cur.fetchone()[0]
                cur.execute(f"{STATEMENT_TIMEOUT_SQL}; {PREPARE_SQL}; {LISTEN_SQL}")
            attempts = psycopg2.connect(url, application_name=name, **KEEPALIVES)
            attempts.autocommit = True
            with attempts.cursor() as cur:
                cur.execute(f"{STATEMENT_TIMEOUT_SQL}; {ATTEMPTS_SETUP_SQL}")
        except psycopg2.Error as error:
            for conn in (claims, attempts):
                if conn is not None:
                    conn.close()
            if isinstance(error, psycopg2.errors.UndefinedTable):
                say(f"[{name}] {reason(error)}: has db/init.sql been applied? Retrying in {RETRY_WAIT:g}s")
            else:
                say(f"[{name}] Cannot connect to the database ({reason(error)}); retrying in {RETRY_WAIT:g}s")
            stop.wait(RETRY_WAIT)
        else:
            say(f"[{name}] Connected to the database; waiting for jobs")
            if 0 < timeout <= high:
                say(
                    f"[{name}] PROCESS_TIME_MAX ({high:g}s) is not below the server's "
                    f"idle_in_transaction_session_timeout ({timeout:g}s): a longer job will be cut off and done again"
                )
            return claims, attempts
    return None


def work_one(claims, attempts, low, high, max_attempts, name):
    """Claim, work on and record one job, or set it aside if it is spent. Returns False when the queue is
    empty.

    If anything here raises, the transaction is left open: the caller closes the connections, and the
    server rolls the claim back.
    """
    with claims.cursor() as cur:
        cur.execute(CLAIM_MESSAGE)
        job = cur.fetchone()
        if job is None:
            cur.execute(EMPTY_SQL)
            return False
        job_id, payload, created_at = job
        with attempts.cursor() as note:
            note.execute(NOTE_MESSAGE, (job_id, name, max_attempts))
            attempt = note.fetchone()
        if attempt is None:
            cur.execute(SET_ASIDE_MESSAGE, (job_id, payload, created_at))
            say(f"[{name}] Set aside job {job_id} after {max_attempts} attempts (failed_jobs): {printable(payload)}")
            return True
        (number,) = attempt
        try:
            again = f" (attempt {number} of {max_attempts})" if number > 1 else ""
            say(f"[{name}] Processing job {job_id}: {printable(payload)}{again}")
            process_time = random.uniform(low, high)
            started = time.monotonic()
            if stop.wait(process_time):
                say(f"[{name}] Stop requested: finishing job {job_id} first")
                time.sleep(max(0.0, started + process_time - time.monotonic()))
            cur.execute(RECORD_MESSAGE, (job_id, created_at))
        except psycopg2.Error as error:
            # Noted for the reason the job will carry if it is set aside; the caller still reports and
            # rolls back. The note may fail too, on a connection as broken as the claim's: then the attempt
            # stays counted, and the reason will say the consumer stopped without a word.
            its_fault = (error.pgcode or "")[:2] in JOBS_FAULT
            try:
                with attempts.cursor() as failed:
                    failed.execute(FAILED_MESSAGE, (job_id, name, problem(claims, error), its_fault))
            except psycopg2.Error:
                pass
            raise
    say(f"[{name}] Completed job {job_id} in {process_time:.2f}s")
    return True


def problem(conn, error):
    """What went wrong with `conn`, as the consumer's lines and the reason of a job set aside say it."""
    what = "Lost the database connection" if conn.closed else "Database error"
    return f"{what} ({reason(error)})"


def wait_for_jobs(conn, poll):
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
        url, low, high, poll, max_attempts, name = read_config(os.environ)
    except ConfigError as error:
        print(f"consumer: {error}", file=sys.stderr)
        return 2
    stop_on_signals()

    conns = None
    while not stop.is_set():
        if conns is None:
            conns = connect(url, name, high)
            if conns is None:
                break
        claims, attempts = conns
        try:
            if not work_one(claims, attempts, low, high, max_attempts, name):
                wait_for_jobs(claims, poll)
        except psycopg2.Error as error:
            # Whatever failed, the claim was not committed: closing the connection rolls it back on the
            # server and the job is queued again. New connections are the one state known to be clean.
            if isinstance(error, psycopg2.errors.UndefinedTable):
                say(f"[{name}] {reason(error)}: has db/init.sql been applied? Retrying in {RETRY_WAIT:g}s")
            else:
                say(f"[{name}] {problem(claims, error)}; reconnecting in {RETRY_WAIT:g}s")
            claims.close()
            attempts.close()
            conns = None
            stop.wait(RETRY_WAIT)
    if conns is not None:
        for conn in conns:
            conn.close()
    say(f"[{name}] Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
