-- A revision per instance, raised by every transaction that changes the instance or one of its
-- steps: a process that remembers an instance's state at a revision reads only the revision
-- (with the row lock) and the full state only when another writer moved it on.
ALTER TABLE keel_wf_instances ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
