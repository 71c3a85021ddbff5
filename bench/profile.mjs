#!/usr/bin/env node
// CPU profile of one worker's isolate under `wrangler dev`, taken through workerd's own inspector, and a
// summary of where the samples went (self and inclusive, by function).
//
//   node --experimental-websocket bench/profile.mjs [--worker resource-manager] [--seconds 2]
//        [--wait-for FILE --marker TEXT] [--pid WORKERD_PID] [--out bench/results/profile.cpuprofile]
//   node --experimental-websocket bench/profile.mjs --all 1 [--seconds 2] [--wait-for ... --marker ...]
//
// Run it beside a benchmark (e.g. `node bench/queue.mjs > /tmp/q.out &`, then this with
// `--wait-for /tmp/q.out --marker draining` to start when the drain starts). It finds workerd's
// inspector among the ports workerd listens on (`ss -ltnp`) and asks each for its targets
// (`/json/list`); the benchmarks run wrangler with its inspector proxy off, and workerd still serves
// its inspector on a port of its own. The .cpuprofile opens in Chrome DevTools (Performance tab).
// Node 20 needs --experimental-websocket (Node 22 has WebSocket built in). Profiling slows the
// isolate by 10-20%: read shares, not rates, from a profiled run.
//
// --all 1 profiles every isolate of the runtime at once (the service, the sample workers, the local D1
// database, wrangler's entry worker) and prints each one's time on the runtime's thread: V8 takes a
// sample only while its isolate runs, so the time its samples cover (each interval up to 1 ms) is an
// estimate of that. Under `wrangler dev` every isolate shares one thread: this shows what the service's
// own code takes of it, and what the dev stand-ins (D1's SQLite, above all) take beside it.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, inspectorTargets, inspectorUrl } from "./inspector.mjs";

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ""), process.argv[i + 1]);
const WORKER = args.get("worker") ?? "resource-manager";
const SECONDS = Number(args.get("seconds") ?? 2);
const OUT = args.get("out") ?? "bench/results/profile.cpuprofile";
const WAIT_FOR = args.get("wait-for");
const MARKER = args.get("marker") ?? "";
// Several wrangler dev instances of one worker (a benchmark's product and its baseline, or another
// engineer's): --pid names the workerd process whose isolate to profile.
const PID = args.get("pid");
const ALL = args.get("all") === "1";
if (!(SECONDS > 0)) throw new Error("--seconds must be a positive number");

async function waitForStart() {
  if (!WAIT_FOR) return;
  for (let i = 0; i < 6000; i++) {
    if (existsSync(WAIT_FOR) && readFileSync(WAIT_FOR, "utf8").includes(MARKER)) return;
    await sleep(100);
  }
  throw new Error(`"${MARKER}" did not appear in ${WAIT_FOR} within 10 minutes`);
}

async function profile(url) {
  return (await profileAll([url]))[0];
}

/** CPU profiles of several isolates over the same SECONDS. */
async function profileAll(urls) {
  const sessions = await Promise.all(urls.map((url) => connect(url)));
  for (const session of sessions) {
    await session.call("Profiler.enable");
    await session.call("Profiler.setSamplingInterval", { interval: 200 });
  }
  await Promise.all(sessions.map((session) => session.call("Profiler.start")));
  await sleep(SECONDS * 1000);
  const profiles = await Promise.all(sessions.map(async (session) => (await session.call("Profiler.stop")).result.profile));
  for (const session of sessions) session.close();
  return profiles;
}

/** The time a profile's samples cover (each interval up to 1 ms), in ms, split into busy and idle. */
function covered(p) {
  const idleIds = new Set(p.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
  let busy = 0;
  let idle = 0;
  p.samples.forEach((id, i) => {
    const ms = Math.min(p.timeDeltas[i] / 1000, 1);
    if (idleIds.has(id)) idle += ms;
    else busy += ms;
  });
  return { busy, idle };
}

/** Self and inclusive sample shares per function (name, file, line). */
function summarize(p) {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const hits = new Map();
  for (const s of p.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
  const name = (n) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber + 1}`;
  const self = new Map();
  const inclusive = new Map();
  for (const [nodeId, count] of hits) {
    const key = name(byId.get(nodeId));
    self.set(key, (self.get(key) ?? 0) + count);
    const seen = new Set();
    for (let cur = nodeId; cur !== undefined; cur = parent.get(cur)) {
      const k = name(byId.get(cur));
      if (!seen.has(k)) inclusive.set(k, (inclusive.get(k) ?? 0) + count);
      seen.add(k);
    }
  }
  const top = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, 30)
    .map(([k, v]) => `${((100 * v) / p.samples.length).toFixed(1).padStart(6)}%  ${k}`).join("\n");
  return `${p.samples.length} samples\n--- self\n${top(self)}\n--- inclusive\n${top(inclusive)}`;
}

/** Write the service's profile to OUT and print its summary. */
function save(p, label) {
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify(p));
  console.log(`wrote ${OUT}${label}\n${summarize(p)}`);
}

await waitForStart();
if (ALL) {
  const targets = await inspectorTargets(PID);
  if (targets.length === 0) throw new Error("no workerd inspector targets (is wrangler dev running?)");
  console.log(`profiling ${targets.length} isolates for ${SECONDS} s`);
  const profiles = await profileAll(targets.map((t) => t.url));
  const rows = targets.map((t, i) => ({ name: t.name, samples: profiles[i].samples.length, ...covered(profiles[i]) })).sort((a, b) => b.busy - a.busy);
  console.log(`isolate                                             samples   busy ms  share of ${SECONDS * 1000} ms`);
  for (const r of rows.filter((r) => r.busy >= 1)) {
    console.log(`${r.name.padEnd(50)} ${String(r.samples).padStart(8)} ${r.busy.toFixed(0).padStart(9)}  ${((100 * r.busy) / (SECONDS * 1000)).toFixed(1).padStart(5)}%`);
  }
  const main = targets.findIndex((t) => t.name === WORKER || t.name.endsWith(`:${WORKER}`));
  if (main >= 0) save(profiles[main], ` (${targets[main].name})`);
} else {
  const url = await inspectorUrl(WORKER, PID);
  if (!url) throw new Error(`no workerd inspector target for ${WORKER} (is wrangler dev running?)`);
  console.log(`profiling ${url} for ${SECONDS} s`);
  save(await profile(url), "");
}
