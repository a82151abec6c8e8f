"""The rules by which podrun.py, an emulation of the kubelet, turns a pod spec into `docker run` flags, each
against cases worked out by hand from the Kubernetes source or documentation named. No Docker engine needed:
only the translation is checked here; tests/docker/test_docker_pods.py runs the result.
"""

import os

import podrun  # tests/docker/, beside this file
import pytest


def pod(container=None, pod_security=None, volumes=None, **spec):
    container = {"name": "app", "image": "example:1", **(container or {})}
    template = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [container], "securityContext": pod_security or {}, "volumes": volumes or [], **spec},
    }
    return podrun.Pod(
        {"kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"}, "spec": {"template": template}}, 0
    ), container


def flags(p, container, tmp_path, objects=None):
    args, _, env = podrun.docker_run_args(p, container, objects or podrun.Objects([]), tmp_path, "net", {})
    return args, env


def pairs(args, flag):
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


# Kubernetes' resource units ("Resource units in Kubernetes"): binary suffixes are powers of 1024, decimal
# ones of 1000, and m is a thousandth.
@pytest.mark.parametrize(
    "text, value",
    [
        ("128Mi", 134217728),
        ("1Gi", 1073741824),
        ("200m", 0.2),
        ("1", 1),
        ("64Mi", 67108864),
        ("1Mi", 1048576),
        ("2k", 2000),
    ],
)
def test_quantity(text, value):
    assert podrun.quantity(text) == pytest.approx(value)


def test_a_quantity_it_cannot_read_is_not_emulated():
    with pytest.raises(podrun.NotEmulated):
        podrun.quantity("1e3")


# Kubernetes' dependent environment variables: $(VAR) expands, $$ escapes it, an unknown name stays as is.
@pytest.mark.parametrize(
    "text, expanded", [("$(A)-$(B)", "1-2"), ("$$(A)", "$(A)"), ("$(C)", "$(C)"), ("x$(A)$(A)", "x11")]
)
def test_expand(text, expanded):
    assert podrun.expand(text, {"A": "1", "B": "2"}) == expanded


def test_the_hardened_security_context(tmp_path):
    p, c = pod(
        {
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
        },
        {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "runAsGroup": 999,
            "fsGroup": 999,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    )
    args, _ = flags(p, c, tmp_path)
    assert pairs(args, "--user") == ["999:999"]
    # fsGroup is a supplementary group of every container of the pod
    assert pairs(args, "--group-add") == ["999"]
    assert "--read-only" in args
    assert pairs(args, "--cap-drop") == ["ALL"]
    assert pairs(args, "--security-opt") == ["no-new-privileges=true"]  # RuntimeDefault: the engine's default


def test_no_seccomp_profile_means_unconfined(tmp_path):
    # The kubelet runs a container Unconfined unless the pod asks for a profile (or --seccomp-default is set).
    p, c = pod(pod_security={"runAsUser": 1000})
    args, _ = flags(p, c, tmp_path)
    assert "seccomp=unconfined" in pairs(args, "--security-opt")


def test_run_as_non_root_refuses_uid_0(tmp_path):
    p, c = pod(pod_security={"runAsNonRoot": True, "runAsUser": 0})
    with pytest.raises(RuntimeError, match="runAsNonRoot"):
        flags(p, c, tmp_path)


def test_an_empty_dir_with_fs_group_is_a_group_owned_setgid_tmpfs(tmp_path):
    # pkg/volume/emptydir makes the directory 0777; with fsGroup the kubelet gives it to that group and sets
    # setgid (pkg/volume/volume_linux.go SetVolumeOwnership). sizeLimit bounds it.
    p, c = pod(
        {"volumeMounts": [{"name": "run", "mountPath": "/var/run/postgresql"}]},
        {"runAsUser": 999, "fsGroup": 999},
        [{"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
    )
    args, _ = flags(p, c, tmp_path)
    assert pairs(args, "--tmpfs") == ["/var/run/postgresql:rw,exec,uid=0,gid=999,mode=2777,size=1048576"]


def test_an_empty_dir_without_fs_group_is_root_owned_and_world_writable(tmp_path):
    p, c = pod(
        {"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}, {"runAsUser": 1000}, [{"name": "tmp", "emptyDir": {}}]
    )
    args, _ = flags(p, c, tmp_path)
    assert pairs(args, "--tmpfs") == ["/tmp:rw,exec,uid=0,gid=0,mode=777"]


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another group needs root")
def test_a_claim_with_fs_group_is_handed_out_group_owned_setgid_and_group_writable(tmp_path):
    # SetVolumeOwnership: group fsGroup, rw for the group added, setgid on directories: 0755 -> 2775. (Only
    # volume types that support ownership management get this; see the comment on fsGroup in
    # k8s/base/postgres.yaml.)
    p, c = pod(
        {"volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]},
        {"runAsUser": 999, "fsGroup": 999},
        [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
    )
    args, _ = flags(p, c, tmp_path)
    host = tmp_path / "web-0-data"
    assert pairs(args, "-v") == [
        f"{host}:/var/lib/postgresql",
        f"{tmp_path}/web-0-serviceaccount:/var/run/secrets/kubernetes.io/serviceaccount:ro",
    ]
    st = host.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 999, 0o2775)


def test_a_sub_path_is_not_emulated(tmp_path):
    p, c = pod(
        {"volumeMounts": [{"name": "tmp", "mountPath": "/x", "subPath": "y"}]},
        {"runAsUser": 1},
        [{"name": "tmp", "emptyDir": {}}],
    )
    with pytest.raises(podrun.NotEmulated):
        flags(p, c, tmp_path)


def test_limits_and_requests(tmp_path):
    # --memory with no swap (the kubelet runs without swap); cpu limit as a quota; requests.cpu as shares,
    # pkg/kubelet/cm MilliCPUToShares: milliCPU * 1024 / 1000, at least 2: 10m -> 10, 500m -> 512, 1m -> 2.
    p, c = pod(
        {"resources": {"limits": {"cpu": "200m", "memory": "128Mi"}, "requests": {"cpu": "10m"}}}, {"runAsUser": 1}
    )
    args, _ = flags(p, c, tmp_path)
    assert pairs(args, "--memory") == ["134217728"] and pairs(args, "--memory-swap") == ["134217728"]
    assert pairs(args, "--cpus") == ["0.2"]
    assert pairs(args, "--cpu-shares") == ["10"]
    p, c = pod({"resources": {"requests": {"cpu": "500m"}}}, {"runAsUser": 1})
    assert pairs(flags(p, c, tmp_path)[0], "--cpu-shares") == ["512"]
    p, c = pod({"resources": {"requests": {"cpu": "1m"}}}, {"runAsUser": 1})
    assert pairs(flags(p, c, tmp_path)[0], "--cpu-shares") == ["2"]


# "Define a Command and Arguments for a Container": command replaces the image's ENTRYPOINT and drops its CMD;
# args alone replace only CMD.
@pytest.mark.parametrize(
    "container, tail",
    [
        ({}, ["example:1"]),
        ({"args": ["-c", "x=1"]}, ["example:1", "-c", "x=1"]),
        ({"command": ["sh", "-c"], "args": ["echo"]}, ["--entrypoint", "sh", "example:1", "-c", "echo"]),
        ({"command": ["run"]}, ["--entrypoint", "run", "example:1"]),
    ],
)
def test_command_and_args(tmp_path, container, tail):
    p, c = pod(container, {"runAsUser": 1}, automountServiceAccountToken=False)
    args, _ = flags(p, c, tmp_path)
    assert args[-len(tail) :] == tail


def test_env_from_a_secret_key_and_dependent_values(tmp_path):
    secret = {"kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}, "data": {"url": "cG9zdGdyZXM="}}
    p, c = pod(
        {
            "env": [
                {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "url"}}},
                {"name": "BOTH", "value": "$(URL)/db"},
            ]
        },
        {"runAsUser": 1},
    )
    _, env = flags(p, c, tmp_path, podrun.Objects([secret]))
    assert env["URL"] == "postgres" and env["BOTH"] == "postgres/db"


def test_the_service_account_token_is_mounted_unless_the_pod_opts_out(tmp_path):
    p, c = pod(pod_security={"runAsUser": 1})
    assert any(
        v.endswith("/var/run/secrets/kubernetes.io/serviceaccount:ro") for v in pairs(flags(p, c, tmp_path)[0], "-v")
    )
    p, c = pod(pod_security={"runAsUser": 1}, automountServiceAccountToken=False)
    assert pairs(flags(p, c, tmp_path)[0], "-v") == []
