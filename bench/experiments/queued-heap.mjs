// The service isolate's live heap per queued request, from two heap snapshots of one `bench/queue.mjs` run.
//
//   node --experimental-websocket bench/experiments/queued-heap.mjs       (Node 20; Node 22 needs no flag)
//
// Starts `node bench/queue.mjs` with no second backlog and no baseline (its other QUEUE_BENCH_* settings
// from the environment: the default backlog is 10,000). Through the runtime's inspector it takes a heap
// snapshot of the Resource Manager's isolate (every object of its scheduler shards, pools and clients
// lives there under `wrangler dev`) when the enqueues begin, and another when the whole backlog is
// queued (the scheduler stopped). A snapshot is taken after a full GC: it holds what is live. Prints
// both, the growth per queued request, and the kinds of objects that grew most. The snapshots pause
// the isolate for a second or two each: read no rate from this run.
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, inspectorUrl } from "../inspector.mjs";

const bench = spawn(process.execPath, ["bench/queue.mjs"], {
  cwd: new URL("../..", import.meta.url),
  env: { ...process.env, QUEUE_BENCH_SECOND: "0", QUEUE_BENCH_BASELINE: "0", CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false" },
  stdio: ["ignore", "pipe", "pipe"],
});
let output = "";
bench.stdout.on("data", (d) => { output += d; });
bench.stderr.on("data", (d) => { output += d; });
const ended = new Promise((resolve) => bench.on("exit", resolve));
process.on("exit", () => bench.kill());

async function waitFor(pattern) {
  for (let i = 0; i < 6000; i++) {
    const m = output.match(pattern);
    if (m) return m;
    if (bench.exitCode !== null) break;
    await sleep(20);
  }
  throw new Error(`queued-heap: ${pattern} did not appear in the benchmark's output:\n${output}`);
}

/** A heap snapshot's live bytes and object count in all, and per kind (node type and, for objects, constructor). */
async function snapshot() {
  const url = await inspectorUrl("resource-manager");
  if (!url) throw new Error("queued-heap: no inspector of the resource-manager isolate found (ss -ltnp)");
  const session = await connect(url);
  const chunks = [];
  session.onEvent((m) => { if (m.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(m.params.chunk); });
  await session.call("HeapProfiler.enable");
  await session.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  session.close();
  const snap = JSON.parse(chunks.join(""));
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [t, n, s] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const kinds = new Map();
  let bytes = 0;
  let objects = 0;
  for (let i = 0; i < snap.nodes.length; i += fields.length) {
    const type = types[snap.nodes[i + t]];
    const kind = type === "object" || type === "closure" ? `${type} ${snap.strings[snap.nodes[i + n]]}` : type;
    const k = kinds.get(kind) ?? { bytes: 0, count: 0 };
    k.bytes += snap.nodes[i + s];
    k.count += 1;
    kinds.set(kind, k);
    bytes += snap.nodes[i + s];
    objects += 1;
  }
  return { bytes, objects, kinds };
}

const mb = (b) => (b / 1e6).toFixed(2);
await waitFor(/queue bench: enqueueing/);
const before = await snapshot();
const queued = Number((await waitFor(/queue bench: (\d+) queued/))[1]);
await waitFor(/queue bench: latency with/);
const after = await snapshot();
console.log(`queued-heap: ${queued} requests queued`);
console.log(`  live heap when the enqueues began  ${mb(before.bytes)} MB in ${before.objects} heap objects`);
console.log(`  live heap with the backlog queued  ${mb(after.bytes)} MB in ${after.objects} heap objects`);
console.log(`  per queued request                 ${Math.round((after.bytes - before.bytes) / queued)} bytes in ${((after.objects - before.objects) / queued).toFixed(1)} heap objects`);
console.log("  grew most (bytes per queued request, heap objects per queued request, kind):");
const growth = [...after.kinds].map(([kind, k]) => ({ kind, bytes: k.bytes - (before.kinds.get(kind)?.bytes ?? 0), count: k.count - (before.kinds.get(kind)?.count ?? 0) }));
for (const g of growth.sort((a, b) => b.bytes - a.bytes).slice(0, 8)) {
  console.log(`    ${String(Math.round(g.bytes / queued)).padStart(6)} B ${(g.count / queued).toFixed(2).padStart(6)}  ${g.kind}`);
}
const code = await ended;
if (code !== 0) {
  console.log(output);
  throw new Error(`queued-heap: bench/queue.mjs exited with ${code}`);
}
