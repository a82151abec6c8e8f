#!/usr/bin/env bash
# Runs docker-compose.yml for real and checks what it promises: Postgres becomes healthy, jobs are pushed,
# three consumers share the queue with no job done twice, `docker compose stop` lets every consumer finish
# the job in hand and exit 0, no log holds a traceback, and after `down -v` the next `up` starts from an
# empty database again. Prints one line per check and PASS or FAIL; exits non-zero on FAIL.
#
# It needs a Docker engine, so `make test` does not run it. It uses the engine DOCKER_HOST points at; if
# none answers and ../shared/tools/docker-standin exists (a private engine on Debian stand-in base images),
# it starts that. It runs under its own project name, so a `docker compose up` of yours is left alone.
#   tests/docker/compose_check.sh            KEEP=1 tests/docker/compose_check.sh  (leave the containers for a look)
set -uo pipefail
cd "$(dirname "$0")/../.."

PROJECT=${COMPOSE_CHECK_PROJECT:-compose-check}
CONSUMERS=3
STANDIN=${DOCKER_STANDIN:-../shared/tools/docker-standin}
# The pusher outpaces three consumers (one job every 0.2-0.5 s against 2-10 s of work), so the queue fills and
# every consumer is busy when the stop comes. The consumers keep the article's timings: the stop must wait
# for up to PROCESS_TIME_MAX (10 s), which compose's default grace period of 10 s would not.
export PUSH_INTERVAL_MIN=0.2 PUSH_INTERVAL_MAX=0.5 PUSH_COUNT=0
unset PROCESS_TIME_MIN PROCESS_TIME_MAX DATABASE_URL COMPOSE_FILE COMPOSE_PROJECT_NAME

failures=0 checks=0
pass() { checks=$((checks + 1)); echo "  ok    $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "  FAIL  $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
say() { echo; echo "== $*"; }

compose() { docker compose -p "$PROJECT" "$@"; }
# psql inside the postgres container, as the role and database its environment names
sql() { compose exec -T postgres sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "$0"' "$1"; }
ids() { compose ps -a -q "$1"; }
logs_of() { docker logs "$1" 2>&1; }
name_of() { docker inspect -f '{{.Name}}' "$1" | tr -d /; }

cleanup() {
  if [[ ${KEEP:-0} == 1 ]]; then echo "KEEP=1: left running; remove with: docker compose -p $PROJECT down -v"
  else compose down -v --remove-orphans >/dev/null 2>&1; fi
}

wait_for() { # seconds description command...: poll until the command succeeds
  local limit=$1 deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    if ((SECONDS > deadline)); then echo "  (gave up waiting for $what after ${limit}s)"; return 1; fi
    sleep 1
  done
}

completed_per_consumer() { # every consumer has completed at least $1 jobs
  local id
  for id in $(ids consumer); do
    (($(logs_of "$id" | grep -c 'Completed job') >= $1)) || return 1
  done
}

# --- the engine and the images ---------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1 || [[ ${DOCKER_HOST:-} == *docker-standin* ]]; then
  if [[ -x $STANDIN ]]; then
    say "starting the stand-in engine and building the images ($STANDIN up)"
    exports=$("$STANDIN" up) || { echo "FAIL: $STANDIN up failed"; exit 1; }
    eval "$exports"
    build=(--no-build)  # the stand-in has built them, with host networking
  else
    echo "FAIL: no Docker engine answers (docker info), and no stand-in at $STANDIN"; exit 1
  fi
else
  build=(--build)
fi
trap cleanup EXIT

# --- round 1: up, let the jobs flow ----------------------------------------------------------------------
say "up: postgres, one pusher, $CONSUMERS consumers (project $PROJECT)"
compose down -v --remove-orphans >/dev/null 2>&1
if ! compose up -d "${build[@]}" --scale consumer=$CONSUMERS >/tmp/compose-check-up.log 2>&1; then
  cat /tmp/compose-check-up.log; fail "docker compose up"; echo; echo "compose check: FAIL"; exit 1
fi
pass "docker compose up -d --scale consumer=$CONSUMERS"
check "postgres is healthy" test "$(docker inspect -f '{{.State.Health.Status}}' "$(ids postgres)")" = healthy
check "$CONSUMERS consumer containers" test "$(ids consumer | wc -l)" -eq $CONSUMERS

say "waiting until every consumer has completed two jobs"
check "every consumer completes jobs" wait_for 90 "two jobs per consumer" completed_per_consumer 2
queued_before_stop=$(sql "SELECT count(*) FROM jobs")
echo "  jobs in the queue (queued or in progress) before the stop: $queued_before_stop"

# --- docker compose stop -------------------------------------------------------------------------------
say "docker compose stop"
started=$SECONDS
compose stop >/dev/null 2>&1
stop_seconds=$((SECONDS - started))
grace=$(compose config --format json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["services"]["consumer"].get("stop_grace_period", "10s"))')
echo "  took ${stop_seconds}s (consumer stop_grace_period: $grace)"

for id in $(ids pusher) $(ids consumer); do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
  check "$(name_of "$id") exits 0 (exit code $code)" test "$code" = 0
done
pg=$(ids postgres); pg_code=$(docker inspect -f '{{.State.ExitCode}}' "$pg")
if [[ $pg_code == 0 ]]; then
  pass "postgres exits 0"
elif [[ $pg_code == 143 ]] && logs_of "$pg" | grep -q 'database system is shut down' \
    && docker inspect -f '{{.Config.Env}}' "$pg" | grep -q STANDIN_ENTRYPOINT; then
  # The stand-in's entrypoint switches user with runuser, which stays the parent and reports SIGTERM;
  # the official image's gosu execs, so postgres itself is PID 1 and exits 0.
  pass "postgres shut down cleanly (exit 143 is the stand-in's runuser, not postgres)"
else
  fail "postgres exits 0 (exit code $pg_code)"
fi

mid_job=0 abandoned=0
all_completed=$(mktemp); trap 'rm -f "$all_completed"; cleanup' EXIT
for id in $(ids consumer); do
  log=$(logs_of "$id")
  grep -oE 'Completed job [0-9]+' <<<"$log" | awk '{print $3}' >>"$all_completed"
  if grep -q 'Stop requested: finishing job' <<<"$log"; then
    mid_job=$((mid_job + 1))
  fi
  echo "    $(name_of "$id"), its last lines:"
  tail -n 3 <<<"$log" | sed 's/^/      /'
  # Every job a consumer claimed, it recorded: the last "Processing job N" has its "Completed job N".
  last=$(grep -oE 'Processing job [0-9]+' <<<"$log" | tail -n 1 | awk '{print $3}')
  grep -q "Completed job $last in" <<<"$log" || abandoned=$((abandoned + 1))
  grep -q 'Stopped$' <<<"$log" || abandoned=$((abandoned + 1))
done
check "every consumer finished the job in hand before exiting" test $abandoned -eq 0
check "the stop caught consumers mid-job ($mid_job of $CONSUMERS), so it tested something" test $mid_job -ge 1

traceback=$(compose logs --no-color 2>&1 | grep -c Traceback)
check "no traceback in any log" test "$traceback" -eq 0

# --- what the database holds ----------------------------------------------------------------------------
say "the database against the logs"
compose start postgres >/dev/null 2>&1
wait_for 60 "postgres healthy again" \
  sh -c "test \"\$(docker inspect -f '{{.State.Health.Status}}' $pg)\" = healthy" || true
done_ids=$(sql "SELECT id FROM done_jobs ORDER BY id")
queued_ids=$(sql "SELECT id FROM jobs ORDER BY id")
pushed_ids=$(logs_of "$(ids pusher)" | grep -oE 'Pushed job [0-9]+' | awk '{print $3}' | sort -n)
completed_ids=$(sort -n "$all_completed")
echo "  pushed $(wc -w <<<"$pushed_ids"), done $(wc -w <<<"$done_ids"), still queued $(wc -w <<<"$queued_ids")"
for id in $(ids consumer); do
  echo "    $(name_of "$id"): $(logs_of "$id" | grep -c 'Completed job') jobs"
done
check "no job completed twice" test -z "$(uniq -d <<<"$completed_ids")"
check "done_jobs holds exactly the jobs the consumers logged as completed" test "$done_ids" = "$completed_ids"
check "every pushed job is either done or still queued, not both" \
  test "$pushed_ids" = "$(sort -n <<<"$done_ids"$'\n'"$queued_ids" | sed '/^$/d')"

# --- down -v, then up again ------------------------------------------------------------------------------
say "docker compose down -v, then up again"
compose down -v >/dev/null 2>&1
check "down -v removed the data volume" \
  test -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
compose up -d "${build[@]}" --scale consumer=$CONSUMERS >/tmp/compose-check-up.log 2>&1 \
  || { cat /tmp/compose-check-up.log; fail "docker compose up (second time)"; }
check "init.sql ran again on the empty volume" \
  sh -c "docker logs $(ids postgres) 2>&1 | grep -q 'running /docker-entrypoint-initdb.d/init.sql'"
check "jobs flow again" wait_for 60 "a completed job" completed_per_consumer 1
check "the new queue starts at job 1" sh -c "docker logs $(ids pusher) 2>&1 | grep -q '^Pushed job 1:'"
compose stop >/dev/null 2>&1
codes=$(for id in $(ids pusher) $(ids consumer); do docker inspect -f '{{.State.ExitCode}}' "$id"; done | sort -u)
check "every loop exits 0 again" test "$codes" = 0
check "no traceback in any log" test "$(compose logs --no-color 2>&1 | grep -c Traceback)" -eq 0

echo
if ((failures == 0)); then echo "compose check: PASS ($checks checks)"
else echo "compose check: FAIL ($failures of $checks checks failed)"; exit 1; fi
