-- Each program's password, taken from its own connection string, so that the string is the one place the
-- password is written. Runs after init.sql (which makes the roles), as the administrator, with psql and
-- the strings in its environment: the postgres image runs it from /docker-entrypoint-initdb.d with the
-- environment Compose or the StatefulSet gives the container (the same Secret keys the programs read), and
-- tools/localpg.py runs it for `make run` and the tests. Applying it again sets the passwords again.
--
--   PUSHER_DATABASE_URL    postgresql://job_pusher:<password>@<host>/<database>    the pusher's
--   CONSUMER_DATABASE_URL  postgresql://job_consumer:...                          the consumers'
--   KEDA_DATABASE_URL      postgresql://job_keda:...                              KEDA's trigger's
--   WATCH_DATABASE_URL     postgresql://job_watch:...                             `make watch`'s
--
-- A string must be a URI that names its role and password; characters that are special in a URI (@ : / ?
-- # % and the like) are percent-encoded in the password, as libpq expects them.

-- The statements below carry the strings: keep them out of the server's log even if one fails, and keep
-- psql's error messages to their first line, which quotes no string.
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
\set VERBOSITY terse

-- The percent-encoded text of a URI part, decoded: %40 is @.
CREATE FUNCTION pg_temp.uri_decode(part text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(convert_from(string_agg(CASE WHEN m[1] IS NOT NULL THEN decode(substr(m[1], 2), 'hex')
                                                 ELSE convert_to(m[2], 'UTF8') END, ''::bytea ORDER BY n),
                                 'UTF8'), '')
    FROM regexp_matches(part, '(%[0-9A-Fa-f]{2})|([^%]+)', 'g') WITH ORDINALITY AS parts(m, n)
$$;

-- Gives `role` the password of the connection string in the environment variable `variable`. Raises, and
-- so stops the script, if the string is missing, is not such a URI, or names another role; the message
-- never quotes the string, which holds the password.
CREATE PROCEDURE pg_temp.set_password(role text, variable text, url text)
LANGUAGE plpgsql AS $$
DECLARE
    parts text[] := regexp_match(url, '^postgres(?:ql)?://([^:@/?#]*):([^@/?#]*)@');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
        RAISE EXCEPTION 'there is no role %: apply db/init.sql first', role;
    ELSIF url = '' THEN
        RAISE EXCEPTION '% is not set: the connection string of role %', variable, role;
    ELSIF parts IS NULL THEN
        RAISE EXCEPTION '% is not a URI such as postgresql://%:<password>@<host>/<database>', variable, role;
    ELSIF pg_temp.uri_decode(parts[1]) <> role THEN
        RAISE EXCEPTION '% names a role other than %', variable, role;
    END IF;
    EXECUTE format('ALTER ROLE %I PASSWORD %L', role, pg_temp.uri_decode(parts[2]));
END
$$;

-- \getenv leaves a variable as it was when its environment variable is unset: then it is empty.
\set pusher ''
\set consumer ''
\set keda ''
\set watch ''
\getenv pusher PUSHER_DATABASE_URL
\getenv consumer CONSUMER_DATABASE_URL
\getenv keda KEDA_DATABASE_URL
\getenv watch WATCH_DATABASE_URL
CALL pg_temp.set_password('job_pusher', 'PUSHER_DATABASE_URL', :'pusher');
CALL pg_temp.set_password('job_consumer', 'CONSUMER_DATABASE_URL', :'consumer');
CALL pg_temp.set_password('job_keda', 'KEDA_DATABASE_URL', :'keda');
CALL pg_temp.set_password('job_watch', 'WATCH_DATABASE_URL', :'watch');
