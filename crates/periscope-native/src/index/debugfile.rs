//! Separate debug info: where a stripped binary's DWARF is found, the way gdb finds it.
//!
//! Distributions and release pipelines split debug info off (`objcopy --only-keep-debug`, then
//! `strip --strip-debug` and `--add-gnu-debuglink`). The binary keeps its code, load segments
//! and symbols; the debug file holds the DWARF. Looked for, in order:
//!
//! 1. by build id, in every debug directory: `DIR/.build-id/xx/rest.debug`, the file's own
//!    build id checked;
//! 2. by `.gnu_debuglink` name: next to the binary, in `.debug/` next to it, and under each
//!    debug directory followed by the binary's own directory, the CRC-32 checked;
//! 3. from the debuginfod servers of `DEBUGINFOD_URLS` (see [`super::debuginfod`]).
//!
//! The debug directories are `--debug-dir DIR` (repeatable), then `PERISCOPE_DEBUG_DIR`
//! (colon-separated), then `/usr/lib/debug`; for a process in a container (another mount
//! namespace or root) each one inside the container's root (`/proc/PID/root/DIR`) first,
//! then the host's. The binary's own directory (for `.gnu_debuglink`) is the container's. The
//! debuginfod cache is the host's.

use super::debuginfod;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A sink for progress lines (a long debuginfod download); the command line prints them.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Where debug files are looked for. Set once per process by [`configure`]; read from the
/// environment alone when a program never configures it.
pub struct DebugSearch {
    /// Extra debug directories, in the order given, before the system one.
    pub dirs: Vec<PathBuf>,
    pub debuginfod: Option<debuginfod::Client>,
    pub progress: Option<Progress>,
}

static SEARCH: OnceLock<DebugSearch> = OnceLock::new();

/// The system's debug directory (Debian's `-dbg`/`-dbgsym` packages install here).
pub const SYSTEM_DEBUG_DIR: &str = "/usr/lib/debug";

/// Sets where debug files are looked for, for the rest of the process: `dirs` (`--debug-dir`)
/// first, then `PERISCOPE_DEBUG_DIR`, then [`SYSTEM_DEBUG_DIR`]; debuginfod from
/// `DEBUGINFOD_URLS`. Only the first call counts (one command line per process).
pub fn configure(dirs: Vec<PathBuf>, progress: Option<Progress>) {
    let _ = SEARCH.set(DebugSearch::from_env(dirs, progress));
}

pub(super) fn search() -> &'static DebugSearch {
    SEARCH.get_or_init(|| DebugSearch::from_env(Vec::new(), None))
}

impl DebugSearch {
    fn from_env(mut dirs: Vec<PathBuf>, progress: Option<Progress>) -> DebugSearch {
        if let Ok(v) = std::env::var("PERISCOPE_DEBUG_DIR") {
            dirs.extend(v.split(':').filter(|d| !d.is_empty()).map(PathBuf::from));
        }
        DebugSearch {
            dirs,
            debuginfod: debuginfod::Client::from_env(),
            progress,
        }
    }

    pub(super) fn say(&self, text: &str) {
        if let Some(p) = &self.progress {
            p(text);
        }
    }

    /// The debug directories for a process whose root is `root` (`None`: it sees this
    /// machine's files): the user's, then the system's; each inside the process's root first
    /// (a container's image carries its own debug files), then on the host (where the user
    /// put them for it).
    fn dirs_for(&self, root: Option<&Path>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in self
            .dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new(SYSTEM_DEBUG_DIR)])
        {
            if let Some(r) = root.filter(|_| d.is_absolute()) {
                out.push(in_root(r, d));
            }
            out.push(d.to_path_buf());
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|d| seen.insert(d.clone()));
        out
    }
}

/// A debug file found for a binary.
pub(super) struct Found {
    pub path: PathBuf,
    pub data: Vec<u8>,
}

/// What the search found, and what it looked at and refused (said when no DWARF is found).
#[derive(Default)]
pub(super) struct Lookup {
    pub found: Option<Found>,
    pub notes: Vec<String>,
}

/// The binary as the search needs it.
pub(super) struct Binary<'a> {
    /// Its path as the process names it (`/usr/bin/app`), for `.gnu_debuglink`'s directories.
    pub path: &'a Path,
    /// The root its paths are under (`/proc/PID/root` for a process), if not this machine's.
    pub root: Option<&'a Path>,
    pub build_id: Option<&'a str>,
    /// `.gnu_debuglink`: the debug file's name and its CRC-32.
    pub debuglink: Option<(String, u32)>,
}

/// Finds the separate debug file of `bin`, or says why none was used.
pub(super) fn find(bin: &Binary) -> Lookup {
    let search = search();
    let mut lookup = Lookup::default();
    let dirs = search.dirs_for(bin.root);
    if let Some(id) = bin.build_id.filter(|id| id.len() > 2) {
        for d in &dirs {
            let p = d
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..]));
            if let Some(found) = by_build_id(&p, id, &mut lookup.notes) {
                lookup.found = Some(found);
                return lookup;
            }
        }
    }
    if let Some((name, crc)) = &bin.debuglink {
        for p in debuglink_candidates(bin, name, &dirs) {
            if let Some(found) = by_debuglink(&p, *crc, bin.build_id, &mut lookup.notes) {
                lookup.found = Some(found);
                return lookup;
            }
        }
    }
    if let (Some(client), Some(id)) = (&search.debuginfod, bin.build_id) {
        match client.fetch(id, bin.path, search) {
            Ok(path) => match std::fs::read(&path) {
                Ok(data) => {
                    lookup.found = Some(Found { path, data });
                    return lookup;
                }
                Err(e) => lookup
                    .notes
                    .push(format!("cannot read {}: {e}", path.display())),
            },
            Err(why) => lookup.notes.push(why),
        }
    }
    lookup
}

/// `.gnu_debuglink`'s places, as gdb has them: the binary's directory, its `.debug/`, and each
/// debug directory followed by the binary's directory.
fn debuglink_candidates(bin: &Binary, name: &str, dirs: &[PathBuf]) -> Vec<PathBuf> {
    // A name with a directory in it is not a debuglink any tool writes; refuse to wander.
    if name.contains('/') || name.is_empty() {
        return Vec::new();
    }
    let dir = bin.path.parent().unwrap_or(Path::new("/"));
    let local = |p: PathBuf| match bin.root {
        Some(r) => in_root(r, &p),
        None => p,
    };
    let mut out = vec![local(dir.join(name)), local(dir.join(".debug").join(name))];
    for d in dirs {
        out.push(in_root(d, dir).join(name));
    }
    out
}

fn by_build_id(path: &Path, id: &str, notes: &mut Vec<String>) -> Option<Found> {
    let data = std::fs::read(path).ok()?;
    let own = object::File::parse(&*data)
        .ok()
        .and_then(|f| object::Object::build_id(&f).ok().flatten().map(hex));
    if own.as_deref() != Some(id) {
        notes.push(format!(
            "{} is not the debug file of build {id} (its build id is {})",
            path.display(),
            own.as_deref().unwrap_or("missing")
        ));
        return None;
    }
    Some(Found {
        path: path.to_path_buf(),
        data,
    })
}

fn by_debuglink(path: &Path, crc: u32, id: Option<&str>, notes: &mut Vec<String>) -> Option<Found> {
    let data = std::fs::read(path).ok()?;
    let own = crc32fast::hash(&data);
    if own != crc {
        notes.push(format!(
            "{} has CRC-32 {own:#010x}, but the binary's .gnu_debuglink expects {crc:#010x}: it is the debug file of another build (install the one built with this binary, or point --debug-dir at it)",
            path.display()
        ));
        return None;
    }
    // Both sides have build ids (the usual case): they must agree too.
    let own_id = object::File::parse(&*data)
        .ok()
        .and_then(|f| object::Object::build_id(&f).ok().flatten().map(hex));
    if let (Some(want), Some(have)) = (id, own_id.as_deref()) {
        if want != have {
            notes.push(format!(
                "{} has build id {have}, not the binary's {want}",
                path.display()
            ));
            return None;
        }
    }
    Some(Found {
        path: path.to_path_buf(),
        data,
    })
}

/// `path` (absolute) under `root`.
pub(super) fn in_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debuglink_is_looked_for_where_gdb_looks() {
        let bin = Binary {
            path: Path::new("/opt/app/bin/app"),
            root: None,
            build_id: None,
            debuglink: Some(("app.debug".into(), 0)),
        };
        let dirs = [PathBuf::from("/srv/debug"), PathBuf::from("/usr/lib/debug")];
        let c = debuglink_candidates(&bin, "app.debug", &dirs);
        assert_eq!(
            c,
            [
                "/opt/app/bin/app.debug",
                "/opt/app/bin/.debug/app.debug",
                "/srv/debug/opt/app/bin/app.debug",
                "/usr/lib/debug/opt/app/bin/app.debug",
            ]
            .map(PathBuf::from)
        );
        assert!(debuglink_candidates(&bin, "../../etc/x", &dirs).is_empty());
    }

    #[test]
    fn each_debug_directory_is_looked_for_inside_a_container_first() {
        let search = DebugSearch {
            dirs: vec![PathBuf::from("/srv/debug"), PathBuf::from("rel")],
            debuginfod: None,
            progress: None,
        };
        assert_eq!(
            search.dirs_for(Some(Path::new("/proc/42/root"))),
            [
                "/proc/42/root/srv/debug",
                "/srv/debug",
                "rel",
                "/proc/42/root/usr/lib/debug",
                "/usr/lib/debug"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            search.dirs_for(None),
            ["/srv/debug", "rel", "/usr/lib/debug"].map(PathBuf::from)
        );
    }

    #[test]
    fn a_container_binary_is_looked_for_inside_its_root() {
        let bin = Binary {
            path: Path::new("/app/srv"),
            root: Some(Path::new("/proc/42/root")),
            build_id: None,
            debuglink: None,
        };
        let c = debuglink_candidates(&bin, "srv.debug", &[]);
        assert_eq!(c[0], PathBuf::from("/proc/42/root/app/srv.debug"));
        assert_eq!(c[1], PathBuf::from("/proc/42/root/app/.debug/srv.debug"));
    }
}
