//! The processes a bench run starts: spawned with their stderr in a log file, their memory
//! read from `/proc/<pid>/status`, and stopped by pid — SIGTERM, a bounded wait, SIGKILL.
//! Only processes started here are ever signalled.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Memory figures of one process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Mem {
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Threads.
    pub threads: u64,
}

/// Parses the `VmRSS`, `VmHWM` and `Threads` lines of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:").unwrap_or(0),
    })
}

/// The memory of process `pid`, if it is alive.
pub fn mem_of(pid: u32) -> Option<Mem> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// User + system CPU time (clock ticks) from a `/proc/<pid>/stat` text.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields count from its last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let ticks = parse_stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = u64::try_from(per_sec).ok().filter(|t| *t > 0)?;
    Some(std::time::Duration::from_secs_f64(
        ticks as f64 / per_sec as f64,
    ))
}

/// The 1-minute load average, from a `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

pub fn loadavg() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// One child process.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    /// Lines of its stdout, when it was spawned with `capture_stdout`.
    stdout: Option<mpsc::Receiver<String>>,
}

impl Proc {
    /// Starts `program args`, stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        env: &[(&str, &str)],
        capture_stdout: bool,
    ) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let stdout = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mem(&self) -> Option<Mem> {
        mem_of(self.pid())
    }

    /// The rest of the first stdout line that starts with `prefix`, waiting at most
    /// `timeout` (e.g. `listening on ` → the address).
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let Some(rx) = &self.stdout else {
            bail!("{}: stdout is not captured", self.name);
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(_) => bail!(
                    "{} printed no {prefix:?} line within {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                ),
            }
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM (if it still runs).
    pub fn terminate(&mut self) {
        if self.running() {
            let _ = signal(self.pid(), libc::SIGTERM);
        }
    }

    /// Sends `sig` (a request the process answers, such as SIGUSR1).
    pub fn send(&self, sig: libc::c_int) -> std::io::Result<()> {
        signal(self.pid(), sig)
    }

    /// Waits for the exit until `deadline`, then SIGKILLs it. Always reaps it.
    pub fn reap(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    eprintln!(
                        "mesh-bench: {} (pid {}) did not stop in time; killing it",
                        self.name,
                        self.pid()
                    );
                    let _ = self.child.kill();
                    return self.child.wait().ok();
                }
                Err(_) => return None,
            }
        }
    }

    /// SIGTERM, then at most `grace` for it to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.terminate();
        self.reap(Instant::now() + grace)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops every process of `procs` in parallel: SIGTERM to all, then one shared deadline.
pub fn stop_all(procs: &mut [Proc], grace: Duration) {
    for p in procs.iter_mut() {
        p.terminate();
    }
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        p.reap(deadline);
    }
}

fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet, so the
    // pid cannot have been reused by another process.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_parsed() {
        let text = "Name:\tmesh-coordinator\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\n\
                    VmRSS:\t   18000 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kib: 18000,
                hwm_kib: 20480,
                threads: 3
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn stat_cpu_and_loadavg_are_parsed() {
        let stat = "1234 (mesh (co) r) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_loadavg("3.78 3.73 3.94 2/321 25198\n"), Some(3.78));
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn our_own_memory_is_readable() {
        let mem = mem_of(std::process::id()).expect("this process has a status file");
        assert!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib);
        assert!(mem.threads >= 1);
    }
}
