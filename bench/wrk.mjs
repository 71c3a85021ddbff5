// Exactly `count` HTTP calls with `wrk` (Debian's package: `apt-get install wrk`), `connections` in flight,
// each answer checked, for benchmarks on a 2-core machine: wrk sends from one native thread at a small
// fraction of the CPU that Node's fetch (or autocannon) takes from the server it measures.
//
// The calls cycle through `requests` (call i is requests[i % n]); the answer to a call is checked with
// `check` (status and, for each named field, the value its first occurrence in the body must have).
// wrk cannot tell which call an answer belongs to, so the check is by multiset: every answer must
// match one of the requests' checks, and each request's count of matching answers must equal the
// calls sent with it. A Lua script of wrk's: delay() holds the connections once `count` calls are
// sent, and the last answer stops the thread, so exactly `count` calls are made; the time is from the first
// call sent to the last answer.

import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Whether wrk is installed (the benchmarks fall back to Node's fetch without it). */
export function haveWrk() {
  return new Promise((resolve) => execFile("wrk", ["--version"], (err, stdout, stderr) => resolve(/^wrk /m.test(String(stdout) + String(stderr)))));
}

const luaString = (s) => `"${String(s).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;

/**
 * @param {object} o
 * @param {string} o.base            e.g. http://127.0.0.1:8921
 * @param {Array<{method: string, path: string, headers: Record<string,string>, body?: string,
 *                 check: {status: number, fields: Record<string,string>}}>} o.requests
 * @param {number} o.count           calls in all
 * @param {number} o.connections     in flight at once
 * @param {string} [o.idField]       a body field whose first value is collected from every good answer (e.g. "id"),
 *                                   with the index of the request whose check it matched
 * @param {number} [o.timeoutS]      wrk's per-call timeout (default 60); the run's upper bound is the larger of
 *                                   it and one second per 50 calls
 * @returns {Promise<{ok: number, answered: number, sent: number, problems: string[], seconds: number, perS: number,
 *                    latency: {p50_ms: number, p95_ms: number, p99_ms: number, max_ms: number}, ids: Array<{id: string, request: number}>,
 *                    socketErrors: object}>}
 */
export async function wrkCalls({ base, requests, count, connections, idField, timeoutS = 60 }) {
  const dir = mkdtempSync(join(tmpdir(), "rm-wrk-"));
  const out = join(dir, "out.json");
  const finished = join(dir, "finished");
  const reqLua = requests.map((r) => `{ m = ${luaString(r.method)}, p = ${luaString(r.path)}, h = { ${Object.entries(r.headers).map(([k, v]) => `[${luaString(k)}] = ${luaString(v)}`).join(", ")} }, b = ${r.body === undefined ? "nil" : luaString(r.body)}, status = ${r.check.status}, fields = { ${Object.entries(r.check.fields).map(([k, v]) => `[${luaString(k)}] = ${luaString(v)}`).join(", ")} } }`).join(",\n  ");
  const script = `
local specs = {
  ${reqLua}
}
local N = ${count}
local ID = ${idField ? luaString(idField) : "nil"}
local built = {}
-- Globals, not locals: done() reads them from the thread (thread:get).
sent, answered, bad, first_us, last_us = 0, 0, 0, 0, 0
matched, ids, samples = {}, {}, {}
local threads = {}
local ffi = require("ffi")
ffi.cdef("typedef struct { long tv_sec; long tv_usec; } rm_timeval; int gettimeofday(rm_timeval *tv, void *tz);")
local tv = ffi.new("rm_timeval")
local function now_us() ffi.C.gettimeofday(tv, nil) return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec) end

function setup(thread) table.insert(threads, thread) end

function init(args)
  for i, s in ipairs(specs) do built[i] = wrk.format(s.m, s.p, s.h, s.b); matched[i] = 0 end
end

-- wrk asks delay() when a connection is ready for its next call (answered, or connected) and sends after
-- that delay: each 0 granted is one call. Once N are granted the connections wait (the last answer stops
-- the thread long before this ends).
granted = 0
function delay()
  if granted >= N then return 3600000 end
  granted = granted + 1
  return 0
end

function request()
  -- wrk also calls request() once to check the script, before any connection: that call sends nothing.
  if granted == 0 then return built[1] end
  if sent == 0 then first_us = now_us() end
  sent = sent + 1
  return built[((sent - 1) % #built) + 1]
end

local function field(body, name)
  return string.match(body, '"' .. name .. '":"([^"]*)"')
end

function response(status, headers, body)
  answered = answered + 1
  local hit = nil
  for i, s in ipairs(specs) do
    if status == s.status then
      local all = true
      for k, v in pairs(s.fields) do if field(body, k) ~= v then all = false break end end
      if all then hit = i break end
    end
  end
  if hit then
    matched[hit] = matched[hit] + 1
    if ID then local id = field(body, ID) if id then table.insert(ids, hit .. ":" .. id) end end
  else
    bad = bad + 1
    if #samples < 5 then table.insert(samples, status .. " " .. string.sub(body, 1, 400)) end
  end
  if answered == N then
    last_us = now_us()
    -- wrk runs for its -d whatever its threads do: the caller sees this file and ends it (SIGINT; done() still runs).
    local f = io.open(${luaString(finished)}, "w") f:write("1") f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local f = io.open(${luaString(out)}, "w")
  local m = t:get("matched")
  local parts = {}
  for i = 1, #specs do parts[i] = tostring(m[i] or 0) end
  local idl = t:get("ids")
  local quoted = {}
  for i, id in ipairs(idl) do quoted[i] = '"' .. id .. '"' end
  local sm = t:get("samples")
  local sq = {}
  for i, s in ipairs(sm) do sq[i] = string.format("%q", s) end
  f:write('{"answered":' .. t:get("answered") .. ',"sent":' .. t:get("sent") .. ',"bad":' .. t:get("bad") ..
    ',"matched":[' .. table.concat(parts, ",") .. '],"ids":[' .. table.concat(quoted, ",") .. '],"samples":[' .. table.concat(sq, ",") .. ']' ..
    ',"first_us":' .. string.format("%d", t:get("first_us")) .. ',"last_us":' .. string.format("%d", t:get("last_us")) .. ',"duration_us":' .. summary.duration .. ',"requests":' .. summary.requests ..
    ',"errors":{"connect":' .. summary.errors.connect .. ',"read":' .. summary.errors.read .. ',"write":' .. summary.errors.write .. ',"timeout":' .. summary.errors.timeout .. '}' ..
    ',"p50_us":' .. latency:percentile(50) .. ',"p95_us":' .. latency:percentile(95) .. ',"p99_us":' .. latency:percentile(99) .. ',"max_us":' .. latency.max .. '}')
  f:close()
end
`;
  const scriptFile = join(dir, "calls.lua");
  writeFileSync(scriptFile, script);
  try {
    await new Promise((resolve, reject) => {
      const runS = Math.max(timeoutS, Math.ceil(count / 50));
      const child = execFile("wrk", ["-t1", `-c${connections}`, `-d${runS}s`, "--timeout", `${timeoutS}s`, "-s", scriptFile, base], { timeout: (runS + 30) * 1000 }, (err, stdout, stderr) => {
        clearInterval(poll);
        if (err && !ended) reject(new Error(`wrk failed: ${err.message}\n${stdout}\n${stderr}`));
        else if (!existsSync(out)) reject(new Error(`wrk wrote no results\n${stdout}\n${stderr}`));
        else resolve();
      });
      // wrk runs for its whole -d: once the last answer is in, end it (SIGINT: it still reports).
      let ended = false;
      const poll = setInterval(() => {
        if (!ended && existsSync(finished)) {
          ended = true;
          child.kill("SIGINT");
        }
      }, 20);
    });
    const r = JSON.parse(readFileSync(out, "utf8"));
    // Each request's expected count: calls are sent round-robin over them.
    const expected = requests.map((_, i) => Math.floor(count / requests.length) + (i < count % requests.length ? 1 : 0));
    const mismatched = r.matched.map((m, i) => (m === expected[i] ? null : `request ${i}: ${m} good answers for ${expected[i]} calls`)).filter(Boolean);
    // From the first call sent to the last answer (wrk's own duration runs to its end, not to the last answer).
    const seconds = r.last_us > r.first_us ? (r.last_us - r.first_us) / 1e6 : r.duration_us / 1e6;
    const good = r.matched.reduce((x, y) => x + y, 0);
    const problems = [...r.samples, ...mismatched, ...(r.answered < count ? [`${count - r.answered} calls without an answer`] : [])];
    return {
      ok: good,
      answered: r.answered,
      sent: r.sent,
      problems,
      seconds,
      perS: good / seconds,
      latency: { p50_ms: r.p50_us / 1000, p95_ms: r.p95_us / 1000, p99_ms: r.p99_us / 1000, max_ms: r.max_us / 1000 },
      // Each good answer's id, with the index of the request it answered.
      ids: r.ids.map((x) => ({ request: Number(x.slice(0, x.indexOf(":"))) - 1, id: x.slice(x.indexOf(":") + 1) })),
      socketErrors: r.errors,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
