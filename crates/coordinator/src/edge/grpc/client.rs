//! `SessionService`: the client API used by meshctl, scripts and the dashboard.
//!
//! Each handler converts its request to domain values, calls the service, and converts
//! the answer back; failures become statuses in [`status_of`]. Leadership is the gate's
//! business (`edge::gate`), not the handlers'.

use crate::edge::grpc::status_of;
use crate::events::{SharedEvent, wire_worker};
use crate::state::Mesh;
use crate::watch;
use agentmesh_proto::v1::session_service_server::SessionService;
use agentmesh_proto::v1::{self, SessionEvent};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The SERVER span of a SessionService call, the child of the client's span named in the
/// request's metadata (`traceparent`). Only while tracing is on: in logs it would only
/// repeat what the session span says.
fn server_span(method: &'static str, metadata: &tonic::metadata::MetadataMap) -> tracing::Span {
    if !agentmesh_telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "rpc",
        otel.name = format!("agentmesh.v1.SessionService/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "agentmesh.v1.SessionService",
        rpc.method = method,
    );
    agentmesh_telemetry::propagation::set_parent_from_metadata(&span, metadata);
    span
}

pub(crate) struct ClientApi {
    mesh: Arc<Mesh>,
}

impl ClientApi {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        ClientApi { mesh }
    }
}

#[tonic::async_trait]
impl SessionService for ClientApi {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let span = server_span("CreateSession", request.metadata());
        let r = request.into_inner();
        let created = self
            .mesh
            .create_session(r.task, r.roles, r.max_rounds, r.broadcast_rounds)
            .instrument(span.clone())
            .await;
        let summary = created.map_err(|e| {
            agentmesh_telemetry::record_error(&span, e.kind().name(), &e.to_string());
            status_of(e)
        })?;
        Ok(Response::new(v1::Session::from(&summary)))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let id = request.into_inner().session_id;
        let summary = self.mesh.summary(&id).await.map_err(status_of)?;
        Ok(Response::new(v1::Session::from(&summary)))
    }

    async fn list_sessions(
        &self,
        _request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let all = self.mesh.list_sessions().await.map_err(status_of)?;
        Ok(Response::new(v1::ListSessionsResponse {
            sessions: all.iter().map(v1::Session::from).collect(),
        }))
    }

    async fn cancel_session(
        &self,
        request: Request<v1::CancelSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let r = request.into_inner();
        let summary = self
            .mesh
            .cancel(&r.session_id, r.reason)
            .await
            .map_err(status_of)?;
        Ok(Response::new(v1::Session::from(&summary)))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        Ok(Response::new(v1::ListWorkersResponse {
            workers: self.mesh.workers().iter().map(wire_worker).collect(),
        }))
    }

    async fn get_transcript(
        &self,
        request: Request<v1::GetTranscriptRequest>,
    ) -> Result<Response<v1::Transcript>, Status> {
        let id = request.into_inner().session_id;
        let (summary, entries) = self.mesh.transcript(&id).await.map_err(status_of)?;
        Ok(Response::new(v1::Transcript {
            session: Some(v1::Session::from(&summary)),
            entries: entries.iter().map(v1::Entry::from).collect(),
        }))
    }

    type WatchSessionStream = futures::stream::Map<
        ReceiverStream<SharedEvent>,
        fn(SharedEvent) -> Result<SessionEvent, Status>,
    >;

    /// Reached only where `ClientApi` is served without `watch::SessionRoutes` (the
    /// coordinator always adds it): the same events, decoded for tonic to encode again.
    async fn watch_session(
        &self,
        request: Request<v1::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        use futures::StreamExt;
        let events = super::watch::session_events(&self.mesh, request.into_inner())
            .await
            .map_err(status_of)?;
        let decoded: fn(SharedEvent) -> Result<SessionEvent, Status> = |e| Ok(e.decode());
        Ok(Response::new(ReceiverStream::new(events).map(decoded)))
    }

    type WatchMeshStream = GrpcEvents<v1::MeshEvent>;

    async fn watch_mesh(
        &self,
        request: Request<v1::WatchMeshRequest>,
    ) -> Result<Response<Self::WatchMeshStream>, Status> {
        let events = watch::mesh_events(&self.mesh, request.into_inner().from_seq)
            .await
            .map_err(status_of)?;
        Ok(Response::new(as_grpc_stream(events)))
    }
}

/// A watcher's channel as a tonic response stream.
pub(crate) type GrpcEvents<T> = futures::stream::Map<ReceiverStream<T>, fn(T) -> Result<T, Status>>;

/// Adapts a watcher's channel to a tonic response stream: the same bounded buffer, read
/// directly by the response body (no task and second channel per event in between).
fn as_grpc_stream<T: Send + 'static>(events: mpsc::Receiver<T>) -> GrpcEvents<T> {
    use futures::StreamExt;
    ReceiverStream::new(events).map(Ok as fn(T) -> Result<T, Status>)
}
