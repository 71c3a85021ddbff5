#!/usr/bin/env bash
# A shard woken cold by its alarm, under a real `wrangler dev` (docs/benchmarks.md, thirty-sixth session).
#
#   bash bench/experiments/cold-wake.sh [PORT]     (from the repository's root; default port 8951)
#
# Starts `npm start` on a fresh local state, enqueues three of acme's requests (shard 3 of the shipped 4)
# due in 25 s, with their money admitted on the shard's hold of acme's budget, and kills the runtime at
# once (before the shard returns the hold, a second after the last enqueue). Then it starts the service
# again and makes no call until the shard's alarm has woken it for the requests: workerd gives such an
# object no `ctx.id.name`. Prints each request (completed, 1 attempt) and acme's budget: money in flight
# must be 0 once they ran. Before `e264819` the shard ran as shard 0 after such a wake and left its hold
# (200,000 nano-dollars here) in flight for the hour. Needs curl and jq; deletes .wrangler/state.
set -uo pipefail
cd "$(dirname "$0")/../.."
PORT=${1:-8951}
export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false
BASE=http://127.0.0.1:$PORT
KEY="Authorization: Bearer rmk_demo_enterprise_acme"
ADMIN="Authorization: Bearer dev-admin-token"
LOG=$(mktemp -d)
up() { for _ in $(seq 1 90); do grep -q "Ready on" "$1" && return 0; sleep 1; done; echo "the service did not start: $1"; exit 1; }
stop() { kill -TERM -- "-$1" 2>/dev/null; sleep 3; pkill -f "workerd.*$PORT" 2>/dev/null; sleep 1; }
rm -rf .wrangler/state
PORT=$PORT setsid npm start > "$LOG/first.log" 2>&1 &
FIRST=$!
up "$LOG/first.log"
sleep 2
curl -s -X POST "$BASE/admin/scheduler/start" -H "$ADMIN" > /dev/null
DUE=$(( $(date +%s%3N) + 25000 ))
IDS=()
for _ in 1 2 3; do
  IDS+=("$(curl -s -X POST "$BASE/api/queue/enqueue" -H "$KEY" -H 'content-type: application/json' \
    -d '{"template":"notify-email","queue":"normal","not_before":'"$DUE"'}' | jq -r .request.id)")
done
stop "$FIRST"
echo "enqueued ${IDS[*]}, due at $DUE; the runtime was killed"
PORT=$PORT setsid npm start > "$LOG/second.log" 2>&1 &
SECOND=$!
up "$LOG/second.log"
while [ "$(date +%s%3N)" -lt $(( DUE + 8000 )) ]; do sleep 1; done
for id in "${IDS[@]}"; do curl -s "$BASE/api/execution/$id" -H "$KEY" | jq -c '{id: .request.id, status: .request.status, attempts: .request.attempts}'; done
curl -s "$BASE/admin/clients/acme/budget" -H "$ADMIN" | jq -c '{in_flight_nano, spent_nano}'
stop "$SECOND"
echo "wrangler logs in $LOG"
