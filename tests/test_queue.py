"""What the consumers promise the queue, measured in the database alone, never read from their own logs: they
hold different jobs at the same time, take the oldest job first, spend on each job a time drawn from
PROCESS_TIME_MIN to PROCESS_TIME_MAX, and a consumer told to stop spends the whole job's time before it records
the job."""

import signal
from itertools import pairwise

from support import role, wait_until

IN_HAND = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"


def test_consumers_hold_different_jobs_at_the_same_time(db_url, db, spawn):
    db("INSERT INTO jobs (payload) SELECT 'job ' || n FROM generate_series(1, 3) AS n")
    consumers = [
        spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="60", PROCESS_TIME_MAX="60")
        for _ in range(3)
    ]
    # A consumer at work holds its claim open and waits: to the server, a session idle in transaction. One that
    # waits for another's row lock instead is active, waiting on a Lock: its pod adds nothing but a connection.
    wait_until(lambda: db(IN_HAND) == [(3,)], 15, "three consumers each holding a job")
    assert db(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ) == [(0,)]
    for consumer in consumers:
        consumer.signal(signal.SIGKILL)
        consumer.wait()
    wait_until(lambda: db("SELECT count(*) FROM jobs") == [(3,)], 30, "a killed consumer's job back in the queue")


def test_the_oldest_job_goes_first_even_when_ids_and_insertion_order_disagree(db_url, db, spawn):
    # Inserted in id order (so heap order too), each older than the last by a rank that follows neither order.
    ages = [2, 4, 0, 3, 1]  # seconds before now
    ids = [
        db(
            "INSERT INTO jobs (payload, created_at) VALUES (%s, now() - %s * interval '1 second') RETURNING id",
            (f"{age} s old", age),
        )[0][0]
        for age in ages
    ]
    consumer = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="0", PROCESS_TIME_MAX="0")
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(len(ids),)], 30, "every job done")
    assert consumer.stop() == 0
    # completed_at is now() of the job's transaction, which began with its claim: the order of the claims.
    done = [i for (i,) in db("SELECT id FROM done_jobs ORDER BY completed_at")]
    assert done == [job for _, job in sorted(zip(ages, ids, strict=True), reverse=True)]


def test_a_consumer_stopped_mid_job_spends_the_whole_job_before_recording_it(db_url, db, spawn):
    db("INSERT INTO jobs (payload) VALUES ('in hand')")
    job_time = 3.0
    consumer = spawn(
        "consumer",
        DATABASE_URL=role(db_url, "consumer"),
        PROCESS_TIME_MIN=str(job_time),
        PROCESS_TIME_MAX=str(job_time),
    )
    wait_until(lambda: db(IN_HAND) == [(1,)], 30, "the consumer holding the job")
    # The server's clock on both sides: when the claim's transaction began, and when its record became visible.
    [(claimed,)] = db(
        "SELECT extract(epoch FROM xact_start) FROM pg_stat_activity "
        "WHERE datname = current_database() AND state = 'idle in transaction'"
    )
    consumer.signal(signal.SIGTERM)
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(1,)], 30, "the job recorded")
    [(recorded,)] = db("SELECT extract(epoch FROM clock_timestamp())")
    assert float(recorded) - float(claimed) >= job_time - 0.05, "recorded before the work was done"
    assert consumer.wait(15) == 0
    assert db("SELECT count(*) FROM jobs") == [(0,)]


def test_each_job_takes_a_time_drawn_from_process_time_min_to_max(db_url, db, spawn):
    low, high, jobs = 0.3, 0.6, 10
    db("INSERT INTO jobs (payload) SELECT 'job ' || n FROM generate_series(1, %s) AS n", (jobs,))
    consumer = spawn(
        "consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN=str(low), PROCESS_TIME_MAX=str(high)
    )
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(jobs,)], 30, "every job done")
    assert consumer.stop() == 0
    # completed_at is the start of each job's transaction, its claim: one consumer's claims are at least one
    # job's time apart, and a little more (the record, the next claim).
    times = [float(t) for (t,) in db("SELECT extract(epoch FROM completed_at) FROM done_jobs ORDER BY completed_at")]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert min(gaps) >= low - 0.005, f"a job shorter than PROCESS_TIME_MIN: {gaps}"
    # Nine times drawn from 0.3..0.6 s add up to 2.8 s or less about once in seven billion runs; nine times of
    # PROCESS_TIME_MIN add up to 2.7 s. (Drawn from 0..0.6 s instead, all nine are 0.3 s or more once in 512.)
    assert sum(gaps) > len(gaps) * low + 0.1, f"the jobs ignore PROCESS_TIME_MAX: {gaps}"
