#!/usr/bin/env bash
# `make demo`: one coordinator and seven scripted worker processes negotiate the sample
# task over gRPC on loopback. Prints the live negotiation, the transcript as a
# communication file, and the outcome; stops every process it started.
#
# Every process gets throwaway credentials of its own, made here: an Ed25519 signing key
# (`mesh-worker keygen`) that signs its results (the coordinator's signs the unanimity
# certificate), and a token whose SHA-256 the coordinator's auth file holds, with the
# worker's key pinned. The demo ends by verifying its own decision offline
# (`meshctl verify` against a trust file of the keys made here).
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

# Throwaway keys and tokens, readable by this user only.
KEYS="$LOGS/keys"
mkdir -m 700 "$KEYS"
keygen() { "$BIN/mesh-worker" keygen --out "$KEYS/$1.key" | sed -n 's/.*public key //p'; }
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
principal() { # name, permission, token file, [pinned key]
  printf '[[principal]]\nname = "%s"\ntoken_sha256 = "%s"\npermissions = ["%s"]\n' \
    "$1" "$(tr -d '\n' <"$3" | sha256sum | cut -d' ' -f1)" "$2"
  [ -z "${4:-}" ] || printf 'keys = ["%s"]\n' "$4"
  echo
}
COORDINATOR_KEY=$(keygen coordinator)
token >"$KEYS/operator.token"
principal operator sessions:write "$KEYS/operator.token" >"$KEYS/auth.toml"
TRUST_ROLES=""
for role in "${ROLES[@]}"; do
  key=$(keygen "$role")
  token >"$KEYS/$role.token"
  principal "worker-$role" "worker:$role" "$KEYS/$role.token" "$key" >>"$KEYS/auth.toml"
  TRUST_ROLES="$TRUST_ROLES${TRUST_ROLES:+, }\"$role\": [\"$key\"]"
done
printf '{"coordinator": "%s", "roles": {%s}}\n' "$COORDINATOR_KEY" "$TRUST_ROLES" >"$KEYS/trust.json"
export MESH_TOKEN_FILE="$KEYS/operator.token"

"$BIN/mesh-coordinator" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
  --auth-file "$KEYS/auth.toml" --signing-key "$KEYS/coordinator.key" \
  >"$LOGS/coordinator.out" 2>"$LOGS/coordinator.log" &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q '^listening on ' "$LOGS/coordinator.out" 2>/dev/null && break
  sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$LOGS/coordinator.out")
[ -n "$ADDR" ] || { echo "coordinator did not start; see $LOGS/coordinator.log" >&2; exit 1; }
export MESH_COORDINATOR="http://$ADDR"
echo "coordinator on $MESH_COORDINATOR (logs, throwaway keys and tokens in $LOGS)"

for role in "${ROLES[@]}"; do
  MESH_TOKEN_FILE="$KEYS/$role.token" "$BIN/mesh-worker" --role "$role" --id "$role-1" \
    --think-ms "$THINK_MS" --signing-key "$KEYS/$role.key" 2>"$LOGS/$role.log" &
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
echo "================ the decision, verified offline (meshctl verify) ================"
"$BIN/meshctl" export "$ID" --format json --output "$LOGS/session.json"
"$BIN/meshctl" verify "$LOGS/session.json" --trust "$KEYS/trust.json" || code=1
exit "$code"
