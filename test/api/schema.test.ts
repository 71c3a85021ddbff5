import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

/** Every table's columns, every index's columns and condition: what a migration must reproduce. */
async function shape(db: D1Database) {
  const { results: objects } = await db
    .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name != 'd1_migrations' ORDER BY type, name")
    .all<{ type: string; name: string; tbl_name: string; sql: string | null }>();
  const out: Record<string, unknown> = {};
  for (const o of objects) {
    if (o.type === "table") {
      const { results } = await db.prepare(`SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid`).bind(o.name).all();
      const fks = await db.prepare(`SELECT "table", "from", "to", on_delete FROM pragma_foreign_key_list(?1) ORDER BY id, seq`).bind(o.name).all();
      out[`table ${o.name}`] = { columns: results, foreign_keys: fks.results, checks: checksOf(o.sql ?? "") };
    } else if (o.type === "index") {
      const { results } = await db.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno").bind(o.name).all();
      const where = /\bWHERE\b([\s\S]*)$/i.exec(o.sql ?? "")?.[1]?.trim() ?? null;
      out[`index ${o.name}`] = { table: o.tbl_name, columns: results, unique: /UNIQUE/i.test(o.sql ?? ""), where };
    }
  }
  return out;
}

/** The CHECK constraints of a CREATE TABLE statement (as ALTER TABLE ADD COLUMN appends them, too), sorted. */
function checksOf(sql: string): string[] {
  const checks: string[] = [];
  for (let i = sql.search(/CHECK\s*\(/i); i >= 0; i = next(sql, i)) {
    const open = sql.indexOf("(", i);
    let depth = 0;
    let end = open;
    for (; end < sql.length; end += 1) {
      if (sql[end] === "(") depth += 1;
      if (sql[end] === ")" && --depth === 0) break;
    }
    checks.push(sql.slice(open + 1, end).replace(/\s+/g, " ").trim());
  }
  return checks.sort();
}
function next(sql: string, from: number): number {
  const rest = sql.slice(from + 5).search(/CHECK\s*\(/i);
  return rest < 0 ? -1 : from + 5 + rest;
}

async function run(db: D1Database, statements: string[]) {
  await db.batch(statements.map((s) => db.prepare(s)));
}

describe("D1 schema and migrations", () => {
  it("applying migrations/ to an empty database gives exactly schema.sql", async () => {
    await applyD1Migrations(env.SCHEMA_A, JSON.parse(env.TEST_MIGRATIONS));
    await run(env.SCHEMA_B, JSON.parse(env.TEST_SCHEMA));
    const [fromMigrations, fromFile] = [await shape(env.SCHEMA_A), await shape(env.SCHEMA_B)];
    expect(Object.keys(fromMigrations).length).toBeGreaterThan(30);
    expect(fromMigrations).toEqual(fromFile);
  });

  it("migrations alone create the reference data: four tiers with points and weights, six pools, templates, burst policies", async () => {
    const tiers = await env.SCHEMA_A.prepare("SELECT id, priority_points, max_concurrent, monthly_budget_nano, weight FROM tiers ORDER BY priority_points DESC").all();
    expect(tiers.results).toEqual([
      { id: "enterprise", priority_points: 40, max_concurrent: 100, monthly_budget_nano: null, weight: 4 },
      { id: "premium", priority_points: 30, max_concurrent: 50, monthly_budget_nano: 1_000_000_000_000, weight: 3 },
      { id: "standard", priority_points: 20, max_concurrent: 20, monthly_budget_nano: 500_000_000_000, weight: 2 },
      { id: "basic", priority_points: 10, max_concurrent: 5, monthly_budget_nano: 100_000_000_000, weight: 1 },
    ]);
    const counts = await env.SCHEMA_A.prepare(
      "SELECT (SELECT COUNT(*) FROM pools) AS pools, (SELECT COUNT(*) FROM templates) AS templates, (SELECT COUNT(*) FROM burst_policies) AS bursts, (SELECT COUNT(*) FROM clients) AS clients, (SELECT COUNT(*) FROM api_keys) AS keys",
    ).first();
    expect(counts).toEqual({ pools: 6, templates: 5, bursts: 4, clients: 0, keys: 0 });
  });

  it("a D1 made by the last version before migrations upgrades through them, keeping its rows and its operator's changes", async () => {
    const db = env.SCHEMA_B;
    // SCHEMA_B holds schema.sql from the first test; start over from the old version's own database.
    const { results } = await db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'").all<{ name: string }>();
    await run(db, ["PRAGMA foreign_keys = OFF", ...results.map((r) => `DROP TABLE ${r.name}`)]);
    await run(db, JSON.parse(env.TEST_LEGACY_SCHEMA));
    await run(db, [
      "UPDATE tiers SET max_concurrent = 77 WHERE id = 'basic'",
      "UPDATE templates SET timeout_ms = 1234 WHERE id = 'notify-sms'",
      "INSERT INTO usage_events (event_id, pool_id, client_id, request_id, via, kind, units, cost_nano, at) VALUES ('evt_old', 'openai-gpt4', 'acme', NULL, 'direct', 'consume', 5, 150000, 1767225600000)",
      "INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at, name) VALUES ('key_old', 'acme', 'abc', 'rmk_old', '[]', 1, 'kept label')",
    ]);
    await applyD1Migrations(db, JSON.parse(env.TEST_MIGRATIONS));

    expect(await shape(db)).toEqual(await shape(env.SCHEMA_A));
    expect(await db.prepare("SELECT max_concurrent, weight FROM tiers WHERE id = 'basic'").first()).toEqual({ max_concurrent: 77, weight: 1 });
    expect(await db.prepare("SELECT timeout_ms, max_attempts FROM templates WHERE id = 'notify-sms'").first()).toEqual({ timeout_ms: 1234, max_attempts: 3 });
    expect(await db.prepare("SELECT units, cost_nano FROM usage_events WHERE event_id = 'evt_old'").first()).toEqual({ units: 5, cost_nano: 150000 });
    expect(await db.prepare("SELECT name FROM api_keys WHERE id = 'key_old'").first()).toEqual({ name: "kept label" });
    expect(await db.prepare("SELECT COUNT(*) AS n FROM clients").first()).toEqual({ n: 4 });
    // Applying them again changes nothing: each migration runs once.
    await applyD1Migrations(db, JSON.parse(env.TEST_MIGRATIONS));
    expect(await db.prepare("SELECT max_concurrent FROM tiers WHERE id = 'basic'").first()).toEqual({ max_concurrent: 77 });
  });
});
