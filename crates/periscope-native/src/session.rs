//! A probing session on one process: the handle the surfaces hold. It resolves probes, starts
//! the tracer thread (see [`crate::engine`]) and talks to it over a command channel, waking it
//! through its eventfd.
//!
//! The tracer reads SIGCHLD (and SIGINT/SIGTERM/SIGHUP, when asked to end on them) through
//! signalfds. This needs those signals blocked in every thread of the program: call
//! [`block_signals`] first thing in `main`, before any thread exists.

use crate::engine::{self, watchdog, Command, Engine};
use crate::error::NativeError;
use crate::probe::{EngineEvent, ProbeSpec, SessionOptions, Summary, Tallies, Tally, WatchSignals};
use crate::resolve::{resolve, ResolvedProbe};
use crate::target::Target;
use nix::sys::eventfd::EventFd;
use nix::sys::signal::{SigSet, Signal};
use std::sync::mpsc::{self, Receiver};
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
        let wake = engine::new_eventfd().map_err(|e| NativeError::Io {
            what: "create an eventfd".into(),
            source: e,
        })?;
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
                let heartbeat = watchdog::Heartbeat::new();
                let mut engine = Engine::new(
                    pid,
                    target,
                    probes,
                    tx,
                    t2,
                    wake2,
                    command_rx,
                    &options,
                    heartbeat.clone(),
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
