//! The text forms of events, one place for every surface that shows them to a person or a
//! model (the CLI's output, `periscope tail`, the MCP tools' text).

use crate::event::{
    Body, CountEvent, Event, Figures, LogEvent, MetricEvent, MetricKind, ProbeError, SnapshotEvent,
};
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

/// Any event's body as one text (a snapshot is a tree of several lines): what every surface
/// that shows an event to a person or a model prints.
pub fn body_text(b: &Body) -> String {
    match b {
        Body::Log(l) => log_line(l),
        Body::Snapshot(s) => snapshot_tree(s).trim_end().to_string(),
        Body::Count(c) => count_line(c),
        Body::Metric(m) => metric_line(m),
        Body::Error(e) => error_line(e),
    }
}

/// A fleet event: its instance and probe, then [`body_text`].
pub fn event_text(e: &Event) -> String {
    format!("{} {} {}", e.instance, e.probe(), body_text(&e.body))
}

/// `12:00:01.250 [tid 42] main.rs:35  probe error: …`; the agent's notice that a probe paused
/// (an error event whose text starts `paused:`) reads as a notice.
pub fn error_line(e: &ProbeError) -> String {
    let what = if e.error.starts_with("paused:") {
        "notice"
    } else {
        "probe error"
    };
    format!(
        "{} [tid {}] {}  {what}: {}",
        short_time(&e.ts),
        e.tid,
        e.location,
        e.error
    )
}

/// `main.rs:35  +12 hits (total 40)`, with ` by group: {…}` when grouped.
pub fn count_line(e: &CountEvent) -> String {
    let mut line = format!("{}  +{} hits (total {})", e.location, e.hits, e.total);
    if let Some(g) = &e.groups {
        let groups: Vec<String> = g.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = write!(line, " by group: {{{}}}", groups.join(", "));
    }
    line
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
            ns_pid: None,
            tid: 42,
            ns_tid: None,
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

    #[test]
    fn every_event_reads_one_way_with_its_instance_and_probe() {
        let ts = "2026-11-22T12:00:01.250000000Z".to_string();
        let log = Body::Log(LogEvent {
            ts: ts.clone(),
            pid: 1,
            ns_pid: None,
            tid: 42,
            ns_tid: None,
            goroutine: Some(7),
            location: "main.go:12".into(),
            probe: "p1".into(),
            function: None,
            message: "total=3".into(),
            values: Fields::default(),
            engine: None,
            verify: None,
        });
        let e = Event::new("host-1", log);
        assert_eq!(
            event_text(&e),
            "host-1 p1 12:00:01.250 [tid 42] [g 7] main.go:12  total=3"
        );
        let count = Body::Count(CountEvent {
            ts: ts.clone(),
            pid: 1,
            ns_pid: None,
            probe: "p2".into(),
            location: "main.rs:9".into(),
            interval_seconds: 1.0,
            hits: 3,
            total: 10,
            groups: Some([("a".to_string(), 2), ("b".to_string(), 1)].into()),
        });
        assert_eq!(
            body_text(&count),
            "main.rs:9  +3 hits (total 10) by group: {a: 2, b: 1}"
        );
        let error = |text: &str| {
            body_text(&Body::Error(ProbeError {
                ts: ts.clone(),
                pid: 1,
                ns_pid: None,
                tid: 5,
                ns_tid: None,
                location: "main.rs:9".into(),
                probe: "p3".into(),
                error: text.into(),
            }))
        };
        assert_eq!(
            error("no `x` here"),
            "12:00:01.250 [tid 5] main.rs:9  probe error: no `x` here"
        );
        assert_eq!(
            error("paused: budget"),
            "12:00:01.250 [tid 5] main.rs:9  notice: paused: budget"
        );
    }
}
