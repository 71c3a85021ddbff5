// A caller of the Resource Manager's RPC entrypoint over a service binding, as KAM calls it.
//   POST /spend    { client_id, pool, amount }   consume units; when the pool is short, wait the
//                                                  retry_after_ms it names (up to MAX_WAIT_MS) and try once more
//   POST /generate { client_id, template, params } execute a template's work and answer the request
//   GET  /jobs/:id?client_id=...                   the request's status
// Every answer is the Resource Manager's own (its `ok`, body or error); an incoming X-Trace-Id is
// passed on, so the Resource Manager's log lines for the call carry the caller's trace id.

/** @typedef {import("resource-manager").ResourceManagerRpc} ResourceManagerRpc */
/** @typedef {{ RM: Service<ResourceManagerRpc>; MAX_WAIT_MS?: string }} Env */

/**
 * Spend units, backing off once as the refusal says.
 * @param {Env} env
 * @param {{ client_id: string; pool: string; amount: number }} spend
 * @param {{ trace_id?: string }} options
 */
export async function spend(env, spend, options) {
  const first = await env.RM.consume(spend, options);
  if (first.ok || first.error.code !== "rate_limited") return { answer: first, waited_ms: 0 };
  const wait = Number(first.error.details?.retry_after_ms);
  if (!Number.isFinite(wait) || wait > Number(env.MAX_WAIT_MS ?? 2000)) return { answer: first, waited_ms: 0 };
  await new Promise((resolve) => setTimeout(resolve, wait));
  return { answer: await env.RM.consume(spend, options), waited_ms: wait };
}

export default {
  /**
   * @param {Request} request
   * @param {Env} env
   */
  async fetch(request, env) {
    const url = new URL(request.url);
    const traceId = request.headers.get("x-trace-id") ?? undefined;
    const options = traceId ? { trace_id: traceId } : {};
    if (request.method === "POST" && url.pathname === "/spend") {
      const body = /** @type {{ client_id: string; pool: string; amount: number }} */ (await request.json());
      const { answer, waited_ms } = await spend(env, body, options);
      return Response.json({ ...answer, waited_ms }, { status: answer.ok ? 200 : 409 });
    }
    if (request.method === "POST" && url.pathname === "/generate") {
      const body = /** @type {{ client_id: string; template: string; params?: unknown }} */ (await request.json());
      const answer = await env.RM.execute(body, options);
      return Response.json(answer, { status: answer.ok ? 200 : 409 });
    }
    const job = url.pathname.match(/^\/jobs\/(req_[a-f0-9]{32})$/);
    if (request.method === "GET" && job) {
      const answer = await env.RM.status({ client_id: url.searchParams.get("client_id") ?? "", request_id: job[1] ?? "" }, options);
      return Response.json(answer.ok ? { status: answer.request.status, request: answer.request } : answer, { status: answer.ok ? 200 : 409 });
    }
    return Response.json({ error: { code: "not_found", message: "POST /spend, POST /generate or GET /jobs/:id" } }, { status: 404 });
  },
};
