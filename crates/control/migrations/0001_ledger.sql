-- The ledger's durable state. Portable SQL: this same file runs unchanged
-- on SQLite (embedded mode) and PostgreSQL / CockroachDB (cluster mode): no
-- AUTOINCREMENT, no SQLite-only types or pragmas, ids assigned by the
-- ledger, BIGINT and TEXT only (no binary column, so no BLOB vs BYTEA split
-- and no second migration folder).

CREATE TABLE IF NOT EXISTS ledger_versions (
    version   TEXT PRIMARY KEY,
    bundle    TEXT NOT NULL,
    digest    TEXT NOT NULL,
    staged_ns BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS ledger_artifacts (
    version TEXT NOT NULL,
    name    TEXT NOT NULL,
    hash    TEXT NOT NULL,
    PRIMARY KEY (version, name)
);

CREATE TABLE IF NOT EXISTS ledger_roles (
    version  TEXT NOT NULL,
    role     TEXT NOT NULL,
    artifact TEXT NOT NULL,
    PRIMARY KEY (version, role, artifact)
);

CREATE TABLE IF NOT EXISTS ledger_history (
    seq     BIGINT PRIMARY KEY,
    at_ns   BIGINT NOT NULL,
    version TEXT NOT NULL,
    what    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS ledger_deploys (
    id         BIGINT PRIMARY KEY,
    version    TEXT NOT NULL,
    phase      TEXT NOT NULL,
    reason     TEXT,
    started_ns BIGINT NOT NULL,
    ended_ns   BIGINT
);

CREATE INDEX IF NOT EXISTS ledger_deploys_version ON ledger_deploys (version, id);

CREATE TABLE IF NOT EXISTS ledger_deploy_components (
    deploy_id BIGINT NOT NULL,
    component TEXT NOT NULL,
    role      TEXT NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT,
    PRIMARY KEY (deploy_id, component)
);

CREATE TABLE IF NOT EXISTS ledger_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
