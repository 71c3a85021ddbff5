import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll } from "vitest";

// Each test file gets its own storage: build its D1 from the migrations, as a deployment is, then add
// the demo clients and keys of seed.sql.
await applyD1Migrations(env.DB, JSON.parse(env.TEST_MIGRATIONS));
await env.DB.batch((JSON.parse(env.TEST_SEED) as string[]).map((sql) => env.DB.prepare(sql)));

// The service's log lines (every level goes through console.log, src/log.ts) are written by the
// runtime's own console, not by vitest's. vitest's sends each line to the test pool as an RPC call made
// in the context of the object that logged it, and at a file's end waits for every such call to be
// answered. A line logged by an object while abortAllDurableObjects() kills it (a flush failing with
// "Application called abortAllDurableObjects()") was never answered: the context its answer belonged
// to was gone. The run then hung after the file's last test, with nothing running (reproduced with
// test/api/queue.test.ts beside a busy core, about one run in four; vitest's pending call was that
// line's onUserConsoleLog). The runtime's console writes to workerd's output at once, with no call
// to wait for. Info lines are dropped, as vitest.config.ts drops them from vitest's console; tests that
// read lines spy on console.log, which still sees every line. After a file's last test nothing is
// written: work the tests left running may still log while the file closes.
const runtimeConsole = (globalThis as { __console?: Console }).__console;
let closed = false;
if (runtimeConsole) {
  const vitestLog = console.log.bind(console);
  console.log = (...args: unknown[]) => {
    if (closed) return;
    const first = args[0] as { level?: unknown } | null | undefined;
    const serviceLine = typeof first === "object" && first !== null && typeof first.level === "string";
    if (!serviceLine) return vitestLog(...args);
    if (first.level !== "info") runtimeConsole.log(...args);
  };
}
// Registered first, this hook runs after the file's own afterAll hooks.
afterAll(() => {
  closed = true;
  if (!runtimeConsole) console.log = () => {};
});
