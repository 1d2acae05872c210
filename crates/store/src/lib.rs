//! Where agentmesh keeps what must outlive a process, and how coordinators agree on who
//! leads: three seams, each a trait with an embedded implementation for one machine and an
//! etcd implementation for a cluster.
//!
//! | seam | embedded | durable / cluster |
//! | --- | --- | --- |
//! | [`SessionStore`]: session headers and append-only transcripts | [`MemoryStore`] | [`RedbStore`] (one file), [`EtcdStore`] |
//! | [`WorkerRegistry`]: live workers under leases, with a change stream | [`MemoryRegistry`] | [`EtcdRegistry`] |
//! | [`Election`]: one coordinator leads; its writes are fenced | [`SoleLeader`] | [`EtcdElection`] |
//!
//! The same conformance suites (`tests/store_conformance.rs`,
//! `tests/registry_conformance.rs`, `tests/election_conformance.rs`) run against every
//! implementation, the etcd ones against a real etcd started by `agentmesh-etcd-testkit`.
//!
//! # etcd key layout
//!
//! ```text
//! {prefix}/sessions/<id>                       session header (SessionSummary as JSON)
//! {prefix}/entries/<id>/<seq, 20 digits>       one transcript entry (Entry as JSON)
//! {prefix}/workers/<role>/<worker-id>          WorkerRecord as JSON, under the worker's lease
//! <election name>/<lease id in hex>            etcd's election keys (e.g. /agentmesh/v1/leader/...)
//! ```
//!
//! `prefix` is `/agentmesh/v1` in production ([`DEFAULT_PREFIX`]). Headers and entries
//! live under different prefixes, so listing sessions never reads a transcript.
//!
//! # Fencing
//!
//! Every [`SessionStore::write`] carries a [`Fence`]. [`EtcdStore`] turns
//! [`Fence::Leader`] into a transaction guard "the leader key still exists with the
//! create revision it had when we won", so a coordinator that lost its leadership (lease
//! expired while it was frozen, or it resigned) cannot write, even if it does not know yet
//! that it lost: it gets [`StoreError::Fenced`] and nothing is written.
//!
//! # Errors
//!
//! Only [`StoreError::Unavailable`] is retryable ([`StoreError::is_retryable`]): etcd did
//! not answer in time or the connection broke. A write that got `Unavailable` may or may
//! not have been applied (etcd may commit a transaction whose answer was lost); retrying it
//! then yields [`StoreError::SeqGap`] with `have` past `got`, which a caller recognises by
//! reading [`SessionStore::entries`] back.
//!
//! # Using the seams (coordinator and worker)
//!
//! - Connect with [`connect_etcd_with_retry`] (logs and retries until etcd answers or
//!   shutdown) or [`connect_etcd`] (one bounded attempt). Both come from
//!   `agentmesh-discovery` and set the HTTP/2 keep-alive that lets watches notice a dead
//!   connection; a hand-built client should too.
//! - Leading: `let leadership = election.campaign(addr).await?`, then write with
//!   `&leadership.fence`, and `select!` on [`Leadership::lost`] beside the work. On loss,
//!   or on any [`StoreError::Fenced`], stop every session actor at once (acknowledge
//!   nothing more), drop the `Leadership`, and campaign again.
//! - Taking over: [`SessionStore::unfinished`], then [`SessionStore::entries`] of each.
//! - Replies: refuse one whose entry would exceed [`SessionStore::max_entry_bytes`] before
//!   it reaches the core; the store would answer [`StoreError::TooLarge`].
//! - Workers: keep the [`Registration`] for the life of the process; `revoke().await` on
//!   a clean shutdown. Watchers treat every [`RegistryEvent::Snapshot`] as "replace".
//!
//! # Layout
//!
//! - [`error`]: [`StoreError`], [`StoreFuture`], and the mapping of etcd client errors.
//! - [`store`]: [`SessionStore`], [`Fence`], and [`MemoryStore`], [`RedbStore`], [`EtcdStore`].
//! - [`registry`]: [`WorkerRegistry`], [`WorkerRecord`], [`RegistryEvent`], [`Registration`],
//!   and [`MemoryRegistry`], [`EtcdRegistry`].
//! - [`election`]: [`Election`], [`Leadership`], and [`SoleLeader`], [`EtcdElection`].
//! - [`etcd`]: [`connect_etcd`], [`connect_etcd_with_retry`] and what the etcd
//!   implementations share (timeouts, key ranges).
//!
//! What clients of a cluster need without a store (connecting, the leader's address,
//! a worker's lease, the worker key layout) is in `agentmesh-discovery`; this crate builds
//! its etcd registry and election on it and re-exports [`WorkerRecord`],
//! [`DEFAULT_PREFIX`] and [`DEFAULT_ELECTION`] from there. Retries back off with
//! `agentmesh_proto::Backoff`.

pub mod election;
pub mod error;
pub mod etcd;
pub mod registry;
pub mod store;

pub use election::{Election, EtcdElection, Leadership, SoleLeader};
pub use error::{StoreError, StoreFuture};
pub use etcd::{connect_etcd, connect_etcd_with_retry};
pub use registry::{
    EtcdRegistry, MemoryRegistry, Registration, RegistryEvent, WorkerRecord, WorkerRegistry,
};
pub use store::{EtcdStore, Fence, MemoryStore, RedbStore, SessionStore};

/// The key prefix of the cluster mode's etcd data, and the election the coordinators
/// campaign on (defined once, in `agentmesh-discovery`).
pub use agentmesh_discovery::{DEFAULT_ELECTION, DEFAULT_PREFIX};
