//! A probing session on one process: resolve probes, attach, keep breakpoints, turn hits into
//! events, and leave the process exactly as it was.
//!
//! The session runs on one dedicated OS thread (the tracer; see [`crate::process`]). It sleeps in
//! `poll` on a signalfd (SIGCHLD: a traced thread changed state; SIGINT/SIGTERM when asked to
//! handle them) and an eventfd (a stop request from [`Session::stop`]), so it wakes exactly when
//! there is work. This needs SIGCHLD blocked in every thread of the program: call
//! [`block_signals`] first thing in `main`, before any thread exists.

use crate::error::NativeError;
use crate::eval::Evaluator;
use crate::failsafe;
use crate::frame::{cfa_rule, CfaRule, Frame};
use crate::index::types::{Type, TypeKind};
use crate::process::{self, Memory, Stop};
use crate::target::{Site, Target};
use crate::trap::{self, Breakpoint, Displaced, SLOT_SIZE};
use crate::values::{Limits, Reader};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use periscope_core::event::{
    now_rfc3339, Failure, LogEvent, ProbeError, SnapshotEvent, StackFrame,
};
use periscope_core::expr::Expr;
use periscope_core::redact::Redactor;
use periscope_core::template::{Segment, Template};
use periscope_core::value::Fields;
use periscope_core::Location;
use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

const PTRACE_EVENT_FORK: i32 = 1;
const PTRACE_EVENT_VFORK: i32 = 2;
const PTRACE_EVENT_CLONE: i32 = 3;
const PTRACE_EVENT_EXEC: i32 = 4;
const PTRACE_EVENT_STOP: i32 = 128;
const SIGTRAP: i32 = libc::SIGTRAP;

/// What a probe does at each hit.
#[derive(Debug, Clone)]
pub enum Action {
    Log(Template),
    /// Count hits, optionally grouped by the value of an expression.
    Count {
        by: Option<Expr>,
    },
    /// Capture the stack, with arguments and locals of the top `frames` frames, and the value
    /// of each watch expression.
    Snapshot {
        frames: usize,
        watches: Vec<(String, Expr)>,
    },
    /// At a panic (placed on `rust_panic`, before unwinding starts): capture the stack with the
    /// variables of the top `frames` frames of the program's own code.
    Panic {
        frames: usize,
    },
}

#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub id: String,
    pub location: Location,
    pub action: Action,
    pub condition: Option<Expr>,
    pub max_hits: Option<u64>,
    pub limits: Limits,
    /// Names whose values are never read (built-in secrets plus `--redact` patterns).
    pub redactor: Redactor,
    /// Hits per second that are captured; hits beyond it are counted in
    /// [`Tally::rate_dropped`], not captured. `None`: no limit.
    pub rate_limit: Option<f64>,
    /// How much of the target's time the probe may take; beyond it the probe is paused.
    pub budget: Option<Budget>,
}

/// An overhead budget: at most `limit` of time spent handling the probe's hits (the target
/// thread is held all that time) in any `window`.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit: std::time::Duration,
    pub window: std::time::Duration,
}

impl ProbeSpec {
    /// A probe with no condition and no limits beyond the default capture limits.
    pub fn new(id: impl Into<String>, location: Location, action: Action) -> ProbeSpec {
        ProbeSpec {
            id: id.into(),
            location,
            action,
            condition: None,
            max_hits: None,
            limits: Limits::default(),
            redactor: Redactor::default(),
            rate_limit: None,
            budget: None,
        }
    }
}

impl ProbeSpec {
    /// Every expression the probe evaluates, with its text.
    fn expressions(&self) -> Vec<&Expr> {
        let mut v: Vec<&Expr> = self.condition.iter().collect();
        match &self.action {
            Action::Log(t) => v.extend(t.holes().map(|(_, e)| e)),
            Action::Count { by } => v.extend(by.iter()),
            Action::Snapshot { watches, .. } => v.extend(watches.iter().map(|(_, e)| e)),
            Action::Panic { .. } => {}
        }
        v
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// `stop()` was called.
    Requested,
    /// SIGINT, SIGTERM or SIGHUP reached periscope.
    Signal(String),
    /// Every probe reached its hit limit.
    HitLimit,
    TargetExited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The target replaced its program image; the probes no longer apply.
    TargetExec,
    Error(String),
}

#[derive(Debug, Clone)]
pub enum EngineEvent {
    Log(LogEvent),
    Snapshot(Box<SnapshotEvent>),
    ProbeError(ProbeError),
    /// A probe stopped taking hits: its breakpoints are out, the others go on.
    ProbeStopped {
        probe: String,
        state: ProbeState,
    },
    Ended(EndReason),
}

/// Where a probe is in its life inside a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProbeState {
    #[default]
    Active,
    /// It reached its hit limit.
    HitLimit,
    /// Its handling took more than its overhead budget; the reason says how much.
    Paused(String),
    /// Removed by [`Session::remove_probe`].
    Removed,
}

/// Per-probe tallies, readable while the session runs (`count` prints from them).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// The probe's id.
    pub probe: String,
    pub hits: u64,
    /// Hits whose condition was false.
    pub filtered: u64,
    pub errors: u64,
    /// Hits beyond the rate limit: counted, not captured.
    pub rate_dropped: u64,
    /// Time the target's threads were held handling this probe's hits.
    pub busy: std::time::Duration,
    pub state: ProbeState,
    /// (thread, group key) → hits, for counters.
    pub counts: HashMap<(i32, Option<String>), u64>,
}

pub type Tallies = Arc<Mutex<Vec<Tally>>>;

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub dropped_events: u64,
    /// Scratch areas left by a killed periscope that this session removed.
    pub recovered: usize,
    pub sites: Vec<usize>,
}

/// A resolved probe: where it goes and what it evaluates there.
pub struct ResolvedProbe {
    pub spec: ProbeSpec,
    pub sites: Vec<Site>,
}

/// Resolves a probe's location and checks its expressions against each site's scope: sites where
/// some name is not visible are dropped (a closure written on the same line as the code around
/// it), and it is an error only when no site can evaluate them all.
pub fn resolve(target: &Target, spec: ProbeSpec) -> Result<ResolvedProbe, NativeError> {
    let sites = target.resolve(&spec.location)?;
    let names: Vec<(String, periscope_core::expr::Span)> =
        spec.expressions().iter().flat_map(|e| e.names()).collect();
    let in_scope = |site: &Site, name: &str| {
        site.visible.vars.iter().any(|v| v.name == name)
            || target.objects[site.object]
                .index
                .find_global(name, &site.function)
                .is_some()
    };
    let (good, bad): (Vec<Site>, Vec<Site>) = sites
        .into_iter()
        .partition(|s| names.iter().all(|(n, _)| in_scope(s, n)));
    if good.is_empty() {
        let site = &bad[0];
        let mut missing: Vec<&str> = Vec::new();
        for (n, _) in &names {
            if !in_scope(site, n) && !missing.contains(&n.as_str()) {
                missing.push(n);
            }
        }
        let mut visible: Vec<&str> = site.visible.vars.iter().map(|v| v.name.as_str()).collect();
        visible.sort_unstable();
        visible.dedup();
        return Err(NativeError::Expression(format!(
            "`{}` is not in scope at {}:{} (in {}); names in scope there: {}",
            missing.join("`, `"),
            site.file.display(),
            site.line,
            site.function,
            if visible.is_empty() {
                "none".to_string()
            } else {
                visible.join(", ")
            }
        )));
    }
    // Field paths are checked against the types now, so a typo is an error before attaching
    // rather than an `unavailable` on every hit.
    for e in spec.expressions() {
        if let Err(msg) = static_type(target, &good[0], e) {
            return Err(NativeError::Expression(msg));
        }
    }
    Ok(ResolvedProbe { spec, sites: good })
}

/// The type an expression has at a site, as far as field paths go: `Ok(None)` where it is not
/// known statically (calls, arithmetic, indexing), an error naming the missing field otherwise.
fn static_type(target: &Target, site: &Site, e: &Expr) -> Result<Option<Arc<Type>>, String> {
    use periscope_core::expr::ExprKind;
    let index = &target.objects[site.object].index;
    let deref_all = |mut t: Arc<Type>| {
        for _ in 0..4 {
            match t.kind {
                TypeKind::Pointer { target: Some(p) } => t = index.type_at(p.unit, p.offset),
                _ => break,
            }
        }
        t
    };
    match &e.kind {
        ExprKind::Name(n) => Ok(site
            .visible
            .vars
            .iter()
            .find(|v| &v.name == n)
            .and_then(|v| v.ty)
            .map(|t| index.type_at(t.unit, t.offset))),
        ExprKind::Field(base, field) | ExprKind::Arrow(base, field) => {
            let Some(bt) = static_type(target, site, base)? else {
                return Ok(None);
            };
            let bt = deref_all(bt);
            let TypeKind::Struct {
                members, variants, ..
            } = &bt.kind
            else {
                return Ok(None);
            };
            if variants.is_some() {
                return Ok(None); // enums: variant fields are not reached by `.`
            }
            let tuple = format!("__{field}");
            match members.iter().find(|m| &m.name == field || m.name == tuple) {
                Some(m) => Ok(m.ty.map(|t| index.type_at(t.unit, t.offset))),
                None => {
                    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                    Err(format!(
                        "`{base}` ({}) has no field `{field}` (in `{e}`); its fields: {}",
                        bt.name,
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                }
            }
        }
        ExprKind::Deref(inner) => {
            Ok(
                static_type(target, site, inner)?.and_then(|t| match t.kind {
                    TypeKind::Pointer { target: Some(p) } => Some(index.type_at(p.unit, p.offset)),
                    _ => None,
                }),
            )
        }
        ExprKind::Binary(_, a, b) => {
            static_type(target, site, a)?;
            static_type(target, site, b)?;
            Ok(None)
        }
        ExprKind::Not(a) | ExprKind::Neg(a) | ExprKind::Cast(a, _) | ExprKind::AddrOf(a) => {
            static_type(target, site, a)?;
            Ok(None)
        }
        ExprKind::Method(a, _, args) => {
            static_type(target, site, a)?;
            for x in args {
                static_type(target, site, x)?;
            }
            Ok(None)
        }
        ExprKind::Index(a, i) => {
            static_type(target, site, a)?;
            static_type(target, site, i)?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

pub struct SessionOptions {
    /// End the session on SIGINT/SIGTERM/SIGHUP (the CLI's Ctrl-C).
    pub stop_on_signals: bool,
    /// Events buffered between the session thread and the consumer; beyond it they are dropped
    /// and counted, so a slow consumer never slows the target.
    pub queue: usize,
    /// Capture a snapshot when a thread is about to die of a fatal signal.
    pub watch_signals: Option<WatchSignals>,
    /// Keep running when every probe has ended (an agent adds more later); otherwise the
    /// session ends when the last probe reaches its hit limit.
    pub keep_alive: bool,
}

/// How `periscope watch --signals` captures: frames with variables, limits, redaction.
#[derive(Debug, Clone)]
pub struct WatchSignals {
    /// The probe id the captures carry.
    pub probe: String,
    pub frames: usize,
    pub limits: Limits,
    pub redactor: Redactor,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            stop_on_signals: true,
            queue: 4096,
            watch_signals: None,
            keep_alive: false,
        }
    }
}

/// A request to the tracer thread. Sent on a channel; the thread is woken through its eventfd.
enum Command {
    Add(Box<ProbeSpec>, mpsc::Sender<Result<usize, NativeError>>),
    Remove(String, mpsc::Sender<bool>),
    WatchSignals(Option<WatchSignals>),
    Stop,
}

/// A running session. Dropping it without `stop()` also ends it cleanly.
pub struct Session {
    wake: Arc<EventFd>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<Summary>>,
    pub events: Receiver<EngineEvent>,
    pub tallies: Tallies,
    /// Number of code addresses each probe covers.
    pub site_counts: Vec<usize>,
    /// Breakpoint areas left by an earlier periscope that was killed, removed on attach.
    pub recovered: usize,
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
            probes.push(resolve(&target, spec)?);
        }
        Self::start_resolved(target, probes, options)
    }

    pub fn start_resolved(
        target: Target,
        probes: Vec<ResolvedProbe>,
        options: SessionOptions,
    ) -> Result<Session, NativeError> {
        let pid = target.pid.ok_or(NativeError::NoSuchProcess { pid: 0 })?;
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| NativeError::Io {
                    what: "create an eventfd".into(),
                    source: e.into(),
                })?,
        );
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let (commands, command_rx) = mpsc::channel();
        let tallies: Tallies = Arc::new(Mutex::new(
            probes
                .iter()
                .map(|p| Tally {
                    probe: p.spec.id.clone(),
                    ..Tally::default()
                })
                .collect(),
        ));
        let site_counts = probes.iter().map(|p| p.sites.len()).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let t2 = tallies.clone();
        let wake2 = wake.clone();
        let thread = std::thread::Builder::new()
            .name("periscope-tracer".into())
            .spawn(move || {
                let registration = child_wakers::register(wake2.clone());
                let mut engine = Engine::new(pid, target, probes, tx, t2, wake2, command_rx);
                engine.stop_on_signals = options.stop_on_signals;
                engine.keep_alive = options.keep_alive;
                engine.watch_signals = options.watch_signals;
                match engine.setup() {
                    Ok(()) => {
                        let _ = ready_tx.send(Ok(engine.recovered));
                    }
                    Err(e) => {
                        engine.teardown();
                        let _ = ready_tx.send(Err(e));
                        return engine.summary();
                    }
                }
                let reason = engine.run();
                engine.teardown();
                drop(registration);
                engine.emit(EngineEvent::Ended(reason));
                engine.summary()
            })
            .map_err(|e| NativeError::Io {
                what: "start the tracer thread".into(),
                source: e,
            })?;
        match ready_rx.recv() {
            Ok(Ok(recovered)) => Ok(Session {
                recovered,
                wake,
                commands,
                thread: Some(thread),
                events: rx,
                tallies,
                site_counts,
            }),
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
        let (reply, answer) = mpsc::channel();
        self.request(Command::Add(Box::new(spec), reply));
        answer.recv().unwrap_or(Err(NativeError::TargetExited))
    }

    /// Removes a probe (every one with this id); its breakpoints come out, the others stay.
    /// False when no active probe has the id or the session has ended.
    pub fn remove_probe(&self, id: &str) -> bool {
        let (reply, answer) = mpsc::channel();
        self.request(Command::Remove(id.to_string(), reply));
        answer.recv().unwrap_or(false)
    }

    /// Starts (or, with None, stops) capturing fatal signals in the running session.
    pub fn watch_signals(&self, watch: Option<WatchSignals>) {
        self.request(Command::WatchSignals(watch));
    }

    /// Takes the event receiver (to read it on another thread); the session's own is then
    /// one that never yields.
    pub fn take_events(&mut self) -> Receiver<EngineEvent> {
        let (_, empty) = mpsc::sync_channel(0);
        std::mem::replace(&mut self.events, empty)
    }

    /// Whether the tracer thread has ended (the target exited, or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn request(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.wake.write(1);
        }
    }

    /// Asks the session to end: removes every breakpoint, detaches, and returns the summary.
    pub fn stop(mut self) -> Summary {
        self.finish()
    }

    fn finish(&mut self) -> Summary {
        self.request(Command::Stop);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_default(),
            None => Summary::default(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.finish();
    }
}

/// SIGCHLD is sent to the whole process, and one signalfd read consumes it; with several
/// sessions in one process (an agent watching many targets) only one tracer would wake. So one
/// thread reads SIGCHLD and wakes every session's eventfd; each session then reaps its own
/// tracees (`wait` uses `__WNOTHREAD`).
mod child_wakers {
    use nix::sys::eventfd::EventFd;
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::sync::{Arc, Mutex, OnceLock};

    type Registry = Mutex<Vec<(u64, Arc<EventFd>)>>;

    fn registry() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGCHLD);
            if let Ok(sfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC) {
                let _ = std::thread::Builder::new()
                    .name("periscope-sigchld".into())
                    .spawn(move || loop {
                        match sfd.read_signal() {
                            Ok(_) => wake_all(),
                            Err(nix::errno::Errno::EINTR) => {}
                            Err(_) => return,
                        }
                    });
            }
            Mutex::new(Vec::new())
        })
    }

    fn wake_all() {
        let list = registry().lock().unwrap_or_else(|p| p.into_inner());
        for (_, fd) in list.iter() {
            let _ = fd.write(1);
        }
    }

    /// Keeps `fd` woken at every SIGCHLD until dropped.
    pub struct Registration(u64);

    pub fn register(fd: Arc<EventFd>) -> Registration {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, fd));
        Registration(id)
    }

    impl Drop for Registration {
        fn drop(&mut self) {
            registry()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(id, _)| *id != self.0);
        }
    }
}

/// Per-thread memory of the last hit, so one execution of a line that maps to several
/// addresses in the same scope reports once.
#[derive(Clone, Copy)]
struct LastHit {
    site_addr: u64,
    cfa: u64,
    scope: gimli::UnitOffset,
    reported: bool,
}

struct SiteRuntime {
    probe: usize,
    site: usize,
    cfa: Option<CfaRule>,
}

/// Where a fork child of the target is in its release (see `Engine::on_fork_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildState {
    /// Its fork event came first: code restored, waiting for its first stop to detach.
    Announced,
    /// Its first stop came first: restored and detached; the fork event is still to come.
    Released,
}

struct ScratchArea {
    base: u64,
    size: u64,
    next: u64,
}

struct Engine {
    pid: u32,
    target: Target,
    probes: Vec<ResolvedProbe>,
    done: Vec<bool>,
    tx: SyncSender<EngineEvent>,
    tallies: Tallies,
    /// Woken at every SIGCHLD and every command.
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    stop_on_signals: bool,
    keep_alive: bool,
    mem: Memory,
    threads: HashSet<i32>,
    breakpoints: HashMap<u64, Breakpoint>,
    /// Breakpoints removed while the session runs. A thread may have hit one just before
    /// (its SIGTRAP still to be reported): it is rewound to the original instruction.
    retired: HashMap<u64, Breakpoint>,
    /// Per probe: (start of the current second, hits captured in it), for rate limits.
    rate: HashMap<usize, (Instant, u64)>,
    /// Per probe: (start of the current budget window, time used in it).
    budget_used: HashMap<usize, (Instant, std::time::Duration)>,
    /// Breakpoint address → the probe sites there.
    site_map: HashMap<u64, Vec<SiteRuntime>>,
    scratch: HashMap<usize, ScratchArea>,
    last_hit: HashMap<(i32, usize), LastHit>,
    /// Signals that arrived while a thread was held for our own work, to deliver on resume.
    pending_signals: HashMap<i32, i32>,
    dropped: u64,
    last_error_report: HashMap<usize, Instant>,
    leader_status: Option<(Option<i32>, Option<i32>)>,
    /// `None`: not set up yet; `Some(None)`: the program owns SIGTRAP, no fail-safe;
    /// `Some(Some(base))`: the fail-safe handler and its table live in the area at `base`.
    failsafe: Option<Option<u64>>,
    /// Leftover scratch areas of a killed periscope removed at attach.
    recovered: usize,
    fork_children: HashMap<i32, ChildState>,
    watch_signals: Option<WatchSignals>,
    /// Keeps the tracer on the CPU where the target's hits happen (see `follow_hits`).
    affinity: AffinityFollower,
    /// Threads whose fatal signal was already captured (a re-raised signal is not captured twice).
    captured_failure: HashSet<i32>,
}

impl Engine {
    fn new(
        pid: u32,
        target: Target,
        probes: Vec<ResolvedProbe>,
        tx: SyncSender<EngineEvent>,
        tallies: Tallies,
        wake: Arc<EventFd>,
        commands: Receiver<Command>,
    ) -> Engine {
        let n = probes.len();
        Engine {
            pid,
            target,
            probes,
            done: vec![false; n],
            tx,
            tallies,
            wake,
            commands,
            stop_on_signals: true,
            keep_alive: false,
            mem: Memory::new(pid),
            threads: HashSet::new(),
            breakpoints: HashMap::new(),
            retired: HashMap::new(),
            rate: HashMap::new(),
            budget_used: HashMap::new(),
            site_map: HashMap::new(),
            scratch: HashMap::new(),
            last_hit: HashMap::new(),
            pending_signals: HashMap::new(),
            dropped: 0,
            last_error_report: HashMap::new(),
            leader_status: None,
            failsafe: None,
            recovered: 0,
            fork_children: HashMap::new(),
            watch_signals: None,
            affinity: AffinityFollower::new(),
            captured_failure: HashSet::new(),
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            dropped_events: self.dropped,
            recovered: self.recovered,
            sites: self.probes.iter().map(|p| p.sites.len()).collect(),
        }
    }

    fn emit(&mut self, e: EngineEvent) {
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    // ---- attaching and installing -------------------------------------------------------

    fn setup(&mut self) -> Result<(), NativeError> {
        self.attach_all()?;
        self.mem.open_for_writing()?;
        self.install()
    }

    /// Seizes every thread, looping until /proc/PID/task shows none that is new (threads can
    /// be created while we attach; once a thread is seized, its future clones are traced).
    fn attach_all(&mut self) -> Result<(), NativeError> {
        loop {
            let tids = process::threads(self.pid);
            if tids.is_empty() && self.threads.is_empty() {
                return Err(NativeError::NoSuchProcess { pid: self.pid });
            }
            let mut new = false;
            for tid in tids {
                if self.threads.contains(&tid) {
                    continue;
                }
                match process::seize(tid) {
                    Ok(()) => {
                        self.threads.insert(tid);
                        new = true;
                    }
                    Err(nix::errno::Errno::ESRCH) => {} // exited meanwhile
                    Err(e) if self.threads.is_empty() => {
                        return Err(process::explain_attach_error(self.pid, e))
                    }
                    Err(e) => return Err(NativeError::ptrace("SEIZE", tid, e)),
                }
            }
            if !new {
                return Ok(());
            }
        }
    }

    fn install(&mut self) -> Result<(), NativeError> {
        // Leftovers are removed and every scratch area the initial probes need is mapped in one
        // stop of the leader: a thread is held once, however many objects are probed.
        let objects: HashSet<usize> = self
            .probes
            .iter()
            .flat_map(|p| p.sites.iter().map(|s| s.object))
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
            self.arm(pi)?;
        }
        Ok(())
    }

    /// Puts in the breakpoints of probe `pi` (several probes may share one breakpoint).
    fn arm(&mut self, pi: usize) -> Result<(), NativeError> {
        let missing: HashSet<usize> = self.probes[pi]
            .sites
            .iter()
            .map(|s| s.object)
            .filter(|o| !self.scratch.contains_key(o))
            .collect();
        if !missing.is_empty() {
            self.with_stopped_leader(|engine, tid| {
                for &o in &missing {
                    engine.allocate_scratch(tid, o)?;
                }
                Ok(())
            })?;
        }
        for si in 0..self.probes[pi].sites.len() {
            let site = &self.probes[pi].sites[si];
            let (addr, object, file_pc) = (site.address, site.object, site.file_address);
            let cfa = cfa_rule(&self.target.objects[object].index, file_pc);
            self.site_map.entry(addr).or_default().push(SiteRuntime {
                probe: pi,
                site: si,
                cfa,
            });
            if self.breakpoints.contains_key(&addr) {
                continue;
            }
            if let Some(bp) = self.retired.remove(&addr) {
                // Its out-of-line slot is still in place: reuse it.
                self.mem.write(addr, &[0xcc])?;
                self.breakpoints.insert(addr, bp);
                continue;
            }
            let mut code = [0u8; 16];
            self.mem
                .read(addr, &mut code)
                .map_err(|e| NativeError::Breakpoint {
                    address: addr,
                    reason: e.to_string(),
                })?;
            let area = self
                .scratch
                .get_mut(&object)
                .ok_or(NativeError::Breakpoint {
                    address: addr,
                    reason: "no scratch page".into(),
                })?;
            if area.next + SLOT_SIZE > area.base + area.size {
                return Err(NativeError::Breakpoint {
                    address: addr,
                    reason: "too many probe sites in one object".into(),
                });
            }
            let slot = area.next;
            let (bp, slot_code) = trap::plan(addr, &code, slot)?;
            if let Some(c) = slot_code {
                self.mem.write(slot, &c)?;
                if let Some(a) = self.scratch.get_mut(&object) {
                    a.next += SLOT_SIZE;
                }
            }
            self.register_failsafe(addr, bp.original[0])?;
            self.mem.write(addr, &[0xcc])?;
            self.breakpoints.insert(addr, bp);
        }
        Ok(())
    }

    /// Takes out the breakpoints of probe `pi` that no other probe uses. Threads keep running:
    /// one byte is written back, and a thread that trapped on it meanwhile is rewound when its
    /// stop is reported (see `on_trap`).
    fn disarm(&mut self, pi: usize) {
        let addrs: Vec<u64> = self.probes[pi].sites.iter().map(|s| s.address).collect();
        for addr in addrs {
            let Some(list) = self.site_map.get_mut(&addr) else {
                continue;
            };
            list.retain(|s| s.probe != pi);
            if !list.is_empty() {
                continue;
            }
            self.site_map.remove(&addr);
            if let Some(bp) = self.breakpoints.remove(&addr) {
                let _ = self.mem.write(addr, &bp.original[..1]);
                self.retired.insert(addr, bp);
            }
        }
        self.last_hit.retain(|(_, p), _| *p != pi);
    }

    /// Ends probe `pi`: breakpoints out, state recorded, consumers told.
    fn end_probe(&mut self, pi: usize, state: ProbeState) {
        if self.done[pi] && state != ProbeState::Removed {
            return;
        }
        self.done[pi] = true;
        self.disarm(pi);
        let probe = self.probes[pi].spec.id.clone();
        let s2 = state.clone();
        self.tally(pi, |t| t.state = s2);
        self.emit(EngineEvent::ProbeStopped { probe, state });
    }

    fn add_probe(&mut self, spec: ProbeSpec) -> Result<usize, NativeError> {
        let resolved = resolve(&self.target, spec)?;
        let sites = resolved.sites.len();
        let pi = self.probes.len();
        let id = resolved.spec.id.clone();
        self.probes.push(resolved);
        self.done.push(false);
        self.tallies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Tally {
                probe: id,
                ..Tally::default()
            });
        if let Err(e) = self.arm(pi) {
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
            self.end_probe(pi, ProbeState::Removed);
        }
        !found.is_empty()
    }

    /// Carries out queued commands; returns true when asked to stop.
    fn run_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Add(spec, reply) => {
                    let _ = reply.send(self.add_probe(*spec));
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

    /// Adds a breakpoint to the fail-safe table before its int3 is written (entry, then count:
    /// the handler never sees a half-written entry).
    fn register_failsafe(&mut self, addr: u64, original: u8) -> Result<(), NativeError> {
        let Some(Some(base)) = self.failsafe else {
            return Ok(());
        };
        let count = self
            .mem
            .read_u64(base + failsafe::COUNT_OFFSET)
            .unwrap_or(0);
        if count >= failsafe::MAX_ENTRIES {
            return Err(NativeError::Breakpoint {
                address: addr,
                reason: format!(
                    "more than {} breakpoints in one process",
                    failsafe::MAX_ENTRIES
                ),
            });
        }
        let entry = base + failsafe::ENTRIES_OFFSET + count * 16;
        self.mem.write(entry, &addr.to_le_bytes())?;
        self.mem
            .write(entry + 8, &u64::from(original).to_le_bytes())?;
        self.mem
            .write(base + failsafe::COUNT_OFFSET, &(count + 1).to_le_bytes())
    }

    /// Interrupts the thread-group leader (or any live thread), runs `f` while it is stopped,
    /// then resumes it as it was.
    fn with_stopped_leader<T>(
        &mut self,
        f: impl FnOnce(&mut Engine, i32) -> Result<T, NativeError>,
    ) -> Result<T, NativeError> {
        let tid = if self.threads.contains(&(self.pid as i32)) {
            self.pid as i32
        } else {
            *self
                .threads
                .iter()
                .next()
                .ok_or(NativeError::TargetExited)?
        };
        process::interrupt(tid).map_err(|e| NativeError::ptrace("INTERRUPT", tid, e))?;
        let resume_sig = loop {
            match process::wait(tid, false).map_err(|e| NativeError::ptrace("WAIT", tid, e))? {
                Some(Stop::Event {
                    event: PTRACE_EVENT_STOP,
                    ..
                }) => break 0,
                // Any other ptrace-stop that comes first satisfies the interrupt (ptrace(2)): no
                // PTRACE_EVENT_STOP follows it, so after resuming from one we interrupt again.
                Some(Stop::Signal {
                    signal: SIGTRAP, ..
                }) if !self.breakpoints.is_empty() || !self.retired.is_empty() => {
                    // A breakpoint hit came first: handle it, then stop the thread again.
                    self.on_trap(tid);
                    let _ = process::interrupt(tid);
                }
                Some(Stop::Signal { signal, .. }) => {
                    // A signal arrived first: we hold it, and deliver it when we resume.
                    break signal;
                }
                Some(Stop::Event { event, signal, .. }) => {
                    // Inside clone/fork/exec: no syscall may be injected there (its result
                    // would land on top of ours). Record what it created, let it finish the
                    // call, and stop it again.
                    if let Some(reason) = self.on_event(tid, event, signal) {
                        return Err(NativeError::Io {
                            what: "stop the target".into(),
                            source: std::io::Error::other(format!("{reason:?}")),
                        });
                    }
                    let _ = process::interrupt(tid);
                }
                Some(Stop::Exited { .. }) | Some(Stop::Killed { .. }) => {
                    self.threads.remove(&tid);
                    return Err(NativeError::TargetExited);
                }
                None => {}
            }
        };
        let result = f(self, tid);
        let sig = self.pending_signals.remove(&tid).unwrap_or(resume_sig);
        let _ = process::cont(tid, sig);
        result
    }

    /// Runs one system call in a stopped thread and restores it. The `syscall` instruction
    /// used is one already in the target's code (libc has many), so no code is written.
    fn inject_syscall(&mut self, tid: i32, nr: i64, args: [u64; 6]) -> Result<i64, NativeError> {
        let insn = self.find_syscall_instruction()?;
        let saved = process::getregs(tid)?;
        let mut regs = saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX; // not in a syscall: no restart logic on resume
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = insn;
        process::setregs(tid, regs)?;
        let result = loop {
            process::step(tid, 0).map_err(|e| NativeError::ptrace("SINGLESTEP", tid, e))?;
            match process::wait(tid, false).map_err(|e| NativeError::ptrace("WAIT", tid, e))? {
                Some(Stop::Signal {
                    signal: SIGTRAP, ..
                }) => break process::getregs(tid)?.rax as i64,
                Some(Stop::Signal { signal, .. }) => {
                    self.pending_signals.insert(tid, signal);
                }
                Some(Stop::Exited { .. }) | Some(Stop::Killed { .. }) => {
                    self.threads.remove(&tid);
                    return Err(NativeError::TargetExited);
                }
                _ => {}
            }
        };
        process::setregs(tid, saved)?;
        Ok(result)
    }

    fn find_syscall_instruction(&self) -> Result<u64, NativeError> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).map_err(|e| {
            NativeError::Io {
                what: "read maps".into(),
                source: e,
            }
        })?;
        for line in maps.lines() {
            let mut parts = line.split_whitespace();
            let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
                continue;
            };
            if !perms.contains('x') || line.contains("[vsyscall]") {
                continue;
            }
            let Some((lo, hi)) = range.split_once('-') else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
            else {
                continue;
            };
            let mut addr = lo;
            while addr + 1 < hi {
                let len = (hi - addr).min(1 << 16) as usize;
                let mut buf = vec![0u8; len];
                if self.mem.read(addr, &mut buf).is_err() {
                    break;
                }
                if let Some(i) = buf.windows(2).position(|w| w == [0x0f, 0x05]) {
                    let a = addr + i as u64;
                    // Not inside one of our own breakpoints' bytes.
                    if !self.breakpoints.contains_key(&a) {
                        return Ok(a);
                    }
                }
                addr += len as u64 - 1;
            }
        }
        Err(NativeError::Breakpoint {
            address: 0,
            reason: "no syscall instruction found in the target's code".into(),
        })
    }

    /// Maps a scratch area within ±2 GiB of an object, so relocated RIP-relative operands reach.
    fn allocate_scratch(&mut self, tid: i32, object: usize) -> Result<(), NativeError> {
        const SIZE: u64 = 64 * 1024;
        let lo = self.target.objects[object]
            .ranges
            .iter()
            .map(|r| r.0)
            .min()
            .unwrap_or(0);
        let prot = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let mut candidates: Vec<u64> = (1..64u64)
            .filter_map(|k| lo.checked_sub(k * 0x10_0000))
            .collect();
        candidates.push(0);
        for hint in candidates {
            let fixed = if hint == 0 {
                0
            } else {
                libc::MAP_FIXED_NOREPLACE as u64
            };
            let r = self.inject_syscall(
                tid,
                libc::SYS_mmap,
                [hint, SIZE, prot, flags | fixed, u64::MAX, 0],
            )?;
            if r < 0 && r > -4096 {
                continue;
            }
            let base = r as u64;
            self.mem.write(base, failsafe::MAGIC)?;
            self.scratch.insert(
                object,
                ScratchArea {
                    base,
                    size: SIZE,
                    next: base + failsafe::SLOTS_OFFSET,
                },
            );
            if self.failsafe.is_none() {
                self.install_failsafe(tid, base)?;
            }
            return Ok(());
        }
        Err(NativeError::Breakpoint {
            address: lo,
            reason: "could not map a scratch page in the target".into(),
        })
    }

    /// Points SIGTRAP at the fail-safe handler in the area at `base` (see [`failsafe`]), unless
    /// the program has a SIGTRAP disposition of its own, which we leave alone.
    fn install_failsafe(&mut self, tid: i32, base: u64) -> Result<(), NativeError> {
        let (code, restorer) =
            failsafe::handler_code(base).map_err(|e| NativeError::Breakpoint {
                address: base,
                reason: format!("cannot assemble the fail-safe handler: {e}"),
            })?;
        self.mem.write(base + failsafe::HANDLER_OFFSET, &code)?;
        let action = failsafe::handler_action(base, restorer);
        let old = self.sigaction(tid, libc::SIGTRAP, Some(&action))?;
        if old.handler != 0 {
            // The program handles or ignores SIGTRAP itself: put its action back.
            self.sigaction(tid, libc::SIGTRAP, Some(&old))?;
            self.failsafe = Some(None);
        } else {
            self.failsafe = Some(Some(base));
        }
        Ok(())
    }

    /// rt_sigaction(2) in the target, with the structs on the stopped thread's stack, below the
    /// red zone (memory the program does not use while the thread is stopped). Returns the old
    /// action.
    fn sigaction(
        &mut self,
        tid: i32,
        sig: i32,
        new: Option<&failsafe::KernelSigaction>,
    ) -> Result<failsafe::KernelSigaction, NativeError> {
        let sp = process::getregs(tid)?.rsp;
        let new_at = (sp - 1024) & !0xf;
        let old_at = new_at - 64;
        if let Some(n) = new {
            self.mem.write(new_at, &n.to_bytes())?;
        }
        let r = self.inject_syscall(
            tid,
            libc::SYS_rt_sigaction,
            [
                sig as u64,
                if new.is_some() { new_at } else { 0 },
                old_at,
                8,
                0,
                0,
            ],
        )?;
        if r < 0 {
            return Err(NativeError::Breakpoint {
                address: 0,
                reason: format!("rt_sigaction in the target failed: errno {}", -r),
            });
        }
        let mut b = [0u8; 32];
        self.mem
            .read(old_at, &mut b)
            .map_err(|e| NativeError::Breakpoint {
                address: old_at,
                reason: e.to_string(),
            })?;
        failsafe::KernelSigaction::from_bytes(&b).ok_or(NativeError::Breakpoint {
            address: old_at,
            reason: "short sigaction".into(),
        })
    }

    /// Removes what an earlier periscope left behind when it was killed: restores the bytes its
    /// table lists, gives SIGTRAP back its default action, and unmaps its scratch areas.
    fn recover_leftovers(&mut self, tid: i32) -> Result<usize, NativeError> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap_or_default();
        let mut found = 0;
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 5 || !f[1].starts_with("r-x") {
                continue; // only anonymous executable mappings
            }
            let Some((lo, hi)) = f[0].split_once('-') else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
            else {
                continue;
            };
            let mut magic = [0u8; 16];
            if self.mem.read(lo, &mut magic).is_err() || &magic != failsafe::MAGIC {
                continue;
            }
            let count = self
                .mem
                .read_u64(lo + failsafe::COUNT_OFFSET)
                .unwrap_or(0)
                .min(failsafe::MAX_ENTRIES);
            for i in 0..count {
                let e = lo + failsafe::ENTRIES_OFFSET + i * 16;
                let (Ok(addr), Ok(orig)) = (self.mem.read_u64(e), self.mem.read_u64(e + 8)) else {
                    continue;
                };
                let mut cur = [0u8; 1];
                if self.mem.read(addr, &mut cur).is_ok() && cur[0] == 0xcc {
                    self.mem.write(addr, &[orig as u8])?;
                }
            }
            let current = self.sigaction(tid, libc::SIGTRAP, None)?;
            if current.handler >= lo && current.handler < hi {
                let dfl = failsafe::KernelSigaction {
                    handler: 0,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                self.sigaction(tid, libc::SIGTRAP, Some(&dfl))?;
            }
            self.inject_syscall(tid, libc::SYS_munmap, [lo, hi - lo, 0, 0, 0, 0])?;
            found += 1;
        }
        Ok(found)
    }

    // ---- the event loop -------------------------------------------------------------------

    fn run(&mut self) -> EndReason {
        let mut mask = SigSet::empty();
        if self.stop_on_signals {
            mask.add(Signal::SIGINT);
            mask.add(Signal::SIGTERM);
            mask.add(Signal::SIGHUP);
        }
        let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        {
            Ok(s) => s,
            Err(e) => return EndReason::Error(format!("signalfd: {e}")),
        };
        loop {
            // Reset the wake-up counter first: a SIGCHLD from here on wakes the poll below.
            let _ = self.wake.read();
            // Drain everything the kernel has for us before sleeping again.
            let mut handled = 0u32;
            loop {
                match process::wait(-1, true) {
                    Ok(Some(stop)) => {
                        if let Some(reason) = self.handle(stop) {
                            return reason;
                        }
                        handled += 1;
                        // A busy target can keep this loop going: take commands in between.
                        if handled.is_multiple_of(64) && self.run_commands() {
                            return EndReason::Requested;
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
            if !self.keep_alive && self.done.iter().all(|d| *d) && !self.done.is_empty() {
                return EndReason::HitLimit;
            }
            let mut fds = [
                nix::poll::PollFd::new(self.wake.as_fd(), nix::poll::PollFlags::POLLIN),
                nix::poll::PollFd::new(sfd.as_fd(), nix::poll::PollFlags::POLLIN),
            ];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return EndReason::Error(format!("poll: {e}")),
            }
            if let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                let name = Signal::try_from(signo)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| signo.to_string());
                return EndReason::Signal(name);
            }
        }
    }

    /// Handles one stop; returns a reason when the session must end.
    fn handle(&mut self, stop: Stop) -> Option<EndReason> {
        let tid = stop.tid();
        match stop {
            Stop::Exited { code, .. } => {
                self.threads.remove(&tid);
                if tid == self.pid as i32 {
                    self.leader_status = Some((Some(code), None));
                }
                self.check_exit()
            }
            Stop::Killed { signal, .. } => {
                self.threads.remove(&tid);
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
                if let Some(orig) = self.original_for_slot(regs.rip) {
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

    /// Captures the stack of a thread about to receive a fatal signal. Only faults raised by the
    /// CPU (si_code > 0) and SIGABRT are captured, once per thread: a handler that re-raises
    /// the signal (Rust's stack-overflow handler does) is not a second failure.
    fn capture_signal(&mut self, tid: i32, signal: i32) {
        let Some(watch) = self.watch_signals.clone() else {
            return;
        };
        let Ok(info) = nix::sys::ptrace::getsiginfo(process::pid(tid)) else {
            return;
        };
        if (signal != libc::SIGABRT && info.si_code <= 0) || !self.captured_failure.insert(tid) {
            return;
        }
        let Ok(regs) = process::getregs(tid) else {
            return;
        };
        let address = (signal != libc::SIGABRT).then(|| {
            // SAFETY: for SIGSEGV/SIGBUS/SIGFPE/SIGILL the kernel fills the si_addr union member.
            format!("{:#x}", unsafe { info.si_addr() } as usize)
        });
        let name = Signal::try_from(signal)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| signal.to_string());
        let cfa = self
            .target
            .object_at(regs.rip)
            .and_then(|(_, o)| cfa_rule(&o.index, regs.rip.wrapping_sub(o.bias)))
            .and_then(|r| r.eval(&regs));
        let main = &self.target.main_object().index;
        let reader =
            Reader::new(main, &self.mem, watch.limits, &watch.redactor).with_target(&self.target);
        let frames = capture_stack(
            &self.target,
            &self.mem,
            &regs,
            tid,
            cfa,
            &reader,
            StackWanted {
                with_vars: watch.frames,
                skip_runtime: false,
            },
        );
        let location = frames
            .first()
            .map(|f| match (&f.file, f.line) {
                (Some(file), Some(line)) => {
                    format!("{}:{line}", file.rsplit('/').next().unwrap_or(file))
                }
                _ => f.function.clone(),
            })
            .unwrap_or_default();
        let event = SnapshotEvent {
            ts: now_rfc3339(),
            pid: self.pid,
            tid: tid as u32,
            location,
            probe: watch.probe.clone(),
            frames,
            watches: Fields::default(),
            failure: Some(Failure {
                kind: "signal".into(),
                message: None,
                signal: Some(name),
                address,
            }),
        };
        self.emit(EngineEvent::Snapshot(Box::new(event)));
    }

    fn original_for_slot(&self, rip: u64) -> Option<u64> {
        let all = self.breakpoints.values().chain(self.retired.values());
        all.into_iter().find_map(|bp| match bp.displaced {
            Displaced::OutOfLine { slot } if rip == slot => Some(bp.address),
            _ => None,
        })
    }

    fn on_event(&mut self, tid: i32, event: i32, signal: i32) -> Option<EndReason> {
        match event {
            PTRACE_EVENT_CLONE => {
                if let Ok(new) = process::get_event_msg(tid) {
                    self.threads.insert(new as i32);
                }
                let _ = process::cont(tid, 0);
            }
            PTRACE_EVENT_FORK => {
                // The child is a copy of the target, breakpoints included, but nobody will
                // handle its traps: restore its code and let it go.
                if let Ok(child) = process::get_event_msg(tid) {
                    self.on_fork_event(child as i32);
                }
                let _ = process::cont(tid, 0);
            }
            PTRACE_EVENT_VFORK => {
                // A vfork child shares our memory until it execs: trace it like a thread.
                if let Ok(child) = process::get_event_msg(tid) {
                    self.threads.insert(child as i32);
                }
                let _ = process::cont(tid, 0);
            }
            PTRACE_EVENT_EXEC => {
                if self.is_foreign(tid) {
                    // A vfork child replaced its image: nothing of ours is in it any more.
                    self.threads.remove(&tid);
                    let _ = process::detach(tid, 0);
                } else {
                    return Some(EndReason::TargetExec);
                }
            }
            PTRACE_EVENT_STOP => {
                if !self.threads.contains(&tid) {
                    if self.is_foreign(tid) {
                        self.on_child_stop(tid);
                        return None;
                    }
                    self.threads.insert(tid);
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

    fn is_foreign(&self, tid: i32) -> bool {
        process::status_field(tid, "Tgid")
            .and_then(|t| t.parse::<u32>().ok())
            .is_some_and(|t| t != self.pid)
    }

    /// A fork child of the target is a copy of it, breakpoints included, but nobody would
    /// handle its traps: its code gets the original bytes back and it is let go. Its fork event
    /// and its first stop arrive in either order; neither waits for the other.
    fn on_fork_event(&mut self, child: i32) {
        if self.fork_children.remove(&child) != Some(ChildState::Released) {
            self.restore_child_code(child);
            self.fork_children.insert(child, ChildState::Announced);
        }
    }

    fn on_child_stop(&mut self, child: i32) {
        if self.fork_children.remove(&child) != Some(ChildState::Announced) {
            self.restore_child_code(child);
            self.fork_children.insert(child, ChildState::Released);
        }
        let _ = process::detach(child, 0);
    }

    fn restore_child_code(&self, child: i32) {
        if let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{child}/mem"))
        {
            use std::os::unix::fs::FileExt;
            for bp in self.breakpoints.values() {
                let _ = f.write_all_at(&bp.original[..1], bp.address);
            }
        }
    }

    // ---- breakpoint hits --------------------------------------------------------------------

    fn on_trap(&mut self, tid: i32) {
        let Ok(mut regs) = process::getregs(tid) else {
            return;
        };
        let addr = regs.rip.wrapping_sub(1);
        if !self.breakpoints.contains_key(&addr) {
            if self.retired.contains_key(&addr) {
                // It hit a breakpoint removed since: run the original instruction.
                regs.rip = addr;
                let _ = process::setregs(tid, regs);
                let sig = self.pending_signals.remove(&tid).unwrap_or(0);
                let _ = process::cont(tid, sig);
                return;
            }
            // Not ours: the program's own int3 or single-step. Hand it the signal.
            let _ = process::cont(tid, SIGTRAP);
            return;
        }
        let started = Instant::now();
        regs.rip = addr;
        self.affinity.on_hit(tid);
        let hit = self.on_hit(tid, addr, &regs);
        self.resume_past(tid, addr, regs);
        // Charged after the thread is resumed: the time it was held, shared by the probes hit.
        let held = started.elapsed() / hit.len().max(1) as u32;
        for pi in hit {
            self.charge(pi, held);
        }
    }

    /// Adds `held` to probe `pi`'s overhead; pauses the probe when its budget is used up.
    fn charge(&mut self, pi: usize, held: std::time::Duration) {
        self.tally(pi, |t| t.busy += held);
        let Some(budget) = self.probes[pi].spec.budget else {
            return;
        };
        let now = Instant::now();
        let (start, used) = self
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

    /// Resumes a thread stopped at breakpoint `addr` without removing the breakpoint.
    fn resume_past(&mut self, tid: i32, addr: u64, mut regs: process::Regs) {
        let Some(bp) = self.breakpoints.get(&addr) else {
            // Removed while handling this hit (hit limit, budget): the original instruction is
            // back at `addr`, where `regs` already point.
            let _ = process::setregs(tid, regs);
            let sig = self.pending_signals.remove(&tid).unwrap_or(0);
            let _ = process::cont(tid, sig);
            return;
        };
        match &bp.displaced {
            Displaced::OutOfLine { slot } => regs.rip = *slot,
            Displaced::Call(instr) => {
                if let Err(e) = trap::emulate_call(instr, &mut regs, &self.mem) {
                    // Cannot happen for a call that the program itself can execute; if it
                    // does, the least harmful course is to stop probing.
                    self.emit(EngineEvent::Ended(EndReason::Error(e.to_string())));
                }
            }
        }
        let _ = process::setregs(tid, regs);
        let sig = self.pending_signals.remove(&tid).unwrap_or(0);
        let _ = process::cont(tid, sig);
    }

    /// Runs the probes at `addr`; returns those that took the hit.
    fn on_hit(&mut self, tid: i32, addr: u64, regs: &process::Regs) -> Vec<usize> {
        let Some(sites) = self.site_map.get(&addr) else {
            return Vec::new();
        };
        let sites: Vec<(usize, usize, Option<CfaRule>)> =
            sites.iter().map(|s| (s.probe, s.site, s.cfa)).collect();
        let mut hit = Vec::new();
        for (pi, si, cfa_rule) in sites {
            if self.done[pi] {
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

    /// True when this hit continues the execution of a line already reported on this thread:
    /// the line left its run at a lower address in the same frame and scope and came back at a
    /// higher one (a loop head split in two, an overflow check's panic path).
    fn is_repeat(&mut self, tid: i32, pi: usize, si: usize, addr: u64, cfa: Option<u64>) -> bool {
        if self.probes[pi].sites.len() < 2 {
            return false;
        }
        let scope = self.probes[pi].sites[si].visible.scope_id;
        let cfa = cfa.unwrap_or(0);
        let now = LastHit {
            site_addr: addr,
            cfa,
            scope,
            reported: true,
        };
        let prev = self.last_hit.insert((tid, pi), now);
        let repeat = prev.is_some_and(|p| {
            p.reported
                && p.cfa == cfa
                && p.scope == scope
                && p.site_addr != addr
                && addr > p.site_addr
        });
        if repeat {
            if let Some(h) = self.last_hit.get_mut(&(tid, pi)) {
                h.reported = false;
            }
        }
        repeat
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
        let frame = Frame {
            index: &object.index,
            bias: object.bias,
            unit: site.unit,
            mem: &self.mem,
            regs: *regs,
            tid,
            cfa,
            frame_base: site.visible.frame_base.clone(),
            unknown_regs: 0,
            caller: false,
        };
        let reader = Reader::new(
            &object.index,
            &self.mem,
            probe.spec.limits,
            &probe.spec.redactor,
        )
        .with_target(&self.target);
        let ev = Evaluator::new(&frame, &reader, &site.visible.vars, &site.function);
        let location = format!(
            "{}:{}",
            site.file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            site.line
        );
        if let Some(cond) = &probe.spec.condition {
            match ev.condition(cond) {
                Ok(true) => {}
                Ok(false) => {
                    self.tally(pi, |t| t.filtered += 1);
                    return;
                }
                Err(e) => {
                    let msg = format!("condition `{cond}` could not be evaluated: {e}");
                    self.report_error(pi, tid, location, msg);
                    return;
                }
            }
        }
        let max = probe.spec.max_hits;
        // Field-wise borrow: `probe` and the evaluator keep borrowing other fields.
        if !within_rate(&mut self.rate, pi, probe.spec.rate_limit) {
            self.tally(pi, |t| {
                t.hits += 1;
                t.rate_dropped += 1;
            });
            return;
        }
        let mut event = None;
        let mut snapshot = None;
        let mut count_key = None;
        match &probe.spec.action {
            Action::Log(template) => {
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
                event = Some(LogEvent {
                    ts: now_rfc3339(),
                    pid: self.pid,
                    tid: tid as u32,
                    location,
                    probe: probe.spec.id.clone(),
                    function: Some(site.function.clone()),
                    message,
                    values: Fields(values),
                });
            }
            Action::Count { by } => {
                count_key = Some(by.as_ref().map(|e| ev.value(e).to_message_text()));
            }
            Action::Snapshot { frames, watches } => {
                let watches = watches
                    .iter()
                    .map(|(text, e)| (text.clone(), ev.value(e)))
                    .collect();
                let stack = capture_stack(
                    &self.target,
                    &self.mem,
                    regs,
                    tid,
                    cfa,
                    &reader,
                    StackWanted {
                        with_vars: *frames,
                        skip_runtime: false,
                    },
                );
                snapshot = Some(SnapshotEvent {
                    ts: now_rfc3339(),
                    pid: self.pid,
                    tid: tid as u32,
                    location: location.clone(),
                    probe: probe.spec.id.clone(),
                    frames: stack,
                    watches: Fields(watches),
                    failure: None,
                });
            }
            Action::Panic { frames } => {
                let stack = capture_stack(
                    &self.target,
                    &self.mem,
                    regs,
                    tid,
                    cfa,
                    &reader,
                    StackWanted {
                        with_vars: *frames,
                        skip_runtime: true,
                    },
                );
                // The panicking frame: the first one in the program's own code.
                let location = stack
                    .iter()
                    .find(|f| f.file.as_deref().is_some_and(|p| !p.starts_with("/rustc/")))
                    .and_then(|f| {
                        Some(format!(
                            "{}:{}",
                            f.file.as_deref()?.rsplit('/').next()?,
                            f.line?
                        ))
                    })
                    .unwrap_or_else(|| location.clone());
                snapshot = Some(SnapshotEvent {
                    ts: now_rfc3339(),
                    pid: self.pid,
                    tid: tid as u32,
                    location,
                    probe: probe.spec.id.clone(),
                    frames: stack,
                    watches: Fields::default(),
                    failure: Some(Failure {
                        kind: "panic".into(),
                        message: panic_message(&self.target, &self.mem, regs),
                        signal: None,
                        address: None,
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
            reached = max.is_some_and(|m| t.hits >= m);
        });
        if let Some(e) = event {
            self.emit(EngineEvent::Log(e));
        }
        if let Some(s) = snapshot {
            self.emit(EngineEvent::Snapshot(Box::new(s)));
        }
        if reached {
            self.end_probe(pi, ProbeState::HitLimit);
        }
    }

    fn tally(&self, pi: usize, f: impl FnOnce(&mut Tally)) {
        let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = t.get_mut(pi) {
            f(t);
        }
    }

    /// Reports a probe error, at most once a second per probe so a bad condition on a hot line
    /// does not flood the output; the rest are counted.
    fn report_error(&mut self, pi: usize, tid: i32, location: String, error: String) {
        self.tally(pi, |t| t.errors += 1);
        let now = Instant::now();
        if self
            .last_error_report
            .get(&pi)
            .is_some_and(|t| now.duration_since(*t).as_secs() < 1)
        {
            return;
        }
        self.last_error_report.insert(pi, now);
        let e = ProbeError {
            ts: now_rfc3339(),
            pid: self.pid,
            tid: tid as u32,
            location,
            probe: self.probes[pi].spec.id.clone(),
            error,
        };
        self.emit(EngineEvent::ProbeError(e));
    }

    // ---- leaving ------------------------------------------------------------------------------

    /// Removes every breakpoint and detaches from every thread, leaving the process as it was.
    ///
    /// All threads are stopped first, so none can be between a trap and our handling of it:
    /// a thread that trapped on a breakpoint is rewound to the breakpoint's address (which then
    /// holds the original instruction again), and a thread inside a scratch slot is stepped
    /// until it is back in the program's own code. Only then is the scratch area unmapped.
    fn teardown(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        let mut stopped: HashMap<i32, i32> = HashMap::new(); // tid → signal to deliver on detach
        for &tid in &self.threads {
            let _ = process::interrupt(tid);
        }
        while stopped.len() < self.threads.len() {
            let stop = match process::wait(-1, false) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(_) => break,
            };
            let tid = stop.tid();
            match stop {
                Stop::Exited { .. } | Stop::Killed { .. } => {
                    self.threads.remove(&tid);
                    stopped.remove(&tid);
                }
                Stop::Signal {
                    signal: SIGTRAP, ..
                } => {
                    // A breakpoint trap not yet handled: rewind to re-execute the original.
                    if let Ok(mut regs) = process::getregs(tid) {
                        if self.is_ours(regs.rip.wrapping_sub(1)) {
                            regs.rip -= 1;
                            let _ = process::setregs(tid, regs);
                            stopped.insert(tid, 0);
                        } else {
                            stopped.insert(tid, SIGTRAP);
                        }
                    }
                }
                Stop::Signal { signal, .. } => {
                    stopped.insert(tid, signal);
                }
                // A thread stopped at a clone or fork event is inside that system call: no
                // syscall may be injected there (the call's return value would land on top of
                // ours). Let it finish the call and stop it again at a plain interrupt.
                Stop::Event {
                    event: event @ (PTRACE_EVENT_CLONE | PTRACE_EVENT_FORK | PTRACE_EVENT_VFORK),
                    ..
                } => {
                    if let Ok(new) = process::get_event_msg(tid) {
                        let new = new as i32;
                        if event == PTRACE_EVENT_FORK {
                            self.on_fork_event(new);
                        } else {
                            self.threads.insert(new);
                            let _ = process::interrupt(new);
                        }
                    }
                    let _ = process::cont(tid, 0);
                    let _ = process::interrupt(tid);
                }
                Stop::Event { .. } => {
                    if !self.threads.contains(&tid) {
                        if self.is_foreign(tid) {
                            self.on_child_stop(tid);
                            continue;
                        }
                        self.threads.insert(tid);
                    }
                    stopped.insert(tid, 0);
                }
            }
            stopped.retain(|t, _| self.threads.contains(t));
        }
        let tids: Vec<i32> = stopped.keys().copied().collect();
        for tid in tids {
            if stopped.get(&tid) == Some(&0) {
                if let Some(sig) = self.consume_pending_trap(tid) {
                    stopped.insert(tid, sig);
                }
            }
            self.step_out_of_scratch(tid);
        }
        for bp in self.breakpoints.values() {
            let _ = self.mem.write(bp.address, &bp.original[..1]);
        }
        let areas: Vec<(u64, u64)> = self.scratch.values().map(|a| (a.base, a.size)).collect();
        if let Some((&tid, _)) = stopped.iter().next() {
            if matches!(self.failsafe, Some(Some(_))) {
                let dfl = failsafe::KernelSigaction {
                    handler: 0,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                let _ = self.sigaction(tid, libc::SIGTRAP, Some(&dfl));
            }
            for (base, size) in areas {
                let _ = self.inject_syscall(tid, libc::SYS_munmap, [base, size, 0, 0, 0, 0]);
            }
        }
        for (tid, sig) in stopped {
            let sig = self.pending_signals.remove(&tid).unwrap_or(sig);
            let _ = process::detach(tid, sig);
        }
        self.threads.clear();
        self.breakpoints.clear();
    }

    /// A thread can stop for our PTRACE_INTERRUPT just after executing an int3, before its
    /// SIGTRAP is dequeued (job-control traps are reported first). Detaching it then would hand
    /// it a SIGTRAP nobody handles. So: rewind it to the breakpoint and take the signal's
    /// delivery stop now, suppressing it. Returns another signal that stopped it meanwhile, to
    /// deliver on detach.
    fn consume_pending_trap(&mut self, tid: i32) -> Option<i32> {
        let mut regs = process::getregs(tid).ok()?;
        let bp = regs.rip.wrapping_sub(1);
        if !self.is_ours(bp) || !trap_pending(tid) {
            return None;
        }
        regs.rip = bp;
        process::setregs(tid, regs).ok()?;
        let mut other = None;
        for _ in 0..8 {
            process::cont(tid, 0).ok()?;
            match process::wait(tid, false) {
                Ok(Some(Stop::Signal {
                    signal: SIGTRAP, ..
                })) => {
                    // Delivery stop of the breakpoint's SIGTRAP: it is dropped by not passing it.
                    // The thread did not run, so its pc is still the breakpoint.
                    return other.or(Some(0));
                }
                Ok(Some(Stop::Signal { signal, .. })) => other = Some(signal),
                Ok(Some(Stop::Event { .. })) => {}
                _ => return other,
            }
        }
        other
    }

    /// Whether `addr` holds, or held during this session, one of our breakpoints.
    fn is_ours(&self, addr: u64) -> bool {
        self.breakpoints.contains_key(&addr) || self.retired.contains_key(&addr)
    }

    fn in_scratch(&self, rip: u64) -> bool {
        self.scratch
            .values()
            .any(|a| rip >= a.base && rip < a.base + a.size)
    }

    fn step_out_of_scratch(&mut self, tid: i32) {
        for _ in 0..16 {
            let Ok(regs) = process::getregs(tid) else {
                return;
            };
            if !self.in_scratch(regs.rip) {
                return;
            }
            if process::step(tid, 0).is_err() {
                return;
            }
            match process::wait(tid, false) {
                Ok(Some(Stop::Signal {
                    signal: SIGTRAP, ..
                })) => {}
                Ok(Some(Stop::Signal { signal, .. })) => {
                    self.pending_signals.insert(tid, signal);
                }
                _ => return,
            }
        }
    }
}

/// Whether a hit of probe `pi` may be captured now under its rate limit (hits per second);
/// `rate` holds each probe's current one-second window and the hits captured in it.
fn within_rate(rate: &mut HashMap<usize, (Instant, u64)>, pi: usize, limit: Option<f64>) -> bool {
    let Some(limit) = limit else {
        return true;
    };
    let now = Instant::now();
    let (start, n) = rate.entry(pi).or_insert((now, 0));
    if now.duration_since(*start).as_secs_f64() >= 1.0 {
        *start = now;
        *n = 0;
    }
    if (*n as f64) < limit {
        *n += 1;
        true
    } else {
        false
    }
}

/// Whether SIGTRAP is pending for this thread (its private pending set in /proc).
fn trap_pending(tid: i32) -> bool {
    process::status_field(tid, "SigPnd")
        .and_then(|m| u64::from_str_radix(&m, 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGTRAP - 1)) != 0)
}

/// Which frames of a captured stack get their variables read.
#[derive(Clone, Copy)]
struct StackWanted {
    /// How many frames, from the top.
    with_vars: usize,
    /// Rust's own std frames (a panic's machinery) are passed over and do not count.
    skip_runtime: bool,
}

/// Most frames a captured stack lists (with variables only for the top ones asked for).
const MAX_STACK: usize = 64;

/// The call stack at a stopped thread: every frame's function and line, and the arguments and
/// locals of the top `with_vars` frames, read at each frame's own pc with the registers the
/// unwinder recovered (a caller-saved register of a caller frame reads as optimized out).
fn capture_stack(
    target: &Target,
    mem: &Memory,
    regs: &process::Regs,
    tid: i32,
    cfa0: Option<u64>,
    reader: &Reader,
    want: StackWanted,
) -> Vec<StackFrame> {
    let StackWanted {
        with_vars,
        skip_runtime,
    } = want;
    let frames = crate::unwind::unwind(target, mem, regs, MAX_STACK);
    let mut out = Vec::new();
    // Frames whose variables are captured; with `skip_runtime`, Rust's own std frames (a
    // panic's machinery) do not count against `with_vars`.
    let mut vars_left = with_vars;
    for (i, f) in frames.iter().enumerate() {
        let caller = i > 0;
        let lookup = f.pc().wrapping_sub(u64::from(caller));
        let Some((_, obj)) = target.object_at(lookup) else {
            out.push(StackFrame {
                function: format!("{:#x}", f.pc()),
                file: None,
                line: None,
                variables: Fields::default(),
            });
            continue;
        };
        let idx = &obj.index;
        let file_pc = lookup.wrapping_sub(obj.bias);
        let row = idx.row_at(file_pc);
        let function = idx
            .function_at(file_pc)
            .map(|f| f.name.clone())
            .or_else(|| idx.symbol_at(file_pc).map(|(s, _)| s.name.clone()))
            .unwrap_or_else(|| format!("{:#x} in {}", f.pc(), idx.path.display()));
        let file = row
            .and_then(|r| idx.files.get(r.file as usize))
            .map(|p| p.display().to_string());
        let unit = row.map(|r| r.unit).or_else(|| idx.unit_at(file_pc));
        let scopes = unit.and_then(|u| idx.scopes(u).ok());
        // One physical frame is one or more source frames: each inlined call is a frame of its
        // own, as a reader of the source expects (gdb shows them the same way).
        let mut chain = scopes
            .as_ref()
            .map(|s| s.inline_chain(file_pc))
            .unwrap_or_default();
        if chain.is_empty() {
            chain.push(crate::index::scope::InlineLevel {
                name: None,
                vars: Vec::new(),
                call_site: None,
            });
        }
        let frame_base = scopes
            .as_ref()
            .and_then(|s| s.visible_at(file_pc))
            .and_then(|v| v.frame_base);
        for (k, level) in chain.iter().enumerate() {
            let (file, line) = match (&level.call_site, k) {
                (Some((path, line)), _) => (Some(path.display().to_string()), Some(*line)),
                (None, 0) => (file.clone(), row.map(|r| r.line).filter(|l| *l > 0)),
                (None, _) => (None, None),
            };
            let mut variables = Vec::new();
            let runtime = skip_runtime && file.as_deref().is_none_or(|p| p.starts_with("/rustc/"));
            if vars_left > 0 && !runtime {
                vars_left -= 1;
                if let Some(unit) = unit {
                    let frame = Frame {
                        index: idx,
                        bias: obj.bias,
                        unit,
                        mem,
                        regs: f.regs,
                        tid,
                        cfa: if i == 0 { cfa0.or(f.cfa) } else { f.cfa },
                        frame_base: frame_base.clone(),
                        unknown_regs: f.unknown,
                        caller,
                    };
                    variables = frame_variables(&frame, &level.vars, reader);
                }
            }
            out.push(StackFrame {
                function: level.name.clone().unwrap_or_else(|| function.clone()),
                file,
                line,
                variables: Fields(variables),
            });
        }
    }
    out
}

/// A frame's variables rendered: arguments first, then locals, each in declaration order
/// (scopes list theirs innermost-first and last-declared first, for shadowing).
fn frame_variables(
    frame: &Frame,
    vars: &[crate::index::scope::Var],
    reader: &Reader,
) -> Vec<(String, periscope_core::Value)> {
    let idx = frame.index;
    let r = reader.sharing(idx);
    let mut vars: Vec<(usize, &crate::index::scope::Var)> = vars.iter().enumerate().collect();
    vars.sort_by_key(|(i, v)| (!v.is_param, v.decl_line.unwrap_or(0), std::cmp::Reverse(*i)));
    vars.into_iter()
        .map(|(_, v)| {
            let ty = v.ty.map(|t| idx.type_at(t.unit, t.offset));
            let value = if reader.redactor.is_sensitive(&v.name) {
                periscope_core::Value::Redacted {
                    ty: ty.map(|t| t.name.clone()),
                }
            } else {
                match ty {
                    Some(t) => r.render(&frame.var_place(v), &t, r.limits.depth),
                    None => periscope_core::Value::unavailable(None, "no type information"),
                }
            };
            (v.name.clone(), value)
        })
        .collect()
}

/// The message of a panic at `rust_panic(payload: &mut dyn PanicPayload)`'s entry. Rust's std
/// ships without type information, so the payload's concrete type is told by its vtable (whose
/// methods are named in the symbol table):
/// - `StaticStrPayload(&'static str)` (`panic!("literal")`): one `&str`, read exactly.
/// - `FormatStringPayload { inner: &fmt::Arguments, string: Option<String> }`: by the time
///   `rust_panic` runs, the panic hook has made `string` hold the formatted message. The two
///   fields' order and `String`'s three words (capacity, pointer, length) are not described, so
///   every arrangement is decoded and accepted only when exactly one is structurally valid: one
///   readable pointer, a length no larger than the capacity, and valid UTF-8 behind it. No
///   valid arrangement (or two) means no message rather than a guess.
fn panic_message(target: &Target, mem: &Memory, regs: &process::Regs) -> Option<String> {
    let (data, vtable) = (regs.rdi, regs.rsi);
    // Slots 3.. hold the trait methods (after drop, size, align).
    let payload_kind = (3..8).find_map(|slot| {
        let name = target.describe(mem.read_u64(vtable + slot * 8).ok()?);
        if name.contains("StaticStrPayload") {
            Some(true)
        } else if name.contains("FormatStringPayload") {
            Some(false)
        } else {
            None
        }
    })?;
    let read_text = |ptr: u64, len: u64| -> Option<String> {
        if len > 64 * 1024 {
            return None;
        }
        let mut b = vec![0u8; len as usize];
        mem.read(ptr, &mut b).ok()?;
        String::from_utf8(b).ok()
    };
    if payload_kind {
        let ptr = mem.read_u64(data).ok()?;
        let len = mem.read_u64(data + 8).ok()?;
        return read_text(ptr, len);
    }
    let words: Vec<u64> = (0..4)
        .map(|i| mem.read_u64(data + i * 8))
        .collect::<Result<_, _>>()
        .ok()?;
    let readable = |p: u64| p >= 4096 && mem.read_u64(p).is_ok();
    // The `string` field is words 0..3 (then `inner` is word 3) or words 1..4 (`inner` word 0).
    let candidates = [(&words[0..3], words[3]), (&words[1..4], words[0])];
    let mut found = Vec::new();
    for (string, inner) in candidates {
        if !readable(inner) {
            continue;
        }
        let pointers: Vec<usize> = (0..3).filter(|i| readable(string[*i])).collect();
        let [p] = pointers[..] else { continue };
        let others: Vec<u64> = (0..3).filter(|i| *i != p).map(|i| string[i]).collect();
        let (len, cap) = (others[0].min(others[1]), others[0].max(others[1]));
        if cap > 1 << 32 {
            continue;
        }
        if let Some(text) = read_text(string[p], len) {
            found.push(text);
        }
    }
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Moves the tracer thread onto the CPU where the target's breakpoint hits happen.
///
/// Each hit is a stop of a target thread and a wake-up of the tracer; when the two sit on
/// different CPUs, that wake-up is a cross-CPU interrupt and costs several times the rest of the
/// hit (measured here: ~68 µs per hit across CPUs against ~11 µs on one). So every
/// `CHECK_EVERY` hits the tracer looks at which CPU the hitting thread last ran on and moves
/// there, within the CPUs it was allowed to begin with. The target is never moved.
struct AffinityFollower {
    allowed: Option<nix::sched::CpuSet>,
    hits: u32,
    current: Option<usize>,
}

const CHECK_EVERY: u32 = 64;

impl AffinityFollower {
    fn new() -> Self {
        AffinityFollower {
            allowed: nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok(),
            hits: 0,
            current: None,
        }
    }

    fn on_hit(&mut self, tid: i32) {
        self.hits += 1;
        if self.current.is_some() && !self.hits.is_multiple_of(CHECK_EVERY) {
            return;
        }
        let Some(cpu) = last_cpu(tid) else { return };
        if self.current == Some(cpu)
            || !self
                .allowed
                .as_ref()
                .is_some_and(|a| a.is_set(cpu).unwrap_or(false))
        {
            return;
        }
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu).is_ok()
            && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
        {
            self.current = Some(cpu);
        }
    }
}

/// The CPU a thread last ran on: field 39 of /proc/TID/stat.
fn last_cpu(tid: i32) -> Option<usize> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}
