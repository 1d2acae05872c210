#!/usr/bin/env bash
# The Helm chart's offline checks (`make chart-test`). No cluster is used or needed.
#
#   1. helm (scripts/helm-setup.sh) and a venv .venv-k8s with kubernetes-validate, PyYAML
#      and pytest (deploy/helm/tests/requirements.txt)
#   2. helm lint --strict, with the default values and with each deploy/helm/agentmesh/ci file
#   3. helm template of each ci file for the oldest Kubernetes the chart claims (its
#      kubeVersion floor) and the newest whose schemas kubernetes-validate ships, with the
#      Prometheus Operator API present (so the ServiceMonitor and PodMonitor render too)
#   4. every rendered manifest validated against the strict schemas of that version; CRD
#      kinds against deploy/helm/tests/schemas (deploy/helm/tests/validate_manifests.py)
#   5. the tests over the rendered YAML (deploy/helm/tests, pytest)
#
# Fast when the tools are present (no network then). Rendered files: target/chart-test/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CHART=deploy/helm/agentmesh
TESTS=deploy/helm/tests
VENV="${K8S_VENV:-$ROOT/.venv-k8s}"
PYTHON="${PYTHON:-python3}"
OUT=target/chart-test
START=$SECONDS

step() { printf 'chart-test [%3ss] %s\n' "$((SECONDS - START))" "$*"; }

step "helm"
HELM="$(bash scripts/helm-setup.sh | tail -1)"
[ -x "$HELM" ] || { echo "chart-test: no helm at $HELM" >&2; exit 1; }
export HELM
export HELM_CACHE_HOME="$ROOT/.tools/helm-home/cache" HELM_CONFIG_HOME="$ROOT/.tools/helm-home/config" \
       HELM_DATA_HOME="$ROOT/.tools/helm-home/data" KUBECONFIG=/dev/null
echo "    $("$HELM" version --short) at $HELM"

step "python venv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        bash scripts/install-deps.sh python3-venv   # Debian's python3 needs it for -m venv
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
fi
stamp="$VENV/.chart-test-requirements"
if ! cmp -s "$TESTS/requirements.txt" "$stamp"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$TESTS/requirements.txt"
    cp "$TESTS/requirements.txt" "$stamp"
fi
PY="$VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the tree

OLDEST="$(sed -n 's/^kubeVersion: *"*>= *\([0-9]*\.[0-9]*\)\.[0-9]*.*/\1.0/p' "$CHART/Chart.yaml")"
NEWEST="$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import validate_manifests as v; print(v.available_versions()[-1])' "$TESTS")"
[ -n "$OLDEST" ] && [ -n "$NEWEST" ] || { echo "chart-test: cannot tell the Kubernetes versions" >&2; exit 1; }

step "helm lint --strict (defaults and each ci values file)"
"$HELM" lint --strict --quiet "$CHART" >/dev/null
echo "    defaults: ok"
for f in "$CHART"/ci/*.yaml; do
    "$HELM" lint --strict --quiet "$CHART" -f "$f" >/dev/null
    echo "    $(basename "$f"): ok"
done

step "helm template: each ci values file for Kubernetes $OLDEST and $NEWEST"
rm -rf "$OUT" && mkdir -p "$OUT"
for v in "$OLDEST" "$NEWEST"; do
    for f in "$CHART"/ci/*.yaml; do
        "$HELM" template mesh "$CHART" --namespace agents -f "$f" --kube-version "$v" \
            --api-versions monitoring.coreos.com/v1 > "$OUT/$(basename "$f" .yaml)-$v.yaml"
    done
done
echo "    $(ls "$OUT" | wc -l) renderings in $OUT"

step "schema validation (kubernetes-validate strict schemas; CRDs: $TESTS/schemas)"
for v in "$OLDEST" "$NEWEST"; do
    "$PY" "$TESTS/validate_manifests.py" --kube-version "$v" "$OUT"/*-"$v".yaml
done

step "tests over the rendered YAML ($TESTS)"
(cd "$TESTS" && "$PY" -m pytest -q -p no:cacheprovider)

step "all chart checks passed"
