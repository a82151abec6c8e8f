"""The emulation of KEDA and its HPA (tools/keda_emulation.py), rule by rule, against cases worked out by hand
from the sources each function cites; then the docs' replica tables, computed here rather than typed.

Each expected value below is the arithmetic of the rule, written next to it, not the module's output.
"""

import re

import keda_emulation as k
import pytest
from support import ROOT

TARGET = 5.0
UP = k.DEFAULT_SCALE_UP  # +4 pods or +100 % per 15 s, no window
DOWN_30 = k.Rules(30.0, "Max", (k.Policy("Percent", 100, 15.0),), 0.1)  # k8s/base/keda.yaml's scaleDown window


def scaled_object(**changes):
    """The base ScaledObject's numbers as the defaults, so a case changes only what it is about."""
    fields = dict(
        name="so",
        namespace="ns",
        query="SELECT COUNT(*) FROM jobs",
        target=TARGET,
        activation=2.0,
        min_replica_count=1,
        max_replica_count=20,
        polling_interval=15.0,
        cooldown_period=30.0,
        initial_cooldown_period=0.0,
        behavior=(UP, DOWN_30),
    )
    fields.update(changes)
    return k.ScaledObject(**fields)


# ---------------------------------------------------------------------------------------------------------
# replica_calculator.go GetExternalPerPodMetricReplicas: ratio = jobs / (5 x current); within [0.9, 1.1] keep
# current, else ceil(jobs / 5).


@pytest.mark.parametrize(
    "jobs, current, expected",
    [
        (23, 1, 5),  # 23 / 5 = 4.6: ceil(4.6) = 5
        (23, 5, 5),  # 23 / 25 = 0.92: within, keep 5
        (100, 19, 19),  # 100 / 95 = 1.053: within, keep 19 (not 20)
        (90, 20, 20),  # 90 / 100 = 0.9: the lower edge is within, keep 20
        (89, 20, 18),  # 0.89: outside, ceil(17.8) = 18
        (110, 20, 20),  # 1.1: the upper edge is within, keep 20
        (111, 20, 23),  # 1.11: outside, ceil(22.2) = 23 (max comes later)
        (27, 6, 6),  # 27 / 30 = 0.9: within
        (33, 6, 6),  # 33 / 30 = 1.1: within
        (34, 6, 7),  # 1.133: ceil(6.8) = 7
        (26, 6, 6),  # 0.867: outside, ceil(5.2) = 6: the same number, by the formula
        (3, 1, 1),  # 0.6: ceil(0.6) = 1
        (0, 3, 0),  # 0: ceil(0) = 0 (min comes later)
        (5.5, 1, 1),  # 1.1: within (a fractional query result)
        (5.6, 1, 2),  # 1.12: ceil(1.12) = 2
    ],
)
def test_replica_calculator(jobs, current, expected):
    assert k.replica_calculator(jobs, TARGET, current) == expected


def test_replica_calculator_reads_each_directions_tolerance():
    # behavior.scaleDown.tolerance 0.2: 85 / 100 = 0.85 is then within; scaleUp.tolerance 0: 101 / 100 is not.
    assert k.replica_calculator(85, TARGET, 20, tolerance_down=0.2, tolerance_up=0.0) == 20
    assert k.replica_calculator(101, TARGET, 20, tolerance_down=0.2, tolerance_up=0.0) == 21  # ceil(20.2)


# ---------------------------------------------------------------------------------------------------------
# horizontal.go: rate limits (calculateScaleUpLimitWithScalingRules, calculateScaleDownLimitWithBehaviors).


@pytest.mark.parametrize(
    "current, up_events, down_events, rules, expected",
    [
        (1, [], [], UP, 5),  # max(1 + 4, ceil(1 x 2)) = 5
        (5, [], [], UP, 10),  # max(9, 10)
        (10, [], [], UP, 20),  # max(14, 20)
        (3, [], [], UP, 7),  # max(7, 6)
        (5, [(10.0, 4)], [], UP, 5),  # 4 added 10 s ago: the period began at 1, max(1 + 4, 2) = 5
        (5, [(5.0, 4)], [], UP, 10),  # added exactly 15 s ago: outside the period (After, strictly)
        (4, [], [(12.0, 2)], UP, 12),  # 2 removed 8 s ago: the period began at 6, max(6 + 4, 6 x 2) = 12
        (5, [], [], k.Rules(0.0, "Min", UP.policies, 0.1), 9),  # min(9, 10)
        (5, [], [], k.Rules(0.0, "Disabled", UP.policies, 0.1), 5),  # no scale-up
    ],
)
def test_scale_up_limit(current, up_events, down_events, rules, expected):
    assert k.calculate_scale_up_limit_with_scaling_rules(20.0, current, up_events, down_events, rules) == expected


@pytest.mark.parametrize(
    "current, down_events, rules, expected",
    [
        (20, [], DOWN_30, 0),  # int(20 x (1 - 1)) = 0: anything goes
        (15, [], k.Rules(0, "Max", (k.Policy("Percent", 10, 60.0),), 0.1), 13),  # int(15 x 0.9) = int(13.5) = 13
        (15, [(-10.0, 5)], k.Rules(0, "Max", (k.Policy("Percent", 50, 60.0),), 0.1), 10),  # began at 20: int(10)
        (10, [], k.Rules(0, "Max", (k.Policy("Pods", 2, 15.0),), 0.1), 8),  # 10 - 2
        (10, [], k.Rules(0, "Max", (k.Policy("Pods", 2, 15.0), k.Policy("Percent", 50, 15.0)), 0.1), 5),  # min(8, 5)
        (10, [], k.Rules(0, "Min", (k.Policy("Pods", 2, 15.0), k.Policy("Percent", 50, 15.0)), 0.1), 8),  # max(8, 5)
        (10, [], k.Rules(0, "Disabled", (k.Policy("Pods", 2, 15.0),), 0.1), 10),
    ],
)
def test_scale_down_limit(current, down_events, rules, expected):
    assert k.calculate_scale_down_limit_with_behaviors(20.0, current, [], down_events, rules) == expected


# ---------------------------------------------------------------------------------------------------------
# horizontal.go stabilizeRecommendationWithBehaviors: the highest recommendation of the scale-down window and
# the lowest of the scale-up window bound the decision.


@pytest.mark.parametrize(
    "current, desired, recommendations, up, expected",
    [
        (20, 12, [(45.0, 18)], UP, 18),  # 18, 15 s ago, is within the 30 s window
        (20, 12, [(30.0, 20), (45.0, 18)], UP, 18),  # 20, exactly 30 s ago, is not (After, strictly)
        (20, 12, [(31.0, 20)], UP, 20),  # 29 s ago: still holds 20
        (20, 25, [(45.0, 18)], UP, 25),  # scaling up: no window (scaleUp's default is 0 s)
        (2, 10, [(30.0, 3)], k.Rules(60.0, "Max", UP.policies, 0.1), 3),  # a 60 s scale-up window: lowest, 3
        (5, 5, [(45.0, 9)], UP, 5),  # desired = current: stays
    ],
)
def test_stabilize_recommendation(current, desired, recommendations, up, expected):
    assert k.stabilize_recommendation_with_behaviors(60.0, current, desired, recommendations, up, DOWN_30) == expected


def test_normalize_without_behavior_follows_the_older_rules():
    # An HPA without behavior: the highest recommendation of 300 s (!Before: 300 s ago still counts), then at
    # most max(2 x current, 4).
    assert k.normalize(400.0, 10, 2, 1, 20, None, [(100.0, 9)], [], []) == 9
    assert k.normalize(400.0, 10, 2, 1, 20, None, [(99.0, 9)], [], []) == 2
    assert k.normalize(400.0, 1, 40, 1, 20, None, [], [], []) == 4  # max(2, 4)
    assert k.normalize(400.0, 8, 40, 1, 20, None, [], [], []) == 16
    assert k.normalize(400.0, 3, 0, 1, 20, None, [], [], []) == 1  # min


# ---------------------------------------------------------------------------------------------------------
# scale_scaledobjects.go RequestScale, with postgresql_scaler.go's activation: strictly above the threshold.


# The last active time as KEDA keeps it (metav1_time): a poll at 45 s of the emulation's clock, which starts
# half a second into a wall-clock second, is 45.5 s on that clock, stored as 45, that is 44.5 s here.
@pytest.mark.parametrize(
    "metric, current, last_active, changes, now, expected",
    [
        (2, 0, None, {}, 15.0, (0, None)),  # 2 is not above 2: inactive, stays at 0
        (3, 0, None, {}, 15.0, (1, 14.5)),  # 3 > 2: from 0 to max(minReplicaCount 0, 1) = 1, active at 15 (14.5)
        (2.5, 0, None, {}, 15.0, (1, 14.5)),  # the threshold is a float
        (3, 0, None, {"min_replica_count": 2}, 15.0, (2, 14.5)),  # to minReplicaCount when it is above 0
        (40, 4, 14.5, {}, 30.0, (4, 29.5)),  # active above 0: KEDA leaves the count to the HPA
        (2, 4, 44.5, {}, 60.0, (4, 44.5)),  # inactive since the poll at 45: 44.5 + 30 is not before 60
        (2, 4, 44.5, {}, 75.0, (0, 44.5)),  # 74.5 is before 75: to 0 at the poll 30 s after the last active one
        (2, 4, 45.0, {}, 75.0, (4, 45.0)),  # an untruncated 45 would wait one poll more: 75 is not before 75
        (0, 1, None, {}, 0.0, (0, None)),  # never active, initialCooldownPeriod 0: created at -0.5, to 0 at once
        (0, 1, None, {"initial_cooldown_period": 60.0}, 45.0, (1, None)),  # -0.5 + 60 is not before 45
        (0, 1, None, {"initial_cooldown_period": 60.0}, 60.0, (0, None)),  # 59.5 is before 60
        (0, 1, 10.0, {"min_replica_count": 1}, 300.0, (1, 10.0)),  # minReplicaCount 1: never to 0
        (0, 0, None, {"min_replica_count": 1}, 15.0, (1, None)),  # below minReplicaCount: back to it
    ],
)
def test_request_scale(metric, current, last_active, changes, now, expected):
    so = scaled_object(**{"min_replica_count": 0, **changes})
    replicas, active, _ = k.request_scale(now, metric, current, last_active, so, created=-0.5)
    assert (replicas, active) == expected


def test_hpa_minimum_is_never_zero():
    # controllers/keda/hpa.go getHPAMinReplicas
    assert scaled_object(min_replica_count=0).hpa_min == 1
    assert scaled_object(min_replica_count=3).hpa_min == 3


# ---------------------------------------------------------------------------------------------------------
# The controllers together, evaluation by evaluation. `counts` maps a time to the query's result there.


def run(so, replicas, counts, until):
    autoscaler = k.Autoscaler(so, replicas)
    decided = {}
    while (now := autoscaler.next_evaluation()) <= until:
        autoscaler.evaluate(now, counts(now))
        decided[now] = autoscaler.replicas
    return decided


def test_a_held_burst_scales_up_from_one_to_the_maximum_in_three_evaluations():
    # KEDA polls at 0 (nothing to do with minReplicaCount 1), the HPA first evaluates at 15 s: 200 / 5 = 40,
    # at most max(1 + 4, 2) = 5; then max(9, 10) = 10; then max(14, 20) = 20, the maximum.
    decided = run(scaled_object(), 1, lambda t: 200, 60)
    assert decided == {0.0: 1, 15.0: 5, 30.0: 10, 45.0: 20, 60.0: 20}


def test_scale_down_waits_for_the_window_and_the_tolerance():
    # At 20 consumers: 100 keeps 20 (1.0), 90 keeps 20 (0.9, the edge), 89 asks for 18, but 20 was
    # recommended 15 s before and holds until it is 30 s old; then 18 is the highest and applies.
    counts = {15.0: 200, 30.0: 200, 45.0: 200, 60.0: 100, 75.0: 90, 90.0: 89, 105.0: 89, 120.0: 89}
    decided = run(scaled_object(), 1, lambda t: counts.get(t, 0), 120)
    assert [decided[t] for t in (45.0, 60.0, 75.0, 90.0, 105.0, 120.0)] == [20, 20, 20, 20, 18, 18]


def test_scale_down_to_the_minimum_after_the_queue_empties():
    # 23 jobs at 15 s: 5. Then 0: ceil(0 / 5) = 0, held at 5 by the recommendation 15 s before, then down to
    # the HPA's minimum, 1, once it is 30 s old (the default scale-down policy allows 100 % per 15 s).
    decided = run(scaled_object(), 1, lambda t: 23 if t == 15.0 else 0, 60)
    assert decided == {0.0: 1, 15.0: 5, 30.0: 5, 45.0: 1, 60.0: 1}


def test_scale_to_zero_activation_and_cooldown():
    # A new Deployment starts with 1 consumer; KEDA, never active, scales it to 0 at its first poll. 2 jobs
    # are not above the threshold; 3 are: KEDA activates 0 -> 1 and the HPA, evaluating at the same moment,
    # keeps 1 (3 / 5 = 0.6 -> ceil = 1). 23 jobs: 5. The count falls to 2 at 60 s; the last active poll was at
    # 45 s, kept as 44.5: at 60 the HPA holds 5 (its 30 s window), and at 75 KEDA scales to 0, since 44.5 + 30
    # is before 75: 30 s after the last active poll, 15 s after the count fell.
    counts = {0.0: 0, 15.0: 2, 30.0: 3, 45.0: 23}
    decided = run(scaled_object(min_replica_count=0), 1, lambda t: counts.get(t, 2), 105)
    assert decided == {0.0: 0, 15.0: 0, 30.0: 1, 45.0: 5, 60.0: 5, 75.0: 0, 90.0: 0, 105.0: 0}


def test_kedas_times_are_the_wall_clock_truncated_to_the_second():
    # scaledobject_types.go: LastActiveTime *metav1.Time, serialized RFC 3339, whole seconds.
    assert [k.metav1_time(t) for t in (0.0, 14.9, 15.0, 29.6)] == [-0.5, 14.5, 14.5, 29.5]


# ---------------------------------------------------------------------------------------------------------
# replica_calculator.go GetExternalMetricReplicas, metricType Value: ratio = metric / target for all the
# consumers; within [0.9, 1.1] keep the count, else ceil(ratio x the pods ready).


@pytest.mark.parametrize(
    "metric, target, current, expected",
    [
        (40, 20, 3, 6),  # 40 / 20 = 2: ceil(2 x 3) = 6, twice as many
        (10, 20, 3, 2),  # 0.5: ceil(1.5) = 2
        (21, 20, 3, 3),  # 1.05: within, keep 3
        (22, 20, 3, 3),  # 1.1: the upper edge is within
        (23, 20, 3, 4),  # 1.15: ceil(3.45) = 4
        (0, 20, 3, 0),  # 0: ceil(0) = 0 (min comes later)
        (5, 20, 0, 1),  # at 0 replicas: ceil(0.25) = 1, "scale to zero or n pods depending on usageRatio"
    ],
)
def test_external_metric_replicas(metric, target, current, expected):
    assert k.external_metric_replicas(metric, target, current, current) == expected


def test_a_value_trigger_doubles_the_consumers_when_the_metric_is_twice_its_target():
    # The oldest job 40 s old against a target of 20 s: at 15 s, 1 -> ceil(2 x 1) = 2; at 30 s, 2 -> 4; at 45,
    # 4 -> 8; each within the default rate limit (+4 or +100 %). At 60 s, 21 s: within the tolerance, keep 8.
    so = scaled_object(target=20.0, metric_type="Value")
    ages = {15.0: 40, 30.0: 40, 45.0: 40, 60.0: 21}
    decided = run(so, 1, lambda t: ages.get(t, 0), 60)
    assert decided == {0.0: 1, 15.0: 2, 30.0: 4, 45.0: 8, 60.0: 8}


def test_the_hpa_does_nothing_at_zero():
    # "scaling is disabled since the replica count of the target is zero": with 2 jobs (inactive) the HPA
    # would ask for 1, but only KEDA moves the Deployment off 0.
    decided = run(scaled_object(min_replica_count=0), 0, lambda t: 2, 60)
    assert set(decided.values()) == {0}


# ---------------------------------------------------------------------------------------------------------
# pods_to_delete: ReplicaSet ranking (controller_utils.go ActivePodsWithRanks.Less, LogarithmicScaleDown).


def test_newest_pods_go_first_on_a_logarithmic_scale():
    old, mid, new = k.Pod("old", 0.0, "c"), k.Pod("mid", 100.0, "b"), k.Pod("new", 110.0, "a")
    # At 120 s: ages 120 s, 20 s, 10 s; log2 of nanoseconds: 36, 34, 33.
    assert [p.name for p in k.pods_to_delete([old, mid, new], 2, 120.0)] == ["new", "mid"]
    # Ages 10 s and 12 s share the bucket 33 (2^33 ns = 8.6 s to 17.2 s): the smaller UID goes first.
    older, newer = k.Pod("older", 108.0, "a"), k.Pod("newer", 110.0, "b")
    assert [p.name for p in k.pods_to_delete([newer, older], 1, 120.0)] == ["older"]


# ---------------------------------------------------------------------------------------------------------
# The rendered ScaledObjects, read the way the emulation reads them.


def test_reads_the_rendered_scaled_objects():
    base, replicas = k.scaled_object(".")
    assert replicas == 1  # k8s/base/consumer.yaml sets no replicas: a new Deployment starts with 1
    assert (base.query, base.target, base.activation) == ("SELECT COUNT(*) FROM jobs", 5.0, 2.0)
    assert (base.min_replica_count, base.max_replica_count, base.hpa_min) == (1, 20, 1)
    assert (base.polling_interval, base.cooldown_period, base.initial_cooldown_period) == (15.0, 30.0, 0.0)
    assert base.behavior == (UP, k.Rules(30.0, "Max", (k.Policy("Percent", 100, 15.0),), 0.1))
    zero, _ = k.scaled_object("k8s/overlays/scale-to-zero")
    assert (zero.min_replica_count, zero.hpa_min) == (0, 1)


def test_refuses_what_it_does_not_model():
    doc = {
        "metadata": {"name": "x"},
        "spec": {
            "triggers": [
                {"type": "postgresql", "metricType": "Utilization", "metadata": {"query": "q", "targetQueryValue": "5"}}
            ]
        },
    }
    with pytest.raises(k.EmulationError, match="AverageValue and Value, not Utilization"):
        k.from_manifest(doc)
    doc["spec"]["triggers"][0]["metricType"] = "Value"
    assert k.from_manifest(doc).metric_type == "Value"
    doc["spec"]["triggers"].append(doc["spec"]["triggers"][0])
    with pytest.raises(k.EmulationError, match="one postgresql trigger"):
        k.from_manifest(doc)


def test_a_scaled_object_without_behavior_gets_none():
    doc = {
        "metadata": {"name": "x"},
        "spec": {"triggers": [{"type": "postgresql", "metadata": {"query": "q", "targetQueryValue": "5"}}]},
    }
    so = k.from_manifest(doc)
    assert so.behavior is None
    assert (so.min_replica_count, so.max_replica_count, so.polling_interval, so.cooldown_period) == (0, 100, 30, 300)


# ---------------------------------------------------------------------------------------------------------
# The replica table of docs/scaling.md: computed here from the rendered ScaledObject and compared with it.

# (jobs counted, consumers running): the cases the chapter explains.
README_CASES = [(0, 1), (3, 1), (23, 1), (23, 5), (100, 19), (90, 20), (89, 20), (110, 20), (111, 20), (1000, 20)]


def readme_table():
    so, _ = k.scaled_object(".")
    lines = [
        "| Jobs counted | Consumers running | jobs / (5 × consumers) | The HPA asks for |",
        "| --- | --- | --- | --- |",
    ]
    for jobs, current in README_CASES:
        ratio = jobs / (so.target * current)
        raw = k.replica_calculator(jobs, so.target, current)
        asks = min(max(raw, so.hpa_min), so.max_replica_count)
        if 1 - k.TOLERANCE <= ratio <= 1 + k.TOLERANCE:
            why = f"{asks}: within {k.TOLERANCE:.0%} of 1, no change"
        else:
            why = f"ceil({jobs} / {so.target:g}) = {raw}"
            if asks > raw:
                why += f", raised to the minimum: {asks}"
            elif asks < raw:
                why += f", capped at the maximum: {asks}"
        lines.append(f"| {jobs} | {current} | {ratio:.2f} | {why} |")
    return "\n".join(lines)


# k8s/components/scale-to-zero/README.md's table: where the consumers settle while the count holds.
SETTLED_COUNTS = [0, 1, 2, 3, 23, 100, 1000]


def settled(target, count):
    so, replicas = k.scaled_object(target)
    autoscaler = k.Autoscaler(so, replicas)
    for _ in range(40):  # longer than any window
        autoscaler.evaluate(autoscaler.next_evaluation(), count)
    return autoscaler.replicas


def settled_table():
    lines = ["| Jobs counted, held | Consumers, base | Consumers, scale to zero |", "| --- | --- | --- |"]
    for count in SETTLED_COUNTS:
        lines.append(f"| {count} | {settled('.', count)} | {settled('k8s/overlays/scale-to-zero', count)} |")
    return "\n".join(lines)


@pytest.mark.parametrize(
    "path, name, table",
    [
        ("docs/scaling.md", "replica table", readme_table),
        ("k8s/components/scale-to-zero/README.md", "settled table", settled_table),
    ],
)
def test_readme_tables_are_the_emulations(path, name, table):
    text = (ROOT / path).read_text()
    match = re.search(rf"<!-- {name}[^>]*-->\n(.*?)\n<!-- end of {name} -->", text, re.S)
    assert match, f"{path} has no {name} between its markers"
    assert match.group(1) == table(), "regenerate it:\n" + table()


# ---------------------------------------------------------------------------------------------------------
# The committed timelines behind the scaling chapter (`make docs-burst`, `make docs-steady`): every decision in them
# is the emulation's, evaluation by evaluation, for the base ScaledObject they ran with.


@pytest.mark.parametrize("name", ["scaling-burst.csv", "scaling-steady.csv"])
def test_committed_timelines_follow_the_rules(name):
    import csv

    with open(ROOT / "docs" / name, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 30
    so, replicas = k.scaled_object(".")
    replay = k.Autoscaler(so, replicas)
    for row in rows:
        assert float(row["seconds"]) == replay.next_evaluation()
        replay.evaluate(float(row["seconds"]), float(row["jobs"]))
        assert int(row["desired"]) == replay.replicas, row
        assert int(row["consumers"]) >= int(row["desired"]), row
