//! Child processes this run started, and nothing else: every signal goes to a pid we
//! spawned and have not reaped yet, and dropping a [`Proc`] kills and reaps it.
//!
//! Children get their own process group (a Ctrl-C on the terminal reaches `mesh-chaos`
//! alone, which then cleans up in order: SIGINT and SIGTERM end the run through the
//! same drops as a failure or a panic) and `PR_SET_PDEATHSIG` = SIGKILL, so where the
//! kernel delivers it a `mesh-chaos` that is itself SIGKILLed leaves no coordinator or
//! worker behind (etcd is the testkit's child, without it). The death signal fires when
//! the *thread* that spawned the child exits: children are spawned only from the main
//! thread, which lives as long as the process.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// SIGSTOPped by us and not yet continued.
    stopped: bool,
    /// Reaped: the pid may belong to someone else now, so no more signals.
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program` with its stderr (and stdout, unless `pipe_stdout`) going to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        pipe_stdout: bool,
    ) -> io::Result<Proc> {
        let file = File::create(&log)?;
        let stdout = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(file.try_clone()?)
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            // The workers' `result acknowledged` lines are at info.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", program.display())))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            stopped: false,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for lines on stdout that start with each of `prefixes`;
    /// returns the rest of each line, in the order of `prefixes`. A thread keeps reading
    /// (and dropping) stdout to its end, so the child never blocks on a full pipe.
    pub fn read_stdout_lines(
        &mut self,
        prefixes: &[&'static str],
        timeout: Duration,
    ) -> io::Result<Vec<String>> {
        let stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("stdout is not piped"))?;
        let (tx, rx) = mpsc::channel::<(usize, String)>();
        let wanted: Vec<&'static str> = prefixes.to_vec();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for (i, prefix) in wanted.iter().enumerate() {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        let _ = tx.send((i, rest.trim().to_string()));
                    }
                }
            }
        });
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        let deadline = std::time::Instant::now() + timeout;
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, rest)) => found[i] = Some(rest),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{} printed no {:?} within {timeout:?}; log {}",
                            self.name,
                            prefixes,
                            self.log.display()
                        ),
                    ));
                }
            }
        }
        Ok(found.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        if self.exited.is_some() {
            return Err(io::Error::other(format!("{} has exited", self.name)));
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
        // not yet reaped (`exited` is None), so it cannot name another process.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn pause(&mut self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.stopped = true;
        Ok(())
    }

    pub fn resume(&mut self) -> io::Result<()> {
        self.signal(libc::SIGCONT)?;
        self.stopped = false;
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        self.stopped
    }

    /// SIGKILL and reap (a stopped process dies of SIGKILL too).
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.exited = Some(status);
        self.stopped = false;
        Ok(status)
    }

    /// The exit status if the process has ended (reaping it), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            lines,
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A plain HTTP/1.0 GET on loopback with short timeouts: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let socket: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&socket, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// Where the mesh binaries are: `--bin-dir`, else beside this executable (`cargo build
/// --workspace --bins` puts them all in target/<profile>/).
pub fn find_binaries(bin_dir: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = match bin_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow::anyhow!("the executable has no directory"))?,
    };
    let find = |name: &str| {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(anyhow::anyhow!(
                "{} is missing: build the binaries first (`cargo build --workspace --bins`) or pass --bin-dir",
                path.display()
            ))
        }
    };
    Ok((find("mesh-coordinator")?, find("mesh-worker")?))
}
