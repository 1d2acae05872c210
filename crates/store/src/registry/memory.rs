//! The in-process registry of the embedded mode.

use super::{Registration, RegistrationHandle, RegistryEvent, WorkerRecord, WorkerRegistry};
use crate::error::{StoreError, StoreFuture};
use crate::etcd::check_segment;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// How many changes a slow watcher may fall behind before it gets a fresh snapshot.
const EVENT_BUFFER: usize = 1024;

type WorkerKey = (String, String);

struct State {
    /// (role, worker id) -> the record and the registration that put it there.
    workers: BTreeMap<WorkerKey, (WorkerRecord, u64)>,
    next_generation: u64,
}

struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<RegistryEvent>,
}

impl Shared {
    /// Removes the worker if `generation` still owns its key (a re-registration under
    /// the same id must not be removed by the old one's expiry).
    fn remove(&self, key: &WorkerKey, generation: u64) {
        let mut state = self.state.lock().expect("registry lock");
        if state
            .workers
            .get(key)
            .is_some_and(|(_, g)| *g == generation)
        {
            state.workers.remove(key);
            // Sent under the lock so every watcher sees changes in the order they happen.
            let _ = self.events.send(RegistryEvent::Down {
                role: key.0.clone(),
                worker_id: key.1.clone(),
            });
        }
    }

    fn snapshot_and_subscribe(&self) -> (Vec<WorkerRecord>, broadcast::Receiver<RegistryEvent>) {
        let state = self.state.lock().expect("registry lock");
        let records = state.workers.values().map(|(r, _)| r.clone()).collect();
        (records, self.events.subscribe())
    }
}

/// Workers registered in this process. Clones share the registry.
///
/// Leases are emulated: a revoked or dropped registration is removed at once; an
/// abandoned one is removed `ttl` later by a tokio timer, like an expiring etcd lease.
#[derive(Clone)]
pub struct MemoryRegistry {
    shared: Arc<Shared>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    workers: BTreeMap::new(),
                    next_generation: 1,
                }),
                events: broadcast::channel(EVENT_BUFFER).0,
            }),
        }
    }
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryRegistration {
    shared: Arc<Shared>,
    key: WorkerKey,
    generation: u64,
    ttl: Duration,
    runtime: tokio::runtime::Handle,
}

impl RegistrationHandle for MemoryRegistration {
    fn revoke(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.shared.remove(&self.key, self.generation);
        Box::pin(async {})
    }

    fn abandon(self: Box<Self>) {
        let MemoryRegistration {
            shared,
            key,
            generation,
            ttl,
            runtime,
        } = *self;
        runtime.spawn(async move {
            tokio::time::sleep(ttl).await;
            shared.remove(&key, generation);
        });
    }

    fn revoke_in_background(self: Box<Self>) {
        self.shared.remove(&self.key, self.generation);
    }
}

impl WorkerRegistry for MemoryRegistry {
    fn register(&self, record: WorkerRecord, ttl: Duration) -> StoreFuture<'_, Registration> {
        Box::pin(async move {
            check_segment("role", &record.role)?;
            check_segment("worker id", &record.worker_id)?;
            let key = (record.role.clone(), record.worker_id.clone());
            let mut state = self.shared.state.lock().expect("registry lock");
            let generation = state.next_generation;
            state.next_generation += 1;
            state
                .workers
                .insert(key.clone(), (record.clone(), generation));
            let _ = self.shared.events.send(RegistryEvent::Up(record));
            drop(state);
            let handle = MemoryRegistration {
                shared: self.shared.clone(),
                key: key.clone(),
                generation,
                ttl,
                runtime: tokio::runtime::Handle::current(),
            };
            Ok(Registration::new(
                format!("workers/{}/{}", key.0, key.1),
                Box::new(handle),
            ))
        })
    }

    fn list(&self) -> StoreFuture<'_, Vec<WorkerRecord>> {
        Box::pin(async move {
            let state = self.shared.state.lock().expect("registry lock");
            Ok::<_, StoreError>(state.workers.values().map(|(r, _)| r.clone()).collect())
        })
    }

    fn watch(&self) -> BoxStream<'static, RegistryEvent> {
        let shared = self.shared.clone();
        let (snapshot, rx) = shared.snapshot_and_subscribe();
        let state = (shared, rx, Some(RegistryEvent::Snapshot(snapshot)));
        Box::pin(futures::stream::unfold(
            state,
            |(shared, mut rx, pending)| async move {
                if let Some(event) = pending {
                    return Some((event, (shared, rx, None)));
                }
                match rx.recv().await {
                    Ok(event) => Some((event, (shared, rx, None))),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Too slow: what was buffered is partly lost, so start over from a
                        // fresh snapshot on a fresh subscription (nothing older replays).
                        tracing::warn!(
                            "registry watcher fell {missed} change(s) behind; re-snapshotting"
                        );
                        let (snapshot, rx) = shared.snapshot_and_subscribe();
                        Some((RegistryEvent::Snapshot(snapshot), (shared, rx, None)))
                    }
                    // The sender lives in `shared`, which we hold: never closed.
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }
}
