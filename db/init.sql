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

-- One row per finished job, written in the same transaction as the job's DELETE. The primary key makes
-- recording a job twice impossible, not just unlikely.
CREATE TABLE IF NOT EXISTS done_jobs (
    id           integer     PRIMARY KEY,
    completed_at timestamptz NOT NULL DEFAULT now()
);
