import { createApp } from "./app";
import { hotConsume, isHotConsume } from "./routes/consume-fast-path";
import { runCron } from "./cron";
import { poolHooks } from "./objects/pool/hooks";
import { evaluatePoolScaling } from "./services/scaling";

export { AllocationObject } from "./objects/allocations";
export { ClientObject } from "./objects/client";
export { PoolObject } from "./objects/pool";
export { SchedulerObject } from "./objects/scheduler";
export { ResourceManagerRpc } from "./rpc/entrypoint";

const app = createApp();
// A pool that runs dry asks for a scaling evaluation; objects import no service, so the entry wires it.
poolHooks.poolDry = (env, poolId, now) => evaluatePoolScaling(env, poolId, "pool_dry", now);

export default {
  // The spend every platform worker makes first goes round the router (see src/routes/consume-fast-path.ts).
  fetch: (request, env, ctx) => (isHotConsume(request) ? hotConsume(request, env, ctx, (r) => app.fetch(r, env, ctx)) : app.fetch(request, env, ctx)),
  scheduled: (controller, env, ctx) => ctx.waitUntil(runCron(controller, env)),
} satisfies ExportedHandler<Env>;
