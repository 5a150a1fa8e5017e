-- Workflow writes made cheaper (every step of every instance writes here):
-- A revision per instance, raised by every transaction that changes the instance or one of its
-- steps: a process that remembers an instance's state at a revision reads only the revision
-- (with the row lock) and the full state only when another writer moved it on.
ALTER TABLE keel_wf_instances ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
-- `updated_at` moves at every step's end; indexed, each of those updates wrote a new entry in
-- every index of the table. By status and creation instead (what the listings filter and sort
-- by); the reconciler finds live instances by status and checks `updated_at` on the rows.
DROP INDEX keel_wf_instances_status;
CREATE INDEX keel_wf_instances_status ON keel_wf_instances (status, created_at);
-- Steps are written in the transactions that write their instance and instances are never
-- deleted: the foreign key only cost a lookup a step row inserted. (Anything that comes to
-- delete instances deletes their steps in the same transaction.)
ALTER TABLE keel_wf_steps DROP CONSTRAINT keel_wf_steps_instance_id_fkey;
