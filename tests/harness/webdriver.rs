//! A minimal W3C WebDriver client for the dashboard tests.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port (in its own
//! process group), opens one headless Chromium session with a fresh profile directory,
//! and speaks the W3C protocol to it: JSON over plain HTTP/1.1 on 127.0.0.1. Dropping the
//! browser deletes the session, then kills the process group it started (chromedriver
//! and the Chromium it launched) by its id, and removes the profile.
//!
//! Only the commands the tests need: new session, navigate, find element(s) by CSS,
//! element text and attributes, clear, send keys, click, execute script (sync), take
//! screenshot, delete session. [`http`] is a plain JSON-over-HTTP helper for the API
//! checks that sit beside the browser checks.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts the browser and its driver; `CHROMIUM` / `CHROMEDRIVER` override.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C uses for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

static NEXT_PROFILE: AtomicU32 = AtomicU32::new(0);

/// A WebDriver error: the W3C `error` code (e.g. `no such element`) and its message.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl std::error::Error for WebDriverError {}

pub type Result<T> = std::result::Result<T, WebDriverError>;

fn transport(e: impl std::fmt::Display) -> WebDriverError {
    WebDriverError {
        error: "transport".into(),
        message: e.to_string(),
    }
}

/// A reference to an element of the current page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

/// One headless Chromium driven through chromedriver.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    driver_url: String,
    session_id: Option<String>,
    driver: Child,
    profile: PathBuf,
    /// chromedriver's log (with Chromium's output), for failure messages.
    pub log: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1400×1000 window.
    pub fn start() -> Browser {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.to_string());
        for path in [&chromium, &chromedriver] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install Debian's chromium and chromium-driver (`make deps`)"
            );
        }
        let n = NEXT_PROFILE.fetch_add(1, Ordering::SeqCst);
        let dir = crate::log_dir();
        let profile = dir.join(format!("chromium-profile-{n}"));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create profile dir");
        let log = dir.join(format!("chromedriver-{n}.log"));
        let out = std::fs::File::create(&log).expect("create chromedriver log");
        let err = out.try_clone().expect("clone log handle");

        // Everything that can fail before chromedriver runs is done first: once it runs,
        // it is owned by the Browser at once, whose drop kills it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own process group, so the Chromium it starts goes with it on drop.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {chromedriver}: {e}"))
        };
        let mut browser = Browser {
            rt,
            client,
            driver_url: format!("http://127.0.0.1:{port}"),
            session_id: None,
            driver,
            profile,
            log,
        };
        browser.wait_ready(Duration::from_secs(20));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // Lets `console_errors` read the page's console (a chromedriver extension).
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--no-first-run",
                            format!("--user-data-dir={}", browser.profile.display()),
                            "--window-size=1400,1000",
                        ],
                    },
                },
            },
        });
        let value = browser
            .raw("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| panic!("new session: {e}\n{}", browser.log_tail()));
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("new session answered {value}"))
            .to_string();
        browser.session_id = Some(id);
        browser
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(value) = self.raw("GET", "/status", None)
                && value["ready"] == json!(true)
            {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited ({status})\n{}", self.log_tail());
            }
            assert!(
                start.elapsed() < timeout,
                "chromedriver not ready after {timeout:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of chromedriver's log.
    pub fn log_tail(&self) -> String {
        crate::tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    /// One WebDriver command on the driver; returns the response's `value`.
    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.driver_url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(transport)?;
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, body) = self.rt.block_on(async move {
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let body: Value = response.json().await.map_err(transport)?;
            Ok::<_, WebDriverError>((status, body))
        })?;
        let value = body.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(WebDriverError {
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// A command on this browser's session (`path` relative to `/session/<id>`).
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let id = self.session_id.as_deref().ok_or_else(|| WebDriverError {
            error: "invalid session id".into(),
            message: "the session was deleted".into(),
        })?;
        self.raw(method, &format!("/session/{id}{path}"), body)
    }

    pub fn navigate(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The first element matching `css`, or `None` when there is none.
    pub fn find(&self, css: &str) -> Result<Option<Element>> {
        match self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        ) {
            Ok(value) => Ok(element(&value)),
            Err(e) if e.error == "no such element" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The first element matching `css`; an error when there is none.
    pub fn element(&self, css: &str) -> Result<Element> {
        self.find(css)?.ok_or_else(|| WebDriverError {
            error: "no such element".into(),
            message: format!("nothing matches {css}"),
        })
    }

    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let value = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(value
            .as_array()
            .map(|list| list.iter().filter_map(element).collect())
            .unwrap_or_default())
    }

    /// The element's rendered text (what a person sees).
    pub fn text(&self, el: &Element) -> Result<String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", el.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn attribute(&self, el: &Element, name: &str) -> Result<Option<String>> {
        Ok(self
            .cmd("GET", &format!("/element/{}/attribute/{name}", el.0), None)?
            .as_str()
            .map(str::to_string))
    }

    pub fn clear(&self, el: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/clear", el.0), Some(json!({})))
            .map(drop)
    }

    pub fn send_keys(&self, el: &Element, text: &str) -> Result<()> {
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    pub fn click(&self, el: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/click", el.0), Some(json!({})))
            .map(drop)
    }

    /// Runs `script` as the body of a function (`arguments` = `args`); returns its value.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Uncaught exceptions and `console.error` calls since the last call (chromedriver's
    /// log extension; failed network requests are left out).
    pub fn console_errors(&self) -> Result<Vec<String>> {
        let value = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))?;
        Ok(value
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|e| e["level"] == json!("SEVERE") && e["source"] != json!("network"))
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let value = self.cmd("GET", "/screenshot", None)?;
        base64_decode(value.as_str().unwrap_or_default()).ok_or_else(|| WebDriverError {
            error: "bad screenshot".into(),
            message: "the screenshot is not base64".into(),
        })
    }

    pub fn save_screenshot(&self, path: &Path) -> Result<()> {
        let png = self.screenshot()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(transport)?;
        }
        std::fs::write(path, png).map_err(transport)
    }

    /// Polls `probe` every 50 ms until it returns `Some`, or panics after `timeout`
    /// saying `what` was awaited. A WebDriver error inside the probe counts as "not yet".
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&Browser) -> Result<Option<T>>,
    ) -> T {
        let start = Instant::now();
        let mut last_error = None;
        loop {
            match probe(self) {
                Ok(Some(value)) => return value,
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what} (last error: {last_error:?})\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends the WebDriver session (closing Chromium); drop does it too.
    pub fn quit(&mut self) {
        if self.session_id.is_some() {
            let _ = self.cmd("DELETE", "", None);
            self.session_id = None;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.quit();
        // chromedriver leads its own process group: kill the group (it and the Chromium
        // it started), by its id, then reap it.
        let pgid = self.driver.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn element(value: &Value) -> Option<Element> {
    value[ELEMENT_KEY]
        .as_str()
        .map(|id| Element(id.to_string()))
}

/// A client for loopback only (no proxy). reqwest in this workspace is built with the
/// brain's `rustls-no-provider` feature, so a crypto provider must be installed before
/// any client is built, even one that only speaks plain HTTP: the brain's own
/// [`agentmesh_brain::http::client`] installs its `ring` provider once.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = agentmesh_brain::http::client();
    });
    reqwest::Client::builder().no_proxy()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// Standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = clean
        .iter()
        .position(|&c| c == b'=')
        .map_or(&clean[..], |end| &clean[..end]);
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// An HTTP response read whole: status, `Content-Type`, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (panics, showing the body, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP request on loopback, read to the end (so not for a stream that stays open),
/// with a 10 s timeout.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::result::Result<HttpResponse, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    rt.block_on(async move {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok(HttpResponse {
            status,
            content_type,
            body,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a*bc").is_none());
    }
}
