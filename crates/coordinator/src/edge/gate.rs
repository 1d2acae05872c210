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
//!
//! # Who is calling
//!
//! Before anything else, the gate authenticates the caller and authorizes the call
//! ([`crate::edge::auth`]: a bearer token, the dashboard's cookie, or the verified client
//! certificate's SPIFFE ID; the permission table). A refusal is UNAUTHENTICATED / 401 or
//! PERMISSION_DENIED / 403, from the same `MeshError` table as every other failure. The
//! [`Principal`] then travels with the request as an extension; handlers never see a
//! token. A standby authenticates *before* forwarding, so an unauthenticated call never
//! leaves it, and forwards the caller's credentials unchanged: the leader authenticates
//! and authorizes again. A caller known only by its certificate has nothing to pass on;
//! the standby then names its SPIFFE ID in [`CALLER_METADATA`] and presents its own
//! credentials (its certificate, `spiffe://<td>/agentmesh/coordinator`, and/or its
//! `--token-file` token of a `coordinator` principal). The leader believes that header
//! only from a coordinator; every coordinator drops it from anyone else's call.

use crate::edge::auth::{self, Authority, CALLER_METADATA, Presented, Principal, Via};
use crate::edge::grpc::status_of;
use crate::edge::security::{Loaded, Security};
use crate::edge::tls::PeerInfo;
use crate::errors::MeshError;
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
use tonic::transport::Channel;
use tower::ServiceExt;

/// How long a standby waits to connect to the leader before telling the client to retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    axum::body::Body,
>;

/// The gate's state: the mesh it guards, what it trusts, and connections to the leader,
/// reused across forwarded calls (and made anew after a reload of the credentials).
pub(crate) struct Gate {
    mesh: Arc<Mesh>,
    security: Security,
    /// One HTTP/2 channel per leader gRPC URL seen (a channel reconnects by itself; a
    /// new leader gets a new entry, and the map holds at most a few), for the credentials
    /// of one generation.
    channels: Mutex<(u64, HashMap<String, Channel>)>,
    http: Mutex<(u64, HttpClient)>,
}

/// An HTTP client to the leader with this generation's credentials: TLS for an
/// `https://` leader (system roots, `--tls-ca`, this coordinator's certificate), plain
/// HTTP otherwise.
fn http_client(loaded: &Loaded) -> Result<HttpClient, String> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = crate::edge::tls::client_config(&loaded.forwarding)?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &loaded.forwarding.tls_server_name {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("--tls-server-name {name:?}: {e}"))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(connector);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

impl Gate {
    pub fn new(mesh: Arc<Mesh>, security: Security) -> anyhow::Result<Arc<Gate>> {
        let loaded = security.current();
        let http = http_client(&loaded).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(Gate {
            mesh,
            channels: Mutex::new((loaded.generation, HashMap::new())),
            http: Mutex::new((loaded.generation, http)),
            security,
        }))
    }

    /// Who the caller of a gated gRPC call is, and whether it may make it.
    fn admit_grpc(
        &self,
        loaded: &Loaded,
        request: &http::Request<Body>,
    ) -> Result<Principal, MeshError> {
        if loaded.authority.is_open() {
            return Ok(Principal::anonymous());
        }
        let headers = request.headers();
        let uris = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.certificate_uris.clone());
        let principal =
            loaded
                .authority
                .authenticate(&presented(headers, uris.as_deref(), false))?;
        let role = headers
            .get(auth::ROLE_METADATA)
            .and_then(|v| v.to_str().ok());
        principal.authorize(&auth::grpc_need(request.uri().path(), role)?)?;
        Ok(principal)
    }

    /// Whether a dashboard token is known (the login page's check).
    pub fn known_token(&self, token: &str) -> Result<Principal, MeshError> {
        self.security.current().authority.authenticate(&Presented {
            token: Some(token),
            ..Presented::default()
        })
    }

    /// Whether callers must authenticate.
    pub fn auth_enabled(&self) -> bool {
        !self.security.current().authority.is_open()
    }

    /// Whether the HTTP port serves TLS (the login cookie is then `Secure`).
    pub fn http_tls(&self) -> bool {
        self.security.settings().tls_enabled()
    }

    fn http(&self) -> Result<HttpClient, String> {
        let loaded = self.security.current();
        let mut http = self.http.lock().expect("forwarder lock");
        if http.0 != loaded.generation {
            *http = (loaded.generation, http_client(&loaded)?);
        }
        Ok(http.1.clone())
    }

    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let loaded = self.security.current();
        let mut guard = self.channels.lock().expect("forwarder lock");
        if guard.0 != loaded.generation {
            *guard = (loaded.generation, HashMap::new());
        }
        let channels = &mut guard.1;
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = loaded
            .forwarding
            .endpoint(url)
            .map_err(|e| Status::unavailable(format!("the leader's address: {e}")))?
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let loaded = self.gate.security.current();
        let principal = match self.gate.admit_grpc(&loaded, &request) {
            Ok(principal) => principal,
            Err(refused) => {
                let status = status_of(refused);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        if self.gate.mesh.is_leader() {
            request.extensions_mut().insert(principal);
            return Box::pin(self.inner.call(request));
        }
        let gate = self.gate.clone();
        let gated = self.gated;
        Box::pin(async move {
            let answer = match gated {
                Gated::Forward => {
                    pass_on_identity(request.headers_mut(), &principal, &loaded);
                    forward_grpc(&gate, request).await
                }
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

/// What a caller presented: its bearer token (or, on HTTP, the dashboard's cookie), its
/// verified certificate's SAN URIs, and the identity a forwarding coordinator vouches for.
fn presented<'a>(
    headers: &'a http::HeaderMap,
    certificate_uris: Option<&'a [String]>,
    cookie: bool,
) -> Presented<'a> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let token = header(http::header::AUTHORIZATION.as_str())
        .and_then(auth::bearer)
        .or_else(|| {
            cookie
                .then(|| header(http::header::COOKIE.as_str()).and_then(auth::cookie_token))
                .flatten()
        });
    Presented {
        token,
        certificate_uris: certificate_uris.unwrap_or(&[]),
        vouched: header(CALLER_METADATA),
    }
}

/// Before a standby forwards a call: the caller's own token goes on unchanged; a caller
/// known by its certificate is named in [`CALLER_METADATA`], with this coordinator's
/// token (if it has one) to vouch for it. Whatever the caller put in that header is
/// dropped first.
fn pass_on_identity(headers: &mut http::HeaderMap, principal: &Principal, loaded: &Loaded) {
    headers.remove(CALLER_METADATA);
    let Via::Certificate(id) = &principal.via else {
        return;
    };
    let Ok(value) = http::HeaderValue::from_str(id) else {
        return;
    };
    headers.insert(CALLER_METADATA, value);
    match loaded.forwarding.token() {
        Ok(Some(token)) => {
            if let Ok(mut value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
                value.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, value);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read this coordinator's own token"),
    }
}

/// A refusal of the HTTP side, in the HTTP edge's terms.
fn http_refusal(e: MeshError) -> axum::response::Response {
    (
        crate::edge::http::status_of(e.kind()),
        axum::Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

/// Who the caller of an HTTP request is (bearer token, the dashboard's cookie, or its
/// certificate).
fn authenticate_http(
    loaded: &Loaded,
    request: &axum::extract::Request,
) -> Result<Principal, MeshError> {
    if let Authority::Open = loaded.authority {
        return Ok(Principal::anonymous());
    }
    let uris = request
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerInfo>>()
        .map(|c| c.0.certificate_uris.clone());
    loaded
        .authority
        .authenticate(&presented(request.headers(), uris.as_deref(), true))
}

/// The HTTP API's authentication and authorization (axum middleware, outside
/// [`forward_http`]): GET needs `sessions:read`, POST `sessions:write`. The principal goes
/// down as a request extension; a standby then forwards the caller's credentials.
pub(crate) async fn authorize_http(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let loaded = gate.security.current();
    let admitted = authenticate_http(&loaded, &request)
        .and_then(|p| p.authorize(&auth::http_need(request.method())).map(|()| p));
    match admitted {
        Ok(principal) => {
            if !gate.mesh.is_leader() {
                pass_on_identity(request.headers_mut(), &principal, &loaded);
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refused) => http_refusal(refused),
    }
}

/// The dashboard's page (axum middleware on `/`): with authentication on, a caller
/// without a known token or certificate gets the login page (401), one without
/// `sessions:read` the login page saying so (403).
pub(crate) async fn dashboard_page(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let loaded = gate.security.current();
    let admitted = authenticate_http(&loaded, &request)
        .and_then(|p| p.authorize(&auth::Need::Read).map(|()| p));
    match admitted {
        Ok(_) => next.run(request).await,
        // A first visit is no error: the page alone. A known caller without read gets
        // told why.
        Err(refused) => {
            let status = crate::edge::http::status_of(refused.kind());
            let message = match refused {
                MeshError::PermissionDenied(_) => Some(refused.to_string()),
                _ if request.headers().contains_key(http::header::COOKIE) => {
                    Some("Your sign-in is no longer valid; sign in again.".to_string())
                }
                _ => None,
            };
            crate::edge::http::login::page(status, message.as_deref())
        }
    }
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
        .http()
        .map_err(&unreachable)?
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
