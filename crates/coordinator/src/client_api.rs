//! `SessionService`: the client API used by meshctl, scripts and the dashboard.

use crate::Mesh;
use crate::errors::MeshError;
use agentmesh_proto::v1::session_service_server::SessionService;
use agentmesh_proto::v1::{self, SessionEvent};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Events a watcher may have in flight before its task waits for the client.
const WATCH_BUFFER: usize = 64;

pub struct ClientApi {
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
        let term = self.mesh.require_leader().await?;
        let r = request.into_inner();
        let summary = self.mesh.create_session(term, r.task, r.roles, r.max_rounds).await?;
        Ok(Response::new(v1::Session::from(&summary)))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        self.mesh.require_leader().await?;
        let id = request.into_inner().session_id;
        let summary = self.mesh.summary(&id).await?;
        Ok(Response::new(v1::Session::from(&summary)))
    }

    async fn list_sessions(
        &self,
        _request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        self.mesh.require_leader().await?;
        let all = self
            .mesh
            .store
            .list()
            .await
            .map_err(|e| MeshError::Store(e.to_string()))?;
        Ok(Response::new(v1::ListSessionsResponse {
            sessions: all.iter().map(v1::Session::from).collect(),
        }))
    }

    async fn cancel_session(
        &self,
        request: Request<v1::CancelSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        self.mesh.require_leader().await?;
        let r = request.into_inner();
        let summary = self.mesh.cancel(&r.session_id, r.reason).await?;
        Ok(Response::new(v1::Session::from(&summary)))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        self.mesh.require_leader().await?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: self.mesh.registry.list(),
        }))
    }

    async fn get_transcript(
        &self,
        request: Request<v1::GetTranscriptRequest>,
    ) -> Result<Response<v1::Transcript>, Status> {
        self.mesh.require_leader().await?;
        let id = request.into_inner().session_id;
        let summary = self.mesh.summary(&id).await?;
        let entries = self
            .mesh
            .store
            .entries(&id, 1)
            .await
            .map_err(|e| MeshError::Store(e.to_string()))?;
        Ok(Response::new(v1::Transcript {
            session: Some(v1::Session::from(&summary)),
            entries: entries.iter().map(v1::Entry::from).collect(),
        }))
    }

    type WatchSessionStream = ReceiverStream<Result<SessionEvent, Status>>;

    async fn watch_session(
        &self,
        request: Request<v1::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        self.mesh.require_leader().await?;
        let r = request.into_inner();
        let log = self
            .mesh
            .event_log(&r.session_id)
            .ok_or_else(|| MeshError::SessionNotFound(r.session_id.clone()))?;
        let from_seq = r.from_seq.max(1);
        let last = log.last_seq();
        if from_seq > last + 1 {
            return Err(MeshError::FromTheFuture { from_seq, last }.into());
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let shutdown = self.mesh.shutdown.clone();
        tokio::spawn(async move {
            let mut changes = log.subscribe();
            let mut next = from_seq;
            loop {
                // Mark the current version seen *before* reading, so an event appended
                // after the read wakes us: no event is ever missed between the two.
                changes.borrow_and_update();
                let (batch, closed) = log.read(next, WATCH_BUFFER);
                if batch.is_empty() {
                    if closed {
                        return;
                    }
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { return },
                        () = shutdown.cancelled() => return,
                    }
                    continue;
                }
                for event in batch {
                    next = event.seq + 1;
                    if tx.send(Ok(event)).await.is_err() {
                        return; // the watcher went away
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
