//! The one error type of every seam, and how etcd client failures map onto it.

use std::future::Future;
use std::pin::Pin;

/// The future every trait method returns: boxed so the traits stay object-safe
/// (`Arc<dyn SessionStore>`), `Send` so it can run on any tokio worker.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No session with this id.
    #[error("session {0} not found")]
    NotFound(String),
    /// The entries do not continue the stored transcript (a gap, a re-write of a stored
    /// seq, or a batch that is not consecutive). Nothing was written.
    #[error("append for session {id} starts at seq {got}, but the transcript holds {have} entries")]
    SeqGap { id: String, got: u64, have: u64 },
    /// The entries do not chain onto the stored head: an entry's chain hash is not the
    /// hash of it over the entry before it (ARCHITECTURE.md, the transcript's hash
    /// chain). Nothing was written.
    #[error(
        "append for session {id}: entry {seq} does not chain onto the stored transcript ({why})"
    )]
    Unchained { id: String, seq: u64, why: String },
    /// The writer is no longer the leader (its leader key is gone or belongs to someone
    /// else now). Nothing was written; the writer must stop acting as leader.
    #[error("write refused, this process no longer leads: {0}")]
    Fenced(String),
    /// One entry (or a header) is bigger than the backend takes in one request.
    #[error("{bytes} bytes exceed the store's limit of {limit} bytes for one entry")]
    TooLarge { bytes: usize, limit: usize },
    /// The backend did not answer in time or the connection broke. Retryable; a write
    /// may or may not have been applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: corrupt data, a refused request, a local I/O failure.
    #[error("store failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when the same call may succeed later without anything else changing: only
    /// [`StoreError::Unavailable`]. A `Fenced` writer must step down instead.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Maps an etcd client failure: transport trouble and the gRPC codes etcd uses for
    /// "no leader / timed out / connection gone" are retryable
    /// ([`agentmesh_discovery::error::is_transient`]), the rest are not.
    pub(crate) fn from_etcd(what: &str, e: etcd_client::Error) -> StoreError {
        StoreError::from(agentmesh_discovery::DiscoveryError::from_etcd(what, e))
    }
}

/// Discovery's failures keep their meaning: unavailable stays retryable, the rest is a
/// backend failure.
impl From<agentmesh_discovery::DiscoveryError> for StoreError {
    fn from(e: agentmesh_discovery::DiscoveryError) -> StoreError {
        use agentmesh_discovery::DiscoveryError as D;
        match e {
            D::Unavailable(m) => StoreError::Unavailable(m),
            D::Invalid(m) | D::Backend(m) => StoreError::Backend(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(StoreError::Unavailable("x".into()).is_retryable());
        for e in [
            StoreError::NotFound("s".into()),
            StoreError::SeqGap {
                id: "s".into(),
                got: 3,
                have: 1,
            },
            StoreError::Fenced("gone".into()),
            StoreError::TooLarge { bytes: 2, limit: 1 },
            StoreError::Backend("x".into()),
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn etcd_failures_keep_their_retryability() {
        let unavailable = etcd_client::Error::IoError(std::io::Error::other("reset"));
        assert!(StoreError::from_etcd("get", unavailable).is_retryable());
        let refused = etcd_client::Error::InvalidArgs("bad".into());
        assert!(!StoreError::from_etcd("get", refused).is_retryable());
        let invalid = agentmesh_discovery::DiscoveryError::Invalid("no endpoints".into());
        assert_eq!(
            StoreError::from(invalid),
            StoreError::Backend("no endpoints".into())
        );
    }
}
