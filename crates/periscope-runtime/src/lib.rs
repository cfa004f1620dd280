//! The runtime seam: one trait a runtime implements ([`Runtime`], with [`Code`] and
//! [`Attachment`]), what it can do ([`Capabilities`]), and the types that cross it: the probe
//! a surface asks for, the events and tallies a runtime reports, the code listings it gives.
//!
//! Surfaces (CLI, agent, MCP, server) depend on this crate and on the dispatcher
//! (`periscope-runtimes`), never on a runtime's own crate. Pure types and traits: no OS code.

pub mod code;
pub mod error;
pub mod kind;
pub mod probe;
mod seam;

pub use code::{CodeAnswer, FunctionInfo, MessageMatch, SourceLine, SourceListing};
pub use error::{ErrorKind, RuntimeError};
pub use kind::{Capabilities, Capability, RuntimeKind};
pub use probe::{
    Action, EndReason, EngineChoice, EngineEvent, EngineProbe, EngineUsed, Limits, ProbeSpec,
    ProbeState, SessionOptions, Summary, Tallies, Tally, WatchSignals,
};
pub use seam::{Attachment, Code, Runtime};
