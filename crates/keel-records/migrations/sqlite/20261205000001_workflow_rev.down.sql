DROP INDEX keel_wf_instances_status;
CREATE INDEX keel_wf_instances_status ON keel_wf_instances (status, updated_at);
ALTER TABLE keel_wf_instances DROP COLUMN rev;
