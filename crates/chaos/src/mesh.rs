//! The mesh under test: one real etcd, coordinators in cluster mode, workers registered
//! under leases, every one a child process of this run on loopback ephemeral ports.
//!
//! Only the main thread touches a [`Mesh`] (see `procs` on why). The coordinators' gRPC
//! URLs are shared with the session driver through [`Mesh::urls`].

use crate::procs::{Proc, http_get};
use agentmesh_etcd_testkit::EtcdServer;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The seven built-in roles, supervisor first.
pub const ROLES: [&str; 7] = [
    "supervisor",
    "backend",
    "frontend",
    "security",
    "architect",
    "devops",
    "database",
];

#[derive(Clone, Debug)]
pub struct MeshOpts {
    pub coordinator_bin: PathBuf,
    pub worker_bin: PathBuf,
    pub log_dir: PathBuf,
    pub coordinators: usize,
    pub replicas: usize,
    pub think_ms: u64,
    pub capacity: u32,
    pub lease_ttl: u64,
    pub election_ttl: u64,
    pub phase_timeout: Duration,
    pub pending_timeout: Duration,
}

pub struct Coordinator {
    pub id: String,
    pub proc: Proc,
    pub url: String,
    /// host:port of the HTTP side (`/readyz`).
    pub http: String,
}

pub struct Worker {
    pub id: String,
    pub role: String,
    /// None while it is down (killed, not started again yet).
    pub proc: Option<Proc>,
    /// How many processes have run under this id (names the log files).
    pub starts: u32,
}

impl Worker {
    pub fn is_up(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| !p.is_paused())
    }
}

pub struct Mesh {
    pub opts: MeshOpts,
    // Field order is drop order: workers, then coordinators, then etcd.
    pub workers: Vec<Worker>,
    pub coordinators: Vec<Coordinator>,
    next_coordinator: u32,
    /// The live coordinators' gRPC URLs, for the clients.
    pub urls: Arc<Mutex<Vec<String>>>,
    /// Processes that exited without being killed by us: a crash, each a failure.
    pub crashes: Vec<String>,
    pub etcd: EtcdServer,
    pub etcd_up: bool,
}

impl Mesh {
    pub fn start(opts: MeshOpts) -> anyhow::Result<Mesh> {
        std::fs::create_dir_all(&opts.log_dir)?;
        let etcd = EtcdServer::start()?;
        let workers = ROLES
            .iter()
            .flat_map(|role| {
                (1..=opts.replicas).map(move |i| Worker {
                    id: format!("{role}-{i}"),
                    role: role.to_string(),
                    proc: None,
                    starts: 0,
                })
            })
            .collect();
        let mut mesh = Mesh {
            opts,
            workers,
            coordinators: Vec::new(),
            next_coordinator: 0,
            urls: Arc::new(Mutex::new(Vec::new())),
            crashes: Vec::new(),
            etcd,
            etcd_up: true,
        };
        for _ in 0..mesh.opts.coordinators {
            mesh.add_coordinator()?;
        }
        for i in 0..mesh.workers.len() {
            mesh.start_worker(i)?;
        }
        Ok(mesh)
    }

    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    fn publish_urls(&self) {
        *self.urls.lock().expect("urls lock") =
            self.coordinators.iter().map(|c| c.url.clone()).collect();
    }

    /// Starts one more coordinator (ids c0, c1, ...; a replacement gets the next one).
    pub fn add_coordinator(&mut self) -> anyhow::Result<String> {
        let id = format!("c{}", self.next_coordinator);
        self.next_coordinator += 1;
        let args: Vec<String> = [
            "--id",
            &id,
            "--etcd",
            &self.etcd.endpoint(),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--election-ttl",
            &self.opts.election_ttl.to_string(),
            "--phase-timeout",
            &format!("{}ms", self.opts.phase_timeout.as_millis()),
            "--pending-timeout",
            &format!("{}ms", self.opts.pending_timeout.as_millis()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.opts.log_dir.join(format!("coordinator-{id}.log"));
        let mut proc = Proc::spawn(&id, &self.opts.coordinator_bin, &args, log, true)?;
        let found =
            proc.read_stdout_lines(&["listening on ", "http on "], Duration::from_secs(20))?;
        self.coordinators.push(Coordinator {
            id: id.clone(),
            proc,
            url: format!("http://{}", found[0]),
            http: found[1].clone(),
        });
        self.publish_urls();
        Ok(id)
    }

    /// (Re)starts worker `i` under its id, with a fresh log file.
    pub fn start_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let endpoint = self.etcd.endpoint();
        let opts = &self.opts;
        let w = &mut self.workers[i];
        let args: Vec<String> = [
            "--role",
            &w.role,
            "--id",
            &w.id,
            "--etcd",
            &endpoint,
            "--lease-ttl",
            &opts.lease_ttl.to_string(),
            "--think-ms",
            &opts.think_ms.to_string(),
            "--capacity",
            &opts.capacity.to_string(),
            "--grace-secs",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = opts
            .log_dir
            .join(format!("worker-{}.{}.log", w.id, w.starts));
        w.proc = Some(Proc::spawn(&w.id, &opts.worker_bin, &args, log, false)?);
        w.starts += 1;
        Ok(())
    }

    /// The index of the one coordinator whose `/readyz` says it leads; None while there
    /// is none, or more than one claims it (a deposed leader that does not know yet). A
    /// frozen coordinator is not asked (it would not answer).
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = self
            .coordinators
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.proc.is_paused())
            .filter(|(_, c)| matches!(http_get(&c.http, "/readyz"), Some((200, body)) if body == "leader\n"))
            .map(|(i, _)| i)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// SIGKILLs coordinator `i` and forgets it; returns its id and pid.
    pub fn kill_coordinator(&mut self, i: usize) -> anyhow::Result<(String, u32)> {
        let mut c = self.coordinators.remove(i);
        self.publish_urls();
        let pid = c.proc.pid();
        c.proc.kill()?;
        Ok((c.id, pid))
    }

    /// SIGSTOPs coordinator `i`; returns its id and pid.
    pub fn pause_coordinator(&mut self, i: usize) -> anyhow::Result<(String, u32)> {
        let c = &mut self.coordinators[i];
        c.proc.pause()?;
        Ok((c.id.clone(), c.proc.pid()))
    }

    /// SIGCONTs coordinator `id` if it is still there and frozen.
    pub fn resume_coordinator(&mut self, id: &str) -> anyhow::Result<()> {
        if let Some(c) = self.coordinators.iter_mut().find(|c| c.id == id)
            && c.proc.is_paused()
        {
            c.proc.resume()?;
        }
        Ok(())
    }

    /// A worker to hit, starting at `planned`: one that is up and, when there are
    /// replicas, whose role keeps another replica up (a soak that takes a role away
    /// entirely only measures the phase timeout).
    pub fn eligible_worker(&self, planned: usize) -> Option<usize> {
        let n = self.workers.len();
        (0..n).map(|k| (planned + k) % n).find(|&i| {
            let w = &self.workers[i];
            let others_up = self
                .workers
                .iter()
                .filter(|o| o.role == w.role && o.id != w.id)
                .all(Worker::is_up);
            w.is_up() && (self.opts.replicas == 1 || others_up)
        })
    }

    pub fn kill_worker(&mut self, i: usize) -> anyhow::Result<u32> {
        let mut proc = self.workers[i]
            .proc
            .take()
            .ok_or_else(|| anyhow::anyhow!("worker {} is not running", self.workers[i].id))?;
        let pid = proc.pid();
        proc.kill()?;
        Ok(pid)
    }

    pub fn pause_worker(&mut self, i: usize) -> anyhow::Result<u32> {
        let proc = self.workers[i]
            .proc
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("worker is not running"))?;
        proc.pause()?;
        Ok(proc.pid())
    }

    pub fn resume_worker(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(proc) = self.workers[i].proc.as_mut()
            && proc.is_paused()
        {
            proc.resume()?;
        }
        Ok(())
    }

    /// Graceful etcd stop (SIGTERM); the data dir and ports are kept.
    pub fn stop_etcd(&mut self) -> anyhow::Result<()> {
        self.etcd.stop()?;
        self.etcd_up = false;
        Ok(())
    }

    /// Starts etcd again on the same data dir and ports; a few tries, since its port
    /// could be taken meanwhile (an outgoing connection's ephemeral port).
    pub fn start_etcd(&mut self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            match self.etcd.start_again() {
                Ok(()) => {
                    self.etcd_up = true;
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        Err(anyhow::anyhow!(
            "etcd does not start again: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        ))
    }

    /// Finds processes that exited on their own, records each as a crash (with its log's
    /// tail) and starts a replacement so the soak goes on. Returns the new crash lines.
    pub fn reap_crashes(&mut self) -> Vec<String> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < self.coordinators.len() {
            let c = &mut self.coordinators[i];
            if let Some(status) = c.proc.try_exit() {
                found.push(format!(
                    "coordinator {} (pid {}) exited on its own ({status}); log {}:\n{}",
                    c.id,
                    c.proc.pid(),
                    c.proc.log.display(),
                    c.proc.log_tail(15)
                ));
                self.coordinators.remove(i);
                self.publish_urls();
                continue;
            }
            i += 1;
        }
        let mut restart = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Some(proc) = w.proc.as_mut()
                && let Some(status) = proc.try_exit()
            {
                found.push(format!(
                    "worker {} (pid {}) exited on its own ({status}); log {}:\n{}",
                    w.id,
                    proc.pid(),
                    proc.log.display(),
                    proc.log_tail(15)
                ));
                w.proc = None;
                restart.push(i);
            }
        }
        for i in restart {
            if let Err(e) = self.start_worker(i) {
                found.push(format!(
                    "worker {}: cannot restart: {e}",
                    self.workers[i].id
                ));
            }
        }
        while self.coordinators.len() < self.opts.coordinators && !found.is_empty() {
            if let Err(e) = self.add_coordinator() {
                found.push(format!("cannot start a replacement coordinator: {e}"));
                break;
            }
        }
        self.crashes.extend(found.iter().cloned());
        found
    }

    /// How many coordinator processes this run has started.
    pub fn coordinators_started(&self) -> u32 {
        self.next_coordinator
    }

    /// Every worker log file written so far.
    pub fn worker_logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.opts.log_dir)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("worker-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs
    }

    /// Stops every coordinator and worker (SIGKILL, reaped), keeping etcd.
    pub fn stop_processes(&mut self) {
        for w in &mut self.workers {
            w.proc = None;
        }
        self.coordinators.clear();
        self.publish_urls();
    }
}
