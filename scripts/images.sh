#!/usr/bin/env bash
# Builds the container images without pulling anything (`make images`):
#
#   agentmesh/coordinator:<version>  mesh-coordinator + meshctl
#   agentmesh/worker:<version>       mesh-worker
#   agentmesh/etcd:<etcd version>    Debian's /usr/bin/etcd and the libraries ldd names
#
# each also tagged :latest. <version> is the workspace version in Cargo.toml. Every image
# is FROM scratch (deploy/docker/*.Dockerfile), built with the classic builder from a
# small staging directory under target/images/, runs as 65532:65532, and carries
# Debian's CA bundle. Afterwards each binary's `--version`, run in its image, is
# compared with the image's org.opencontainers.image.version label, and the sizes are
# printed.
#
# Usage: scripts/images.sh BIN_DIR    (BIN_DIR: the static release build, `make bench-build`)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:?usage: scripts/images.sh BIN_DIR (the static release binaries)}
STAGE=target/images
UID_GID=65532:65532
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
ETCD=${ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
export DOCKER_BUILDKIT=0 # the classic builder: buildx is not installed, nothing is pulled

die() { echo "images: $*" >&2; exit 1; }

# [workspace.package] KEY = "value" from Cargo.toml.
workspace_field() {
    awk -v key="$1" '
        /^\[workspace\.package\]/ { on = 1; next }
        /^\[/ { on = 0 }
        on && $1 == key { v = $0; sub(/^[^=]*= *"/, "", v); sub(/".*$/, "", v); print v; exit }
    ' Cargo.toml
}

VERSION=$(workspace_field version)
SOURCE=$(workspace_field repository)
LICENSES=$(workspace_field license)
[ -n "$VERSION" ] || die "no [workspace.package] version in Cargo.toml"
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REVISION="$REVISION-dirty"
fi

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
[ -f "$CA_BUNDLE" ] || die "$CA_BUNDLE is missing: apt-get install ca-certificates"
[ -x "$ETCD" ] || die "etcd not found at $ETCD: install Debian's etcd-server (make deps)"
for b in mesh-coordinator mesh-worker meshctl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it first (make bench-build)"
done

# stage_bin SRC DST: a copy stripped of symbols and line tables (a third of the size,
# which keeps the coordinator image under 25 MB), redone only when the build is newer
# than the copy. The binaries are static and not position-independent, so a backtrace's
# addresses are the build's own: `addr2line -fe target/<triple>/release/BIN ADDR` names
# each frame from the unstripped binary of the same build.
stage_bin() {
    local src=$1 dst=$2
    mkdir -p "$(dirname "$dst")"
    if [ ! -f "$dst" ] || [ "$src" -nt "$dst" ]; then
        strip --strip-all -o "$dst.tmp" "$src"
        mv "$dst.tmp" "$dst"
    fi
}

# stage_file SRC DST: a plain copy (following symlinks), redone only when it differs.
stage_file() {
    local src=$1 dst=$2
    mkdir -p "$(dirname "$dst")"
    cmp -s "$src" "$dst" 2>/dev/null || cp -pL "$src" "$dst"
}

# The files every image shares: the CA bundle, and a user and group for 65532.
stage_common() {
    local root=$1
    stage_file "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd.new"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group.new"
    for f in passwd group; do
        cmp -s "$root/etc/$f.new" "$root/etc/$f" && rm "$root/etc/$f.new" || mv "$root/etc/$f.new" "$root/etc/$f"
    done
}

mkdir -p "$STAGE"

# coordinator: mesh-coordinator and meshctl
root=$STAGE/coordinator/rootfs
stage_common "$root"
stage_bin "$BIN/mesh-coordinator" "$root/usr/local/bin/mesh-coordinator"
stage_bin "$BIN/meshctl" "$root/usr/local/bin/meshctl"

# worker: mesh-worker
root=$STAGE/worker/rootfs
stage_common "$root"
stage_bin "$BIN/mesh-worker" "$root/usr/local/bin/mesh-worker"

# etcd: the binary and exactly the shared objects ldd names, at the paths it names
# (the program interpreter, /lib64/ld-linux-x86-64.so.2, among them).
root=$STAGE/etcd/rootfs
rm -rf "$root"
stage_common "$root"
stage_file "$ETCD" "$root/usr/local/bin/etcd"
ETCD_LIBS=$( (ldd "$ETCD" 2>/dev/null || true) | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for lib in $ETCD_LIBS; do
    stage_file "$lib" "$root$lib"
done
# The data directory: data/etcd becomes /var/lib/etcd, owned by 65532, mode 0700 (etcd
# warns about anything wider).
mkdir -p "$root/var/lib" "$STAGE/etcd/data/etcd"
chmod 700 "$STAGE/etcd/data/etcd"
ETCD_VERSION=$("$ETCD" --version | sed -n 's/^etcd Version: *//p')
[ -n "$ETCD_VERSION" ] || die "$ETCD --version names no version"
ETCD_PACKAGE=$(dpkg-query -S "$(readlink -f "$ETCD")" 2>/dev/null | cut -d: -f1 | head -1 || true)
if [ -n "$ETCD_PACKAGE" ]; then
    ETCD_PACKAGE="$ETCD_PACKAGE $(dpkg-query -W -f='${Version}' "$ETCD_PACKAGE")"
else
    ETCD_PACKAGE="$ETCD"
fi

# build NAME TAG [extra build args...]: tags agentmesh/NAME:TAG and :latest, removes the
# image those tags named before if it is now unused.
build() {
    local name=$1 tag=$2
    shift 2
    local repo=agentmesh/$name
    local old new log=$STAGE/$name/build.log
    old=$(docker image inspect -f '{{.Id}}' "$repo:$tag" 2>/dev/null || true)
    if ! docker build -f "deploy/docker/$name.Dockerfile" \
        --build-arg VERSION="$tag" --build-arg REVISION="$REVISION" \
        --build-arg SOURCE="$SOURCE" --build-arg LICENSES="$LICENSES" "$@" \
        -t "$repo:$tag" -t "$repo:latest" "$STAGE/$name" >"$log" 2>&1; then
        cat "$log" >&2
        die "docker build of $repo:$tag failed"
    fi
    new=$(docker image inspect -f '{{.Id}}' "$repo:$tag")
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
    echo "built $repo:$tag ($new)"
}

build coordinator "$VERSION"
build worker "$VERSION"
build etcd "$ETCD_VERSION" --build-arg DEBIAN_PACKAGE="$ETCD_PACKAGE"

# Each binary, run in its image, must report the version its image's label names.
check_version() {
    local image=$1 entrypoint=$2
    local label out
    label=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")
    out=$(docker run --rm --network none --entrypoint "$entrypoint" "$image" --version 2>&1) ||
        die "$image: $entrypoint --version failed: $out"
    case " $(echo "$out" | head -1) " in
        *" $label "*) ;;
        *) die "$image: $entrypoint --version says '$(echo "$out" | head -1)', the label says $label" ;;
    esac
    local user
    user=$(docker image inspect -f '{{.Config.User}}' "$image")
    [ "$user" = "$UID_GID" ] || die "$image runs as '$user', not $UID_GID"
    echo "checked $image: $entrypoint --version = $label (label), user $user"
}

check_version "agentmesh/coordinator:$VERSION" /usr/local/bin/mesh-coordinator
check_version "agentmesh/coordinator:$VERSION" /usr/local/bin/meshctl
check_version "agentmesh/worker:$VERSION" /usr/local/bin/mesh-worker
check_version "agentmesh/etcd:$ETCD_VERSION" /usr/local/bin/etcd

echo
printf '%-32s %8s  %s\n' IMAGE SIZE REVISION
for image in "agentmesh/coordinator:$VERSION" "agentmesh/worker:$VERSION" "agentmesh/etcd:$ETCD_VERSION"; do
    size=$(docker image inspect -f '{{.Size}}' "$image")
    printf '%-32s %5s MB  %s\n' "$image" "$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }')" "$REVISION"
done
# The size aim of the two images users run many of (issue 11): said, not enforced, since
# a dependency update may cross it without anything being wrong.
for image in "agentmesh/coordinator:$VERSION" "agentmesh/worker:$VERSION"; do
    size=$(docker image inspect -f '{{.Size}}' "$image")
    if [ "$size" -le 25000000 ]; then verdict=met; else verdict=MISSED; fi
    echo "aim: $image at most 25 MB: $(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }') MB, $verdict"
done
