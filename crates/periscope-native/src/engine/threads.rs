//! The target's threads as the tracer knows them.
//!
//! Invariant: a tid is in [`Threads`] exactly while it is a live, traced thread of the target.
//! Reports can arrive out of order: a short-lived thread can start, run and exit (and be reaped)
//! before its creator's clone event is read. So exits are remembered ([`Threads::exited`]),
//! and a clone event never brings a dead thread back: such a ghost would be waited for forever
//! at teardown (the hang of issue 10).

use crate::error::NativeError;
use crate::process;
use std::collections::{HashSet, VecDeque};

/// How many reaped tids are remembered. Tids are reused only after the kernel's pid space
/// wraps, so a few thousand recent exits cover every report still in flight.
const EXITED_MEMORY: usize = 4096;

#[derive(Default)]
pub(crate) struct Threads {
    live: HashSet<i32>,
    exited: HashSet<i32>,
    exited_order: VecDeque<i32>,
}

impl Threads {
    pub(crate) fn contains(&self, tid: i32) -> bool {
        self.live.contains(&tid)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.live.iter().copied()
    }

    /// A thread we seized, or one whose own first stop we saw.
    pub(crate) fn add(&mut self, tid: i32) {
        self.forget_exit(tid);
        self.live.insert(tid);
    }

    /// A thread named by its creator's clone (or vfork) event. It may already have exited.
    pub(crate) fn add_created(&mut self, tid: i32) {
        if !self.exited.contains(&tid) {
            self.live.insert(tid);
        }
    }

    /// The thread exited (its exit was reaped) or is no longer ours.
    pub(crate) fn remove(&mut self, tid: i32) {
        self.live.remove(&tid);
        if self.exited.insert(tid) {
            self.exited_order.push_back(tid);
            if self.exited_order.len() > EXITED_MEMORY {
                if let Some(old) = self.exited_order.pop_front() {
                    self.exited.remove(&old);
                }
            }
        }
    }

    fn forget_exit(&mut self, tid: i32) {
        if self.exited.remove(&tid) {
            self.exited_order.retain(|t| *t != tid);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.live.clear();
    }

    /// A thread to stop for work in the target's context: the leader if it is live.
    pub(crate) fn pick(&self, leader: i32) -> Option<i32> {
        if self.live.contains(&leader) {
            Some(leader)
        } else {
            self.live.iter().next().copied()
        }
    }

    /// Seizes every thread of `pid`, looping until /proc/PID/task shows none that is new
    /// (threads can be created while we attach; once a thread is seized, its clones are traced).
    pub(crate) fn attach_all(&mut self, pid: u32) -> Result<(), NativeError> {
        loop {
            let tids = process::threads(pid);
            if tids.is_empty() && self.live.is_empty() {
                return Err(NativeError::NoSuchProcess { pid });
            }
            let mut new = false;
            for tid in tids {
                if self.live.contains(&tid) {
                    continue;
                }
                match process::seize(tid) {
                    Ok(()) => {
                        self.add(tid);
                        new = true;
                    }
                    Err(nix::errno::Errno::ESRCH) => {} // exited meanwhile
                    // Already ours: a thread created by one we seized, traced by inheritance.
                    Err(nix::errno::Errno::EPERM) if self.traced_by_us(tid) => {
                        self.add(tid);
                        new = true;
                    }
                    // A thread that is exiting cannot be attached (EPERM): it is gone. (Tids
                    // wrap around, so such a thread can come before the leader in the list.)
                    Err(nix::errno::Errno::EPERM) if exiting(tid) => {}
                    Err(e) if self.live.is_empty() => {
                        return Err(process::explain_attach_error(pid, e))
                    }
                    Err(e) => return Err(NativeError::ptrace("SEIZE", tid, e)),
                }
            }
            if !new {
                return Ok(());
            }
        }
    }

    /// Whether this thread (the tracer) traces `tid`: TracerPid names the tracing thread.
    fn traced_by_us(&self, tid: i32) -> bool {
        process::status_field(tid, "TracerPid")
            .and_then(|t| t.parse::<i32>().ok())
            .is_some_and(|t| t == nix::unistd::gettid().as_raw())
    }
}

/// Whether a thread is exiting or gone (a zombie, dead, or no longer in /proc).
pub(crate) fn exiting(tid: i32) -> bool {
    matches!(process::state(tid), None | Some('Z' | 'X' | 'x'))
}

/// Whether `tid` belongs to another process than `pid` (a fork child of the target).
pub(crate) fn is_foreign(pid: u32, tid: i32) -> bool {
    process::status_field(tid, "Tgid")
        .and_then(|t| t.parse::<u32>().ok())
        .is_some_and(|t| t != pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_event_after_the_exit_does_not_revive_the_thread() {
        let mut t = Threads::default();
        t.add(10);
        // The new thread's first stop and exit are read before its creator's clone event.
        t.add(11);
        t.remove(11);
        t.add_created(11);
        assert!(!t.contains(11));
        assert_eq!(t.len(), 1);
        // A thread seen alive again (its tid reused) is live.
        t.add(11);
        assert!(t.contains(11));
    }

    #[test]
    fn exits_are_remembered_boundedly() {
        let mut t = Threads::default();
        for tid in 0..(EXITED_MEMORY as i32 + 10) {
            t.remove(tid);
        }
        assert_eq!(t.exited.len(), EXITED_MEMORY);
        assert!(!t.exited.contains(&0));
    }
}
