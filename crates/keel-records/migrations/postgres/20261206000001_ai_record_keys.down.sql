DROP INDEX keel_ai_events_at;
ALTER TABLE keel_ai_events DROP CONSTRAINT keel_ai_events_pkey;
ALTER TABLE keel_ai_events ADD CONSTRAINT keel_ai_events_pkey PRIMARY KEY (id);
CREATE INDEX keel_ai_events_run ON keel_ai_events (run_id, id);
CREATE INDEX keel_ai_events_at ON keel_ai_events (at);

ALTER TABLE keel_ai_messages DROP CONSTRAINT keel_ai_messages_pkey;
ALTER TABLE keel_ai_messages ADD CONSTRAINT keel_ai_messages_pkey PRIMARY KEY (id);
CREATE INDEX keel_ai_messages_run ON keel_ai_messages (run_id, position);
