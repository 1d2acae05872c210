//! The coordinator's HTTP side: probes, the JSON API, Server-Sent Events and the
//! dashboard. Everything is served by the binary — no build step, no CDN.
//!
//! - `GET /healthz`: 200 while the process serves (liveness).
//! - `GET /readyz`: 200 on the leader (`leader`) and on every standby that reaches the
//!   store (`standby`); 503 while shutting down or cut off from etcd (readiness). A
//!   standby serves clients by forwarding to the leader ([`crate::gate`]), so a
//!   Kubernetes Service over every coordinator works and rollouts go through.
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]).
//! - `GET /`, `/app.js`, `/app.css`: the dashboard (hash-routed single page), served by
//!   every coordinator.
//! - `/api/...`: JSON (see [`router`]); errors are `{"error": "..."}` with 400, 404, 409
//!   or 503. On a standby every `/api/` call goes to the leader through the gate; a 503
//!   from the gate also names the `leader`.
//! - `GET /api/sessions/{id}/events`, `GET /api/events`: live updates as SSE; each durable
//!   event carries `id: <seq>`, so a browser's `Last-Event-ID` resumes exactly.

pub(crate) mod login;
pub(crate) mod metrics;

use crate::errors::{ErrorKind, MeshError};
use crate::events::wire_worker;
use crate::registry::WorkerInfo;
use crate::state::Mesh;
use crate::watch;
use agentmesh_core::SessionSummary;
use agentmesh_core::export::{self, EntryDoc};
use agentmesh_proto::v1::{self, mesh_event, session_event};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Instrument;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// How long `/readyz` waits for the store to answer before saying it cannot reach it.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn router(mesh: Arc<Mesh>, gate: Arc<crate::edge::gate::Gate>) -> Router {
    // Only the API is gated: probes, metrics and the dashboard's files are this
    // process's own, whoever leads.
    let api = Router::new()
        .route("/api/workers", get(workers))
        .route("/api/sessions", get(sessions).post(create))
        .route("/api/sessions/{id}", get(session))
        .route("/api/sessions/{id}/cancel", post(cancel))
        .route("/api/sessions/{id}/transcript", get(transcript))
        .route("/api/sessions/{id}/export.md", get(export_md))
        .route("/api/sessions/{id}/export.json", get(export_json))
        .route("/api/sessions/{id}/events", get(session_events))
        .route("/api/events", get(mesh_events))
        .route("/api/whoami", get(whoami))
        .route_layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            crate::edge::gate::forward_http,
        ))
        // Outside the forwarding: a standby authenticates before it forwards.
        .route_layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            crate::edge::gate::authorize_http,
        ));
    // The dashboard's page asks who you are (the login page) when authentication is on;
    // its scripts and styles are no secret.
    let page = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            crate::edge::gate::dashboard_page,
        ));
    let login = Router::new()
        .route("/login", get(login::show).post(login::submit))
        .route("/logout", post(login::logout))
        .with_state(gate);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Public keys are no secret, and every coordinator answers with its own.
        .route("/.well-known/agentmesh-keys", get(keys))
        .merge(page)
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .merge(api)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, json!({"error": "no such page"})) })
        .with_state(mesh)
        .merge(login)
}

/// `GET /api/whoami`: the caller as the gate authenticated it (never a secret), so the
/// dashboard can offer only what the caller may do.
async fn whoami(
    axum::Extension(principal): axum::Extension<crate::edge::auth::Principal>,
) -> Json<Value> {
    use crate::edge::auth::{Need, Via};
    let via = match &principal.via {
        Via::Open => "open".to_string(),
        Via::Token => "token".to_string(),
        Via::Certificate(id) => format!("certificate {id}"),
        Via::Vouched { id, by } => format!("certificate {id}, vouched for by {by}"),
    };
    Json(json!({
        "name": principal.name,
        "via": via,
        "permissions": principal.permissions.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "can_read": principal.may(&Need::Read),
        "can_write": principal.may(&Need::Write),
    }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /.well-known/agentmesh-keys`: this coordinator's certificate key and every worker
/// key it has seen, plus the same as a `meshctl verify --trust` file. What a coordinator
/// says about keys is a starting point to pin, checked out of band, not a proof.
async fn keys(State(mesh): State<Arc<Mesh>>) -> Json<Value> {
    let coordinator = mesh.config.signing_key.public().to_hex();
    let seen = mesh.registry.seen_keys();
    let mut roles: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for key in &seen {
        let keys = roles.entry(key.role.clone()).or_default();
        let hex = key.public_key.to_hex();
        if !keys.contains(&hex) {
            keys.push(hex);
        }
    }
    Json(json!({
        "coordinator": {"id": mesh.config.coordinator_id, "public_key": coordinator},
        "workers": seen.iter().map(|k| json!({
            "worker_id": k.worker_id,
            "role": k.role,
            "public_key": k.public_key.to_hex(),
            "seen_ms": k.seen_ms,
        })).collect::<Vec<_>>(),
        "trust": {"coordinator": [coordinator], "roles": roles},
    }))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when this coordinator can do its work: the leader always (its term ends the
/// moment it cannot reach the store), a standby while the store answers it — it can
/// forward to the leader and take over when the leader goes.
async fn readyz(State(mesh): State<Arc<Mesh>>) -> (StatusCode, String) {
    if mesh.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if mesh.is_leader() {
        return (StatusCode::OK, "leader\n".into());
    }
    match tokio::time::timeout(READY_TIMEOUT, mesh.leader_address()).await {
        Ok(Ok(_)) => (StatusCode::OK, "standby\n".into()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("standby, cannot reach the store: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "standby, the store did not answer within {}s\n",
                READY_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn metrics(State(mesh): State<Arc<Mesh>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&mesh),
    )
        .into_response()
}

/// An API failure: a status and a JSON body.
struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// The HTTP status of each kind of failure: the gRPC edge's table, in HTTP terms.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid | ErrorKind::OutOfRange => StatusCode::BAD_REQUEST,
        ErrorKind::Stale | ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::NotPermitted => StatusCode::FORBIDDEN,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        // Too large, or too many: 429 would invite an immediate retry of a huge task.
        ErrorKind::Exhausted => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> Self {
        ApiError(
            status_of(e.kind()),
            json!({ "error": e.to_string(), "leader": e.leader() }),
        )
    }
}

fn session_json(summary: &SessionSummary) -> Value {
    serde_json::to_value(summary).expect("plain data")
}

fn wire_session_json(session: &v1::Session) -> Value {
    SessionSummary::try_from(session).map_or(Value::Null, |s| session_json(&s))
}

fn worker_json(w: &WorkerInfo) -> Value {
    wire_worker_json(&wire_worker(w))
}

fn wire_worker_json(w: &v1::WorkerInfo) -> Value {
    json!({
        "worker_id": w.worker_id, "role": w.role, "capacity": w.capacity, "load": w.load,
        "version": w.version, "connected": w.connected, "leased": w.leased,
        "draining": w.draining, "turns_completed": w.turns_completed, "address": w.address,
    })
}

async fn workers(State(mesh): State<Arc<Mesh>>) -> Json<Value> {
    Json(Value::Array(
        mesh.workers().iter().map(worker_json).collect(),
    ))
}

async fn sessions(State(mesh): State<Arc<Mesh>>) -> Result<Json<Value>, ApiError> {
    let all = mesh.list_sessions().await?;
    Ok(Json(Value::Array(all.iter().map(session_json).collect())))
}

#[derive(Deserialize)]
struct CreateBody {
    task: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    max_rounds: u32,
}

async fn create(
    State(mesh): State<Arc<Mesh>>,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("bad request body: {}", e.body_text()) }),
        )
    })?;
    let span = create_span(&headers);
    let summary = mesh
        .create_session(body.task, body.roles, body.max_rounds, 0)
        .instrument(span)
        .await?;
    Ok((StatusCode::CREATED, Json(session_json(&summary))))
}

/// The server span of `POST /api/sessions`, a child of the caller's `traceparent`, so a
/// session created over HTTP joins its client's trace as one created by `meshctl` does.
/// Only while tracing is on.
fn create_span(headers: &HeaderMap) -> tracing::Span {
    if !agentmesh_telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "http",
        otel.name = "POST /api/sessions",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/api/sessions",
    );
    agentmesh_telemetry::propagation::set_parent_from_headers(&span, headers);
    span
}

async fn session(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(session_json(&mesh.summary(&id).await?)))
}

async fn cancel(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let summary = mesh
        .cancel(&id, "cancelled from the dashboard".into())
        .await?;
    Ok(Json(session_json(&summary)))
}

async fn load(
    mesh: &Mesh,
    id: &str,
) -> Result<(SessionSummary, Vec<agentmesh_core::Entry>), ApiError> {
    Ok(mesh.transcript(id).await?)
}

async fn transcript(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (summary, entries) = load(&mesh, &id).await?;
    Ok(Json(
        serde_json::to_value(export::ExportDoc::new(&summary, &entries)).expect("plain data"),
    ))
}

fn download(content_type: &'static str, file: String, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn export_md(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, entries) = load(&mesh, &id).await?;
    Ok(download(
        "text/markdown; charset=utf-8",
        format!("agentmesh-{id}.md"),
        export::markdown(&entries),
    ))
}

async fn export_json(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (summary, entries) = load(&mesh, &id).await?;
    Ok(download(
        "application/json",
        format!("agentmesh-{id}.json"),
        export::json(&summary, &entries),
    ))
}

#[derive(Deserialize)]
struct FromSeq {
    from_seq: Option<u64>,
}

/// Where a stream resumes: `Last-Event-ID` (what a browser sends on reconnect) wins over
/// `?from_seq`; both name events already seen or to start from, respectively.
fn resume_point(headers: &HeaderMap, query: &FromSeq) -> Result<Option<u64>, ApiError> {
    if let Some(last) = headers.get("last-event-id") {
        let last: u64 = last
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "Last-Event-ID must be an event seq"}),
                )
            })?;
        // The event after the last one seen; a seq with no successor names no event.
        let next = last.checked_add(1).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("Last-Event-ID {last} is past every event seq")}),
            )
        })?;
        return Ok(Some(next));
    }
    Ok(query.from_seq)
}

fn sse<S>(stream: S) -> impl IntoResponse
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    // Comments every 15 s keep proxies from closing an idle stream.
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn session_events(
    State(mesh): State<Arc<Mesh>>,
    Path(id): Path<String>,
    Query(query): Query<FromSeq>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from = resume_point(&headers, &query)?.unwrap_or(1);
    let window = mesh.config.watch_batch_window;
    let mut events = watch::session_events(&mesh, &id, from, window).await?;
    let stream = async_stream(move |tx| async move {
        while let Some(event) = events.recv().await {
            if tx.send(session_sse(&event.decode())).await.is_err() {
                return;
            }
        }
    });
    Ok(sse(stream).into_response())
}

fn session_sse(event: &v1::SessionEvent) -> Result<Event, Infallible> {
    let (kind, data) = match &event.event {
        Some(session_event::Event::Entry(entry)) => (
            "entry",
            agentmesh_core::Entry::try_from(entry)
                .map(|e| serde_json::to_value(EntryDoc::from(&e)).expect("plain data"))
                .unwrap_or(Value::Null),
        ),
        Some(session_event::Event::Status(status)) => (
            "status",
            json!({
                "status": agentmesh_proto::status_name(status.status),
                "round": status.round,
                "reason": status.reason,
                "awaiting": status.awaiting,
                "session": event.session.as_ref().map_or(Value::Null, wire_session_json),
            }),
        ),
        Some(session_event::Event::Progress(p)) => (
            "progress",
            json!({
                "status": agentmesh_proto::status_name(p.status),
                "round": p.round,
                "answered": p.answered,
                "awaiting": p.awaiting,
            }),
        ),
        None => ("unknown", Value::Null),
    };
    let sse = Event::default().event(kind).data(data.to_string());
    // Only durable events move the browser's Last-Event-ID.
    Ok(if event.ephemeral {
        sse
    } else {
        sse.id(event.seq.to_string())
    })
}

async fn mesh_events(
    State(mesh): State<Arc<Mesh>>,
    Query(query): Query<FromSeq>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from = resume_point(&headers, &query)?.unwrap_or(0);
    let mut events = watch::mesh_events(&mesh, from).await?;
    let stream = async_stream(move |tx| async move {
        while let Some(event) = events.recv().await {
            if tx.send(mesh_sse(&event)).await.is_err() {
                return;
            }
        }
    });
    Ok(sse(stream).into_response())
}

fn mesh_sse(event: &v1::MeshEvent) -> Result<Event, Infallible> {
    let (kind, data) = match &event.event {
        Some(mesh_event::Event::SessionCreated(s)) => (
            "session_created",
            json!({ "session": wire_session_json(s) }),
        ),
        Some(mesh_event::Event::SessionEnded(s)) => {
            ("session_ended", json!({ "session": wire_session_json(s) }))
        }
        Some(mesh_event::Event::PhaseChanged(s)) => {
            ("phase", json!({ "session": wire_session_json(s) }))
        }
        Some(mesh_event::Event::WorkerJoined(w)) => ("worker_joined", wire_worker_json(w)),
        Some(mesh_event::Event::WorkerLeft(w)) => (
            "worker_left",
            json!({ "worker_id": w.worker_id, "role": w.role }),
        ),
        Some(mesh_event::Event::Resync(r)) => (
            "resync",
            json!({
                "sessions": r.sessions.iter().map(wire_session_json).collect::<Vec<_>>(),
                "workers": r.workers.iter().map(wire_worker_json).collect::<Vec<_>>(),
            }),
        ),
        None => ("unknown", Value::Null),
    };
    Ok(Event::default()
        .event(kind)
        .id(event.seq.to_string())
        .data(data.to_string()))
}

/// A stream fed by a task through a small bounded channel.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(watch::WATCH_BUFFER);
    tokio::spawn(produce(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves until the coordinator shuts down: plain HTTP, or HTTPS with the certificate
/// `tls` holds when each connection is accepted.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: crate::edge::tls::TlsCell,
    mesh: Arc<Mesh>,
    gate: Arc<crate::edge::gate::Gate>,
) {
    let shutdown = mesh.shutdown.clone();
    let app =
        router(mesh, gate).into_make_service_with_connect_info::<crate::edge::tls::PeerInfo>();
    let listener = crate::edge::tls::ConnListener {
        conns: crate::edge::tls::incoming(listener, tls),
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
