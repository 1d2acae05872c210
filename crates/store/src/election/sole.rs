//! The embedded mode's election: the one process always leads.

use super::{Election, Leadership, LeadershipHandle};
use crate::error::{StoreError, StoreFuture};
use crate::store::Fence;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Always leads at once with [`Fence::Unfenced`]; leadership is never lost except by
/// resigning (or dropping) it. `abandon` behaves like `resign`: a single process has no
/// one to expire its leadership to.
#[derive(Clone, Default)]
pub struct SoleLeader {
    /// The latest campaign's number and value.
    current: Arc<Mutex<Option<(u64, String)>>>,
    campaigns: Arc<AtomicU64>,
}

impl SoleLeader {
    pub fn new() -> Self {
        Self::default()
    }
}

struct SoleHandle {
    current: Arc<Mutex<Option<(u64, String)>>>,
    campaign: u64,
    lost: watch::Sender<bool>,
}

impl SoleHandle {
    fn end(self) {
        let mut current = self.current.lock().expect("election lock");
        if current.as_ref().is_some_and(|(n, _)| *n == self.campaign) {
            *current = None;
        }
        self.lost.send_replace(true);
    }
}

impl LeadershipHandle for SoleHandle {
    fn resign(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.end();
        Box::pin(async {})
    }

    fn abandon(self: Box<Self>) {
        self.end();
    }

    fn resign_in_background(self: Box<Self>) {
        self.end();
    }
}

impl Election for SoleLeader {
    fn campaign<'a>(&'a self, value: &'a str) -> StoreFuture<'a, Leadership> {
        Box::pin(async move {
            let campaign = self.campaigns.fetch_add(1, Ordering::SeqCst) + 1;
            *self.current.lock().expect("election lock") = Some((campaign, value.to_string()));
            let (lost, lost_rx) = watch::channel(false);
            let handle = SoleHandle {
                current: self.current.clone(),
                campaign,
                lost,
            };
            Ok::<_, StoreError>(Leadership::new(
                Fence::Unfenced,
                value.to_string(),
                lost_rx,
                Box::new(handle),
            ))
        })
    }

    fn leader(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            let current = self.current.lock().expect("election lock");
            Ok(current.as_ref().map(|(_, v)| v.clone()))
        })
    }
}
