DROP TABLE IF EXISTS keel_job_run_events;
DROP TABLE IF EXISTS keel_job_runs;
DROP TABLE IF EXISTS keel_access_log;
DROP TABLE IF EXISTS keel_audit_log;
DROP TABLE IF EXISTS keel_api_tokens;
DROP TABLE IF EXISTS keel_users;
DROP TABLE IF EXISTS keel_tenants;
