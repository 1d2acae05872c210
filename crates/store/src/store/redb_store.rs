//! A durable single-machine store: one redb file, survives a process restart.

use super::{
    EMBEDDED_MAX_ENTRY_BYTES, Fence, SessionStore, chain_base, check_chain, check_continues,
    encode_entries, from_json, sort_newest_first, to_json,
};
use crate::error::{StoreError, StoreFuture};
use crate::etcd::check_segment;
use agentmesh_core::{Entry, SessionSummary};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

/// Session id -> header JSON.
const HEADERS: TableDefinition<&str, &str> = TableDefinition::new("headers");
/// (session id, seq) -> entry JSON. The tuple key keeps a transcript contiguous and in
/// seq order, so a range read is one scan and the last key is the transcript length.
const ENTRIES: TableDefinition<(&str, u64), &str> = TableDefinition::new("entries");

/// The file [`RedbStore::open`] keeps its data in, inside the given directory.
pub const REDB_FILE: &str = "sessions.redb";

/// A durable store in `dir/sessions.redb`. Every write is one redb transaction (header and
/// entries commit together, durably, before `write` returns).
///
/// The [`Fence`] is ignored: a redb file belongs to one process (redb locks it).
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl RedbStore {
    /// Opens (or creates) `dir/sessions.redb`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(REDB_FILE);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;
        // Create both tables now, so that reads of a fresh file find them.
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(HEADERS).map_err(backend)?;
        txn.open_table(ENTRIES).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("redb task failed: {e}")))?
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redb: {e}"))
}

fn read_list(db: &Database) -> Result<Vec<SessionSummary>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let headers = txn.open_table(HEADERS).map_err(backend)?;
    let mut all = Vec::new();
    for row in headers.iter().map_err(backend)? {
        let (_, json) = row.map_err(backend)?;
        all.push(from_json("session header", json.value().as_bytes())?);
    }
    sort_newest_first(&mut all);
    Ok(all)
}

impl SessionStore for RedbStore {
    fn write<'a>(
        &'a self,
        _fence: &'a Fence,
        header: &'a SessionSummary,
        entries: &'a [Entry],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Same id rule and limit as the etcd store (see MemoryStore).
            check_segment("session id", &header.id)?;
            let encoded = encode_entries(entries, EMBEDDED_MAX_ENTRY_BYTES)?;
            let header_json = to_json(header)?;
            let id = header.id.clone();
            let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
            let entries = entries.to_vec();
            let chained_header = header.clone();
            self.blocking(move |db| {
                let txn = db.begin_write().map_err(backend)?;
                {
                    let mut table = txn.open_table(ENTRIES).map_err(backend)?;
                    let last = table
                        .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))
                        .map_err(backend)?
                        .next_back()
                        .transpose()
                        .map_err(backend)?
                        .map(|(key, value)| (key.value().1, value.value().to_string()));
                    let have = last.as_ref().map_or(0, |(seq, _)| *seq);
                    // Dropping `txn` uncommitted on error writes nothing.
                    check_continues(&id, &entries, have)?;
                    if !entries.is_empty() {
                        let head: Option<Entry> = last
                            .map(|(_, json)| from_json("entry", json.as_bytes()))
                            .transpose()?;
                        let base = chain_base(&chained_header, head.as_ref());
                        check_chain(&chained_header, &entries, base, have)?;
                    }
                    for (seq, json) in seqs.iter().zip(&encoded) {
                        table
                            .insert((id.as_str(), *seq), json.as_str())
                            .map_err(backend)?;
                    }
                    let mut headers = txn.open_table(HEADERS).map_err(backend)?;
                    headers
                        .insert(id.as_str(), header_json.as_str())
                        .map_err(backend)?;
                }
                txn.commit().map_err(backend)
            })
            .await
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary> {
        let id = id.to_string();
        Box::pin(self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let headers = txn.open_table(HEADERS).map_err(backend)?;
            let json = headers
                .get(id.as_str())
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            from_json("session header", json.value().as_bytes())
        }))
    }

    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>> {
        let id = id.to_string();
        Box::pin(self.blocking(move |db| {
            // One read transaction: the header check and the transcript see one snapshot.
            let txn = db.begin_read().map_err(backend)?;
            let headers = txn.open_table(HEADERS).map_err(backend)?;
            if headers.get(id.as_str()).map_err(backend)?.is_none() {
                return Err(StoreError::NotFound(id));
            }
            let table = txn.open_table(ENTRIES).map_err(backend)?;
            let mut out = Vec::new();
            for row in table
                .range((id.as_str(), from_seq.max(1))..=(id.as_str(), u64::MAX))
                .map_err(backend)?
            {
                let (_, json) = row.map_err(backend)?;
                out.push(from_json("transcript entry", json.value().as_bytes())?);
            }
            Ok(out)
        }))
    }

    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        Box::pin(self.blocking(read_list))
    }

    fn unfinished(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        Box::pin(self.blocking(|db| {
            let mut all = read_list(db)?;
            all.retain(|s| !s.status.is_terminal());
            Ok(all)
        }))
    }

    fn max_entry_bytes(&self) -> usize {
        EMBEDDED_MAX_ENTRY_BYTES
    }
}
