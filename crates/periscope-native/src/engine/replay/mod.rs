//! Replay mode of verify: at a hit of FROM the process is copied (a fork run in the stopped
//! thread), and the copy, never the original, runs on with a candidate's assignments written
//! at each hit of the probe's location, until UNTIL, where the failure and the kept results are
//! read. The original's own run to UNTIL gives the real values; the pair decides the cell.
//!
//! The copy must not touch the world. It is traced from its first instruction, with every
//! system call stopped at its entry: memory management runs, anything else is refused (the
//! copy is killed before the call executes) and the replay is `inconclusive`, naming the call.
//! It is killed if periscope dies (`PTRACE_O_EXITKILL`, set before it runs any code), and if it
//! does not reach UNTIL by a deadline. One copy at a time per process, at most `rate_limit`
//! (default 1) a second per probe.
//!
//! The copy is the target's child, made with no exit signal, so the program's own `wait` never
//! sees it; when it has ended it is reaped by a `wait4` run in the target the next time one of
//! its threads is stopped for us (at the next FROM, or at teardown).

use super::verify::{bool_value, compare_kept};
use super::Engine;
use crate::eval::Evaluator;
use crate::frame::Frame;
use crate::process::{self, Memory, Regs, Stop};
use crate::resolve::SiteRole;
use crate::values::Reader;
use periscope_core::event::{now_rfc3339, Body, LogEvent};
use periscope_core::value::{Fields, Value};
use periscope_core::verify::{group_key, Cell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

mod reap;
mod write;

/// How long a copy (and the original) may take from FROM to UNTIL.
const DEADLINE: Duration = Duration::from_secs(1);
/// System calls a copy may make: memory management only (x86-64 numbers).
const ALLOWED: [i64; 6] = [
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
];

/// What one side (the original, or the copy) showed at UNTIL: whether the failure held, and
/// the kept results; or why it could not tell.
type Outcome = Result<(bool, Vec<Value>), String>;

/// A copy in flight.
struct Copy {
    probe: usize,
    fix: usize,
    pid: i32,
    /// The original's thread it was copied from: its UNTIL gives the real outcome.
    thread: i32,
    mem: Memory,
    deadline: Instant,
    /// The copy still exists as a tracee (its exit not yet seen).
    alive: bool,
    /// The original thread's registers at FROM, for the copy to start from; taken when its
    /// first stop comes (the original is not held for it).
    start: Option<Regs>,
    /// The copy is between a system call's entry and exit stops.
    in_syscall: bool,
    real: Option<Outcome>,
    fixed: Option<Outcome>,
    /// What the fix assigned in the copy, as evidence.
    assigned: Vec<(String, Value)>,
    location: String,
    function: String,
}

#[derive(Default)]
pub(crate) struct Replays {
    copy: Option<Copy>,
    /// Per probe: when its last copy was made, and the candidate its next copy runs.
    last_start: HashMap<usize, Instant>,
    next_fix: HashMap<usize, usize>,
    /// Ended copies still to be reaped in the target.
    zombies: Vec<i32>,
}

impl Replays {
    /// Whether `tid` is a live copy (its stops are ours, not the program's).
    pub(crate) fn is_copy(&self, tid: i32) -> bool {
        self.copy.as_ref().is_some_and(|c| c.pid == tid && c.alive)
    }

    /// When the copy in flight must be done.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.copy.as_ref().map(|c| c.deadline)
    }
}

impl Engine {
    /// A hit of a replay probe's site in the original.
    pub(crate) fn replay_hit(&mut self, tid: i32, pi: usize, si: usize, regs: &Regs) {
        match self.probes[pi].role(si) {
            SiteRole::From => {
                if let Some(c) = self.replays.copy.as_mut() {
                    if c.thread == tid && c.real.is_none() {
                        c.real = Some(Err(
                            "the original thread began FROM again before reaching UNTIL".into(),
                        ));
                        self.finish_copy_if_done();
                    }
                    return;
                }
                self.reap_copies(tid);
                if self.may_start(pi) {
                    self.start_copy(tid, pi, si, regs);
                }
            }
            SiteRole::Until => {
                let waiting = self
                    .replays
                    .copy
                    .as_ref()
                    .is_some_and(|c| c.probe == pi && c.thread == tid && c.real.is_none());
                if waiting {
                    let real = self.outcome_at(pi, si, regs, &self.mem, tid);
                    if let Some(c) = self.replays.copy.as_mut() {
                        c.real = Some(real);
                    }
                    self.finish_copy_if_done();
                }
            }
            // The fix is applied in the copy only; the original runs as it is.
            SiteRole::Location => {}
        }
    }

    fn may_start(&mut self, pi: usize) -> bool {
        let rate = self.probes[pi].spec.rate_limit.unwrap_or(1.0).max(0.001);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let now = Instant::now();
        match self.replays.last_start.get(&pi) {
            Some(t) if now.duration_since(*t) < interval => false,
            _ => {
                self.replays.last_start.insert(pi, now);
                true
            }
        }
    }

    /// Makes the copy from thread `tid`, stopped at FROM with `regs` (pc rewound to the
    /// breakpoint), and sets it running under system-call tracing.
    fn start_copy(&mut self, tid: i32, pi: usize, si: usize, regs: &Regs) {
        let fixes = match &self.probes[pi].spec.action {
            crate::probe::Action::Verify { fixes, .. } => fixes.len(),
            _ => return,
        };
        let fix = *self.replays.next_fix.entry(pi).or_insert(0) % fixes.max(1);
        self.replays.next_fix.insert(pi, fix + 1);
        let (location, function) = {
            let r = &self.probes[pi];
            let until = r.replay.map_or(0, |s| s.until);
            let s = r.sites.get(until).unwrap_or(&r.sites[si]);
            (s.short_location(), s.function.clone())
        };
        let pid = match self.inject_fork(tid) {
            Ok(pid) => pid,
            Err(e) => {
                let msg = format!("replay: could not make a copy of the process: {e}");
                self.report_error(pi, tid, location, msg);
                return;
            }
        };
        self.replays.copy = Some(Copy {
            probe: pi,
            fix,
            pid,
            thread: tid,
            mem: Memory::new(pid as u32),
            deadline: Instant::now() + DEADLINE,
            alive: true,
            start: Some(*regs),
            in_syscall: false,
            real: None,
            fixed: None,
            assigned: Vec::new(),
            location,
            function,
        });
    }

    /// At the copy's first stop: makes it die with us, and puts it where the original was:
    /// trapped on the breakpoint at FROM, handled like any trap of the copy (FROM's address may
    /// be the location's too, where the fix applies).
    fn take_over_copy(&mut self, pid: i32, regs: &Regs) -> Result<(), String> {
        // Before it runs a single instruction: killed if periscope dies.
        let options = process::trace_options() | nix::sys::ptrace::Options::PTRACE_O_EXITKILL;
        nix::sys::ptrace::setoptions(process::pid(pid), options)
            .map_err(|e| format!("ptrace options of the copy: {e}"))?;
        if let Some(c) = self.replays.copy.as_mut() {
            c.mem
                .open_for_writing()
                .map_err(|e| format!("the copy's memory: {e}"))?;
        }
        let mut r = *regs;
        r.rip = regs.rip.wrapping_add(1); // just past the int3, as after a trap
        process::setregs(pid, r).map_err(|e| e.to_string())?;
        self.copy_trap(pid);
        Ok(())
    }

    /// A stop of the copy.
    pub(crate) fn on_copy_stop(&mut self, stop: Stop) {
        let Some(copy) = self.replays.copy.as_mut() else {
            return;
        };
        let pid = copy.pid;
        if let (Some(regs), false) = (
            copy.start,
            matches!(stop, Stop::Exited { .. } | Stop::Killed { .. }),
        ) {
            copy.start = None;
            if let Err(why) = self.take_over_copy(pid, &regs) {
                if let Some(c) = self.replays.copy.as_mut() {
                    c.fixed.get_or_insert(Err(why));
                    kill(c);
                }
            }
            return;
        }
        match stop {
            Stop::Exited { code, .. } => {
                copy.alive = false;
                self.replays.zombies.push(pid);
                copy.fixed
                    .get_or_insert(Err(format!("the copy exited (status {code}) before UNTIL")));
                self.finish_copy_if_done();
            }
            Stop::Killed { signal, .. } => {
                copy.alive = false;
                self.replays.zombies.push(pid);
                copy.fixed.get_or_insert(Err(format!(
                    "the copy was killed by {} before UNTIL",
                    signal_name(signal)
                )));
                self.finish_copy_if_done();
            }
            Stop::Syscall { .. } => {
                if copy.in_syscall {
                    copy.in_syscall = false;
                    let _ = process::syscall(pid, 0);
                    return;
                }
                copy.in_syscall = true;
                let nr = process::getregs(pid)
                    .map(|r| r.orig_rax as i64)
                    .unwrap_or(-1);
                if ALLOWED.contains(&nr) {
                    let _ = process::syscall(pid, 0);
                    return;
                }
                // Refused: the call is skipped and the copy killed before it could run.
                if let Ok(mut r) = process::getregs(pid) {
                    r.orig_rax = u64::MAX;
                    let _ = process::setregs(pid, r);
                }
                copy.fixed.get_or_insert(Err(format!(
                    "the copy made a system call (`{}`) before UNTIL; a copy may only manage memory, so it was stopped",
                    syscall_name(nr)
                )));
                kill(copy);
            }
            Stop::Signal {
                signal: libc::SIGTRAP,
                ..
            } => self.copy_trap(pid),
            Stop::Signal { signal, .. } => {
                copy.fixed.get_or_insert(Err(format!(
                    "the copy got {} before UNTIL",
                    signal_name(signal)
                )));
                kill(copy);
            }
            // A group stop or another ptrace event: the copy just goes on.
            Stop::Event { .. } => {
                let _ = process::syscall(pid, 0);
            }
        }
    }

    /// The copy on a breakpoint: the fix written at the location, the outcome read at UNTIL,
    /// any other breakpoint stepped over.
    fn copy_trap(&mut self, pid: i32) {
        let Ok(mut regs) = process::getregs(pid) else {
            return;
        };
        let Some(pi) = self.replays.copy.as_ref().map(|c| c.probe) else {
            return;
        };
        let addr = regs.rip.wrapping_sub(1);
        if !self.breakpoints.is_live(addr) && !self.breakpoints.is_retired(addr) {
            if let Some(c) = self.replays.copy.as_mut() {
                c.fixed
                    .get_or_insert(Err("the copy hit a trap of the program's own".into()));
                kill(c);
            }
            return;
        }
        regs.rip = addr;
        // A breakpoint removed since the copy was made is still in the copy's code: put the
        // original byte back there, as it is in the original.
        if let Some(byte) = self.breakpoints.retired_original(addr) {
            if let Some(c) = self.replays.copy.as_ref() {
                let _ = c.mem.write(addr, &[byte]);
            }
        }
        for (p, si, cfa_rule) in self.breakpoints.sites_at(addr) {
            if p != pi {
                continue;
            }
            let cfa = cfa_rule.and_then(|r| r.eval(&regs));
            match self.probes[pi].role(si) {
                SiteRole::Location => {
                    if !self.is_repeat(pid, pi, si, addr, cfa) {
                        self.apply_fix(pi, si, &mut regs, cfa);
                    }
                }
                SiteRole::Until => {
                    let Some(copy) = self.replays.copy.as_ref() else {
                        return;
                    };
                    let fixed = self.outcome_at(pi, si, &regs, &copy.mem, pid);
                    if let Some(c) = self.replays.copy.as_mut() {
                        c.fixed.get_or_insert(fixed);
                        kill(c);
                    }
                    self.finish_copy_if_done();
                    return;
                }
                SiteRole::From => {}
            }
        }
        let Some(copy) = self.replays.copy.as_ref() else {
            return;
        };
        if let Err(e) = self.step_past(addr, &mut regs, &copy.mem) {
            if let Some(c) = self.replays.copy.as_mut() {
                c.fixed.get_or_insert(Err(e.to_string()));
                kill(c);
            }
            return;
        }
        let _ = process::setregs(pid, regs);
        let _ = process::syscall(pid, 0);
    }

    /// Writes the candidate's assignments into the copy, in order (each sees the ones before).
    fn apply_fix(&mut self, pi: usize, si: usize, regs: &mut Regs, cfa: Option<u64>) {
        let Some(copy) = self.replays.copy.as_ref() else {
            return;
        };
        let probe = &self.probes[pi];
        let crate::probe::Action::Verify { fixes, .. } = &probe.spec.action else {
            return;
        };
        let Some(fix) = fixes.get(copy.fix) else {
            return;
        };
        let site = &probe.sites[si];
        let object = &self.target.objects[site.object];
        let frame = Frame::at_site(&self.target, site, &copy.mem, *regs, copy.pid, cfa);
        let reader = Reader::new(
            &object.index,
            &copy.mem,
            probe.spec.limits,
            &probe.spec.redactor,
        )
        .with_target(&self.target);
        let ev = Evaluator::new(&frame, &reader, &site.visible.vars, &site.function);
        let code = self.original_code(site.address, &copy.mem);
        let mut assigned = Vec::new();
        let mut failed = None;
        let mut new_regs = *regs;
        for (target, value) in &fix.assigns {
            let written = ev.eval(value).and_then(|v| ev.scalar(v)).and_then(|v| {
                let w = write::write_place(&ev, target, &v, &copy.mem)?;
                Ok((v, w))
            });
            match written {
                Ok((v, w)) => {
                    assigned.push((format!("{target} (fixed)"), ev.to_value(v)));
                    // The code about to run may hold the old value in a register it loaded
                    // before the line: that copy gets the new value too.
                    let synced = write::sync_registers(&mut new_regs, &code, site.address, &w);
                    if !synced.is_empty() {
                        assigned.push((
                            format!("{target} (also in)"),
                            Value::String {
                                ty: None,
                                len: 0,
                                value: synced.join(", "),
                                truncated: false,
                            },
                        ));
                    }
                }
                Err(e) => {
                    failed = Some(format!("`{target} = {value}` in the copy: {e}"));
                    break;
                }
            }
        }
        *regs = new_regs;
        if let Some(c) = self.replays.copy.as_mut() {
            c.assigned = assigned;
            if let Some(why) = failed {
                c.fixed.get_or_insert(Err(why));
                kill(c);
            }
        }
    }

    /// The failure and the kept results at an UNTIL site, in the process whose memory is `mem`.
    fn outcome_at(&self, pi: usize, si: usize, regs: &Regs, mem: &Memory, tid: i32) -> Outcome {
        let probe = &self.probes[pi];
        let crate::probe::Action::Verify { failure, keep, .. } = &probe.spec.action else {
            return Err("not a verify probe".into());
        };
        let site = &probe.sites[si];
        let object = &self.target.objects[site.object];
        let cfa =
            crate::unwind::cfa_rule(&object.index, site.file_address).and_then(|r| r.eval(regs));
        let frame = Frame::at_site(&self.target, site, mem, *regs, tid, cfa);
        let reader = Reader::new(&object.index, mem, probe.spec.limits, &probe.spec.redactor)
            .with_target(&self.target);
        let ev = Evaluator::new(&frame, &reader, &site.visible.vars, &site.function);
        let failed = ev
            .condition(failure)
            .map_err(|e| format!("the failure condition at UNTIL: {e}"))?;
        Ok((failed, keep.iter().map(|(_, e)| ev.value(e)).collect()))
    }

    /// Once both sides are in (or the deadline passed), the hit lands in its cell.
    fn finish_copy_if_done(&mut self) {
        let done = self
            .replays
            .copy
            .as_ref()
            .is_some_and(|c| c.real.is_some() && c.fixed.is_some() && !c.alive);
        if !done {
            return;
        }
        let Some(copy) = self.replays.copy.take() else {
            return;
        };
        self.record_replay(copy);
    }

    /// Ends a copy that ran out of time (called by the event loop).
    pub(crate) fn check_copy_deadline(&mut self) {
        let Some(c) = self.replays.copy.as_mut() else {
            return;
        };
        if Instant::now() < c.deadline {
            return;
        }
        let late = format!("did not reach UNTIL within {} ms", DEADLINE.as_millis());
        c.real.get_or_insert(Err(format!("the original {late}")));
        c.fixed.get_or_insert(Err(format!(
            "the copy {late} (a lock held by a thread the copy does not have?)"
        )));
        kill(c);
        if !c.alive {
            self.finish_copy_if_done();
        }
    }

    fn record_replay(&mut self, copy: Copy) {
        let pi = copy.probe;
        if self.done[pi] {
            return; // the probe ended while the copy ran
        }
        let crate::probe::Action::Verify {
            failure,
            keep,
            fixes,
            ..
        } = &self.probes[pi].spec.action
        else {
            return;
        };
        let name = fixes
            .get(copy.fix)
            .map(|f| f.name.clone())
            .unwrap_or_default();
        let mut values = copy.assigned;
        let cell = match (copy.real, copy.fixed) {
            (Some(Ok((real, real_keep))), Some(Ok((fixed, fixed_keep)))) => {
                values.push((failure.to_string(), bool_value(real)));
                values.push((format!("{failure} (fixed)"), bool_value(fixed)));
                let same = compare_kept(keep, &real_keep, &fixed_keep, &mut values);
                Cell::of(real, fixed, same)
            }
            (real, fixed) => {
                let why = [real, fixed]
                    .into_iter()
                    .filter_map(|o| o.and_then(Result::err))
                    .collect::<Vec<_>>()
                    .join("; ");
                values.push(("reason".into(), Value::unavailable(None, why)));
                Cell::Inconclusive
            }
        };
        let key = group_key(&name, cell);
        let seen = self.tallies_of(pi).get(&key).copied().unwrap_or(0);
        let max = self.probes[pi].spec.max_hits;
        let mut reached = false;
        self.tally(pi, |t| {
            t.hits += 1;
            *t.counts.entry((copy.thread, Some(key))).or_insert(0) += 1;
            reached = max.is_some_and(|m| t.hits >= m);
        });
        if seen < super::hit::VERIFY_EXAMPLES {
            let example = periscope_core::verify::Example { fix: name, cell };
            let e = LogEvent {
                ts: now_rfc3339(),
                pid: self.pid,
                ns_pid: None,
                tid: copy.thread as u32,
                ns_tid: None,
                goroutine: None,
                location: copy.location,
                probe: self.probes[pi].spec.id.clone(),
                function: Some(copy.function),
                message: example.message(),
                values: Fields(values),
                engine: Some("ptrace".into()),
                verify: Some(example),
            };
            self.emit(super::EngineEvent::Event(Body::Log(e)));
        }
        if reached {
            self.end_probe(pi, crate::probe::ProbeState::HitLimit);
        }
    }

    /// Kills the copy of probe `pi`, which ended: its breakpoints are gone from the original
    /// (the copy still has them, and nobody would count its outcome).
    pub(crate) fn kill_copy_of(&mut self, pi: usize) {
        if let Some(c) = self.replays.copy.as_mut().filter(|c| c.probe == pi) {
            kill(c);
        }
    }
}

impl Engine {
    /// The program's code at `addr` as compiled (our breakpoints' bytes put back), a few
    /// instructions' worth.
    fn original_code(&self, addr: u64, mem: &Memory) -> Vec<u8> {
        let mut code = vec![0u8; 96];
        if mem.read(addr, &mut code).is_err() {
            return Vec::new();
        }
        for bp in self.breakpoints.live() {
            if bp.address >= addr && bp.address < addr + code.len() as u64 {
                code[(bp.address - addr) as usize] = bp.original[0];
            }
        }
        code
    }
}

/// SIGKILL for a copy (its exit is collected like any stop).
fn kill(c: &mut Copy) {
    if c.alive {
        // SAFETY: kill(2) on a pid we trace; no memory is involved.
        unsafe { libc::kill(c.pid, libc::SIGKILL) };
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// A system call's name, for the reason a replay was stopped.
fn syscall_name(nr: i64) -> String {
    let known: &[(i64, &str)] = &[
        (libc::SYS_read, "read"),
        (libc::SYS_write, "write"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_open, "open"),
        (libc::SYS_close, "close"),
        (libc::SYS_sendto, "sendto"),
        (libc::SYS_recvfrom, "recvfrom"),
        (libc::SYS_sendmsg, "sendmsg"),
        (libc::SYS_recvmsg, "recvmsg"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_futex, "futex"),
        (libc::SYS_nanosleep, "nanosleep"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep"),
        (libc::SYS_writev, "writev"),
        (libc::SYS_pwrite64, "pwrite64"),
        (libc::SYS_fsync, "fsync"),
        (libc::SYS_exit, "exit"),
        (libc::SYS_exit_group, "exit_group"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_tgkill, "tgkill"),
        (libc::SYS_clone, "clone"),
        (libc::SYS_clone3, "clone3"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_epoll_wait, "epoll_wait"),
        (libc::SYS_poll, "poll"),
        (libc::SYS_getrandom, "getrandom"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_sched_yield, "sched_yield"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("system call {nr}"))
}
