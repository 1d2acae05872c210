//! Connecting to etcd, and what the etcd implementations share: bounded calls, back-off,
//! key ranges.

use crate::error::StoreError;
use etcd_client::{Client, ConnectOptions, LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use std::future::Future;
use std::time::Duration;

/// How long one connection attempt may take (TCP connect and the first answer).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one etcd request may take before it counts as [`StoreError::Unavailable`].
///
/// The client has no per-request timeout of its own (it would also cut off a campaign
/// that legitimately waits for the current leader), and with every endpoint down a request
/// waits for a connection forever; every unary call is therefore bounded here.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 keep-alive ping interval. etcd refuses pings more often than every 5 s
/// (`--grpc-keepalive-min-time`) and pings on an idle connection, so pings go every 10 s
/// and only while a stream (a watch, a keep-alive) is open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Retry delays of [`connect_etcd_with_retry`]: doubling from the first to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// Connects to etcd and proves it answers (the client itself connects lazily).
///
/// Unreachable endpoints give [`StoreError::Unavailable`] after [`CONNECT_TIMEOUT`].
pub async fn connect_etcd(endpoints: &[String]) -> Result<Client, StoreError> {
    if endpoints.is_empty() {
        return Err(StoreError::Backend("no etcd endpoints given".into()));
    }
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(false)
        .with_tcp_keepalive(Duration::from_secs(30));
    let what = format!("connect to etcd at {}", endpoints.join(","));
    let mut client = bounded(
        &what,
        CONNECT_TIMEOUT,
        Client::connect(endpoints, Some(options)),
    )
    .await?;
    bounded(&what, CONNECT_TIMEOUT, client.status()).await?;
    Ok(client)
}

/// Connects to etcd, retrying with capped exponential back-off (0.25 s doubling to 10 s)
/// until it answers or `shutdown` resolves. Every failed attempt is logged at error level:
/// "etcd at X unreachable: ...; retrying in Ns". Returns `None` on shutdown. Never panics.
pub async fn connect_etcd_with_retry(
    endpoints: &[String],
    shutdown: impl Future<Output = ()>,
) -> Option<Client> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut delay = RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => return None,
            result = connect_etcd(endpoints) => match result {
                Ok(client) => {
                    if failures > 0 {
                        tracing::info!(
                            "connected to etcd at {} after {failures} failed attempt(s)",
                            endpoints.join(",")
                        );
                    }
                    return Some(client);
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(
                        "etcd at {} unreachable: {e}; retrying in {:.1}s",
                        endpoints.join(","),
                        delay.as_secs_f64()
                    );
                }
            },
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_CAP);
    }
}

/// Runs one etcd call with a deadline; a missed deadline or a transport failure is
/// [`StoreError::Unavailable`].
pub(crate) async fn bounded<T>(
    what: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::from_etcd(what, e)),
        Err(_) => Err(timed_out(what, timeout)),
    }
}

/// The end of the key range that holds every key starting with `prefix` (etcd's
/// `WithPrefix`): the prefix with its last byte below 0xff incremented.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

/// Trims trailing slashes so `{prefix}/sessions/...` never holds `//`.
pub(crate) fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_string()
}

/// A key segment must not be empty or contain '/', or one id's keys could fall inside
/// another's range.
pub(crate) fn check_segment(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.contains('/') {
        return Err(StoreError::Backend(format!(
            "{what} {value:?} cannot be an etcd key segment: it must be non-empty and hold no '/'"
        )));
    }
    Ok(())
}

/// Doubling back-off between `first` and `cap`, for the background tasks' retries.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// The delay to wait now; the one after it is twice as long, up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Lease TTLs are whole seconds in etcd; round up so a lease never lives shorter than
/// asked, and at least 1 s.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1) as i64
}

/// What one keep-alive round trip found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// etcd extended the lease.
    Alive,
    /// etcd no longer knows the lease: it expired or was revoked, with its keys.
    Expired,
}

/// Keeps one lease alive over one keep-alive stream, reopened after any failure.
pub(crate) struct KeepAlive {
    lease: LeaseClient,
    id: i64,
    timeout: Duration,
    conn: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl KeepAlive {
    pub(crate) fn new(client: &Client, id: i64, timeout: Duration) -> KeepAlive {
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
    pub(crate) async fn refresh(&mut self) -> Result<Refresh, StoreError> {
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
                Ok(Err(e)) => Err(StoreError::from_etcd(&what, e)),
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
                Err(StoreError::Unavailable(format!(
                    "{what}: stream closed by etcd"
                )))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(StoreError::from_etcd(&what, e))
            }
            Err(_) => {
                self.conn = None;
                Err(timed_out(&what, self.timeout))
            }
        }
    }
}

fn timed_out(what: &str, timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "{what}: etcd did not answer within {:.1}s",
        timeout.as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let got: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[tokio::test]
    async fn retry_gives_up_on_shutdown() {
        // Port 9 (discard) on loopback: nothing listens, every attempt fails fast.
        let endpoints = vec!["http://127.0.0.1:9".to_string()];
        let got =
            connect_etcd_with_retry(&endpoints, tokio::time::sleep(Duration::from_millis(600)))
                .await;
        assert!(got.is_none());
    }

    #[tokio::test]
    async fn connect_reports_an_unreachable_endpoint_as_unavailable() {
        let endpoints = vec!["http://127.0.0.1:9".to_string()];
        let err = connect_etcd(&endpoints)
            .await
            .err()
            .expect("nothing listens");
        assert!(err.is_retryable(), "{err}");
    }
}
