#!/usr/bin/env node
// Bring a D1 made by an older version of schema.sql up to date, before schema.sql itself is applied
// (CREATE TABLE IF NOT EXISTS does not change a table that already exists):
//   - columns added to existing tables are added (a "duplicate column" answer means already there);
//   - tables whose CHECK constraints widened are rebuilt with the new definition, keeping their rows.
// Idempotent. `npm start` runs it on the local D1; before a deploy run it on the remote one:
//   node scripts/upgrade-d1.mjs --remote [--env staging]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Columns added after their table first shipped: [table, column definition]. */
const ADDED_COLUMNS = [
  ["api_keys", "name TEXT"],
  ["client_quotas", "weight INTEGER CHECK (weight IS NULL OR weight BETWEEN 1 AND 1000)"],
];

/** Tables whose definition changed in a way ALTER cannot express: [table, a marker the new definition contains]. */
const REBUILT_TABLES = [["alerts", "'sla_breach'"]];

const env = { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false" };

function d1(where, args) {
  return spawnSync("npx", ["--no-install", "wrangler", "d1", "execute", "DB", ...where, ...args], { env, encoding: "utf8" });
}

/** The CREATE TABLE statement of `table` in schema.sql. */
function definitionOf(table) {
  const schema = readFileSync(new URL("../schema.sql", import.meta.url), "utf8");
  const match = schema.match(new RegExp(`CREATE TABLE IF NOT EXISTS ${table} \\(([\\s\\S]*?)\\n\\);`));
  if (!match) throw new Error(`schema.sql has no table ${table}`);
  return match[1].split("\n").filter((l) => !l.trim().startsWith("--")).join("\n");
}

export function upgradeD1(where) {
  for (const [table, column] of ADDED_COLUMNS) {
    const r = d1(where, ["--command", `ALTER TABLE ${table} ADD COLUMN ${column}`]);
    const out = `${r.stdout}${r.stderr}`;
    if (r.status !== 0 && !/duplicate column|no such table/i.test(out)) throw new Error(`adding ${table}.${column}: ${out}`);
  }
  for (const [table, marker] of REBUILT_TABLES) {
    const r = d1(where, ["--json", "--command", `SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '${table}'`]);
    if (r.status !== 0) throw new Error(`reading ${table}: ${r.stdout}${r.stderr}`);
    const sql = JSON.parse(r.stdout)[0]?.results?.[0]?.sql;
    if (!sql || sql.includes(marker)) continue;
    const dir = mkdtempSync(join(tmpdir(), "rm-upgrade-"));
    const file = join(dir, "rebuild.sql");
    writeFileSync(file, [
      `CREATE TABLE ${table}_rebuilt (${definitionOf(table)}\n);`,
      `INSERT INTO ${table}_rebuilt SELECT * FROM ${table};`,
      `DROP TABLE ${table};`,
      `ALTER TABLE ${table}_rebuilt RENAME TO ${table};`,
    ].join("\n"));
    const rebuilt = d1(where, ["--file", file]);
    rmSync(dir, { recursive: true, force: true });
    if (rebuilt.status !== 0) throw new Error(`rebuilding ${table}: ${rebuilt.stdout}${rebuilt.stderr}`);
    console.log(`upgraded table ${table} (rows kept; indexes are recreated by schema.sql)`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  if (!args.includes("--local") && !args.includes("--remote")) {
    console.error("usage: node scripts/upgrade-d1.mjs --local|--remote [--env <name>]");
    process.exit(2);
  }
  upgradeD1(args);
}
