//! What each role is needed for right now: the live sessions that hold a worker of the
//! role, and those waiting for one. The autoscalers scale each role's Deployment on it
//! (`/metrics`, `agentmesh_role_sessions`), so a role with no worker still shows the
//! sessions that wait for it, and can scale up from zero.
//!
//! Session actors report their roles whenever an assignment changes (a worker found, a
//! worker lost, the session ended); nothing here is touched per turn.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// One session's roles, split by whether a worker holds them. Plain vectors: a session
/// has a handful of roles, and every live session keeps one of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionRoles {
    pub assigned: Vec<String>,
    /// PENDING on the role, or its worker is gone and no replacement was found yet.
    pub waiting: Vec<String>,
}

/// Sessions holding, and sessions waiting for, one role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleDemand {
    pub assigned: u64,
    pub waiting: u64,
}

/// The live sessions' roles, by session id.
#[derive(Default)]
pub(crate) struct Demand {
    sessions: Mutex<HashMap<String, SessionRoles>>,
}

impl Demand {
    /// Records `session`'s roles as they are now.
    pub fn set(&self, session: &str, roles: SessionRoles) {
        self.sessions
            .lock()
            .expect("demand lock")
            .insert(session.to_string(), roles);
    }

    /// The session ended, or its actor stopped: it needs nothing any more.
    pub fn remove(&self, session: &str) {
        self.sessions.lock().expect("demand lock").remove(session);
    }

    /// The term ended: another coordinator runs every session now.
    pub fn clear(&self) {
        self.sessions.lock().expect("demand lock").clear();
    }

    /// Per role, how many live sessions hold it and how many wait for it.
    pub fn by_role(&self) -> BTreeMap<String, RoleDemand> {
        let mut roles: BTreeMap<String, RoleDemand> = BTreeMap::new();
        for session in self.sessions.lock().expect("demand lock").values() {
            for role in &session.assigned {
                roles.entry(role.clone()).or_default().assigned += 1;
            }
            for role in &session.waiting {
                roles.entry(role.clone()).or_default().waiting += 1;
            }
        }
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(assigned: &[&str], waiting: &[&str]) -> SessionRoles {
        SessionRoles {
            assigned: assigned.iter().map(|r| r.to_string()).collect(),
            waiting: waiting.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn demand_counts_sessions_per_role_and_forgets_ended_ones() {
        let demand = Demand::default();
        demand.set("s1", roles(&["supervisor"], &["backend"]));
        demand.set("s2", roles(&["supervisor", "backend"], &[]));
        let by_role = demand.by_role();
        assert_eq!(
            by_role["backend"],
            RoleDemand {
                assigned: 1,
                waiting: 1
            }
        );
        assert_eq!(
            by_role["supervisor"],
            RoleDemand {
                assigned: 2,
                waiting: 0
            }
        );
        // A later report replaces the earlier one: s1 found its backend.
        demand.set("s1", roles(&["supervisor", "backend"], &[]));
        assert_eq!(demand.by_role()["backend"].assigned, 2);
        assert_eq!(demand.by_role()["backend"].waiting, 0);
        demand.remove("s2");
        assert_eq!(demand.by_role()["supervisor"].assigned, 1);
        demand.clear();
        assert!(demand.by_role().is_empty());
    }
}
