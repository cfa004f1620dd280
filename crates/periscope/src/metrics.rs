//! `periscope duration` and `periscope gauge`: numeric series from a live process, reported per
//! interval. A duration times each call of a function from entry to return (in the kernel: a
//! uprobe and a uretprobe); a gauge samples an expression's value at a location.

use super::{end_with, print_probe_error, pump, render, report, start, Common};
use anyhow::{bail, Context, Result};
use periscope_core::redact::Redactor;
use periscope_native::probe::{Metric, Tallies};
use periscope_native::{Action, EngineEvent, ProbeSpec};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

/// What kind of series, for the words and field names it prints.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Series {
    Duration,
    Gauge,
}

/// The probe of a duration (`value` None) or a gauge.
pub(crate) fn metric_probe(
    location: &str,
    value: Option<&str>,
    by: Option<&str>,
    common: &Common,
) -> Result<ProbeSpec> {
    let parse = |what: &str, text: &str| {
        periscope_core::expr::parse(text).map_err(|e| anyhow::anyhow!("bad {what}: {e}"))
    };
    let by = by.map(|b| parse("grouping expression", b)).transpose()?;
    let action = match value {
        Some(v) => Action::Gauge {
            value: parse("gauge expression", v)?,
            by,
        },
        None => Action::Duration { by },
    };
    let location = location
        .parse::<periscope_core::Location>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut spec = ProbeSpec::new("1", location, action);
    spec.condition = common
        .condition
        .as_deref()
        .map(|c| parse("condition", c))
        .transpose()?;
    spec.redactor = Redactor::new(&common.output.redact)?;
    spec.engine = common.engine;
    Ok(spec)
}

pub(crate) fn run_metric(
    pid: u32,
    spec: ProbeSpec,
    common: &Common,
    every: Duration,
    series: Series,
) -> Result<()> {
    let location = spec.location.to_string();
    let session = start(pid, spec).context("start the probe")?;
    let engine = session
        .engines
        .first()
        .map(|e| e.name().to_string())
        .unwrap_or_default();
    let tallies = session.tallies.clone();
    let deadline = common.output.duration.map(|d| Instant::now() + d);
    let json = common.output.json;
    let started = Instant::now();
    let mut total: HashMap<Option<String>, Metric> = HashMap::new();
    let mut print = |final_line: bool| -> Result<()> {
        let interval = take(&tallies);
        for (k, m) in &interval {
            merge(total.entry(k.clone()).or_default(), m);
        }
        let shown = if final_line { &total } else { &interval };
        let line = metric_line(series, &location, &engine, shown, json, final_line, started);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    let reason = pump(
        &session,
        deadline,
        Some(every.max(Duration::from_millis(10))),
        |ev| {
            if let EngineEvent::Event(periscope_core::event::Body::Error(e)) = ev {
                print_probe_error(json, &e, &mut std::io::stdout().lock())?;
            }
            Ok(())
        },
        || print(false),
    );
    let summary = session.stop();
    print(true)?;
    report(&summary);
    end_with(reason)
}

/// The figures gathered since the last call, taken out of the session's tallies.
fn take(tallies: &Tallies) -> HashMap<Option<String>, Metric> {
    let mut t = tallies.lock().unwrap_or_else(|p| p.into_inner());
    match t.first_mut() {
        Some(t) => std::mem::take(&mut t.metrics),
        None => HashMap::new(),
    }
}

fn merge(into: &mut Metric, m: &Metric) {
    if m.count == 0 {
        return;
    }
    if into.count == 0 || m.min < into.min {
        into.min = m.min;
    }
    if into.count == 0 || m.max > into.max {
        into.max = m.max;
    }
    into.count += m.count;
    into.sum += m.sum;
    into.last = m.last;
    for (b, n) in &m.buckets {
        *into.buckets.entry(*b).or_insert(0) += n;
    }
}

fn metric_line(
    series: Series,
    location: &str,
    engine: &str,
    metrics: &HashMap<Option<String>, Metric>,
    json: bool,
    final_line: bool,
    started: Instant,
) -> String {
    let mut all = Metric::default();
    for m in metrics.values() {
        merge(&mut all, m);
    }
    let groups: BTreeMap<&String, &Metric> = metrics
        .iter()
        .filter_map(|(k, m)| k.as_ref().map(|k| (k, m)))
        .collect();
    let ts = periscope_core::event::now_rfc3339();
    if json {
        let mut obj = json!({
            "ts": ts,
            "location": location,
            "kind": if final_line { "total" } else { "interval" },
            "engine": engine,
            "elapsed_s": started.elapsed().as_secs_f64(),
        });
        fill(series, &mut obj, &all);
        if series == Series::Duration {
            obj["histogram"] = json!(all
                .buckets
                .iter()
                .map(|(le, n)| json!({"le_ns": le, "count": n}))
                .collect::<Vec<_>>());
        }
        if !groups.is_empty() {
            let mut g = serde_json::Map::new();
            for (k, m) in &groups {
                let mut o = json!({});
                fill(series, &mut o, m);
                g.insert((*k).clone(), o);
            }
            obj["groups"] = Json::Object(g);
        }
        return obj.to_string();
    }
    let head = if final_line {
        format!("{}  total {location}", render::short_time(&ts))
    } else {
        format!("{}  {location}", render::short_time(&ts))
    };
    let mut line = format!("{head}: {}", words(series, &all));
    for (k, m) in groups {
        line.push_str(&format!("\n    {k}: {}", words(series, m)));
    }
    line
}

/// The figures as JSON fields: durations in nanoseconds, gauges in the value's own unit.
fn fill(series: Series, obj: &mut Json, m: &Metric) {
    match series {
        Series::Duration => {
            obj["calls"] = json!(m.count);
            obj["sum_ns"] = json!(m.sum as u64);
            obj["min_ns"] = json!(m.min as u64);
            obj["max_ns"] = json!(m.max as u64);
            obj["mean_ns"] = json!(m.mean() as u64);
        }
        Series::Gauge => {
            obj["samples"] = json!(m.count);
            obj["last"] = json!(m.last);
            obj["min"] = json!(m.min);
            obj["max"] = json!(m.max);
            obj["mean"] = json!(m.mean());
        }
    }
}

fn words(series: Series, m: &Metric) -> String {
    if m.count == 0 {
        return match series {
            Series::Duration => "0 calls".into(),
            Series::Gauge => "no samples".into(),
        };
    }
    match series {
        Series::Duration => format!(
            "{} call{}, mean {}, min {}, max {}",
            m.count,
            if m.count == 1 { "" } else { "s" },
            ns(m.mean()),
            ns(m.min),
            ns(m.max)
        ),
        Series::Gauge => format!(
            "{} sample{}, last {}, min {}, max {}, mean {:.3}",
            m.count,
            if m.count == 1 { "" } else { "s" },
            num(m.last),
            num(m.min),
            num(m.max),
            m.mean()
        ),
    }
}

fn ns(v: f64) -> String {
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

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Refuses a gauge or duration request that can never work, before attaching.
pub(crate) fn check_every(every: Duration) -> Result<()> {
    if every.is_zero() {
        bail!("--every must be above zero, e.g. --every 1s");
    }
    Ok(())
}
