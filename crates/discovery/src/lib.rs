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
//! - [`credentials`]: [`ClientCredentials`], what a client of the coordinator trusts and
//!   presents (TLS roots, a client certificate, a token); [`EtcdSecurity`] is etcd's.
//! - [`flags`]: [`ClientFlags`] and [`EtcdFlags`], the security flags of every binary.
//! - [`error`]: [`DiscoveryError`], and which etcd failures are worth retrying.

pub mod connect;
pub mod credentials;
pub mod error;
pub mod flags;
pub mod keys;
pub mod leader;
pub mod lease;
pub mod worker;

pub use connect::{
    CONNECT_TIMEOUT, ETCD_PASSWORD_ENV, EtcdSecurity, OP_TIMEOUT, bounded, connect_etcd,
    connect_etcd_secured, connect_etcd_with_retry, connect_etcd_with_retry_secured,
};
pub use credentials::{ClientCredentials, ROLE_METADATA, TOKEN_ENV};
pub use error::DiscoveryError;
pub use flags::{ClientFlags, EtcdFlags};
pub use keys::{DEFAULT_ELECTION, DEFAULT_PREFIX};
pub use leader::LeaderLookup;
pub use lease::{KeepAlive, Refresh, ttl_secs};
pub use worker::{WorkerLease, WorkerRecord};

/// The etcd client type every function here takes.
pub use etcd_client::Client;
