"""What `make tune` (bench/tune.py) reports for one window of one run, from what the run left behind: each job's
times from done_jobs and jobs, each consumer's lifetime from `make run --processes`, and the emulation's
timeline. Pure functions of those, so that tests/test_tune.py can check them against cases worked by hand.

Every time here is in seconds of one clock, measured from the run's start (bench/tune.py converts the real
times of a compressed run into emulated seconds before it calls these).

A job is (created, claimed, completed): its insert, the start of the transaction of the consumer that claimed
it, and the moment that consumer recorded it; claimed and completed are None for a job not claimed, or not
done, by the end of the run. A consumer is (started, exited), exited None for one still alive at the end.
"""

import math
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class Bound:
    """A percentile of times some of which were cut off by the end of the run: `value` is exact, or (at_least)
    only a lower bound, since a job still waiting at the end would have waited longer."""

    value: float
    at_least: bool = False

    def __str__(self):
        return (">=" if self.at_least else "") + f"{self.value:.1f}"


def percentile(values, p):
    """The nearest-rank percentile: the smallest value that at least p % of the values do not exceed. Of 20
    waits, the 95th percentile is the 19th smallest; of 200, the 190th."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def percentile_with_cutoff(times, p):
    """The percentile of (seconds, cut_off) pairs, where a cut-off time is a lower bound. The result is exact
    when every cut-off time is above it (making those longer changes no rank below them), a lower bound
    otherwise."""
    value = percentile([t for t, _ in times], p)
    return Bound(value, any(cut and t <= value for t, cut in times))


def time_to(jobs, end, which):
    """Each job's time from its insert to its claim (which=1) or to its record (which=2), as (seconds,
    cut_off); a job that has not got there by `end` counts until `end`, cut off."""
    return [(job[which] - job[0], False) if job[which] is not None else (end - job[0], True) for job in jobs]


def overlap(start, stop, t0, t1):
    """How much of [start, stop] lies within [t0, t1]."""
    return max(0.0, min(stop, t1) - max(start, t0))


def consumer_seconds(consumers, t0, t1, end):
    """The consumer processes alive within [t0, t1], integrated over time: what the consumers cost."""
    return sum(overlap(start, end if stop is None else stop, t0, t1) for start, stop in consumers)


def work_seconds(jobs, t0, t1, end):
    """The time consumers spent on jobs within [t0, t1], from each claim to its record: what the work needed."""
    return sum(
        overlap(claimed, end if completed is None else completed, t0, t1)
        for _, claimed, completed in jobs
        if claimed is not None
    )


def peak_consumers(consumers, t0, t1, end):
    """The most consumer processes alive at once within [t0, t1]."""
    events = []
    for start, stop in consumers:
        stop = end if stop is None else stop
        if start < t1 and stop > t0:
            events += [(max(start, t0), 1), (min(stop, t1), -1)]
    alive = peak = 0
    for _, step in sorted(events):  # at a tie, -1 sorts first: one exiting as another starts is not two
        alive += step
        peak = max(peak, alive)
    return peak


def scale_changes(timeline, t0, t1):
    """The evaluations within [t0, t1) that changed the number of consumers decided, from (seconds, desired)
    rows in order; the first row of the window is compared with the row before it."""
    changes = 0
    for (_, before), (t, after) in pairwise(timeline):
        if t0 <= t < t1 and after != before:
            changes += 1
    return changes


@dataclass(frozen=True)
class Row:
    """One variant in one window: the row of docs/tuning.csv."""

    jobs: int  # created within the window
    unclaimed: int  # of those, not claimed by the end of the run
    wait: dict  # percentile (50, 95, 99, 100) -> Bound, from insert to claim
    done: dict  # percentile (50, 95) -> Bound, from insert to record
    work_per_job: float  # seconds from claim to record, on average, for the window's jobs done
    consumer_seconds_per_job: float
    cost: float  # consumer-seconds per second of work: 1.0 when no consumer ever idles
    consumers_avg: float
    consumers_peak: int
    scale_changes: int
    arrivals_per_second: float  # the pusher's rate, the burst left out


def window_row(jobs, consumers, timeline, t0, t1, end, burst=0):
    """The row for the jobs created within [t0, t1) and the consumers alive within it. `burst` jobs of the window
    came at once on top of the load, left out of its arrival rate. consumer-seconds per job is the cost ratio
    times the work per job, both over the window: the consumer time a job costs beside the time its own work
    takes."""
    window = [job for job in jobs if t0 <= job[0] < t1]
    if not window:
        raise ValueError(f"no job was created between {t0:g} s and {t1:g} s")
    waits, dones = time_to(window, end, 1), time_to(window, end, 2)
    finished = [completed - claimed for _, claimed, completed in window if completed is not None]
    paid, worked = consumer_seconds(consumers, t0, t1, end), work_seconds(jobs, t0, t1, end)
    work_per_job = sum(finished) / len(finished)
    cost = paid / worked
    return Row(
        jobs=len(window),
        unclaimed=sum(1 for _, claimed, _ in window if claimed is None),
        wait={p: percentile_with_cutoff(waits, p) for p in (50, 95, 99, 100)},
        done={p: percentile_with_cutoff(dones, p) for p in (50, 95)},
        work_per_job=work_per_job,
        consumer_seconds_per_job=cost * work_per_job,
        cost=cost,
        consumers_avg=paid / (t1 - t0),
        consumers_peak=peak_consumers(consumers, t0, t1, end),
        scale_changes=scale_changes(timeline, t0, t1),
        arrivals_per_second=(len(window) - burst) / (t1 - t0),
    )
