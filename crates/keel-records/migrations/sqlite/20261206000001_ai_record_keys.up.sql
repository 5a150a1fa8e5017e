-- PostgreSQL's AI record keys change here (messages keyed by (run_id, position), events by
-- (run_id, id), BRIN time indexes). SQLite keeps its schema: its id keys are the rowid (no
-- index of their own), it has no BRIN, and its (run_id, …) indexes already serve the reads
-- in the same order. Nothing to do but keep the two databases' migrations in step.
SELECT 1;
