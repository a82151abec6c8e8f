"""`make run`: the system on one machine, stopped with Ctrl-C."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

from support import CONFIG_VARIABLES, ROOT


def start_run(tmp_path, consumers, db_url=None, more=(), **env):
    """make run, on its own embedded server, or on db_url (a test's database, to read the tables afterwards)."""
    log = open(tmp_path / "run.log", "w")
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    args = ["--consumers", str(consumers)] + (["--database-url", db_url] if db_url else []) + list(more)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "run.py"), *args],
        env={**base, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return proc, tmp_path / "run.log"


def wait_for(proc, log, pattern, count, timeout=60):
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, log.read_text())) < count:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_ctrl_c_stops_every_loop_gracefully_and_the_summary_adds_up(tmp_path):
    proc, log = start_run(
        tmp_path, 4, PUSH_INTERVAL_MIN="0", PUSH_INTERVAL_MAX="0.05", PROCESS_TIME_MIN="0.2", PROCESS_TIME_MAX="0.5"
    )
    wait_for(proc, log, r"Completed job", 12)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
    out = log.read_text()
    assert "Traceback" not in out
    for name in ["consumer-1", "consumer-2", "consumer-3", "consumer-4"]:
        assert f"{name} | [{name}] Stopped" in out
        assert f"{name} | [{name}] Processing job" in out, f"{name} never got a job"
    summary = re.search(r"Summary: (\d+) pushed, (\d+) done, (\d+) still queued, 0 set aside", out)
    pushed, done, queued = map(int, summary.groups())
    assert pushed == len(re.findall(r"pusher +\| Pushed job", out)) == done + queued
    assert done == len(re.findall(r"\| \[consumer-\d\] Completed job", out))
    processing = re.findall(r"Processing job (\d+):", out)
    assert len(processing) == len(set(processing)) == done, "a job was started and not finished, or twice"


def test_a_bad_timing_value_stops_the_run_with_the_loops_own_line(tmp_path):
    proc, log = start_run(tmp_path, 2, PROCESS_TIME_MAX="soon")
    assert proc.wait(30) == 1
    out = log.read_text()
    assert "consumer: PROCESS_TIME_MAX must be a number of seconds, got 'soon'" in out
    assert "Traceback" not in out


def test_ctrl_c_again_aborts_and_the_jobs_in_hand_stay_queued(db_url, db, tmp_path):
    proc, log = start_run(
        tmp_path,
        2,
        db_url,
        PUSH_INTERVAL_MIN="0",
        PUSH_INTERVAL_MAX="0.05",
        PROCESS_TIME_MIN="60",
        PROCESS_TIME_MAX="60",
    )
    try:
        wait_for(proc, log, r"Processing job", 2)
        proc.send_signal(signal.SIGINT)
        wait_for(proc, log, r"Stopping: each consumer finishes its job in hand", 1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(15)  # the jobs in hand take 60 s
    except subprocess.TimeoutExpired:
        raise AssertionError("the second Ctrl-C waited for the jobs in hand") from None
    finally:
        proc.kill()
    out = log.read_text()
    assert out.count("the job in hand stays queued") == 2, out
    in_hand = {int(i) for i in re.findall(r"Processing job (\d+):", out)}
    assert len(in_hand) == 2
    assert in_hand <= {i for (i,) in db("SELECT id FROM jobs")}
    assert db("SELECT count(*) FROM done_jobs") == [(0,)]
    summary = re.search(r"Summary: (\d+) pushed, (\d+) done, (\d+) still queued, 0 set aside", out)
    pushed, done, queued = map(int, summary.groups())
    assert (done, queued) == (0, pushed) and pushed == db("SELECT count(*) FROM jobs")[0][0]


def test_ctrl_c_the_moment_the_loops_start_still_stops_each_one_cleanly(db_url, tmp_path):
    # The loops' handlers are in place only once Python has started and imported them: a SIGTERM before that
    # would kill a loop outright.
    proc, log = start_run(tmp_path, 4, db_url)
    try:
        wait_for(proc, log, r"Running 1 pusher and 4 consumers", 1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        proc.kill()
    out = log.read_text()
    assert "exited with an error" not in out and "Traceback" not in out
    for name in ["consumer-1", "consumer-2", "consumer-3", "consumer-4"]:
        assert f"{name} | [{name}] Stopped" in out, out
    assert re.search(r"pusher +\| Stopped after pushing \d+ jobs", out), out


def test_processes_records_when_the_run_and_each_loop_start_and_when_each_loop_exits(tmp_path, db_url):
    path = tmp_path / "processes.csv"
    began = time.time()
    proc, log = start_run(
        tmp_path,
        2,
        db_url,
        more=["--processes", str(path)],
        PUSH_INTERVAL_MIN="0",
        PUSH_INTERVAL_MAX="0.05",
        PROCESS_TIME_MIN="0.1",
        PROCESS_TIME_MAX="0.2",
    )
    wait_for(proc, log, r"Completed job", 4)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
    ended = time.time()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert (rows[0]["process"], rows[0]["event"]) == ("run", "start")
    times = {(row["process"], row["event"]): float(row["unix_time"]) for row in rows}
    assert len(times) == len(rows) == 1 + 2 * 3  # the run's start; each loop's start and exit, once
    assert began <= times["run", "start"] <= times["pusher", "start"]
    for loop in ("pusher", "consumer-1", "consumer-2"):
        # Each did work between its start and its exit, and exited only once asked to, at the end.
        assert times[loop, "start"] + 0.2 < times[loop, "exit"] <= ended, loop
