"""Every command the README and the chapters show, taken from their code blocks: each `kubectl` line parses and
names what exists, each `docker compose` line parses and names services of the Compose file, each `make` line
names a target of the Makefile, and the chapters each README link names exist, as do the files and anchors
they point to.

There is no cluster here. kubectl runs against a small API server of the test's own that answers discovery
(which resources exist, so that kubectl can check a command) and refuses everything else with 503: a usage
error (an unknown flag, several resource types with --watch, a file that does not exist, a resource type that
does not exist) fails the test; the server's refusal, or a download that cannot be made, does not. Compose
runs the same way against an engine that is not there, which it reaches only once the line has parsed.
"""

import http.server
import json
import re
import shlex
import subprocess
import threading

import pytest
import yaml
from support import COMPOSE, KUBECTL, ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "k8s").rglob("README.md"))]


def code_blocks(path):
    """The fenced code blocks of a Markdown file that hold commands (not outputs, YAML or SQL)."""
    blocks = re.findall(r"^```([a-z]*)\n(.*?)^```", path.read_text(), re.M | re.S)
    return [body for lang, body in blocks if lang in ("", "sh", "bash", "shell")]


def commands(program):
    """(document, line) for every line of a command block that runs `program`, continuation lines joined."""
    found = []
    for path in DOCUMENTS:
        for block in code_blocks(path):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"\s*(?:\||&&|;)\s*", line.strip()):
                    if part.startswith(f"{program} "):
                        found.append((path.relative_to(ROOT), part))
    return found


# --- kubectl -------------------------------------------------------------------------------------------------

# What the discovery server says exists: the kinds the docs and the manifests use, as Kubernetes names them.
RESOURCES = {
    "api/v1": [
        ("pods", "Pod", True, ["po"]),
        ("services", "Service", True, ["svc"]),
        ("namespaces", "Namespace", False, ["ns"]),
        ("secrets", "Secret", True, []),
        ("configmaps", "ConfigMap", True, ["cm"]),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"]),
        ("events", "Event", True, ["ev"]),
        ("endpoints", "Endpoints", True, ["ep"]),
    ],
    "apis/apps/v1": [
        ("deployments", "Deployment", True, ["deploy"]),
        ("statefulsets", "StatefulSet", True, ["sts"]),
        ("replicasets", "ReplicaSet", True, ["rs"]),
    ],
    "apis/autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"])],
    "apis/batch/v1": [("jobs", "Job", True, [])],
    "apis/networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True, ["netpol"])],
    "apis/storage.k8s.io/v1": [("storageclasses", "StorageClass", False, ["sc"])],
    "apis/apiregistration.k8s.io/v1": [("apiservices", "APIService", False, [])],
    "apis/keda.sh/v1alpha1": [
        ("scaledobjects", "ScaledObject", True, ["so"]),
        ("triggerauthentications", "TriggerAuthentication", True, ["ta"]),
    ],
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


class Discovery(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0].strip("/")
        if path == "api":
            self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        elif path == "apis":
            groups = [p.split("/")[1:] for p in RESOURCES if p.startswith("apis/")]
            self.reply(
                200,
                {
                    "kind": "APIGroupList",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                            "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                        }
                        for g, v in groups
                    ],
                },
            )
        elif path in RESOURCES:
            group_version = path.removeprefix("api/").removeprefix("apis/")
            self.reply(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": group_version,
                    "resources": [
                        {
                            "name": name,
                            "singularName": kind.lower(),
                            "namespaced": namespaced,
                            "kind": kind,
                            "verbs": VERBS,
                            "shortNames": short,
                        }
                        for name, kind, namespaced, short in RESOURCES[path]
                    ],
                },
            )
        else:
            self.refuse()

    def refuse(self, *args):
        self.reply(
            503,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "ServiceUnavailable",
                "message": "this test's API server only answers discovery",
                "code": 503,
            },
        )

    do_POST = do_PUT = do_PATCH = do_DELETE = refuse  # noqa: N815

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "http://127.0.0.1:{server.server_port}"}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
users: [{{name: test, user: {{token: none}}}}]
""")
    yield path
    server.shutdown()


# What kubectl says when the command itself is wrong, as opposed to when the server or the network refuses.
USAGE_ERRORS = re.compile(
    r"unknown (shorthand )?flag|unknown command|you may only specify a single resource type|does not exist"
    r"|doesn't have a resource type|invalid argument|required flag|must specify|accepts \d|unexpected args"
    r"|error: flag needs an argument|error parsing|Error: unknown",
    re.I,
)


def run_kubectl(line, kubeconfig, timeout=30):
    words = shlex.split(line)
    if "<" in words:  # kubectl exec ... < file: the file must exist, then kubectl reads it as stdin
        i = words.index("<")
        stdin, words = (ROOT / words[i + 1]).open(), words[:i]
    else:
        stdin = subprocess.DEVNULL
    return subprocess.run(
        [str(KUBECTL), *words[1:]],
        cwd=ROOT,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)},
    )


@pytest.mark.parametrize("where, line", commands("kubectl"), ids=lambda x: str(x)[:70])
def test_every_kubectl_line_of_the_docs_parses_and_names_what_exists(where, line, kubeconfig):
    result = run_kubectl(line, kubeconfig)
    assert not USAGE_ERRORS.search(result.stderr), f"{where}: `{line}`:\n{result.stderr}"


@pytest.mark.parametrize(
    "line",
    [
        "kubectl get hpa,pods -n job-processing --watch",  # the README's old step 4
        "kubectl get pods --nosuchflag",
        "kubectl create -f k8s/no-such-file.yaml",
        "kubectl get scaledobjekt -n job-processing",
    ],
)
def test_the_check_catches_the_mistakes_it_is_for(line, kubeconfig):
    assert USAGE_ERRORS.search(run_kubectl(line, kubeconfig).stderr)


def test_the_check_lets_a_refusal_by_the_server_through(kubeconfig):
    result = run_kubectl("kubectl get hpa -n job-processing", kubeconfig)
    assert result.returncode != 0 and "ServiceUnavailable" in result.stderr + result.stdout
    assert not USAGE_ERRORS.search(result.stderr)


def test_the_docs_show_kubectl_lines_at_all():
    assert len(commands("kubectl")) >= 10


# --- docker compose ------------------------------------------------------------------------------------------

# Compose checks its arguments and the file (flags, service names) before it talks to the engine, so with no
# engine at the other end a right line gets as far as "Cannot connect", and a wrong one stops before it.
NO_ENGINE = "Cannot connect to the Docker daemon"


def run_compose_line(line, tmp_path):
    words = shlex.split(line)
    stdin = subprocess.DEVNULL
    if "<" in words:  # docker compose exec -T ... < file: the file must exist
        i = words.index("<")
        stdin, words = (ROOT / words[i + 1]).open(), words[:i]
    return subprocess.run(
        [str(COMPOSE), "--dry-run", *words[2:]],
        cwd=ROOT,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
            "DOCKER_CONFIG": str(tmp_path),
            "HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
    )


@pytest.mark.parametrize("where, line", commands("docker compose"), ids=lambda x: str(x)[:70])
def test_every_compose_line_of_the_docs_parses_and_names_services_that_exist(where, line, tmp_path):
    result = run_compose_line(line, tmp_path)
    assert NO_ENGINE in result.stdout + result.stderr, f"{where}: `{line}`:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "line",
    [
        "docker compose up --scale consumers=3",
        "docker compose stop --nosuchflag",
        "docker compose run --rm pushr",
        "docker compose bogus",
    ],
)
def test_the_compose_check_catches_the_mistakes_it_is_for(line, tmp_path):
    result = run_compose_line(line, tmp_path)
    assert NO_ENGINE not in result.stdout + result.stderr


def test_the_compose_check_catches_a_file_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_compose_line("docker compose exec -T postgres true < db/no-such-file.sql", tmp_path)


def test_the_docs_show_compose_lines_at_all():
    assert len(commands("docker compose")) >= 6


# --- make ----------------------------------------------------------------------------------------------------

TARGETS = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("where, line", commands("make"), ids=lambda x: str(x)[:70])
def test_every_make_line_of_the_docs_names_a_target_of_the_makefile(where, line):
    words = shlex.split(line)[1:]
    targets = [w for w in words if "=" not in w and not w.startswith("-")]
    assert targets, f"{where}: `{line}` names no target (make's default would run)"
    for target in targets:
        assert target in TARGETS, f"{where}: `{line}`: the Makefile has no target {target}"


# --- links ---------------------------------------------------------------------------------------------------


def anchors(path):
    """GitHub's anchors for a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_and_a_heading_that_exist(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{path.relative_to(ROOT)} links to #{anchor}, not a heading of {file}"


def test_the_readme_links_every_chapter():
    readme = (ROOT / "README.md").read_text()
    for chapter in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{chapter.name}" in readme, f"the README does not link docs/{chapter.name}"


def test_the_readmes_apply_output_names_every_object_kustomize_renders():
    readme = (ROOT / "README.md").read_text()
    output = re.search(r"```\nkubectl apply -k \.\n```\n\n```\n(.*?)```", readme, re.S)
    assert output, "the README shows no output for `kubectl apply -k .`"
    shown = [line.removesuffix(" created") for line in output.group(1).splitlines() if line.endswith(" created")]
    rendered = yaml.safe_load_all(
        subprocess.run([str(KUBECTL), "kustomize", "."], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    expected = []
    for doc in rendered:
        group = doc["apiVersion"].rpartition("/")[0]
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            name = name.rsplit("-", 1)[0] + "-..."  # kustomize's hash of db/'s files, which changes with them
        expected.append(f"{doc['kind'].lower()}{'.' + group if group else ''}/{name}")
    assert sorted(shown) == sorted(expected)
