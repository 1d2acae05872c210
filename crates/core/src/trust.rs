//! Trust: what makes a transcript checkable by anyone, offline — worker signatures over a
//! canonical encoding of each result, a hash chain over the stored entries, and the
//! unanimity certificate a CONSENSUS ends with. `docs/verification.md` specifies every
//! encoding here byte by byte, with test vectors; this module is the one implementation
//! the coordinator, `meshctl verify` and the tests share (the Python verifier in
//! `tests/verifier/` is an independent second one, written from the document).
//!
//! Pure like the rest of the core: hashing, encoding and Ed25519 arithmetic only. Signing
//! is deterministic (RFC 8032), so [`KeyPair::sign`] is a pure function too; the private
//! keys themselves are held by the worker and the coordinator processes (their
//! `--signing-key` files), never by a [`Session`](crate::Session).
//!
//! # Encodings (all integers big-endian)
//!
//! - `u32(n)`, `u64(n)`, `i64(n)`: 4, 8, 8 bytes; `str(s)`: `u32(len) ‖ UTF-8 bytes`;
//!   `bytes(b)`: `u32(len) ‖ b`; `list(xs)`: `u32(count) ‖ str(x)…`; `h32(d)`: 32 raw bytes.
//! - **Statement** (what a worker signs): `str("agentmesh.v1.result") ‖ str(session_id) ‖
//!   u32(round) ‖ str(phase) ‖ str(role) ‖ u32(attempt) ‖ str(type) ‖ h32(SHA-256(content))
//!   ‖ str(verdict or "") ‖ list(concerns) ‖ str(proposal hash under review, or "")`.
//! - **Entry** (what the chain covers): `str("agentmesh.v1.entry") ‖ u64(seq) ‖ u32(round)
//!   ‖ str(phase) ‖ str(role) ‖ str(worker_id) ‖ u32(attempt) ‖ str(type) ‖
//!   i64(timestamp_ms) ‖ h32(SHA-256(content)) ‖ str(verdict or "") ‖ list(concerns) ‖
//!   str(proposal_hash) ‖ u32(proposal_version) ‖ u64(prompt_tokens) ‖
//!   u64(completion_tokens) ‖ bytes(public_key) ‖ bytes(signature)`.
//! - **Chain**: `genesis = SHA-256(str("agentmesh.v1.genesis") ‖ str(session_id) ‖
//!   h32(SHA-256(task)))`; `chain(k) = SHA-256(str("agentmesh.v1.chain") ‖ h32(chain(k-1)
//!   or genesis) ‖ entry(k))`.
//! - **Certificate** (what the coordinator signs): see [`Certificate::signing_bytes`].

use crate::entry::{Entry, EntryType, Phase, Verdict};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The domain tags that start every encoding: a signature or hash over one kind of thing
/// can never be taken for another kind.
pub const RESULT_TAG: &str = "agentmesh.v1.result";
pub const ENTRY_TAG: &str = "agentmesh.v1.entry";
pub const GENESIS_TAG: &str = "agentmesh.v1.genesis";
pub const CHAIN_TAG: &str = "agentmesh.v1.chain";
pub const CERTIFICATE_TAG: &str = "agentmesh.v1.certificate";

/// Lengths of an Ed25519 public key and signature.
pub const KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

// ---- byte types ----------------------------------------------------------------------

/// A SHA-256 digest; hex in JSON.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub fn of(bytes: &[u8]) -> Digest32 {
        Digest32(Sha256::digest(bytes).into())
    }
    /// The SHA-256 of an entry's content, as every encoding holds it.
    pub fn from_content(content: &str) -> Digest32 {
        Digest32::of(content.as_bytes())
    }
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(text: &str) -> Result<Digest32, String> {
        let bytes = hex::decode(text).map_err(|e| format!("not hex: {e}"))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes, not 32", b.len()))?;
        Ok(Digest32(array))
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest32::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 public key (32 bytes); hex in JSON. [`PublicKey::parse`] also takes base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for messages and tables.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }

    /// A key written as 64 hex digits or as base64 (standard or URL-safe alphabet,
    /// padded or not) of its 32 bytes.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            base64_decode(text).ok_or_else(|| {
                format!("{text:?} is neither 64 hex digits nor base64 of 32 bytes")
            })?
        };
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "{text:?} holds {} bytes; an Ed25519 public key is 32",
                b.len()
            )
        })?;
        Ok(PublicKey(array))
    }

    /// The key, parsed for verifying; refuses bytes that are no curve point and the
    /// small-order ("weak") keys under which a signature proves nothing.
    pub fn verifier(&self) -> Result<WorkerKey, String> {
        let key = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| format!("public key {} is not a valid Ed25519 key", self.short()))?;
        if key.is_weak() {
            return Err(format!(
                "public key {} is a small-order (weak) key",
                self.short()
            ));
        }
        Ok(WorkerKey {
            key: *self,
            verifying: key,
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A public key parsed once for verifying (point decompression is not free; a session
/// keeps one per role holder).
#[derive(Clone, Debug)]
pub struct WorkerKey {
    key: PublicKey,
    verifying: VerifyingKey,
}

impl PartialEq for WorkerKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for WorkerKey {}

impl WorkerKey {
    pub fn public(&self) -> PublicKey {
        self.key
    }

    /// Whether `signature` is this key's Ed25519 signature of `message` (RFC 8032, with
    /// the strict checks: canonical S, no small-order R).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.verifying.verify_strict(message, &signature).is_ok()
    }

    /// Verifies like [`WorkerKey::verifies`], and on success returns the proof of it.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Option<Verified> {
        let signature: [u8; SIGNATURE_LEN] = signature.try_into().ok()?;
        self.verifies(message, &signature)
            .then(|| Verified(Verified::digest(&self.key, &signature, message)))
    }
}

/// Proof that a signature verified: one SHA-256 over the key, the signature and the
/// statement, so it adds 32 bytes to a result, not 128. Only [`WorkerKey::verify`] makes
/// one, so holding one means the check ran. The edge verifies each result on its
/// worker's own stream task, where the results of one round are checked in parallel; the
/// session, one actor that every result of a round passes through in turn, then only
/// compares ([`Verified::covers`]), a hash instead of a curve operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified(Digest32);

impl Verified {
    /// Key and signature have fixed lengths, so the message that follows them cannot be
    /// shifted into either.
    fn digest(key: &PublicKey, signature: &[u8; SIGNATURE_LEN], message: &[u8]) -> Digest32 {
        let mut hash = Sha256::new();
        hash.update(b"agentmesh verified v1\n");
        hash.update(key.0);
        hash.update(signature);
        hash.update(message);
        Digest32(hash.finalize().into())
    }

    /// Whether this proof is of `signature` over exactly `message` under `key`.
    pub fn covers(&self, message: &[u8], signature: &[u8], key: &WorkerKey) -> bool {
        let Ok(signature) = <&[u8; SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        self.0 == Verified::digest(&key.key, signature, message)
    }
}

/// A signing key: the 32-byte seed of RFC 8032 and the public key it gives. Held by the
/// processes that sign (workers, the coordinator), which read the seed from their
/// `--signing-key` file or draw it from the OS.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public())
    }
}

/// What a key file starts with: one line naming the format, then the seed in hex.
pub const KEY_FILE_HEADER: &str = "agentmesh-ed25519-secret-key-v1";

impl KeyPair {
    pub fn from_seed(seed: [u8; 32]) -> KeyPair {
        KeyPair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The Ed25519 signature of `message` (deterministic).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signing.sign(message).to_bytes().to_vec()
    }

    /// Signs a reply to `turn` of `session_id` (`reviewed_hash`: the proposal hash the
    /// turn request named, for a review) over exactly the statement its entry will make.
    pub fn sign_reply(
        &self,
        session_id: &str,
        turn: &crate::TurnKey,
        reviewed_hash: &str,
        reply: &mut crate::Reply,
    ) {
        let statement = reply_statement(session_id, turn, reviewed_hash, reply);
        reply.signature = self.sign(&statement);
    }

    /// The key file's text: [`KEY_FILE_HEADER`], the seed in hex, and the public key as a
    /// comment line.
    pub fn to_file(&self) -> String {
        format!(
            "{KEY_FILE_HEADER}\n{}\n# public key: {}\n",
            hex::encode(self.seed()),
            self.public()
        )
    }

    /// Reads a key file written by [`KeyPair::to_file`] (`mesh-worker keygen`).
    pub fn from_file(text: &str) -> Result<KeyPair, String> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(format!("the file does not start with {KEY_FILE_HEADER:?}"));
        }
        let seed = lines
            .next()
            .ok_or("the file holds no key after its header")?;
        let seed: [u8; 32] = hex::decode(seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the key is not 64 hex digits")?;
        Ok(KeyPair::from_seed(seed))
    }
}

// ---- canonical encodings -------------------------------------------------------------

/// The canonical encoder: the few shapes every encoding is made of.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn tag(tag: &str) -> Enc {
        let mut e = Enc(Vec::with_capacity(256));
        e.str(tag);
        e
    }
    fn u32(&mut self, n: u32) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn u64(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn i64(&mut self, n: i64) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn list(&mut self, xs: &[String]) {
        self.u32(xs.len() as u32);
        for x in xs {
            self.str(x);
        }
    }
    fn h32(&mut self, d: &Digest32) {
        self.0.extend_from_slice(&d.0);
    }
}

fn verdict_name(v: Option<Verdict>) -> &'static str {
    v.map_or("", Verdict::as_str)
}

/// The fields a worker's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub session_id: &'a str,
    pub round: u32,
    pub phase: Phase,
    pub role: &'a str,
    pub attempt: u32,
    pub entry_type: Option<EntryType>,
    pub content_sha256: Digest32,
    pub verdict: Option<Verdict>,
    pub concerns: &'a [String],
    /// The proposal hash under review (REVIEW); empty in every other phase.
    pub proposal_hash: &'a str,
}

impl Statement<'_> {
    /// The canonical bytes a worker signs.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::tag(RESULT_TAG);
        e.str(self.session_id);
        e.u32(self.round);
        e.str(self.phase.as_str());
        e.str(self.role);
        e.u32(self.attempt);
        e.str(self.entry_type.map_or("", EntryType::as_str));
        e.h32(&self.content_sha256);
        e.str(verdict_name(self.verdict));
        e.list(self.concerns);
        e.str(self.proposal_hash);
        e.0
    }
}

/// What an entry of session `session_id` states, as its worker signed it.
pub fn entry_statement<'a>(
    session_id: &'a str,
    entry: &'a Entry,
    content_sha256: Digest32,
) -> Statement<'a> {
    Statement {
        session_id,
        round: entry.round,
        phase: entry.phase,
        role: &entry.role,
        attempt: entry.attempt,
        entry_type: Some(entry.entry_type),
        content_sha256,
        verdict: entry.verdict,
        concerns: &entry.concerns,
        proposal_hash: if entry.phase == Phase::Review {
            &entry.proposal_hash
        } else {
            ""
        },
    }
}

/// The concerns an accepted review keeps: the blank ones dropped, and one that says so
/// when an INVALID review names none. Every other entry keeps no concerns.
pub fn kept_concerns(phase: Phase, verdict: Option<Verdict>, concerns: &[String]) -> Vec<String> {
    if phase != Phase::Review {
        return Vec::new();
    }
    let mut kept: Vec<String> = concerns
        .iter()
        .filter(|c| !c.trim().is_empty())
        .cloned()
        .collect();
    if verdict == Some(Verdict::Invalid) && kept.is_empty() {
        kept.push("the review was invalid".to_string());
    }
    kept
}

/// The canonical statement of a worker's reply to `turn`: exactly what the entry the core
/// makes of it will state (verdict and concerns only on reviews, the concerns as kept,
/// the hash of the proposal under review).
pub fn reply_statement(
    session_id: &str,
    turn: &crate::TurnKey,
    reviewed_hash: &str,
    reply: &crate::Reply,
) -> Vec<u8> {
    let review = turn.phase == Phase::Review;
    let concerns = kept_concerns(turn.phase, reply.verdict, &reply.concerns);
    Statement {
        session_id,
        round: turn.round,
        phase: turn.phase,
        role: &turn.role,
        attempt: turn.attempt,
        entry_type: reply.entry_type,
        content_sha256: Digest32::of(reply.content.as_bytes()),
        verdict: if review { reply.verdict } else { None },
        concerns: &concerns,
        proposal_hash: if review { reviewed_hash } else { "" },
    }
    .encode()
}

/// The canonical bytes of a stored entry that the chain covers: every field but the chain
/// hash itself, the content as its SHA-256.
pub fn entry_bytes(entry: &Entry, content_sha256: &Digest32) -> Vec<u8> {
    let mut e = Enc::tag(ENTRY_TAG);
    e.u64(entry.seq);
    e.u32(entry.round);
    e.str(entry.phase.as_str());
    e.str(&entry.role);
    e.str(&entry.worker_id);
    e.u32(entry.attempt);
    e.str(entry.entry_type.as_str());
    e.i64(entry.timestamp_ms);
    e.h32(content_sha256);
    e.str(verdict_name(entry.verdict));
    e.list(&entry.concerns);
    e.str(&entry.proposal_hash);
    e.u32(entry.proposal_version);
    e.u64(entry.prompt_tokens);
    e.u64(entry.completion_tokens);
    e.bytes(entry.public_key.as_ref().map_or(&[][..], |k| &k.0[..]));
    e.bytes(&entry.signature);
    e.0
}

/// Where a session's chain starts: bound to its id and its task.
pub fn genesis(session_id: &str, task: &str) -> Digest32 {
    let mut e = Enc::tag(GENESIS_TAG);
    e.str(session_id);
    e.h32(&Digest32::of(task.as_bytes()));
    Digest32::of(&e.0)
}

/// The chain hash of `entry`, after `prev` (the previous entry's chain hash, or the
/// session's [`genesis`]).
pub fn chain_hash(prev: &Digest32, entry: &Entry, content_sha256: &Digest32) -> Digest32 {
    let mut e = Enc::tag(CHAIN_TAG);
    e.h32(prev);
    e.0.extend_from_slice(&entry_bytes(entry, content_sha256));
    Digest32::of(&e.0)
}

/// Checks that `entries` chain onto `prev`: each one's chain hash is the hash of it over
/// the one before. Returns the last chain hash, or the seq of the first entry that does
/// not chain (with the hash it should have).
pub fn check_chain(prev: &Digest32, entries: &[Entry]) -> Result<Digest32, (u64, Digest32)> {
    let mut prev = *prev;
    for entry in entries {
        let expected = chain_hash(&prev, entry, &Digest32::from_content(&entry.content));
        if expected != entry.chain_hash {
            return Err((entry.seq, expected));
        }
        prev = expected;
    }
    Ok(prev)
}

/// Sets the chain hashes of `entries` (a transcript from its first entry, in order) as
/// the core would: for fixtures of tests and tools that build transcripts by hand.
pub fn rechain(session_id: &str, task: &str, entries: &mut [Entry]) {
    let mut prev = genesis(session_id, task);
    for entry in entries {
        entry.chain_hash = chain_hash(&prev, entry, &Digest32::from_content(&entry.content));
        prev = entry.chain_hash;
    }
}

// ---- the unanimity certificate -------------------------------------------------------

/// One participant's signed APPROVE of the final version, enough to check it without the
/// transcript: the statement is rebuilt from these fields and the certificate's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub role: String,
    pub worker_id: String,
    /// The review entry's seq.
    pub seq: u64,
    pub round: u32,
    pub attempt: u32,
    pub content_sha256: Digest32,
    #[serde(default)]
    pub concerns: Vec<String>,
    pub public_key: PublicKey,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

/// What a CONSENSUS session ends with: every participant's signed approval of the final
/// hash, bound to the chain head, signed by the coordinator that ran the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub session_id: String,
    /// SHA-256 of the task text.
    pub task_sha256: Digest32,
    /// Every participant, supervisor first (the session's roles).
    pub participants: Vec<String>,
    pub final_version: u32,
    pub final_hash: String,
    /// The seq and chain hash of the last entry (the last approval).
    pub chain_seq: u64,
    pub chain_head: Digest32,
    /// One per participant, in participant order.
    pub approvals: Vec<Approval>,
    /// The coordinator's public key and its signature over [`Certificate::signing_bytes`];
    /// absent until the coordinator signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_key: Option<PublicKey>,
    #[serde(default, with = "hex_bytes", skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<u8>,
}

impl Certificate {
    /// The certificate of a session that ended in CONSENSUS on `final_hash`: the last
    /// approval of each participant in the final round. `None` when the transcript does not
    /// hold one signed approval of that hash per participant.
    pub fn build(
        session_id: &str,
        task: &str,
        participants: &[String],
        final_version: u32,
        final_hash: &str,
        transcript: &[Entry],
    ) -> Option<Certificate> {
        let last = transcript.last()?;
        let mut approvals = Vec::with_capacity(participants.len());
        for role in participants {
            let review = transcript.iter().rev().find(|e| {
                e.phase == Phase::Review && e.role == *role && e.round == final_version
            })?;
            if review.verdict != Some(Verdict::Approve) || review.proposal_hash != final_hash {
                return None;
            }
            approvals.push(Approval {
                role: role.clone(),
                worker_id: review.worker_id.clone(),
                seq: review.seq,
                round: review.round,
                attempt: review.attempt,
                content_sha256: Digest32::of(review.content.as_bytes()),
                concerns: review.concerns.clone(),
                public_key: review.public_key?,
                signature: review.signature.clone(),
            });
        }
        Some(Certificate {
            session_id: session_id.to_string(),
            task_sha256: Digest32::of(task.as_bytes()),
            participants: participants.to_vec(),
            final_version,
            final_hash: final_hash.to_string(),
            chain_seq: last.seq,
            chain_head: last.chain_hash,
            approvals,
            coordinator_key: None,
            signature: Vec::new(),
        })
    }

    /// The canonical bytes the coordinator signs: `str("agentmesh.v1.certificate") ‖
    /// str(session_id) ‖ h32(task_sha256) ‖ list(participants) ‖ u32(final_version) ‖
    /// str(final_hash) ‖ u64(chain_seq) ‖ h32(chain_head) ‖ u32(approval count) ‖ per
    /// approval: str(role) ‖ str(worker_id) ‖ u64(seq) ‖ u32(round) ‖ u32(attempt) ‖
    /// h32(content_sha256) ‖ list(concerns) ‖ bytes(public_key) ‖ bytes(signature) ‖ then
    /// bytes(coordinator_key)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut e = Enc::tag(CERTIFICATE_TAG);
        e.str(&self.session_id);
        e.h32(&self.task_sha256);
        e.list(&self.participants);
        e.u32(self.final_version);
        e.str(&self.final_hash);
        e.u64(self.chain_seq);
        e.h32(&self.chain_head);
        e.u32(self.approvals.len() as u32);
        for a in &self.approvals {
            e.str(&a.role);
            e.str(&a.worker_id);
            e.u64(a.seq);
            e.u32(a.round);
            e.u32(a.attempt);
            e.h32(&a.content_sha256);
            e.list(&a.concerns);
            e.bytes(&a.public_key.0);
            e.bytes(&a.signature);
        }
        e.bytes(self.coordinator_key.as_ref().map_or(&[][..], |k| &k.0[..]));
        e.0
    }

    /// Signs the certificate as the coordinator holding `key`.
    pub fn sign(&mut self, key: &KeyPair) {
        self.coordinator_key = Some(key.public());
        self.signature = key.sign(&self.signing_bytes());
    }

    /// The statement an approval's signature covers.
    pub fn approval_statement(&self, approval: &Approval) -> Vec<u8> {
        Statement {
            session_id: &self.session_id,
            round: approval.round,
            phase: Phase::Review,
            role: &approval.role,
            attempt: approval.attempt,
            entry_type: Some(EntryType::Review),
            content_sha256: approval.content_sha256,
            verdict: Some(Verdict::Approve),
            concerns: &approval.concerns,
            proposal_hash: &self.final_hash,
        }
        .encode()
    }
}

/// Bytes as lower-case hex in JSON; reads hex, or the array of numbers older stores
/// wrote.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Hex(String),
            Numbers(Vec<u8>),
        }
        match Form::deserialize(d)? {
            Form::Hex(text) => hex::decode(text).map_err(serde::de::Error::custom),
            Form::Numbers(bytes) => Ok(bytes),
        }
    }
}

// ---- trust files ---------------------------------------------------------------------

/// Who is expected to have signed: each role's allowed public keys and the coordinators'
/// (`meshctl verify --trust FILE`). JSON:
/// `{"coordinator": ["<key>", …], "roles": {"backend": ["<key>", …], …}}`, each key as hex
/// or base64; `coordinator` may be a single string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustFile {
    pub coordinator: Vec<PublicKey>,
    pub roles: BTreeMap<String, Vec<PublicKey>>,
}

impl TrustFile {
    pub fn parse(text: &str) -> Result<TrustFile, String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            coordinator: Option<OneOrMany>,
            #[serde(default)]
            roles: BTreeMap<String, Vec<String>>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|e| format!("trust file: {e}"))?;
        let parse_all = |keys: Vec<String>, what: &str| {
            keys.iter()
                .map(|k| PublicKey::parse(k).map_err(|e| format!("trust file {what}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let coordinator = match raw.coordinator {
            None => Vec::new(),
            Some(OneOrMany::One(k)) => parse_all(vec![k], "coordinator")?,
            Some(OneOrMany::Many(ks)) => parse_all(ks, "coordinator")?,
        };
        let mut roles = BTreeMap::new();
        for (role, keys) in raw.roles {
            let keys = parse_all(keys, &format!("role {role}"))?;
            roles.insert(role, keys);
        }
        Ok(TrustFile { coordinator, roles })
    }

    /// Whether `key` is allowed for `role`: a role the file does not name allows none.
    pub fn allows(&self, role: &str, key: &PublicKey) -> bool {
        self.roles.get(role).is_some_and(|keys| keys.contains(key))
    }
}

/// Standard or URL-safe base64, padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let key = KeyPair::from_seed([7; 32]).public();
        assert_eq!(PublicKey::parse(&key.to_hex()).unwrap(), key);
        let b64 = {
            // Standard base64 of the key, written out by hand through the decoder's inverse.
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for chunk in key.0.chunks(3) {
                let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            s + "="
        };
        assert_eq!(PublicKey::parse(&b64).unwrap(), key);
        assert!(PublicKey::parse("abc").is_err());
    }

    #[test]
    fn key_files_round_trip() {
        let pair = KeyPair::from_seed([9; 32]);
        let back = KeyPair::from_file(&pair.to_file()).unwrap();
        assert_eq!(back.public(), pair.public());
        assert!(KeyPair::from_file("nonsense\n00").is_err());
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let pair = KeyPair::from_seed([1; 32]);
        let key = pair.public().verifier().unwrap();
        let sig = pair.sign(b"hello");
        assert!(key.verifies(b"hello", &sig));
        assert!(!key.verifies(b"hellO", &sig));
        assert!(!key.verifies(b"hello", &sig[..63]));
    }

    #[test]
    fn a_proof_covers_its_message_signature_and_key_only() {
        let pair = KeyPair::from_seed([1; 32]);
        let other = KeyPair::from_seed([2; 32]).public().verifier().unwrap();
        let key = pair.public().verifier().unwrap();
        let sig = pair.sign(b"hello");
        assert!(key.verify(b"hellO", &sig).is_none());
        let proof = key.verify(b"hello", &sig).expect("verifies");
        assert!(proof.covers(b"hello", &sig, &key));
        assert!(!proof.covers(b"hellO", &sig, &key));
        assert!(!proof.covers(b"hello", &pair.sign(b"other"), &key));
        assert!(!proof.covers(b"hello", &sig, &other));
    }
}

/// Deterministic keys and signed inputs for tests and fuzzing: every worker id has a key
/// anyone can derive, so these sign nothing real. Never a real worker's key.
pub mod testing {
    use super::{Digest32, KeyPair, reply_statement};
    use crate::{Applied, Input, Rejection, Session};

    /// Every input as a well-behaved worker sends it ([`signed`]), then applied.
    pub trait ApplySigned {
        fn apply_signed(&mut self, now: i64, input: Input) -> Result<Applied, Rejection>;
    }

    impl ApplySigned for Session {
        fn apply_signed(&mut self, now: i64, input: Input) -> Result<Applied, Rejection> {
            let input = signed(self, input);
            self.apply(now, input)
        }
    }

    /// The test key of `worker_id`.
    pub fn key_of(worker_id: &str) -> KeyPair {
        KeyPair::from_seed(Digest32::of(format!("agentmesh test key {worker_id}").as_bytes()).0)
    }

    /// `input` as a well-behaved worker would send it to `session`: an assignment carries
    /// the worker's test key (unless it names one), a result without a signature is
    /// signed by its worker's test key over the turn it names and the proposal under
    /// review.
    pub fn signed(session: &Session, input: Input) -> Input {
        match input {
            Input::Assign {
                role,
                worker_id,
                key: None,
            } => Input::Assign {
                key: Some(key_of(&worker_id).public()),
                role,
                worker_id,
            },
            Input::Result {
                worker_id,
                turn,
                mut reply,
            } if reply.signature.is_empty() => {
                let reviewed = session.current_proposal().map_or("", |(_, h)| h);
                let statement = reply_statement(session.id(), &turn, reviewed, &reply);
                reply.signature = key_of(&worker_id).sign(&statement);
                Input::Result {
                    worker_id,
                    turn,
                    reply,
                }
            }
            other => other,
        }
    }
}
