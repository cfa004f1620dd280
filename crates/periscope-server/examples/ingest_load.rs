//! Load generator for `bench/server_load.sh`: several simulated agents post reports of log
//! events to a running server as fast as it accepts them, while one client measures the
//! latency of API reads (`GET /api/v1/probes/ID/events`). Prints events/s and latency
//! percentiles.
//!
//! URL may list several server replicas separated by commas: the agents are spread over them
//! and the reader asks each in turn.
//!
//! Usage: ingest_load URL AGENT_TOKEN VIEWER_TOKEN PROBE_ID [SECONDS] [AGENTS] [BATCH]

use periscope_client::{Client, EventQuery};
use periscope_core::api::{AgentInfo, AgentReport, Instance};
use periscope_core::event::{Body, Event, LogEvent};
use periscope_core::value::{Fields, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!(
            "usage: ingest_load URL AGENT_TOKEN VIEWER_TOKEN PROBE_ID [SECONDS] [AGENTS] [BATCH]"
        );
        std::process::exit(2);
    }
    let (urls, agent_token, viewer_token, probe) = (&args[0], &args[1], &args[2], &args[3]);
    let urls: Vec<&str> = urls.split(',').collect();
    let seconds: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10);
    let agents: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(4);
    let batch: usize = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(500);
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for a in 0..agents {
        let (sent, stop) = (sent.clone(), stop.clone());
        let client = Client::new(urls[a % urls.len()], Some(agent_token.clone()), "agent");
        let probe = probe.clone();
        handles.push(std::thread::spawn(move || {
            let info = AgentInfo {
                id: format!("load-agent-{a}"),
                host: format!("load-{a}"),
                tags: Default::default(),
                features: Vec::new(),
            };
            let instance = Instance {
                id: format!("load-{a}-1"),
                agent: info.id.clone(),
                host: info.host.clone(),
                pid: 1000 + a as u32,
                ns_pid: None,
                executable: "/usr/bin/load".into(),
                build_id: None,
                language: Some("rust".into()),
                lang: Some("rust".into()),
                tags: [("service".to_string(), "load".to_string())].into(),
                state: "online".into(),
                last_seen: String::new(),
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Built as typed events (as an agent does), not through JSON: the generator
                // shares the machine with the server and should take little of it.
                let ts = periscope_core::event::now_rfc3339();
                let events = (0..batch)
                    .map(|i| {
                        n += 1;
                        let int = |v: u64| Value::Int {
                            ty: Some("i64".into()),
                            value: (v as i128).into(),
                        };
                        let mut e = Event::new(
                            instance.id.clone(),
                            Body::Log(LogEvent {
                                ts: ts.clone(),
                                pid: instance.pid,
                                ns_pid: None,
                                tid: instance.pid,
                                ns_tid: None,
                                goroutine: None,
                                location: "main.rs:42".into(),
                                probe: probe.clone(),
                                function: Some("load::step".into()),
                                message: format!("total={n} fee={i}"),
                                values: Fields(vec![
                                    ("total".into(), int(n)),
                                    ("fee".into(), int(i as u64)),
                                ]),
                                engine: None,
                                verify: None,
                            }),
                        );
                        e.key = Some(n);
                        e
                    })
                    .collect();
                let report = AgentReport {
                    agent: info.clone(),
                    run: Some(format!("{}-run", info.id)),
                    instances: vec![instance.clone()],
                    statuses: vec![],
                    events,
                    dropped_events: 0,
                    stopping: false,
                };
                if client.report(&report).is_ok() {
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    // API latency under load: a page of the probe's latest events, over and over.
    let readers: Vec<Client> = urls
        .iter()
        .map(|u| Client::new(u, Some(viewer_token.clone()), "cli"))
        .collect();
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let reader = &readers[latencies.len() % readers.len()];
        let t = Instant::now();
        let _ = reader.events(
            probe,
            &EventQuery {
                limit: Some(20),
                ..Default::default()
            },
        );
        let _ = reader.probes(false);
        latencies.push(t.elapsed() / 2);
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let total = sent.load(Ordering::Relaxed);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "ingested {total} events in {elapsed:.1} s: {:.0} events/s ({agents} agents, batches of {batch})",
        total as f64 / elapsed
    );
    println!(
        "API read latency under that load ({} requests): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    );
}
