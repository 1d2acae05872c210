//! A real, throw-away etcd for tests.
//!
//! Tests of the cluster mode run against the real etcd binary (Debian's `etcd-server`,
//! which serves the v3 API), never a mock: leases, watches, transactions and elections
//! are exactly the behaviour under test. [`EtcdServer::start`] gives each test its own
//! single-member cluster on two ephemeral loopback ports with its own data directory, so
//! tests run in parallel without sharing state.
//!
//! The server can be taken through the failures the cluster mode has to survive:
//! [`EtcdServer::stop`] + [`EtcdServer::start_again`] (a restart that keeps the data and
//! the ports), [`EtcdServer::kill`] (a crash), and [`EtcdServer::pause`] /
//! [`EtcdServer::resume`] (a frozen process: connections stay open, nothing answers).
//!
//! All methods block the calling thread (at most a bounded wait); call them from a
//! multi-threaded tokio test or from `spawn_blocking`.
//!
//! # Layout
//!
//! - [`EtcdServer`]: one etcd process, its ports, data directory and log file.
//! - `free_port`, `healthy`: picking ports and the raw HTTP/1.0 `/health` probe (no HTTP
//!   client dependency: this crate must stay tiny).
//! - [`find_etcd`]: where the binary comes from (`ETCD_BIN`, then `PATH`, then
//!   `/usr/bin/etcd`), or why there is none.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a start may take before it counts as failed. etcd starts in well under a
/// second here; the margin is for a loaded 2-core CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A free port can be taken by someone else between our probe and etcd's bind; a start
/// whose process exits at once is retried with fresh ports this many times.
const START_ATTEMPTS: usize = 3;

const MISSING: &str = "etcd not found: install Debian's etcd-server (`make deps` does)";

/// One etcd process serving the v3 API on `127.0.0.1`, with its own temp data directory.
///
/// Dropping it kills and reaps the process and removes the directory.
pub struct EtcdServer {
    bin: PathBuf,
    // Declared before `dir` so that the process is gone before its directory is removed.
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts a fresh single-member etcd and waits until `/health` reports it healthy.
    ///
    /// # Panics
    ///
    /// When the etcd binary cannot be found (see the crate docs for where it looks).
    pub fn start() -> io::Result<EtcdServer> {
        let bin = etcd_binary();
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = EtcdServer {
                bin: bin.clone(),
                child: None,
                dir: tempfile::Builder::new()
                    .prefix("agentmesh-etcd-")
                    .tempdir()?,
                client_port: free_port()?,
                peer_port: free_port()?,
            };
            if server.client_port == server.peer_port {
                continue;
            }
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                // Only an early exit (most likely a lost port race) is worth another try.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not pick two distinct ports")))
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The process id while the process runs (for logs; signal it through the methods).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory (kept across [`EtcdServer::stop`] / [`EtcdServer::start_again`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// etcd's log (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Graceful stop: SIGTERM, then wait (SIGKILL after 10 s). Data and ports are kept.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // A paused process only acts on SIGTERM once it runs again.
        signal(&child, libc::SIGCONT)?;
        signal(&child, libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the process again on the same data directory and ports, and waits until it
    /// is healthy. Stops the running one first, if any.
    pub fn start_again(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    /// A crash: SIGKILL and reap. Data and ports are kept for [`EtcdServer::start_again`].
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Freezes the process (SIGSTOP): its sockets stay open but nothing answers.
    pub fn pause(&self) -> io::Result<()> {
        match &self.child {
            Some(child) => signal(child, libc::SIGSTOP),
            None => Err(io::Error::other("etcd is not running")),
        }
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        match &self.child {
            Some(child) => signal(child, libc::SIGCONT),
            None => Err(io::Error::other("etcd is not running")),
        }
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            // A short election timeout makes the single member lead soon after a start or
            // restart; there are no peers whose heartbeats could be late.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // A developer's ETCD_* settings (etcd reads them as flags) must not leak into a
        // test server.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let child = match cmd.spawn() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                panic!("{MISSING} (tried {})", self.bin.display())
            }
            spawned => spawned?,
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                let tail = log_tail(&self.log_path());
                let kind = if tail.contains("address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!("etcd exited during start ({status}); log tail:\n{tail}"),
                ));
            }
            if healthy(self.client_port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                let tail = log_tail(&self.log_path());
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd not healthy within {}s; log tail:\n{tail}",
                        START_TIMEOUT.as_secs()
                    ),
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Errors here have nowhere to go; the process is ours and gets killed and reaped
        // so no etcd outlives its test. `dir` is removed after this by TempDir's Drop.
        let _ = self.kill();
    }
}

/// `ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`. Panics when none exists.
fn etcd_binary() -> PathBuf {
    find_etcd().unwrap_or_else(|why| panic!("{why}"))
}

/// Where the etcd binary is (`ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`), or
/// one line saying why there is none: for callers that skip what needs etcd instead of
/// failing ([`EtcdServer::start`] panics).
pub fn find_etcd() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        return Err(format!(
            "{MISSING} (ETCD_BIN={} does not exist)",
            bin.display()
        ));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file());
    match on_path {
        Some(bin) => Ok(bin),
        None if Path::new("/usr/bin/etcd").is_file() => Ok(PathBuf::from("/usr/bin/etcd")),
        None => Err(format!(
            "{MISSING}; not on PATH, not at /usr/bin/etcd, ETCD_BIN unset"
        )),
    }
}

/// A port that was free a moment ago: bind port 0, read what the kernel gave, release.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// `GET /health` over a raw HTTP/1.0 connection: true when etcd answers 200 with
/// `"health":"true"` (it says false while it has no leader).
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let probe = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let ok_status = response
            .lines()
            .next()
            .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
        Ok(ok_status && response.replace(' ', "").contains("\"health\":\"true\""))
    };
    probe().unwrap_or(false)
}

fn signal(child: &Child, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
    // is not yet reaped (we hold its `Child`), so it cannot name another process.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_restarts_and_cleans_up() {
        let mut etcd = EtcdServer::start().expect("etcd starts");
        let port = etcd.client_port;
        assert_eq!(etcd.endpoint(), format!("http://127.0.0.1:{port}"));
        assert!(healthy(port));
        let dir = etcd.dir.path().to_path_buf();
        assert!(
            etcd.data_dir().join("member").is_dir(),
            "etcd wrote its data"
        );

        etcd.stop().unwrap();
        assert!(etcd.pid().is_none());
        assert!(!healthy(port), "nothing answers after stop");

        etcd.start_again().unwrap();
        assert_eq!(
            etcd.endpoint(),
            format!("http://127.0.0.1:{port}"),
            "same port"
        );
        assert!(healthy(port));

        etcd.pause().unwrap();
        assert!(!healthy(port), "a paused etcd does not answer");
        etcd.resume().unwrap();
        assert!(
            healthy(port) || {
                sleep(Duration::from_millis(500));
                healthy(port)
            }
        );

        let pid = etcd.pid().unwrap();
        drop(etcd);
        assert!(!dir.exists(), "the temp dir is removed on drop");
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive, "the process was reaped on drop");
    }

    #[test]
    fn kill_then_start_again_keeps_the_data_dir() {
        let mut etcd = EtcdServer::start().expect("etcd starts");
        etcd.kill().unwrap();
        assert!(!healthy(etcd.client_port));
        assert!(etcd.data_dir().join("member").is_dir());
        etcd.start_again().unwrap();
        assert!(healthy(etcd.client_port));
    }
}
