//! Finding the processes an agent watches, and naming them as instances.

use std::path::Path;

/// A process the agent should watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// Kernel start time (clock ticks since boot): with the pid, it identifies the process
    /// even after the pid is reused.
    pub start: u64,
    /// The executable's path as the process sees it (in a container: the container's path).
    pub executable: String,
    /// The pid in the process's own pid namespace (a container's), when that is not ours.
    pub ns_pid: Option<u32>,
}

/// What to watch: given pids, and every process running an executable of a given name.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
}

impl Selection {
    /// The processes selected now. The agent itself is never selected.
    pub fn scan(&self) -> Vec<Found> {
        let me = std::process::id();
        let mut out: Vec<Found> = Vec::new();
        for &pid in &self.pids {
            if let Some(f) = inspect(pid) {
                out.push(f);
            }
        }
        if !self.exes.is_empty() {
            let wanted: Vec<Wanted> = self.exes.iter().map(|e| Wanted::new(e)).collect();
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return out;
            };
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == me || out.iter().any(|f| f.pid == pid) {
                    continue;
                }
                if let Some(f) = inspect(pid) {
                    if wanted.iter().any(|w| w.matches(&f.executable, pid)) {
                        out.push(f);
                    }
                }
            }
        }
        out.sort_by_key(|f| f.pid);
        out
    }
}

/// One `--exe` pattern, with the file it names when it is a path that exists here.
struct Wanted {
    text: String,
    /// (device, inode) of the file: a process in a container runs a file the host may reach by
    /// another path (`/proc/PID/root/...`, the image's directory, a bind mount's source).
    file: Option<(u64, u64)>,
}

impl Wanted {
    fn new(text: &str) -> Wanted {
        use std::os::unix::fs::MetadataExt;
        let file = Path::new(text)
            .is_absolute()
            .then(|| std::fs::metadata(text).ok())
            .flatten()
            .filter(|m| m.is_file())
            .map(|m| (m.dev(), m.ino()));
        Wanted {
            text: text.to_string(),
            file,
        }
    }

    /// Matches the executable's file name or full path as the process sees it (a
    /// container's path, as `/proc/PID/exe` reads), the process name (comm), or the same file
    /// by any path the host has to it.
    fn matches(&self, executable: &str, pid: u32) -> bool {
        if exe_matches(&self.text, executable, pid) {
            return true;
        }
        let Some(want) = self.file else {
            return false;
        };
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|m| (m.dev(), m.ino()) == want)
    }
}

/// `NAME` matches the executable's file name, its full path, or the process name (comm).
fn exe_matches(wanted: &str, executable: &str, pid: u32) -> bool {
    if executable == wanted {
        return true;
    }
    let base = Path::new(executable)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if base == wanted {
        return true;
    }
    // comm is cut to 15 bytes; compare like-for-like.
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| {
            let c = c.trim_end();
            let w: String = wanted.chars().take(15).collect();
            c == w && !executable.is_empty()
        })
        .unwrap_or(false)
}

/// The pid's executable and start time; None for kernel threads, zombies and vanished pids.
pub fn inspect(pid: u32) -> Option<Found> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let executable = exe
        .to_string_lossy()
        .trim_end_matches(" (deleted)")
        .to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    // starttime is field 22 of stat; `rest` starts at field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some(Found {
        pid,
        start,
        executable,
        ns_pid: periscope_runtimes::ns_pid(pid),
    })
}

/// An instance id: host, pid and a short form of the start time (so a reused pid is a new
/// instance).
pub fn instance_id(host: &str, f: &Found) -> String {
    format!("{host}-{}-{}", f.pid, base36(f.start))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_itself_by_pid_and_names_it() {
        let me = inspect(std::process::id()).expect("own process");
        assert!(me.executable.contains("periscope_agent"));
        let id = instance_id("h", &me);
        assert!(id.starts_with(&format!("h-{}-", me.pid)));
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36), "10");
        assert_eq!(me.ns_pid, None);
    }

    #[test]
    fn an_executable_matches_by_any_path_to_its_file() {
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
        let exe = exe.to_string_lossy();
        // The same file by another path: the host's view through our own root.
        let other = format!("/proc/{me}/root{exe}");
        assert!(Wanted::new(&other).matches(&exe, me));
        assert!(Wanted::new(&exe).matches(&exe, me));
        assert!(!Wanted::new("/bin/sh").matches(&exe, me));
        assert!(!Wanted::new("/no/such/file").matches(&exe, me));
    }
}
