//! Where sessions are kept once written: the header (a [`SessionSummary`]) and the
//! append-only transcript.
//!
//! The coordinator writes through [`SessionStore`] before it acknowledges anything, and a
//! coordinator that takes over reads every [`SessionStore::unfinished`] session back.
//!
//! # Layout
//!
//! - [`SessionStore`], [`Fence`]: the seam.
//! - `memory`: [`MemoryStore`], the embedded default (lost with the process).
//! - `redb_store`: [`RedbStore`], one file on local disk (survives a restart).
//! - `etcd_store`: [`EtcdStore`], the cluster mode's source of truth, fenced by leadership.

use crate::error::{StoreError, StoreFuture};
use agentmesh_core::trust::Digest32;
use agentmesh_core::{Entry, SessionSummary};

mod etcd_store;
mod memory;
mod redb_store;

pub use etcd_store::{ETCD_DEFAULT_MAX_REQUEST_BYTES, EtcdStore};
pub use memory::MemoryStore;
pub use redb_store::{REDB_FILE, RedbStore};

/// What guards a write: the writer's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// No guard: the embedded mode, where one process is the only writer.
    Unfenced,
    /// Write only while `key` exists with this create revision, i.e. while the election
    /// this writer won is still its own. See [`crate::Leadership::fence`].
    Leader { key: Vec<u8>, create_revision: i64 },
}

/// Session headers and transcripts. Object-safe: the coordinator holds an
/// `Arc<dyn SessionStore>`.
pub trait SessionStore: Send + Sync + 'static {
    /// Atomically writes the session header and the entries appended since the last write.
    ///
    /// `entries` must continue the stored transcript (`first.seq == stored_len + 1`,
    /// consecutive), else [`StoreError::SeqGap`] and nothing is written; an empty slice
    /// just updates the header. With [`Fence::Leader`] the write happens only if the fence
    /// key still exists with that create revision; otherwise [`StoreError::Fenced`] and
    /// nothing is written. An entry bigger than [`SessionStore::max_entry_bytes`] is
    /// [`StoreError::TooLarge`], refused before anything is sent. A session id must be
    /// non-empty and hold no '/' (it is an etcd key segment), else [`StoreError::Backend`].
    fn write<'a>(
        &'a self,
        fence: &'a Fence,
        header: &'a SessionSummary,
        entries: &'a [Entry],
    ) -> StoreFuture<'a, ()>;

    /// The header of session `id`, or [`StoreError::NotFound`].
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary>;

    /// Entries with `seq >= from_seq` (0 and 1 both mean "all"), in order;
    /// [`StoreError::NotFound`] if there is no such session.
    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>>;

    /// Every session header, newest first (`created_ms` descending, then id ascending).
    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>>;

    /// The headers whose status is not terminal, in [`SessionStore::list`] order: what a
    /// coordinator taking over has to continue.
    fn unfinished(&self) -> StoreFuture<'_, Vec<SessionSummary>>;

    /// The largest entry (serialized as JSON) this store accepts in one write; the
    /// coordinator refuses bigger replies up front.
    fn max_entry_bytes(&self) -> usize;
}

/// Checks what every store checks before touching anything: the batch is consecutive
/// and continues a transcript of `have` entries.
pub(crate) fn check_continues(id: &str, entries: &[Entry], have: u64) -> Result<(), StoreError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let consecutive = entries.windows(2).all(|w| w[1].seq == w[0].seq + 1);
    if first.seq != have + 1 || !consecutive {
        return Err(StoreError::SeqGap {
            id: id.to_string(),
            got: first.seq,
            have,
        });
    }
    Ok(())
}

/// The chain hash a batch for session `header` continues from: the stored head's chain
/// hash (`head`, the last stored entry's), or the session's genesis when nothing is stored.
/// `None` when the stored transcript is unchained (written before transcripts had chain
/// hashes, or by a tool that keeps none: all-zero chain hashes).
pub(crate) fn chain_base(header: &SessionSummary, head: Option<&Entry>) -> Option<Digest32> {
    match head {
        None => Some(agentmesh_core::trust::genesis(&header.id, &header.task)),
        Some(head) if head.chain_hash.is_zero() => None,
        Some(head) => Some(head.chain_hash),
    }
}

/// Checks that `entries` chain onto `base` ([`chain_base`]), as every store does before
/// it writes anything. A chained transcript continues only with entries that chain onto
/// its head; an unchained one (no chain hashes at all) only with unchained entries, so a
/// transcript is either wholly chained or not at all — and the core, which chains every
/// entry it accepts, restores only a chained one.
pub(crate) fn check_chain(
    header: &SessionSummary,
    entries: &[Entry],
    base: Option<Digest32>,
    have: u64,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let unchained = |seq: u64, why: String| StoreError::Unchained {
        id: header.id.clone(),
        seq,
        why,
    };
    match base {
        // An empty transcript may start unchained (fixtures, tools), but then stays so.
        Some(_) if have == 0 && entries.iter().all(|e| e.chain_hash.is_zero()) => Ok(()),
        Some(base) => agentmesh_core::trust::check_chain(&base, entries)
            .map(|_| ())
            .map_err(|(seq, expected)| {
                unchained(
                    seq,
                    format!(
                        "its chain hash is not {expected}, the hash of it over the entry before"
                    ),
                )
            }),
        None => match entries.iter().find(|e| !e.chain_hash.is_zero()) {
            Some(e) => Err(unchained(
                e.seq,
                "the stored transcript is unchained; a chained entry cannot continue it".into(),
            )),
            None => Ok(()),
        },
    }
}

/// Serializes each entry, refusing one bigger than `limit` before anything is written.
pub(crate) fn encode_entries(entries: &[Entry], limit: usize) -> Result<Vec<String>, StoreError> {
    entries
        .iter()
        .map(|entry| {
            let json = to_json(entry)?;
            if json.len() > limit {
                return Err(StoreError::TooLarge {
                    bytes: json.len(),
                    limit,
                });
            }
            Ok(json)
        })
        .collect()
}

/// Refuses an entry whose JSON would exceed `limit`, like [`encode_entries`], without
/// encoding the entries that cannot: JSON at most sextuples a string (`\u00XX`), so an
/// entry whose bound fits is not serialized at all (the memory store's hot path).
pub(crate) fn check_entry_sizes(entries: &[Entry], limit: usize) -> Result<(), StoreError> {
    for entry in entries {
        if json_bound(entry) > limit {
            let bytes = to_json(entry)?.len();
            if bytes > limit {
                return Err(StoreError::TooLarge { bytes, limit });
            }
        }
    }
    Ok(())
}

/// An upper bound of the length of `entry` as JSON.
fn json_bound(entry: &Entry) -> usize {
    let text = |s: &str| 6 * s.len() + 3;
    // Field names, punctuation, numbers and enum names take well under 1 KiB.
    1024 + text(&entry.role)
        + text(&entry.worker_id)
        + text(&entry.content)
        + text(&entry.proposal_hash)
        + entry.concerns.iter().map(|c| text(c)).sum::<usize>()
        // A byte array: at most "255," per byte.
        + 4 * entry.signature.len()
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend(format!("corrupt {what}: {e}")))
}

/// Newest first, then by id: the order every store's `list` returns.
pub(crate) fn sort_newest_first(all: &mut [SessionSummary]) {
    all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
}

/// The limit of the embedded stores: the same as etcd's, so a session written in the
/// embedded mode would also fit a cluster.
pub(crate) const EMBEDDED_MAX_ENTRY_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: &str, concerns: &[&str], signature: usize) -> Entry {
        serde_json::from_value(serde_json::json!({
            "seq": u64::MAX, "round": u32::MAX, "phase": "REVIEW", "role": "security",
            "worker_id": "security-1", "type": "REVIEW", "timestamp_ms": i64::MIN,
            "content": content, "verdict": "OBJECT", "concerns": concerns,
            "proposal_hash": "ab".repeat(32), "proposal_version": u32::MAX,
            "signature": vec![255u8; signature],
            "prompt_tokens": u64::MAX, "completion_tokens": u64::MAX,
        }))
        .expect("an entry")
    }

    #[test]
    fn the_size_bound_never_undercounts_and_the_check_refuses_what_encoding_refuses() {
        for e in [
            entry("", &[], 0),
            entry("plain text", &["one", "two"], 64),
            entry(&"\u{1}\"\\".repeat(300), &["\u{2}"; 10], 512),
            entry(&"é".repeat(1000), &[], 0),
        ] {
            let json = to_json(&e).unwrap().len();
            assert!(json_bound(&e) >= json, "bound {} < {json}", json_bound(&e));
            for limit in [json - 1, json, json + 1] {
                assert_eq!(
                    check_entry_sizes(std::slice::from_ref(&e), limit).is_ok(),
                    encode_entries(std::slice::from_ref(&e), limit).is_ok(),
                    "limit {limit}, json {json}"
                );
            }
        }
    }
}
