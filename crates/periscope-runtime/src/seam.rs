//! The seam itself: what a runtime implements. A surface (the CLI, the agent, MCP, the server)
//! holds a [`Runtime`] from the dispatcher, opens a process's [`Code`] with it, and attaches
//! for an [`Attachment`] that places probes and streams their events. Nothing a surface does
//! goes below these three traits.
//!
//! Adding a runtime: implement the three traits in a crate of its own beside
//! `periscope-native`, then name it in the dispatcher (`periscope-runtimes`), which decides
//! which processes it takes.

use crate::code::{FunctionInfo, MessageMatch, SourceListing};
use crate::error::RuntimeError;
use crate::kind::{Capabilities, RuntimeKind};
use crate::probe::{
    EngineEvent, EngineUsed, ProbeSpec, SessionOptions, Summary, Tallies, WatchSignals,
};
use std::any::Any;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

/// One runtime: how to read a program's code and how to attach to a process running it.
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// What this runtime can do; probes it cannot run are refused with
    /// [`Capabilities::check`]'s message before anything is attached.
    fn capabilities(&self) -> Capabilities;

    /// The code of a live process, read without attaching: nothing in the process changes.
    /// Indexing can take seconds for a large program.
    fn open_process(&self, pid: u32) -> Result<Arc<dyn Code>, RuntimeError>;

    /// The code of a process as an agent reported it (`executable`, `build_id`): from the live
    /// process when it runs here, else from the executable's file; kept per executable and
    /// build id, since code views read the same program again and again.
    fn open_instance(
        &self,
        pid: u32,
        executable: &str,
        build_id: Option<&str>,
    ) -> Result<Arc<dyn Code>, RuntimeError>;

    /// A program file on disk, for `lines` and `functions` on a file instead of a pid.
    fn open_file(&self, path: &Path) -> Result<Arc<dyn Code>, RuntimeError>;

    /// Attaches to the process `code` was opened from and places `probes`; returns once they
    /// are live, or with the first error and the process as it was.
    fn attach(
        &self,
        code: &Arc<dyn Code>,
        probes: Vec<ProbeSpec>,
        options: SessionOptions,
    ) -> Result<Box<dyn Attachment>, RuntimeError>;
}

/// A program's code as a runtime reads it: functions, lines, and probes checked against them.
pub trait Code: Send + Sync {
    /// The process it was read from, if any.
    fn pid(&self) -> Option<u32>;

    /// The language of the program's own code (`rust`, `c`, `go`, `java`…), when known.
    fn language(&self) -> Option<String>;

    /// The program's build id (hex), which tells two builds of one executable apart.
    fn build_id(&self) -> Option<String>;

    /// Functions whose qualified name contains `pattern` (case-insensitive, `*` matches
    /// anything), the program's own first.
    fn functions(&self, pattern: &str) -> Vec<FunctionInfo>;

    /// A source file (matched by path suffix) with the lines a probe can take; `range` limits
    /// it to FROM..=TO.
    fn source_lines(
        &self,
        file: &str,
        range: Option<(u32, u32)>,
    ) -> Result<SourceListing, RuntimeError>;

    /// Code that can produce `message` (a log line or error text someone saw), best first.
    fn find_message(&self, message: &str) -> Vec<MessageMatch>;

    /// Resolves a probe as placing it would, without placing it: its location and every name
    /// and field it reads. The number of code sites it covers.
    fn check(&self, probe: &ProbeSpec) -> Result<usize, RuntimeError>;

    /// The runtime's own type, for the runtime that made it (see [`Runtime::attach`]).
    fn as_any(&self) -> &dyn Any;
}

/// A process with probes in it. Dropping it without [`Attachment::stop`] also ends it cleanly.
pub trait Attachment: Send {
    /// Places one more probe; the number of code sites it covers.
    fn add_probe(&self, probe: ProbeSpec) -> Result<usize, RuntimeError>;

    /// Takes a probe out; false when no probe has that id.
    fn remove_probe(&self, id: &str) -> bool;

    /// Starts (or with `None` stops) capturing threads about to die of a fatal signal.
    fn watch_signals(&self, watch: Option<WatchSignals>);

    /// The events of every probe, in order; ends after [`EngineEvent::Ended`].
    fn events(&self) -> &Receiver<EngineEvent>;

    /// Takes the event stream away, for a consumer on another thread.
    fn take_events(&mut self) -> Receiver<EngineEvent>;

    /// Per-probe tallies, readable while the probes run.
    fn tallies(&self) -> Tallies;

    /// The code sites each of the first probes covers, in their order.
    fn site_counts(&self) -> &[usize];

    /// The engine each of the first probes runs on, in their order.
    fn engines(&self) -> &[EngineUsed];

    /// What an earlier periscope that was killed left in the process, removed on attach.
    fn recovered(&self) -> usize;

    /// True once the session has ended on its own (target gone, every probe ended).
    fn is_finished(&self) -> bool;

    /// Removes every probe and leaves the process as it was.
    fn stop(self: Box<Self>) -> Summary;
}
