//! What the local `count`, `duration` and `gauge` commands print with `--json`: one line per
//! interval and a last one with the totals. Typed here, once, so each command fills a struct
//! and the field names (`hits`, `calls`, `sum_ns`, `le_ns`, `samples`, …) live in one place.

use crate::event::Figures;
use serde::Serialize;
use std::collections::BTreeMap;

/// An interval's line, or the last line with the run's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Interval,
    Total,
}

impl LineKind {
    pub fn of(final_line: bool) -> LineKind {
        if final_line {
            LineKind::Total
        } else {
            LineKind::Interval
        }
    }
}

/// `periscope count --json`: hits in the interval (`hits`) and since the start (`total`).
#[derive(Debug, Clone, Serialize)]
pub struct CountLine {
    pub ts: String,
    pub location: String,
    pub kind: LineKind,
    pub hits: u64,
    pub total: u64,
    pub elapsed_s: f64,
    pub filtered: u64,
    pub errors: u64,
    /// With `--per-thread`: hits by thread id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<BTreeMap<String, u64>>,
    /// With `--by`: hits by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, u64>,
}

/// `periscope duration --json` and `periscope gauge --json`.
#[derive(Debug, Clone, Serialize)]
pub struct MetricLine {
    pub ts: String,
    pub location: String,
    pub kind: LineKind,
    pub engine: String,
    pub elapsed_s: f64,
    #[serde(flatten)]
    pub figures: SeriesFigures,
    /// Durations only: calls per power-of-two bucket, ascending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Vec<BucketLine>>,
    /// With `--by`: the figures by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, SeriesFigures>,
}

/// A series' figures: a duration's in nanoseconds, a gauge's in the value's own unit.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SeriesFigures {
    Duration {
        calls: u64,
        sum_ns: u64,
        min_ns: u64,
        max_ns: u64,
        mean_ns: u64,
    },
    Gauge {
        samples: u64,
        last: f64,
        min: f64,
        max: f64,
        mean: f64,
    },
}

impl SeriesFigures {
    /// Nanoseconds are whole in the output (a fraction of one says nothing).
    pub fn duration(f: &Figures) -> SeriesFigures {
        SeriesFigures::Duration {
            calls: f.count,
            sum_ns: f.sum as u64,
            min_ns: f.min as u64,
            max_ns: f.max as u64,
            mean_ns: f.mean() as u64,
        }
    }

    pub fn gauge(f: &Figures) -> SeriesFigures {
        SeriesFigures::Gauge {
            samples: f.count,
            last: f.last,
            min: f.min,
            max: f.max,
            mean: f.mean(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketLine {
    pub le_ns: u64,
    pub count: u64,
}
