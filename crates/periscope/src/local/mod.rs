//! Local mode: a probing command drives one process through the runtime seam and prints what
//! its probes report, no server involved (like bpftrace). The commands themselves are here
//! (`log`, `snapshot`, `count`, `watch`) and beside it (`metrics`: `duration`, `gauge`;
//! `verify`; `code`: `lines`, `functions`, `find`).

pub(crate) mod code;
pub(crate) mod metrics;
pub(crate) mod verify;

use crate::{Common, Output};
use anyhow::{anyhow, bail, Result};
use periscope_core::api::{NewProbe, ProbeKind};
use periscope_core::event::{Body, Event};
use periscope_core::redact::Redactor;
use periscope_core::render;
use periscope_runtime::{
    Action, Attachment, Code, EndReason, EngineEvent, EngineProbe, Limits, ProbeSpec, ProbeState,
    RuntimeKind, SessionOptions, Tallies,
};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The probe compiler's output for a local command's probe, with its flags' names in errors.
pub(crate) fn compile(p: &NewProbe) -> Result<periscope_core::compile::CompiledProbe> {
    periscope_core::compile::compile(p).map_err(|e| {
        let flag = match e.field {
            "template" => "TEMPLATE",
            "location" => "LOCATION",
            "condition" => "--if",
            "watch" => "--watch",
            "by" => "--by",
            "max_hits" => "--max-hits",
            "frames" => "--frames",
            other => other,
        };
        anyhow!("{e} ({flag})")
    })
}

/// A local command's probe: no overhead budget (the user watches it live); a rate limit only if asked.
pub(crate) fn local_probe(mut p: NewProbe, common: &Common, limits: Limits) -> Result<ProbeSpec> {
    p.condition = common.condition.clone();
    let redactor = Redactor::new(&common.output.redact)?;
    match EngineProbe::new("1", compile(&p)?, limits, redactor) {
        EngineProbe::Breakpoint(mut spec) => {
            spec.engine = common.engine;
            Ok(spec)
        }
        EngineProbe::Failures { .. } => bail!("a failures probe is `periscope watch`"),
    }
}

/// Reads the debug info of a process's binaries (seconds for a large one). SIGINT, SIGTERM or
/// SIGHUP meanwhile end periscope at once: nothing is attached yet, so nothing is to undo. A
/// signal that comes after is left pending for the session, which reads it from then on. The
/// runtime's capabilities are checked for `action` first.
pub(crate) fn index_process(
    pid: u32,
    runtime: Option<RuntimeKind>,
    action: &Action,
) -> Result<(Runtime, Arc<dyn Code>)> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let done = std::sync::Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?);
    let done2 = done.clone();
    let watcher = std::thread::spawn(move || {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            mask.add(s);
        }
        let Ok(sfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        else {
            return;
        };
        let mut fds = [
            nix::poll::PollFd::new(sfd.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(done2.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
        let signalled = fds[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN));
        if signalled {
            if let Ok(Some(info)) = sfd.read_signal() {
                let name = Signal::try_from(info.ssi_signo as i32)
                    .map(|s| s.as_str())
                    .unwrap_or("a signal");
                note(&format!(
                    "periscope: interrupted by {name} while reading debug info; nothing was attached"
                ));
                std::process::exit(0);
            }
        }
    });
    let opened = periscope_runtimes::for_pid(pid, runtime).and_then(|picked| {
        if let Some(n) = &picked.note {
            note(&format!("periscope: {n}"));
        }
        // What the runtime cannot do is said before its code is read (seconds, for a large
        // program).
        picked.runtime.capabilities().check(action)?;
        Ok((picked.runtime, picked.runtime.open_process(pid)?))
    });
    let _ = done.write(1);
    let _ = watcher.join();
    Ok(opened?)
}

/// The runtime a local command drives, from the dispatcher.
pub(crate) type Runtime = &'static dyn periscope_runtime::Runtime;

/// A local command's probes in one process, behind the runtime seam.
pub(crate) type Session = Box<dyn Attachment>;

pub(crate) fn start(pid: u32, spec: ProbeSpec, output: &Output) -> Result<Session> {
    let location = spec.location.to_string();
    let (runtime, code) = index_process(pid, output.runtime, &spec.action)?;
    let session = runtime.attach(&code, vec![spec], SessionOptions::default())?;
    let sites = session.site_counts().first().copied().unwrap_or(0);
    let engine = session
        .engines()
        .first()
        .map(|e| e.describe())
        .unwrap_or_default();
    if session.recovered() > 0 {
        note(&format!(
            "periscope: removed what an earlier periscope that was killed left in pid {pid} (breakpoints, call stubs, ended replay copies)"
        ));
    }
    let pending = session
        .tallies()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first()
        .and_then(|t| match &t.state {
            ProbeState::Pending(m) => Some(m.clone()),
            _ => None,
        });
    match pending {
        Some(message) => note(&format!(
            "periscope: probe at {location} in pid {pid}{} is {message}; Ctrl-C to stop",
            in_namespace(pid)
        )),
        None => note(&format!(
            "periscope: probing pid {pid}{} at {location} ({sites} code address{}, engine: {engine}); Ctrl-C to stop",
            in_namespace(pid),
            if sites == 1 { "" } else { "es" }
        )),
    }
    Ok(session)
}

/// ` (pid 1 in its namespace)` for a process in a container's pid namespace, said once when a
/// command starts (its events carry it as `ns_pid`); empty otherwise.
pub(crate) fn in_namespace(pid: u32) -> String {
    periscope_runtimes::ns_pid(pid)
        .map(|n| format!(" (pid {n} in its namespace)"))
        .unwrap_or_default()
}

pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A line on stderr; a closed stderr is not worth failing (or panicking) over.
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

pub(crate) fn end_note(reason: &EndReason) -> Option<String> {
    match reason {
        EndReason::TargetExited { code: Some(c), .. } => {
            Some(format!("target exited with code {c}"))
        }
        EndReason::TargetExited {
            signal: Some(s), ..
        } => Some(format!("target was killed by signal {s}")),
        EndReason::TargetExited { .. } => Some("target exited".into()),
        EndReason::TargetExec => Some("target executed a new program; probes removed".into()),
        EndReason::HitLimit => Some("hit limit reached".into()),
        // Said once, as the command's error (exit status 1).
        EndReason::Error(_) | EndReason::Requested | EndReason::Signal(_) => None,
    }
}

/// Receives events until the session ends or the deadline passes; `on_tick` runs at each
/// `tick` (for counters). Returns why it ended.
pub(crate) fn pump(
    session: &Session,
    deadline: Option<Instant>,
    tick: Option<Duration>,
    mut on_event: impl FnMut(EngineEvent) -> Result<()>,
    mut on_tick: impl FnMut() -> Result<()>,
) -> Result<Option<EndReason>> {
    let mut next_tick = tick.map(|t| Instant::now() + t);
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(None);
        }
        if let (Some(t), Some(n)) = (tick, next_tick) {
            if now >= n {
                if let Err(e) = on_tick() {
                    if is_broken_pipe(&e) {
                        return Ok(Some(EndReason::Requested));
                    }
                    return Err(e);
                }
                next_tick = Some(n + t);
            }
        }
        let wake = [deadline, next_tick].into_iter().flatten().min();
        let ev = match wake {
            Some(w) => match session
                .events()
                .recv_timeout(w.saturating_duration_since(now))
            {
                Ok(e) => e,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            },
            None => match session.events().recv() {
                Ok(e) => e,
                Err(_) => return Ok(None),
            },
        };
        // A pending probe's library was loaded, or unloaded: said as it happens.
        match &ev {
            EngineEvent::Ended(reason) => return Ok(Some(reason.clone())),
            EngineEvent::ProbeArmed { message, .. } => note(&format!("periscope: probe {message}")),
            EngineEvent::ProbeStopped {
                state: ProbeState::Pending(message),
                ..
            } => note(&format!("periscope: probe {message}")),
            _ => {}
        }
        if let Err(e) = on_event(ev) {
            // The reader went away (`periscope log … | head`): a normal way to end.
            if is_broken_pipe(&e) {
                return Ok(Some(EndReason::Requested));
            }
            return Err(e);
        }
    }
}

/// Local mode's OTLP export: the process itself is the resource.
pub(crate) fn local_exporter(
    pid: u32,
    output: &Output,
) -> Result<
    Option<(
        periscope_export::otlp::OtlpExporter,
        periscope_core::api::Instance,
    )>,
> {
    let Some(config) = output.otlp.config()? else {
        return Ok(None);
    };
    let host = periscope_agent::discover::hostname();
    let executable = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let service = std::path::Path::new(&executable)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let instance = periscope_core::api::Instance {
        id: format!("{host}-{pid}"),
        agent: "local".into(),
        host,
        pid,
        ns_pid: periscope_runtimes::ns_pid(pid),
        executable,
        build_id: None,
        language: None,
        lang: None,
        tags: [("service".to_string(), service)].into(),
        state: "online".into(),
        last_seen: String::new(),
    };
    Ok(Some((
        periscope_export::otlp::OtlpExporter::start(config),
        instance,
    )))
}

/// Local mode's OTLP export of one event, the process itself as the instance.
pub(crate) fn export_local(
    exporter: &Option<(
        periscope_export::otlp::OtlpExporter,
        periscope_core::api::Instance,
    )>,
    body: &Body,
) {
    if let Some((e, instance)) = exporter {
        e.submit(instance, &Event::new(instance.id.clone(), body.clone()));
    }
}

/// One event on stdout (probe errors on stderr), as a line of JSON (the body alone, as local
/// mode has always printed it) or as text.
pub(crate) fn print_body(json: bool, body: &Body, out: &mut impl Write) -> Result<()> {
    match body {
        Body::Error(e) => return print_probe_error(json, e, out),
        Body::Log(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Snapshot(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Count(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Metric(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        _ => writeln!(out, "{}", render::body_text(body))?,
    }
    Ok(())
}

pub(crate) fn run_log(pid: u32, spec: ProbeSpec, common: &Common) -> Result<()> {
    let exporter = local_exporter(pid, &common.output)?;
    let session = start(pid, spec, &common.output)?;
    let deadline = common.output.duration.map(|d| Instant::now() + d);
    let json = common.output.json;
    let stdout = std::io::stdout();
    let reason = pump(
        &session,
        deadline,
        None,
        |ev| {
            if let EngineEvent::Event(body) = &ev {
                export_local(&exporter, body);
                let mut out = stdout.lock();
                print_body(json, body, &mut out)?;
                out.flush()?;
            }
            Ok(())
        },
        || Ok(()),
    );
    let result = finish(session, reason);
    if let Some((e, _)) = exporter {
        e.shutdown(Duration::from_secs(5));
    }
    result
}

/// What `watch` captures at a failure.
pub(crate) struct WatchCapture {
    pub(crate) frames: usize,
    pub(crate) depth: u32,
    pub(crate) library_frames: bool,
}

pub(crate) fn run_watch(
    pid: u32,
    panics: bool,
    signals: bool,
    capture: WatchCapture,
    output: &Output,
) -> Result<()> {
    let mut request = NewProbe::new(ProbeKind::Failures, "", "");
    request.frames = Some(capture.frames);
    let limits = Limits {
        depth: capture.depth,
        ..Limits::default()
    };
    let redactor = Redactor::new(&output.redact)?;
    let EngineProbe::Failures {
        panic,
        signals: mut watch,
    } = EngineProbe::new("watch", compile(&request)?, limits, redactor)
    else {
        bail!("a failures probe compiles to a panic probe and a signal watch");
    };
    watch.library_frames = capture.library_frames;
    let (runtime, code) = index_process(pid, output.runtime, &panic.action)?;
    let mut probes = Vec::new();
    if panics {
        match code.check(&panic) {
            Ok(_) => probes.push(panic),
            Err(_) => note("periscope: no Rust panic runtime in this process (not Rust, or no debug info for it); watching signals only"),
        }
    }
    let options = SessionOptions {
        watch_signals: signals.then_some(watch),
        ..SessionOptions::default()
    };
    let session = runtime.attach(&code, probes, options)?;
    let what = match (panics, signals) {
        (true, true) => "panics and fatal signals",
        (true, false) => "panics",
        _ => "fatal signals",
    };
    note(&format!(
        "periscope: watching pid {pid}{} for {what}; Ctrl-C to stop",
        in_namespace(pid)
    ));
    let deadline = output.duration.map(|d| Instant::now() + d);
    let json = output.json;
    let reason = pump(
        &session,
        deadline,
        None,
        |ev| {
            if let EngineEvent::Event(body) = &ev {
                let mut out = std::io::stdout().lock();
                print_body(json, body, &mut out)?;
                out.flush()?;
            }
            Ok(())
        },
        || Ok(()),
    );
    finish(session, reason)
}

pub(crate) fn print_probe_error(
    json: bool,
    e: &periscope_core::event::ProbeError,
    out: &mut impl Write,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    } else {
        note(&render::error_line(e));
    }
    Ok(())
}

/// What the session's summary says a user should know: events lost, anything left behind.
pub(crate) fn report(summary: &periscope_runtime::Summary) {
    if summary.dropped_events > 0 {
        note(&format!(
            "periscope: {} events dropped because output could not keep up",
            summary.dropped_events
        ));
    }
    if let Some(text) = summary.left_behind_note() {
        note(&format!("periscope: {text}"));
    }
}

/// Ends the session (removing every breakpoint) and reports why it ended.
pub(crate) fn finish(session: Session, reason: Result<Option<EndReason>>) -> Result<()> {
    // Stop first, whatever happened while printing (a closed pipe must not leave breakpoints).
    let summary = session.stop();
    report(&summary);
    end_with(reason)
}

/// How a probing command ends: a note for why (the target exited, the hit limit), or the
/// session's error as the command's (exit status 1).
pub(crate) fn end_with(reason: Result<Option<EndReason>>) -> Result<()> {
    let reason = reason?;
    if let Some(text) = reason.as_ref().and_then(end_note) {
        note(&format!("periscope: {text}"));
    }
    if let Some(EndReason::Error(e)) = reason {
        bail!(e);
    }
    Ok(())
}

pub(crate) fn run_count(
    pid: u32,
    spec: ProbeSpec,
    common: &Common,
    every: Duration,
    per_thread: bool,
) -> Result<()> {
    let location = spec.location.to_string();
    let session = start(pid, spec, &common.output)?;
    let tallies = session.tallies();
    let deadline = common.output.duration.map(|d| Instant::now() + d);
    let json = common.output.json;
    let mut last_total = 0u64;
    let started = Instant::now();
    let mut print = |final_line: bool| -> Result<()> {
        let line = count_line(
            &tallies,
            &location,
            &mut last_total,
            started,
            per_thread,
            json,
            final_line,
        );
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
            if let EngineEvent::Event(Body::Error(e)) = ev {
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

pub(crate) fn count_line(
    tallies: &Tallies,
    location: &str,
    last_total: &mut u64,
    started: Instant,
    per_thread: bool,
    json: bool,
    final_line: bool,
) -> String {
    let t = tallies.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = t.first() else {
        return String::new();
    };
    let total = t.hits;
    let delta = total - *last_total;
    *last_total = total;
    let mut by_thread: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut groups: std::collections::BTreeMap<String, u64> = Default::default();
    for ((tid, key), n) in &t.counts {
        *by_thread.entry(*tid).or_default() += n;
        if let Some(k) = key {
            *groups.entry(k.clone()).or_default() += n;
        }
    }
    let ts = periscope_core::event::now_rfc3339();
    if json {
        let line = periscope_core::interval::CountLine {
            ts,
            location: location.to_string(),
            kind: periscope_core::interval::LineKind::of(final_line),
            hits: delta,
            total,
            elapsed_s: started.elapsed().as_secs_f64(),
            filtered: t.filtered,
            errors: t.errors,
            threads: per_thread
                .then(|| by_thread.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
            groups,
        };
        return serde_json::to_string(&line).unwrap_or_default();
    }
    let mut line = if final_line {
        format!(
            "{}  total {location}: {total} hits in {:.1}s",
            render::short_time(&ts),
            started.elapsed().as_secs_f64()
        )
    } else {
        format!(
            "{}  {location}: {delta} hits (total {total})",
            render::short_time(&ts)
        )
    };
    if per_thread {
        let parts: Vec<String> = by_thread
            .iter()
            .map(|(k, v)| format!("tid {k}: {v}"))
            .collect();
        line.push_str(&format!("  [{}]", parts.join(", ")));
    }
    if !groups.is_empty() {
        let parts: Vec<String> = groups.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        line.push_str(&format!("  {{{}}}", parts.join(", ")));
    }
    line
}
