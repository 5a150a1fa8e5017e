-- As on PostgreSQL: a revision per instance, raised by every transaction that changes the
-- instance or one of its steps (a process that remembers the state at that revision need not
-- read it again), and the status index by creation, not by `updated_at` (which moves at every
-- step's end). The steps keep their foreign key here: SQLite drops one only by rebuilding the
-- table, and checks it in process at little cost.
ALTER TABLE keel_wf_instances ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
DROP INDEX keel_wf_instances_status;
CREATE INDEX keel_wf_instances_status ON keel_wf_instances (status, created_at);
