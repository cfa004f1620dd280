//! Export to the user's own stack: a real OTLP receiver (gRPC with tonic, HTTP with axum, both
//! decoding with opentelemetry-proto's official definitions) gets the events of a real probed
//! target through a real server; the JSON-lines export survives a server kill.

mod common;

use common::fleet::*;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::metric;
use periscope_core::api::{NewProbe, ProbeKind};
use prost::Message;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default, Clone)]
struct Received {
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        r: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if let Some(v) = r.metadata().get("x-team") {
            self.headers
                .lock()
                .unwrap()
                .push(v.to_str().unwrap_or("").to_string());
        }
        self.logs.lock().unwrap().push(r.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        r: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(r.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts a receiver on a free port in a thread of its own; returns its base URL.
fn receiver(grpc: bool) -> (String, Received) {
    let received = Received::default();
    let r2 = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            if grpc {
                tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(r2.clone()))
                    .add_service(MetricsServiceServer::new(r2))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            } else {
                let (l, m, h) = (r2.logs.clone(), r2.metrics.clone(), r2.headers.clone());
                let app = axum::Router::new()
                    .route(
                        "/v1/logs",
                        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                            assert_eq!(headers["content-type"], "application/x-protobuf");
                            if let Some(v) = headers.get("x-team") {
                                h.lock().unwrap().push(v.to_str().unwrap().to_string());
                            }
                            l.lock().unwrap().push(ExportLogsServiceRequest::decode(body).unwrap());
                            ""
                        }),
                    )
                    .route(
                        "/v1/metrics",
                        axum::routing::post(move |body: axum::body::Bytes| async move {
                            m.lock().unwrap().push(ExportMetricsServiceRequest::decode(body).unwrap());
                            ""
                        }),
                    );
                axum::serve(listener, app).await.unwrap();
            }
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), received)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|k| k.key == key)
        .and_then(|k| k.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr(attrs: &[KeyValue], key: &str) -> String {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> i64 {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

/// Every (resource attributes, record) the receiver got for `probe`.
fn records(r: &Received, probe: &str) -> Vec<(Vec<KeyValue>, LogRecord)> {
    let mut out = Vec::new();
    for req in r.logs.lock().unwrap().iter() {
        for rl in &req.resource_logs {
            let res = rl.resource.clone().unwrap_or_default().attributes;
            for sl in &rl.scope_logs {
                for rec in &sl.log_records {
                    if attr(&rec.attributes, "periscope.probe.id")
                        == Some(&any_value::Value::StringValue(probe.into()))
                    {
                        out.push((res.clone(), rec.clone()));
                    }
                }
            }
        }
    }
    out
}

fn probe(kind: ProbeKind, template: Option<&str>) -> NewProbe {
    let location = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total") + 1);
    NewProbe {
        template: template.map(str::to_string),
        ..NewProbe::new(kind, "service=ledger", &location)
    }
}

fn fleet_with(name: &str, extra: &[&str]) -> (Server, Agent, Target) {
    let dir = test_dir(name);
    let server = Server::start_with(&dir, 0, extra);
    let token = server.token("agent", "agent");
    let t = Target::start(&ledger_debug(), &["3000", "2"]);
    let agent = Agent::start(
        &server,
        &token,
        &[
            "--pid",
            &t.pid.to_string(),
            "--tag",
            "service=ledger",
            "--tag",
            "team=payments",
        ],
    );
    instance_of(&server, t.pid);
    (server, agent, t)
}

#[test]
fn logs_and_counters_reach_a_grpc_collector_with_resource_and_attributes() {
    let (url, got) = receiver(true);
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "500");
    let (server, _agent, t) = fleet_with(
        "otlp-grpc",
        &[
            "--otlp-endpoint",
            &url,
            "--otlp-protocol",
            "grpc",
            "--otlp-header",
            "x-team=payments",
        ],
    );
    let admin = server.admin();
    let log = admin
        .add_probe(&probe(ProbeKind::Log, Some("total={total} fee={fee}")))
        .expect("add");
    let counter = admin
        .add_probe(&probe(ProbeKind::Count, None))
        .expect("add");
    let recs = eventually("log records at the collector", || {
        let r = records(&got, &log.id);
        (r.len() >= 3).then_some(r)
    });
    let (res, rec) = &recs[0];
    assert_eq!(str_attr(res, "service.name"), "ledger");
    assert_eq!(int_attr(res, "process.pid"), t.pid as i64);
    assert_eq!(str_attr(res, "process.executable.name"), "ledger");
    assert!(!str_attr(res, "host.name").is_empty());
    assert_eq!(str_attr(res, "team"), "payments");
    let attrs = &rec.attributes;
    assert!(str_attr(attrs, "code.file.path").ends_with("ledger.rs"));
    assert_eq!(
        int_attr(attrs, "code.line.number"),
        (probe_line("ledger.rs", "settle-total") + 1) as i64
    );
    assert_eq!(str_attr(attrs, "code.function.name"), "ledger::settle");
    assert!(int_attr(attrs, "thread.id") > 0);
    assert_eq!(str_attr(attrs, "periscope.probe.kind"), "log");
    let total = int_attr(attrs, "periscope.value.total");
    let fee = int_attr(attrs, "periscope.value.fee");
    assert_eq!(fee, (total - fee) / 10);
    match rec.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(m)) => {
            assert_eq!(m, &format!("total={total} fee={fee}"))
        }
        other => panic!("body: {other:?}"),
    }
    assert!(rec.time_unix_nano > 0 && rec.observed_time_unix_nano >= rec.time_unix_nano);
    assert!(got.headers.lock().unwrap().iter().any(|h| h == "payments"));
    // The counter: a monotonic cumulative Sum with the probe's attributes.
    let total = eventually("counter points", || {
        for req in got.metrics.lock().unwrap().iter() {
            for rm in &req.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        if let Some(metric::Data::Sum(sum)) = &m.data {
                            assert!(sum.is_monotonic);
                            assert_eq!(sum.aggregation_temporality, 2);
                            for p in &sum.data_points {
                                if attr(&p.attributes, "periscope.probe.id")
                                    == Some(&any_value::Value::StringValue(counter.id.clone()))
                                {
                                    if let Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) = p.value {
                                        if n > 0 {
                                            return Some(n);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        None
    });
    assert!(total > 0);
    // The exporter's own counters come along, under service.name=periscope.
    assert!(got.metrics.lock().unwrap().iter().any(|r| r
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .any(|m| m.name == "periscope.otlp.exported_logs")));
}

#[test]
fn snapshots_reach_an_http_collector_as_value_trees_with_the_stack() {
    let (url, got) = receiver(false);
    let (server, _agent, _t) = fleet_with(
        "otlp-http",
        &["--otlp-endpoint", &url, "--otlp-protocol", "http"],
    );
    let snap = server
        .admin()
        .add_probe(&probe(ProbeKind::Snapshot, None))
        .expect("add");
    let recs = eventually("snapshot record", || {
        let r = records(&got, &snap.id);
        (!r.is_empty()).then_some(r)
    });
    let (_, rec) = &recs[0];
    assert!(str_attr(&rec.attributes, "code.stacktrace").contains("ledger::settle at "));
    let Some(any_value::Value::KvlistValue(body)) = rec.body.as_ref().and_then(|b| b.value.clone())
    else {
        panic!("body is a map: {:?}", rec.body);
    };
    let frames = match attr(&body.values, "frames") {
        Some(any_value::Value::ArrayValue(a)) => a.values.clone(),
        other => panic!("frames: {other:?}"),
    };
    let top = match frames[0].value.as_ref() {
        Some(any_value::Value::KvlistValue(kv)) => kv.values.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(str_attr(&top, "function"), "ledger::settle");
    let vars = match attr(&top, "variables") {
        Some(any_value::Value::KvlistValue(kv)) => kv.values.clone(),
        other => panic!("{other:?}"),
    };
    let fee = int_attr(&vars, "fee");
    let total = int_attr(&vars, "total");
    let t = match attr(&vars, "t") {
        Some(any_value::Value::KvlistValue(kv)) => kv.values.clone(),
        other => panic!("t: {other:?}"),
    };
    let amount = int_attr(&t, "amount_cents");
    assert_eq!(total, amount + fee);
    let from = match attr(&t, "from") {
        Some(any_value::Value::KvlistValue(kv)) => kv.values.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(str_attr(&from, "api_token"), "<redacted>");
    let _ = AnyValue::default();
}

#[test]
fn an_unreachable_collector_never_blocks_ingest_and_drops_are_counted() {
    // Port 9 (discard) on loopback: nothing listens.
    let (server, _agent, _t) = fleet_with("otlp-down", &["--otlp-endpoint", "http://127.0.0.1:9"]);
    let admin = server.admin();
    let p = admin
        .add_probe(&probe(ProbeKind::Log, Some("total={total}")))
        .expect("add");
    let events = admin
        .wait_for_events(&p.id, None, 50, Duration::from_secs(60))
        .map(json_list)
        .expect("events are stored while the collector is away");
    assert_eq!(events.len(), 50);
    let status = eventually("failed exports counted", || {
        let s = admin.status().map(|v| json_value(&v)).ok()?;
        (s["otlp"]["failed_exports"].as_u64()? > 0).then_some(s)
    });
    assert!(status["otlp"]["last_error"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1:9"));
}

#[test]
fn the_jsonl_export_has_every_stored_event_exactly_once_across_a_server_kill() {
    let dir = test_dir("jsonl");
    let path = dir.join("events.jsonl");
    let p = path.to_string_lossy().into_owned();
    let args = [
        "--export-jsonl",
        &p,
        "--export-jsonl-max-bytes",
        "20000",
        "--export-jsonl-keep",
        "1000",
    ];
    let mut server = Server::start_with(&dir, 0, &args);
    let port = server.port();
    let token = server.token("agent", "agent");
    let mut t = Target::start(&ledger_debug(), &["2000", "2"]);
    let _agent = Agent::start(
        &server,
        &token,
        &["--pid", &t.pid.to_string(), "--tag", "service=ledger"],
    );
    instance_of(&server, t.pid);
    let probe_id = server
        .admin()
        .add_probe(&probe(ProbeKind::Log, Some("total={total}")))
        .expect("add")
        .id;
    let first = server
        .admin()
        .wait_for_events(&probe_id, None, 200, Duration::from_secs(60))
        .map(json_list)
        .expect("events");
    server.kill(); // SIGKILL while events stream in
    let restarted = Server::start_with(&dir, port, &args);
    let admin = restarted.admin();
    let after = first.last().and_then(|e| e["seq"].as_i64());
    admin
        .wait_for_events(&probe_id, after, 200, Duration::from_secs(60))
        .map(json_list)
        .expect("events after the restart");
    drop(_agent); // no more events
    let stored: Vec<i64> = {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = admin
                .events(
                    &probe_id,
                    &periscope_client::EventQuery {
                        after,
                        limit: Some(10_000),
                        ..Default::default()
                    },
                )
                .map(json_list)
                .expect("events");
            if page.is_empty() {
                break;
            }
            after = page.last().and_then(|e| e["seq"].as_i64());
            all.extend(page.iter().filter_map(|e| e["seq"].as_i64()));
        }
        all
    };
    let status = eventually("the file caught up", || {
        let s = admin.status().map(|v| json_value(&v)).ok()?;
        (s["jsonl_last_seq"].as_i64()? >= *stored.last()?).then_some(s)
    });
    assert!(status["jsonl_last_seq"].as_i64().is_some());
    // Read every file: rotated ones oldest first, then the current one.
    let mut files: Vec<std::path::PathBuf> = (1..1000)
        .map(|n| std::path::PathBuf::from(format!("{p}.{n}")))
        .filter(|f| f.exists())
        .collect();
    assert!(
        files.len() >= 2,
        "the file rotated ({} rotated files)",
        files.len()
    );
    files.reverse();
    files.push(path.clone());
    let mut seqs = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON event per line");
            if v["probe"] == probe_id.as_str() {
                seqs.push(v["seq"].as_i64().unwrap());
            }
        }
    }
    let unique: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no event written twice");
    let stored_set: HashSet<i64> = stored.iter().copied().collect();
    assert_eq!(unique, stored_set, "every stored event is in the files");
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, seqs, "in seq order");
    t.assert_untouched();
}

#[test]
fn local_mode_exports_log_hits_over_otlp() {
    let (url, got) = receiver(false);
    let t = Target::start(&ledger_debug(), &["2000", "1"]);
    let line = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total") + 1);
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &line,
        "total={total}",
        "--max-hits",
        "5",
        "--for",
        "30s",
        "--otlp-endpoint",
        &url,
    ]);
    assert_success(&out);
    let recs = records(&got, "1");
    assert_eq!(recs.len(), 5, "every hit exported before exit");
    assert_eq!(int_attr(&recs[0].0, "process.pid"), t.pid as i64);
    assert_eq!(str_attr(&recs[0].0, "service.name"), "ledger");
}

/// Every metric of a given name the collector got, with its points' attributes.
fn metrics_named(
    got: &Received,
    name: &str,
) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
    got.metrics
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == name)
        .cloned()
        .collect()
}

fn is_probe(attrs: &[KeyValue], id: &str) -> bool {
    attr(attrs, "periscope.probe.id") == Some(&any_value::Value::StringValue(id.to_string()))
}

/// `periscope probe add duration|gauge` on a fleet: the agent runs them in the kernel, reports
/// each interval as a `metric` event (stored, shown by `probe show` and `events`), and the
/// server exports a cumulative Histogram and a Gauge with the probe's attributes.
#[test]
fn durations_and_gauges_on_a_fleet_reach_the_api_and_an_otlp_collector() {
    let (url, got) = receiver(true);
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "500");
    let (server, _agent, t) = fleet_with(
        "otlp-metrics",
        &["--otlp-endpoint", &url, "--otlp-protocol", "grpc"],
    );
    let line = probe_line("ledger.rs", "settle-total") + 1;
    let added = |args: &[&str]| {
        let out = server.cli(&server.admin, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_out(&out)["id"].as_str().expect("probe id").to_string()
    };
    let duration = added(&[
        "probe",
        "add",
        "duration",
        "service=ledger",
        "ledger::settle",
        "--by",
        "t.memo",
        "--engine",
        "bpf",
        "--json",
    ]);
    let gauge = added(&[
        "probe",
        "add",
        "gauge",
        "service=ledger",
        &format!("ledger.rs:{line}"),
        "total",
        "--by",
        "t.memo",
        "--json",
    ]);
    let admin = server.admin();
    let metric_events = |id: &str| {
        eventually("metric events", || {
            let evs = admin
                .events(id, &periscope_client::EventQuery::default())
                .map(json_list)
                .ok()?;
            let evs: Vec<_> = evs.into_iter().filter(|e| e["kind"] == "metric").collect();
            (evs.len() >= 2).then_some(evs)
        })
    };
    let memos = ["rent", "coffee", "books"];
    for e in metric_events(&duration) {
        assert_eq!(e["metric"], "duration");
        assert_eq!(e["engine"], "bpf", "{e}");
        assert_eq!(e["pid"], t.pid);
        let count = e["count"].as_u64().unwrap();
        let (min, max, sum) = (
            e["min"].as_f64().unwrap(),
            e["max"].as_f64().unwrap(),
            e["sum"].as_f64().unwrap(),
        );
        assert!(
            count > 0 && min > 0.0 && min <= max && sum >= min * count as f64,
            "{e}"
        );
        let in_buckets: u64 = e["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(in_buckets, count, "{e}");
        let groups = e["groups"].as_object().expect("groups by memo");
        assert!(
            groups.keys().all(|k| memos.contains(&k.trim_matches('"'))),
            "{e}"
        );
        let grouped: u64 = groups.values().map(|g| g["count"].as_u64().unwrap()).sum();
        assert_eq!(grouped, count, "{e}");
    }
    for e in metric_events(&gauge) {
        assert_eq!(e["metric"], "gauge");
        let last = e["last"].as_f64().unwrap();
        assert!(e["histogram"].is_null(), "a gauge has no histogram: {e}");
        // Every total the ledger computes is amount + amount / 10 with amount = seq*100 + worker.
        for g in e["groups"].as_object().expect("groups").values() {
            for v in ["min", "max", "last"] {
                let total = g[v].as_f64().unwrap() as i64;
                let amount = (total * 10 + 10) / 11;
                let ok = (amount.saturating_sub(2)..=amount + 2)
                    .any(|a| a + a / 10 == total && a % 100 < 2);
                assert!(ok, "{v} {total} is not a total the ledger computes: {e}");
            }
        }
        assert!(
            e["min"].as_f64().unwrap() <= last && last <= e["max"].as_f64().unwrap(),
            "{e}"
        );
    }
    let shown = server.cli(&server.admin, &["probe", "show", &duration]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("duration at ledger::settle") && text.contains("bpf"),
        "{text}"
    );
    // The collector: a cumulative Histogram in seconds and a Gauge, with the attributes.
    let point = eventually("a duration histogram point", || {
        metrics_named(&got, "periscope.probe.duration")
            .into_iter()
            .find_map(|m| {
                assert_eq!(m.unit, "s");
                let Some(metric::Data::Histogram(h)) = m.data else {
                    panic!("not a histogram: {m:?}")
                };
                assert_eq!(h.aggregation_temporality, 2);
                h.data_points
                    .into_iter()
                    .find(|p| is_probe(&p.attributes, &duration) && p.count > 0)
            })
    });
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
    assert!(point.min.unwrap() > 0.0 && point.min <= point.max);
    assert!(memos.contains(&str_attr(&point.attributes, "periscope.group").trim_matches('"')));
    assert_eq!(
        str_attr(&point.attributes, "periscope.probe.kind"),
        "duration"
    );
    assert_eq!(
        str_attr(&point.attributes, "code.function.name"),
        "ledger::settle"
    );
    let gauge_point = eventually("a gauge point", || {
        metrics_named(&got, "periscope.probe.gauge")
            .into_iter()
            .find_map(|m| {
                let Some(metric::Data::Gauge(g)) = m.data else {
                    panic!("not a gauge: {m:?}")
                };
                g.data_points
                    .into_iter()
                    .find(|p| is_probe(&p.attributes, &gauge))
            })
    });
    assert_eq!(
        int_attr(&gauge_point.attributes, "code.line.number"),
        line as i64
    );
    assert!(str_attr(&gauge_point.attributes, "code.file.path").ends_with("ledger.rs"));
    match gauge_point.value {
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v)) => {
            assert!(v > 0.0)
        }
        other => panic!("gauge value: {other:?}"),
    }
}

/// `periscope duration … --otlp-endpoint`: the local command exports what it prints, as a
/// Histogram of the function's calls (before, `--otlp` was accepted and ignored).
#[test]
fn local_mode_exports_durations_over_otlp() {
    let (url, got) = receiver(false);
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "200");
    let t = Target::start(&ledger_debug(), &["2000", "1"]);
    let out = run_periscope(&[
        "duration",
        &t.pid.to_string(),
        "ledger::settle",
        "--every",
        "300ms",
        "--for",
        "2s",
        "--otlp-endpoint",
        &url,
    ]);
    assert_success(&out);
    let point = metrics_named(&got, "periscope.probe.duration")
        .into_iter()
        .filter_map(|m| match m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.into_iter().last(),
            _ => None,
        })
        .max_by_key(|p| p.count)
        .expect("a duration point exported before exit");
    assert!(point.count > 0, "{point:?}");
    assert_eq!(
        str_attr(&point.attributes, "code.function.name"),
        "ledger::settle"
    );
    let printed: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split("total ledger::settle: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the total line");
    assert_eq!(
        point.count, printed,
        "the export counts every call the total line counts"
    );
}
