-- An AI call is one attempt of its job: its record moves onto that attempt's run row, with
-- its messages and events as JSON arrays (`[{role, content, truncated}]`,
-- `[{at, kind, message}]`), instead of a run, three messages and three events in three
-- tables of their own. Eight rows and eleven index entries a call become none beyond the
-- run's (plus one entry in an index of AI rows only): what PostgreSQL spent on them was the
-- larger part of what a recorded call cost over a plain one. TEXT, not jsonb: a write does not
-- parse them; the reads that expand them cast. Their counts are columns too, so a listing's
-- total expands nothing. A call's last event (`completed` or `failed`, with its tokens, cost
-- and time) is not stored: it is the row itself, made from its columns when read (as a job
-- run's end is); the moved calls' stored ones are left out.
ALTER TABLE keel_job_runs
    ADD COLUMN ai_provider TEXT,
    ADD COLUMN ai_model TEXT,
    ADD COLUMN ai_status TEXT,
    ADD COLUMN prompt_tokens BIGINT,
    ADD COLUMN completion_tokens BIGINT,
    ADD COLUMN cost_usd DOUBLE PRECISION,
    ADD COLUMN latency_ms BIGINT,
    ADD COLUMN http_status BIGINT,
    ADD COLUMN ai_messages TEXT,
    ADD COLUMN ai_events TEXT,
    ADD COLUMN ai_message_count BIGINT,
    ADD COLUMN ai_event_count BIGINT;

-- The recorded calls, each with its messages and events as the arrays above, and the run of
-- its attempt when one was recorded (the latest such run that is an attempt: not a stall, not
-- a postponement; one call per run).
CREATE TEMPORARY TABLE keel_ai_moved ON COMMIT DROP AS
SELECT a.*,
    (SELECT COALESCE(json_agg(json_build_object('role', m.role, 'content', m.content,
                                                'truncated', m.truncated <> 0)
                              ORDER BY m.position), '[]')::text
       FROM keel_ai_messages m WHERE m.run_id = a.id) AS messages,
    (SELECT COALESCE(json_agg(json_build_object('at', e.at, 'kind', e.kind, 'message', e.message)
                              ORDER BY e.id), '[]')::text
       FROM keel_ai_events e WHERE e.run_id = a.id AND e.kind NOT IN ('completed', 'failed')) AS events,
    (SELECT COUNT(*) FROM keel_ai_messages m WHERE m.run_id = a.id) AS message_count,
    (SELECT COUNT(*) FROM keel_ai_events e
      WHERE e.run_id = a.id AND e.kind NOT IN ('completed', 'failed')) AS event_count,
    (SELECT MAX(r.id) FROM keel_job_runs r
      WHERE r.queue = a.queue AND r.job_id = a.job_id AND r.attempt = a.attempt
        AND r.status NOT IN ('stalled', 'delayed')) AS run_id
FROM keel_ai_runs a;
UPDATE keel_ai_moved a SET run_id = NULL
 WHERE EXISTS (SELECT 1 FROM keel_ai_moved b WHERE b.run_id = a.run_id AND b.id > a.id);

UPDATE keel_job_runs r
   SET (ai_provider, ai_model, ai_status, prompt_tokens, completion_tokens, cost_usd,
        latency_ms, http_status, ai_messages, ai_events, ai_message_count, ai_event_count) =
       (SELECT a.provider, a.model, a.status, a.prompt_tokens, a.completion_tokens, a.cost_usd,
               a.latency_ms, a.http_status, a.messages, a.events, a.message_count, a.event_count
          FROM keel_ai_moved a WHERE a.run_id = r.id)
 WHERE r.id IN (SELECT run_id FROM keel_ai_moved WHERE run_id IS NOT NULL);

-- A call without a run of its own (recorded with run records off) becomes one, as the
-- handler now writes it: worker `keel-handlers`, the attempt's status as a run's.
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

DROP TABLE keel_ai_events;
DROP TABLE keel_ai_messages;
DROP TABLE keel_ai_runs;

-- The AI listings and the usage chart read AI rows by their start; only they pay for it.
CREATE INDEX keel_job_runs_ai ON keel_job_runs (started_at) WHERE ai_model IS NOT NULL;
