// A minimal queue: one Durable Object with one SQLite table. Enqueue is one insert; the drain claims up
// to 512 queued rows (one UPDATE), hands them to the sample worker in one `runMany` call and marks
// each done as it is reported (one UPDATE per report); execute inserts, calls the worker's `run`, and
// marks done. No auth, priorities, limits, reservations, budgets or ledger: the floor under the
// Resource Manager's queue on this machine (bench/queue.mjs prints the service's figures over it).
import { DurableObject } from "cloudflare:workers";

const CHUNK = 512;
const MAX_IN_FLIGHT = 2048;

export class MiniQueue extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT, params TEXT NOT NULL, status TEXT NOT NULL)");
    this.inflight = 0;
    this.dispatched = 0;
  }

  enqueue(list) {
    return list.map((params) => this.sql.exec("INSERT INTO q (params, status) VALUES (?, 'queued') RETURNING id", JSON.stringify(params)).one().id);
  }

  async execute(params) {
    const id = this.sql.exec("INSERT INTO q (params, status) VALUES (?, 'running') RETURNING id", JSON.stringify(params)).one().id;
    this.dispatched += 1;
    const answer = await this.env.WORKER.run({ request_id: String(id), template: "bench", params, attempt: 1, allotted: {} });
    this.sql.exec("UPDATE q SET status = 'done' WHERE id = ?", id);
    return answer;
  }

  start() {
    void this.ctx.storage.setAlarm(Date.now());
  }

  status() {
    const queued = this.sql.exec("SELECT COUNT(*) AS n FROM q WHERE status = 'queued'").one().n;
    return { queued, in_flight: this.inflight, dispatched: this.dispatched };
  }

  async alarm() {
    while (this.inflight < MAX_IN_FLIGHT) {
      const rows = this.sql.exec("SELECT id, params FROM q WHERE status = 'queued' ORDER BY id LIMIT ?", Math.min(CHUNK, MAX_IN_FLIGHT - this.inflight)).toArray();
      if (rows.length === 0) return;
      this.sql.exec("UPDATE q SET status = 'running' WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(rows.map((r) => r.id)));
      this.inflight += rows.length;
      this.dispatched += rows.length;
      const report = (answers) => {
        const ids = answers.map((a) => rows[a.i].id);
        this.sql.exec("UPDATE q SET status = 'done' WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(ids));
        this.inflight -= ids.length;
        if (this.inflight < MAX_IN_FLIGHT - CHUNK) void this.ctx.storage.setAlarm(Date.now());
      };
      void this.env.WORKER.runMany(rows.map((r) => ({ request_id: String(r.id), template: "bench", params: JSON.parse(r.params), attempt: 1, allotted: {} })), report);
      await new Promise((r) => setTimeout(r, 0)); // let reports in between chunks, as the service's passes do
    }
  }
}

export default {
  async fetch(request, env) {
    const q = env.MINI.get(env.MINI.idFromName("q"));
    const path = new URL(request.url).pathname;
    const body = request.method === "POST" ? await request.json().catch(() => ({})) : {};
    if (path === "/enqueue") {
      const list = Array.isArray(body.requests) ? body.requests.map((r) => r.params ?? null) : [body.params ?? null];
      const ids = await q.enqueue(list);
      return Response.json({ ids }, { status: 202 });
    }
    if (path === "/execute") return Response.json({ result: await q.execute(body.params ?? null) });
    if (path === "/start") return Response.json((await q.start(), { ok: true }));
    if (path === "/status") return Response.json(await q.status());
    return new Response("ok");
  },
};
