//! The probe model every runtime takes and every surface uses: what a probe does at a hit, its
//! limits, its state in a session, the tallies a session keeps, and the events and end reasons
//! it reports.

pub use periscope_core::compile::Action;
use periscope_core::compile::CompiledProbe;
use periscope_core::event::Body;
use periscope_core::expr::Expr;
use periscope_core::redact::Redactor;
use periscope_core::Location;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// Where it runs (`--engine`).
    pub engine: EngineChoice,
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

/// A compiled probe request as the engine runs it.
#[derive(Debug, Clone)]
pub enum EngineProbe {
    /// A breakpoint probe.
    Breakpoint(ProbeSpec),
    /// Panics (a breakpoint on `rust_panic`, absent from C and C++ programs) and fatal signals
    /// (the session's signal watch), under one probe id.
    Failures {
        panic: ProbeSpec,
        signals: WatchSignals,
    },
}

impl EngineProbe {
    /// The engine's form of a request compiled by [`periscope_core::compile::compile`].
    pub fn new(id: &str, c: CompiledProbe, limits: Limits, redactor: Redactor) -> EngineProbe {
        if let Action::Failures { frames } = c.action {
            let mut panic = ProbeSpec::new(
                id,
                Location::Function("rust_panic".into()),
                Action::Failures { frames },
            );
            panic.limits = limits;
            panic.redactor = redactor.clone();
            let signals = WatchSignals {
                probe: id.to_string(),
                frames,
                library_frames: false,
                limits,
                redactor,
            };
            return EngineProbe::Failures { panic, signals };
        }
        // `compile` gives every kind but failures a location.
        let location = c
            .location
            .unwrap_or_else(|| Location::Function(String::new()));
        EngineProbe::Breakpoint(ProbeSpec {
            id: id.to_string(),
            location,
            action: c.action,
            condition: c.condition,
            max_hits: c.max_hits,
            limits,
            redactor,
            rate_limit: c.rate_limit,
            engine: c.engine,
            budget: c.budget_ms.map(|ms| Budget {
                limit: std::time::Duration::from_millis(ms),
                window: BUDGET_WINDOW,
            }),
        })
    }
}

/// The window an overhead budget is measured over.
pub const BUDGET_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

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
            engine: EngineChoice::Auto,
            budget: None,
        }
    }
}

impl ProbeSpec {
    /// Every expression the probe evaluates at its location: all of them, except in replay
    /// mode, where the failure and the kept results are read at UNTIL instead
    /// ([`ProbeSpec::outcome_expressions`]).
    pub fn expressions(&self) -> Vec<&Expr> {
        let mut v: Vec<&Expr> = self.condition.iter().collect();
        match &self.action {
            Action::Log(t) => v.extend(t.holes().map(|(_, e)| e)),
            Action::Count { by } | Action::Duration { by } => v.extend(by.iter()),
            Action::Gauge { value, by } => v.extend(std::iter::once(value).chain(by.iter())),
            Action::Snapshot { watches, .. } => v.extend(watches.iter().map(|(_, e)| e)),
            Action::Failures { .. } => {}
            Action::Verify { fixes, replay, .. } => {
                if replay.is_none() {
                    v.extend(self.outcome_expressions());
                }
                // Assigned targets are the program's names too (`t.fee`), checked like reads.
                for f in fixes {
                    for (target, value) in &f.assigns {
                        v.push(target);
                        v.push(value);
                    }
                }
            }
        }
        v
    }

    /// A verify probe's failure and kept results: what decides a hit's cell.
    pub fn outcome_expressions(&self) -> Vec<&Expr> {
        match &self.action {
            Action::Verify { failure, keep, .. } => std::iter::once(failure)
                .chain(keep.iter().map(|(_, e)| e))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Replay mode's FROM and UNTIL, for a verify probe that has them.
    pub fn replay(&self) -> Option<&periscope_core::verify::Replay> {
        match &self.action {
            Action::Verify { replay, .. } => replay.as_ref(),
            _ => None,
        }
    }
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

/// What a session reports: events (the fleet's one typed [`Body`]) and changes of state.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A log line, snapshot, failure or probe error.
    Event(Body),
    /// A probe stopped taking hits: its breakpoints are out, the others go on. With
    /// [`ProbeState::Pending`], the library it was in was unloaded: it arms again
    /// ([`EngineEvent::ProbeArmed`]) when a library that has its location is loaded.
    ProbeStopped {
        probe: String,
        state: ProbeState,
    },
    /// A pending probe was placed: a library that has its location was loaded. `message`
    /// says where (the library, the address).
    ProbeArmed {
        probe: String,
        sites: usize,
        message: String,
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
    /// Its condition failed on [`MAX_CONSECUTIVE_ERRORS`] hits in a row; the message says why.
    Failed(String),
    /// Removed by [`crate::Attachment::remove_probe`].
    Removed,
    /// Not placed yet: its location is in no object the process has loaded. It is placed when
    /// the process loads a library that has it (`dlopen`), and is pending again after that
    /// library is unloaded. The message says so, for the user.
    Pending(String),
}

/// A probe whose condition cannot be evaluated on this many hits in a row is stopped: it
/// would only ever print the same error (a condition that works on some hits goes on).
pub const MAX_CONSECUTIVE_ERRORS: u32 = 20;

/// Per-probe tallies, readable while the session runs (`count` prints from them).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// The probe's id.
    pub probe: String,
    /// Hits captured: an event made (or, for counters, counted). This is what a hit limit
    /// counts; hits dropped by the rate limit, filtered out by the condition or failed with an
    /// error are not in it.
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
    /// Group key → figures since the surface last took them, for durations (nanoseconds) and
    /// gauges (the value).
    pub metrics: HashMap<Option<String>, Metric>,
    /// Which engine runs the probe, and why not the kernel when it could have.
    pub engine: EngineUsed,
}

/// The engine a probe runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EngineUsed {
    /// Breakpoints and ptrace; the reason the kernel path was not used, when it was asked
    /// for by `auto`.
    #[default]
    Ptrace,
    PtraceBecause(String),
    /// eBPF uprobes.
    Bpf,
}

impl EngineUsed {
    pub fn name(&self) -> &'static str {
        match self {
            EngineUsed::Bpf => "bpf",
            _ => "ptrace",
        }
    }

    /// `bpf`, `ptrace`, or `ptrace (why not bpf)`.
    pub fn describe(&self) -> String {
        match self {
            EngineUsed::PtraceBecause(why) => format!("ptrace ({why})"),
            other => other.name().to_string(),
        }
    }
}

/// Which engine to run a probe on (`--engine`): the API's own type.
pub use periscope_core::api::Engine as EngineChoice;

/// Figures of a numeric series over an interval: a duration's calls (nanoseconds) or a
/// gauge's samples. The API's own type: the surfaces report them as they are.
pub type Metric = periscope_core::event::Figures;

pub type Tallies = Arc<Mutex<Vec<Tally>>>;

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub dropped_events: u64,
    /// Scratch areas left by a killed periscope that this session removed.
    pub recovered: usize,
    pub sites: Vec<usize>,
    /// What teardown could not remove within its time (the next attach removes it).
    pub left_behind: Vec<String>,
}

impl Summary {
    /// What was left in the target, in a sentence, when teardown could not remove everything.
    pub fn left_behind_note(&self) -> Option<String> {
        (!self.left_behind.is_empty()).then(|| {
            format!(
                "left in the process until the next periscope attaches (which removes it): {}",
                self.left_behind.join(", ")
            )
        })
    }
}

#[derive(Clone)]
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
    /// Also read the variables of frames outside the program's own code (libc's, std's):
    /// off by default, those frames get their function and location only.
    pub library_frames: bool,
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

/// Capture limits, with the defaults users know from other live debuggers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Levels of structs, enums' payloads and collections shown below a variable. Pointers,
    /// references and smart pointers (`&T`, `Box`, `Rc`, `Arc`, `unique_ptr`, `shared_ptr`, Go's
    /// `*T`) are not levels of their own: what they point at is shown at the pointer's depth.
    pub depth: u32,
    pub items: usize,
    pub string_bytes: usize,
    pub fields: usize,
    /// Total bytes read from the target for one capture.
    pub total_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // An order with its customer (and her address) and line items (with a price
            // newtype) is visible whole: order → items → item → price → cents.
            depth: 4,
            items: 100,
            string_bytes: 255,
            fields: 20,
            total_bytes: 64 * 1024,
        }
    }
}
