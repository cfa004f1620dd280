//! Work done in the target's own context: a thread stopped on purpose, and system calls run in
//! it (`mmap`/`munmap` of scratch areas, `rt_sigaction` for the fail-safe).
//!
//! An injected call changes a thread's registers for a moment. If periscope were killed in
//! that moment, the kernel would resume the thread with those registers, in the middle of
//! someone else's code. So the call runs from a small stub of ours rather than from a `syscall`
//! instruction found in libc: the stub makes the call, then puts back every register from a
//! copy stored beside it and jumps to where the thread was. With periscope alive the thread is
//! run from the call's entry stop to its exit stop (syscall stops, never a single-step, whose
//! trap flag would outlive a killed tracer) and the tracer restores the registers itself;
//! without periscope the stub finishes the job. The stub lives in the page padding after an executable
//! segment (bytes that belong to no segment, so no code of the program ever runs there) or, when
//! no object has enough padding, in a scratch area (never in one the call unmaps).

use super::Engine;
use crate::error::NativeError;
use crate::failsafe;
use crate::process::{self, Regs, Stop};
use iced_x86::code_asm::*;
use std::time::{Duration, Instant};

const SIGTRAP: i32 = libc::SIGTRAP;
const PTRACE_EVENT_STOP: i32 = 128;

/// How long one stop of a thread for our own work may take to come (generous: a loaded machine
/// may take a while to schedule the thread; a signal to periscope ends the wait at once).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks a stub left behind by a killed periscope, so the next attach can remove it.
pub(crate) const STUB_MAGIC: &[u8; 16] = b"PERISCOPE-INJECT";

/// Room a stub needs: code, the saved registers, the magic.
pub(crate) const STUB_SIZE: u64 = 320;

/// Where a stub can be written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StubPlace {
    pub(crate) address: u64,
    /// Padding bytes are put back after each call; a scratch area's are ours.
    pub(crate) padding: bool,
}

/// Executable-segment padding in the target: `(run-time address, length, object)`.
pub(crate) fn paddings(target: &crate::target::Target) -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    for (oi, o) in target.objects.iter().enumerate() {
        for s in o.index.segments.iter().filter(|s| s.executable) {
            let end = o
                .bias
                .wrapping_add(s.vaddr)
                .wrapping_add(s.memsz.max(s.filesz));
            let page_end = (end + 0xfff) & !0xfff;
            let mapped = o
                .ranges
                .iter()
                .any(|(lo, hi)| end >= *lo && page_end <= *hi);
            if mapped && page_end > end {
                out.push((end, page_end - end, oi));
            }
        }
    }
    out
}

/// The registers a thread resumes with when the stub finishes it: the saved ones, with a system
/// call that our stop interrupted set up to restart (as the kernel itself does when a tracer
/// resumes it, and as it would not do for a jump back into user code).
fn resume_regs(saved: &Regs) -> Regs {
    const ERESTARTSYS: i64 = 512;
    const ERESTARTNOINTR: i64 = 513;
    const ERESTARTNOHAND: i64 = 514;
    const ERESTART_RESTARTBLOCK: i64 = 516;
    let mut r = *saved;
    if (saved.orig_rax as i64) >= 0 {
        match -(saved.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = saved.orig_rax;
                r.rip = saved.rip.wrapping_sub(2);
            }
            ERESTART_RESTARTBLOCK => {
                r.rax = libc::SYS_restart_syscall as u64;
                r.rip = saved.rip.wrapping_sub(2);
            }
            _ => {}
        }
    }
    r
}

/// What the stub's call makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubCall {
    /// An ordinary call: one thread comes out of it.
    Plain,
    /// A fork (replay's copy): two come out. Only the parent goes back to the program; a copy
    /// that ever ran the stub on its own (periscope killed before taking it over) exits at once
    /// rather than run the program's code a second time.
    Fork,
}

/// Assembles a stub at `at`: `syscall`, then every general register, the flags and the stack
/// pointer back from `resume`, and a jump to `resume.rip`. The flags are restored through a
/// push below the red zone (the 128 bytes under the stack pointer a leaf function may use).
pub(crate) fn stub_code(at: u64, resume: &Regs, call: StubCall) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let fields: [(u64, &str); 19] = [
        (resume.rbx, "rbx"),
        (resume.rcx, "rcx"),
        (resume.rdx, "rdx"),
        (resume.rsi, "rsi"),
        (resume.rdi, "rdi"),
        (resume.rbp, "rbp"),
        (resume.r8, "r8"),
        (resume.r9, "r9"),
        (resume.r10, "r10"),
        (resume.r11, "r11"),
        (resume.r12, "r12"),
        (resume.r13, "r13"),
        (resume.r14, "r14"),
        (resume.r15, "r15"),
        (resume.rsp.wrapping_sub(256), "rsp_low"),
        (resume.eflags & !0x100, "rflags"), // never resume single-stepping
        (resume.rsp, "rsp"),
        (resume.rax, "rax"),
        (resume.rip, "rip"),
    ];
    let mut labels: Vec<CodeLabel> = fields.iter().map(|_| a.create_label()).collect();
    let l = |i: usize| qword_ptr(labels[i]);
    a.syscall()?;
    if call == StubCall::Fork {
        let mut parent = a.create_label();
        a.test(rax, rax)?;
        a.jnz(parent)?;
        a.mov(eax, libc::SYS_exit_group as u32)?;
        a.xor(edi, edi)?;
        a.syscall()?;
        a.set_label(&mut parent)?;
        a.nop()?; // a label needs an instruction to sit on
    }
    let gprs = [
        rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    for (i, reg) in gprs.into_iter().enumerate() {
        a.mov(reg, l(i))?;
    }
    a.mov(rsp, l(14))?;
    a.push(l(15))?;
    a.popfq()?;
    a.mov(rsp, l(16))?; // mov leaves the flags alone
    a.mov(rax, l(17))?;
    a.jmp(l(18))?;
    for (i, (value, _)) in fields.iter().enumerate() {
        a.set_label(&mut labels[i])?;
        a.dq(&[*value])?;
    }
    a.db(STUB_MAGIC)?;
    a.assemble(at)
}

impl Engine {
    /// Interrupts the thread-group leader (or any live thread), runs `f` while it is stopped,
    /// then resumes it as it was. Bounded: an error if the thread does not stop in time.
    pub(crate) fn with_stopped_leader<T>(
        &mut self,
        f: impl FnOnce(&mut Engine, i32) -> Result<T, NativeError>,
    ) -> Result<T, NativeError> {
        let tid = self
            .threads
            .pick(self.pid as i32)
            .ok_or(NativeError::TargetExited)?;
        process::interrupt(tid).map_err(|e| NativeError::ptrace("INTERRUPT", tid, e))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        let resume_sig = loop {
            let stop = self
                .wakeup
                .wait_stop(tid, deadline, true)
                .map_err(|e| NativeError::ptrace("WAIT", tid, e))?;
            match stop {
                None => {
                    return Err(match self.wakeup.signalled.clone() {
                        Some(signal) => NativeError::Interrupted { signal },
                        None => NativeError::Timeout {
                            what: format!("thread {tid} of the target to stop"),
                            limit: STOP_TIMEOUT,
                        },
                    })
                }
                Some(Stop::Event {
                    event: PTRACE_EVENT_STOP,
                    ..
                }) => break 0,
                // Any other ptrace-stop that comes first satisfies the interrupt (ptrace(2)): no
                // PTRACE_EVENT_STOP follows it, so after resuming from one we interrupt again.
                Some(Stop::Signal {
                    signal: SIGTRAP, ..
                }) if self.breakpoints.any() => {
                    self.on_trap(tid);
                    let _ = process::interrupt(tid);
                }
                Some(Stop::Signal { signal, .. }) => break signal,
                // Left from an injected call that ran out of time: a stop all the same.
                Some(Stop::Syscall { .. }) => break 0,
                Some(Stop::Event { event, signal, .. }) => {
                    // Inside clone/fork/exec: no syscall may be injected there (its result
                    // would land on top of ours). Record what it created, let it finish the
                    // call, and stop it again.
                    if let Some(reason) = self.on_event(tid, event, signal) {
                        return Err(NativeError::Io {
                            what: "stop the target".into(),
                            source: std::io::Error::other(format!("{reason:?}")),
                        });
                    }
                    let _ = process::interrupt(tid);
                }
                Some(Stop::Exited { .. }) | Some(Stop::Killed { .. }) => {
                    self.threads.remove(tid);
                    return Err(NativeError::TargetExited);
                }
            }
        };
        // The signal that stopped it is delivered when it resumes (see `inject_syscall`, which
        // must know whether one will be).
        if resume_sig != 0 {
            self.pending_signals.entry(tid).or_insert(resume_sig);
        }
        let result = f(self, tid);
        self.resume(tid, 0);
        result
    }

    /// Runs one system call in a stopped thread and restores it (see the module's docs for why
    /// it runs from a stub of ours). `unmaps`: the range the call unmaps, where no stub may be.
    pub(crate) fn inject_syscall(
        &mut self,
        tid: i32,
        nr: i64,
        args: [u64; 6],
        unmaps: Option<(u64, u64)>,
    ) -> Result<i64, NativeError> {
        self.inject(tid, nr, args, unmaps, StubCall::Plain)
    }

    /// Forks the process from a stopped thread, with no signal to the parent when the copy
    /// ends (`clone` with an exit signal of 0: the program's own `wait` for its children does
    /// not see it either). Returns the copy's pid; it starts traced by us, stopped.
    pub(crate) fn inject_fork(&mut self, tid: i32) -> Result<i32, NativeError> {
        let r = self.inject(tid, libc::SYS_clone, [0; 6], None, StubCall::Fork)?;
        if r <= 0 {
            return Err(NativeError::Io {
                what: "fork a copy of the target".into(),
                source: std::io::Error::from_raw_os_error((-r) as i32),
            });
        }
        // `clone` returned the copy's pid in the target's pid namespace (a container's);
        // ptrace, waits and kill take the host's.
        let host = crate::namespace::host_child(self.pid, tid, r as u32)
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| NativeError::Io {
                what: format!("find the host pid of the copy (pid {r} in the target's namespace)"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        Ok(host)
    }

    fn inject(
        &mut self,
        tid: i32,
        nr: i64,
        args: [u64; 6],
        unmaps: Option<(u64, u64)>,
        call: StubCall,
    ) -> Result<i64, NativeError> {
        let saved = process::getregs(tid)?;
        let place = self.stub_place(unmaps);
        let mut original = Vec::new();
        let entry = match place {
            Some(p) => {
                let code = stub_code(p.address, &resume_regs(&saved), call).map_err(|e| {
                    NativeError::Breakpoint {
                        address: p.address,
                        reason: format!("cannot assemble the call stub: {e}"),
                    }
                })?;
                if p.padding {
                    original = vec![0u8; code.len()];
                    self.mem.read(p.address, &mut original)?;
                }
                self.mem.write(p.address, &code)?;
                p.address
            }
            // A copy must never run the program's code after the call on its own.
            None if call == StubCall::Fork => {
                return Err(NativeError::Breakpoint {
                    address: 0,
                    reason: "no room for the call stub that makes a copy".into(),
                })
            }
            // No padding and no scratch area yet: an existing `syscall` instruction, with the
            // window the module's docs describe (reported in the README's risks).
            None => self.find_syscall_instruction()?,
        };
        let mut regs = saved;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX; // not in a syscall: no restart logic on resume
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = entry;
        process::setregs(tid, regs)?;
        let result = self.run_syscall(tid);
        // Put the registers back whatever happened; if the thread is gone this fails harmlessly.
        // The thread resumes from the call's exit stop, where the kernel does not restart a
        // system call that our stop interrupted (it would from a signal stop): so it gets its
        // registers with that restart already done, as the stub does. Unless a signal is to be
        // delivered on resume: that delivery restarts or interrupts the call as it should.
        let back = if self.pending_signals.contains_key(&tid) {
            saved
        } else {
            resume_regs(&saved)
        };
        let restored = process::setregs(tid, back);
        match (&result, place) {
            // The thread is stopped with its own registers again: the stub can go.
            (Ok(_), Some(p)) if p.padding && restored.is_ok() => {
                let _ = self.mem.write(p.address, &original);
            }
            // Otherwise the thread may still be on its way through the stub: leave it there
            // (the next attach removes it by its magic).
            (Err(_), Some(p)) if p.padding => {
                self.left_behind
                    .push(format!("a call stub at {:#x}", p.address));
            }
            _ => {}
        }
        let r = result?;
        restored?;
        Ok(r)
    }

    /// Runs the thread through the `syscall` at its pc, from its entry stop to its exit stop;
    /// returns the call's result. Syscall stops, not a single-step: if periscope dies meanwhile
    /// the kernel drops syscall tracing with the tracer and the thread runs on through the
    /// stub, where a single-step would have left the trap flag set.
    fn run_syscall(&mut self, tid: i32) -> Result<i64, NativeError> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut entered = false;
        loop {
            process::syscall(tid, 0).map_err(|e| NativeError::ptrace("SYSCALL", tid, e))?;
            let stop = self
                .wakeup
                .wait_stop(tid, deadline, false)
                .map_err(|e| NativeError::ptrace("WAIT", tid, e))?;
            match stop {
                Some(Stop::Syscall { .. }) if entered => {
                    return Ok(process::getregs(tid)?.rax as i64)
                }
                Some(Stop::Syscall { .. }) => entered = true,
                // A signal for the thread meanwhile: held, delivered when it resumes as itself.
                Some(Stop::Signal { signal, .. }) => {
                    self.pending_signals.insert(tid, signal);
                }
                Some(Stop::Exited { .. }) | Some(Stop::Killed { .. }) => {
                    self.threads.remove(tid);
                    return Err(NativeError::TargetExited);
                }
                Some(Stop::Event { .. }) => {}
                None => {
                    return Err(NativeError::Timeout {
                        what: format!("a system call run in thread {tid} to finish"),
                        limit: STOP_TIMEOUT,
                    })
                }
            }
        }
    }

    /// Padding first (always there, whatever is unmapped), then a scratch area the call keeps.
    fn stub_place(&self, unmaps: Option<(u64, u64)>) -> Option<StubPlace> {
        let padding = paddings(&self.target)
            .into_iter()
            .find(|(_, len, _)| *len >= STUB_SIZE)
            .map(|(address, _, _)| StubPlace {
                address,
                padding: true,
            });
        padding.or_else(|| {
            self.scratch
                .bases()
                .find(|b| !unmaps.is_some_and(|(lo, len)| *b >= lo && *b < lo + len))
                .map(|b| StubPlace {
                    address: b + failsafe::STUB_OFFSET,
                    padding: false,
                })
        })
    }

    fn find_syscall_instruction(&self) -> Result<u64, NativeError> {
        for m in crate::maps::read(self.pid)?
            .iter()
            .filter(|m| m.perms.contains('x') && m.path != "[vsyscall]")
        {
            let mut addr = m.start;
            while addr + 1 < m.end {
                let len = (m.end - addr).min(1 << 16) as usize;
                let mut buf = vec![0u8; len];
                if self.mem.read(addr, &mut buf).is_err() {
                    break;
                }
                if let Some(i) = buf.windows(2).position(|w| w == [0x0f, 0x05]) {
                    let a = addr + i as u64;
                    // Not inside one of our own breakpoints' bytes.
                    if !self.breakpoints.is_live(a) {
                        return Ok(a);
                    }
                }
                addr += len as u64 - 1;
            }
        }
        Err(NativeError::Breakpoint {
            address: 0,
            reason: "no syscall instruction found in the target's code".into(),
        })
    }

    /// rt_sigaction(2) in the target, with the structs on the stopped thread's stack, below the
    /// red zone (memory the program does not use while the thread is stopped). Returns the old
    /// action.
    pub(crate) fn sigaction(
        &mut self,
        tid: i32,
        sig: i32,
        new: Option<&failsafe::KernelSigaction>,
    ) -> Result<failsafe::KernelSigaction, NativeError> {
        let stack = process::getregs(tid)?.rsp;
        let new_at = (stack - 1024) & !0xf;
        let old_at = new_at - 64;
        if let Some(n) = new {
            self.mem.write(new_at, &n.to_bytes())?;
        }
        let r = self.inject_syscall(
            tid,
            libc::SYS_rt_sigaction,
            [
                sig as u64,
                if new.is_some() { new_at } else { 0 },
                old_at,
                8,
                0,
                0,
            ],
            None,
        )?;
        if r < 0 {
            return Err(NativeError::Breakpoint {
                address: 0,
                reason: format!("rt_sigaction in the target failed: errno {}", -r),
            });
        }
        let mut b = [0u8; 32];
        self.mem.read(old_at, &mut b)?;
        failsafe::KernelSigaction::from_bytes(&b).ok_or(NativeError::Breakpoint {
            address: old_at,
            reason: "short sigaction".into(),
        })
    }

    /// Puts back the bytes of call stubs a killed periscope left in padding (found by their
    /// magic), from the object files themselves.
    pub(crate) fn remove_leftover_stubs(&mut self) -> usize {
        let mut removed = 0;
        for (addr, len, oi) in paddings(&self.target) {
            let mut buf = vec![0u8; len as usize];
            if self.mem.read(addr, &mut buf).is_err() {
                continue;
            }
            if !buf.windows(STUB_MAGIC.len()).any(|w| w == STUB_MAGIC) {
                continue;
            }
            if let Some(original) = self.file_bytes(oi, addr, len) {
                if self.mem.write(addr, &original).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// The bytes the object's file has for run-time range `[addr, addr + len)` of its mapping.
    fn file_bytes(&self, object: usize, addr: u64, len: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let o = &self.target.objects[object];
        let file_addr = addr.wrapping_sub(o.bias);
        let seg = o.index.segments.iter().find(|s| {
            s.executable
                && file_addr >= s.vaddr
                && file_addr < (s.vaddr + s.memsz.max(s.filesz) + 0xfff) & !0xfff
        })?;
        let offset = seg.offset + (file_addr - seg.vaddr);
        let path = format!("/proc/{}/root{}", self.pid, o.index.path.display());
        let f = std::fs::File::open(path).ok()?;
        // Bytes of the last page past the end of the file read as zero in the mapping.
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => return None,
            }
        }
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_fits_its_room() {
        let regs: Regs = unsafe { std::mem::zeroed() };
        let code = stub_code(0x7f00_0000_1000, &regs, StubCall::Plain).unwrap();
        assert!(code.len() as u64 <= STUB_SIZE, "{} bytes", code.len());
        let fork = stub_code(0x7f00_0000_1000, &regs, StubCall::Fork).unwrap();
        assert!(fork.len() as u64 <= STUB_SIZE, "{} bytes", fork.len());
        assert_eq!(
            &code[..2],
            &[0x0f, 0x05],
            "the stub starts with its syscall"
        );
        assert!(code.ends_with(STUB_MAGIC));
    }

    #[test]
    fn an_interrupted_call_is_set_to_restart() {
        let mut regs: Regs = unsafe { std::mem::zeroed() };
        regs.orig_rax = 202; // futex
        regs.rax = (-512i64) as u64;
        regs.rip = 0x1002;
        let r = resume_regs(&regs);
        assert_eq!((r.rax, r.rip), (202, 0x1000));
        regs.rax = 0;
        let r = resume_regs(&regs);
        assert_eq!((r.rax, r.rip), (0, 0x1002));
    }
}
