#!/usr/bin/env bash
# The request path against what a Node team writes instead: `keel serve`'s
# POST /api/owner/queues/{queue}/jobs (authentication, the owner rate limit and the audit trail
# on) beside ../shared/bench/http-peer (Fastify + BullMQ 6: bearer check, queue.add), on one
# private Redis and a fresh PostgreSQL database, alternated ROUNDS times with the same load
# generator. Prints each round and the medians:
#   single   wrk -t1 -cCONNS, one job per request: requests/s of Keel and of the peer, ratio;
#   bulk100  wrk, 100 jobs per request to Keel: jobs/s, against the peer's single-job rate;
#   p99      hey at a fixed 1,000 requests/s (50 workers x 20/s) for SECONDS: p99 latency in
#            ms of Keel and of the peer (hey's own scheduling is in both).
# Usage: scripts/bench-http.sh [ROUNDS] [SECONDS]   (env: CONNS, PORT, KEEL_PORT, PEER_PORT)
# Needs wrk and hey (Debian packages), node, redis-server, PostgreSQL on 127.0.0.1:5432.
# Run it on a quiet machine: on 2 cores a build beside it halves the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-8}
CONNS=${CONNS:-50}
PORT=${PORT:-6391}
KEEL_PORT=${KEEL_PORT:-18301}
PEER_PORT=${PEER_PORT:-18300}
PEER=../shared/bench/http-peer
[ "$PORT" != 6379 ] || { echo "refusing to use the shared Redis port 6379" >&2; exit 2; }
for t in wrk hey node redis-server psql; do
  command -v "$t" >/dev/null || { echo "$t is missing (apt-get install wrk hey)" >&2; exit 2; }
done
OUT=$(mktemp -d)
DB="keel_bench_http_$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$OUT/redis.pid" --logfile "$OUT/redis.log"
for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $DB" >/dev/null
[ -d "$PEER/node_modules/fastify" ] || npm install --no-audit --no-fund --prefix "$PEER" >&2
cargo build --release -q -p keel-cli
cat >"$OUT/keel.toml" <<EOF
[server]
host = "127.0.0.1"
port = $KEEL_PORT

[database]
url = "postgres://postgres@127.0.0.1:5432/$DB"

# The owner rate limit stays on, with a budget this load does not use up, admitted locally
# from leases of 100 units (the limit holds across instances; see README).
[ratelimit.policies.owner-api]
limit = 100000000
window_ms = 60000
local_lease = 100

[queues.bench]
EOF
(cd "$OUT" && RUST_LOG=warn exec "$OLDPWD/target/release/keel" --config keel.toml \
  --redis "redis://127.0.0.1:$PORT" --prefix bench serve >"$OUT/keel.out" 2>"$OUT/keel.err") &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "keel_" "$OUT/keel.out" 2>/dev/null && break; sleep 0.1; done
TOKEN=$(grep -o 'keel_[0-9a-f]*' "$OUT/keel.out" | head -1)
[ -n "$TOKEN" ] || { cat "$OUT/keel.err" >&2; exit 1; }
REDIS_URL="redis://127.0.0.1:$PORT" PORT="$PEER_PORT" TOKEN="$TOKEN" PREFIX=peer \
  node "$PEER/server.mjs" >"$OUT/peer.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PEER_PORT/health" >/dev/null && break; sleep 0.1; done
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$KEEL_PORT/api/health/live" >/dev/null && break; sleep 0.1; done
# 100 jobs per request, the same job as post.lua's.
python3 - "$OUT/bulk100.lua" <<'PY'
import json, sys
job = {"name": "bench", "data": {"payload": "x" * 100}}
body = json.dumps([job] * 100)
open(sys.argv[1], "w").write(
    'wrk.method = "POST"\nwrk.body = [==[' + body + ']==]\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
    'wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "secret")\n')
PY
export TOKEN
# Requests/s of one wrk run; a run with any non-2xx answer is an error, not a figure.
rps() {
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$1" "$2")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "non-2xx answers from $2:" >&2
    echo "$out" >&2
    curl -s -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
      -d '{"name":"bench"}' "$2" >&2
    exit 1
  fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
# Warm both (connections, JIT, pools).
rps "$PEER/post.lua" "http://127.0.0.1:$PEER_PORT/queues/bench/jobs" >/dev/null
rps "$PEER/post.lua" "http://127.0.0.1:$KEEL_PORT/api/owner/queues/bench/jobs" >/dev/null
BODY='{"name":"bench","data":{"payload":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}'
for r in $(seq 1 "$ROUNDS"); do
  keel=$(rps "$PEER/post.lua" "http://127.0.0.1:$KEEL_PORT/api/owner/queues/bench/jobs")
  peer=$(rps "$PEER/post.lua" "http://127.0.0.1:$PEER_PORT/queues/bench/jobs")
  bulk=$(rps "$OUT/bulk100.lua" "http://127.0.0.1:$KEEL_PORT/api/owner/queues/bench/jobs")
  p99() {
    hey -z "${SECS}s" -c 50 -q 20 -m POST -T application/json -H "Authorization: Bearer $TOKEN" \
      -d "$BODY" "$1" | awk '/ 99% in / {print $3 * 1000}'
  }
  p99=$(p99 "http://127.0.0.1:$KEEL_PORT/api/owner/queues/bench/jobs")
  peer_p99=$(p99 "http://127.0.0.1:$PEER_PORT/queues/bench/jobs")
  echo "{\"round\": $r, \"keel_rps\": $keel, \"peer_rps\": $peer, \"keel_bulk100_rps\": $bulk, \"keel_p99_ms_at_1000rps\": ${p99:-null}, \"peer_p99_ms_at_1000rps\": ${peer_p99:-null}}" | tee -a "$OUT/rounds.jsonl"
  redis-cli -p "$PORT" flushall >/dev/null
done
python3 - "$OUT/rounds.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
m = lambda k: statistics.median(r[k] for r in rows if r[k] is not None)
keel, peer, bulk, p99 = m("keel_rps"), m("peer_rps"), m("keel_bulk100_rps"), m("keel_p99_ms_at_1000rps")
peer_p99 = m("peer_p99_ms_at_1000rps")
print(json.dumps({"summary": True, "rounds": len(rows), "keel_rps": keel, "peer_rps": peer,
    "single_ratio": round(keel / peer, 2), "keel_bulk100_jobs_per_s": bulk * 100,
    "bulk_ratio_to_peer_single": round(bulk * 100 / peer, 2), "keel_p99_ms_at_1000rps": p99,
    "peer_p99_ms_at_1000rps": peer_p99}))
PY
