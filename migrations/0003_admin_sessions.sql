-- Migration 0003: dashboard sessions that logging out revokes, and failed logins counted per source
-- (issue 19). Times are epoch milliseconds, UTC.

-- One row per dashboard login. The cookie carries the id, signed; a cookie is accepted only while its
-- row exists, is not revoked and has not expired. Each login deletes a bounded number of expired rows.
CREATE TABLE IF NOT EXISTS admin_sessions (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS admin_sessions_expires ON admin_sessions (expires_at);

-- Login attempts per source address (IPv6 by /64) in a fixed window from the window's first attempt.
-- Each attempt deletes a bounded number of rows whose window has ended.
CREATE TABLE IF NOT EXISTS login_attempts (
  source TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  attempts INTEGER NOT NULL CHECK (attempts > 0)
);
CREATE INDEX IF NOT EXISTS login_attempts_window ON login_attempts (window_start);
