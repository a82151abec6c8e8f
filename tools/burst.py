"""`make burst JOBS=200`: that many jobs at once, pushed by the project's own pusher (no pause between two jobs,
PUSH_COUNT jobs, then it exits 0), into the system `make run` started, or into DATABASE_URL if it is given
(the pusher's connection string: its role may insert jobs).

`make run` writes where its database is, and each program's connection string, to .venv/make-run.json while it
runs; this reads it.
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNING = ROOT / ".venv" / "make-run.json"


def running_url(program):
    """The connection string `program` (pusher, watch, ...) has in the `make run` under way, or None."""
    try:
        running = json.loads(RUNNING.read_text())
        os.kill(running["pid"], 0)  # the file outlives a run killed with SIGKILL: is it still there?
        return running["urls"][program]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def database_url(what, program):
    url = os.environ.get("DATABASE_URL") or running_url(program)
    if not url:
        sys.exit(
            f"make {what}: no `make run` is running (start one in another terminal), and no DATABASE_URL was given"
        )
    return url


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="how many jobs (default 200)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs (JOBS) must be 1 or more")
    env = {
        **os.environ,
        "DATABASE_URL": database_url("burst", "pusher"),
        "PUSH_INTERVAL_MIN": "0",
        "PUSH_INTERVAL_MAX": "0",
        "PUSH_COUNT": str(args.jobs),
        "HOSTNAME": "burst",
    }
    print(f"Pushing {args.jobs} jobs with pusher/pusher.py, no pause between them", flush=True)
    os.execve(sys.executable, [sys.executable, str(ROOT / "pusher" / "pusher.py")], env)


if __name__ == "__main__":
    main()
