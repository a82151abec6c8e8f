"""`make bench`: what the queue allows and costs on this machine, measured against one embedded server and
printed as one table, with the machine it ran on.

1. Claims per second, the work set to zero, for 1, 4 and 20 consumers, beside pgbench running the
   consumer's statements the article's way (BEGIN; the claim; the attempt's note; the record; COMMIT: five
   statements, five round trips, each planned anew), the server's limit for that design, and beside the
   article's own loop
   (bench/article_consumer.py: a new connection on every pass). Every run starts from the same freshly
   vacuumed backlog, with autovacuum paused so that it cannot start in one run and not in the next.
   pgbench and the consumer take turns, --rounds times: each figure is the median of its runs, and the
   ratio the median of the rounds' ratios, each between two runs made one after the other (the disk's
   flush times drift, on a shared machine, and every commit waits for one).
2. Pickup latency: from the commit of a job the pusher inserts to a consumer's claim of it, with idle
   consumers at their default settings.
3. Idle load: the transactions an idle consumer makes the server run, per second.
4. A large backlog: --backlog jobs drained by 4 consumers; the claim rate over the last tenth against the
   rate over the first.
5. KEDA's query, as `kubectl kustomize .` renders it: its time with 10,000 and 1,000,000 queued jobs, and its
   share of one CPU at the rate KEDA and the HPA ask.

Not part of `make test`. docs/performance.md explains each row and records a run.
"""

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import keda_emulation  # noqa: E402
import localpg  # noqa: E402

PUSHER = ROOT / "pusher" / "pusher.py"
ARTICLE = ROOT / "bench" / "article_consumer.py"
DATABASE = localpg.DATABASE

# The consumer's statements written the article's way, one per round trip, each parsed and planned anew
# (pgbench's default, simple protocol): the claim, the attempt's note and the record, the note's and the
# record's SQL as consumer/consumer.py has them. One difference pgbench cannot avoid: a client of it has one
# connection, so the note runs inside the claim's transaction, where the consumer commits it on a second
# connection (a commit that does not wait for the disk). \gset keeps the claimed id for what follows; the
# backlog is long enough that no claim comes back empty.
PGBENCH_SCRIPT = r"""
BEGIN;
DELETE FROM jobs WHERE id = (SELECT id FROM jobs ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, extract(epoch FROM created_at) AS created \gset
INSERT INTO job_attempts AS a (job_id, consumer) VALUES (:id, 'pgbench')
ON CONFLICT (job_id) DO UPDATE
    SET attempts = a.attempts + 1, consumer = excluded.consumer, last_error = NULL, last_attempt_at = now()
    WHERE a.attempts < 3
RETURNING attempts \gset
WITH attempts AS (DELETE FROM job_attempts WHERE job_id = :id)
INSERT INTO done_jobs (id, created_at) VALUES (:id, to_timestamp(:created));
COMMIT;
"""

# The same without the attempt's note, as the consumer's transaction was before attempts were counted: the
# gap between the two pgbench columns is what the note costs the server.
PGBENCH_NO_NOTE_SCRIPT = r"""
BEGIN;
DELETE FROM jobs WHERE id = (SELECT id FROM jobs ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, extract(epoch FROM created_at) AS created \gset
INSERT INTO done_jobs (id, created_at) VALUES (:id, to_timestamp(:created));
COMMIT;
"""

# n jobs in one statement (so one notification), each created a microsecond after the one before, in
# the order jobs pushed one by one would have.
BACKLOG_SQL = """
    INSERT INTO jobs (payload, created_at)
    SELECT left(md5(g::text), 20), now() - (%(n)s - g) * interval '1 microsecond'
    FROM generate_series(1, %(n)s) AS g
"""

# For the pickup latency only: the moment each job's insert commits. A deferred trigger runs as its
# transaction commits, so clock_timestamp() there is the start of the commit, before the WAL is flushed
# and the notification goes out: a latency measured from it errs on the long side.
PICKUP_SETUP_SQL = """
    CREATE TABLE bench_pickup (id bigint PRIMARY KEY, committed_at timestamptz NOT NULL);
    CREATE FUNCTION bench_pickup() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO bench_pickup VALUES (NEW.id, clock_timestamp());
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER bench_pickup AFTER INSERT ON jobs DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION bench_pickup();
"""
PICKUP_TEARDOWN_SQL = "DROP TABLE bench_pickup; DROP TRIGGER bench_pickup ON jobs; DROP FUNCTION bench_pickup()"
# The claim: done_jobs.claimed_at defaults to now(), the start of the consumer's transaction, which the
# claim's own message opens.
PICKUP_SQL = """
    SELECT count(*), percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY latency), max(latency)
    FROM (SELECT extract(epoch FROM d.claimed_at - p.committed_at) AS latency
          FROM bench_pickup AS p JOIN done_jobs AS d USING (id)) AS l
"""

# The claim rate over each tenth of a drain, from the claims' own timestamps.
TENTHS_SQL = """
    SELECT count(*) / extract(epoch FROM max(claimed_at) - min(claimed_at))
    FROM (SELECT claimed_at, ntile(10) OVER (ORDER BY claimed_at) AS tenth FROM done_jobs) AS t
    GROUP BY tenth ORDER BY tenth
"""

# Transactions the server has run in the queue's database, committed or rolled back. A backend adds its
# own to these counters when a transaction ends, at most once a second; an idle one within 10 s.
TRANSACTIONS_SQL = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
STATS_SETTLE = 11  # seconds: by then every idle backend has added its transactions

SESSIONS_SQL = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

# The consumer against pgbench running its statements. With one consumer, pgbench's own client (five round
# trips, each statement planned anew) is the limit, and the consumer must keep up with it. With four, on a
# 2-CPU machine, the server's CPU is the limit, and the consumer spends more of it per job than pgbench can:
# it commits each attempt on a second connection, where a pgbench client, with one, notes it inside the
# claim's transaction (docs/performance.md, what the attempts cost).
CLAIMS_GOAL = {1: 0.9, 4: 0.6}

# How often the trigger's query runs: KEDA runs it every pollingInterval, and the HPA asks KEDA's metrics
# server for the metric every sync period (keda_emulation.SYNC_PERIOD, 15 s unless the cluster changes
# --horizontal-pod-autoscaler-sync-period), which has the operator run it again (KEDA's docs, "Caching Metrics").


class Database:
    """One autocommit connection, for the bench's own statements."""

    def __init__(self, url):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def run(self, sql, params=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def value(self, sql, params=None):
        return self.run(sql, params)[0][0]

    def close(self):
        self.conn.close()


class Loops:
    """Copies of a loop, each a process as `make run` starts them, each writing to a file in one folder."""

    def __init__(self, url, logs):
        self.url, self.logs = url, logs
        self.started = 0

    def start(self, script, count, **env):
        procs = []
        for _ in range(count):
            self.started += 1
            name = f"{Path(script).stem}-{self.started}"
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script)],
                    stdout=open(self.logs / f"{name}.log", "w"),
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "DATABASE_URL": self.url, "HOSTNAME": name, **env},
                )
            )
        return procs

    @staticmethod
    def stop(procs):
        for proc in procs:
            proc.send_signal(signal.SIGTERM)  # the article's loop has no handler: SIGTERM ends it at once
        for proc in procs:
            proc.wait(60)


def wait_for_sessions(db, count, timeout=60):
    deadline = time.monotonic() + timeout
    while db.value(SESSIONS_SQL, (DATABASE,)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {count} sessions did not connect within {timeout}s")
        time.sleep(0.1)


def fresh_backlog(db, n):
    """Empty tables, then n queued jobs, vacuumed and checkpointed: the state every claims run starts from."""
    db.run("TRUNCATE jobs, done_jobs, job_attempts")
    db.run(BACKLOG_SQL, {"n": n})
    db.run("VACUUM ANALYZE jobs")
    db.run("CHECKPOINT")


@contextlib.contextmanager
def autovacuum_paused(stats):
    """Autovacuum off while the block runs (ALTER SYSTEM and a reload, undone at the end)."""
    stats.run("ALTER SYSTEM SET autovacuum = off")
    stats.run("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        stats.run("ALTER SYSTEM RESET autovacuum")
        stats.run("SELECT pg_reload_conf()")


def load():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


# ---------------------------------------------------------------------------------------------------------
# 1. Claims per second


def pgbench_claims(url, script, consumers, seconds):
    out = subprocess.run(
        [
            str(localpg.BIN / "pgbench"),
            "--no-vacuum",
            "--file",
            str(script),
            "--client",
            str(consumers),
            "--jobs",
            str(consumers),
            "--time",
            str(seconds),
            url,
        ],
        capture_output=True,
        text=True,
    )
    tps = re.search(r"^tps = ([\d.]+)", out.stdout, re.M)
    if out.returncode != 0 or tps is None or "failed transactions: 0 " not in out.stdout:
        raise SystemExit(f"bench: pgbench failed:\n{out.stdout}{out.stderr}")
    return float(tps.group(1))


def loop_claims(db, loops, script, consumers, seconds):
    procs = loops.start(script, consumers, PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0")
    try:
        if script == ARTICLE:
            time.sleep(1)  # it connects anew on every pass: there is no session to wait for
        else:
            wait_for_sessions(db, consumers)
        before, started = db.value("SELECT count(*) FROM done_jobs"), time.monotonic()
        time.sleep(seconds)
        return (db.value("SELECT count(*) FROM done_jobs") - before) / (time.monotonic() - started)
    finally:
        loops.stop(procs)


def claims_per_second(db, url, loops, consumer, counts, rounds, seconds, backlog):
    """{(column, consumers): [claims per second in each round]} for pgbench, consumer and article loop."""
    script = loops.logs / "claim.pgbench"
    script.write_text(PGBENCH_SCRIPT)
    no_note = loops.logs / "claim-no-note.pgbench"
    no_note.write_text(PGBENCH_NO_NOTE_SCRIPT)
    columns = {
        "pgbench": lambda n: pgbench_claims(url, script, n, seconds),
        "pgbench, no note": lambda n: pgbench_claims(url, no_note, n, seconds),
        "consumer": lambda n: loop_claims(db, loops, consumer, n, seconds),
        "article loop": lambda n: loop_claims(db, loops, ARTICLE, n, seconds),
    }
    runs = {(column, n): [] for column in columns for n in counts}
    for round_ in range(1, rounds + 1):
        for n in counts:
            for column, measure in columns.items():
                if column == "article loop" and round_ > 1:
                    continue  # a baseline fifty times slower: one run says enough
                fresh_backlog(db, backlog)
                runs[column, n].append(measure(n))
                print(
                    f"  round {round_}, {n:2d} consumers, {column:12s} {runs[column, n][-1]:6.0f}/s"
                    f"   (load {load():.1f})",
                    flush=True,
                )
    return runs


# ---------------------------------------------------------------------------------------------------------
# 2. to 4., with the same four consumers


def pickup_latency(db, loops, jobs):
    """From the commit of each of `jobs` jobs the pusher inserts to its claim: count, p50, p99, max (s)."""
    db.run("TRUNCATE jobs, done_jobs, job_attempts")
    db.run(PICKUP_SETUP_SQL)
    try:
        # Far enough apart that the consumers are idle, waiting, when each job arrives.
        [pusher] = loops.start(PUSHER, 1, PUSH_COUNT=str(jobs), PUSH_INTERVAL_MIN="0.02", PUSH_INTERVAL_MAX="0.06")
        pusher.wait(jobs * 0.06 + 60)
        deadline = time.monotonic() + 60
        while db.value("SELECT count(*) FROM done_jobs") < jobs and time.monotonic() < deadline:
            time.sleep(0.1)
        count, (p50, p99), worst = db.run(PICKUP_SQL)[0]
        return count, p50, p99, worst
    finally:
        db.run(PICKUP_TEARDOWN_SQL)


def idle_transactions_per_second(stats, consumers, seconds):
    """Transactions per second per consumer, while `consumers` idle consumers are the server's only clients.

    `stats` is connected to another database, so that the bench's own statements are not counted.
    Autovacuum is paused for the window: its visits to the database (every autovacuum_naptime) run
    transactions of their own, which the same counters would add to the consumers'.
    """
    with autovacuum_paused(stats):
        time.sleep(STATS_SETTLE)  # what came before is counted before the window opens
        before = stats.value(TRANSACTIONS_SQL, (DATABASE,))
        time.sleep(seconds)
        return (stats.value(TRANSACTIONS_SQL, (DATABASE,)) - before) / seconds / consumers


def drain(db, jobs, timeout):
    """Queue `jobs` jobs at once for the running consumers: (claims per second over each tenth, seconds)."""
    db.run("TRUNCATE jobs, done_jobs, job_attempts")
    db.run(BACKLOG_SQL, {"n": jobs})
    queued = report = time.monotonic()
    while (done := db.value("SELECT count(*) FROM done_jobs")) < jobs:
        if time.monotonic() - queued > timeout:
            raise SystemExit(f"bench: only {done} of {jobs} jobs drained in {timeout:g}s")
        if time.monotonic() >= report:
            print(f"  {done:7d} done after {time.monotonic() - queued:3.0f}s   (load {load():.1f})", flush=True)
            report += 15
        time.sleep(1)
    return [rate for (rate,) in db.run(TENTHS_SQL)], time.monotonic() - queued


# ---------------------------------------------------------------------------------------------------------
# 5. KEDA's query


def query_milliseconds(db, query, queued, repeat=5):
    """The median time of `query` over `repeat` runs, with `queued` jobs in the table."""
    db.run("TRUNCATE jobs")
    db.run(BACKLOG_SQL, {"n": queued})
    db.run("ANALYZE jobs")
    db.value(query)  # the first read of freshly inserted rows also sets their hint bits
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        db.value(query)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------------------


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--consumer",
        type=Path,
        default=ROOT / "consumer" / "consumer.py",
        help="the consumer to measure (default consumer/consumer.py; give another to compare)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs behind each claims-per-second median (5)")
    parser.add_argument("--seconds", type=int, default=2, help="length of each of those runs (2)")
    parser.add_argument("--claims-backlog", type=int, default=100_000, help="jobs queued for each of those runs")
    parser.add_argument("--pushes", type=int, default=300, help="jobs pushed to measure the pickup (300)")
    parser.add_argument("--idle-seconds", type=int, default=30, help="length of the idle window (30)")
    parser.add_argument("--backlog", type=int, default=500_000, help="jobs in the large backlog (500000)")
    parser.add_argument("--drain-timeout", type=float, default=900, help="seconds allowed for the drain (900)")
    args = parser.parse_args()

    started, load_at_start = datetime.datetime.now().astimezone(), load()
    print(f"{started:%Y-%m-%d %H:%M %Z}, {machine()}, load average {load_at_start:.2f}", flush=True)
    pg = localpg.LocalPostgres().init()
    logs = Path(tempfile.mkdtemp(prefix="jobqueue-bench-"))
    try:
        url = pg.url()
        db, stats = Database(url), Database(pg.url("postgres"))
        version = db.value("SHOW server_version")
        loops = Loops(url, logs)

        print("1. Claims per second, work 0", flush=True)
        counts = (1, 4, 20)
        with autovacuum_paused(stats):
            claims = claims_per_second(
                db, url, loops, args.consumer, counts, args.rounds, args.seconds, args.claims_backlog
            )

        print("2.-4. Four consumers at their default settings, work 0: pickup, idle, drain", flush=True)
        consumers = loops.start(args.consumer, 4, PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0")
        try:
            wait_for_sessions(db, 4)
            time.sleep(1)  # each makes its first claim, finds the queue empty, and waits
            pickup = pickup_latency(db, loops, args.pushes)
            db.close()  # every transaction in the database counts in the idle window: none of ours
            idle = idle_transactions_per_second(stats, 4, args.idle_seconds)
            db = Database(url)
            tenths, drain_seconds = drain(db, args.backlog, args.drain_timeout)
        finally:
            Loops.stop(consumers)

        print("5. KEDA's query", flush=True)
        so, _ = keda_emulation.scaled_object(".")
        query = so.query
        asked = 1 / so.polling_interval + 1 / keda_emulation.SYNC_PERIOD  # times per second
        query_ms = {n: query_milliseconds(db, query, n) for n in (10_000, 1_000_000)}
    finally:
        pg.close()
        shutil.rmtree(logs, ignore_errors=True)

    def claims_row(n):
        pgbench, no_note, consumer, article = (
            statistics.median(claims[column, n])
            for column in ("pgbench", "pgbench, no note", "consumer", "article loop")
        )
        ratio = statistics.median(c / p for c, p in zip(claims["consumer", n], claims["pgbench", n], strict=True))
        return (
            f"Claims/s, {n} consumer{'s' if n > 1 else ''}, work 0",
            f"pgbench {pgbench:.0f} ({no_note:.0f} without the note), consumer {consumer:.0f} ({ratio:.2f} of "
            f"pgbench), article loop {article:.0f}",
            f">= {CLAIMS_GOAL[n]} of pgbench" if n in CLAIMS_GOAL else "",
            ratio >= CLAIMS_GOAL[n] if n in CLAIMS_GOAL else None,
        )

    count, p50, p99, worst = pickup
    rows = [
        *(claims_row(n) for n in counts),
        (
            f"Pickup latency, 4 idle consumers, {count} jobs",
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (max {worst * 1000:.1f} ms)",
            "p50 <= 10 ms, p99 <= 50 ms",
            p50 <= 0.010 and p99 <= 0.050,
        ),
        (
            f"Idle load, 4 consumers, {args.idle_seconds} s",
            f"{idle:.3f} transactions/s per consumer",
            "<= 0.1",
            idle <= 0.1,
        ),
        (
            f"Drain {args.backlog:,} jobs, 4 consumers",
            f"last tenth {tenths[-1] / tenths[0]:.2f} of the first ({tenths[-1]:.0f}/s against {tenths[0]:.0f}/s), "
            f"slowest {min(tenths) / tenths[0]:.2f}; {drain_seconds:.0f} s",
            ">= 0.8",
            tenths[-1] / tenths[0] >= 0.8,
        ),
        *(
            (
                f"KEDA's query, {n:,} jobs",
                f"{query_ms[n]:.1f} ms; {asked * 15:.0f} times per 15 s: {query_ms[n] / 1000 * asked:.2%} of a CPU",
                "",
                None,
            )
            for n in query_ms
        ),
    ]
    print()
    print(
        f"make bench, {started:%Y-%m-%d %H:%M %Z}: PostgreSQL {version} (embedded), Python {platform.python_version()}"
    )
    print(f"{machine()}; load average {load_at_start:.2f} at the start, {load():.2f} at the end")
    print(
        f"Claims/s: pgbench and consumer the median of {args.rounds} runs of {args.seconds} s, taken in turns, and"
        f" the median of the {args.rounds} ratios; article loop 1 run"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"{'':{widths[0]}}  {'measured':{widths[1]}}  {'goal':{widths[2]}}  met")
    for what, measured, goal, met in rows:
        verdict = "" if met is None else "yes" if met else "NO"
        print(f"{what:{widths[0]}}  {measured:{widths[1]}}  {goal:{widths[2]}}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
