//! What probes produce: the one typed [`Event`] carried from the engine through the agent, the
//! server, its store and exporters, to the CLI and MCP. JSON only at the edges; its shape is
//! the body's fields with `kind` (`log`, `snapshot`, `count`, `error`), and `instance` and
//! `seq` once the fleet has assigned them.

use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One event as the fleet carries it: what happened, and where it was stored from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The store's sequence number (set when the server stores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The instance it came from (set by the agent; empty in local mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// The event's number in its agent's run (see `AgentReport::run`): the idempotency key
    /// that lets a report sent twice, to one server replica or two, be stored once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened. Failures (panics, fatal signals) are snapshots with a `failure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Log(LogEvent),
    Snapshot(SnapshotEvent),
    Count(CountEvent),
    Error(ProbeError),
}

impl Event {
    /// An event of `instance`, not stored yet.
    pub fn new(instance: impl Into<String>, body: Body) -> Event {
        Event {
            seq: None,
            instance: instance.into(),
            key: None,
            body,
        }
    }

    /// `log`, `snapshot`, `count` or `error`: the JSON `kind`.
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Log(_) => "log",
            Body::Snapshot(_) => "snapshot",
            Body::Count(_) => "count",
            Body::Error(_) => "error",
        }
    }

    pub fn probe(&self) -> &str {
        match &self.body {
            Body::Log(e) => &e.probe,
            Body::Snapshot(e) => &e.probe,
            Body::Count(e) => &e.probe,
            Body::Error(e) => &e.probe,
        }
    }

    pub fn ts(&self) -> &str {
        match &self.body {
            Body::Log(e) => &e.ts,
            Body::Snapshot(e) => &e.ts,
            Body::Count(e) => &e.ts,
            Body::Error(e) => &e.ts,
        }
    }
}

/// A counter's report for one interval: the agent aggregates hits and sends their delta and
/// total (and the totals per group, with `--by`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountEvent {
    pub ts: String,
    pub pid: u32,
    pub probe: String,
    pub location: String,
    pub interval_seconds: f64,
    /// Hits in this interval.
    pub hits: u64,
    /// Hits since the probe went in.
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<BTreeMap<String, u64>>,
}

/// A log probe hit, in the shape `--json` prints and the server stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// RFC 3339 timestamp with nanoseconds, UTC.
    pub ts: String,
    pub pid: u32,
    pub tid: u32,
    /// Go: the goroutine that hit the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutine: Option<u64>,
    /// `FILE:LINE` of the hit site (the file as the user named it when the probe has a line).
    pub location: String,
    pub probe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub message: String,
    /// Expression text → captured value, in template order.
    pub values: crate::value::Fields,
    /// Which engine caught the hit: `bpf` (an in-kernel uprobe) or `ptrace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// RFC 3339 text of a time.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// One frame of a captured stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackFrame {
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Arguments and locals (only for the frames asked for), in declaration order.
    #[serde(default, skip_serializing_if = "crate::value::Fields::is_empty")]
    pub variables: crate::value::Fields,
}

/// A snapshot: the stack and its variables at one hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEvent {
    pub ts: String,
    pub pid: u32,
    pub tid: u32,
    /// Go: the goroutine whose stack this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutine: Option<u64>,
    pub location: String,
    pub probe: String,
    pub frames: Vec<StackFrame>,
    #[serde(default, skip_serializing_if = "crate::value::Fields::is_empty")]
    pub watches: crate::value::Fields,
    /// Set when the snapshot was taken at a failure (`periscope watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// What went wrong, for a snapshot captured at the point of failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// `panic` or `signal`.
    pub kind: String,
    /// The panic message, when it can be read exactly; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL` or `SIGABRT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The faulting address, for memory faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Why a probe hit produced no regular event: shown to the user so a silent probe is explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeError {
    pub ts: String,
    pub pid: u32,
    pub tid: u32,
    pub location: String,
    pub probe: String,
    pub error: String,
}

impl LogEvent {
    pub fn value(&self, expr: &str) -> Option<&Value> {
        self.values.get(expr)
    }
}

/// The current time as RFC 3339 UTC with nanoseconds, the `ts` of every event.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Fields, Int128};

    #[test]
    fn the_json_shape_is_the_body_with_kind_instance_and_seq() {
        let log = LogEvent {
            ts: "2026-11-22T12:00:00Z".into(),
            pid: 7,
            tid: 8,
            goroutine: None,
            location: "main.rs:3".into(),
            probe: "p1".into(),
            function: None,
            message: "big=…".into(),
            values: Fields(vec![(
                "big".into(),
                Value::Int {
                    ty: Some("u128".into()),
                    value: Int128::Unsigned(u128::MAX),
                },
            )]),
            engine: None,
        };
        let mut e = Event::new("host-7", Body::Log(log));
        e.seq = Some(41);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"], "log");
        assert_eq!(j["instance"], "host-7");
        assert_eq!(j["seq"], 41);
        assert_eq!(j["probe"], "p1");
        assert_eq!(j["values"]["big"]["value"], u128::MAX.to_string());
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
        // A local-mode event (no envelope yet) reads too.
        let local = r#"{"kind":"count","ts":"t","pid":1,"probe":"p","location":"a.rs:1","interval_seconds":1.0,"hits":2,"total":5}"#;
        let c: Event = serde_json::from_str(local).unwrap();
        assert_eq!((c.kind(), c.probe(), c.seq), ("count", "p", None));
    }
}
