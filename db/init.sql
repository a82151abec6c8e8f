-- The queue's schema, and who may do what with it. Runs once, as the database's administrator, when the
-- database is created: docker-compose.yml mounts this file into /docker-entrypoint-initdb.d, kustomize makes
-- the Kubernetes ConfigMap from it, and `make run` and the tests apply it to their embedded server. Then
-- db/passwords.sql gives each role its password. Safe to run twice, and it is the upgrade too: applied to a
-- database an earlier version created, it brings that database to this one (docs/operations.md).

-- Every IF NOT EXISTS below that finds its object says so in a NOTICE: on a second run, all of them.
SET client_min_messages = warning;

-- A job waits here until a consumer claims it. A consumer's DELETE stays uncommitted while it works, so
-- every other session, KEDA's SELECT COUNT(*) included, still sees the row: queued plus in progress.
-- 64-bit ids: a 32-bit serial runs out after 2^31 - 1 jobs, about 18 days at `make soak`'s pace.
CREATE TABLE IF NOT EXISTS jobs (
    id         bigserial   PRIMARY KEY,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- A database made by 1.0.0 has 32-bit ids and a sequence that stops at 2^31 - 1; here both are widened
-- (on a database this file made, neither statement changes anything).
ALTER TABLE jobs ALTER COLUMN id TYPE bigint;
ALTER SEQUENCE jobs_id_seq AS bigint;

-- A payload is read whole into a consumer's memory, so one too large for a consumer (128 MiB in
-- Kubernetes) would kill every consumer that claims it. It is refused where it enters instead, with an
-- error to whoever inserts it. A job carries a reference to its data, not the data.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'jobs'::regclass AND conname = 'payload_at_most_1_mib') THEN
        ALTER TABLE jobs ADD CONSTRAINT payload_at_most_1_mib CHECK (octet_length(payload) <= 1048576);
    END IF;
END
$$;

-- Consumers claim the oldest job first (ORDER BY created_at LIMIT 1); this index finds it without a
-- scan of the whole queue.
CREATE INDEX IF NOT EXISTS jobs_created_at_idx ON jobs (created_at);

-- Every claim deletes a row, and its index entry stays, dead, at the head of jobs_created_at_idx until a
-- vacuum removes it: each later claim steps over all of them. By default autovacuum waits for a fifth of
-- the table to be dead, 100,000 entries in a queue of 500,000, by which time a claim takes twice as long.
-- Here it is due after 1000, and comes within autovacuum_naptime (db/server-settings.conf). The
-- measurements: docs/performance.md.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

-- One row per finished job, written in the same transaction as the job's DELETE. The primary key makes
-- recording a job twice impossible, not just unlikely. created_at is the job's; claimed_at, the start of
-- the consumer's transaction, which its claim began; completed_at, the moment it recorded the job: how
-- long each job waited, and how long it took. (A database 1.0.0 made has only completed_at for its older
-- rows, and there it is the claim's time.)
CREATE TABLE IF NOT EXISTS done_jobs (
    id           bigint      PRIMARY KEY,
    created_at   timestamptz,
    claimed_at   timestamptz DEFAULT now(),
    completed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE done_jobs ALTER COLUMN id TYPE bigint;
ALTER TABLE done_jobs ADD COLUMN IF NOT EXISTS created_at timestamptz;
ALTER TABLE done_jobs ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE done_jobs ALTER COLUMN claimed_at SET DEFAULT now();
ALTER TABLE done_jobs ALTER COLUMN completed_at SET DEFAULT clock_timestamp();

-- How many times each job in progress has been claimed. A consumer notes an attempt here on a connection
-- of its own, committed at once, after its claim names the job and before it works on it: its claim is
-- an uncommitted DELETE, and anything written in that transaction would vanish with a consumer that dies
-- holding the job. The row goes when the job is recorded or set aside. No foreign key to jobs: the claim's
-- DELETE would then lock this row, and the note, on the other connection, would wait for the claim.
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id          bigint      PRIMARY KEY,
    attempts        integer     NOT NULL DEFAULT 1,
    consumer        text        NOT NULL,  -- the application_name of the consumer that made the last attempt
    last_error      text,                  -- why the last attempt failed, if its consumer could say
    last_attempt_at timestamptz NOT NULL DEFAULT now()
);

-- Jobs set aside: tried MAX_ATTEMPTS times (consumer/consumer.py) without being recorded, moved here with
-- their payload by the transaction of the claim that found them spent, so that the rest of the queue goes
-- on. KEDA's query does not count them: no consumer can do anything for them, an operator must
-- (docs/guarantees.md shows how to look at them and put one back). No unique key on id: setting a job aside
-- must never fail, even for an id that was set aside before.
CREATE TABLE IF NOT EXISTS failed_jobs (
    id         bigint      NOT NULL,
    payload    text        NOT NULL,
    created_at timestamptz NOT NULL,
    attempts   integer     NOT NULL,
    reason     text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS failed_jobs_id_idx ON failed_jobs (id);

-- A queue made again (its table dropped, this file applied anew) must not hand out ids that done_jobs or
-- failed_jobs already hold: the record of such a job would fail. If any id seen is at or past the
-- sequence, the sequence moves past it; a new database's first job is still job 1.
DO $$
DECLARE
    seen bigint := greatest((SELECT max(id) FROM jobs), (SELECT max(id) FROM done_jobs),
                            (SELECT max(id) FROM failed_jobs));
BEGIN
    IF seen >= (SELECT last_value FROM jobs_id_seq) THEN
        PERFORM setval('jobs_id_seq', seen);
    END IF;
END
$$;

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

-- A role for each program, with only the rights its statements need. None is a superuser or owns a
-- table: the administrator who runs this file (the postgres image's POSTGRES_USER) owns them, and stays
-- the only one who can change the schema, read the server's files or run programs on it. Roles belong to
-- the whole server, not to this database, so they are made only if they do not exist yet; each gets its
-- password from db/passwords.sql, and cannot log in until then.
DO $$
DECLARE
    role text;
BEGIN
    FOREACH role IN ARRAY ARRAY['job_pusher', 'job_consumer', 'job_keda', 'job_watch'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', role);
        END IF;
    END LOOP;
END
$$;

-- The pusher inserts a payload (never an id or a time of its own choosing) and, after a commit whose answer
-- was cut off, looks the job's id up wherever a job can be by then.
GRANT INSERT (payload), SELECT (id) ON jobs TO job_pusher;
GRANT USAGE ON SEQUENCE jobs_id_seq TO job_pusher;
GRANT SELECT (id) ON done_jobs, failed_jobs TO job_pusher;

-- The consumer claims (a DELETE that reads the job; FOR UPDATE needs the UPDATE right on some column, though
-- nothing is updated), records, notes its attempts and sets spent jobs aside. It cannot delete a record.
GRANT SELECT (id, payload, created_at), DELETE, UPDATE (created_at) ON jobs TO job_consumer;
GRANT INSERT (id, created_at) ON done_jobs TO job_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON job_attempts TO job_consumer;
GRANT INSERT (id, payload, created_at, attempts, reason) ON failed_jobs TO job_consumer;

-- KEDA runs SELECT COUNT(*) FROM jobs, which needs the right to read one column, and a trigger on the age
-- of the oldest job reads created_at (docs/tuning.md); it reads no payload.
GRANT SELECT (id, created_at) ON jobs TO job_keda;

-- `make watch` counts each table and reads pg_stat_activity, where without pg_read_all_stats the other
-- roles' sessions would hide what they are doing.
GRANT SELECT (id) ON jobs, done_jobs, failed_jobs TO job_watch;
GRANT pg_read_all_stats TO job_watch;
