"""Bad configuration stops a loop at once with one line naming the variable; a database that cannot be
reached, or refuses the password, is not bad configuration: the loop says why and keeps trying."""

import re
import signal
import time

import psycopg2
import pytest
from support import ROOT, load_loop, role

LOOPS = ["pusher", "consumer"]
# A port nothing listens on: a loop that accepted its configuration would retry here instead of exiting.
NOWHERE = "postgresql://jobuser:jobpass123@127.0.0.1:9/jobqueue"

MALFORMED_URLS = [
    "",
    "   ",
    "garbage",
    "mysql://u:p@h/db",
    "postgresql://u:p@h:5432/db?nosuchoption=1",
    "postgresql://u:p@h:abc/db",
    "host=h port=x",
]
BAD_SECONDS = ["", " ", "abc", "-1", "-0.5", "nan", "inf", "1,5", "10s"]
BAD_COUNTS = ["", "abc", "-1", "2.5", "1e3", "five"]


def bad_cases():
    for loop in LOOPS:
        yield loop, {}, "DATABASE_URL"
        for url in MALFORMED_URLS:
            yield loop, {"DATABASE_URL": url}, "DATABASE_URL"
    timing = {
        "pusher": ("PUSH_INTERVAL_MIN", "PUSH_INTERVAL_MAX"),
        "consumer": ("PROCESS_TIME_MIN", "PROCESS_TIME_MAX"),
    }
    for loop, names in timing.items():
        for name in names:
            for value in BAD_SECONDS:
                yield loop, {"DATABASE_URL": NOWHERE, name: value}, name
        low, high = names
        yield loop, {"DATABASE_URL": NOWHERE, low: "5", high: "2"}, low
        yield loop, {"DATABASE_URL": NOWHERE, high: "0.5"}, low  # the default MIN is above this MAX
    for value in BAD_COUNTS:
        yield "pusher", {"DATABASE_URL": NOWHERE, "PUSH_COUNT": value}, "PUSH_COUNT"
    for value in BAD_SECONDS + ["0"]:  # 0 would ask the server without a pause
        yield "consumer", {"DATABASE_URL": NOWHERE, "POLL_INTERVAL": value}, "POLL_INTERVAL"
    for value in BAD_COUNTS + ["0"]:  # 0 attempts would set every job aside untried
        yield "consumer", {"DATABASE_URL": NOWHERE, "MAX_ATTEMPTS": value}, "MAX_ATTEMPTS"


def case_name(env):
    shown = [f"{k}={v!r}" for k, v in env.items() if k != "DATABASE_URL" or v != NOWHERE]
    return "-".join(shown) or "unset"


@pytest.mark.parametrize(
    "loop,env,variable",
    list(bad_cases()),
    ids=[f"{loop}-{case_name(env)}" for loop, env, _ in bad_cases()],
)
def test_bad_configuration_exits_with_one_line_naming_the_variable(loop, env, variable, spawn):
    proc = spawn(loop, **env)
    assert proc.wait(10) == 2, proc.output
    lines = proc.output.splitlines()
    assert len(lines) == 1, proc.output
    assert lines[0].startswith(f"{loop}: ") and variable in lines[0]
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://jobuser:s3cret@h:5432/db?nosuchoption=1",
        "postgresql://jobuser:s3cret@h:x/db",
        "host=h password=s3cret port=x",
        "password=s3cret garbage",
    ],
)
def test_a_malformed_url_is_not_echoed_since_it_may_hold_a_password(loop, url, spawn):
    proc = spawn(loop, DATABASE_URL=url)
    assert proc.wait(10) == 2
    assert "DATABASE_URL" in proc.output and "s3cret" not in proc.output


# A password with no part that could appear by chance, and connection strings that mangle it the ways people
# do: a special character left unencoded in a URI, a space or a quote left open in key=value pairs. A part of
# the password can then land in the host, the port or the database name, which libpq's errors quote.
PASSWORD = "Zq7kXw2Vb9"
MANGLED = [
    f"postgresql://u:{PASSWORD[:4]}/{PASSWORD[4:]}@127.0.0.1:9/db",  # an unencoded / ends the host
    f"postgresql://u:1234/{PASSWORD}@127.0.0.1:9/db",  # ... after a password that starts like a port
    f"postgresql://u:{PASSWORD[:4]}@{PASSWORD[4:]}@127.0.0.1:9/db",  # an unencoded @ starts the host
    f"postgresql://u:{PASSWORD}%zz@127.0.0.1:9/db",  # a % that encodes nothing
    f"postgresql://u:{PASSWORD[:4]} {PASSWORD[4:]}@127.0.0.1:9/db",
    f"postgresql://u:{PASSWORD}@[::1/db",
    f"postgresql://u:{PASSWORD}?#:x@127.0.0.1:9/db",  # these libpq takes as part of the password
    f"host=127.0.0.1 port=9 password={PASSWORD[:4]} {PASSWORD[4:]}",
    f"host=127.0.0.1 port=9 password='{PASSWORD}",
    f"host=127.0.0.1 port={PASSWORD} password={PASSWORD}",
]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("url", MANGLED, ids=range(len(MANGLED)))
def test_no_part_of_a_password_appears_in_any_message_whatever_the_form_of_the_string(loop, url, spawn):
    proc = spawn(loop, DATABASE_URL=url)
    try:
        proc.wait(4)  # refused at start (exit 2), or still trying to connect: either way, it has spoken
    except AssertionError:
        assert proc.stop() == 0
    parts = {PASSWORD[i : i + 4] for i in range(len(PASSWORD) - 3)}
    shown = [part for part in parts if part in proc.output]
    assert not shown, f"{shown} of the password in:\n{proc.output}"
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("loop", LOOPS)
def test_good_values_at_the_edges_are_accepted(loop, db_url, db, spawn):
    env = {
        "pusher": {"PUSH_INTERVAL_MIN": "0", "PUSH_INTERVAL_MAX": "0", "PUSH_COUNT": " 3 "},
        "consumer": {"PROCESS_TIME_MIN": "0.5", "PROCESS_TIME_MAX": "0.5", "POLL_INTERVAL": "0.5"},
    }[loop]
    if loop == "consumer":
        db("INSERT INTO jobs (payload) VALUES ('x')")
    proc = spawn(loop, DATABASE_URL=role(db_url, loop), **env)
    if loop == "pusher":
        assert proc.wait(10) == 0, proc.output
        assert db("SELECT count(*) FROM jobs") == [(3,)]
    else:
        proc.wait_for("Completed job")
        assert proc.stop() == 0


def keyvalue_url(url, **changes):
    parts = psycopg2.extensions.parse_dsn(url)
    parts.update(changes)
    return psycopg2.extensions.make_dsn(**parts)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "problem,change,says",
    [
        ("server down", {"port": "9"}, "Connection refused"),
        ("wrong password", {"password": "wrong"}, 'password authentication failed for user "jobuser"'),
        ("no such database", {"dbname": "nosuchdb"}, 'database "nosuchdb" does not exist'),
    ],
)
def test_an_unreachable_database_is_retried_with_a_clear_line(loop, problem, change, says, db_url, spawn):
    proc = spawn(loop, DATABASE_URL=keyvalue_url(db_url, **change))
    proc.wait_for(says, count=2, timeout=15)  # at least twice: it keeps trying
    assert proc.stop(10) == 0
    assert "Traceback" not in proc.output
    for line in proc.output.splitlines()[:-1]:
        assert re.fullmatch(r"(\[\S+\] )?Cannot connect to the database \(.+\); retrying in 2s", line), line
    assert "wrong" not in proc.output, "the password must never be printed"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_database_without_the_tables_is_retried_until_they_exist(loop, server, spawn):
    url = server.new_database(schema=False)
    proc = spawn(
        loop,
        DATABASE_URL=url,
        PROCESS_TIME_MIN="0",
        PROCESS_TIME_MAX="0.1",
        PUSH_INTERVAL_MIN="0",
        PUSH_INTERVAL_MAX="0.1",
    )
    proc.wait_for('relation "jobs" does not exist: has db/init.sql been applied?', count=2, timeout=15)
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute((ROOT / "db" / "init.sql").read_text())
        if loop == "consumer":
            cur.execute("INSERT INTO jobs (payload) VALUES ('late')")
    conn.close()
    proc.wait_for("Completed job" if loop == "consumer" else "Pushed job", timeout=15)
    assert proc.stop() == 0
    assert "Traceback" not in proc.output
    # The failed statement is rolled back on the same connection: no aborted transaction, no reconnection.
    assert "Database error" not in proc.output and "Lost the database connection" not in proc.output


def test_the_schema_is_safe_to_apply_twice(db_url, db):
    db("INSERT INTO jobs (payload) VALUES ('kept')")
    db((ROOT / "db" / "init.sql").read_text())
    assert db("SELECT payload FROM jobs") == [("kept",)]


def test_the_schema_refuses_to_record_a_job_twice(db):
    db("INSERT INTO done_jobs (id) VALUES (7)")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        db("INSERT INTO done_jobs (id) VALUES (7)")


def test_the_queue_is_due_for_a_vacuum_after_a_thousand_dead_rows_whatever_its_length(db):
    [(options,)] = db("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")
    assert sorted(options) == ["autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=1000"]


def test_the_consumers_prepared_claim_is_served_by_the_created_at_index(db_url, db):
    # Prepared on an empty queue, as by a consumer that starts before any job, then used on a long one.
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(load_loop("consumer").PREPARE_SQL)
            cur.execute("EXPLAIN EXECUTE claim")
            db("INSERT INTO jobs (payload) SELECT 'p' || g FROM generate_series(1, 5000) g")
            db("ANALYZE jobs")
            cur.execute("EXPLAIN EXECUTE claim")
            plan = "\n".join(row[0] for row in cur.fetchall())
    finally:
        conn.close()
    assert "jobs_created_at_idx" in plan, plan


@pytest.mark.parametrize("loop", LOOPS)
def test_signals_are_handled_while_waiting_for_a_database(loop, spawn):
    proc = spawn(loop, DATABASE_URL=NOWHERE)
    proc.wait_for("Cannot connect")
    proc.signal(signal.SIGINT)
    assert proc.wait(5) == 0


@pytest.mark.parametrize(
    "loop,grants,says",
    [
        ("pusher", "GRANT SELECT ON jobs, done_jobs TO {role}", "permission denied for table jobs"),
        (
            "consumer",
            "GRANT SELECT, UPDATE, DELETE ON jobs TO {role}; GRANT SELECT ON done_jobs TO {role};"
            " GRANT ALL ON job_attempts, failed_jobs TO {role}",
            "permission denied for table done_jobs",
        ),
    ],
)
def test_a_role_without_the_rights_it_needs_gets_a_clear_line_and_loses_nothing(
    loop, grants, says, local_server, db_url, db, spawn
):
    role = f"limited_{loop}"
    db(f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'limited'; " + grants.format(role=role))
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('kept') RETURNING id")
    proc = spawn(
        loop,
        DATABASE_URL=keyvalue_url(db_url, user=role, password="limited"),
        PROCESS_TIME_MIN="0",
        PROCESS_TIME_MAX="0",
    )
    proc.wait_for(f"Database error ({says}); reconnecting in 2s")
    first = time.monotonic()
    proc.wait_for(f"Database error ({says}); reconnecting in 2s", count=2, timeout=15)
    assert time.monotonic() - first >= 2 - 0.5, "it reconnects at once: the server would be hammered"
    assert proc.stop() == 0
    assert "Traceback" not in proc.output
    assert db("SELECT id FROM jobs") == [(job_id,)], "the failed claim must roll back into the queue"
    assert db("SELECT count(*) FROM done_jobs") == [(0,)]
    # Not the job's fault: it costs the job none of its attempts, however often it fails.
    assert db("SELECT count(*) FROM failed_jobs") == [(0,)]
    assert db("SELECT coalesce(sum(attempts), 0) FROM job_attempts") == [(0,)]


def documented_defaults():
    """{variable: default} from the Configuration table of docs/operations.md, for the numeric defaults."""
    section = (ROOT / "docs" / "operations.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    defaults = {}
    for row in re.findall(r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)*) \| \w+ \| ([0-9., ]+) \|", section, re.M):
        names, values = re.findall(r"`([A-Z_]+)`", row[0]), [float(v) for v in row[1].split(",")]
        assert len(names) == len(values), row
        defaults.update(zip(names, values, strict=True))
    return defaults


def test_each_loops_defaults_are_the_ones_the_docs_document():
    # The article's timings (a job every 1 to 3 s, 2 to 10 s of work), which every number of the scaling
    # chapter is measured with, and the attempts a job gets before it is set aside.
    documented = documented_defaults()
    given = {"DATABASE_URL": "dbname=x", "HOSTNAME": "x"}
    _, low, high, count = load_loop("pusher").read_config(given)
    assert {"PUSH_INTERVAL_MIN": low, "PUSH_INTERVAL_MAX": high, "PUSH_COUNT": count} == {
        k: documented[k] for k in ("PUSH_INTERVAL_MIN", "PUSH_INTERVAL_MAX", "PUSH_COUNT")
    }
    _, low, high, poll, attempts, _ = load_loop("consumer").read_config(given)
    assert {"PROCESS_TIME_MIN": low, "PROCESS_TIME_MAX": high, "POLL_INTERVAL": poll, "MAX_ATTEMPTS": attempts} == {
        k: documented[k] for k in ("PROCESS_TIME_MIN", "PROCESS_TIME_MAX", "POLL_INTERVAL", "MAX_ATTEMPTS")
    }
