"""The article's consumer loop, as the article writes it: the baseline `make bench` compares against.

A new connection on every pass, a one-second sleep when the queue is empty, a print for each job. Only
what a benchmark needs is changed: the connection string comes from DATABASE_URL, and the work's length
from PROCESS_TIME_MIN and PROCESS_TIME_MAX (the article: 2 to 10 s; the benchmark: 0). Not part of the
product: consumer/consumer.py is the consumer to use.
"""

import os
import random
import socket
import time

import psycopg2

DATABASE_URL = os.environ["DATABASE_URL"]
PROCESS_TIME_MIN = float(os.environ.get("PROCESS_TIME_MIN", 2))
PROCESS_TIME_MAX = float(os.environ.get("PROCESS_TIME_MAX", 10))
pod_name = os.environ.get("HOSTNAME") or socket.gethostname()

while True:
    # As in the article: psycopg2's `with connect(...)` ends the transaction but does not close the
    # connection; the next pass drops the last reference to it, which closes it.
    with psycopg2.connect(DATABASE_URL) as conn:
        with conn.cursor() as cur:
            # Fetch and lock a job
            cur.execute("""
                DELETE FROM jobs
                WHERE id = (
                    SELECT id FROM jobs
                    ORDER BY created_at
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING id, payload
            """)

            job = cur.fetchone()

            if job:
                job_id, payload = job
                print(f"[{pod_name}] Processing job {job_id}: {payload}")

                process_time = random.uniform(PROCESS_TIME_MIN, PROCESS_TIME_MAX)
                time.sleep(process_time)

                # Mark as done
                cur.execute("INSERT INTO done_jobs (id) VALUES (%s)", (job_id,))
                conn.commit()
                print(f"[{pod_name}] Completed job {job_id} in {process_time:.2f}s")
            else:
                time.sleep(1)
