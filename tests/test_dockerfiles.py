"""The two Dockerfiles: hadolint and checkov pass them, and they stay alike, small and as documented."""

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtual environment's bin/, where `make venv` puts hadolint
HADOLINT = BIN / "hadolint"
CHECKOV = BIN.parent / "checkov" / "bin" / "checkov"  # its own environment: its pins clash with pytest's
SERVICES = ("pusher", "consumer")

# Deliberately poor, scanned alongside ours: each tool must find fault with it, or its silence on ours would
# prove nothing.
WEAK_DOCKERFILE = """\
FROM python:latest
RUN apt-get update && apt-get install -y curl
ADD . /app
CMD python /app/run.py
"""


def dockerfile(service):
    return (ROOT / service / "Dockerfile").read_text()


def instructions(service):
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile(service))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def hadolint(*args, stdin=None):
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes():
    result = hadolint(*(str(ROOT / s / "Dockerfile") for s in SERVICES))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_finds_fault_with_a_weak_dockerfile():
    result = hadolint("-", stdin=WEAK_DOCKERFILE)
    assert result.returncode != 0 and "DL3007" in result.stdout  # FROM ...:latest


def test_checkov_dockerfile_reports_no_failed_check(tmp_path):
    weak = tmp_path / "Dockerfile"
    weak.write_text(WEAK_DOCKERFILE)
    files = [ROOT / s / "Dockerfile" for s in SERVICES] + [weak]
    args = [a for f in files for a in ("-f", str(f))]
    result = subprocess.run(
        [str(CHECKOV), *args, "--framework", "dockerfile", "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0
    results = report["results"]

    def service(check):
        path = Path(check["file_abs_path"] if "file_abs_path" in check else check["file_path"])
        return "control" if path.resolve() == weak.resolve() else path.parent.name

    assert any(service(c) == "control" for c in results["failed_checks"]), "checkov passed the weak Dockerfile"
    assert [
        f"{c['check_id']} {service(c)}: {c['check_name']}" for c in results["failed_checks"] if service(c) != "control"
    ] == []
    assert {service(c) for c in results["passed_checks"]} >= set(SERVICES)
    # A check skipped in a Dockerfile (`# checkov:skip=ID: reason`) must say why.
    for check in results.get("skipped_checks", []):
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) > 20, f"{check['check_id']} {service(check)}: {reason!r}"


def test_dockerfiles_are_alike():
    # The images differ only in the name of their folder's script.
    assert dockerfile("pusher").replace("pusher", "consumer") == dockerfile("consumer")
    ignores = [(ROOT / s / ".dockerignore").read_text() for s in SERVICES]
    assert ignores[0].replace("pusher", "consumer") == ignores[1]


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_shape(service):
    steps = instructions(service)
    keywords = [k for k, _ in steps]
    script = f"{service}.py"

    (base,) = [a for k, a in steps if k == "FROM"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim", base), f"pin the full Python version: {base}"
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env

    # Requirements installed before the code is copied, so a code change keeps the installed layer.
    assert [a for k, a in steps if k == "COPY"] == ["requirements.txt .", f"{script} ."]
    at = {step: n for n, step in enumerate(steps)}
    copy_requirements, copy_code = at["COPY", "requirements.txt ."], at["COPY", f"{script} ."]
    (install,) = [n for n, (k, a) in enumerate(steps) if k == "RUN" and "pip install" in a]
    assert copy_requirements < install < copy_code

    # A fixed numeric non-root user, set before the code is copied in (owned by root, so read-only to it).
    (user,) = [a for k, a in steps if k == "USER"]
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), user
    assert at["USER", user] < copy_code
    uid, gid = user.split(":")
    assert f"--uid {uid}" in dockerfile(service) and f"--gid {gid}" in dockerfile(service)

    (cmd,) = [a for k, a in steps if k == "CMD"]
    assert json.loads(cmd) == ["python", script]  # exec form: the loop is PID 1 and gets SIGTERM itself
    assert "ADD" not in keywords


@pytest.mark.parametrize("service", SERVICES)
def test_dockerignore_sends_only_what_is_copied(service):
    """Docker's rule: the last matching line of .dockerignore decides; `!` lets a file back in."""
    patterns = [
        line.strip()
        for line in (ROOT / service / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    candidates = [
        "Dockerfile",
        ".dockerignore",
        "requirements.txt",
        f"{service}.py",
        "__pycache__",
        f"__pycache__/{service}.cpython-311.pyc",
        ".env",
        "notes.md",
        "test_x.py",
    ]

    def sent(name):
        keep = True
        for pattern in patterns:
            if fnmatch.fnmatch(name, pattern.lstrip("!")):
                keep = pattern.startswith("!")
        return keep

    assert [name for name in candidates if sent(name)] == ["requirements.txt", f"{service}.py"]


def test_the_images_install_the_psycopg2_the_tests_run():
    from importlib.metadata import version

    for service in SERVICES:
        lines = [line.split("#")[0].strip() for line in (ROOT / service / "requirements.txt").read_text().splitlines()]
        # The loops' one runtime dependency, pinned to the version every test here ran against.
        assert [line for line in lines if line] == [f"psycopg2-binary=={version('psycopg2-binary')}"], service
