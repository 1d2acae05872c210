//! A worker's registration: its record at `{prefix}/workers/<role>/<worker-id>`, under a
//! lease kept alive until the worker leaves.

use crate::connect::bounded;
use crate::error::DiscoveryError;
use crate::keys;
use crate::lease::{KeepAlive, Refresh, ttl_secs};
use agentmesh_proto::Backoff;
use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a worker advertises: stored as JSON at `{prefix}/workers/<role>/<worker-id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub role: String,
    pub worker_id: String,
    /// How many sessions it takes at once.
    pub capacity: u32,
    /// The worker's build version, for mixed-version rollouts.
    pub version: String,
    /// Where it can be reached (informational; workers dial the coordinator).
    pub address: String,
    /// Hex of the Ed25519 key it signs its results with (what its Hello announces), so
    /// the keys of a cluster's workers are published in etcd; empty if unsigned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
}

/// A live registration in etcd. Hold it for as long as the worker serves.
///
/// A background task keeps the lease alive (three refreshes per TTL). It survives outages:
/// it retries keep-alives with back-off and, if the lease expired meanwhile, grants a new
/// lease and puts the key again (each step logged).
///
/// - [`WorkerLease::revoke`]: deletes the key now (a clean shutdown).
/// - [`WorkerLease::abandon`]: stops keep-alives without revoking; the key expires after
///   the TTL, as with a frozen or crashed process. Tests use it.
/// - Drop: revokes in the background, best effort (needs a tokio runtime; without one the
///   key simply expires).
#[must_use = "dropping a WorkerLease revokes it"]
pub struct WorkerLease {
    key: String,
    inner: Option<Inner>,
}

struct Inner {
    client: Client,
    key: String,
    op_timeout: Duration,
    /// The lease the key is under now (a re-registration replaces it).
    current: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkerLease {
    /// Grants a lease of `ttl` (whole seconds, rounded up), puts `record` at
    /// `{prefix}/workers/<role>/<worker-id>` under it, and starts keeping it alive. Each
    /// etcd request may take `op_timeout` ([`crate::OP_TIMEOUT`] is the usual choice).
    ///
    /// Role and worker id must be non-empty and hold no '/' ([`DiscoveryError::Invalid`]).
    pub async fn register(
        client: &Client,
        prefix: &str,
        record: &WorkerRecord,
        ttl: Duration,
        op_timeout: Duration,
    ) -> Result<WorkerLease, DiscoveryError> {
        keys::check_segment("role", &record.role).map_err(DiscoveryError::Invalid)?;
        keys::check_segment("worker id", &record.worker_id).map_err(DiscoveryError::Invalid)?;
        let key = keys::worker_key(prefix, &record.role, &record.worker_id);
        let value = serde_json::to_string(record)
            .map_err(|e| DiscoveryError::Backend(format!("encode worker record: {e}")))?;
        let current = Arc::new(AtomicI64::new(0));
        let lease = grant_and_put(client, &key, &value, ttl, op_timeout, &current).await?;
        tracing::info!(
            "worker key {key}: registered under lease {lease:x} (ttl {:.1}s)",
            ttl.as_secs_f64()
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(keep_registered(
            client.clone(),
            key.clone(),
            value,
            ttl,
            op_timeout,
            current.clone(),
            stop_rx,
        ));
        Ok(WorkerLease {
            key: key.clone(),
            inner: Some(Inner {
                client: client.clone(),
                key,
                op_timeout,
                current,
                stop,
                task,
            }),
        })
    }

    /// The registry key, `{prefix}/workers/<role>/<worker-id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops keep-alives and deletes the key now; returns once it is deleted (or deleting
    /// failed, which is logged: then the key expires after its TTL).
    pub async fn revoke(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.revoke().await;
        }
    }

    /// Stops keep-alives without revoking: the key expires after the TTL.
    pub fn abandon(mut self) {
        if let Some(inner) = self.inner.take() {
            tracing::info!(
                "worker key {}: keep-alives stopped, the key expires with its lease",
                inner.key
            );
            let _ = inner.stop.send(true);
        }
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(inner.revoke());
            }
            Err(_) => {
                // No runtime to revoke on: stop keep-alives; the key expires after its TTL.
                let _ = inner.stop.send(true);
            }
        }
    }
}

impl std::fmt::Debug for WorkerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLease")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Inner {
    async fn revoke(self) {
        let _ = self.stop.send(true);
        // Wait for the task, so it cannot re-register behind our back.
        let _ = self.task.await;
        let lease = self.current.load(Ordering::SeqCst);
        let mut leases = self.client.lease_client();
        let what = format!("revoke lease {lease:x} of {}", self.key);
        match bounded(&what, self.op_timeout, leases.revoke(lease)).await {
            Ok(_) => tracing::info!("worker key {}: revoked", self.key),
            Err(e) => tracing::warn!(
                "worker key {}: could not revoke ({e}); it expires with its lease",
                self.key
            ),
        }
    }
}

/// Grants a lease of `ttl` and puts `key` under it. The new lease id is published to
/// `current` before the put, so whoever revokes `current` also removes the key.
async fn grant_and_put(
    client: &Client,
    key: &str,
    value: &str,
    ttl: Duration,
    op_timeout: Duration,
    current: &AtomicI64,
) -> Result<i64, DiscoveryError> {
    let mut lease = client.lease_client();
    let what = format!("grant lease for {key}");
    let id = bounded(&what, op_timeout, lease.grant(ttl_secs(ttl), None))
        .await?
        .id();
    current.store(id, Ordering::SeqCst);
    let mut kv = client.kv_client();
    let what = format!("register {key}");
    let put = kv.put(key, value, Some(PutOptions::new().with_lease(id)));
    if let Err(e) = bounded(&what, op_timeout, put).await {
        // Do not leave an unused lease behind; if this fails too, it expires by itself.
        let _ = bounded(&what, op_timeout, lease.revoke(id)).await;
        return Err(e);
    }
    Ok(id)
}

/// The background task of one registration: keep the lease alive, re-register after an
/// expiry, until told to stop.
async fn keep_registered(
    client: Client,
    key: String,
    value: String,
    ttl: Duration,
    op_timeout: Duration,
    current: Arc<AtomicI64>,
    mut stop: watch::Receiver<bool>,
) {
    // Three refreshes per ttl: one lost answer does not let the lease expire.
    let period = (ttl / 3).max(Duration::from_millis(100));
    let refresh_timeout = period.max(Duration::from_millis(500)).min(op_timeout);
    let mut lease = current.load(Ordering::SeqCst);
    let mut keeper = KeepAlive::new(&client, lease, refresh_timeout);
    let mut backoff = Backoff::new(Duration::from_millis(100), period);
    let mut failing = false;
    let mut delay = period;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let step = async {
            match keeper.refresh().await {
                Ok(Refresh::Alive) => {
                    if failing {
                        tracing::info!(
                            "worker key {key}: keep-alive of lease {lease:x} works again"
                        );
                    }
                    failing = false;
                    backoff.reset();
                    delay = period;
                }
                Ok(Refresh::Expired) => {
                    tracing::warn!(
                        "worker key {key}: lease {lease:x} is gone (expired during an outage longer than the {:.1}s ttl, or revoked); granting a new lease and registering again",
                        ttl.as_secs_f64()
                    );
                    match grant_and_put(&client, &key, &value, ttl, op_timeout, &current).await {
                        Ok(id) => {
                            tracing::info!("worker key {key}: registered again under lease {id:x}");
                            lease = id;
                            keeper = KeepAlive::new(&client, id, refresh_timeout);
                            failing = false;
                            backoff.reset();
                            delay = period;
                        }
                        Err(e) => {
                            failing = true;
                            delay = backoff.next_delay();
                            tracing::warn!(
                                "worker key {key}: registering again failed: {e}; retrying in {:.1}s",
                                delay.as_secs_f64()
                            );
                        }
                    }
                }
                Err(e) => {
                    failing = true;
                    delay = backoff.next_delay();
                    tracing::warn!(
                        "worker key {key}: keep-alive of lease {lease:x} failed: {e}; retrying in {:.1}s",
                        delay.as_secs_f64()
                    );
                }
            }
        };
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            _ = step => {}
        }
    }
}
