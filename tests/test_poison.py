"""Jobs nobody planned for: one whose record cannot be written, one that kills every consumer that takes it,
payloads that are too large or would drive a terminal, ids past 32 bits, a stop while the database does not
answer. None may stall the queue, lose a job or record one twice: each job is recorded once, or set aside
into failed_jobs with its payload after MAX_ATTEMPTS claims."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from support import ROOT, TcpProxy, role, wait_until

FAST = {"PROCESS_TIME_MIN": "0", "PROCESS_TIME_MAX": "0.05"}
MAX_ATTEMPTS = 3  # the consumer's default (its docstring and docs/operations.md's Configuration table)


def push(db, *payloads):
    return [i for (i,) in db("INSERT INTO jobs (payload) SELECT unnest(%s::text[]) RETURNING id", (list(payloads),))]


def queue_drained(db):
    return db("SELECT count(*) FROM jobs") == [(0,)]


def test_a_job_whose_record_fails_is_tried_max_attempts_times_then_set_aside_while_the_queue_goes_on(db, db_url, spawn):
    # Its id is already in done_jobs (a reset that restarted the ids): its record can never be written.
    db("INSERT INTO done_jobs (id) VALUES (1000)")
    db("INSERT INTO jobs (id, payload, created_at) VALUES (1000, 'collides', now() - interval '1 hour')")
    others = push(db, *(f"job {n}" for n in range(20)))
    consumers = [spawn("consumer", DATABASE_URL=role(db_url, "consumer"), HOSTNAME=f"c{n}", **FAST) for n in range(2)]
    wait_until(lambda: queue_drained(db), 60, "the queue to drain around the job that cannot be recorded")
    assert all(c.stop() == 0 for c in consumers)
    assert sorted(i for (i,) in db("SELECT id FROM done_jobs WHERE id <> 1000")) == sorted(others)
    [(job_id, payload, attempts, reason)] = db("SELECT id, payload, attempts, reason FROM failed_jobs")
    assert (job_id, payload, attempts) == (1000, "collides", MAX_ATTEMPTS)
    assert 'duplicate key value violates unique constraint "done_jobs_pkey"' in reason
    assert db("SELECT count(*) FROM job_attempts") == [(0,)], "a finished or set-aside job keeps no attempts"
    output = "".join(c.output for c in consumers)
    assert output.count("Processing job 1000:") == MAX_ATTEMPTS
    assert "Set aside job 1000 after 3 attempts" in output


def test_ids_restarted_under_the_records_cost_a_few_attempts_and_stall_nothing(db, db_url, spawn):
    # The natural way to reset the demo, and the one the docs warn against: the new ids collide with done_jobs.
    push(db, *(f"old {n}" for n in range(5)))
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(5,)], 30, "the first jobs done")
    db("TRUNCATE jobs RESTART IDENTITY")
    new = push(db, *(f"new {n}" for n in range(15)))
    assert new[:5] == [1, 2, 3, 4, 5]
    wait_until(lambda: queue_drained(db), 60, "the queue to drain")
    assert worker.stop() == 0
    assert sorted(i for (i,) in db("SELECT id FROM failed_jobs")) == [1, 2, 3, 4, 5]
    assert sorted(i for (i,) in db("SELECT id FROM done_jobs")) == list(range(1, 16))  # 1-5 from before, 6-15 new


def test_the_reset_the_docs_give_makes_no_ids_collide(db, db_url, spawn):
    push(db, *(f"old {n}" for n in range(5)))
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(5,)], 30, "the first jobs done")
    db(RESET)
    push(db, *(f"new {n}" for n in range(10)))
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(10,)], 30, "the new jobs done")
    assert worker.stop() == 0
    assert db("SELECT count(*) FROM failed_jobs") == [(0,)]
    assert "Database error" not in worker.output


# The reset that docs/operations.md gives, taken from it, so that what the reader runs is what is tested.
RESET = re.search(r"```sql\n(TRUNCATE [^\n]*RESTART IDENTITY;)\n```", (ROOT / "docs" / "operations.md").read_text())
RESET = RESET.group(1) if RESET else "-- docs/operations.md shows no reset"


def test_a_queue_made_again_continues_its_ids_after_the_records(db, db_url):
    # The other reset people try: drop the queue and apply db/init.sql again.
    push(db, "one", "two", "three")
    db("WITH claimed AS (DELETE FROM jobs RETURNING id) INSERT INTO done_jobs (id) SELECT id FROM claimed")
    db("DROP TABLE jobs")
    db((ROOT / "db" / "init.sql").read_text())
    assert push(db, "four") == [4]


def test_a_job_that_kills_every_consumer_that_takes_it_is_set_aside_after_max_attempts(db, db_url, spawn):
    [poison] = push(db, "kills its consumer")
    others = push(db, *(f"job {n}" for n in range(5)))
    kills = 0
    while kills < MAX_ATTEMPTS:
        # As an out-of-memory kill would: SIGKILL, the moment the consumer starts on it, with no word.
        victim = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="30", PROCESS_TIME_MAX="30")
        victim.wait_for(f"Processing job {poison}:")
        victim.signal(signal.SIGKILL)
        victim.wait()
        kills += 1
    survivor = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    wait_until(lambda: queue_drained(db), 60, "the queue to drain")
    assert survivor.stop() == 0
    assert f"Processing job {poison}:" not in survivor.output
    [(payload, attempts, reason)] = db("SELECT payload, attempts, reason FROM failed_jobs WHERE id = %s", (poison,))
    assert (payload, attempts) == ("kills its consumer", MAX_ATTEMPTS)
    assert "stopped without a word" in reason
    assert sorted(i for (i,) in db("SELECT id FROM done_jobs")) == others


def test_max_attempts_is_the_consumers_to_set(db, db_url, spawn):
    db("INSERT INTO done_jobs (id) VALUES (7)")
    db("INSERT INTO jobs (id, payload) VALUES (7, 'collides')")
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), MAX_ATTEMPTS="1", **FAST)
    wait_until(lambda: queue_drained(db), 30, "the job set aside")
    assert worker.stop() == 0
    assert worker.output.count("Processing job 7:") == 1
    assert db("SELECT attempts FROM failed_jobs") == [(1,)]


# The session of consumer w that holds a job (its claim's transaction has an id), ended by the server.
HOLDER_ENDED = """
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'w' AND backend_xid IS NOT NULL
"""


def test_a_failure_that_is_not_the_jobs_own_costs_it_no_attempt(db, db_url, spawn):
    # The server ends the consumer's session under it (an administrator, a failover) again and again: the
    # job's claim rolls back each time, but through no fault of the job's, so it is never set aside.
    [job_id] = push(db, "outlives its sessions")
    worker = spawn(
        "consumer", DATABASE_URL=role(db_url, "consumer"), HOSTNAME="w", PROCESS_TIME_MIN="1", PROCESS_TIME_MAX="1"
    )
    for n in range(1, MAX_ATTEMPTS + 2):
        worker.wait_for(f"Processing job {job_id}:", count=n, timeout=30)
        db(HOLDER_ENDED)
        worker.wait_for("Lost the database connection", count=n, timeout=30)
    wait_until(lambda: queue_drained(db), 30, "the job done at last")
    assert worker.stop() == 0
    assert db("SELECT id FROM done_jobs") == [(job_id,)]
    assert db("SELECT count(*) FROM failed_jobs") == [(0,)]
    assert "(attempt 2 of" not in worker.output, "an attempt the job did not fail was counted against it"


def test_a_payload_too_large_for_a_consumer_is_refused_where_it_enters(db):
    limit = 1024 * 1024
    push(db, "x" * limit)  # the largest accepted
    with pytest.raises(psycopg2.errors.CheckViolation) as refused:
        push(db, "x" * (limit + 1))
    assert 'violates check constraint "payload_at_most_1_mib"' in str(refused.value)
    assert len(str(refused.value)) < 1000, "the error quotes the whole payload back"
    assert db("SELECT count(*) FROM jobs") == [(1,)]


HOSTILE = [
    "line one\nline two",
    "\x1b[31mred\x1b[0m and \x1b[2J cleared",
    "\x1b]0;a new window title\x07 osc",
    "carriage\rreturn",
    "back\\nslash, not a newline",
    "right-to-left \u202eoverride",
    "tab\there",
    "\x00 a NUL is refused by the server anyway",
]


def test_payloads_print_as_one_line_each_with_control_characters_visible_never_interpreted(db, db_url, spawn):
    payloads = [p for p in HOSTILE if "\x00" not in p] + [
        "Completed job 424242 in 3.14s\n[forged] Completed job 1 in 1s"
    ]
    ids = push(db, *payloads)
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), HOSTNAME="pod-a", **FAST)
    wait_until(lambda: queue_drained(db), 30, "the queue to drain")
    assert worker.stop() == 0
    lines = worker.output.splitlines()
    for job_id in ids:
        assert sum(line.startswith(f"[pod-a] Processing job {job_id}: ") for line in lines) == 1
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", worker.output), "a raw control character was printed"
    assert "\\x1b[31mred" in worker.output and "line one\\nline two" in worker.output
    assert "back\\\\nslash" in worker.output, "a literal backslash must not look like an escape"
    assert not any(line.startswith(("Completed job 424242", "[forged]")) for line in lines), "a forged line"
    assert re.findall(r"^\[pod-a\] Completed job (\d+) in", worker.output, re.M) == [str(i) for i in ids]


def test_make_run_relays_no_control_character_a_loop_might_print():
    relay = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import run; run.Loops({}, 0).say('c', 'a \\x1b]0;t\\x07 b')",
            str(ROOT / "tools"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert relay.returncode == 0, relay.stderr
    assert relay.stdout == "c | a \\x1b]0;t\\x07 b\n"


def test_ids_past_32_bits_are_pushed_claimed_and_recorded(db, db_url, spawn):
    db("SELECT setval('jobs_id_seq', 2147483652)")  # 2^31 - 1 + 5
    pusher = spawn(
        "pusher", DATABASE_URL=role(db_url, "pusher"), PUSH_COUNT="3", PUSH_INTERVAL_MIN="0", PUSH_INTERVAL_MAX="0"
    )
    assert pusher.wait(30) == 0, pusher.output
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    wait_until(lambda: queue_drained(db), 30, "the queue to drain")
    assert worker.stop() == 0
    assert [i for (i,) in db("SELECT id FROM done_jobs ORDER BY id")] == [2147483653, 2147483654, 2147483655]
    assert "Database error" not in worker.output + pusher.output


def test_a_stop_while_the_record_waits_behind_a_lock_ends_within_the_grace_period_with_the_job_queued(
    server, db, db_url, spawn
):
    [job_id] = push(db, "behind a lock")
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), PROCESS_TIME_MIN="1", PROCESS_TIME_MAX="1")
    worker.wait_for(f"Processing job {job_id}:")
    # An administrator's long statement holds done_jobs: the record, once the work is done, waits for it.
    locker = psycopg2.connect(db_url)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE done_jobs IN ACCESS EXCLUSIVE MODE")
        wait_until(lambda: db(WAITING_FOR_A_LOCK) == [(1,)], 15, "the record waiting for the lock")
        stopped = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output
        assert time.monotonic() - stopped < 15, "it waited for the lock past any reasonable share of 30 s"
        assert "Traceback" not in worker.output
        # The server cancels the statement it was left with, and the job is free again, lock or no lock.
        wait_until(lambda: db(CLAIMABLE, (job_id,)) == [(job_id,)], 30, "the job back in the queue")
    finally:
        locker.close()
    again = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    wait_until(lambda: queue_drained(db), 30, "the job done by another consumer")
    assert again.stop() == 0
    assert db("SELECT id FROM done_jobs") == [(job_id,)]


class Freezer(TcpProxy):
    """A TCP proxy that passes everything on until freeze(), and then nothing, in either direction, while
    keeping every connection open: a server that has stopped answering, as a frozen host or a network
    partition would look to the client."""

    def __init__(self, server_port):
        self.frozen = threading.Event()
        self.sockets = []
        super().__init__(server_port)

    def serve(self, client, server):
        self.sockets += [client, server]
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self.forward, args=(source, sink), daemon=True).start()

    def forward(self, source, sink):
        try:
            while data := source.recv(65536):
                if not self.frozen.is_set():
                    sink.sendall(data)
        except OSError:
            pass

    def close(self):
        super().close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a close alone would wait for the thread blocked in recv()
            except OSError:
                pass
            sock.close()


def test_a_stop_while_the_server_does_not_answer_ends_within_the_grace_period(db, db_url, spawn):
    [job_id] = push(db, "answered by no one")
    freezer = Freezer(int(psycopg2.extensions.parse_dsn(db_url)["port"]))
    try:
        worker = spawn(
            "consumer", DATABASE_URL=freezer.url(role(db_url, "consumer")), PROCESS_TIME_MIN="1", PROCESS_TIME_MAX="1"
        )
        worker.wait_for(f"Processing job {job_id}:")
        freezer.frozen.set()  # the record, once the work is done, goes out and no answer comes back
        time.sleep(1.5)
        stopped = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output
        assert time.monotonic() - stopped < 15, "it waited for an answer past any reasonable share of 30 s"
        assert "no answer 5s after the stop request" in worker.output
    finally:
        freezer.close()  # the server sees the connection go, and rolls the claim back
    wait_until(lambda: db(CLAIMABLE, (job_id,)) == [(job_id,)], 30, "the job back in the queue")
    assert db("SELECT count(*) FROM done_jobs") == [(0,)]


WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
CLAIMABLE = "SELECT id FROM jobs WHERE id = %s FOR UPDATE SKIP LOCKED"


@pytest.mark.parametrize("loop", ["pusher", "consumer"])
def test_sighup_stops_a_loop_the_graceful_way(loop, db, db_url, spawn):
    if loop == "consumer":
        [job_id] = push(db, "finished despite the hang-up")
        proc = spawn(loop, DATABASE_URL=role(db_url, loop), PROCESS_TIME_MIN="2", PROCESS_TIME_MAX="2")
        proc.wait_for(f"Processing job {job_id}:")
    else:
        proc = spawn(loop, DATABASE_URL=role(db_url, loop), PUSH_INTERVAL_MIN="0.2", PUSH_INTERVAL_MAX="0.2")
        proc.wait_for("Pushed job")
    proc.signal(signal.SIGHUP)
    assert proc.wait(30) == 0, proc.output
    if loop == "consumer":
        assert f"Completed job {job_id} in" in proc.output
        assert db("SELECT id FROM done_jobs") == [(job_id,)]


@pytest.mark.parametrize("loop", ["pusher", "consumer"])
def test_a_closed_output_stops_a_loop_the_graceful_way(loop, db, db_url):
    if loop == "consumer":
        [job_id] = push(db, "finished after its reader left")
        env = {"PROCESS_TIME_MIN": "2", "PROCESS_TIME_MAX": "2"}
    else:
        env = {"PUSH_INTERVAL_MIN": "0.2", "PUSH_INTERVAL_MAX": "0.2"}
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PUSH_COUNT")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / loop / f"{loop}.py")],
        env={**base, **env, "DATABASE_URL": role(db_url, loop)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        want = "Processing job" if loop == "consumer" else "Pushed job"
        while want not in proc.stdout.readline():
            pass
        proc.stdout.close()  # the reader goes: the loop's next line finds the pipe closed
        assert proc.wait(30) == 0, proc.stderr.read()
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    if loop == "consumer":
        assert db("SELECT id FROM done_jobs") == [(job_id,)], "the job in hand was cut short"


# The pusher's pause between two jobs, long enough that sleeping through one more is plain to see.
PAUSE = 8.0  # seconds


def test_a_pusher_whose_output_closed_stops_at_its_next_line_instead_of_pausing_again(db, db_url):
    """The closed output is found by the line after a push, which requests a stop: the pause that follows must
    end at once, as it does for a signal, not run its full length first."""
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PUSH_COUNT")}
    pause = {"PUSH_INTERVAL_MIN": str(PAUSE), "PUSH_INTERVAL_MAX": str(PAUSE)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "pusher" / "pusher.py")],
        env={**base, **pause, "DATABASE_URL": role(db_url, "pusher")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while "Pushed job" not in proc.stdout.readline():
            pass
        proc.stdout.close()  # the next push's line finds the pipe closed
        try:
            code = proc.wait(PAUSE + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the pusher was still pausing {PAUSE + 5:g}s after its output closed")
        assert code == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert db("SELECT count(*) FROM jobs") == [(2,)], "one push after the output closed, then the stop"


# The statement docs/operations.md gives to put a job set aside back, taken from it.
PUT_BACK = re.search(r"```sql\n(WITH back AS .*?;)\n```", (ROOT / "docs" / "operations.md").read_text(), re.S)
PUT_BACK = PUT_BACK.group(1) if PUT_BACK else "-- docs/operations.md shows no statement to put a job back"


def test_a_job_set_aside_is_put_back_by_the_docs_statement_and_then_done_once(db, db_url, spawn):
    db("INSERT INTO done_jobs (id) VALUES (1)")
    db("INSERT INTO jobs (payload, created_at) VALUES ('collides', now() - interval '1 hour')")
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), **FAST)
    wait_until(lambda: db("SELECT id FROM failed_jobs") == [(1,)], 30, "the colliding job set aside")
    [(created,)] = db("SELECT created_at FROM failed_jobs")
    [(new_id,)] = db(PUT_BACK)  # the docs' example puts back job 1
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(2,)], 30, "the job put back, then done")
    assert worker.stop() == 0
    assert new_id != 1 and db("SELECT count(*) FROM failed_jobs") == [(0,)]
    assert db("SELECT created_at FROM done_jobs WHERE id = %s", (new_id,)) == [(created,)], "it kept its place"
