//! The workers' view: the results each worker saw acknowledged, read back from the
//! `result acknowledged` lines that `mesh-worker` logs (crates/worker/src/lib.rs) when a
//! `ResultAck` with code OK arrives.
//!
//! A line looks like (tracing's default format, no colours when stderr is a file):
//!
//! ```text
//! 2026-01-01T00:00:00.000000Z  INFO agentmesh_worker: result acknowledged session=3f2a
//!     seq=14 round=2 phase=REVIEW role=backend attempt=1 worker=backend-1 duplicate=false
//! ```
//!
//! (one line in the log). `seq=0` is the acknowledgement of a failure report (`TurnFailed`),
//! which appends nothing.

use std::path::Path;

/// One acknowledged result as a worker saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The log file it came from and the line number (1-based), for failure messages.
    pub source: String,
    pub session: String,
    pub seq: u64,
    pub round: u32,
    pub phase: String,
    pub role: String,
    pub attempt: u32,
    pub worker: String,
    pub duplicate: bool,
}

const MARKER: &str = "result acknowledged";

/// Parses one log line; `None` unless it is a well-formed `result acknowledged` line.
pub fn parse_line(line: &str, source: &str) -> Option<Ack> {
    let at = line.find(MARKER)?;
    let mut fields = std::collections::HashMap::new();
    for token in line[at + MARKER.len()..].split_whitespace() {
        if let Some((key, value)) = token.split_once('=') {
            fields.insert(key, value.trim_matches('"'));
        }
    }
    Some(Ack {
        source: source.to_string(),
        session: fields.get("session")?.to_string(),
        seq: fields.get("seq")?.parse().ok()?,
        round: fields.get("round")?.parse().ok()?,
        phase: fields.get("phase")?.to_string(),
        role: fields.get("role")?.to_string(),
        attempt: fields.get("attempt")?.parse().ok()?,
        worker: fields.get("worker")?.to_string(),
        duplicate: fields.get("duplicate")?.parse().ok()?,
    })
}

/// Every acknowledgement in one log file, and the number of lines that carry the marker
/// but do not parse (a changed log format must not make the check vacuous).
pub fn read_file(path: &Path) -> std::io::Result<(Vec<Ack>, Vec<String>)> {
    let text = std::fs::read_to_string(path)?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let mut acks = Vec::new();
    let mut malformed = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.contains(MARKER) {
            continue;
        }
        let source = format!("{name}:{}", i + 1);
        match parse_line(line, &source) {
            Some(ack) => acks.push(ack),
            None => malformed.push(format!("{source}: {line}")),
        }
    }
    Ok((acks, malformed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_workers_line() {
        let line = "2026-01-01T00:00:00.123456Z  INFO agentmesh_worker: result acknowledged \
                    session=3f2a9c01b2d4 seq=14 round=2 phase=REVIEW role=backend attempt=3 \
                    worker=backend-1 duplicate=false";
        let ack = parse_line(line, "w.log:9").unwrap();
        assert_eq!(
            ack,
            Ack {
                source: "w.log:9".into(),
                session: "3f2a9c01b2d4".into(),
                seq: 14,
                round: 2,
                phase: "REVIEW".into(),
                role: "backend".into(),
                attempt: 3,
                worker: "backend-1".into(),
                duplicate: false,
            }
        );
        assert_eq!(
            parse_line("INFO agentmesh_worker: joined the mesh", "x"),
            None
        );
        assert_eq!(
            parse_line("INFO result acknowledged session=a seq=x", "x"),
            None,
            "malformed"
        );
    }

    #[test]
    fn reads_a_file_and_reports_malformed_lines() {
        let dir = std::env::temp_dir().join(format!("mesh-chaos-acks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("backend-1.0.log");
        std::fs::write(
            &path,
            "noise\n\
             x INFO agentmesh_worker: result acknowledged session=s seq=1 round=0 phase=FRAMING role=supervisor attempt=1 worker=supervisor-1 duplicate=false\n\
             x INFO agentmesh_worker: result acknowledged session=s\n",
        )
        .unwrap();
        let (acks, malformed) = read_file(&path).unwrap();
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].source, "backend-1.0.log:2");
        assert_eq!(malformed.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
