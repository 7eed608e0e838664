-- Lucius's observations. The same text runs on SQLite (embedded mode) and
-- PostgreSQL / CockroachDB (cluster mode): BIGINT and TEXT only (flags,
-- metadata and the redacted record are JSON text, so there is no BLOB vs
-- BYTEA column to split), no AUTOINCREMENT, no backend-specific pragmas.
-- `IF NOT EXISTS` keeps it a no-op on stores created before migrations
-- were tracked.

CREATE TABLE IF NOT EXISTS lucius_observations (
    id             TEXT NOT NULL,
    at_ns          BIGINT NOT NULL,
    schema_name    TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    app            TEXT NOT NULL,
    intent         TEXT NOT NULL,
    flags          TEXT NOT NULL,
    meta           TEXT NOT NULL,
    record         TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS lucius_observations_at ON lucius_observations (at_ns);
