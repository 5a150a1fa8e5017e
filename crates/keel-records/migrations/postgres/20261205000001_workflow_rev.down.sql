DELETE FROM keel_wf_steps s WHERE NOT EXISTS (SELECT 1 FROM keel_wf_instances i WHERE i.id = s.instance_id);
ALTER TABLE keel_wf_steps ADD CONSTRAINT keel_wf_steps_instance_id_fkey
    FOREIGN KEY (instance_id) REFERENCES keel_wf_instances(id) ON DELETE CASCADE;
DROP INDEX keel_wf_instances_status;
CREATE INDEX keel_wf_instances_status ON keel_wf_instances (status, updated_at);
ALTER TABLE keel_wf_instances DROP COLUMN rev;
