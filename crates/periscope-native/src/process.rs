//! Process control: ptrace requests, wait statuses, registers and memory of a traced process.
//!
//! Invariant: every ptrace request is made from the one OS thread that attached (the kernel ties
//! tracing to that thread). [`crate::session`] owns that thread; nothing else calls in here
//! except the memory readers, which use `process_vm_readv` and work from any thread.
//!
//! Resuming and waiting go through `libc` directly rather than nix: nix's `Signal` cannot hold
//! real-time signals (glibc itself uses SIGRTMIN for thread cancellation and setxid), and a tracer
//! must pass every signal back to the target unchanged.

use crate::error::NativeError;
use nix::sys::ptrace;
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::fs::FileExt;

pub type Regs = libc::user_regs_struct;

pub fn pid(tid: i32) -> Pid {
    Pid::from_raw(tid)
}

/// Options set on every seized thread: follow threads and forks, notice exec, and tell
/// system-call stops (of injected calls) from traps.
pub fn trace_options() -> ptrace::Options {
    ptrace::Options::PTRACE_O_TRACECLONE
        | ptrace::Options::PTRACE_O_TRACEFORK
        | ptrace::Options::PTRACE_O_TRACEVFORK
        | ptrace::Options::PTRACE_O_TRACEEXEC
        | ptrace::Options::PTRACE_O_TRACESYSGOOD
}

pub fn seize(tid: i32) -> Result<(), nix::errno::Errno> {
    ptrace::seize(pid(tid), trace_options())
}

fn request(req: libc::c_uint, tid: i32, data: usize) -> Result<(), nix::errno::Errno> {
    // SAFETY: these requests take no pointers from us (addr is unused, data is a signal number).
    let r = unsafe { libc::ptrace(req, tid, 0usize, data) };
    if r == -1 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(())
    }
}

/// Resumes a stopped thread, delivering `sig` (0 for none).
pub fn cont(tid: i32, sig: i32) -> Result<(), nix::errno::Errno> {
    request(libc::PTRACE_CONT, tid, sig as usize)
}

/// Resumes a stopped thread until its next system-call entry or exit. Unlike a single-step,
/// this leaves nothing behind if the tracer dies: the kernel clears syscall tracing on detach.
pub fn syscall(tid: i32, sig: i32) -> Result<(), nix::errno::Errno> {
    request(libc::PTRACE_SYSCALL, tid, sig as usize)
}

/// The stop signal of a system-call stop (`PTRACE_O_TRACESYSGOOD`).
const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

pub fn detach(tid: i32, sig: i32) -> Result<(), nix::errno::Errno> {
    request(libc::PTRACE_DETACH, tid, sig as usize)
}

pub fn listen(tid: i32) -> Result<(), nix::errno::Errno> {
    request(libc::PTRACE_LISTEN, tid, 0)
}

pub fn interrupt(tid: i32) -> Result<(), nix::errno::Errno> {
    request(libc::PTRACE_INTERRUPT, tid, 0)
}

pub fn get_event_msg(tid: i32) -> Result<u64, nix::errno::Errno> {
    ptrace::getevent(pid(tid)).map(|v| v as u64)
}

pub fn getregs(tid: i32) -> Result<Regs, NativeError> {
    ptrace::getregs(pid(tid)).map_err(|e| NativeError::ptrace("GETREGS", tid, e))
}

pub fn setregs(tid: i32, regs: Regs) -> Result<(), NativeError> {
    ptrace::setregs(pid(tid), regs).map_err(|e| NativeError::ptrace("SETREGS", tid, e))
}

/// Floating-point and SSE registers (for values the compiler keeps in xmm registers).
pub fn getfpregs(tid: i32) -> Option<libc::user_fpregs_struct> {
    let mut fp: libc::user_fpregs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: GETFPREGS writes exactly one user_fpregs_struct into the buffer we pass.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETFPREGS,
            tid,
            0usize,
            &mut fp as *mut libc::user_fpregs_struct,
        )
    };
    (r != -1).then_some(fp)
}

/// What `waitpid` reported about one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Exited {
        tid: i32,
        code: i32,
    },
    Killed {
        tid: i32,
        signal: i32,
    },
    /// Signal-delivery stop: the thread is about to receive `signal`.
    Signal {
        tid: i32,
        signal: i32,
    },
    /// A system-call entry or exit stop (only injected calls are run to these).
    Syscall {
        tid: i32,
    },
    /// A ptrace event (`PTRACE_EVENT_*`); `signal` is the stop signal.
    Event {
        tid: i32,
        event: i32,
        signal: i32,
    },
}

impl Stop {
    pub fn tid(&self) -> i32 {
        match *self {
            Stop::Exited { tid, .. }
            | Stop::Killed { tid, .. }
            | Stop::Signal { tid, .. }
            | Stop::Syscall { tid }
            | Stop::Event { tid, .. } => tid,
        }
    }
}

/// Waits for any traced thread (`tid = -1`) or one thread. `nohang` returns `None` when no
/// thread has anything to report.
pub fn wait(tid: i32, nohang: bool) -> Result<Option<Stop>, nix::errno::Errno> {
    let mut status = 0;
    // __WNOTHREAD: only this thread's tracees. Without it a tracer thread would reap stops of
    // processes that another session's tracer thread owns (and could not ptrace them).
    let flags = libc::__WALL | libc::__WNOTHREAD | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(tid, &mut status, flags) };
        if r == -1 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        return Ok(Some(decode(r, status)));
    }
}

fn decode(tid: i32, status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        Stop::Exited {
            tid,
            code: libc::WEXITSTATUS(status),
        }
    } else if libc::WIFSIGNALED(status) {
        Stop::Killed {
            tid,
            signal: libc::WTERMSIG(status),
        }
    } else {
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if event != 0 {
            Stop::Event { tid, event, signal }
        } else if signal == SYSCALL_STOP {
            Stop::Syscall { tid }
        } else {
            Stop::Signal { tid, signal }
        }
    }
}

/// The threads of a process, from /proc/PID/task.
pub fn threads(pid: u32) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// Reads and writes a process's memory. Reads use `process_vm_readv` (one syscall, no stop
/// needed); writes go through /proc/PID/mem, which may write read-only code pages.
pub struct Memory {
    pid: u32,
    mem: Option<File>,
    /// Bytes the in-kernel probe copied at a hit: reads are served from these alone, never
    /// from the live process, so values show what the kernel saw.
    captured: Option<Vec<Captured>>,
}

/// One region the in-kernel probe copied.
#[derive(Debug, Clone)]
pub struct Captured {
    pub addr: u64,
    pub bytes: Vec<u8>,
    /// A C string read up to its NUL: past the end, it reads as zeros (the reader looks for
    /// the NUL in page-sized chunks).
    pub c_string: bool,
}

impl Memory {
    pub fn new(pid: u32) -> Memory {
        Memory {
            pid,
            mem: None,
            captured: None,
        }
    }

    /// Memory as the in-kernel probe captured it at one hit.
    pub fn captured(pid: u32, regions: Vec<Captured>) -> Memory {
        Memory {
            pid,
            mem: None,
            captured: Some(regions),
        }
    }

    fn read_captured(regions: &[Captured], addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let len = buf.len();
        let fail = ReadError { addr, len };
        for r in regions {
            let Some(start) = addr.checked_sub(r.addr) else {
                continue;
            };
            let start = start as usize;
            if start >= r.bytes.len() && !(r.c_string && start == r.bytes.len()) {
                continue;
            }
            let end = start.checked_add(len).ok_or(fail)?;
            if end <= r.bytes.len() {
                buf.copy_from_slice(&r.bytes[start..end]);
                return Ok(());
            }
            if r.c_string {
                let have = r.bytes.len().saturating_sub(start);
                buf[..have].copy_from_slice(&r.bytes[start..]);
                buf[have..].fill(0);
                return Ok(());
            }
        }
        Err(fail)
    }

    /// Opens /proc/PID/mem for writing; only a tracer may.
    pub fn open_for_writing(&mut self) -> Result<(), NativeError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{}/mem", self.pid))
            .map_err(|e| NativeError::Io {
                what: format!("open /proc/{}/mem", self.pid),
                source: e,
            })?;
        self.mem = Some(f);
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads exactly `buf.len()` bytes at `addr`, or fails (unmapped memory is an error, never a
    /// crash of either process).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(regions) = &self.captured {
            return Self::read_captured(regions, addr, buf);
        }
        let len = buf.len();
        let remote = [nix::sys::uio::RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [std::io::IoSliceMut::new(buf)];
        match nix::sys::uio::process_vm_readv(pid(self.pid as i32), &mut local, &remote) {
            Ok(n) if n == len => Ok(()),
            _ => {
                // process_vm_readv stops at the first bad page; /proc/PID/mem can read pages the
                // target maps without read permission, as a debugger may.
                match &self.mem {
                    Some(f) => f
                        .read_exact_at(local[0].as_mut(), addr)
                        .map_err(|_| ReadError { addr, len }),
                    None => Err(ReadError { addr, len }),
                }
            }
        }
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), NativeError> {
        let f = self.mem.as_ref().ok_or_else(|| NativeError::Io {
            what: "write target memory".into(),
            source: std::io::Error::other("/proc/PID/mem is not open"),
        })?;
        f.write_all_at(data, addr).map_err(|e| NativeError::Io {
            what: format!(
                "write {} bytes at {addr:#x} in pid {}",
                data.len(),
                self.pid
            ),
            source: e,
        })
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cannot read {len} bytes at {addr:#x}")]
pub struct ReadError {
    pub addr: u64,
    pub len: usize,
}

/// DWARF register number → value, for x86-64 (System V psABI numbering).
pub fn dwarf_reg(regs: &Regs, reg: u16) -> Option<u64> {
    Some(match reg {
        0 => regs.rax,
        1 => regs.rdx,
        2 => regs.rcx,
        3 => regs.rbx,
        4 => regs.rsi,
        5 => regs.rdi,
        6 => regs.rbp,
        7 => regs.rsp,
        8 => regs.r8,
        9 => regs.r9,
        10 => regs.r10,
        11 => regs.r11,
        12 => regs.r12,
        13 => regs.r13,
        14 => regs.r14,
        15 => regs.r15,
        16 => regs.rip,
        49 => regs.eflags,
        _ => return None,
    })
}

/// Sets DWARF register `reg` (the numbering of [`dwarf_reg`]); other numbers are ignored.
/// The DWARF number (System V x86-64) of a 64-bit general register as iced-x86 names it.
pub fn dwarf_number(r: iced_x86::Register) -> Option<u16> {
    use iced_x86::Register;
    Some(match r {
        Register::RAX => 0,
        Register::RDX => 1,
        Register::RCX => 2,
        Register::RBX => 3,
        Register::RSI => 4,
        Register::RDI => 5,
        Register::RBP => 6,
        Register::RSP => 7,
        Register::R8 => 8,
        Register::R9 => 9,
        Register::R10 => 10,
        Register::R11 => 11,
        Register::R12 => 12,
        Register::R13 => 13,
        Register::R14 => 14,
        Register::R15 => 15,
        _ => return None,
    })
}

pub fn set_dwarf_reg(regs: &mut Regs, reg: u16, v: u64) {
    let r = match reg {
        0 => &mut regs.rax,
        1 => &mut regs.rdx,
        2 => &mut regs.rcx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsi,
        5 => &mut regs.rdi,
        6 => &mut regs.rbp,
        7 => &mut regs.rsp,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        15 => &mut regs.r15,
        16 => &mut regs.rip,
        _ => return,
    };
    *r = v;
}

/// One field of /proc/TID/status (`Tgid`, `TracerPid`, `SigPnd`, …), trimmed.
pub fn status_field(tid: i32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// Why a process cannot be traced, in words that say what to change.
pub fn explain_attach_error(pid: u32, e: nix::errno::Errno) -> NativeError {
    match e {
        nix::errno::Errno::ESRCH => NativeError::NoSuchProcess { pid },
        nix::errno::Errno::EPERM => {
            let tracer = status_field(pid as i32, "TracerPid").filter(|t| t != "0");
            let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let reason = if let Some(t) = tracer {
                format!("it is already traced by pid {t} (a debugger or another periscope); detach that first")
            } else {
                format!(
                    "ptrace was refused; run periscope as the process's user or as root, or grant CAP_SYS_PTRACE (`sudo setcap cap_sys_ptrace+ep $(which periscope)`){}",
                    if scope.is_empty() || scope == "0" {
                        String::new()
                    } else {
                        format!("; kernel.yama.ptrace_scope is {scope}, set it to 0 or 1 to allow attaching")
                    }
                )
            };
            NativeError::Permission { pid, reason }
        }
        other => NativeError::ptrace("SEIZE", pid as i32, other),
    }
}

/// /proc/TID/stat, its fields numbered as proc(5) numbers them. The command name (field 2) may
/// hold spaces and parentheses, so the fields after it are counted from its last `)`.
pub struct ProcStat {
    after_name: String,
}

impl ProcStat {
    pub fn read(tid: i32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
        let after_name = stat[stat.rfind(')')? + 1..].to_string();
        Some(ProcStat { after_name })
    }

    /// Field `n` (3 and up: the state is 3, the start time 22, the exit code 52).
    pub fn field(&self, n: usize) -> Option<&str> {
        self.after_name.split_whitespace().nth(n.checked_sub(3)?)
    }

    /// Field `n` as a number.
    pub fn number<T: std::str::FromStr>(&self, n: usize) -> Option<T> {
        self.field(n)?.parse().ok()
    }

    /// The scheduler state (`R`, `S`, `t` for traced, `Z` zombie, …).
    pub fn state(&self) -> Option<char> {
        self.field(3)?.chars().next()
    }
}

/// A thread's scheduler state from /proc/TID/stat.
pub fn state(tid: i32) -> Option<char> {
    ProcStat::read(tid)?.state()
}
