//! Which coordinator leads. Only the leader runs sessions, and every store write it makes
//! carries its [`Leadership::fence`].
//!
//! # Detecting loss
//!
//! A leader must stop acting as one as soon as it may have lost: hold
//! [`Leadership::lost`] in a `select!` beside the work (or poll [`Leadership::is_lost`]).
//! It resolves when the lease expired or was revoked, when keep-alives have failed for a
//! whole TTL (etcd unreachable: the lease may be expiring on the server right now), when
//! the leader key was deleted, or on resign. Fencing is the backstop for the moments in
//! between: a write with a stale fence is [`crate::StoreError::Fenced`].
//!
//! # Layout
//!
//! - [`Election`], [`Leadership`]: the seam.
//! - `sole`: [`SoleLeader`], the embedded mode's trivial election.
//! - `etcd_election`: [`EtcdElection`], etcd's election API with its own lease.

use crate::error::StoreFuture;
use crate::store::Fence;
use futures::future::BoxFuture;
use std::future::Future;
use tokio::sync::watch;

mod etcd_election;
mod sole;

pub use etcd_election::EtcdElection;
pub use sole::SoleLeader;

/// Leader election among coordinators. Object-safe.
pub trait Election: Send + Sync + 'static {
    /// Campaigns for leadership with `value` (the candidate's advertised gRPC address)
    /// and returns once this candidate leads. Waits as long as someone else leads; drop
    /// the future to give up (the candidacy is withdrawn). Transient etcd failures are
    /// retried inside (logged); only a non-retryable failure returns `Err`.
    fn campaign<'a>(&'a self, value: &'a str) -> StoreFuture<'a, Leadership>;

    /// The current leader's value, if anyone leads.
    fn leader(&self) -> StoreFuture<'_, Option<String>>;
}

/// What an implementation does when a [`Leadership`] ends.
pub(crate) trait LeadershipHandle: Send + Sync {
    fn resign(self: Box<Self>) -> BoxFuture<'static, ()>;
    fn abandon(self: Box<Self>);
    fn resign_in_background(self: Box<Self>);
}

/// This process leads. Keep it for as long as it does; dropping it resigns in the
/// background.
#[must_use = "dropping a Leadership resigns it"]
pub struct Leadership {
    /// The guard for every store write made as this leader.
    pub fence: Fence,
    value: String,
    lost: watch::Receiver<bool>,
    handle: Option<Box<dyn LeadershipHandle>>,
}

impl Leadership {
    pub(crate) fn new(
        fence: Fence,
        value: String,
        lost: watch::Receiver<bool>,
        handle: Box<dyn LeadershipHandle>,
    ) -> Leadership {
        Leadership {
            fence,
            value,
            lost,
            handle: Some(handle),
        }
    }

    /// The value this leader campaigned with.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Resolves when leadership is lost: lease expired or revoked, keep-alive failed past
    /// the TTL, leader key deleted, or resigned. Independent of `self` (`'static`), so it
    /// can be taken before [`Leadership::resign`] / [`Leadership::abandon`] and awaited
    /// anywhere; once lost, it resolves at once.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            // A closed channel means whatever watched the leadership has ended: that
            // only happens after loss, so it counts as lost too.
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }

    /// True once leadership is lost (see [`Leadership::lost`]).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Gives leadership up now: another candidate can take over at once.
    pub async fn resign(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.resign().await;
        }
    }

    /// Stops keep-alives without resigning: leadership then expires after the TTL, as with
    /// a frozen process. For tests; [`Leadership::lost`] still fires when it expires.
    pub fn abandon(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abandon();
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.resign_in_background();
        }
    }
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("fence", &self.fence)
            .field("value", &self.value)
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}
