"""`make tune`: what each scaling setting costs, measured. For every variant of bench/tune-variants.yaml, one run
of `make run` (tools/run.py: the real pusher and consumers, sized by the emulation of KEDA and its HPA, or a
fixed number of them), under the article's load (a job every 1 to 3 s, 2 to 10 s of work), with a burst of
BURST_JOBS jobs on top of it part of the way through. For each variant and each window, steady and burst,
one row: how long a job waited from its insert to its claim, and from its insert to its record; the
consumer-seconds it cost beside its own work; the consumers on average and at the peak; the scale changes.
Beside the fixed-count references, the rows of an independent model of the same queue (bench/queue_model.py).

On a compressed clock: --time-scale S runs the emulation S times faster (tools/run.py), and the loops' timings
are divided by S to match, so that a run of STOP_AT emulated seconds takes STOP_AT / S real ones. Every time
measured is converted back into emulated seconds (times S). What that changes is in docs/tuning.md.

Writes, into --out (docs/ by default): tuning.csv (the rows), tuning-timelines.csv (every evaluation of every
emulated run, as `make run TIMELINE=` writes them, with the variant's name) and tuning.png (p95 wait against
consumer-seconds per job, one point per variant). Prints the rows as the Markdown table docs/tuning.md quotes.
"""

import argparse
import csv
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "bench")]
import keda_emulation  # noqa: E402
import localpg  # noqa: E402
import queue_model  # noqa: E402
import tune_metrics  # noqa: E402

VARIANTS = ROOT / "bench" / "tune-variants.yaml"

# The schedule of every run, in emulated seconds from its start. The first WARMUP seconds are left out: the run
# starts from an empty queue and one consumer (a new Deployment's). Steady: the jobs created from WARMUP to
# BURST_AT, about 870 of them. Burst: BURST_JOBS jobs at once at BURST_AT, the article's load going on, and the
# jobs created until BURST_END, which leaves time for the slowest variant to be back where it was. The run
# goes on until STOP_AT so that the burst window's last jobs are claimed.
WARMUP = 300.0
BURST_AT = 2100.0
BURST_JOBS = 200
BURST_END = 3000.0
STOP_AT = 3300.0
# 3300 emulated seconds in 165 real ones, the HPA's 15 s sync period in 0.75 s (docs/tuning.md: what it changes).
TIME_SCALE = 20.0
MODEL_RUNS = 20  # runs of the model per fixed-count variant and window; its rows are their medians
STOP_GRACE = 120  # real seconds for a run to stop once asked: its consumers finish their jobs in hand

# The loops' own timings must not leak in from the caller's environment: the run sets them, compressed.
TIMINGS = ("PUSH_INTERVAL_MIN", "PUSH_INTERVAL_MAX", "PUSH_COUNT", "PROCESS_TIME_MIN", "PROCESS_TIME_MAX")

CSV_FIELDS = [
    "date",
    "time_scale",
    "variant",
    "label",
    "scenario",
    "source",
    "window_start",
    "window_end",
    "burst_jobs",
    "jobs",
    "unclaimed",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "wait_max",
    "done_p50",
    "done_p95",
    "work_per_job",
    "consumer_s_per_job",
    "cost",
    "consumers_avg",
    "consumers_peak",
    "scale_changes",
    "arrivals_per_s",
    "wait_p95_low",
    "wait_p95_high",
]


class TuneError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------
# The variants, and the kustomize target each one is.


def variants(path=VARIANTS):
    """The variants, in order; each has exactly one of overlay, patch and consumers."""
    found = yaml.safe_load(path.read_text())
    for variant in found:
        kinds = [key for key in ("overlay", "patch", "consumers") if key in variant]
        if len(kinds) != 1:
            raise TuneError(f"{path.name}: {variant.get('name')} needs exactly one of overlay, patch, consumers")
    return found


def patch_operations(variant, time_scale):
    """The variant's JSON6902 operations, with the value at compress_seconds divided by the time scale: a query
    that measures seconds returns real ones, so its target must be in real seconds too."""
    operations = [dict(op) for op in variant["patch"]]
    path = variant.get("compress_seconds")
    if path:
        (op,) = [op for op in operations if op["path"] == path]
        op["value"] = f"{float(op['value']) / time_scale:g}"
    return operations


def kustomization(variant, time_scale, directory):
    """The temporary kustomization of a patch variant, in `directory`: k8s/base and the variant's operations."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "k8s" / "base", directory)],
        "patches": [
            {
                "target": {"group": "keda.sh", "kind": "ScaledObject", "name": "job-consumer-scaler"},
                "patch": yaml.safe_dump(patch_operations(variant, time_scale), sort_keys=False),
            }
        ],
    }


def target(variant, time_scale, workdir):
    """What `make run OVERLAY=` the variant is: an overlay of the repository, or a temporary kustomization
    written under workdir; None for a fixed count."""
    if "consumers" in variant:
        return None
    if "overlay" in variant:
        return variant["overlay"]
    directory = Path(workdir) / variant["name"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(kustomization(variant, time_scale, directory), sort_keys=False)
    )
    return str(directory)


# ---------------------------------------------------------------------------------------------------------
# One run.


class Schedule:
    def __init__(self, time_scale, warmup, burst_at, burst_end, stop_at, burst_jobs):
        if not 0 <= warmup < burst_at < burst_end <= stop_at:
            raise TuneError("the schedule must have warmup < burst-at < burst-end <= stop-at")
        self.time_scale, self.warmup, self.burst_at = time_scale, warmup, burst_at
        self.burst_end, self.stop_at, self.burst_jobs = burst_end, stop_at, burst_jobs

    def windows(self):
        """scenario -> (start, end, jobs that came at once)"""
        return {"steady": (self.warmup, self.burst_at, 0), "burst": (self.burst_at, self.burst_end, self.burst_jobs)}

    def loop_timings(self):
        """The article's timings, each divided by the time scale."""
        s = self.time_scale
        return {
            "PUSH_INTERVAL_MIN": repr(queue_model.PUSH_INTERVAL[0] / s),
            "PUSH_INTERVAL_MAX": repr(queue_model.PUSH_INTERVAL[1] / s),
            "PROCESS_TIME_MIN": repr(queue_model.PROCESS_TIME[0] / s),
            "PROCESS_TIME_MAX": repr(queue_model.PROCESS_TIME[1] / s),
        }


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_started(processes, run):
    """The Unix time of the run's start, once tools/run.py has written it."""
    while True:
        if run.poll() is not None:
            raise TuneError(f"make run stopped early (exit {run.returncode})")
        if processes.exists():
            for row in read_csv(processes):
                if row["process"] == "run":
                    return float(row["unix_time"])
        time.sleep(0.05)


def sleep_until(unix_time, run):
    while (left := unix_time - time.time()) > 0:
        if run.poll() is not None:
            raise TuneError(f"make run stopped early (exit {run.returncode})")
        time.sleep(min(left, 0.2))


def run_variant(server, number, variant, schedule, workdir):
    """One run of `make run` for the variant, on a fresh database of `server`: (jobs, consumers, timeline, end),
    every time in emulated seconds from the run's start."""
    database = f"tune_{number}"
    admin = server.url(database="postgres")
    localpg.execute(admin, f"DROP DATABASE IF EXISTS {database}")
    localpg.execute(admin, f"CREATE DATABASE {database} TEMPLATE {localpg.DATABASE}")
    url = server.url(database=database)
    folder = Path(workdir) / variant["name"]
    folder.mkdir(parents=True, exist_ok=True)
    processes, timeline, log_path = folder / "processes.csv", folder / "timeline.csv", folder / "run.log"
    overlay = target(variant, schedule.time_scale, workdir)
    args = ["--database-url", url, "--processes", str(processes)]
    if overlay is None:
        args += ["--consumers", str(variant["consumers"])]
    else:
        args += ["--overlay", overlay, "--timeline", str(timeline), "--time-scale", f"{schedule.time_scale:g}"]
        args += ["--title", f"make tune: {variant['label']}"]
    env = {k: v for k, v in os.environ.items() if k not in TIMINGS and k != "DATABASE_URL"}
    env.update(schedule.loop_timings())
    s = schedule.time_scale
    with open(log_path, "w") as log:
        run = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "run.py"), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            zero = run_started(processes, run)
            sleep_until(zero + schedule.burst_at / s, run)
            localpg.rows(
                localpg.uri(url, "pusher"),
                "INSERT INTO jobs (payload) SELECT 'burst ' || n FROM generate_series(1, %s) AS n RETURNING id",
                (schedule.burst_jobs,),
            )
            sleep_until(zero + schedule.stop_at / s, run)
            stopped = (time.time() - zero) * s
            run.send_signal(signal.SIGINT)
            code = run.wait(STOP_GRACE)
        finally:
            if run.poll() is None:
                run.kill()
    text = log_path.read_text()
    # A job a consumer failed would be done again, and timed twice; and every consumer the emulation scaled away
    # must have finished its job and exited 0, as a pod would.
    failed = re.search(r"Traceback|Database error|Lost the database connection|exited with an error", text)
    away = re.search(r"(\d+) of (\d+) exited 0", text)
    if code != 0 or failed or (away and away.group(1) != away.group(2)):
        raise TuneError(f"{variant['name']}: the run did not end cleanly (exit {code}); its log: {log_path}")

    def emulated(unix_time):
        return None if unix_time is None else (unix_time - zero) * s

    done = localpg.rows(
        url,
        "SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM claimed_at)::float8, "
        "extract(epoch FROM completed_at)::float8 FROM done_jobs",
    )
    queued = localpg.rows(url, "SELECT extract(epoch FROM created_at)::float8 FROM jobs")
    (aside,) = localpg.rows(url, "SELECT count(*) FROM failed_jobs")[0]
    if aside:
        raise TuneError(f"{variant['name']}: {aside} jobs were set aside; its log: {log_path}")
    jobs = [tuple(emulated(t) for t in row) for row in done] + [(emulated(row[0]), None, None) for row in queued]
    localpg.execute(admin, f"DROP DATABASE {database}")
    # Kept beside the run's log: enough to compute the rows again without running again.
    write_csv(
        folder / "jobs.csv",
        ["created", "claimed", "completed"],
        [dict(zip(("created", "claimed", "completed"), job, strict=True)) for job in jobs],
    )

    lifetimes = {}
    for row in read_csv(processes):
        if row["process"].startswith("consumer-"):
            lifetimes.setdefault(row["process"], [None, None])[row["event"] == "exit"] = emulated(
                float(row["unix_time"])
            )
    consumers = [tuple(times) for times in lifetimes.values()]
    evaluations = read_csv(timeline) if overlay is not None else []
    return jobs, consumers, evaluations, stopped


# ---------------------------------------------------------------------------------------------------------
# Rows: measured, and the model's.


def measured_rows(jobs, consumers, evaluations, stopped, schedule):
    timeline = [(float(row["seconds"]), int(row["desired"])) for row in evaluations]
    return {
        scenario: tune_metrics.window_row(jobs, consumers, timeline, t0, t1, stopped, burst)
        for scenario, (t0, t1, burst) in schedule.windows().items()
    }


def model_rows(count, schedule, runs=MODEL_RUNS):
    """scenario -> (the median row over `runs` runs of the model, the lowest and highest p95 wait among them)."""
    rows = {scenario: [] for scenario in schedule.windows()}
    for seed in range(runs):
        jobs = queue_model.simulate(count, schedule.stop_at, seed, schedule.burst_at, schedule.burst_jobs)
        consumers = [(0.0, None)] * count
        for scenario, (t0, t1, burst) in schedule.windows().items():
            rows[scenario].append(tune_metrics.window_row(jobs, consumers, [], t0, t1, schedule.stop_at, burst))
    return {scenario: (median_row(found), p95_range(found)) for scenario, found in rows.items()}


def median_row(rows):
    """Field by field, the median (nearest rank) of the rows."""

    def middle(values):
        return tune_metrics.percentile(values, 50)

    def middle_bound(bounds):
        value = middle([b.value for b in bounds])
        return next(b for b in bounds if b.value == value)

    first = rows[0]
    fields = {}
    for name in first.__dataclass_fields__:
        values = [getattr(row, name) for row in rows]
        if isinstance(values[0], dict):
            fields[name] = {p: middle_bound([v[p] for v in values]) for p in values[0]}
        else:
            fields[name] = middle(values)
    return tune_metrics.Row(**fields)


def p95_range(rows):
    values = [row.wait[95].value for row in rows]
    return min(values), max(values)


# ---------------------------------------------------------------------------------------------------------
# Output: the CSV, the Markdown table, the picture.


def csv_row(date, schedule, variant, scenario, source, row, spread=None):
    t0, t1, _ = schedule.windows()[scenario]
    return {
        "date": date,
        "time_scale": f"{schedule.time_scale:g}",
        "variant": variant["name"],
        "label": variant["label"],
        "scenario": scenario,
        "source": source,
        "window_start": f"{t0:g}",
        "window_end": f"{t1:g}",
        "burst_jobs": str(schedule.windows()[scenario][2]),
        "jobs": str(row.jobs),
        "unclaimed": str(row.unclaimed),
        "wait_p50": str(row.wait[50]),
        "wait_p95": str(row.wait[95]),
        "wait_p99": str(row.wait[99]),
        "wait_max": str(row.wait[100]),
        "done_p50": str(row.done[50]),
        "done_p95": str(row.done[95]),
        "work_per_job": f"{row.work_per_job:.2f}",
        "consumer_s_per_job": f"{row.consumer_seconds_per_job:.2f}",
        "cost": f"{row.cost:.2f}",
        "consumers_avg": f"{row.consumers_avg:.2f}",
        "consumers_peak": str(row.consumers_peak),
        "scale_changes": str(row.scale_changes),
        "arrivals_per_s": f"{row.arrivals_per_second:.3f}",
        "wait_p95_low": "" if spread is None else f"{spread[0]:.1f}",
        "wait_p95_high": "" if spread is None else f"{spread[1]:.1f}",
    }


TABLE_HEADER = [
    "Variant",
    "Jobs",
    "Wait p50",
    "p95",
    "p99",
    "max",
    "Insert to done p50",
    "p95",
    "Consumer-s per job",
    "per s of work",
    "Consumers avg",
    "peak",
    "Scale changes",
]


def markdown_table(rows, scenario):
    """The rows of one scenario as docs/tuning.md quotes them, from the CSV's rows: waits in emulated seconds,
    >= where the end of the run cut some jobs' waits short; a model row gives its runs' range of p95."""

    def seconds(value):
        return value.replace(">=", "≥ ")

    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + " --- |" * len(TABLE_HEADER)]
    for row in (r for r in rows if r["scenario"] == scenario):
        model = row["source"] != "measured"
        p95 = seconds(row["wait_p95"]) + (f" ({row['wait_p95_low']} to {row['wait_p95_high']})" if model else "")
        cells = [
            f"model: {row['label']}" if model else row["label"],
            row["jobs"] + (f" ({row['unclaimed']} unclaimed)" if row["unclaimed"] != "0" else ""),
            seconds(row["wait_p50"]),
            p95,
            seconds(row["wait_p99"]),
            seconds(row["wait_max"]),
            seconds(row["done_p50"]),
            seconds(row["done_p95"]),
            row["consumer_s_per_job"],
            row["cost"],
            row["consumers_avg"],
            str(row["consumers_peak"]),
            str(row["scale_changes"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SUMMARY_HEADER = [
    "Variant",
    "Wait p50",
    "p95",
    "Consumer-s per job",
    "per s of work",
    "Consumers avg",
    "Scale changes",
    "Burst: wait p95",
    "consumer-s per job",
]


def summary_table(rows):
    """The measured rows of both scenarios side by side, fewer columns: the table docs/scaling.md quotes."""
    lines = ["| " + " | ".join(SUMMARY_HEADER) + " |", "|" + " --- |" * len(SUMMARY_HEADER)]
    measured = {(r["variant"], r["scenario"]): r for r in rows if r["source"] == "measured"}
    for name in dict.fromkeys(variant for variant, _ in measured):
        steady, burst = measured[name, "steady"], measured[name, "burst"]
        cells = [
            steady["label"],
            steady["wait_p50"],
            steady["wait_p95"],
            steady["consumer_s_per_job"],
            steady["cost"],
            steady["consumers_avg"],
            steady["scale_changes"],
            burst["wait_p95"],
            burst["consumer_s_per_job"],
        ]
        lines.append("| " + " | ".join(cell.replace(">=", "≥ ") for cell in cells) + " |")
    return "\n".join(lines)


def draw(rows, path):
    """p95 wait against the consumer-seconds paid per job as a multiple of the job's own work, one point per
    measured variant, named, a panel per scenario; what was run, in the title, from the rows themselves. A
    wait far above the others is drawn at the top edge with its value, so that the others stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    steady, burst = (next(r for r in rows if r["scenario"] == which) for which in ("steady", "burst"))
    title = (
        f"make tune, {steady['date']}: the real pusher and consumers, sized by the emulation of KEDA and its HPA "
        f"(fixed-N: N consumers, no KEDA), on a clock {steady['time_scale']} times fast\nthe article's load, a job "
        f"every 1-3 s and 2-10 s of work; steady: jobs created {steady['window_start']}-{steady['window_end']} s; "
        f"burst: {burst['burst_jobs']} jobs at {burst['window_start']} s, jobs created "
        f"{burst['window_start']}-{burst['window_end']} s (emulated seconds)"
    )
    scenarios = [("steady", "The article's load"), ("burst", f"A burst of {burst['burst_jobs']} jobs on top of it")]
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5))
    for ax, (scenario, heading) in zip(axes, scenarios, strict=True):
        points = [r for r in rows if r["scenario"] == scenario and r["source"] == "measured"]
        top = scale_top(sorted((p95(r) for r in points), reverse=True))
        ax.set_xscale("log")
        ax.set_xlim(0.95, max(float(r["cost"]) for r in points) * 1.25)
        ax.set_ylim(0, top)
        placed = []
        for r in sorted(points, key=p95):
            x, y, name = float(r["cost"]), p95(r), r["variant"]
            fixed = name.startswith("fixed-")
            color = "tab:gray" if fixed else "tab:blue"
            if y > top:
                name += f": p95 {r['wait_p95'].replace('>=', '≥ ')} s, off the scale"
                y = top * 0.97
                ax.scatter(x, y, s=60, marker="^", color=color, zorder=3)
            else:
                ax.scatter(x, y, s=50, marker="s" if fixed else "o", color=color, zorder=3)
            placed.append(place_label(fig, ax, name, x, y, placed))
        ax.axvline(1.0, color="tab:green", linestyle=":", linewidth=1)
        ax.annotate(
            "1.0: no consumer ever idle",
            (1.0, 0.02),
            xycoords=("data", "axes fraction"),
            xytext=(-3, 0),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="bottom",
            color="tab:green",
            fontsize=8,
        )
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([1, 1.2, 1.5, 2, 3, 4, 5, 7, 10]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("consumer-seconds paid per job, as a multiple of the job's own work (log scale)")
        ax.set_ylabel("wait from insert to claim, 95th percentile (emulated s)")
        ax.set_title(heading, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scale_top(waits, outlier=2.5, most=3):
    """The top of the wait scale, waits sorted from the highest: above them all, unless the `most` highest or
    fewer stand more than `outlier` times above the next one; those are then drawn at the edge."""
    cut = next((i for i in range(1, min(most, len(waits) - 1) + 1) if waits[i - 1] > outlier * waits[i]), 0)
    return waits[cut] * 1.15 + 1


def p95(row):
    """A row's p95 wait as a number, a lower bound taken as its value."""
    return float(row["wait_p95"].removeprefix(">="))


def place_label(fig, ax, text, x, y, placed):
    """A point's name to its right (to its left in the right fifth of the panel), moved up until it covers no
    name already placed, with a line back to the point once moved; the box it takes, in display units."""
    renderer = fig.canvas.get_renderer()
    left = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))[0] > 0.8
    style = {"textcoords": "offset points", "fontsize": 8, "va": "center", "ha": "right" if left else "left"}
    label = ax.annotate(text, (x, y), xytext=(-6 if left else 6, 0), **style)
    box = label.get_window_extent(renderer)
    shift = 0.0  # display units
    while any(box.translated(0, shift).overlaps(other) for other in placed):
        shift += box.height * 0.6
    if shift:
        label.remove()
        line = {"arrowstyle": "-", "color": "0.6", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3}
        label = ax.annotate(text, (x, y), xytext=(-6 if left else 6, shift * 72 / fig.dpi), arrowprops=line, **style)
    return label.get_window_extent(renderer)


def write_csv(path, fields, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=TIME_SCALE, help=f"default {TIME_SCALE:g}")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="emulated seconds left out at the start")
    parser.add_argument("--burst-at", type=float, default=BURST_AT, help="emulated seconds: the steady window's end")
    parser.add_argument("--burst-end", type=float, default=BURST_END, help="emulated seconds: the burst window's end")
    parser.add_argument("--stop-at", type=float, default=STOP_AT, help="emulated seconds: the run's end")
    parser.add_argument("--burst-jobs", type=int, default=BURST_JOBS)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write the files (default docs/)")
    parser.add_argument(
        "--from-csv",
        action="store_true",
        help="run nothing: draw tuning.png and print the tables again from the tuning.csv in --out",
    )
    args = parser.parse_args()
    if args.from_csv:
        rows = read_csv(args.out / "tuning.csv")
        draw(rows, args.out / "tuning.png")
        print(f"Drew {args.out / 'tuning.png'} from {args.out / 'tuning.csv'}\n")
        print_tables(rows)
        return
    schedule = Schedule(args.time_scale, args.warmup, args.burst_at, args.burst_end, args.stop_at, args.burst_jobs)
    chosen = variants()
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {v["name"] for v in chosen}
        if unknown:
            parser.error(f"no such variant: {', '.join(sorted(unknown))}")
        chosen = [v for v in chosen if v["name"] in names]

    workdir = Path(tempfile.mkdtemp(prefix="jobqueue-tune-"))
    # Every variant must render, and the emulation must read it, before the first run spends its minutes.
    for variant in chosen:
        overlay = target(variant, schedule.time_scale, workdir)
        if overlay is not None:
            keda_emulation.scaled_object(overlay)
    real = schedule.stop_at / schedule.time_scale
    started = datetime.datetime.now(datetime.UTC)
    date = started.strftime("%Y-%m-%d")
    print(
        f"make tune, {started:%Y-%m-%d %H:%M} UTC, {machine()}; load average {os.getloadavg()[0]:.2f}\n"
        f"{len(chosen)} runs of {schedule.stop_at:g} emulated seconds on a clock {schedule.time_scale:g} times "
        f"fast, {real:g} real seconds each; burst of {schedule.burst_jobs} jobs at {schedule.burst_at:g} s; "
        f"each run's log, processes, timeline and jobs under {workdir}",
        flush=True,
    )
    server = localpg.LocalPostgres().init()
    rows, timelines = [], []
    try:
        for number, variant in enumerate(chosen, 1):
            began = time.monotonic()
            jobs, consumers, evaluations, stopped = run_variant(server, number, variant, schedule, workdir)
            found = measured_rows(jobs, consumers, evaluations, stopped, schedule)
            for scenario, row in found.items():
                rows.append(csv_row(date, schedule, variant, scenario, "measured", row))
            if "consumers" in variant:
                for scenario, (row, spread) in model_rows(variant["consumers"], schedule).items():
                    source = f"model, median of {MODEL_RUNS} runs"
                    rows.append(csv_row(date, schedule, variant, scenario, source, row, spread))
            timelines += [{"variant": variant["name"], **evaluation} for evaluation in evaluations]
            steady = found["steady"]
            print(
                f"[{number}/{len(chosen)}] {variant['name']}: {len(jobs)} jobs, {len(consumers)} consumers started; "
                f"steady p95 wait {steady.wait[95]} s, {steady.consumer_seconds_per_job:.2f} consumer-s per job "
                f"({time.monotonic() - began:.0f} s)",
                flush=True,
            )
    finally:
        server.close()

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "tuning.csv", CSV_FIELDS, rows)
    write_csv(args.out / "tuning-timelines.csv", ["variant", *run_timeline_fields()], timelines)
    draw(rows, args.out / "tuning.png")
    print(f"Wrote {args.out / 'tuning.csv'}, {args.out / 'tuning-timelines.csv'} and {args.out / 'tuning.png'}\n")
    print_tables(rows)


def print_tables(rows):
    """The tables docs/tuning.md and docs/scaling.md quote, for pasting between their markers."""
    for scenario in ("steady", "burst"):
        row = next(r for r in rows if r["scenario"] == scenario)
        print(f"{scenario}: jobs created from {row['window_start']} s to {row['window_end']} s (emulated)\n")
        print(markdown_table(rows, scenario) + "\n")
    print("Both, fewer columns (docs/scaling.md):\n")
    print(summary_table(rows))


def run_timeline_fields():
    """The columns `make run --timeline` writes."""
    import run

    return run.Timeline.HEADER


if __name__ == "__main__":
    main()
