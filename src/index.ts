import { createApp } from "./app";
import { runCron } from "./scheduler/cron";

export { AllocationObject } from "./objects/allocations";
export { ClientObject } from "./objects/client";
export { PoolObject } from "./objects/pool";
export { SchedulerObject } from "./objects/scheduler";
export { ResourceManagerRpc } from "./rpc/entrypoint";

const app = createApp();

export default {
  fetch: app.fetch,
  scheduled: (controller, env, ctx) => ctx.waitUntil(runCron(controller, env)),
} satisfies ExportedHandler<Env>;
