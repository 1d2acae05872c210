//! The one table that maps every way a request can fail to its gRPC status.
//!
//! Handlers never build a `tonic::Status` by hand for a domain failure: they return a
//! [`MeshError`], and this module decides the code. A reviewer can check every mapping
//! here, in one place.

use agentmesh_core::{RejectKind, Rejection};
use tonic::Code;

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
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error("store failure: {0}")]
    Store(String),
}

/// The gRPC code of a core rejection.
pub fn reject_code(kind: RejectKind) -> Code {
    match kind {
        // Malformed input: the client must change the request.
        RejectKind::Invalid => Code::InvalidArgument,
        // Well-formed but about a turn, phase or session state that is not current.
        RejectKind::Stale => Code::FailedPrecondition,
        // The sender has no right to this turn.
        RejectKind::NotAssigned => Code::PermissionDenied,
        // Larger than the session accepts.
        RejectKind::TooLarge => Code::ResourceExhausted,
    }
}

impl MeshError {
    pub fn code(&self) -> Code {
        match self {
            MeshError::SessionNotFound(_) => Code::NotFound,
            MeshError::SessionEnded { .. } => Code::FailedPrecondition,
            MeshError::Rejected(r) => reject_code(r.kind),
            MeshError::InvalidArgument(_) => Code::InvalidArgument,
            MeshError::FromTheFuture { .. } => Code::OutOfRange,
            MeshError::WorkerAlreadyConnected(_) => Code::AlreadyExists,
            MeshError::ShuttingDown => Code::Unavailable,
            MeshError::Store(_) => Code::Internal,
        }
    }
}

impl From<MeshError> for tonic::Status {
    fn from(e: MeshError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// tonic's decoder reports an inbound message over the size limit as OUT_OF_RANGE with
/// this text; gRPC (and our contract) name that RESOURCE_EXHAUSTED.
const OVERSIZE_TEXT: &str = "message length too large";

/// A status from decoding a worker's stream, with an oversized message reported as
/// RESOURCE_EXHAUSTED.
pub fn normalize_decode_status(status: tonic::Status) -> tonic::Status {
    if status.code() == Code::OutOfRange && status.message().contains(OVERSIZE_TEXT) {
        return tonic::Status::resource_exhausted(status.message().to_string());
    }
    status
}

/// True when gRPC status headers (or trailers) carry tonic's oversize OUT_OF_RANGE.
fn is_oversize_status(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            // On the wire grpc-message is percent-encoded (spaces become %20).
            .is_some_and(|m| m.replace("%20", " ").contains(OVERSIZE_TEXT))
}

/// Rewrites tonic's oversize OUT_OF_RANGE to RESOURCE_EXHAUSTED in place.
pub fn fix_oversize_status(headers: &mut http::HeaderMap) {
    if is_oversize_status(headers) {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oversize_out_of_range_is_rewritten() {
        let status = |code: &str, message: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", code.parse().unwrap());
            headers.insert("grpc-message", message.parse().unwrap());
            fix_oversize_status(&mut headers);
            headers["grpc-status"].to_str().unwrap().to_string()
        };
        let oversize =
            "Error,%20decoded%20message%20length%20too%20large:%20found%202097157%20bytes";
        assert_eq!(status("11", oversize), "8");
        assert_eq!(
            status("11", "event%20seq%2099%20is%20in%20the%20future"),
            "11"
        );
        assert_eq!(status("5", oversize), "5");
        assert_eq!(
            normalize_decode_status(tonic::Status::out_of_range(
                "Error, decoded message length too large: found 3 bytes"
            ))
            .code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn every_reject_kind_has_a_distinct_code() {
        let kinds = [
            RejectKind::Invalid,
            RejectKind::Stale,
            RejectKind::NotAssigned,
            RejectKind::TooLarge,
        ];
        let codes: std::collections::HashSet<_> =
            kinds.iter().map(|k| reject_code(*k) as i32).collect();
        assert_eq!(codes.len(), kinds.len());
        assert_eq!(
            tonic::Status::from(MeshError::SessionNotFound("x".into())).code(),
            Code::NotFound
        );
    }
}
