"""What the pusher promises beyond pushing: how it stops and what it then says, its pace, its look-up of a cut-off
commit, and how it treats a server that does not answer (the consumer too, where it must do the same). Measured in
the database where a time or a count matters, not read from the pusher's own account of it."""

import re
import signal
import socket
import threading
import time
from itertools import pairwise

import psycopg2
import pytest
from support import CommitCutter, objects, one, role, wait_until

LOOPS = ["pusher", "consumer"]
NOWHERE = "postgresql://jobuser:jobpass123@127.0.0.1:9/jobqueue"  # nothing listens on port 9


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_pusher_which_then_says_how_many_jobs_it_pushed(sig, db_url, db, spawn):
    pusher = spawn("pusher", DATABASE_URL=role(db_url, "pusher"), PUSH_INTERVAL_MIN="0", PUSH_INTERVAL_MAX="0.05")
    pusher.wait_for("Pushed job", count=3)
    pusher.signal(sig)
    assert pusher.wait(10) == 0, pusher.output
    assert "Traceback" not in pusher.output
    [(pushed,)] = db("SELECT count(*) FROM jobs")
    assert pushed >= 3
    assert pusher.output.splitlines()[-1] == f"Stopped after pushing {pushed} jobs"


def test_the_pusher_exits_after_push_count_jobs_without_waiting_out_another_pause(db_url, db, spawn):
    pusher = spawn(
        "pusher", DATABASE_URL=role(db_url, "pusher"), PUSH_COUNT="1", PUSH_INTERVAL_MIN="60", PUSH_INTERVAL_MAX="60"
    )
    assert pusher.wait(10) == 0, "it waited out a pause after its last job"
    assert db("SELECT count(*) FROM jobs") == [(1,)]
    assert pusher.output.splitlines()[-1] == "Stopped after pushing 1 jobs"


def test_the_pauses_between_jobs_are_drawn_from_push_interval_min_to_max(db_url, db, spawn):
    low, high, jobs = 0.4, 0.8, 7
    pusher = spawn(
        "pusher",
        DATABASE_URL=role(db_url, "pusher"),
        PUSH_COUNT=str(jobs),
        PUSH_INTERVAL_MIN=str(low),
        PUSH_INTERVAL_MAX=str(high),
    )
    assert pusher.wait(30) == 0, pusher.output
    # created_at is the start of each job's transaction: two of them are at least one pause apart.
    times = [float(t) for (t,) in db("SELECT extract(epoch FROM created_at) FROM jobs ORDER BY id")]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert len(gaps) == jobs - 1
    assert min(gaps) >= low - 0.005, f"a pause shorter than PUSH_INTERVAL_MIN: {gaps}"
    # Six pauses drawn from 0.4..0.8 s add up to 2.5 s or less once in about three million runs; six pauses of
    # PUSH_INTERVAL_MIN add up to 2.4 s.
    assert sum(gaps) > len(gaps) * low + 0.1, f"the pauses ignore PUSH_INTERVAL_MAX: {gaps}"


# Where a consumer may have put the job by the time the pusher looks it up: recorded, or set aside.
MOVED = {
    "recorded": "WITH claimed AS (DELETE FROM jobs RETURNING id) INSERT INTO done_jobs (id) SELECT id FROM claimed",
    "set aside": "WITH claimed AS (DELETE FROM jobs RETURNING id, payload, created_at) "
    "INSERT INTO failed_jobs (id, payload, created_at, attempts, reason) SELECT *, 3, 'test' FROM claimed",
}


@pytest.mark.parametrize("where", MOVED)
def test_a_cut_off_job_that_a_consumer_already_finished_is_counted_not_pushed_again(where, server, db_url, db, spawn):
    cutter = CommitCutter(int(psycopg2.extensions.parse_dsn(db_url)["port"]), "after")
    try:
        pusher = spawn(
            "pusher",
            DATABASE_URL=cutter.url(role(db_url, "pusher")),
            PUSH_COUNT="5",
            PUSH_INTERVAL_MIN="0",
            PUSH_INTERVAL_MAX="0",
        )
        # The first job's commit landed, but its answer was cut off; the pusher waits before it reconnects and
        # looks the job up. Meanwhile a consumer claims the job and records it, or sets it aside, in one
        # transaction.
        pusher.wait_for("Lost the database connection")
        [(cut,)] = db(MOVED[where] + " RETURNING id")
        assert pusher.wait(30) == 0, pusher.output
    finally:
        cutter.close()
    assert f"Pushed job {cut}: " in pusher.output and "its commit was cut off, but it landed" in pusher.output
    assert db("SELECT count(*) FROM jobs") == [(4,)], "PUSH_COUNT jobs, the finished one among them, none twice"


@pytest.fixture
def silent_server():
    """A port where the kernel completes the TCP handshake but nothing ever answers: like a host that has
    frozen, or a firewall that swallows packets after the handshake. Yields (url, connections held)."""
    silent = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        try:
            while True:
                held.append(silent.accept()[0])
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"postgresql://jobuser:jobpass123@127.0.0.1:{silent.getsockname()[1]}/jobqueue", held
    finally:
        silent.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_loop_stopped_while_a_server_never_answers_exits_0_within_its_grace_period(loop, spawn, silent_server):
    # Stopped in the middle of a connect that will never complete, the loop must not wait for it until
    # Kubernetes loses patience and sends SIGKILL.
    grace = one(objects("base"), "Deployment", f"job-{loop}")["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", 30
    )  # Kubernetes' default
    url, held = silent_server
    proc = spawn(loop, DATABASE_URL=url)
    wait_until(lambda: held, 15, "the loop's connect reached the silent server")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(grace + 15) == 0, proc.output
    assert time.monotonic() - started < grace, "Kubernetes would have sent SIGKILL"
    assert "Cannot connect to the database (no answer" in proc.output


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connect_to_a_server_that_never_answers_gives_up_after_the_connect_timeout(loop, spawn, silent_server):
    # Without the bound, a connect to a frozen host waits for the kernel, minutes, before the loop tries again.
    url, held = silent_server
    proc = spawn(loop, DATABASE_URL=url)
    wait_until(lambda: held, 15, "the loop's connect reached the silent server")
    started = time.monotonic()
    proc.wait_for("Cannot connect to the database (timeout expired); retrying in", timeout=20)
    assert time.monotonic() - started >= 5, "it gave up long before its CONNECT_TIMEOUT of 10 s"
    assert proc.stop() == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_an_unreachable_database_is_retried_after_the_pause_the_loop_announces(loop, spawn):
    proc = spawn(loop, DATABASE_URL=NOWHERE)
    proc.wait_for("Cannot connect to the database")
    first = time.monotonic()
    proc.wait_for("Cannot connect to the database", count=2)
    pause = float(re.search(r"retrying in (\d+(?:\.\d+)?)s", proc.output).group(1))
    assert pause > 0
    assert time.monotonic() - first >= pause - 0.5, "it retries at once: an unreachable server would be hammered"
    assert proc.stop() == 0
