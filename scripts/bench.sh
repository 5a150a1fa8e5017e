#!/usr/bin/env bash
# Runs Keel's own engine (keel), Keel over BullMQ's scripts (bullmq), raw bullmq-official and
# the Node BullMQ peer on one private Redis, alternated ROUNDS times, and prints the median of
# each figure and the ratios of keel and bullmq to node.
# Usage: scripts/bench.sh [ROUNDS]   (env: N, CONCURRENCY, SCENARIOS, PORT)
# Run it on a quiet machine: on 2 cores a build beside it halves the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PORT=${PORT:-6390}
N=${N:-100000}
CONCURRENCY=${CONCURRENCY:-50}
SCENARIOS=${SCENARIOS:-enqueue_bulk,enqueue_single,process,process_keep,latency}
PEER=../shared/bench/bullmq-peer
[ "$PORT" != 6379 ] || { echo "refusing to use the shared Redis port 6379" >&2; exit 2; }
OUT=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$OUT/redis.pid" --logfile "$OUT/redis.log"
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
for _ in $(seq 1 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
[ -d "$PEER/node_modules/bullmq" ] || npm install --no-audit --no-fund --prefix "$PEER" >&2
cargo build --release -q -p keel-cli
URL="redis://127.0.0.1:$PORT"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  for engine in keel bullmq bullmq-official; do
    timeout 1800 ./target/release/keel bench --redis "$URL" --jobs "$N" --concurrency "$CONCURRENCY" \
      --scenario "$SCENARIOS" --engine "$engine" >>"$OUT/$engine.jsonl"
  done
  REDIS_URL="$URL" N="$N" CONCURRENCY="$CONCURRENCY" SCENARIOS="$SCENARIOS" \
    timeout 1800 node "$PEER/bench.mjs" 2>/dev/null | sed 's/^{/{"engine":"node",/' >>"$OUT/node.jsonl" || true
  redis-cli -p "$PORT" flushall >/dev/null
done
python3 - "$OUT" <<'PY'
import json, statistics, sys, os
out = sys.argv[1]
rows = {}
for eng in ("keel", "bullmq", "bullmq-official", "node"):
    f = eng + ".jsonl"
    p = os.path.join(out, f)
    if not os.path.exists(p):
        continue
    for line in open(p):
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        key = d["scenario"] + ("/" + d["variant"] if d.get("variant") else "")
        for fig in ("jobs_per_s", "p50_ms", "p99_ms", "redis_cpu_us_per_job", "redis_bytes_per_job"):
            if isinstance(d.get(fig), (int, float)):
                rows.setdefault((key, fig), {}).setdefault(eng, []).append(d[fig])
print(f"{'scenario':<24} {'figure':<20} {'keel':>10} {'bullmq':>10} {'raw':>10} {'node':>10} {'keel/node':>9} {'bullmq/node':>11}")
for (key, fig), by in sorted(rows.items()):
    med = {e: statistics.median(v) for e, v in by.items()}
    k, b, r, n = (med.get(e) for e in ("keel", "bullmq", "bullmq-official", "node"))
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
    fmt = lambda x: f"{x:.1f}" if x is not None else "-"
    print(f"{key:<24} {fig:<20} {fmt(k):>10} {fmt(b):>10} {fmt(r):>10} {fmt(n):>10} {ratio(k, n):>9} {ratio(b, n):>11}")
PY
