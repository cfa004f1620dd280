//! Finding the processes an agent watches, and naming them as instances.

use std::path::Path;

/// A process the agent should watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// Kernel start time (clock ticks since boot): with the pid, it identifies the process
    /// even after the pid is reused.
    pub start: u64,
    pub executable: String,
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
                    if self.exes.iter().any(|e| exe_matches(e, &f.executable, pid)) {
                        out.push(f);
                    }
                }
            }
        }
        out.sort_by_key(|f| f.pid);
        out
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
    }
}
