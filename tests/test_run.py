"""`make run`: the system on one machine, stopped with Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
import time

from conftest import CONFIG_VARIABLES, ROOT


def start_run(tmp_path, consumers, **env):
    log = open(tmp_path / "run.log", "w")
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "run.py"), "--consumers", str(consumers)],
                            env={**base, **env}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, tmp_path / "run.log"


def wait_for(proc, log, pattern, count, timeout=60):
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, log.read_text())) < count:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_ctrl_c_stops_every_loop_gracefully_and_the_summary_adds_up(tmp_path):
    proc, log = start_run(tmp_path, 4, PUSH_INTERVAL_MIN="0", PUSH_INTERVAL_MAX="0.05",
                          PROCESS_TIME_MIN="0.2", PROCESS_TIME_MAX="0.5")
    wait_for(proc, log, r"Completed job", 12)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
    out = log.read_text()
    assert "Traceback" not in out
    for name in ["consumer-1", "consumer-2", "consumer-3", "consumer-4"]:
        assert f"{name} | [{name}] Stopped" in out
        assert f"{name} | [{name}] Processing job" in out, f"{name} never got a job"
    pushed, done, queued = map(int, re.search(r"Summary: (\d+) pushed, (\d+) done, (\d+) still queued", out).groups())
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
