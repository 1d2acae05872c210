//! The connection to the coordinator, waiting out a failover, and the errors meshctl
//! reports.
//!
//! # Waiting for a leader
//!
//! Right after a leader dies, its election key outlives it by up to the election TTL
//! (2 s), then a standby takes over and loads the unfinished sessions; a coordinator that
//! restarts refuses connections for a moment; a standby answers UNAVAILABLE ("... retry
//! shortly") while an election is under way. A one-shot command therefore retries what
//! can get better ([`Coordinator::retrying`]) for up to `--wait` (default
//! [`DEFAULT_WAIT`]), says so once on stderr when it starts waiting, and prints the last
//! error if the bound passes. It never retries an answer that will not change
//! (NOT_FOUND, INVALID_ARGUMENT, ...), and retries `CreateSession` only when the request
//! provably reached no leader ([`Retry::NotReached`]).

use agentmesh_discovery::ClientCredentials;
use agentmesh_discovery::LeaderLookup;
use agentmesh_proto::Backoff;
use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The address meshctl talks to unless `--coordinator` or `MESH_COORDINATOR` says otherwise.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

/// How long a one-shot command waits for a leader by default: the election TTL (2 s) the
/// dead leader's key outlives it by, a new leader's start-up (winning the campaign,
/// loading every unfinished session), and a wide margin for a loaded machine.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// A transcript may hold many entries of up to 512 KiB each; tonic's 4 MiB default
/// would refuse a long session's transcript.
const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// How long a unary call may take before meshctl gives up on it.
const UNARY_TIMEOUT: Duration = Duration::from_secs(30);

/// Delays between attempts while waiting for a leader (jittered: many scripts waiting on
/// the same failover do not retry in step).
const WAIT_FIRST: Duration = Duration::from_millis(100);
const WAIT_CAP: Duration = Duration::from_secs(1);

pub type Client = SessionServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds the caller's token (`authorization: Bearer`, sensitive) to every call on one
/// connection; the token is read when the connection is opened.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// Everything that makes meshctl exit 1. Its `Display` is what follows `error: `.
#[derive(Debug)]
pub enum CliError {
    /// The coordinator could not be reached at all. `transient` says why that may pass
    /// (e.g. "connection refused"); `None` when it will not (a name that does not resolve).
    Connect {
        address: String,
        detail: String,
        transient: Option<String>,
    },
    /// Cluster mode: the election names no leader right now, or cannot be read.
    NoLeader(String),
    /// The coordinator answered with a gRPC error: printed as `<Code>: <message>`.
    Rpc(tonic::Status),
    /// A retryable failure that lasted the whole `--wait` bound.
    GaveUp {
        waited: Duration,
        last: Box<CliError>,
    },
    /// Anything else: bad arguments, unwritable output, an unreadable answer.
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Connect {
                address, detail, ..
            } => {
                write!(f, "cannot reach coordinator at {address}: {detail}")
            }
            CliError::NoLeader(why) => f.write_str(why),
            CliError::Rpc(status) if status.message().is_empty() => {
                write!(f, "{:?}", status.code())
            }
            CliError::Rpc(status) => write!(f, "{:?}: {}", status.code(), status.message()),
            CliError::GaveUp { waited, last } => write!(
                f,
                "{last} (no leader answered within {})",
                show_duration(*waited)
            ),
            CliError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Rpc(status)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Other(format!("cannot write output: {e}"))
    }
}

/// What may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, and calls whose repetition changes nothing more (cancelling a session that a
    /// lost answer already cancelled is refused as "already ended"): every failure that
    /// can pass is retried (connection refused or reset, UNAVAILABLE, no leader elected).
    Idempotent,
    /// `CreateSession`: sending it twice to a leader could create two sessions, so a
    /// failure is retried only when it proves the request reached no leader (see
    /// [`CliError::reached_no_leader`]). Anything else — a reset mid-call, a deadline, an
    /// UNAVAILABLE from the leader itself — may have created the session, and is reported.
    NotReached,
}

impl CliError {
    /// Why waiting may help, as the waiting line shows it; `None` when it will not (or,
    /// for [`Retry::NotReached`], when the request may have reached a leader).
    pub fn wait_reason(&self, retry: Retry) -> Option<String> {
        let why = || match self {
            CliError::Connect {
                address,
                transient: Some(why),
                ..
            } => format!("cannot reach coordinator at {address}: {why}"),
            CliError::Rpc(status) => format!("{:?}: {}", status.code(), status.message()),
            other => other.to_string(),
        };
        let retryable = match retry {
            Retry::Idempotent => self.may_pass(),
            Retry::NotReached => self.reached_no_leader(),
        };
        retryable.then(why)
    }

    /// True for a failure that can pass by itself: a refused or broken connection, an
    /// election without a leader, UNAVAILABLE, or a call that broke on the way (a status
    /// made here from a transport error, not one the coordinator sent).
    fn may_pass(&self) -> bool {
        match self {
            CliError::Connect { transient, .. } => transient.is_some(),
            CliError::NoLeader(_) => true,
            CliError::Rpc(status) => match status.code() {
                Code::Unavailable => true,
                Code::Unknown | Code::Internal | Code::Cancelled => {
                    std::error::Error::source(status).is_some()
                }
                _ => false,
            },
            CliError::GaveUp { .. } | CliError::Other(_) => false,
        }
    }

    /// True only when the failed call provably reached no leader, so sending it again
    /// cannot do twice what was asked once:
    ///
    /// - the connection was never made (refused, timed out): nothing was sent;
    /// - cluster mode found no leader to send it to;
    /// - a status tonic made from a failed connect (its source is a `ConnectError`: the
    ///   channel reconnected under the call and could not), so nothing was sent;
    /// - UNAVAILABLE from a standby that refused to forward it (mid-election, no leader
    ///   known, the forwarded call reached a standby, the new leader not in office yet:
    ///   "this coordinator is a standby ..." / "... taking over as leader ..."), or that
    ///   could not *connect* to the leader it forwards to ("cannot reach the leader at X
    ///   (... connection refused ...)"). These are the coordinator's own texts (its
    ///   standby gate's refusals and its not-the-leader error); a standby's failure after
    ///   its connection to the leader was made is not among them, since the leader may
    ///   have created the session before the connection broke. Neither is the leader's
    ///   own UNAVAILABLE (shutting down, store unavailable): the write may have happened.
    pub fn reached_no_leader(&self) -> bool {
        match self {
            CliError::Connect { transient, .. } => transient.is_some(),
            CliError::NoLeader(_) => true,
            CliError::Rpc(status) if status.code() == Code::Unavailable => {
                if has_connect_error(status) {
                    return true;
                }
                let m = status.message();
                m.starts_with("this coordinator is a standby")
                    || m.starts_with("this coordinator is taking over as leader")
                    || (m.starts_with("cannot reach the leader at ")
                        && is_connect_refusal(&m.to_ascii_lowercase()))
            }
            _ => false,
        }
    }
}

/// The status was made by tonic from a failed connect (no request went out).
fn has_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        if cause.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A connect failure as the coordinator's forwarder words it (hyper's connector).
fn is_connect_refusal(lowercase: &str) -> bool {
    lowercase.contains("tcp connect error") || lowercase.contains("connection refused")
}

/// Why a failed connect may pass, from the io error in its chain: refused, reset,
/// unreachable, timed out. `None` for what will not pass by waiting (a name that does not
/// resolve, an address that cannot be used).
fn transient_connect_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use std::io::ErrorKind as K;
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::TimedOut
                    | K::BrokenPipe
                    | K::UnexpectedEof
                    | K::HostUnreachable
                    | K::NetworkUnreachable
            )
            .then(|| io.kind().to_string());
        }
        let text = cause.to_string().to_ascii_lowercase();
        if text.contains("timed out") || text.contains("timeout expired") {
            return Some("connect timed out".into());
        }
        source = cause.source();
    }
    None
}

/// `15s`, `2.5s`, `300ms`.
pub fn show_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// An error and its causes as one line, `outer: cause: root`, skipping a cause whose
/// text its parent already includes (tonic's transport errors often repeat it).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

/// `host:port` without a scheme means plain-text HTTP/2, as a coordinator serves by default.
pub fn normalize_address(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Where the coordinator is, how to open a fresh connection to it, and how long to wait
/// for one that answers.
#[derive(Clone)]
pub struct Coordinator {
    address: String,
    /// Cluster mode: the election names the leader; every new connection asks it again,
    /// so a retry or a resumed watch follows a failover to the new leader.
    leader_lookup: Option<LeaderLookup>,
    /// The etcd endpoints, for messages.
    etcd: String,
    /// How long [`Coordinator::retrying`] keeps trying (`--wait`).
    wait: Duration,
    /// TLS roots, client certificate and token (`--tls-ca`, `--tls-cert`, `--token-file`).
    credentials: ClientCredentials,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("address", &self.address)
            .field("cluster", &self.leader_lookup.is_some())
            .field("wait", &self.wait)
            .finish()
    }
}

impl Coordinator {
    pub fn new(address: &str) -> Result<Coordinator, CliError> {
        let address = normalize_address(address);
        endpoint_for(&address, &ClientCredentials::default())?;
        Ok(Coordinator {
            address,
            leader_lookup: None,
            etcd: String::new(),
            wait: DEFAULT_WAIT,
            credentials: ClientCredentials::default(),
        })
    }

    /// A coordinator found through etcd's election (`--etcd ENDPOINTS`): whichever one
    /// the election names when a connection is opened. `fallback` only names it in
    /// messages before any leader was found.
    pub fn elected(
        fallback: &str,
        lookup: LeaderLookup,
        etcd: &str,
    ) -> Result<Coordinator, CliError> {
        let mut coordinator = Coordinator::new(fallback)?;
        coordinator.leader_lookup = Some(lookup);
        coordinator.etcd = etcd.to_string();
        Ok(coordinator)
    }

    /// How long one-shot commands wait for a leader (`--wait`; zero: not at all).
    pub fn with_wait(mut self, wait: Duration) -> Coordinator {
        self.wait = wait;
        self
    }

    /// The TLS settings and token every new connection uses.
    pub fn with_credentials(mut self, credentials: ClientCredentials) -> Coordinator {
        self.credentials = credentials;
        self
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A client for unary calls, on a new connection. Each call gives up after
    /// [`UNARY_TIMEOUT`], so a wedged coordinator cannot hang a script.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let address = self.current_address().await?;
        self.open(
            &address,
            endpoint_for(&address, &self.credentials)?.timeout(UNARY_TIMEOUT),
        )
        .await
    }

    /// A client for `WatchSession`, on a new connection: no call timeout, because a
    /// watch legitimately lasts as long as the session; keep-alive pings catch a dead peer.
    pub async fn connect_watch(&self) -> Result<Client, CliError> {
        let address = self.current_address().await?;
        self.open(&address, endpoint_for(&address, &self.credentials)?)
            .await
    }

    /// One unary call on a new connection, retried as [`Coordinator::retrying`] says:
    /// `call` gets a fresh client for every attempt.
    pub async fn call<T, F, Fut>(&self, retry: Retry, mut call: F) -> Result<T, CliError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut waiting = Waiting::new(self.wait);
        loop {
            let error = match self.connect().await {
                Ok(client) => match call(client).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) => CliError::Rpc(status),
                },
                Err(error) => error,
            };
            waiting.after(error, retry).await?;
        }
    }

    /// Runs `attempt` until it succeeds, fails in a way waiting cannot help
    /// ([`CliError::wait_reason`]), or `--wait` has passed since the first attempt began.
    ///
    /// On the first retryable failure it prints one line to stderr,
    /// `waiting for a leader (<why>): retrying for up to <wait>`; if the bound passes, the
    /// last failure comes back as [`CliError::GaveUp`]. Attempts are spaced by a jittered
    /// back-off from 100 ms to 1 s.
    pub async fn retrying<T, F, Fut>(&self, retry: Retry, mut attempt: F) -> Result<T, CliError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CliError>>,
    {
        let mut waiting = Waiting::new(self.wait);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => waiting.after(error, retry).await?,
            }
        }
    }

    /// The leader's address in cluster mode, else the configured one.
    async fn current_address(&self) -> Result<String, CliError> {
        let Some(lookup) = &self.leader_lookup else {
            return Ok(self.address.clone());
        };
        match lookup.leader().await {
            Ok(Some(leader)) => Ok(normalize_address(&leader.grpc)),
            Ok(None) => Err(CliError::NoLeader(format!(
                "no coordinator leads {} in etcd at {}",
                lookup.election(),
                self.etcd
            ))),
            Err(e) => Err(CliError::NoLeader(format!(
                "cannot read the leader from etcd at {}: {e}",
                self.etcd
            ))),
        }
    }

    /// Connecting eagerly is what lets a failure name the address that could not be
    /// reached, instead of surfacing later as a bare `Unavailable` from the first call,
    /// and what tells a request that was never sent from one that may have been.
    async fn open(&self, address: &str, endpoint: Endpoint) -> Result<Client, CliError> {
        let channel = endpoint.connect().await.map_err(|e| CliError::Connect {
            address: address.to_string(),
            detail: error_chain(&e),
            transient: transient_connect_failure(&e),
        })?;
        let token = self.credentials.authorization().map_err(CliError::Other)?;
        Ok(
            SessionServiceClient::with_interceptor(channel, Bearer(token))
                .max_decoding_message_size(MAX_DECODE_BYTES),
        )
    }
}

/// The state of one wait for a leader: when it began, the back-off, whether the waiting
/// line was printed.
struct Waiting {
    bound: Duration,
    started: Instant,
    backoff: Backoff,
    announced: bool,
}

impl Waiting {
    fn new(bound: Duration) -> Waiting {
        Waiting {
            bound,
            started: Instant::now(),
            backoff: Backoff::new(WAIT_FIRST, WAIT_CAP).with_jitter(0.5),
            announced: false,
        }
    }

    /// After a failed attempt: sleeps and returns `Ok` when another attempt is worth it,
    /// else the error to report.
    async fn after(&mut self, error: CliError, retry: Retry) -> Result<(), CliError> {
        let Some(why) = error.wait_reason(retry) else {
            return Err(error);
        };
        let waited = self.started.elapsed();
        if waited >= self.bound {
            return Err(if self.announced {
                CliError::GaveUp {
                    waited: self.bound,
                    last: Box::new(error),
                }
            } else {
                error
            });
        }
        if !self.announced {
            eprintln!(
                "waiting for a leader ({why}): retrying for up to {}",
                show_duration(self.bound)
            );
            self.announced = true;
        }
        let delay = self.backoff.next_delay().min(self.bound - waited);
        tracing::debug!(%why, ?delay, "no leader answered; retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

fn endpoint_for(address: &str, credentials: &ClientCredentials) -> Result<Endpoint, CliError> {
    Ok(credentials
        .endpoint(address)
        .map_err(CliError::Other)?
        .connect_timeout(Duration::from_secs(5))
        // Keep-alive pings notice a coordinator host that vanished without closing
        // the connection, so a watch reconnects instead of hanging forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_print_code_and_message() {
        let e = CliError::from(tonic::Status::not_found("session xyz not found"));
        assert_eq!(e.to_string(), "NotFound: session xyz not found");
        let bare = CliError::from(tonic::Status::new(tonic::Code::Unavailable, ""));
        assert_eq!(bare.to_string(), "Unavailable");
        let connect = CliError::Connect {
            address: "http://127.0.0.1:1".into(),
            detail: "tcp connect error".into(),
            transient: Some("connection refused".into()),
        };
        assert_eq!(
            connect.to_string(),
            "cannot reach coordinator at http://127.0.0.1:1: tcp connect error"
        );
    }

    #[test]
    fn a_status_made_from_a_failed_connect_proves_nothing_was_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(status.code(), Code::Unavailable);
        let error = CliError::Rpc(status);
        assert!(error.reached_no_leader());
        assert!(error.wait_reason(Retry::NotReached).is_some());
        // The same code sent by a leader proves nothing.
        let sent = CliError::Rpc(tonic::Status::unavailable(
            "the coordinator is shutting down",
        ));
        assert!(sent.wait_reason(Retry::NotReached).is_none());
        assert!(sent.wait_reason(Retry::Idempotent).is_some());
    }

    #[test]
    fn only_connect_failures_that_can_pass_are_waited_out() {
        let refused = CliError::Connect {
            address: "http://h:1".into(),
            detail: "tcp connect error".into(),
            transient: transient_connect_failure(&std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )),
        };
        assert_eq!(
            refused.wait_reason(Retry::NotReached).as_deref(),
            Some("cannot reach coordinator at http://h:1: connection refused")
        );
        let dns = std::io::Error::other("failed to lookup address information");
        assert_eq!(transient_connect_failure(&dns), None);
        let unresolvable = CliError::Connect {
            address: "http://nowhere:1".into(),
            detail: "dns error".into(),
            transient: None,
        };
        assert!(unresolvable.wait_reason(Retry::Idempotent).is_none());
        let no_leader = CliError::NoLeader("no coordinator leads".into());
        assert!(no_leader.wait_reason(Retry::NotReached).is_some());
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(show_duration(Duration::from_secs(15)), "15s");
        assert_eq!(show_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(show_duration(Duration::from_millis(300)), "300ms");
        let gave_up = CliError::GaveUp {
            waited: Duration::from_secs(2),
            last: Box::new(CliError::NoLeader(
                "no coordinator leads x in etcd at y".into(),
            )),
        };
        assert_eq!(
            gave_up.to_string(),
            "no coordinator leads x in etcd at y (no leader answered within 2s)"
        );
    }

    #[test]
    fn bare_host_port_gets_the_http_scheme() {
        assert_eq!(normalize_address("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(normalize_address(" http://h:1 "), "http://h:1");
        assert_eq!(normalize_address("https://h:1"), "https://h:1");
    }

    #[test]
    fn invalid_addresses_are_refused_up_front() {
        let err = Coordinator::new("http://exa mple:1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid coordinator address \"http://exa mple:1\""),
            "{err}"
        );
    }
}
