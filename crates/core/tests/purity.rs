//! The core is pure: no I/O, no clock, no randomness — time and ids are inputs. This is
//! ARCHITECTURE.md's invariant 1, checked two ways, so a change that breaks it fails here:
//!
//! - its dependencies, direct and transitive, hold no crate that does I/O, reads a clock
//!   or draws random numbers (`cargo tree` on the real lockfile);
//! - its source names no part of `std` that does (files, sockets, processes, threads,
//!   the environment, the clocks).

use std::path::Path;
use std::process::Command;

/// What the core may depend on directly: data (serde, JSON), hashing, and Ed25519
/// (`ed25519-dalek`, pure arithmetic over curve25519: the core verifies worker and
/// coordinator signatures in its validate path and its offline verifier, issue 13; its
/// tree below holds no RNG — the `rand_core` feature is off — and no I/O, which the
/// FORBIDDEN check below keeps true).
const ALLOWED_DIRECT: [&str; 5] = ["serde", "serde_json", "sha2", "hex", "ed25519-dalek"];

/// Crates that do I/O, keep time or make randomness: none may appear anywhere below the
/// core.
const FORBIDDEN: [&str; 16] = [
    "tokio",
    "mio",
    "async-std",
    "futures",
    "futures-util",
    "rand",
    "rand_core",
    "getrandom",
    "uuid",
    "chrono",
    "time",
    "socket2",
    "nix",
    "tonic",
    "hyper",
    "reqwest",
];

/// Parts of `std` that reach outside the process or read a clock.
const FORBIDDEN_STD: [&str; 9] = [
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant",
    "std::io::stdin",
    "std::os",
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_core_depends_on_no_io_clock_or_randomness_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "agentmesh-core",
            "-e",
            "normal",
            "--prefix",
            "depth",
            "--format",
            "{p}",
        ])
        .current_dir(manifest_dir())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).expect("UTF-8");
    // Each line: depth digits, then "name vX.Y.Z ...".
    let deps: Vec<(usize, String)> = tree
        .lines()
        .filter_map(|line| {
            let digits = line.chars().take_while(char::is_ascii_digit).count();
            let depth = line[..digits].parse().ok()?;
            let name = line[digits..].split_whitespace().next()?.to_string();
            Some((depth, name))
        })
        .collect();
    assert!(
        deps.len() > 3,
        "cargo tree printed the core's tree:\n{tree}"
    );
    let direct: Vec<&str> = deps
        .iter()
        .filter(|(depth, _)| *depth == 1)
        .map(|(_, name)| name.as_str())
        .collect();
    for name in &direct {
        assert!(
            ALLOWED_DIRECT.contains(name),
            "agentmesh-core depends on {name}; the core may depend only on {ALLOWED_DIRECT:?}"
        );
    }
    for (_, name) in &deps {
        assert!(
            !FORBIDDEN.contains(&name.as_str()),
            "agentmesh-core pulls in {name}, which does I/O, keeps time or makes randomness:\n{tree}"
        );
    }
}

#[test]
fn the_core_source_uses_no_io_clock_or_environment() {
    let mut files = Vec::new();
    let mut dirs = vec![manifest_dir().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "found the core's source files: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for forbidden in FORBIDDEN_STD {
                assert!(
                    !code.contains(forbidden),
                    "{}:{}: the core uses {forbidden}: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}
