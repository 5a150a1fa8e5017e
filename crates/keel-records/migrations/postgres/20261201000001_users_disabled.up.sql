-- Disabled accounts: they can no longer sign in and their sessions end.
ALTER TABLE keel_users ADD COLUMN disabled_at BIGINT;
