-- Workflows: versioned definitions, instances and one execution row per step of an instance.
-- JSON (specs, inputs, outputs) is stored as TEXT so one set of queries serves both databases.
-- Step rows are rewritten as a step moves (queued, running, completed): room left on each page
-- (fillfactor) keeps those updates on the page (HOT), without new index entries.
CREATE TABLE keel_wf_definitions (
    id          BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT REFERENCES keel_tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    spec        TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('config', 'api')),
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE keel_wf_instances (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT,
    workflow      TEXT NOT NULL,
    version       BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    input         TEXT NOT NULL,
    error         TEXT,
    trigger_kind  TEXT NOT NULL,
    trigger_ref   TEXT,
    actor         TEXT NOT NULL,
    reruns        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    updated_at    BIGINT NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX keel_wf_instances_created ON keel_wf_instances (created_at, id);
CREATE INDEX keel_wf_instances_status ON keel_wf_instances (status, updated_at);
CREATE INDEX keel_wf_instances_workflow ON keel_wf_instances (workflow, created_at);

CREATE TABLE keel_wf_steps (
    instance_id  TEXT NOT NULL REFERENCES keel_wf_instances(id) ON DELETE CASCADE,
    step         TEXT NOT NULL,
    position     BIGINT NOT NULL,
    queue        TEXT NOT NULL,
    job_name     TEXT NOT NULL,
    needs        TEXT NOT NULL,
    on_failure   TEXT NOT NULL CHECK (on_failure IN ('fail', 'continue')),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'queued', 'running', 'completed', 'failed', 'cancelled')),
    attempts     BIGINT NOT NULL,
    job_id       TEXT,
    input        TEXT,
    output       TEXT,
    error        TEXT,
    stack        TEXT,
    queued_at    BIGINT,
    started_at   BIGINT,
    finished_at  BIGINT,
    duration_ms  BIGINT,
    PRIMARY KEY (instance_id, step)
) WITH (fillfactor = 70);
