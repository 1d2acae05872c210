//! The live workers: who is connected, for which role, how loaded, and the channel
//! that reaches each one.
//!
//! Assignment is least-loaded-first: a session that needs a role takes the connected,
//! non-draining worker of that role with the fewest sessions (ties: fewest turns done,
//! then id), and only while that worker is below its capacity. Every change of the
//! worker set bumps [`Registry::changes`], which PENDING sessions wait on.

use agentmesh_proto::v1::{self, CoordinatorMessage};
use agentmesh_store::{RegistryEvent, WorkerRecord, WorkerRegistry};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};
use tonic::Status;

pub type WorkerTx = mpsc::Sender<Result<CoordinatorMessage, Status>>;

struct Worker {
    info: v1::WorkerInfo,
    /// Which stream this is: a reconnect under the same id gets a new number, so the old
    /// stream's cleanup cannot remove the new one.
    connection: u64,
    /// Sessions this worker holds a role in.
    sessions: BTreeSet<String>,
    /// Transcript cursors the worker reported in its Hello: it already holds these.
    cursors: HashMap<String, u64>,
    tx: WorkerTx,
}

pub struct Registry {
    workers: Mutex<BTreeMap<String, Worker>>,
    /// Cluster mode: a worker must also hold a live lease to be assigned work.
    lease_mode: bool,
    /// Workers registered under a live lease, by id (cluster mode).
    leased: Mutex<BTreeMap<String, WorkerRecord>>,
    changes: watch::Sender<u64>,
    next_connection: std::sync::atomic::AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(false)
    }
}

impl Registry {
    pub fn new(lease_mode: bool) -> Self {
        Registry {
            workers: Mutex::new(BTreeMap::new()),
            lease_mode,
            leased: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            next_connection: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Adds a connected worker and returns its connection number; refuses a second
    /// connection under the same id.
    pub fn register(
        &self,
        info: v1::WorkerInfo,
        cursors: HashMap<String, u64>,
        tx: WorkerTx,
    ) -> Result<u64, crate::errors::MeshError> {
        let connection = self
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                connection,
                sessions: BTreeSet::new(),
                cursors,
                tx,
            },
        );
        drop(workers);
        self.changes.send_modify(|n| *n += 1);
        Ok(connection)
    }

    /// Removes the worker if `connection` is still its current stream; returns the
    /// sessions it held a role in (empty if another stream has replaced it).
    pub fn remove_connection(&self, worker_id: &str, connection: u64) -> Vec<String> {
        let current = self
            .workers
            .lock()
            .expect("registry lock")
            .get(worker_id)
            .is_some_and(|w| w.connection == connection);
        if current {
            self.remove(worker_id)
        } else {
            Vec::new()
        }
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
        let leased = self.leased.lock().expect("lease lock");
        let mut workers = self.workers.lock().expect("registry lock");
        let chosen = workers
            .values()
            .filter(|w| w.info.role == role && !w.info.draining)
            .filter(|w| !self.lease_mode || leased.contains_key(&w.info.worker_id))
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

    /// Sessions the worker holds a role in.
    pub fn sessions_of(&self, worker_id: &str) -> Vec<String> {
        let workers = self.workers.lock().expect("registry lock");
        workers
            .get(worker_id)
            .map(|w| w.sessions.iter().cloned().collect())
            .unwrap_or_default()
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

    /// Every worker that is connected or (cluster mode) registered under a lease.
    pub fn list(&self) -> Vec<v1::WorkerInfo> {
        let leased = self.leased.lock().expect("lease lock");
        let workers = self.workers.lock().expect("registry lock");
        let mut all: Vec<v1::WorkerInfo> = workers
            .values()
            .map(|w| {
                let mut info = w.info.clone();
                info.connected = true;
                info.leased = !self.lease_mode || leased.contains_key(&info.worker_id);
                if let Some(record) = leased.get(&info.worker_id) {
                    info.address = record.address.clone();
                }
                info
            })
            .collect();
        for record in leased.values() {
            if !workers.contains_key(&record.worker_id) {
                all.push(v1::WorkerInfo {
                    worker_id: record.worker_id.clone(),
                    role: record.role.clone(),
                    capacity: record.capacity,
                    version: record.version.clone(),
                    address: record.address.clone(),
                    leased: true,
                    ..Default::default()
                });
            }
        }
        all.sort_by(|a, b| a.role.cmp(&b.role).then(a.worker_id.cmp(&b.worker_id)));
        all
    }

    /// Ends a worker's stream with `status`; its reader then removes it and its sessions
    /// reassign its turns.
    pub async fn evict(&self, worker_id: &str, status: Status) {
        if let Some(tx) = self.sender(worker_id) {
            let _ = tx.send(Err(status)).await;
        }
        // The reader task may be blocked on a silent peer: remove now as well.
        self.remove(worker_id);
    }

    /// Ends every worker stream (stepping down): workers reconnect to the new leader.
    pub async fn disconnect_all(&self, status: Status) {
        let ids: Vec<String> = self
            .workers
            .lock()
            .expect("registry lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            if let Some(tx) = self.sender(&id) {
                let _ = tx.send(Err(status.clone())).await;
            }
            self.remove(&id);
        }
    }

    /// Applies a lease change from the worker registry. Returns the ids whose lease is
    /// gone while they still hold a stream.
    pub fn apply_lease_event(&self, event: RegistryEvent) -> Vec<String> {
        let mut leased = self.leased.lock().expect("lease lock");
        let gone: Vec<String> = match event {
            RegistryEvent::Snapshot(records) => {
                let fresh: BTreeMap<String, WorkerRecord> = records
                    .into_iter()
                    .map(|r| (r.worker_id.clone(), r))
                    .collect();
                let gone = leased
                    .keys()
                    .filter(|id| !fresh.contains_key(*id))
                    .cloned()
                    .collect();
                *leased = fresh;
                gone
            }
            RegistryEvent::Up(record) => {
                leased.insert(record.worker_id.clone(), record);
                Vec::new()
            }
            RegistryEvent::Down { worker_id, .. } => {
                leased.remove(&worker_id);
                vec![worker_id]
            }
        };
        drop(leased);
        self.changes.send_modify(|n| *n += 1);
        let workers = self.workers.lock().expect("registry lock");
        gone.into_iter()
            .filter(|id| workers.contains_key(id))
            .collect()
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

/// Follows the worker leases (cluster mode): a worker whose lease expires — a frozen
/// process, one cut off from etcd — is evicted, and its sessions reassign its turns.
pub async fn follow_leases(
    mesh: std::sync::Arc<crate::Mesh>,
    workers: std::sync::Arc<dyn WorkerRegistry>,
) {
    let mut events = workers.watch();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = mesh.shutdown.cancelled() => return,
        };
        let Some(event) = event else {
            tracing::error!("the worker registry watch ended; restarting it");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            events = workers.watch();
            continue;
        };
        for worker_id in mesh.registry.apply_lease_event(event) {
            tracing::warn!(%worker_id, "lease expired; evicting the worker");
            let sessions = mesh.registry.sessions_of(&worker_id);
            mesh.registry
                .evict(
                    &worker_id,
                    Status::unavailable("your lease expired; register again and reconnect"),
                )
                .await;
            mesh.worker_lost(&worker_id, sessions).await;
        }
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
