//! `WorkerService.Attach`: one bidirectional stream per worker process.
//!
//! The handler checks the Hello, registers the worker, and spawns a task that reads the
//! worker's messages. The response stream is the worker's [`WorkerLink`] queue, each
//! domain message turned into its wire form here, and it ends at once when the link is
//! cut (the worker did not read, its lease expired, this coordinator stepped down).
//! Every result and failure report is answered with a [`v1::ResultAck`] carrying the
//! gRPC code of the outcome, so a worker learns precisely why a result changed nothing.
//! When the stream ends — closed, broken, silent for three heartbeat intervals, cut, or
//! carrying an oversized message — the worker is removed and its sessions reassign its
//! turns.

use crate::edge::grpc::{code_of, status_of};
use crate::errors::MeshError;
use crate::registry::{Cut, ToWorker, WorkerInfo, WorkerLink};
use crate::state::Mesh;
use agentmesh_core::session::validate_role;
use agentmesh_core::trust::{self, WorkerKey};
use agentmesh_proto::v1::worker_service_server::WorkerService;
use agentmesh_proto::v1::{
    self, CoordinatorMessage, WorkerMessage, coordinator_message, worker_message,
};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status, Streaming};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers the edge itself owes a worker, queued at once (a worker that lets this fill
/// is cut off, as for its main queue).
const DIRECT_QUEUE: usize = 16;

pub(crate) struct WorkerApi {
    mesh: Arc<Mesh>,
}

impl WorkerApi {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        WorkerApi { mesh }
    }
}

/// Checks a Hello and turns it into the registry's view of the worker. Its public key is
/// where the worker's key is first seen: a malformed or weak key is INVALID_ARGUMENT, and
/// none at all, when results must be signed, is UNAUTHENTICATED.
fn admit(
    hello: &v1::Hello,
    now_ms: i64,
    require_signatures: bool,
) -> Result<WorkerInfo, MeshError> {
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
    let public_key = agentmesh_proto::public_key_from_wire(&hello.public_key)
        .map_err(|why| MeshError::InvalidArgument(format!("Hello public_key: {why}")))?;
    if let Some(key) = public_key {
        key.verifier()
            .map_err(|why| MeshError::InvalidArgument(format!("Hello public_key: {why}")))?;
    } else if require_signatures {
        return Err(MeshError::Unauthenticated(
            "this coordinator requires signed results: the Hello must carry the worker's \
             Ed25519 public key (mesh-worker signs with --signing-key, or an ephemeral key)"
                .into(),
        ));
    }
    Ok(WorkerInfo {
        worker_id: hello.worker_id.clone(),
        role: hello.role.clone(),
        capacity: hello.capacity,
        load: 0,
        version: hello.version.clone(),
        connected_ms: now_ms,
        draining: false,
        turns_completed: 0,
        connected: true,
        leased: false,
        address: String::new(),
        public_key,
    })
}

type OutboundStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type AttachStream = OutboundStream;

    async fn attach(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        if self.mesh.shutdown.is_cancelled() {
            return Err(status_of(MeshError::ShuttingDown));
        }
        // The role the gate authorized (`x-agentmesh-role`); the Hello must name the same.
        let authorized_role = request
            .metadata()
            .get(crate::edge::auth::ROLE_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Who the gate authenticated: it may pin the keys its workers announce.
        let principal = request
            .extensions()
            .get::<crate::edge::auth::Principal>()
            .cloned();
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
        if let Some(role) = authorized_role
            && role != hello.role
        {
            return Err(status_of(MeshError::PermissionDenied(format!(
                "the stream was admitted for role {role:?} ({}) but its Hello names {:?}",
                crate::edge::auth::ROLE_METADATA,
                hello.role
            ))));
        }
        let info = admit(
            &hello,
            self.mesh.now_ms(),
            self.mesh.config.require_signatures,
        )
        .map_err(status_of)?;
        if let (Some(principal), Some(key)) = (&principal, &info.public_key) {
            principal.allows_key(key).map_err(status_of)?;
        }
        let worker_id = info.worker_id.clone();
        let held: Vec<String> = hello.cursors.iter().map(|c| c.session_id.clone()).collect();
        let cursors = hello
            .cursors
            .iter()
            .map(|c| (c.session_id.clone(), c.seq))
            .collect();
        let (link, queue) = WorkerLink::new(self.mesh.config.worker_queue);
        let connection = self
            .mesh
            .registry
            .register(info.clone(), cursors, link.clone())
            .map_err(status_of)?;
        tracing::info!(%worker_id, role = %hello.role, capacity = hello.capacity, "worker joined");
        self.mesh
            .mesh_log()
            .worker_joined(self.mesh.now_ms(), &info);
        let welcome = CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Welcome(v1::Welcome {
                coordinator_id: self.mesh.config.coordinator_id.clone(),
                heartbeat_interval_ms: self.mesh.config.heartbeat_interval.as_millis() as u32,
                max_message_bytes: self.mesh.config.max_message_bytes as u64,
            })),
        };
        // The edge's own answers (a turn id it cannot parse) take a small queue of their
        // own: inner layers speak domain messages only.
        let (direct, direct_queue) = mpsc::channel(DIRECT_QUEUE);
        let mesh = self.mesh.clone();
        let role = info.role.clone();
        let reader = Reader {
            mesh: self.mesh.clone(),
            // With signatures off the core checks none, so none is verified here either.
            key: info
                .public_key
                .as_ref()
                .filter(|_| self.mesh.config.require_signatures)
                .and_then(|key| key.verifier().ok()),
            worker_id,
            link: link.clone(),
            direct,
        };
        tokio::spawn(async move {
            mesh.reconnected(&reader.worker_id, &role, held).await;
            reader.serve(connection, inbound).await;
        });
        Ok(Response::new(outbound(welcome, queue, direct_queue, link)))
    }
}

/// The response stream: Welcome, then the worker's queue in wire form, until the queue
/// closes or the link is cut — then one last status saying why.
fn outbound(
    welcome: CoordinatorMessage,
    queue: mpsc::Receiver<ToWorker>,
    direct: mpsc::Receiver<CoordinatorMessage>,
    link: WorkerLink,
) -> OutboundStream {
    struct State {
        welcome: Option<CoordinatorMessage>,
        queue: mpsc::Receiver<ToWorker>,
        direct: mpsc::Receiver<CoordinatorMessage>,
        link: WorkerLink,
        done: bool,
    }
    let state = State {
        welcome: Some(welcome),
        queue,
        direct,
        link,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        if let Some(welcome) = state.welcome.take() {
            return Some((Ok(welcome), state));
        }
        // A cut wins over what is still queued: the worker is being dropped.
        let next = tokio::select! {
            biased;
            why = state.link.cut_off() => Err(why),
            Some(message) = state.direct.recv() => Ok(Some(message)),
            message = state.queue.recv() => Ok(message.map(|message| {
                state.link.taken();
                wire_message(message)
            })),
        };
        match next {
            Ok(Some(message)) => Some((Ok(message), state)),
            Ok(None) => None,
            Err(why) => {
                state.done = true;
                Some((Err(cut_status(&why)), state))
            }
        }
    }))
}

/// What a cut-off worker is told.
fn cut_status(why: &Cut) -> Status {
    match why {
        Cut::TooSlow => Status::resource_exhausted(
            "you did not read your stream and its queue filled up; your turns go to a replica",
        ),
        Cut::LeaseExpired => {
            Status::unavailable("your lease expired; register again and reconnect")
        }
        Cut::Silent => Status::unavailable("no message or heartbeat for three heartbeat intervals"),
        Cut::SteppedDown => {
            Status::unavailable("this coordinator lost its leadership; reconnect to the new leader")
        }
        Cut::Oversized(why) => Status::resource_exhausted(why.clone()),
        Cut::Malformed(why) => Status::invalid_argument(why.clone()),
        Cut::Gone => Status::cancelled("the stream has ended"),
    }
}

/// A domain message for a worker, in wire form.
fn wire_message(message: ToWorker) -> CoordinatorMessage {
    let msg = match message {
        ToWorker::Turn(order) => {
            let order = *order;
            let mut turn = v1::TurnId::from(&order.turn);
            turn.session_id = order.session_id.clone();
            let (proposal_version, proposal_hash) = order.proposal.unwrap_or_default();
            coordinator_message::Msg::Turn(v1::TurnRequest {
                turn: Some(turn),
                session: order.header.map(|h| v1::SessionHeader {
                    session_id: order.session_id,
                    task: h.task,
                    roles: h.roles,
                    max_rounds: h.max_rounds,
                }),
                delta: order.delta.into_iter().map(v1::Entry::from).collect(),
                proposal_version,
                proposal_hash,
                deadline_ms: order.deadline_ms,
                trace_context: order.trace_context.to_map(),
            })
        }
        ToWorker::Ack {
            session_id,
            turn,
            outcome,
        } => {
            let mut turn_id = v1::TurnId::from(&turn);
            turn_id.session_id = session_id;
            coordinator_message::Msg::Ack(ack_of(turn_id, outcome))
        }
        ToWorker::SessionEnd {
            session_id,
            status,
            reason,
        } => coordinator_message::Msg::SessionEnd(v1::SessionEnd {
            session_id,
            status: status.map_or(v1::SessionStatus::Unspecified, v1::SessionStatus::from) as i32,
            reason,
        }),
    };
    CoordinatorMessage { msg: Some(msg) }
}

fn ack_of(turn: v1::TurnId, outcome: Result<agentmesh_core::Applied, MeshError>) -> v1::ResultAck {
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
            code: code_of(e.kind()) as i32,
            message: e.to_string(),
            seq: 0,
            duplicate: false,
        },
    }
}

/// tonic's decoder reports an inbound message over the size limit as OUT_OF_RANGE with
/// this text; gRPC (and our contract) name that RESOURCE_EXHAUSTED.
fn normalize_decode_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange
        && status.message().contains(super::oversize::OVERSIZE_TEXT)
    {
        return Status::resource_exhausted(status.message().to_string());
    }
    status
}

/// One worker's reader: its inbound messages, and where its answers go.
struct Reader {
    mesh: Arc<Mesh>,
    /// The key of the worker's Hello, parsed once, when results must be signed: its
    /// results are verified here.
    key: Option<WorkerKey>,
    worker_id: String,
    link: WorkerLink,
    direct: mpsc::Sender<CoordinatorMessage>,
}

impl Reader {
    /// Reads the worker's messages until its stream ends or is cut, then removes it.
    async fn serve(self, connection: u64, mut inbound: Streaming<WorkerMessage>) {
        let (mesh, worker_id, link) = (&self.mesh, &self.worker_id, &self.link);
        let silence = mesh.config.heartbeat_interval * 3;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(silence, inbound.message()) => next,
                why = link.cut_off() => {
                    tracing::warn!(%worker_id, ?why, "worker cut off");
                    break;
                }
                () = mesh.shutdown.cancelled() => break,
            };
            // A worker that sends but does not read is found out as its messages come in.
            if link.stalled(silence) {
                tracing::warn!(%worker_id, ?silence, "worker does not read its stream; cutting it off");
                link.cut(Cut::TooSlow);
                break;
            }
            match next {
                Ok(Ok(Some(message))) => self.handle(message).await,
                Ok(Ok(None)) => {
                    tracing::info!(%worker_id, "worker closed its stream");
                    break;
                }
                Ok(Err(status)) => {
                    // Includes RESOURCE_EXHAUSTED for an oversized message: the worker is
                    // told why, and nothing it sent in that message was applied.
                    let status = normalize_decode_status(status);
                    tracing::warn!(%worker_id, code = ?status.code(), message = status.message(), "worker stream failed");
                    match status.code() {
                        Code::ResourceExhausted => {
                            link.cut(Cut::Oversized(status.message().to_string()))
                        }
                        // The connection itself broke: nobody is there to tell.
                        Code::Cancelled | Code::Unknown => {}
                        _ => link.cut(Cut::Malformed(status.message().to_string())),
                    }
                    break;
                }
                Err(_) => {
                    tracing::warn!(%worker_id, ?silence, "worker silent; dropping it");
                    link.cut(Cut::Silent);
                    break;
                }
            }
        }
        // Ends the response stream too, if it is still open.
        link.cut(Cut::Gone);
        let Some((role, sessions)) = mesh.registry.remove_connection(worker_id, connection) else {
            return;
        };
        tracing::info!(%worker_id, sessions = sessions.len(), "worker left");
        mesh.mesh_log().worker_left(mesh.now_ms(), worker_id, &role);
        mesh.worker_lost(worker_id, sessions);
    }

    /// Handles one message. Nothing here waits for a verdict: a result's acknowledgement
    /// waits until its phase is written, and this worker's other sessions must not wait
    /// behind it. Results and failure reports go to their session's actor, which
    /// acknowledges them on this worker's stream itself.
    async fn handle(&self, message: WorkerMessage) {
        let (mesh, worker_id) = (&self.mesh, self.worker_id.as_str());
        match message.msg {
            Some(worker_message::Msg::Result(result)) => {
                let turn_id = result.turn.clone().unwrap_or_default();
                match agentmesh_proto::turn_from_wire(&turn_id) {
                    Ok((session_id, turn)) => {
                        let mut reply = agentmesh_proto::reply_from_wire(&result);
                        // Verified on this worker's task, so the results of one round
                        // are checked in parallel rather than one after another in the
                        // session's actor; the core still checks the proof covers the
                        // statement it expects, and verifies itself when there is none.
                        if let Some(key) = &self.key {
                            let statement = trust::reply_statement(
                                &session_id,
                                &turn,
                                &reply.proposal_hash,
                                &reply,
                            );
                            reply.verified = key.verify(&statement, &reply.signature);
                        }
                        mesh.submit_result(worker_id, &session_id, turn, reply)
                            .await;
                    }
                    Err(why) => self.refuse_turn_id(turn_id, why),
                }
            }
            Some(worker_message::Msg::Failed(failed)) => {
                tracing::warn!(%worker_id, reason = %failed.reason, "worker reports a failed turn");
                let turn_id = failed.turn.clone().unwrap_or_default();
                match agentmesh_proto::turn_from_wire(&turn_id) {
                    Ok((session_id, turn)) => {
                        mesh.submit_failure(worker_id, &session_id, turn, failed.reason)
                            .await;
                    }
                    Err(why) => self.refuse_turn_id(turn_id, why),
                }
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

    /// A result whose turn id does not parse: refused INVALID_ARGUMENT, echoing the id.
    fn refuse_turn_id(&self, turn_id: v1::TurnId, why: String) {
        let ack = ack_of(
            turn_id,
            Err(MeshError::InvalidArgument(format!("bad turn id: {why}"))),
        );
        let message = CoordinatorMessage {
            msg: Some(coordinator_message::Msg::Ack(ack)),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.direct.try_send(message) {
            self.link.cut(Cut::TooSlow);
        }
    }
}
