//! Who leads: the value of etcd's election, as the coordinators publish it.

use crate::connect::{OP_TIMEOUT, timed_out};
use crate::error::DiscoveryError;
use agentmesh_proto::LeaderAddress;
use etcd_client::Client;
use std::time::Duration;

/// Reads the current leader of one election. Cheap to clone; every call asks etcd again,
/// so a caller that looks up the leader before each connection follows a failover.
///
/// Right after a leader dies its key outlives it by up to the election TTL, so the value
/// may name a coordinator that is gone: connecting to it is refused until a new leader is
/// elected. Callers retry (see `meshctl --wait`, the worker's reconnect loop).
#[derive(Clone)]
pub struct LeaderLookup {
    client: Client,
    election: String,
    op_timeout: Duration,
}

impl std::fmt::Debug for LeaderLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderLookup")
            .field("election", &self.election)
            .finish_non_exhaustive()
    }
}

impl LeaderLookup {
    /// Looks up the leader of `election` (e.g. [`crate::DEFAULT_ELECTION`]).
    pub fn new(client: Client, election: &str) -> LeaderLookup {
        LeaderLookup {
            client,
            election: election.to_string(),
            op_timeout: OP_TIMEOUT,
        }
    }

    /// How long one lookup may take (default [`OP_TIMEOUT`]).
    pub fn with_op_timeout(mut self, timeout: Duration) -> LeaderLookup {
        self.op_timeout = timeout;
        self
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// The leader's addresses, or `None` while nobody leads (or the value holds none).
    pub async fn leader(&self) -> Result<Option<LeaderAddress>, DiscoveryError> {
        Ok(self
            .value()
            .await?
            .as_deref()
            .and_then(LeaderAddress::parse))
    }

    /// The election's raw value, or `None` while nobody leads.
    pub async fn value(&self) -> Result<Option<String>, DiscoveryError> {
        election_value(&self.client, &self.election, self.op_timeout).await
    }
}

/// The current value of `election`, or `None` while nobody leads; bounded by `timeout`.
pub async fn election_value(
    client: &Client,
    election: &str,
    timeout: Duration,
) -> Result<Option<String>, DiscoveryError> {
    let mut elections = client.election_client();
    match tokio::time::timeout(timeout, elections.leader(election)).await {
        Ok(Ok(resp)) => Ok(resp
            .kv()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
        // etcd answers "no leader" with an error rather than an empty answer.
        Ok(Err(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("no leader") =>
        {
            Ok(None)
        }
        Ok(Err(e)) => Err(DiscoveryError::from_etcd("read leader", e)),
        Err(_) => Err(timed_out("read leader", timeout)),
    }
}
