//! The text forms of events, one place for every surface that shows them to a person or a
//! model (the CLI's output, `periscope tail`, the MCP tools' text).

use crate::event::{Figures, LogEvent, MetricEvent, MetricKind, ProbeError, SnapshotEvent};
use std::fmt::Write as _;

/// `HH:MM:SS.mmm` from an RFC 3339 timestamp (the whole text when it is not one).
pub fn short_time(ts: &str) -> &str {
    ts.get(11..23).unwrap_or(ts)
}

/// `[tid 42]`, or `[tid 42] [g 7]` for a Go goroutine.
fn who(tid: u32, goroutine: Option<u64>) -> String {
    match goroutine {
        Some(g) => format!("[tid {tid}] [g {g}]"),
        None => format!("[tid {tid}]"),
    }
}

/// `12:00:01.250 [tid 42] main.rs:35  total=8591` (`[tid 42] [g 7]` in Go)
pub fn log_line(e: &LogEvent) -> String {
    format!(
        "{} {} {}  {}",
        short_time(&e.ts),
        who(e.tid, e.goroutine),
        e.location,
        e.message
    )
}

/// `12:00:01.250 [tid 42] main.rs:35  probe error: …`
pub fn error_line(e: &ProbeError) -> String {
    format!(
        "{} [tid {}] {}  probe error: {}",
        short_time(&e.ts),
        e.tid,
        e.location,
        e.error
    )
}

/// `12:00:01.250 timed  duration: 3 calls, mean 1.2ms, min 1.0ms, max 1.5ms`, then a line
/// per group.
pub fn metric_line(e: &MetricEvent) -> String {
    let mut line = format!(
        "{} {}  {}: {}",
        short_time(&e.ts),
        e.location,
        match e.metric {
            MetricKind::Duration => "duration",
            MetricKind::Gauge => "gauge",
        },
        figures_words(e.metric, &e.figures)
    );
    for (k, f) in e.groups.iter().flatten() {
        let _ = write!(line, "\n    {k}: {}", figures_words(e.metric, f));
    }
    line
}

/// A duration's figures (`3 calls, mean 1.2ms, min 1.0ms, max 1.5ms`) or a gauge's
/// (`4 samples, last 7, min 2, max 9, mean 5.500`).
pub fn figures_words(kind: MetricKind, f: &Figures) -> String {
    let plural = if f.count == 1 { "" } else { "s" };
    match kind {
        MetricKind::Duration if f.count == 0 => "0 calls".into(),
        MetricKind::Gauge if f.count == 0 => "no samples".into(),
        MetricKind::Duration => format!(
            "{} call{plural}, mean {}, min {}, max {}",
            f.count,
            nanoseconds(f.mean()),
            nanoseconds(f.min),
            nanoseconds(f.max)
        ),
        MetricKind::Gauge => format!(
            "{} sample{plural}, last {}, min {}, max {}, mean {:.3}",
            f.count,
            number(f.last),
            number(f.min),
            number(f.max),
            f.mean()
        ),
    }
}

/// `850ns`, `12.5µs`, `3.250ms`, `1.500s`.
fn nanoseconds(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.3}s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.3}ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}µs", v / 1e3)
    } else {
        format!("{v:.0}ns")
    }
}

/// Whole numbers without a fraction, others as they are.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A snapshot as an indented tree: a head line (what was caught), one block per frame, one
/// line per variable, then the watches. Ends with a newline.
pub fn snapshot_tree(e: &SnapshotEvent) -> String {
    let what = match &e.failure {
        Some(f) => match (&f.signal, &f.message) {
            (Some(sig), _) => format!(
                "{sig}{}",
                f.address
                    .as_ref()
                    .map(|a| format!(" at address {a}"))
                    .unwrap_or_default()
            ),
            (None, Some(m)) => format!("panic: {m}"),
            (None, None) => "panic".to_string(),
        },
        None => "snapshot".to_string(),
    };
    let mut out = format!(
        "{} {} {}  {what}\n",
        short_time(&e.ts),
        who(e.tid, e.goroutine),
        e.location
    );
    for (i, f) in e.frames.iter().enumerate() {
        let _ = match (&f.file, f.line) {
            (Some(file), Some(line)) => {
                writeln!(out, "  #{i:<2} {}  at {file}:{line}", f.function)
            }
            _ => writeln!(out, "  #{i:<2} {}", f.function),
        };
        for (name, v) in &f.variables.0 {
            let _ = writeln!(out, "        {name} = {v}");
        }
    }
    if !e.watches.is_empty() {
        out.push_str("  watches:\n");
        for (expr, v) in &e.watches.0 {
            let _ = writeln!(out, "        {expr} = {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StackFrame;
    use crate::value::{Fields, Value};

    #[test]
    fn a_snapshot_reads_as_a_tree() {
        let e = SnapshotEvent {
            ts: "2026-11-22T12:00:01.250000000Z".into(),
            pid: 1,
            tid: 42,
            goroutine: None,
            location: "main.rs:35".into(),
            probe: "p1".into(),
            frames: vec![StackFrame {
                function: "ledger::settle".into(),
                file: Some("src/main.rs".into()),
                line: Some(35),
                variables: Fields(vec![("fee".into(), Value::int("i64", 20))]),
            }],
            watches: Fields::default(),
            failure: None,
        };
        assert_eq!(
            snapshot_tree(&e),
            "12:00:01.250 [tid 42] main.rs:35  snapshot\n  #0  ledger::settle  at src/main.rs:35\n        fee = 20\n"
        );
    }
}
