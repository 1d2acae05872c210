//! The error of every discovery call, and which etcd client failures are worth retrying.

/// What went wrong talking to etcd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// etcd did not answer in time or the connection broke. Retryable; a write may or may
    /// not have been applied.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// The request cannot work as asked (no endpoints, a key segment holding '/').
    #[error("{0}")]
    Invalid(String),
    /// Anything else etcd refused, or an answer that makes no sense.
    #[error("etcd failure: {0}")]
    Backend(String),
}

impl DiscoveryError {
    /// True when the same call may succeed later without anything else changing.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DiscoveryError::Unavailable(_))
    }

    /// Maps an etcd client failure (see [`is_transient`]).
    pub fn from_etcd(what: &str, e: etcd_client::Error) -> DiscoveryError {
        if is_transient(&e) {
            DiscoveryError::Unavailable(format!("{what}: {e}"))
        } else {
            DiscoveryError::Backend(format!("{what}: {e}"))
        }
    }
}

/// True for what passes once etcd is reachable again: transport trouble, and the gRPC
/// codes etcd uses for "no leader / timed out / connection gone".
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        // The client reports a broken keep-alive or watch request channel this way.
        E::LeaseKeepAliveError(_) | E::WatchError(_) => true,
        E::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => true,
            // tonic reports a connection that broke mid-call as Unknown, and an HTTP/2
            // GOAWAY from a member shutting down as Internal ("h2 protocol error"), each
            // with a transport message; etcd's own refusals carry an "etcdserver:" text.
            Code::Unknown | Code::Internal => looks_like_transport(status.message()),
            _ => false,
        },
        _ => false,
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
    fn etcd_codes_map_to_retryable_or_not() {
        let status = |code| etcd_client::Error::GRpcStatus(tonic::Status::new(code, "m"));
        assert!(DiscoveryError::from_etcd("get", status(tonic::Code::Unavailable)).is_retryable());
        assert!(
            DiscoveryError::from_etcd("get", status(tonic::Code::DeadlineExceeded)).is_retryable()
        );
        assert!(
            !DiscoveryError::from_etcd("get", status(tonic::Code::InvalidArgument)).is_retryable()
        );
        assert!(!DiscoveryError::from_etcd("get", status(tonic::Code::Unknown)).is_retryable());
        let broken = etcd_client::Error::GRpcStatus(tonic::Status::new(
            tonic::Code::Unknown,
            "transport error",
        ));
        assert!(DiscoveryError::from_etcd("get", broken).is_retryable());
        // What etcd-client reported when the member it talked to was stopped (a GOAWAY).
        let going_away = etcd_client::Error::GRpcStatus(tonic::Status::new(
            tonic::Code::Internal,
            "h2 protocol error: http2 error",
        ));
        assert!(DiscoveryError::from_etcd("watch", going_away).is_retryable());
        let corrupt = etcd_client::Error::GRpcStatus(tonic::Status::new(
            tonic::Code::Internal,
            "etcdserver: corrupt cluster",
        ));
        assert!(!DiscoveryError::from_etcd("get", corrupt).is_retryable());
        assert!(!DiscoveryError::Invalid("x".into()).is_retryable());
        assert!(!DiscoveryError::Backend("x".into()).is_retryable());
    }
}
