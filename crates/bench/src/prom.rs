//! etcd's own view of an etcd-backed run: its Prometheus histograms of WAL fsync and
//! backend commit durations (`GET /metrics` on the client port), which bound how fast a
//! round that writes one transaction can be on this disk.

use serde::Serialize;
use std::io::{Read, Write};
use std::time::Duration;

/// A Prometheus histogram: cumulative buckets (upper bound, count), sum and count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Reads histogram `name` from a Prometheus text exposition.
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        let mut h = Histogram::default();
        let bucket = format!("{name}_bucket{{");
        let sum = format!("{name}_sum ");
        let count = format!("{name}_count ");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                let (labels, value) = rest.rsplit_once("} ")?;
                let le = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("le=\""))?
                    .trim_end_matches('"');
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                h.buckets
                    .push((le, value.trim().parse::<f64>().ok()? as u64));
            } else if let Some(v) = line.strip_prefix(&sum) {
                h.sum = v.trim().parse().ok()?;
            } else if let Some(v) = line.strip_prefix(&count) {
                h.count = v.trim().parse::<f64>().ok()? as u64;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (h.count > 0).then_some(h)
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1).
    pub fn quantile_bound(&self, q: f64) -> f64 {
        let want = (q * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want.max(1))
            .map_or(f64::INFINITY, |(le, _)| *le)
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// What a run's figures say about etcd's disk, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct DiskFigures {
    pub wal_fsyncs: u64,
    pub wal_fsync_mean_ms: f64,
    /// Upper bound of the bucket holding the median.
    pub wal_fsync_p50_le_ms: f64,
    pub backend_commit_mean_ms: f64,
}

impl DiskFigures {
    pub fn of(metrics: &str) -> Option<DiskFigures> {
        let wal = Histogram::parse(metrics, "etcd_disk_wal_fsync_duration_seconds")?;
        let commit = Histogram::parse(metrics, "etcd_disk_backend_commit_duration_seconds")
            .unwrap_or_default();
        Some(DiskFigures {
            wal_fsyncs: wal.count,
            wal_fsync_mean_ms: wal.mean() * 1000.0,
            wal_fsync_p50_le_ms: wal.quantile_bound(0.5) * 1000.0,
            backend_commit_mean_ms: commit.mean() * 1000.0,
        })
    }
}

/// `GET /metrics` of the etcd at `endpoint` (`http://127.0.0.1:PORT`), HTTP/1.0.
pub fn scrape(endpoint: &str) -> Option<String> {
    let addr = endpoint.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 40
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 95
etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 100
etcd_disk_wal_fsync_duration_seconds_sum 0.21
etcd_disk_wal_fsync_duration_seconds_count 100
etcd_disk_backend_commit_duration_seconds_bucket{le=\"0.01\"} 4
etcd_disk_backend_commit_duration_seconds_bucket{le=\"+Inf\"} 4
etcd_disk_backend_commit_duration_seconds_sum 0.02
etcd_disk_backend_commit_duration_seconds_count 4
";

    #[test]
    fn histograms_and_their_quantiles() {
        let h = Histogram::parse(TEXT, "etcd_disk_wal_fsync_duration_seconds").unwrap();
        assert_eq!(h.count, 100);
        assert_eq!(h.buckets.len(), 4);
        assert!((h.mean() - 0.0021).abs() < 1e-12);
        assert_eq!(h.quantile_bound(0.5), 0.004);
        assert_eq!(h.quantile_bound(0.4), 0.002);
        assert_eq!(h.quantile_bound(0.01), 0.001);
        assert_eq!(h.quantile_bound(0.99), f64::INFINITY);
        assert_eq!(Histogram::parse(TEXT, "no_such_metric"), None);
    }

    #[test]
    fn disk_figures_in_milliseconds() {
        let d = DiskFigures::of(TEXT).unwrap();
        assert_eq!(d.wal_fsyncs, 100);
        assert!((d.wal_fsync_mean_ms - 2.1).abs() < 1e-9);
        assert_eq!(d.wal_fsync_p50_le_ms, 4.0);
        assert!((d.backend_commit_mean_ms - 5.0).abs() < 1e-9);
    }
}
