//! Every way a call to the coordinator can fail, as data.
//!
//! The inner layers (service, session actors, registry) return a [`MeshError`] and never
//! build a protocol status. Each failure has one [`ErrorKind`], decided here, in one
//! table ([`MeshError::kind`]); each edge translates a kind to its protocol once — gRPC
//! codes in `edge::grpc::code_of`, HTTP statuses in `edge::http::status_of` — so a
//! reviewer checks every mapping in three small places, and the two edges cannot
//! disagree about what a failure means.

use agentmesh_core::{RejectKind, Rejection};
use agentmesh_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("session {0} not found")]
    SessionNotFound(String),
    #[error("session {id} has already ended ({status})")]
    SessionEnded { id: String, status: String },
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("event seq {from_seq} is in the future: the session's last event is {last}")]
    FromTheFuture { from_seq: u64, last: u64 },
    #[error("worker {0} is already connected")]
    WorkerAlreadyConnected(String),
    /// This coordinator does not lead (a standby, or a leader that just stepped down).
    #[error("{}", match leader {
        Some(leader) => format!("this coordinator is a standby; the leader is {leader}"),
        None => "this coordinator is a standby and no leader is elected yet".to_string(),
    })]
    NotLeader { leader: Option<String> },
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    /// The store did not answer (etcd unreachable, no quorum): worth retrying.
    #[error("the store is unavailable ({0}); retry shortly")]
    StoreUnavailable(String),
    /// The store failed in a way retrying will not mend.
    #[error("store failure: {0}")]
    Store(String),
    #[error(
        "{live} sessions are live, the most this coordinator admits (--max-sessions {limit}); retry when some have ended"
    )]
    TooManySessions { live: usize, limit: usize },
    #[error(
        "the task is {bytes} bytes; this coordinator admits at most {limit} (--max-task-bytes)"
    )]
    TaskTooLarge { bytes: usize, limit: usize },
    /// Too much of one kind of work is in flight; the caller should retry later.
    #[error("{0}; retry shortly")]
    Busy(String),
    /// The caller did not say who it is, or said it with a token or certificate this
    /// coordinator does not know. The text never holds the token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (serve that role, create or cancel).
    #[error("{0}")]
    PermissionDenied(String),
}

/// What a failure means to the caller, whatever the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No such thing.
    NotFound,
    /// Malformed: the caller must change the request.
    Invalid,
    /// Well-formed but about a state that is not current (stale turn, ended session).
    Stale,
    /// The caller has no right to do this.
    NotPermitted,
    /// The caller is not known: no credentials, or ones nobody issued.
    Unauthenticated,
    /// Bigger than allowed, or more than admitted: retrying the same thing will not help
    /// until something changes.
    Exhausted,
    /// Asks for what does not exist yet (a watch from the future).
    OutOfRange,
    /// Conflicts with something that exists.
    AlreadyExists,
    /// Temporary: retry, possibly elsewhere (not the leader, store down, shutting down).
    Unavailable,
    /// A fault of the coordinator or its store.
    Internal,
}

impl ErrorKind {
    /// A short stable name (metric labels, logs).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Stale => "stale",
            ErrorKind::NotPermitted => "not_permitted",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Exhausted => "exhausted",
            ErrorKind::OutOfRange => "out_of_range",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl MeshError {
    /// The one table from failures to their meaning.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MeshError::SessionNotFound(_) => ErrorKind::NotFound,
            MeshError::SessionEnded { .. } => ErrorKind::Stale,
            MeshError::Rejected(r) => reject_kind(r.kind),
            MeshError::InvalidArgument(_) => ErrorKind::Invalid,
            MeshError::FromTheFuture { .. } => ErrorKind::OutOfRange,
            MeshError::WorkerAlreadyConnected(_) => ErrorKind::AlreadyExists,
            MeshError::NotLeader { .. }
            | MeshError::ShuttingDown
            | MeshError::StoreUnavailable(_)
            | MeshError::Busy(_) => ErrorKind::Unavailable,
            MeshError::Store(_) => ErrorKind::Internal,
            MeshError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            MeshError::PermissionDenied(_) => ErrorKind::NotPermitted,
            MeshError::TooManySessions { .. } | MeshError::TaskTooLarge { .. } => {
                ErrorKind::Exhausted
            }
        }
    }

    /// The leader's gRPC address, when this failure names it (workers go there).
    pub fn leader(&self) -> Option<&str> {
        match self {
            MeshError::NotLeader { leader } => leader.as_deref(),
            _ => None,
        }
    }
}

/// The kind of a core rejection.
pub fn reject_kind(kind: RejectKind) -> ErrorKind {
    match kind {
        RejectKind::Invalid => ErrorKind::Invalid,
        RejectKind::Stale => ErrorKind::Stale,
        RejectKind::NotAssigned => ErrorKind::NotPermitted,
        RejectKind::TooLarge => ErrorKind::Exhausted,
        // A result whose signature does not verify under its worker's announced key is
        // not authenticated as that worker's (missing, malformed, another key's, or
        // replayed from another session or turn): UNAUTHENTICATED, never INVALID_ARGUMENT
        // (the bytes may be well-formed) nor PERMISSION_DENIED (the worker may serve the
        // turn; this result is just not proven to be its).
        RejectKind::BadSignature => ErrorKind::Unauthenticated,
    }
}

impl From<StoreError> for MeshError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => MeshError::SessionNotFound(id),
            StoreError::Unavailable(why) => MeshError::StoreUnavailable(why),
            StoreError::Fenced(_) => MeshError::NotLeader { leader: None },
            other => MeshError::Store(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reject_kind_has_a_distinct_meaning() {
        let kinds = [
            RejectKind::Invalid,
            RejectKind::Stale,
            RejectKind::NotAssigned,
            RejectKind::TooLarge,
            RejectKind::BadSignature,
        ];
        let meanings: std::collections::HashSet<_> =
            kinds.iter().map(|k| reject_kind(*k)).collect();
        assert_eq!(meanings.len(), kinds.len());
    }

    #[test]
    fn a_store_outage_is_temporary_and_a_missing_session_is_not() {
        let outage = MeshError::from(StoreError::Unavailable("etcd timed out".into()));
        assert_eq!(outage.kind(), ErrorKind::Unavailable);
        let missing = MeshError::from(StoreError::NotFound("s1".into()));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let corrupt = MeshError::from(StoreError::Backend("corrupt header".into()));
        assert_eq!(corrupt.kind(), ErrorKind::Internal);
        assert_eq!(
            MeshError::from(StoreError::Fenced("lost".into())).kind(),
            ErrorKind::Unavailable
        );
    }
}
