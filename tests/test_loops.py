"""The pusher and the consumer against a real server: what they do, and how they stop."""

import re
import signal
import time

import pytest
from support import role, wait_until

FAST = {"PROCESS_TIME_MIN": "0", "PROCESS_TIME_MAX": "0.01"}


def push(db, *payloads):
    return [db("INSERT INTO jobs (payload) VALUES (%s) RETURNING id", (p,))[0][0] for p in payloads]


def test_pusher_pushes_count_jobs_of_twenty_letters_and_exits(db_url, db, spawn):
    pusher = spawn(
        "pusher", DATABASE_URL=role(db_url, "pusher"), PUSH_COUNT="5", PUSH_INTERVAL_MIN="0", PUSH_INTERVAL_MAX="0"
    )
    assert pusher.wait() == 0, pusher.output
    rows = db("SELECT id, payload FROM jobs ORDER BY id")
    assert len(rows) == 5
    for job_id, payload in rows:
        assert re.fullmatch(r"[A-Za-z]{20}", payload)
        assert f"Pushed job {job_id}: {payload}" in pusher.output


def test_pusher_waits_between_jobs_and_stops_at_once_on_sigterm(db_url, db, spawn):
    pusher = spawn("pusher", DATABASE_URL=role(db_url, "pusher"), PUSH_INTERVAL_MIN="60", PUSH_INTERVAL_MAX="60")
    pusher.wait_for("Pushed job")
    started = time.monotonic()
    pusher.signal(signal.SIGTERM)
    assert pusher.wait(10) == 0
    assert time.monotonic() - started < 5, "a stop must not wait out the pause between two jobs"
    assert db("SELECT count(*) FROM jobs") == [(1,)]


def test_consumer_claims_records_and_logs_one_job(db_url, db, spawn):
    [job_id] = push(db, "hello")
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), HOSTNAME="pod-a", **FAST)
    consumer.wait_for(f"[pod-a] Completed job {job_id} in ")
    assert f"[pod-a] Processing job {job_id}: hello" in consumer.output
    assert consumer.stop() == 0
    assert db("SELECT id FROM done_jobs") == [(job_id,)]
    assert db("SELECT count(*) FROM jobs") == [(0,)]


def test_jobs_pushed_one_after_another_are_processed_in_that_order(db_url, db, spawn):
    # Ids, insertion order and created_at agree here; tests/test_queue.py takes them apart.
    ids = push(db, "first", "second", "third")
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    consumer.wait_for("Completed job", count=3)
    consumer.stop()
    processed = [int(i) for i in re.findall(r"Processing job (\d+):", consumer.output)]
    assert processed == ids


def test_a_job_in_progress_is_still_counted_by_the_scaler_query(db_url, db, spawn):
    [job_id] = push(db, "slow")
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="30", PROCESS_TIME_MAX="30")
    consumer.wait_for(f"Processing job {job_id}")
    # KEDA's query, from another session: the uncommitted DELETE still shows the row.
    assert db("SELECT COUNT(*) FROM jobs") == [(1,)]
    consumer.signal(signal.SIGKILL)
    consumer.wait()


def test_several_consumers_share_one_queue_and_no_job_is_done_twice(db_url, db, spawn):
    ids = push(db, *(f"job{i}" for i in range(300)))
    consumers = [
        spawn(
            "consumer",
            DATABASE_URL=role(db_url, "consumer"),
            HOSTNAME=f"c{i}",
            PROCESS_TIME_MIN="0",
            PROCESS_TIME_MAX="0.02",
        )
        for i in range(5)
    ]
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(300,)], 120, "300 jobs done")
    assert all(c.stop() == 0 for c in consumers)
    assert sorted(i for (i,) in db("SELECT id FROM done_jobs")) == ids
    assert db("SELECT count(*) FROM jobs") == [(0,)]
    processed = [int(i) for c in consumers for i in re.findall(r"Processing job (\d+):", c.output)]
    assert sorted(processed) == ids, "a job was worked on twice, or not at all"
    assert sum(1 for c in consumers if "Processing job" in c.output) >= 3, "the queue was not shared"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_job_lets_the_job_finish_and_be_recorded_then_exits_0(sig, db_url, db, spawn):
    [job_id] = push(db, "in hand")
    push(db, "next one")
    job_time = 3.0
    consumer = spawn(
        "consumer",
        DATABASE_URL=role(db_url, "consumer"),
        HOSTNAME="pod-b",
        PROCESS_TIME_MIN=str(job_time),
        PROCESS_TIME_MAX=str(job_time),
    )
    consumer.wait_for(f"Processing job {job_id}")
    seen = time.monotonic()  # the claim came a moment before its line did
    consumer.signal(sig)
    assert consumer.wait(15) == 0, consumer.output
    assert time.monotonic() - seen >= job_time - 0.5, "it exited before the job's time was spent"
    assert f"[pod-b] Stop requested: finishing job {job_id} first" in consumer.output
    assert f"[pod-b] Completed job {job_id} in 3.00s" in consumer.output
    assert "Traceback" not in consumer.output
    assert db("SELECT id FROM done_jobs") == [(job_id,)]
    assert db("SELECT payload FROM jobs") == [("next one",)], "it must not claim another job after the signal"


def test_sigterm_when_idle_exits_0_within_about_a_second(db_url, spawn, server):
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), HOSTNAME="idle")
    # Connected and polling an empty queue: its session shows up on the server.
    wait_until(lambda: server.sessions(db_url) > 0, 30, "the consumer's connection")
    time.sleep(0.5)
    started = time.monotonic()
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(10) == 0
    assert time.monotonic() - started < 2.5
    assert "[idle] Stopped" in consumer.output
    assert "Traceback" not in consumer.output


def test_a_second_signal_aborts_and_the_job_stays_queued(db_url, db, spawn):
    [job_id] = push(db, "abandoned")
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="60", PROCESS_TIME_MAX="60")
    consumer.wait_for(f"Processing job {job_id}")
    consumer.signal(signal.SIGTERM)
    consumer.wait_for("Stop requested")
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(10) != 0
    assert "stays queued" in consumer.output
    assert "Traceback" not in consumer.output
    assert db("SELECT id FROM jobs") == [(job_id,)]
    assert db("SELECT count(*) FROM done_jobs") == [(0,)]
