//! How the tracer thread sleeps and wakes, and every wait for a traced thread, bounded.
//!
//! The tracer sleeps in `poll` on a signalfd for SIGCHLD (a tracee stopped), an eventfd
//! (written by every command, and by another session that read a SIGCHLD) and, when the session
//! handles them, a signalfd for SIGINT/SIGTERM/SIGHUP. Every wait for a stop
//! goes through [`Wakeup::wait_stop`], which never blocks in `waitpid`: it polls with `WNOHANG`
//! and sleeps on the eventfd until a deadline. So no phase (attach, install, a hit, teardown)
//! can wait without bound, and a signal that arrives meanwhile is seen and remembered.

use super::watchdog::Heartbeat;
use crate::process::{self, Stop};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest single sleep while waiting for a given stop: a safety net under the eventfd,
/// never the mechanism (a wake-up comes from SIGCHLD; this only bounds the cost of one lost).
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// The longest idle sleep of the event loop, for the same reason.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// Creates the eventfd a session's tracer sleeps on.
pub(crate) fn new_eventfd() -> std::io::Result<Arc<EventFd>> {
    EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(Arc::new)
        .map_err(std::io::Error::from)
}

/// What woke a sleep, besides a child or a command.
pub(crate) struct Wakeup {
    wake: Arc<EventFd>,
    /// SIGCHLD, read by this tracer itself: a stop of a traced thread wakes it directly, with
    /// no thread in between (one hop less per hit). See [`child_wakers`] for several sessions.
    sigchld: Option<SignalFd>,
    signals: Option<SignalFd>,
    /// The first SIGINT/SIGTERM/SIGHUP seen (its name), kept until the session acts on it.
    pub(crate) signalled: Option<String>,
    /// A wait for one thread consumed wake-ups that may have been for other threads: the
    /// event loop must look for stops again before it sleeps (see [`Self::take_consumed`]).
    consumed: bool,
    heartbeat: Arc<Heartbeat>,
    _registration: child_wakers::Registration,
}

impl Wakeup {
    /// `stop_signals`: read SIGINT/SIGTERM/SIGHUP (blocked in every thread by
    /// [`crate::session::block_signals`]) so the session can end on them.
    pub(crate) fn new(wake: Arc<EventFd>, stop_signals: bool, heartbeat: Arc<Heartbeat>) -> Wakeup {
        let signals = stop_signals.then(|| {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGINT);
            mask.add(Signal::SIGTERM);
            mask.add(Signal::SIGHUP);
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok()
        });
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        let sigchld =
            SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
        Wakeup {
            _registration: child_wakers::register(wake.clone()),
            wake,
            sigchld,
            signals: signals.flatten(),
            signalled: None,
            consumed: false,
            heartbeat,
        }
    }

    /// The eventfd that wakes this tracer, for threads of its own that finish work for it.
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        self.wake.clone()
    }

    /// Resets the wake-up counter. Call it before looking for work, so a wake-up that comes
    /// after the look is not lost.
    pub(crate) fn reset(&self) {
        let _ = self.wake.read();
        self.take_sigchld();
    }

    /// Whether a wait since the last call consumed wake-ups (and clears it). The event loop
    /// asks before sleeping without a deadline: a SIGCHLD of another thread read during such a
    /// wait would otherwise never wake it, with that thread held at its stop.
    pub(crate) fn take_consumed(&mut self) -> bool {
        std::mem::take(&mut self.consumed)
    }

    /// Sleeps while the engine has nothing to do, until woken or `until` (a replay copy's
    /// deadline). Bounded all the same ([`IDLE_RECHECK`]): if a wake-up were ever lost, a
    /// thread of the target held at a stop would wait that long, not forever.
    pub(crate) fn idle_until(&mut self, until: Option<Instant>) {
        let recheck = Instant::now() + IDLE_RECHECK;
        self.sleep(until.map_or(recheck, |u| u.min(recheck)));
    }

    /// Sleeps until a child changes state, a command or signal arrives, or `until` (never
    /// longer than [`MAX_SLEEP`]).
    fn wait_a_little(&mut self, until: Instant) {
        self.sleep(until.min(Instant::now() + MAX_SLEEP));
    }

    fn sleep(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let timeout =
            nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::ZERO);
        let mut fds = vec![nix::poll::PollFd::new(
            self.wake.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if let Some(s) = &self.sigchld {
            fds.push(nix::poll::PollFd::new(
                s.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        if let Some(s) = &self.signals {
            fds.push(nix::poll::PollFd::new(
                s.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        let _ = nix::poll::poll(&mut fds, timeout);
        self.take_sigchld();
        self.read_signal();
    }

    /// Reads a pending SIGCHLD, if this tracer got it. It may have been for another session's
    /// tracee (SIGCHLD is the process's, and one read consumes it): every other session is
    /// woken too, and each reaps only its own.
    fn take_sigchld(&self) {
        let Some(s) = &self.sigchld else { return };
        // SIGCHLD is a standard signal: at most one is pending, so one read takes it.
        if let Ok(Some(_)) = s.read_signal() {
            child_wakers::wake_others(&self._registration);
        }
    }

    /// Takes a pending SIGINT/SIGTERM/SIGHUP, if any, into [`Self::signalled`].
    pub(crate) fn read_signal(&mut self) {
        let Some(s) = &self.signals else { return };
        if let Ok(Some(info)) = s.read_signal() {
            let signo = info.ssi_signo as i32;
            let name = Signal::try_from(signo)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| signo.to_string());
            self.signalled.get_or_insert(name);
        }
    }

    /// Waits for a stop of `tid` (or of any traced thread with -1) until `deadline`. `None`
    /// when none came in time (or, with `until_signal`, once SIGINT/SIGTERM/SIGHUP came); an
    /// error when there is no such tracee.
    pub(crate) fn wait_stop(
        &mut self,
        tid: i32,
        deadline: Instant,
        until_signal: bool,
    ) -> Result<Option<Stop>, nix::errno::Errno> {
        loop {
            if until_signal && self.signalled.is_some() {
                return Ok(None);
            }
            self.heartbeat.beat();
            self.reset();
            self.consumed = true;
            if let Some(stop) = process::wait(tid, true)? {
                return Ok(Some(stop));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.wait_a_little(deadline);
        }
    }
}

/// SIGCHLD is sent to the whole process, and one signalfd read consumes it; with several
/// sessions in one process (an agent watching many targets) only the tracer that read it would
/// wake. So the one that reads it wakes every other session's eventfd; each session then reaps
/// its own tracees (`wait` uses `__WNOTHREAD`). With one session nothing else is woken.
mod child_wakers {
    use nix::sys::eventfd::EventFd;
    use std::sync::{Arc, Mutex, OnceLock};

    type Registry = Mutex<Vec<(u64, Arc<EventFd>)>>;

    fn registry() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(Default::default)
    }

    /// Wakes every session but `me`.
    pub fn wake_others(me: &Registration) {
        let list = registry().lock().unwrap_or_else(|p| p.into_inner());
        for (id, fd) in list.iter() {
            if *id != me.0 {
                let _ = fd.write(1);
            }
        }
    }

    /// Keeps `fd` woken at every SIGCHLD another session reads, until dropped.
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
