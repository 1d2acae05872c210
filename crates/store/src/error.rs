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
    /// "no leader / timed out / connection gone" are retryable, the rest are not.
    pub(crate) fn from_etcd(what: &str, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        use tonic::Code;
        match &e {
            E::TransportError(_) | E::IoError(_) => StoreError::Unavailable(format!("{what}: {e}")),
            // The client reports a broken keep-alive or watch request channel this way.
            E::LeaseKeepAliveError(_) | E::WatchError(_) => {
                StoreError::Unavailable(format!("{what}: {e}"))
            }
            E::GRpcStatus(status) => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                    StoreError::Unavailable(format!("{what}: {e}"))
                }
                // tonic reports a connection that broke mid-call as Unknown with a
                // transport message; etcd itself always sets a specific code.
                Code::Unknown if looks_like_transport(status.message()) => {
                    StoreError::Unavailable(format!("{what}: {e}"))
                }
                _ => StoreError::Backend(format!("{what}: {e}")),
            },
            _ => StoreError::Backend(format!("{what}: {e}")),
        }
    }
}

fn looks_like_transport(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "transport",
        "connection",
        "broken pipe",
        "h2 protocol",
        "stream",
        "reset",
    ]
    .iter()
    .any(|needle| m.contains(needle))
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
    fn etcd_codes_map_to_retryable_or_not() {
        let status = |code| etcd_client::Error::GRpcStatus(tonic::Status::new(code, "m"));
        assert!(StoreError::from_etcd("get", status(tonic::Code::Unavailable)).is_retryable());
        assert!(StoreError::from_etcd("get", status(tonic::Code::DeadlineExceeded)).is_retryable());
        assert!(!StoreError::from_etcd("get", status(tonic::Code::InvalidArgument)).is_retryable());
        assert!(!StoreError::from_etcd("get", status(tonic::Code::Unknown)).is_retryable());
        let broken = etcd_client::Error::GRpcStatus(tonic::Status::new(
            tonic::Code::Unknown,
            "transport error",
        ));
        assert!(StoreError::from_etcd("get", broken).is_retryable());
    }
}
