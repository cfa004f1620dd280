//! Leaving the target exactly as it was: every breakpoint out, no thread left inside a scratch
//! slot or with one of our traps pending, scratch areas unmapped, SIGTRAP's action given back,
//! every thread detached.
//!
//! Bounded: the threads are interrupted and their stops collected until a deadline. Threads
//! that did not stop by then (a thread the scheduler has not run, one stuck in the kernel) are
//! left to the kernel, which detaches them when the tracer thread ends; for them the code is
//! restored anyway, and the fail-safe handler and scratch area stay in place (a trap already
//! pending on such a thread, or a thread inside a slot, still needs them). That remainder is
//! reported, and the next periscope to attach removes it.

use super::Engine;
use crate::process::{self, Stop};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SIGTRAP: i32 = libc::SIGTRAP;
const PTRACE_EVENT_FORK: i32 = 1;
const PTRACE_EVENT_VFORK: i32 = 2;
const PTRACE_EVENT_CLONE: i32 = 3;

/// How long teardown waits for the threads to stop. Ctrl-C must end periscope within a
/// second in every phase; collecting stops normally takes well under a millisecond per thread.
const STOP_ALL_TIMEOUT: Duration = Duration::from_millis(600);
/// How long taking a stopped thread's pending trap may take.
const FIXUP_TIMEOUT: Duration = Duration::from_millis(200);

impl Engine {
    /// Removes every breakpoint and detaches from every thread, leaving the process as it was.
    pub(crate) fn teardown(&mut self) {
        // A replay copy first: it must never be among the stops collected below (and detached).
        self.end_copy();
        if self.image_replaced {
            // exec replaced the program: none of our code changes or mappings exist any more.
            self.breakpoints.clear();
            self.scratch.clear();
        }
        if self.threads.is_empty() {
            self.breakpoints.clear();
            return;
        }
        let stopped = self.stop_all();
        // Threads that are exiting cannot stop, and run no code that could be in our way.
        let mut all_stopped = self
            .threads
            .iter()
            .all(|t| stopped.contains_key(&t) || super::threads::exiting(t));
        let mut signals = HashMap::new();
        for (tid, sig) in stopped {
            match self.settle(tid, sig) {
                Some(sig) => {
                    signals.insert(tid, sig);
                }
                // Running again (or gone): the kernel detaches it when we end; the scratch
                // area must stay for it.
                None => all_stopped = false,
            }
        }
        self.restore_code();
        let areas = self.scratch.ranges();
        let helper = self
            .threads
            .pick(self.pid as i32)
            .filter(|t| signals.contains_key(t))
            .or_else(|| signals.keys().next().copied());
        match helper {
            Some(tid) if all_stopped => {
                // Its signal for the detach, where `inject_syscall` looks for one.
                if let Some(&sig) = signals.get(&tid).filter(|s| **s != 0) {
                    self.pending_signals.entry(tid).or_insert(sig);
                }
                self.reap_copies(tid);
                if self.release_failsafe(tid).is_err() {
                    self.left_behind.push("the SIGTRAP handler".into());
                }
                for (base, size) in areas {
                    let unmap = self.inject_syscall(
                        tid,
                        libc::SYS_munmap,
                        [base, size, 0, 0, 0, 0],
                        Some((base, size)),
                    );
                    if unmap.is_err() {
                        self.left_behind
                            .push(format!("a scratch area at {base:#x}"));
                    }
                }
            }
            _ if !areas.is_empty() => {
                let waiting = self.threads.len().saturating_sub(signals.len());
                self.left_behind.push(format!(
                    "the scratch area{} and SIGTRAP handler ({waiting} thread{} did not stop in time)",
                    if areas.len() == 1 { "" } else { "s" },
                    if waiting == 1 { "" } else { "s" }
                ));
            }
            _ => {}
        }
        if self.has_unreaped_copies() {
            self.left_behind.push(format!(
                "ended replay copies not yet reaped (zombie processes {:?})",
                self.unreaped_copies()
            ));
        }
        self.scratch.clear();
        for (tid, sig) in signals {
            let sig = self.pending_signals.remove(&tid).unwrap_or(sig);
            let _ = process::detach(tid, sig);
        }
        self.threads.clear();
    }

    /// Interrupts every thread and collects their stops until all are stopped or the deadline
    /// passes. Returns the stopped threads with the signal each must get on detach.
    fn stop_all(&mut self) -> HashMap<i32, i32> {
        let mut stopped: HashMap<i32, i32> = HashMap::new();
        for tid in self.threads.iter() {
            let _ = process::interrupt(tid);
        }
        let deadline = Instant::now() + STOP_ALL_TIMEOUT;
        while self.threads.iter().any(|t| !stopped.contains_key(&t)) {
            let stop = match self.wakeup.wait_stop(-1, deadline, false) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(nix::errno::Errno::ECHILD) => {
                    self.threads.clear();
                    break;
                }
                Err(_) => break,
            };
            let tid = stop.tid();
            match stop {
                // Left from an injected call that ran out of time; detaching ends the tracing.
                Stop::Syscall { .. } => {
                    stopped.insert(tid, 0);
                }
                Stop::Exited { .. } | Stop::Killed { .. } => {
                    self.threads.remove(tid);
                    stopped.remove(&tid);
                }
                Stop::Signal {
                    signal: SIGTRAP, ..
                } => {
                    // A breakpoint trap not yet handled: rewind to re-execute the original.
                    if let Ok(mut regs) = process::getregs(tid) {
                        if self.breakpoints.is_ours(regs.rip.wrapping_sub(1)) {
                            regs.rip -= 1;
                            let _ = process::setregs(tid, regs);
                            stopped.insert(tid, 0);
                        } else {
                            stopped.insert(tid, SIGTRAP);
                        }
                    }
                }
                Stop::Signal { signal, .. } => {
                    stopped.insert(tid, signal);
                }
                // A thread stopped at a clone or fork event is inside that system call: no
                // syscall may be injected there (the call's return value would land on top of
                // ours). Let it finish the call and stop it again at a plain interrupt.
                Stop::Event {
                    event: event @ (PTRACE_EVENT_CLONE | PTRACE_EVENT_FORK | PTRACE_EVENT_VFORK),
                    ..
                } => {
                    if let Ok(new) = process::get_event_msg(tid) {
                        let new = new as i32;
                        if event == PTRACE_EVENT_FORK {
                            self.on_fork_event(new);
                        } else {
                            self.threads.add_created(new);
                            let _ = process::interrupt(new);
                        }
                    }
                    let _ = process::cont(tid, 0);
                    let _ = process::interrupt(tid);
                }
                Stop::Event { .. } => {
                    if !self.threads.contains(tid) {
                        if super::threads::is_foreign(self.pid, tid) {
                            self.on_child_stop(tid);
                            continue;
                        }
                        self.threads.add(tid);
                    }
                    stopped.insert(tid, 0);
                }
            }
        }
        stopped.retain(|t, _| self.threads.contains(*t));
        stopped
    }

    /// Makes a stopped thread safe to detach: no trap of ours pending, not inside a scratch
    /// slot. Returns the signal to give it on detach (`signal`, or one that came meanwhile),
    /// or `None` when it could not be kept stopped.
    fn settle(&mut self, tid: i32, signal: i32) -> Option<i32> {
        let signal = if signal == 0 {
            match self.consume_pending_trap(tid) {
                Held::Stopped(other) => other.unwrap_or(0),
                Held::Lost => return None,
            }
        } else {
            signal
        };
        self.move_out_of_scratch(tid).then_some(signal)
    }

    /// A thread can stop for our PTRACE_INTERRUPT just after executing an int3, before its
    /// SIGTRAP is dequeued (job-control traps are reported first). Detaching it then would hand
    /// it a SIGTRAP nobody handles. So: rewind it to the breakpoint and take the signal's
    /// delivery stop now, suppressing it. Returns another signal that stopped it meanwhile, to
    /// deliver on detach.
    fn consume_pending_trap(&mut self, tid: i32) -> Held {
        let Ok(mut regs) = process::getregs(tid) else {
            return Held::Stopped(None);
        };
        let bp = regs.rip.wrapping_sub(1);
        if !self.breakpoints.is_ours(bp) || !trap_pending(tid) {
            return Held::Stopped(None);
        }
        regs.rip = bp;
        if process::setregs(tid, regs).is_err() {
            return Held::Stopped(None);
        }
        let mut other = None;
        let deadline = Instant::now() + FIXUP_TIMEOUT;
        for _ in 0..8 {
            if process::cont(tid, 0).is_err() {
                return Held::Lost;
            }
            match self.wakeup.wait_stop(tid, deadline, false) {
                Ok(Some(Stop::Signal {
                    signal: SIGTRAP, ..
                })) => {
                    // Delivery stop of the breakpoint's SIGTRAP: it is dropped by not passing it.
                    // The thread did not run, so its pc is still the breakpoint.
                    return Held::Stopped(other.or(Some(0)));
                }
                Ok(Some(Stop::Signal { signal, .. })) => other = Some(signal),
                Ok(Some(Stop::Event { .. } | Stop::Syscall { .. })) => {}
                Ok(Some(Stop::Exited { .. } | Stop::Killed { .. })) => {
                    self.threads.remove(tid);
                    return Held::Lost;
                }
                Ok(None) | Err(_) => return Held::Lost,
            }
        }
        Held::Stopped(other)
    }

    /// Moves a thread that is inside an out-of-line copy back into the program's code, at the
    /// place the program is at (see [`super::breakpoints::Breakpoints::program_pc_for`]). No
    /// single-step: a step whose tracer is killed leaves the trap flag set, and the thread's
    /// next instruction would raise a SIGTRAP nobody handles. False when the thread cannot be
    /// moved (then the scratch area stays for it).
    fn move_out_of_scratch(&mut self, tid: i32) -> bool {
        let Ok(mut regs) = process::getregs(tid) else {
            return false;
        };
        if !self.scratch.contains(regs.rip) {
            return true;
        }
        match self.breakpoints.program_pc_for(regs.rip) {
            Some(pc) => {
                regs.rip = pc;
                process::setregs(tid, regs).is_ok()
            }
            None => false,
        }
    }
}

/// A thread after a fix-up: still held stopped (with a signal to deliver on detach, if one
/// came), or running again.
enum Held {
    Stopped(Option<i32>),
    Lost,
}

/// Whether SIGTRAP is pending for this thread (its private pending set in /proc).
fn trap_pending(tid: i32) -> bool {
    process::status_field(tid, "SigPnd")
        .and_then(|m| u64::from_str_radix(&m, 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGTRAP - 1)) != 0)
}
