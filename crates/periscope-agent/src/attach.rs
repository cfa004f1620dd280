//! An instance's session: attaching (through the runtime the dispatcher picked) when its first
//! probe is installed, putting probes in and taking them out, detaching when none is left, and
//! forwarding what the session reports to the outbox and the reconciler.

use crate::outbox::Outbox;
use crate::{AgentConfig, Counts, InstanceRun, Msg, ProbeRun};
use periscope_core::api::{InstallState, Instance, Probe, ProbeKind};
use periscope_core::event::Event;
use periscope_runtime::{Attachment, EngineEvent, EngineProbe, Limits, SessionOptions, Tallies};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// Puts a probe into an instance's session, starting the session (attaching) if needed.
pub(crate) fn install(
    inst: &mut InstanceRun,
    probe: &Probe,
    config: &AgentConfig,
    outbox: &Arc<Outbox>,
    tx: &Sender<Msg>,
) -> Result<usize, String> {
    let engine_probe = engine_probe(probe, config)?;
    let action = match &engine_probe {
        EngineProbe::Breakpoint(spec) => &spec.action,
        EngineProbe::Failures { panic, .. } => &panic.action,
    };
    inst.runtime
        .capabilities()
        .check(action)
        .map_err(|e| e.to_string())?;
    if inst.session.is_none() {
        let code = match inst.code.clone() {
            Some(c) => c,
            None => inst
                .runtime
                .open_process(inst.found.pid)
                .map_err(|e| e.to_string())?,
        };
        let options = SessionOptions {
            stop_on_signals: false,
            keep_alive: true,
            ..SessionOptions::default()
        };
        let mut session = inst
            .runtime
            .attach(&code, Vec::new(), options)
            .map_err(|e| e.to_string())?;
        let events = session.take_events();
        inst.tallies = Some(session.tallies());
        let (outbox, tx, info) = (outbox.clone(), tx.clone(), inst.info.clone());
        std::thread::Builder::new()
            .name("periscope-forward".into())
            .spawn(move || forward(events, &info, &outbox, &tx))
            .map_err(|e| e.to_string())?;
        inst.session = Some(session);
    }
    let session = inst.session.as_ref().ok_or("no session")?;
    match engine_probe {
        EngineProbe::Breakpoint(spec) => session.add_probe(spec).map_err(|e| e.to_string()),
        // Fatal signals through the session's signal watch; Rust panics through a breakpoint
        // on `rust_panic`, absent from C and C++ programs (then signals only).
        EngineProbe::Failures { panic, signals } => {
            session.watch_signals(Some(signals));
            Ok(session.add_probe(panic).unwrap_or(0))
        }
    }
}

/// Takes a probe out of a running session.
pub(crate) fn take_out(session: &dyn Attachment, run: &ProbeRun) {
    session.remove_probe(&run.probe.id);
    if run.probe.spec.kind == ProbeKind::Failures {
        session.watch_signals(None);
    }
}

/// Ends the session (detaches) when no probe is left installed or pending in it: a process
/// without probes is left exactly as it was.
pub(crate) fn detach_if_idle(inst: &mut InstanceRun) {
    let tallies = inst.tallies.as_ref();
    let busy = inst.probes.values().any(|r| {
        r.state == InstallState::Installed
            || r.state == InstallState::Pending && pending_of(r, tallies).is_some()
    });
    if !busy {
        close_session(inst);
    }
}

/// The counts of `run` in the instance's current session, if it has one with the probe.
pub(crate) fn counts_of(run: &ProbeRun, tallies: Option<&Tallies>) -> Counts {
    tallies
        .and_then(|t| {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            t.iter()
                .rev()
                .find(|t| t.probe == run.probe.id)
                .map(|t| (t.hits, t.rate_dropped, t.errors))
        })
        .unwrap_or((0, 0, 0))
}

/// What the session says of `run`'s probe when it is pending (in no library loaded yet).
pub(crate) fn pending_of(run: &ProbeRun, tallies: Option<&Tallies>) -> Option<String> {
    let t = tallies?.lock().unwrap_or_else(|p| p.into_inner());
    t.iter()
        .rev()
        .find(|t| t.probe == run.probe.id)
        .and_then(|t| match &t.state {
            periscope_runtime::ProbeState::Pending(m) => Some(m.clone()),
            _ => None,
        })
}

/// The engine `run`'s probe runs on in the current session, with why not the kernel.
pub(crate) fn engine_of(run: &ProbeRun, tallies: Option<&Tallies>) -> Option<String> {
    let t = tallies?.lock().unwrap_or_else(|p| p.into_inner());
    t.iter()
        .rev()
        .find(|t| t.probe == run.probe.id)
        .map(|t| t.engine.describe())
}

pub(crate) fn add(a: Counts, b: Counts) -> Counts {
    (a.0 + b.0, a.1 + b.1, a.2 + b.2)
}

/// Ends the instance's session, keeping what its probes counted in their `carried` totals
/// (the next session counts from zero).
pub(crate) fn close_session(inst: &mut InstanceRun) {
    let Some(session) = inst.session.take() else {
        return;
    };
    let summary = session.stop();
    for run in inst.probes.values_mut() {
        run.carried = add(run.carried, counts_of(run, inst.tallies.as_ref()));
    }
    inst.tallies = None;
    if let Some(text) = summary.left_behind_note() {
        eprintln!("periscope agent: pid {}: {text}", inst.info.pid);
    }
}

/// The engine's form of a server probe, with the fleet's defaults filled in: the kind's rate
/// limit and the agent's overhead budget.
pub(crate) fn engine_probe(probe: &Probe, config: &AgentConfig) -> Result<EngineProbe, String> {
    let compiled = periscope_core::compile::compile(&probe.spec).map_err(|e| e.to_string())?;
    let mut engine_probe = EngineProbe::new(
        &probe.id,
        compiled,
        Limits::default(),
        config.redactor.clone(),
    );
    if let EngineProbe::Breakpoint(spec) = &mut engine_probe {
        spec.rate_limit = spec.rate_limit.or(probe.spec.kind.default_rate_limit());
        spec.budget = spec.budget.or(Some(config.budget));
    }
    Ok(engine_probe)
}

/// Engine events of one process → the outbox (events) and the reconciler (state changes).
pub(crate) fn forward(
    events: Receiver<EngineEvent>,
    info: &Instance,
    outbox: &Outbox,
    tx: &Sender<Msg>,
) {
    let event = |body| Event::new(info.id.clone(), body);
    for ev in events {
        match ev {
            EngineEvent::Event(body) => outbox.push_event(event(body)),
            EngineEvent::ProbeStopped { probe, state } => {
                let _ = tx.send(Msg::Stopped {
                    instance: info.id.clone(),
                    probe,
                    state,
                });
            }
            EngineEvent::ProbeArmed { probe, sites, .. } => {
                let _ = tx.send(Msg::Armed {
                    instance: info.id.clone(),
                    probe,
                    sites,
                });
            }
            EngineEvent::Ended(reason) => {
                use periscope_runtime::EndReason;
                let why = match reason {
                    EndReason::Requested => return, // we stopped it
                    EndReason::TargetExited { code, signal } => match (code, signal) {
                        (Some(c), _) => format!("the process exited with code {c}"),
                        (_, Some(s)) => format!("the process was killed by signal {s}"),
                        _ => "the process exited".into(),
                    },
                    EndReason::TargetExec => "the process exec'd a new program".into(),
                    other => format!("{other:?}"),
                };
                let _ = tx.send(Msg::Ended {
                    instance: info.id.clone(),
                    reason: why,
                });
                return;
            }
        }
    }
}
