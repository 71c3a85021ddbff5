import { createApp } from "./app";
import { runCron } from "./scheduler/cron";

export { PoolObject } from "./objects/pool";

const app = createApp();

export default {
  fetch: app.fetch,
  scheduled: (controller, env, ctx) => ctx.waitUntil(runCron(controller, env)),
} satisfies ExportedHandler<Env>;
