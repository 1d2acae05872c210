#!/usr/bin/env bash
# `make cluster-up`: the compose cluster of deploy/compose/ (3 etcd members, 3
# coordinators, a worker per role and a second backend) as the compose project
# "agentmesh" (MESH_PROJECT). Builds the images first when one is missing, waits until a
# coordinator leads and every worker holds a stream and a lease, then says how to reach
# it. The compose file's variables (MESH_BIND, MESH_GRPC_PORT, MESH_HTTP_PORT,
# MESH_THINK_MS, ...) pass through; `make cluster-down` removes everything.
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
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

for image in "agentmesh/coordinator:$MESH_IMAGE_TAG" "agentmesh/worker:$MESH_IMAGE_TAG" "agentmesh/etcd:$MESH_ETCD_TAG"; do
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        echo "cluster-up: $image is missing; building the images"
        ${MAKE:-make} --no-print-directory images
        break
    fi
done

compose() { docker-compose -f "$FILE" -p "$PROJECT" "$@"; }

compose up -d --no-color

# GET a path on a published port through bash's /dev/tcp (no curl needed): "CODE BODY".
http_get() {
    local addr=$1 path=$2 host port reply
    host=${addr%:*} port=${addr##*:}
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    reply=$(timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port && printf 'GET $path HTTP/1.0\r\nHost: $host\r\n\r\n' >&3 && cat <&3" 2>/dev/null) || return 1
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
        if [ "$(http_get "${HTTP[$c]}" /readyz 2>/dev/null)" = "200 leader" ]; then
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
url="http://${GRPC[$first]/0.0.0.0/127.0.0.1}"
echo
echo "agentmesh cluster \"$PROJECT\" is up: $leader leads, $ready workers connected (images $MESH_IMAGE_TAG)"
for c in $COORDINATORS; do
    role=standby
    [ "$c" = "$leader" ] && role=leader
    printf '  %-13s gRPC %-16s HTTP %-16s %s\n' "$c" "${GRPC[$c]}" "${HTTP[$c]}" "$role"
done
echo
echo "  meshctl --coordinator $url run \"Design an order-tracking service\""
echo "  meshctl --coordinator $url workers"
echo "  dashboard: http://${HTTP[$first]/0.0.0.0/127.0.0.1}/"
echo "  logs:      docker-compose -f $FILE -p $PROJECT logs -f $first"
echo "  stop:      make cluster-down"
