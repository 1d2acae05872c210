//! Exports of a transcript.
//!
//! - [`markdown`]: the original collaboration "communication file", one block per entry:
//!
//!   ```text
//!   ### [BACKEND] [2026-11-24 05:30:12] UTC
//!   **Type**: PROPOSAL
//!   **Content**: ...
//!   ```
//!
//! - [`ExportDoc`]: the lossless JSON form, `{"session": {...}, "entries": [...]}`, which
//!   [`from_json`] reads back into exactly the same values.

use crate::entry::{Entry, EntryType, Phase, Verdict};
use crate::session::{Objection, SessionSummary, Status};
use crate::trust::{Certificate, Digest32, PublicKey};
use crate::utc;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The transcript as a communication file. Reviews end their content with the verdict,
/// the version it judges and any concerns, so the file alone shows who signed what.
pub fn markdown(entries: &[Entry]) -> String {
    let mut out = String::new();
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "### [{}] [{}] UTC",
            entry.role.to_uppercase(),
            utc::format_seconds(entry.timestamp_ms)
        );
        let _ = writeln!(out, "**Type**: {}", entry.entry_type);
        let _ = writeln!(out, "**Content**: {}", entry.content.trim_end());
        if let Some(verdict) = entry.verdict {
            let _ = writeln!(
                out,
                "\nVerdict: {verdict} on proposal v{} (sha256 {})",
                entry.proposal_version, entry.proposal_hash
            );
            for concern in &entry.concerns {
                let _ = writeln!(out, "- {concern}");
            }
        }
    }
    out
}

/// The session part of the JSON export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDoc {
    pub id: String,
    pub task: String,
    pub roles: Vec<String>,
    pub max_rounds: u32,
    pub status: Status,
    pub round: u32,
    pub created: String,
    pub created_ms: i64,
    pub updated: String,
    pub updated_ms: i64,
    pub reason: String,
    pub final_version: u32,
    pub final_hash: String,
    pub open_objections: Vec<Objection>,
    pub assignments: BTreeMap<String, String>,
    pub entry_count: u64,
    /// Model tokens over the whole transcript.
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// A broadcast (benchmark) session's rounds; absent for a negotiation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub broadcast_rounds: u32,
    /// A CONSENSUS session's unanimity certificate, signed by its coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One entry of the JSON export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryDoc {
    pub seq: u64,
    pub round: u32,
    pub phase: Phase,
    pub role: String,
    pub worker_id: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub content: String,
    pub verdict: Option<Verdict>,
    pub concerns: Vec<String>,
    pub proposal_hash: String,
    pub proposal_version: u32,
    /// Hex of the worker's Ed25519 signature over the entry's statement.
    pub signature: String,
    /// Model tokens this entry's reply cost (0 for brains that call no model).
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// The attempt of the turn the entry answered.
    #[serde(default)]
    pub attempt: u32,
    /// Hex SHA-256 of `content` (derived, for readers; `meshctl verify` checks it).
    #[serde(default)]
    pub content_sha256: String,
    /// Hex of the worker's public key; empty when it announced none.
    #[serde(default)]
    pub public_key: String,
    /// Hex of the entry's chain hash.
    #[serde(default)]
    pub chain_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportDoc {
    pub session: SessionDoc,
    pub entries: Vec<EntryDoc>,
}

impl ExportDoc {
    pub fn new(session: &SessionSummary, entries: &[Entry]) -> ExportDoc {
        ExportDoc {
            session: SessionDoc {
                id: session.id.clone(),
                task: session.task.clone(),
                roles: session.roles.clone(),
                max_rounds: session.max_rounds,
                status: session.status,
                round: session.round,
                created: utc::format_rfc3339(session.created_ms),
                created_ms: session.created_ms,
                updated: utc::format_rfc3339(session.updated_ms),
                updated_ms: session.updated_ms,
                reason: session.reason.clone(),
                final_version: session.final_version,
                final_hash: session.final_hash.clone(),
                open_objections: session.open_objections.clone(),
                assignments: session.assignments.clone(),
                entry_count: session.entry_count,
                prompt_tokens: session.prompt_tokens,
                completion_tokens: session.completion_tokens,
                broadcast_rounds: session.broadcast_rounds,
                certificate: session.certificate.as_deref().cloned(),
            },
            entries: entries.iter().map(EntryDoc::from).collect(),
        }
    }

    /// The session and entries this document was made from.
    pub fn into_parts(self) -> Result<(SessionSummary, Vec<Entry>), String> {
        let s = self.session;
        let summary = SessionSummary {
            id: s.id,
            task: s.task,
            roles: s.roles,
            max_rounds: s.max_rounds,
            status: s.status,
            round: s.round,
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
            reason: s.reason,
            final_version: s.final_version,
            final_hash: s.final_hash,
            open_objections: s.open_objections,
            assignments: s.assignments,
            entry_count: s.entry_count,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            broadcast_rounds: s.broadcast_rounds,
            certificate: s.certificate.map(Box::new),
        };
        let entries = self
            .entries
            .into_iter()
            .map(Entry::try_from)
            .collect::<Result<_, _>>()?;
        Ok((summary, entries))
    }
}

impl From<&Entry> for EntryDoc {
    fn from(e: &Entry) -> Self {
        EntryDoc {
            seq: e.seq,
            round: e.round,
            phase: e.phase,
            role: e.role.clone(),
            worker_id: e.worker_id.clone(),
            entry_type: e.entry_type,
            timestamp: utc::format_rfc3339(e.timestamp_ms),
            timestamp_ms: e.timestamp_ms,
            content: e.content.clone(),
            verdict: e.verdict,
            concerns: e.concerns.clone(),
            proposal_hash: e.proposal_hash.clone(),
            proposal_version: e.proposal_version,
            signature: hex::encode(&e.signature),
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            attempt: e.attempt,
            content_sha256: Digest32::from_content(&e.content).to_hex(),
            public_key: e.public_key.map_or(String::new(), |k| k.to_hex()),
            chain_hash: e.chain_hash.to_hex(),
        }
    }
}

impl TryFrom<EntryDoc> for Entry {
    type Error = String;
    fn try_from(d: EntryDoc) -> Result<Self, String> {
        Ok(Entry {
            seq: d.seq,
            round: d.round,
            phase: d.phase,
            role: d.role,
            worker_id: d.worker_id,
            entry_type: d.entry_type,
            timestamp_ms: d.timestamp_ms,
            content: d.content,
            verdict: d.verdict,
            concerns: d.concerns,
            proposal_hash: d.proposal_hash,
            proposal_version: d.proposal_version,
            signature: hex::decode(&d.signature)
                .map_err(|e| format!("entry {}: bad signature hex: {e}", d.seq))?,
            prompt_tokens: d.prompt_tokens,
            completion_tokens: d.completion_tokens,
            attempt: d.attempt,
            public_key: if d.public_key.is_empty() {
                None
            } else {
                Some(
                    PublicKey::parse(&d.public_key)
                        .map_err(|e| format!("entry {}: public_key: {e}", d.seq))?,
                )
            },
            chain_hash: if d.chain_hash.is_empty() {
                Digest32::default()
            } else {
                Digest32::from_hex(&d.chain_hash)
                    .map_err(|e| format!("entry {}: chain_hash: {e}", d.seq))?
            },
        })
    }
}

/// The JSON export of a session, pretty-printed.
pub fn json(session: &SessionSummary, entries: &[Entry]) -> String {
    serde_json::to_string_pretty(&ExportDoc::new(session, entries)).expect("plain data serializes")
}

/// Reads a JSON export back.
pub fn from_json(text: &str) -> Result<(SessionSummary, Vec<Entry>), String> {
    let doc: ExportDoc = serde_json::from_str(text).map_err(|e| e.to_string())?;
    doc.into_parts()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, role: &str, ty: EntryType, content: &str) -> Entry {
        Entry {
            seq,
            round: 1,
            phase: Phase::Contribute,
            role: role.into(),
            worker_id: format!("{role}-1"),
            entry_type: ty,
            timestamp_ms: 1_795_498_212_345 + seq as i64 * 1000,
            content: content.into(),
            verdict: None,
            concerns: vec![],
            proposal_hash: String::new(),
            proposal_version: 0,
            signature: vec![],
            prompt_tokens: 0,
            completion_tokens: 0,
            attempt: 1,
            public_key: None,
            chain_hash: Digest32::default(),
        }
    }

    #[test]
    fn markdown_follows_the_communication_file_layout() {
        let mut review = entry(2, "security", EntryType::Review, "Needs mTLS.");
        review.phase = Phase::Review;
        review.verdict = Some(Verdict::Object);
        review.concerns = vec!["mutual TLS between services".into()];
        review.proposal_version = 1;
        review.proposal_hash = "ab".repeat(32);
        let md = markdown(&[
            entry(1, "backend", EntryType::Proposal, "Use gRPC.\n"),
            review,
        ]);
        let expected = format!(
            "### [BACKEND] [2026-11-24 05:30:13] UTC\n\
             **Type**: PROPOSAL\n\
             **Content**: Use gRPC.\n\
             \n\
             ### [SECURITY] [2026-11-24 05:30:14] UTC\n\
             **Type**: REVIEW\n\
             **Content**: Needs mTLS.\n\
             \n\
             Verdict: OBJECT on proposal v1 (sha256 {})\n\
             - mutual TLS between services\n",
            "ab".repeat(32)
        );
        assert_eq!(md, expected);
    }

    #[test]
    fn json_round_trips_losslessly() {
        let mut e = entry(
            1,
            "backend",
            EntryType::Analysis,
            "<script>x</script> \"quoted\"",
        );
        e.signature = vec![1, 2, 255];
        e.public_key = Some(crate::trust::KeyPair::from_seed([3; 32]).public());
        e.chain_hash = Digest32([4; 32]);
        e.prompt_tokens = 1234;
        e.completion_tokens = 56;
        let summary = SessionSummary {
            id: "s1".into(),
            task: "t".into(),
            roles: vec!["supervisor".into(), "backend".into()],
            max_rounds: 3,
            status: Status::Consensus,
            round: 2,
            created_ms: 5,
            updated_ms: 6,
            reason: "r".into(),
            final_version: 2,
            final_hash: "h".into(),
            open_objections: vec![Objection {
                role: "backend".into(),
                concern: "c".into(),
            }],
            assignments: [("backend".to_string(), "w".to_string())].into(),
            entry_count: 1,
            prompt_tokens: 1234,
            completion_tokens: 56,
            broadcast_rounds: 0,
            certificate: None,
        };
        let text = json(&summary, std::slice::from_ref(&e));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in [
            "seq",
            "round",
            "phase",
            "role",
            "worker_id",
            "type",
            "timestamp",
            "content",
            "verdict",
            "concerns",
            "proposal_hash",
            "prompt_tokens",
            "completion_tokens",
        ] {
            assert!(value["entries"][0].get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["entries"][0]["timestamp"], "2026-11-24T05:30:13.345Z");
        assert_eq!(value["entries"][0]["prompt_tokens"], 1234);
        assert_eq!(value["session"]["completion_tokens"], 56);
        let (s2, e2) = from_json(&text).unwrap();
        assert_eq!(s2, summary);
        assert_eq!(e2, vec![e]);
    }
}
