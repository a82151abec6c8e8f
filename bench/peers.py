"""`make bench`, after bench/bench.py: the consumer beside the queues a user would pick instead, on one
embedded server, each run the way its users run it.

For each queue, and for 1 and 4 worker processes (one process per worker, as each queue's docs deploy
them): a fresh database with that queue's schema, installed by the queue's own tool; a backlog of
--backlog no-op jobs, queued the queue's bulk way, then vacuumed and checkpointed (outside the timed
window, the same state for every queue); the workers started with the queue's own command; and the time
from the first claim until every job of the backlog is done, read by the bench polling the queue's table
every POLL_SECONDS. jobs/s is the backlog over that time. The time from the workers' start to the first
claim (interpreter, imports, connection, schema checks) is printed beside it, not counted in it. After
the workers stop, every job of the backlog must be recorded as done in the queue's own bookkeeping.

The queues (QUEUES below says exactly how each runs):
- consumer: this project's, `python consumer/consumer.py` with the work at 0: one job per transaction.
- pgqueuer, with its default batch of 10 (`pgq run`), and with a batch of 1 (`pgq run --batch-size 1`).
- procrastinate, `procrastinate worker` with its defaults (one job at a time per worker).

Every queue's runs take turns, round after round (--rounds): each figure is the median of its runs, and
each ratio the median of the rounds' ratios, each between the consumer and that queue in the same round
(the disk's flush times drift on a shared machine, and every commit waits for one). Last, the consumer's
claims per second as bench.py's first row measures them (2 s windows on a backlog of 100,000), so that
the two ways of counting can be set side by side from the same run.

The peers live in a virtual environment of their own (.venv/peers, bench/requirements-peers.txt), which
`make bench` installs and `make test` never does. A peer that is missing or fails is one line, and the
others still run. Alone: .venv/bin/python bench/peers.py
"""

import argparse
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
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tools"))
import localpg  # noqa: E402

import bench  # noqa: E402  (bench/bench.py: its helpers, so that both measure the consumer the same way)

CONSUMER = ROOT / "consumer" / "consumer.py"
PEERS_VENV = ROOT / ".venv" / "peers"  # where `make bench` installs bench/requirements-peers.txt
DATABASE = "peer"  # made anew for every run, dropped after it
WORKER_COUNTS = (1, 4)
POLL_SECONDS = 0.01  # how often the bench counts what is left: each end of the timed window errs by up to this
STOP_SECONDS = 30  # a worker still running this long after SIGTERM is killed
STEADY_BACKLOG = 100_000  # jobs queued for each of bench.py's claims-per-second windows
STEADY_SECONDS = 2  # the length of each of those windows


class PeerError(Exception):
    """A queue that could not be installed, fed or run: one line, and that queue's remaining runs skipped."""


@dataclass
class Queue:
    name: str
    how: str  # how it is run, in a line, printed under the table
    install: list[list[str]]  # the commands that install its schema into the fresh database
    enqueue: list[str] | None  # the command that queues the backlog ({n}: its size); None: bench.BACKLOG_SQL
    worker: list[str]  # the command that one worker process runs
    # Two counts, from one query on the queue's table: jobs no worker has claimed yet (a claim this
    # bench can see), and jobs not yet done. The first falls below the backlog at the first claim, the
    # second reaches 0 when the backlog is done.
    progress_sql: str
    done_sql: str  # after the workers stop: how many jobs of the backlog are recorded as done
    env: dict = field(default_factory=dict)


def peer_bin(name):
    """A program of the peers' environment, found when the command runs (--peers-venv)."""
    return f"{{peers}}/{name}"


# A peer's backlog: its module's enqueue(n), in the peers' Python. Not the module run as a script:
# procrastinate warns of an app instantiated in __main__.
def peer_enqueue(module):
    return [peer_bin("python"), "-c", f"import asyncio, {module}; asyncio.run({module}.enqueue({{n}}))"]


PGQUEUER_PROGRESS_SQL = "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FROM pgqueuer"
# pgqueuer deletes a finished job from its queue and logs it as 'successful' in the same statement.
PGQUEUER_DONE_SQL = "SELECT count(DISTINCT job_id) FILTER (WHERE status = 'successful') FROM pgqueuer_log"
PGQUEUER_INSTALL = [
    [peer_bin("pgq"), "install"],
    # Its deployment checklist (docs/guides/deployment.md) runs this after the install: autovacuum at 1 %
    # of dead rows on its queue table, and room left in each page for its status updates.
    [peer_bin("pgq"), "autovac"],
]

QUEUES = [
    Queue(
        name="consumer",
        how="consumer/consumer.py (psycopg2), PROCESS_TIME_MIN=0 PROCESS_TIME_MAX=0, the rest at their "
        "defaults; schema db/init.sql; backlog one INSERT ... SELECT",
        # psql reads the same libpq variables as the peers do.
        install=[["{pgbin}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(ROOT / "db" / "init.sql")]],
        enqueue=None,
        worker=[sys.executable, str(CONSUMER)],
        # A claimed job stays in jobs, deleted but uncommitted, until its transaction commits: at work 0,
        # its claim shows when it is done.
        progress_sql="SELECT count(*), count(*) FROM jobs",
        done_sql="SELECT count(DISTINCT id) FROM done_jobs",
        env={"PROCESS_TIME_MIN": "0", "PROCESS_TIME_MAX": "0"},
    ),
    Queue(
        name="pgqueuer 1.6.0, batch 10",
        how="pgq run peer_pgqueuer:main (asyncpg, uvloop), its defaults: --batch-size 10, durable tables; "
        "schema pgq install, pgq autovac; backlog one Queries.enqueue of lists",
        install=PGQUEUER_INSTALL,
        enqueue=peer_enqueue("peer_pgqueuer"),
        worker=[peer_bin("pgq"), "run", "peer_pgqueuer:main"],
        progress_sql=PGQUEUER_PROGRESS_SQL,
        done_sql=PGQUEUER_DONE_SQL,
    ),
    Queue(
        name="pgqueuer 1.6.0, batch 1",
        how="the same with --batch-size 1: one job per claim, as the consumer",
        install=PGQUEUER_INSTALL,
        enqueue=peer_enqueue("peer_pgqueuer"),
        worker=[peer_bin("pgq"), "run", "--batch-size", "1", "peer_pgqueuer:main"],
        progress_sql=PGQUEUER_PROGRESS_SQL,
        done_sql=PGQUEUER_DONE_SQL,
    ),
    Queue(
        name="procrastinate 3.10.0",
        how="procrastinate --app=peer_procrastinate.app worker (psycopg 3), its defaults: --concurrency 1, "
        "finished jobs kept; schema procrastinate schema --apply; backlog one batch_defer_async",
        install=[[peer_bin("procrastinate"), "--app=peer_procrastinate.app", "schema", "--apply"]],
        enqueue=peer_enqueue("peer_procrastinate"),
        worker=[peer_bin("procrastinate"), "--app=peer_procrastinate.app", "worker"],
        progress_sql="SELECT count(*) FILTER (WHERE status = 'todo'), "
        "count(*) FILTER (WHERE status IN ('todo', 'doing')) FROM procrastinate_jobs",
        done_sql="SELECT count(*) FILTER (WHERE status = 'succeeded') FROM procrastinate_jobs",
    ),
]


class Server:
    """The embedded server, and one database made anew for each run."""

    def __init__(self, pg, peers_venv):
        self.pg = pg
        self.admin = bench.Database(pg.url(database="postgres"))
        self.peers_venv = peers_venv

    def resolve(self, args, **fill):
        """A queue's command with its placeholders filled in: {peers}, {pgbin}, and those of `fill`."""
        args = [arg.format(peers=self.peers_venv / "bin", pgbin=localpg.BIN, **fill) for arg in args]
        if not Path(args[0]).exists():
            raise PeerError(f"no {args[0]}: `make bench` installs bench/requirements-peers.txt into {self.peers_venv}")
        return args

    def url(self):
        return self.pg.url(database=DATABASE)

    def libpq_env(self):
        """The variables every libpq-based client reads (the peers' docs connect this way), for DATABASE."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.pg.port),
            "PGUSER": localpg.USER,
            "PGPASSWORD": localpg.PASSWORD,
            "PGDATABASE": DATABASE,
        }

    def fresh_database(self):
        self.drop_database()
        self.admin.run(f"CREATE DATABASE {DATABASE}")

    def drop_database(self):
        self.admin.run(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")  # FORCE: a stuck worker's session too


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def one_line(text):
    """The last line of a tool's output that says something: where a traceback or an error ends."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip(" │╰─╯")]
    return lines[-1][:200] if lines else "no output"


def command(server, queue, args, **fill):
    """Run one of a queue's own commands on the fresh database; PeerError with its last line if it fails."""
    args = server.resolve(args, **fill)
    out = subprocess.run(args, env=worker_env(server, queue), capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise PeerError(f"`{Path(args[0]).name} {' '.join(args[1:])}` failed: {one_line(out.stdout + out.stderr)}")


def worker_env(server, queue, name=None):
    env = {**os.environ, **server.libpq_env(), "PYTHONPATH": str(BENCH), **queue.env}
    env["DATABASE_URL"] = server.url()  # the consumer's one setting it needs
    if name:
        env["HOSTNAME"] = name  # the consumer's name in its log lines and in pg_stat_activity
    return env


def progress(db, queue):
    try:
        return tuple(db.run(queue.progress_sql)[0])
    except psycopg2.Error as error:
        raise PeerError(f"cannot count its jobs: {one_line(str(error))}") from error


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def drain(server, queue, workers, backlog, logs, timeout):
    """One run: (jobs per second from the first claim, seconds from the workers' start to the first claim)."""
    server.fresh_database()
    for args in queue.install:
        command(server, queue, args)
    db = bench.Database(server.url())
    procs, names = [], [f"{slug(queue.name)}-{workers}-{i}" for i in range(1, workers + 1)]
    try:
        if queue.enqueue is None:
            db.run(bench.BACKLOG_SQL, {"n": backlog})
        else:
            command(server, queue, queue.enqueue, n=backlog)
        if (counts := progress(db, queue)) != (backlog, backlog):
            raise PeerError(f"after the enqueue, {counts} jobs (unclaimed, not done), not {backlog} queued")
        db.run("VACUUM ANALYZE")
        db.run("CHECKPOINT")

        worker = server.resolve(queue.worker)
        started = time.monotonic()
        for name in names:
            with open(logs / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
                procs.append(
                    subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT, env=worker_env(server, queue, name))
                )
        first = None
        while True:
            unclaimed, pending = progress(db, queue)
            now = time.monotonic()
            if first is None and unclaimed < backlog:
                first = now
            if pending == 0:
                if first is None:
                    raise PeerError(f"all {backlog} jobs were done before the first count: give a larger --backlog")
                break
            if now - started > timeout:
                raise PeerError(f"{backlog - pending} of {backlog} jobs done after {timeout:g} s")
            for name, proc in zip(names, procs, strict=True):
                if proc.poll() is not None:
                    last = one_line((logs / f"{name}.log").read_text())
                    raise PeerError(f"a worker exited with {proc.returncode}: {last}")
            time.sleep(POLL_SECONDS)
        stop(procs)
        done = db.value(queue.done_sql)
        if done != backlog:
            raise PeerError(f"{done} of {backlog} jobs recorded as done")
        return backlog / (now - first), first - started
    finally:
        stop(procs)
        db.close()
        server.drop_database()


def steady_claims(pg, logs, rounds):
    """bench.py's first row for 1 and 4 consumers: {consumers: [claims per second in each round]}."""
    db, stats = bench.Database(pg.url()), bench.Database(pg.url(database="postgres"))
    loops = bench.Loops(pg.url(), logs)
    runs = {n: [] for n in WORKER_COUNTS}
    try:
        with bench.autovacuum_paused(stats):
            for round_ in range(1, rounds + 1):
                for n in WORKER_COUNTS:
                    bench.fresh_backlog(db, STEADY_BACKLOG)
                    runs[n].append(bench.loop_claims(db, loops, CONSUMER, n, STEADY_SECONDS))
                    print(
                        f"  round {round_}, {n} consumer{'s' if n > 1 else ' '}, bench.py's way "
                        f"{runs[n][-1]:6.0f}/s   (load {bench.load():.1f})",
                        flush=True,
                    )
    finally:
        db.close()
        stats.close()
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=4000, help="jobs queued for each run (4000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs behind each median (3)")
    parser.add_argument("--drain-timeout", type=float, default=300, help="seconds allowed for one run (300)")
    parser.add_argument("--only", action="append", help="run only the queues whose name starts with this")
    parser.add_argument(
        "--peers-venv", type=Path, default=PEERS_VENV, help="the peers' virtual environment (.venv/peers)"
    )
    args = parser.parse_args()
    queues = [q for q in QUEUES if not args.only or any(q.name.startswith(o) for o in args.only)]

    started, load_at_start = datetime.datetime.now().astimezone(), bench.load()
    print(f"{started:%Y-%m-%d %H:%M %Z}, {bench.machine()}, load average {load_at_start:.2f}", flush=True)
    print(f"The consumer and its peers, a backlog of {args.backlog:,} no-op jobs, 1 and 4 workers", flush=True)
    pg = localpg.LocalPostgres().init()
    logs = Path(tempfile.mkdtemp(prefix="jobqueue-peers-"))
    rates = {(q.name, n): [] for q in queues for n in WORKER_COUNTS}
    startups = {(q.name, n): [] for q in queues for n in WORKER_COUNTS}
    failed = {}  # queue name: the one line that says why
    try:
        server = Server(pg, args.peers_venv.absolute())
        version = server.admin.value("SHOW server_version")
        for round_ in range(1, args.rounds + 1):
            for n in WORKER_COUNTS:
                for queue in queues:
                    if queue.name in failed:
                        continue
                    try:
                        rate, startup = drain(server, queue, n, args.backlog, logs, args.drain_timeout)
                    except (PeerError, subprocess.TimeoutExpired, psycopg2.Error, OSError) as error:
                        failed[queue.name] = str(error).strip().splitlines()[0] or type(error).__name__
                        print(f"  {queue.name}: FAILED, {failed[queue.name]} (its other runs skipped)", flush=True)
                        continue
                    rates[queue.name, n].append(rate)
                    startups[queue.name, n].append(startup)
                    print(
                        f"  round {round_}, {n} worker{'s' if n > 1 else ' '}, {queue.name:24s} {rate:6.0f}/s, "
                        f"first claim {startup:.2f} s after the start   (load {bench.load():.1f})",
                        flush=True,
                    )
        steady = {}
        if any(q.name == "consumer" for q in queues):
            print("The consumer's claims per second as bench.py's first row counts them", flush=True)
            steady = steady_claims(pg, logs, args.rounds)
    finally:
        pg.close()
        if failed:
            print(f"The workers' output is kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)

    def ratio(queue, n):
        """The consumer's rate over this queue's, the median of the rounds in which both ran."""
        # Round by round: a queue that failed has no runs after that, so the shorter list ends the pairs.
        pairs = list(zip(rates.get(("consumer", n), []), rates[queue.name, n], strict=False))
        return statistics.median(c / p for c, p in pairs) if pairs else None

    rows = []
    for n in WORKER_COUNTS:
        for queue in queues:
            runs = rates[queue.name, n]
            if not runs:
                rows.append((queue.name, str(n), "failed", "", ""))  # why: under the table
                continue
            r = ratio(queue, n) if queue.name != "consumer" else None
            rows.append(
                (
                    queue.name,
                    str(n),
                    f"{statistics.median(runs):.0f}",
                    "" if r is None else f"{r:.2f}",
                    f"{statistics.median(startups[queue.name, n]):.2f} s",
                )
            )
    for n in steady:
        rows.append(
            (
                f"consumer, bench.py's way: {STEADY_BACKLOG:,} queued, {STEADY_SECONDS} s",
                str(n),
                f"{statistics.median(steady[n]):.0f}",
                "",
                "",
            )
        )
    header = ("", "workers", "jobs/s", "consumer/queue", "start to first claim")

    print()
    print(
        f"make bench, peers, {started:%Y-%m-%d %H:%M %Z}: PostgreSQL {version} (embedded), "
        f"Python {platform.python_version()}"
    )
    print(f"{bench.machine()}; load average {load_at_start:.2f} at the start, {bench.load():.2f} at the end")
    print(
        f"A backlog of {args.backlog:,} no-op jobs, timed from the first claim until every job is done; "
        f"the median of {args.rounds} runs, taken in turns, and the median of the {args.rounds} ratios"
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(f"{cell:{width}}" for cell, width in zip(row, widths, strict=True)).rstrip())
    print("How each ran (one process per worker; the server of db/server-settings.conf, autovacuum on):")
    for queue in queues:
        print(f"  {queue.name}: {queue.how}")
    for name, why in failed.items():
        print(f"FAILED {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
