//! Which runtime a process runs on, and what each runtime can do.

use crate::error::{ErrorKind, RuntimeError};
use periscope_core::compile::Action;
use std::fmt;
use std::str::FromStr;

/// The runtimes Periscope knows of. A process is dispatched to one of them (`--runtime`
/// overrides the choice); which of them this build implements is the dispatcher's to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeKind {
    /// Machine code with ELF and DWARF: Rust, C, C++, Go.
    Native,
    /// A HotSpot JVM (`libjvm.so` mapped).
    Jvm,
    /// CPython (`libpython3.*` mapped, or a `python3.*` executable).
    Python,
    /// Node.js (a `node` executable).
    Node,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 4] = [
        RuntimeKind::Native,
        RuntimeKind::Jvm,
        RuntimeKind::Python,
        RuntimeKind::Node,
    ];

    /// The name users type (`--runtime jvm`) and JSON carries.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Native => "native",
            RuntimeKind::Jvm => "jvm",
            RuntimeKind::Python => "python",
            RuntimeKind::Node => "node",
        }
    }

    /// How a person names it in a sentence.
    pub fn title(self) -> &'static str {
        match self {
            RuntimeKind::Native => "native code",
            RuntimeKind::Jvm => "the JVM",
            RuntimeKind::Python => "Python",
            RuntimeKind::Node => "Node.js",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RuntimeKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = RuntimeKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown runtime `{s}`; runtimes: {}", names.join(", "))
            })
    }
}

/// One thing a runtime may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    Log,
    Snapshot,
    Count,
    Duration,
    Gauge,
    /// `watch`: panics, fatal signals, exceptions.
    Watch,
    /// `verify` by evaluating the fix beside the running code.
    VerifyShadow,
    /// `verify --replay`: a copy of the process runs the fix.
    VerifyReplay,
    /// Probes that run inside the kernel (eBPF) instead of stopping the thread.
    KernelEngine,
}

impl Capability {
    /// What the capability is called in a sentence ("replay is not available for Python").
    pub fn title(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Snapshot => "snapshot",
            Capability::Count => "count",
            Capability::Duration => "duration",
            Capability::Gauge => "gauge",
            Capability::Watch => "watch",
            Capability::VerifyShadow => "verify",
            Capability::VerifyReplay => "replay",
            Capability::KernelEngine => "the in-kernel engine",
        }
    }

    /// The capability a probe's action needs.
    pub fn of(action: &Action) -> Capability {
        match action {
            Action::Log(_) => Capability::Log,
            Action::Snapshot { .. } => Capability::Snapshot,
            Action::Count { .. } => Capability::Count,
            Action::Duration { .. } => Capability::Duration,
            Action::Gauge { .. } => Capability::Gauge,
            Action::Failures { .. } => Capability::Watch,
            Action::Verify {
                replay: Some(_), ..
            } => Capability::VerifyReplay,
            Action::Verify { .. } => Capability::VerifyShadow,
        }
    }
}

/// What a runtime can do, so a surface says "replay is not available for Python" before it
/// tries, instead of failing late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    runtime: RuntimeKind,
    has: Vec<Capability>,
}

impl Capabilities {
    pub fn new(runtime: RuntimeKind, has: impl IntoIterator<Item = Capability>) -> Capabilities {
        Capabilities {
            runtime,
            has: has.into_iter().collect(),
        }
    }

    pub fn has(&self, c: Capability) -> bool {
        self.has.contains(&c)
    }

    pub fn list(&self) -> &[Capability] {
        &self.has
    }

    /// `Ok` when the runtime can run `action`, else an [`ErrorKind::Unsupported`] error that
    /// says what is not available for which runtime.
    pub fn check(&self, action: &Action) -> Result<(), RuntimeError> {
        let need = Capability::of(action);
        if self.has(need) {
            return Ok(());
        }
        Err(RuntimeError::new(
            ErrorKind::Unsupported,
            format!(
                "{} is not available for {}",
                need.title(),
                self.runtime.title()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_parse_back_and_unknown_ones_list_the_valid() {
        for k in RuntimeKind::ALL {
            assert_eq!(k.name().parse::<RuntimeKind>(), Ok(k));
        }
        assert_eq!("JVM".parse::<RuntimeKind>(), Ok(RuntimeKind::Jvm));
        let e = "ruby".parse::<RuntimeKind>().unwrap_err();
        assert_eq!(
            e,
            "unknown runtime `ruby`; runtimes: native, jvm, python, node"
        );
    }

    #[test]
    fn a_missing_capability_is_said_before_anything_is_tried() {
        let caps = Capabilities::new(RuntimeKind::Python, [Capability::Log]);
        let replay = periscope_core::verify::Replay {
            from: periscope_core::Location::Function("f".into()),
            until: periscope_core::Location::Function("g".into()),
        };
        let verify = Action::Verify {
            failure: periscope_core::expr::parse("x").unwrap(),
            fixes: Vec::new(),
            keep: Vec::new(),
            keep_given: false,
            replay: Some(replay),
        };
        let e = caps.check(&verify).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.message, "replay is not available for Python");
    }
}
