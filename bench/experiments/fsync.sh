#!/usr/bin/env bash
# Which objects' commits wait on the disk during one phase of `bench/queue.mjs`, and for how long.
#
#   bash bench/experiments/fsync.sh MARKER [SECONDS]       (root, or ptrace allowed; Debian's strace)
#
# Starts `node bench/queue.mjs` (its QUEUE_BENCH_* settings from the environment), waits for MARKER in
# its output (e.g. "enqueueing 6000 single" or "draining"), then traces the fsync calls of the runtime's
# workerd process (the one holding the persist directory's object files) for SECONDS (default 1) and
# sums them per object class (the directory under state/v3/do/, or D1). Every call shows the runtime's
# thread that made it: under `wrangler dev` each object's SQLite commits on the thread that runs every
# isolate, so an fsync's time is time no request runs. strace slows the process: read counts and
# durations per call, not the benchmark's rates, from a traced run.
set -euo pipefail
cd "$(dirname "$0")/../.."
marker=${1:?usage: fsync.sh MARKER [SECONDS]}
seconds=${2:-1}
command -v strace >/dev/null || { echo "fsync.sh: strace is needed (apt-get install strace)" >&2; exit 1; }
out=$(mktemp)
trace=$(mktemp)
export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false
node bench/queue.mjs >"$out" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true; rm -f "$out" "$trace"' EXIT
for _ in $(seq 1 1200); do grep -q -- "$marker" "$out" && break; sleep 0.1; done
grep -q -- "$marker" "$out" || { echo "fsync.sh: \"$marker\" did not appear within 2 minutes" >&2; cat "$out" >&2; exit 1; }
state=$(sed -n 's/.*state in \([^,]*\),.*/\1/p' "$out" | head -1)
pid=""
for p in $(pgrep -f "workerd serve" || true); do
  if ls -l "/proc/$p/fd" 2>/dev/null | grep -q "$state/state/v3/do/"; then pid=$p; fi
done
[ -n "$pid" ] || { echo "fsync.sh: no workerd process holds $state's objects open" >&2; exit 1; }
timeout "$seconds" strace -f -y -T -p "$pid" -e trace=fsync,fdatasync -o "$trace" 2>/dev/null || true
wait $bench || true
echo "phase \"$marker\", ${seconds} s traced, runtime pid $pid ($(grep -m1 -E 'req/s, .* ok in|dispatched in' "$out" | sed 's/^ *//' || true))"
grep -E 'f(data)?sync\(' "$trace" | sed -E \
  -e 's/^([0-9]+) .*\/do\/[^/]*-([A-Za-z]+Object)\/.*<([0-9.]+)>$/\1 \2 \3/' \
  -e 's/^([0-9]+) .*miniflare-D1DatabaseObject.*<([0-9.]+)>$/\1 D1 \2/' \
  -e 's/^([0-9]+) .*<([0-9.]+)>$/\1 other \2/' |
  awk -v main="$pid" '{ n[$2]++; t[$2] += $3; if ($1 == main) m[$2]++ }
    END { for (k in n) printf "  %-18s %5d fsyncs  %7.1f ms  (%.2f ms each; %d on the main thread)\n", k, n[k], t[k] * 1000, t[k] * 1000 / n[k], m[k] }' | sort -k2 -nr
