/**
 * The worker protocol as the scheduler speaks it (docs/kam.md: the worker protocol): the job a worker gets
 * for one request, the answers it gives (alone, in a batch, or reported by `runMany`), and the service
 * binding's shape.
 */
import { decompressText } from "../../domain/compression";
import { allottedOf, type Outcome, type Row } from "./rows";

/** A service binding to a template's worker: HTTP always, RPC `run` and `runMany` when the worker has them. */
export interface WorkerBinding {
  fetch: Fetcher["fetch"];
  run(job: unknown): Promise<unknown>;
  runMany(jobs: unknown[], report: (answers: unknown) => void): Promise<unknown>;
}

/** A request's params as JSON text (stored compressed above the plan's threshold). */
async function paramsOf(row: Row): Promise<string> {
  const text = row.params ?? "null"; // read from SQLite at launch (QueueStore.loadParams)
  return text.startsWith("gz:") ? decompressText(text) : text;
}

/** What the worker gets for one request (the worker protocol, docs/kam.md); `trace_id` is its enqueue's or execute's. */
export async function jobOf(row: Row): Promise<{ request_id: string; template: string; params: unknown; attempt: number; allotted: Record<string, number>; trace_id: string | null }> {
  return { request_id: row.id, template: row.template, params: JSON.parse(await paramsOf(row)), attempt: row.attempts, allotted: allottedOf(row), trace_id: row.trace_id ?? null };
}

/** A worker's non-2xx HTTP answer: a failed attempt, reported as it came. */
export class WorkerAnswer extends Error {}

/** One request's answer in a batch (`results[i]`) or a runMany report. */
export type ItemAnswer = { result?: unknown; usage?: Record<string, number>; error?: unknown };

export function itemOutcome(a: ItemAnswer): Outcome {
  return a.error ? { ok: false, error: `worker failed: ${String(a.error).slice(0, 300)}` } : { ok: true, result: a.result ?? null, usage: a.usage ?? {} };
}

/** The runtime's answer to an RPC call of a method the worker does not have. */
export function lacksMethod(err: unknown, name: string): boolean {
  return err instanceof TypeError && err.message.includes(`does not implement the method "${name}"`);
}
