//! The native Linux x86-64 backend: reads ELF and DWARF, controls processes with ptrace, keeps
//! breakpoints with out-of-line stepping, and reads variables into typed values.
//!
//! Layers, bottom up: [`index`] (one ELF file's lines, functions, scopes, types), [`target`]
//! (a process's objects and biases; locations to addresses), [`process`] (ptrace and memory),
//! [`trap`] (breakpoints), [`frame`] (CFA and variable locations), [`values`] (bytes to values),
//! [`eval`] (expressions), and [`session`] (the tracer thread that ties them together).

mod cpp_std;
pub mod error;
pub mod eval;
pub mod failsafe;
pub mod frame;
pub mod index;
pub mod process;
mod rust_std;
pub mod session;
pub mod target;
pub mod trap;
pub mod unwind;
pub mod values;

pub use error::NativeError;
pub use session::{
    block_signals, Action, EndReason, EngineEvent, ProbeSpec, Session, SessionOptions,
};
pub use target::Target;
