-- As on PostgreSQL: the AI messages and events lose their foreign keys to the runs (written
-- in one transaction with their run, never deleted apart). SQLite drops a constraint by
-- rebuilding the table.
CREATE TABLE keel_ai_messages_next (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     BIGINT NOT NULL,
    tenant_id  TEXT,
    position   BIGINT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    truncated  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO keel_ai_messages_next (id, run_id, tenant_id, position, role, content, truncated, created_at)
    SELECT id, run_id, tenant_id, position, role, content, truncated, created_at FROM keel_ai_messages;
DROP TABLE keel_ai_messages;
ALTER TABLE keel_ai_messages_next RENAME TO keel_ai_messages;
CREATE INDEX keel_ai_messages_run ON keel_ai_messages (run_id, position);

CREATE TABLE keel_ai_events_next (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    BIGINT NOT NULL,
    tenant_id TEXT,
    trace_id  TEXT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL
);
INSERT INTO keel_ai_events_next (id, run_id, tenant_id, trace_id, at, kind, message)
    SELECT id, run_id, tenant_id, trace_id, at, kind, message FROM keel_ai_events;
DROP TABLE keel_ai_events;
ALTER TABLE keel_ai_events_next RENAME TO keel_ai_events;
CREATE INDEX keel_ai_events_run ON keel_ai_events (run_id, id);
CREATE INDEX keel_ai_events_at ON keel_ai_events (at);
