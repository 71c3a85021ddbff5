/**
 * Consumes per pool counted in this isolate since it started (module state, like request latency in
 * src/services/latency.ts): granted or refused, and decided where — from this isolate's token lease, or by
 * the pool's object. Labels are bounded by configuration (pools). Exposed in /metrics; cheap enough to
 * count every consume, so per-pool traffic stays visible when request log lines are sampled.
 */
export type ConsumePath = "lease" | "object";

const counts = new Map<string, { lease: [granted: number, refused: number]; object: [granted: number, refused: number] }>();
const POOLS_MAX = 4096;

export function countConsume(pool: string, path: ConsumePath, granted: boolean): void {
  let c = counts.get(pool);
  if (!c) {
    if (counts.size >= POOLS_MAX) return;
    counts.set(pool, (c = { lease: [0, 0], object: [0, 0] }));
  }
  c[path][granted ? 0 : 1] += 1;
}

export function consumeCounts(): Array<{ pool: string; path: ConsumePath; outcome: "granted" | "refused"; value: number }> {
  const out: Array<{ pool: string; path: ConsumePath; outcome: "granted" | "refused"; value: number }> = [];
  for (const [pool, c] of [...counts].sort(([a], [b]) => a.localeCompare(b))) {
    for (const path of ["lease", "object"] as const) {
      out.push({ pool, path, outcome: "granted", value: c[path][0] }, { pool, path, outcome: "refused", value: c[path][1] });
    }
  }
  return out;
}
