DROP INDEX keel_job_runs_finished;
