#!/usr/bin/env bash
# `make cluster-up`: the compose cluster of deploy/compose/ (3 etcd members, 3
# coordinators, a worker per role and a second backend) as the compose project
# "agentmesh" (MESH_PROJECT). Builds the images first when one is missing, draws the
# tokens, certificates and keys once (scripts/compose-secrets.sh), waits until a
# coordinator leads (its /readyz, over TLS checked against the cluster's CA) and every
# worker holds a stream and a lease, then says how to reach it. The compose file's
# variables (MESH_BIND, MESH_GRPC_PORT, MESH_HTTP_PORT, MESH_THINK_MS, ...) pass through;
# `make cluster-down` removes everything but the secrets. Needs openssl (`make deps`).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${MESH_PROJECT:-agentmesh}
FILE=deploy/compose/docker-compose.yml
TIMEOUT=${MESH_UP_TIMEOUT:-120}

die() { echo "cluster-up: $*" >&2; exit 1; }

VERSION=$(awk '/^\[workspace\.package\]/ { on = 1; next } /^\[/ { on = 0 }
    on && $1 == "version" { v = $0; sub(/^[^=]*= *"/, "", v); sub(/".*$/, "", v); print v; exit }' Cargo.toml)
export MESH_IMAGE_TAG=${MESH_IMAGE_TAG:-$VERSION}
export MESH_ETCD_TAG=${MESH_ETCD_TAG:-latest}

command -v docker-compose >/dev/null || die "docker-compose is not installed (Debian: apt-get install docker-compose)"
command -v openssl >/dev/null || die "openssl is not installed (Debian: apt-get install openssl; make deps)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

for image in "agentmesh/coordinator:$MESH_IMAGE_TAG" "agentmesh/worker:$MESH_IMAGE_TAG" "agentmesh/etcd:$MESH_ETCD_TAG"; do
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        echo "cluster-up: $image is missing; building the images"
        ${MAKE:-make} --no-print-directory images
        break
    fi
done

compose() { docker-compose -f "$FILE" -p "$PROJECT" "$@"; }

# Tokens, the auth file, certificates and signing keys (kept across runs; MESH_SECRETS
# names a directory of your own).
export MESH_SECRETS=${MESH_SECRETS:-$PWD/deploy/compose/secrets}
bash scripts/compose-secrets.sh "$MESH_SECRETS"
CA=$MESH_SECRETS/ca.crt

compose up -d --no-color

# GET a path over TLS on a published port, the coordinator's certificate checked against
# the cluster's CA (it names localhost and 127.0.0.1): "CODE BODY".
https_get() {
    local addr=$1 path=$2 host port reply
    host=${addr%:*} port=${addr##*:}
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    reply=$(printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" |
        timeout 5 openssl s_client -quiet -connect "$host:$port" -servername localhost \
            -CAfile "$CA" -verify_hostname localhost -verify_return_error 2>/dev/null) || return 1
    printf '%s %s\n' "$(echo "$reply" | head -1 | awk '{ print $2 }')" "$(echo "$reply" | tr -d '\r' | sed '1,/^$/d')"
}

published() { # SERVICE PORT -> the host address, empty when not published
    compose port "$1" "$2" 2>/dev/null | tail -1
}

COORDINATORS=$(compose config --services | grep '^coordinator' || true)
WORKERS=$(compose config --services | grep -v -e '^coordinator' -e '^etcd' | wc -l)
declare -A GRPC HTTP
for c in $COORDINATORS; do
    GRPC[$c]=$(published "$c" 7700)
    HTTP[$c]=$(published "$c" 7780)
done

echo "cluster-up: waiting for a leader and $WORKERS workers (up to ${TIMEOUT}s)"
deadline=$((SECONDS + TIMEOUT))
leader="" ready=0
while [ $SECONDS -lt $deadline ]; do
    leader=""
    for c in $COORDINATORS; do
        if [ "$(https_get "${HTTP[$c]}" /readyz 2>/dev/null)" = "200 leader" ]; then
            leader=$c
        fi
    done
    if [ -n "$leader" ]; then
        # meshctl inside the leader's container, on its own loopback port.
        ready=$(docker exec "$(compose ps -q "$leader")" meshctl workers --json 2>/dev/null |
            tr -d ' \n' | sed 's/},{/}\n{/g' | grep -c '"connected":true.*"leased":true' || true)
        [ "$ready" -ge "$WORKERS" ] && break
    fi
    sleep 1
done
if [ -z "$leader" ] || [ "$ready" -lt "$WORKERS" ]; then
    compose ps
    compose logs --tail=20 $COORDINATORS
    die "not ready after ${TIMEOUT}s (leader: ${leader:-none}, workers ready: $ready of $WORKERS); make cluster-down removes it"
fi

first=$(echo "$COORDINATORS" | head -1)
url="https://${GRPC[$first]/0.0.0.0/127.0.0.1}"
echo
echo "agentmesh cluster \"$PROJECT\" is up: $leader leads, $ready workers connected (images $MESH_IMAGE_TAG)"
for c in $COORDINATORS; do
    role=standby
    [ "$c" = "$leader" ] && role=leader
    printf '  %-13s gRPC %-16s HTTP %-16s %s\n' "$c" "${GRPC[$c]}" "${HTTP[$c]}" "$role"
done
echo
echo "  # authentication and TLS are on: the operator's token and the cluster's CA"
echo "  export MESH_TOKEN_FILE=$MESH_SECRETS/operator.token MESH_TLS_CA=$CA"
echo "  meshctl --coordinator $url run \"Design an order-tracking service\""
echo "  meshctl --coordinator $url workers"
echo "  meshctl --coordinator $url export ID --format json -o decision.json"
echo "  meshctl verify decision.json --trust $MESH_SECRETS/trust.json   # the cluster's signing keys"
echo "  dashboard: https://${HTTP[$first]/0.0.0.0/127.0.0.1}/ (trust $CA in the browser; sign in with the operator token)"
echo "  curl --cacert $CA https://${HTTP[$first]/0.0.0.0/127.0.0.1}/readyz"
echo "  (by another name than localhost or 127.0.0.1: meshctl --tls-server-name localhost)"
echo "  logs:      docker-compose -f $FILE -p $PROJECT logs -f $first"
echo "  stop:      make cluster-down (the secrets in $MESH_SECRETS stay)"
