DROP TABLE keel_ai_events;
DROP TABLE keel_ai_messages;
DROP TABLE keel_ai_runs;
DROP TABLE keel_email_logs;
