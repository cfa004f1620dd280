//! Counter, duration and gauge reports as OTLP metric points. Agents send what each interval
//! gathered; the exporter keeps one series per (instance, probe, group) and exports them all
//! every metric interval:
//! - counters → the monotonic cumulative Sum `periscope.probe.hits`;
//! - durations → the cumulative Histogram `periscope.probe.duration`, in seconds, with fixed
//!   power-of-two bounds from 1 ns to 2^40 ns (about 18 minutes): the engine's own buckets,
//!   so no call moves bucket on the way;
//! - gauges → the Gauge `periscope.probe.gauge`, the last value sampled.
//!
//! Every point carries the probe's attributes: `periscope.probe.id`, `periscope.probe.kind`,
//! the code location (`code.file.path` and `code.line.number`, or `code.function.name`) and,
//! with `by`, `periscope.group`.

use crate::records::{kv_int, kv_str, split_location};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use periscope_core::event::{CountEvent, Figures, MetricEvent, MetricKind};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The largest power of two (in nanoseconds) with a bucket of its own; longer calls fall in
/// the overflow bucket.
const MAX_BOUND_LOG2: u32 = 40;

/// (instance, probe, group): a probe has one kind, so the key names one series.
type SeriesKey = (String, String, String);

/// Metrics grouped by the resource (instance) they describe.
pub(crate) type PerResource = Vec<(Arc<Resource>, Vec<Metric>)>;

/// What one series holds since it began.
enum Value {
    /// Cumulative hits.
    Hits(i64),
    /// Every call since the series began (nanoseconds).
    Durations(Figures),
    /// The last value sampled.
    Gauge(f64),
}

struct Series {
    resource: Arc<Resource>,
    location: String,
    /// When the series began (ns since the epoch): the start of its cumulative points.
    start: u64,
    /// When the last report came (ns): a gauge's point time.
    time: u64,
    value: Value,
}

/// Every series reported so far.
#[derive(Default)]
pub(crate) struct Points {
    series: BTreeMap<SeriesKey, Series>,
}

impl Points {
    /// A counter's report: its totals (per group, or overall) replace the series' values.
    pub(crate) fn count(
        &mut self,
        resource: Arc<Resource>,
        instance: &str,
        e: &CountEvent,
        now: u64,
    ) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let totals: Vec<(String, i64)> = match &e.groups {
            Some(groups) => groups.iter().map(|(k, v)| (k.clone(), clamp(*v))).collect(),
            None => vec![(String::new(), clamp(e.total))],
        };
        for (group, total) in totals {
            let key = (instance.to_string(), e.probe.clone(), group);
            let s = self.entry(key, &resource, &e.location, now, || Value::Hits(0));
            s.value = Value::Hits(total);
        }
    }

    /// A duration's or a gauge's interval: durations add to the series, a gauge's last sample
    /// replaces its value.
    pub(crate) fn metric(
        &mut self,
        resource: Arc<Resource>,
        instance: &str,
        e: &MetricEvent,
        now: u64,
    ) {
        let parts: Vec<(String, &Figures)> = match &e.groups {
            Some(groups) => groups.iter().map(|(k, f)| (k.clone(), f)).collect(),
            None => vec![(String::new(), &e.figures)],
        };
        for (group, figures) in parts {
            if figures.count == 0 {
                continue;
            }
            let empty = || match e.metric {
                MetricKind::Duration => Value::Durations(Figures::default()),
                MetricKind::Gauge => Value::Gauge(0.0),
            };
            let key = (instance.to_string(), e.probe.clone(), group);
            let s = self.entry(key, &resource, &e.location, now, empty);
            s.time = now;
            match &mut s.value {
                Value::Durations(all) => all.merge(figures),
                Value::Gauge(v) => *v = figures.last,
                Value::Hits(_) => {}
            }
        }
    }

    fn entry(
        &mut self,
        key: SeriesKey,
        resource: &Arc<Resource>,
        location: &str,
        now: u64,
        empty: impl FnOnce() -> Value,
    ) -> &mut Series {
        self.series.entry(key).or_insert_with(|| Series {
            resource: resource.clone(),
            location: location.to_string(),
            start: now,
            time: now,
            value: empty(),
        })
    }

    /// Every series as metrics, per resource (instance) in first-seen order, and how many
    /// points they hold.
    pub(crate) fn metrics(&self, now: u64) -> (PerResource, u64) {
        let mut hits: Vec<(Arc<Resource>, NumberDataPoint)> = Vec::new();
        let mut durations: Vec<(Arc<Resource>, HistogramDataPoint)> = Vec::new();
        let mut gauges: Vec<(Arc<Resource>, NumberDataPoint)> = Vec::new();
        for ((_, probe, group), s) in &self.series {
            let res = s.resource.clone();
            match &s.value {
                Value::Hits(total) => hits.push((
                    res,
                    NumberDataPoint {
                        attributes: attributes(probe, "count", &s.location, group),
                        start_time_unix_nano: s.start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(*total)),
                        ..Default::default()
                    },
                )),
                Value::Durations(f) => durations.push((
                    res,
                    histogram_point(
                        f,
                        attributes(probe, "duration", &s.location, group),
                        s.start,
                        now,
                    ),
                )),
                Value::Gauge(v) => gauges.push((
                    res,
                    NumberDataPoint {
                        attributes: attributes(probe, "gauge", &s.location, group),
                        time_unix_nano: s.time,
                        value: Some(number_data_point::Value::AsDouble(*v)),
                        ..Default::default()
                    },
                )),
            }
        }
        let points = (hits.len() + durations.len() + gauges.len()) as u64;
        let mut out: PerResource = Vec::new();
        let mut put = |res: Arc<Resource>, m: Metric| match out
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &res))
        {
            Some((_, v)) => v.push(m),
            None => out.push((res, vec![m])),
        };
        for (res, data_points) in crate::otlp::group_by_resource(hits) {
            put(res, hits_metric(data_points));
        }
        for (res, data_points) in crate::otlp::group_by_resource(durations) {
            put(res, duration_metric(data_points));
        }
        for (res, data_points) in crate::otlp::group_by_resource(gauges) {
            put(res, gauge_metric(data_points));
        }
        (out, points)
    }
}

/// The probe's attributes on each of its points.
fn attributes(probe: &str, kind: &str, location: &str, group: &str) -> Vec<KeyValue> {
    let mut attributes = vec![
        kv_str("periscope.probe.id", probe),
        kv_str("periscope.probe.kind", kind),
    ];
    let (file, line) = split_location(location);
    if let Some(f) = file {
        attributes.push(kv_str("code.file.path", f));
    }
    if let Some(l) = line {
        attributes.push(kv_int("code.line.number", l));
    }
    if line.is_none() && !location.is_empty() {
        attributes.push(kv_str("code.function.name", location));
    }
    if !group.is_empty() {
        attributes.push(kv_str("periscope.group", group));
    }
    attributes
}

/// The bucket index of an engine bucket bound (a power of two in ns): bucket `k` holds
/// values in (2^(k-1), 2^k], the last one everything above 2^MAX_BOUND_LOG2.
fn bucket_index(le: u64) -> usize {
    match le.max(1).checked_next_power_of_two() {
        Some(p) => p.trailing_zeros().min(MAX_BOUND_LOG2 + 1) as usize,
        None => MAX_BOUND_LOG2 as usize + 1,
    }
}

fn histogram_point(
    f: &Figures,
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
) -> HistogramDataPoint {
    const NS: f64 = 1e9;
    let mut bucket_counts = vec![0u64; MAX_BOUND_LOG2 as usize + 2];
    for b in &f.histogram {
        bucket_counts[bucket_index(b.le)] += b.count;
    }
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: f.count,
        sum: Some(f.sum / NS),
        bucket_counts,
        explicit_bounds: (0..=MAX_BOUND_LOG2)
            .map(|k| (1u64 << k) as f64 / NS)
            .collect(),
        min: Some(f.min / NS),
        max: Some(f.max / NS),
        ..Default::default()
    }
}

/// CUMULATIVE, as OTLP numbers it.
const CUMULATIVE: i32 = 2;

fn hits_metric(data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: "periscope.probe.hits".into(),
        description: "Hits of a Periscope counter probe".into(),
        unit: "{hit}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: CUMULATIVE,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn duration_metric(data_points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: "periscope.probe.duration".into(),
        description:
            "Time of each call of the function a Periscope duration probe is at, entry to return"
                .into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: CUMULATIVE,
        })),
        ..Default::default()
    }
}

fn gauge_metric(data_points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: "periscope.probe.gauge".into(),
        description: "The last value a Periscope gauge probe sampled".into(),
        unit: "1".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_core::event::Bucket;

    fn event(metric: MetricKind, values: &[f64]) -> MetricEvent {
        let mut figures = Figures::default();
        for v in values {
            figures.add(*v);
        }
        MetricEvent {
            ts: "t".into(),
            pid: 1,
            ns_pid: None,
            probe: "p1".into(),
            location: "timed".into(),
            metric,
            interval_seconds: 1.0,
            figures: figures.clone(),
            groups: Some([("a".to_string(), figures)].into()),
            engine: None,
        }
    }

    #[test]
    fn engine_buckets_land_in_the_bucket_of_their_bound() {
        assert_eq!(bucket_index(1), 0);
        assert_eq!(bucket_index(2), 1);
        assert_eq!(bucket_index(1 << 20), 20);
        assert_eq!(bucket_index(u64::MAX), MAX_BOUND_LOG2 as usize + 1);
        let f = Figures {
            count: 3,
            sum: 3e6,
            min: 1e6,
            max: 1e6,
            last: 1e6,
            histogram: vec![Bucket {
                le: 1 << 20,
                count: 3,
            }],
        };
        let p = histogram_point(&f, vec![], 0, 1);
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.bucket_counts[20], 3);
        // 1e6 ns is above bound 19 and at most bound 20, as the bucket says.
        assert!(p.explicit_bounds[19] < 1e6 / 1e9 && 1e6 / 1e9 <= p.explicit_bounds[20]);
    }

    #[test]
    fn durations_accumulate_and_gauges_keep_the_last_value() {
        let res = Arc::new(Resource::default());
        let mut points = Points::default();
        points.metric(
            res.clone(),
            "i",
            &event(MetricKind::Duration, &[1e6, 3e6]),
            5,
        );
        points.metric(res.clone(), "i", &event(MetricKind::Duration, &[2e6]), 6);
        let mut gauge = event(MetricKind::Gauge, &[4.0, 9.0]);
        gauge.probe = "p2".into();
        points.metric(res.clone(), "i", &gauge, 7);
        let (metrics, n) = points.metrics(8);
        assert_eq!(n, 2);
        let [(_, ms)] = metrics.as_slice() else {
            panic!("one resource: {metrics:?}")
        };
        let Some(metric::Data::Histogram(h)) = &ms[0].data else {
            panic!("{ms:?}")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, p.start_time_unix_nano),
            (3, Some(6e6 / 1e9), 5)
        );
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
        let Some(metric::Data::Gauge(g)) = &ms[1].data else {
            panic!("{ms:?}")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(9.0))
        );
    }
}
