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
    run_id     BIGINT NOT NULL,
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
    run_id    BIGINT NOT NULL,
    tenant_id TEXT,
    trace_id  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX keel_ai_events_run ON keel_ai_events (run_id, id);
CREATE INDEX keel_ai_events_at ON keel_ai_events (at);

INSERT INTO keel_ai_runs (id, tenant_id, queue, job_id, job_name, attempt, provider, model,
                          status, prompt_tokens, completion_tokens, cost_usd, latency_ms,
                          http_status, error, trace_id, started_at, finished_at)
SELECT id, tenant_id, queue, job_id, name, attempt, ai_provider, ai_model, ai_status,
       prompt_tokens, completion_tokens, cost_usd, latency_ms, http_status, error, trace_id,
       started_at, COALESCE(finished_at, started_at)
  FROM keel_job_runs WHERE ai_model IS NOT NULL ORDER BY id;

INSERT INTO keel_ai_messages (run_id, tenant_id, position, role, content, truncated, created_at)
SELECT r.id, r.tenant_id, m.key, json_extract(m.value, '$.role'),
       json_extract(m.value, '$.content'),
       CASE WHEN json_extract(m.value, '$.truncated') THEN 1 ELSE 0 END, r.started_at
  FROM keel_job_runs r, json_each(COALESCE(r.ai_messages, '[]')) m
 WHERE r.ai_model IS NOT NULL ORDER BY r.id, m.key;

INSERT INTO keel_ai_events (run_id, tenant_id, trace_id, at, kind, message)
SELECT run_id, tenant_id, trace_id, at, kind, message FROM (
    SELECT r.id AS run_id, r.tenant_id, r.trace_id, json_extract(e.value, '$.at') AS at,
           json_extract(e.value, '$.kind') AS kind, json_extract(e.value, '$.message') AS message,
           e.key AS ord
      FROM keel_job_runs r, json_each(COALESCE(r.ai_events, '[]')) e
     WHERE r.ai_model IS NOT NULL
    UNION ALL
    SELECT r.id, r.tenant_id, r.trace_id, COALESCE(r.finished_at, r.started_at),
           CASE WHEN r.ai_status = 'completed' THEN 'completed' ELSE 'failed' END,
           json_object('completionTokens', r.completion_tokens, 'costUsd', r.cost_usd,
                       'durationMs', r.latency_ms, 'error', r.error, 'model', r.ai_model,
                       'promptTokens', r.prompt_tokens, 'status', r.ai_status),
           9223372036854775807
      FROM keel_job_runs r WHERE r.ai_model IS NOT NULL
) ORDER BY run_id, ord;

DELETE FROM keel_job_runs WHERE ai_model IS NOT NULL AND worker = 'keel-handlers';

DROP INDEX keel_job_runs_ai;
ALTER TABLE keel_job_runs DROP COLUMN ai_event_count;
ALTER TABLE keel_job_runs DROP COLUMN ai_message_count;
ALTER TABLE keel_job_runs DROP COLUMN ai_events;
ALTER TABLE keel_job_runs DROP COLUMN ai_messages;
ALTER TABLE keel_job_runs DROP COLUMN http_status;
ALTER TABLE keel_job_runs DROP COLUMN latency_ms;
ALTER TABLE keel_job_runs DROP COLUMN cost_usd;
ALTER TABLE keel_job_runs DROP COLUMN completion_tokens;
ALTER TABLE keel_job_runs DROP COLUMN prompt_tokens;
ALTER TABLE keel_job_runs DROP COLUMN ai_status;
ALTER TABLE keel_job_runs DROP COLUMN ai_model;
ALTER TABLE keel_job_runs DROP COLUMN ai_provider;
