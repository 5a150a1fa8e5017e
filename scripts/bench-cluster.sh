#!/usr/bin/env bash
# Starts a private Redis Cluster of MASTERS masters (no replicas: their replication would
# share the machine's cores with the measurement) and runs `keel bench --cluster` on it: one
# queue on Keel's engine spread over every master against the same queue on one master,
# alternated ROUNDS times; prints every line and the summary. Stops its nodes by pid.
# Usage: scripts/bench-cluster.sh [ROUNDS]   (env: N, CONCURRENCY, MASTERS, BASE_PORT)
# Run it on a quiet machine: on 2 cores a build beside it halves the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N=${N:-50000}
CONCURRENCY=${CONCURRENCY:-50}
MASTERS=${MASTERS:-3}
BASE_PORT=${BASE_PORT:-7411}
OUT=$(mktemp -d)
PORTS=()
for i in $(seq 0 $((MASTERS - 1))); do PORTS+=($((BASE_PORT + i))); done
stop() {
  for p in "${PORTS[@]}"; do
    [ -f "$OUT/$p/pid" ] && kill "$(cat "$OUT/$p/pid")" 2>/dev/null || true
  done
  rm -rf "$OUT"
}
trap stop EXIT
for p in "${PORTS[@]}"; do
  mkdir -p "$OUT/$p"
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$OUT/$p/nodes.conf" --dir "$OUT/$p" --save "" --appendonly no \
    --daemonize yes --pidfile "$OUT/$p/pid" --logfile "$OUT/$p/log"
done
for p in "${PORTS[@]}"; do
  for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${PORTS[@]}") --cluster-yes >/dev/null
for _ in $(seq 1 100); do
  redis-cli -p "${PORTS[0]}" cluster info | grep -q 'cluster_state:ok' && break
  sleep 0.1
done
cargo build --release -q -p keel-cli
REDIS_CLUSTER_NODES=$(printf '127.0.0.1:%s,' "${PORTS[@]}" | sed 's/,$//') \
  timeout 3600 ./target/release/keel bench --cluster --jobs "$N" --concurrency "$CONCURRENCY" \
  --rounds "$ROUNDS"
