//! The native Linux x86-64 backend: reads ELF and DWARF, controls processes with ptrace, keeps
//! breakpoints with out-of-line stepping, and reads variables into typed values.
//!
//! Layers, bottom up: [`index`] (one ELF file's lines, functions, scopes, types), [`target`]
//! (a process's objects and biases; locations to addresses), [`maps`] (`/proc/PID/maps`),
//! [`process`] (ptrace and memory), [`trap`] (breakpoints), [`unwind`] (CFI), [`frame`]
//! (variable locations), [`values`] (bytes to values), [`eval`] (expressions), [`probe`] (the
//! probe model), [`resolve`] (probes checked against the index), `engine` (the tracer thread's
//! state machine) and [`session`] (a probing session on one process), which [`NativeRuntime`]
//! puts behind the runtime seam (`periscope-runtime`): the only way the surfaces reach it.

mod coroutine;
mod cpp_std;
mod engine;
pub mod error;
pub mod eval;
pub mod failsafe;
pub mod frame;
mod go_values;
pub mod index;
mod kernel;
mod listing;
pub mod maps;
pub mod messages;
pub mod namespace;
mod pending;
pub mod probe;
pub mod process;
mod repeat;
pub mod resolve;
mod runtime;
mod rust_std;
pub mod session;
pub mod target;
pub mod trap;
pub mod unwind;
pub mod values;

pub use engine::watchdog::WATCHDOG_EXIT;
pub use error::NativeError;
pub use probe::{
    Action, EndReason, EngineChoice, EngineEvent, EngineUsed, ProbeSpec, SessionOptions,
};
pub use runtime::NativeRuntime;
pub use session::{block_signals, Session};
pub use target::Target;
