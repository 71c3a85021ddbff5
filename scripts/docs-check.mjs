#!/usr/bin/env node
// `npm run docs:check`: run every ```sh block of README.md (its tour) and docs/api-guide.md (the
// walkthrough), in order, against a fresh local service, and check that each call answers what the
// text says it answers.
//
//   1. a temporary persist dir whose local D1 gets the migrations and seed.sql (one wrangler call), and
//      an env file with the tokens of .dev.vars.example (the ones the guide uses)
//   2. `wrangler dev` with the sample workers of examples/ (as `npm start` runs them, --test-scheduled
//      included, so the guide can fire the cron with `curl $BASE/__scheduled`), ready when GET / is 200
//   3. one bash session per file (cwd: a temporary dir), BASE exported, `curl` wrapped by a shell
//      function that keeps each call's status, headers and body; a file's blocks run in order, so its
//      variables carry over from block to block
//   4. each block is cut into steps at its `# expect:` lines; a step makes exactly one curl call and
//      its expectation is checked against that call (see EXPECTATIONS below). A block marked with
//      `<!-- docs-check: skip <reason> -->` on the line before it is not run (listed at the end)
//
// EXPECTATIONS, a comment line after the call:
//   # expect: 201, .client.id == "umbrella", .counts.active_keys == 0
//   # expect: 200|202                                   either status
//   # expect within 15s: 200, .totals.cost_nano > 0     re-run the step (it must be a read) until it holds
//   checks: SUBJECT [| length] [OP VALUE]; SUBJECT is a path into the JSON body (`.a.b[0]["x-y"]`, `.`
//   the whole body), `header:Name` or `body` (the raw text); OP is == != < <= > >= contains (string
//   or array) or ~ (a regular expression); VALUE is a JSON literal or $VAR (a shell variable's value).
//   A check without OP asks that the field be there and not null.
//
// Usage: npm run docs:check [-- file.md ...] (default: README.md docs/api-guide.md). Exit status 0 when every step held, 1 otherwise (the
// message names the file, line, command, expectation, status and body). Knobs: DOCS_CHECK_PORT (first
// port to try, default 8931), DOCS_CHECK_KEEP=1 (keep the temporary dir: wrangler.log, each call's files).

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { DEV_CONFIGS, executeD1File, freePortPair, freshD1Sql, HOST, killGroup, ROOT, startWrangler } from "./local-wrangler.mjs";

const FILES = (process.argv.length > 2 ? process.argv.slice(2) : ["README.md", "docs/api-guide.md"]).map((f) => resolve(ROOT, f));
const FIRST_PORT = Number(process.env.DOCS_CHECK_PORT ?? 8931);
const KEEP = process.env.DOCS_CHECK_KEEP === "1";
const READY_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 60_000;
const WATCHDOG_MS = 600_000;
const SKIP = /^<!--\s*docs-check:\s*skip\b\s*(.*?)\s*-->$/;
const EXPECT = /^#\s*expect(?:\s+within\s+(\d+)s)?:\s*(.*)$/;

// ---- the guide: blocks and steps -------------------------------------------------------------------

/** The guide's ```sh blocks, each with its first line's number, its steps, and whether it is skipped. */
function parseGuide(file) {
  const text = readFileSync(file, "utf8");
  const lines = text.split("\n");
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```sh") continue;
    let before = i - 1;
    while (before >= 0 && lines[before].trim() === "") before--;
    const skip = before >= 0 ? SKIP.exec(lines[before].trim()) : null;
    const start = i + 1;
    let end = start;
    while (end < lines.length && lines[end].trim() !== "```") end++;
    if (end === lines.length) throw new Error(`${rel(file)}:${i + 1}: a \`\`\`sh block that never ends`);
    blocks.push({ file, line: i + 1, skip: skip ? skip[1] || "no reason given" : null, steps: parseSteps(file, lines.slice(start, end), start + 1) });
    i = end;
  }
  return blocks;
}

/** Cut a block at its expectation lines: a step is the lines up to an expectation (or the block's end). */
function parseSteps(file, lines, firstLine) {
  const steps = [];
  let step = { line: firstLine, code: [], expects: [] };
  for (let k = 0; k < lines.length; k++) {
    const m = EXPECT.exec(lines[k].trim());
    if (!m) {
      if (step.expects.length) {
        steps.push(step);
        step = { line: firstLine + k, code: [], expects: [] };
      }
      step.code.push(lines[k]);
      continue;
    }
    step.expects.push({ line: firstLine + k, text: lines[k].trim(), withinS: m[1] ? Number(m[1]) : 0, ...parseExpectation(m[2], `${rel(file)}:${firstLine + k}`) });
  }
  if (step.code.some((l) => l.trim() && !l.trim().startsWith("#")) || step.expects.length) steps.push(step);
  for (const st of steps) st.file = file;
  return steps;
}

/** "201, .a.b == 1, header:X-Y ~ \"z\"" -> { statuses: [201], checks: [...] } */
function parseExpectation(src, where) {
  const parts = splitTopLevel(src);
  const statuses = parts.shift()?.split("|").map((s) => Number(s.trim()));
  if (!statuses?.length || statuses.some((s) => !Number.isInteger(s) || s < 100 || s > 599)) {
    throw new Error(`${where}: an expectation starts with a status (e.g. 200 or 200|202): ${src}`);
  }
  return { statuses, checks: parts.map((p) => parseCheck(p.trim(), where)) };
}

/** Split at commas outside strings, brackets and braces. */
function splitTopLevel(src) {
  const out = [];
  let depth = 0;
  let quote = false;
  let cur = "";
  for (let i = 0; i < src.length; i++) {
    const ch = src[i];
    if (quote) {
      cur += ch;
      if (ch === "\\") cur += src[++i] ?? "";
      else if (ch === '"') quote = false;
      continue;
    }
    if (ch === '"') quote = true;
    else if (ch === "[" || ch === "{") depth++;
    else if (ch === "]" || ch === "}") depth--;
    else if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
      continue;
    }
    cur += ch;
  }
  if (cur.trim()) out.push(cur);
  return out;
}

const CHECK = /^(\.\S*|header:[A-Za-z0-9-]+|body)(\s*\|\s*length)?(?:\s+(==|!=|<=|>=|<|>|contains|~)\s+(.+))?$/;

function parseCheck(src, where) {
  const m = CHECK.exec(src);
  if (!m) throw new Error(`${where}: cannot read the check "${src}" (SUBJECT [| length] [OP VALUE])`);
  const [, subject, length, op, value] = m;
  let literal;
  if (op && !value.startsWith("$")) {
    try {
      literal = JSON.parse(value);
    } catch {
      throw new Error(`${where}: the value of "${src}" is not a JSON literal or $VAR`);
    }
  }
  return { src, subject, path: subject.startsWith(".") ? parsePath(subject, where) : null, length: Boolean(length), op, variable: op && value.startsWith("$") ? value.slice(1) : null, literal };
}

/** ".a.b[0][\"x-y\"]" -> ["a", "b", 0, "x-y"]; "." -> [] */
function parsePath(src, where) {
  if (src === ".") return [];
  const keys = [];
  const re = /\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\["([^"]*)"\]/y;
  let at = 0;
  while (at < src.length) {
    re.lastIndex = at;
    const m = re.exec(src);
    if (!m) throw new Error(`${where}: cannot read the path ${src}`);
    keys.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : m[3]));
    at = re.lastIndex;
  }
  return keys;
}

// ---- checking one call -------------------------------------------------------------------------------

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
}

/** The first failed check of `expect` against `call`, as a sentence; null when every check holds. */
async function failure(expect, call, shellVar) {
  if (!expect.statuses.includes(call.status)) return `expected status ${expect.statuses.join(" or ")}, got ${call.status}`;
  for (const check of expect.checks) {
    let actual;
    if (check.subject === "body") actual = call.text;
    else if (check.subject.startsWith("header:")) actual = call.headers.get(check.subject.slice(7).toLowerCase()) ?? undefined;
    else {
      if (call.json === undefined) return `${check.src}: the body is not JSON`;
      actual = check.path.reduce((v, k) => (v === undefined || v === null ? undefined : v[k]), call.json);
    }
    if (check.length) actual = actual === undefined || actual === null ? undefined : actual.length;
    const shown = actual === undefined ? "nothing" : JSON.stringify(actual);
    if (!check.op) {
      if (actual === undefined || actual === null) return `${check.src}: expected a value, got ${shown}`;
      continue;
    }
    const want = check.variable ? await shellVar(check.variable) : check.literal;
    let ok;
    switch (check.op) {
      case "==": ok = deepEqual(actual, want); break;
      case "!=": ok = actual !== undefined && !deepEqual(actual, want); break;
      case "<": ok = typeof actual === "number" && actual < want; break;
      case "<=": ok = typeof actual === "number" && actual <= want; break;
      case ">": ok = typeof actual === "number" && actual > want; break;
      case ">=": ok = typeof actual === "number" && actual >= want; break;
      case "contains":
        ok = typeof actual === "string" ? actual.includes(want) : Array.isArray(actual) && actual.some((v) => deepEqual(v, want));
        break;
      case "~": ok = typeof actual === "string" && new RegExp(want).test(actual); break;
    }
    if (!ok) return `${check.src}: got ${shown}${check.variable ? ` (${check.variable}=${JSON.stringify(want)})` : ""}`;
  }
  return null;
}

// ---- the bash session ----------------------------------------------------------------------------------

/** The `curl` the guide's blocks call: real curl, with each call's status, headers and body kept in $RM_DIR. */
const PRELUDE = String.raw`
set -o pipefail
curl() {
  local n=$(( $(<"$RM_DIR/seq") + 1 ))
  echo "$n" > "$RM_DIR/seq"
  local args=() include=0 out=""
  while [ $# -gt 0 ]; do
    case "$1" in
      -i|--include) include=1 ;;
      -o|--output) out="$2"; shift ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  command curl -sS --max-time 30 -D "$RM_DIR/$n.headers" -o "$RM_DIR/$n.body" -w '%{http_code}' "\${args[@]}" > "$RM_DIR/$n.status"
  local rc=$?
  if [ -n "$out" ]; then cp "$RM_DIR/$n.body" "$out"; else
    [ $include = 1 ] && cat "$RM_DIR/$n.headers"
    cat "$RM_DIR/$n.body"
  fi
  return $rc
}
`.replace("\\${args[@]}", "${args[@]}");

class Shell {
  constructor(cwd, env) {
    this.dir = join(cwd, ".calls");
    mkdirSync(this.dir);
    writeFileSync(join(this.dir, "seq"), "0\n");
    this.proc = spawn("bash", ["--noprofile", "--norc"], { cwd, env: { ...env, RM_DIR: this.dir }, stdio: ["pipe", "pipe", "inherit"] });
    this.waiters = [];
    createInterface({ input: this.proc.stdout }).on("line", (line) => this.waiters.shift()?.(line));
    this.proc.stdin.write(`${PRELUDE}\n`);
    this.n = 0;
  }

  /** Run `code` in the session (variables persist); its output goes to files. */
  async run(code) {
    const n = ++this.n;
    const file = join(this.dir, `step-${n}.sh`);
    writeFileSync(file, `${code}\n`);
    const done = new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`the step did not end within ${STEP_TIMEOUT_MS / 1000} s`)), STEP_TIMEOUT_MS);
      this.waiters.push((line) => {
        clearTimeout(timer);
        res(line);
      });
    });
    this.proc.stdin.write(`source ${JSON.stringify(file)} > ${JSON.stringify(`${file}.out`)} 2> ${JSON.stringify(`${file}.err`)} < /dev/null; echo "__rm_done__ $?"\n`);
    const marker = await done;
    return { code: Number(marker.split(" ")[1]), stdout: readFileSync(`${file}.out`, "utf8"), stderr: readFileSync(`${file}.err`, "utf8") };
  }

  calls() {
    return Number(readFileSync(join(this.dir, "seq"), "utf8"));
  }

  /** What the call numbered `n` answered. */
  call(n) {
    const text = readFileSync(join(this.dir, `${n}.body`), "utf8");
    const rawHeaders = existsSync(join(this.dir, `${n}.headers`)) ? readFileSync(join(this.dir, `${n}.headers`), "utf8") : "";
    const headers = new Map();
    for (const line of rawHeaders.split(/\r?\n/)) {
      const i = line.indexOf(":");
      if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: Number(readFileSync(join(this.dir, `${n}.status`), "utf8")), headers, text, json };
  }

  async variable(name) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`not a shell variable name: ${name}`);
    return (await this.run(`printf '%s' "\${${name}-}"`)).stdout;
  }

  close() {
    this.proc.stdin.end();
    this.proc.kill("SIGKILL");
  }
}

// ---- the service ---------------------------------------------------------------------------------------

let stateDir = null;
let dev = null;
let shell = null;

function rel(path) {
  return relative(ROOT, path);
}

async function startService() {
  const persist = join(stateDir, "state");
  mkdirSync(persist);
  const logFile = join(stateDir, "wrangler.log");
  // The tokens the guide uses are those of `npm start` (.dev.vars.example): the guide is true for both.
  const envFile = join(stateDir, "docs.env");
  copyFileSync(join(ROOT, ".dev.vars.example"), envFile);
  const sqlFile = join(stateDir, "d1.sql");
  writeFileSync(sqlFile, freshD1Sql());
  await executeD1File({ persist, sqlFile, logFile });

  const port = await freePortPair(FIRST_PORT, 50);
  const base = `http://${HOST}:${port}`;
  dev = startWrangler([
    "dev", ...DEV_CONFIGS, "--ip", HOST, "--port", String(port), "--inspector-port", String(port + 1000),
    "--persist-to", persist, "--log-level", "warn", "--env-file", envFile, "--test-scheduled", "--show-interactive-dev-session=false",
  ], { logFile });
  let exited = null;
  dev.exited.then((e) => (exited = e));
  const readyBy = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) throw new Error(`wrangler dev exited early (${exited.signal ?? exited.code}):\n${dev.tail()}`);
    if (Date.now() > readyBy) throw new Error(`not ready at ${base}/ within ${READY_TIMEOUT_MS / 1000} s:\n${dev.tail()}`);
    const up = await fetch(`${base}/`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 0);
    if (up === 200) return base;
    await sleep(250);
  }
}

// ---- the run ---------------------------------------------------------------------------------------------

class StepFailed extends Error {}

function describe(step, detail) {
  const command = step.code.filter((l) => l.trim() && !l.trim().startsWith("#")).join("\n    ");
  return `${rel(step.file)}:${step.line}\n    ${command}\n  ${detail}`;
}

async function runStep(step) {
  const deadline = Date.now() + Math.max(0, ...step.expects.map((e) => e.withinS)) * 1000;
  for (;;) {
    const before = shell.calls();
    const ran = await shell.run(step.code.join("\n"));
    const made = shell.calls() - before;
    if (!step.expects.length) {
      if (made) throw new StepFailed(describe(step, `makes ${made} curl call(s) with no "# expect:" line after it`));
      if (ran.code !== 0) throw new StepFailed(describe(step, `exited with status ${ran.code}: ${ran.stderr.trim()}`));
      return 0;
    }
    if (made !== 1) throw new StepFailed(describe(step, `a step with an expectation makes exactly one curl call; this one made ${made}`));
    const call = shell.call(before + 1);
    let problem = ran.code !== 0 ? `the step exited with status ${ran.code}: ${ran.stderr.trim() || "(no message)"}` : null;
    for (const expect of step.expects) {
      if (problem) break;
      const why = await failure(expect, call, (name) => shell.variable(name));
      if (why) problem = `${expect.text} (line ${expect.line})\n  failed: ${why}`;
    }
    if (!problem) return 1;
    if (Date.now() < deadline) {
      await sleep(500);
      continue;
    }
    throw new StepFailed(describe(step, `${problem}\n  body (${call.status}): ${call.text.slice(0, 800)}`));
  }
}

async function main() {
  const started = Date.now();
  const guides = FILES.map((file) => ({ file, blocks: parseGuide(file) }));
  stateDir = mkdtempSync(join(tmpdir(), "rm-docs-check-"));
  const base = await startService();
  console.log(`docs-check: service ready at ${base} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  let calls = 0;
  let checked = 0;
  const skipped = [];
  for (const [n, { file, blocks }] of guides.entries()) {
    const work = join(stateDir, `work-${n}`);
    mkdirSync(work);
    shell = new Shell(work, { PATH: process.env.PATH, HOME: work, LANG: "C.UTF-8", BASE: base });
    for (const [i, block] of blocks.entries()) {
      if (block.skip) {
        skipped.push(`${rel(file)}:${block.line} (${block.skip})`);
        continue;
      }
      let made = 0;
      for (const step of block.steps) made += await runStep(step);
      calls += made;
      checked++;
      console.log(`  ok  ${rel(file)}:${block.line} (block ${i + 1}): ${made} call(s)`);
    }
    shell.close();
    shell = null;
  }
  console.log(`docs-check: ${calls} calls in ${checked} blocks of ${guides.map((g) => rel(g.file)).join(", ")} did what the text says, in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (skipped.length) console.log(`docs-check: not checked (marked skip): ${skipped.join("; ")}`);
}

async function cleanup() {
  shell?.close();
  if (dev) {
    killGroup(dev, "SIGTERM");
    const gone = await Promise.race([dev.exited.then(() => true), sleep(5000).then(() => false)]);
    if (!gone) killGroup(dev, "SIGKILL");
  }
  if (stateDir && KEEP) console.log(`docs-check: state kept in ${stateDir}`);
  else if (stateDir) rmSync(stateDir, { recursive: true, force: true });
}

const watchdog = setTimeout(async () => {
  console.error(`docs-check: no result within ${WATCHDOG_MS / 1000} s`);
  await cleanup();
  process.exit(1);
}, WATCHDOG_MS);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await cleanup();
    process.exit(130);
  });
}

let status = 0;
try {
  await main();
} catch (err) {
  status = 1;
  if (err instanceof StepFailed) console.error(`docs-check: FAILED at ${err.message}`);
  else console.error(`docs-check: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  if (dev?.tail().trim()) console.error(`--- wrangler dev (last lines) ---\n${dev.tail()}`);
}
clearTimeout(watchdog);
await cleanup();
process.exit(status);
