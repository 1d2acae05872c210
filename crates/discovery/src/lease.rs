//! Keeping one etcd lease alive: what a worker's registration and a leader's election
//! lease both do.

use crate::connect::timed_out;
use crate::error::DiscoveryError;
use etcd_client::{Client, LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use std::time::Duration;

/// Lease TTLs are whole seconds in etcd; round up so a lease never lives shorter than
/// asked, and at least 1 s.
pub fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1) as i64
}

/// What one keep-alive round trip found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// etcd extended the lease.
    Alive,
    /// etcd no longer knows the lease: it expired or was revoked, with its keys.
    Expired,
}

/// Keeps one lease alive over one keep-alive stream, reopened after any failure.
pub struct KeepAlive {
    lease: LeaseClient,
    id: i64,
    timeout: Duration,
    conn: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl KeepAlive {
    /// A keeper of lease `id`; each [`KeepAlive::refresh`] waits at most `timeout`.
    pub fn new(client: &Client, id: i64, timeout: Duration) -> KeepAlive {
        KeepAlive {
            lease: client.lease_client(),
            id,
            timeout,
            conn: None,
        }
    }

    /// One keep-alive request and its answer, bounded by the timeout. An `Err` is
    /// connection trouble (the stream is dropped and reopened next time); the lease may
    /// still be alive.
    pub async fn refresh(&mut self) -> Result<Refresh, DiscoveryError> {
        let what = format!("keep-alive of lease {:x}", self.id);
        let Some((keeper, stream)) = self.conn.as_mut() else {
            // Opening the stream sends one keep-alive and waits for its answer.
            return match tokio::time::timeout(self.timeout, self.lease.keep_alive(self.id)).await {
                Ok(Ok(conn)) => {
                    self.conn = Some(conn);
                    Ok(Refresh::Alive)
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => {
                    Ok(Refresh::Expired)
                }
                Ok(Err(e)) => Err(DiscoveryError::from_etcd(&what, e)),
                Err(_) => Err(timed_out(&what, self.timeout)),
            };
        };
        let round_trip = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        let result = tokio::time::timeout(self.timeout, round_trip).await;
        match result {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => Ok(Refresh::Alive),
            Ok(Ok(Some(_))) => {
                self.conn = None;
                Ok(Refresh::Expired)
            }
            Ok(Ok(None)) => {
                self.conn = None;
                Err(DiscoveryError::Unavailable(format!(
                    "{what}: stream closed by etcd"
                )))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(DiscoveryError::from_etcd(&what, e))
            }
            Err(_) => {
                self.conn = None;
                Err(timed_out(&what, self.timeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }
}
