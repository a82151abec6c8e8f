"""The rules by which podrun.py, an emulation of the kubelet, turns a pod spec into `docker run` flags, each
against cases worked out by hand from the Kubernetes source or documentation named. No Docker engine and no
root needed: only the translation is checked here, and the owner, group and mode decided for each path of a
volume (a Handover), not their application; tests/docker/test_docker_pods.py runs the result.
"""

import os

import podrun  # tests/docker/, beside this file
import pytest
from podrun import Handover


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
    args, _, env, _ = prepare(p, container, tmp_path, objects)
    return args, env


def prepare(p, container, tmp_path, objects=None):
    """args, printable, env, handovers: the volumes' files made in tmp_path, nothing handed over."""
    return podrun.docker_run_args(p, container, objects or podrun.Objects([]), tmp_path, "net", {})


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


def test_a_claim_with_fs_group_is_handed_out_group_owned_setgid_and_group_writable(tmp_path):
    # SetVolumeOwnership: group fsGroup, rw for the group added, setgid on directories: 0755 -> 2775. (Only
    # volume types that support ownership management get this; see the comment on fsGroup in
    # k8s/base/postgres.yaml.)
    p, c = pod(
        {"volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}]},
        {"runAsUser": 999, "fsGroup": 999},
        [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
        automountServiceAccountToken=False,
    )
    args, _, _, handovers = prepare(p, c, tmp_path)
    host = tmp_path / "web-0-data"
    assert pairs(args, "-v") == [f"{host}:/var/lib/postgresql"]
    assert host.is_dir() and not any(host.iterdir())
    assert handovers == [Handover(host, 0, 999, 0o2775)]


def test_a_claim_without_fs_group_is_handed_out_as_root_made_it(tmp_path):
    p, c = pod(
        {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"runAsUser": 999},
        [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
        automountServiceAccountToken=False,
    )
    assert prepare(p, c, tmp_path)[3] == [Handover(tmp_path / "web-0-data", 0, 0, 0o755)]


def test_a_claim_is_handed_out_once_not_again_for_the_next_container(tmp_path):
    # A fresh volume is fresh once: the pod's second container must find it as the first left it.
    p, c = pod(
        {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"runAsUser": 999, "fsGroup": 999},
        [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
        automountServiceAccountToken=False,
    )
    assert len(prepare(p, c, tmp_path)[3]) == 1
    assert prepare(p, c, tmp_path)[3] == []


def test_config_map_and_secret_files_are_handed_to_root_and_fs_group_with_their_mode(tmp_path):
    # The kubelet's files of a configMap or secret volume: each key (or each listed item) as a file, with
    # defaultMode or the item's own mode, group fsGroup; the volume mounted read-only.
    objects = podrun.Objects(
        [
            {"kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}, "data": {"a.sql": "A", "b": "B"}},
            {"kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}, "data": {"key": "c2VjcmV0"}},
        ]
    )
    p, c = pod(
        {"volumeMounts": [{"name": "init", "mountPath": "/init"}, {"name": "tls", "mountPath": "/tls"}]},
        {"runAsUser": 999, "fsGroup": 999},
        [
            {"name": "init", "configMap": {"name": "cm"}},
            {"name": "tls", "secret": {"secretName": "s", "items": [{"key": "key", "path": "x/k.pem", "mode": 0o400}]}},
        ],
        automountServiceAccountToken=False,
    )
    args, _, _, handovers = prepare(p, c, tmp_path, objects)
    init, tls = tmp_path / "web-0-init", tmp_path / "web-0-tls"
    assert pairs(args, "-v") == [f"{init}:/init:ro", f"{tls}:/tls:ro"]
    assert (init / "a.sql").read_text() == "A" and (tls / "x" / "k.pem").read_bytes() == b"secret"
    assert handovers == [
        Handover(init, 0, 0, 0o755),
        Handover(init / "a.sql", 0, 999, 0o644),
        Handover(init / "b", 0, 999, 0o644),
        Handover(tls, 0, 0, 0o755),
        Handover(tls / "x" / "k.pem", 0, 999, 0o400),
    ]


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
    p, c = pod(pod_security={"runAsUser": 1, "fsGroup": 2})
    args, _, _, handovers = prepare(p, c, tmp_path)
    token = tmp_path / "web-0-serviceaccount"
    assert pairs(args, "-v") == [f"{token}:/var/run/secrets/kubernetes.io/serviceaccount:ro"]
    assert handovers == [Handover(token, 0, 0, 0o755)] + [
        Handover(token / name, 0, 2, 0o644) for name in ("token", "namespace", "ca.crt")
    ]
    p, c = pod(pod_security={"runAsUser": 1}, automountServiceAccountToken=False)
    assert pairs(flags(p, c, tmp_path)[0], "-v") == []


# Applying the Handovers, with the engine and os.chown replaced by recorders: neither root nor Docker needed.


@pytest.fixture
def recorded(monkeypatch):
    """The docker commands podrun runs, and the chowns it makes, recorded instead of done."""
    calls = {"docker": [], "chown": []}
    monkeypatch.setattr(podrun, "docker", lambda *args, **kwargs: calls["docker"].append(list(args)))
    monkeypatch.setattr(os, "chown", lambda *args: calls["chown"].append(args))
    return calls


def handed(tmp_path):
    (tmp_path / "claim").mkdir()
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a b").write_text("x")
    return [
        Handover(tmp_path / "claim", 0, 999, 0o2775),
        Handover(tmp_path / "files", 0, 0, 0o755),
        Handover(tmp_path / "files" / "a b", 0, 999, 0o440),
    ]


def test_as_root_the_handovers_are_chown_then_chmod_on_the_host(tmp_path, monkeypatch, recorded):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    handovers = handed(tmp_path)
    podrun.hand_over(handovers, tmp_path, "example:1")
    assert recorded["docker"] == []
    assert recorded["chown"] == [(h.path, h.uid, h.gid) for h in handovers]
    assert [h.path.stat().st_mode & 0o7777 for h in handovers] == [0o2775, 0o755, 0o440]


def test_as_an_ordinary_user_the_handovers_go_through_one_root_container(tmp_path, monkeypatch, recorded):
    # Only root may chown; the engine's daemon may, so a container of the pod's own image does it as root.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    podrun.hand_over(handed(tmp_path), tmp_path, "example:1")
    assert recorded["chown"] == []
    [args] = recorded["docker"]
    container = ["--user", "0:0", "--network", "none", "-v", f"{tmp_path}:/w", "--entrypoint", "sh", "example:1", "-c"]
    assert args[:-1] == ["run", "--rm", "--label", podrun.LABEL, *container]
    # chown before chmod, the modes in five digits (GNU chmod keeps a directory's setgid bit for "755")
    assert args[-1] == (
        "chown 0:999 /w/claim && chmod 02775 /w/claim && chown 0:0 /w/files && chmod 00755 /w/files"
        " && chown 0:999 '/w/files/a b' && chmod 00440 '/w/files/a b'"
    )


def test_nothing_to_hand_over_runs_no_container(tmp_path, monkeypatch, recorded):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    podrun.hand_over([], tmp_path, "example:1")
    assert recorded["docker"] == []


def test_as_an_ordinary_user_the_work_directory_is_emptied_by_a_root_container(tmp_path, monkeypatch, recorded):
    # What root owns there (the handed-over files, what a pod made in its claim) the user may not delete.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    workdir = tmp_path / "work"
    (workdir / "claim").mkdir(parents=True)
    podrun.remove(workdir, "example:1")
    assert recorded["docker"] == [podrun.as_root("example:1", workdir, "rm -rf /w/*")]
    assert not workdir.exists()


def test_as_root_the_work_directory_is_removed_without_a_container(tmp_path, monkeypatch, recorded):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    workdir = tmp_path / "work"
    (workdir / "claim").mkdir(parents=True)
    podrun.remove(workdir, "example:1")
    assert recorded["docker"] == [] and not workdir.exists()
