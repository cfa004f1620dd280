//! Fork children of the target. A child is a copy of the target, breakpoints included, but
//! nobody would handle its traps: its code gets the original bytes back and it is let go. Its
//! fork event (from the parent) and its own first stop arrive in either order; neither waits
//! for the other.

use super::Engine;
use crate::process;
use std::collections::HashMap;

/// Where a fork child is in its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildState {
    /// Its fork event came first: code restored, waiting for its first stop to detach.
    Announced,
    /// Its first stop came first: restored and detached; the fork event is still to come.
    Released,
}

#[derive(Default)]
pub(crate) struct ForkChildren(HashMap<i32, ChildState>);

impl Engine {
    pub(crate) fn on_fork_event(&mut self, child: i32) {
        if self.forks.0.remove(&child) != Some(ChildState::Released) {
            self.restore_child_code(child);
            self.forks.0.insert(child, ChildState::Announced);
        }
    }

    pub(crate) fn on_child_stop(&mut self, child: i32) {
        if self.forks.0.remove(&child) != Some(ChildState::Announced) {
            self.restore_child_code(child);
            self.forks.0.insert(child, ChildState::Released);
        }
        let _ = process::detach(child, 0);
    }

    fn restore_child_code(&self, child: i32) {
        if let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{child}/mem"))
        {
            use std::os::unix::fs::FileExt;
            for bp in self.breakpoints.live() {
                let _ = f.write_all_at(&bp.original[..1], bp.address);
            }
        }
    }
}
