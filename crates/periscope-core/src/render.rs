//! The text forms of events, one place for every surface that shows them to a person or a
//! model (the CLI's output, `periscope tail`, the MCP tools' text).

use crate::event::{LogEvent, ProbeError, SnapshotEvent};
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
