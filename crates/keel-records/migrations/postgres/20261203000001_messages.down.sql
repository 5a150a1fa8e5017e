DROP INDEX keel_job_runs_plugin;
ALTER TABLE keel_job_runs DROP COLUMN error_stack;
ALTER TABLE keel_job_runs DROP COLUMN plugin_id;
DROP TABLE keel_ai_events;
DROP TABLE keel_ai_messages;
DROP TABLE keel_ai_runs;
DROP TABLE keel_email_logs;
