ALTER TABLE keel_wf_instances DROP COLUMN rev;
