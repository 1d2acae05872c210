#!/usr/bin/env bash
# The compose cluster's secrets (issue 13): `scripts/compose-secrets.sh DIR` writes, once,
#
#   DIR/operator.token   the operators' token (principal "operators": admin) - the host's
#                        meshctl, the dashboard's login, and `docker exec ... meshctl`
#   DIR/worker.token     the workers' token (principal "workers": worker:*)
#   DIR/auth.toml        the coordinators' --auth-file: those tokens' SHA-256 (never the
#                        tokens) and the workers' signing keys pinned (keys = [...])
#   DIR/ca.crt           the CA of the coordinators' certificate: the host's meshctl
#                        --tls-ca, curl --cacert, a browser's imported authority
#   DIR/trust.json       the expected signing keys, for `meshctl verify --trust`
#   DIR/pki/             (mode 0700, never mounted) the two CAs with their keys - one for
#                        the coordinators' ports, one for etcd - and the certificates:
#                        coordinator (SANs coordinator1-3, localhost, 127.0.0.1, ::1 and
#                        spiffe://agentmesh/agentmesh/coordinator; server and client
#                        auth), etcd-server (SANs etcd1-3, localhost, 127.0.0.1; the
#                        members' client and peer certificate), etcd-client (the
#                        coordinators' and workers' client certificate; no SAN)
#   DIR/keys/            (mode 0700, never mounted) Ed25519 signing keys, written by
#                        `mesh-worker keygen`: coordinator.key and one per role
#
# and, from those, on every run, one directory per kind of container, each mounted
# read-only at /etc/agentmesh in its containers and holding only what they need:
#
#   DIR/coordinator/     auth.toml operator.token ca.crt tls.crt tls.key etcd-ca.crt
#                        etcd-client.crt etcd-client.key signing.key
#   DIR/worker-<role>/   worker.token ca.crt etcd-ca.crt etcd-client.crt etcd-client.key
#                        signing.key (that role's key only)
#   DIR/etcd/            ca.crt (etcd's CA) server.crt server.key
#
# Existing files are kept (tokens, certificates and keys survive a `make cluster-down` /
# `cluster-up`); delete DIR to draw new ones, DIR/pki for new certificates only (they are
# also redrawn when one expires within a week), DIR/keys for new keys. The containers
# run as user 65532, so the mounted files are readable by every user of this host: keep
# DIR on a machine you trust, or mount a directory of your own (MESH_SECRETS) whose
# files that user can read.
#
# Needs openssl (Debian's; `make deps`). The keys come from `mesh-worker keygen` of the
# static binary `make images` staged in target/images/worker/ (the very binary of the
# worker image, run on the host in milliseconds; MESH_WORKER_BIN names another), or,
# where that is missing, from the worker image itself (docker run, no network).
set -euo pipefail
dir=${1:?usage: compose-secrets.sh DIR}
root="$(cd "$(dirname "$0")/.." && pwd)"
# The roles of the compose file's workers (deploy/compose/docker-compose.yml).
ROLES="supervisor backend frontend security architect devops database"

command -v openssl >/dev/null || { echo "compose-secrets: openssl is missing (Debian: apt-get install openssl; make deps)" >&2; exit 1; }
mkdir -p "$dir"
chmod 0755 "$dir"
dir="$(cd "$dir" && pwd)"

token() { # 32 random bytes as hex
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

for name in worker operator; do
    if [ ! -s "$dir/$name.token" ]; then
        token >"$dir/$name.token"
        chmod 0644 "$dir/$name.token"
    fi
done

# ---- certificates -------------------------------------------------------------------
pki="$dir/pki"
PKI_FILES="ca.key ca.crt coordinator.key coordinator.crt etcd-ca.key etcd-ca.crt
           etcd-server.key etcd-server.crt etcd-client.key etcd-client.crt"

pki_complete() {
    local f
    for f in $PKI_FILES; do
        [ -s "$pki/$f" ] || return 1
    done
    for f in ca coordinator etcd-ca etcd-server etcd-client; do
        openssl x509 -noout -checkend 604800 -in "$pki/$f.crt" >/dev/null || return 1
    done
}

newkey() { # FILE: an ECDSA P-256 key (PKCS#8), readable by its owner only
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

serial() { printf '0x01%s' "$(od -An -N15 -tx1 /dev/urandom | tr -d ' \n')"; }

newca() { # NAME CN
    newkey "$pki/$1.key"
    openssl req -x509 -new -key "$pki/$1.key" -out "$pki/$1.crt" -subj "/CN=$2" -days 3650 -sha256 \
        -set_serial "$(serial)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
}

issue() { # CA NAME CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
    local ca=$1 name=$2 cn=$3 eku=$4 san=${5:-}
    newkey "$pki/$name.key"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        [ -z "$san" ] || echo "subjectAltName=$san"
    } >"$pki/$name.ext"
    openssl req -new -key "$pki/$name.key" -subj "/CN=$cn" 2>/dev/null |
        openssl x509 -req -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -set_serial "$(serial)" \
            -days 825 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.ext"
}

if ! pki_complete 2>/dev/null; then
    rm -rf "$pki"
    mkdir -p "$pki"
    chmod 0700 "$pki"
    newca ca "agentmesh compose CA"
    issue ca coordinator "agentmesh coordinator" serverAuth,clientAuth \
        "DNS:coordinator1,DNS:coordinator2,DNS:coordinator3,DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1,URI:spiffe://agentmesh/agentmesh/coordinator"
    newca etcd-ca "agentmesh compose etcd CA"
    issue etcd-ca etcd-server "agentmesh etcd" serverAuth,clientAuth \
        "DNS:etcd1,DNS:etcd2,DNS:etcd3,DNS:localhost,IP:127.0.0.1"
    issue etcd-ca etcd-client "agentmesh" clientAuth
    pki_complete || { echo "compose-secrets: openssl did not write every certificate in $pki" >&2; exit 1; }
fi

# ---- signing keys -------------------------------------------------------------------
keys="$dir/keys"
mkdir -p "$keys"
chmod 0700 "$keys"
staged="$root/target/images/worker/rootfs/usr/local/bin/mesh-worker"

keygen() { # NAME: keys/NAME.key, unless it is there
    local out="$keys/$1.key"
    [ -s "$out" ] && return 0
    rm -f "$out"
    if [ -n "${MESH_WORKER_BIN:-}" ]; then
        "$MESH_WORKER_BIN" keygen --out "$out" >/dev/null
    elif [ -x "$staged" ]; then
        "$staged" keygen --out "$out" >/dev/null
    else
        docker run --rm --network none --user "$(id -u):$(id -g)" -v "$keys:/keys" \
            "agentmesh/worker:${MESH_IMAGE_TAG:-latest}" keygen --out "/keys/$1.key" >/dev/null
    fi
}

public_key() { # NAME: the hex public key a key file names
    sed -n 's/^# public key: *\([0-9a-f]\{64\}\) *$/\1/p' "$keys/$1.key"
}

for name in coordinator $ROLES; do
    keygen "$name"
    [ -n "$(public_key "$name")" ] || { echo "compose-secrets: $keys/$name.key names no public key" >&2; exit 1; }
done

newer_than() { # FILE OTHER...: true when FILE is missing or older than one of the others
    local f=$1 o
    shift
    [ -s "$f" ] || return 0
    for o in "$@"; do
        [ "$o" -nt "$f" ] && return 0
    done
    return 1
}

# The trust file of `meshctl verify --trust`: the coordinators' key and each role's.
if newer_than "$dir/trust.json" "$keys"/*.key; then
    {
        echo "{"
        echo "  \"coordinator\": \"$(public_key coordinator)\","
        echo "  \"roles\": {"
        sep=""
        for role in $ROLES; do
            printf '%s    "%s": ["%s"]' "$sep" "$role" "$(public_key "$role")"
            sep=$',\n'
        done
        echo
        echo "  }"
        echo "}"
    } >"$dir/trust.json.tmp"
    chmod 0644 "$dir/trust.json.tmp"
    mv -f "$dir/trust.json.tmp" "$dir/trust.json"
fi

# ---- the auth file ------------------------------------------------------------------
if newer_than "$dir/auth.toml" "$dir/worker.token" "$dir/operator.token" "$keys"/*.key; then
    pinned=""
    for role in $ROLES; do
        pinned="$pinned${pinned:+, }\"$(public_key "$role")\""
    done
    cat >"$dir/auth.toml.tmp" <<TOML
# Written by scripts/compose-secrets.sh: the principals of the compose cluster.
[[principal]]
name = "workers"
token_sha256 = "$(sha "$(cat "$dir/worker.token")")"
permissions = ["worker:*"]
# The roles' signing keys (keys/<role>.key): a worker announcing another is refused.
keys = [$pinned]

[[principal]]
name = "operators"
token_sha256 = "$(sha "$(cat "$dir/operator.token")")"
permissions = ["admin"]
TOML
    chmod 0644 "$dir/auth.toml.tmp"
    mv -f "$dir/auth.toml.tmp" "$dir/auth.toml"
fi

# ---- what each kind of container mounts ---------------------------------------------
put() { # SRC DIR NAME: DIR/NAME, a 0644 copy of SRC, replaced only when it differs
    local dst="$2/$3"
    if ! cmp -s "$1" "$dst"; then
        cp "$1" "$dst.tmp"
        chmod 0644 "$dst.tmp"
        mv -f "$dst.tmp" "$dst"
    fi
}

mountable() { # DIR
    mkdir -p "$1"
    chmod 0755 "$1"
}

put "$pki/ca.crt" "$dir" ca.crt

mountable "$dir/coordinator"
put "$dir/auth.toml" "$dir/coordinator" auth.toml
put "$dir/operator.token" "$dir/coordinator" operator.token
put "$pki/ca.crt" "$dir/coordinator" ca.crt
put "$pki/coordinator.crt" "$dir/coordinator" tls.crt
put "$pki/coordinator.key" "$dir/coordinator" tls.key
put "$pki/etcd-ca.crt" "$dir/coordinator" etcd-ca.crt
put "$pki/etcd-client.crt" "$dir/coordinator" etcd-client.crt
put "$pki/etcd-client.key" "$dir/coordinator" etcd-client.key
put "$keys/coordinator.key" "$dir/coordinator" signing.key

for role in $ROLES; do
    w="$dir/worker-$role"
    mountable "$w"
    put "$dir/worker.token" "$w" worker.token
    put "$pki/ca.crt" "$w" ca.crt
    put "$pki/etcd-ca.crt" "$w" etcd-ca.crt
    put "$pki/etcd-client.crt" "$w" etcd-client.crt
    put "$pki/etcd-client.key" "$w" etcd-client.key
    put "$keys/$role.key" "$w" signing.key
done

mountable "$dir/etcd"
put "$pki/etcd-ca.crt" "$dir/etcd" ca.crt
put "$pki/etcd-server.crt" "$dir/etcd" server.crt
put "$pki/etcd-server.key" "$dir/etcd" server.key
