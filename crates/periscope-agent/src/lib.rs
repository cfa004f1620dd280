//! The host agent. It watches processes (by pid, or every process of an executable name,
//! including ones started later), asks the server which probes apply to them, keeps each
//! process's probes in line with that (attaching only while a process has probes, so a process
//! without any is untouched), and ships the events back.
//!
//! Threads: the reconciler (owns the instances and their sessions; everything that changes
//! them arrives on one channel), the syncer (long-polls the server for the desired state), the
//! shipper (sends reports from the [`outbox::Outbox`], retrying with backoff), and one
//! forwarder per probed process (engine events → outbox), and the code worker (answers the
//! server's code requests, which arrive with the desired state). When the server is away the
//! probes keep running within their limits and the outbox keeps the newest events.

mod attach;
mod code;
pub mod discover;
pub mod outbox;
mod report;
pub mod servers;

use attach::{
    add, close_session, counts_of, detach_if_idle, engine_of, install, pending_of, take_out,
};
use discover::{Found, Selection};
use outbox::Outbox;
use periscope_core::api::{
    AgentInfo, AgentReport, Desired, InstallState, Instance, Probe, ProbeInstance, StatusReport,
    FEATURE_CODE,
};
use periscope_core::code::CodeRequest;
use periscope_core::event::{Body, Event, ProbeError};
use periscope_core::redact::Redactor;
use periscope_runtime::probe::Budget;
use periscope_runtime::{Attachment, Code, ProbeState, Runtime, Tallies};
use servers::Servers;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's URLs: replicas of one control plane, used one at a time.
    pub servers: Vec<String>,
    pub token: String,
    pub selection: Selection,
    pub tags: BTreeMap<String, String>,
    /// Host name reported for the instances (default: the machine's).
    pub host: String,
    /// Agent id (default: host and the agent's pid).
    pub id: String,
    /// Events kept while the server cannot be reached.
    pub buffer: usize,
    /// How often processes are looked for (`--exe`) and probe states refreshed.
    pub scan_interval: Duration,
    /// How often counters are reported.
    pub count_interval: Duration,
    /// Overhead budget per probe per instance, unless the probe sets its own.
    pub budget: Budget,
    pub redactor: Redactor,
    /// PEM certificates to trust for an HTTPS server with a private CA.
    pub ca_cert: Option<Vec<u8>>,
}

impl AgentConfig {
    /// `server`: one URL, or several separated by commas.
    pub fn new(server: &str, token: &str, selection: Selection) -> AgentConfig {
        let host = discover::hostname();
        AgentConfig {
            servers: server
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            token: token.to_string(),
            selection,
            tags: BTreeMap::new(),
            id: format!("{host}-agent-{}", std::process::id()),
            host,
            buffer: 10_000,
            scan_interval: Duration::from_secs(1),
            count_interval: Duration::from_secs(10),
            budget: Budget {
                limit: Duration::from_millis(100),
                window: Duration::from_secs(10),
            },
            redactor: Redactor::default(),
            ca_cert: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no process {pid}: check the pid (`ps -p {pid}`)")]
    NoSuchProcess { pid: u32 },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// What reaches the reconciler.
enum Msg {
    Desired(Desired),
    /// A probe stopped inside a session (hit limit, overhead budget).
    Stopped {
        instance: String,
        probe: String,
        state: ProbeState,
    },
    /// A pending probe was placed: its library was loaded.
    Armed {
        instance: String,
        probe: String,
        sites: usize,
    },
    /// A session ended: the process exited or exec'd, or the engine failed.
    Ended {
        instance: String,
        reason: String,
    },
    Shutdown,
}

/// One probe on one instance, as the agent runs it.
struct ProbeRun {
    probe: Probe,
    state: InstallState,
    last_error: Option<String>,
    sites: Option<usize>,
    /// Local expiry (the server expires it too; this holds while the server is away).
    expires: Option<time::OffsetDateTime>,
    reported: Option<ProbeInstance>,
    /// Counters: the totals at the last count report.
    counted: (u64, HashMap<String, u64>),
    last_count: Instant,
    /// Hits, dropped and errors counted by earlier sessions (or before a resume): the
    /// counts reported are cumulative over the probe's life in this agent.
    carried: Counts,
}

/// (hits, dropped, errors).
type Counts = (u64, u64, u64);

struct InstanceRun {
    info: Instance,
    found: Found,
    /// The runtime the dispatcher picked for the process.
    runtime: &'static dyn Runtime,
    /// Its code, read when the process was found (for the instance's language and build id)
    /// and kept for the first attach.
    code: Option<Arc<dyn Code>>,
    session: Option<Box<dyn Attachment>>,
    tallies: Option<Tallies>,
    probes: HashMap<String, ProbeRun>,
}

/// Runs the agent until `shutdown` receives (or its sender is dropped).
pub fn run(config: AgentConfig, shutdown: Receiver<()>) -> Result<(), AgentError> {
    for &pid in &config.selection.pids {
        if discover::inspect(pid).is_none() {
            return Err(AgentError::NoSuchProcess { pid });
        }
    }
    let servers = Arc::new(
        Servers::connect(&config.servers, &config.token, config.ca_cert.as_deref())
            .map_err(|e| AgentError::Config(e.to_string()))?,
    );
    let outbox = Arc::new(Outbox::new(config.buffer));
    let (tx, rx) = mpsc::channel::<Msg>();
    let info = AgentInfo {
        id: config.id.clone(),
        host: config.host.clone(),
        tags: config.tags.clone(),
        features: vec![FEATURE_CODE.to_string()],
    };

    let shipper = {
        let (servers, outbox, info) = (servers.clone(), outbox.clone(), info.clone());
        let run = run_id(&config.id);
        spawn("periscope-shipper", move || {
            ship(&servers, &outbox, &info, &run)
        })?
    };
    {
        let code = code::start(servers.clone(), outbox.clone())?;
        let (servers, tx, id) = (servers.clone(), tx.clone(), config.id.clone());
        spawn("periscope-syncer", move || sync(&servers, &id, &tx, &code))?;
    }
    {
        let tx = tx.clone();
        spawn("periscope-shutdown", move || {
            let _ = shutdown.recv();
            // A debuginfod download while indexing a new process must not hold up the exit.
            periscope_runtimes::cancel_downloads();
            let _ = tx.send(Msg::Shutdown);
        })?;
    }

    let mut agent = Reconciler {
        config,
        outbox: outbox.clone(),
        tx,
        instances: HashMap::new(),
        desired: None,
    };
    agent.scan();
    agent.run(rx);
    agent.stop_all();
    outbox.close();
    // The last report (final states, last events) gets a moment to go out, short enough that
    // the agent still ends within a second of SIGTERM when the server is unreachable.
    let deadline = Instant::now() + Duration::from_millis(500);
    while !shipper.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, AgentError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(AgentError::Thread)
}

/// This agent process's run id: its events' keys count from 1 within it.
fn run_id(agent: &str) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{agent}-{started:x}")
}

/// Sends reports until the outbox is closed and empty. A failed send keeps the batch and goes
/// to the next server at once; after a round of failures it backs off (0.2 s doubling to
/// 5 s). A batch sent again is stored once: its events keep their keys.
fn ship(servers: &Servers, outbox: &Outbox, info: &AgentInfo, run: &str) {
    let mut backoff = Duration::from_millis(200);
    while let Some(batch) = outbox.take(2000, Duration::from_secs(5)) {
        let report = AgentReport {
            agent: info.clone(),
            run: Some(run.to_string()),
            instances: batch.instances.clone(),
            statuses: batch.statuses.clone(),
            events: batch.events.clone(),
            dropped_events: batch.dropped,
            stopping: batch.last,
        };
        let (which, client) = servers.current();
        match client.report(&report) {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) if e.status().is_some_and(|s| s == 400) => {
                // The server refuses this batch as such: retrying would loop forever.
                eprintln!("periscope agent: the server refused a report: {e}");
            }
            Err(e) => {
                outbox.give_back(batch);
                if servers::worth_another(&e) && !servers.failed(which) {
                    continue;
                }
                eprintln!("periscope agent: cannot report ({e}); retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Long-polls the server for the desired state and hands each new one to the reconciler, and
/// the code requests that come with it to the code worker (a poll that returns for a code
/// request alone, at the same version, does not disturb the reconciler).
fn sync(servers: &Servers, agent: &str, tx: &Sender<Msg>, code: &Sender<CodeRequest>) {
    let mut version = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let (which, client) = servers.current();
        match client.desired(agent, version, Duration::from_secs(20)) {
            Ok(mut d) => {
                backoff = Duration::from_millis(200);
                let asked = !d.code_requests.is_empty();
                for r in std::mem::take(&mut d.code_requests) {
                    let _ = code.send(r);
                }
                if asked && version == Some(d.version) {
                    continue;
                }
                version = Some(d.version);
                if tx.send(Msg::Desired(d)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if e.status().is_some_and(|s| s == 401 || s == 403) {
                    eprintln!("periscope agent: {e}");
                }
                // Another replica, or a restarted server, counts versions its own way: ask
                // without one.
                version = None;
                if servers::worth_another(&e) && !servers.failed(which) {
                    continue;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

struct Reconciler {
    config: AgentConfig,
    outbox: Arc<Outbox>,
    tx: Sender<Msg>,
    /// By instance id.
    instances: HashMap<String, InstanceRun>,
    desired: Option<Desired>,
}

impl Reconciler {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut next_scan = Instant::now() + self.config.scan_interval;
        loop {
            let wait = next_scan.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Desired(d)) => {
                    self.desired = Some(d);
                    self.apply();
                }
                Ok(Msg::Stopped {
                    instance,
                    probe,
                    state,
                }) => self.on_stopped(&instance, &probe, state),
                Ok(Msg::Armed {
                    instance,
                    probe,
                    sites,
                }) => self.on_armed(&instance, &probe, sites),
                Ok(Msg::Ended { instance, reason }) => self.on_ended(&instance, &reason),
                Err(RecvTimeoutError::Timeout) => {
                    self.scan();
                    self.expire_local();
                    self.refresh_states();
                    next_scan = Instant::now() + self.config.scan_interval;
                }
            }
        }
    }

    /// Finds new processes and forgets vanished ones.
    fn scan(&mut self) {
        let found = self.config.selection.scan();
        let ids: Vec<String> = found
            .iter()
            .map(|f| discover::instance_id(&self.config.host, f))
            .collect();
        let gone: Vec<String> = self
            .instances
            .keys()
            .filter(|k| !ids.contains(k))
            .cloned()
            .collect();
        for id in gone {
            self.on_ended(&id, "the process exited");
        }
        for (f, id) in found.into_iter().zip(ids) {
            if self.instances.contains_key(&id) {
                continue;
            }
            let runtime = match periscope_runtimes::for_pid(f.pid, None) {
                Ok(picked) => {
                    if let Some(n) = &picked.note {
                        eprintln!("periscope agent: {n}");
                    }
                    picked.runtime
                }
                Err(e) => {
                    eprintln!("periscope agent: pid {}: {e}", f.pid);
                    continue;
                }
            };
            let code = runtime.open_process(f.pid).ok();
            let mut tags = self.config.tags.clone();
            tags.insert("host".into(), self.config.host.clone());
            let language = code.as_ref().and_then(|c| c.language());
            let info = Instance {
                id: id.clone(),
                agent: self.config.id.clone(),
                host: self.config.host.clone(),
                pid: f.pid,
                ns_pid: f.ns_pid,
                executable: f.executable.clone(),
                build_id: code.as_ref().and_then(|c| c.build_id()),
                language: language.clone(),
                lang: language,
                tags,
                state: "online".into(),
                last_seen: String::new(),
            };
            self.instances.insert(
                id,
                InstanceRun {
                    info,
                    found: f,
                    runtime,
                    code,
                    session: None,
                    tallies: None,
                    probes: HashMap::new(),
                },
            );
        }
        self.publish_instances();
    }

    fn publish_instances(&self) {
        let mut list: Vec<Instance> = self.instances.values().map(|i| i.info.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        self.outbox.set_instances(list);
    }

    /// Makes every instance's probes match the desired state.
    fn apply(&mut self) {
        let Some(desired) = &self.desired else {
            return;
        };
        let mut wanted: HashMap<String, Vec<Probe>> = HashMap::new();
        for a in &desired.assignments {
            for i in &a.instances {
                wanted.entry(i.clone()).or_default().push(a.probe.clone());
            }
        }
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in ids {
            let probes = wanted.remove(&id).unwrap_or_default();
            self.apply_instance(&id, probes);
        }
    }

    fn apply_instance(&mut self, id: &str, wanted: Vec<Probe>) {
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        // Removed on the server (or no longer matching): out.
        let stale: Vec<String> = inst
            .probes
            .keys()
            .filter(|p| !wanted.iter().any(|w| &w.id == *p))
            .cloned()
            .collect();
        for p in stale {
            if let Some(mut run) = inst.probes.remove(&p) {
                // A counter's (or verify probe's) counts since its last report go out first.
                if report::aggregated(run.probe.spec.kind) {
                    report::interval(&self.outbox, &inst.info, &mut run, inst.tallies.as_ref());
                }
                if let Some(s) = &inst.session {
                    take_out(s.as_ref(), &run);
                }
                if matches!(run.state, InstallState::Installed | InstallState::Pending) {
                    run.state = InstallState::Removed;
                }
                report_state(&self.outbox, &inst.info.id, &mut run, inst.tallies.as_ref());
            }
        }
        let now = time::OffsetDateTime::now_utc();
        for probe in wanted {
            if let Some(run) = inst.probes.get_mut(&probe.id) {
                if run.probe.resumes == probe.resumes {
                    continue;
                }
                // Resumed on the server: a probe paused here goes back in (with the budget
                // it has now); anywhere else it just takes the new settings for later.
                let resume = run.state == InstallState::Paused;
                run.probe = probe.clone();
                if !resume {
                    continue;
                }
                if let Some(s) = &inst.session {
                    take_out(s.as_ref(), run);
                }
                run.last_error = None;
                // What the paused probe counted in this session is carried over once the new
                // one is in (which counts from zero under the same id); if it cannot go in,
                // the old tally is still the one read.
                let before = counts_of(run, inst.tallies.as_ref());
                match install(inst, &probe, &self.config, &self.outbox, &self.tx) {
                    Ok(sites) => {
                        let tallies = inst.tallies.clone();
                        if let Some(run) = inst.probes.get_mut(&probe.id) {
                            run.carried = add(run.carried, before);
                            run.state = InstallState::Installed;
                            run.sites = Some(sites);
                            if let Some(message) = pending_of(run, tallies.as_ref()) {
                                run.state = InstallState::Pending;
                                run.last_error = Some(message);
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(run) = inst.probes.get_mut(&probe.id) {
                            run.state = InstallState::Error;
                            run.last_error = Some(e);
                        }
                    }
                }
                if let Some(run) = inst.probes.get_mut(&probe.id) {
                    report_state(&self.outbox, &inst.info.id, run, inst.tallies.as_ref());
                }
                continue;
            }
            let expires = time::OffsetDateTime::parse(
                &probe.expires_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok();
            let mut run = ProbeRun {
                probe: probe.clone(),
                state: InstallState::Pending,
                last_error: None,
                sites: None,
                expires,
                reported: None,
                counted: (0, HashMap::new()),
                last_count: Instant::now(),
                carried: (0, 0, 0),
            };
            if expires.is_some_and(|e| e <= now) {
                run.state = InstallState::Expired;
            } else {
                match install(inst, &probe, &self.config, &self.outbox, &self.tx) {
                    Ok(sites) => {
                        run.state = InstallState::Installed;
                        run.sites = Some(sites);
                        // In no library loaded yet: pending, saying when it arms.
                        if let Some(message) = pending_of(&run, inst.tallies.as_ref()) {
                            run.state = InstallState::Pending;
                            run.last_error = Some(message);
                        }
                    }
                    Err(e) => {
                        run.state = InstallState::Error;
                        run.last_error = Some(e);
                    }
                }
            }
            report_state(&self.outbox, &inst.info.id, &mut run, inst.tallies.as_ref());
            inst.probes.insert(probe.id.clone(), run);
        }
        detach_if_idle(inst);
    }

    fn on_stopped(&mut self, instance: &str, probe: &str, state: ProbeState) {
        let Some(inst) = self.instances.get_mut(instance) else {
            return;
        };
        if let Some(run) = inst.probes.get_mut(probe) {
            if report::aggregated(run.probe.spec.kind) {
                report::interval(&self.outbox, &inst.info, run, inst.tallies.as_ref());
            }
            match state {
                ProbeState::HitLimit => run.state = InstallState::HitLimit,
                ProbeState::Paused(reason) => {
                    run.state = InstallState::Paused;
                    // A notice in the event stream, so `tail` and `events` show why the
                    // probe went quiet, and what to do.
                    self.outbox.push_event(Event::new(
                        inst.info.id.clone(),
                        Body::Error(ProbeError {
                            ts: periscope_core::event::now_rfc3339(),
                            pid: inst.info.pid,
                            ns_pid: inst.info.ns_pid,
                            tid: 0,
                            ns_tid: None,
                            location: run.probe.spec.location.clone(),
                            probe: run.probe.id.clone(),
                            error: format!(
                                "paused: {reason}; `periscope probe resume {}` puts it back (--budget-ms N raises the budget)",
                                run.probe.id
                            ),
                        }),
                    ));
                    run.last_error = Some(reason);
                }
                ProbeState::Failed(message) => {
                    run.state = InstallState::Error;
                    run.last_error = Some(message);
                }
                // Its library was unloaded: it waits for the next load, the session stays.
                ProbeState::Pending(message) => {
                    run.state = InstallState::Pending;
                    run.last_error = Some(message);
                }
                ProbeState::Removed | ProbeState::Active => {}
            }
            report_state(&self.outbox, instance, run, inst.tallies.as_ref());
        }
        detach_if_idle(inst);
    }

    fn on_armed(&mut self, instance: &str, probe: &str, sites: usize) {
        let Some(inst) = self.instances.get_mut(instance) else {
            return;
        };
        if let Some(run) = inst.probes.get_mut(probe) {
            if run.state == InstallState::Pending {
                run.state = InstallState::Installed;
                run.last_error = None;
                run.sites = Some(sites);
                report_state(&self.outbox, instance, run, inst.tallies.as_ref());
            }
        }
    }

    fn on_ended(&mut self, instance: &str, reason: &str) {
        let Some(mut inst) = self.instances.remove(instance) else {
            return;
        };
        for run in inst.probes.values_mut() {
            if matches!(run.state, InstallState::Installed | InstallState::Pending) {
                run.state = InstallState::Error;
                run.last_error = Some(format!("the session ended: {reason}"));
            }
            report_state(&self.outbox, instance, run, inst.tallies.as_ref());
        }
        self.publish_instances();
        // A process that exec'd is still there: the next scan finds it as a new instance.
    }

    /// Probes whose TTL passed are removed here too, so they end even with the server away.
    fn expire_local(&mut self) {
        let now = time::OffsetDateTime::now_utc();
        for inst in self.instances.values_mut() {
            let due: Vec<String> = inst
                .probes
                .iter()
                .filter(|(_, r)| {
                    matches!(r.state, InstallState::Installed | InstallState::Pending)
                        && r.expires.is_some_and(|e| e <= now)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for p in due {
                if let (Some(s), Some(run)) = (&inst.session, inst.probes.get(&p)) {
                    take_out(s.as_ref(), run);
                }
                if let Some(run) = inst.probes.get_mut(&p) {
                    run.state = InstallState::Expired;
                    report_state(&self.outbox, &inst.info.id, run, inst.tallies.as_ref());
                }
            }
            detach_if_idle(inst);
        }
    }

    /// Sends changed hit counts, and counter reports when their interval has passed.
    fn refresh_states(&mut self) {
        let every = self.config.count_interval;
        for inst in self.instances.values_mut() {
            for run in inst.probes.values_mut() {
                report_state(&self.outbox, &inst.info.id, run, inst.tallies.as_ref());
                if report::aggregated(run.probe.spec.kind) && run.last_count.elapsed() >= every {
                    report::interval(&self.outbox, &inst.info, run, inst.tallies.as_ref());
                }
            }
        }
    }

    fn stop_all(&mut self) {
        for inst in self.instances.values_mut() {
            for run in inst.probes.values_mut() {
                if report::aggregated(run.probe.spec.kind) {
                    report::interval(&self.outbox, &inst.info, run, inst.tallies.as_ref());
                }
            }
            close_session(inst);
            for run in inst.probes.values_mut() {
                if run.state == InstallState::Installed {
                    run.state = InstallState::Pending;
                    run.last_error = Some("the agent stopped".into());
                }
                report_state(&self.outbox, &inst.info.id, run, inst.tallies.as_ref());
            }
        }
    }
}

/// The probe's current state on the instance, sent when it changed since the last report.
fn report_state(outbox: &Outbox, instance: &str, run: &mut ProbeRun, tallies: Option<&Tallies>) {
    let (hits, dropped, errors) = add(run.carried, counts_of(run, tallies));
    let status = ProbeInstance {
        instance: instance.to_string(),
        state: run.state,
        hits,
        dropped,
        errors,
        last_error: run.last_error.clone(),
        sites: run.sites,
        engine: engine_of(run, tallies),
        updated_at: String::new(),
    };
    if run.reported.as_ref() != Some(&status) {
        run.reported = Some(status.clone());
        outbox.set_status(StatusReport {
            probe: run.probe.id.clone(),
            status: ProbeInstance {
                updated_at: periscope_core::event::now_rfc3339(),
                ..status
            },
        });
    }
}
