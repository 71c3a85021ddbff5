import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Caller } from "../../src/domain/types";
import type { PoolObject } from "../../src/objects/pool";
import type { ReleaseResult, ReserveResult, Result } from "../../src/objects/pool/types";
import { keyedTable, rebuildWithoutRowid } from "../../src/objects/sqlite";
import { makePool, scheduler } from "../support/helpers";

/** Keyed tables (src/objects/sqlite.ts): WITHOUT ROWID in new objects, rebuilt once in objects made before. */

const acme: Caller = { clientId: "acme", tier: "enterprise", via: "scheduler" };
const rowidTables = (sql: SqlStorage, names: string[]) =>
  sql.exec<{ name: string }>(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (SELECT value FROM json_each(?)) AND sql NOT LIKE '%WITHOUT ROWID%' ORDER BY name",
    JSON.stringify(names),
  ).toArray().map((r) => r.name);

/** Run `fn` on a fresh object's SQLite (a pool's): scratch tables of a test's own. */
async function inScratchStorage(fn: (sql: SqlStorage) => void): Promise<void> {
  const pool = await makePool({ capacity: 10, refillPerSec: 0 });
  await runInDurableObject(env.POOL.get(env.POOL.idFromName(pool.id)), (_: PoolObject, state) => fn(state.storage.sql));
}

describe("keyed tables", () => {
  it("a rowid table is rebuilt WITHOUT ROWID once: its rows kept, new columns at their defaults, indexes made again, nothing left over", async () => {
    await inScratchStorage((sql) => {
      sql.exec("CREATE TABLE scratch (id TEXT PRIMARY KEY, a INTEGER NOT NULL)");
      sql.exec("CREATE INDEX scratch_a ON scratch (a)");
      sql.exec("INSERT INTO scratch (id, a) VALUES ('x', 1), ('y', 2), ('z', 3)");
      const table = {
        name: "scratch",
        create: "CREATE TABLE IF NOT EXISTS scratch (id TEXT PRIMARY KEY, a INTEGER NOT NULL, b INTEGER NOT NULL DEFAULT 7) WITHOUT ROWID",
        indexes: ["CREATE INDEX IF NOT EXISTS scratch_a ON scratch (a)"],
      };
      keyedTable(sql, table);
      expect(sql.exec("SELECT id, a, b FROM scratch ORDER BY id").toArray()).toEqual([{ id: "x", a: 1, b: 7 }, { id: "y", a: 2, b: 7 }, { id: "z", a: 3, b: 7 }]);
      expect(rowidTables(sql, ["scratch"])).toEqual([]);
      expect(sql.exec("SELECT name FROM sqlite_master WHERE tbl_name = 'scratch' AND type = 'index'").toArray()).toEqual([{ name: "scratch_a" }]);
      expect(sql.exec("SELECT name FROM sqlite_master WHERE name LIKE 'scratch_rowid%'").toArray()).toEqual([]);
      // Done once: a second start changes nothing.
      expect(rebuildWithoutRowid(sql, table)).toBe(false);
      keyedTable(sql, table);
      expect(sql.exec("SELECT COUNT(*) AS n FROM scratch").one().n).toBe(3);
    });
  });

  it("a rebuild stopped part-way (the old table renamed, some rows copied) is finished at the next start, nothing lost or doubled", async () => {
    await inScratchStorage((sql) => {
      sql.exec("CREATE TABLE part_rowid (id TEXT PRIMARY KEY, a INTEGER NOT NULL)");
      sql.exec("INSERT INTO part_rowid (id, a) VALUES ('x', 1), ('y', 2), ('z', 3)");
      sql.exec("CREATE TABLE part (id TEXT PRIMARY KEY, a INTEGER NOT NULL) WITHOUT ROWID");
      sql.exec("INSERT INTO part (id, a) VALUES ('x', 1)");
      const table = { name: "part", create: "CREATE TABLE IF NOT EXISTS part (id TEXT PRIMARY KEY, a INTEGER NOT NULL) WITHOUT ROWID" };
      expect(rebuildWithoutRowid(sql, table)).toBe(true);
      expect(sql.exec("SELECT id, a FROM part ORDER BY id").toArray()).toEqual([{ id: "x", a: 1 }, { id: "y", a: 2 }, { id: "z", a: 3 }]);
      expect(sql.exec("SELECT name FROM sqlite_master WHERE name = 'part_rowid'").toArray()).toEqual([]);
    });
  });

  it("the hot keyed tables of new scheduler, pool and client objects are WITHOUT ROWID", async () => {
    const pool = await makePool({ capacity: 10, refillPerSec: 0 });
    const tables = {
      scheduler: await runInDurableObject(scheduler(), (_i, state) => rowidTables(state.storage.sql, ["state", "finished_outbox"])),
      pool: await runInDurableObject(env.POOL.get(env.POOL.idFromName(pool.id)), (_i, state) => rowidTables(state.storage.sql, ["reservations", "counters"])),
      client: await runInDurableObject(env.CLIENT.get(env.CLIENT.idFromName(`layout-${crypto.randomUUID()}`)), (_i, state) =>
        rowidTables(state.storage.sql, ["jobs", "in_flight", "counted", "spend", "pool_day", "delivered"])),
    };
    expect(tables).toEqual({ scheduler: [], pool: [], client: [] });
  });

  it("a pool made before keeps its reservations through the rebuild: a held one releases, a settled one answers its replay, an expired one is swept", async () => {
    const pool = await makePool({ capacity: 10, refillPerSec: 0 });
    const stub = env.POOL.get(env.POOL.idFromName(pool.id));
    const grants = ((await stub.reserveMany(pool, ["a", "b", "c"].map((requestId, i) => ({ caller: acme, amount: 2, ttlMs: i === 2 ? 1 : 600_000, requestId })))) as Result<ReserveResult>[])
      .map((r) => (r.ok ? r.value : null));
    const [a, b, c] = grants;
    const first = ((await stub.releaseMany(pool, [{ caller: acme, reservationId: a!.reservationId, actualUsed: 1, replay: true, requestId: "a" }])) as Result<ReleaseResult>[])[0]!;
    expect(first.ok).toBe(true);
    await runInDurableObject(stub, (_: PoolObject, state) => {
      // The table as the earlier version made it: a rowid table with its index, the same rows.
      const sql = state.storage.sql;
      sql.exec("ALTER TABLE reservations RENAME TO reservations_now");
      sql.exec(`CREATE TABLE reservations (id TEXT PRIMARY KEY, client_id TEXT NOT NULL, request_id TEXT, via TEXT NOT NULL, amount INTEGER NOT NULL,
        status TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, settled_at INTEGER, consumed INTEGER, cost_nano INTEGER, event_id TEXT)`);
      sql.exec("INSERT INTO reservations SELECT * FROM reservations_now");
      sql.exec("DROP TABLE reservations_now");
      sql.exec("CREATE INDEX reservations_held ON reservations (status, expires_at)");
    });
    await abortAllDurableObjects();
    const after = env.POOL.get(env.POOL.idFromName(pool.id));
    const [replay, release] = (await after.releaseMany(pool, [
      { caller: acme, reservationId: a!.reservationId, actualUsed: 1, replay: true, requestId: "a" },
      { caller: acme, reservationId: b!.reservationId, actualUsed: 2, replay: true, requestId: "b" },
    ])) as Result<ReleaseResult>[];
    expect(replay).toEqual(first);
    expect(release).toMatchObject({ ok: true, value: { consumed: 2, refunded: 0 } });
    await runDurableObjectAlarm(after); // c's reservation (1 ms) expired: swept through the index
    await runInDurableObject(after, (_: PoolObject, state) => {
      const sql = state.storage.sql;
      expect(sql.exec<{ id: string; status: string }>("SELECT id, status FROM reservations ORDER BY request_id").toArray().map((r) => r.status)).toEqual(["released", "released", "expired"]);
      expect(rowidTables(sql, ["reservations"])).toEqual([]);
      expect(sql.exec("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = 'reservations_held'").one().n).toBe(1);
    });
    // 10 units: a used 1 of 2, b 2 of 2, c came back at expiry.
    expect((await after.availability(pool, null)).level).toBe(7);
    expect(c).not.toBeNull();
  });
});
