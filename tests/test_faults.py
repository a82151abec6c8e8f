"""Faults a cluster produces: consumers killed mid-job, a server restart, a connection cut during a
commit, a consumer that hangs with a job, hostile payloads. Whatever happens, every pushed job ends up
in done_jobs exactly once and the queue drains."""

import random
import re
import signal
import time

import localpg
import psycopg2
import pytest
from support import CommitCutter, containers, env, load_loop, objects, one, role, wait_until


def pushed_ids(pusher):
    return sorted(int(i) for i in re.findall(r"Pushed job (\d+):", pusher.output))


def drain(db, spawn, db_url, expected, consumers=3):
    """Let fresh consumers empty the queue, then check each expected job is recorded exactly once, or set
    aside after its attempts."""
    workers = [
        spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0.01")
        for _ in range(consumers)
    ]
    for worker in workers:
        worker.wait_for("Connected to the database")
    wait_until(lambda: db("SELECT count(*) FROM jobs") == [(0,)], 60, "the queue to drain")
    assert all(w.stop() == 0 for w in workers)
    done = [i for (i,) in db("SELECT id FROM done_jobs ORDER BY id")]
    # A job whose consumers were killed MAX_ATTEMPTS times holding it is set aside, payload and all.
    aside = [i for (i,) in db("SELECT id FROM failed_jobs ORDER BY id")]
    assert sorted(done + aside) == sorted(expected), "a job was lost, recorded twice, or never pushed"
    for reason, attempts in db("SELECT reason, attempts FROM failed_jobs"):
        assert attempts == 3 and "stopped without a word" in reason, (reason, attempts)


def test_consumers_killed_mid_job_again_and_again_lose_nothing(db_url, db, spawn):
    total = 150
    pusher = spawn(
        "pusher",
        DATABASE_URL=role(db_url, "pusher"),
        PUSH_COUNT=str(total),
        PUSH_INTERVAL_MIN="0",
        PUSH_INTERVAL_MAX="0.02",
    )
    work = {"PROCESS_TIME_MIN": "0.05", "PROCESS_TIME_MAX": "0.4"}
    alive = [spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **work) for _ in range(4)]
    killed = []
    rng = random.Random(7)
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.6))
        victim = alive.pop(rng.randrange(len(alive)))
        victim.signal(signal.SIGKILL)
        victim.wait()
        killed.append(victim)
        alive.append(spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **work))
    assert pusher.wait(60) == 0, pusher.output
    for consumer in alive:
        consumer.signal(signal.SIGKILL)
        consumer.wait()
        killed.append(consumer)

    # Jobs whose consumer died holding them: started, never completed by that consumer.
    abandoned = set()
    for consumer in killed:
        started = set(re.findall(r"Processing job (\d+):", consumer.output))
        abandoned |= started - set(re.findall(r"Completed job (\d+) in", consumer.output))
    assert len(abandoned) >= 5, "the kills should have hit consumers in the middle of a job"

    queues = "SELECT id FROM jobs UNION ALL SELECT id FROM done_jobs UNION ALL SELECT id FROM failed_jobs"
    assert pushed_ids(pusher) == sorted(i for (i,) in db(queues))
    assert len(pushed_ids(pusher)) == total
    drain(db, spawn, db_url, pushed_ids(pusher))
    # What a dead consumer held went back to the queue and was done again: at-least-once execution.
    done_by = {i for (i,) in db("SELECT id FROM done_jobs UNION ALL SELECT id FROM failed_jobs")}
    assert {int(i) for i in abandoned} <= done_by


@pytest.mark.parametrize("loop", ["pusher", "consumer"])
def test_loops_ride_out_a_server_restart_under_load(loop, local_server, db_url, db, spawn):
    total = 80
    pusher = spawn(
        "pusher",
        DATABASE_URL=role(db_url, "pusher"),
        PUSH_COUNT=str(total),
        PUSH_INTERVAL_MIN="0",
        PUSH_INTERVAL_MAX="0.05",
    )
    consumers = [
        spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0.1")
        for _ in range(3)
    ]
    pusher.wait_for("Pushed job", count=20)
    local_server.stop()  # fast shutdown: open transactions roll back, every client is disconnected
    time.sleep(3)
    local_server.start()
    assert pusher.wait(60) == 0, pusher.output
    watched = pusher if loop == "pusher" else consumers[0]
    assert re.search(r"Lost the database connection|Cannot connect to the database", watched.output)
    assert "Traceback" not in watched.output
    wait_until(lambda: db("SELECT count(*) FROM jobs") == [(0,)], 60, "the consumers to drain the queue")
    for consumer in consumers:
        assert consumer.stop() == 0
        assert "Traceback" not in consumer.output
    assert len(pushed_ids(pusher)) == total
    assert [i for (i,) in db("SELECT id FROM done_jobs ORDER BY id")] == pushed_ids(pusher)


@pytest.mark.parametrize(
    "when,says",
    [
        ("before", r"Job (\d+) did not land; pushing a new one"),
        ("after", r"Pushed job (\d+): [A-Za-z]{20} \(its commit was cut off, but it landed\)"),
    ],
)
def test_a_commit_cut_off_is_looked_up_so_a_push_is_neither_lost_nor_doubled(when, says, server, db_url, db, spawn):
    port = int(psycopg2.extensions.parse_dsn(db_url)["port"])
    cutter = CommitCutter(port, when)
    try:
        pusher = spawn(
            "pusher",
            DATABASE_URL=cutter.url(role(db_url, "pusher")),
            PUSH_COUNT="5",
            PUSH_INTERVAL_MIN="0",
            PUSH_INTERVAL_MAX="0",
        )
        assert pusher.wait(30) == 0, pusher.output
    finally:
        cutter.close()
    assert cutter.cut_done.is_set()
    assert re.search(says, pusher.output), pusher.output
    assert "Lost the database connection" in pusher.output
    rows = [i for (i,) in db("SELECT id FROM jobs ORDER BY id")]
    assert len(rows) == 5, "PUSH_COUNT jobs, each exactly once"
    assert rows == pushed_ids(pusher)


def test_a_hung_consumer_loses_its_job_to_the_server_timeout_and_cannot_record_it(server, db_url, db, spawn):
    # The real timeout (db/server-settings.conf) is a minute; this database gets 2 s to keep the test short.
    db(
        f"ALTER DATABASE {psycopg2.extensions.parse_dsn(db_url)['dbname']} "
        "SET idle_in_transaction_session_timeout = '2s'"
    )
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('stuck') RETURNING id")
    hung = spawn(
        "consumer",
        DATABASE_URL=role(db_url, "consumer"),
        HOSTNAME="hung",
        PROCESS_TIME_MIN="0.5",
        PROCESS_TIME_MAX="0.5",
    )
    hung.wait_for(f"Processing job {job_id}")
    hung.signal(signal.SIGSTOP)  # alive, connected, silent: like a consumer on a frozen node
    try:
        # A job that returns by a rollback is announced by no notification: the helper's poll finds it.
        helper = spawn(
            "consumer",
            DATABASE_URL=role(db_url, "consumer"),
            HOSTNAME="helper",
            PROCESS_TIME_MIN="0",
            PROCESS_TIME_MAX="0",
            POLL_INTERVAL="1",
        )
        helper.wait_for(f"[helper] Completed job {job_id}", timeout=20)
    finally:
        hung.signal(signal.SIGCONT)
    hung.wait_for("[hung] Lost the database connection")
    assert hung.stop() == 0 and helper.stop() == 0
    assert f"[hung] Completed job {job_id}" not in hung.output
    assert db("SELECT id FROM done_jobs") == [(job_id,)]


def test_the_running_server_has_every_setting_from_the_one_list(local_server):
    conn = psycopg2.connect(local_server.admin_url)
    try:
        with conn.cursor() as cur:
            for name, value in localpg.server_settings():
                cur.execute("SELECT current_setting(%s), context FROM pg_settings WHERE name = %s", (name, name))
                running, context = cur.fetchone()
                if context in ("user", "superuser"):
                    cur.execute(
                        "SELECT set_config(%s, %s, true)", (name, value)
                    )  # the file's value, as the server spells it
                    value = cur.fetchone()[0]
                # A setting a session cannot change (autovacuum_naptime) is compared as the file spells it.
                assert running == value, name
    finally:
        conn.close()


def test_the_server_timeout_leaves_room_for_the_consumers_longest_job(local_server):
    conn = psycopg2.connect(local_server.admin_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT setting::float / 1000 FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'")
        timeout = cur.fetchone()[0]
    conn.close()
    longest_job = consumer_defaults()["PROCESS_TIME_MAX"]
    assert timeout >= 3 * longest_job, "a consumer at work is idle in transaction: the timeout would cut its job off"


def consumer_defaults():
    """The consumer's default timings, read from the program itself."""
    _, low, high, _, _, _ = load_loop("consumer").read_config({"DATABASE_URL": "dbname=x", "HOSTNAME": "x"})
    return {"PROCESS_TIME_MIN": low, "PROCESS_TIME_MAX": high}


HOSTILE = [
    "'); DROP TABLE jobs; --",
    "Robert'); DELETE FROM done_jobs; --",
    "quotes ' \" ` and \\ backslash",
    "%s %(x)s {} %d",
    "line one\nline two",
    "ünïcødé ✓ 😀",
    "x" * 100_000,
    " ",
]


def test_hostile_payloads_are_data_never_sql(db_url, db, spawn):
    ids = [db("INSERT INTO jobs (payload) VALUES (%s) RETURNING id", (p,))[0][0] for p in HOSTILE]
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0")
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(len(HOSTILE),)], 30, "every payload done")
    assert consumer.stop() == 0
    assert "Traceback" not in consumer.output
    assert [i for (i,) in db("SELECT id FROM done_jobs ORDER BY id")] == ids
    assert db("SELECT count(*) FROM jobs") == [(0,)]
    assert "Robert'); DELETE FROM done_jobs; --" in consumer.output


def test_sigterm_mid_job_ends_within_the_grace_period_the_deployment_gives(db_url, db, spawn):

    template = one(objects("base"), "Deployment", "job-consumer")["spec"]["template"]
    grace = template["spec"]["terminationGracePeriodSeconds"]
    longest = env(containers(template)[0])["PROCESS_TIME_MAX"]["value"]
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('scaled away') RETURNING id")
    # The worst case: the longest job the Deployment allows, SIGTERM the moment it starts.
    consumer = spawn(
        "consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN=longest, PROCESS_TIME_MAX=longest
    )
    consumer.wait_for(f"Processing job {job_id}")
    started = time.monotonic()
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(grace + 5) == 0
    assert time.monotonic() - started < grace, "Kubernetes would have sent SIGKILL"
    assert db("SELECT id FROM done_jobs") == [(job_id,)]


def test_only_a_job_longer_than_the_server_allows_is_announced_at_start(db_url, db, spawn):
    alter = (
        f"ALTER DATABASE {psycopg2.extensions.parse_dsn(db_url)['dbname']} SET idle_in_transaction_session_timeout = "
    )
    db(alter + "'2s'")
    # A job as long as the timeout is already too long: the server ends the session as the job ends.
    warns = (
        "PROCESS_TIME_MAX (2s) is not below the server's idle_in_transaction_session_timeout (2s): "
        "a longer job will be cut off and done again"
    )
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="1", PROCESS_TIME_MAX="2")
    consumer.wait_for(warns)
    assert consumer.stop() == 0
    fits = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="1", PROCESS_TIME_MAX="1.5")
    fits.wait_for("Connected to the database")
    assert fits.stop() == 0
    assert "cut off" not in fits.output
    # 0 is PostgreSQL's default: no timeout at all, so no job is too long.
    db(alter + "0")
    unbounded = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="1", PROCESS_TIME_MAX="5")
    unbounded.wait_for("Connected to the database")
    assert unbounded.stop() == 0
    assert "cut off" not in unbounded.output
