//! The ptrace engine: the tracer thread's state machine for one target process.
//!
//! One [`Engine`] runs on one dedicated OS thread (ptrace ties a tracee to the thread that
//! attached). Its life: [`Engine::setup`] (attach every thread, clean up after a killed
//! periscope, map scratch areas, put in the breakpoints), [`Engine::run`] (the event loop:
//! stops, commands, signals), [`Engine::teardown`] (leave the target as it was). Each concern
//! lives in a file of its own that owns its state:
//!
//! | file | state it owns |
//! | --- | --- |
//! | `wakeup` | the eventfd/signalfd sleep, and every bounded wait for a stop |
//! | `threads` | the live threads, and recent exits |
//! | `remote` | system calls run inside the target, through a stub that finishes on its own |
//! | `scratch` | the scratch areas and the fail-safe handler |
//! | `breakpoints` | the `int3`s in place, retired ones, the probe sites at each |
//! | `hit` | a trap on one of ours: probes run, limits, resume past the breakpoint |
//! | `capture` | stacks, signals and panics turned into evidence |
//! | `forks` | fork children released with their original code |
//! | `goroutine` | Go: the goroutine a stopped thread runs |
//! | `replay` | verify's copies of the process, run with a candidate fix |
//! | `loader` | the dynamic loader's breakpoint; libraries loaded and unloaded; pending probes |
//! | `handoff` | pending probes that run in the kernel, handed to the kernel engine and back |
//! | `leave` | teardown |
//! | `affinity` | the tracer's CPU |
//! | `watchdog` | the last resort when the engine stops making progress |

mod affinity;
mod breakpoints;
mod capture;
mod forks;
mod goroutine;
mod handoff;
mod hit;
mod intents;
mod leave;
mod loader;
mod remote;
mod replay;
mod scratch;
mod threads;
mod verify;
mod wakeup;
pub(crate) mod watchdog;

use crate::error::NativeError;
use crate::probe::{
    EndReason, EngineEvent, EngineUsed, ProbeState, SessionOptions, Summary, Tallies, Tally,
    WatchSignals,
};
use crate::process::{self, Memory, Stop};
use crate::resolve::ResolvedProbe;
use crate::target::Target;
use nix::sys::eventfd::EventFd;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

pub(crate) use breakpoints::Originals;
pub(crate) use goroutine::goid_offset;
pub(crate) use hit::{group_key, numeric, render_template};
pub(crate) use wakeup::new_eventfd;

const PTRACE_EVENT_FORK: i32 = 1;
const PTRACE_EVENT_VFORK: i32 = 2;
const PTRACE_EVENT_CLONE: i32 = 3;
const PTRACE_EVENT_EXEC: i32 = 4;
const PTRACE_EVENT_STOP: i32 = 128;
const SIGTRAP: i32 = libc::SIGTRAP;

/// A request to the tracer thread. Sent on a channel; the thread is woken through its eventfd.
pub(crate) enum Command {
    /// A probe resolved by the session (which chose this engine for it, for this reason).
    Add(
        Box<ResolvedProbe>,
        EngineUsed,
        mpsc::Sender<Result<usize, NativeError>>,
    ),
    Remove(String, mpsc::Sender<bool>),
    WatchSignals(Option<WatchSignals>),
    Stop,
}

pub(crate) struct Engine {
    pid: u32,
    target: Target,
    probes: Vec<ResolvedProbe>,
    done: Vec<bool>,
    /// Per probe: pending (in no object loaded yet), with what the user is told.
    pending: Vec<Option<String>>,
    /// The loader's breakpoint, once a probe is pending (see `loader`).
    loader: Option<loader::Loader>,
    tx: SyncSender<EngineEvent>,
    /// The process's ids in its own pid namespace, stamped on its events.
    ns: crate::namespace::Ids,
    tallies: Tallies,
    /// Where each probe's tally is in `tallies` (shared with the kernel engine's probes).
    tally_at: Vec<usize>,
    wakeup: wakeup::Wakeup,
    commands: Receiver<Command>,
    keep_alive: bool,
    mem: Memory,
    threads: threads::Threads,
    breakpoints: breakpoints::Breakpoints,
    scratch: scratch::ScratchAreas,
    limits: hit::HitLimits,
    repeats: crate::repeat::Repeats,
    /// Signals that arrived while a thread was held for our own work, to deliver on resume.
    pending_signals: HashMap<i32, i32>,
    dropped: u64,
    /// Events of the hit being handled: sent once its thread runs again, so waking the
    /// consumer (another thread, perhaps on the target's core) is never on the target's time.
    /// The buffer is kept between hits (no allocation per hit).
    held_events: Vec<EngineEvent>,
    /// A hit is being handled: `emit` holds its events back.
    holding: bool,
    leader_status: Option<(Option<i32>, Option<i32>)>,
    /// Leftover scratch areas and stubs of a killed periscope removed at attach.
    recovered: usize,
    forks: forks::ForkChildren,
    replays: replay::Replays,
    goroutines: goroutine::GoroutineLayout,
    watch_signals: Option<WatchSignals>,
    affinity: affinity::AffinityFollower,
    /// Threads whose fatal signal was already captured (a re-raised signal is not captured twice).
    captured_failure: HashSet<i32>,
    /// The target exec'd: none of our breakpoints or mappings exist in its new image.
    image_replaced: bool,
    /// What teardown could not remove (reported; the next attach removes it).
    left_behind: Vec<String>,
    heartbeat: Arc<watchdog::Heartbeat>,
    /// Shared with the session: where each engine probes, the kernel engine's channel.
    handoff: crate::session::Handoff,
    /// Probes handed to the kernel engine (see `handoff`): the objects their sites are in.
    handed: HashMap<usize, HashSet<usize>>,
    /// Test hook (`PERISCOPE_TEST_STALL_HITS`): the engine stops making progress at the first
    /// hit, holding the thread, so the watchdog can be tested against a real stall.
    stall_at_hit: bool,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pid: u32,
        target: Target,
        probes: Vec<ResolvedProbe>,
        tx: SyncSender<EngineEvent>,
        tallies: Tallies,
        tally_at: Vec<usize>,
        wake: Arc<EventFd>,
        commands: Receiver<Command>,
        options: &SessionOptions,
        heartbeat: Arc<watchdog::Heartbeat>,
        handoff: crate::session::Handoff,
    ) -> Engine {
        let n = probes.len();
        let pending = probes.iter().map(|p| p.pending.clone()).collect();
        Engine {
            pid,
            target,
            probes,
            done: vec![false; n],
            pending,
            loader: None,
            tx,
            ns: crate::namespace::Ids::of(pid),
            tallies,
            tally_at,
            wakeup: wakeup::Wakeup::new(wake, options.stop_on_signals, heartbeat.clone()),
            commands,
            keep_alive: options.keep_alive,
            mem: Memory::new(pid),
            threads: threads::Threads::default(),
            breakpoints: breakpoints::Breakpoints::default(),
            scratch: scratch::ScratchAreas::default(),
            limits: hit::HitLimits::default(),
            repeats: Default::default(),
            pending_signals: HashMap::new(),
            dropped: 0,
            held_events: Vec::new(),
            holding: false,
            leader_status: None,
            recovered: 0,
            forks: forks::ForkChildren::default(),
            replays: replay::Replays::default(),
            goroutines: goroutine::GoroutineLayout::default(),
            watch_signals: options.watch_signals.clone(),
            affinity: affinity::AffinityFollower::new(),
            captured_failure: HashSet::new(),
            image_replaced: false,
            left_behind: Vec::new(),
            heartbeat,
            handoff,
            handed: HashMap::new(),
            stall_at_hit: std::env::var_os("PERISCOPE_TEST_STALL_HITS").is_some(),
        }
    }

    /// The original bytes of every breakpoint in place, for the watchdog.
    pub(crate) fn originals(&self) -> Originals {
        self.breakpoints.originals()
    }

    pub(crate) fn recovered(&self) -> usize {
        self.recovered
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            dropped_events: self.dropped,
            recovered: self.recovered,
            sites: self.probes.iter().map(|p| p.sites.len()).collect(),
            left_behind: self.left_behind.clone(),
        }
    }

    pub(crate) fn emit(&mut self, mut e: EngineEvent) {
        // Stamped here, while the hit's thread is still stopped (so still there to be read).
        if let EngineEvent::Event(body) = &mut e {
            self.ns.stamp(body);
        }
        if self.holding {
            self.held_events.push(e);
            return;
        }
        self.send(e);
    }

    fn send(&mut self, e: EngineEvent) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Holds events back while a hit's thread is stopped (see [`Engine::held_events`]).
    pub(crate) fn hold_events(&mut self) {
        self.holding = true;
    }

    /// Sends what was held back, in order.
    pub(crate) fn release_events(&mut self) {
        self.holding = false;
        let mut held = std::mem::take(&mut self.held_events);
        for e in held.drain(..) {
            self.send(e);
        }
        self.held_events = held;
    }

    // ---- attaching and installing ---------------------------------------------------------

    pub(crate) fn setup(&mut self) -> Result<(), NativeError> {
        self.threads.attach_all(self.pid)?;
        self.mem.open_for_writing()?;
        self.install()
    }

    fn install(&mut self) -> Result<(), NativeError> {
        // Leftovers are removed and every scratch area the initial probes need is mapped in one
        // stop of the leader: a thread is held once, however many objects are probed.
        let objects: Vec<usize> = self
            .probes
            .iter()
            .flat_map(|p| p.sites.iter().map(|s| s.object))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut recovered = 0;
        self.with_stopped_leader(|engine, tid| {
            recovered = engine.recover_leftovers(tid)?;
            for &o in &objects {
                engine.allocate_scratch(tid, o)?;
            }
            Ok(())
        })?;
        self.recovered = recovered;
        for pi in 0..self.probes.len() {
            if let Some(signal) = self.wakeup.signalled.clone() {
                return Err(NativeError::Interrupted { signal });
            }
            self.arm(pi)?;
        }
        if self.pending.iter().any(Option::is_some) {
            self.watch_loader()?;
        }
        Ok(())
    }

    /// Ends probe `pi`: breakpoints out, state recorded, consumers told.
    fn end_probe(&mut self, pi: usize, state: ProbeState) {
        if self.done[pi] && state != ProbeState::Removed {
            return;
        }
        self.done[pi] = true;
        self.disarm(pi);
        self.kill_copy_of(pi);
        let probe = self.probes[pi].spec.id.clone();
        let s2 = state.clone();
        self.tally(pi, |t| t.state = s2);
        self.emit(EngineEvent::ProbeStopped { probe, state });
    }

    fn add_probe(
        &mut self,
        resolved: ResolvedProbe,
        engine: EngineUsed,
    ) -> Result<usize, NativeError> {
        let sites = resolved.sites.len();
        let pi = self.probes.len();
        let id = resolved.spec.id.clone();
        let pending = resolved.pending.clone();
        self.probes.push(resolved);
        self.done.push(false);
        self.pending.push(pending.clone());
        {
            let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
            self.tally_at.push(t.len());
            t.push(Tally {
                probe: id,
                engine,
                state: pending
                    .clone()
                    .map_or(ProbeState::Active, ProbeState::Pending),
                ..Tally::default()
            });
        }
        let armed = match pending {
            // The session's index is the one made at attach; this engine's knows the
            // libraries loaded since, where the probe may be already.
            Some(_) => self.watch_loader().map(|()| self.arm_pending()),
            None => self.arm(pi),
        };
        if let Err(e) = armed {
            self.done[pi] = true;
            self.disarm(pi);
            self.tally(pi, |t| t.state = ProbeState::Removed);
            return Err(e);
        }
        Ok(sites)
    }

    fn remove_probe(&mut self, id: &str) -> bool {
        let found: Vec<usize> = (0..self.probes.len())
            .filter(|&pi| self.probes[pi].spec.id == id && !self.done[pi])
            .collect();
        for &pi in &found {
            self.take_back(pi);
            self.end_probe(pi, ProbeState::Removed);
        }
        !found.is_empty()
    }

    /// Carries out queued commands; returns true when asked to stop.
    fn run_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Add(probe, engine, reply) => {
                    let _ = reply.send(self.add_probe(*probe, engine));
                }
                Command::Remove(id, reply) => {
                    let _ = reply.send(self.remove_probe(&id));
                }
                Command::WatchSignals(w) => self.watch_signals = w,
                Command::Stop => return true,
            }
        }
        false
    }

    // ---- the event loop -------------------------------------------------------------------

    /// Serves stops, commands and signals until the session must end; returns why.
    pub(crate) fn run(&mut self) -> EndReason {
        loop {
            if let Some(signal) = self.wakeup.signalled.take() {
                return EndReason::Signal(signal);
            }
            // Reset the wake-up counter first: a SIGCHLD from here on wakes the sleep below.
            self.wakeup.reset();
            // Drain everything the kernel has for us before sleeping again.
            let mut handled = 0u32;
            loop {
                self.heartbeat.beat();
                match process::wait(-1, true) {
                    Ok(Some(stop)) => {
                        if let Some(reason) = self.handle(stop) {
                            return reason;
                        }
                        handled += 1;
                        // A busy target can keep this loop going: take commands and signals
                        // in between.
                        if handled.is_multiple_of(64) {
                            if self.run_commands() {
                                return EndReason::Requested;
                            }
                            self.wakeup.read_signal();
                            if let Some(signal) = self.wakeup.signalled.take() {
                                return EndReason::Signal(signal);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(nix::errno::Errno::ECHILD) => {
                        return EndReason::TargetExited {
                            code: None,
                            signal: None,
                        };
                    }
                    Err(e) => return EndReason::Error(format!("waitpid: {e}")),
                }
            }
            if self.run_commands() {
                return EndReason::Requested;
            }
            self.take_indexed();
            if !self.keep_alive && self.done.iter().all(|d| *d) && !self.done.is_empty() {
                // Every probe ended: by its hit limit, or (said as the session's error) because
                // its condition kept failing.
                return crate::probe::all_ended(&self.tallies);
            }
            self.check_copy_deadline();
            if self.wakeup.take_consumed() {
                continue; // a nested wait read wake-ups meant for this loop: look again
            }
            // Idle: no thread of the target is held by us while we sleep.
            self.heartbeat.idle();
            self.wakeup.idle_until(self.replays.deadline());
        }
    }

    /// Resumes a thread we held, delivering a signal that arrived meanwhile (else `signal`).
    pub(crate) fn resume(&mut self, tid: i32, signal: i32) {
        let sig = self.pending_signals.remove(&tid).unwrap_or(signal);
        let _ = process::cont(tid, sig);
    }

    /// Handles one stop; returns a reason when the session must end.
    fn handle(&mut self, stop: Stop) -> Option<EndReason> {
        let tid = stop.tid();
        if self.replays.is_copy(tid) {
            self.on_copy_stop(stop);
            return None;
        }
        match stop {
            Stop::Exited { code, .. } => {
                self.threads.remove(tid);
                if tid == self.pid as i32 {
                    self.leader_status = Some((Some(code), None));
                }
                self.check_exit()
            }
            Stop::Killed { signal, .. } => {
                self.threads.remove(tid);
                if tid == self.pid as i32 {
                    self.leader_status = Some((None, Some(signal)));
                }
                self.check_exit()
            }
            Stop::Signal {
                signal: SIGTRAP, ..
            } => {
                self.on_trap(tid);
                None
            }
            Stop::Signal { signal, .. } => {
                self.pass_signal(tid, signal);
                None
            }
            Stop::Event { event, signal, .. } => self.on_event(tid, event, signal),
            // The exit of an injected call that ran out of time: the stub it runs in puts the
            // thread back where it was.
            Stop::Syscall { .. } => {
                let _ = process::cont(tid, 0);
                None
            }
        }
    }

    fn check_exit(&mut self) -> Option<EndReason> {
        if self.threads.is_empty() {
            let (code, signal) = self.leader_status.unwrap_or((None, None));
            return Some(EndReason::TargetExited { code, signal });
        }
        None
    }

    /// Passes a signal on to the thread. A fault inside a scratch slot is reported at the
    /// original instruction's address, so the program's own crash handling sees a normal pc.
    fn pass_signal(&mut self, tid: i32, signal: i32) {
        let fault = matches!(
            signal,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL
        );
        if fault {
            if let Ok(mut regs) = process::getregs(tid) {
                if let Some(orig) = self.breakpoints.original_for_slot(regs.rip) {
                    regs.rip = orig;
                    let _ = process::setregs(tid, regs);
                }
            }
        }
        if (fault || signal == libc::SIGABRT) && self.watch_signals.is_some() {
            self.capture_signal(tid, signal);
        }
        // Passed on unchanged: the process does what it would have done anyway.
        let _ = process::cont(tid, signal);
    }

    fn on_event(&mut self, tid: i32, event: i32, signal: i32) -> Option<EndReason> {
        match event {
            PTRACE_EVENT_CLONE => {
                // The new thread may already have run and exited: `add_created` knows.
                if let Ok(new) = process::get_event_msg(tid) {
                    self.threads.add_created(new as i32);
                }
                let _ = process::cont(tid, 0);
            }
            PTRACE_EVENT_FORK => {
                if let Ok(child) = process::get_event_msg(tid) {
                    self.on_fork_event(child as i32);
                }
                let _ = process::cont(tid, 0);
            }
            PTRACE_EVENT_VFORK => {
                // A vfork child shares our memory until it execs: trace it like a thread.
                if let Ok(child) = process::get_event_msg(tid) {
                    self.threads.add_created(child as i32);
                }
                let _ = process::cont(tid, 0);
            }
            PTRACE_EVENT_EXEC => {
                if threads::is_foreign(self.pid, tid) {
                    // A vfork child replaced its image: nothing of ours is in it any more.
                    self.threads.remove(tid);
                    let _ = process::detach(tid, 0);
                } else {
                    // Every other thread is gone; the one that exec'd is the leader now.
                    self.image_replaced = true;
                    self.threads.clear();
                    self.threads.add(self.pid as i32);
                    return Some(EndReason::TargetExec);
                }
            }
            PTRACE_EVENT_STOP => {
                if !self.threads.contains(tid) {
                    if threads::is_foreign(self.pid, tid) {
                        self.on_child_stop(tid);
                        return None;
                    }
                    self.threads.add(tid);
                }
                if matches!(
                    signal,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // Group stop: stay stopped until SIGCONT, as without a tracer.
                    let _ = process::listen(tid);
                } else {
                    let _ = process::cont(tid, 0);
                }
            }
            _ => {
                let _ = process::cont(tid, 0);
            }
        }
        None
    }
}
