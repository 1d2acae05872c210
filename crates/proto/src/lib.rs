//! The agentmesh wire contract, package `agentmesh.v1`, and its conversions to the
//! core's types.
//!
//! # Layout
//!
//! - [`v1`]: the generated messages, the `WorkerService` (one bidirectional stream per
//!   worker) and the `SessionService` (the client API), clients and servers.
//! - [`FILE_DESCRIPTOR_SET`]: what the coordinator's gRPC reflection serves.
//! - [`LEADER_METADATA`], [`FORWARDED_METADATA`], [`LeaderAddress`], [`parse_duration`]
//!   and [`Backoff`]: what every binary shares besides the messages (the redirect and
//!   forwarding metadata keys, the election's value, the duration syntax of flags, the one
//!   retry schedule).
//! - `From`/`TryFrom` impls between `v1` and `agentmesh_core` types. Wire enums that a
//!   peer sent as UNSPECIFIED or as a number we do not know convert to `None` or an
//!   error, never to a default that could be mistaken for a real value.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("agentmesh.v1");
}

/// The encoded `FileDescriptorSet` of `agentmesh.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("agentmesh_v1_descriptor");

use agentmesh_core as core;

pub mod backoff;
pub mod keys;
pub use backoff::Backoff;

/// The gRPC metadata key in which a standby coordinator names the leader's address.
pub const LEADER_METADATA: &str = "x-agentmesh-leader";

/// The request header a standby coordinator adds when it forwards a client's call to the
/// leader (gRPC metadata and HTTP alike). A coordinator that receives a forwarded call
/// while not leading refuses it instead of forwarding again, so two standbys that each
/// believe the other leads cannot bounce a call between them.
pub const FORWARDED_METADATA: &str = "x-agentmesh-forwarded";

/// Where the leading coordinator serves: the value it campaigns with in the election.
///
/// Encoded as the gRPC URL, then optionally ` http=<URL>` for the HTTP side (dashboard,
/// JSON API, SSE), which standbys need to forward browsers' calls, and ` key=<hex>`: the
/// Ed25519 key the leader signs unanimity certificates with, so the election in etcd
/// publishes it. A bare URL (what coordinators before the HTTP forwarding published)
/// parses as a gRPC URL alone; unknown words are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAddress {
    pub grpc: String,
    pub http: Option<String>,
    /// Hex of the leader's certificate key.
    pub key: Option<String>,
}

impl LeaderAddress {
    pub fn encode(&self) -> String {
        let mut value = self.grpc.clone();
        if let Some(http) = &self.http {
            value.push_str(&format!(" http={http}"));
        }
        if let Some(key) = &self.key {
            value.push_str(&format!(" key={key}"));
        }
        value
    }

    /// Parses an election value; `None` when it holds no gRPC URL.
    pub fn parse(value: &str) -> Option<LeaderAddress> {
        let mut words = value.split_whitespace();
        let grpc = words.next()?.to_string();
        let rest: Vec<&str> = words.collect();
        let word = |prefix: &str| {
            rest.iter()
                .find_map(|w| w.strip_prefix(prefix))
                .map(str::to_string)
        };
        Some(LeaderAddress {
            grpc,
            http: word("http="),
            key: word("key="),
        })
    }
}

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds: the duration syntax of every
/// agentmesh binary's flags.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 90s or 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

impl From<core::Phase> for v1::Phase {
    fn from(p: core::Phase) -> Self {
        match p {
            core::Phase::Framing => v1::Phase::Framing,
            core::Phase::Contribute => v1::Phase::Contribute,
            core::Phase::Synthesize => v1::Phase::Synthesize,
            core::Phase::Review => v1::Phase::Review,
        }
    }
}

/// A wire phase as a core phase; `None` for UNSPECIFIED or unknown numbers.
pub fn phase_from_wire(raw: i32) -> Option<core::Phase> {
    match v1::Phase::try_from(raw).ok()? {
        v1::Phase::Unspecified => None,
        v1::Phase::Framing => Some(core::Phase::Framing),
        v1::Phase::Contribute => Some(core::Phase::Contribute),
        v1::Phase::Synthesize => Some(core::Phase::Synthesize),
        v1::Phase::Review => Some(core::Phase::Review),
    }
}

impl From<core::EntryType> for v1::EntryType {
    fn from(t: core::EntryType) -> Self {
        match t {
            core::EntryType::Framework => v1::EntryType::Framework,
            core::EntryType::Analysis => v1::EntryType::Analysis,
            core::EntryType::Proposal => v1::EntryType::Proposal,
            core::EntryType::Implementation => v1::EntryType::Implementation,
            core::EntryType::Review => v1::EntryType::Review,
            core::EntryType::Question => v1::EntryType::Question,
            core::EntryType::Answer => v1::EntryType::Answer,
            core::EntryType::Objection => v1::EntryType::Objection,
            core::EntryType::Signoff => v1::EntryType::Signoff,
        }
    }
}

pub fn entry_type_from_wire(raw: i32) -> Option<core::EntryType> {
    Some(match v1::EntryType::try_from(raw).ok()? {
        v1::EntryType::Unspecified => return None,
        v1::EntryType::Framework => core::EntryType::Framework,
        v1::EntryType::Analysis => core::EntryType::Analysis,
        v1::EntryType::Proposal => core::EntryType::Proposal,
        v1::EntryType::Implementation => core::EntryType::Implementation,
        v1::EntryType::Review => core::EntryType::Review,
        v1::EntryType::Question => core::EntryType::Question,
        v1::EntryType::Answer => core::EntryType::Answer,
        v1::EntryType::Objection => core::EntryType::Objection,
        v1::EntryType::Signoff => core::EntryType::Signoff,
    })
}

impl From<core::Verdict> for v1::Verdict {
    fn from(v: core::Verdict) -> Self {
        match v {
            core::Verdict::Approve => v1::Verdict::Approve,
            core::Verdict::Object => v1::Verdict::Object,
            core::Verdict::Invalid => v1::Verdict::Invalid,
        }
    }
}

pub fn verdict_from_wire(raw: i32) -> Option<core::Verdict> {
    Some(match v1::Verdict::try_from(raw).ok()? {
        v1::Verdict::Unspecified => return None,
        v1::Verdict::Approve => core::Verdict::Approve,
        v1::Verdict::Object => core::Verdict::Object,
        v1::Verdict::Invalid => core::Verdict::Invalid,
    })
}

impl From<core::Status> for v1::SessionStatus {
    fn from(s: core::Status) -> Self {
        match s {
            core::Status::Pending => v1::SessionStatus::Pending,
            core::Status::Framing => v1::SessionStatus::Framing,
            core::Status::Contribute => v1::SessionStatus::Contribute,
            core::Status::Synthesize => v1::SessionStatus::Synthesize,
            core::Status::Review => v1::SessionStatus::Review,
            core::Status::Consensus => v1::SessionStatus::Consensus,
            core::Status::NoConsensus => v1::SessionStatus::NoConsensus,
            core::Status::Cancelled => v1::SessionStatus::Cancelled,
            core::Status::Failed => v1::SessionStatus::Failed,
            core::Status::Completed => v1::SessionStatus::Completed,
        }
    }
}

pub fn status_from_wire(raw: i32) -> Option<core::Status> {
    Some(match v1::SessionStatus::try_from(raw).ok()? {
        v1::SessionStatus::Unspecified => return None,
        v1::SessionStatus::Pending => core::Status::Pending,
        v1::SessionStatus::Framing => core::Status::Framing,
        v1::SessionStatus::Contribute => core::Status::Contribute,
        v1::SessionStatus::Synthesize => core::Status::Synthesize,
        v1::SessionStatus::Review => core::Status::Review,
        v1::SessionStatus::Consensus => core::Status::Consensus,
        v1::SessionStatus::NoConsensus => core::Status::NoConsensus,
        v1::SessionStatus::Cancelled => core::Status::Cancelled,
        v1::SessionStatus::Failed => core::Status::Failed,
        v1::SessionStatus::Completed => core::Status::Completed,
    })
}

/// The short name of a wire status, e.g. `CONSENSUS`.
pub fn status_name(raw: i32) -> &'static str {
    status_from_wire(raw).map_or("UNSPECIFIED", core::Status::as_str)
}

impl From<&core::Entry> for v1::Entry {
    fn from(e: &core::Entry) -> Self {
        v1::Entry {
            seq: e.seq,
            round: e.round,
            phase: v1::Phase::from(e.phase) as i32,
            role: e.role.clone(),
            worker_id: e.worker_id.clone(),
            entry_type: v1::EntryType::from(e.entry_type) as i32,
            timestamp_ms: e.timestamp_ms,
            content: e.content.clone(),
            verdict: e
                .verdict
                .map_or(v1::Verdict::Unspecified, v1::Verdict::from) as i32,
            concerns: e.concerns.clone(),
            proposal_hash: e.proposal_hash.clone(),
            signature: e.signature.clone(),
            proposal_version: e.proposal_version,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            attempt: e.attempt,
            public_key: e.public_key.map_or(Vec::new(), |k| k.0.to_vec()),
            chain_hash: chain_hash_to_wire(&e.chain_hash),
        }
    }
}

/// By value: the strings move instead of being copied (a turn's delta, built for one
/// worker, is converted once at the edge).
impl From<core::Entry> for v1::Entry {
    fn from(e: core::Entry) -> Self {
        v1::Entry {
            seq: e.seq,
            round: e.round,
            phase: v1::Phase::from(e.phase) as i32,
            role: e.role,
            worker_id: e.worker_id,
            entry_type: v1::EntryType::from(e.entry_type) as i32,
            timestamp_ms: e.timestamp_ms,
            content: e.content,
            verdict: e
                .verdict
                .map_or(v1::Verdict::Unspecified, v1::Verdict::from) as i32,
            concerns: e.concerns,
            proposal_hash: e.proposal_hash,
            signature: e.signature,
            proposal_version: e.proposal_version,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            attempt: e.attempt,
            public_key: e.public_key.map_or(Vec::new(), |k| k.0.to_vec()),
            chain_hash: chain_hash_to_wire(&e.chain_hash),
        }
    }
}

impl TryFrom<&v1::Entry> for core::Entry {
    type Error = String;
    fn try_from(e: &v1::Entry) -> Result<Self, String> {
        core::Entry::try_from(e.clone())
    }
}

/// By value: the strings move from the wire message into the entry, so a worker that
/// keeps what it decodes holds one copy, not two.
impl TryFrom<v1::Entry> for core::Entry {
    type Error = String;
    fn try_from(e: v1::Entry) -> Result<Self, String> {
        Ok(core::Entry {
            seq: e.seq,
            round: e.round,
            phase: phase_from_wire(e.phase)
                .ok_or_else(|| format!("entry {}: unknown phase {}", e.seq, e.phase))?,
            role: e.role,
            worker_id: e.worker_id,
            entry_type: entry_type_from_wire(e.entry_type)
                .ok_or_else(|| format!("entry {}: unknown type {}", e.seq, e.entry_type))?,
            timestamp_ms: e.timestamp_ms,
            content: e.content,
            verdict: verdict_from_wire(e.verdict),
            concerns: e.concerns,
            proposal_hash: e.proposal_hash,
            proposal_version: e.proposal_version,
            signature: e.signature,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            attempt: e.attempt,
            public_key: public_key_from_wire(&e.public_key)
                .map_err(|why| format!("entry {}: public_key: {why}", e.seq))?,
            chain_hash: chain_hash_from_wire(&e.chain_hash)
                .map_err(|why| format!("entry {}: chain_hash: {why}", e.seq))?,
        })
    }
}

/// A wire public key: empty for none, else exactly 32 bytes.
pub fn public_key_from_wire(bytes: &[u8]) -> Result<Option<core::trust::PublicKey>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{} bytes; an Ed25519 public key is 32", bytes.len()))?;
    Ok(Some(core::trust::PublicKey(key)))
}

/// An entry's chain hash on the wire: empty for none (the core's all-zero digest).
pub fn chain_hash_to_wire(hash: &core::trust::Digest32) -> Vec<u8> {
    if hash.is_zero() {
        Vec::new()
    } else {
        hash.0.to_vec()
    }
}

/// An entry's chain hash from the wire: empty for none, else 32 bytes that are not all
/// zero (all zero is how the core writes "none", so it cannot also be a hash).
pub fn chain_hash_from_wire(bytes: &[u8]) -> Result<core::trust::Digest32, String> {
    if bytes.is_empty() {
        return Ok(core::trust::Digest32::default());
    }
    let hash = digest_from_wire(bytes)?;
    if hash.is_zero() {
        return Err("32 zero bytes are no chain hash (send none as empty)".into());
    }
    Ok(hash)
}

/// A wire SHA-256: exactly 32 bytes.
pub fn digest_from_wire(bytes: &[u8]) -> Result<core::trust::Digest32, String> {
    let digest: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{} bytes; a SHA-256 is 32", bytes.len()))?;
    Ok(core::trust::Digest32(digest))
}

impl From<&core::trust::Certificate> for v1::Certificate {
    fn from(c: &core::trust::Certificate) -> Self {
        v1::Certificate {
            session_id: c.session_id.clone(),
            task_sha256: c.task_sha256.0.to_vec(),
            participants: c.participants.clone(),
            final_version: c.final_version,
            final_hash: c.final_hash.clone(),
            chain_seq: c.chain_seq,
            chain_head: c.chain_head.0.to_vec(),
            approvals: c
                .approvals
                .iter()
                .map(|a| v1::Approval {
                    role: a.role.clone(),
                    worker_id: a.worker_id.clone(),
                    seq: a.seq,
                    round: a.round,
                    attempt: a.attempt,
                    content_sha256: a.content_sha256.0.to_vec(),
                    concerns: a.concerns.clone(),
                    public_key: a.public_key.0.to_vec(),
                    signature: a.signature.clone(),
                })
                .collect(),
            coordinator_key: c.coordinator_key.map_or(Vec::new(), |k| k.0.to_vec()),
            signature: c.signature.clone(),
        }
    }
}

impl TryFrom<&v1::Certificate> for core::trust::Certificate {
    type Error = String;
    fn try_from(c: &v1::Certificate) -> Result<Self, String> {
        let approvals = c
            .approvals
            .iter()
            .map(|a| {
                Ok(core::trust::Approval {
                    role: a.role.clone(),
                    worker_id: a.worker_id.clone(),
                    seq: a.seq,
                    round: a.round,
                    attempt: a.attempt,
                    content_sha256: digest_from_wire(&a.content_sha256)
                        .map_err(|why| format!("approval of {}: content_sha256: {why}", a.role))?,
                    concerns: a.concerns.clone(),
                    public_key: public_key_from_wire(&a.public_key)
                        .map_err(|why| format!("approval of {}: public_key: {why}", a.role))?
                        .ok_or_else(|| format!("approval of {}: no public key", a.role))?,
                    signature: a.signature.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(core::trust::Certificate {
            session_id: c.session_id.clone(),
            task_sha256: digest_from_wire(&c.task_sha256)
                .map_err(|why| format!("certificate task_sha256: {why}"))?,
            participants: c.participants.clone(),
            final_version: c.final_version,
            final_hash: c.final_hash.clone(),
            chain_seq: c.chain_seq,
            chain_head: digest_from_wire(&c.chain_head)
                .map_err(|why| format!("certificate chain_head: {why}"))?,
            approvals,
            coordinator_key: public_key_from_wire(&c.coordinator_key)
                .map_err(|why| format!("certificate coordinator_key: {why}"))?,
            signature: c.signature.clone(),
        })
    }
}

impl From<&core::SessionSummary> for v1::Session {
    fn from(s: &core::SessionSummary) -> Self {
        v1::Session {
            id: s.id.clone(),
            task: s.task.clone(),
            roles: s.roles.clone(),
            max_rounds: s.max_rounds,
            status: v1::SessionStatus::from(s.status) as i32,
            round: s.round,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
            reason: s.reason.clone(),
            final_version: s.final_version,
            final_hash: s.final_hash.clone(),
            open_objections: s
                .open_objections
                .iter()
                .map(|o| v1::Objection {
                    role: o.role.clone(),
                    concern: o.concern.clone(),
                })
                .collect(),
            assignments: s
                .assignments
                .iter()
                .map(|(role, worker_id)| v1::Assignment {
                    role: role.clone(),
                    worker_id: worker_id.clone(),
                })
                .collect(),
            entry_count: s.entry_count,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            broadcast_rounds: s.broadcast_rounds,
            certificate: s.certificate.as_deref().map(v1::Certificate::from),
        }
    }
}

impl TryFrom<&v1::Session> for core::SessionSummary {
    type Error = String;
    fn try_from(s: &v1::Session) -> Result<Self, String> {
        Ok(core::SessionSummary {
            id: s.id.clone(),
            task: s.task.clone(),
            roles: s.roles.clone(),
            max_rounds: s.max_rounds,
            status: status_from_wire(s.status)
                .ok_or_else(|| format!("session {}: unknown status {}", s.id, s.status))?,
            round: s.round,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
            reason: s.reason.clone(),
            final_version: s.final_version,
            final_hash: s.final_hash.clone(),
            open_objections: s
                .open_objections
                .iter()
                .map(|o| core::Objection {
                    role: o.role.clone(),
                    concern: o.concern.clone(),
                })
                .collect(),
            assignments: s
                .assignments
                .iter()
                .map(|a| (a.role.clone(), a.worker_id.clone()))
                .collect(),
            entry_count: s.entry_count,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            broadcast_rounds: s.broadcast_rounds,
            certificate: s
                .certificate
                .as_ref()
                .map(core::trust::Certificate::try_from)
                .transpose()
                .map_err(|why| format!("session {}: {why}", s.id))?
                .map(Box::new),
        })
    }
}

impl From<&core::TurnKey> for v1::TurnId {
    fn from(t: &core::TurnKey) -> Self {
        v1::TurnId {
            session_id: String::new(),
            round: t.round,
            phase: v1::Phase::from(t.phase) as i32,
            role: t.role.clone(),
            attempt: t.attempt,
        }
    }
}

/// The session id and core turn key a wire turn id names.
pub fn turn_from_wire(t: &v1::TurnId) -> Result<(String, core::TurnKey), String> {
    let phase = phase_from_wire(t.phase).ok_or_else(|| format!("unknown phase {}", t.phase))?;
    Ok((
        t.session_id.clone(),
        core::TurnKey {
            round: t.round,
            phase,
            role: t.role.clone(),
            attempt: t.attempt,
        },
    ))
}

/// A wire turn result as a core reply.
pub fn reply_from_wire(r: &v1::TurnResult) -> core::Reply {
    core::Reply {
        entry_type: entry_type_from_wire(r.entry_type),
        content: r.content.clone(),
        verdict: verdict_from_wire(r.verdict),
        concerns: r.concerns.clone(),
        proposal_hash: r.proposal_hash.clone(),
        signature: r.signature.clone(),
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        // Verifying is the receiving edge's business ([`core::trust::WorkerKey::verify`]).
        verified: None,
    }
}

/// Signs a wire result with `key` over the statement its entry will make
/// ([`core::trust::reply_statement`]); `reviewed_hash` is the proposal hash its turn
/// request named (REVIEW). A result whose turn id does not parse stays unsigned (the
/// coordinator refuses it for its turn id anyway).
pub fn sign_result(key: &core::trust::KeyPair, result: &mut v1::TurnResult, reviewed_hash: &str) {
    let Some(Ok((session_id, turn))) = result.turn.as_ref().map(turn_from_wire) else {
        return;
    };
    let reply = reply_from_wire(result);
    let statement = core::trust::reply_statement(&session_id, &turn, reviewed_hash, &reply);
    result.signature = key.sign(&statement);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_through_the_wire() {
        let e = core::Entry {
            seq: 7,
            round: 2,
            phase: core::Phase::Review,
            role: "security".into(),
            worker_id: "security-1".into(),
            entry_type: core::EntryType::Review,
            timestamp_ms: 1_795_498_212_345,
            content: "ok".into(),
            verdict: Some(core::Verdict::Approve),
            concerns: vec![],
            proposal_hash: "ab".into(),
            proposal_version: 2,
            signature: vec![9],
            prompt_tokens: 812,
            completion_tokens: 64,
            attempt: 2,
            public_key: Some(core::trust::KeyPair::from_seed([5; 32]).public()),
            chain_hash: core::trust::Digest32([6; 32]),
        };
        let wire = v1::Entry::from(&e);
        assert_eq!(core::Entry::try_from(&wire).unwrap(), e);
        assert_eq!(
            v1::Entry::from(e.clone()),
            wire,
            "by value and by reference agree"
        );
    }

    #[test]
    fn unspecified_enums_are_not_defaulted() {
        assert_eq!(phase_from_wire(0), None);
        assert_eq!(phase_from_wire(99), None);
        assert_eq!(entry_type_from_wire(0), None);
        assert_eq!(verdict_from_wire(0), None);
        assert_eq!(status_from_wire(0), None);
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn leader_addresses_round_trip_and_bare_urls_still_parse() {
        let both = LeaderAddress {
            grpc: "http://10.0.0.5:7700".into(),
            http: Some("http://10.0.0.5:7780".into()),
            key: Some("ab".repeat(32)),
        };
        assert_eq!(LeaderAddress::parse(&both.encode()), Some(both));
        let bare = LeaderAddress::parse("http://c1:7700").unwrap();
        assert_eq!(bare.grpc, "http://c1:7700");
        assert_eq!(bare.http, None);
        assert_eq!(LeaderAddress::parse("  "), None);
    }
}
