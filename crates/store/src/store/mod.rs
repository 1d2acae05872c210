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
