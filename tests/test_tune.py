"""`make tune` (bench/tune.py): its arithmetic against cases worked by hand (bench/tune_metrics.py), its model of
the queue against the textbook's (bench/queue_model.py), its variants as real kustomize renders them, and the
committed results (docs/tuning.csv, docs/tuning-timelines.csv) against the rules they claim to follow and the
chapter that quotes them (docs/tuning.md). Then one tiny run of the harness, end to end.

Each expected value below is worked out in the comment beside it, not taken from the module's output.
"""

import csv
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

import keda_emulation as k
import psycopg2
import pytest
from support import CONFIG_VARIABLES, ROOT, role

sys.path.insert(0, str(ROOT / "bench"))
import queue_model  # noqa: E402
import tune  # noqa: E402
import tune_metrics as m  # noqa: E402

DOCS = ROOT / "docs"

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


# ---------------------------------------------------------------------------------------------------------
# The variants, as real kustomize renders them and the emulation reads them.

VARIANTS = tune.variants()
BY_NAME = {v["name"]: v for v in VARIANTS}
TIME_SCALE = 20.0


def rendered(name, tmp_path, time_scale=TIME_SCALE):
    overlay = tune.target(BY_NAME[name], time_scale, tmp_path)
    return k.render(overlay), overlay


def differences(a, b, path=""):
    """The JSON pointers at which two documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            here = f"{path}/{key}"
            found += differences(a[key], b[key], here) if key in a and key in b else [here]
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in differences(x, y, f"{path}/{i}")]
    return [] if a == b else [path]


def test_the_variants_are_the_issues_list():
    names = [v["name"] for v in VARIANTS]
    assert names == [
        "base",
        "target-1",
        "target-2",
        "target-10",
        "window-0",
        "window-300",
        "article-behavior",
        "scale-to-zero",
        "oldest-age-10s",
        "fixed-3",
        "fixed-4",
        "fixed-20",
    ]
    assert all(v["label"] for v in VARIANTS)


def test_a_variant_needs_exactly_one_way_to_be_made(tmp_path):
    (tmp_path / "v.yaml").write_text("- {name: x, label: x, overlay: ., consumers: 3}\n")
    with pytest.raises(tune.TuneError, match="exactly one of"):
        tune.variants(tmp_path / "v.yaml")


# What the emulation must read in each variant of the ScaledObject, at a time scale of 20.
ARTICLE_UP = k.Rules(0.0, "Max", (k.Policy("Percent", 100, 15.0),), 0.1)
ARTICLE_DOWN = k.Rules(15.0, "Max", (k.Policy("Pods", 10, 15.0),), 0.1)
EXPECTED = {
    "base": lambda so: so.target == 5.0 and so.behavior[1].window == 30.0,
    "target-1": lambda so: so.target == 1.0,
    "target-2": lambda so: so.target == 2.0,
    "target-10": lambda so: so.target == 10.0,
    "window-0": lambda so: so.behavior[1].window == 0.0,
    "window-300": lambda so: so.behavior[1].window == 300.0,
    "article-behavior": lambda so: so.behavior == (ARTICLE_UP, ARTICLE_DOWN),
    "scale-to-zero": lambda so: so.min_replica_count == 0,
    # 10 s of the database's clock, which a run 20 times fast does not compress: 0.5 real seconds.
    "oldest-age-10s": lambda so: so.metric_type == "Value" and so.target == 0.5 and "created_at" in so.query,
}


@pytest.mark.parametrize("name", [v["name"] for v in VARIANTS if "consumers" not in v])
def test_each_variant_renders_and_changes_only_what_it_says(name, tmp_path):
    docs, overlay = rendered(name, tmp_path)
    base = k.render(".")
    so_doc = [d for d in docs if d["kind"] == "ScaledObject"]
    base_so = [d for d in base if d["kind"] == "ScaledObject"]
    # Everything but the ScaledObject is the base's, object for object.
    assert [d for d in docs if d["kind"] != "ScaledObject"] == [d for d in base if d["kind"] != "ScaledObject"]
    changed = differences(base_so[0], so_doc[0])
    variant = BY_NAME[name]
    allowed = [op["path"] for op in variant.get("patch", [])] or {
        "base": [],
        "target-2": ["/spec/triggers/0/metadata/targetQueryValue"],
        "scale-to-zero": ["/spec/minReplicaCount"],
    }[name]
    assert all(any(p == a or p.startswith(a + "/") for a in allowed) for p in changed), changed
    assert bool(changed) == (name != "base")
    so, replicas = k.scaled_object(overlay)
    assert replicas == 1
    assert EXPECTED[name](so), so


def test_the_age_target_is_divided_by_the_time_scale_and_nothing_else_is():
    ops = tune.patch_operations(BY_NAME["oldest-age-10s"], 20.0)
    assert [op["value"] for op in ops if op["path"].endswith("targetQueryValue")] == ["0.5"]
    assert tune.patch_operations(BY_NAME["oldest-age-10s"], 1.0) == BY_NAME["oldest-age-10s"]["patch"]
    assert tune.patch_operations(BY_NAME["target-10"], 20.0) == BY_NAME["target-10"]["patch"]  # jobs: not seconds


def test_the_age_query_runs_as_kedas_role_and_measures_the_oldest_job_not_yet_done(db_url):
    (op,) = [op for op in BY_NAME["oldest-age-10s"]["patch"] if op["path"].endswith("/query")]
    conn = psycopg2.connect(db_url)
    keda = psycopg2.connect(role(db_url, "keda"))
    try:
        with keda, keda.cursor() as cur:
            cur.execute(op["value"])
            assert cur.fetchone()[0] == 0  # an empty queue: no job waits
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO jobs (payload, created_at) VALUES ('old', now() - interval '30 s'), ('new', now())"
            )
        with keda, keda.cursor() as cur:
            cur.execute(op["value"])
            assert float(cur.fetchone()[0]) == pytest.approx(30, abs=2)
    finally:
        conn.close()
        keda.close()


def test_the_temporary_kustomization_points_at_the_base(tmp_path):
    made = tune.kustomization(BY_NAME["target-1"], TIME_SCALE, tmp_path)
    assert (tmp_path / made["resources"][0]).resolve() == (ROOT / "k8s" / "base").resolve()
    assert made["patches"][0]["target"] == {"group": "keda.sh", "kind": "ScaledObject", "name": "job-consumer-scaler"}


def test_the_loops_timings_are_the_articles_divided_by_the_time_scale():
    timings = tune.Schedule(20.0, 300, 2100, 3000, 3300, 200).loop_timings()
    assert {name: float(value) for name, value in timings.items()} == {
        "PUSH_INTERVAL_MIN": 0.05,  # 1 s / 20
        "PUSH_INTERVAL_MAX": 0.15,
        "PROCESS_TIME_MIN": 0.1,
        "PROCESS_TIME_MAX": 0.5,
    }
    assert set(timings) < set(tune.TIMINGS)


# ---------------------------------------------------------------------------------------------------------
# The committed results.


def committed(name):
    with open(DOCS / name, newline="") as f:
        return list(csv.DictReader(f))


def test_the_committed_rows_cover_every_variant_and_scenario_and_the_models():
    rows = committed("tuning.csv")
    measured = [(r["variant"], r["scenario"]) for r in rows if r["source"] == "measured"]
    assert measured == [(v["name"], s) for v in VARIANTS for s in ("steady", "burst")]
    models = {(r["variant"], r["scenario"]) for r in rows if r["source"].startswith("model")}
    assert models == {(v["name"], s) for v in VARIANTS if "consumers" in v for s in ("steady", "burst")}
    assert {r["label"] for r in rows} == {v["label"] for v in VARIANTS}
    assert len({(r["date"], r["time_scale"]) for r in rows}) == 1  # one run of the whole set
    for row in rows:
        assert int(row["jobs"]) >= 300, row  # hundreds of jobs behind every percentile


def test_the_committed_timelines_follow_the_rules():
    """Every decision of every emulated variant in docs/tuning-timelines.csv is the emulation's, evaluation by
    evaluation, for the ScaledObject the variant renders at the run's time scale."""
    time_scale = float(committed("tuning.csv")[0]["time_scale"])
    timelines = committed("tuning-timelines.csv")
    emulated = [v for v in VARIANTS if "consumers" not in v]
    assert [v["name"] for v in emulated] == list(dict.fromkeys(r["variant"] for r in timelines))
    with tempfile.TemporaryDirectory() as workdir:
        for variant in emulated:
            rows = [r for r in timelines if r["variant"] == variant["name"]]
            assert len(rows) > 200, variant["name"]
            so, replicas = k.scaled_object(tune.target(variant, time_scale, workdir))
            replay = k.Autoscaler(so, replicas)
            for row in rows:
                assert float(row["seconds"]) == replay.next_evaluation(), (variant["name"], row)
                replay.evaluate(float(row["seconds"]), float(row["jobs"]))
                assert int(row["desired"]) == replay.replicas, (variant["name"], row)
                assert int(row["consumers"]) >= int(row["desired"]), (variant["name"], row)


@pytest.mark.parametrize("scenario", ["steady", "burst"])
def test_the_chapter_quotes_the_committed_rows(scenario):
    text = (DOCS / "tuning.md").read_text()
    match = re.search(rf"<!-- {scenario} table[^>]*-->\n(.*?)\n<!-- end of {scenario} table -->", text, re.S)
    assert match, f"docs/tuning.md has no {scenario} table between its markers"
    assert match.group(1) == tune.markdown_table(committed("tuning.csv"), scenario), "quote docs/tuning.csv again"


def test_the_scaling_chapter_quotes_the_committed_rows():
    text = (ROOT / "docs" / "scaling.md").read_text()
    match = re.search(r"<!-- tuning summary[^>]*-->\n(.*?)\n<!-- end of tuning summary -->", text, re.S)
    assert match, "docs/scaling.md has no tuning summary between its markers"
    assert match.group(1) == tune.summary_table(committed("tuning.csv")), "quote docs/tuning.csv again"


# ---------------------------------------------------------------------------------------------------------
# The harness end to end, tiny: one variant of the ScaledObject through a patch, 300 emulated seconds 50 times
# fast (6 real seconds), a burst of 20 jobs. Its numbers mean nothing; that it runs and writes its files does.


def test_a_tiny_run_of_the_harness_writes_its_rows_timeline_and_picture(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in CONFIG_VARIABLES}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "tune.py"),
            *("--only", "oldest-age-10s", "--time-scale", "50", "--out", str(tmp_path)),
            *("--warmup", "30", "--burst-at", "150", "--burst-end", "250", "--stop-at", "300", "--burst-jobs", "20"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.DictReader(open(tmp_path / "tuning.csv", newline="")))
    assert [(r["variant"], r["scenario"], r["source"]) for r in rows] == [
        ("oldest-age-10s", "steady", "measured"),
        ("oldest-age-10s", "burst", "measured"),
    ]
    assert int(rows[1]["jobs"]) >= 20  # the burst's jobs are in its window
    assert not math.isnan(float(rows[0]["cost"])) and float(rows[0]["cost"]) >= 1.0
    timeline = list(csv.DictReader(open(tmp_path / "tuning-timelines.csv", newline="")))
    assert len(timeline) >= 300 // 15  # an evaluation at 0 and every 15 s until the run stops
    assert (tmp_path / "tuning.png").stat().st_size > 20_000
    assert "| age of the oldest job, Value target 10 s |" in result.stdout
