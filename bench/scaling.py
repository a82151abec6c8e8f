"""`make docs-burst` and `make docs-steady`: the scaling chapter's numbers, measured with `make run`'s emulation of KEDA
and its HPA, in real time, with the article's timings (the loops' defaults: a job every 1-3 s, 2-10 s of work).

    bench/scaling.py burst    `make run TIMELINE=docs/scaling-burst.csv`; BURST_AT seconds in, `make burst
                              JOBS=200`; stopped DURATION seconds in. Draws docs/scaling-burst.png and prints
                              the times from the burst to the peak and back to the minimum.
    bench/scaling.py steady   the same for --minutes, no burst, into docs/scaling-steady.csv; prints how the
                              consumers and the jobs counted are distributed after the first --warmup seconds.

Either prints the run's summary too: every job accounted for, every consumer scaled away exited 0.
"""

import argparse
import csv
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import keda_emulation  # noqa: E402

# The loops' own defaults are the article's timings: these must not leak in from the caller's environment.
TIMINGS = ("PUSH_INTERVAL_MIN", "PUSH_INTERVAL_MAX", "PUSH_COUNT", "PROCESS_TIME_MIN", "PROCESS_TIME_MAX")


def read(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def start_run(timeline, title, log):
    timeline.unlink(missing_ok=True)  # the rows waited for must be this run's
    env = {k: v for k, v in os.environ.items() if k not in TIMINGS and k != "DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "run.py"), "--timeline", str(timeline), "--title", title],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for_row(timeline, seconds, run):
    """Until the timeline has a row at `seconds` or later; that row's time."""
    while True:
        if run.poll() is not None:
            raise SystemExit(f"make run stopped early (exit {run.returncode})")
        if timeline.exists():
            rows = read(timeline)
            if rows and rows[-1]["seconds"] >= seconds:
                return rows[-1]["seconds"]
        time.sleep(0.2)


def stop_run(run, log_path):
    if run.poll() is None:
        run.send_signal(signal.SIGINT)
        run.wait(120)
    text = Path(log_path).read_text()
    for line in text.splitlines():
        if line.startswith(("Summary:", "Consumers:", "Timeline:")):
            print(line)
    summary = re.search(r"Summary: (\d+) pushed, (\d+) done, (\d+) still queued, (\d+) set aside", text)
    consumers = re.search(r"(\d+) of (\d+) exited 0", text)
    ok = run.returncode == 0 and summary and consumers and consumers.group(1) == consumers.group(2)
    if not ok:
        raise SystemExit(f"the run did not end cleanly (exit {run.returncode}); its log: {log_path}")


def burst(args):
    so, _ = keda_emulation.scaled_object(".")
    timeline = ROOT / "docs" / "scaling-burst.csv"
    log_path = Path(tempfile.mkdtemp(prefix="jobqueue-chart-")) / "run.log"
    title = (
        f"make docs-burst: make run (base ScaledObject), make burst JOBS={args.jobs} at {args.burst_at:g} s "
        f"- emulation of KEDA and its HPA, real time"
    )
    with open(log_path, "w") as log:
        run = start_run(timeline, title, log)
        try:
            at = wait_for_row(timeline, args.burst_at, run)
            # This run's own database, even if another `make run` is what .venv/make-run.json points at.
            url = re.search(r"listening on (\S+)", log_path.read_text()).group(1)
            env = {**{k: v for k, v in os.environ.items() if k not in TIMINGS}, "DATABASE_URL": url}
            subprocess.run(
                [sys.executable, str(ROOT / "tools" / "burst.py"), "--jobs", str(args.jobs)],
                env=env,
                stdout=subprocess.DEVNULL,
                check=True,
            )
            print(f"Burst of {args.jobs} jobs pushed right after the evaluation at {at:g} s; log in {log_path}")
            wait_for_row(timeline, args.duration, run)
        finally:
            stop_run(run, log_path)

    rows = read(timeline)
    after = [r for r in rows if r["seconds"] > at]
    peak = max(r["consumers"] for r in after)
    peak_row = next(r for r in after if r["consumers"] == peak)
    top = next(r for r in after if r["desired"] == max(x["desired"] for x in after))
    back = next((r for r in after if r["seconds"] > top["seconds"] and r["desired"] == so.min_replica_count), None)
    before = [r for r in rows if r["seconds"] <= at]
    print(f"Before the burst: {before[-1]['desired']:g} consumers, {before[-1]['jobs']:g} jobs counted at {at:g} s")
    print(f"First evaluation after it: {after[0]['seconds'] - at:g} s later, {after[0]['jobs']:g} jobs counted")
    print(
        f"Peak: {top['desired']:g} consumers decided {top['seconds'] - at:g} s after the burst "
        f"({peak:g} processes alive at most, first {peak_row['seconds'] - at:g} s after it)"
    )
    if back:
        print(f"Back to the minimum ({so.min_replica_count}): {back['seconds'] - at:g} s after the burst")
    else:
        print(f"Not back to the minimum ({so.min_replica_count}) by {rows[-1]['seconds']:g} s")
    empty = next((r for r in after if r["seconds"] > top["seconds"] and r["jobs"] <= before[-1]["jobs"]), None)
    if empty:
        print(f"Jobs counted back to the level before the burst: {empty['seconds'] - at:g} s after it")


def steady(args):
    timeline = ROOT / "docs" / "scaling-steady.csv"
    log_path = Path(tempfile.mkdtemp(prefix="jobqueue-steady-")) / "run.log"
    title = f"make docs-steady: make run (base ScaledObject) for {args.minutes:g} min - emulation of KEDA and its HPA"
    with open(log_path, "w") as log:
        run = start_run(timeline, title, log)
        print(f"Running for {args.minutes:g} min; log in {log_path}")
        try:
            wait_for_row(timeline, args.minutes * 60, run)
        finally:
            stop_run(run, log_path)
    rows = [r for r in read(timeline) if r["seconds"] >= args.warmup]
    desired = Counter(int(r["desired"]) for r in rows)
    jobs = sorted(r["jobs"] for r in rows)
    changes = sum(1 for a, b in pairwise(rows) if a["desired"] != b["desired"])
    print(
        f"{len(rows)} evaluations from {args.warmup:g} s to {rows[-1]['seconds']:g} s; "
        f"the count changed at {changes} of them"
    )
    print("consumers | share of evaluations")
    for count in sorted(desired):
        print(f"{count:>9} | {desired[count] / len(rows):.0%}")
    deciles = statistics.quantiles(jobs, n=10)
    print(
        f"jobs counted: min {jobs[0]:g}, 10th percentile {deciles[0]:g}, median {statistics.median(jobs):g}, "
        f"90th percentile {deciles[-1]:g}, max {jobs[-1]:g}; "
        f"mean consumers {statistics.mean(r['desired'] for r in rows):.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--jobs", type=int, default=200)
    b.add_argument("--burst-at", type=float, default=120, help="seconds into the run (default 120)")
    b.add_argument("--duration", type=float, default=480, help="seconds the run lasts (default 480)")
    s = sub.add_parser("steady")
    s.add_argument("--minutes", type=float, default=60)
    s.add_argument("--warmup", type=float, default=300, help="seconds left out of the distribution (default 300)")
    args = parser.parse_args()
    burst(args) if args.what == "burst" else steady(args)


if __name__ == "__main__":
    main()
