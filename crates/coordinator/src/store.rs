//! Where sessions are kept once written: the header (a [`SessionSummary`]) and the
//! append-only transcript.
//!
//! The coordinator writes through [`SessionStore`] before it acknowledges anything, and
//! serves reads of ended sessions from it. [`MemoryStore`] is the embedded default;
//! durable and etcd-backed stores implement the same trait.

use agentmesh_core::{Entry, SessionSummary};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("session {0} not found")]
    NotFound(String),
    #[error("append for session {id} starts at seq {got}, but the transcript holds {have} entries")]
    SeqGap { id: String, got: u64, have: u64 },
    #[error("{0}")]
    Backend(String),
}

pub trait SessionStore: Send + Sync + 'static {
    /// Writes a session's header and the entries one transition appended, atomically.
    /// `entries` must continue the stored transcript without a gap.
    fn write<'a>(&'a self, header: &'a SessionSummary, entries: &'a [Entry])
    -> StoreFuture<'a, ()>;
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary>;
    /// Entries with `seq >= from_seq`, in order.
    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>>;
    /// Every session header, newest first.
    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>>;
}

#[derive(Default)]
struct Stored {
    header: Option<SessionSummary>,
    entries: Vec<Entry>,
}

/// The in-process store of the embedded mode.
#[derive(Default, Clone)]
pub struct MemoryStore {
    sessions: Arc<Mutex<BTreeMap<String, Stored>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SessionStore for MemoryStore {
    fn write<'a>(
        &'a self,
        header: &'a SessionSummary,
        entries: &'a [Entry],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut sessions = self.sessions.lock().expect("store lock");
            let stored = sessions.entry(header.id.clone()).or_default();
            let have = stored.entries.len() as u64;
            if let Some(first) = entries.first()
                && (first.seq != have + 1 || entries.windows(2).any(|w| w[1].seq != w[0].seq + 1))
            {
                return Err(StoreError::SeqGap {
                    id: header.id.clone(),
                    got: first.seq,
                    have,
                });
            }
            stored.entries.extend_from_slice(entries);
            stored.header = Some(header.clone());
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary> {
        Box::pin(async move {
            let sessions = self.sessions.lock().expect("store lock");
            sessions
                .get(id)
                .and_then(|s| s.header.clone())
                .ok_or_else(|| StoreError::NotFound(id.to_string()))
        })
    }

    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>> {
        Box::pin(async move {
            let sessions = self.sessions.lock().expect("store lock");
            let stored = sessions
                .get(id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            let skip = from_seq.saturating_sub(1) as usize;
            Ok(stored.entries.iter().skip(skip).cloned().collect())
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        Box::pin(async move {
            let sessions = self.sessions.lock().expect("store lock");
            let mut all: Vec<SessionSummary> =
                sessions.values().filter_map(|s| s.header.clone()).collect();
            all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
            Ok(all)
        })
    }
}
