//! What the agent aggregates instead of shipping hit by hit: counters' hits, verify probes'
//! cells, durations' calls and gauges' samples, reported once per count interval as one
//! event each.

use super::{Outbox, ProbeRun};
use periscope_core::api::{Instance, ProbeKind};
use periscope_core::event::{Body, CountEvent, Event, Figures, MetricEvent, MetricKind};
use periscope_runtime::Tallies;
use std::collections::BTreeMap;
use std::time::Instant;

/// Counters, verify probes (their groups are the candidates' cells), durations and gauges are
/// aggregated here and reported every count interval; the others ship hit by hit.
pub(crate) fn aggregated(kind: ProbeKind) -> bool {
    matches!(
        kind,
        ProbeKind::Count | ProbeKind::Verify | ProbeKind::Duration | ProbeKind::Gauge
    )
}

/// Reports what `run` gathered since its last report.
pub(crate) fn interval(
    outbox: &Outbox,
    info: &Instance,
    run: &mut ProbeRun,
    tallies: Option<&Tallies>,
) {
    match run.probe.spec.kind {
        ProbeKind::Duration => metric(outbox, info, run, tallies, MetricKind::Duration),
        ProbeKind::Gauge => metric(outbox, info, run, tallies, MetricKind::Gauge),
        _ => count(outbox, info, run, tallies),
    }
}

/// A counter's hits since the last report, with totals per group.
fn count(outbox: &Outbox, info: &Instance, run: &mut ProbeRun, tallies: Option<&Tallies>) {
    let Some(t) = tallies else {
        return;
    };
    let (total, groups) = {
        let t = t.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = t.iter().rev().find(|t| t.probe == run.probe.id) else {
            return;
        };
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for ((_, key), n) in &t.counts {
            *groups.entry(key.clone().unwrap_or_default()).or_default() += n;
        }
        // Since the probe went in: earlier sessions' hits, then this one's.
        (run.carried.0 + t.hits, groups)
    };
    let interval = run.last_count.elapsed();
    run.last_count = Instant::now();
    let delta = total.saturating_sub(run.counted.0);
    if delta == 0 && run.counted.0 != 0 {
        return;
    }
    run.counted.0 = total;
    let count = CountEvent {
        ts: periscope_core::event::now_rfc3339(),
        pid: info.pid,
        ns_pid: info.ns_pid,
        probe: run.probe.id.clone(),
        location: run.probe.spec.location.clone(),
        interval_seconds: interval.as_secs_f64(),
        hits: delta,
        total,
        groups: (run.probe.spec.by.is_some() || run.probe.spec.kind == ProbeKind::Verify)
            .then_some(groups),
    };
    outbox.push_event(Event::new(info.id.clone(), Body::Count(count)));
}

/// A duration's calls or a gauge's samples since the last report, taken out of the session's
/// tally (overall, and per group with `by`). An interval with none sends nothing.
fn metric(
    outbox: &Outbox,
    info: &Instance,
    run: &mut ProbeRun,
    tallies: Option<&Tallies>,
    kind: MetricKind,
) {
    let Some(t) = tallies else {
        return;
    };
    let (taken, engine) = {
        let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = t.iter_mut().rev().find(|t| t.probe == run.probe.id) else {
            return;
        };
        (std::mem::take(&mut t.metrics), t.engine.name())
    };
    let interval = run.last_count.elapsed();
    run.last_count = Instant::now();
    let grouped = run.probe.spec.by.is_some();
    let Some((figures, groups)) = Figures::of_interval(kind, taken, grouped) else {
        return;
    };
    let event = MetricEvent {
        ts: periscope_core::event::now_rfc3339(),
        pid: info.pid,
        ns_pid: info.ns_pid,
        probe: run.probe.id.clone(),
        location: run.probe.spec.location.clone(),
        metric: kind,
        interval_seconds: interval.as_secs_f64(),
        figures,
        groups,
        engine: Some(engine.to_string()),
    };
    outbox.push_event(Event::new(info.id.clone(), Body::Metric(event)));
}
