//! What a client of an agentmesh cluster needs from etcd, and nothing more: connect,
//! find the leading coordinator, and (for a worker) stay registered under a lease.
//!
//! `mesh-worker` and `meshctl` link this crate, not `agentmesh-store`: no session store,
//! no local database. The store's etcd implementations build on the same pieces (its
//! [`connect_etcd`] helpers, its lease keeper, its worker registration, the key layout), so
//! each is written once.
//!
//! # etcd key layout
//!
//! ```text
//! {prefix}/workers/<role>/<worker-id>     WorkerRecord JSON, under the worker's lease
//! <election>/<lease id in hex>            etcd's election keys; value = LeaderAddress
//! ```
//!
//! `prefix` is [`DEFAULT_PREFIX`] (`/agentmesh/v1`) and `election` [`DEFAULT_ELECTION`]
//! (`/agentmesh/v1/leader`) in production; [`keys`] builds every key. The session keys
//! (`{prefix}/sessions/...`, `{prefix}/entries/...`) belong to `agentmesh-store`.
//!
//! # Layout
//!
//! - [`connect`]: [`connect_etcd`] (one bounded attempt) and [`connect_etcd_with_retry`]
//!   (back-off until etcd answers or shutdown), both with the HTTP/2 keep-alive that lets a
//!   watch notice a dead connection; [`bounded`] for one etcd call with a deadline.
//! - [`leader`]: [`LeaderLookup`], the election's current value as a
//!   [`agentmesh_proto::LeaderAddress`].
//! - [`worker`]: [`WorkerRecord`] and [`WorkerLease`]: register, keep alive (re-registering
//!   after an expiry), revoke.
//! - [`lease`]: [`KeepAlive`], one lease kept alive over one keep-alive stream.
//! - [`keys`]: the key layout, defined once.
//! - [`error`]: [`DiscoveryError`], and which etcd failures are worth retrying.

pub mod connect;
pub mod error;
pub mod keys;
pub mod leader;
pub mod lease;
pub mod worker;

pub use connect::{CONNECT_TIMEOUT, OP_TIMEOUT, bounded, connect_etcd, connect_etcd_with_retry};
pub use error::DiscoveryError;
pub use keys::{DEFAULT_ELECTION, DEFAULT_PREFIX};
pub use leader::LeaderLookup;
pub use lease::{KeepAlive, Refresh, ttl_secs};
pub use worker::{WorkerLease, WorkerRecord};

/// The etcd client type every function here takes.
pub use etcd_client::Client;
