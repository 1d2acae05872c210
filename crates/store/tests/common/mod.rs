//! What the conformance suites share: fixtures of core types, a real etcd, waiting.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use agentmesh_core::{Entry, SessionSummary};
use agentmesh_etcd_testkit::EtcdServer;
use serde_json::json;
use std::future::Future;
use std::time::Duration;

/// Instantiates every `suite` test for one implementation, as `<backend>::<test>`: each
/// builds a fixture with `$make` and runs `suite::<test>` on its `$field`.
macro_rules! backend_suite {
    ($field:ident, $backend:ident, $make:path, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::common::init_tracing();
                    let fixture = $make().await;
                    super::suite::$test(fixture.$field.as_ref()).await;
                }
            )*
        }
    };
}

/// Logs of the code under test, shown for failing tests (`RUST_LOG` overrides).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "agentmesh_store=debug".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A transcript entry. Built from JSON so that fields the core adds with
/// `#[serde(default)]` do not break these fixtures.
pub fn entry(seq: u64, content: &str) -> Entry {
    serde_json::from_value(json!({
        "seq": seq,
        "round": 1,
        "phase": "CONTRIBUTE",
        "role": "backend",
        "worker_id": "w-backend-1",
        "type": "ANALYSIS",
        "timestamp_ms": 1_700_000_000_000i64 + seq as i64,
        "content": content,
        "verdict": null,
        "concerns": [],
        "proposal_hash": "",
        "proposal_version": 0,
        "signature": [],
    }))
    .expect("entry fixture matches the core's Entry")
}

/// A session header in `status` ("CONTRIBUTE", "CONSENSUS", ...).
pub fn header(id: &str, created_ms: i64, status: &str, entry_count: u64) -> SessionSummary {
    serde_json::from_value(json!({
        "id": id,
        "task": format!("design {id}"),
        "roles": ["supervisor", "backend"],
        "max_rounds": 3,
        "status": status,
        "round": 1,
        "created_ms": created_ms,
        "updated_ms": created_ms + entry_count as i64,
        "reason": "",
        "final_version": 0,
        "final_hash": "",
        "open_objections": [],
        "assignments": {"backend": "w-backend-1"},
        "entry_count": entry_count,
    }))
    .expect("header fixture matches the core's SessionSummary")
}

/// A fresh etcd of our own (started off the async workers: it blocks while it waits).
pub async fn start_etcd() -> EtcdServer {
    tokio::task::spawn_blocking(|| EtcdServer::start().expect("etcd starts"))
        .await
        .expect("start task")
}

pub async fn connect(etcd: &EtcdServer) -> etcd_client::Client {
    agentmesh_store::connect_etcd(&[etcd.endpoint()])
        .await
        .expect("etcd answers")
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not within {limit:?}"),
    }
}

/// Retries `attempt` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(limit, what, async {
        loop {
            if let Some(v) = attempt().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}
