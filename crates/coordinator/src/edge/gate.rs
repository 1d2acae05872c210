//! The one layer that decides, for every client call, whether this coordinator answers it
//! or the leader does.
//!
//! Only the leader runs sessions. A standby still serves clients: it forwards each call,
//! unchanged, to the leader it finds in the election, and streams the answer back — the
//! way an etcd follower forwards to its leader. So one Kubernetes Service over every
//! coordinator works for `meshctl` and for browsers, and a rolling update never waits for
//! a pod that cannot lead yet.
//!
//! - gRPC ([`GrpcGate`]): wraps each service. For the `SessionService`
//!   ([`Gated::Forward`]) forwarding happens on the HTTP/2 request itself, so unary calls
//!   and both watch streams pass through with their metadata (deadlines, and whatever a
//!   caller's identity travels in), byte for byte. The worker stream is not forwarded
//!   ([`Gated::Redirect`]): a standby answers a worker UNAVAILABLE naming the leader, and
//!   the worker connects there itself, so a worker's turns never take an extra hop.
//! - HTTP ([`forward_http`], an axum middleware on `/api/`): the JSON API and the SSE
//!   streams are proxied to the leader's HTTP address (published beside its gRPC one in
//!   the election, [`agentmesh_proto::LeaderAddress`]); the dashboard's own files are
//!   served locally, and its API calls take the same path as everyone else's.
//!
//! A forwarded call carries [`FORWARDED_METADATA`]. A coordinator that receives one while
//! not leading refuses it (UNAVAILABLE / 503, naming the leader) rather than forwarding it
//! again: two standbys with stale views of the election cannot bounce a call forever, and
//! the client retries.

use crate::edge::grpc::status_of;
use crate::state::Mesh;
use agentmesh_proto::{FORWARDED_METADATA, LeaderAddress};
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

/// How long a standby waits to connect to the leader before telling the client to retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

/// The gate's state: the mesh it guards, and connections to the leader, reused across
/// forwarded calls.
pub(crate) struct Gate {
    mesh: Arc<Mesh>,
    /// One HTTP/2 channel per leader gRPC URL seen (a channel reconnects by itself; a
    /// new leader gets a new entry, and the map holds at most a few).
    channels: Mutex<HashMap<String, Channel>>,
    http: HttpClient,
}

impl Gate {
    pub fn new(mesh: Arc<Mesh>) -> Arc<Gate> {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Arc::new(Gate {
            mesh,
            channels: Mutex::new(HashMap::new()),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        })
    }

    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("forwarder lock");
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| Status::unavailable(format!("the leader's address {url:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        // Leaders come and go; the old ones' channels are not worth keeping.
        if channels.len() >= 4 {
            channels.clear();
        }
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Why a standby could not hand a call to the leader. Each becomes UNAVAILABLE (gRPC) or
/// 503 (HTTP): all of them pass once an election settles, so clients retry.
#[derive(Debug)]
enum NoLeader {
    /// Forwarded to us, but we do not lead either.
    NotLeading,
    /// Nobody leads right now.
    NoneElected,
    /// The election itself cannot be read (etcd unreachable).
    Election(String),
    /// The election names this very coordinator, which has not taken office yet.
    Itself,
    /// The leader publishes no HTTP address.
    NoHttp(String),
    /// The leader could not be reached.
    Unreachable { leader: String, detail: String },
}

impl NoLeader {
    fn message(&self) -> String {
        match self {
            NoLeader::NotLeading => {
                "this coordinator is a standby and does not forward forwarded calls; retry".into()
            }
            NoLeader::NoneElected => {
                "this coordinator is a standby and no leader is elected yet; retry shortly".into()
            }
            NoLeader::Election(e) => {
                format!("this coordinator is a standby and cannot read the election ({e}); retry")
            }
            NoLeader::Itself => "this coordinator is taking over as leader; retry shortly".into(),
            NoLeader::NoHttp(leader) => format!(
                "the leader at {leader} publishes no HTTP address (started without --http?)"
            ),
            NoLeader::Unreachable { leader, detail } => {
                format!("cannot reach the leader at {leader} ({detail}); retry shortly")
            }
        }
    }
}

/// The leader to forward to, or why there is none.
async fn leader_for_forwarding(mesh: &Mesh, forwarded: bool) -> Result<LeaderAddress, NoLeader> {
    if forwarded {
        return Err(NoLeader::NotLeading);
    }
    let leader = mesh
        .leader_address()
        .await
        .map_err(|e| NoLeader::Election(e.to_string()))?
        .ok_or(NoLeader::NoneElected)?;
    if leader.grpc == mesh.advertised.grpc {
        return Err(NoLeader::Itself);
    }
    Ok(leader)
}

/// What a standby does with a call to a gated service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gated {
    /// Forward it to the leader (clients).
    Forward,
    /// Refuse it, naming the leader (workers connect to the leader themselves).
    Redirect,
}

/// Wraps a service: the leader serves, a standby forwards or redirects.
#[derive(Clone)]
pub(crate) struct GrpcGate<S> {
    inner: S,
    gate: Arc<Gate>,
    gated: Gated,
}

impl<S> GrpcGate<S> {
    pub fn new(inner: S, gate: Arc<Gate>, gated: Gated) -> Self {
        GrpcGate { inner, gate, gated }
    }
}

impl<S: NamedService> NamedService for GrpcGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for GrpcGate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if self.gate.mesh.is_leader() {
            return Box::pin(self.inner.call(request));
        }
        let gate = self.gate.clone();
        let gated = self.gated;
        Box::pin(async move {
            let answer = match gated {
                Gated::Forward => forward_grpc(&gate, request).await,
                Gated::Redirect => Err(status_of(gate.mesh.not_leader().await)),
            };
            Ok(answer.unwrap_or_else(Status::into_http))
        })
    }
}

async fn forward_grpc(
    gate: &Gate,
    mut request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let mesh = &gate.mesh;
    let forwarded = request.headers().contains_key(FORWARDED_METADATA);
    let leader = match leader_for_forwarding(mesh, forwarded).await {
        Ok(leader) => leader,
        Err(why) => {
            let mut status = Status::unavailable(why.message());
            // Name the leader as any standby refusal does, so a client may go there.
            if let Some(leader) = mesh.not_leader().await.leader()
                && let Ok(value) = leader.parse()
            {
                status
                    .metadata_mut()
                    .insert(agentmesh_proto::LEADER_METADATA, value);
            }
            return Err(status);
        }
    };
    let channel = gate.channel(&leader.grpc)?;
    mark_forwarded(request.headers_mut(), &mesh.config.coordinator_id);
    tracing::debug!(path = request.uri().path(), leader = %leader.grpc, "forwarding a client call");
    let response = channel.oneshot(request).await.map_err(|e| {
        let why = NoLeader::Unreachable {
            leader: leader.grpc.clone(),
            detail: error_chain(&e),
        };
        Status::unavailable(why.message())
    })?;
    Ok(response)
}

fn mark_forwarded(headers: &mut http::HeaderMap, coordinator_id: &str) {
    let value = http::HeaderValue::from_str(coordinator_id)
        .unwrap_or_else(|_| http::HeaderValue::from_static("standby"));
    headers.insert(FORWARDED_METADATA, value);
}

/// The HTTP API's gate (axum middleware): the leader serves, a standby proxies the request
/// to the leader's HTTP address and streams the answer back (SSE included).
pub(crate) async fn forward_http(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mesh = &gate.mesh;
    if mesh.is_leader() {
        return next.run(request).await;
    }
    match proxy_http(&gate, request).await {
        Ok(response) => response,
        Err(why) => {
            let leader = mesh.leader_address().await.ok().flatten();
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "error": why.message(),
                    "leader": leader.map(|l| l.http.unwrap_or(l.grpc)),
                })),
            )
                .into_response()
        }
    }
}

async fn proxy_http(
    gate: &Gate,
    request: axum::extract::Request,
) -> Result<axum::response::Response, NoLeader> {
    let mesh = &gate.mesh;
    let forwarded = request.headers().contains_key(FORWARDED_METADATA);
    let leader = leader_for_forwarding(mesh, forwarded).await?;
    let base = leader
        .http
        .clone()
        .ok_or_else(|| NoLeader::NoHttp(leader.grpc.clone()))?;
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let unreachable = |detail: String| NoLeader::Unreachable {
        leader: base.clone(),
        detail,
    };
    parts.uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e: http::uri::InvalidUri| unreachable(e.to_string()))?;
    // The connection to the leader is ours: its Host is the leader's, not the caller's,
    // and the caller's connection-level headers describe the caller's connection.
    parts.headers.remove(http::header::HOST);
    strip_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_11;
    mark_forwarded(&mut parts.headers, &mesh.config.coordinator_id);
    tracing::debug!(%path, leader = %base, "forwarding an HTTP call");
    let response = gate
        .http
        .request(http::Request::from_parts(parts, body))
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(axum::response::Response::from_parts(
        parts,
        axum::body::Body::new(body),
    ))
}

/// Removes the headers that belong to one connection, not to the request or response
/// (RFC 9110 §7.6.1), before a message crosses to the other side of the proxy.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        http::header::CONNECTION,
        http::header::TE,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::PROXY_AUTHORIZATION,
        http::header::TRAILER,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// An error and its causes as one line, `outer: cause: root`, skipping a cause whose text
/// its parent already includes (transport errors often repeat it).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
