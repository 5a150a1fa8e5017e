-- What the email and ai handlers did: one row per send or call (each attempt), with the AI
-- calls' messages and events. Recipients and message contents are stored masked.
CREATE TABLE keel_email_logs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT,
    queue        TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    job_name     TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    template     TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    subject      TEXT NOT NULL,
    status       TEXT NOT NULL,
    smtp_code    BIGINT,
    smtp_reply   TEXT,
    message_id   TEXT,
    error        TEXT,
    actor        TEXT,
    trace_id     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL
);
CREATE INDEX keel_email_logs_created ON keel_email_logs (created_at);
CREATE INDEX keel_email_logs_job ON keel_email_logs (queue, job_id);

CREATE TABLE keel_ai_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id         TEXT,
    queue             TEXT NOT NULL,
    job_id            TEXT NOT NULL,
    job_name          TEXT NOT NULL,
    attempt           BIGINT NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    status            TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd          REAL NOT NULL,
    latency_ms        BIGINT NOT NULL,
    http_status       BIGINT,
    error             TEXT,
    trace_id          TEXT NOT NULL,
    started_at        BIGINT NOT NULL,
    finished_at       BIGINT NOT NULL
);
CREATE INDEX keel_ai_runs_started ON keel_ai_runs (started_at);
CREATE INDEX keel_ai_runs_job ON keel_ai_runs (queue, job_id);

CREATE TABLE keel_ai_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     BIGINT NOT NULL REFERENCES keel_ai_runs(id) ON DELETE CASCADE,
    tenant_id  TEXT,
    position   BIGINT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    truncated  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX keel_ai_messages_run ON keel_ai_messages (run_id, position);

CREATE TABLE keel_ai_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    BIGINT NOT NULL REFERENCES keel_ai_runs(id) ON DELETE CASCADE,
    tenant_id TEXT,
    trace_id  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX keel_ai_events_run ON keel_ai_events (run_id, id);
CREATE INDEX keel_ai_events_at ON keel_ai_events (at);

-- The seeds' PluginExecutionLog on the http handler's runs: the plugin and the error's stack.
ALTER TABLE keel_job_runs ADD COLUMN plugin_id TEXT;
ALTER TABLE keel_job_runs ADD COLUMN error_stack TEXT;
CREATE INDEX keel_job_runs_plugin ON keel_job_runs (plugin_id, id);
