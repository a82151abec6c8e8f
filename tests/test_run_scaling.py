"""`make run` with the emulation of KEDA and its HPA: real consumers, a real burst from the project's pusher, and
a compressed clock (every interval of the emulation 15 times shorter: the HPA evaluates every real second).

The burst must scale the consumers up and back down to the minimum with no job lost and none recorded twice,
and every consumer the scale-down stopped must have finished its job and exited 0. The timeline and the
`scaler` lines must be the emulation's decisions, evaluation by evaluation. A Ctrl-C that comes while consumers
a scale-down stopped are finishing their jobs must let them finish.
"""

import csv
import os
import re
import signal
import subprocess
import sys
import time

import keda_emulation
import psycopg2
import pytest
from support import CONFIG_VARIABLES, ROOT

TIME_SCALE = 15  # the HPA's 15 s sync period, KEDA's polling and the 30 s window in 1 s and 2 s of real time
BURST = 150


def output(path):
    return path.read_text()


def wait_for(proc, log, pattern, timeout, after=0):
    deadline = time.monotonic() + timeout
    while not re.search(pattern, output(log)[after:], re.M):
        assert proc.poll() is None, output(log)
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout}s:\n{output(log)}"
        time.sleep(0.1)
    return re.search(pattern, output(log)[after:], re.M)


def table(db_url, sql):
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def start_run(log, db_url, env, *more):
    """make run's program on a test's database and the compressed clock, its output in log."""
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "run.py"), "--database-url", db_url, "--time-scale", str(TIME_SCALE)]
        + list(more),
        env={**base, **env},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def burst(db_url, jobs):
    """The project's burst, all at once; what it printed."""
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "burst.py"), "--jobs", str(jobs)],
        env={**base, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# A slow background pusher, slower with scale to zero so that the queue can stay at 2 or less for the
# cooldown, and jobs of 0.5-1.5 s, so that the scale-down finds consumers at work.
@pytest.mark.parametrize(
    "overlay, minimum, push_interval", [(".", 1, ("1", "2")), ("k8s/overlays/scale-to-zero", 0, ("3", "5"))]
)
def test_a_burst_scales_up_and_back_down_and_every_job_is_done_once(tmp_path, db_url, overlay, minimum, push_interval):
    log, timeline = tmp_path / "run.log", tmp_path / "timeline.csv"
    env = {
        "PUSH_INTERVAL_MIN": push_interval[0],
        "PUSH_INTERVAL_MAX": push_interval[1],
        "PROCESS_TIME_MIN": "0.5",
        "PROCESS_TIME_MAX": "1.5",
    }
    run = start_run(log, db_url, env, "--overlay", overlay, "--timeline", str(timeline))
    try:
        wait_for(run, log, r"^scaler \| .* -> 0 consumers" if minimum == 0 else r"^Running 1 pusher", 30)
        assert f"Stopped after pushing {BURST} jobs" in burst(db_url, BURST)
        start = len(output(log))
        wait_for(run, log, r"^scaler \| \d+ jobs: \d+ -> (1[0-9]|20) consumers", 30, start)  # 10 or more
        peak = len(output(log))
        wait_for(run, log, rf"^scaler \| \d+ jobs: \d+ -> {minimum} consumers", 60, peak)  # back to the minimum
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(60)
    out = output(log)
    assert code == 0, out
    assert not re.search(r"Traceback|Database error|Lost the database connection|exited with an error", out), out

    # Every job pushed is recorded exactly once: the ids the sequence handed out are all in done_jobs or
    # still in jobs, in one table only, and as many as the two pushers say they pushed.
    pushed = BURST + int(re.search(r"^pusher \| Stopped after pushing (\d+) jobs", out, re.M).group(1))
    done = [row[0] for row in table(db_url, "SELECT id FROM done_jobs")]
    queued = [row[0] for row in table(db_url, "SELECT id FROM jobs")]
    ((last_id,),) = table(db_url, "SELECT last_value FROM jobs_id_seq")
    assert sorted(done + queued) == list(range(1, last_id + 1))
    assert len(done) + len(queued) == pushed
    assert re.search(
        rf"^Summary: {pushed} pushed, {len(done)} done, {len(queued)} still queued, 0 set aside$", out, re.M
    )

    # Every consumer a scale-down stopped exited 0, some of them after finishing a job in hand.
    away, busy, clean, total = map(
        int,
        re.search(
            r"^Consumers: \d+ started; (\d+) scaled away by the emulation, (\d+) of them with a job in hand, "
            r"(\d+) of (\d+) exited 0$",
            out,
            re.M,
        ).groups(),
    )
    assert away >= 9 and busy >= 1 and clean == total == away, out

    # The timeline is the emulation's decisions, evaluation by evaluation, and the scaler lines its changes.
    with open(timeline, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["seconds", "jobs", "desired", "consumers"]
    so, replicas = keda_emulation.scaled_object(overlay)
    replay = keda_emulation.Autoscaler(so, replicas)
    changes = []
    for row in rows:
        assert float(row["seconds"]) == replay.next_evaluation()
        changes += replay.evaluate(float(row["seconds"]), float(row["jobs"]))
        assert int(row["desired"]) == replay.replicas, row
        assert int(row["consumers"]) >= int(row["desired"]), row
    # Right after a scale-down, the consumers told to stop are still there, finishing: they are counted.
    assert any(int(row["consumers"]) > int(row["desired"]) for row in rows)
    lines = re.findall(r"^scaler \| (\d+) jobs: (\d+) -> (\d+) consumers \(", out, re.M)
    assert lines == [(str(int(c.metric)), str(c.before), str(c.after)) for c in changes]
    assert max(int(row["desired"]) for row in rows) >= 10
    assert (tmp_path / "timeline.png").stat().st_size > 10_000


def test_ctrl_c_during_a_scale_down_lets_the_consumers_it_stopped_finish_their_jobs(tmp_path, db_url):
    # Jobs of 6 s and a burst of 20: five consumers, all at work when the emulated HPA takes one away. Ctrl-C
    # then must not send that one a second SIGTERM, which a consumer takes as an order to abort its job.
    log = tmp_path / "run.log"
    env = {"PUSH_INTERVAL_MIN": "600", "PUSH_INTERVAL_MAX": "600", "PROCESS_TIME_MIN": "6", "PROCESS_TIME_MAX": "6"}
    run = start_run(log, db_url, env)
    try:
        wait_for(run, log, r"^Running 1 pusher", 30)
        burst(db_url, 20)
        scaled_down = wait_for(run, log, r"^scaler \| \d+ jobs: \d+ -> \d+ consumers .*SIGTERM to (consumer-\d+)", 60)
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(60)
    out = output(log)
    away = scaled_down.group(1)
    assert code == 0, out
    assert "SIGTERM again" not in out, out
    assert re.search(rf"^{away} \| \[{away}\] Completed job \d+ in", out[out.index(scaled_down.group(0)) :], re.M), out
    assert re.search(r"^Consumers: .* [1-9]\d* of them with a job in hand, (\d+) of \1 exited 0$", out, re.M), out
