"""`make tune`'s arithmetic (bench/tune_metrics.py) against cases worked by hand, and its model of the queue
(bench/queue_model.py) against the textbook's.

Each expected value below is worked out in the comment beside it, not taken from the module's output.
"""

import random
import statistics
import sys

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import queue_model  # noqa: E402
import tune_metrics as m  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# bench/tune_metrics.py


@pytest.mark.parametrize(
    "values, p, expected",
    [
        ([5, 1, 4, 2, 3], 50, 3),  # rank ceil(0.5 x 5) = 3: the 3rd smallest
        ([5, 1, 4, 2, 3], 95, 5),  # ceil(4.75) = 5
        ([5, 1, 4, 2, 3], 20, 1),  # ceil(1) = 1
        ([5, 1, 4, 2, 3], 100, 5),  # the maximum
        (list(range(1, 21)), 95, 19),  # ceil(19) = 19: of 20 waits, the 19th
        (list(range(1, 201)), 99, 198),  # ceil(198) = 198
        ([7], 50, 7),
    ],
)
def test_percentile_is_the_nearest_rank(values, p, expected):
    assert m.percentile(values, p) == expected


def test_a_percentile_is_a_lower_bound_once_a_cut_off_time_reaches_it():
    times = [(1.0, False), (2.0, False), (10.0, True)]  # the third job still waited at the end, 10 s in
    assert m.percentile_with_cutoff(times, 50) == m.Bound(2.0, False)  # 10 > 2: however long it waits, still 2
    assert m.percentile_with_cutoff(times, 100) == m.Bound(10.0, True)  # it may wait longer than 10
    times = [(1.0, False), (3.0, True), (5.0, False)]
    assert m.percentile_with_cutoff(times, 50) == m.Bound(3.0, True)  # the cut-off 3 is the median itself
    assert m.percentile_with_cutoff(times, 100) == m.Bound(5.0, True)  # the 3 may become 6
    assert str(m.Bound(3.04, True)) == ">=3.0" and str(m.Bound(3.06)) == "3.1"


def test_time_to_claim_and_to_record_counts_a_job_not_there_yet_until_the_end():
    jobs = [(0.0, 2.0, 8.0), (1.0, None, None), (4.0, 6.0, None)]
    assert m.time_to(jobs, 10.0, 1) == [(2.0, False), (9.0, True), (2.0, False)]  # 10 - 1 = 9, cut off
    assert m.time_to(jobs, 10.0, 2) == [(8.0, False), (9.0, True), (6.0, True)]  # 10 - 4 = 6, cut off


def test_consumer_and_work_seconds_are_clipped_to_the_window():
    # Alive [0, 10] and [5, end = 12]; window [2, 8]: 6 + 3 = 9.
    assert m.consumer_seconds([(0.0, 10.0), (5.0, None)], 2.0, 8.0, 12.0) == 9.0
    # Work [1, 4] and [6, end = 9], and a job never claimed; window [2, 8]: 2 + 2 = 4.
    jobs = [(0.0, 1.0, 4.0), (0.0, 6.0, None), (7.0, None, None)]
    assert m.work_seconds(jobs, 2.0, 8.0, 9.0) == 4.0


@pytest.mark.parametrize(
    "consumers, t0, t1, expected",
    [
        ([(0.0, 5.0), (5.0, 10.0)], 0.0, 10.0, 1),  # one exits as the other starts: never two at once
        ([(0.0, 6.0), (5.0, 10.0)], 0.0, 10.0, 2),  # both from 5 to 6
        ([(0.0, 6.0), (5.0, 10.0)], 7.0, 10.0, 1),  # the overlap is before the window
        ([(0.0, 1.0), (2.0, 3.0)], 1.5, 2.5, 1),
        ([(0.0, None), (1.0, None), (2.0, 3.0)], 0.0, 10.0, 3),  # None: alive until the end, 20
    ],
)
def test_peak_consumers(consumers, t0, t1, expected):
    assert m.peak_consumers(consumers, t0, t1, 20.0) == expected


def test_scale_changes_count_the_evaluations_of_the_window_that_changed_the_count():
    timeline = [(0.0, 1), (15.0, 2), (30.0, 2), (45.0, 3), (60.0, 1)]
    assert m.scale_changes(timeline, 15.0, 60.0) == 2  # at 15 (1 -> 2, against the row before) and at 45
    assert m.scale_changes(timeline, 20.0, 61.0) == 2  # at 45 and 60
    assert m.scale_changes(timeline, 0.0, 15.0) == 0  # the first row has nothing before it
    assert m.scale_changes([], 0.0, 100.0) == 0  # a fixed count: no timeline


def test_a_window_row_worked_by_hand():
    # Consumer A alive from 0 to the end (20 s), B from 3 to 15. Window [0, 10).
    #   job 1: created 0, claimed 0 by A, recorded 4;  job 2: created 2, claimed 4 by A, recorded 10
    #   job 3: created 5, claimed 5 by B, recorded 11; job 4: created 12, outside the window
    jobs = [(0.0, 0.0, 4.0), (2.0, 4.0, 10.0), (5.0, 5.0, 11.0), (12.0, 12.0, 14.0)]
    consumers = [(0.0, None), (3.0, 15.0)]
    row = m.window_row(jobs, consumers, [(0.0, 1), (15.0, 2)], 0.0, 10.0, 20.0)
    assert (row.jobs, row.unclaimed) == (3, 0)
    assert row.wait == {p: m.Bound(v) for p, v in {50: 0.0, 95: 2.0, 99: 2.0, 100: 2.0}.items()}  # 0, 0, 2
    assert row.done == {50: m.Bound(6.0), 95: m.Bound(8.0)}  # 4, 6, 8
    assert row.work_per_job == pytest.approx(16 / 3)  # 4, 6 and 6 s
    # Paid within the window: A 10 s, B 7 s = 17. Worked within it: 4 + 6 + 5 (job 3 until 10) = 15.
    assert row.cost == pytest.approx(17 / 15)
    assert row.consumer_seconds_per_job == pytest.approx(17 / 15 * 16 / 3)
    assert (row.consumers_avg, row.consumers_peak) == (pytest.approx(1.7), 2)  # 17 / 10
    assert row.scale_changes == 0  # the change at 15 is outside
    assert row.arrivals_per_second == pytest.approx(0.3)  # 3 jobs in 10 s
    # A burst of 2 of those 3 jobs is left out of the pusher's rate: 1 in 10 s.
    assert m.window_row(jobs, consumers, [], 0.0, 10.0, 20.0, burst=2).arrivals_per_second == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------------
# bench/queue_model.py


def test_fifo_gives_each_job_to_the_consumer_free_first():
    # Two consumers, three jobs of 5 s at 0, 1 and 2: the third waits for the first consumer, free at 5.
    assert queue_model.fifo(2, [0.0, 1.0, 2.0], [5.0, 5.0, 5.0]) == [(0.0, 5.0), (1.0, 6.0), (5.0, 10.0)]
    # One consumer: the second job, created at 1, waits for the first's 3 s.
    assert queue_model.fifo(1, [0.0, 1.0], [3.0, 1.0]) == [(0.0, 3.0), (3.0, 4.0)]
    # A job created after every consumer is free waits for none.
    assert queue_model.fifo(1, [0.0, 10.0], [3.0, 1.0]) == [(0.0, 3.0), (10.0, 11.0)]


def test_the_articles_load_and_a_burst():
    created = queue_model.article_load(random.Random(1), 1000.0, burst_at=500.0, burst_jobs=50)
    assert created[0] == 0.0  # the pusher pushes before it first waits
    assert created.count(500.0) == 50
    gaps = [b - a for a, b in zip(created, created[1:], strict=False) if a != 500.0 and b != 500.0]
    assert all(1.0 <= g <= 3.0 for g in gaps if g > 0)
    assert 450 < len(created) - 50 < 550  # about 1000 s / 2 s


def test_the_model_cuts_off_what_had_not_happened_by_the_end():
    jobs = queue_model.simulate(1, 100.0, seed=3)
    assert all(claimed is None or claimed <= 100.0 for _, claimed, _ in jobs)
    assert any(completed is None for _, _, completed in jobs)  # 1 consumer for 3 erlangs: far behind
    assert queue_model.simulate(1, 100.0, seed=3) == jobs  # the same seed, the same run


def test_erlang_c_worked_by_hand():
    # M/M/4 at 3 erlangs: the terms 1 + 3 + 4.5 + 4.5 = 13, and 3^4 / 4! x 4 / (4 - 3) = 13.5: 13.5 / 26.5.
    assert queue_model.erlang_c(4, 3.0) == pytest.approx(13.5 / 26.5)
    assert queue_model.erlang_c(3, 3.0) == 1.0  # 3 erlangs on 3 consumers: every job waits, sooner or later


def test_the_models_recursion_is_exact_on_the_queue_the_textbook_solves():
    # Exponential intervals (mean 2 s) and work (mean 6 s) on 4 consumers: Erlang's C formula gives the mean
    # wait exactly, 0.5094 x 6 s / (4 - 3) = 3.057 s. 200,000 jobs, the first 1000 left out.
    rng = random.Random(5)
    created, t = [], 0.0
    for _ in range(200_000):
        created.append(t)
        t += rng.expovariate(1 / 2)
    work = [rng.expovariate(1 / 6) for _ in created]
    waits = [claimed - c for c, (claimed, _) in zip(created, queue_model.fifo(4, created, work), strict=True)]
    assert statistics.mean(waits[1000:]) == pytest.approx(queue_model.erlang_c(4, 3.0) * 6 / (4 - 3), rel=0.05)


def test_the_models_consumers_are_busy_as_the_load_implies():
    # 3 erlangs on 4 consumers: 75 % busy in the long run (200,000 s, about 100,000 jobs).
    jobs = queue_model.simulate(4, 200_000.0, seed=7)
    busy = sum(e - s for _, s, e in jobs if e is not None)
    assert busy / (4 * 200_000.0) == pytest.approx(0.75, abs=0.01)


def test_three_consumers_have_no_steady_state_and_four_have_one():
    # At exactly 3 erlangs the queue of 3 consumers wanders without bound: its median wait over the second
    # half of a run grows with the run's length. 4 consumers' does not.
    def late_median_wait(consumers, end, seed):
        jobs = queue_model.simulate(consumers, end, seed)
        return statistics.median(s - c for c, s, _ in jobs if s is not None and c > end / 2)

    short = statistics.median(late_median_wait(3, 2_000.0, seed) for seed in range(20))
    long = statistics.median(late_median_wait(3, 50_000.0, seed) for seed in range(20))
    assert long > 3 * short
    assert late_median_wait(4, 50_000.0, 1) < 1.0
