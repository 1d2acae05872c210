//! Who is out there: workers register under a lease, coordinators list and watch them.
//!
//! # Layout
//!
//! - [`WorkerRegistry`], [`WorkerRecord`], [`RegistryEvent`], [`Registration`]: the seam.
//! - `memory`: [`MemoryRegistry`], in-process, with TTL expiry emulated by tokio time.
//! - `etcd_registry`: [`EtcdRegistry`], keys under leases, kept alive through outages
//!   (the lease itself is `agentmesh_discovery::WorkerLease`).

use crate::error::StoreFuture;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::time::Duration;

mod etcd_registry;
mod memory;

pub use etcd_registry::EtcdRegistry;
pub use memory::MemoryRegistry;

/// What a worker advertises: stored as JSON at `{prefix}/workers/<role>/<worker-id>`
/// (defined in `agentmesh-discovery`, which workers register with).
pub use agentmesh_discovery::WorkerRecord;

/// One change of the registered set, as [`WorkerRegistry::watch`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    /// Everyone registered right now. Comes first, and again whenever the watch had to be
    /// re-established: replace what you knew, do not merge.
    Snapshot(Vec<WorkerRecord>),
    /// A worker registered, or re-registered (its record may have changed).
    Up(WorkerRecord),
    /// A worker's key is gone: it revoked, or its lease expired.
    Down { role: String, worker_id: String },
}

/// The live workers. Object-safe.
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Registers `record` at `{prefix}/workers/<role>/<worker-id>` under a lease of `ttl`,
    /// kept alive by a background task until the [`Registration`] is revoked or dropped.
    ///
    /// The task survives outages: it retries keep-alives with back-off and, if the lease
    /// expired meanwhile, grants a new lease and puts the key again (each step logged).
    /// Role and worker id must be non-empty and hold no '/'.
    fn register(&self, record: WorkerRecord, ttl: Duration) -> StoreFuture<'_, Registration>;

    /// Everyone registered now, ordered by role, then worker id.
    fn list(&self) -> StoreFuture<'_, Vec<WorkerRecord>>;

    /// Changes: first a [`RegistryEvent::Snapshot`] of everyone registered, then `Up` /
    /// `Down` as they happen. If the watch is cancelled or compacted, or the connection
    /// breaks, it lists again and emits a fresh `Snapshot`, then resumes from that
    /// revision: no change is ever silently missed. The stream never ends by itself; drop
    /// it to stop watching.
    fn watch(&self) -> BoxStream<'static, RegistryEvent>;
}

/// What an implementation does when a [`Registration`] ends.
pub(crate) trait RegistrationHandle: Send + Sync {
    /// Stops keep-alives and deletes the key now.
    fn revoke(self: Box<Self>) -> BoxFuture<'static, ()>;
    /// Stops keep-alives only: the key expires after its ttl.
    fn abandon(self: Box<Self>);
    /// Drop without an explicit end: revoke in the background, best effort.
    fn revoke_in_background(self: Box<Self>);
}

/// A live registration. Hold it for as long as the worker serves.
///
/// - [`Registration::revoke`]: deletes the key now (a clean shutdown).
/// - [`Registration::abandon`]: stops keep-alives without revoking; the key expires after
///   the ttl. This is what a frozen or crashed process looks like; tests use it.
/// - Drop: revokes in the background, best effort (needs a tokio runtime; without one the
///   key simply expires).
#[must_use = "dropping a Registration revokes it"]
pub struct Registration {
    key: String,
    handle: Option<Box<dyn RegistrationHandle>>,
}

impl Registration {
    pub(crate) fn new(key: String, handle: Box<dyn RegistrationHandle>) -> Registration {
        Registration {
            key,
            handle: Some(handle),
        }
    }

    /// The registry key, `{prefix}/workers/<role>/<worker-id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops keep-alives and deletes the key now; returns once it is deleted (or deleting
    /// failed, which is logged: then the key expires after its ttl).
    pub async fn revoke(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.revoke().await;
        }
    }

    /// Stops keep-alives without revoking: the key expires after the ttl.
    pub fn abandon(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abandon();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.revoke_in_background();
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
