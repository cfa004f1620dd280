//! Scratch mappings about to be made, written down first.
//!
//! A scratch area is found again after a killed periscope by its magic header, but the header
//! is written after the mapping exists: a kill between the two would leave an anonymous
//! executable mapping nobody recognizes. So before mapping at a chosen address we note that
//! address in a small file of our own (per target process, keyed by its start time so a reused
//! pid is not confused with it), and forget it once the header is there. The next attach
//! removes a mapping at a noted address only when it is exactly the shape we map and still
//! blank: a program's own memory never is (see `Engine::recover_unmarked`).

use std::path::PathBuf;

/// The file noting process `pid`'s pending mappings, in a directory only we can write.
fn file(pid: u32) -> Option<PathBuf> {
    let started = start_time(pid)?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("periscope-{uid}"));
    std::fs::create_dir_all(&dir).ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    Some(dir.join(format!("scratch-{pid}-{started}")))
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    crate::process::ProcStat::read(i32::try_from(pid).ok()?)?.number(22)
}

/// Addresses noted for `pid`.
pub(crate) fn pending(pid: u32) -> Vec<u64> {
    file(pid).map(|path| read(&path)).unwrap_or_default()
}

/// Notes that a mapping at `addr` is about to be made in `pid`. Best effort: without a place
/// to write, the mapping is still made (the window it covers is a few microseconds).
pub(crate) fn note(pid: u32, addr: u64) {
    let Some(path) = file(pid) else {
        return;
    };
    let mut all = read(&path);
    if !all.contains(&addr) {
        all.push(addr);
    }
    write(&path, &all);
}

/// The mapping at `addr` carries its header now, or was never made.
pub(crate) fn forget(pid: u32, addr: u64) {
    let Some(path) = file(pid) else {
        return;
    };
    let all: Vec<u64> = read(&path).into_iter().filter(|a| *a != addr).collect();
    write(&path, &all);
}

fn read(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.trim(), 16).ok())
        .collect()
}

fn write(path: &std::path::Path, all: &[u64]) {
    if all.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let text: String = all.iter().map(|a| format!("{a:x}\n")).collect();
    let _ = std::fs::write(path, text);
}
