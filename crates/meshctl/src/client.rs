//! The connection to the coordinator, and the errors meshctl reports.

use agentmesh_proto::v1::session_service_client::SessionServiceClient;
use agentmesh_store::Election;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The address meshctl talks to unless `--coordinator` or `MESH_COORDINATOR` says otherwise.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

/// A transcript may hold many entries of up to 512 KiB each; tonic's 4 MiB default
/// would refuse a long session's transcript.
const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// How long a unary call may take before meshctl gives up on it.
const UNARY_TIMEOUT: Duration = Duration::from_secs(30);

pub type Client = SessionServiceClient<Channel>;

/// Everything that makes meshctl exit 1. Its `Display` is what follows `error: `.
#[derive(Debug)]
pub enum CliError {
    /// The coordinator could not be reached at all.
    Connect { address: String, detail: String },
    /// The coordinator answered with a gRPC error: printed as `<Code>: <message>`.
    Rpc(tonic::Status),
    /// Anything else: bad arguments, unwritable output, an unreadable answer.
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Connect { address, detail } => {
                write!(f, "cannot reach coordinator at {address}: {detail}")
            }
            CliError::Rpc(status) if status.message().is_empty() => {
                write!(f, "{:?}", status.code())
            }
            CliError::Rpc(status) => write!(f, "{:?}: {}", status.code(), status.message()),
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

/// Where the coordinator is, and how to open a fresh connection to it.
#[derive(Clone)]
pub struct Coordinator {
    address: String,
    /// Cluster mode: the election names the leader; every new connection asks it again,
    /// so a watch follows a failover to the new leader.
    leader_lookup: Option<Arc<dyn Election>>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("address", &self.address)
            .field("cluster", &self.leader_lookup.is_some())
            .finish()
    }
}

impl Coordinator {
    pub fn new(address: &str) -> Result<Coordinator, CliError> {
        let address = normalize_address(address);
        endpoint_for(&address)?;
        Ok(Coordinator {
            address,
            leader_lookup: None,
        })
    }

    /// A coordinator found through etcd's election (`--etcd`); `fallback` is used only
    /// while no leader is elected.
    pub fn elected(fallback: &str, election: Arc<dyn Election>) -> Result<Coordinator, CliError> {
        let mut coordinator = Coordinator::new(fallback)?;
        coordinator.leader_lookup = Some(election);
        Ok(coordinator)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// A client for unary calls, on a new connection. Each call gives up after
    /// [`UNARY_TIMEOUT`], so a wedged coordinator cannot hang a script.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let address = self.current_address().await;
        self.open(&address, endpoint_for(&address)?.timeout(UNARY_TIMEOUT))
            .await
    }

    /// A client for `WatchSession`, on a new connection: no call timeout, because a
    /// watch legitimately lasts as long as the session; keep-alive pings catch a dead peer.
    pub async fn connect_watch(&self) -> Result<Client, CliError> {
        let address = self.current_address().await;
        self.open(&address, endpoint_for(&address)?).await
    }

    /// The leader's address in cluster mode, else the configured one.
    async fn current_address(&self) -> String {
        if let Some(election) = &self.leader_lookup {
            match election.leader().await {
                Ok(Some(leader)) => return normalize_address(&leader),
                Ok(None) => tracing::warn!("no coordinator leads yet; trying {}", self.address),
                Err(e) => tracing::warn!("cannot look up the leader in etcd: {e}"),
            }
        }
        self.address.clone()
    }

    /// Connecting eagerly is what lets a failure name the address that could not be
    /// reached, instead of surfacing later as a bare `Unavailable` from the first call.
    async fn open(&self, address: &str, endpoint: Endpoint) -> Result<Client, CliError> {
        let channel = endpoint.connect().await.map_err(|e| CliError::Connect {
            address: address.to_string(),
            detail: error_chain(&e),
        })?;
        Ok(SessionServiceClient::new(channel).max_decoding_message_size(MAX_DECODE_BYTES))
    }
}

fn endpoint_for(address: &str) -> Result<Endpoint, CliError> {
    Ok(Endpoint::from_shared(address.to_string())
        .map_err(|e| {
            CliError::Other(format!(
                "invalid coordinator address {address:?}: {}",
                error_chain(&e)
            ))
        })?
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
        };
        assert_eq!(
            connect.to_string(),
            "cannot reach coordinator at http://127.0.0.1:1: tcp connect error"
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
