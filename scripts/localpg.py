"""A real PostgreSQL server on 127.0.0.1, from the binaries in the `pgserver` wheel: no Docker needed.

It is set up the way the official postgres image sets itself up: the superuser, its password and the
database are jobuser / jobpass123 / jobqueue, password authentication over TCP, and the server runs
with the settings in db/server-settings.conf, as in docker-compose.yml and k8s/postgres.yaml.
`make run`, `make test` and `make soak` start their server with this module.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import psycopg2

with warnings.catch_warnings():  # pgserver's import warns that XDG_RUNTIME_DIR is unset, which we don't use
    warnings.simplefilter("ignore")
    from pgserver import utils as pgserver_utils
    from pgserver._commands import POSTGRES_BIN_PATH

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD, DATABASE = "jobuser", "jobpass123", "jobqueue"
# PostgreSQL refuses to run as root; as root, the server runs as this account (created if missing).
SYSTEM_USER = "pgserver"


def server_settings(path=ROOT / "db" / "server-settings.conf"):
    """The name = value lines of a postgresql.conf-style file, in order."""
    settings = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = (part.strip() for part in line.split("=", 1))
            settings.append((name, value))
    return settings


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    def __init__(self, datadir=None, port=None):
        self._tmp = None if datadir else tempfile.mkdtemp(prefix="jobqueue-pg-")
        self.datadir = Path(datadir or self._tmp) / "pgdata"
        self.port = port or free_port()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = SYSTEM_USER
            pgserver_utils.ensure_user_exists(SYSTEM_USER)
            # The server must be able to reach its binaries and its data through every parent folder.
            pgserver_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
            pgserver_utils.ensure_prefix_permissions(self.datadir)

    def url(self, database=DATABASE, user=USER, password=PASSWORD):
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args, **kwargs):
        cmd = [str(POSTGRES_BIN_PATH / args[0]), *args[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)

    def init(self):
        """initdb, then create the database and apply db/init.sql, as the official image does."""
        if self.as_user:
            uid = pwd.getpwnam(self.as_user)
            os.chown(self.datadir, uid.pw_uid, uid.pw_gid)
        pwfile = self.datadir.parent / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        os.chmod(pwfile, 0o644)
        self._run("initdb", "-D", str(self.datadir), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--encoding=UTF8", "--no-instructions")
        pwfile.unlink()
        self.start()
        self.psql("postgres", "-c", f"CREATE DATABASE {DATABASE}")
        self.psql(DATABASE, "-f", str(ROOT / "db" / "init.sql"))
        return self

    def start(self):
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"]
        options += [f"-c {name}={value}" for name, value in server_settings()]
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir / "server.log"), "-w", "-t", "60",
                  "-o", " ".join(options), "start")

    def stop(self, mode="fast"):
        """fast: roll back open transactions and disconnect every client, as a restart does."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def scalar(self, sql):
        """The one value a query returns, from the jobqueue database."""
        conn = psycopg2.connect(self.url())
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    def psql(self, database, *args):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        return self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", USER, "-d", database, *args, env=env).stdout

    def close(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
