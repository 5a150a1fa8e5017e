-- The console's per-minute chart reads job runs by finish time.
CREATE INDEX keel_job_runs_finished ON keel_job_runs (finished_at);
