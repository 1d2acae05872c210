//! Connecting to etcd (the helpers live in `agentmesh-discovery`, which workers and
//! `meshctl` use without this crate), and what the etcd implementations share: bounded
//! calls, key ranges.

use crate::error::StoreError;
use etcd_client::Client;
use std::future::Future;
use std::time::Duration;

pub use agentmesh_discovery::{CONNECT_TIMEOUT, OP_TIMEOUT, connect_etcd_with_retry};
pub(crate) use agentmesh_discovery::{KeepAlive, Refresh, ttl_secs};

/// Connects to etcd and proves it answers ([`agentmesh_discovery::connect_etcd`], with
/// its error as a [`StoreError`]): unreachable endpoints give [`StoreError::Unavailable`]
/// after [`CONNECT_TIMEOUT`].
pub async fn connect_etcd(endpoints: &[String]) -> Result<Client, StoreError> {
    Ok(agentmesh_discovery::connect_etcd(endpoints).await?)
}

/// Runs one etcd call with a deadline; a missed deadline or a transport failure is
/// [`StoreError::Unavailable`].
pub(crate) async fn bounded<T>(
    what: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    Ok(agentmesh_discovery::bounded(what, timeout, call).await?)
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
    agentmesh_discovery::keys::normalize_prefix(prefix)
}

/// A key segment must not be empty or contain '/', or one id's keys could fall inside
/// another's range.
pub(crate) fn check_segment(what: &str, value: &str) -> Result<(), StoreError> {
    agentmesh_discovery::keys::check_segment(what, value).map_err(StoreError::Backend)
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

    #[tokio::test]
    async fn connect_reports_an_unreachable_endpoint_as_unavailable() {
        let endpoints = vec!["http://127.0.0.1:9".to_string()];
        let err = connect_etcd(&endpoints)
            .await
            .err()
            .expect("nothing listens");
        assert!(err.is_retryable(), "{err}");
        let none = connect_etcd(&[]).await.err().expect("no endpoints");
        assert!(matches!(none, StoreError::Backend(_)), "{none:?}");
    }
}
