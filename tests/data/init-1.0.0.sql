-- The queue's schema. Runs once when the database is created: docker-compose mounts this file into
-- /docker-entrypoint-initdb.d, and kustomize generates the Kubernetes ConfigMap from it. Safe to run twice.

-- A job waits here until a consumer claims it. A consumer's DELETE stays uncommitted while it works, so
-- every other session, KEDA's SELECT COUNT(*) included, still sees the row: queued plus in progress.
CREATE TABLE IF NOT EXISTS jobs (
    id         serial      PRIMARY KEY,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Consumers claim the oldest job first (ORDER BY created_at LIMIT 1); this index finds it without a
-- scan of the whole queue.
CREATE INDEX IF NOT EXISTS jobs_created_at_idx ON jobs (created_at);

-- Every claim deletes a row, and its index entry stays, dead, at the head of jobs_created_at_idx until a
-- vacuum removes it: each later claim steps over all of them. By default autovacuum waits for a fifth of
-- the table to be dead, 100,000 entries in a queue of 500,000, by which time a claim takes twice as long.
-- Here it is due after 1000, and comes within autovacuum_naptime (5 s, db/server-settings.conf). The
-- measurements: README, Performance.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

-- One row per finished job, written in the same transaction as the job's DELETE. The primary key makes
-- recording a job twice impossible, not just unlikely.
CREATE TABLE IF NOT EXISTS done_jobs (
    id           integer     PRIMARY KEY,
    completed_at timestamptz NOT NULL DEFAULT now()
);

-- Wakes idle consumers: every statement that inserts jobs notifies the channel `jobs`, which each
-- consumer LISTENs on, so a job from anywhere (the pusher, psql, a bulk load) is picked up at once. The
-- notification is sent when the inserting transaction commits, never for one that rolls back.
-- One per statement, not one per row: a notification wakes every listening consumer, and a consumer
-- keeps claiming until the queue is empty, so one is enough however many rows the statement inserts,
-- and a bulk INSERT ... SELECT of a million rows pays for one notification, not a million.
-- (PostgreSQL would fold identical notifications within one transaction anyway, but only after a
-- row-level trigger had queued and compared each of them.) The payload is empty: consumers take the
-- oldest job, not the one announced.
CREATE OR REPLACE FUNCTION jobs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobs', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER jobs_notify
    AFTER INSERT ON jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION jobs_notify();
