#!/usr/bin/env bash
# `make demo`: one coordinator and seven scripted worker processes negotiate the sample
# task over gRPC on loopback. Prints the live negotiation, the transcript as a
# communication file, and the outcome; stops every process it started.
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug}
THINK_MS=${THINK_MS:-150}
ROLES=(supervisor backend frontend security architect devops database)
LOGS=$(mktemp -d -t agentmesh-demo.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
}
trap cleanup EXIT

"$BIN/mesh-coordinator" --listen 127.0.0.1:0 --http 127.0.0.1:0 >"$LOGS/coordinator.out" 2>"$LOGS/coordinator.log" &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q '^listening on ' "$LOGS/coordinator.out" 2>/dev/null && break
  sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$LOGS/coordinator.out")
[ -n "$ADDR" ] || { echo "coordinator did not start; see $LOGS/coordinator.log" >&2; exit 1; }
export MESH_COORDINATOR="http://$ADDR"
echo "coordinator on $MESH_COORDINATOR (logs in $LOGS)"

for role in "${ROLES[@]}"; do
  "$BIN/mesh-worker" --role "$role" --id "$role-1" --think-ms "$THINK_MS" 2>"$LOGS/$role.log" &
  PIDS+=($!)
done
for _ in $(seq 100); do
  [ "$("$BIN/meshctl" workers --json 2>/dev/null | grep -o '"worker_id"' | wc -l)" -eq ${#ROLES[@]} ] && break
  sleep 0.1
done
"$BIN/meshctl" workers
echo

TASK=${TASK:-"Design an order-tracking service for a multi-tenant SaaS: customers create orders and follow their status live on a web dashboard, staff search the order history, and the service runs on Kubernetes with PostgreSQL."}
"$BIN/meshctl" run "$TASK" | tee "$LOGS/run.out"
code=${PIPESTATUS[0]}
ID=$(sed -n '1s/^session //p' "$LOGS/run.out")

echo
echo "================ communication file (meshctl export $ID --format md) ================"
"$BIN/meshctl" export "$ID" --format md
echo "================ outcome (meshctl show $ID) ================"
"$BIN/meshctl" show "$ID"
exit "$code"
