ALTER TABLE keel_users DROP COLUMN disabled_at;
