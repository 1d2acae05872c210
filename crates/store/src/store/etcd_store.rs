//! The cluster mode's store: etcd, every write one fenced transaction.

use super::{
    Fence, SessionStore, chain_base, check_chain, encode_entries, from_json, sort_newest_first,
    to_json,
};
use crate::error::{StoreError, StoreFuture};
use crate::etcd::{OP_TIMEOUT, bounded, check_segment, normalize_prefix, prefix_end};
use agentmesh_core::{Entry, SessionSummary};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use std::ops::Range;
use std::time::Duration;

/// etcd's default `--max-request-bytes`: the largest request (a whole transaction) it takes.
pub const ETCD_DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// What one entry may not use of a request: room for the header, keys, guards, framing.
const ENTRY_RESERVE: usize = 512 * 1024;
/// What a split transaction keeps free of the request limit for its guards and framing.
const TXN_RESERVE: usize = 16 * 1024;
/// Protobuf framing of one put (tags, lengths, options), rounded up generously.
const OP_OVERHEAD: usize = 64;
/// etcd's default `--max-txn-ops`: puts per transaction, the header's included.
const MAX_TXN_OPS: usize = 128;
/// Keys per range request when reading a transcript or the session list.
const PAGE: i64 = 64;
/// Seqs are zero-padded to this many digits (u64::MAX has 20).
const SEQ_DIGITS: usize = 20;

/// The etcd-backed [`SessionStore`]. Cheap to clone (shares the client's connection).
///
/// ```text
/// {prefix}/sessions/<id>                   header JSON
/// {prefix}/entries/<id>/<seq, 20 digits>   entry JSON; zero-padding keeps keys in seq order
/// ```
///
/// # A write
///
/// One etcd transaction:
///
/// ```text
/// If   CreateRevision(fence key) == fence create_revision        (Fence::Leader only)
///      CreateRevision(entries/<id>/<first seq>) == 0              (seq not taken yet)
///      CreateRevision(entries/<id>/<first seq - 1>) > 0           (no gap; when first seq > 1)
/// Then put every entry, put the header
/// Else get the fence key, count the transcript                   (to say why, atomically)
/// ```
///
/// Stored transcripts are always gapless from 1, so "seq n-1 exists and seq n does not"
/// is exactly "the transcript holds n-1 entries". A refused transaction wrote nothing, and
/// its `Else` answer tells [`StoreError::Fenced`] from [`StoreError::SeqGap`] without a
/// second, racy read.
///
/// # Size limits and split writes
///
/// etcd refuses a request over `--max-request-bytes` (1.5 MiB by default,
/// [`ETCD_DEFAULT_MAX_REQUEST_BYTES`]). One entry may take at most that minus 512 KiB
/// (1 MiB by default, [`EtcdStore::max_entry_bytes`]), which leaves room for a header, the
/// keys and the guards in the same request; a bigger entry is [`StoreError::TooLarge`]
/// before anything is sent.
///
/// A batch whose total does not fit one request, or that holds more than 127 entries
/// (etcd's default `--max-txn-ops` is 128 puts per transaction), is split into several
/// transactions, in seq order, each guarded exactly as above (fence, first seq free,
/// previous seq present); the header goes into the last one. A split write is therefore
/// not atomic as a whole: if a later transaction fails (fenced, unavailable), the earlier
/// ones stay written. What stays is still a gapless continuation of the transcript,
/// written under a valid fence; only the header lags behind it. A retry of the same write
/// then gets [`StoreError::SeqGap`] (`have` > `got`); re-read [`SessionStore::entries`] to
/// see what landed. A transition appends one entry or few, so splits are rare in practice.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    prefix: String,
    op_timeout: Duration,
    max_request_bytes: usize,
    /// The stored head of each session this store wrote last: (seq, the entry, the
    /// revision it was written at). A write chains onto it and is guarded by its mod
    /// revision, so it fails if the head was changed since; a miss reads the head once.
    heads: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Head>>>,
}

/// A session's last stored entry, as this store last wrote or read it.
#[derive(Clone)]
struct Head {
    entry: Entry,
    mod_revision: i64,
}

/// One transaction of a (possibly split) write.
struct Chunk {
    /// Indices into the batch.
    entries: Range<usize>,
    /// The transcript length this transaction continues (its first seq - 1).
    before: u64,
    with_header: bool,
}

impl EtcdStore {
    /// A store under `prefix` (e.g. [`crate::DEFAULT_PREFIX`]; a trailing `/` is ignored).
    pub fn new(client: Client, prefix: &str) -> EtcdStore {
        let store = EtcdStore {
            kv: client.kv_client(),
            prefix: normalize_prefix(prefix),
            op_timeout: OP_TIMEOUT,
            max_request_bytes: ETCD_DEFAULT_MAX_REQUEST_BYTES,
            heads: Default::default(),
        };
        store.with_max_request_bytes(ETCD_DEFAULT_MAX_REQUEST_BYTES)
    }

    /// How long one etcd request may take before the call fails with
    /// [`StoreError::Unavailable`] (default [`OP_TIMEOUT`], 5 s).
    pub fn with_op_timeout(mut self, timeout: Duration) -> EtcdStore {
        self.op_timeout = timeout;
        self
    }

    /// For an etcd started with a non-default `--max-request-bytes`: the entry limit is
    /// this minus 512 KiB, and writes are split to fit it.
    ///
    /// # Panics
    ///
    /// When `bytes` leaves no room for an entry (below 640 KiB).
    pub fn with_max_request_bytes(mut self, bytes: usize) -> EtcdStore {
        assert!(
            bytes >= ENTRY_RESERVE + 128 * 1024,
            "max_request_bytes {bytes} is too small"
        );
        self.max_request_bytes = bytes;
        // A page of values can reach PAGE requests' worth; the default 4 MiB decoding
        // limit would refuse a page of large entries.
        let limit = (PAGE as usize) * bytes + 1024 * 1024;
        self.kv = self.kv.max_decoding_message_size(limit);
        self
    }

    /// The key of session `id`'s header.
    pub fn header_key(&self, id: &str) -> String {
        format!("{}/sessions/{id}", self.prefix)
    }

    /// The key of entry `seq` of session `id`.
    pub fn entry_key(&self, id: &str, seq: u64) -> String {
        format!("{}/entries/{id}/{seq:0SEQ_DIGITS$}", self.prefix)
    }

    fn sessions_prefix(&self) -> String {
        format!("{}/sessions/", self.prefix)
    }

    /// The key range [from_seq, u64::MAX] of one transcript. An explicit range (rather than
    /// a prefix) keeps `entries/a/...` from ever matching keys of a longer id.
    fn entry_range(&self, id: &str, from_seq: u64) -> (String, Vec<u8>) {
        let mut end = self.entry_key(id, u64::MAX).into_bytes();
        end.push(0);
        (self.entry_key(id, from_seq.max(1)), end)
    }

    fn txn_budget(&self) -> usize {
        self.max_request_bytes - TXN_RESERVE
    }

    /// Splits a batch into transactions that each fit the request limit, header last.
    fn plan(
        &self,
        id: &str,
        entries: &[Entry],
        encoded: &[String],
        header_cost: usize,
    ) -> Vec<Chunk> {
        let Some(first) = entries.first() else {
            return vec![Chunk {
                entries: 0..0,
                before: 0,
                with_header: true,
            }];
        };
        let budget = self.txn_budget();
        let key_len = self.entry_key(id, 0).len();
        let cost = |json: &String| key_len + json.len() + OP_OVERHEAD;
        let chunk = |range: Range<usize>, with_header| Chunk {
            before: first.seq - 1 + range.start as u64,
            entries: range,
            with_header,
        };
        let mut plan = Vec::new();
        let (mut start, mut used) = (0, 0);
        for (i, json) in encoded.iter().enumerate() {
            let full = i - start == MAX_TXN_OPS || used + cost(json) > budget;
            if i > start && full {
                plan.push(chunk(start..i, false));
                (start, used) = (i, 0);
            }
            used += cost(json);
        }
        let n = encoded.len();
        if n - start < MAX_TXN_OPS && used + header_cost <= budget {
            plan.push(chunk(start..n, true));
        } else {
            // The header does not fit beside the last entries: it gets a transaction of
            // its own, guarded on the transcript ending exactly where this batch ends.
            plan.push(chunk(start..n, false));
            plan.push(chunk(n..n, true));
        }
        plan
    }

    /// The stored entry `seq` of session `id` (the head a batch continues), from the cache
    /// of this store's own last write, else read; `None` when it does not exist.
    async fn head(&self, id: &str, seq: u64) -> Result<Option<Head>, StoreError> {
        if let Some(head) = self.heads.lock().expect("heads lock").get(id)
            && head.entry.seq == seq
        {
            return Ok(Some(head.clone()));
        }
        let mut kv = self.kv.clone();
        let what = format!("read the head of session {id}");
        let resp = bounded(
            &what,
            self.op_timeout,
            kv.get(self.entry_key(id, seq), None),
        )
        .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        Ok(Some(Head {
            entry: from_json("entry", kv.value())?,
            mod_revision: kv.mod_revision(),
        }))
    }

    fn guards(&self, fence: &Fence, id: &str, chunk: &Chunk, seq_guard: bool) -> Vec<Compare> {
        let mut when = Vec::new();
        if let Fence::Leader {
            key,
            create_revision,
        } = fence
        {
            when.push(Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                *create_revision,
            ));
        }
        if seq_guard {
            when.push(Compare::create_revision(
                self.entry_key(id, chunk.before + 1),
                CompareOp::Equal,
                0,
            ));
            if chunk.before > 0 {
                when.push(Compare::create_revision(
                    self.entry_key(id, chunk.before),
                    CompareOp::Greater,
                    0,
                ));
            }
        }
        when
    }

    /// The `Else` branch: read what tells a fenced writer from a gap, in the same revision.
    fn diagnosis(&self, fence: &Fence, id: &str) -> Vec<TxnOp> {
        let mut ops = Vec::new();
        if let Fence::Leader { key, .. } = fence {
            ops.push(TxnOp::get(
                key.clone(),
                Some(GetOptions::new().with_keys_only()),
            ));
        }
        let (start, end) = self.entry_range(id, 1);
        ops.push(TxnOp::get(
            start,
            Some(GetOptions::new().with_range(end).with_count_only()),
        ));
        ops
    }

    fn why_refused(
        &self,
        resp: &TxnResponse,
        fence: &Fence,
        id: &str,
        chunk: &Chunk,
        chunk_no: usize,
        head_guard: Option<(u64, i64)>,
    ) -> StoreError {
        let ops = resp.op_responses();
        let mut ops = ops.iter();
        if let Fence::Leader {
            key,
            create_revision,
        } = fence
        {
            let holder = match ops.next() {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().map(KeyValue::create_revision),
                _ => None,
            };
            if holder != Some(*create_revision) {
                let now = match holder {
                    None => "is gone".to_string(),
                    Some(rev) => format!("now has create_revision {rev}"),
                };
                let partial = if chunk_no > 0 {
                    format!(
                        "; the first {chunk_no} transaction(s) of this split write, entries up to seq {}, were written",
                        chunk.before
                    )
                } else {
                    "; nothing written".to_string()
                };
                return StoreError::Fenced(format!(
                    "session {id}: leader key {} (create_revision {create_revision}) {now}{partial}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        let have = match ops.next() {
            Some(TxnOpResponse::Get(get)) => get.count().max(0) as u64,
            _ => 0,
        };
        if chunk_no == 0
            && let Some((seq, revision)) = head_guard
            && have == seq
        {
            // The count is right, so the head itself was rewritten since it was read.
            return StoreError::Unchained {
                id: id.to_string(),
                seq: seq + 1,
                why: format!("the stored entry {seq} changed after revision {revision}"),
            };
        }
        StoreError::SeqGap {
            id: id.to_string(),
            got: chunk.before + 1,
            have,
        }
    }

    async fn count_entries(&self, id: &str) -> Result<u64, StoreError> {
        let (start, end) = self.entry_range(id, 1);
        let mut kv = self.kv.clone();
        let opts = GetOptions::new().with_range(end).with_count_only();
        let what = format!("count transcript of session {id}");
        let resp = bounded(&what, self.op_timeout, kv.get(start, Some(opts))).await?;
        Ok(resp.count().max(0) as u64)
    }

    /// Reads `[start, end)` page by page at one revision (the first page's, or `rev`).
    async fn range_at(
        &self,
        what: &str,
        mut start: Vec<u8>,
        end: Vec<u8>,
        mut rev: i64,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut kv = self.kv.clone();
        let mut out = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if rev > 0 {
                opts = opts.with_revision(rev);
            }
            let mut resp =
                bounded(what, self.op_timeout, kv.get(start.clone(), Some(opts))).await?;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            match kvs.last() {
                Some(last) if more => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    out.extend(kvs);
                    return Ok(out);
                }
            }
            out.extend(kvs);
        }
    }
}

impl SessionStore for EtcdStore {
    fn write<'a>(
        &'a self,
        fence: &'a Fence,
        header: &'a SessionSummary,
        entries: &'a [Entry],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let id = header.id.as_str();
            check_segment("session id", id)?;
            if let Some(first) = entries.first()
                && (first.seq == 0 || entries.windows(2).any(|w| w[1].seq != w[0].seq + 1))
            {
                // Wrong on its own; the count only makes the error as precise as elsewhere.
                return Err(StoreError::SeqGap {
                    id: id.to_string(),
                    got: first.seq,
                    have: self.count_entries(id).await?,
                });
            }
            // The batch must chain onto the stored head; the first transaction is then
            // guarded by the head's mod revision, so a head changed meanwhile refuses it.
            let mut head_guard = None;
            if let Some(first) = entries.first() {
                let before = first.seq - 1;
                // No stored entry `before`: the transaction's seq guard refuses the batch,
                // and its diagnosis says why (a gap, or a lost fence first).
                let head = match before {
                    0 => Some(None),
                    _ => self.head(id, before).await?.map(Some),
                };
                if let Some(head) = head {
                    let base = chain_base(header, head.as_ref().map(|h| &h.entry));
                    check_chain(header, entries, base, before)?;
                    head_guard = head.map(|h| (before, h.mod_revision));
                }
            }
            let encoded = encode_entries(entries, self.max_entry_bytes())?;
            let header_json = to_json(header)?;
            let header_key = self.header_key(id);
            let header_cost = header_key.len() + header_json.len() + OP_OVERHEAD;
            if header_cost > self.txn_budget() {
                return Err(StoreError::TooLarge {
                    bytes: header_json.len(),
                    limit: self.txn_budget() - header_key.len() - OP_OVERHEAD,
                });
            }
            let plan = self.plan(id, entries, &encoded, header_cost);
            let mut kv = self.kv.clone();
            for (n, chunk) in plan.iter().enumerate() {
                // A header-only write (no entries at all) has no seq to guard.
                let seq_guard = !entries.is_empty();
                let mut puts: Vec<TxnOp> = chunk
                    .entries
                    .clone()
                    .map(|i| {
                        TxnOp::put(
                            self.entry_key(id, entries[i].seq),
                            encoded[i].as_str(),
                            None,
                        )
                    })
                    .collect();
                if chunk.with_header {
                    puts.push(TxnOp::put(header_key.as_str(), header_json.as_str(), None));
                }
                let mut guards = self.guards(fence, id, chunk, seq_guard);
                if let (0, Some((seq, revision))) = (n, head_guard) {
                    guards.push(Compare::mod_revision(
                        self.entry_key(id, seq),
                        CompareOp::Equal,
                        revision,
                    ));
                }
                let txn = Txn::new()
                    .when(guards)
                    .and_then(puts)
                    .or_else(self.diagnosis(fence, id));
                let what = format!("write session {id}");
                let resp = match bounded(&what, self.op_timeout, kv.txn(txn)).await {
                    Ok(resp) => resp,
                    Err(StoreError::Backend(msg)) if msg.contains("request is too large") => {
                        // etcd runs with a smaller --max-request-bytes than we were told.
                        let bytes = chunk
                            .entries
                            .clone()
                            .map(|i| encoded[i].len())
                            .sum::<usize>()
                            + if chunk.with_header {
                                header_json.len()
                            } else {
                                0
                            };
                        return Err(StoreError::TooLarge {
                            bytes,
                            limit: self.max_request_bytes,
                        });
                    }
                    Err(e) => return Err(e),
                };
                if !resp.succeeded() {
                    self.heads.lock().expect("heads lock").remove(id);
                    return Err(self.why_refused(&resp, fence, id, chunk, n, head_guard));
                }
                if let (Some(last), Some(h)) = (chunk.entries.clone().last(), resp.header()) {
                    let head = Head {
                        entry: entries[last].clone(),
                        mod_revision: h.revision(),
                    };
                    self.heads
                        .lock()
                        .expect("heads lock")
                        .insert(id.to_string(), head);
                }
            }
            if header.status.is_terminal() {
                // Nothing continues an ended session: its head need not be kept.
                self.heads.lock().expect("heads lock").remove(id);
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, SessionSummary> {
        Box::pin(async move {
            check_segment("session id", id)?;
            let mut kv = self.kv.clone();
            let what = format!("read session {id}");
            let resp = bounded(&what, self.op_timeout, kv.get(self.header_key(id), None)).await?;
            let kv = resp
                .kvs()
                .first()
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            from_json("session header", kv.value())
        })
    }

    fn entries<'a>(&'a self, id: &'a str, from_seq: u64) -> StoreFuture<'a, Vec<Entry>> {
        Box::pin(async move {
            check_segment("session id", id)?;
            let (start, end) = self.entry_range(id, from_seq);
            // The first page and the existence check in one transaction, so "no such
            // session" and "no entries yet" are told apart in one consistent view.
            let txn = Txn::new().and_then(vec![
                TxnOp::get(
                    self.header_key(id),
                    Some(GetOptions::new().with_count_only()),
                ),
                TxnOp::get(
                    start.as_str(),
                    Some(GetOptions::new().with_range(end.clone()).with_limit(PAGE)),
                ),
            ]);
            let what = format!("read transcript of session {id}");
            let mut kv = self.kv.clone();
            let resp = bounded(&what, self.op_timeout, kv.txn(txn)).await?;
            let rev = resp.header().map_or(0, |h| h.revision());
            let ops = resp.op_responses();
            let (Some(TxnOpResponse::Get(header)), Some(TxnOpResponse::Get(first))) =
                (ops.first(), ops.get(1))
            else {
                return Err(StoreError::Backend(format!(
                    "{what}: unexpected txn answer"
                )));
            };
            if header.count() == 0 {
                return Err(StoreError::NotFound(id.to_string()));
            }
            let mut kvs = first.kvs().to_vec();
            if first.more()
                && let Some(last) = kvs.last()
            {
                let mut next = last.key().to_vec();
                next.push(0);
                kvs.extend(self.range_at(&what, next, end, rev).await?);
            }
            kvs.iter()
                .map(|kv| from_json("transcript entry", kv.value()))
                .collect()
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<SessionSummary>> {
        Box::pin(async move {
            let start = self.sessions_prefix().into_bytes();
            let end = prefix_end(&start);
            let kvs = self.range_at("list sessions", start, end, 0).await?;
            let mut all = kvs
                .iter()
                .map(|kv| from_json("session header", kv.value()))
                .collect::<Result<Vec<SessionSummary>, _>>()?;
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
        self.max_request_bytes - ENTRY_RESERVE
    }
}
