//! Processes in namespaces of their own (containers: `unshare`, Docker, Kubernetes).
//!
//! Periscope runs on the host and names processes by their host pids: ptrace, `/proc`,
//! `process_vm_readv`, perf events and `bpf_get_current_pid_tgid` all use them. What differs
//! in a container is (1) its files: the paths in `/proc/PID/maps` are the container's, so every
//! file of a target is opened through `/proc/PID/root` (see `target.rs`), and (2) its ids: the
//! process knows itself by another pid, which events carry beside the host one (`ns_pid`,
//! `ns_tid`), read here from `/proc/PID/status`.

use periscope_core::event::Body;
use std::collections::HashMap;
use std::path::PathBuf;

/// The ids of a `NSpid:` (or `NStgid:`) line: one per pid namespace level, from this `/proc`'s
/// namespace (ours) down to the task's own.
fn levels(status: &str, key: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
}

/// The innermost id: the id in the task's own pid namespace, when that is not ours.
fn innermost(status: &str, key: &str) -> Option<u32> {
    match levels(status, key)?.as_slice() {
        [_, .., inner] => Some(*inner),
        _ => None,
    }
}

fn process_levels(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    levels(&status, "NStgid:")
}

/// The pid the code of process `target` knows process `host` by (for a system call run in the
/// target that names it): the same number in our namespace, else its id at the target's
/// level. `None` when that cannot be read (the process is gone).
pub(crate) fn as_seen_by(target: u32, host: u32) -> Option<u32> {
    let level = process_levels(target)?.len().checked_sub(1)?;
    if level == 0 {
        return Some(host);
    }
    process_levels(host)?.get(level).copied()
}

/// The host pid of the child that thread `tid` of process `target` knows as `seen` (what
/// `clone` returned there).
pub(crate) fn host_child(target: u32, tid: i32, seen: u32) -> Option<u32> {
    let level = process_levels(target)?.len().checked_sub(1)?;
    if level == 0 {
        return Some(seen);
    }
    let children = std::fs::read_to_string(format!("/proc/{target}/task/{tid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|c| process_levels(*c).and_then(|l| l.get(level).copied()) == Some(seen))
}

/// The pid a process (`pid`, the host's) has in its own pid namespace, when that is not ours.
pub fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    innermost(&status, "NStgid:")
}

/// The id thread `tid` (the host's) of process `pid` has in its own pid namespace.
pub fn ns_tid(pid: u32, tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    innermost(&status, "NSpid:")
}

/// `/proc/PID/root` when the process sees other files than we do at the same paths: in another
/// mount namespace, or under another root (chroot, pivot_root). `None` for a process that sees
/// our files. Its files are read through `/proc/PID/root` either way (that is always right); this
/// says whether places such as the debug directories must be looked for in both.
pub fn foreign_root(pid: u32) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let root = |p: &str| {
        std::fs::metadata(format!("/proc/{p}/root"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let pid_s = pid.to_string();
    let same = ns(&pid_s).is_some() && ns(&pid_s) == ns("self") && root(&pid_s) == root("self");
    (!same).then(|| PathBuf::from(format!("/proc/{pid}/root")))
}

/// A process's namespace ids, to stamp on its events. Thread ids are read once per thread.
pub(crate) struct Ids {
    pid: u32,
    ns_pid: Option<u32>,
    tids: HashMap<u32, Option<u32>>,
}

/// Threads remembered at most (a program that starts threads all the time would grow the
/// map without end; past this it starts again).
const MAX_THREADS: usize = 4096;

impl Ids {
    pub(crate) fn of(pid: u32) -> Ids {
        Ids {
            pid,
            ns_pid: ns_pid(pid),
            tids: HashMap::new(),
        }
    }

    /// Sets `ns_pid` and `ns_tid` on an event of this process (nothing, in our namespace).
    pub(crate) fn stamp(&mut self, body: &mut Body) {
        if self.ns_pid.is_none() {
            return;
        }
        if self.tids.len() >= MAX_THREADS {
            self.tids.clear();
        }
        let pid = self.pid;
        let tids = &mut self.tids;
        body.set_namespace_ids(self.ns_pid, |tid| {
            *tids.entry(tid).or_insert_with(|| ns_tid(pid, tid))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_id_is_the_last_of_several() {
        let status = "Name:\tsrv\nNStgid:\t4242\t17\t1\nNSpid:\t4243\t18\t2\n";
        assert_eq!(innermost(status, "NStgid:"), Some(1));
        assert_eq!(innermost(status, "NSpid:"), Some(2));
        // One level: the process is in our namespace.
        assert_eq!(innermost("NStgid:\t4242\n", "NStgid:"), None);
        assert_eq!(innermost("Name:\tx\n", "NStgid:"), None);
        assert_eq!(innermost("NStgid:\t4242\tx\n", "NStgid:"), None);
    }

    #[test]
    fn this_process_is_in_our_namespaces() {
        let me = std::process::id();
        assert_eq!(ns_pid(me), None);
        assert_eq!(foreign_root(me), None);
    }
}
