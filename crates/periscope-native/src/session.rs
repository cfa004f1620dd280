//! A probing session on one process: the handle the surfaces hold. It resolves probes, starts
//! the tracer thread (see [`crate::engine`]) and talks to it over a command channel, waking it
//! through its eventfd.
//!
//! The tracer reads SIGCHLD (and SIGINT/SIGTERM/SIGHUP, when asked to end on them) through
//! signalfds. This needs those signals blocked in every thread of the program: call
//! [`block_signals`] first thing in `main`, before any thread exists.

use crate::engine::{self, watchdog, Command, Engine};
use crate::error::NativeError;
use crate::kernel::{self, Kernel, KernelLink, PlanData};
use crate::probe::{
    EngineChoice, EngineEvent, EngineUsed, ProbeSpec, ProbeState, SessionOptions, Summary, Tallies,
    Tally, WatchSignals,
};
use crate::resolve::{resolve, resolve_or_pending, ResolvedProbe};
use crate::target::Target;
use nix::sys::eventfd::EventFd;
use nix::sys::signal::{SigSet, Signal};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Blocks the signals the session thread reads through its signalfd. Call it in `main` before
/// any other thread starts: threads inherit the mask, and a thread that left SIGCHLD unblocked
/// would swallow the wake-ups.
pub fn block_signals() {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    // Failure is impossible with a valid set; nothing useful to do if it happened.
    let _ = set.thread_block();
}

/// A running session. Dropping it without `stop()` also ends it cleanly.
///
/// A probe runs on one of two engines (see [`EngineChoice`]): in the kernel, as eBPF uprobes
/// (`kernel`), or on the ptrace tracer thread (`engine`). Each engine starts with the first
/// probe it takes, so a session of kernel probes never stops or attaches to the target (but for
/// one on a library not loaded yet: the tracer attaches to watch the loader for it).
pub struct Session {
    target: Target,
    options: SessionOptions,
    tx: SyncSender<EngineEvent>,
    tracer: Mutex<Option<Tracer>>,
    kernel: Mutex<Option<Kernel>>,
    /// Why the kernel engine could not start, said once; `auto` probes then use ptrace.
    kernel_unavailable: Mutex<Option<String>>,
    /// Where each engine has probes: one address is never probed by both (a uprobe takes the
    /// trap before ptrace sees it, so a breakpoint there would never fire). Shared with the
    /// tracer, which arms pending probes (and hands kernel ones over) on its own.
    placed: Arc<Mutex<Placed>>,
    /// The kernel engine's channel, once it runs, for the tracer to hand it pending probes.
    kernel_link: Arc<Mutex<Option<KernelLink>>>,
    pub events: Receiver<EngineEvent>,
    pub tallies: Tallies,
    /// Number of code addresses each probe covers.
    pub site_counts: Vec<usize>,
    /// The engine each of the session's first probes runs on, in their order.
    pub engines: Vec<EngineUsed>,
    /// Breakpoint areas left by an earlier periscope that was killed, removed on attach.
    pub recovered: usize,
}

/// The code addresses each engine probes in this session.
#[derive(Default)]
pub(crate) struct Placed {
    /// Kernel probes: their spec (to move one to ptrace) and addresses.
    pub(crate) kernel: Vec<(ProbeSpec, Vec<u64>)>,
    /// Addresses with a breakpoint (kept after removal: conservative, never wrong; those of
    /// an unloaded library are dropped, its code being gone).
    pub(crate) ptrace: std::collections::HashSet<u64>,
}

/// What the tracer shares with the session for the probes it arms later, when a library is
/// loaded: where each engine probes, and the kernel engine to hand probes to.
#[derive(Clone)]
pub(crate) struct Handoff {
    pub(crate) placed: Arc<Mutex<Placed>>,
    pub(crate) kernel: Arc<Mutex<Option<KernelLink>>>,
}

/// The ptrace tracer thread and how to reach it.
struct Tracer {
    wake: Arc<EventFd>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<Summary>>,
}

/// Where a resolved probe goes.
enum Route {
    Kernel(ResolvedProbe, Vec<PlanData>),
    Ptrace(ResolvedProbe, EngineUsed),
}

impl Session {
    /// Resolves the probes, attaches to `pid` and installs every breakpoint. Returns once the
    /// probes are live, or with the first error (the target untouched).
    pub fn start(
        pid: u32,
        specs: Vec<ProbeSpec>,
        options: SessionOptions,
    ) -> Result<Session, NativeError> {
        let target = Target::attach_view(pid)?;
        let mut probes = Vec::new();
        for spec in specs {
            probes.push(resolve_or_pending(&target, spec)?);
        }
        Self::start_resolved(target, probes, options)
    }

    pub fn start_resolved(
        target: Target,
        probes: Vec<ResolvedProbe>,
        options: SessionOptions,
    ) -> Result<Session, NativeError> {
        target.pid.ok_or(NativeError::NoSuchProcess { pid: 0 })?;
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let mut session = Session {
            target,
            options,
            tx,
            tracer: Mutex::new(None),
            kernel: Mutex::new(None),
            kernel_unavailable: Mutex::new(None),
            placed: Arc::default(),
            kernel_link: Arc::default(),
            events: rx,
            tallies: Arc::new(Mutex::new(Vec::new())),
            site_counts: Vec::new(),
            engines: Vec::new(),
            recovered: 0,
        };
        let mut ptrace = Vec::new();
        let mut kernel = Vec::new();
        for p in probes {
            match session.route(p)? {
                Route::Ptrace(p, why) => {
                    session.site_counts.push(p.sites.len());
                    session.engines.push(why.clone());
                    ptrace.push((p, why));
                }
                Route::Kernel(p, plans) => {
                    session.site_counts.push(p.sites.len());
                    session.engines.push(EngineUsed::Bpf);
                    kernel.push((session.engines.len() - 1, p, plans));
                }
            }
        }
        // The tracer attaches when a probe or the signal watch needs it; a session given no
        // probe at all (and not kept for later ones) attaches as it always did.
        if !ptrace.is_empty()
            || session.options.watch_signals.is_some()
            || kernel.is_empty() && !session.options.keep_alive
        {
            session
                .placed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ptrace
                .extend(
                    ptrace
                        .iter()
                        .flat_map(|(p, _)| p.sites.iter().map(|s| s.address)),
                );
            session.recovered = session.start_tracer(ptrace)?;
        }
        for (at, p, plans) in kernel {
            let (_, used) = session.kernel_add_or_ptrace(p, plans)?;
            session.engines[at] = used;
        }
        Ok(session)
    }

    /// Chooses the engine for a probe: the kernel when asked (or by `auto`) and everything it
    /// reads compiles to a capture plan and BPF is available here; ptrace otherwise, with why.
    fn route(&self, mut probe: ResolvedProbe) -> Result<Route, NativeError> {
        let choice = probe.spec.engine;
        let needs_kernel = kernel::needs_kernel(&probe.spec);
        if let Some(pending) = probe.pending.clone() {
            // A pending probe waits on the ptrace engine, which watches the loader with a
            // breakpoint at `r_brk` and arms it when its library is mapped (`engine/loader.rs`).
            // The kernel could watch the loader too (a uprobe on `_dl_debug_state` telling user
            // space), but arming is then a second path: re-indexing, resolving, and forgetting
            // sites at `dlclose` would all be done twice, and the uprobe cannot hold the
            // thread until the new library is known. So one that must run in the kernel (a
            // duration, or `--engine bpf`) waits there too, and the tracer hands its sites to
            // the kernel engine when it resolves (`engine/handoff.rs`). An `auto` one stays
            // on ptrace: it is armed as the library is, with no second engine to start.
            if choice == EngineChoice::Bpf || needs_kernel {
                let why = if needs_kernel {
                    "a duration"
                } else {
                    "--engine bpf"
                };
                if needs_kernel
                    && !matches!(probe.spec.location, periscope_core::Location::Function(_))
                {
                    return Err(NativeError::Kernel(format!(
                        "a duration times calls of a function: give a function name (`LIB.so:FUNC` or FUNC), not {}",
                        probe.spec.location
                    )));
                }
                if let Some(unavailable) = self.ensure_kernel() {
                    return Err(NativeError::Kernel(format!(
                        "probe {} is {pending}, and it runs only in the kernel ({why}), which is not available here: {unavailable}",
                        probe.spec.id
                    )));
                }
                probe.pending = Some(format!(
                    "{pending}; it runs in the kernel ({why}), and the ptrace engine attaches only to watch the loader for its library"
                ));
                return Ok(Route::Ptrace(probe, EngineUsed::Bpf));
            }
            return Ok(Route::Ptrace(
                probe,
                EngineUsed::PtraceBecause(
                    "pending: the ptrace engine watches the loader for its library".into(),
                ),
            ));
        }
        if choice == EngineChoice::Ptrace {
            if needs_kernel {
                return Err(NativeError::Kernel(
                    "durations run only in the kernel (a uprobe and a uretprobe); drop --engine ptrace".into(),
                ));
            }
            return Ok(Route::Ptrace(probe, EngineUsed::Ptrace));
        }
        let must = choice == EngineChoice::Bpf || needs_kernel;
        let plans = match kernel::plans_for(&self.target, &mut probe) {
            Ok(plans) => plans,
            Err(why) if must => {
                return Err(NativeError::Kernel(format!(
                    "probe {} cannot run in the kernel: {why}",
                    probe.spec.id
                )))
            }
            Err(why) => return Ok(Route::Ptrace(probe, EngineUsed::PtraceBecause(why))),
        };
        let shared = {
            let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
            probe
                .sites
                .iter()
                .find(|s| placed.ptrace.contains(&s.address))
                .map(|s| s.address)
        };
        if let Some(addr) = shared {
            let why = format!("a breakpoint of this session is at {addr:#x}, and a uprobe there would take its traps");
            if must {
                return Err(NativeError::Kernel(format!(
                    "probe {} cannot run in the kernel: {why}",
                    probe.spec.id
                )));
            }
            return Ok(Route::Ptrace(probe, EngineUsed::PtraceBecause(why)));
        }
        if let Some(why) = self.ensure_kernel() {
            if must {
                return Err(NativeError::Kernel(why));
            }
            return Ok(Route::Ptrace(probe, EngineUsed::PtraceBecause(why)));
        }
        Ok(Route::Kernel(probe, plans))
    }

    /// Before a breakpoint goes where kernel probes are: those `auto` chose for the kernel move
    /// to ptrace (their hits so far stay in their old tally); one the user put in the kernel
    /// explicitly, or a duration, refuses the breakpoint.
    fn make_room_for_breakpoints(&self, probe: &ResolvedProbe) -> Result<(), NativeError> {
        let addrs: Vec<u64> = probe.sites.iter().map(|s| s.address).collect();
        let moving: Vec<ProbeSpec> = {
            let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
            let mut moving = Vec::new();
            for (spec, at) in &placed.kernel {
                if !at.iter().any(|a| addrs.contains(a)) {
                    continue;
                }
                if spec.engine != EngineChoice::Auto || kernel::needs_kernel(spec) {
                    return Err(NativeError::Kernel(format!(
                        "probe {} runs in the kernel at the same code address, and a breakpoint there would never see a hit; remove it first, or give probe {} --engine bpf",
                        spec.id, probe.spec.id
                    )));
                }
                moving.push(spec.clone());
            }
            moving
        };
        for spec in moving {
            let kernel = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
            let active = kernel.as_ref().is_some_and(|k| k.remove(&spec.id));
            drop(kernel);
            self.placed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .kernel
                .retain(|(s, _)| s.id != spec.id);
            if !active {
                continue; // it had ended (its hit limit): nothing to move
            }
            let moved = resolve(&self.target, spec)?;
            let why = format!(
                "moved from the kernel: probe {} needs a breakpoint at the same address",
                probe.spec.id
            );
            self.tracer_add(moved, EngineUsed::PtraceBecause(why))?;
        }
        Ok(())
    }

    /// Gives the tracer a probe, starting it (attaching) if it is not running.
    fn tracer_add(&self, p: ResolvedProbe, why: EngineUsed) -> Result<usize, NativeError> {
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ptrace
            .extend(p.sites.iter().map(|s| s.address));
        if !self.tracer_running() {
            let sites = p.sites.len();
            self.start_tracer(vec![(p, why)])?;
            return Ok(sites);
        }
        let (reply, answer) = mpsc::channel();
        self.request(Command::Add(Box::new(p), why, reply));
        answer.recv().unwrap_or(Err(NativeError::TargetExited))
    }

    /// Starts the kernel engine if it is not running; why not, when it cannot.
    fn ensure_kernel(&self) -> Option<String> {
        let mut k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        if k.is_some() {
            return None;
        }
        let mut unavailable = self
            .kernel_unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(why) = unavailable.as_ref() {
            return Some(why.clone());
        }
        match Kernel::start(
            self.target.clone(),
            self.tx.clone(),
            self.tallies.clone(),
            self.options.stop_on_signals,
            self.options.keep_alive,
        ) {
            Ok(kernel) => {
                *self.kernel_link.lock().unwrap_or_else(|p| p.into_inner()) = Some(kernel.link());
                *k = Some(kernel);
                None
            }
            Err(why) => {
                *unavailable = Some(why.clone());
                Some(why)
            }
        }
    }

    /// Puts in a probe `route` chose for the kernel. One `auto` chose that the kernel then
    /// refuses (an attach it rejects, no room left) goes to ptrace, saying why: `auto` never
    /// ends in a refusal the other engine would not make. The engine it runs on.
    fn kernel_add_or_ptrace(
        &self,
        probe: ResolvedProbe,
        plans: Vec<PlanData>,
    ) -> Result<(usize, EngineUsed), NativeError> {
        let spec = probe.spec.clone();
        match self.kernel_add(probe, plans) {
            Ok(n) => Ok((n, EngineUsed::Bpf)),
            Err(NativeError::Kernel(why))
                if spec.engine == EngineChoice::Auto && !kernel::needs_kernel(&spec) =>
            {
                self.placed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .kernel
                    .retain(|(s, _)| s.id != spec.id);
                let p = resolve(&self.target, spec)?;
                let used = EngineUsed::PtraceBecause(format!("the kernel refused it: {why}"));
                self.make_room_for_breakpoints(&p)?;
                let n = self.tracer_add(p, used.clone())?;
                Ok((n, used))
            }
            Err(e) => Err(e),
        }
    }

    fn kernel_add(&self, probe: ResolvedProbe, plans: Vec<PlanData>) -> Result<usize, NativeError> {
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kernel
            .push((
                probe.spec.clone(),
                probe.sites.iter().map(|s| s.address).collect(),
            ));
        let k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        match k.as_ref() {
            Some(k) => k.add(probe, plans),
            None => Err(NativeError::Kernel(
                "the kernel engine is not running".into(),
            )),
        }
    }

    /// Starts the tracer thread with `probes`: attaches to every thread, installs their
    /// breakpoints. Returns how many leftovers of a killed periscope it removed.
    fn start_tracer(&self, probes: Vec<(ResolvedProbe, EngineUsed)>) -> Result<usize, NativeError> {
        let pid = self
            .target
            .pid
            .ok_or(NativeError::NoSuchProcess { pid: 0 })?;
        let wake = engine::new_eventfd().map_err(|e| NativeError::Io {
            what: "create an eventfd".into(),
            source: e,
        })?;
        let (commands, command_rx) = mpsc::channel();
        let tally_at = {
            let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
            probes
                .iter()
                .map(|(p, engine)| {
                    t.push(Tally {
                        probe: p.spec.id.clone(),
                        engine: engine.clone(),
                        state: p
                            .pending
                            .clone()
                            .map_or(ProbeState::Active, ProbeState::Pending),
                        ..Tally::default()
                    });
                    t.len() - 1
                })
                .collect::<Vec<_>>()
        };
        let probes: Vec<ResolvedProbe> = probes.into_iter().map(|(p, _)| p).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (target, tx, tallies, options) = (
            self.target.clone(),
            self.tx.clone(),
            self.tallies.clone(),
            self.options.clone(),
        );
        let handoff = Handoff {
            placed: self.placed.clone(),
            kernel: self.kernel_link.clone(),
        };
        let wake2 = wake.clone();
        let thread = std::thread::Builder::new()
            .name("periscope-tracer".into())
            .spawn(move || {
                let heartbeat = watchdog::Heartbeat::new();
                let mut engine = Engine::new(
                    pid,
                    target,
                    probes,
                    tx,
                    tallies,
                    tally_at,
                    wake2,
                    command_rx,
                    &options,
                    heartbeat.clone(),
                    handoff,
                );
                let _watchdog = watchdog::spawn(pid, heartbeat, engine.originals());
                match engine.setup() {
                    Ok(()) => {
                        let _ = ready_tx.send(Ok(engine.recovered()));
                    }
                    Err(e) => {
                        engine.teardown();
                        let _ = ready_tx.send(Err(e));
                        return engine.summary();
                    }
                }
                let reason = engine.run();
                engine.teardown();
                engine.emit(EngineEvent::Ended(reason));
                engine.summary()
            })
            .map_err(|e| NativeError::Io {
                what: "start the tracer thread".into(),
                source: e,
            })?;
        let tracer = |thread| Tracer {
            wake,
            commands,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(recovered)) => {
                *self.tracer.lock().unwrap_or_else(|p| p.into_inner()) = Some(tracer(thread));
                Ok(recovered)
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(NativeError::Io {
                    what: "start the tracer thread".into(),
                    source: std::io::Error::other("the tracer thread ended during setup"),
                })
            }
        }
    }

    /// Adds a probe to the running session. Returns the number of code addresses it covers,
    /// or why it cannot go in (the location or an expression does not resolve here).
    pub fn add_probe(&self, spec: ProbeSpec) -> Result<usize, NativeError> {
        let probe = resolve_or_pending(&self.target, spec)?;
        match self.route(probe)? {
            Route::Kernel(p, plans) => self.kernel_add_or_ptrace(p, plans).map(|(n, _)| n),
            Route::Ptrace(p, why) => {
                self.make_room_for_breakpoints(&p)?;
                self.tracer_add(p, why)
            }
        }
    }

    fn tracer_running(&self) -> bool {
        self.tracer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Removes a probe (every one with this id); its breakpoints or uprobes come out, the
    /// others stay. False when no active probe has the id or the session has ended.
    pub fn remove_probe(&self, id: &str) -> bool {
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kernel
            .retain(|(s, _)| s.id != id);
        let in_kernel = self
            .kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|k| k.remove(id));
        if !self.tracer_running() {
            return in_kernel;
        }
        let (reply, answer) = mpsc::channel();
        self.request(Command::Remove(id.to_string(), reply));
        answer.recv().unwrap_or(false) || in_kernel
    }

    /// Starts (or, with None, stops) capturing fatal signals in the running session; the
    /// tracer attaches for it if no ptrace probe had it attach yet.
    pub fn watch_signals(&self, watch: Option<WatchSignals>) {
        if watch.is_some() && !self.tracer_running() && self.start_tracer(Vec::new()).is_err() {
            return;
        }
        self.request(Command::WatchSignals(watch));
    }

    /// Takes the event receiver (to read it on another thread); the session's own is then
    /// one that never yields.
    pub fn take_events(&mut self) -> Receiver<EngineEvent> {
        let (_, empty) = mpsc::sync_channel(0);
        std::mem::replace(&mut self.events, empty)
    }

    /// Whether an engine of the session has ended (the target exited, or a fatal error).
    pub fn is_finished(&self) -> bool {
        let tracer = self.tracer.lock().unwrap_or_else(|p| p.into_inner());
        let kernel = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        tracer
            .as_ref()
            .is_some_and(|t| t.thread.as_ref().is_none_or(|t| t.is_finished()))
            || kernel.as_ref().is_some_and(|k| k.is_finished())
    }

    fn request(&self, command: Command) {
        let tracer = self.tracer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tracer.as_ref() {
            if t.commands.send(command).is_ok() {
                let _ = t.wake.write(1);
            }
        }
    }

    /// Asks the session to end: removes every breakpoint and uprobe, detaches, and returns
    /// the summary.
    pub fn stop(mut self) -> Summary {
        self.finish()
    }

    fn finish(&mut self) -> Summary {
        if let Some(mut k) = self.kernel.lock().unwrap_or_else(|p| p.into_inner()).take() {
            k.stop();
        }
        self.request(Command::Stop);
        let tracer = self.tracer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut summary = match tracer.and_then(|mut t| t.thread.take()) {
            Some(t) => t.join().unwrap_or_default(),
            None => Summary::default(),
        };
        summary.sites = self.site_counts.clone();
        summary
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.finish();
    }
}
