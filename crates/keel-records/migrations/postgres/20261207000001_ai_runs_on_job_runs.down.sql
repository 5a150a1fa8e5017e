CREATE TABLE keel_ai_runs (
    id                BIGSERIAL PRIMARY KEY,
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
    cost_usd          DOUBLE PRECISION NOT NULL,
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
    id         BIGSERIAL,
    run_id     BIGINT NOT NULL,
    tenant_id  TEXT,
    position   BIGINT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    truncated  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT keel_ai_messages_pkey PRIMARY KEY (run_id, position)
);

CREATE TABLE keel_ai_events (
    id        BIGSERIAL,
    run_id    BIGINT NOT NULL,
    tenant_id TEXT,
    trace_id  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL,
    CONSTRAINT keel_ai_events_pkey PRIMARY KEY (run_id, id)
);
CREATE INDEX keel_ai_events_at ON keel_ai_events USING brin (at) WITH (autosummarize = on);

-- Each AI row's call back as a run of the AI tables, under the same id.
INSERT INTO keel_ai_runs (id, tenant_id, queue, job_id, job_name, attempt, provider, model,
                          status, prompt_tokens, completion_tokens, cost_usd, latency_ms,
                          http_status, error, trace_id, started_at, finished_at)
SELECT id, tenant_id, queue, job_id, name, attempt, ai_provider, ai_model, ai_status,
       prompt_tokens, completion_tokens, cost_usd, latency_ms, http_status, error, trace_id,
       started_at, COALESCE(finished_at, started_at)
  FROM keel_job_runs WHERE ai_model IS NOT NULL ORDER BY id;
SELECT setval(pg_get_serial_sequence('keel_ai_runs', 'id'), COALESCE((SELECT MAX(id) FROM keel_ai_runs), 0) + 1, false);

INSERT INTO keel_ai_messages (run_id, tenant_id, position, role, content, truncated, created_at)
SELECT r.id, r.tenant_id, m.ord - 1, m.v->>'role', m.v->>'content',
       CASE WHEN (m.v->>'truncated')::boolean THEN 1 ELSE 0 END, r.started_at
  FROM keel_job_runs r
 CROSS JOIN LATERAL jsonb_array_elements(COALESCE(r.ai_messages, '[]')::jsonb) WITH ORDINALITY AS m(v, ord)
 WHERE r.ai_model IS NOT NULL ORDER BY r.id, m.ord;

-- With each call's last event, made from its columns as the listing makes it (the JSON's
-- spacing is PostgreSQL's).
INSERT INTO keel_ai_events (run_id, tenant_id, trace_id, at, kind, message)
SELECT run_id, tenant_id, trace_id, at, kind, message FROM (
    SELECT r.id AS run_id, r.tenant_id, r.trace_id, (e.v->>'at')::bigint AS at,
           e.v->>'kind' AS kind, e.v->>'message' AS message, e.ord AS ord
      FROM keel_job_runs r
     CROSS JOIN LATERAL jsonb_array_elements(COALESCE(r.ai_events, '[]')::jsonb) WITH ORDINALITY AS e(v, ord)
     WHERE r.ai_model IS NOT NULL
    UNION ALL
    SELECT r.id, r.tenant_id, r.trace_id, COALESCE(r.finished_at, r.started_at),
           CASE WHEN r.ai_status = 'completed' THEN 'completed' ELSE 'failed' END,
           json_build_object('completionTokens', r.completion_tokens, 'costUsd', r.cost_usd,
                             'durationMs', r.latency_ms, 'error', r.error, 'model', r.ai_model,
                             'promptTokens', r.prompt_tokens, 'status', r.ai_status)::text,
           9223372036854775807
      FROM keel_job_runs r WHERE r.ai_model IS NOT NULL
) x ORDER BY run_id, ord;

-- The runs that were only AI calls (no run recorder wrote them) were not runs before.
DELETE FROM keel_job_runs WHERE ai_model IS NOT NULL AND worker = 'keel-handlers';

DROP INDEX keel_job_runs_ai;
ALTER TABLE keel_job_runs
    DROP COLUMN ai_provider,
    DROP COLUMN ai_model,
    DROP COLUMN ai_status,
    DROP COLUMN prompt_tokens,
    DROP COLUMN completion_tokens,
    DROP COLUMN cost_usd,
    DROP COLUMN latency_ms,
    DROP COLUMN http_status,
    DROP COLUMN ai_messages,
    DROP COLUMN ai_events,
    DROP COLUMN ai_message_count,
    DROP COLUMN ai_event_count;
