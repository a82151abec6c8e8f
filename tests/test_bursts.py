"""The tutorial's bursts and live view: `make burst`, `make watch`, and the same burst with Docker Compose.

`make burst` and `make watch` run against a real database; the Compose command is checked against
docker-compose.yml as `docker compose config` reads it (no engine needed), and the pusher's own configuration
check accepts what it sets. The cluster's burst, k8s/burst-job.yaml, is checked with the manifests.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from support import CONFIG_VARIABLES, ROOT, load_loop, role, run_compose

README = (ROOT / "README.md").read_text()


def clean_env(**extra):
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    return {**base, **extra}


def test_make_burst_pushes_that_many_jobs_with_the_pusher(db_url, db):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "burst.py"), "--jobs", "25"],
        env=clean_env(DATABASE_URL=role(db_url, "pusher")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stopped after pushing 25 jobs" in result.stdout
    assert db("SELECT count(*) FROM jobs") == [(25,)]


def test_make_burst_without_a_run_says_so_in_one_line(tmp_path, monkeypatch):
    import burst

    monkeypatch.setattr(burst, "RUNNING", tmp_path / "make-run.json")  # no run under way
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as stopped:
        burst.database_url("burst", "pusher")
    assert str(stopped.value) == (
        "make burst: no `make run` is running (start one in another terminal), and no DATABASE_URL was given"
    )


def test_a_stale_run_file_is_not_followed(tmp_path, monkeypatch):
    import burst

    stale = tmp_path / "make-run.json"
    stale.write_text('{"pid": 999999999, "urls": {"pusher": "postgresql://x@y/z"}}')  # no such process
    monkeypatch.setattr(burst, "RUNNING", stale)
    assert burst.running_url("pusher") is None


def test_make_watch_shows_queued_in_progress_and_done(db_url, spawn):
    consumer = spawn(
        "consumer",
        DATABASE_URL=role(db_url, "consumer"),
        HOSTNAME="consumer-1",
        PROCESS_TIME_MIN="8",
        PROCESS_TIME_MAX="8",
    )
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "burst.py"), "--jobs", "4"],
        env=clean_env(DATABASE_URL=role(db_url, "pusher")),
        capture_output=True,
        timeout=60,
        check=True,
    )
    consumer.wait_for("Processing job")
    watch = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "watch.py"), "--interval", "0.5"],
        env=clean_env(DATABASE_URL=role(db_url, "watch")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        header = watch.stdout.readline().split()
        if header[0] == "(no":  # no cluster here, so no HPA column: said in one line first
            header = watch.stdout.readline().split()
        assert header[:9] == ["time", "queued", "in", "progress", "done", "done/min", "set", "aside", "consumers"]
        fields = watch.stdout.readline().split()
        # One consumer holds one job: 3 queued, 1 in progress, none done yet, none set aside, one consumer (with
        # its two sessions).
        assert fields[1:4] == ["3", "1", "0"] and fields[5:7] == ["0", "1"], fields
    finally:
        watch.terminate()
        watch.wait(10)


def test_watch_reads_without_locking():
    """Its one statement: counts and pg_stat_activity, never FOR UPDATE, SKIP LOCKED or pg_advisory."""
    import watch

    assert not re.search(r"FOR (NO KEY )?UPDATE|FOR SHARE|SKIP LOCKED|advisory|LOCK ", watch.SAMPLE_SQL, re.I)


def compose_burst_command():
    (command,) = [
        line for line in README.splitlines() if line.startswith("docker compose run") and "PUSH_COUNT" in line
    ]
    return shlex.split(command)


def test_the_readmes_compose_burst_matches_docker_compose_yml():
    words = compose_burst_command()
    assert words[:4] == ["docker", "compose", "run", "--rm"]
    service = words[-1]
    settings = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-e")
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    environment = config["services"][service]["environment"]
    # Each variable the command sets is one the service passes to the pusher, and the pusher accepts the result.
    assert set(settings) <= set(environment)
    url, low, high, count = load_loop("pusher").read_config({**environment, **settings})
    assert (low, high, count) == (0, 0, 200)
    assert config["services"][service]["image"] == "job-pusher:1.1.0"


def test_the_readmes_cluster_burst_is_the_burst_job():
    assert "kubectl create -f k8s/burst-job.yaml" in README
    assert (ROOT / "k8s" / "burst-job.yaml").exists()
