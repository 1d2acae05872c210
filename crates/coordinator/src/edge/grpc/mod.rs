//! The gRPC edge: one port for the worker streams (`WorkerService`), the client API
//! (`SessionService`), gRPC health and reflection.
//!
//! Wire types are converted here, in both directions, and every [`MeshError`] becomes a
//! `tonic::Status` in one place ([`status_of`], with the code table [`code_of`]).
//!
//! # Layers, outermost first, and why each sits where it does
//!
//! 1. `oversize::correct_oversize_status` (a response map on the whole server): tonic
//!    answers an oversized request before any service runs, so only a layer outside every
//!    service sees that answer to make it RESOURCE_EXHAUSTED.
//! 2. [`gate::GrpcGate`](crate::edge::gate::GrpcGate) (around each of our two services):
//!    leadership is decided before a request is decoded — a standby forwards a client's
//!    HTTP/2 request to the leader as it is, and refuses a worker naming the leader —
//!    so no handler checks leadership itself.
//! 3. `watch::SessionRoutes` (inside the gate, around the generated `SessionService`):
//!    serves `WatchSession` from the event log's shared encodings; every other method
//!    goes to the generated server.

pub(crate) mod client;
pub(crate) mod oversize;
pub(crate) mod watch;
pub(crate) mod worker;

use crate::edge::gate::{Gate, Gated, GrpcGate};
use crate::errors::{ErrorKind, MeshError};
use crate::state::Mesh;
use agentmesh_proto::v1::session_service_server::SessionServiceServer;
use agentmesh_proto::v1::worker_service_server::WorkerServiceServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::Code;

/// Largest message the coordinator sends. Turn requests to a replacement worker carry
/// the whole transcript so far, which may exceed the inbound limit.
pub(crate) const MAX_ENCODE_BYTES: usize = 64 * 1024 * 1024;

/// The gRPC code of each kind of failure.
pub(crate) fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::Stale => Code::FailedPrecondition,
        ErrorKind::NotPermitted => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A failure as a gRPC status. A refusal that names the leader carries its address in
/// `x-agentmesh-leader` metadata too, so a worker can go there at once.
pub(crate) fn status_of(e: MeshError) -> tonic::Status {
    let mut status = tonic::Status::new(code_of(e.kind()), e.to_string());
    if let Some(leader) = e.leader()
        && let Ok(value) = leader.parse()
    {
        status
            .metadata_mut()
            .insert(agentmesh_proto::LEADER_METADATA, value);
    }
    status
}

/// Serves the gRPC port until `stop` resolves; then tells health checkers the client API
/// is no longer served, runs `drain`, and lets open calls finish.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: crate::edge::tls::TlsCell,
    gate: Arc<Gate>,
    mesh: Arc<Mesh>,
    stop: impl Future<Output = ()> + Send + 'static,
    drain: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<WorkerServiceServer<worker::WorkerApi>>()
        .await;
    health
        .set_serving::<SessionServiceServer<client::ClientApi>>()
        .await;
    let shutdown = async move {
        stop.await;
        health
            .set_not_serving::<SessionServiceServer<client::ClientApi>>()
            .await;
        drain.await;
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(agentmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let max = mesh.config.max_message_bytes;
    let worker_service = GrpcGate::new(
        WorkerServiceServer::new(worker::WorkerApi::new(mesh.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(MAX_ENCODE_BYTES),
        gate.clone(),
        Gated::Redirect,
    );
    let session_service = GrpcGate::new(
        watch::SessionRoutes::new(
            SessionServiceServer::new(client::ClientApi::new(mesh.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(MAX_ENCODE_BYTES),
            mesh.clone(),
        ),
        gate,
        Gated::Forward,
    );
    // Connections come from our own acceptor (`edge::tls`): plain or TLS with the
    // certificate of the moment, TCP_NODELAY set (turn requests, results and acks are
    // small and latency-bound), and each one's peer certificate for the gate.
    let incoming =
        tokio_stream::wrappers::ReceiverStream::new(crate::edge::tls::incoming(listener, tls))
            .map(Ok::<_, std::io::Error>);
    tonic::transport::Server::builder()
        // Detect a dead worker connection (cable cut, frozen peer) even when no
        // message is due; heartbeats cover the application level.
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(tower::util::MapResponseLayer::new(
            oversize::correct_oversize_status,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(worker_service)
        .add_service(session_service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code_and_a_standby_names_the_leader() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::Invalid,
            ErrorKind::Stale,
            ErrorKind::NotPermitted,
            ErrorKind::Unauthenticated,
            ErrorKind::Exhausted,
            ErrorKind::OutOfRange,
            ErrorKind::AlreadyExists,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ];
        let codes: std::collections::HashSet<i32> =
            kinds.iter().map(|k| code_of(*k) as i32).collect();
        assert_eq!(codes.len(), kinds.len());
        let status = status_of(MeshError::NotLeader {
            leader: Some("http://10.0.0.7:7700".into()),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(agentmesh_proto::LEADER_METADATA)
                .unwrap(),
            "http://10.0.0.7:7700"
        );
        assert_eq!(
            status_of(MeshError::StoreUnavailable("etcd timed out".into())).code(),
            Code::Unavailable,
            "a store outage is worth retrying, not a missing session"
        );
    }
}
