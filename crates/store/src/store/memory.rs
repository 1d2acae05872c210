//! The embedded store: everything in process memory, gone with the process.

use super::{
    EMBEDDED_MAX_ENTRY_BYTES, Fence, SessionStore, chain_base, check_chain, check_continues,
    check_entry_sizes, sort_newest_first,
};
use crate::error::{StoreError, StoreFuture};
use crate::etcd::check_segment;
use agentmesh_core::{Entry, SessionSummary};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Stored {
    header: Option<SessionSummary>,
    entries: Vec<Entry>,
}

/// The in-process store of the embedded mode. Clones share the same sessions.
///
/// The [`Fence`] is ignored: in the embedded mode one process is the only writer.
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
        _fence: &'a Fence,
        header: &'a SessionSummary,
        entries: &'a [Entry],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Same id rule and limit as the etcd store, so a session that works embedded
            // also works in a cluster.
            check_segment("session id", &header.id)?;
            check_entry_sizes(entries, EMBEDDED_MAX_ENTRY_BYTES)?;
            let mut sessions = self.sessions.lock().expect("store lock");
            let have = sessions
                .get(&header.id)
                .map_or(0, |s| s.entries.len() as u64);
            check_continues(&header.id, entries, have)?;
            let head = sessions.get(&header.id).and_then(|s| s.entries.last());
            check_chain(header, entries, chain_base(header, head), have)?;
            let stored = sessions.entry(header.id.clone()).or_default();
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
            let skip = usize::try_from(from_seq.saturating_sub(1)).unwrap_or(usize::MAX);
            Ok(stored.entries.iter().skip(skip).cloned().collect())
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        Box::pin(async move {
            let sessions = self.sessions.lock().expect("store lock");
            let mut all: Vec<SessionSummary> =
                sessions.values().filter_map(|s| s.header.clone()).collect();
            sort_newest_first(&mut all);
            Ok(all)
        })
    }

    fn unfinished(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        Box::pin(async move {
            let mut all = self.list().await?;
            all.retain(|s| !s.status.is_terminal());
            Ok(all)
        })
    }

    fn max_entry_bytes(&self) -> usize {
        EMBEDDED_MAX_ENTRY_BYTES
    }
}
