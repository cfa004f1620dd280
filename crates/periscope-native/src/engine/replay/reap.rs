//! Copies end as the target's children: reaped there (a `wait4` run in a stopped thread of
//! the target), during the session, at teardown, and at the next attach for those a killed
//! periscope left.

use super::{kill, Engine};
use crate::process::{self, Stop};
use std::time::{Duration, Instant};

impl Engine {
    /// Reaps ended copies, from thread `tid` of the target (stopped for us).
    pub(crate) fn reap_copies(&mut self, tid: i32) {
        let zombies = std::mem::take(&mut self.replays.zombies);
        for pid in zombies {
            let r = self.reap(tid, pid);
            // 0: not yet a zombie (its exit still on its way); any error but ECHILD: try later.
            if r.is_err() || matches!(r, Ok(0)) {
                self.replays.zombies.push(pid);
            }
        }
    }

    /// Reaps copies a killed periscope left: ended children of the target made with no exit
    /// signal (zombies nobody else waits for; a program's own children have one). Returns how
    /// many.
    pub(crate) fn reap_leftover_copies(&mut self, tid: i32) -> usize {
        let mut reaped = 0;
        for child in children(self.pid) {
            let Some((state, exit_signal)) = zombie_stat(child) else {
                continue;
            };
            if state != 'Z' || exit_signal != 0 {
                continue;
            }
            let r = self.reap(tid, child);
            if r.is_ok_and(|r| r == i64::from(child)) {
                reaped += 1;
            }
        }
        reaped
    }

    /// `wait4(pid, NULL, __WALL | WNOHANG)` run in thread `tid` of the target: the (host) pid
    /// when reaped, 0 when not ended yet. The call names the copy by its pid in the target's
    /// namespace (a container's): a host pid there could name one of the program's own
    /// children, whose exit it would take from the program.
    fn reap(&mut self, tid: i32, pid: i32) -> Result<i64, crate::error::NativeError> {
        let seen = u32::try_from(pid)
            .ok()
            .and_then(|p| crate::namespace::as_seen_by(self.pid, p))
            .ok_or_else(|| crate::error::NativeError::Io {
                what: format!("find the pid the target knows copy {pid} by"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let flags = (libc::__WALL | libc::WNOHANG) as u64;
        let r =
            self.inject_syscall(tid, libc::SYS_wait4, [seen as u64, 0, flags, 0, 0, 0], None)?;
        Ok(if r == i64::from(seen) {
            i64::from(pid)
        } else {
            r
        })
    }

    /// Ends the copy in flight (teardown): killed and its exit collected, bounded.
    pub(crate) fn end_copy(&mut self) {
        let Some(mut c) = self.replays.copy.take() else {
            return;
        };
        if c.alive {
            kill(&mut c);
            let deadline = Instant::now() + Duration::from_millis(300);
            while let Ok(Some(stop)) = self.wakeup.wait_stop(c.pid, deadline, false) {
                if matches!(stop, Stop::Exited { .. } | Stop::Killed { .. }) {
                    self.replays.zombies.push(c.pid);
                    break;
                }
            }
        }
    }

    /// Copies ended and not yet reaped (teardown reaps them while it has a thread stopped).
    pub(crate) fn has_unreaped_copies(&self) -> bool {
        !self.replays.zombies.is_empty()
    }

    pub(crate) fn unreaped_copies(&self) -> Vec<i32> {
        self.replays.zombies.clone()
    }
}

/// The target's children, from every thread's `children` list.
fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for tid in process::threads(pid) {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")) {
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    out
}

/// A process's state letter and exit signal (fields 3 and 38 of /proc/PID/stat).
fn zombie_stat(pid: i32) -> Option<(char, i64)> {
    let stat = crate::process::ProcStat::read(pid)?;
    Some((stat.state()?, stat.number(38)?))
}
