-- Migration 0005: each queue's depth and dispatches once a minute (issue 24), for the dashboard's trends.

-- One row per queue per cron minute (`at` is the cron's scheduled time, so a repeated run adds nothing).
-- depth and ready: requests queued and ready to run at that moment; dispatched: requests the scheduler
-- dispatched from the queue in the minute before it. Pruned by the retention run ('queue_samples').
CREATE TABLE IF NOT EXISTS queue_samples (
  queue TEXT NOT NULL CHECK (queue IN ('immediate', 'fast', 'normal', 'batch', 'deferred')),
  at INTEGER NOT NULL,
  depth INTEGER NOT NULL CHECK (depth >= 0),
  ready INTEGER NOT NULL CHECK (ready >= 0),
  dispatched INTEGER NOT NULL CHECK (dispatched >= 0),
  PRIMARY KEY (queue, at)
);
CREATE INDEX IF NOT EXISTS queue_samples_at ON queue_samples (at);

-- Its retention setting (GET/PUT /admin/retention), as migration 0004 seeds the other kinds'.
INSERT INTO retention_settings (kind, days, updated_at) VALUES ('queue_samples', 31, 1767225600000)
ON CONFLICT (kind) DO NOTHING;
