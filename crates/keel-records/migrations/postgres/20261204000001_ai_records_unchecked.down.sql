ALTER TABLE keel_ai_events ADD CONSTRAINT keel_ai_events_run_id_fkey
    FOREIGN KEY (run_id) REFERENCES keel_ai_runs(id) ON DELETE CASCADE;
ALTER TABLE keel_ai_messages ADD CONSTRAINT keel_ai_messages_run_id_fkey
    FOREIGN KEY (run_id) REFERENCES keel_ai_runs(id) ON DELETE CASCADE;
