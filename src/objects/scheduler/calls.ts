/**
 * Worker calls: launch admitted requests to their templates' workers through service bindings, alone
 * (RPC `run`, else HTTP), several of one template in one `runMany` call, or as one batch for batchable
 * work, each request with its own deadline and stop handle. Every end becomes an outcome handed to
 * settlement; nothing here awaits inside a pass.
 */
import { batchGroups } from "../../domain/optimizer";
import type { Template } from "../../storage/templates";
import { log } from "../../log";
import { CallHandle, Deadlines } from "./deadlines";
import { groupBy } from "../../domain/groups";
import { type Outcome, type Row } from "./rows";
import type { QueueStore } from "./store";
import { itemOutcome, jobOf, lacksMethod, WorkerAnswer, type ItemAnswer, type WorkerBinding } from "./worker-protocol";

/** Params (JSON characters) in one runMany call at most. */
const MANY_PARAMS_CHARS = 4 * 1024 * 1024;
/** How long a worker found without RPC `run` is called over HTTP before RPC is tried again. */
const RPC_PROBE_MS = 10 * 60 * 1000;

/** What the calls report back: each request's outcome, and how long the call took. */
export interface CallsHost {
  /** A request's call ended: settle it (batched with others). */
  settle(id: string, attempt: number, outcome: Outcome): void;
  /** Settle what has ended now rather than on the timer. */
  settleNow(): void;
  noteDuration(ms: number): void;
}

export class WorkerCalls {
  /** The stop handle of every request in a worker call. */
  readonly inflight = new Map<string, CallHandle>();
  /** The worker calls' deadlines, on one timer. */
  private deadlines = new Deadlines();
  /** Bindings whose worker has no RPC `run`, until when to call them over HTTP without trying RPC. */
  private fetchOnly = new Map<string, number>();
  /** Workers found without RPC `runMany`, until when: their requests are sent one call each meanwhile. */
  private callEach = new Map<string, number>();

  constructor(private readonly env: Env, private readonly store: QueueStore, private readonly host: CallsHost) {}

  /** Calls started within the last `ms` and still running: the work a pass has just put in front of everyone else. */
  young(now: number, ms: number): number {
    let n = 0;
    for (const handle of this.inflight.values()) if (handle.at > now - ms) n += 1;
    return n;
  }

  /** Stop a request's call (a cancel, a lease that ended); its outcome is then "cancelled" or dropped. */
  abort(id: string, reason: Error): void {
    this.inflight.get(id)?.abort(reason);
  }

  /** Stop a request's call and forget it: its attempt is over (a lease that ended). */
  drop(id: string, reason: Error): void {
    this.abort(id, reason);
    this.inflight.delete(id);
  }

  /**
   * Launch requests marked running: batchable ones of one template sent together (up to their batch
   * size), the rest of one template in one runMany call, or alone.
   */
  launchAll(rows: Row[], templates: Map<string, Template>): void {
    this.store.loadParams(rows);
    // One line per launch (a chunk of up to CHUNK requests), naming each request with its trace id.
    if (rows.length) log.info("requests_dispatched", { count: rows.length, requests: rows.map((r) => ({ request_id: r.id, trace_id: r.trace_id, attempt: r.attempts })) });
    const batchable = rows.map((row) => ({ row, template: row.template, batchable: (this.store.plans.get(row.id)?.batchable ?? false) && row.queue === "batch" }));
    const size = (g: typeof batchable) => Math.max(1, this.store.plans.get(g[0]!.row.id)?.batch_size ?? 1);
    const alone: Row[] = [];
    for (const group of batchGroupsBySize(batchable, size)) {
      if (group.length === 1) alone.push(group[0]!.row);
      else this.launchBatch(group.map((g) => g.row), templates.get(group[0]!.template)!);
    }
    for (const [id, list] of groupBy(alone, (r) => r.template)) {
      const template = templates.get(id)!;
      if ((this.callEach.get(template.binding) ?? 0) > Date.now()) {
        for (const row of list) this.launch(row, template);
        continue;
      }
      // One call carries at most MANY_PARAMS_CHARS of params (an RPC message is limited to 32 MiB);
      // params stored compressed are large by definition and go alone.
      let group: Row[] = [];
      let chars = 0;
      const flush = () => {
        if (group.length === 1) this.launch(group[0]!, template);
        else if (group.length > 1) this.launchMany(group, template);
        group = [];
        chars = 0;
      };
      for (const row of list) {
        const params = row.params ?? "null";
        if (params.startsWith("gz:")) {
          this.launch(row, template);
          continue;
        }
        if (group.length > 0 && chars + params.length > MANY_PARAMS_CHARS) flush();
        group.push(row);
        chars += params.length;
      }
      flush();
    }
  }

  /** Start the worker call; its settlement is batched with others'. Not awaited by the pass. */
  private launch(row: Row, template: Template): void {
    const now = Date.now();
    const handle = new CallHandle();
    this.inflight.set(row.id, handle);
    const attempt = row.attempts;
    void this.invoke(row, template, handle).then((outcome) => {
      if (this.inflight.get(row.id) === handle) this.inflight.delete(row.id);
      this.host.noteDuration(Date.now() - now);
      this.host.settle(row.id, attempt, outcome);
    });
  }

  /**
   * Batching: several requests of one batchable template in one worker invocation; each is settled on
   * its own from its item of the answer. Cancelling one drops its outcome, not the others' call.
   */
  private launchBatch(rows: Row[], template: Template): void {
    const now = Date.now();
    const shared = new CallHandle();
    const attempts = new Map<string, number>();
    // Each request's own handle: cancelling one request aborts nothing the others share.
    const handles = new Map<string, CallHandle>();
    for (const row of rows) {
      attempts.set(row.id, row.attempts);
      handles.set(row.id, new CallHandle());
      this.inflight.set(row.id, handles.get(row.id)!);
    }
    void this.invokeBatch(rows, template, shared).then((outcomes) => {
      this.host.noteDuration(Date.now() - now);
      for (const row of rows) {
        if (this.inflight.get(row.id) === handles.get(row.id)) this.inflight.delete(row.id);
        this.host.settle(row.id, attempts.get(row.id)!, { ...outcomes.get(row.id)!, batched: rows.length });
      }
    });
  }

  /**
   * Several requests of one template in one call to its worker (RPC `runMany(jobs, report)`, docs/kam.md:
   * the worker protocol), each still a request of its own: the worker runs them independently and
   * reports each answer as soon as it has it, and each request keeps its own deadline and stop handle,
   * so one slow or failing request holds up and fails no other. One call instead of one per request
   * was about a third of the runtime's CPU per dispatch while draining a backlog (docs/benchmarks.md). A
   * worker without `runMany` gets one call per request, and is remembered for a while.
   */
  private launchMany(rows: Row[], template: Template): void {
    const startedAt = Date.now();
    type Entry = { row: Row; attempt: number; handle: CallHandle; deadline: { at: number; fire: () => void } };
    const pending = new Map<number, Entry>();
    let allEnded!: () => void;
    const ended = new Promise<void>((resolve) => {
      allEnded = resolve;
    });
    const end = (i: number, outcome: Outcome) => {
      const entry = pending.get(i);
      if (!entry) return; // answered already, or timed out or cancelled before its line came
      pending.delete(i);
      this.deadlines.remove(entry.deadline); // a no-op for the deadline that fired
      if (this.inflight.get(entry.row.id) === entry.handle) this.inflight.delete(entry.row.id);
      this.host.noteDuration(Date.now() - startedAt);
      this.host.settle(entry.row.id, entry.attempt, outcome);
      if (pending.size === 0) allEnded();
    };
    rows.forEach((row, i) => {
      const deadline = this.deadlines.add(startedAt + template.timeoutMs, () => end(i, { ok: false, error: `worker timed out after ${template.timeoutMs} ms` }));
      const entry: Entry = { row, attempt: row.attempts, handle: new CallHandle(), deadline };
      entry.handle.stopped.catch(() => end(i, { ok: false, error: "cancelled", retryable: false }));
      pending.set(i, entry);
      this.inflight.set(row.id, entry.handle);
    });
    // The worker reports answers as its requests end, several at a time when they end together.
    const report = (answers: unknown) => {
      if (!Array.isArray(answers)) return;
      for (const a of answers as Array<(ItemAnswer & { i?: unknown }) | null>) {
        if (a && typeof a.i === "number") end(a.i, itemOutcome(a));
      }
      // Answers that came together are a batch already: settle them now rather than on the timer,
      // which a busy event loop can hold back for seconds.
      this.host.settleNow();
    };
    void (async () => {
      try {
        const binding = (this.env as unknown as Record<string, WorkerBinding | undefined>)[template.binding];
        if (!binding) throw new TypeError('does not implement the method "runMany"'); // launch reports the missing binding
        // Every request may end (deadline, cancel) before the worker's call does: then it is not waited for.
        const answer = await Promise.race([binding.runMany(await Promise.all(rows.map(jobOf)), report), ended]);
        // The worker accepted the jobs and keeps `report` to answer each later: no call stays open here
        // (docs/kam.md: the worker protocol). Each request still ends by its report, its deadline or a cancel.
        if (accepted(answer)) return;
        for (const i of [...pending.keys()]) end(i, { ok: false, error: "worker failed: runMany ended without answering this request" });
      } catch (err) {
        if (lacksMethod(err, "runMany")) {
          // Not this worker's protocol: the same requests, one call each (their deadlines start now).
          this.callEach.set(template.binding, Date.now() + RPC_PROBE_MS);
          for (const [i, entry] of [...pending]) {
            pending.delete(i);
            this.deadlines.remove(entry.deadline);
            if (this.inflight.get(entry.row.id) === entry.handle) this.launch(entry.row, template);
          }
          return;
        }
        const reason = err instanceof WorkerAnswer ? err.message : `worker failed: ${(err instanceof Error ? err.message : String(err)).slice(0, 300)}`;
        for (const i of [...pending.keys()]) end(i, { ok: false, error: reason });
      }
    })();
  }

  /**
   * Call the template's worker with a deadline. Never rejects: every failure is an outcome.
   */
  private async invoke(row: Row, template: Template, handle: CallHandle): Promise<Outcome> {
    const answer = await this.call(template, handle, row.id, row.trace_id, await jobOf(row));
    if (!answer.ok) return answer;
    const parsed = answer.body as { result?: unknown; usage?: Record<string, number> } | null;
    return { ok: true, result: parsed?.result ?? null, usage: parsed?.usage ?? {} };
  }

  /**
   * The batch protocol: `{ "jobs": [job...] }` in (each job as a single call's), `{ "results":
   * [{ result, usage, error? }...] }` out, in the same order.
   */
  private async invokeBatch(rows: Row[], template: Template, handle: CallHandle): Promise<Map<string, Outcome>> {
    const jobs = await Promise.all(rows.map(jobOf));
    const answer = await this.call(template, handle, rows[0]!.id, null, { jobs });
    const out = new Map<string, Outcome>();
    if (!answer.ok) {
      for (const row of rows) out.set(row.id, answer);
      return out;
    }
    const results = (answer.body as { results?: ItemAnswer[] } | null)?.results ?? [];
    for (const [i, row] of rows.entries()) {
      const r = results[i];
      if (!r) out.set(row.id, { ok: false, error: "worker answered the batch without this request" });
      else out.set(row.id, itemOutcome(r));
    }
    return out;
  }

  /**
   * Hand a job (or a batch) to the template's worker within its deadline: over RPC (`run(job)`) when the
   * worker has it, else `POST /run`. RPC skips HTTP framing and JSON on both sides (about a third of
   * the call's cost under workerd; docs/benchmarks.md). A worker without `run` is remembered for a while.
   * The deadlines share one timer (see Deadlines): a timer, an AbortController and a listener per call
   * were about 5% of the service's CPU while draining, and workerd caps live timers per object at 10,000.
   */
  private async call(template: Template, handle: CallHandle, requestId: string, traceId: string | null, job: unknown): Promise<(Outcome & { ok: false }) | { ok: true; body: unknown }> {
    const binding = (this.env as unknown as Record<string, WorkerBinding | undefined>)[template.binding];
    if (!binding || typeof binding.fetch !== "function") {
      return { ok: false, error: `no service binding ${template.binding} for template ${template.id}`, retryable: false };
    }
    let timedOut = false;
    const deadline = this.deadlines.add(Date.now() + template.timeoutMs, () => {
      timedOut = true;
      handle.abort(new Error("deadline"));
    });
    try {
      return { ok: true, body: await this.send(binding, template.binding, job, requestId, traceId, handle) };
    } catch (err) {
      if (timedOut) return { ok: false, error: `worker timed out after ${template.timeoutMs} ms` };
      if (handle.aborted) return { ok: false, error: "cancelled", retryable: false };
      if (err instanceof WorkerAnswer) return { ok: false, error: err.message };
      return { ok: false, error: `worker failed: ${(err instanceof Error ? err.message : String(err)).slice(0, 300)}` };
    } finally {
      this.deadlines.remove(deadline);
    }
  }

  /**
   * The worker's answer to a job: by RPC unless its binding is marked HTTP-only, by HTTP when it is (or
   * when RPC finds no `run`, which marks it). Rejects with the worker's error, or when `stopped` does.
   * Over HTTP the request's trace id goes as X-Trace-Id too (a batch's jobs each carry their own).
   */
  private async send(binding: WorkerBinding, name: string, job: unknown, requestId: string, traceId: string | null, handle: CallHandle): Promise<unknown> {
    if ((this.fetchOnly.get(name) ?? 0) <= Date.now()) {
      try {
        return await Promise.race([binding.run(job), handle.stopped]);
      } catch (err) {
        if (!lacksMethod(err, "run")) throw err;
        this.fetchOnly.set(name, Date.now() + RPC_PROBE_MS);
      }
    }
    const res = await Promise.race([binding.fetch("https://worker.internal/run", {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": requestId, ...(traceId ? { "x-trace-id": traceId } : {}) },
      body: JSON.stringify(job),
      signal: handle.signal(),
    }), handle.stopped]);
    const text = await res.text();
    if (!res.ok) throw new WorkerAnswer(`worker answered ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text);
  }
}

/** A runMany answer `{ accepted: n }`: the worker took the jobs and will report each through `report`. */
function accepted(answer: unknown): boolean {
  return typeof answer === "object" && answer !== null && typeof (answer as { accepted?: unknown }).accepted === "number";
}

/** batchGroups with the batch size of each template's requests (their plans carry it). */
function batchGroupsBySize<T extends { template: string; batchable: boolean }>(items: T[], size: (group: T[]) => number): T[][] {
  const out: T[][] = [];
  for (const group of batchGroups(items, Number.MAX_SAFE_INTEGER)) {
    const n = size(group);
    for (let i = 0; i < group.length; i += n) out.push(group.slice(i, i + n));
  }
  return out;
}
