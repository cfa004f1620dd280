//! Events to an OpenTelemetry collector over OTLP (gRPC or HTTP/protobuf).
//!
//! The requests are built directly from `opentelemetry-proto`'s message types rather than
//! through the SDK's logger and meter providers: those carry one resource per provider, while
//! Periscope's events come from many instances (one resource each) through one server. Building
//! `ResourceLogs`/`ResourceMetrics` per instance keeps that identity, and keeps the queue ours:
//! bounded, drops counted, a slow or absent collector never blocks the caller.
//!
//! Mapping (OpenTelemetry semantic conventions where a name exists):
//! - log hits → LogRecords: body the message; `code.file.path`, `code.line.number`,
//!   `code.function.name`, `thread.id`, `periscope.probe.id`, `periscope.probe.kind`, and each
//!   captured value as `periscope.value.<expression>` (typed AnyValue);
//! - snapshots and failures → LogRecords whose body is the value tree (frames, variables,
//!   watches) as AnyValue maps and arrays, the stack as `code.stacktrace`; failures add
//!   `exception.type` and `exception.message`;
//! - counters, durations and gauges → the Sum `periscope.probe.hits`, the Histogram
//!   `periscope.probe.duration` and the Gauge `periscope.probe.gauge` per probe (and group):
//!   see [`crate::points`];
//! - resource: `service.name` (the `service` tag), `host.name`, `process.pid` (the host's),
//!   `periscope.process.ns_pid` (the pid inside its container, if in one),
//!   `process.executable.name`, `periscope.instance.id`, and every other tag.

use crate::points::Points;
use crate::records::{kv_int, kv_str, log_record, now_ns};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use periscope_core::api::Instance;
use periscope_core::event::{Body, Event};
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::Http),
            _ => Err(format!(
                "unknown OTLP protocol `{s}`: expected grpc or http (http/protobuf)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// Base URL (`http://collector:4318`); over HTTP `/v1/logs` and `/v1/metrics` are appended.
    pub endpoint: String,
    /// Full URLs from `OTEL_EXPORTER_OTLP_{LOGS,METRICS}_ENDPOINT`, used as they are.
    pub logs_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub metric_interval: Duration,
    pub timeout: Duration,
    /// Log records held while the collector is slow or away; beyond it the oldest are dropped.
    pub queue: usize,
}

impl OtlpConfig {
    /// Flags first, then the standard `OTEL_EXPORTER_OTLP_*` and `OTEL_METRIC_EXPORT_INTERVAL`
    /// variables. None when no endpoint is given either way.
    pub fn resolve(
        endpoint: Option<String>,
        protocol: Option<Protocol>,
        headers: &[String],
    ) -> Result<Option<OtlpConfig>, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let logs_endpoint = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");
        let metrics_endpoint = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
        let Some(endpoint) = endpoint
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .or_else(|| logs_endpoint.clone())
        else {
            return Ok(None);
        };
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(format!(
                "bad OTLP endpoint `{endpoint}`: expected a URL such as http://127.0.0.1:4318"
            ));
        }
        let protocol = match protocol {
            Some(p) => p,
            None => env("OTEL_EXPORTER_OTLP_PROTOCOL")
                .map(|p| p.parse())
                .transpose()?
                .unwrap_or(Protocol::Http),
        };
        let mut all_headers = Vec::new();
        if let Some(h) = env("OTEL_EXPORTER_OTLP_HEADERS") {
            for part in h.split(',').filter(|p| !p.trim().is_empty()) {
                all_headers.push(split_header(part.trim())?);
            }
        }
        for h in headers {
            all_headers.push(split_header(h)?);
        }
        let ms = |k: &str, default: u64| {
            env(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_millis(default))
        };
        Ok(Some(OtlpConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            logs_endpoint,
            metrics_endpoint,
            protocol,
            headers: all_headers,
            metric_interval: ms("OTEL_METRIC_EXPORT_INTERVAL", 10_000)
                .max(Duration::from_millis(100)),
            timeout: ms("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000),
            queue: 10_000,
        }))
    }

    fn http_url(&self, signal: &str) -> String {
        let specific = match signal {
            "logs" => &self.logs_endpoint,
            _ => &self.metrics_endpoint,
        };
        specific
            .clone()
            .unwrap_or_else(|| format!("{}/v1/{signal}", self.endpoint))
    }
}

fn split_header(h: &str) -> Result<(String, String), String> {
    h.split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .ok_or_else(|| format!("bad OTLP header `{h}`: expected KEY=VALUE"))
}

/// What the exporter has done, for status pages and its own metrics.
#[derive(Default)]
pub struct ExportStats {
    pub exported_logs: AtomicU64,
    pub exported_points: AtomicU64,
    /// Records dropped because the queue was full (the collector slow or away).
    pub dropped: AtomicU64,
    pub failed_exports: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl ExportStats {
    pub fn status(&self) -> periscope_core::api::OtlpStatus {
        periscope_core::api::OtlpStatus {
            exported_logs: self.exported_logs.load(Ordering::Relaxed),
            exported_metric_points: self.exported_points.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed_exports: self.failed_exports.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

struct Queue {
    logs: VecDeque<(Arc<Resource>, LogRecord)>,
    /// Counters', durations' and gauges' series.
    points: Points,
    closed: bool,
    /// When the exporter started (start time of its own cumulative counters).
    started: u64,
}

/// A running exporter: `submit` never blocks; a worker thread sends.
pub struct OtlpExporter {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    pub stats: Arc<ExportStats>,
    worker: Option<std::thread::JoinHandle<()>>,
    resources: Mutex<HashMap<String, Arc<Resource>>>,
    capacity: usize,
}

impl OtlpExporter {
    pub fn start(config: OtlpConfig) -> OtlpExporter {
        let queue = Arc::new((
            Mutex::new(Queue {
                logs: VecDeque::new(),
                points: Points::default(),
                closed: false,
                started: now_ns(),
            }),
            Condvar::new(),
        ));
        let stats = Arc::new(ExportStats::default());
        let capacity = config.queue;
        let worker = {
            let (queue, stats) = (queue.clone(), stats.clone());
            std::thread::Builder::new()
                .name("periscope-otlp".into())
                .spawn(move || run(config, &queue, &stats))
                .ok()
        };
        OtlpExporter {
            queue,
            stats,
            worker,
            resources: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn resource(&self, instance: &Instance) -> Arc<Resource> {
        let mut map = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(instance.id.clone())
            .or_insert_with(|| Arc::new(resource_of(instance)))
            .clone()
    }

    /// Queues one event from `instance`.
    pub fn submit(&self, instance: &Instance, event: &Event) {
        let resource = self.resource(instance);
        let (lock, cv) = &*self.queue;
        let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
        match &event.body {
            Body::Count(count) => return q.points.count(resource, &instance.id, count, now_ns()),
            Body::Metric(m) => return q.points.metric(resource, &instance.id, m, now_ns()),
            _ => {}
        }
        let Some(record) = log_record(event) else {
            return;
        };
        if q.logs.len() >= self.capacity {
            q.logs.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.logs.push_back((resource, record));
        drop(q);
        cv.notify_one();
    }

    /// Sends what is queued (waiting at most `wait`) and stops the worker.
    pub fn shutdown(mut self, wait: Duration) {
        {
            let (lock, cv) = &*self.queue;
            lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            cv.notify_all();
        }
        if let Some(w) = self.worker.take() {
            let deadline = Instant::now() + wait;
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The worker: sends log batches as they come and counters every metric interval; a failed
/// batch is retried with backoff (1 s doubling to 30 s) while new records queue up (bounded).
fn run(config: OtlpConfig, queue: &(Mutex<Queue>, Condvar), stats: &ExportStats) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            return;
        }
    };
    let sender = Sender { config, rt };
    let mut pending: Option<ExportLogsServiceRequest> = None;
    let mut pending_count = 0u64;
    let mut backoff = Duration::from_secs(1);
    let mut retry_at: Option<Instant> = None;
    let mut next_metrics = Instant::now() + sender.config.metric_interval;
    loop {
        let (lock, cv) = queue;
        let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Work is: a new batch to take (none in flight), a retry or metrics falling due, or
        // closing. While a failed batch backs off, newly queued records are not work: they wait
        // (woken by them, the loop would spin until the retry).
        let wake = match retry_at {
            Some(r) if pending.is_some() => r.min(next_metrics),
            _ => next_metrics,
        };
        while !q.closed && (pending.is_some() || q.logs.is_empty()) && Instant::now() < wake {
            let left = wake.saturating_duration_since(Instant::now());
            q = cv
                .wait_timeout(q, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let closing = q.closed;
        if pending.is_none() && !q.logs.is_empty() {
            let n = q.logs.len().min(1000);
            let batch: Vec<_> = q.logs.drain(..n).collect();
            pending_count = batch.len() as u64;
            pending = Some(logs_request(batch));
        }
        let metrics =
            (Instant::now() >= next_metrics || closing).then(|| metrics_request(&q, stats));
        drop(q);
        if let Some(req) = &pending {
            if retry_at.is_none_or(|r| Instant::now() >= r || closing) {
                match sender.logs(req) {
                    Ok(()) => {
                        stats
                            .exported_logs
                            .fetch_add(pending_count, Ordering::Relaxed);
                        pending = None;
                        retry_at = None;
                        backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                        *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        if let Some((req, points)) = metrics {
            next_metrics = Instant::now() + sender.config.metric_interval;
            if points > 0 {
                match sender.metrics(&req) {
                    Ok(()) => {
                        stats.exported_points.fetch_add(points, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                        *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    }
                }
            }
        }
        if closing {
            let empty = queue.0.lock().map(|q| q.logs.is_empty()).unwrap_or(true);
            if pending.is_none() && empty {
                return;
            }
            if pending.is_some() && retry_at.is_some() {
                return; // the collector is away: do not hold up the exit
            }
        }
    }
}

struct Sender {
    config: OtlpConfig,
    rt: tokio::runtime::Runtime,
}

impl Sender {
    fn logs(&self, req: &ExportLogsServiceRequest) -> Result<(), String> {
        match self.config.protocol {
            Protocol::Http => self.post(&self.config.http_url("logs"), req.encode_to_vec()),
            Protocol::Grpc => self.rt.block_on(async {
                use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
                let channel = self.channel().await?;
                let mut client = LogsServiceClient::new(channel);
                client
                    .export(self.grpc_request(req.clone())?)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("OTLP gRPC logs export: {}", s.message()))
            }),
        }
    }

    fn metrics(&self, req: &ExportMetricsServiceRequest) -> Result<(), String> {
        match self.config.protocol {
            Protocol::Http => self.post(&self.config.http_url("metrics"), req.encode_to_vec()),
            Protocol::Grpc => self.rt.block_on(async {
                use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
                let channel = self.channel().await?;
                let mut client = MetricsServiceClient::new(channel);
                client
                    .export(self.grpc_request(req.clone())?)
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("OTLP gRPC metrics export: {}", s.message()))
            }),
        }
    }

    async fn channel(&self) -> Result<tonic::transport::Channel, String> {
        tonic::transport::Endpoint::from_shared(self.config.endpoint.clone())
            .map_err(|e| format!("bad OTLP endpoint: {e}"))?
            .timeout(self.config.timeout)
            .connect_timeout(self.config.timeout)
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the OTLP collector at {}: {e}",
                    self.config.endpoint
                )
            })
    }

    fn grpc_request<T>(&self, body: T) -> Result<tonic::Request<T>, String> {
        let mut r = tonic::Request::new(body);
        for (k, v) in &self.config.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                .map_err(|e| format!("bad OTLP header name `{k}`: {e}"))?;
            let value = v
                .parse()
                .map_err(|e| format!("bad OTLP header value for `{k}`: {e}"))?;
            r.metadata_mut().insert(key, value);
        }
        Ok(r)
    }

    fn post(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(url)
            .header("content-type", "application/x-protobuf");
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        let resp = req
            .send(&body[..])
            .map_err(|e| format!("cannot reach the OTLP collector at {url}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the OTLP collector at {url} answered {}",
                resp.status()
            ))
        }
    }
}

/// Items grouped by the resource (instance) they belong to, in first-seen order.
pub(crate) fn group_by_resource<T>(
    items: impl IntoIterator<Item = (Arc<Resource>, T)>,
) -> Vec<(Arc<Resource>, Vec<T>)> {
    let mut groups: Vec<(Arc<Resource>, Vec<T>)> = Vec::new();
    for (res, item) in items {
        match groups.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &res)) {
            Some((_, v)) => v.push(item),
            None => groups.push((res, vec![item])),
        }
    }
    groups
}

fn logs_request(batch: Vec<(Arc<Resource>, LogRecord)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: group_by_resource(batch)
            .into_iter()
            .map(|(res, records)| ResourceLogs {
                resource: Some((*res).clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Every probe series' points, plus the exporter's own counters (under the
/// resource `service.name=periscope`); returns the request and its point count.
fn metrics_request(q: &Queue, stats: &ExportStats) -> (ExportMetricsServiceRequest, u64) {
    let now = now_ns();
    let (probe_metrics, points) = q.points.metrics(now);
    let own = |name: &str, description: &str, n: u64| Metric {
        name: name.into(),
        description: description.into(),
        unit: "{record}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: q.started,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(n as i64)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let own_metrics = ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv_str("service.name", "periscope")],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics: vec![
                own(
                    "periscope.otlp.exported_logs",
                    "Log records the collector accepted",
                    stats.exported_logs.load(Ordering::Relaxed),
                ),
                own(
                    "periscope.otlp.dropped",
                    "Log records dropped because the export queue was full",
                    stats.dropped.load(Ordering::Relaxed),
                ),
                own(
                    "periscope.otlp.failed_exports",
                    "Export requests that failed (retried with backoff)",
                    stats.failed_exports.load(Ordering::Relaxed),
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut resource_metrics = vec![own_metrics];
    resource_metrics.extend(
        probe_metrics
            .into_iter()
            .map(|(res, metrics)| ResourceMetrics {
                resource: Some((*res).clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }),
    );
    let req = ExportMetricsServiceRequest { resource_metrics };
    (req, points + 3)
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "periscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The resource of an instance: semantic-convention names, then every tag.
pub fn resource_of(i: &Instance) -> Resource {
    let exe_name = std::path::Path::new(&i.executable)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| i.executable.clone());
    let service = i.tags.get("service").cloned().unwrap_or(exe_name.clone());
    let mut attributes = vec![
        kv_str("service.name", &service),
        kv_str("host.name", &i.host),
        kv_int("process.pid", i.pid as i64),
        kv_str("process.executable.name", &exe_name),
        kv_str("process.executable.path", &i.executable),
        kv_str("periscope.instance.id", &i.id),
    ];
    // The pid inside the process's container (`process.pid` is the host's).
    if let Some(n) = i.ns_pid {
        attributes.push(kv_int("periscope.process.ns_pid", i64::from(n)));
    }
    if let Some(b) = &i.build_id {
        attributes.push(kv_str("process.executable.build_id.gnu", b));
    }
    for (k, v) in &i.tags {
        if k != "service" && k != "host" {
            attributes.push(kv_str(k, v));
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}
