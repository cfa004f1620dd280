//! The one dispatcher: which runtime takes a process. It reads what the process runs
//! (`/proc/PID/exe` and the files in `/proc/PID/maps`), names the runtime that claims it, and
//! hands the surfaces that runtime behind the seam ([`periscope_runtime::Runtime`]).
//!
//! Adding a runtime is two lines here: its crate in [`available`], and its claim in
//! [`detect`] (already written for the JVM, Python and Node.js, whose crates are to come).

use periscope_runtime::{Code, ErrorKind, Runtime, RuntimeError, RuntimeKind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// What a process runs, as the dispatcher decides by it.
#[derive(Debug, Clone, Default)]
pub struct ProcessFacts {
    /// `/proc/PID/exe`'s target.
    pub exe: PathBuf,
    /// Every file mapped into the process (`/proc/PID/maps`), once each.
    pub mapped: Vec<PathBuf>,
}

impl ProcessFacts {
    /// Reads a live process's facts; `None` when it is gone or not readable.
    pub fn of(pid: u32) -> Option<ProcessFacts> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let mut mapped: Vec<PathBuf> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with('/'))
            .map(PathBuf::from)
            .collect();
        mapped.sort();
        mapped.dedup();
        Some(ProcessFacts { exe, mapped })
    }
}

/// The runtime a process runs on, from its executable and mappings: a HotSpot JVM maps
/// `libjvm.so`; CPython maps `libpython3.*` or is a `python3.*` executable; Node.js is a `node`
/// executable; everything else is native code.
pub fn detect(facts: &ProcessFacts) -> RuntimeKind {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let exe = name(&facts.exe);
    let maps = || facts.mapped.iter().map(|p| name(p));
    if maps().any(|n| n == "libjvm.so") {
        RuntimeKind::Jvm
    } else if exe.starts_with("python3") || maps().any(|n| n.starts_with("libpython3")) {
        RuntimeKind::Python
    } else if exe == "node" || exe.starts_with("node-") || exe == "nodejs" {
        RuntimeKind::Node
    } else {
        RuntimeKind::Native
    }
}

/// The runtimes this build has, and the one object of each.
pub fn available() -> &'static [(RuntimeKind, &'static dyn Runtime)] {
    static NATIVE: OnceLock<periscope_native::NativeRuntime> = OnceLock::new();
    static ALL: OnceLock<Vec<(RuntimeKind, &'static dyn Runtime)>> = OnceLock::new();
    ALL.get_or_init(|| {
        vec![(
            RuntimeKind::Native,
            NATIVE.get_or_init(Default::default) as &dyn Runtime,
        )]
    })
}

/// The runtime of a kind, or an error that says it is not in this build and which are.
pub fn runtime(kind: RuntimeKind) -> Result<&'static dyn Runtime, RuntimeError> {
    available()
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, r)| *r)
        .ok_or_else(|| {
            let names: Vec<&str> = available().iter().map(|(k, _)| k.name()).collect();
            RuntimeError::new(
                ErrorKind::Unsupported,
                format!(
                    "the {} runtime is not available in this build of Periscope (runtimes: {})",
                    kind.name(),
                    names.join(", ")
                ),
            )
        })
}

/// The runtime picked for a process, and what the surface should tell the user about the
/// choice.
pub struct Picked {
    pub runtime: &'static dyn Runtime,
    /// The runtime the process runs on, as detected (or as `--runtime` said).
    pub detected: RuntimeKind,
    /// Said once when the runtime used is not the one detected.
    pub note: Option<String>,
}

/// Picks the runtime for `pid`: `requested` (`--runtime`) when given, else the detected one.
/// A detected runtime this build lacks falls back to native code, which probes the runtime's
/// own machine code (the interpreter, the JIT's C++), and the note says so.
pub fn for_pid(pid: u32, requested: Option<RuntimeKind>) -> Result<Picked, RuntimeError> {
    if let Some(kind) = requested {
        return Ok(Picked {
            runtime: runtime(kind)?,
            detected: kind,
            note: None,
        });
    }
    let detected = ProcessFacts::of(pid)
        .map(|f| detect(&f))
        .unwrap_or(RuntimeKind::Native);
    match runtime(detected) {
        Ok(runtime) => Ok(Picked {
            runtime,
            detected,
            note: None,
        }),
        Err(_) => Ok(Picked {
            runtime: runtime(RuntimeKind::Native)?,
            detected,
            note: Some(format!(
                "pid {pid} runs {}, whose runtime is not in this build; probing its native code",
                detected.title()
            )),
        }),
    }
}

/// The code of an instance an agent reported (its pid, executable and build id), through the
/// runtime of its process: read from the live process when it runs on this machine, else
/// from the executable's file, and kept per executable and build id by the runtime. The
/// runtime is told from the live process only when it is that instance (same executable): a
/// pid reported by an agent on another host names some other process here, if any.
pub fn open_instance(
    pid: u32,
    executable: &str,
    build_id: Option<&str>,
) -> Result<Arc<dyn Code>, RuntimeError> {
    let facts = instance_facts(ProcessFacts::of(pid), executable);
    let runtime = runtime(detect(&facts)).or_else(|_| runtime(RuntimeKind::Native))?;
    runtime.open_instance(pid, executable, build_id)
}

/// What an instance runs: the live process's facts when it is the instance (it runs the
/// reported executable), else what the executable's name alone says.
fn instance_facts(live: Option<ProcessFacts>, executable: &str) -> ProcessFacts {
    live.filter(|f| f.exe.to_string_lossy().trim_end_matches(" (deleted)") == executable)
        .unwrap_or_else(|| ProcessFacts {
            exe: executable.into(),
            mapped: Vec::new(),
        })
}

/// The runtime for a program file on disk (`lines`/`functions` on a file): native code, the
/// only runtime whose programs are files of their own.
pub fn for_file(_path: &Path) -> Result<&'static dyn Runtime, RuntimeError> {
    runtime(RuntimeKind::Native)
}

/// Blocks the signals the runtimes read through signalfds (SIGCHLD, SIGINT, SIGTERM, SIGHUP).
/// Call it first thing in `main`, before any thread exists: threads inherit the mask.
pub fn block_signals() {
    periscope_native::block_signals();
}

/// A sink for progress lines of a long debuginfod download.
pub type DebugProgress = periscope_native::index::debugfile::Progress;

/// Where separate debug info is looked for, for the rest of the process: `dirs` (`--debug-dir`)
/// before `PERISCOPE_DEBUG_DIR` and `/usr/lib/debug`, and debuginfod from `DEBUGINFOD_URLS`;
/// `progress` hears how a long download goes. Native code is the runtime that reads DWARF.
pub fn configure_debug_info(dirs: Vec<PathBuf>, progress: Option<DebugProgress>) {
    periscope_native::index::debugfile::configure(dirs, progress);
}

/// The pid a process (named by the host's pid) has in its own pid namespace (a container's),
/// when that is not ours: what its events carry as `ns_pid`. Whatever its runtime, a pid is
/// the kernel's, so this reads `/proc/PID/status` the one way.
pub fn ns_pid(pid: u32) -> Option<u32> {
    periscope_native::namespace::ns_pid(pid)
}

/// Ends debuginfod downloads in progress and refuses new ones (a shutdown never waits for one).
pub fn cancel_downloads() {
    periscope_native::index::debuginfod::cancel_downloads();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exe: &str, mapped: &[&str]) -> ProcessFacts {
        ProcessFacts {
            exe: exe.into(),
            mapped: mapped.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn each_runtime_is_told_by_its_executable_or_its_libraries() {
        let jvm = facts(
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
            &["/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"],
        );
        assert_eq!(detect(&jvm), RuntimeKind::Jvm);
        let py = facts("/root/.pyenv/versions/3.12.8/bin/python3.12", &[]);
        assert_eq!(detect(&py), RuntimeKind::Python);
        let embedded = facts("/usr/bin/uwsgi", &["/usr/lib/libpython3.13.so.1.0"]);
        assert_eq!(detect(&embedded), RuntimeKind::Python);
        assert_eq!(detect(&facts("/usr/bin/node", &[])), RuntimeKind::Node);
        let native = facts("/srv/ledger", &["/usr/lib/x86_64-linux-gnu/libc.so.6"]);
        assert_eq!(detect(&native), RuntimeKind::Native);
    }

    #[test]
    fn an_instance_is_told_by_its_own_process_only_when_the_pid_runs_its_executable() {
        let jvm = facts("/usr/bin/java", &["/usr/lib/jvm/lib/server/libjvm.so"]);
        // The same pid on this host runs the reported executable: its libraries count.
        let same = instance_facts(Some(jvm.clone()), "/usr/bin/java");
        assert_eq!(detect(&same), RuntimeKind::Jvm);
        // Another program has that pid here: only the reported executable's name counts.
        let other = instance_facts(Some(jvm), "/srv/python3.12");
        assert_eq!(detect(&other), RuntimeKind::Python);
        assert!(other.mapped.is_empty());
        let gone = instance_facts(None, "/srv/ledger");
        assert_eq!(detect(&gone), RuntimeKind::Native);
    }

    #[test]
    fn this_process_is_native_and_a_missing_runtime_is_named() {
        let picked = for_pid(std::process::id(), None).expect("pick");
        assert_eq!(picked.detected, RuntimeKind::Native);
        assert_eq!(picked.runtime.kind(), RuntimeKind::Native);
        assert!(picked.note.is_none());
        let e = runtime(RuntimeKind::Jvm).err().expect("no jvm runtime yet");
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("runtimes: native"), "{}", e.message);
    }
}
