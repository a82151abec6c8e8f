#!/usr/bin/env bash
# make e2e-kind: the article on a real cluster, in one command. Needs Docker, kind and kubectl, and network
# access to GitHub (KEDA's release manifest), Docker Hub (the kindest/node image, the postgres image the node
# pulls, and the python base image of both builds), ghcr.io (KEDA's images) and PyPI (pip, in both builds).
#
# In a kind cluster of its own (created, or reused if it exists), it uses the KEDA already there, or where
# there is none installs KEDA at the version README.md names and waits for it; builds both images and loads
# them into the node, runs `kubectl apply -k .`, waits
# for Postgres and for the ScaledObject to be Ready, and then, with the pusher Deployment scaled to 0 so that
# every job is accounted for, creates the burst of k8s/burst-job.yaml and checks that:
#   the HPA's desired replicas and the ready consumers rise above 1; the desired replicas reach
#   maxReplicaCount, where the burst calls for it; the queue drains; the consumers come back to
#   minReplicaCount; every job of the burst is in done_jobs (its primary key allows it once).
# Then the same with k8s/overlays/scale-to-zero, which must first reach 0 consumers and wake on the burst.
# Every timeout is derived from the ScaledObject as applied and from the HPA's timings, and printed with its
# derivation. While it waits it prints a timeline, the columns of `make run`'s timeline:
#   seconds,jobs,desired,consumers   (seconds since the burst, the trigger query's result, the HPA's
#                                      desired replicas, consumer pods ready)
# On a reused cluster it first looks, and stops in one line before it changes anything, if namespace
# job-processing exists already, or if a KEDA is there that it cannot use: not in namespace keda (the only
# one k8s/base/postgres.yaml's NetworkPolicy admits), or its operator, its metrics apiserver or the APIService
# v1beta1.external.metrics.k8s.io not Available. It never installs KEDA over another.
# It deletes only what this run made (the cluster; or on a reused cluster the namespace, and KEDA if it
# installed it) unless KEEP=1. Other settings: E2E_CLUSTER (cluster name), KIND_NODE_IMAGE.
#   tests/e2e-kind.sh                 run everything
#   tests/e2e-kind.sh preflight       those first checks only, then stop; changes nothing
#   tests/e2e-kind.sh derive ...      print the timeouts for given numbers only (tests/test_e2e_kind.py)
#   tests/e2e-kind.sh compare A B     how two lists of ids differ, in the words of a failed run (the same)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${E2E_CLUSTER:-keda-job-queue-e2e}
# The KEDA release README.md tells readers to install (tests/test_e2e_kind.py checks that they agree).
KEDA_VERSION=2.21.1
# A node image from the notes of the kind release the workflow installs (.github/workflows/e2e-kind.yml),
# pinned by digest as those notes require: Kubernetes 1.36, one of the minors KEDA 2.21 is tested on.
KIND_VERSION=v0.33.0
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed}
KEDA_MANIFEST=https://github.com/kedacore/keda/releases/download/v$KEDA_VERSION/keda-$KEDA_VERSION.yaml
NAMESPACE="job-processing"  # k8s/base/kustomization.yaml's namespace
SCALED_OBJECT="job-consumer-scaler"

# Timings not written in our manifests, from Kubernetes' and KEDA's documentation:
HPA_SYNC=15  # s, kube-controller-manager --horizontal-pod-autoscaler-sync-period, its default
# The HPA's default scale-up (no scaleUp in our ScaledObject): every 15 s, the larger of +4 pods and +100%.
SCALE_UP_PODS=4
SCALE_UP_PERCENT=100
# What nothing documents: an allowance for a pod to be scheduled and started from an image on the node.
POD_START=60  # s
# And one for the burst's pod to connect, push its jobs and exit: it pushes 200 in about a second.
PUSH_TIME=30  # s
SAMPLE_EVERY=5  # s between two rows of the timeline

# --- the derivation of every timeout -----------------------------------------------------------------------

ceil_div() { echo $((($1 + $2 - 1) / $2)); }

# The HPA's scale-up from $1 to $2 replicas under the default policy: its steps, and the sum of the replicas
# it has before each (the consumers that may be working while it gets there).
ramp() {
  local replicas=$1 max=$2 steps=0 before=0 by_pods by_percent
  while ((replicas < max)); do
    before=$((before + replicas))
    by_pods=$((replicas + SCALE_UP_PODS))
    by_percent=$((replicas + replicas * SCALE_UP_PERCENT / 100))
    replicas=$((by_pods > by_percent ? by_pods : by_percent))
    if ((replicas > max)); then replicas=$max; fi
    steps=$((steps + 1))
  done
  echo "$steps $before"
}

# derive MIN MAX TARGET POLL COOLDOWN WINDOW PROCESS_TIME_MIN PROCESS_TIME_MAX BURST: sets the T_* timeouts
# and prints how, and sets EXPECT_MAX, whether the burst calls for maxReplicaCount (printed, with why).
# T_PUSHED, T_WAKE, T_UP, T_READY_UP and T_DRAIN count from the burst's creation; T_DOWN from the moment the
# queue is empty.
derive() {
  local min=$1 max=$2 target=$3 poll=$4 cooldown=$5 window=$6 work_min=$7 work=$8 burst=$9
  local first steps before backlog ramp_jobs left tenths
  first=$((min > 0 ? min : 1))
  read -r steps before < <(ramp "$first" "$max")
  # While every consumer runs, one has at most ceil(jobs / max) jobs ahead of it until the count falls to
  # max * target; from there the HPA keeps one consumer per target jobs (a scale-down only lags, with more).
  backlog=$(($(ceil_div $((burst > max * target ? burst - max * target : 0)) "$max") + target))
  T_PUSHED=$((POD_START + PUSH_TIME))
  explain T_PUSHED "the burst Job has ended" "burst pod start $POD_START + $PUSH_TIME s to push and exit"
  if ((min == 0)); then
    # KEDA itself takes 0 -> 1 at its next poll with the count above the activation threshold.
    T_WAKE=$((POD_START + poll + POD_START))
    explain T_WAKE "first consumer ready" "burst pod start $POD_START + pollingInterval $poll + consumer start $POD_START"
  else
    T_WAKE=0
  fi
  if ((min == 0)); then
    T_UP=$((T_WAKE + 2 * HPA_SYNC))
    explain T_UP "HPA desires more than 1" "T_WAKE $T_WAKE + 2 HPA syncs of $HPA_SYNC"
  else
    T_UP=$((POD_START + 2 * HPA_SYNC))
    explain T_UP "HPA desires more than 1" "burst pod start $POD_START + 2 HPA syncs of $HPA_SYNC"
  fi
  T_READY_UP=$((T_UP + POD_START))
  explain T_READY_UP "more than 1 consumer ready" "T_UP $T_UP + consumer start $POD_START"
  T_DRAIN=$((2 * (T_UP + steps * HPA_SYNC + POD_START + backlog * work)))
  explain T_DRAIN "queue drained" "2 x (T_UP $T_UP + $steps scale-up steps ($first to $max) x $HPA_SYNC + consumer start $POD_START + $backlog jobs per consumer x PROCESS_TIME_MAX $work)"
  if ((min == 0)); then
    T_DOWN=$((2 * (poll + cooldown + poll)))
    explain T_DOWN "consumers back to 0" "2 x (pollingInterval $poll + cooldownPeriod $cooldown + pollingInterval $poll)"
  else
    T_DOWN=$((2 * (window + 2 * HPA_SYNC)))
    explain T_DOWN "consumers back to $min" "2 x (stabilizationWindowSeconds $window + 2 HPA syncs of $HPA_SYNC)"
  fi
  # The HPA asks for maxReplicaCount only while the count is above (max - 1) x target, and takes its last step
  # there, from fewer replicas, only past its 10% tolerance: so while more than 1.1 x max x target jobs are
  # left. Left when it can: the burst less what the ramp's consumers may do first, each for an HPA sync at
  # twice the rate of the mean work time (twice: for a first sync that finds the burst half pushed, a step
  # more, and for the spread of the work times).
  ramp_jobs=$((2 * before * HPA_SYNC * 2 / (work_min + work > 0 ? work_min + work : 1)))
  left=$((burst - ramp_jobs)) tenths=$((max * target * 11))
  local verdict="checked" above="above"
  if ((left * 10 > tenths)); then EXPECT_MAX=1; else EXPECT_MAX=0 verdict="not checked" above="not above"; fi
  echo "  $verdict: the HPA desires maxReplicaCount $max, as the burst's $burst jobs - $ramp_jobs the ramp may do" \
    "(2 x $before replica-syncs of $HPA_SYNC s / mean PROCESS_TIME ($work_min + $work) / 2 s) = $left" \
    "left is $above 1.1 x $max x $target = $((tenths / 10)).$((tenths % 10))"
}

explain() { printf '  timeout %-10s %5d s  %-28s = %s\n' "$1" "${!1}" "$2" "$3"; }

# compare PUSHED RECORDED (ids, separated by white space): how many pushed ids are not recorded, and how many
# recorded ones were not pushed. comm needs both lists in its locale's collating order, which a numeric sort
# is not (99 before 100, where text puts 100 first), so they are sorted as text, in C's order, for comm alone.
compare() {
  local missing extra
  missing=$(LC_ALL=C comm -23 <(as_text "$1") <(as_text "$2") | wc -l)
  extra=$(LC_ALL=C comm -13 <(as_text "$1") <(as_text "$2") | wc -l)
  echo "$((missing)) missing, $((extra)) not pushed by the burst"
}
as_text() { tr -s '[:space:]' '\n' <<<"$1" | sed '/^$/d' | LC_ALL=C sort; }

case ${1:-} in
  derive) shift; derive "$@"; exit 0 ;;
  compare) shift; compare "$@"; exit 0 ;;
  "" | preflight) ;;
  *) echo "e2e-kind: no command $1 (the script's header lists them)" >&2; exit 2 ;;
esac

# --- output and checks -------------------------------------------------------------------------------------

failures=0 checks=0
say() { echo; echo "== $*"; }
pass() { checks=$((checks + 1)); echo "  ok    $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "  FAIL  $*"; }
die() { echo "e2e-kind: $*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || die "needs $tool on PATH (Docker, kind and kubectl; docs/checks.md)"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info)"
if [[ $(kind version) != *"$KIND_VERSION "* ]]; then
  echo "e2e-kind: note: $(kind version); $NODE_IMAGE is built for kind $KIND_VERSION (its release notes)"
fi

k() { kubectl --context "kind-$CLUSTER" "$@"; }
kn() { k -n "$NAMESPACE" "$@"; }
# psql inside the Postgres pod, over its own socket, as the role its environment names
# shellcheck disable=SC2016  # the pod's shell expands them
sql() { kn exec postgres-0 -- sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "$0"' "$1" 2>/dev/null; }
field() { kn get "$1" -o "jsonpath=$2" 2>/dev/null; }

# exists KIND NAME: whether the cluster has it. Not found is an answer; any other error ends the run, as it
# must not be taken for "not there" (this run would then install over what it could not see).
exists() {
  local found
  found=$(k get "$@" --ignore-not-found -o name 2>/dev/null) \
    || die "kubectl cannot read cluster kind-$CLUSTER (kubectl --context kind-$CLUSTER get $*)"
  [[ -n $found ]]
}

# --- what the cluster holds already: nothing is changed until this has passed ---------------------------------

# The only namespace k8s/base/postgres.yaml's NetworkPolicy admits KEDA's operator from (the one its release
# manifest and its Helm chart install into).
KEDA_NAMESPACE=keda
OTHER_CLUSTER="or use another cluster (E2E_CLUSTER=another-name)"
keda_found=0 keda_version=""

# A namespace job-processing this run did not make is somebody's: applying over it would mix their objects
# with the run's, and the clean-up would delete it with the volume claim data-postgres-0 in it.
refuse_our_namespace_if_taken() {
  if exists namespace "$NAMESPACE"; then
    die "namespace $NAMESPACE already exists in kind-$CLUSTER and this run did not make it, so it neither" \
      "applies over it nor deletes it (nor the data in its volume claim data-postgres-0): delete it yourself" \
      "(kubectl --context kind-$CLUSTER delete namespace $NAMESPACE), $OTHER_CLUSTER"
  fi
}

# A KEDA already in the cluster (installed by Helm, or another release) is used as it is, never installed
# over: server-side apply of the release manifest conflicts with Helm's fields, and silently replaces another
# release. So it must be usable as it is, and where the NetworkPolicy lets its operator reach Postgres.
find_keda() {
  local in_keda=0 crd=0 listed operators namespace name service image label managed tag
  if exists namespace "$KEDA_NAMESPACE"; then in_keda=1; fi
  if exists crd scaledobjects.keda.sh; then crd=1; fi
  ((in_keda || crd)) || return 0
  local seen="namespace $KEDA_NAMESPACE exists"
  ((in_keda)) || seen="KEDA's CRD scaledobjects.keda.sh is installed"
  # Its release manifest and its Helm chart both label the operator app=keda-operator, the label the
  # NetworkPolicy admits.
  listed=$(k get deployment --all-namespaces -l app=keda-operator \
    -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{" "}{end}' 2>/dev/null) \
    || die "kubectl cannot list Deployments in kind-$CLUSTER (kubectl --context kind-$CLUSTER get deployment -A)"
  read -ra operators <<<"$listed"
  case ${#operators[@]} in
    0) die "$seen but no KEDA operator runs (no Deployment labelled app=keda-operator): this run will not" \
      "install KEDA over what is there; finish or remove that KEDA, $OTHER_CLUSTER" ;;
    1) ;;
    *) die "more than one KEDA operator runs in kind-$CLUSTER (${operators[*]}): this run cannot tell which" \
      "one to use; remove one, $OTHER_CLUSTER" ;;
  esac
  namespace=${operators[0]%%/*} name=${operators[0]#*/}
  if [[ $namespace != "$KEDA_NAMESPACE" ]]; then
    die "KEDA runs in namespace $namespace, not $KEDA_NAMESPACE: k8s/base/postgres.yaml's NetworkPolicy admits" \
      "KEDA's operator only from namespace $KEDA_NAMESPACE, so its query could not reach Postgres; use a" \
      "cluster with no KEDA or with KEDA in $KEDA_NAMESPACE (E2E_CLUSTER=another-name)"
  fi
  ((crd)) || die "KEDA's operator runs ($namespace/$name) but its CRD scaledobjects.keda.sh is not installed:" \
    "install KEDA whole, $OTHER_CLUSTER"
  # A short wait, for a reused cluster that has just started again: no more is owed to a KEDA that is broken.
  k -n "$namespace" wait --for=condition=Available "deployment/$name" --timeout=60s >/dev/null 2>&1 \
    || die "KEDA's operator $namespace/$name is not Available (kubectl --context kind-$CLUSTER -n $namespace" \
      "describe deployment $name); this run will not install KEDA over it: fix it, $OTHER_CLUSTER"
  # The HPA reads KEDA's metrics through this APIService; it names the Service of KEDA's metrics apiserver, whose
  # Deployment has the same name in the release manifest (keda-metrics-apiserver) and the Helm chart
  # (keda-operator-metrics-apiserver).
  service=$(k get apiservice v1beta1.external.metrics.k8s.io --ignore-not-found \
    -o jsonpath='{.spec.service.namespace}/{.spec.service.name}' 2>/dev/null) \
    || die "kubectl cannot read the APIServices of kind-$CLUSTER (kubectl --context kind-$CLUSTER get apiservice)"
  if [[ -z $service ]]; then
    die "KEDA's operator runs ($namespace/$name) but no APIService v1beta1.external.metrics.k8s.io registers its" \
      "metrics apiserver, so no HPA would get KEDA's metrics: install KEDA whole, $OTHER_CLUSTER"
  fi
  if [[ ${service%%/*} != "$namespace" || -z ${service#*/} ]]; then
    die "the APIService v1beta1.external.metrics.k8s.io is served by ${service#/}, not by KEDA's metrics" \
      "apiserver in $namespace, so no HPA would get KEDA's metrics: fix that, $OTHER_CLUSTER"
  fi
  k -n "$namespace" wait --for=condition=Available "deployment/${service#*/}" --timeout=60s >/dev/null 2>&1 \
    || die "KEDA's metrics apiserver $service is not Available (kubectl --context kind-$CLUSTER -n $namespace" \
      "describe deployment ${service#*/}); fix it, $OTHER_CLUSTER"
  k wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=60s >/dev/null 2>&1 \
    || die "the APIService v1beta1.external.metrics.k8s.io is not Available (kubectl --context kind-$CLUSTER" \
      "describe apiservice v1beta1.external.metrics.k8s.io); fix it, $OTHER_CLUSTER"
  # The version: the operator image's tag, else the label both install methods set.
  local operator=(-n "$namespace" get "deployment/$name")
  image=$(k "${operator[@]}" -o 'jsonpath={.spec.template.spec.containers[0].image}' 2>/dev/null) || true
  label=$(k "${operator[@]}" -o 'jsonpath={.metadata.labels.app\.kubernetes\.io/version}' 2>/dev/null) || true
  managed=$(k "${operator[@]}" -o 'jsonpath={.metadata.labels.app\.kubernetes\.io/managed-by}' 2>/dev/null) || true
  tag=${image##*/} tag=${tag%%@*}
  if [[ $tag == *:* ]]; then keda_version=${tag#*:}; else keda_version=${label:-of unknown version}; fi
  keda_version=${keda_version#v} keda_found=1
  echo "  KEDA $keda_version found in namespace $namespace${managed:+ (managed by $managed)}: its operator, its" \
    "metrics apiserver and the APIService are Available; this run uses it, and neither installs nor removes it"
  if [[ $keda_version != "$KEDA_VERSION" ]]; then
    echo "  note: README.md names KEDA $KEDA_VERSION; this run checks the manifests under KEDA $keda_version"
  fi
}

say "cluster $CLUSTER"
# Read whole before matching: grep -q would stop reading early, and pipefail would count kind's broken pipe.
clusters=$(kind get clusters 2>/dev/null) || die "kind cannot list its clusters (kind get clusters)"
reusing=0
if grep -qx "$CLUSTER" <<<"$clusters"; then
  reusing=1
  echo "  it exists: reusing it"
  refuse_our_namespace_if_taken
  find_keda
else
  echo "  it does not exist: the run creates it, installs KEDA $KEDA_VERSION in it, and deletes it at the end"
fi
if [[ ${1:-} == preflight ]]; then
  echo "e2e-kind: preflight passed, nothing changed"
  exit 0
fi

# --- clean-up ------------------------------------------------------------------------------------------------

# Only what this run made goes: the cluster if it made it, else the namespace and KEDA if it made them.
created_cluster=0 created_namespace=0 installed_keda=0
cleanup() {
  local status=$?
  if ((created_namespace)) && ((failures > 0 || status != 0)); then
    say "what the cluster shows"
    kn get all,scaledobject,hpa,pvc -o wide || true
    kn describe scaledobject "$SCALED_OBJECT" | tail -n 20 || true
    k -n "$KEDA_NAMESPACE" logs deployment/keda-operator --tail=40 || true
  fi
  if [[ ${KEEP:-0} == 1 ]]; then
    local made=()
    if ((created_cluster)); then made+=("kind delete cluster --name $CLUSTER"); fi
    if ((!created_cluster && created_namespace)); then
      made+=("kubectl --context kind-$CLUSTER delete namespace $NAMESPACE")
    fi
    if ((!created_cluster && installed_keda)); then
      made+=("kubectl --context kind-$CLUSTER delete -f $KEDA_MANIFEST")
    fi
    local how=""
    if ((${#made[@]})); then how=$(printf '; %s' "${made[@]}"); how="; remove what this run made with: ${how#; }"; fi
    echo "KEEP=1: left as it is$how"
  elif ((created_cluster)); then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    # The namespace first, and waited for: KEDA removes its finalizer from the ScaledObject in it.
    if ((created_namespace)); then
      k delete namespace "$NAMESPACE" --ignore-not-found --timeout=300s >/dev/null 2>&1 || true
    fi
    if ((installed_keda)); then
      k delete --ignore-not-found -f "$KEDA_MANIFEST" >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT

# --- the cluster, KEDA, the images -------------------------------------------------------------------------

if ((!reusing)); then
  created_cluster=1  # before: a half-made cluster is deleted too
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 180s
fi
k version | sed 's/^/  /'

if ((!keda_found)); then
  say "KEDA $KEDA_VERSION, its release manifest"
  installed_keda=1  # before: a half-made install is deleted too
  k apply --server-side -f "$KEDA_MANIFEST" >/dev/null
  # An allowance for pulling KEDA's three images; each Deployment is Available once its readiness probe passes.
  k -n "$KEDA_NAMESPACE" wait --for=condition=Available deployment --all --timeout=300s
  k wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=120s
fi

say "the images, built and loaded into the node"
# The names and tags kustomize renders (k8s/base/kustomization.yaml sets them once); each is built from its folder.
images=()
while IFS= read -r image; do images+=("$image"); done \
  < <(kubectl kustomize . | sed -n 's/^ *image: \(job-[a-z]*:.*\)$/\1/p' | sort -u)
((${#images[@]} == 2)) || die "expected the pusher's and the consumer's image in the manifests, got: ${images[*]}"
for image in "${images[@]}"; do
  folder=${image%%:*}
  docker build --quiet -t "$image" "${folder#job-}" >/dev/null
  echo "  built $image from ${folder#job-}/"
done
kind load docker-image --name "$CLUSTER" "${images[@]}"

# --- one variant -----------------------------------------------------------------------------------------

# The samplers: each sets a variable, 0 when the object says nothing (a Deployment at 0 has no readyReplicas).
count=0 desired=0 ready=0 replicas=0 peak_desired=0 hpa="" phase_started=$SECONDS
sample() {
  count=$(sql 'SELECT count(*) FROM jobs') || count='?'
  desired=$(field "hpa/$hpa" '{.status.desiredReplicas}'); desired=${desired:-0}
  ready=$(field deployment/job-consumer '{.status.readyReplicas}'); ready=${ready:-0}
  replicas=$(field deployment/job-consumer '{.spec.replicas}'); replicas=${replicas:-0}
  if ((desired > peak_desired)); then peak_desired=$desired; fi
  echo "$((SECONDS - phase_started)),$count,$desired,$ready"
}
timeline() { phase_started=$SECONDS; echo "seconds,jobs,desired,consumers   ($*)"; }

# until_or_fail DEADLINE WHAT PREDICATE...: a row of the timeline every SAMPLE_EVERY s until the predicate
# holds, or until DEADLINE seconds on the timeline's clock
until_or_fail() {
  local limit=$1 what=$2
  shift 2
  while :; do
    sample
    if "$@"; then pass "$what (at $(elapsed) s)"; return 0; fi
    if (($(elapsed) >= limit)); then fail "$what: not by $limit s"; return 1; fi
    sleep "$SAMPLE_EVERY"
  done
}
elapsed() { echo $((SECONDS - phase_started)); }
from_now() { echo $(($(elapsed) + $1)); }
# a command that must succeed, counted as a check
must() { if "$@"; then return 0; fi; fail "$*"; return 1; }

moved_a_job() { (($(sql 'SELECT count(*) FROM done_jobs' || echo 0) > done_before)); }
desired_above_1() { ((desired > 1)); }
ready_above_1() { ((ready > 1)); }
ready_at_least_1() { ((ready >= 1)); }
# The burst's Job has ended, either way: its status counts the pods that succeeded or failed.
burst_ended() { [[ -n $(field "$job" '{.status.succeeded}{.status.failed}') ]]; }
queue_empty() { [[ $count == 0 ]]; }
at_min() {
  [[ $count == 0 ]] && ((replicas == min && ready == min)) || return 1
  # At 0 replicas the HPA stops computing (ScalingDisabled); above, it must agree.
  ((min == 0 || desired == min))
}
# The time to settle at minReplicaCount with an empty queue: the same bound as after a burst.
settle_timeout() {
  if ((min == 0)); then echo $((2 * (poll + cooldown + poll) + grace)); else echo $((2 * (window + 2 * HPA_SYNC))); fi
}

# Errors inside are handled one by one: bash ignores `set -e` in a function called from an `||` list.
run_variant() {
  local target=$1 label=$2
  say "$label: kubectl apply -k $target"
  # The preflight found no namespace $NAMESPACE: the first apply makes it (set before: a half-applied one goes too).
  created_namespace=1
  must k apply -k "$target" || return 1

  # Postgres: the startupProbe's own budget, plus an allowance for pulling the image.
  local period threshold started=$SECONDS t_postgres t_ready
  period=$(field statefulset/postgres '{.spec.template.spec.containers[0].startupProbe.periodSeconds}')
  threshold=$(field statefulset/postgres '{.spec.template.spec.containers[0].startupProbe.failureThreshold}')
  t_postgres=$((${period:-10} * ${threshold:-3} + 120))
  echo "  Postgres: startupProbe periodSeconds ${period:-10} x failureThreshold ${threshold:-3} + 120 s to pull" \
    "the image = $t_postgres s"
  must kn rollout status statefulset/postgres --timeout="${t_postgres}s" || return 1
  pass "Postgres is ready (after $((SECONDS - started)) s)"
  # KEDA retries a failed reconcile with controller-runtime's default backoff, which doubles from 5 ms: the
  # next retry comes at most as long after Postgres got ready as Postgres took to get there.
  t_ready=$((2 * (SECONDS - started) + 60))
  echo "  ScaledObject: 2 x the $((SECONDS - started)) s Postgres took + 60 s = $t_ready s"
  must kn wait --for=condition=Ready "scaledobject/$SCALED_OBJECT" --timeout="${t_ready}s" || return 1
  pass "ScaledObject $SCALED_OBJECT is Ready"

  # The numbers the timeouts derive from, as applied; KEDA's and the HPA's defaults where unset.
  local so="scaledobject/$SCALED_OBJECT" max target work_min work scale_up
  min=$(field "$so" '{.spec.minReplicaCount}'); min=${min:-0}
  max=$(field "$so" '{.spec.maxReplicaCount}'); max=${max:-100}
  poll=$(field "$so" '{.spec.pollingInterval}'); poll=${poll:-30}
  cooldown=$(field "$so" '{.spec.cooldownPeriod}'); cooldown=${cooldown:-300}
  window=$(field "$so" '{.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds}')
  window=${window:-300}
  scale_up=$(field "$so" '{.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp}')
  if [[ -n $scale_up ]]; then fail "the ScaledObject sets scaleUp; the timeouts assume the HPA's default"; return 1; fi
  target=$(field "$so" '{.spec.triggers[0].metadata.targetQueryValue}')
  work_min=$(field deployment/job-consumer '{.spec.template.spec.containers[0].env[?(@.name=="PROCESS_TIME_MIN")].value}')
  work_min=${work_min:-2}  # the consumer's default
  work=$(field deployment/job-consumer '{.spec.template.spec.containers[0].env[?(@.name=="PROCESS_TIME_MAX")].value}')
  grace=$(field deployment/job-consumer '{.spec.template.spec.terminationGracePeriodSeconds}')
  hpa=$(field "$so" '{.status.hpaName}')
  echo "  minReplicaCount $min, maxReplicaCount $max, targetQueryValue $target, pollingInterval $poll s," \
    "cooldownPeriod $cooldown s, scale-down window $window s; the HPA is $hpa; consumer PROCESS_TIME_MIN" \
    "$work_min s, PROCESS_TIME_MAX $work s," \
    "terminationGracePeriodSeconds $grace s"

  say "$label: the Deployments as applied move a job, then the pusher goes to 0 so that only the burst adds jobs"
  local done_before t_drain
  done_before=$(sql 'SELECT count(*) FROM done_jobs'); done_before=${done_before:-0}
  timeline "since the Deployments are ready"
  until_or_fail "$(from_now $((2 * (POD_START + work))))" "the pusher and a consumer move a job through Postgres" moved_a_job \
    || return 1
  must kn scale deployment/job-pusher --replicas=0 || return 1
  kn wait --for=delete pod -l app.kubernetes.io/name=job-pusher,app.kubernetes.io/component=producer \
    --timeout=60s >/dev/null 2>&1 || true
  sample >/dev/null
  t_drain=$((2 * ((${count//[^0-9]/0} + 1) * work + POD_START)))
  until_or_fail "$(from_now "$t_drain")" "the jobs the pusher left are done" queue_empty || return 1
  until_or_fail "$(from_now "$(settle_timeout)")" "consumers at minReplicaCount $min before the burst" at_min || return 1
  local baseline
  baseline=$(sql 'SELECT coalesce(max(id), 0) FROM done_jobs')

  say "$label: a burst, kubectl create -f k8s/burst-job.yaml"
  local job burst
  job=$(k create -f k8s/burst-job.yaml -o name) || { fail "kubectl create -f k8s/burst-job.yaml"; return 1; }
  job=job/${job#*/}
  burst=$(field "$job" '{.spec.template.spec.containers[0].env[?(@.name=="PUSH_COUNT")].value}')
  echo "  $job pushes $burst jobs; the timeouts, from the numbers above:"
  derive "$min" "$max" "$target" "$poll" "$cooldown" "$window" "$work_min" "$work" "$burst"
  peak_desired=0
  timeline "since the burst was created"
  # Its log as soon as it has ended: the Job deletes itself ttlSecondsAfterFinished (k8s/burst-job.yaml)
  # after that, sooner than a slow drain may take, and with it the only record of what it pushed.
  local succeeded log pushed
  until_or_fail "$T_PUSHED" "the burst Job has ended" burst_ended || return 1
  succeeded=$(field "$job" '{.status.succeeded}')
  if [[ $succeeded != 1 ]]; then
    fail "the burst Job $job failed, and is not retried (backoffLimit 0): kubectl -n $NAMESPACE logs $job"
    return 1
  fi
  if ! log=$(kn logs "$job" 2>&1); then
    fail "the burst's log cannot be read, so what it pushed is unknown: kubectl logs $job: ${log%%$'\n'*}"
    return 1
  fi
  pushed=$(sed -n 's/^Pushed job \([0-9]*\).*/\1/p' <<<"$log" | sort -n)
  pass "the burst's log is read (it lists $(wc -w <<<"$pushed") jobs pushed)"
  if ((min == 0)); then
    until_or_fail "$T_WAKE" "KEDA wakes a consumer from 0" ready_at_least_1 || return 1
  fi
  until_or_fail "$T_UP" "the HPA desires more than 1 consumer" desired_above_1 || return 1
  until_or_fail "$T_READY_UP" "more than 1 consumer is ready" ready_above_1 || return 1
  until_or_fail "$T_DRAIN" "the queue drains" queue_empty || return 1
  # The HPA caps its desired replicas at maxReplicaCount, so only reaching it says anything: that KEDA's
  # metric and the ScaledObject's maximum carry through to the HPA.
  if ((EXPECT_MAX && peak_desired >= max)); then pass "the HPA desired maxReplicaCount $max during the burst"
  elif ((EXPECT_MAX)); then fail "the HPA desired at most $peak_desired replicas, never maxReplicaCount $max" \
    "(the burst calls for it: see above)"; fi
  until_or_fail "$(from_now "$T_DOWN")" "the consumers come back to minReplicaCount $min" at_min || return 1

  say "$label: nothing lost"
  local recorded queued
  recorded=$(sql "SELECT id FROM done_jobs WHERE id > $baseline ORDER BY id")
  queued=$(sql 'SELECT count(*) FROM jobs')
  echo "  pushed $(wc -w <<<"$pushed"), recorded in done_jobs $(wc -w <<<"$recorded"), still queued $queued"
  if (($(wc -w <<<"$pushed") == burst)); then pass "the burst pushed $burst jobs"
  else fail "the burst pushed $burst jobs (its log shows $(wc -w <<<"$pushed"))"; fi
  if [[ -n $pushed && $pushed == "$recorded" && $queued == 0 ]]; then
    pass "done_jobs holds every pushed job, once (its primary key), and no other"
  else
    fail "done_jobs holds every pushed job: $(compare "$pushed" "$recorded"), $queued still queued"
  fi
}

min=1 poll=0 cooldown=0 window=0 grace=0
run_variant . "base (minReplicaCount 1)" || true
run_variant k8s/overlays/scale-to-zero "scale to zero (minReplicaCount 0)" || true

echo
if ((failures == 0 && checks > 0)); then
  echo "e2e-kind: PASS ($checks checks)"
else
  echo "e2e-kind: FAIL ($failures of $checks checks failed)"
  exit 1
fi
