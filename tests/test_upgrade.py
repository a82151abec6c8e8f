"""A database that 1.0.0 created (tests/data/init-1.0.0.sql, its db/init.sql as it was) gets this version by
db/init.sql applied again, then db/passwords.sql, as docs/operations.md says: the jobs it holds are kept and
done by the new consumers, as their own roles, and new ids are 64 bits wide."""

import psycopg2
import pytest
from support import ROOT, localpg, role, wait_until

OLD_SCHEMA = (ROOT / "tests" / "data" / "init-1.0.0.sql").read_text()
SCHEMA = (ROOT / "db" / "init.sql").read_text()


@pytest.fixture
def old_db(server):
    """A fresh database with 1.0.0's schema and data in it: 3 jobs done, 5 queued."""
    url = server.new_database(schema=False)
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(OLD_SCHEMA)
        cur.execute("INSERT INTO jobs (payload) SELECT 'old ' || n FROM generate_series(1, 8) AS n")
        cur.execute(
            "WITH done AS (DELETE FROM jobs WHERE id <= 3 RETURNING id) INSERT INTO done_jobs SELECT id FROM done"
        )
    conn.close()
    return url


def query(url, sql, params=None):
    return localpg.rows(url, sql, params)


def test_init_sql_upgrades_a_database_1_0_0_made_keeping_its_jobs(old_db, spawn):
    assert query(
        old_db, "SELECT data_type FROM information_schema.columns WHERE table_name = 'jobs' AND column_name = 'id'"
    ) == [("integer",)]
    conn = psycopg2.connect(old_db)
    with conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
    conn.close()
    localpg.set_passwords(old_db)
    for table in ("jobs", "done_jobs"):
        assert query(
            old_db,
            f"SELECT data_type FROM information_schema.columns WHERE table_name = '{table}' AND column_name = 'id'",
        ) == [("bigint",)]
    assert query(old_db, "SELECT data_type FROM information_schema.sequences WHERE sequence_name = 'jobs_id_seq'") == [
        ("bigint",)
    ]
    assert query(old_db, "SELECT count(*) FROM jobs") == [(5,)]

    pusher = spawn(
        "pusher", DATABASE_URL=role(old_db, "pusher"), PUSH_COUNT="2", PUSH_INTERVAL_MIN="0", PUSH_INTERVAL_MAX="0"
    )
    assert pusher.wait(30) == 0, pusher.output
    worker = spawn("consumer", DATABASE_URL=role(old_db, "consumer"), PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0.05")
    wait_until(lambda: query(old_db, "SELECT count(*) FROM jobs") == [(0,)], 30, "the old and the new jobs done")
    assert worker.stop() == 0
    assert [i for (i,) in query(old_db, "SELECT id FROM done_jobs ORDER BY id")] == list(range(1, 11))
    assert "Database error" not in worker.output + pusher.output


def test_an_upgrade_stops_at_a_queued_payload_no_consumer_could_hold(old_db):
    conn = psycopg2.connect(old_db)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO jobs (payload) VALUES (repeat('x', 2 * 1024 * 1024))")
    with pytest.raises(psycopg2.errors.CheckViolation, match="payload_at_most_1_mib"):
        with conn, conn.cursor() as cur:
            cur.execute(SCHEMA)
    conn.close()
