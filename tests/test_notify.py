"""Waking idle consumers: the trigger in db/init.sql notifies on every insert, each consumer LISTENs, and
sleeps on an empty queue until a notification comes or POLL_INTERVAL passes.

These check what happens, not how fast. Where a test proves the notification path, the consumer's poll
interval is an hour, far beyond any wait here; where it proves the poll, no notification can come.
Latency is measured by `make bench`."""

import re
import select
import signal
import socket
import threading
import time

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn
from support import TcpProxy, load_loop, role, wait_until

consumer = load_loop("consumer")
NEVER = "3600"  # seconds: a poll interval no test waits out
FAST = {"PROCESS_TIME_MIN": "0", "PROCESS_TIME_MAX": "0"}


def idle_consumers(db):
    """Consumers that looked at the queue, found it empty, and now wait: their last statement ended the
    empty claim, and their session is idle (not inside a transaction)."""
    return db(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle' AND query = %s",
        (consumer.EMPTY_SQL,),
    )[0][0]


def wait_until_idle(db, count=1):
    wait_until(lambda: idle_consumers(db) == count, 30, f"{count} idle consumer(s)")


def consumer_sessions(db):
    return db("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")[
        0
    ][0]


def test_each_committed_transaction_that_inserts_jobs_notifies_the_consumers_channel_once(db_url):
    listener = psycopg2.connect(db_url)
    listener.autocommit = True
    listener.cursor().execute(consumer.LISTEN_SQL)
    burst, marker = psycopg2.connect(db_url), psycopg2.connect(db_url)
    try:
        with burst, burst.cursor() as cur:
            cur.execute("INSERT INTO jobs (payload) SELECT 'burst' FROM generate_series(1, 1000)")
        with burst, burst.cursor() as cur:
            for payload in ("one", "two", "three"):  # three statements in one transaction
                cur.execute("INSERT INTO jobs (payload) VALUES (%s)", (payload,))
        with burst.cursor() as cur:
            cur.execute("INSERT INTO jobs (payload) VALUES ('rolled back')")
        burst.rollback()
        # Notifications arrive in commit order: once the marker's has come, every earlier one has too.
        with marker, marker.cursor() as cur:
            cur.execute("INSERT INTO jobs (payload) VALUES ('marker')")
        received = []
        while not any(n.pid == marker.get_backend_pid() for n in received):
            assert select.select([listener], [], [], 10)[0], f"no notification from the marker; got {received}"
            listener.poll()
            received += listener.notifies
            listener.notifies.clear()
        assert [(n.channel, n.pid) for n in received] == [(consumer.CHANNEL, burst.get_backend_pid())] * 2 + [
            (consumer.CHANNEL, marker.get_backend_pid())
        ], "one per committed transaction, none for the rollback"
    finally:
        for conn in (listener, burst, marker):
            conn.close()


def test_a_bulk_insert_runs_the_notify_trigger_once_not_once_per_row(db):
    # PostgreSQL folds a transaction's identical notifications, so the listener above cannot tell a trigger that
    # runs once per statement from one that runs once per row. The server's count of the function's calls can.
    [(superuser,)] = db("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not superuser:
        pytest.skip("track_functions can be set by a superuser only")
    [(calls,)] = db(
        "SET LOCAL track_functions = 'pl'; "
        "INSERT INTO jobs (payload) SELECT 'bulk' FROM generate_series(1, 1000); "
        "SELECT pg_stat_get_xact_function_calls('jobs_notify'::regproc)"
    )
    assert calls == 1


def test_an_idle_consumer_is_woken_by_an_insert(db_url, db, spawn):
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), POLL_INTERVAL=NEVER, **FAST)
    wait_until_idle(db)
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('wake up') RETURNING id")
    worker.wait_for(f"Completed job {job_id}", timeout=20)
    assert worker.stop() == 0


def test_one_notification_wakes_every_idle_consumer_and_they_drain_a_burst_losing_nothing(db_url, db, spawn):
    # Jobs of 10 to 20 ms: one consumer alone would take seconds, so each of the others, once woken, gets some.
    workers = [
        spawn(
            "consumer",
            DATABASE_URL=role(db_url, "consumer"),
            POLL_INTERVAL=NEVER,
            PROCESS_TIME_MIN="0.01",
            PROCESS_TIME_MAX="0.02",
        )
        for _ in range(3)
    ]
    wait_until_idle(db, 3)
    ids = [
        i
        for (i,) in db("INSERT INTO jobs (payload) SELECT 'burst ' || g FROM generate_series(1, 300) AS g RETURNING id")
    ]
    wait_until(lambda: db("SELECT count(*) FROM done_jobs") == [(300,)], 60, "the burst drained")
    assert all(w.stop() == 0 for w in workers)
    assert sorted(i for (i,) in db("SELECT id FROM done_jobs")) == sorted(ids)
    worked = [[int(i) for i in re.findall(r"Processing job (\d+):", w.output)] for w in workers]
    assert sorted(sum(worked, [])) == sorted(ids), "a job was worked on twice, or not at all"
    assert all(worked), "a consumer slept through the notification"


def test_an_idle_consumer_sends_the_server_nothing_until_a_notification_or_the_poll(db_url, db, spawn):
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), POLL_INTERVAL=NEVER, **FAST)
    wait_until_idle(db)
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('one') RETURNING id")  # a notification, then none
    worker.wait_for(f"Completed job {job_id}", timeout=20)
    wait_until_idle(db)
    last_statement = (
        "SELECT query_start FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    before = db(last_statement)
    time.sleep(1)
    assert db(last_statement) == before, "an idle consumer keeps asking the server for jobs"
    assert worker.stop() == 0


def test_a_busy_consumer_keeps_one_notification_however_many_jobs_are_pushed(db_url, db):
    # A consumer at work reads the notifications that come with its answers; they only tell it to look again.
    consumer.stop = consumer.StopRequest()
    conn, attempts = consumer.connect(role(db_url, "consumer"), "t", 0)
    try:
        for n in range(50):  # 50 transactions, 50 notifications
            db("INSERT INTO jobs (payload) VALUES (%s)", (f"job {n}",))
        while select.select([conn], [], [], 1)[0]:
            conn.poll()
        assert len(conn.notifies) == 1, "its memory would grow with every job pushed while it works"
    finally:
        conn.close()
        attempts.close()


def test_a_job_that_returns_by_a_rollback_is_found_by_the_poll(db_url, db, spawn):
    # No notification announces it: the consumer holding it dies, the server rolls its claim back.
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('given back') RETURNING id")
    holder = spawn(
        "consumer",
        DATABASE_URL=role(db_url, "consumer"),
        POLL_INTERVAL=NEVER,
        PROCESS_TIME_MIN="60",
        PROCESS_TIME_MAX="60",
    )
    holder.wait_for(f"Processing job {job_id}")
    helper = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), HOSTNAME="helper", POLL_INTERVAL="1", **FAST)
    wait_until_idle(db)  # the helper looked, passed over the held job, and waits
    holder.signal(signal.SIGKILL)
    holder.wait()
    helper.wait_for(f"[helper] Completed job {job_id}", timeout=20)
    assert helper.stop() == 0
    assert db("SELECT id FROM done_jobs") == [(job_id,)]


def test_a_consumer_whose_session_is_ended_reconnects_and_listens_again(db_url, db, spawn):
    worker = spawn("consumer", DATABASE_URL=role(db_url, "consumer"), POLL_INTERVAL=NEVER, **FAST)
    wait_until_idle(db)
    db(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    worker.wait_for("Lost the database connection")
    worker.wait_for("Connected to the database", count=2)
    wait_until_idle(db)
    # Only a notification on the new connection can bring this job within the hour.
    [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('after the cut') RETURNING id")
    worker.wait_for(f"Completed job {job_id}", timeout=20)
    assert worker.stop() == 0
    assert "Traceback" not in worker.output


class SilentCut(TcpProxy):
    """A TCP proxy in front of the server. cut() closes the server's side of every connection made so far,
    as a failover or a NAT that forgets a connection does, and leaves the client's side open and silent:
    the client learns of it only when it next sends something, and then its connection is closed.
    Connections made after the cut pass through."""

    def __init__(self, db_url):
        self.pairs = []
        super().__init__(int(parse_dsn(db_url)["port"]))

    def serve(self, client, server):
        pair = {"client": client, "server": server, "cut": False}
        self.pairs.append(pair)
        threading.Thread(target=self.pump, args=(pair, "client", "server"), daemon=True).start()
        threading.Thread(target=self.pump, args=(pair, "server", "client"), daemon=True).start()

    @staticmethod
    def pump(pair, source, sink):
        while True:
            try:
                data = pair[source].recv(65536)
            except OSError:
                data = b""
            if pair["cut"]:
                if source == "client" and data:
                    pair["client"].close()  # the client spoke after the cut: now it learns
                return
            if not data:
                for side in ("client", "server"):
                    pair[side].close()
                return
            pair[sink].sendall(data)

    def cut(self):
        for pair in self.pairs:
            pair["cut"] = True
            pair["server"].shutdown(socket.SHUT_RDWR)
            pair["server"].close()


def test_a_consumer_whose_connection_died_silently_finds_out_at_the_poll_and_reconnects(db_url, db, spawn):
    proxy = SilentCut(db_url)
    try:
        worker = spawn("consumer", DATABASE_URL=proxy.url(role(db_url, "consumer")), POLL_INTERVAL="2", **FAST)
        wait_until_idle(db)
        proxy.cut()
        wait_until(lambda: consumer_sessions(db) == 0, 30, "the server to end the consumer's session")
        # Its notification goes to no one: the session that listened is gone, and the consumer cannot know.
        [(job_id,)] = db("INSERT INTO jobs (payload) VALUES ('unannounced') RETURNING id")
        worker.wait_for(f"Completed job {job_id}", timeout=30)
        assert "Lost the database connection" in worker.output
        assert worker.output.count("Connected to the database") == 2
        assert worker.stop() == 0
    finally:
        proxy.close()
    assert db("SELECT id FROM done_jobs") == [(job_id,)]


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux's")
def test_a_connection_that_dies_without_a_word_fails_within_about_a_minute(db_url):
    # A server that vanishes, or a NAT that forgets the connection, sends nothing at all: no test proxy can
    # play that, so this checks the bounds the kernel applies to the consumer's socket.
    consumer.stop = consumer.StopRequest()
    conns = consumer.connect(role(db_url, "consumer"), "t", 0)
    try:
        for conn in conns:  # the claims' and the attempts'
            sock = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            try:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                silent = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) + sock.getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_KEEPINTVL
                ) * sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
                assert silent <= 60, "an idle consumer would wait out the kernel's two hours on a dead connection"
                assert 0 < sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) <= 60_000, (
                    "a claim sent into a dead connection would wait for its answer for many minutes"
                )
            finally:
                sock.close()
    finally:
        for conn in conns:
            conn.close()
