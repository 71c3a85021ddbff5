import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import { sha256Hex } from "../../src/http/auth";
import type { AllocationObject } from "../../src/objects/allocations";
import { clearConfigCache, clientQuota } from "../../src/storage/config";
import { ADMIN, call, eventually, expectError, sleep, type Call } from "../support/helpers";

const allocations = () => env.ALLOCATIONS.get(env.ALLOCATIONS.idFromName("allocations"));
const clientStub = (clientId: string) => env.CLIENT.get(env.CLIENT.idFromName(clientId));

let cseq = 0;
/** A fresh client with a key carrying the allocations scope (the demo keys lack it), and optional quota overrides. */
async function makeClient(opts: { tier?: string; scopes?: string[]; quota?: { max_concurrent?: number; cpu_millicores?: number; memory_mb?: number } } = {}): Promise<{ id: string; key: string }> {
  cseq += 1;
  const id = `al-${crypto.randomUUID().slice(0, 8)}-${cseq}`;
  const key = `rmk_test_${crypto.randomUUID().replace(/-/g, "")}`;
  const statements = [
    env.DB.prepare(
      `INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at)
       VALUES (?1, ?1, 'ops@example.com', ?2, NULL, 'active', 0, 0)`,
    ).bind(id, opts.tier ?? "enterprise"),
    env.DB.prepare(`INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at) VALUES (?1, ?2, ?3, 'rmk_test', ?4, 0)`)
      .bind(`key_${id}`, id, await sha256Hex(key), JSON.stringify(opts.scopes ?? ["allocations"])),
  ];
  if (opts.quota) {
    statements.push(env.DB.prepare(
      `INSERT INTO client_quotas (client_id, max_concurrent, cpu_millicores, memory_mb, pool_daily, updated_at) VALUES (?1, ?2, ?3, ?4, '{}', 0)`,
    ).bind(id, opts.quota.max_concurrent ?? null, opts.quota.cpu_millicores ?? null, opts.quota.memory_mb ?? null));
  }
  await env.DB.batch(statements);
  clearConfigCache();
  return { id, key };
}

const allocate = (token: string, json: unknown) => call("POST", "/api/resources/allocate", { token, json });
const release = (token: string, allocationId: string) => call("POST", "/api/resources/release", { token, json: { allocation_id: allocationId } });
const getOne = (token: string, allocationId: string) => call("GET", `/api/resources/allocations/${allocationId}`, { token });
const usage = async () => (await call("GET", "/api/resources/usage", { token: ADMIN })).body;
const capacity = async () => (await call("GET", "/api/resources/capacity", { token: ADMIN })).body;
const setQuotas = (json: unknown, token: string = ADMIN) => call("PUT", "/admin/resources/quotas", { token, json });

/** A created allocation (fails the test otherwise). */
async function created(token: string, json: Record<string, unknown>): Promise<any> {
  const r = await allocate(token, { job_id: "job", ...json });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.allocation;
}

/** What a client's object holds for allocations: jobs, CPU and memory. */
async function holds(clientId: string): Promise<{ allocations: number; cpu: number; memory: number }> {
  const state = await clientStub(clientId).quotaState((await clientQuota(env, clientId))!);
  return { allocations: state.use.allocations, cpu: state.use.cpuMillicores, memory: state.use.memoryMb };
}

const ZERO_TOTALS = { allocations: 0, workers: 0, cpu_millicores: 0, memory_mb: 0 };

/** Nothing is held: every depth and every capacity line back to exactly zero. */
async function expectNothingHeld(): Promise<void> {
  const u = await usage();
  expect(u.totals).toEqual(ZERO_TOTALS);
  for (const d of u.depths) expect(d, `depth ${d.depth}`).toMatchObject({ allocated: 0, available: d.limit, allocations: 0 });
  const cap = await capacity();
  for (const r of ["cpu_millicores", "memory_mb", "workers"]) expect(cap[r], r).toMatchObject({ allocated: 0, available: cap[r].total });
}

// Every test leaves nothing held (the allocations object is one singleton for the whole file); one
// that does not fails, and what it left is cancelled so that the next test starts from zero.
afterEach(async () => {
  try {
    await expectNothingHeld();
  } finally {
    const left = await allocations().list({ limit: 200 });
    for (const clientId of new Set(left.allocations.map((a) => a.client_id))) await allocations().cancelClient(clientId);
  }
});

describe("validation", () => {
  it("refuses bad input with 400 naming the field, and holds nothing", async () => {
    const { id, key } = await makeClient();
    const cases: Array<[unknown, string]> = [
      [{ workers: 1 }, "job_id"],
      [{ job_id: "", workers: 1 }, "job_id"],
      [{ job_id: "x".repeat(129), workers: 1 }, "job_id"],
      [{ job_id: "j" }, "workers"],
      [{ job_id: "j", workers: 0 }, "workers"],
      [{ job_id: "j", workers: 1.5 }, "workers"],
      [{ job_id: "j", workers: 1, cpu_millicores: 0 }, "cpu_millicores"],
      [{ job_id: "j", workers: 1, memory_mb: -1 }, "memory_mb"],
      [{ job_id: "j", workers: 1, priority: "urgent" }, "priority"],
      [{ job_id: "j", workers: 1, ttl_ms: 999 }, "ttl_ms"],
      [{ job_id: "j", workers: 1, ttl_ms: 86_400_001 }, "ttl_ms"],
      [{ job_id: "j", workers: 1, depth: -1 }, "depth"],
      [{ job_id: "j", workers: 1, parent_id: "alc_nothex" }, "parent_id"],
      [{ job_id: "j", workers: 1, client_id: "bad id!" }, "client_id"],
      [{ job_id: "j", workers: 1, extra: true }, ""],
    ];
    for (const [json, field] of cases) {
      const r = await allocate(key, json);
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields.map((f: { path: string }) => f.path), JSON.stringify(json)).toContain(field);
    }
    // A root's depth is 0; a depth given must match.
    const r = await allocate(key, { job_id: "j", workers: 1, depth: 1 });
    expectError(r, 400, "validation_failed");
    expect(r.body.error.details.fields).toEqual([{ path: "depth", message: expect.stringContaining("must be 0") }]);
    // The admin token names the client.
    const admin = await allocate(ADMIN, { job_id: "j", workers: 1 });
    expectError(admin, 400, "validation_failed");
    expect(admin.body.error.details.fields[0].path).toBe("client_id");
    expectError(await call("POST", "/api/resources/allocate", { token: key, body: "{", headers: { "content-type": "application/json" } }), 400, "bad_request");
    expectError(await call("POST", "/api/resources/allocate", { token: key }), 400, "validation_failed");
    expectError(await call("POST", "/api/resources/release", { token: key, json: { allocation_id: "nope" } }), 400, "validation_failed");
    expectError(await call("GET", "/api/resources/allocations/nope", { token: key }), 400, "validation_failed");
    for (const q of ["state=done", "depth=-1", "limit=0", "limit=201", "cursor=abc", "colour=red"]) {
      expectError(await call("GET", `/api/resources/allocations?${q}`, { token: key }), 400, "validation_failed");
    }
    const list = await call("GET", `/api/resources/allocations?client_id=${id}`, { token: ADMIN });
    expect(list.body.allocations).toEqual([]);
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
  });

  it("refuses bad quota settings with 400 naming the field, and changes nothing", async () => {
    const before = (await call("GET", "/api/resources/quotas", { token: ADMIN })).body;
    const cases: Array<[unknown, string]> = [
      [{}, ""],
      [{ depths: [{ depth: 0, max_workers: 5 }, { depth: 0, max_workers: 6 }] }, "depths.1.depth"],
      [{ depths: [{ depth: 33, max_workers: 5 }] }, "depths.0.depth"],
      [{ depths: [{ depth: 0, max_workers: -1 }] }, "depths.0.max_workers"],
      [{ deeper_max_workers: 1.5 }, "deeper_max_workers"],
      [{ capacity: { workers: -1 } }, "capacity.workers"],
      [{ capacity: { gpus: 1 } }, "capacity"],
    ];
    for (const [json, field] of cases) {
      const r = await setQuotas(json);
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields.map((f: { path: string }) => f.path), JSON.stringify(json)).toContain(field);
    }
    expect((await call("GET", "/api/resources/quotas", { token: ADMIN })).body).toEqual({ ...before, trace_id: expect.any(String) });
  });
});

describe("authorization", () => {
  it("401 without a key, 403 without the allocations scope or for another client, 404 for another client's allocation", async () => {
    const a = await makeClient();
    const b = await makeClient();
    const unscoped = await makeClient({ scopes: ["resources:read", "execute", "usage:read", "quota:read", "burst"] });
    const mine = await created(a.key, { workers: 1 });
    const paths: Array<[string, string, unknown?]> = [
      ["GET", "/api/resources/quotas"], ["GET", "/api/resources/usage"], ["GET", "/api/resources/capacity"],
      ["GET", "/api/resources/allocations"], ["GET", `/api/resources/allocations/${mine.id}`],
      ["POST", "/api/resources/allocate", { job_id: "j", workers: 1 }], ["POST", "/api/resources/release", { allocation_id: mine.id }],
    ];
    for (const [method, path, json] of paths) {
      expectError(await call(method, path, { json }), 401, "unauthorized");
      const r = await call(method, path, { token: unscoped.key, json });
      expectError(r, 403, "forbidden");
      expect(r.body.error.details).toEqual({ required_scope: "allocations" });
    }
    expectError(await setQuotas({ deeper_max_workers: 50 }, a.key), 403, "forbidden");
    expectError(await call("POST", "/admin/allocations/cleanup", { token: a.key }), 403, "forbidden");
    expectError(await call("POST", "/admin/allocations/cleanup"), 401, "unauthorized");

    // b cannot see, release, list or build on a's allocation.
    expectError(await getOne(b.key, mine.id), 404, "allocation_not_found");
    expectError(await release(b.key, mine.id), 404, "allocation_not_found");
    const child = await allocate(b.key, { job_id: "j", workers: 1, parent_id: mine.id });
    expectError(child, 404, "allocation_not_found");
    expect(child.body.error.details).toEqual({ parent_id: mine.id });
    expectError(await call("GET", `/api/resources/allocations?client_id=${a.id}`, { token: b.key }), 403, "forbidden");
    expectError(await allocate(b.key, { job_id: "j", workers: 1, client_id: a.id }), 403, "forbidden");
    expect((await call("GET", "/api/resources/allocations", { token: b.key })).body.allocations).toEqual([]);
    expect((await call("GET", "/api/resources/allocations", { token: a.key })).body.allocations.map((x: any) => x.id)).toEqual([mine.id]);

    // The admin token acts for any client; unknown ids are 404.
    expect((await getOne(ADMIN, mine.id)).body.allocation).toEqual(mine);
    expectError(await allocate(ADMIN, { job_id: "j", workers: 1, client_id: "no-such-client" }), 404, "client_not_found");
    expectError(await getOne(ADMIN, `alc_${"0".repeat(32)}`), 404, "allocation_not_found");
    expectError(await release(ADMIN, `alc_${"0".repeat(32)}`), 404, "allocation_not_found");
    const byAdmin = await created(ADMIN, { client_id: b.id, workers: 1 });
    expect(byAdmin.client_id).toBe(b.id);
    expect((await release(ADMIN, byAdmin.id)).status).toBe(200);
    expect((await release(a.key, mine.id)).status).toBe(200);
  });
});

describe("depth quotas", () => {
  it("25 concurrent allocations of 1 worker at depth 0 (limit 10): exactly 10 succeed; 35 children at depth 1 (limit 30): exactly 30", async () => {
    const { id, key } = await makeClient();
    const roots = await Promise.all(Array.from({ length: 25 }, (_, i) => allocate(key, { job_id: `root-${i}`, workers: 1 })));
    const ok = roots.filter((r) => r.status === 201);
    const refused = roots.filter((r) => r.status !== 201);
    expect(ok.length).toBe(10);
    expect(refused.length).toBe(15);
    for (const r of refused) {
      expectError(r, 429, "depth_quota_exceeded");
      expect(r.body.error.details).toEqual({ depth: 0, limit: 10, in_use: 10, requested: 1 });
      // Until the earliest of the holders expires (15 minutes by default).
      expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(800);
    }
    expect(ok.every((r) => r.body.allocation.state === "active" && r.body.allocation.depth === 0)).toBe(true);
    let u = await usage();
    expect(u.depths.find((d: any) => d.depth === 0)).toEqual({ depth: 0, limit: 10, allocated: 10, available: 0, allocations: 10 });
    expect(await holds(id)).toEqual({ allocations: 10, cpu: 10_000, memory: 5_120 });

    // Keep one root; its children count at depth 1, not depth 0.
    const [parent, ...others] = ok.map((r) => r.body.allocation);
    for (const a of others) expect((await release(key, a.id)).status).toBe(200);
    const children = await Promise.all(Array.from({ length: 35 }, (_, i) => allocate(key, { job_id: `child-${i}`, workers: 1, parent_id: parent.id })));
    expect(children.filter((r) => r.status === 201).length).toBe(30);
    for (const r of children.filter((r) => r.status !== 201)) {
      expectError(r, 429, "depth_quota_exceeded");
      expect(r.body.error.details).toEqual({ depth: 1, limit: 30, in_use: 30, requested: 1 });
    }
    u = await usage();
    expect(u.depths.slice(0, 2)).toEqual([
      { depth: 0, limit: 10, allocated: 1, available: 9, allocations: 1 },
      { depth: 1, limit: 30, allocated: 30, available: 0, allocations: 30 },
    ]);
    expect(u.totals).toEqual({ allocations: 31, workers: 31, cpu_millicores: 31_000, memory_mb: 31 * 512 });

    const done = await release(key, parent.id);
    expect(done.status).toBe(200);
    expect(done.body.released.length).toBe(31);
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
  });

  it("derives depth from the parent, checks a given depth, and refuses children of an ended parent", async () => {
    const { key } = await makeClient();
    const root = await created(key, { workers: 1 });
    const child = await created(key, { workers: 1, parent_id: root.id });
    const grandchild = await created(key, { workers: 1, parent_id: child.id, depth: 2 });
    expect([root.depth, child.depth, grandchild.depth]).toEqual([0, 1, 2]);
    expect([root.parent_id, child.parent_id, grandchild.parent_id]).toEqual([null, root.id, child.id]);
    for (const depth of [0, 1, 3]) {
      const r = await allocate(key, { job_id: "j", workers: 1, parent_id: child.id, depth });
      expectError(r, 400, "validation_failed");
      expect(r.body.error.details.fields).toEqual([{ path: "depth", message: expect.stringContaining("must be 2") }]);
    }
    const atTwo = await call("GET", "/api/resources/allocations?depth=2", { token: key });
    expect(atTwo.body.allocations.map((a: any) => a.id)).toEqual([grandchild.id]);

    expect((await release(key, child.id)).body.released).toEqual([child.id, grandchild.id]);
    const refused = await allocate(key, { job_id: "j", workers: 1, parent_id: child.id });
    expectError(refused, 409, "allocation_state");
    expect(refused.body.error.details).toEqual({ parent_id: child.id, state: "released" });
    expect((await release(key, root.id)).body.released).toEqual([root.id]);
  });

  it("an operator's quotas apply at once: GET shows them, usage uses them, a full depth refuses", async () => {
    const { key } = await makeClient();
    const defaults = (await call("GET", "/api/resources/quotas", { token: key })).body;
    expect(defaults).toEqual({
      depths: [{ depth: 0, max_workers: 10 }, { depth: 1, max_workers: 30 }], deeper_max_workers: 50, max_depth: 32,
      capacity: { cpu_millicores: 64_000, memory_mb: 131_072, workers: 200 }, critical_reserve_percent: 10, trace_id: expect.any(String),
    });
    try {
      const set = await setQuotas({ depths: [{ depth: 2, max_workers: 1 }, { depth: 0, max_workers: 3 }], deeper_max_workers: 4 });
      expect(set.status).toBe(200);
      expect(set.body.depths).toEqual([{ depth: 0, max_workers: 3 }, { depth: 2, max_workers: 1 }]);
      expect(set.body.deeper_max_workers).toBe(4);
      expect(set.body.capacity).toEqual(defaults.capacity);
      const root = await created(key, { workers: 3 });
      expectError(await allocate(key, { job_id: "j", workers: 1 }), 429, "depth_quota_exceeded");
      const child = await created(key, { workers: 4, parent_id: root.id });
      const over = await allocate(key, { job_id: "j", workers: 1, parent_id: root.id });
      expectError(over, 429, "depth_quota_exceeded");
      expect(over.body.error.details).toEqual({ depth: 1, limit: 4, in_use: 4, requested: 1 });
      expect((await usage()).depths).toEqual([
        { depth: 0, limit: 3, allocated: 3, available: 0, allocations: 1 },
        { depth: 1, limit: 4, allocated: 4, available: 0, allocations: 1 },
        { depth: 2, limit: 1, allocated: 0, available: 1, allocations: 0 },
      ]);
      expect((await release(key, root.id)).body.released).toEqual([root.id, child.id]);
    } finally {
      await setQuotas({ depths: defaults.depths, deeper_max_workers: 50 });
    }
  });
});

describe("expiry", () => {
  it("expires by alarm exactly once at its TTL: state expired, subtree released, capacity and client holds back", async () => {
    const { id, key } = await makeClient();
    const root = await created(key, { workers: 2, ttl_ms: 1000 });
    const child = await created(key, { workers: 1, parent_id: root.id, ttl_ms: 60_000 });
    expect(root.expires_at - root.created_at).toBe(1000);
    expect(await holds(id)).toEqual({ allocations: 2, cpu: 3000, memory: 1536 });
    expect((await capacity()).workers.allocated).toBe(3);

    const expired = await eventually(async () => {
      const r = (await getOne(key, root.id)).body.allocation;
      return r.state === "expired" ? r : null;
    }, 5000, "the root to expire");
    expect(expired.reason).toBe("ttl elapsed");
    expect(expired.released_at).toBeGreaterThanOrEqual(root.expires_at);
    const gone = await eventually(async () => {
      const r = (await getOne(key, child.id)).body.allocation;
      return r.state === "released" ? r : null;
    }, 2000, "the child to be released");
    expect(gone.reason).toBe("parent expired");
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });

    // Again: the alarm and the sweep find nothing; nothing changes.
    await runDurableObjectAlarm(allocations());
    expect((await call("POST", "/admin/allocations/cleanup", { token: ADMIN })).body.expired).toBe(0);
    expect((await getOne(key, root.id)).body.allocation).toEqual(expired);
    expect((await getOne(key, child.id)).body.allocation).toEqual(gone);
    expectError(await release(key, root.id), 409, "allocation_state");
  });

  it("the cleanup sweep expires what is due when no alarm ran, each once", async () => {
    const { id, key } = await makeClient();
    const due = [await created(key, { workers: 1, ttl_ms: 1000 }), await created(key, { workers: 1, ttl_ms: 1000 })];
    const alive = await created(key, { workers: 1, ttl_ms: 60_000 });
    // The alarm is lost (as if the runtime had dropped it): only the sweep can expire them.
    await runInDurableObject(allocations(), async (_: AllocationObject, state) => {
      await state.storage.deleteAlarm();
    });
    await sleep(1100);
    const first = await call("POST", "/admin/allocations/cleanup", { token: ADMIN });
    expect(first.body.expired).toBe(2);
    expect((await call("POST", "/admin/allocations/cleanup", { token: ADMIN })).body.expired).toBe(0);
    for (const a of due) expect((await getOne(key, a.id)).body.allocation).toMatchObject({ state: "expired", reason: "ttl elapsed" });
    expect((await getOne(key, alive.id)).body.allocation.state).toBe("active");
    expect(await holds(id)).toEqual({ allocations: 1, cpu: 1000, memory: 512 });
    expect((await release(key, alive.id)).status).toBe(200);
  });

  it("a release after the TTL elapsed (before the alarm) finds it expired, not released", async () => {
    const { key } = await makeClient();
    const a = await created(key, { workers: 1, ttl_ms: 1000 });
    await runInDurableObject(allocations(), async (_: AllocationObject, state) => {
      await state.storage.deleteAlarm();
    });
    await sleep(1050);
    const r = await release(key, a.id);
    expectError(r, 409, "allocation_state");
    expect(r.body.error.details).toEqual({ allocation_id: a.id, state: "expired" });
  });
});

describe("subtree cancellation", () => {
  it("releasing a root releases three levels: every allocation released, depth usage, capacity and client holds back to zero", async () => {
    const { id, key } = await makeClient();
    const root = await created(key, { workers: 2 });
    const a = await created(key, { workers: 3, parent_id: root.id, cpu_millicores: 250 });
    const b = await created(key, { workers: 3, parent_id: root.id, memory_mb: 2048 });
    const a1 = await created(key, { workers: 1, parent_id: a.id });
    const a2 = await created(key, { workers: 1, parent_id: a.id, priority: "critical" });
    const b1 = await created(key, { workers: 1, parent_id: b.id, ttl_ms: 1_000_000 });
    let u = await usage();
    expect(u.depths.slice(0, 3).map((d: any) => d.allocated)).toEqual([2, 6, 3]);
    expect(u.totals).toEqual({ allocations: 6, workers: 11, cpu_millicores: 2000 + 750 + 3000 + 3000, memory_mb: 1024 + 1536 + 6144 + 1536 });
    expect(await holds(id)).toEqual({ allocations: 6, cpu: u.totals.cpu_millicores, memory: u.totals.memory_mb });

    // A mid-level release takes only its own subtree.
    const partial = await release(key, b.id);
    expect(partial.body.released).toEqual([b.id, b1.id]);
    expect((await getOne(key, b1.id)).body.allocation).toMatchObject({ state: "released", reason: "parent released" });

    const r = await release(key, root.id);
    expect(r.status).toBe(200);
    expect(r.body.allocation).toMatchObject({ id: root.id, state: "released", reason: "released" });
    expect(r.body.released[0]).toBe(root.id);
    expect([...r.body.released].sort()).toEqual([root.id, a.id, a1.id, a2.id].sort());
    for (const x of [a, a1, a2]) {
      const now = (await getOne(key, x.id)).body.allocation;
      expect(now).toMatchObject({ state: "released", reason: "parent released" });
      expect(now.released_at).toBeGreaterThan(0);
    }
    u = await usage();
    expect(u.totals).toEqual(ZERO_TOTALS);
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
    const again = await release(key, a1.id);
    expectError(again, 409, "allocation_state");
    expect(again.body.error.details).toEqual({ allocation_id: a1.id, state: "released" });
  });

  it("a parent released while children are being allocated under it leaves no child and no client hold behind", async () => {
    const { id, key } = await makeClient();
    const parent = await created(key, { workers: 1 });
    const calls = [
      ...Array.from({ length: 12 }, (_, i) => allocate(key, { job_id: `racer-${i}`, workers: 1, parent_id: parent.id })),
      release(key, parent.id),
    ];
    const results = await Promise.all(calls);
    const released = results.at(-1)!;
    expect(released.status).toBe(200);
    const children = results.slice(0, -1);
    for (const r of children) {
      if (r.status === 201) expect(released.body.released).toContain(r.body.allocation.id);
      else expectError(r, 409, "allocation_state");
    }
    const listed = (await call("GET", `/api/resources/allocations?depth=1&limit=50`, { token: key })).body.allocations;
    expect(listed.every((a: any) => a.state === "released" && a.reason === "parent released")).toBe(true);
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
  });

  it("a child whose client hold is granted after its parent's release freed it gives the hold back itself", async () => {
    const { id, key } = await makeClient();
    const parent = await created(key, { workers: 1 });
    const quota = (await clientQuota(env, id))!;
    const outcome = await runInDurableObject(allocations(), async (instance: AllocationObject) => {
      const real = clientStub(id);
      // The worst order: the parent's release (and its releaseJobs) runs before the child's acquireJobs lands.
      (instance as any).clientStub = () => ({
        acquireJobs: async (q: unknown, items: any[]) => {
          await instance.release(parent.id, null);
          return real.acquireJobs(q as typeof quota, items);
        },
        releaseJobs: (ids: string[]) => real.releaseJobs(ids),
      });
      try {
        return await instance.allocate(quota, {
          clientId: id, jobId: "late", parentId: parent.id, workers: 1, cpuMillicores: 1000, memoryMb: 512, priority: "normal", ttlMs: 60_000,
        });
      } finally {
        delete (instance as any).clientStub;
      }
    });
    expect(outcome).toMatchObject({ ok: false, error: { code: "allocation_state", details: { state: "released" } } });
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
    expect((await getOne(key, parent.id)).body.allocation.state).toBe("released");
  });

  it("cancelClient (a client's deletion) releases every allocation of that client and no other's", async () => {
    const gone = await makeClient();
    const stays = await makeClient();
    const root = await created(gone.key, { workers: 1 });
    await created(gone.key, { workers: 2, parent_id: root.id });
    await created(gone.key, { workers: 1 });
    const other = await created(stays.key, { workers: 1 });
    expect(await allocations().cancelClient(gone.id)).toBe(3);
    expect(await allocations().cancelClient(gone.id)).toBe(0);
    const list = await call("GET", `/api/resources/allocations?client_id=${gone.id}`, { token: ADMIN });
    expect(list.body.allocations.map((a: any) => [a.state, a.reason])).toEqual(Array(3).fill(["released", "client cancelled"]));
    expect(await holds(gone.id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
    expect((await getOne(stays.key, other.id)).body.allocation.state).toBe("active");
    expect((await release(stays.key, other.id)).status).toBe(200);
  });
});

describe("capacity", () => {
  it("is exact at its edges, keeps the last 10% for critical, and returns to exactly zero", async () => {
    const { key } = await makeClient();
    const before = (await call("GET", "/api/resources/quotas", { token: ADMIN })).body;
    try {
      await setQuotas({ depths: [{ depth: 0, max_workers: 100 }], capacity: { cpu_millicores: 10_000, memory_mb: 8_192, workers: 20 } });
      const cap0 = await capacity();
      expect(cap0.workers).toEqual({ total: 20, allocated: 0, available: 20, critical_reserve: 2 });
      const big = await created(key, { workers: 18, cpu_millicores: 400, memory_mb: 400 });
      const over = await allocate(key, { job_id: "j", workers: 1, cpu_millicores: 1, memory_mb: 1 });
      expectError(over, 429, "capacity_exceeded");
      expect(over.body.error.details).toEqual({ resource: "workers", total: 20, usable: 18, in_use: 18, requested: 1 });
      expect(Number(over.headers.get("retry-after"))).toBeGreaterThan(0);
      // CPU: 7,200 of 10,000 held; critical may take the last 2,800 (the reserve included), not 2,801.
      expectError(await allocate(key, { job_id: "j", workers: 1, cpu_millicores: 2801, memory_mb: 1, priority: "critical" }), 429, "capacity_exceeded");
      const crit = await created(key, { workers: 1, cpu_millicores: 2800, memory_mb: 1, priority: "critical" });
      const full = await allocate(key, { job_id: "j", workers: 1, cpu_millicores: 1, memory_mb: 1, priority: "critical" });
      expectError(full, 429, "capacity_exceeded");
      expect(full.body.error.details).toEqual({ resource: "cpu_millicores", total: 10_000, usable: 10_000, in_use: 10_000, requested: 1 });
      const cap1 = await capacity();
      expect(cap1).toEqual({
        cpu_millicores: { total: 10_000, allocated: 10_000, available: 0, critical_reserve: 1_000 },
        memory_mb: { total: 8_192, allocated: 7_201, available: 991, critical_reserve: 819 },
        workers: { total: 20, allocated: 19, available: 1, critical_reserve: 2 },
        trace_id: expect.any(String),
      });
      // Listing: critical first, then by age.
      const list = (await call("GET", "/api/resources/allocations?state=active", { token: key })).body.allocations;
      expect(list.map((a: any) => a.id)).toEqual([crit.id, big.id]);
      for (const a of [big, crit]) expect((await release(key, a.id)).status).toBe(200);
      const cap2 = await capacity();
      for (const r of ["cpu_millicores", "memory_mb", "workers"]) expect(cap2[r].allocated, r).toBe(0);
    } finally {
      await setQuotas({ depths: before.depths, deeper_max_workers: before.deeper_max_workers, capacity: before.capacity });
    }
  });
});

describe("client quota", () => {
  it("refuses with 429 quota_exceeded and the shortfall; the failed allocation holds nothing", async () => {
    const { id, key } = await makeClient({ quota: { cpu_millicores: 3000, max_concurrent: 2 } });
    const first = await created(key, { workers: 2, cpu_millicores: 1000 });
    const r = await allocate(key, { job_id: "too-big", workers: 2, cpu_millicores: 1000 });
    expectError(r, 429, "quota_exceeded");
    const failedId = r.body.error.details.allocation_id;
    expect(r.body.error.details).toEqual({ allocation_id: failedId, limit: "cpu", limit_value: 3000, in_use: 2000, requested: 2000, shortfall: 1000 });
    expect(r.headers.get("retry-after")).toBeTruthy();
    const failed = (await getOne(key, failedId)).body.allocation;
    expect(failed).toMatchObject({ state: "failed", reason: "quota_exceeded: cpu", activated_at: null, job_id: "too-big" });
    expect(failed.released_at).toBeGreaterThan(0);
    // Held: the first allocation only, in every account.
    expect(await holds(id)).toEqual({ allocations: 1, cpu: 2000, memory: 1024 });
    expect((await usage()).totals).toEqual({ allocations: 1, workers: 2, cpu_millicores: 2000, memory_mb: 1024 });
    expect((await capacity()).workers.allocated).toBe(2);
    // A failed allocation cannot be released or be a parent.
    expectError(await release(key, failedId), 409, "allocation_state");
    expectError(await allocate(key, { job_id: "j", workers: 1, parent_id: failedId }), 409, "allocation_state");

    // Concurrent jobs: 2 at most.
    const second = await created(key, { workers: 1, cpu_millicores: 500 });
    const third = await allocate(key, { job_id: "j", workers: 1, cpu_millicores: 1 });
    expectError(third, 429, "quota_exceeded");
    expect(third.body.error.details).toMatchObject({ limit: "concurrent", limit_value: 2, in_use: 2, requested: 1, shortfall: 1 });
    for (const a of [first, second]) expect((await release(key, a.id)).status).toBe(200);
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
  });
});

describe("listing", () => {
  it("filters by state, job, depth and client (admin), orders by priority then age, and pages without repeats", async () => {
    const a = await makeClient();
    const b = await makeClient();
    const low = await created(a.key, { job_id: "crawl", workers: 1, priority: "low" });
    const high = await created(a.key, { job_id: "crawl", workers: 1, priority: "high" });
    const normal1 = await created(a.key, { job_id: "index", workers: 1 });
    const normal2 = await created(a.key, { job_id: "index", workers: 1, parent_id: normal1.id });
    const crit = await created(a.key, { job_id: "crawl", workers: 1, priority: "critical" });
    const theirs = await created(b.key, { workers: 1 });
    await release(a.key, low.id);

    const order = [crit.id, high.id, normal1.id, normal2.id, low.id];
    const pages: string[] = [];
    let cursor: string | null = null;
    let calls = 0;
    do {
      const r: Call = await call("GET", `/api/resources/allocations?limit=2${cursor ? `&cursor=${cursor}` : ""}`, { token: a.key });
      pages.push(...r.body.allocations.map((x: any) => x.id));
      cursor = r.body.next_cursor;
      calls += 1;
    } while (cursor);
    expect(pages).toEqual(order);
    expect(calls).toBe(3);

    const ids = async (q: string, token = a.key) => (await call("GET", `/api/resources/allocations?${q}`, { token })).body.allocations.map((x: any) => x.id);
    expect(await ids("state=released")).toEqual([low.id]);
    expect(await ids("job_id=crawl")).toEqual([crit.id, high.id, low.id]);
    expect(await ids("job_id=crawl&state=active")).toEqual([crit.id, high.id]);
    expect(await ids("depth=1")).toEqual([normal2.id]);
    expect(await ids(`client_id=${b.id}`, ADMIN)).toEqual([theirs.id]);
    expect(await ids(`client_id=${a.id}`, a.key)).toEqual(order);

    for (const [key, x] of [[a.key, crit], [a.key, high], [a.key, normal1], [b.key, theirs]] as const) expect((await release(key, x.id)).status).toBe(200);
  });
});

describe("faults", () => {
  /** Run `fn` with the object's calls to client objects going through `fake`; restored afterwards. */
  async function withClientCalls<T>(fake: (real: ReturnType<typeof clientStub>) => object, fn: (instance: AllocationObject) => Promise<T>): Promise<T> {
    return runInDurableObject(allocations(), async (instance: AllocationObject) => {
      (instance as any).clientStub = (clientId: string) => fake(clientStub(clientId));
      try {
        return await fn(instance);
      } finally {
        delete (instance as any).clientStub;
      }
    });
  }

  it("a client's object that cannot be reached at allocation: 503-worthy failure, the allocation failed, nothing held", async () => {
    const { id, key } = await makeClient();
    const quota = (await clientQuota(env, id))!;
    const outcome = await withClientCalls(
      (real) => ({ acquireJobs: async () => { throw new Error("client object down"); }, releaseJobs: (ids: string[]) => real.releaseJobs(ids) }),
      (instance) => instance.allocate(quota, { clientId: id, jobId: "j", workers: 3, cpuMillicores: 1000, memoryMb: 512, priority: "normal", ttlMs: 60_000 }),
    );
    expect(outcome).toMatchObject({ ok: false, error: { code: "unavailable" } });
    const failed = (await call("GET", "/api/resources/allocations?state=failed", { token: key })).body.allocations;
    expect(failed.map((a: any) => a.reason)).toEqual(["client quota unavailable"]);
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
  });

  it("a release that cannot reach the client's object stays releasing (still counted) until the sweep finishes it", async () => {
    const { id, key } = await makeClient();
    const root = await created(key, { workers: 2 });
    const child = await created(key, { workers: 1, parent_id: root.id });
    const outcome = await withClientCalls(
      () => ({ releaseJobs: async () => { throw new Error("client object down"); } }),
      (instance) => instance.release(root.id, id),
    );
    expect(outcome).toMatchObject({ ok: true, value: { allocation: { state: "releasing", reason: "released" }, released: [root.id, child.id] } });
    expect((await usage()).totals.workers).toBe(3);
    expect(await holds(id)).toEqual({ allocations: 2, cpu: 3000, memory: 1536 });
    expectError(await release(key, root.id), 409, "allocation_state");

    expect((await call("POST", "/admin/allocations/cleanup", { token: ADMIN })).body.expired).toBe(0);
    expect((await getOne(key, root.id)).body.allocation).toMatchObject({ state: "released", reason: "released" });
    expect((await getOne(key, child.id)).body.allocation).toMatchObject({ state: "released", reason: "parent released" });
    expect(await holds(id)).toEqual({ allocations: 0, cpu: 0, memory: 0 });
  });
});
