-- An AI call writes a run, its messages and its events (seven rows); each btree entry is a
-- large part of what PostgreSQL spends on them (a server-side COPY of 30,000 calls: 22.7 µs a
-- call with the old keys, 15.7 µs with these). What the reads need stays:
-- - a run's messages are read by (run_id, position): that is their key (the id stays, from its
--   sequence, unindexed: nothing looks a message up by it);
-- - a run's events by (run_id, id), and the event log newest first in that order (run ids grow
--   as event ids do): that is their key;
-- - an event's time only filters ranges of append-only rows, which a BRIN index serves for
--   almost nothing per insert (summarized as its page ranges fill, by autovacuum; until then a
--   range is read, as without the index). A run's start keeps its btree: the runs' listings
--   and the usage chart filter by it, and it must not depend on autovacuum.
ALTER TABLE keel_ai_messages DROP CONSTRAINT keel_ai_messages_pkey;
DROP INDEX keel_ai_messages_run;
ALTER TABLE keel_ai_messages ADD CONSTRAINT keel_ai_messages_pkey PRIMARY KEY (run_id, position);

ALTER TABLE keel_ai_events DROP CONSTRAINT keel_ai_events_pkey;
DROP INDEX keel_ai_events_run;
DROP INDEX keel_ai_events_at;
ALTER TABLE keel_ai_events ADD CONSTRAINT keel_ai_events_pkey PRIMARY KEY (run_id, id);
CREATE INDEX keel_ai_events_at ON keel_ai_events USING brin (at) WITH (autosummarize = on);
