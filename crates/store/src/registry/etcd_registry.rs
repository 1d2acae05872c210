//! Workers in etcd: `{prefix}/workers/<role>/<worker-id>` under the worker's lease.

use super::{Registration, RegistrationHandle, RegistryEvent, WorkerRecord, WorkerRegistry};
use crate::error::{StoreError, StoreFuture};
use crate::etcd::{OP_TIMEOUT, bounded, check_segment, normalize_prefix};
use agentmesh_discovery::{WorkerLease, keys};
use agentmesh_proto::Backoff;
use etcd_client::{Client, EventType, GetOptions, WatchOptions, WatchStream};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::collections::VecDeque;
use std::time::Duration;

/// A watch that delivered nothing for this long is asked for a progress report; if that
/// goes unanswered too, the connection is taken as broken and the watch is rebuilt.
const WATCH_IDLE: Duration = Duration::from_secs(5);
/// Retry delays of the watch's re-list.
const RELIST_FIRST: Duration = Duration::from_millis(100);
const RELIST_CAP: Duration = Duration::from_secs(2);

/// The etcd-backed [`WorkerRegistry`]. Cheap to clone.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    prefix: String,
    op_timeout: Duration,
}

impl EtcdRegistry {
    /// A registry under `prefix` (e.g. [`crate::DEFAULT_PREFIX`]): keys go to
    /// `{prefix}/workers/<role>/<worker-id>`.
    pub fn new(client: Client, prefix: &str) -> EtcdRegistry {
        EtcdRegistry {
            client,
            prefix: normalize_prefix(prefix),
            op_timeout: OP_TIMEOUT,
        }
    }

    /// How long one etcd request may take (default 5 s); also bounds how long a watch
    /// waits for a re-list while etcd is down.
    pub fn with_op_timeout(mut self, timeout: Duration) -> EtcdRegistry {
        self.op_timeout = timeout;
        self
    }

    fn workers_prefix(&self) -> String {
        keys::workers_prefix(&self.prefix)
    }
}

/// A registration is a discovery [`WorkerLease`]; this only adapts it to the seam.
struct EtcdRegistration(WorkerLease);

impl RegistrationHandle for EtcdRegistration {
    fn revoke(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.0.revoke())
    }

    fn abandon(self: Box<Self>) {
        self.0.abandon();
    }

    fn revoke_in_background(self: Box<Self>) {
        // Dropping the lease revokes it in the background (or lets it expire without a
        // runtime).
        drop(self.0);
    }
}

impl WorkerRegistry for EtcdRegistry {
    fn register(&self, record: WorkerRecord, ttl: Duration) -> StoreFuture<'_, Registration> {
        Box::pin(async move {
            check_segment("role", &record.role)?;
            check_segment("worker id", &record.worker_id)?;
            let lease =
                WorkerLease::register(&self.client, &self.prefix, &record, ttl, self.op_timeout)
                    .await?;
            let key = lease.key().to_string();
            Ok(Registration::new(key, Box::new(EtcdRegistration(lease))))
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<WorkerRecord>> {
        Box::pin(async move {
            let (records, _) =
                list_workers(&self.client, &self.workers_prefix(), self.op_timeout).await?;
            Ok(records)
        })
    }

    fn watch(&self) -> BoxStream<'static, RegistryEvent> {
        let state = WatchState {
            client: self.client.clone(),
            prefix: self.workers_prefix(),
            op_timeout: self.op_timeout,
            stream: None,
            pending: VecDeque::new(),
            backoff: Backoff::new(RELIST_FIRST, RELIST_CAP),
            progress_asked: false,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let event = state.next().await;
            Some((event, state))
        }))
    }
}

/// Every record under `prefix`, ordered by (role, worker id), and the revision read at.
async fn list_workers(
    client: &Client,
    prefix: &str,
    op_timeout: Duration,
) -> Result<(Vec<WorkerRecord>, i64), StoreError> {
    let mut kv = client.kv_client();
    let resp = bounded(
        "list workers",
        op_timeout,
        kv.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut records: Vec<WorkerRecord> = resp
        .kvs()
        .iter()
        .filter_map(|kv| match serde_json::from_slice(kv.value()) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(
                    "skipping corrupt worker record at {}: {e}",
                    String::from_utf8_lossy(kv.key())
                );
                None
            }
        })
        .collect();
    records.sort_by(|a, b| (&a.role, &a.worker_id).cmp(&(&b.role, &b.worker_id)));
    Ok((records, revision))
}

/// The state behind [`EtcdRegistry::watch`]: a list, then a watch from the list's
/// revision; rebuilt (with a fresh snapshot) whenever the watch fails.
struct WatchState {
    client: Client,
    prefix: String,
    op_timeout: Duration,
    stream: Option<WatchStream>,
    pending: VecDeque<RegistryEvent>,
    backoff: Backoff,
    progress_asked: bool,
}

impl WatchState {
    async fn next(&mut self) -> RegistryEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.resync().await {
                    Ok(()) => self.backoff.reset(),
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(
                            "registry watch: cannot list workers: {e}; retrying in {:.1}s",
                            delay.as_secs_f64()
                        );
                        tokio::time::sleep(delay).await;
                    }
                }
                continue;
            };
            let wait = if self.progress_asked {
                self.op_timeout
            } else {
                WATCH_IDLE
            };
            match tokio::time::timeout(wait, stream.message()).await {
                Err(_) if !self.progress_asked => {
                    // Quiet is normal; a frozen etcd looks the same. Ask for proof of life.
                    if stream.request_progress().await.is_ok() {
                        self.progress_asked = true;
                    } else {
                        tracing::warn!("registry watch: stream gone; listing again");
                        self.stream = None;
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        "registry watch: etcd did not answer a progress request; listing again"
                    );
                    self.stream = None;
                }
                Ok(Ok(Some(resp))) => {
                    self.progress_asked = false;
                    if resp.canceled() || resp.compact_revision() > 0 {
                        tracing::warn!(
                            "registry watch: cancelled by etcd ({:?}, compact revision {}); listing again",
                            resp.cancel_reason(),
                            resp.compact_revision()
                        );
                        self.stream = None;
                        continue;
                    }
                    for event in resp.events() {
                        if let Some(event) = self.translate(event) {
                            self.pending.push_back(event);
                        }
                    }
                }
                Ok(Ok(None)) => {
                    tracing::warn!("registry watch: stream ended; listing again");
                    self.stream = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!("registry watch: broke ({e}); listing again");
                    self.stream = None;
                }
            }
        }
    }

    /// List, queue a snapshot, and watch from the revision after the list.
    async fn resync(&mut self) -> Result<(), StoreError> {
        self.progress_asked = false;
        let (records, revision) = list_workers(&self.client, &self.prefix, self.op_timeout).await?;
        let mut watcher = self.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let stream = bounded(
            "watch workers",
            self.op_timeout,
            watcher.watch(self.prefix.as_str(), Some(options)),
        )
        .await?;
        self.stream = Some(stream);
        self.pending.clear();
        self.pending.push_back(RegistryEvent::Snapshot(records));
        Ok(())
    }

    fn translate(&self, event: &etcd_client::Event) -> Option<RegistryEvent> {
        let kv = event.kv()?;
        match event.event_type() {
            EventType::Put => match serde_json::from_slice(kv.value()) {
                Ok(record) => Some(RegistryEvent::Up(record)),
                Err(e) => {
                    tracing::warn!(
                        "registry watch: skipping corrupt worker record at {}: {e}",
                        String::from_utf8_lossy(kv.key())
                    );
                    None
                }
            },
            EventType::Delete => {
                let key = String::from_utf8_lossy(kv.key());
                let rest = key.strip_prefix(&self.prefix)?;
                let (role, worker_id) = rest.split_once('/')?;
                Some(RegistryEvent::Down {
                    role: role.to_string(),
                    worker_id: worker_id.to_string(),
                })
            }
        }
    }
}
