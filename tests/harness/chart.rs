//! The Helm chart as the e2e tests see it: rendered by the real `helm` (installed by
//! `make helm`, `scripts/helm-setup.sh`), and the KEDA trigger it renders for a role, so
//! a test can evaluate exactly that query against a real Prometheus.

use std::path::PathBuf;
use std::process::Command;

/// The repository's root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `helm template` of the chart with one of its `ci/` values files.
pub fn render(values_file: &str) -> String {
    let root = repo_root();
    let helm = root.join(".tools/bin/helm");
    assert!(
        helm.exists(),
        "{} is missing: run `make helm` (`make test` does it first)",
        helm.display()
    );
    let chart = root.join("deploy/helm/agentmesh");
    let out = Command::new(&helm)
        .arg("template")
        .arg("agentmesh")
        .arg(&chart)
        .arg("-f")
        .arg(chart.join("ci").join(values_file))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// A KEDA ScaledObject's Prometheus trigger and bounds, as rendered.
#[derive(Debug, Clone)]
pub struct KedaTrigger {
    pub query: String,
    pub threshold: f64,
    pub activation_threshold: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

impl KedaTrigger {
    /// The replica count KEDA asks for at `value`: zero while the scaler is inactive
    /// (value at or below the activation threshold) and zero is allowed; otherwise the
    /// HPA's `ceil(value / threshold)` for an AverageValue target, within the bounds.
    pub fn desired_replicas(&self, value: f64) -> u32 {
        if value <= self.activation_threshold && self.min_replicas == 0 {
            return 0;
        }
        let wanted = (value / self.threshold).ceil() as u32;
        wanted.clamp(self.min_replicas.max(1), self.max_replicas)
    }
}

/// The ScaledObject the chart rendered for `role`.
pub fn keda_trigger(rendered: &str, role: &str) -> KedaTrigger {
    let role_label = format!("agentmesh.io/role: \"{role}\"");
    let doc = rendered
        .split("\n---")
        .find(|doc| doc.contains("kind: ScaledObject") && doc.contains(&role_label))
        .unwrap_or_else(|| panic!("no ScaledObject for role {role} in:\n{rendered}"));
    let field = |name: &str| -> String {
        let prefix = format!("{name}:");
        let line = doc
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} in the ScaledObject:\n{doc}"));
        yaml_scalar(line[prefix.len()..].trim())
    };
    let number = |name: &str| -> f64 {
        field(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {}", field(name)))
    };
    KedaTrigger {
        query: field("query"),
        threshold: number("threshold"),
        activation_threshold: number("activationThreshold"),
        min_replicas: number("minReplicaCount") as u32,
        max_replicas: number("maxReplicaCount") as u32,
    }
}

/// A one-line YAML scalar: double-quoted (JSON escapes), single-quoted, or plain.
fn yaml_scalar(text: &str) -> String {
    if text.starts_with('"') {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("bad double-quoted {text}: {e}"))
    } else if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_the_replica_arithmetic() {
        assert_eq!(yaml_scalar(r#""a{b=\"c\"}""#), r#"a{b="c"}"#);
        assert_eq!(yaml_scalar("'it''s'"), "it's");
        assert_eq!(yaml_scalar("4"), "4");
        let trigger = KedaTrigger {
            query: String::new(),
            threshold: 2.0,
            activation_threshold: 0.0,
            min_replicas: 0,
            max_replicas: 8,
        };
        assert_eq!(trigger.desired_replicas(0.0), 0);
        assert_eq!(trigger.desired_replicas(1.0), 1);
        assert_eq!(trigger.desired_replicas(3.0), 2);
        assert_eq!(trigger.desired_replicas(4.0), 2);
        assert_eq!(trigger.desired_replicas(100.0), 8);
    }
}
