DROP TABLE keel_wf_steps;
DROP TABLE keel_wf_instances;
DROP TABLE keel_wf_definitions;
