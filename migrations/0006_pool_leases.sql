-- Migration 0006: token leases per pool (issue 22). auto: the pool's object lends slices of its bucket
-- to isolates that consume from it often; off: every consume is decided by the pool's object.
ALTER TABLE pool_settings ADD COLUMN leases TEXT NOT NULL DEFAULT 'auto' CHECK (leases IN ('auto', 'off'));
