//! What probes produce: the one typed [`Event`] carried from the engine through the agent, the
//! server, its store and exporters, to the CLI and MCP. JSON only at the edges; its shape is
//! the body's fields with `kind` (`log`, `snapshot`, `count`, `metric`, `error`), and `instance` and
//! `seq` once the fleet has assigned them.

use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One event as the fleet carries it: what happened, and where it was stored from. Ids may
/// not hold a NUL (PostgreSQL cannot store one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// The store's sequence number (set when the server stores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// The instance it came from (set by the agent; empty in local mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(pattern = "^[^\\u0000]*$")]
    pub instance: String,
    /// The event's number in its agent's run (see `AgentReport::run`): the idempotency key
    /// that lets a report sent twice, to one server replica or two, be stored once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
    #[serde(flatten)]
    pub body: Body,
}

/// What happened. Failures (panics, fatal signals) are snapshots with a `failure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Log(LogEvent),
    Snapshot(SnapshotEvent),
    Count(CountEvent),
    Metric(MetricEvent),
    Error(ProbeError),
}

impl Body {
    /// Sets the ids the process and thread have in their own pid namespace (a container's):
    /// `ns_pid` for the process, `ns_tid` maps the host thread id of an event that has one.
    /// `None` (the process is in our namespace) leaves them out of the JSON.
    pub fn set_namespace_ids(
        &mut self,
        ns_pid: Option<u32>,
        ns_tid: impl FnOnce(u32) -> Option<u32>,
    ) {
        let Some(ns_pid) = ns_pid else {
            return;
        };
        let (pid, tid) = match self {
            Body::Log(e) => (&mut e.ns_pid, Some((e.tid, &mut e.ns_tid))),
            Body::Snapshot(e) => (&mut e.ns_pid, Some((e.tid, &mut e.ns_tid))),
            Body::Error(e) => (&mut e.ns_pid, Some((e.tid, &mut e.ns_tid))),
            Body::Count(e) => (&mut e.ns_pid, None),
            Body::Metric(e) => (&mut e.ns_pid, None),
        };
        *pid = Some(ns_pid);
        if let Some((host, slot)) = tid {
            *slot = ns_tid(host);
        }
    }
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
            Body::Metric(_) => "metric",
            Body::Error(_) => "error",
        }
    }

    pub fn probe(&self) -> &str {
        match &self.body {
            Body::Log(e) => &e.probe,
            Body::Snapshot(e) => &e.probe,
            Body::Count(e) => &e.probe,
            Body::Metric(e) => &e.probe,
            Body::Error(e) => &e.probe,
        }
    }

    pub fn ts(&self) -> &str {
        match &self.body {
            Body::Log(e) => &e.ts,
            Body::Snapshot(e) => &e.ts,
            Body::Count(e) => &e.ts,
            Body::Metric(e) => &e.ts,
            Body::Error(e) => &e.ts,
        }
    }
}

/// A counter's report for one interval: the agent aggregates hits and sends their delta and
/// total (and the totals per group, with `--by`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CountEvent {
    pub ts: String,
    pub pid: u32,
    /// The pid in the process's own pid namespace (a container's), when that is not ours;
    /// `pid` is always the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    #[schema(pattern = "^[^\\u0000]*$")]
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

/// Which numeric series a [`MetricEvent`] carries (MCP's `add_metric` takes it too).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Each call's time from entry to return, in nanoseconds.
    Duration,
    /// A sampled value, in its own unit.
    Gauge,
}

/// A duration's or a gauge's figures for one interval: the agent aggregates calls or samples
/// and sends what the interval gathered (overall, and per group with `by`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricEvent {
    pub ts: String,
    pub pid: u32,
    /// The pid in the process's own pid namespace (a container's), when that is not ours;
    /// `pid` is always the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    #[schema(pattern = "^[^\\u0000]*$")]
    pub probe: String,
    pub location: String,
    pub metric: MetricKind,
    pub interval_seconds: f64,
    /// Every call or sample of the interval.
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<BTreeMap<String, Figures>>,
    /// `bpf` or `ptrace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// Count, sum, min, max and last of the values of an interval (durations in nanoseconds), and
/// for durations a histogram of power-of-two buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    /// Values up to each bound (`le`), per bucket, ascending; buckets with no value left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub histogram: Vec<Bucket>,
}

impl Figures {
    /// Adds one value, counted in the power-of-two bucket that holds it.
    pub fn add(&mut self, v: f64) {
        let le = if v <= 1.0 {
            1
        } else {
            (v.ceil() as u64)
                .checked_next_power_of_two()
                .unwrap_or(u64::MAX)
        };
        self.extend(1, v, v, v, v);
        self.count_in(Bucket { le, count: 1 });
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// An interval's figures kept per group key (`None`: not grouped) as a [`MetricEvent`]'s
    /// `figures` (every value) and `groups` (each named group, when `grouped`); `None` when the
    /// interval had no value. A gauge's buckets are dropped: its min, max and mean say what
    /// they would.
    pub fn of_interval(
        kind: MetricKind,
        keyed: impl IntoIterator<Item = (Option<String>, Figures)>,
        grouped: bool,
    ) -> Option<(Figures, Option<BTreeMap<String, Figures>>)> {
        let mut all = Figures::default();
        let mut groups = BTreeMap::new();
        for (key, mut figures) in keyed {
            if kind == MetricKind::Gauge {
                figures.histogram.clear();
            }
            all.merge(&figures);
            if let Some(key) = key {
                groups.insert(key, figures);
            }
        }
        (all.count > 0).then(|| (all, grouped.then_some(groups)))
    }

    /// Adds `other`'s values to these (`other` being the later: its `last` wins).
    pub fn merge(&mut self, other: &Figures) {
        if other.count == 0 {
            return;
        }
        self.extend(other.count, other.sum, other.min, other.max, other.last);
        for b in &other.histogram {
            self.count_in(*b);
        }
    }

    /// Adds `count` values with this sum, extremes and last value (no buckets).
    fn extend(&mut self, count: u64, sum: f64, min: f64, max: f64, last: f64) {
        if self.count == 0 || min < self.min {
            self.min = min;
        }
        if self.count == 0 || max > self.max {
            self.max = max;
        }
        self.count += count;
        self.sum += sum;
        self.last = last;
    }

    /// Adds a bucket's values to the bucket of the same bound, keeping bounds ascending.
    fn count_in(&mut self, b: Bucket) {
        match self.histogram.binary_search_by_key(&b.le, |x| x.le) {
            Ok(i) => self.histogram[i].count += b.count,
            Err(i) => self.histogram.insert(i, b),
        }
    }
}

/// One histogram bucket: how many values were above the previous bucket's bound and at most
/// `le`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Bucket {
    pub le: u64,
    pub count: u64,
}

/// A log probe hit, in the shape `--json` prints and the server stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogEvent {
    /// RFC 3339 timestamp with nanoseconds, UTC.
    pub ts: String,
    pub pid: u32,
    /// The pid in the process's own pid namespace (a container's), when that is not ours;
    /// `pid` is always the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    pub tid: u32,
    /// The thread id in the process's own pid namespace, when that is not ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_tid: Option<u32>,
    /// Go: the goroutine that hit the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutine: Option<u64>,
    /// `FILE:LINE` of the hit site (the file as the user named it when the probe has a line).
    pub location: String,
    #[schema(pattern = "^[^\\u0000]*$")]
    pub probe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub message: String,
    /// Expression text → captured value, in template order.
    pub values: crate::value::Fields,
    /// Which engine caught the hit: `bpf` (an in-kernel uprobe) or `ptrace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// A verify probe's example hit: which candidate fix and which cell it landed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::verify::Example>,
}

/// RFC 3339 text of a time.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// One frame of a captured stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotEvent {
    pub ts: String,
    pub pid: u32,
    /// The pid in the process's own pid namespace (a container's), when that is not ours;
    /// `pid` is always the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    pub tid: u32,
    /// The thread id in the process's own pid namespace, when that is not ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_tid: Option<u32>,
    /// Go: the goroutine whose stack this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutine: Option<u64>,
    pub location: String,
    #[schema(pattern = "^[^\\u0000]*$")]
    pub probe: String,
    pub frames: Vec<StackFrame>,
    #[serde(default, skip_serializing_if = "crate::value::Fields::is_empty")]
    pub watches: crate::value::Fields,
    /// Set when the snapshot was taken at a failure (`periscope watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// What went wrong, for a snapshot captured at the point of failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeError {
    pub ts: String,
    pub pid: u32,
    /// The pid in the process's own pid namespace (a container's), when that is not ours;
    /// `pid` is always the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    pub tid: u32,
    /// The thread id in the process's own pid namespace, when that is not ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_tid: Option<u32>,
    pub location: String,
    #[schema(pattern = "^[^\\u0000]*$")]
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
            ns_pid: None,
            tid: 8,
            ns_tid: None,
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
            verify: None,
        };
        let mut e = Event::new("host-7", Body::Log(log));
        e.seq = Some(41);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"], "log");
        assert_eq!(j["instance"], "host-7");
        assert_eq!(j["seq"], 41);
        assert_eq!(j["probe"], "p1");
        assert_eq!(j["values"]["big"]["value"], u128::MAX.to_string());
        let back: Event = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(back, e);
        // Outside a container the namespace ids are left out; inside one they are there.
        assert!(
            j.get("ns_pid").is_none() && j.get("ns_tid").is_none(),
            "{j}"
        );
        e.body.set_namespace_ids(Some(1), |tid| Some(tid - 6));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            (j["pid"].as_u64(), j["ns_pid"].as_u64()),
            (Some(7), Some(1))
        );
        assert_eq!(
            (j["tid"].as_u64(), j["ns_tid"].as_u64()),
            (Some(8), Some(2))
        );
        // A local-mode event (no envelope yet) reads too.
        let local = r#"{"kind":"count","ts":"t","pid":1,"probe":"p","location":"a.rs:1","interval_seconds":1.0,"hits":2,"total":5}"#;
        let c: Event = serde_json::from_str(local).unwrap();
        assert_eq!((c.kind(), c.probe(), c.seq), ("count", "p", None));
    }

    #[test]
    fn a_metric_event_round_trips_with_its_figures_flat_and_groups_nested() {
        let figures = |n: u64, v: f64| Figures {
            count: n,
            sum: v * n as f64,
            min: v,
            max: v,
            last: v,
            histogram: vec![Bucket { le: 4, count: n }],
        };
        let m = MetricEvent {
            ts: "t".into(),
            pid: 7,
            ns_pid: None,
            probe: "p2".into(),
            location: "timed".into(),
            metric: MetricKind::Duration,
            interval_seconds: 1.0,
            figures: figures(3, 3.0),
            groups: Some([("a".to_string(), figures(3, 3.0))].into()),
            engine: Some("bpf".into()),
        };
        let e = Event::new("host-7", Body::Metric(m));
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"], "metric");
        assert_eq!(j["metric"], "duration");
        assert_eq!(j["count"], 3);
        assert_eq!(j["histogram"][0]["le"], 4);
        assert_eq!(j["groups"]["a"]["max"], 3.0);
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn figures_merge_keeps_extremes_sums_and_buckets_in_order() {
        let mut a = Figures::default();
        let b = Figures {
            count: 2,
            sum: 10.0,
            min: 2.0,
            max: 8.0,
            last: 8.0,
            histogram: vec![Bucket { le: 2, count: 1 }, Bucket { le: 8, count: 1 }],
        };
        let c = Figures {
            count: 1,
            sum: 1.0,
            min: 1.0,
            max: 1.0,
            last: 1.0,
            histogram: vec![Bucket { le: 1, count: 1 }, Bucket { le: 8, count: 0 }],
        };
        a.merge(&b);
        a.merge(&c);
        assert_eq!(
            (a.count, a.sum, a.min, a.max, a.last),
            (3, 11.0, 1.0, 8.0, 1.0)
        );
        let les: Vec<u64> = a.histogram.iter().map(|b| b.le).collect();
        assert_eq!(les, [1, 2, 8]);
        assert_eq!(a.mean(), 11.0 / 3.0);
        let mut t = Figures::default();
        for v in [0.5, 3.0, 4.0, 5.0, 1e6] {
            t.add(v);
        }
        let les: Vec<(u64, u64)> = t.histogram.iter().map(|b| (b.le, b.count)).collect();
        assert_eq!(les, [(1, 1), (4, 2), (8, 1), (1 << 20, 1)]);
        assert_eq!((t.min, t.max, t.last), (0.5, 1e6, 1e6));
    }
}
