#!/usr/bin/env bash
# `make cluster-down`: removes what `make cluster-up` created for the compose project
# "agentmesh" (MESH_PROJECT): its containers, its network and its etcd volumes. The
# images stay (`docker rmi agentmesh/coordinator agentmesh/worker agentmesh/etcd` removes
# them), and so do the tokens, certificates and keys of deploy/compose/secrets (delete
# the directory for new ones; scripts/compose-secrets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${MESH_PROJECT:-agentmesh}
command -v docker-compose >/dev/null || { echo "cluster-down: docker-compose is not installed" >&2; exit 1; }
docker-compose -f deploy/compose/docker-compose.yml -p "$PROJECT" down -v --remove-orphans --timeout 10
