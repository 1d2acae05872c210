//! `GET /metrics`: Prometheus text, through `prometheus-client`.
//!
//! | series | meaning |
//! | --- | --- |
//! | `agentmesh_role_sessions{role, state="assigned"}` | live sessions holding a worker of the role |
//! | `agentmesh_role_sessions{role, state="waiting"}` | live sessions waiting for one: PENDING on the role, or its worker is gone with no replacement yet |
//! | `agentmesh_role_workers{role}` | live workers of the role (connected and, in a cluster, leased) |
//! | `agentmesh_role_capacity{role}` | their summed `--capacity`, draining workers excluded |
//! | `agentmesh_coordinator_leader` | 1 on the leader, 0 on a standby |
//!
//! Only the leader knows sessions and workers, so only the leader reports the per-role
//! series: `sum()` or `max()` over every coordinator gives the mesh's figure.
//!
//! Beside them, what the coordinator measured as it worked (`crate::measure`): round,
//! phase, turn and store-write durations, sessions by outcome, turns by role and
//! outcome, tokens by role and type, connected watchers, whether the store answers. A role
//! appears once any worker or session names it; its series are 0 rather than absent
//! while it has nothing, so graphs and autoscalers read a real zero.
//!
//! Every value is read from the coordinator's own state when scraped (a collector), so
//! nothing is counted twice or left stale.

use crate::demand::RoleDemand;
use crate::state::Mesh;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One role's figures at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RoleFigures {
    pub sessions: RoleDemand,
    pub workers: u64,
    pub capacity: u64,
}

/// What the leader knows per role: its sessions' demand and its live workers.
pub(crate) fn role_figures(mesh: &Mesh) -> BTreeMap<String, RoleFigures> {
    let mut roles: BTreeMap<String, RoleFigures> = mesh
        .demand
        .by_role()
        .into_iter()
        .map(|(role, sessions)| {
            (
                role,
                RoleFigures {
                    sessions,
                    ..RoleFigures::default()
                },
            )
        })
        .collect();
    for worker in mesh.registry.list() {
        if !(worker.connected && worker.leased) {
            continue;
        }
        let figures = roles.entry(worker.role.clone()).or_default();
        figures.workers += 1;
        if !worker.draining {
            figures.capacity += u64::from(worker.capacity);
        }
    }
    roles
}

/// Reads the mesh when scraped.
struct MeshCollector {
    mesh: Arc<Mesh>,
}

impl std::fmt::Debug for MeshCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshCollector")
    }
}

impl Collector for MeshCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mesh = &self.mesh;
        let leading = mesh.is_leader();
        let leader = ConstGauge::new(i64::from(leading));
        leader.encode(encoder.encode_descriptor(
            "agentmesh_coordinator_leader",
            "1 while this coordinator leads, 0 on a standby",
            None,
            MetricType::Gauge,
        )?)?;
        if !leading {
            return Ok(());
        }
        let roles = role_figures(mesh);
        {
            let mut family = encoder.encode_descriptor(
                "agentmesh_role_sessions",
                "Live sessions holding a worker of the role (state=assigned) or waiting for one (state=waiting)",
                None,
                MetricType::Gauge,
            )?;
            for (role, figures) in &roles {
                for (state, value) in [
                    ("assigned", figures.sessions.assigned),
                    ("waiting", figures.sessions.waiting),
                ] {
                    let labels = [("role", role.as_str()), ("state", state)];
                    ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, value) in [
            (
                "agentmesh_role_workers",
                "Live workers of the role (connected and, in a cluster, leased)",
                (|f: &RoleFigures| f.workers) as fn(&RoleFigures) -> u64,
            ),
            (
                "agentmesh_role_capacity",
                "Summed --capacity of the role's live, non-draining workers",
                |f: &RoleFigures| f.capacity,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (role, figures) in &roles {
                let labels = [("role", role.as_str())];
                ConstGauge::new(value(figures) as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Every series, as Prometheus text, read from the mesh now.
pub(crate) fn render(mesh: &Arc<Mesh>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MeshCollector { mesh: mesh.clone() }));
    mesh.measures.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}
