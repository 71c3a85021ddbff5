#!/usr/bin/env node
// The layer rules of docs/architecture.md, checked: every relative import (value or type, re-export,
// dynamic import) between files in src/ must point to the same layer or a lower one, and the import
// graph must have no cycle. Exit 1 with each offending edge and each cycle's members.
// TypeScript's own pre-processor finds the imports (already a dev dependency), so multi-line imports,
// comments and strings cannot fool it.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const srcDir = join(root, "src");

// Low to high. A file may import from its own layer or a lower one.
const LAYERS = [
  { name: "base", match: (f) => f.startsWith("domain/") || ["errors.ts", "log.ts", "settings.ts"].includes(f) },
  { name: "storage", match: (f) => f.startsWith("storage/") },
  { name: "objects", match: (f) => f.startsWith("objects/") },
  { name: "services", match: (f) => f.startsWith("services/") },
  { name: "edge", match: (f) => /^(http|routes|rpc|mcp|views)\//.test(f) },
  // rpc/entrypoint.ts is the worker's second front door (the RPC WorkerEntrypoint index.ts exports),
  // answered by the whole app, and rpc/public.ts the package's type entry (package.json `types`) that
  // names it: they compose like index.ts, so they sit with it.
  { name: "entry", match: (f) => ["app.ts", "index.ts", "cron.ts", "rpc/entrypoint.ts", "rpc/public.ts"].includes(f) },
];

// Rules inside a layer: [from prefix, forbidden target prefixes, why].
const WITHIN = [
  ["domain/", ["errors.ts", "log.ts", "settings.ts"], "domain/ is pure: it imports only domain/"],
  ["http/", ["routes/", "rpc/", "mcp/", "views/"], "http/ is the infrastructure routes stand on"],
];

function listTs(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    if (name.startsWith(".")) continue; // scratch files such as check-types.mjs's generated copy
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...listTs(full));
    // .d.ts files are generated ambient declarations (worker-configuration.d.ts names index.ts's
    // classes for Env), not modules that take part in the layering.
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) out.push(full);
  }
  return out;
}

function resolveImport(fromFile, spec) {
  const base = resolve(dirname(fromFile), spec.replace(/\.js$/, ""));
  for (const candidate of [base, `${base}.ts`, join(base, "index.ts")]) {
    if (candidate.endsWith(".ts") && existsSync(candidate) && statSync(candidate).isFile()) return candidate;
  }
  return null;
}

const rel = (f) => relative(srcDir, f).split("\\").join("/");
// The last matching layer wins, so an entry file inside an edge folder counts as an entry.
const layerOf = (f) => LAYERS.findLastIndex((l) => l.match(f));

const files = listTs(srcDir).map(rel).sort();
const graph = new Map(files.map((f) => [f, new Set()]));
const problems = [];
let edges = 0;

for (const file of files) {
  const text = readFileSync(join(srcDir, file), "utf8");
  const { importedFiles } = ts.preProcessFile(text, true, true);
  for (const { fileName } of importedFiles) {
    if (!fileName.startsWith(".")) continue;
    // Text modules (vendored files bundled as strings, e.g. /docs's Swagger UI) are data, not code.
    if (fileName.endsWith(".txt") && existsSync(resolve(dirname(join(srcDir, file)), fileName))) continue;
    const target = resolveImport(join(srcDir, file), fileName);
    if (!target || !target.startsWith(srcDir + "/")) {
      problems.push(`unresolved: ${file} imports "${fileName}"`);
      continue;
    }
    const to = rel(target);
    if (graph.get(file).has(to)) continue;
    graph.get(file).add(to);
    edges++;
  }
}

for (const file of files) {
  if (layerOf(file) < 0) problems.push(`no layer: ${file} (add its folder to LAYERS in scripts/check-imports.mjs)`);
}

for (const [from, tos] of graph) {
  const lf = layerOf(from);
  for (const to of tos) {
    const lt = layerOf(to);
    if (lf >= 0 && lt > lf) {
      problems.push(`layer: ${from} (${LAYERS[lf].name}) imports ${to} (${LAYERS[lt].name}, higher)`);
      continue;
    }
    for (const [prefix, forbidden, why] of WITHIN) {
      if (from.startsWith(prefix) && forbidden.some((p) => to === p || to.startsWith(p))) {
        problems.push(`layer: ${from} imports ${to} (${why})`);
      }
    }
  }
}

// Tarjan's strongly connected components; any component of more than one file is a cycle.
// Iterative, so a deep import chain cannot overflow the stack.
function stronglyConnected(g) {
  let counter = 0;
  const index = new Map();
  const low = new Map();
  const onStack = new Set();
  const stack = [];
  const components = [];
  for (const start of g.keys()) {
    if (index.has(start)) continue;
    const work = [[start, [...g.get(start)], 0]];
    index.set(start, counter);
    low.set(start, counter++);
    stack.push(start);
    onStack.add(start);
    while (work.length) {
      const frame = work[work.length - 1];
      const [node, next] = frame;
      if (frame[2] < next.length) {
        const to = next[frame[2]++];
        if (!index.has(to)) {
          index.set(to, counter);
          low.set(to, counter++);
          stack.push(to);
          onStack.add(to);
          work.push([to, [...g.get(to)], 0]);
        } else if (onStack.has(to)) {
          low.set(node, Math.min(low.get(node), index.get(to)));
        }
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(node)));
      }
      if (low.get(node) === index.get(node)) {
        const component = [];
        let member;
        do {
          member = stack.pop();
          onStack.delete(member);
          component.push(member);
        } while (member !== node);
        components.push(component);
      }
    }
  }
  return components;
}

for (const component of stronglyConnected(graph)) {
  const self = component.length === 1 && graph.get(component[0]).has(component[0]);
  if (component.length > 1 || self) {
    const members = component.sort();
    const inside = new Set(members);
    const links = members.flatMap((f) => [...graph.get(f)].filter((t) => inside.has(t)).map((t) => `    ${f} -> ${t}`));
    problems.push(`cycle of ${members.length} files:\n${links.join("\n")}`);
  }
}

if (problems.length) {
  for (const p of problems) console.error(p);
  console.error(`check-imports: ${problems.length} problem(s) in ${files.length} files, ${edges} imports`);
  process.exit(1);
}
console.log(`check-imports: ${files.length} files, ${edges} imports, no layer violation, no cycle`);
