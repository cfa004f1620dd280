//! Periscope's typed events and values as OTLP records: a log hit, a snapshot or a failure
//! becomes a LogRecord, a value tree an AnyValue. (Counters become metric points in
//! [`crate::otlp`], which aggregates them.)

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use periscope_core::event::{Body, Event, StackFrame};
use periscope_core::value::{Fields, Int128};
use periscope_core::Value;

/// One event as a LogRecord (None for counters, durations and gauges, which are metrics).
pub fn log_record(e: &Event) -> Option<LogRecord> {
    let (tid, location, function, top) = match &e.body {
        Body::Log(l) => (l.tid, &l.location, l.function.as_deref(), None),
        Body::Snapshot(s) => (s.tid, &s.location, None, s.frames.first()),
        Body::Error(p) => (p.tid, &p.location, None, None),
        Body::Count(_) | Body::Metric(_) => return None,
    };
    let failure = match &e.body {
        Body::Snapshot(s) => s.failure.as_ref(),
        _ => None,
    };
    let mut attributes = vec![
        kv_str("periscope.probe.id", e.probe()),
        kv_str(
            "periscope.probe.kind",
            if failure.is_some() {
                "failures"
            } else {
                e.kind()
            },
        ),
        kv_int("thread.id", i64::from(tid)),
    ];
    let (file, line) = split_location(location);
    if let Some(f) = top.and_then(|t| t.file.as_deref()).or(file) {
        attributes.push(kv_str("code.file.path", f));
    }
    if let Some(l) = line.or_else(|| top.and_then(|t| t.line).map(i64::from)) {
        attributes.push(kv_int("code.line.number", l));
    }
    if let Some(f) = function.or_else(|| top.map(|t| t.function.as_str())) {
        attributes.push(kv_str("code.function.name", f));
    }
    let (severity, text, body) = match &e.body {
        Body::Log(l) => {
            for (expr, v) in &l.values.0 {
                attributes.push(KeyValue {
                    key: format!("periscope.value.{expr}"),
                    value: Some(any_of_value(v)),
                    ..Default::default()
                });
            }
            (9, "INFO", string(&l.message))
        }
        Body::Snapshot(s) => {
            let stack: Vec<String> = s
                .frames
                .iter()
                .map(|f| match (&f.file, f.line) {
                    (Some(file), Some(line)) => format!("{} at {file}:{line}", f.function),
                    _ => f.function.clone(),
                })
                .collect();
            attributes.push(kv_str("code.stacktrace", &stack.join("\n")));
            let mut body = vec![(
                "frames".to_string(),
                AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: s.frames.iter().map(frame_value).collect(),
                    })),
                },
            )];
            if !s.watches.is_empty() {
                body.push(("watches".into(), fields_map(&s.watches)));
            }
            if let Some(f) = failure {
                let etype = f.signal.clone().unwrap_or_else(|| f.kind.clone());
                attributes.push(kv_str("exception.type", &etype));
                if let Some(m) = &f.message {
                    attributes.push(kv_str("exception.message", m));
                }
                if let Some(a) = &f.address {
                    attributes.push(kv_str("periscope.fault.address", a));
                }
            }
            let (severity, text) = if failure.is_some() {
                (17, "ERROR")
            } else {
                (9, "INFO")
            };
            (severity, text, map_of(body.into_iter()))
        }
        Body::Error(p) => (13, "WARN", string(&p.error)),
        Body::Count(_) | Body::Metric(_) => return None,
    };
    Some(LogRecord {
        time_unix_nano: parse_ns(e.ts()).unwrap_or_else(now_ns),
        observed_time_unix_nano: now_ns(),
        severity_number: severity,
        severity_text: text.into(),
        body: Some(body),
        attributes,
        ..Default::default()
    })
}

fn frame_value(f: &StackFrame) -> AnyValue {
    let mut m: Vec<(String, AnyValue)> = vec![("function".into(), string(&f.function))];
    if let Some(file) = &f.file {
        m.push(("file".into(), string(file)));
    }
    if let Some(line) = f.line {
        m.push(("line".into(), int(i64::from(line))));
    }
    if !f.variables.is_empty() {
        m.push(("variables".into(), fields_map(&f.variables)));
    }
    map_of(m.into_iter())
}

fn fields_map(fields: &Fields) -> AnyValue {
    map_of(fields.0.iter().map(|(k, v)| (k.clone(), any_of_value(v))))
}

/// A Periscope value tree as an OTLP AnyValue: scalars as themselves, structs and enums as
/// maps, lists as arrays, maps as arrays of {key, value}; pointers as what they point to.
pub fn any_of_value(v: &Value) -> AnyValue {
    let inner = match v {
        Value::Int { value, .. } => match value {
            Int128::Signed(i) => match i64::try_from(*i) {
                Ok(i) => any_value::Value::IntValue(i),
                Err(_) => any_value::Value::StringValue(i.to_string()),
            },
            Int128::Unsigned(u) => match i64::try_from(*u) {
                Ok(i) => any_value::Value::IntValue(i),
                Err(_) => any_value::Value::StringValue(u.to_string()),
            },
        },
        Value::Float { value, .. } => any_value::Value::DoubleValue(*value),
        Value::Bool { value, .. } => any_value::Value::BoolValue(*value),
        Value::Char { value, .. } | Value::String { value, .. } => {
            any_value::Value::StringValue(value.clone())
        }
        Value::Struct { fields, .. } => return fields_map(fields),
        Value::Enum {
            variant, fields, ..
        } => {
            let mut m = vec![("variant".to_string(), string(variant))];
            m.extend(fields.0.iter().map(|(k, f)| (k.clone(), any_of_value(f))));
            return map_of(m.into_iter());
        }
        Value::List { items, .. } => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(any_of_value).collect(),
        }),
        Value::Map { entries, .. } => any_value::Value::ArrayValue(ArrayValue {
            values: entries
                .iter()
                .map(|e| {
                    map_of(
                        [
                            ("key".to_string(), any_of_value(&e.key)),
                            ("value".to_string(), any_of_value(&e.value)),
                        ]
                        .into_iter(),
                    )
                })
                .collect(),
        }),
        Value::Pointer {
            target: Some(t), ..
        } => return any_of_value(t),
        Value::Pointer { address, .. } => any_value::Value::StringValue(address.clone()),
        Value::Function { symbol, .. } => any_value::Value::StringValue(symbol.clone()),
        Value::Unit { .. } => any_value::Value::StringValue("()".into()),
        Value::Redacted { .. } => any_value::Value::StringValue("<redacted>".into()),
        Value::Unavailable { reason, .. } => {
            any_value::Value::StringValue(format!("<unavailable: {reason}>"))
        }
    };
    AnyValue { value: Some(inner) }
}

pub(crate) fn map_of(entries: impl Iterator<Item = (String, AnyValue)>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: entries
                .map(|(key, value)| KeyValue {
                    key,
                    value: Some(value),
                    ..Default::default()
                })
                .collect(),
        })),
    }
}

pub(crate) fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

fn int(v: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    }
}

pub(crate) fn kv_str(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(string(v)),
        ..Default::default()
    }
}

pub(crate) fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(int(v)),
        ..Default::default()
    }
}

/// `file.rs:42` → (file, line); a function name → (None, None).
pub(crate) fn split_location(loc: &str) -> (Option<&str>, Option<i64>) {
    match loc.rsplit_once(':') {
        Some((f, l)) if !f.is_empty() && l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty() => {
            (Some(f), l.parse().ok())
        }
        _ => (None, None),
    }
}

fn parse_ns(ts: &str) -> Option<u64> {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos().max(0) as u64)
}

pub(crate) fn now_ns() -> u64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .max(0) as u64
}
