//! An OpenAI-compatible chat endpoint on loopback that answers like a model would, and
//! fails on purpose when told to: the model brains' retries and metrics can then be seen
//! without a model. `POST /v1/chat/completions` only; a review request (one with a
//! `response_format`) gets an approving verdict, anything else a short contribution.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct MockModel {
    /// `http://127.0.0.1:<port>/v1`, for `--base-url`.
    pub base_url: String,
    calls: Arc<AtomicUsize>,
}

impl MockModel {
    /// Answers every request; the first `fail_first` get HTTP 503 (retried by the brain).
    pub fn start(fail_first: usize) -> MockModel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock model");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("address"));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, &counter, fail_first));
            }
        });
        MockModel { base_url, calls }
    }

    /// Requests answered so far (failed ones included).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// One connection: requests one after another (keep-alive) until it closes.
fn serve(stream: TcpStream, calls: &AtomicUsize, fail_first: usize) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if first {
                first = false;
                continue;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let (status, json) = if n < fail_first {
            (
                "503 Service Unavailable",
                r#"{"error":{"message":"overloaded, try again"}}"#.to_string(),
            )
        } else {
            let review = String::from_utf8_lossy(&body).contains("response_format");
            let content = if review {
                r#"{"verdict":"APPROVE","concerns":[],"summary":"the proposal covers the backend"}"#
            } else {
                "The backend keeps an append-only ledger table keyed by tenant and order id."
            };
            let reply = serde_json::json!({
                "id": format!("mock-{n}"),
                "object": "chat.completion",
                "model": "mock-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
            });
            ("200 OK", reply.to_string())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
