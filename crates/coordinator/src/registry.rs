//! The live workers: who is connected, for which role, how loaded, and the channel
//! that reaches each one.
//!
//! Assignment is least-loaded-first: a session that needs a role takes the connected,
//! non-draining worker of that role with the fewest sessions (ties: fewest turns done,
//! then id), and only while that worker is below its capacity. Every change of the
//! worker set bumps [`Registry::changes`], which PENDING sessions wait on.

use agentmesh_proto::v1::{self, CoordinatorMessage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};
use tonic::Status;

pub type WorkerTx = mpsc::Sender<Result<CoordinatorMessage, Status>>;

struct Worker {
    info: v1::WorkerInfo,
    /// Sessions this worker holds a role in.
    sessions: BTreeSet<String>,
    /// Transcript cursors the worker reported in its Hello: it already holds these.
    cursors: HashMap<String, u64>,
    tx: WorkerTx,
}

pub struct Registry {
    workers: Mutex<BTreeMap<String, Worker>>,
    changes: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            workers: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
        }
    }
}

impl Registry {
    /// Adds a connected worker; refuses a second connection under the same id.
    pub fn register(
        &self,
        info: v1::WorkerInfo,
        cursors: HashMap<String, u64>,
        tx: WorkerTx,
    ) -> Result<(), crate::errors::MeshError> {
        let mut workers = self.workers.lock().expect("registry lock");
        if workers.contains_key(&info.worker_id) {
            return Err(crate::errors::MeshError::WorkerAlreadyConnected(
                info.worker_id.clone(),
            ));
        }
        workers.insert(
            info.worker_id.clone(),
            Worker {
                info,
                sessions: BTreeSet::new(),
                cursors,
                tx,
            },
        );
        drop(workers);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Removes a worker and returns the sessions it held a role in.
    pub fn remove(&self, worker_id: &str) -> Vec<String> {
        let removed = self
            .workers
            .lock()
            .expect("registry lock")
            .remove(worker_id);
        self.changes.send_modify(|n| *n += 1);
        removed.map_or_else(Vec::new, |w| w.sessions.into_iter().collect())
    }

    /// Takes the least-loaded live worker of `role` for `session_id`, skipping `exclude`.
    pub fn reserve(
        &self,
        role: &str,
        session_id: &str,
        exclude: &BTreeSet<String>,
    ) -> Option<String> {
        let mut workers = self.workers.lock().expect("registry lock");
        let chosen = workers
            .values()
            .filter(|w| w.info.role == role && !w.info.draining)
            .filter(|w| (w.sessions.len() as u32) < w.info.capacity)
            .filter(|w| !exclude.contains(&w.info.worker_id) && !w.sessions.contains(session_id))
            .min_by(|a, b| {
                a.sessions
                    .len()
                    .cmp(&b.sessions.len())
                    .then(a.info.turns_completed.cmp(&b.info.turns_completed))
                    .then(a.info.worker_id.cmp(&b.info.worker_id))
            })
            .map(|w| w.info.worker_id.clone())?;
        let worker = workers.get_mut(&chosen).expect("just found");
        worker.sessions.insert(session_id.to_string());
        worker.info.load = worker.sessions.len() as u32;
        Some(chosen)
    }

    /// The session no longer uses this worker.
    pub fn release(&self, worker_id: &str, session_id: &str) {
        let mut workers = self.workers.lock().expect("registry lock");
        if let Some(w) = workers.get_mut(worker_id) {
            w.sessions.remove(session_id);
            w.cursors.remove(session_id);
            w.info.load = w.sessions.len() as u32;
            drop(workers);
            // Capacity was freed: a waiting session may now find a worker.
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub fn set_draining(&self, worker_id: &str) {
        if let Some(w) = self
            .workers
            .lock()
            .expect("registry lock")
            .get_mut(worker_id)
        {
            w.info.draining = true;
        }
    }

    pub fn count_turn(&self, worker_id: &str) {
        if let Some(w) = self
            .workers
            .lock()
            .expect("registry lock")
            .get_mut(worker_id)
        {
            w.info.turns_completed += 1;
        }
    }

    /// The seq up to which the worker said (in its Hello) it holds `session_id`.
    pub fn reported_cursor(&self, worker_id: &str, session_id: &str) -> u64 {
        let workers = self.workers.lock().expect("registry lock");
        workers
            .get(worker_id)
            .and_then(|w| w.cursors.get(session_id).copied())
            .unwrap_or(0)
    }

    /// The channel to a worker, if it is still connected.
    pub fn sender(&self, worker_id: &str) -> Option<WorkerTx> {
        let workers = self.workers.lock().expect("registry lock");
        workers.get(worker_id).map(|w| w.tx.clone())
    }

    pub fn list(&self) -> Vec<v1::WorkerInfo> {
        let workers = self.workers.lock().expect("registry lock");
        let mut all: Vec<v1::WorkerInfo> = workers.values().map(|w| w.info.clone()).collect();
        all.sort_by(|a, b| a.role.cmp(&b.role).then(a.worker_id.cmp(&b.worker_id)));
        all
    }

    /// Every sender, for broadcasting shutdown.
    pub fn all_senders(&self) -> Vec<WorkerTx> {
        let workers = self.workers.lock().expect("registry lock");
        workers.values().map(|w| w.tx.clone()).collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, role: &str, capacity: u32) -> v1::WorkerInfo {
        v1::WorkerInfo {
            worker_id: id.into(),
            role: role.into(),
            capacity,
            ..Default::default()
        }
    }

    #[test]
    fn reserve_spreads_load_and_respects_capacity() {
        let registry = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        registry
            .register(worker("b1", "backend", 2), HashMap::new(), tx.clone())
            .unwrap();
        registry
            .register(worker("b2", "backend", 2), HashMap::new(), tx.clone())
            .unwrap();
        assert!(
            registry
                .register(worker("b2", "backend", 2), HashMap::new(), tx)
                .is_err()
        );
        let none = BTreeSet::new();
        let picks: Vec<_> = (0..4)
            .map(|i| {
                registry
                    .reserve("backend", &format!("s{i}"), &none)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, ["b1", "b2", "b1", "b2"]);
        assert_eq!(
            registry.reserve("backend", "s5", &none),
            None,
            "both at capacity"
        );
        assert_eq!(registry.reserve("frontend", "s5", &none), None);
        registry.release("b2", "s1");
        assert_eq!(
            registry.reserve("backend", "s5", &none).as_deref(),
            Some("b2")
        );
        assert_eq!(
            registry.remove("b1"),
            vec!["s0".to_string(), "s2".to_string()]
        );
    }
}
