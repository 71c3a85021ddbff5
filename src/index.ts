import { createApp } from "./app";
import { hotConsume, isHotConsume } from "./routes/consume-fast-path";
import { runCron } from "./cron";

export { AllocationObject } from "./objects/allocations";
export { ClientObject } from "./objects/client";
export { PoolObject } from "./objects/pool";
export { SchedulerObject } from "./objects/scheduler";
export { ResourceManagerRpc } from "./rpc/entrypoint";

const app = createApp();

export default {
  // The spend every platform worker makes first goes round the router (see src/routes/consume-fast-path.ts).
  fetch: (request, env, ctx) => (isHotConsume(request) ? hotConsume(request, env, ctx, (r) => app.fetch(r, env, ctx)) : app.fetch(request, env, ctx)),
  scheduled: (controller, env, ctx) => ctx.waitUntil(runCron(controller, env)),
} satisfies ExportedHandler<Env>;
