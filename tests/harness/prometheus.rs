//! A real Prometheus (Debian's `prometheus`, installed by `make deps`) on a free loopback
//! port, scraping the targets a test names every second, with its data in a temporary
//! directory. Queried through its HTTP API, as an autoscaler or a dashboard would.

use crate::{Proc, log_dir};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One scrape job: its name and `host:port` targets (scraped at `/metrics`).
pub struct ScrapeJob {
    pub name: String,
    pub targets: Vec<String>,
}

pub struct Prometheus {
    pub proc: Proc,
    /// `127.0.0.1:<port>` of its HTTP API.
    pub addr: String,
    data: PathBuf,
    /// Drives the HTTP client of [`Prometheus::query`].
    rt: tokio::runtime::Runtime,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

impl Prometheus {
    /// Starts Prometheus and waits until it is ready; panics with its log if it is not
    /// installed or does not start.
    pub fn start(jobs: &[ScrapeJob]) -> Prometheus {
        let program = std::path::Path::new("/usr/bin/prometheus");
        assert!(
            program.exists(),
            "Prometheus is missing: `make deps` installs Debian's prometheus package"
        );
        let dir = log_dir().join(format!("prometheus-{}", free_port()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("prometheus dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for job in jobs {
            let targets: Vec<String> = job.targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "  - job_name: '{}'\n    static_configs:\n      - targets: [{}]\n",
                job.name,
                targets.join(", ")
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let proc = Proc::spawn(
            "prometheus",
            program,
            &[
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address={addr}"),
            ],
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let prometheus = Prometheus {
            proc,
            addr,
            data,
            rt,
        };
        let start = Instant::now();
        while !matches!(
            crate::http_get(&prometheus.addr, "/-/ready"),
            Some((200, _))
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Prometheus not ready after 30 s:\n{}",
                crate::tail(&prometheus.proc.log_text(), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// A GET of the HTTP API at `path_and_query`, answered `success`.
    fn api(&self, path_and_query: &str) -> serde_json::Value {
        let url = format!("http://{}{path_and_query}", self.addr);
        let body: serde_json::Value = self.rt.block_on(async move {
            crate::webdriver::client_builder()
                .build()
                .expect("HTTP client")
                .get(url)
                .send()
                .await
                .expect("query Prometheus")
                .json()
                .await
                .expect("Prometheus answers JSON")
        });
        assert_eq!(body["status"], "success", "{body}");
        body
    }

    /// Whether an instant query returns anything (any number of series).
    pub fn query_any(&self, query: &str) -> bool {
        let body = self.api(&format!("/api/v1/query?query={}", percent_encode(query)));
        body["data"]["result"]
            .as_array()
            .is_some_and(|result| !result.is_empty())
    }

    /// Every series matching `selector`, as its labels.
    pub fn series(&self, selector: &str) -> Vec<std::collections::BTreeMap<String, String>> {
        let body = self.api(&format!(
            "/api/v1/series?match[]={}",
            percent_encode(selector)
        ));
        body["data"]
            .as_array()
            .expect("a list of series")
            .iter()
            .map(|labels| {
                labels
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .collect()
    }

    /// Evaluates an instant query; returns the single value of its result vector, `None`
    /// for an empty result. Panics on an error or on more than one series.
    pub fn query(&self, query: &str) -> Option<f64> {
        let body = self.api(&format!("/api/v1/query?query={}", percent_encode(query)));
        let result = body["data"]["result"].as_array().expect("a vector result");
        assert!(result.len() <= 1, "one series expected: {body}");
        result.first().map(|series| {
            series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a numeric sample: {body}"))
        })
    }

    /// Polls `query` until `pred` holds for its value, or panics after `timeout`.
    pub fn wait_for(
        &self,
        query: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(Option<f64>) -> bool,
    ) -> Option<f64> {
        let start = Instant::now();
        loop {
            let value = self.query(query);
            if pred(value) {
                return value;
            }
            assert!(
                start.elapsed() < timeout,
                "{query} = {value:?}, not {what} after {timeout:?}\n{}",
                crate::tail(&self.proc.log_text(), 20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `text` as a URL query value: unreserved characters as they are, the rest as %XX.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
