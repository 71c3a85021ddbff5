// Compile-time checks (tsc -p examples/kam-caller, run by npm run typecheck) that a caller's binding
// is fully typed: inputs are checked, answers narrow on `ok`, and nothing degrades to `any`.
import type { ResourceManagerRpc, RpcFailure } from "resource-manager";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const expectType = <T extends true>(_: T) => undefined;

export async function typed(rm: Service<ResourceManagerRpc>): Promise<void> {
  const spent = await rm.consume({ client_id: "acme", pool: "openai-gpt4", amount: 500 }, { trace_id: "t-1" });
  if (spent.ok) {
    expectType<Equal<typeof spent.remaining, number>>(true);
    expectType<Equal<typeof spent.event_id, string>>(true);
  } else {
    expectType<Equal<typeof spent.error.code, RpcFailure["error"]["code"]>>(true);
    expectType<Equal<typeof spent.retry_after_s, number | undefined>>(true);
  }
  const ran = await rm.execute({ client_id: "acme", template: "content-generate", queue: "immediate" });
  if (ran.ok) expectType<Equal<typeof ran.request.status, "queued" | "dispatching" | "running" | "completed" | "failed" | "cancelled" | "expired">>(true);
  const allocated = await rm.allocate({ client_id: "acme", job_id: "crawl", workers: 4 });
  if (allocated.ok) expectType<Equal<typeof allocated.allocation.depth, number>>(true);

  // @ts-expect-error amount is a number
  await rm.consume({ client_id: "acme", pool: "openai-gpt4", amount: "500" });
  // @ts-expect-error the client acted for is required
  await rm.status({ request_id: "req_0" });
  // @ts-expect-error no such queue
  await rm.execute({ client_id: "acme", template: "content-generate", queue: "yesterday" });
}
