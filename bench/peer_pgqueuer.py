"""pgqueuer's side of bench/peers.py, run with the Python of .venv/peers (bench/requirements-peers.txt).

`pgq run peer_pgqueuer:main` starts a worker from `main`, written as pgqueuer's deployment guide writes it
(docs/guides/deployment.md): an async context manager that yields a PgQueuer on one asyncpg connection,
opened from the libpq environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, which
peers.py sets), with one entrypoint. (The README's quickstart returns the PgQueuer from a plain coroutine,
which `pgq run` 1.6.0 refuses: "Factory must return an async context manager".) peers.py queues the
backlog with enqueue(N): one call of the list form of Queries.enqueue, pgqueuer's bulk enqueue.
"""

from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

ENTRYPOINT = "noop"


@asynccontextmanager
async def main():
    connection = await asyncpg.connect()
    pgq = PgQueuer(AsyncpgDriver(connection))

    # No work at all: what is measured is the queue's own cost per job.
    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        pass

    yield pgq


async def enqueue(count):
    connection = await asyncpg.connect()
    try:
        await Queries(AsyncpgDriver(connection)).enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)
    finally:
        await connection.close()
