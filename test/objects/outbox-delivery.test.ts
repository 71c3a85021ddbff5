import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { Ends } from "../../src/objects/scheduler/ends";
import { Outbox } from "../../src/objects/scheduler/outbox";
import { insertRequestLog, MAX_ERROR_CHARS } from "../../src/storage/request-log";
import { scheduler } from "../support/helpers";

/**
 * The outbox builds each batch's request-log rows as JSON in the shard's own SQLite and hands that text
 * to D1 (no object per request): every column arrives as stored, errors cut to MAX_ERROR_CHARS, more
 * than one batch goes out in one delivery, and an entry whose request is no longer stored is dropped.
 */

const ROWS = 1205; // more than one batch of FINISHED_BATCH (1,000)

describe("the request-log outbox", () => {
  it("delivers every finished request exactly as stored, over more than one batch, and drops entries with no request", async () => {
    const prefix = `req_obx${crypto.randomUUID().replace(/-/g, "").slice(0, 12)}_`;
    const longError = `${"e".repeat(MAX_ERROR_CHARS)}this part is cut`;
    const ghosts = [1, 2, 3].map((i) => `${prefix}ghost${i}`);
    const delivered = await runInDurableObject(scheduler(), async (_i, state) => {
      const sql = state.storage.sql;
      // Odd rows completed with a cost, even rows failed with an error longer than the log keeps.
      sql.exec(
        `WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < ?2)
         INSERT INTO requests (id, client_id, tier, max_concurrent, template, queue, status, max_attempts, estimate_nano, actual_nano,
                               attempts, created_at, updated_at, not_before, finished_at, error)
         SELECT ?1 || substr('0000' || v, -5), 'acme', 'enterprise', 10, 'tmpl-outbox', 'batch',
                CASE WHEN v % 2 = 1 THEN 'completed' ELSE 'failed' END, 3, 1000000 + v, CASE WHEN v % 2 = 1 THEN 900000 + v END,
                1 + v % 3, 1700000000000 + v, 1700000001000 + v, 1700000000000 + v, 1700000002000 + v, CASE WHEN v % 2 = 0 THEN ?3 END
         FROM n`,
        prefix, ROWS, longError,
      );
      // One request whose money is past 2^53 (exact integers: the JSON is SQLite's, not a JS number's).
      sql.exec("UPDATE requests SET estimate_nano = 9007199254740993, actual_nano = 9007199254740995 WHERE id = ?1 || '00001'", prefix);
      sql.exec("INSERT INTO finished_outbox (id, optimizer) SELECT id, 0 FROM requests WHERE id LIKE ?1 || '%'", prefix);
      for (const id of ghosts) sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, 0)", id);
      await new Outbox(env, sql, new Ends(sql)).flush();
      return sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM finished_outbox WHERE id LIKE ?1 || '%'", prefix).one().n;
    });
    expect(delivered).toBe(0); // every entry left the outbox, the ghosts too

    const { results } = await env.DB.prepare("SELECT * FROM request_log WHERE id LIKE ?1 || '%' ORDER BY id").bind(prefix).all<Record<string, unknown>>();
    expect(results).toHaveLength(ROWS);
    const big = await env.DB.prepare("SELECT CAST(estimate_nano AS TEXT) AS e, CAST(actual_nano AS TEXT) AS a FROM request_log WHERE id = ?1 || '00001'").bind(prefix).first();
    expect(big).toEqual({ e: "9007199254740993", a: "9007199254740995" });
    for (const [k, row] of results.entries()) {
      const v = k + 1;
      if (v === 1) continue; // the one past 2^53, read as text above
      expect(row).toEqual({
        id: `${prefix}${String(v).padStart(5, "0")}`, client_id: "acme", template: "tmpl-outbox", queue: "batch",
        status: v % 2 === 1 ? "completed" : "failed", estimate_nano: 1_000_000 + v, actual_nano: v % 2 === 1 ? 900_000 + v : null,
        attempts: 1 + (v % 3), created_at: 1_700_000_000_000 + v, finished_at: 1_700_000_002_000 + v,
        error: v % 2 === 0 ? "e".repeat(MAX_ERROR_CHARS) : null,
      });
    }
    const ghostRows = await env.DB.prepare("SELECT COUNT(*) AS n FROM request_log WHERE id IN (SELECT value FROM json_each(?1))").bind(JSON.stringify(ghosts)).first<{ n: number }>();
    expect(ghostRows!.n).toBe(0);
  });

  it("cuts errors at MAX_ERROR_CHARS characters (code points) on both paths into request_log, never inside a surrogate pair", async () => {
    const prefix = `req_obu${crypto.randomUUID().replace(/-/g, "").slice(0, 12)}_`;
    // 'a' then astral characters (two UTF-16 units each): a cut by UTF-16 units would split the last pair.
    const error = `a${"\u{1F600}".repeat(MAX_ERROR_CHARS + 20)}`;
    const kept = `a${"\u{1F600}".repeat(MAX_ERROR_CHARS - 1)}`;
    await runInDurableObject(scheduler(), async (_i, state) => {
      const sql = state.storage.sql;
      sql.exec(
        `INSERT INTO requests (id, client_id, tier, max_concurrent, template, queue, status, max_attempts, estimate_nano, attempts, created_at, updated_at, not_before, finished_at, error)
         VALUES (?1, 'acme', 'enterprise', 10, 'tmpl-outbox', 'batch', 'failed', 3, 5, 1, 1, 2, 1, 3, ?2)`,
        `${prefix}outbox`, error,
      );
      sql.exec("INSERT INTO finished_outbox (id, optimizer) VALUES (?, 0)", `${prefix}outbox`);
      await new Outbox(env, sql, new Ends(sql)).flush();
    });
    await insertRequestLog(env.DB, [{
      id: `${prefix}direct`, client_id: "acme", template: "tmpl-outbox", queue: "batch", status: "failed",
      estimate_nano: 5, actual_nano: null, attempts: 1, created_at: 1, finished_at: 3, error,
    }]);
    const { results } = await env.DB.prepare("SELECT id, error FROM request_log WHERE id LIKE ?1 || '%' ORDER BY id").bind(prefix).all<{ id: string; error: string }>();
    expect(results.map((r) => r.id)).toEqual([`${prefix}direct`, `${prefix}outbox`]);
    for (const row of results) {
      expect(Array.from(row.error)).toHaveLength(MAX_ERROR_CHARS);
      expect(row.error).toBe(kept);
    }
  });
});
