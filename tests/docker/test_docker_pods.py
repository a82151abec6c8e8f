"""Every pod of `kubectl kustomize .`, run on a Docker engine the way the kubelet would run it (podrun.py):
each container lives with its securityContext, passes its probes, moves jobs, and stops within its grace
period with exit code 0. Needs a Docker engine: `make test-docker`.
"""

import os
import re

import podrun  # tests/docker/, beside this file
import pytest

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def outcome(docker_engine):
    return podrun.run_pods(".", standin=docker_engine.standin, say=lambda line: print(f"  {line}"))


def containers(outcome, predicate=lambda c: True):
    chosen = [c for c in outcome.containers if predicate(c)]
    assert chosen, "no container matches"
    return chosen


def test_every_workload_runs_at_least_one_pod(outcome):
    kinds = {(p.kind, p.workload) for p in outcome.pods}
    assert kinds == {("StatefulSet", "postgres"), ("Deployment", "job-pusher"), ("Deployment", "job-consumer")}


def test_init_containers_complete(outcome):
    assert all(code == 0 for _, code in outcome.init_containers), outcome.init_containers


def test_every_container_is_running_after_its_probes(outcome):
    failed = {c.name: c.running[1] for c in containers(outcome) if not c.running[0]}
    assert not failed, failed


def test_every_container_runs_as_its_security_context_says(outcome):
    # uid, gid, fsGroup among the groups, no effective capability, no_new_privs, seccomp filter mode
    failed = {c.name: c.identity[1] for c in containers(outcome) if not (c.identity and c.identity[0])}
    assert not failed, failed


def test_read_only_root_file_systems_cannot_be_written(outcome):
    chosen = containers(outcome, lambda c: c.spec.get("securityContext", {}).get("readOnlyRootFilesystem"))
    failed = {c.name: c.read_only for c in chosen if not (c.read_only and c.read_only[0])}
    assert not failed, failed


@pytest.mark.parametrize("kind", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_pass_as_the_container_starts(outcome, kind):
    chosen = containers(outcome, lambda c: c.spec.get(kind))
    failed = {c.name: c.probes[kind][1] for c in chosen if not c.probes[kind][0]}
    assert not failed, failed


def test_the_volume_claim_is_handed_over_to_fs_group_and_postgres_makes_its_data_there(outcome):
    assert outcome.claims, "the manifests have no volume claim"
    for pod, claim, uid, gid, mode, made in outcome.claims:
        spec = next(p for p in outcome.pods if p.name == pod).spec
        fs_group = spec["securityContext"]["fsGroup"]
        # podrun hands the claim out as the kubelet does with fsGroup: root:fsGroup, setgid, group-writable
        assert (uid, gid, mode) == (0, fs_group, 0o2775), (pod, claim, uid, gid, oct(mode))
        # From major 18 the image keeps PGDATA in /var/lib/postgresql/<major>/docker (the mount's parent)
        assert any(re.fullmatch(r"\d+/docker", path) for path in made), (pod, claim, made)


def test_jobs_flow_through_the_hardened_pods(outcome):
    before, after, queued = outcome.flow
    assert before is not None and after is not None, "cannot query the database container"
    assert int(after) >= int(before) + podrun.FLOW_JOBS, (
        f"done_jobs {before} -> {after} in {podrun.FLOW_TIMEOUT}s, jobs queued or in progress {queued}"
    )


@pytest.mark.parametrize("kind", ["readinessProbe", "livenessProbe"])
def test_probes_still_pass_under_load(outcome, kind):
    chosen = containers(outcome, lambda c: c.spec.get(kind))
    failed = {c.name: c.probes_under_load[kind][1] for c in chosen if not c.probes_under_load[kind][0]}
    assert not failed, failed


def test_every_container_stops_with_exit_0_within_its_grace_period(outcome):
    failed = {
        c.name: c.stopped
        for c in containers(outcome)
        if c.stopped[0] != 0 or c.stopped[1] or c.stopped[2] > c.pod.grace + 1
    }
    assert not failed, f"(exit code, OOM-killed, seconds) {failed}"


def test_no_traceback_in_any_log(outcome):
    assert not [c.name for c in containers(outcome) if "Traceback" in c.log]


def test_each_consumer_finished_the_job_in_hand(outcome):
    consumers = containers(outcome, lambda c: c.pod.workload == "job-consumer")
    for c in consumers:
        claimed = re.findall(r"Processing job (\d+)", c.log)
        assert claimed, f"{c.name} never claimed a job:\n{c.log[-1500:]}"
        assert f"Completed job {claimed[-1]} in" in c.log, f"{c.name} left job {claimed[-1]}:\n{c.log[-1500:]}"


def test_the_stop_caught_each_consumer_mid_job(outcome):
    # Otherwise the test above proved nothing about a stop in the middle of a job. The pusher (a job every 1 to
    # 3 s) outpaces a consumer (2 to 10 s a job), so the queue is never empty when the stop comes.
    consumers = containers(outcome, lambda c: c.pod.workload == "job-consumer")
    idle = [c.name for c in consumers if "Stop requested: finishing job" not in c.log]
    assert not idle, f"no job in hand when the stop came: {idle}"


@pytest.mark.skipif(os.environ.get("KEEP") == "1", reason="KEEP=1 leaves the volumes for a look")
def test_the_volumes_are_removed_after_the_run(outcome):
    # As an ordinary user, what root owns there (the handed-over files, the data postgres made in its claim)
    # can only go through a container: shutil.rmtree alone would leave it, silently.
    assert not outcome.workdir.exists(), f"{outcome.workdir} is left"
