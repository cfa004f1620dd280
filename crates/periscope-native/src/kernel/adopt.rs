//! Kernel probes on libraries loaded later: the ptrace engine watches the loader (it holds the
//! breakpoint at `r_brk`, see `engine/loader.rs`) and, when a pending probe that runs in the
//! kernel resolves against a library just loaded, hands it here with its plans and the index
//! that has the library ([`KernelLink::adopt`]). At `dlclose` it takes the probe's uprobes
//! back out ([`KernelLink::release`]) and the probe is pending again; a reopen hands it here
//! anew. Such a probe keeps the tally row it was given when it was pending, so its counts and
//! figures go on across loads; its lifecycle (pending, removed) is the ptrace engine's, so a
//! removal by id here leaves it alone (see [`Runner::remove`]).

use super::{Command, KProbe, ProbeCounters, Runner};
use crate::probe::{EngineEvent, ProbeState, Tally};
use crate::resolve::ResolvedProbe;
use crate::target::Target;
use nix::sys::eventfd::EventFd;
use periscope_core::event::{Body, ProbeError};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::PlanData;

/// How long the ptrace engine waits for the kernel thread to take a probe's uprobes out (the
/// thread answers between two polls of its ring buffer: milliseconds). The thread that called
/// `dlclose` is held meanwhile, so the wait is bounded well under the watchdog's limit.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// A pending probe resolved in a library just loaded, for the kernel to put in.
pub(crate) struct Adoption {
    /// The ptrace engine's index, which has the new library (this thread's copy does not):
    /// objects are only ever added to it, so the sites of the probes already here keep
    /// their object numbers.
    pub(crate) target: Target,
    pub(crate) probe: ResolvedProbe,
    pub(crate) plans: Vec<PlanData>,
    /// The probe's row in the session's tallies (made when it was given, pending).
    pub(crate) tally: usize,
    /// What the user is told once its uprobes are in ("armed: … in LIB at ADDR").
    pub(crate) message: String,
}

/// What the ptrace engine holds to reach the kernel engine's thread (a clone of its channel
/// and waker): only that thread touches BPF.
#[derive(Clone)]
pub(crate) struct KernelLink {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) wake: Arc<EventFd>,
}

impl KernelLink {
    fn send(&self, c: Command) -> bool {
        let sent = self.commands.send(c).is_ok();
        if sent {
            let _ = self.wake.write(1);
        }
        sent
    }

    /// Hands a probe over; the kernel thread says `ProbeArmed` (or the error) itself, so the
    /// ptrace engine never waits on it here. False when the kernel engine has ended.
    pub(crate) fn adopt(&self, a: Adoption) -> bool {
        self.send(Command::Adopt(Box::new(a)))
    }

    /// Takes out the uprobes of the adopted probe with tally row `tally`, and waits (bounded)
    /// until they are out. Whether it was still running there (not ended by its hit limit,
    /// its budget or a failure to attach); `None` when the kernel engine has ended.
    ///
    /// An answer later than [`RELEASE_WAIT`] counts as running: the request is queued, so
    /// the kernel thread takes the uprobes out before anything sent after it (a new adoption
    /// at the reopen), and meanwhile they are on a file this process no longer maps.
    pub(crate) fn release(&self, tally: usize) -> Option<bool> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::Release(tally, reply)) {
            return None;
        }
        match answer.recv_timeout(RELEASE_WAIT) {
            Ok(live) => Some(live),
            Err(mpsc::RecvTimeoutError::Timeout) => Some(true),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        }
    }
}

/// The counts a probe's tally had before this arming: the kernel's counters start at zero in
/// each slot, and the tally shows their sum.
#[derive(Clone, Copy, Default)]
pub(super) struct Base {
    hits: u64,
    filtered: u64,
    errors: u64,
    rate_dropped: u64,
    busy: Duration,
}

impl Base {
    fn of(t: &Tally) -> Base {
        Base {
            hits: t.hits,
            filtered: t.filtered,
            errors: t.errors,
            rate_dropped: t.rate_dropped,
            busy: t.busy,
        }
    }

    pub(super) fn hits(&self) -> u64 {
        self.hits
    }

    /// The kernel's counts of this arming, on top of the earlier ones.
    pub(super) fn apply(&self, t: &mut Tally, c: &ProbeCounters) {
        set_kernel_counts(t, c);
        t.hits += self.hits;
        t.filtered += self.filtered;
        t.errors += self.errors;
        t.rate_dropped += self.rate_dropped;
        t.busy += self.busy;
    }
}

/// A probe's tally from the kernel's counters (the kernel counts; the tally shows).
fn set_kernel_counts(t: &mut Tally, c: &ProbeCounters) {
    t.hits = c.hits;
    t.filtered = c.filtered;
    t.errors = c.errors;
    t.rate_dropped = c.rate_dropped;
    t.busy = Duration::from_nanos(c.busy_ns);
}

impl Runner {
    /// Probe `pi`'s tally from the kernel's counters, on top of its earlier armings' counts.
    pub(super) fn set_counts(&self, pi: usize, c: &ProbeCounters) {
        let base = self.probes[pi].adopted.unwrap_or_default();
        self.tally(pi, |t| base.apply(t, c));
    }

    pub(super) fn adopt(&mut self, a: Adoption) {
        self.target = a.target;
        let id = a.probe.spec.id.clone();
        let location = a.probe.spec.location.to_string();
        let base = {
            let t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
            t.get(a.tally).map(Base::of).unwrap_or_default()
        };
        match self.add_to(a.probe, a.plans, Some((a.tally, base))) {
            Ok(sites) => {
                if let Some(pi) = self.probes.iter().rposition(|p| p.tally == a.tally) {
                    self.tally(pi, |t| t.state = ProbeState::Active);
                }
                self.send(EngineEvent::ProbeArmed {
                    probe: id,
                    sites,
                    message: a.message,
                });
            }
            Err(e) => {
                let error = format!(
                    "{location}: the library that was loaded has it, but the probe cannot go there: {e}"
                );
                self.send(EngineEvent::Event(Body::Error(ProbeError {
                    ts: periscope_core::event::now_rfc3339(),
                    pid: self.pid,
                    tid: 0,
                    // Filled by `send` (the process's namespace ids), like every kernel event.
                    ns_pid: None,
                    ns_tid: None,
                    location,
                    probe: id.clone(),
                    error: error.clone(),
                })));
                let state = ProbeState::Failed(error);
                if let Some(t) = self
                    .tallies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(a.tally)
                {
                    t.state = state.clone();
                }
                self.send(EngineEvent::ProbeStopped { probe: id, state });
            }
        }
    }

    /// Takes the adopted probe's uprobes out (its library is being unloaded). The records it
    /// left in the ring buffer are rendered first. The probe is then `released`: not counted
    /// among the probes whose end ends the thread, since it waits to be adopted again.
    pub(super) fn release(&mut self, tally: usize) -> bool {
        let Some(pi) = self
            .probes
            .iter()
            .rposition(|p| p.tally == tally && p.adopted.is_some() && !p.done)
        else {
            return false;
        };
        let state = self
            .tallies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tally)
            .map(|t| t.state.clone());
        self.end_probe(pi, state.unwrap_or(ProbeState::Active), false);
        self.probes[pi].released = true;
        true
    }
}

impl KProbe {
    /// Whether this probe's end counts for the end of the thread (a released one waits to be
    /// armed again).
    pub(super) fn counts_for_end(&self) -> bool {
        !self.released
    }
}
