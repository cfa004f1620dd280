//! Errors of the native backend. Each message says what went wrong and what would be right, since
//! most of them reach a user or an AI agent verbatim.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("no process with pid {pid} (is it still running? `ps -p {pid}` shows it)")]
    NoSuchProcess { pid: u32 },

    #[error("not allowed to trace pid {pid}: {reason}")]
    Permission { pid: u32, reason: String },

    #[error("could not {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a readable x86-64 ELF file: {reason}")]
    NotElf { path: PathBuf, reason: String },

    #[error("{path} has no DWARF debug info{}; rebuild it with debug info: `-g` for gcc/clang, `debug = true` in Cargo's [profile.release] (or RUSTFLAGS=-g), or install its -dbg/-dbgsym package, or give its separate debug file's directory with --debug-dir (or PERISCOPE_DEBUG_DIR), or a debuginfod server in DEBUGINFOD_URLS", looked(.notes))]
    NoDebugInfo { path: PathBuf, notes: Vec<String> },

    /// A `FILE:LINE` probe on a binary that has symbols but no DWARF (a default
    /// `cargo build --release`, `strip --strip-debug`).
    #[error("{path} has no DWARF debug info, so no line tables, and FILE:LINE needs them{}. Probe a function by name instead (`periscope functions` lists them; `{{arg0}}`…`{{arg5}}` read its first integer arguments), or rebuild with line tables: `debug = \"line-tables-only\"` (or `debug = true`) in Cargo's [profile.release], `-g` for gcc/clang; or install its -dbg/-dbgsym package, give its debug file's directory with --debug-dir, or a debuginfod server in DEBUGINFOD_URLS", looked(.notes))]
    NoLineTables { path: PathBuf, notes: Vec<String> },

    #[error("malformed debug info: {0}")]
    Dwarf(String),

    #[error("{0}")]
    Location(String),

    #[error("{0}")]
    Expression(String),

    #[error("ptrace {op} failed on thread {tid}: {errno}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        errno: nix::errno::Errno,
    },

    #[error("cannot place a breakpoint at {address:#x}: {reason}")]
    Breakpoint { address: u64, reason: String },

    #[error("the target process exited")]
    TargetExited,

    #[error("timed out waiting for {what} ({} s)", limit.as_secs_f64())]
    Timeout {
        what: String,
        limit: std::time::Duration,
    },

    #[error(transparent)]
    Memory(#[from] crate::process::ReadError),

    /// The in-kernel engine cannot run this probe, or BPF is not available; the message says
    /// why and what would work.
    #[error("{0}")]
    Kernel(String),

    #[error("interrupted by {signal} while attaching; the target was left as it was")]
    Interrupted { signal: String },
}

/// What the search for a separate debug file refused, for the no-debug-info errors.
fn looked(notes: &[String]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    }
}

impl NativeError {
    pub(crate) fn ptrace(op: &'static str, tid: i32, errno: nix::errno::Errno) -> Self {
        NativeError::Ptrace { op, tid, errno }
    }
}

/// Across the seam a native error keeps its message; its kind says what a surface acts on.
impl From<NativeError> for periscope_runtime::RuntimeError {
    fn from(e: NativeError) -> Self {
        use periscope_runtime::ErrorKind;
        let kind = match &e {
            NativeError::Interrupted { .. } => ErrorKind::Interrupted,
            NativeError::Expression(_) => ErrorKind::Expression,
            _ => ErrorKind::Other,
        };
        periscope_runtime::RuntimeError::new(kind, e.to_string())
    }
}
