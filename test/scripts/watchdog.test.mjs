// node --test test/scripts/: the CI watchdog (scripts/watchdog.mjs) against real child processes.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import assert from "node:assert/strict";

const WATCHDOG = new URL("../../scripts/watchdog.mjs", import.meta.url).pathname;
const run = (...args) => spawnSync(process.execPath, [WATCHDOG, ...args], { encoding: "utf8" });

test("a run that passes or fails keeps its exit status, its output passed through, and is never rerun", () => {
  const ok = run("--idle", "5", "--", "bash", "-c", "echo passed");
  assert.equal(ok.status, 0);
  assert.equal(ok.stdout, "passed\n");
  const failed = run("--idle", "5", "--", "bash", "-c", "echo once; echo oops >&2; exit 3");
  assert.equal(failed.status, 3);
  assert.equal(failed.stdout, "once\n");
  assert.match(failed.stderr, /oops/);
  assert.doesNotMatch(failed.stderr, /watchdog/);
});

test("a run silent for --idle seconds is stopped with what it started, run again, and fails with 124 when it hangs again", () => {
  const started = Date.now();
  // Each run's child writes its pid: those, not whatever else on the machine sleeps, must be gone.
  const pids = join(mkdtempSync(join(tmpdir(), "watchdog-test-")), "pids");
  const hung = run("--idle", "1", "--", "bash", "-c", `echo start; sleep 30 & echo $! >> ${pids}; wait`);
  assert.equal(hung.status, 124);
  assert.equal(hung.stdout, "start\nstart\n");
  assert.match(hung.stderr, /running it again \(attempt 2 of 2\)/);
  assert.match(hung.stderr, /the last of 2 runs hung; failing/);
  assert.ok(Date.now() - started < 10_000, "stopped after about 2 s, not after the child's 30 s");
  const children = readFileSync(pids, "utf8").trim().split("\n").map(Number);
  assert.equal(children.length, 2, "one child per run");
  // Killed is gone: a killed child may linger as a zombie until whoever inherited it reaps it.
  const alive = children.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
    } catch {
      return false;
    }
  });
  assert.deepEqual(alive, [], "the hung runs' children are gone");
});

test("output keeps a slow run alive; a bad command line is refused with 2", () => {
  const slow = run("--idle", "1", "--", "bash", "-c", "for i in 1 2 3 4; do echo tick; sleep 0.6; done");
  assert.equal(slow.status, 0);
  assert.equal(slow.stdout, "tick\n".repeat(4));
  assert.equal(run().status, 2);
  assert.equal(run("--idle", "0", "--", "true").status, 2);
});

test("a run that failed only because vitest's pool could not start a file is run again; one with a failed test is not", () => {
  const dir = mkdtempSync(join(tmpdir(), "watchdog-test-"));
  // The first run prints vitest's start failure with every test passed and exits 1; the next passes.
  const marker = join(dir, "ran-once");
  const poolFailed = `echo "Error: [vitest-pool]: Failed to start cloudflare-pool worker for test files x.test.ts." >&2; echo " Tests  914 passed | 1 skipped (915)"`;
  const flaky = run("--idle", "5", "--", "bash", "-c", `if [ -e ${marker} ]; then echo passed; else touch ${marker}; ${poolFailed}; exit 1; fi`);
  assert.equal(flaky.status, 0);
  assert.equal(flaky.stdout, " Tests  914 passed | 1 skipped (915)\npassed\n");
  assert.match(flaky.stderr, /could not start a test file \(no test failed\); running it again \(attempt 2 of 2\)/);
  // The same failure twice: the second run's status.
  const twice = run("--idle", "5", "--", "bash", "-c", `${poolFailed}; exit 1`);
  assert.equal(twice.status, 1);
  assert.equal(twice.stdout.match(/Tests/g).length, 2);
  // A test failed too (vitest's summary counts it, colours and all): failing, never rerun.
  const failedToo = run("--idle", "5", "--", "bash", "-c", `${poolFailed}; printf ' Tests  \\033[31m1 failed\\033[39m | 913 passed\\n'; exit 1`);
  assert.equal(failedToo.status, 1);
  assert.doesNotMatch(failedToo.stderr, /running it again/);
  assert.equal(failedToo.stdout.match(/Tests/g).length, 2, "one run: its own two summary lines");
  // A failure of another kind is never rerun either.
  const other = run("--idle", "5", "--", "bash", "-c", "echo ' Tests  3 passed (3)'; exit 1");
  assert.equal(other.status, 1);
  assert.doesNotMatch(other.stderr, /running it again/);
  assert.ok(existsSync(marker));
});
