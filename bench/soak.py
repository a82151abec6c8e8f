"""`make soak`: the article's maximum of 20 consumers and a pusher at full speed against the embedded
server for a set time, then the queue is drained and every job accounted for. Not part of `make test`.

Reports jobs pushed, done, recorded twice (must be 0), left in the queue (must be 0), worked on twice
(only after a failure), errors seen in the loops' output, the peak number of server connections and
the throughput. Exits 1 if anything was lost or doubled.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import localpg  # noqa: E402

CONNECTIONS_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
ERRORS = re.compile(r"Traceback|Error|Lost the database connection|Cannot connect|did not land")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the pusher runs (default 60)")
    parser.add_argument("--consumers", type=int, default=20, help="how many consumers (default 20)")
    parser.add_argument(
        "--process-time-max",
        default="0.05",
        help="each job's longest work, in seconds (default 0.05, so the consumers can keep up)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300, help="seconds allowed to drain (default 300)")
    args = parser.parse_args()

    pg = localpg.LocalPostgres().init()
    url = pg.url()
    logs = Path(tempfile.mkdtemp(prefix="jobqueue-soak-"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PUSH_INTERVAL_MIN": "0",
        "PUSH_INTERVAL_MAX": "0",
        "PUSH_COUNT": "0",
        "PROCESS_TIME_MIN": "0",
        "PROCESS_TIME_MAX": args.process_time_max,
    }

    def start(name):
        script = ROOT / name.split("-")[0] / f"{name.split('-')[0]}.py"
        return subprocess.Popen(
            [sys.executable, str(script)],
            env={**env, "HOSTNAME": name},
            stdout=open(logs / f"{name}.log", "w"),
            stderr=subprocess.STDOUT,
        )

    consumers = {f"consumer-{i}": start(f"consumer-{i}") for i in range(1, args.consumers + 1)}
    pusher = start("pusher")
    peak = 0
    try:
        print(f"Soaking: 1 pusher at full speed, {args.consumers} consumers, {args.seconds:g}s; logs in {logs}")
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            peak = max(peak, pg.scalar(CONNECTIONS_SQL))
            time.sleep(0.5)
        pusher.send_signal(signal.SIGTERM)
        pusher.wait(30)
        pushed_at = time.monotonic()
        print(f"Pusher stopped; draining {pg.scalar('SELECT count(*) FROM jobs')} queued jobs")
        while pg.scalar("SELECT count(*) FROM jobs") and time.monotonic() - pushed_at < args.drain_timeout:
            peak = max(peak, pg.scalar(CONNECTIONS_SQL))
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        for proc in consumers.values():
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in consumers.values()]

        outputs = {path.stem: path.read_text() for path in logs.glob("*.log")}
        pushed = len(re.findall(r"^Pushed job \d+", outputs["pusher"], re.M))
        done = pg.scalar("SELECT count(*) FROM done_jobs")
        recorded_twice = pg.scalar("SELECT count(*) FROM (SELECT id FROM done_jobs GROUP BY id HAVING count(*) > 1) d")
        left = pg.scalar("SELECT count(*) FROM jobs")
        in_db = pg.scalar("SELECT count(*) FROM (SELECT id FROM jobs UNION SELECT id FROM done_jobs) j")
        worked = re.findall(r"Processing job (\d+):", "".join(outputs.values()))
        errors = sum(len(ERRORS.findall(text)) for text in outputs.values())
        exits_ok = all(code == 0 for code in codes) and pusher.returncode == 0

        print(f"pushed          {pushed}")
        print(f"done            {done}")
        print(f"recorded twice  {recorded_twice}")
        print(f"left            {left}")
        print(f"worked twice    {len(worked) - len(set(worked))}")
        print(f"errors seen     {errors}")
        print(f"peak conns      {peak}")
        print(f"throughput      {done / elapsed:.0f} jobs/s over {elapsed:.0f}s")
        ok = pushed == done == in_db and recorded_twice == 0 and left == 0 and exits_ok
        print("OK: every job pushed was done exactly once" if ok else "FAILED: see the numbers above")
        return 0 if ok else 1
    finally:
        for proc in [pusher, *consumers.values()]:
            if proc.poll() is None:
                proc.kill()
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
