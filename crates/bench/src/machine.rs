//! What the figures of a run depend on besides the mesh: the machine (`nproc`, CPU,
//! memory), how the measured binaries were linked, and how long the scheduler takes a
//! core away from a busy process here.
//!
//! The last is the floor under every tail figure. With every core busy — as during the
//! runs, where a coordinator, N workers and the bench share two cores — anything else
//! the machine runs (kernel threads, daemons, the hypervisor) can only get a core by
//! preempting one of them, for a scheduler slice of a millisecond or more. A round that
//! meets such a gap is that much slower whatever the mesh does; the raw limit meets them
//! too.

use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long threads that spin on every core saw the clock jump: a jump is time the
/// thread was not running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SchedulerGaps {
    pub threads: usize,
    pub seconds: f64,
    /// Gaps longer than 1 ms, per thread and second.
    pub over_1ms_per_s: f64,
    /// Gaps longer than 0.5 ms, per thread and second.
    pub over_half_ms_per_s: f64,
    /// The longest gap any thread saw, ms.
    pub max_ms: f64,
}

/// Spins one thread per core for `how_long`, each noting every jump of the monotonic
/// clock between two consecutive readings (which are otherwise ~20 ns apart).
pub fn scheduler_gaps(threads: usize, how_long: Duration) -> SchedulerGaps {
    let spinners: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let (mut prev, mut over_half, mut over_1, mut max) =
                    (start, 0u64, 0u64, Duration::ZERO);
                loop {
                    let now = Instant::now();
                    let gap = now - prev;
                    if gap > Duration::from_micros(500) {
                        over_half += 1;
                        if gap > Duration::from_millis(1) {
                            over_1 += 1;
                        }
                    }
                    max = max.max(gap);
                    prev = now;
                    if now - start >= how_long {
                        return (over_half, over_1, max);
                    }
                }
            })
        })
        .collect();
    let results: Vec<(u64, u64, Duration)> = spinners
        .into_iter()
        .map(|t| t.join().expect("spinner thread"))
        .collect();
    let per_thread_second = |n: u64| n as f64 / threads as f64 / how_long.as_secs_f64();
    SchedulerGaps {
        threads,
        seconds: how_long.as_secs_f64(),
        over_1ms_per_s: per_thread_second(results.iter().map(|r| r.1).sum()),
        over_half_ms_per_s: per_thread_second(results.iter().map(|r| r.0).sum()),
        max_ms: results
            .iter()
            .map(|r| r.2)
            .max()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
    }
}

/// How an ELF executable is linked, from its header and program headers: `static` (no
/// interpreter) or `dynamic`, and `PIE` or not. `None` for what is not a 64-bit
/// little-endian ELF file.
pub fn linkage(elf: &[u8]) -> Option<&'static str> {
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let kind = u16_at(16)?;
    let (phoff, phentsize, phnum) = (
        usize::try_from(u64_at(32)?).ok()?,
        usize::from(u16_at(54)?),
        usize::from(u16_at(56)?),
    );
    let mut interp = false;
    for i in 0..phnum {
        interp |= u32_at(phoff + i * phentsize)? == PT_INTERP;
    }
    Some(match (interp, kind) {
        (false, ET_EXEC) => "static",
        (false, ET_DYN) => "static PIE",
        (true, ET_DYN) => "dynamic PIE",
        (true, ET_EXEC) => "dynamic",
        _ => return None,
    })
}

/// [`linkage`] of the file at `path` (its first 64 KiB hold the headers).
pub fn linkage_of(path: &Path) -> String {
    use std::io::Read;
    let mut head = Vec::with_capacity(64 * 1024);
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    match read.ok().and_then(|_| linkage(&head)) {
        Some(kind) => kind.to_string(),
        None => "unknown".to_string(),
    }
}

/// The `model name` of the first CPU in a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

/// `MemTotal` of a `/proc/meminfo` text, KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_are_parsed() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
                       processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
        assert_eq!(
            mem_total_kib("MemTotal:       24683520 kB\nMemFree: 1 kB\n"),
            Some(24_683_520)
        );
    }

    /// A minimal ELF header with program headers of the given types.
    fn elf(kind: u16, segments: &[u32]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56 * segments.len()];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[16..18].copy_from_slice(&kind.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, p_type) in segments.iter().enumerate() {
            e[64 + 56 * i..68 + 56 * i].copy_from_slice(&p_type.to_le_bytes());
        }
        e
    }

    #[test]
    fn linkage_is_read_from_the_elf_headers() {
        const LOAD: u32 = 1;
        const INTERP: u32 = 3;
        assert_eq!(linkage(&elf(2, &[LOAD, LOAD])), Some("static"));
        assert_eq!(linkage(&elf(3, &[LOAD])), Some("static PIE"));
        assert_eq!(linkage(&elf(3, &[INTERP, LOAD])), Some("dynamic PIE"));
        assert_eq!(linkage(&elf(2, &[INTERP, LOAD])), Some("dynamic"));
        assert_eq!(linkage(b"#!/bin/sh\n"), None);
        // Program headers past the end of what was read: not a guess.
        let mut cut = elf(2, &[LOAD]);
        cut.truncate(66);
        assert_eq!(linkage(&cut), None);
        // This test binary is whatever cargo built; it is an ELF file either way.
        let me = std::env::current_exe().unwrap();
        assert_ne!(linkage_of(&me), "unknown");
    }

    #[test]
    fn a_short_probe_reports_per_thread_rates() {
        let gaps = scheduler_gaps(1, Duration::from_millis(50));
        assert_eq!(gaps.threads, 1);
        assert!(gaps.over_1ms_per_s <= gaps.over_half_ms_per_s);
        assert!(gaps.max_ms >= 0.0 && gaps.max_ms < 50.0, "{gaps:?}");
    }
}
