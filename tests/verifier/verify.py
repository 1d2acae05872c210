#!/usr/bin/env python3
"""A second, independent verifier of agentmesh JSON exports, written from
docs/verification.md alone (it shares no code with the Rust one).

    verify.py EXPORT.json [--trust TRUST.json]   exit 0 valid, 1 "INVALID: <where>: <why>"
    verify.py --vectors docs/verification-vectors.json

Needs PyPI `cryptography` (Ed25519).
"""

import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Broken(Exception):
    def __init__(self, seq, field, message):
        super().__init__(message)
        self.seq, self.field, self.message = seq, field, message

    def __str__(self):
        where = self.field if self.seq is None else f"seq {self.seq} {self.field}"
        return f"{where}: {self.message}"


# ---- encodings (docs/verification.md, "Encodings") --------------------------------------


def u32(n):
    return struct.pack(">I", n)


def u64(n):
    return struct.pack(">Q", n)


def i64(n):
    return struct.pack(">q", n)


def bstr(b):
    return u32(len(b)) + b


def s(text):
    return bstr(text.encode("utf-8"))


def lst(items):
    return u32(len(items)) + b"".join(s(x) for x in items)


def sha256(b):
    return hashlib.sha256(b).digest()


def statement(session_id, round_, phase, role, attempt, type_, content_sha, verdict, concerns, reviewed):
    return (
        s("agentmesh.v1.result") + s(session_id) + u32(round_) + s(phase) + s(role) + u32(attempt)
        + s(type_) + content_sha + s(verdict or "") + lst(concerns) + s(reviewed)
    )


def entry_bytes(e, content_sha, public_key, signature):
    return (
        s("agentmesh.v1.entry") + u64(e["seq"]) + u32(e["round"]) + s(e["phase"]) + s(e["role"])
        + s(e["worker_id"]) + u32(e.get("attempt", 0)) + s(e["type"]) + i64(e["timestamp_ms"])
        + content_sha + s(e.get("verdict") or "") + lst(e["concerns"]) + s(e["proposal_hash"])
        + u32(e["proposal_version"]) + u64(e.get("prompt_tokens", 0))
        + u64(e.get("completion_tokens", 0)) + bstr(public_key) + bstr(signature)
    )


def genesis(session_id, task):
    return sha256(s("agentmesh.v1.genesis") + s(session_id) + sha256(task.encode("utf-8")))


def chain(prev, entry_encoded):
    return sha256(s("agentmesh.v1.chain") + prev + entry_encoded)


def certificate_bytes(c):
    out = (
        s("agentmesh.v1.certificate") + s(c["session_id"]) + bytes.fromhex(c["task_sha256"])
        + lst(c["participants"]) + u32(c["final_version"]) + s(c["final_hash"])
        + u64(c["chain_seq"]) + bytes.fromhex(c["chain_head"]) + u32(len(c["approvals"]))
    )
    for a in c["approvals"]:
        out += (
            s(a["role"]) + s(a["worker_id"]) + u64(a["seq"]) + u32(a["round"]) + u32(a["attempt"])
            + bytes.fromhex(a["content_sha256"]) + lst(a.get("concerns", []))
            + bstr(bytes.fromhex(a["public_key"])) + bstr(bytes.fromhex(a["signature"]))
        )
    key = c.get("coordinator_key")
    return out + bstr(bytes.fromhex(key) if key else b"")


def parse_key(text):
    text = text.strip()
    if len(text) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in text):
        raw = bytes.fromhex(text)
    else:
        padded = text.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(padded + "=" * (-len(padded) % 4))
    if len(raw) != 32:
        raise ValueError(f"{text!r} is not a 32-byte key")
    return raw


def verifies(key, message, signature):
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


# ---- the checks (docs/verification.md, "Verifying an export") --------------------------


def check_entry(session_id, i, entries, prev, trust):
    e = entries[i]
    expected = i + 1
    if e["seq"] != expected:
        if any(later["seq"] == expected for later in entries[i + 1:]):
            raise Broken(expected, "seq", f"entries out of order: seq {e['seq']} stands where seq {expected} belongs")
        if e["seq"] > expected:
            raise Broken(expected, "seq", f"missing: the entry after seq {expected - 1} is seq {e['seq']}")
        raise Broken(expected, "seq", f"seq {e['seq']} appears again")
    seq = e["seq"]
    content_sha = sha256(e["content"].encode("utf-8"))
    if e.get("content_sha256") and e["content_sha256"] != content_sha.hex():
        raise Broken(seq, "content", f"its SHA-256 is {content_sha.hex()}, the entry records {e['content_sha256']}")
    if not e.get("public_key"):
        raise Broken(seq, "public_key", "missing")
    try:
        key = parse_key(e["public_key"])
        signature = bytes.fromhex(e["signature"])
    except ValueError as err:
        raise Broken(seq, "public_key", str(err))
    if not signature:
        raise Broken(seq, "signature", "missing")
    reviewed = e["proposal_hash"] if e["phase"] == "REVIEW" else ""
    message = statement(session_id, e["round"], e["phase"], e["role"], e.get("attempt", 0), e["type"],
                        content_sha, e.get("verdict"), e["concerns"], reviewed)
    if not verifies(key, message, signature):
        raise Broken(seq, "signature", f"does not verify under public_key {key.hex()[:12]}")
    if trust is not None and key not in trust["roles"].get(e["role"], []):
        raise Broken(seq, "public_key", f"{key.hex()[:12]} is not trusted for role {e['role']}")
    computed = chain(prev, entry_bytes(e, content_sha, key, signature))
    if computed.hex() != e.get("chain_hash", ""):
        raise Broken(seq, "chain_hash", f"is {e.get('chain_hash')}, the chain gives {computed.hex()}")
    return computed


def check_certificate(session, entries, head, trust):
    c = session["certificate"]
    if c["session_id"] != session["id"]:
        raise Broken(None, "certificate.session_id", f"names session {c['session_id']}, not {session['id']}")
    if session["status"] != "CONSENSUS":
        raise Broken(None, "certificate", f"a {session['status']} session carries a certificate")
    if c["task_sha256"] != sha256(session["task"].encode("utf-8")).hex():
        raise Broken(None, "certificate.task_sha256", "does not match the task")
    if c["participants"] != session["roles"]:
        raise Broken(None, "certificate.participants", "are not the session's roles")
    if c["final_hash"] != session["final_hash"] or c["final_version"] != session["final_version"]:
        raise Broken(None, "certificate.final_hash", "is not the session's final version")
    proposal = next((e for e in entries if e["phase"] == "SYNTHESIZE" and e["type"] == "PROPOSAL"
                     and e["proposal_version"] == c["final_version"]), None)
    if (proposal is None or proposal["proposal_hash"] != c["final_hash"]
            or sha256(proposal["content"].encode("utf-8")).hex() != c["final_hash"]):
        raise Broken(None, "certificate.final_hash", "names no proposal of the transcript")
    last_seq = entries[-1]["seq"] if entries else 0
    if c["chain_seq"] != last_seq or c["chain_head"] != head.hex():
        raise Broken(None, "certificate.chain_head", f"is not the transcript's head, seq {last_seq}")
    for role in c["participants"]:
        n = sum(1 for a in c["approvals"] if a["role"] == role)
        if n != 1:
            raise Broken(None, "certificate.approvals", f"participant {role} has {n} approvals")
    by_seq = {e["seq"]: e for e in entries}
    for a in c["approvals"]:
        at = f"certificate.approvals[{a['role']}]"
        if a["role"] not in c["participants"]:
            raise Broken(None, at, "is not a participant")
        e = by_seq.get(a["seq"])
        same = e is not None and (
            e["role"] == a["role"] and e["phase"] == "REVIEW" and e.get("verdict") == "APPROVE"
            and e["proposal_hash"] == c["final_hash"] and e["round"] == a["round"]
            and e.get("attempt", 0) == a["attempt"] and e["worker_id"] == a["worker_id"]
            and e["concerns"] == a.get("concerns", [])
            and sha256(e["content"].encode("utf-8")).hex() == a["content_sha256"]
            and e["public_key"] == a["public_key"] and e["signature"] == a["signature"])
        if not same:
            raise Broken(None, at, f"is not the transcript's entry seq {a['seq']}")
        key = bytes.fromhex(a["public_key"])
        message = statement(c["session_id"], a["round"], "REVIEW", a["role"], a["attempt"], "REVIEW",
                            bytes.fromhex(a["content_sha256"]), "APPROVE", a.get("concerns", []),
                            c["final_hash"])
        if not verifies(key, message, bytes.fromhex(a["signature"])):
            raise Broken(None, at + ".signature", "does not verify")
        if trust is not None and key not in trust["roles"].get(a["role"], []):
            raise Broken(None, at + ".public_key", "is not trusted")
    if not c.get("coordinator_key"):
        raise Broken(None, "certificate.coordinator_key", "missing")
    ckey = bytes.fromhex(c["coordinator_key"])
    if not verifies(ckey, certificate_bytes(c), bytes.fromhex(c.get("signature", ""))):
        raise Broken(None, "certificate.signature", "does not verify under coordinator_key")
    if trust is not None and ckey not in trust["coordinator"]:
        raise Broken(None, "certificate.coordinator_key", "is not the trusted coordinator key")


def verify(doc, trust=None):
    session, entries = doc["session"], doc["entries"]
    head = genesis(session["id"], session["task"])
    for i in range(len(entries)):
        head = check_entry(session["id"], i, entries, head, trust)
    if session["entry_count"] != len(entries):
        raise Broken(None, "session.entry_count", "does not match the entries")
    if session.get("certificate") is not None:
        check_certificate(session, entries, head, trust)
    elif session["status"] == "CONSENSUS":
        raise Broken(None, "certificate", "missing")
    return len(entries)


def load_trust(path):
    with open(path) as f:
        raw = json.load(f)
    coordinator = raw.get("coordinator", [])
    if isinstance(coordinator, str):
        coordinator = [coordinator]
    return {
        "coordinator": [parse_key(k) for k in coordinator],
        "roles": {role: [parse_key(k) for k in keys] for role, keys in raw.get("roles", {}).items()},
    }


def check_vectors(path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization

    with open(path) as f:
        v = json.load(f)
    raw = serialization.PublicFormat.Raw
    worker = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["worker_seed"]))
    assert worker.public_key().public_bytes(serialization.Encoding.Raw, raw).hex() == v["worker_public_key"]
    e = v["entry"]
    content_sha = sha256(e["content"].encode())
    assert content_sha.hex() == v["content_sha256"]
    message = statement(v["session_id"], e["round"], e["phase"], e["role"], e["attempt"], e["type"],
                        content_sha, e["verdict"], e["concerns"], e["proposal_hash"])
    assert message.hex() == v["statement"], "statement"
    assert worker.sign(message).hex() == v["signature"], "signature"
    g = genesis(v["session_id"], v["task"])
    assert g.hex() == v["genesis"], "genesis"
    encoded = entry_bytes(e, content_sha, bytes.fromhex(e["public_key"]), bytes.fromhex(e["signature"]))
    assert encoded.hex() == v["entry_bytes"], "entry bytes"
    assert chain(g, encoded).hex() == v["chain_hash"], "chain hash"
    assert certificate_bytes(v["certificate"]).hex() == v["certificate_bytes"], "certificate bytes"
    coordinator = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["coordinator_seed"]))
    assert coordinator.sign(bytes.fromhex(v["certificate_bytes"])).hex() == v["certificate_signature"]
    print("vectors: ok")


def main(argv):
    if len(argv) == 3 and argv[1] == "--vectors":
        check_vectors(argv[2])
        return 0
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--trust"):
        print(__doc__, file=sys.stderr)
        return 2
    trust = load_trust(argv[3]) if len(argv) == 4 else None
    with open(argv[1]) as f:
        doc = json.load(f)
    try:
        n = verify(doc, trust)
    except Broken as broken:
        print(f"INVALID: {broken}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError) as err:
        print(f"INVALID: export: malformed ({err!r})", file=sys.stderr)
        return 1
    print(f"valid: session {doc['session']['id']}, {n} entries")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
