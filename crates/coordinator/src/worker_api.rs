//! `WorkerService.Attach`: one bidirectional stream per worker process.
//!
//! The handler checks the Hello, registers the worker, and spawns a task that reads the
//! worker's messages; the response is a `ReceiverStream` fed by the registry's channel.
//! Every result and failure report is answered with a [`v1::ResultAck`] carrying the
//! gRPC code of the outcome, so a worker learns precisely why a result changed nothing.
//! When the stream ends — closed, broken, silent for three heartbeat intervals, or
//! carrying an oversized message — the worker is removed and its sessions reassign its
//! turns.

use crate::Mesh;
use crate::errors::MeshError;
use crate::registry::WorkerTx;
use crate::sessions::AckTo;
use agentmesh_core::session::validate_role;
use agentmesh_proto::v1::worker_service_server::WorkerService;
use agentmesh_proto::v1::{
    self, CoordinatorMessage, WorkerMessage, coordinator_message, worker_message,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WorkerApi {
    mesh: Arc<Mesh>,
}

impl WorkerApi {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        WorkerApi { mesh }
    }
}

/// Checks a Hello and turns it into the registry's view of the worker.
fn admit(hello: &v1::Hello) -> Result<v1::WorkerInfo, MeshError> {
    validate_role(&hello.role).map_err(MeshError::InvalidArgument)?;
    if hello.worker_id.is_empty() || hello.worker_id.len() > 128 {
        return Err(MeshError::InvalidArgument(
            "worker_id must hold 1 to 128 bytes".into(),
        ));
    }
    if hello.capacity == 0 {
        return Err(MeshError::InvalidArgument(
            "capacity must be at least 1".into(),
        ));
    }
    Ok(v1::WorkerInfo {
        worker_id: hello.worker_id.clone(),
        role: hello.role.clone(),
        capacity: hello.capacity,
        load: 0,
        version: hello.version.clone(),
        connected_ms: crate::now_ms(),
        draining: false,
        turns_completed: 0,
        connected: true,
        leased: false,
        address: String::new(),
    })
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type AttachStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        if self.mesh.shutdown.is_cancelled() {
            return Err(MeshError::ShuttingDown.into());
        }
        self.mesh.require_leader().await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 10s of opening the stream")
            })??;
        let Some(WorkerMessage {
            msg: Some(worker_message::Msg::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument("the first message must be Hello"));
        };
        let info = admit(&hello)?;
        let worker_id = info.worker_id.clone();
        let held: Vec<String> = hello.cursors.iter().map(|c| c.session_id.clone()).collect();
        let cursors = hello
            .cursors
            .iter()
            .map(|c| (c.session_id.clone(), c.seq))
            .collect();
        let (tx, rx) = mpsc::channel(256);
        let connection = self
            .mesh
            .registry
            .register(info.clone(), cursors, tx.clone())?;
        tracing::info!(%worker_id, role = %hello.role, capacity = hello.capacity, "worker joined");
        self.mesh.publish(v1::mesh_event::Event::WorkerJoined(info));
        let welcome = v1::Welcome {
            coordinator_id: self.mesh.config.coordinator_id.clone(),
            heartbeat_interval_ms: self.mesh.config.heartbeat_interval.as_millis() as u32,
            max_message_bytes: self.mesh.config.max_message_bytes as u64,
        };
        let _ = tx
            .send(Ok(CoordinatorMessage {
                msg: Some(coordinator_message::Msg::Welcome(welcome)),
            }))
            .await;
        tokio::spawn(end_stale_holdings(self.mesh.clone(), held, tx.clone()));
        tokio::spawn(serve_worker(
            self.mesh.clone(),
            worker_id,
            connection,
            inbound,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends `SessionEnd` for every session a (re)connecting worker says it holds that has
/// ended or that the store does not know: a worker that was away when its session ended,
/// or whose turn went to a replica, would otherwise hold that transcript forever. A
/// session that is merely not running here yet (a new leader still resuming it) is left
/// alone, as is any session the store cannot answer for right now.
async fn end_stale_holdings(mesh: Arc<Mesh>, held: Vec<String>, tx: WorkerTx) {
    for session_id in held {
        if mesh.is_running(&session_id) {
            continue;
        }
        let end = match mesh.store.get(&session_id).await {
            Ok(header) if header.status.is_terminal() => v1::SessionEnd {
                session_id,
                status: v1::SessionStatus::from(header.status) as i32,
                reason: header.reason,
            },
            Err(agentmesh_store::StoreError::NotFound(_)) => v1::SessionEnd {
                session_id,
                status: v1::SessionStatus::Unspecified as i32,
                reason: "no such session on this coordinator".into(),
            },
            _ => continue,
        };
        let message = CoordinatorMessage {
            msg: Some(coordinator_message::Msg::SessionEnd(end)),
        };
        if tx.send(Ok(message)).await.is_err() {
            return;
        }
    }
}

/// Reads one worker's messages until its stream ends, then removes it.
async fn serve_worker(
    mesh: Arc<Mesh>,
    worker_id: String,
    connection: u64,
    mut inbound: Streaming<WorkerMessage>,
    tx: WorkerTx,
) {
    let silence = mesh.config.heartbeat_interval * 3;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(silence, inbound.message()) => next,
            () = mesh.shutdown.cancelled() => break,
        };
        match next {
            Ok(Ok(Some(message))) => handle(&mesh, &worker_id, message, &tx).await,
            Ok(Ok(None)) => {
                tracing::info!(%worker_id, "worker closed its stream");
                break;
            }
            Ok(Err(status)) => {
                let status = crate::errors::normalize_decode_status(status);
                // Includes RESOURCE_EXHAUSTED for an oversized message: the worker is
                // told why, and nothing it sent in that message was applied.
                tracing::warn!(%worker_id, code = ?status.code(), message = status.message(), "worker stream failed");
                if status.code() != Code::Cancelled && status.code() != Code::Unknown {
                    let _ = tx.send(Err(status)).await;
                }
                break;
            }
            Err(_) => {
                tracing::warn!(%worker_id, ?silence, "worker silent; dropping it");
                let _ = tx
                    .send(Err(Status::unavailable(format!(
                        "no message or heartbeat for {silence:?}"
                    ))))
                    .await;
                break;
            }
        }
    }
    let role = mesh
        .registry
        .list()
        .into_iter()
        .find(|w| w.worker_id == worker_id && w.connected)
        .map(|w| w.role)
        .unwrap_or_default();
    let sessions = mesh.registry.remove_connection(&worker_id, connection);
    tracing::info!(%worker_id, sessions = sessions.len(), "worker left");
    if !role.is_empty() {
        mesh.publish(v1::mesh_event::Event::WorkerLeft(v1::WorkerLeft {
            worker_id: worker_id.clone(),
            role,
        }));
    }
    mesh.worker_lost(&worker_id, sessions).await;
}

/// Handles one message. Nothing here waits for a verdict: a result's acknowledgement
/// waits until its phase is written, and this worker's other sessions must not wait behind
/// it. A result is handed to its session's actor, which sends the ack on this stream
/// itself; a failure report is answered from a task of its own.
async fn handle(mesh: &Arc<Mesh>, worker_id: &str, message: WorkerMessage, tx: &WorkerTx) {
    match message.msg {
        Some(worker_message::Msg::Result(result)) => {
            let turn_id = result.turn.clone().unwrap_or_default();
            let ack = AckTo::Stream {
                tx: tx.clone(),
                turn: turn_id.clone(),
            };
            let (session_id, turn) = match agentmesh_proto::turn_from_wire(&turn_id) {
                Ok(parsed) => parsed,
                Err(why) => {
                    let why = MeshError::InvalidArgument(format!("bad turn id: {why}"));
                    return ack.answer(Err(why)).await;
                }
            };
            let reply = agentmesh_proto::reply_from_wire(&result);
            // The session's actor answers on the stream itself once the phase is written;
            // a session not running here is answered from the store, off this loop.
            if let Some((turn, ack)) = mesh
                .route_result(worker_id, &session_id, turn, reply, ack)
                .await
            {
                let (mesh, worker_id) = (mesh.clone(), worker_id.to_string());
                tokio::spawn(async move {
                    let outcome = mesh.answer_for_ended(&worker_id, &session_id, &turn).await;
                    ack.answer(outcome).await;
                });
            }
        }
        Some(worker_message::Msg::Failed(failed)) => {
            tracing::warn!(%worker_id, reason = %failed.reason, "worker reports a failed turn");
            let (mesh, worker_id, tx) = (mesh.clone(), worker_id.to_string(), tx.clone());
            tokio::spawn(async move {
                let turn_id = failed.turn.clone().unwrap_or_default();
                let outcome = match agentmesh_proto::turn_from_wire(&turn_id) {
                    Ok((session_id, turn)) => {
                        mesh.submit_failure(&worker_id, &session_id, turn, failed.reason)
                            .await
                    }
                    Err(why) => Err(MeshError::InvalidArgument(format!("bad turn id: {why}"))),
                };
                send_ack(&tx, ack_of(turn_id, outcome)).await;
            });
        }
        Some(worker_message::Msg::Draining(_)) => {
            tracing::info!(%worker_id, "worker is draining");
            mesh.registry.set_draining(worker_id);
        }
        Some(worker_message::Msg::Heartbeat(_)) => {}
        Some(worker_message::Msg::Hello(_)) | None => {
            tracing::warn!(%worker_id, "unexpected message on an established stream");
        }
    }
}

pub(crate) async fn send_ack(tx: &WorkerTx, ack: v1::ResultAck) {
    let _ = tx
        .send(Ok(CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Ack(ack)),
        }))
        .await;
}

pub(crate) fn ack_of(
    turn: v1::TurnId,
    outcome: Result<agentmesh_core::Applied, MeshError>,
) -> v1::ResultAck {
    match outcome {
        Ok(applied) => v1::ResultAck {
            turn: Some(turn),
            code: Code::Ok as i32,
            message: String::new(),
            seq: applied.seq.unwrap_or(0),
            duplicate: applied.duplicate,
        },
        Err(e) => v1::ResultAck {
            turn: Some(turn),
            code: e.code() as i32,
            message: e.to_string(),
            seq: 0,
            duplicate: false,
        },
    }
}
