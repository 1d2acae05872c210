//! What a workload prints: a readable table, and one JSON line `{"workload": ..., ...}`
//! for scripts (`scripts/plot-bench.py`).

use serde::Serialize;

/// A plain-text table: the first column left-aligned, the others right-aligned.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per header.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.headers.len(),
            "a row of table {:?} has the wrong number of cells",
            self.title
        );
        self.rows.push(cells);
    }

    /// A line printed under the table.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.headers[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.trim_end().to_string()
        };
        let mut out = format!("== {} ==\n", self.title);
        out.push_str(&line(&self.headers));
        out.push('\n');
        let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(note);
            out.push('\n');
        }
        out
    }
}

/// One JSON line: `{"workload": <name>, <the fields of body>...}`, `workload` first.
pub fn json_line<T: Serialize>(workload: &str, body: &T) -> String {
    #[derive(Serialize)]
    struct Line<'a, T> {
        workload: &'a str,
        #[serde(flatten)]
        body: &'a T,
    }
    serde_json::to_string(&Line { workload, body }).expect("a bench result serializes")
}

/// A number with `decimals` digits after the point.
pub fn num(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// Microseconds, shown as milliseconds with three decimals (`412.3` µs → `0.412`).
pub fn ms(us: f64) -> String {
    num(us / 1000.0, 3)
}

/// Kibibytes as mebibytes with one decimal.
pub fn mib(kib: u64) -> String {
    num(kib as f64 / 1024.0, 1)
}

/// A table comparing a setting off and on (`tracing`, `signing`): the setting, the round
/// figures, each ratio to off, `extra` columns of the workload's own, then CPU per round.
pub fn on_off_table(title: &str, setting: &str, extra: &[&str]) -> Table {
    let mut headers = vec![
        setting,
        "rounds",
        "p50 ms",
        "p99 ms",
        "max ms",
        "rounds/s",
        "p50 / off",
        "p99 / off",
    ];
    headers.extend_from_slice(extra);
    headers.extend(["cpu coord ms", "cpu workers ms"]);
    Table::new(title, &headers)
}

/// One row of an [`on_off_table`].
pub fn on_off_row(setting: &str, round: &crate::LatencyRow, extra: Vec<String>) -> Vec<String> {
    let mut cells = vec![
        setting.to_string(),
        round.rounds.to_string(),
        ms(round.latency.p50_us),
        ms(round.latency.p99_us),
        ms(round.latency.max_us),
        num(round.rounds_per_s, 0),
        num(round.ratio_p50.unwrap_or(0.0), 2),
        num(round.ratio_p99.unwrap_or(0.0), 2),
    ];
    cells.extend(extra);
    cells.push(num(round.cpu_coordinator_us.unwrap_or(0.0) / 1000.0, 3));
    cells.push(num(round.cpu_workers_us.unwrap_or(0.0) / 1000.0, 3));
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new("raw limit", &["N", "p50 ms", "rounds/s"]);
        t.row(vec!["6".into(), "0.123".into(), "8100".into()]);
        t.row(vec!["50".into(), "1.250".into(), "790".into()]);
        t.note("one round in flight");
        assert_eq!(
            t.render(),
            "== raw limit ==\n\
             N   p50 ms  rounds/s\n\
             --------------------\n\
             6    0.123      8100\n\
             50   1.250       790\n\
             one round in flight\n"
        );
    }

    #[test]
    #[should_panic(expected = "wrong number of cells")]
    fn a_short_row_is_a_bug() {
        Table::new("t", &["a", "b"]).row(vec!["1".into()]);
    }

    #[test]
    fn json_lines_name_the_workload_first() {
        #[derive(Serialize)]
        struct Body {
            n: u32,
            p50_us: f64,
            rows: Vec<u8>,
        }
        let line = json_line(
            "raw",
            &Body {
                n: 6,
                p50_us: 120.5,
                rows: vec![1, 2],
            },
        );
        assert_eq!(
            line,
            r#"{"workload":"raw","n":6,"p50_us":120.5,"rows":[1,2]}"#
        );
        assert!(!line.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["workload"], "raw");
    }

    #[test]
    fn number_formats() {
        assert_eq!(ms(412.3), "0.412");
        assert_eq!(ms(1500.0), "1.500");
        assert_eq!(mib(10 * 1024 + 512), "10.5");
        assert_eq!(num(2.0 / 3.0, 2), "0.67");
    }
}
