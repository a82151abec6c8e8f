#!/usr/bin/env bash
# Stand-ins for kubectl, kind and docker (one script, linked under each name), so that tests/test_e2e_kind.py
# can run tests/e2e-kind.sh where there is no cluster. Each call is appended to $STUB_DIR/calls.log as
# `name args...` (without kubectl's --context); anything the fake cluster does not know fails with exit 99
# and an UNHANDLED line there, so that a new command in the script cannot pass unseen.
#
# The fake cluster, from the environment (lists separated by spaces):
#   STUB_CLUSTERS       the kind clusters that exist
#   STUB_NAMESPACES     the namespaces that exist (before the script applies anything)
#   STUB_CRDS           the CRDs installed, e.g. scaledobjects.keda.sh
#   STUB_OPERATORS      namespace/name of each Deployment labelled app=keda-operator
#   STUB_OPERATOR_IMAGE, STUB_OPERATOR_VERSION, STUB_OPERATOR_MANAGED_BY   the operator's image and labels
#   STUB_APISERVICE     namespace/name of the Service v1beta1.external.metrics.k8s.io names (unset: no APIService)
#   STUB_UNAVAILABLE    objects that `kubectl wait --for=condition=Available` times out on (deployment/NAME, ...)
#   STUB_FAIL           steps that fail: apply-k (kubectl apply -k), kind-create, docker-build
#   STUB_PEAK           the HPA's desired replicas (and the ready consumers) while the burst lasts (20)
#   STUB_BURST_LOG      gone: `kubectl logs` of the burst Job fails, as when the Job has deleted itself
#   STUB_NOT_RECORDED   ids the burst pushed that done_jobs lacks
# A burst lasts 4 samples of the timeline (each sample begins with the count of jobs), then the consumers
# are back at minReplicaCount; the queue always counts 0.
set -euo pipefail
: "${STUB_DIR:?}"
me=${0##*/}
state() { local value=$2; if [[ -f $STUB_DIR/$1 ]]; then read -r value <"$STUB_DIR/$1"; fi; echo "$value"; }
put() { echo "$2" >"$STUB_DIR/$1"; }
listed() { [[ " ${2:-} " == *" $1 "* ]]; }
unhandled() { echo "UNHANDLED $me $*" >>"$STUB_DIR/calls.log"; echo "stub $me: unhandled: $*" >&2; exit 99; }

if [[ $me == kind ]]; then
  echo "kind $*" >>"$STUB_DIR/calls.log"
  case "$*" in
    version) echo "kind v0.33.0 go1.25.1 linux/amd64" ;;
    "get clusters")
      if [[ -z ${STUB_CLUSTERS:-} ]]; then echo "No kind clusters found." >&2; fi
      for cluster in ${STUB_CLUSTERS:-}; do echo "$cluster"; done ;;
    "create cluster"*) if listed kind-create "${STUB_FAIL:-}"; then exit 1; fi ;;
    "load docker-image"* | "delete cluster"*) ;;
    *) unhandled "$@" ;;
  esac
  exit 0
fi

if [[ $me == docker ]]; then
  echo "docker $*" >>"$STUB_DIR/calls.log"
  case ${1:-} in
    info) ;;
    build) if listed docker-build "${STUB_FAIL:-}"; then exit 1; fi ;;
    *) unhandled "$@" ;;
  esac
  exit 0
fi

[[ $me == kubectl ]] || unhandled "$@"
namespace="" args=()
while (($#)); do
  case $1 in
    --context) shift 2 ;;
    -n) namespace=$2; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
echo "kubectl ${args[*]}" >>"$STUB_DIR/calls.log"
set -- "${args[@]}"
if [[ ${1:-} == -n ]]; then shift 2; fi
# the argument of -o
output=""
for ((i = 1; i < $#; i++)); do
  if [[ ${!i} == -o ]]; then j=$((i + 1)); output=${!j}; fi
done

max=20 min=$(state min 1) peak=${STUB_PEAK:-20} burst=200
# The consumers: at the burst's peak for its first 4 samples, else at minReplicaCount.
consumers() {
  if [[ $(state phase idle) == burst ]] && (($(state ticks 0) <= 4)); then echo "$peak"; else echo "$min"; fi
}
# The highest id in done_jobs before the next burst: each burst's ids start 1000 above the last one's.
first_id() { echo $((95 + 1000 * $(state bursts 0))); }

case ${1:-} in
  version) echo "Client Version: v1.36.4"; echo "Server Version: v1.36.4" ;;
  kustomize) printf '        image: %s\n' postgres:18.1 job-pusher:1.0.0 job-consumer:1.0.0 job-pusher:1.0.0 ;;
  get)
    case "$2 $3" in
      "namespace "*) if listed "$3" "${STUB_NAMESPACES:-}"; then echo "namespace/$3"; fi ;;
      "crd "*) if listed "$3" "${STUB_CRDS:-}"; then echo "customresourcedefinition.apiextensions.k8s.io/$3"; fi ;;
      "deployment --all-namespaces") for op in ${STUB_OPERATORS:-}; do printf '%s ' "$op"; done ;;
      "apiservice v1beta1.external.metrics.k8s.io") printf '%s' "${STUB_APISERVICE:-}" ;;
      "all,scaledobject,hpa,pvc -o") echo "(what the cluster shows)" ;;
      *)
        case "$2 $output" in
          "deployment/"*"containers[0].image}") printf '%s' "${STUB_OPERATOR_IMAGE:-}" ;;
          "deployment/"*"io/version}") printf '%s' "${STUB_OPERATOR_VERSION:-}" ;;
          "deployment/"*"io/managed-by}") printf '%s' "${STUB_OPERATOR_MANAGED_BY:-}" ;;
          "statefulset/postgres "*periodSeconds*) echo 5 ;;
          "statefulset/postgres "*failureThreshold*) echo 60 ;;
          "scaledobject/"*minReplicaCount*) echo "$min" ;;
          "scaledobject/"*maxReplicaCount*) echo "$max" ;;
          "scaledobject/"*pollingInterval*) echo 15 ;;
          "scaledobject/"*cooldownPeriod*) echo 30 ;;
          "scaledobject/"*stabilizationWindowSeconds*) echo 30 ;;
          "scaledobject/"*scaleUp*) ;;
          "scaledobject/"*targetQueryValue*) echo 5 ;;
          "scaledobject/"*hpaName*) echo keda-hpa-job-consumer-scaler ;;
          "deployment/job-consumer "*PROCESS_TIME_MIN*) echo 2 ;;
          "deployment/job-consumer "*PROCESS_TIME_MAX*) echo 10 ;;
          "deployment/job-consumer "*terminationGracePeriodSeconds*) echo 30 ;;
          "deployment/job-consumer "*readyReplicas*) consumers ;;
          "deployment/job-consumer "*.spec.replicas*) consumers ;;
          "hpa/"*desiredReplicas*) consumers ;;
          "job/"*PUSH_COUNT*) echo "$burst" ;;
          "job/"*.status.succeeded*) echo 1 ;;
          "job/"*.status.failed*) ;;
          *) unhandled "${args[@]}" ;;
        esac ;;
    esac ;;
  wait)
    for object in "${@:2}"; do
      if listed "$object" "${STUB_UNAVAILABLE:-}"; then
        echo "error: timed out waiting for the condition on $object" >&2
        exit 1
      fi
    done ;;
  apply)
    if [[ $2 == -k ]]; then
      if listed apply-k "${STUB_FAIL:-}"; then echo "error: the stub refuses apply -k" >&2; exit 1; fi
      if [[ $3 == *scale-to-zero* ]]; then put min 0; else put min 1; fi
      put phase idle
    fi ;;
  rollout | scale | delete) ;;
  describe) echo "(its description)" ;;
  create)
    put phase burst; put ticks 0; put base "$(first_id)"; put bursts $(($(state bursts 0) + 1))
    echo "job.batch/job-burst-$(state bursts 0)" ;;
  logs)
    if [[ $2 == job/* ]]; then
      if [[ ${STUB_BURST_LOG:-} == gone ]]; then
        echo "error: error from server (NotFound): jobs.batch \"${2#job/}\" not found in namespace \"$namespace\"" >&2
        exit 1
      fi
      echo "Pushing $burst jobs"
      base=$(state base 0)
      for ((id = base + 1; id <= base + burst; id++)); do echo "Pushed job $id: {\"n\": $id}"; done
    else
      echo "(KEDA's log)"
    fi ;;
  exec)
    query=${!#}
    case $query in
      "SELECT count(*) FROM jobs")
        if [[ $(state phase idle) == burst ]]; then put ticks $(($(state ticks 0) + 1)); fi
        echo 0 ;;
      "SELECT count(*) FROM done_jobs") put moved $(($(state moved 0) + 1)); state moved 0 ;;
      "SELECT coalesce(max(id), 0) FROM done_jobs") first_id ;;
      "SELECT id FROM done_jobs WHERE id > "*" ORDER BY id")
        base=${query#SELECT id FROM done_jobs WHERE id > } base=${base%% *}
        for ((id = base + 1; id <= base + burst; id++)); do
          if ! listed "$id" "${STUB_NOT_RECORDED:-}"; then echo "$id"; fi
        done ;;
      *) unhandled "${args[@]}" ;;
    esac ;;
  *) unhandled "${args[@]}" ;;
esac
