//! The in-kernel engine: log, count, gauge and duration probes as eBPF uprobes.
//!
//! A hit never stops the thread for a round trip to us: the kernel evaluates the condition,
//! applies the rate and hit limits and the overhead budget (it times its own work per hit and
//! pauses the probe past the budget) and copies what the values need into a ring buffer; this
//! module's thread renders the records into the same events the ptrace engine makes. The
//! target's code is never written (the kernel's uprobes are its own), and every uprobe is a
//! link held by this process, so however periscope ends, the kernel takes them out.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `program` | the loaded BPF program, its maps and links |
//! | `plan` | capture plans compiled from expressions and DWARF |
//! | `decode` | records parsed and rendered through the evaluator |
//! | `adopt` | probes on libraries loaded later, handed over and back by the ptrace engine; the kernel's counts in a tally |
//! | this file | the thread: probes in and out, records, counters, limits, the end |

mod adopt;
mod decode;
pub(crate) mod plan;
mod program;

use crate::error::NativeError;
use crate::probe::{
    Action, EndReason, EngineEvent, EngineUsed, ProbeSpec, ProbeState, Tallies, Tally,
};
use crate::resolve::ResolvedProbe;
use crate::target::{Site, Target};
use crate::unwind::{cfa_rule, CfaRule};
pub(crate) use adopt::{Adoption, KernelLink};
use nix::sys::eventfd::EventFd;
use periscope_core::event::{rfc3339, Body, LogEvent, ProbeError};
pub(crate) use program::PlanData;
use program::{Entry, Link, ProbeCounters, Program, MAX_PROBES, MAX_SITES};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often counters are read and the target's life checked when no record wakes us.
const TICK: Duration = Duration::from_millis(50);

/// Why a probe cannot run in the kernel, or `Ok` with its plans (one per site).
pub(crate) fn plans_for(
    target: &Target,
    probe: &mut ResolvedProbe,
) -> Result<Vec<PlanData>, String> {
    if matches!(probe.spec.action, Action::Duration { .. }) {
        duration_sites(target, probe)?;
    }
    if probe.replay.is_some() {
        return Err("replay runs copies of the process".into());
    }
    if probe.sites.len() > 64 {
        return Err(format!(
            "the location has {} code addresses; more than 64 are probed on the ptrace path",
            probe.sites.len()
        ));
    }
    if target.pid.is_none() {
        return Err("no live process".into());
    }
    let mut plans = plan::compile(target, &probe.spec, &probe.sites)?;
    if probe.sites.len() > 1 && !matches!(probe.spec.action, Action::Duration { .. }) {
        for (plan, site) in plans.iter_mut().zip(&probe.sites) {
            plan.flags |= program::PLAN_REPEATS;
            plan.scope = site.visible.scope_id.0 as u32;
            plan.addr = site.address;
            if let Some(CfaRule::RegOffset { reg, offset }) =
                cfa_rule(&target.objects[site.object].index, site.file_address)
            {
                (plan.cfa_reg, plan.cfa_off) = (u32::from(reg), offset);
            }
        }
    }
    Ok(plans)
}

/// A duration times calls: its sites are the entries of the function's out-of-line copies
/// (an inlined copy has no call to time). Go is refused: it moves goroutine stacks, which
/// breaks the kernel's return probes (they rewrite the return address on the stack).
fn duration_sites(target: &Target, probe: &mut ResolvedProbe) -> Result<(), String> {
    if !matches!(probe.spec.location, periscope_core::Location::Function(_)) {
        return Err(format!(
            "a duration times calls of a function: give a function name, not {}",
            probe.spec.location
        ));
    }
    probe.sites.retain(|s| {
        let index = &target.objects[s.object].index;
        index.function_at(s.file_address).is_some_and(|f| {
            f.name == s.function && index.unit_lang(f.unit) != crate::index::Lang::Go
        })
    });
    if probe.sites.is_empty() {
        return Err(format!(
            "{} has no out-of-line copy to time (inlined everywhere, or a Go function: Go moves goroutine stacks, which breaks return probes)",
            probe.spec.location
        ));
    }
    Ok(())
}

/// The entry address (file address) of the function around a duration's site, where its
/// return probe goes: the kernel's return probe must see the caller's return address on
/// top of the stack, which holds only at the first instruction.
fn function_entry(target: &Target, site: &Site) -> Option<u64> {
    target.objects[site.object]
        .index
        .function_at(site.file_address)
        .map(|f| f.low_pc)
}

enum Command {
    Add(
        Box<ResolvedProbe>,
        Vec<PlanData>,
        mpsc::Sender<Result<usize, NativeError>>,
    ),
    Remove(String, mpsc::Sender<bool>),
    /// A pending probe the ptrace engine resolved in a library just loaded.
    Adopt(Box<Adoption>),
    /// The library of the adopted probe with this tally row is being unloaded.
    Release(usize, mpsc::Sender<bool>),
    Stop,
}

/// The handle a session holds on the kernel engine's thread.
pub(crate) struct Kernel {
    /// Why the thread ended, once it has: a request it never answered is answered with it.
    ended: Arc<std::sync::Mutex<Option<EndReason>>>,
    commands: mpsc::Sender<Command>,
    wake: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kernel {
    /// Loads the program (the kernel verifies it now) and starts the thread. The error says
    /// what is missing for BPF on this machine and how to grant it.
    pub(crate) fn start(
        target: Target,
        tx: SyncSender<EngineEvent>,
        tallies: Tallies,
        stop_on_signals: bool,
        keep_alive: bool,
    ) -> Result<Kernel, String> {
        let pid = target.pid.ok_or("no live process")?;
        let program = Program::load()?;
        let wake = crate::engine::new_eventfd().map_err(|e| e.to_string())?;
        let signals = if stop_on_signals {
            Some(signal_fd().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let (commands, rx) = mpsc::channel();
        let goid = crate::engine::goid_offset(&target);
        let mut runner = Runner {
            pid,
            target,
            program,
            probes: Vec::new(),
            sites: HashMap::new(),
            free_sites: (0..MAX_SITES).rev().collect(),
            free_slots: (0..MAX_PROBES).rev().collect(),
            tx,
            ns: crate::namespace::Ids::of(pid),
            tallies,
            keep_alive,
            dropped: 0,
            commands: rx,
            wake: wake.clone(),
            signals,
            goid,
        };
        let ended = Arc::new(std::sync::Mutex::new(None));
        let ended2 = ended.clone();
        let thread = std::thread::Builder::new()
            .name("periscope-kernel".into())
            .spawn(move || {
                let reason = runner.run();
                runner.teardown();
                *ended2.lock().unwrap_or_else(|p| p.into_inner()) = reason.clone();
                if let Some(reason) = reason {
                    runner.send(EngineEvent::Ended(reason));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Kernel {
            ended,
            commands,
            wake,
            thread: Some(thread),
        })
    }

    fn request(&self, c: Command) -> bool {
        let sent = self.commands.send(c).is_ok();
        if sent {
            let _ = self.wake.write(1);
        }
        sent
    }

    /// Puts a probe's uprobes in; the number of sites.
    pub(crate) fn add(
        &self,
        probe: ResolvedProbe,
        plans: Vec<PlanData>,
    ) -> Result<usize, NativeError> {
        let (reply, answer) = mpsc::channel();
        if self.request(Command::Add(Box::new(probe), plans, reply)) {
            if let Ok(answer) = answer.recv() {
                return answer;
            }
        }
        // The thread ended first: say why (a signal while attaching is not the target's exit).
        if let Some(t) = self.thread.as_ref() {
            // It has left its loop; its teardown is bounded. Wait at most a second.
            for _ in 0..1000 {
                if t.is_finished() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(EndReason::Signal(signal)) => Err(NativeError::Interrupted { signal }),
            _ => Err(NativeError::TargetExited),
        }
    }

    pub(crate) fn remove(&self, id: &str) -> bool {
        let (reply, answer) = mpsc::channel();
        self.request(Command::Remove(id.to_string(), reply)) && answer.recv().unwrap_or(false)
    }

    /// A handle for the ptrace engine, which hands over pending probes (see `adopt`).
    pub(crate) fn link(&self) -> KernelLink {
        KernelLink {
            commands: self.commands.clone(),
            wake: self.wake.clone(),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Takes every uprobe out and ends the thread.
    pub(crate) fn stop(&mut self) {
        self.request(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_fd() -> nix::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// One probe in the kernel.
struct KProbe {
    spec: ProbeSpec,
    sites: Vec<Site>,
    cfa: Vec<Option<CfaRule>>,
    site_ids: Vec<u32>,
    links: Vec<Link>,
    slot: u32,
    tally: usize,
    done: bool,
    last_error_report: Option<Instant>,
    /// Handed over by the ptrace engine (see `adopt`): the counts its tally had before.
    adopted: Option<adopt::Base>,
    /// An adopted probe whose library was unloaded: out, waiting to be adopted again.
    released: bool,
}

struct Runner {
    pid: u32,
    target: Target,
    program: Program,
    probes: Vec<KProbe>,
    /// Site id (the uprobe's cookie) → (probe, site index).
    sites: HashMap<u32, (usize, usize)>,
    free_sites: Vec<u32>,
    free_slots: Vec<u32>,
    tx: SyncSender<EngineEvent>,
    /// The process's ids in its own pid namespace, stamped on its events.
    ns: crate::namespace::Ids,
    tallies: Tallies,
    keep_alive: bool,
    dropped: u64,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    signals: Option<nix::sys::signalfd::SignalFd>,
    /// Go: where `runtime.g` keeps the goroutine id.
    goid: Option<u64>,
}

impl Runner {
    fn send(&mut self, mut e: EngineEvent) {
        if let EngineEvent::Event(body) = &mut e {
            self.ns.stamp(body);
        }
        match self.tx.try_send(e) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
        }
    }

    fn tally(&self, pi: usize, f: impl FnOnce(&mut Tally)) {
        let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = t.get_mut(self.probes[pi].tally) {
            f(t);
        }
    }

    /// The loop: records as they come, commands, counters and the target's life each tick.
    /// `None` when asked to stop (the session says so itself).
    fn run(&mut self) -> Option<EndReason> {
        loop {
            if self.wait() {
                if let Some(name) = self.read_signal() {
                    self.drain();
                    return Some(EndReason::Signal(name));
                }
            }
            while let Ok(c) = self.commands.try_recv() {
                match c {
                    Command::Add(p, plans, reply) => {
                        let _ = reply.send(self.add(*p, plans));
                    }
                    Command::Remove(id, reply) => {
                        let _ = reply.send(self.remove(&id));
                    }
                    Command::Adopt(a) => self.adopt(*a),
                    Command::Release(tally, reply) => {
                        let _ = reply.send(self.release(tally));
                    }
                    Command::Stop => {
                        self.drain();
                        return None;
                    }
                }
            }
            self.drain();
            self.sync_counters();
            if let Some(ended) = exit_of(self.pid) {
                self.drain();
                return Some(ended);
            }
            let mut counted = self.probes.iter().filter(|p| p.counts_for_end()).peekable();
            if !self.keep_alive && counted.peek().is_some() && counted.all(|p| p.done) {
                return Some(crate::probe::all_ended(&self.tallies));
            }
        }
    }

    /// Sleeps until a record, a command or a signal, or the tick. True when a signal may be
    /// waiting.
    fn wait(&mut self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ring = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.program.ring.as_raw_fd()) };
        let mut fds = vec![
            PollFd::new(ring, PollFlags::POLLIN),
            PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(s) = &self.signals {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(TICK.as_millis() as i32).unwrap_or(PollTimeout::NONE);
        let _ = poll(&mut fds, timeout);
        let signalled = fds
            .get(2)
            .and_then(|f| f.revents())
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        let woken = fds[1]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if woken {
            let _ = self.wake.read();
        }
        signalled
    }

    fn read_signal(&mut self) -> Option<String> {
        let info = self.signals.as_mut()?.read_signal().ok()??;
        let name = nix::sys::signal::Signal::try_from(info.ssi_signo as i32)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "a signal".into());
        Some(name)
    }

    fn add(&mut self, probe: ResolvedProbe, plans: Vec<PlanData>) -> Result<usize, NativeError> {
        self.add_to(probe, plans, None)
    }

    /// Puts a probe in under a new tally row, or (`adopted`) under the row it has with the
    /// counts that row had.
    fn add_to(
        &mut self,
        probe: ResolvedProbe,
        mut plans: Vec<PlanData>,
        adopted: Option<(usize, adopt::Base)>,
    ) -> Result<usize, NativeError> {
        let kernel_error = |m: String| NativeError::Kernel(m);
        let slot = self
            .free_slots
            .pop()
            .ok_or_else(|| kernel_error("too many probes in the kernel at once".into()))?;
        let spec = probe.spec;
        // A probe armed again keeps to its hit limit over all its armings.
        let before = adopted.map_or(0, |(_, b)| b.hits());
        let counters = ProbeCounters {
            max_hits: spec.max_hits.map_or(0, |m| m.saturating_sub(before).max(1)),
            rate_allowed: rate_allowed(spec.rate_limit).0,
            rate_window_ns: rate_allowed(spec.rate_limit).1,
            budget_ns: spec.budget.map_or(0, |b| nanos(b.limit).max(1)),
            budget_window_ns: spec.budget.map_or(0, |b| nanos(b.window)),
            ..ProbeCounters::default()
        };
        self.program
            .set_counters(slot, &counters)
            .map_err(kernel_error)?;
        let tally = match adopted {
            Some((row, _)) => row,
            None => {
                let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
                t.push(Tally {
                    probe: spec.id.clone(),
                    engine: EngineUsed::Bpf,
                    ..Tally::default()
                });
                t.len() - 1
            }
        };
        let pi = self.probes.len();
        let cfa = probe
            .sites
            .iter()
            .map(|s| cfa_rule(&self.target.objects[s.object].index, s.file_address))
            .collect();
        self.probes.push(KProbe {
            spec,
            sites: probe.sites,
            cfa,
            site_ids: Vec::new(),
            links: Vec::new(),
            slot,
            tally,
            done: false,
            last_error_report: None,
            adopted: adopted.map(|(_, b)| b),
            released: false,
        });
        let result = self.arm(pi, &mut plans);
        if let Err(e) = result {
            self.end_probe(pi, ProbeState::Removed, false);
            // It never ran here: its row goes (when still the last), since `auto` puts the
            // probe on ptrace instead, under a row of its own.
            let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
            if adopted.is_none() && t.len() == tally + 1 {
                t.pop();
            }
            return Err(kernel_error(e));
        }
        Ok(self.probes[pi].sites.len())
    }

    /// Writes each site's plan and attaches its uprobes (entry and return for a duration).
    fn arm(&mut self, pi: usize, plans: &mut [PlanData]) -> Result<(), String> {
        let duration = matches!(self.probes[pi].spec.action, Action::Duration { .. });
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).ok();
        for (si, plan) in plans.iter_mut().enumerate() {
            let id = self
                .free_sites
                .pop()
                .ok_or("too many probe sites in the kernel at once")?;
            plan.probe = self.probes[pi].slot;
            self.program.set_plan(id, plan)?;
            self.probes[pi].site_ids.push(id);
            self.sites.insert(id, (pi, si));
            let site = &self.probes[pi].sites[si];
            let object = &self.target.objects[site.object];
            let offset = file_offset(&object.index, site.file_address).ok_or_else(|| {
                format!("{:#x} is not in a file-backed segment", site.file_address)
            })?;
            let path = attach_path(self.pid, exe.as_deref(), &object.index.path);
            if duration {
                let entry = function_entry(&self.target, site)
                    .and_then(|a| file_offset(&object.index, a))
                    .ok_or("no function entry for the return probe")?;
                let link = self
                    .program
                    .attach(Entry::CallStart, &path, offset, self.pid, id)?;
                self.probes[pi].links.push(link);
                let link = self
                    .program
                    .attach(Entry::CallReturn, &path, entry, self.pid, id)?;
                self.probes[pi].links.push(link);
            } else {
                let link = self
                    .program
                    .attach(Entry::Hit, &path, offset, self.pid, id)?;
                self.probes[pi].links.push(link);
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: &str) -> bool {
        let found: Vec<usize> = (0..self.probes.len())
            // An adopted probe is the ptrace engine's to remove (it may be pending there).
            .filter(|&pi| {
                let p = &self.probes[pi];
                p.spec.id == id && !p.done && p.adopted.is_none()
            })
            .collect();
        for &pi in &found {
            self.end_probe(pi, ProbeState::Removed, true);
        }
        !found.is_empty()
    }

    /// Takes a probe's uprobes out, frees its sites, sets its final state. Records already
    /// in the ring buffer are rendered first, and the kernel's last counts kept.
    fn end_probe(&mut self, pi: usize, state: ProbeState, announce: bool) {
        if self.probes[pi].done {
            return;
        }
        let links = std::mem::take(&mut self.probes[pi].links);
        for link in links {
            self.program.detach(link);
        }
        self.drain();
        if let Some(c) = self.program.counters(self.probes[pi].slot) {
            self.set_counts(pi, &c);
        }
        let p = &mut self.probes[pi];
        p.done = true;
        let ids = std::mem::take(&mut p.site_ids);
        let slot = p.slot;
        for id in ids {
            self.sites.remove(&id);
            self.free_sites.push(id);
        }
        self.free_slots.push(slot);
        let s2 = state.clone();
        self.tally(pi, |t| t.state = s2);
        if announce {
            let probe = self.probes[pi].spec.id.clone();
            self.send(EngineEvent::ProbeStopped { probe, state });
        }
    }

    fn teardown(&mut self) {
        for pi in 0..self.probes.len() {
            if !self.probes[pi].done {
                self.end_probe(pi, ProbeState::Removed, false);
            }
        }
    }

    /// The kernel's counts into the tallies; a probe at its hit limit, or one the kernel
    /// paused for its overhead budget, is taken out.
    fn sync_counters(&mut self) {
        for pi in 0..self.probes.len() {
            if self.probes[pi].done {
                continue;
            }
            let Some(c) = self.program.counters(self.probes[pi].slot) else {
                continue;
            };
            self.set_counts(pi, &c);
            if c.paused_at != 0 {
                self.end_probe(pi, ProbeState::Paused(paused_reason(&c)), true);
            } else if c.max_hits > 0 && c.hits >= c.max_hits {
                self.end_probe(pi, ProbeState::HitLimit, true);
            }
        }
    }

    /// Every record in the ring buffer, rendered.
    fn drain(&mut self) {
        // Kernel time (CLOCK_MONOTONIC) to wall time, once per batch.
        let wall = SystemTime::now();
        let mono = monotonic_ns();
        let mut records = Vec::new();
        while let Some(item) = self.program.ring.next() {
            if let Some(r) = decode::parse(&item) {
                records.push(r);
            }
        }
        for r in records {
            let ago = Duration::from_nanos(mono.saturating_sub(r.ktime));
            let ts = rfc3339(wall.checked_sub(ago).unwrap_or(wall));
            self.record(r, ts);
        }
    }

    fn record(&mut self, r: decode::Record, ts: String) {
        let Some(&(pi, si)) = self.sites.get(&r.site) else {
            return; // a site taken out since
        };
        let tid = r.tid;
        let location = self.probes[pi].sites[si].short_location();
        if r.kind == decode::REC_ERROR {
            let cond = self.probes[pi]
                .spec
                .condition
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let msg = format!(
                "condition `{cond}` could not be evaluated: {}",
                r.error_text()
            );
            self.report_error(pi, tid, location, msg);
            return;
        }
        let p = &self.probes[pi];
        let (site, cfa, spec) = (&p.sites[si], p.cfa[si], &p.spec);
        let function = site.function.clone();
        let ns = r.value;
        let kind = r.kind;
        let goroutine = self.goid.and_then(|g| r.goroutine(g));
        let out = r.with_evaluator(&self.target, site, cfa, spec, self.pid, |ev| {
            match &spec.action {
                Action::Log(t) => Out::Log(crate::engine::render_template(ev, t)),
                Action::Count { by } => {
                    Out::Count(by.as_ref().map(|e| crate::engine::group_key(ev.value(e))))
                }
                Action::Gauge { value, by } => Out::Metric(
                    by.as_ref().map(|e| crate::engine::group_key(ev.value(e))),
                    crate::engine::numeric(&ev.value(value)),
                ),
                Action::Duration { by } => Out::Metric(
                    by.as_ref().map(|e| crate::engine::group_key(ev.value(e))),
                    (kind == decode::REC_RETURN).then_some(ns as f64),
                ),
                _ => Out::Nothing,
            }
        });
        match out {
            Out::Log((message, values)) => {
                let e = LogEvent {
                    ts,
                    pid: self.pid,
                    ns_pid: None,
                    tid,
                    ns_tid: None,
                    goroutine,
                    location,
                    probe: self.probes[pi].spec.id.clone(),
                    function: Some(function),
                    message,
                    values,
                    engine: Some("bpf".into()),
                    verify: None,
                };
                self.send(EngineEvent::Event(Body::Log(e)));
            }
            Out::Count(key) => self.tally(pi, |t| {
                *t.counts.entry((tid as i32, key)).or_insert(0) += 1;
            }),
            Out::Metric(key, Some(v)) => self.tally(pi, |t| {
                *t.counts.entry((tid as i32, key.clone())).or_insert(0) += 1;
                t.metrics.entry(key).or_default().add(v);
            }),
            Out::Metric(_, None) => {
                if let Action::Gauge { value, .. } = &self.probes[pi].spec.action {
                    let msg = format!("`{value}` is not a number here");
                    self.report_error(pi, tid, location, msg);
                }
            }
            Out::Nothing => {}
        }
    }

    /// A probe error, at most once a second per probe (the rest are counted by the kernel).
    fn report_error(&mut self, pi: usize, tid: u32, location: String, error: String) {
        let now = Instant::now();
        let p = &mut self.probes[pi];
        if p.last_error_report
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        p.last_error_report = Some(now);
        let e = ProbeError {
            ts: periscope_core::event::now_rfc3339(),
            pid: self.pid,
            ns_pid: None,
            tid,
            ns_tid: None,
            location,
            probe: p.spec.id.clone(),
            error,
        };
        self.send(EngineEvent::Event(Body::Error(e)));
    }
}

/// Why the kernel paused a probe, in the words of the ptrace engine's reason, saying what the
/// kernel counts: the program's own time at each hit, not the uprobe trap around it (which
/// the program cannot see).
fn paused_reason(c: &ProbeCounters) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    format!(
        "overhead budget exceeded: its BPF program ran for {:.1} ms within {:.3} s (budget {:.1} ms; counted in the kernel: the program's time at each hit, not the uprobe trap around it)",
        ms(c.budget_used),
        (c.paused_at.saturating_sub(c.budget_start) as f64 / 1e9).max(0.001),
        ms(c.budget_ns)
    )
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

enum Out {
    Log((String, periscope_core::value::Fields)),
    Count(Option<String>),
    Metric(Option<String>, Option<f64>),
    Nothing,
}

/// How the target ended, once it has: gone from /proc, or a zombie its parent has not reaped
/// yet (nothing traces it on this path, so no exit event comes; a zombie's status in
/// /proc/PID/stat says how it ended).
fn exit_of(pid: u32) -> Option<EndReason> {
    let Some(stat) = crate::process::ProcStat::read(i32::try_from(pid).ok()?) else {
        return Some(EndReason::TargetExited {
            code: None,
            signal: None,
        });
    };
    if !matches!(stat.state(), Some('Z' | 'X')) {
        return None;
    }
    // The exit status, as waitpid gives it.
    let status = stat.number::<i32>(52);
    Some(EndReason::TargetExited {
        code: status.filter(|s| s & 0x7f == 0).map(|s| (s >> 8) & 0xff),
        signal: status.filter(|s| s & 0x7f != 0).map(|s| s & 0x7f),
    })
}

/// A rate limit as the kernel applies it: (hits allowed, per window of nanoseconds), as
/// [`crate::probe::rate_window`] defines it for both engines; (0, 0) for none.
fn rate_allowed(limit: Option<f64>) -> (u64, u64) {
    match limit.map(crate::probe::rate_window) {
        None => (0, 0),
        Some((n, window)) => (n, nanos(window)),
    }
}

/// The file offset of a code address of an object, for the uprobe.
fn file_offset(index: &crate::index::ObjectIndex, file_address: u64) -> Option<u64> {
    index
        .segments
        .iter()
        .find(|s| file_address >= s.vaddr && file_address < s.vaddr + s.filesz)
        .map(|s| file_address - s.vaddr + s.offset)
}

/// The object's file as the target sees it: through `/proc/PID/exe` for the executable (the
/// very file it runs, even if replaced on disk since), `/proc/PID/root` for libraries (its
/// own mount namespace).
fn attach_path(
    pid: u32,
    exe: Option<&std::path::Path>,
    path: &std::path::Path,
) -> std::path::PathBuf {
    if exe == Some(path) {
        return format!("/proc/{pid}/exe").into();
    }
    format!("/proc/{pid}/root{}", path.display()).into()
}

/// Whether a probe can run only in the kernel (a duration: no breakpoint form of it).
pub(crate) fn needs_kernel(spec: &ProbeSpec) -> bool {
    matches!(spec.action, Action::Duration { .. })
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
