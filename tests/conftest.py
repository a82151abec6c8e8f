"""Fixtures: a real PostgreSQL server, a fresh database per test, and the two loops as real processes.
The helpers they and the tests share are in support.py.

The server is the embedded one from tools/localpg.py, unless TEST_DATABASE_URL names another: then a
superuser's, since the tests create the project's roles (db/init.sql) and set their passwords
(db/passwords.sql), and roles belong to the whole server; tests that stop the server are skipped then.
The schema is built once into a template database and each test gets its own copy (CREATE DATABASE ...
TEMPLATE).

Tests marked `docker` (tests/docker/) need a Docker engine, through the `docker_engine` fixture: where none
answers they are skipped, all under one line of the summary; `make test-docker` runs them, on a stand-in
engine where there is no other.
"""

import itertools
import os
import shutil
import subprocess

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn
from support import ROOT, Loop, localpg

TEMPLATE = "jobqueue_test_template"


class Server:
    """The server under test: the embedded one, or the one TEST_DATABASE_URL names."""

    def __init__(self):
        self.external = os.environ.get("TEST_DATABASE_URL")
        self.local = None
        if self.external:
            self.admin_url = self.external
        else:
            self.local = localpg.LocalPostgres().init()
            self.admin_url = self.local.url(database="postgres")
        self._names = itertools.count()

    def url(self, database):
        return make_dsn(self.admin_url, dbname=database)

    def admin(self, sql):
        localpg.execute(self.admin_url, sql)

    def sessions(self, url):
        """How many client sessions the database that url names has, this query's own left out."""
        conn = psycopg2.connect(self.admin_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (parse_dsn(url)["dbname"],),
                )
                return cur.fetchone()[0]
        finally:
            conn.close()

    def create_template(self):
        self.admin(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        self.admin(f"CREATE DATABASE {TEMPLATE}")
        conn = psycopg2.connect(self.url(TEMPLATE))
        with conn, conn.cursor() as cur:
            cur.execute((ROOT / "db" / "init.sql").read_text())
        conn.close()
        localpg.set_passwords(self.url(TEMPLATE))

    def new_database(self, schema=True):
        name = f"jobqueue_test_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {TEMPLATE}" if schema else ""))
        return self.url(name)

    def stop(self):
        self.local.stop("fast")

    def start(self):
        self.local.start()

    def close(self):
        if self.local:
            self.local.close()


@pytest.fixture(scope="session")
def server():
    srv = Server()
    srv.create_template()
    yield srv
    srv.close()


@pytest.fixture
def local_server(server):
    """The embedded server, for tests that restart it or check the settings it was started with."""
    if server.local is None:
        pytest.skip("needs the embedded server (restarts it, or checks its settings), not TEST_DATABASE_URL")
    return server


@pytest.fixture
def db_url(server):
    """The administrator's connection string to a fresh database with db/init.sql applied; support.role()
    makes it a program's."""
    return server.new_database()


@pytest.fixture
def db(db_url):
    """Run one statement and get its rows, in a short connection of its own."""

    def query(sql, params=None):
        conn = psycopg2.connect(db_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    return query


@pytest.fixture
def spawn(tmp_path):
    """spawn("consumer", DATABASE_URL=..., PROCESS_TIME_MAX="0") starts a loop; all are killed at the end."""
    loops = []
    names = itertools.count()

    def start(which, **env):
        loop = Loop(f"{which}/{which}.py", env, tmp_path / f"{which}-{next(names)}.log")
        loops.append(loop)
        return loop

    yield start
    for loop in loops:
        loop.kill()


class DockerEngine:
    def __init__(self, version, standin):
        self.version = version
        # ../shared/tools/docker-standin: an engine of its own on stand-in base images, which builds the
        # project's images itself and cannot pull any.
        self.standin = standin


NO_ENGINE = "no Docker engine answers (docker info); `make test-docker` runs these tests, starting one if need be"


@pytest.fixture(scope="session")
def docker_engine():
    """The engine `docker` reaches (DOCKER_HOST), or a skip if none answers."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip(NO_ENGINE)
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        pytest.skip(NO_ENGINE)
    if result.returncode != 0:
        pytest.skip(NO_ENGINE)
    return DockerEngine(result.stdout.strip(), "docker-standin" in os.environ.get("DOCKER_HOST", ""))


@pytest.fixture(autouse=True)
def _docker_marked_tests_need_an_engine(request):
    if request.node.get_closest_marker("docker"):
        request.getfixturevalue("docker_engine")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """One line in the summary for every test skipped for want of an engine, instead of one per test."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(NO_ENGINE):
        report.longrepr = (__file__, docker_engine.__wrapped__.__code__.co_firstlineno, report.longrepr[2])
    return report
