//! The edges: where the coordinator meets the network. Each edge turns wire messages
//! into calls of the service ([`crate::service`]) and domain answers back into wire
//! messages, and maps every [`crate::errors::MeshError`] to its protocol's status once.
//!
//! - [`gate`]: the one layer for what every call shares — who is calling and whether it
//!   may ([`auth`]), and who answers it (the leader serves, a standby forwards clients
//!   and redirects workers).
//! - [`tls`]: both ports' connections, plain or TLS with a certificate swapped on reload;
//!   [`security`]: the files it all comes from, reloaded on SIGHUP.
//! - [`grpc`]: the worker streams, the client API, the watch streams' shared frames.
//! - [`http`]: probes, `/metrics`, the dashboard, the JSON API and SSE.
//!
//! Nothing below the edges imports them (tested: `tests/layers.rs`).

pub(crate) mod auth;
pub(crate) mod gate;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod security;
pub(crate) mod tls;
