-- An AI run's messages and events are written in the same transaction as the run, by the one
-- records writer, and nothing deletes a run apart from them. The foreign keys' per-row checks
-- (a lookup of the run for every message and event) were half of PostgreSQL's CPU per
-- recorded AI call (perf: AfterTriggerEndQuery → RI_FKey_check), so they go; the (run_id, …)
-- indexes stay for the reads.
ALTER TABLE keel_ai_messages DROP CONSTRAINT keel_ai_messages_run_id_fkey;
ALTER TABLE keel_ai_events DROP CONSTRAINT keel_ai_events_run_id_fkey;
