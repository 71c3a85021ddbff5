import { expect, it, vi } from "vitest";
import { log } from "../../src/log";

/**
 * The suite's own plumbing (test/support/setup.ts): the service's log lines go to the runtime's own
 * console, never through vitest's, whose RPC call per line could be left unanswered by an object killed
 * while logging and then hang the run at the file's end. This fails if the pool stops exposing the
 * runtime's console (globalThis.__console, set by @cloudflare/vitest-pool-workers before vitest replaces
 * console) or the routing breaks, instead of the hang coming back unnoticed.
 */
it("the service's lines are written by the runtime's console, info lines dropped; other lines stay with vitest's", () => {
  const runtime = (globalThis as { __console?: Console }).__console;
  expect(typeof runtime?.log).toBe("function");
  expect(runtime).not.toBe(console);
  const written = vi.spyOn(runtime!, "log").mockImplementation(() => {});
  try {
    log.warn("test_console_probe", { n: 1 });
    log.error("test_console_probe", { n: 2 });
    log.info("test_console_probe", { n: 3 });
    console.log("a test's own line");
    expect(written.mock.calls.map(([line]) => (line as { level: string; n: number }))).toEqual([
      expect.objectContaining({ level: "warn", msg: "test_console_probe", n: 1 }),
      expect.objectContaining({ level: "error", msg: "test_console_probe", n: 2 }),
    ]);
  } finally {
    written.mockRestore();
  }
});
