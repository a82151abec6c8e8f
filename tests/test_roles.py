"""Each program connects as a role of its own with only the rights its statements need (db/init.sql): the
pusher, the consumers, KEDA and `make watch`. The same roles in the cluster's Secret, in Compose and in
`make run`. Each can do its job against the real server, and none can do what a compromised program would
want to: erase the record, run a program on the server, read its files, change its settings or the schema.
And the connections they all open fit in the server's max_connections, with the administrator's slots to
spare, for every count of consumers the ScaledObject allows."""

import math
import re

import keda_emulation
import psycopg2
import pytest
import watch
import yaml
from psycopg2.extensions import parse_dsn
from support import (
    COMPOSE_FILE,
    FORBIDDEN,
    FORBIDDEN_TO_ALL,
    ROOT,
    containers,
    load_loop,
    localpg,
    objects,
    one,
    role,
    secret_data,
)

PROGRAMS = list(localpg.ROLES)


def run(url, sql, params=None):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.mark.parametrize(
    "program, what, sql",
    [(p, what, sql) for p in PROGRAMS for what, sql in {**FORBIDDEN_TO_ALL, **FORBIDDEN[p]}.items()],
    ids=[f"{p}-{what}" for p in PROGRAMS for what in {**FORBIDDEN_TO_ALL, **FORBIDDEN[p]}],
)
def test_no_program_can_do_what_its_job_does_not_need(program, what, sql, db, db_url):
    db("INSERT INTO jobs (payload) VALUES ('queued'); INSERT INTO done_jobs (id) VALUES (1000)")
    db("INSERT INTO failed_jobs (id, payload, created_at, attempts, reason) VALUES (1001, 'aside', now(), 3, 'test')")
    with pytest.raises(psycopg2.Error) as refused:
        run(role(db_url, program), sql)
    # Refused for want of the right, not for a mistake in the statement.
    assert isinstance(refused.value, psycopg2.errors.InsufficientPrivilege), f"{program} could {what}: {refused.value}"


def test_no_program_is_a_superuser_or_owns_a_table_or_holds_another_role(db):
    roles = [name for name, _ in localpg.ROLES.values()]
    rows = db(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s)",
        (roles,),
    )
    assert sorted(rows) == sorted((name, False, False, False, False) for name in roles)
    assert db("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner = ANY(%s)", (roles,)) == []
    memberships = db(
        "SELECT r.rolname, g.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
        "JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = ANY(%s)",
        (roles,),
    )
    assert memberships == [("job_watch", "pg_read_all_stats")], "only make watch reads the others' sessions"


def test_the_pusher_can_push_and_look_up_a_job_wherever_it_is(db_url):
    pusher = load_loop("pusher")
    url = role(db_url, "pusher")
    [(job_id,)] = run(url, pusher.INSERT_SQL, ("a job",))
    assert run(url, pusher.LANDED_SQL, {"id": job_id}) == [(True,)]
    assert run(url, pusher.LANDED_SQL, {"id": job_id + 1}) == [(False,)]


def test_the_consumer_can_claim_note_record_set_aside_and_listen(db, db_url):
    consumer = load_loop("consumer")
    consumer.stop = consumer.StopRequest()
    claims, attempts = consumer.connect(role(db_url, "consumer"), "c", 10)
    try:
        db("INSERT INTO jobs (payload, created_at) VALUES ('done', now() - interval '1 minute'), ('aside', now())")
        assert consumer.work_one(claims, attempts, 0, 0, 3, "c")  # claims, notes, records 'done'
        # As if 'aside' had been tried three times already: the next claim sets it aside.
        db("INSERT INTO job_attempts (job_id, consumer, attempts) SELECT id, 'c', 3 FROM jobs")
        assert consumer.work_one(claims, attempts, 0, 0, 3, "c")
        assert not consumer.work_one(claims, attempts, 0, 0, 3, "c")
    finally:
        claims.close()
        attempts.close()
    assert db("SELECT count(*) FROM done_jobs") == [(1,)]
    assert db("SELECT payload FROM failed_jobs") == [("aside",)]


def test_keda_can_count_the_jobs_with_the_query_the_scaled_object_gives_it(db, db_url):
    db("INSERT INTO jobs (payload) SELECT 'x' FROM generate_series(1, 7)")
    so, _ = keda_emulation.scaled_object(".")
    assert run(role(db_url, "keda"), so.query) == [(7,)]


def test_make_watch_can_count_and_see_what_the_other_roles_are_doing(db, db_url, spawn):
    db("INSERT INTO jobs (payload) VALUES ('in hand'), ('queued')")
    worker = spawn(
        "consumer",
        DATABASE_URL=role(db_url, "consumer"),
        HOSTNAME="consumer-1",
        PROCESS_TIME_MIN="30",
        PROCESS_TIME_MAX="30",
    )
    worker.wait_for("Processing job")
    # The claim in progress is the consumer's, another role's session: without pg_read_all_stats it is hidden.
    assert run(role(db_url, "watch"), watch.SAMPLE_SQL) == [(2, 0, 0, 1, 1)]


def connection_strings():
    """{environment: {program: connection string}}: the cluster's Secret, Compose's file, `make run`'s."""
    data = secret_data(objects("base"))
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["postgres"]["environment"]
    return {
        "k8s/base/credentials.env": {p: data[f"{p.upper()}_DATABASE_URL"] for p in PROGRAMS},
        "docker-compose.yml": {p: compose[f"{p.upper()}_DATABASE_URL"] for p in PROGRAMS},
        "make run": {p: localpg.uri("postgresql://127.0.0.1/jobqueue", p) for p in PROGRAMS},
    }


def test_each_program_has_the_same_role_in_the_cluster_in_compose_and_in_make_run(db):
    made = {name for (name,) in db("SELECT rolname FROM pg_roles WHERE rolname LIKE 'job\\_%'")}
    assert made == {name for name, _ in localpg.ROLES.values()}, "db/init.sql makes other roles"
    for where, urls in connection_strings().items():
        assert {p: parse_dsn(u)["user"] for p, u in urls.items()} == {p: r for p, (r, _) in localpg.ROLES.items()}, (
            where
        )


SLOTS_SQL = """
    SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
           (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
"""


def test_the_administrators_reserved_slots_stay_free_when_the_programs_take_every_other(local_server, db_url):
    # As 120 consumers against max_connections = 100 would: the superuser's slots are not theirs to take.
    admin = psycopg2.connect(db_url)
    try:
        with admin.cursor() as cur:
            cur.execute(SLOTS_SQL)
            limit, reserved, open_now = cur.fetchone()
        taken = []
        try:
            with pytest.raises(psycopg2.OperationalError, match="reserved for roles with the SUPERUSER attribute"):
                for _ in range(limit):
                    taken.append(psycopg2.connect(role(db_url, "consumer")))
            assert len(taken) == limit - reserved - open_now
            late = psycopg2.connect(db_url)  # the administrator still gets in
            late.close()
        finally:
            for conn in taken:
                conn.close()
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------------------------
# The connection budget: every connection the system may open at once, against the server's max_connections
# less the administrator's reserved slots. A change of maxReplicaCount, of the Deployments' rollout, or of
# db/server-settings.conf that breaks it fails here; docs/security.md says what to raise together.

CONNECTIONS_PER_CONSUMER = 2  # its claims and its attempts (consumer/consumer.py connect())
# KEDA's operator keeps a pool for the ScaledObject's trigger (database/sql in postgresql_scaler.go) and may
# run the query for its poll and for the HPA's request at once.
KEDA_CONNECTIONS = 2
WATCH_CONNECTIONS = 1  # `make watch` through a port-forward
BURST_JOBS = 1  # a kubectl create -f k8s/burst-job.yaml at a time
# PostgreSQL's defaults, for what db/server-settings.conf leaves out.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_SUPERUSER_RESERVED = 3
DEFAULT_RESERVED = 0


def rollout_extra(deployment, replicas):
    """Pods a rolling update may add while the old ones finish: maxSurge new ones, and up to maxUnavailable
    old ones terminating, still connected while they finish their job (25 % each by default, rounded up and
    down as the Deployment controller does)."""
    update = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}

    def count(value, default, rounding):
        value = update.get(value, default)
        if isinstance(value, str) and value.endswith("%"):
            return rounding(replicas * int(value[:-1]) / 100)
        return int(value)

    return count("maxSurge", "25%", math.ceil) + count("maxUnavailable", "25%", math.floor)


def budget(docs, settings):
    so = keda_emulation.from_manifest(one(docs, "ScaledObject"))
    consumers = so.max_replica_count + rollout_extra(one(docs, "Deployment", "job-consumer"), so.max_replica_count)
    pusher = one(docs, "Deployment", "job-pusher")
    pushers = pusher["spec"].get("replicas", 1) + rollout_extra(pusher, pusher["spec"].get("replicas", 1))
    needed = CONNECTIONS_PER_CONSUMER * consumers + pushers + BURST_JOBS + KEDA_CONNECTIONS + WATCH_CONNECTIONS
    available = (
        int(settings.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        - int(settings.get("superuser_reserved_connections", DEFAULT_SUPERUSER_RESERVED))
        - int(settings.get("reserved_connections", DEFAULT_RESERVED))
    )
    return needed, available


@pytest.mark.parametrize("variant", ["base", "scale-to-zero"])
def test_every_connection_the_system_may_open_fits_beside_the_administrators_slots(variant):
    needed, available = budget(objects(variant), dict(localpg.server_settings()))
    assert needed <= available, f"{needed} connections at most, {available} for them: raise max_connections"


def test_the_budget_fails_when_max_replicas_grows_alone():
    docs = objects("base")
    one(docs, "ScaledObject")["spec"]["maxReplicaCount"] = 120
    needed, available = budget(docs, dict(localpg.server_settings()))
    assert needed > available
    settings = {**dict(localpg.server_settings()), "max_connections": "400"}
    assert budget(docs, settings)[0] <= budget(docs, settings)[1]


def test_the_server_sets_max_connections_itself_so_that_the_budget_reads_it():
    assert "max_connections" in dict(localpg.server_settings())
    postgres = containers(one(objects("base"), "StatefulSet", "postgres")["spec"]["template"])[0]
    assert any(re.fullmatch(r"max_connections=\d+", arg) for arg in postgres["args"]), "the StatefulSet's args"
    assert (ROOT / "db" / "server-settings.conf").read_text().count("max_connections") >= 1
