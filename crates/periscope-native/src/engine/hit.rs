//! A thread trapped on one of our breakpoints: run the probes there (condition, rate limit,
//! capture, hit limit, overhead budget), then resume the thread past the displaced instruction
//! without taking the breakpoint out.

use super::capture::{capture_stack, frame_location, panic_message, StackWanted};
use super::Engine;
use crate::eval::Evaluator;
use crate::frame::Frame;
use crate::probe::{Action, EndReason, EngineEvent, ProbeState, Tally, MAX_CONSECUTIVE_ERRORS};
use crate::process;
use crate::resolve::go_failure;
use crate::trap::{self, Displaced};
use crate::values::Reader;
use periscope_core::event::{now_rfc3339, Body, Failure, LogEvent, ProbeError, SnapshotEvent};
use periscope_core::template::Segment;
use periscope_core::value::Fields;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SIGTRAP: i32 = libc::SIGTRAP;

/// Examples reported per candidate and cell of a verify probe.
pub(super) const VERIFY_EXAMPLES: u64 = 3;

/// The running limits of each probe: its rate window, its budget window, when it last
/// reported an error.
#[derive(Default)]
pub(crate) struct HitLimits {
    /// Per probe: (start of the current second, hits captured in it).
    rate: HashMap<usize, (Instant, u64)>,
    /// Per probe: (start of the current budget window, time used in it).
    budget_used: HashMap<usize, (Instant, Duration)>,
    last_error_report: HashMap<usize, Instant>,
    /// Per probe: hits in a row whose condition could not be evaluated.
    consecutive_errors: HashMap<usize, u32>,
}

impl HitLimits {
    /// Whether a hit of probe `pi` may be captured now under its rate limit (hits per second).
    fn within_rate(&mut self, pi: usize, limit: Option<f64>) -> bool {
        let Some(limit) = limit else {
            return true;
        };
        let (allowed, window) = crate::probe::rate_window(limit);
        let now = Instant::now();
        let (start, n) = self.rate.entry(pi).or_insert((now, 0));
        if now.duration_since(*start) >= window {
            *start = now;
            *n = 0;
        }
        if *n < allowed {
            *n += 1;
            true
        } else {
            false
        }
    }
}

impl Engine {
    pub(crate) fn on_trap(&mut self, tid: i32) {
        let Ok(mut regs) = process::getregs(tid) else {
            return;
        };
        let addr = regs.rip.wrapping_sub(1);
        if self.is_loader_breakpoint(addr) && self.breakpoints.is_live(addr) {
            // The loader changed the list of objects; a probe of the user's may be here too.
            self.on_loader_stop(tid);
            if self.breakpoints.sites_at(addr).is_empty() {
                regs.rip = addr;
                self.resume_past(tid, addr, regs);
                return;
            }
        }
        if !self.breakpoints.is_live(addr) {
            if self.breakpoints.is_retired(addr) {
                // It hit a breakpoint removed since: run the original instruction.
                regs.rip = addr;
                self.resume_past(tid, addr, regs);
                return;
            }
            // Not ours: the program's own int3 or single-step. Hand it the signal.
            let _ = process::cont(tid, SIGTRAP);
            return;
        }
        if self.stall_at_hit {
            // Test hook: a stuck engine, holding this thread (see `Engine::stall_at_hit`).
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let started = Instant::now();
        regs.rip = addr;
        self.affinity.on_hit(tid);
        self.hold_events();
        let hit = self.on_hit(tid, addr, &regs);
        self.resume_past(tid, addr, regs);
        // Charged after the thread is resumed: the time it was held, shared by the probes hit.
        let held = started.elapsed() / hit.len().max(1) as u32;
        self.release_events();
        for pi in hit {
            self.charge(pi, held);
        }
    }

    /// Adds `held` to probe `pi`'s overhead; pauses the probe when its budget is used up.
    fn charge(&mut self, pi: usize, held: Duration) {
        self.tally(pi, |t| t.busy += held);
        let Some(budget) = self.probes[pi].spec.budget else {
            return;
        };
        let now = Instant::now();
        let (start, used) = self
            .limits
            .budget_used
            .entry(pi)
            .or_insert((now, Default::default()));
        if now.duration_since(*start) >= budget.window {
            *start = now;
            *used = Default::default();
        }
        *used += held;
        if *used > budget.limit {
            let reason = format!(
                "overhead budget exceeded: its hits held the target for {:.1} ms within {:.1} s (budget {:.1} ms)",
                used.as_secs_f64() * 1e3,
                now.duration_since(*start).as_secs_f64().max(0.001),
                budget.limit.as_secs_f64() * 1e3
            );
            self.end_probe(pi, ProbeState::Paused(reason));
        }
    }

    /// Resumes a thread stopped at `addr` (its pc already rewound there) past the breakpoint,
    /// without removing it. If the breakpoint is out (removed while handling this hit, or
    /// before), the original instruction is back at `addr` and the thread simply runs it.
    fn resume_past(&mut self, tid: i32, addr: u64, mut regs: process::Regs) {
        if let Err(e) = self.step_past(addr, &mut regs, &self.mem) {
            // Cannot happen for a call that the program itself can execute; if it does, the
            // least harmful course is to stop probing.
            self.emit(EngineEvent::Ended(EndReason::Error(e.to_string())));
        }
        let _ = process::setregs(tid, regs);
        self.resume(tid, 0);
    }

    /// Sets `regs` (pc at `addr`) to go past the breakpoint there: into its slot, or with its
    /// call emulated (the return address pushed in `mem`, the process the thread belongs to).
    pub(super) fn step_past(
        &self,
        addr: u64,
        regs: &mut process::Regs,
        mem: &process::Memory,
    ) -> Result<(), crate::error::NativeError> {
        if let Some(bp) = self.breakpoints.get(addr) {
            match &bp.displaced {
                Displaced::OutOfLine { slot, .. } => regs.rip = *slot,
                Displaced::Call(instr) => trap::emulate_call(instr, regs, mem)?,
            }
        }
        Ok(())
    }

    /// Runs the probes at `addr`; returns those that took the hit.
    fn on_hit(&mut self, tid: i32, addr: u64, regs: &process::Regs) -> Vec<usize> {
        let sites = self.breakpoints.sites_at(addr);
        let mut hit = Vec::new();
        for (pi, si, cfa_rule) in sites {
            if self.done[pi] {
                continue;
            }
            if self.probes[pi].replay.is_some() {
                self.replay_hit(tid, pi, si, regs);
                hit.push(pi);
                continue;
            }
            let cfa = cfa_rule.and_then(|r| r.eval(regs));
            if self.is_repeat(tid, pi, si, addr, cfa) {
                continue;
            }
            self.hit_probe(tid, pi, si, regs, cfa);
            hit.push(pi);
        }
        hit
    }

    /// True when this hit continues the execution of a line already reported on this thread
    /// (see [`crate::repeat`]).
    pub(super) fn is_repeat(
        &mut self,
        tid: i32,
        pi: usize,
        si: usize,
        addr: u64,
        cfa: Option<u64>,
    ) -> bool {
        let sites = &self.probes[pi].sites;
        let scope = sites[si].visible.scope_id;
        self.repeats
            .is_repeat(tid, pi, sites.len(), scope, addr, cfa)
    }

    fn hit_probe(
        &mut self,
        tid: i32,
        pi: usize,
        si: usize,
        regs: &process::Regs,
        cfa: Option<u64>,
    ) {
        let probe = &self.probes[pi];
        let site = &probe.sites[si];
        let object = &self.target.objects[site.object];
        let frame = Frame::at_site(&self.target, site, &self.mem, *regs, tid, cfa);
        let reader = Reader::new(
            &object.index,
            &self.mem,
            probe.spec.limits,
            &probe.spec.redactor,
        )
        .with_target(&self.target);
        let ev = Evaluator::new(&frame, &reader, &site.visible.vars, &site.function);
        let location = site.short_location();
        if let Some(cond) = &probe.spec.condition {
            let outcome = ev.condition(cond);
            if outcome.is_ok() {
                self.limits.consecutive_errors.remove(&pi);
            }
            match outcome {
                Ok(true) => {}
                Ok(false) => {
                    self.tally(pi, |t| t.filtered += 1);
                    return;
                }
                Err(e) => {
                    let msg = format!("condition `{cond}` could not be evaluated: {e}");
                    let n = self.limits.consecutive_errors.entry(pi).or_insert(0);
                    *n += 1;
                    if *n >= MAX_CONSECUTIVE_ERRORS {
                        let msg = format!(
                            "{msg}; the probe stopped after {MAX_CONSECUTIVE_ERRORS} hits in a row failed this way (fix the condition and place it again)"
                        );
                        self.tally(pi, |t| t.errors += 1);
                        self.report_error_now(pi, tid, location, msg.clone());
                        self.end_probe(pi, ProbeState::Failed(msg));
                    } else {
                        self.report_error(pi, tid, location, msg);
                    }
                    return;
                }
            }
        }
        let max = probe.spec.max_hits;
        // Field-wise borrow: `probe` and the evaluator keep borrowing other fields. A hit over
        // the rate limit is counted as dropped, not as a hit: the hit limit counts captures.
        if !self.limits.within_rate(pi, probe.spec.rate_limit) {
            self.tally(pi, |t| t.rate_dropped += 1);
            return;
        }
        // The call stack, with the variables of the top `frames` frames (std's own frames
        // passed over with `skip_runtime`).
        let stack = |frames: usize, skip_runtime: bool| {
            let want = StackWanted {
                with_vars: frames,
                skip_runtime,
            };
            capture_stack(&self.target, &self.mem, regs, tid, cfa, &reader, want)
        };
        let goroutine = self.goroutine(regs);
        let mut event = None;
        let mut snapshot = None;
        let mut count_key = None;
        let mut gauge = None;
        // Verify: (fix, cell) keys counted for this hit, and the examples to report.
        let mut verify_keys: Vec<String> = Vec::new();
        let mut verify_examples: Vec<LogEvent> = Vec::new();
        match &probe.spec.action {
            Action::Log(template) => {
                let (message, values) = render_template(&ev, template);
                event = Some(LogEvent {
                    ts: now_rfc3339(),
                    pid: self.pid,
                    ns_pid: None,
                    tid: tid as u32,
                    ns_tid: None,
                    goroutine,
                    location,
                    probe: probe.spec.id.clone(),
                    function: Some(site.function.clone()),
                    message,
                    values,
                    engine: Some("ptrace".into()),
                    verify: None,
                });
            }
            Action::Gauge { value, by } => {
                let key = by.as_ref().map(|e| group_key(ev.value(e)));
                match numeric(&ev.value(value)) {
                    Some(v) => gauge = Some((key, v)),
                    None => {
                        let msg = format!("`{value}` is not a number here");
                        self.report_error(pi, tid, location, msg);
                        return;
                    }
                }
            }
            // Resolution refuses durations on this path (see `Engine::add_probe`).
            Action::Duration { .. } => return,
            Action::Count { by } => {
                count_key = Some(by.as_ref().map(|e| group_key(ev.value(e))));
            }
            Action::Snapshot { frames, watches } => {
                let watches = watches
                    .iter()
                    .map(|(text, e)| (text.clone(), ev.value(e)))
                    .collect();
                let stack = stack(*frames, false);
                snapshot = Some(SnapshotEvent {
                    ts: now_rfc3339(),
                    pid: self.pid,
                    ns_pid: None,
                    tid: tid as u32,
                    ns_tid: None,
                    goroutine,
                    location: location.clone(),
                    probe: probe.spec.id.clone(),
                    frames: stack,
                    watches: Fields(watches),
                    failure: None,
                });
            }
            Action::Verify {
                failure,
                keep,
                fixes,
                ..
            } => {
                let seen = self.tallies_of(pi);
                for o in super::verify::verify_hit(&ev, failure, keep, fixes) {
                    let key = periscope_core::verify::group_key(&o.fix, o.cell);
                    // The first few hits of each cell are reported, with the values that decided
                    // them; the rest are counted.
                    if seen.get(&key).copied().unwrap_or(0) < VERIFY_EXAMPLES {
                        let example = periscope_core::verify::Example {
                            fix: o.fix.clone(),
                            cell: o.cell,
                        };
                        verify_examples.push(LogEvent {
                            ts: now_rfc3339(),
                            pid: self.pid,
                            ns_pid: None,
                            tid: tid as u32,
                            ns_tid: None,
                            goroutine,
                            location: location.clone(),
                            probe: probe.spec.id.clone(),
                            function: Some(site.function.clone()),
                            message: example.message(),
                            values: o.values,
                            engine: Some("ptrace".into()),
                            verify: Some(example),
                        });
                    }
                    verify_keys.push(key);
                }
            }
            Action::Failures { frames } => {
                let stack = stack(*frames, true);
                // The panicking frame: the first one in the program's own code (the first
                // with variables read: runtime frames get none).
                let location = stack
                    .iter()
                    .find(|f| {
                        f.file.as_deref().is_some_and(|p| !p.starts_with("/rustc/"))
                            && (go_failure(&site.function).is_none() || !f.variables.is_empty())
                    })
                    .and_then(frame_location)
                    .unwrap_or_else(|| location.clone());
                snapshot = Some(SnapshotEvent {
                    ts: now_rfc3339(),
                    pid: self.pid,
                    ns_pid: None,
                    tid: tid as u32,
                    ns_tid: None,
                    goroutine,
                    location,
                    probe: probe.spec.id.clone(),
                    frames: stack,
                    watches: Fields::default(),
                    failure: Some(match go_failure(&site.function) {
                        Some(go) => Failure {
                            kind: go.kind.into(),
                            message: super::capture::go_panic_message(&ev, go),
                            signal: None,
                            address: None,
                        },
                        None => Failure {
                            kind: "panic".into(),
                            message: panic_message(&self.target, &self.mem, regs),
                            signal: None,
                            address: None,
                        },
                    }),
                });
            }
        }
        let mut reached = false;
        self.tally(pi, |t| {
            t.hits += 1;
            if let Some(key) = count_key {
                *t.counts.entry((tid, key)).or_insert(0) += 1;
            }
            for key in verify_keys {
                *t.counts.entry((tid, Some(key))).or_insert(0) += 1;
            }
            if let Some((key, v)) = gauge {
                t.metrics.entry(key).or_default().add(v);
            }
            reached = max.is_some_and(|m| t.hits >= m);
        });
        if let Some(e) = event {
            self.emit(EngineEvent::Event(Body::Log(e)));
        }
        for e in verify_examples {
            self.emit(EngineEvent::Event(Body::Log(e)));
        }
        if let Some(s) = snapshot {
            self.emit(EngineEvent::Event(Body::Snapshot(s)));
        }
        if reached {
            self.end_probe(pi, ProbeState::HitLimit);
        }
    }

    /// A probe's counts by group key, over all threads.
    pub(super) fn tallies_of(&self, pi: usize) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        let t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.tally_at.get(pi).and_then(|&i| t.get(i)) {
            for ((_, key), n) in &t.counts {
                if let Some(k) = key {
                    *out.entry(k.clone()).or_insert(0) += n;
                }
            }
        }
        out
    }

    pub(crate) fn tally(&self, pi: usize, f: impl FnOnce(&mut Tally)) {
        let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.tally_at.get(pi).and_then(|&i| t.get_mut(i)) {
            f(t);
        }
    }

    /// Reports a probe error, at most once a second per probe so a bad condition on a hot line
    /// does not flood the output; the rest are counted.
    pub(crate) fn report_error(&mut self, pi: usize, tid: i32, location: String, error: String) {
        self.tally(pi, |t| t.errors += 1);
        let now = Instant::now();
        if self
            .limits
            .last_error_report
            .get(&pi)
            .is_some_and(|t| now.duration_since(*t).as_secs() < 1)
        {
            return;
        }
        self.limits.last_error_report.insert(pi, now);
        self.report_error_now(pi, tid, location, error);
    }

    /// Reports a probe error, unthrottled.
    pub(crate) fn report_error_now(
        &mut self,
        pi: usize,
        tid: i32,
        location: String,
        error: String,
    ) {
        let e = ProbeError {
            ts: now_rfc3339(),
            pid: self.pid,
            ns_pid: None,
            tid: tid as u32,
            ns_tid: None,
            location,
            probe: self.probes[pi].spec.id.clone(),
            error,
        };
        self.emit(EngineEvent::Event(Body::Error(e)));
    }
}

/// A log template rendered with the evaluator's values: the message, and each hole's value
/// once under its source text. Both engines render through this.
pub(crate) fn render_template(
    ev: &Evaluator,
    template: &periscope_core::template::Template,
) -> (String, Fields) {
    let mut message = String::new();
    let mut values = Vec::new();
    for seg in &template.segments {
        match seg {
            Segment::Text(t) => message.push_str(t),
            Segment::Hole { source, expr } => {
                let v = ev.value(expr);
                message.push_str(&v.to_message_text());
                if !values.iter().any(|(k, _): &(String, _)| k == source) {
                    values.push((source.clone(), v));
                }
            }
        }
    }
    (message, Fields(values))
}

/// A gauge's sample: a number, a bool as 0/1, or nothing.
pub(crate) fn numeric(v: &periscope_core::value::Value) -> Option<f64> {
    use periscope_core::value::Value;
    match v {
        Value::Int { value, .. } => Some(match *value {
            periscope_core::value::Int128::Signed(v) => v as f64,
            periscope_core::value::Int128::Unsigned(v) => v as f64,
        }),
        Value::Float { value, .. } => Some(*value),
        Value::Bool { value, .. } => Some(f64::from(u8::from(*value))),
        _ => None,
    }
}

/// A counter's group for a value: an enum groups by its variant's name (`Put`, not one group
/// per `Put(n)`); its payload is a group key only when asked for (`--by method.0`).
pub(crate) fn group_key(v: periscope_core::value::Value) -> String {
    match v {
        periscope_core::value::Value::Enum { variant, .. } => variant,
        other => other.to_message_text(),
    }
}
