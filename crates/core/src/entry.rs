//! The transcript vocabulary, kept in the fields of the original collaboration format
//! (author role, UTC timestamp, type, content) plus what a distributed negotiation needs
//! (seq, round, phase, worker, verdict, the proposal hash a decision names).

use crate::trust::{Digest32, PublicKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The phase of a session a turn belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Framing,
    Contribute,
    Synthesize,
    Review,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Framing => "FRAMING",
            Phase::Contribute => "CONTRIBUTE",
            Phase::Synthesize => "SYNTHESIZE",
            Phase::Review => "REVIEW",
        }
    }

    /// The entry types a reply may carry in this phase.
    pub fn allows(self, ty: EntryType, round: u32) -> bool {
        use EntryType::*;
        match self {
            Phase::Framing => ty == Framework,
            // Round 1 is analysis; later rounds answer objections with proposals or detail.
            Phase::Contribute if round <= 1 => matches!(ty, Analysis | Question),
            Phase::Contribute => matches!(
                ty,
                Analysis | Proposal | Implementation | Question | Answer | Objection
            ),
            Phase::Synthesize => ty == Proposal,
            Phase::Review => ty == Review,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a transcript entry, as printed after `**Type**:` in the communication file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryType {
    Framework,
    Analysis,
    Proposal,
    Implementation,
    Review,
    Question,
    Answer,
    Objection,
    Signoff,
}

impl EntryType {
    pub const ALL: [EntryType; 9] = [
        EntryType::Framework,
        EntryType::Analysis,
        EntryType::Proposal,
        EntryType::Implementation,
        EntryType::Review,
        EntryType::Question,
        EntryType::Answer,
        EntryType::Objection,
        EntryType::Signoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Framework => "FRAMEWORK",
            EntryType::Analysis => "ANALYSIS",
            EntryType::Proposal => "PROPOSAL",
            EntryType::Implementation => "IMPLEMENTATION",
            EntryType::Review => "REVIEW",
            EntryType::Question => "QUESTION",
            EntryType::Answer => "ANSWER",
            EntryType::Objection => "OBJECTION",
            EntryType::Signoff => "SIGNOFF",
        }
    }
}

impl fmt::Display for EntryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reviewer's decision on one proposal version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// A sign-off on the version named by the review's `proposal_hash`.
    Approve,
    /// Concrete concerns the next version has to address.
    Object,
    /// The brain produced no valid verdict. Never an approval.
    Invalid,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "APPROVE",
            Verdict::Object => "OBJECT",
            Verdict::Invalid => "INVALID",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted transcript entry. Entries are append-only; `seq` is gapless from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub round: u32,
    pub phase: Phase,
    pub role: String,
    pub worker_id: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Milliseconds since the Unix epoch (UTC), stamped on acceptance.
    pub timestamp_ms: i64,
    pub content: String,
    pub verdict: Option<Verdict>,
    pub concerns: Vec<String>,
    /// Hex SHA-256 of the proposal this entry creates (SYNTHESIZE) or judges (REVIEW).
    pub proposal_hash: String,
    /// The proposal version this entry creates or judges; 0 when it names none.
    pub proposal_version: u32,
    /// The worker's Ed25519 signature over the entry's statement
    /// ([`crate::trust::entry_statement`]); hex in JSON.
    #[serde(with = "crate::trust::hex_bytes")]
    pub signature: Vec<u8>,
    /// Model tokens the reply cost: the prompt(s) sent and the completion(s) received,
    /// retries included. 0 for brains that call no model.
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// The attempt of the turn this entry answered (part of what the worker signed).
    #[serde(default)]
    pub attempt: u32,
    /// The public key of the worker that wrote it, as it announced it in its Hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// SHA-256 over the previous entry's chain hash (or the session's genesis) and this
    /// entry's canonical bytes, signature included ([`crate::trust::chain_hash`]).
    #[serde(default)]
    pub chain_hash: Digest32,
}

impl Entry {
    /// Whether this entry, as the stores keep it (its JSON, every field counted), is
    /// longer than `limit` bytes. Cheap either way: JSON at most sextuples a string
    /// (`\u00XX`), so an entry whose bound fits is not serialized at all, and counting
    /// stops once past the limit.
    pub fn stored_len_exceeds(&self, limit: usize) -> bool {
        if self.stored_len_bound() <= limit {
            return false;
        }
        /// Counts bytes, and fails the write once past the limit.
        struct Counter {
            len: usize,
            limit: usize,
        }
        impl std::io::Write for Counter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.len += buf.len();
                if self.len > self.limit {
                    return Err(std::io::Error::other("past the limit"));
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter { len: 0, limit };
        let _ = serde_json::to_writer(&mut counter, self);
        counter.len > limit
    }

    /// An upper bound of the length of this entry as JSON.
    fn stored_len_bound(&self) -> usize {
        let text = |s: &str| 6 * s.len() + 3;
        // Field names, punctuation, numbers, enum names, the key and the chain hash (hex)
        // take well under 1 KiB.
        1024 + text(&self.role)
            + text(&self.worker_id)
            + text(&self.content)
            + text(&self.proposal_hash)
            + self.concerns.iter().map(|c| text(c)).sum::<usize>()
            // Hex, or (older stores) an array: at most "255," per byte.
            + 4 * self.signature.len()
    }

    /// True for the supervisor's synthesis entries, which define proposal versions.
    pub fn is_proposal_version(&self) -> bool {
        self.phase == Phase::Synthesize && self.entry_type == EntryType::Proposal
    }
}
