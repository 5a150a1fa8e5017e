-- As on PostgreSQL: an AI call's record moves onto its attempt's run row, its messages and
-- events as JSON arrays, and the three AI tables go.
ALTER TABLE keel_job_runs ADD COLUMN ai_provider TEXT;
ALTER TABLE keel_job_runs ADD COLUMN ai_model TEXT;
ALTER TABLE keel_job_runs ADD COLUMN ai_status TEXT;
ALTER TABLE keel_job_runs ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE keel_job_runs ADD COLUMN completion_tokens BIGINT;
ALTER TABLE keel_job_runs ADD COLUMN cost_usd REAL;
ALTER TABLE keel_job_runs ADD COLUMN latency_ms BIGINT;
ALTER TABLE keel_job_runs ADD COLUMN http_status BIGINT;
ALTER TABLE keel_job_runs ADD COLUMN ai_messages TEXT;
ALTER TABLE keel_job_runs ADD COLUMN ai_events TEXT;
ALTER TABLE keel_job_runs ADD COLUMN ai_message_count BIGINT;
ALTER TABLE keel_job_runs ADD COLUMN ai_event_count BIGINT;

CREATE TEMP TABLE keel_ai_moved AS
SELECT a.*,
    (SELECT json_group_array(json_object('role', m.role, 'content', m.content,
                                         'truncated', json(CASE WHEN m.truncated <> 0 THEN 'true' ELSE 'false' END))
                             ORDER BY m.position)
       FROM keel_ai_messages m WHERE m.run_id = a.id) AS messages,
    (SELECT json_group_array(json_object('at', e.at, 'kind', e.kind, 'message', e.message)
                             ORDER BY e.id)
       FROM keel_ai_events e WHERE e.run_id = a.id AND e.kind NOT IN ('completed', 'failed')) AS events,
    (SELECT COUNT(*) FROM keel_ai_messages m WHERE m.run_id = a.id) AS message_count,
    (SELECT COUNT(*) FROM keel_ai_events e
      WHERE e.run_id = a.id AND e.kind NOT IN ('completed', 'failed')) AS event_count,
    (SELECT MAX(r.id) FROM keel_job_runs r
      WHERE r.queue = a.queue AND r.job_id = a.job_id AND r.attempt = a.attempt
        AND r.status NOT IN ('stalled', 'delayed')) AS run_id
FROM keel_ai_runs a;
UPDATE keel_ai_moved SET run_id = NULL
 WHERE EXISTS (SELECT 1 FROM keel_ai_moved b
                WHERE b.run_id = keel_ai_moved.run_id AND b.id > keel_ai_moved.id);

UPDATE keel_job_runs
   SET (ai_provider, ai_model, ai_status, prompt_tokens, completion_tokens, cost_usd,
        latency_ms, http_status, ai_messages, ai_events, ai_message_count, ai_event_count) =
       (SELECT a.provider, a.model, a.status, a.prompt_tokens, a.completion_tokens, a.cost_usd,
               a.latency_ms, a.http_status, a.messages, a.events, a.message_count, a.event_count
          FROM keel_ai_moved a WHERE a.run_id = keel_job_runs.id)
 WHERE id IN (SELECT run_id FROM keel_ai_moved WHERE run_id IS NOT NULL);

INSERT INTO keel_job_runs (tenant_id, queue, job_id, name, attempt, status, started_at,
                           finished_at, duration_ms, error, worker, trace_id, ai_provider,
                           ai_model, ai_status, prompt_tokens, completion_tokens, cost_usd,
                           latency_ms, http_status, ai_messages, ai_events, ai_message_count,
                           ai_event_count)
SELECT tenant_id, queue, job_id, job_name, attempt,
       CASE status WHEN 'completed' THEN 'completed' WHEN 'retrying' THEN 'failed' ELSE 'dead' END,
       started_at, finished_at, finished_at - started_at, error, 'keel-handlers', trace_id,
       provider, model, status, prompt_tokens, completion_tokens, cost_usd, latency_ms,
       http_status, messages, events, message_count, event_count
  FROM keel_ai_moved WHERE run_id IS NULL ORDER BY id;

DROP TABLE keel_ai_moved;
DROP TABLE keel_ai_events;
DROP TABLE keel_ai_messages;
DROP TABLE keel_ai_runs;

CREATE INDEX keel_job_runs_ai ON keel_job_runs (started_at) WHERE ai_model IS NOT NULL;
