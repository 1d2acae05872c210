//! Leader election on etcd's election API (`v3election`: Campaign / Leader / Resign).

use super::{Election, Leadership, LeadershipHandle};
use crate::error::{StoreError, StoreFuture};
use crate::etcd::{KeepAlive, OP_TIMEOUT, Refresh, bounded, ttl_secs};
use crate::store::Fence;
use agentmesh_proto::Backoff;
use etcd_client::{Client, EventType, LeaderKey, ResignOptions, WatchOptions};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Retry delays of a campaign that failed for a transient reason. Capped low: a campaign
/// is two cheap requests, and after an etcd outage every coordinator's campaign has
/// failed, so the cap is how long the mesh may stay leaderless once etcd is back.
const CAMPAIGN_RETRY_FIRST: Duration = Duration::from_millis(200);
const CAMPAIGN_RETRY_CAP: Duration = Duration::from_secs(1);

/// How long a withdrawn candidacy keeps trying to revoke its lease while etcd does not
/// answer (then the next campaign does it).
const WITHDRAW_PATIENCE: Duration = Duration::from_secs(60);

/// Leader election among coordinators on etcd. Cheap to clone.
///
/// Each campaign grants its own lease of `ttl` and keeps it alive from a background task
/// (etcd's election service does not: it orphans the session it creates). The winner's key
/// is `<name>/<lease id in hex>`; its create revision is the fence: a later winner's key
/// has a higher one, and a lost key has none.
///
/// Two background tasks watch a leadership, both able to declare it lost:
/// - the keeper refreshes the lease every ttl/3; leadership is lost when etcd says the
///   lease is gone, or when no refresh was answered for 90% of the ttl counted from the
///   last answered request's *send* time (the server's expiry is never earlier than a
///   whole ttl after that, so the old leader stops before etcd can elect a new one);
/// - the key watcher watches the leader key and declares loss when it is deleted.
#[derive(Clone)]
pub struct EtcdElection {
    client: Client,
    name: String,
    ttl: Duration,
    op_timeout: Duration,
    /// Leases of withdrawn candidacies that etcd has not confirmed revoked yet.
    ///
    /// Why: a campaign broken by an etcd outage leaves its key in the election; etcd,
    /// back, renews every lease for a fresh ttl, so that key (the oldest) names this
    /// coordinator as leader while it does not lead, and this coordinator's next
    /// campaign would queue behind its own ghost. Every campaign first revokes these.
    orphans: Arc<std::sync::Mutex<Vec<i64>>>,
}

/// What the background tasks of one candidacy are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Keep the lease alive.
    Run,
    /// Stop refreshing, but keep watching: loss is still reported when the lease expires.
    Abandon,
    /// Stop everything (resigned or revoked by us).
    Release,
}

impl EtcdElection {
    /// An election named `name` (e.g. [`crate::DEFAULT_ELECTION`]) whose leaders hold a
    /// lease of `ttl` (whole seconds in etcd, rounded up; at least 1 s).
    pub fn new(client: Client, name: &str, ttl: Duration) -> EtcdElection {
        EtcdElection {
            client,
            name: name.to_string(),
            ttl,
            op_timeout: OP_TIMEOUT,
            orphans: Arc::new(std::sync::Mutex::new(Vec::new())),
        }
    }

    /// How long one etcd request may take (default 5 s). The campaign itself is not
    /// bounded: it waits for the current leader.
    pub fn with_op_timeout(mut self, timeout: Duration) -> EtcdElection {
        self.op_timeout = timeout;
        self
    }

    /// Revokes the leases of earlier candidacies that may still hold a key here.
    async fn revoke_orphans(&self) -> Result<(), StoreError> {
        let orphans: Vec<i64> = self.orphans.lock().expect("orphans lock").clone();
        let mut leases = self.client.lease_client();
        for lease in orphans {
            match bounded(
                "revoke a withdrawn candidacy",
                self.op_timeout,
                leases.revoke(lease),
            )
            .await
            {
                // Revoked, or already gone (etcd answers "lease not found").
                Ok(_) | Err(StoreError::Backend(_)) => {
                    self.orphans
                        .lock()
                        .expect("orphans lock")
                        .retain(|l| *l != lease);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn campaign_once(&self, value: &str) -> Result<Leadership, StoreError> {
        self.revoke_orphans().await?;
        let mut leases = self.client.lease_client();
        let granted_at = Instant::now();
        let grant = bounded(
            "grant election lease",
            self.op_timeout,
            leases.grant(ttl_secs(self.ttl), None),
        )
        .await?;
        let lease = grant.id();
        let ttl = Duration::from_secs(grant.ttl().max(1) as u64);
        let lost = Arc::new(watch::channel(false).0);
        let (order, order_rx) = watch::channel(Order::Run);
        // Until the campaign is won, dropping this (an error, or the caller giving up)
        // withdraws the candidacy.
        let mut candidacy = Candidacy {
            client: self.client.clone(),
            lease,
            order: Some(order),
            op_timeout: self.op_timeout,
            orphans: self.orphans.clone(),
        };
        tokio::spawn(keep_leading(
            self.client.clone(),
            lease,
            ttl,
            granted_at,
            self.op_timeout,
            lost.clone(),
            order_rx.clone(),
        ));
        let mut lost_rx = lost.subscribe();
        let mut elections = self.client.election_client();
        let won = tokio::select! {
            won = elections.campaign(self.name.as_str(), value, lease) => {
                won.map_err(|e| StoreError::from_etcd("campaign", e))?
            }
            _ = lost_rx.wait_for(|lost| *lost) => {
                return Err(StoreError::Unavailable(format!(
                    "lease {lease:x} expired while campaigning for {}", self.name
                )));
            }
        };
        let leader_key = won
            .leader()
            .cloned()
            .ok_or_else(|| StoreError::Backend("campaign answer without a leader key".into()))?;
        // The lease may have expired between winning and now; never hand out a fence
        // that is already stale.
        let mut kv = self.client.kv_client();
        let check = bounded(
            "check leader key",
            self.op_timeout,
            kv.get(leader_key.key(), None),
        )
        .await?;
        let held = check
            .kvs()
            .first()
            .is_some_and(|kv| kv.create_revision() == leader_key.rev());
        if !held {
            return Err(StoreError::Unavailable(
                "won the election, but the leader key was already gone".into(),
            ));
        }
        let from = check.header().map_or(0, |h| h.revision()) + 1;
        tokio::spawn(watch_leader_key(
            self.client.clone(),
            leader_key.key().to_vec(),
            from,
            self.op_timeout,
            lost.clone(),
            order_rx,
        ));
        let fence = Fence::Leader {
            key: leader_key.key().to_vec(),
            create_revision: leader_key.rev(),
        };
        tracing::info!(
            "leading {} as {value:?} (key {}, create_revision {}, lease {lease:x})",
            self.name,
            String::from_utf8_lossy(leader_key.key()),
            leader_key.rev()
        );
        let handle = EtcdLeadership {
            client: self.client.clone(),
            name: self.name.clone(),
            leader_key,
            lease,
            op_timeout: self.op_timeout,
            order: candidacy.order.take().expect("set above"),
            lost: lost.clone(),
        };
        Ok(Leadership::new(
            fence,
            value.to_string(),
            lost.subscribe(),
            Box::new(handle),
        ))
    }
}

/// A candidacy not yet won: dropping it stops its keep-alive and revokes its lease. If
/// etcd cannot be told now, the lease is remembered and the next campaign revokes it
/// first ([`EtcdElection::revoke_orphans`]).
struct Candidacy {
    client: Client,
    lease: i64,
    order: Option<watch::Sender<Order>>,
    op_timeout: Duration,
    orphans: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl Drop for Candidacy {
    fn drop(&mut self) {
        let Some(order) = self.order.take() else {
            return;
        };
        let _ = order.send(Order::Release);
        let lease = self.lease;
        self.orphans.lock().expect("orphans lock").push(lease);
        let (client, op_timeout, orphans) =
            (self.client.clone(), self.op_timeout, self.orphans.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut leases = client.lease_client();
                let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
                let give_up = Instant::now() + WITHDRAW_PATIENCE;
                loop {
                    match bounded("withdraw candidacy", op_timeout, leases.revoke(lease)).await {
                        // Revoked, or already gone ("lease not found").
                        Ok(_) | Err(StoreError::Backend(_)) => {
                            orphans
                                .lock()
                                .expect("orphans lock")
                                .retain(|l| *l != lease);
                            return;
                        }
                        Err(_) if Instant::now() < give_up => {
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    }
}

struct EtcdLeadership {
    client: Client,
    name: String,
    leader_key: LeaderKey,
    lease: i64,
    op_timeout: Duration,
    order: watch::Sender<Order>,
    lost: Arc<watch::Sender<bool>>,
}

impl EtcdLeadership {
    async fn resign_now(self) {
        let _ = self.order.send(Order::Release);
        // Whatever happens below, this process stops leading now.
        self.lost.send_replace(true);
        let mut elections = self.client.election_client();
        let options = ResignOptions::new().with_leader(self.leader_key.clone());
        let resigned = bounded("resign", self.op_timeout, elections.resign(Some(options))).await;
        if let Err(e) = &resigned {
            tracing::warn!(
                "resigning {} failed: {e}; revoking the lease instead",
                self.name
            );
        }
        // Revoking also removes the key if resign did not; then nothing of ours lingers.
        let mut leases = self.client.lease_client();
        let revoked = bounded(
            "revoke election lease",
            self.op_timeout,
            leases.revoke(self.lease),
        )
        .await;
        match (resigned, revoked) {
            (Err(_), Err(e)) => tracing::warn!(
                "revoking election lease {:x} failed too: {e}; leadership of {} ends when it expires",
                self.lease,
                self.name
            ),
            _ => tracing::info!("resigned leadership of {}", self.name),
        }
    }
}

impl LeadershipHandle for EtcdLeadership {
    fn resign(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.resign_now())
    }

    fn abandon(self: Box<Self>) {
        tracing::info!(
            "leadership of {}: keep-alives stopped, it expires with lease {:x}",
            self.name,
            self.lease
        );
        let _ = self.order.send(Order::Abandon);
    }

    fn resign_in_background(self: Box<Self>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.resign_now());
            }
            Err(_) => {
                // Nothing to resign with: stop refreshing, the lease expires by itself.
                let _ = self.order.send(Order::Release);
                self.lost.send_replace(true);
            }
        }
    }
}

/// Keeps the leader's lease alive and declares loss when it cannot be sure of it anymore.
async fn keep_leading(
    client: Client,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    op_timeout: Duration,
    lost: Arc<watch::Sender<bool>>,
    mut order: watch::Receiver<Order>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut keeper = KeepAlive::new(
        &client,
        lease,
        period.max(Duration::from_millis(300)).min(op_timeout),
    );
    let mut backoff = Backoff::new(Duration::from_millis(50), period);
    // The server's expiry is at least `ttl` after it handled our last answered request,
    // which was after we sent it. A tenth of the ttl is kept as a margin for timer and
    // scheduling delays here, so that this process stops before etcd can elect another.
    let horizon = ttl - ttl / 10;
    let mut deadline = granted_at + horizon;
    let mut delay = period;
    let mut refreshing = true;
    // An abandoned leadership drops its order sender; the keeper then goes on watching
    // the deadline in the mode it was last told.
    let mut orders_open = true;
    loop {
        if *lost.borrow() {
            return;
        }
        tokio::select! {
            biased;
            changed = order.changed(), if orders_open => {
                orders_open = changed.is_ok();
                match *order.borrow_and_update() {
                    Order::Release => return,
                    Order::Abandon => refreshing = false,
                    Order::Run => {}
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    "leadership lost: no keep-alive of lease {lease:x} was answered within its {:.1}s ttl (etcd unreachable, or this process stalled)",
                    ttl.as_secs_f64()
                );
                lost.send_replace(true);
                return;
            }
            _ = tokio::time::sleep(delay), if refreshing => {
                let sent = Instant::now();
                let result = tokio::select! {
                    result = keeper.refresh() => Some(result),
                    _ = tokio::time::sleep_until(deadline) => None,
                };
                match result {
                    // The deadline passed meanwhile; the next turn reports it.
                    None => {}
                    Some(Ok(Refresh::Alive)) => {
                        deadline = sent + horizon;
                        delay = period;
                        backoff.reset();
                    }
                    Some(Ok(Refresh::Expired)) => {
                        tracing::warn!("leadership lost: lease {lease:x} expired or was revoked");
                        lost.send_replace(true);
                        return;
                    }
                    Some(Err(e)) => {
                        delay = backoff.next_delay();
                        tracing::warn!(
                            "keep-alive of leader lease {lease:x} failed: {e}; retrying in {:.2}s (leadership ends in {:.2}s without one)",
                            delay.as_secs_f64(),
                            deadline.saturating_duration_since(Instant::now()).as_secs_f64()
                        );
                    }
                }
            }
        }
    }
}

/// Declares loss when the leader key is deleted (resigned elsewhere, lease revoked or
/// expired). Connection trouble only rebuilds the watch; the keeper owns the deadline.
async fn watch_leader_key(
    client: Client,
    key: Vec<u8>,
    mut from_revision: i64,
    op_timeout: Duration,
    lost: Arc<watch::Sender<bool>>,
    mut order: watch::Receiver<Order>,
) {
    let name = String::from_utf8_lossy(&key).into_owned();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut checked = true;
    loop {
        let watch_once = async {
            let mut kv = client.kv_client();
            if !checked {
                // After a broken watch, events may have been missed: look at the key.
                let resp =
                    bounded("check leader key", op_timeout, kv.get(key.clone(), None)).await?;
                if resp.kvs().is_empty() {
                    return Ok::<bool, StoreError>(true);
                }
                from_revision = resp.header().map_or(0, |h| h.revision()) + 1;
            }
            let mut watcher = client.watch_client();
            let options = WatchOptions::new().with_start_revision(from_revision);
            let mut stream = bounded(
                "watch leader key",
                op_timeout,
                watcher.watch(key.clone(), Some(options)),
            )
            .await?;
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp
                            .events()
                            .iter()
                            .any(|e| e.event_type() == EventType::Delete)
                        {
                            return Ok(true);
                        }
                        if resp.canceled() {
                            return Err(StoreError::Unavailable("watch cancelled".into()));
                        }
                    }
                    Ok(None) => return Err(StoreError::Unavailable("watch ended".into())),
                    Err(e) => return Err(StoreError::from_etcd("watch leader key", e)),
                }
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = released(&mut order) => return,
            _ = wait_lost(&lost) => return,
            outcome = watch_once => outcome,
        };
        match outcome {
            Ok(true) => {
                if !*lost.borrow() {
                    tracing::warn!("leadership lost: leader key {name} was deleted");
                }
                lost.send_replace(true);
                return;
            }
            Ok(false) => {}
            Err(e) => {
                checked = false;
                let delay = backoff.next_delay();
                tracing::debug!("watch of leader key {name} broke: {e}; again in {delay:?}");
                tokio::select! {
                    _ = released(&mut order) => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Resolves once told to release; never when the orders end otherwise (an abandoned
/// leadership is watched until it expires).
async fn released(order: &mut watch::Receiver<Order>) {
    if order.wait_for(|o| *o == Order::Release).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn wait_lost(lost: &watch::Sender<bool>) {
    let mut rx = lost.subscribe();
    let _ = rx.wait_for(|lost| *lost).await;
}

impl Election for EtcdElection {
    fn campaign<'a>(&'a self, value: &'a str) -> StoreFuture<'a, Leadership> {
        Box::pin(async move {
            let mut backoff = Backoff::new(CAMPAIGN_RETRY_FIRST, CAMPAIGN_RETRY_CAP);
            loop {
                match self.campaign_once(value).await {
                    Ok(leadership) => return Ok(leadership),
                    Err(e) if e.is_retryable() => {
                        let delay = backoff.next_delay();
                        tracing::warn!(
                            "campaign for {} failed: {e}; retrying in {:.1}s",
                            self.name,
                            delay.as_secs_f64()
                        );
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn leader(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            Ok(agentmesh_discovery::leader::election_value(
                &self.client,
                &self.name,
                self.op_timeout,
            )
            .await?)
        })
    }
}
