// A worker's isolate under `wrangler dev`, through workerd's own inspector: the benchmarks run wrangler
// with its inspector proxy off, and workerd still serves its inspector on a port of its own. Used by
// bench/profile.mjs and bench/experiments/queued-heap.mjs. Node 20 needs --experimental-websocket.
import { execFileSync } from "node:child_process";

/**
 * The inspector's WebSocket URL for `worker`, found among the ports workerd listens on (`ss -ltnp`),
 * each asked for its targets (`/json/list`); `pid` picks one workerd process when several run. Null: none.
 */
export async function inspectorUrl(worker, pid) {
  return (await inspectorTargets(pid)).find((t) => t.name === worker || t.name.endsWith(`:${worker}`))?.url ?? null;
}

/**
 * Every isolate workerd's inspectors serve (`name`: the part of its debugger URL after the port, e.g.
 * "core:user:resource-manager", "d1:db" for the local D1 database), across its listening ports.
 */
export async function inspectorTargets(pid) {
  if (typeof WebSocket === "undefined") throw new Error("no WebSocket: run with node --experimental-websocket (Node 20)");
  const lines = execFileSync("ss", ["-ltnp"]).toString().split("\n").filter((l) => l.includes("workerd") && (!pid || l.includes(`pid=${pid},`)));
  const found = [];
  for (const line of lines) {
    const port = line.split(/\s+/)[3]?.split(":").pop();
    try {
      const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      for (const t of targets) {
        const url = String(t.webSocketDebuggerUrl ?? "");
        if (url) found.push({ name: url.replace(/^ws:\/\/[^/]+\//, ""), url });
      }
    } catch {
      // not the inspector port
    }
  }
  return found;
}

/**
 * A session on the inspector at `url`: `call(method, params)` answers the method's reply; `onEvent(fn)`
 * sees every event (a message without an id); `close()`.
 */
export async function connect(url) {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve);
    socket.addEventListener("error", reject);
  });
  let id = 0;
  const pending = new Map();
  const listeners = [];
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.id === undefined) for (const fn of listeners) fn(message);
    else {
      pending.get(message.id)?.(message);
      pending.delete(message.id);
    }
  });
  return {
    call: (method, params = {}) => new Promise((resolve) => {
      pending.set(++id, resolve);
      socket.send(JSON.stringify({ id, method, params }));
    }),
    onEvent: (fn) => listeners.push(fn),
    close: () => socket.close(),
  };
}
