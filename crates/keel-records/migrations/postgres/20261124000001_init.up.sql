-- Keel records, PostgreSQL. Times are milliseconds since the Unix epoch (BIGINT), as in the
-- queues; every integer is BIGINT so one set of queries serves PostgreSQL and SQLite.
CREATE TABLE keel_tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE keel_users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT REFERENCES keel_tenants(id) ON DELETE CASCADE,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    created_at     BIGINT NOT NULL
);

CREATE TABLE keel_api_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT REFERENCES keel_tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    secret_hash   TEXT NOT NULL UNIQUE,
    secret_hint   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE TABLE keel_audit_log (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    status      BIGINT NOT NULL,
    payload     TEXT
);
CREATE INDEX keel_audit_log_at ON keel_audit_log (at);
CREATE INDEX keel_audit_log_tenant ON keel_audit_log (tenant_id, id);
CREATE INDEX keel_audit_log_action ON keel_audit_log (action, id);

CREATE TABLE keel_access_log (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    cached      BIGINT NOT NULL,
    fields      TEXT NOT NULL
);
CREATE INDEX keel_access_log_at ON keel_access_log (at);
CREATE INDEX keel_access_log_tenant ON keel_access_log (tenant_id, id);

CREATE TABLE keel_job_runs (
    id           BIGSERIAL PRIMARY KEY,
    tenant_id    TEXT,
    queue        TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    status       TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    duration_ms  BIGINT,
    error        TEXT,
    worker       TEXT NOT NULL,
    trace_id     TEXT NOT NULL
);
CREATE INDEX keel_job_runs_queue ON keel_job_runs (queue, id);
CREATE INDEX keel_job_runs_job ON keel_job_runs (queue, job_id);

CREATE TABLE keel_job_run_events (
    id      BIGSERIAL PRIMARY KEY,
    run_id  BIGINT NOT NULL REFERENCES keel_job_runs(id) ON DELETE CASCADE,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX keel_job_run_events_run ON keel_job_run_events (run_id, id);
