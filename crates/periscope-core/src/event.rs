//! What one probe hit produces.

use crate::value::Value;
use serde::{Deserialize, Serialize};

/// A log probe hit, in the shape `--json` prints and the server stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// RFC 3339 timestamp with nanoseconds, UTC.
    pub ts: String,
    pub pid: u32,
    pub tid: u32,
    /// `FILE:LINE` of the hit site (the file as the user named it when the probe has a line).
    pub location: String,
    pub probe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub message: String,
    /// Expression text → captured value, in template order.
    pub values: crate::value::Fields,
}

/// One frame of a captured stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackFrame {
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Arguments and locals (only for the frames asked for), in declaration order.
    #[serde(default, skip_serializing_if = "crate::value::Fields::is_empty")]
    pub variables: crate::value::Fields,
}

/// A snapshot: the stack and its variables at one hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotEvent {
    pub ts: String,
    pub pid: u32,
    pub tid: u32,
    pub location: String,
    pub probe: String,
    pub frames: Vec<StackFrame>,
    #[serde(default, skip_serializing_if = "crate::value::Fields::is_empty")]
    pub watches: crate::value::Fields,
    /// Set when the snapshot was taken at a failure (`periscope watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// What went wrong, for a snapshot captured at the point of failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// `panic` or `signal`.
    pub kind: String,
    /// The panic message, when it can be read exactly; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL` or `SIGABRT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The faulting address, for memory faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Why a probe hit produced no regular event: shown to the user so a silent probe is explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeError {
    pub ts: String,
    pub pid: u32,
    pub tid: u32,
    pub location: String,
    pub probe: String,
    pub error: String,
}

impl LogEvent {
    pub fn value(&self, expr: &str) -> Option<&Value> {
        self.values.get(expr)
    }
}

/// The current time as RFC 3339 UTC with nanoseconds, the `ts` of every event.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}
