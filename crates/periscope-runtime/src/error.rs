//! The one error a runtime returns across the seam. Its text is the runtime's own message, kept
//! whole (users and tests read it); its kind is what a surface may act on.

/// What kind of failure, for the few a surface treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// SIGINT, SIGTERM or SIGHUP arrived while attaching: nothing was left in the process, and
    /// the command ends as an interruption, not as a failure.
    Interrupted,
    /// An expression of the probe cannot be read at its location (a name not in scope, a
    /// field that does not exist): the surface names the probe field that holds it.
    Expression,
    /// The runtime cannot do this for this process (see [`crate::Capabilities`]).
    Unsupported,
    /// Anything else: a location without code, a process that is gone, a binary unreadable.
    Other,
}

/// A runtime's error: a kind and the message as the runtime words it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RuntimeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RuntimeError {
        RuntimeError {
            kind,
            message: message.into(),
        }
    }

    pub fn other(message: impl Into<String>) -> RuntimeError {
        RuntimeError::new(ErrorKind::Other, message)
    }

    pub fn is_interrupted(&self) -> bool {
        self.kind == ErrorKind::Interrupted
    }
}
