"""procrastinate's side of bench/peers.py, run with the Python of .venv/peers (bench/requirements-peers.txt).

`procrastinate --app=peer_procrastinate.app worker` starts a worker on `app`, written as procrastinate's
connector guide writes it for the environment: a PsycopgConnector with no arguments reads the libpq
variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, which peers.py sets). peers.py queues the
backlog with enqueue(N): one call of batch_defer_async, procrastinate's bulk defer.
"""

import procrastinate

app = procrastinate.App(connector=procrastinate.PsycopgConnector())


# No work at all: what is measured is the queue's own cost per job. Async, as the worker runs it in its
# own event loop; a sync task would also pay for a hop to a thread.
@app.task(name="noop")
async def noop():
    pass


async def enqueue(count):
    async with app.open_async():
        await noop.batch_defer_async(*[{}] * count)
