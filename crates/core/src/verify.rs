//! The offline verifier of a JSON export (`meshctl verify`, `meshctl show`'s marks): the
//! hash chain, every worker signature, and the unanimity certificate — that it covers
//! every participant with a signed APPROVE of the final hash, names the chain head and is
//! signed by the coordinator — optionally against a [`TrustFile`] of expected keys.
//!
//! It reads the export as exported ([`ExportDoc`]), not as parsed entries, so that each
//! failure names the first broken thing precisely: the entry's seq and the field.
//! `docs/verification.md` is the specification; `tests/verifier/verify.py` is a second,
//! independent implementation of it.

use crate::entry::{Entry, EntryType, Phase, Verdict};
use crate::export::{EntryDoc, ExportDoc};
use crate::session::Status;
use crate::trust::{self, Certificate, Digest32, PublicKey, TrustFile};
use std::collections::BTreeMap;
use std::fmt;

/// The first broken thing: the entry (`seq`) or the certificate, and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The entry's seq; `None` for the session or its certificate.
    pub seq: Option<u64>,
    /// The field, as the JSON export names it (`content`, `signature`,
    /// `certificate.approvals[security]`, ...).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "seq {seq} {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for Broken {}

fn broken(seq: Option<u64>, field: impl Into<String>, message: impl Into<String>) -> Broken {
    Broken {
        seq,
        field: field.into(),
        message: message.into(),
    }
}

/// What a valid export proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub session_id: String,
    pub status: Status,
    pub entries: usize,
    /// The last entry's chain hash (the genesis for an empty transcript).
    pub chain_head: Digest32,
    /// The keys that signed, per role, in the order first seen.
    pub keys: BTreeMap<String, Vec<PublicKey>>,
    /// The certificate's coordinator key, when the session carries one.
    pub coordinator_key: Option<PublicKey>,
    /// The approvals the certificate holds (0 without one).
    pub approvals: usize,
    /// Whether the keys were checked against a trust file.
    pub trusted: bool,
}

/// Verifies a JSON export's text.
pub fn verify_json(text: &str, trust: Option<&TrustFile>) -> Result<Verified, Broken> {
    let doc: ExportDoc = serde_json::from_str(text)
        .map_err(|e| broken(None, "export", format!("not a JSON export: {e}")))?;
    verify(&doc, trust)
}

/// The verdict on each entry of a transcript, for marks in `meshctl show` and the
/// dashboard: `Ok` when its chain hash and signature check (in order: an entry after a
/// broken one is not checked and carries the first break).
pub fn check_entries(
    session_id: &str,
    task: &str,
    entries: &[EntryDoc],
) -> Vec<Result<(), Broken>> {
    let mut prev = trust::genesis(session_id, task);
    let mut first_break: Option<Broken> = None;
    (0..entries.len())
        .map(|i| {
            if let Some(b) = &first_break {
                return Err(b.clone());
            }
            match check_entry(session_id, i, entries, &prev, None) {
                Ok((chain, _)) => {
                    prev = chain;
                    Ok(())
                }
                Err(b) => {
                    first_break = Some(b.clone());
                    Err(b)
                }
            }
        })
        .collect()
}

/// Verifies an export: chain, signatures, certificate, and with `trust` the keys.
pub fn verify(doc: &ExportDoc, trust: Option<&TrustFile>) -> Result<Verified, Broken> {
    let session = &doc.session;
    let mut prev = trust::genesis(&session.id, &session.task);
    let mut keys: BTreeMap<String, Vec<PublicKey>> = BTreeMap::new();
    let mut parsed = Vec::with_capacity(doc.entries.len());
    for i in 0..doc.entries.len() {
        let (chain, entry) = check_entry(&session.id, i, &doc.entries, &prev, trust)?;
        prev = chain;
        let key = entry.public_key.expect("checked: signed");
        let seen = keys.entry(entry.role.clone()).or_default();
        if !seen.contains(&key) {
            seen.push(key);
        }
        parsed.push(entry);
    }
    if session.entry_count != parsed.len() as u64 {
        return Err(broken(
            None,
            "session.entry_count",
            format!(
                "the session says {} entries; the export holds {}",
                session.entry_count,
                parsed.len()
            ),
        ));
    }
    let mut verified = Verified {
        session_id: session.id.clone(),
        status: session.status,
        entries: parsed.len(),
        chain_head: prev,
        keys,
        coordinator_key: None,
        approvals: 0,
        trusted: trust.is_some(),
    };
    match &session.certificate {
        None if session.status == Status::Consensus => {
            return Err(broken(
                None,
                "certificate",
                "missing: a CONSENSUS session must carry its unanimity certificate",
            ));
        }
        None => {}
        Some(cert) => {
            check_certificate(doc, cert, &parsed, prev, trust)?;
            verified.coordinator_key = cert.coordinator_key;
            verified.approvals = cert.approvals.len();
        }
    }
    Ok(verified)
}

/// Checks entry `i` after chain hash `prev`; returns its chain hash and the entry.
fn check_entry(
    session_id: &str,
    i: usize,
    entries: &[EntryDoc],
    prev: &Digest32,
    trust: Option<&TrustFile>,
) -> Result<(Digest32, Entry), Broken> {
    let doc = &entries[i];
    let expected = i as u64 + 1;
    if doc.seq != expected {
        let seq = Some(expected);
        return Err(if entries[i + 1..].iter().any(|e| e.seq == expected) {
            broken(
                seq,
                "seq",
                format!(
                    "entries out of order: seq {} stands where seq {expected} belongs",
                    doc.seq
                ),
            )
        } else if doc.seq > expected {
            broken(
                seq,
                "seq",
                format!(
                    "missing: the entry after seq {} is seq {} (an entry was deleted)",
                    expected - 1,
                    doc.seq
                ),
            )
        } else {
            broken(
                seq,
                "seq",
                format!("seq {} appears again where seq {expected} belongs", doc.seq),
            )
        });
    }
    let seq = Some(doc.seq);
    let content_sha256 = Digest32::from_content(&doc.content);
    if !doc.content_sha256.is_empty() && doc.content_sha256 != content_sha256.to_hex() {
        return Err(broken(
            seq,
            "content",
            format!(
                "its SHA-256 is {}, but the entry records {}: the content was changed",
                content_sha256, doc.content_sha256
            ),
        ));
    }
    if doc.public_key.is_empty() {
        return Err(broken(
            seq,
            "public_key",
            "missing: the entry is not signed by a worker key",
        ));
    }
    let key = PublicKey::parse(&doc.public_key).map_err(|e| broken(seq, "public_key", e))?;
    let signature = hex::decode(&doc.signature)
        .map_err(|e| broken(seq, "signature", format!("not hex: {e}")))?;
    if signature.is_empty() {
        return Err(broken(seq, "signature", "missing: the entry is unsigned"));
    }
    let chain_claimed = Digest32::from_hex(&doc.chain_hash)
        .map_err(|e| broken(seq, "chain_hash", format!("{:?}: {e}", doc.chain_hash)))?;
    let entry = Entry {
        seq: doc.seq,
        round: doc.round,
        phase: doc.phase,
        role: doc.role.clone(),
        worker_id: doc.worker_id.clone(),
        entry_type: doc.entry_type,
        timestamp_ms: doc.timestamp_ms,
        content: doc.content.clone(),
        verdict: doc.verdict,
        concerns: doc.concerns.clone(),
        proposal_hash: doc.proposal_hash.clone(),
        proposal_version: doc.proposal_version,
        signature,
        prompt_tokens: doc.prompt_tokens,
        completion_tokens: doc.completion_tokens,
        attempt: doc.attempt,
        public_key: Some(key),
        chain_hash: chain_claimed,
    };
    let verifier = key.verifier().map_err(|e| broken(seq, "public_key", e))?;
    let statement = trust::entry_statement(session_id, &entry, content_sha256).encode();
    if !verifier.verifies(&statement, &entry.signature) {
        return Err(broken(
            seq,
            "signature",
            format!(
                "does not verify under public_key {} over the entry's statement (session, \
                 round, phase, role, attempt, type, content, verdict, concerns, proposal \
                 hash): one of them, the key or the signature was changed",
                key.short()
            ),
        ));
    }
    if let Some(trust) = trust
        && !trust.allows(&entry.role, &key)
    {
        return Err(broken(
            seq,
            "public_key",
            format!(
                "{} is not a key the trust file allows for role {}",
                key.short(),
                entry.role
            ),
        ));
    }
    let chain = trust::chain_hash(prev, &entry, &content_sha256);
    if chain != chain_claimed {
        return Err(broken(
            seq,
            "chain_hash",
            format!(
                "is {chain_claimed}, but the entry over the chain before it hashes to {chain}: \
                 a field the signature does not cover (seq, worker_id, timestamp, \
                 proposal_version, tokens) or the session's id or task was changed"
            ),
        ));
    }
    Ok((chain, entry))
}

fn check_certificate(
    doc: &ExportDoc,
    cert: &Certificate,
    entries: &[Entry],
    chain_head: Digest32,
    trust: Option<&TrustFile>,
) -> Result<(), Broken> {
    let session = &doc.session;
    let field = |name: &str| format!("certificate.{name}");
    if cert.session_id != session.id {
        return Err(broken(
            None,
            field("session_id"),
            format!(
                "names session {}; this export is session {}",
                cert.session_id, session.id
            ),
        ));
    }
    if session.status != Status::Consensus {
        return Err(broken(
            None,
            "certificate",
            format!(
                "a {} session carries a unanimity certificate",
                session.status
            ),
        ));
    }
    let task = Digest32::from_content(&session.task);
    if cert.task_sha256 != task {
        return Err(broken(
            None,
            field("task_sha256"),
            format!(
                "is {}, but the session's task hashes to {task}",
                cert.task_sha256
            ),
        ));
    }
    if cert.participants != session.roles {
        return Err(broken(
            None,
            field("participants"),
            format!(
                "are {:?}; the session's roles are {:?}",
                cert.participants, session.roles
            ),
        ));
    }
    if cert.final_hash != session.final_hash || cert.final_version != session.final_version {
        return Err(broken(
            None,
            field("final_hash"),
            format!(
                "names v{} {}; the session's final version is v{} {}",
                cert.final_version, cert.final_hash, session.final_version, session.final_hash
            ),
        ));
    }
    let proposal = entries.iter().find(|e| {
        e.phase == Phase::Synthesize
            && e.entry_type == EntryType::Proposal
            && e.proposal_version == cert.final_version
    });
    match proposal {
        Some(p)
            if p.proposal_hash == cert.final_hash
                && crate::hash::proposal_hash(&p.content) == cert.final_hash => {}
        _ => {
            return Err(broken(
                None,
                field("final_hash"),
                format!(
                    "no proposal v{} in the transcript has SHA-256 {}",
                    cert.final_version, cert.final_hash
                ),
            ));
        }
    }
    let last_seq = entries.last().map_or(0, |e| e.seq);
    if cert.chain_seq != last_seq || cert.chain_head != chain_head {
        return Err(broken(
            None,
            field("chain_head"),
            format!(
                "names seq {} {}; the transcript's head is seq {last_seq} {chain_head}",
                cert.chain_seq, cert.chain_head
            ),
        ));
    }
    for role in &cert.participants {
        let count = cert.approvals.iter().filter(|a| a.role == *role).count();
        if count != 1 {
            return Err(broken(
                None,
                field("approvals"),
                if count == 0 {
                    format!("participant {role} has no approval: the certificate is not unanimous")
                } else {
                    format!("participant {role} has {count} approvals")
                },
            ));
        }
    }
    for approval in &cert.approvals {
        let at = field(&format!("approvals[{}]", approval.role));
        if !cert.participants.contains(&approval.role) {
            return Err(broken(None, at, "is not a participant"));
        }
        let entry = entries
            .iter()
            .find(|e| e.seq == approval.seq)
            .ok_or_else(|| {
                broken(
                    None,
                    at.clone(),
                    format!(
                        "names seq {}, which the transcript does not hold",
                        approval.seq
                    ),
                )
            })?;
        let matches = entry.role == approval.role
            && entry.phase == Phase::Review
            && entry.verdict == Some(Verdict::Approve)
            && entry.proposal_hash == cert.final_hash
            && entry.round == approval.round
            && entry.attempt == approval.attempt
            && entry.worker_id == approval.worker_id
            && entry.concerns == approval.concerns
            && Digest32::from_content(&entry.content) == approval.content_sha256
            && entry.public_key == Some(approval.public_key)
            && entry.signature == approval.signature;
        if !matches {
            return Err(broken(
                None,
                at,
                format!(
                    "is not the transcript's entry seq {}: an APPROVE of {} by {} under the same key and signature",
                    approval.seq, cert.final_hash, approval.role
                ),
            ));
        }
        let verifier = approval
            .public_key
            .verifier()
            .map_err(|e| broken(None, format!("{at}.public_key"), e))?;
        if !verifier.verifies(&cert.approval_statement(approval), &approval.signature) {
            return Err(broken(
                None,
                format!("{at}.signature"),
                format!(
                    "does not verify under {} as an APPROVE of {}",
                    approval.public_key.short(),
                    cert.final_hash
                ),
            ));
        }
        if let Some(trust) = trust
            && !trust.allows(&approval.role, &approval.public_key)
        {
            return Err(broken(
                None,
                format!("{at}.public_key"),
                format!(
                    "{} is not a key the trust file allows for role {}",
                    approval.public_key.short(),
                    approval.role
                ),
            ));
        }
    }
    let Some(coordinator) = cert.coordinator_key else {
        return Err(broken(
            None,
            field("coordinator_key"),
            "missing: the certificate is not signed by a coordinator",
        ));
    };
    let verifier = coordinator
        .verifier()
        .map_err(|e| broken(None, field("coordinator_key"), e))?;
    if !verifier.verifies(&cert.signing_bytes(), &cert.signature) {
        return Err(broken(
            None,
            field("signature"),
            format!(
                "does not verify under coordinator_key {} over the certificate",
                coordinator.short()
            ),
        ));
    }
    if let Some(trust) = trust {
        if trust.coordinator.is_empty() {
            return Err(broken(
                None,
                field("coordinator_key"),
                "the trust file names no coordinator key to check it against",
            ));
        }
        if !trust.coordinator.contains(&coordinator) {
            return Err(broken(
                None,
                field("coordinator_key"),
                format!(
                    "{} is not the coordinator key the trust file names",
                    coordinator.short()
                ),
            ));
        }
    }
    Ok(())
}
