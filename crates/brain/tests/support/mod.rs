//! Test support: a scripted HTTP/1.1 server on 127.0.0.1 standing in for a model API, and
//! turn contexts to think about.

#![allow(dead_code)]

use agentmesh_brain::TurnContext;
use agentmesh_core::{Entry, EntryType, Phase};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status, extra headers and body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Wait, then do the inner step.
    Delay(Duration, Box<Step>),
    /// Close the connection without answering.
    Close,
}

impl Step {
    pub fn json(status: u16, body: &Value) -> Step {
        Step::Respond {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    pub fn raw(status: u16, body: &str) -> Step {
        Step::Respond {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    pub fn with_header(self, name: &str, value: &str) -> Step {
        match self {
            Step::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Step::Respond {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted model API: request n gets step n; after the last step, the last repeats.
pub struct MockServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    pub async fn start(steps: Vec<Step>) -> MockServer {
        assert!(!steps.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            let steps = Arc::new(steps);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let steps = steps.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &steps, &recorded).await;
                });
            }
        });
        MockServer {
            url,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the one request of a connection (every response closes it).
async fn serve(
    mut stream: TcpStream,
    steps: &[Step],
    recorded: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    // Read the head.
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[body_start..body_start + length]).unwrap_or(Value::Null);
    let index = {
        let mut r = recorded.lock().unwrap();
        r.push(Recorded {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        r.len() - 1
    };
    let mut step = steps[index.min(steps.len() - 1)].clone();
    loop {
        match step {
            Step::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                step = *inner;
            }
            Step::Close => return Ok(()),
            Step::Respond {
                status,
                headers,
                body,
            } => {
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (n, v) in headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                stream.write_all(out.as_bytes()).await?;
                stream.shutdown().await?;
                return Ok(());
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn entry(
    seq: u64,
    round: u32,
    phase: Phase,
    role: &str,
    ty: EntryType,
    content: &str,
) -> Entry {
    Entry {
        seq,
        round,
        phase,
        role: role.into(),
        worker_id: format!("{role}-1"),
        entry_type: ty,
        timestamp_ms: seq as i64,
        content: content.into(),
        verdict: None,
        concerns: Vec::new(),
        proposal_hash: String::new(),
        proposal_version: 0,
        signature: Vec::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        attempt: 1,
        public_key: None,
        chain_hash: Default::default(),
    }
}

/// A round 1 CONTRIBUTE turn for `role` after the supervisor's framework.
pub fn contribute(role: &str) -> TurnContext {
    TurnContext {
        session_id: "s-1".into(),
        task: "Design a URL shortener.".into(),
        roles: vec!["supervisor".into(), "backend".into(), "security".into()],
        max_rounds: 2,
        role: role.into(),
        round: 1,
        phase: Phase::Contribute,
        attempt: 1,
        transcript: vec![entry(
            1,
            0,
            Phase::Framing,
            "supervisor",
            EntryType::Framework,
            "Goal: a URL shortener. Outline: 1. API 2. Storage",
        )]
        .into(),
        proposal_version: 0,
        proposal_hash: String::new(),
    }
}

/// A round 1 REVIEW turn for `role` of proposal v1.
pub fn review(role: &str) -> TurnContext {
    let mut ctx = contribute(role);
    ctx.transcript.push(entry(
        2,
        1,
        Phase::Contribute,
        "backend",
        EntryType::Analysis,
        "Use base62 ids.",
    ));
    let mut p = entry(
        3,
        1,
        Phase::Synthesize,
        "supervisor",
        EntryType::Proposal,
        "# Proposal v1\n1. API: POST /links\n2. Storage: PostgreSQL",
    );
    p.proposal_version = 1;
    p.proposal_hash = agentmesh_core::hash::proposal_hash(&p.content);
    ctx.proposal_hash = p.proposal_hash.clone();
    ctx.proposal_version = 1;
    ctx.transcript.push(p);
    ctx.phase = Phase::Review;
    ctx
}
