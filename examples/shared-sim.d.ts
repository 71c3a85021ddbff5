// Types of shared-sim.js for the tests that import it (test/unit/worker-trace.test.ts).
export interface Job {
  request_id?: string;
  template?: string;
  params?: unknown;
  attempt?: number;
  allotted?: Record<string, number>;
  trace_id?: string;
  jobs?: Job[];
}
type Work = (job: Job) => { result: Record<string, unknown>; usage: Record<string, number> };
type SimEnv = { LATENCY_MS?: string; FAILURE_RATE?: string; JOB_LOG?: string; ACCEPT_MANY?: string };
export function logJob(job: Job, transport: string, outcome: string, env?: SimEnv): void;
export function simulate(job: Job, env: SimEnv): Promise<{ code: string; message: string } | null>;
export function httpHandler(work: Work): (request: Request, env: SimEnv) => Promise<Response>;
export function runJob(job: Job, env: SimEnv, work: Work): Promise<unknown>;
export function runMany(jobs: Job[], env: SimEnv, work: Work, report: (answers: unknown[]) => unknown): Promise<void>;
export function acceptMany(jobs: Job[], env: SimEnv, work: Work, report: (answers: unknown[]) => unknown, ctx: { waitUntil(p: Promise<unknown>): void }): { accepted: number };
