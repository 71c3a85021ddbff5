#!/usr/bin/env python3
"""What a scheduler shard's restart reads, with and without its load floor (src/objects/scheduler/load-floor.ts).

Builds a shard's tables (the columns and indexes of src/objects/scheduler/schema.ts that these queries
touch) in a file: N requests over CLIENTS clients, all but the LIVE newest held by end records (ended),
then times the restart's two reads (the last dispatch number, and the live rows with their bodies)
as they were before the floor (a scan of every row) and as they are now (the rows created from the
floor on). Native SQLite (Python's), synchronous=OFF: workerd's own is slower per row, the ratio is
what this shows.

    python3 bench/experiments/load-floor.py [N] [LIVE] [CLIENTS]     # defaults 500000 10000 50
"""
import os, sqlite3, sys, tempfile, time

N, LIVE, CLIENTS = (int(a) for a in (sys.argv[1:] + ["500000", "10000", "50"][len(sys.argv) - 1:])[:3])
T0, STEP_MS, BATCH = 1_700_000_000_000, 5, 128
path = os.path.join(tempfile.mkdtemp(), "shard.sqlite")
db = sqlite3.connect(path)
db.executescript("""
PRAGMA synchronous=OFF;
CREATE TABLE requests (id TEXT PRIMARY KEY, client_id TEXT NOT NULL, tier TEXT NOT NULL, template TEXT NOT NULL, queue TEXT NOT NULL,
  status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, estimate_nano INTEGER NOT NULL, result TEXT, error TEXT,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, not_before INTEGER NOT NULL, finished_at INTEGER, dispatch_seq INTEGER, trace_id TEXT);
CREATE INDEX requests_client_created ON requests (client_id, created_at);
CREATE INDEX requests_finished ON requests (finished_at);
CREATE TABLE request_bodies (id TEXT PRIMARY KEY, params TEXT NOT NULL, plan TEXT, estimate_detail TEXT);
CREATE TABLE end_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE ends (seq INTEGER PRIMARY KEY, finished_at INTEGER NOT NULL, last_dispatch INTEGER NOT NULL, size INTEGER NOT NULL, rows TEXT NOT NULL);
CREATE INDEX ends_finished ON ends (finished_at);
""")
ids = [f"req_{i:032x}" for i in range(N)]
db.executemany("INSERT INTO requests VALUES (?, ?, 'standard', 'tmpl', 'batch', 'queued', 0, 1000, NULL, NULL, ?, ?, ?, NULL, NULL, ?)",
               ((ids[i], f"client-{i % CLIENTS}", T0 + i * STEP_MS, T0 + i * STEP_MS, T0 + i * STEP_MS, "trace") for i in range(N)))
db.executemany("INSERT INTO request_bodies VALUES (?, '{\"tokens_used\":1}', NULL, '[]')", ((i,) for i in ids))
db.executemany("INSERT INTO end_ids VALUES (?, ?)", ((ids[i], i // BATCH + 1) for i in range(N - LIVE)))
db.executemany("INSERT INTO ends VALUES (?, ?, ?, ?, '[]')", ((s, T0 + s * BATCH * STEP_MS, s * BATCH, BATCH) for s in range(1, (N - LIVE) // BATCH + 2)))
db.commit()
db.close()

ROW = ("SELECT r.*, CASE WHEN length(b.params) <= 256 THEN b.params END AS params, b.plan, b.estimate_detail, e.seq AS end_seq "
       "FROM requests r LEFT JOIN end_ids e ON e.id = r.id LEFT JOIN request_bodies b ON b.id = r.id")
LIVE_WHERE = "r.status IN ('queued', 'dispatching', 'running') AND e.seq IS NULL"
CLIENT_IDS = ("WITH RECURSIVE c(id) AS (SELECT MIN(client_id) FROM requests UNION ALL "
              "SELECT (SELECT MIN(client_id) FROM requests WHERE client_id > c.id) FROM c WHERE c.id IS NOT NULL) ")
SINCE = "r.rowid IN (SELECT rowid FROM requests WHERE client_id IN (SELECT id FROM c) AND created_at >= ?)"
floor = T0 + (N - LIVE) * STEP_MS - 10_000  # the oldest live request's creation, less the margin (MARGIN_MS)

def before(db):
    db.execute("SELECT MAX(dispatch_seq) FROM requests").fetchone()
    db.execute("SELECT MAX(seq), MAX(last_dispatch) FROM ends").fetchone()
    return len(db.execute(f"{ROW} WHERE {LIVE_WHERE}").fetchall())

def after(db):
    db.execute("SELECT MAX(dispatch_seq) FROM requests WHERE finished_at >= ?", (floor,)).fetchone()
    db.execute("SELECT MAX(seq) FROM ends").fetchone()
    db.execute("SELECT MAX(last_dispatch) FROM ends WHERE finished_at >= ?", (floor,)).fetchone()
    return len(db.execute(f"{CLIENT_IDS} {ROW} WHERE {SINCE} AND {LIVE_WHERE} ORDER BY r.rowid", (floor,)).fetchall())

print(f"{N:,} requests over {CLIENTS} clients, {LIVE:,} live; SQLite {sqlite3.sqlite_version}")
for name, read in [("every row (before)", before), ("from the load floor", after)] * 3:
    db = sqlite3.connect(path)
    t = time.perf_counter()
    loaded = read(db)
    print(f"  {name:22} {loaded:>7,} live rows read in {(time.perf_counter() - t) * 1000:7.1f} ms")
    db.close()
