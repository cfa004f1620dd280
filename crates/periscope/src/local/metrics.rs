//! `periscope duration` and `periscope gauge`: numeric series from a live process, reported per
//! interval. A duration times each call of a function from entry to return (in the kernel: a
//! uprobe and a uretprobe); a gauge samples an expression's value at a location.

use super::{end_with, print_probe_error, pump, report, start};
use crate::Common;
use anyhow::{bail, Context, Result};
use periscope_core::event::{Body, MetricEvent, MetricKind};
use periscope_core::interval::{BucketLine, LineKind, MetricLine, SeriesFigures};
use periscope_core::redact::Redactor;
use periscope_core::render;
use periscope_runtime::probe::Metric;
use periscope_runtime::{Action, EngineEvent, ProbeSpec, Tallies};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

/// What kind of series, for the words and field names it prints.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Series {
    Duration,
    Gauge,
}

impl Series {
    fn kind(self) -> MetricKind {
        match self {
            Series::Duration => MetricKind::Duration,
            Series::Gauge => MetricKind::Gauge,
        }
    }
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
    let grouped = matches!(
        &spec.action,
        Action::Duration { by: Some(_) } | Action::Gauge { by: Some(_), .. }
    );
    let exporter = super::local_exporter(pid, &common.output)?;
    let session = start(pid, spec, &common.output).context("start the probe")?;
    let engine = session
        .engines()
        .first()
        .map(|e| e.name().to_string())
        .unwrap_or_default();
    let tallies = session.tallies();
    let deadline = common.output.duration.map(|d| Instant::now() + d);
    let json = common.output.json;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut total: HashMap<Option<String>, Metric> = HashMap::new();
    let mut print = |final_line: bool| -> Result<()> {
        let interval = take(&tallies);
        for (k, m) in &interval {
            total.entry(k.clone()).or_default().merge(m);
        }
        let figures = exporter
            .is_some()
            .then(|| Metric::of_interval(series.kind(), interval.clone(), grouped))
            .flatten();
        if let Some((figures, groups)) = figures {
            let event = MetricEvent {
                ts: periscope_core::event::now_rfc3339(),
                pid,
                ns_pid: periscope_runtimes::ns_pid(pid),
                probe: "1".into(),
                location: location.clone(),
                metric: series.kind(),
                interval_seconds: last.elapsed().as_secs_f64(),
                figures,
                groups,
                engine: Some(engine.clone()),
            };
            super::export_local(&exporter, &Body::Metric(event));
        }
        last = Instant::now();
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
    if let Some((e, _)) = exporter {
        e.shutdown(Duration::from_secs(5));
    }
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
        all.merge(m);
    }
    let groups: BTreeMap<&String, &Metric> = metrics
        .iter()
        .filter_map(|(k, m)| k.as_ref().map(|k| (k, m)))
        .collect();
    let ts = periscope_core::event::now_rfc3339();
    if json {
        let figures = |m: &Metric| match series {
            Series::Duration => SeriesFigures::duration(m),
            Series::Gauge => SeriesFigures::gauge(m),
        };
        let line = MetricLine {
            ts,
            location: location.to_string(),
            kind: LineKind::of(final_line),
            engine: engine.to_string(),
            elapsed_s: started.elapsed().as_secs_f64(),
            figures: figures(&all),
            histogram: (series == Series::Duration).then(|| {
                all.histogram
                    .iter()
                    .map(|b| BucketLine {
                        le_ns: b.le,
                        count: b.count,
                    })
                    .collect()
            }),
            groups: groups
                .iter()
                .map(|(k, m)| ((*k).clone(), figures(m)))
                .collect(),
        };
        return serde_json::to_string(&line).unwrap_or_default();
    }
    let head = if final_line {
        format!("{}  total {location}", render::short_time(&ts))
    } else {
        format!("{}  {location}", render::short_time(&ts))
    };
    let mut line = format!("{head}: {}", render::figures_words(series.kind(), &all));
    for (k, m) in groups {
        line.push_str(&format!(
            "\n    {k}: {}",
            render::figures_words(series.kind(), m)
        ));
    }
    line
}

/// Refuses a gauge or duration request that can never work, before attaching.
pub(crate) fn check_every(every: Duration) -> Result<()> {
    if every.is_zero() {
        bail!("--every must be above zero, e.g. --every 1s");
    }
    Ok(())
}
