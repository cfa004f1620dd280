//! What keeps the target alive if periscope itself is killed with `kill -9`.
//!
//! A killed tracer cannot remove its `int3` bytes, and without a tracer an `int3` raises SIGTRAP,
//! whose default action kills the process. So while probes are in place, the target's SIGTRAP
//! disposition points at a tiny handler in Periscope's scratch area. With periscope alive the
//! handler never runs (the tracer intercepts every SIGTRAP first and suppresses those it caused).
//! Once periscope is gone, a thread that hits a leftover breakpoint runs the handler, which puts
//! the original byte back (self-healing: each breakpoint costs one signal, once) and resumes at
//! the original instruction. A SIGTRAP that is not from one of our breakpoints gets the default
//! action re-raised, exactly as without Periscope; or, in a program that handles SIGTRAP itself
//! (Go's runtime does), the program's own handler is called, with the same arguments and stack,
//! as if ours were not there. The next periscope attach finds the area by its magic header and
//! removes the rest (table, handler, mapping), giving the program its own action back.
//!
//! Scratch area layout (one anonymous r-x mapping near the code):
//! ```text
//! 0x0000  magic "PERISCOPE-SCRATC"   (16 bytes)
//! 0x0010  unused (8)
//! 0x0018  breakpoint count (8)
//! 0x0020  entries: { address u64, original byte u64 } × MAX_ENTRIES
//! 0x3FC0  the program's own `struct sigaction` for SIGTRAP (all zero: SIG_DFL)
//! 0x3FE0  a `struct sigaction` for SIG_DFL (all zero)
//! 0x4000  the handler, then the restorer (rt_sigreturn)
//! 0x4200  a system-call stub (see `engine::remote`), used when no padding is free
//! 0x4600  out-of-line instruction slots, up to
//! 0xF000  one read-write page (the rest is r-x): the handler's lock, so one thread at a time
//!         unprotects, writes and reprotects a code page
//! ```
//! The handler is assembled with iced-x86's code assembler: there is no crate that ships a
//! position-specific signal trampoline, and it is a dozen instructions.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

pub const MAGIC: &[u8; 16] = b"PERISCOPE-SCRATC";
pub const COUNT_OFFSET: u64 = 0x18;
/// The whole area: executable up to [`LOCK_PAGE_OFFSET`], then one writable page.
pub const AREA_SIZE: u64 = 0x10000;
pub const LOCK_PAGE_OFFSET: u64 = 0xF000;
pub const LOCK_OFFSET: u64 = LOCK_PAGE_OFFSET;
pub const ENTRIES_OFFSET: u64 = 0x20;
pub const PREVIOUS_ACTION_OFFSET: u64 = 0x3fc0;
pub const DEFAULT_ACTION_OFFSET: u64 = 0x3fe0;
pub const HANDLER_OFFSET: u64 = 0x4000;
pub const STUB_OFFSET: u64 = 0x4200;
pub const SLOTS_OFFSET: u64 = 0x4600;
pub const MAX_ENTRIES: u64 = (PREVIOUS_ACTION_OFFSET - ENTRIES_OFFSET) / 16;

/// Offset of the saved RIP in the `ucontext_t` a SA_SIGINFO handler receives (x86-64:
/// uc_flags 8 + uc_link 8 + uc_stack 24, then 16 general registers before rip).
const UC_RIP: i32 = 40 + 16 * 8;

/// The kernel's `struct sigaction` for rt_sigaction(2).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

impl KernelSigaction {
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.handler.to_le_bytes());
        b[8..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.restorer.to_le_bytes());
        b[24..].copy_from_slice(&self.mask.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<KernelSigaction> {
        let w = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(KernelSigaction {
            handler: w(0)?,
            flags: w(1)?,
            restorer: w(2)?,
            mask: w(3)?,
        })
    }
}

const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_RESTART: u64 = 0x1000_0000;

/// `SIG_IGN`, as a handler address.
pub const SIG_IGN: u64 = 1;

/// The action that installs our handler for an area at `base`, over the program's `previous`
/// one: its alternate-stack flag and mask kept (Go's runtime requires its handlers to run on
/// the signal stack, and ours may hand the signal on to it).
pub fn handler_action(base: u64, restorer: u64, previous: &KernelSigaction) -> KernelSigaction {
    KernelSigaction {
        handler: base + HANDLER_OFFSET,
        flags: SA_SIGINFO | SA_RESTORER | SA_RESTART | (previous.flags & SA_ONSTACK),
        restorer,
        mask: previous.mask,
    }
}

/// Assembles the handler and restorer for an area at `base`. Returns the code (to write at
/// `base + HANDLER_OFFSET`) and the restorer's address.
pub fn handler_code(base: u64) -> Result<(Vec<u8>, u64), IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut lp = a.create_label();
    let mut found = a.create_label();
    let mut not_ours = a.create_label();
    let mut restorer = a.create_label();
    // rdi = signal, rsi = siginfo, rdx = ucontext. Every register is restored by rt_sigreturn,
    // so the handler may clobber them all.
    a.mov(r10, rdx)?; // keep the ucontext pointer across syscalls (they clobber rcx, r11)
    a.mov(rax, qword_ptr(r10 + UC_RIP))?;
    a.dec(rax)?; // the int3's own address
    a.mov(rcx, base + COUNT_OFFSET)?;
    a.mov(r8, qword_ptr(rcx))?;
    a.mov(rcx, base + ENTRIES_OFFSET)?;
    a.set_label(&mut lp)?;
    a.test(r8, r8)?;
    a.jz(not_ours)?;
    a.cmp(qword_ptr(rcx), rax)?;
    a.je(found)?;
    a.add(rcx, 16)?;
    a.dec(r8)?;
    a.jmp(lp)?;

    a.set_label(&mut found)?;
    a.mov(qword_ptr(r10 + UC_RIP), rax)?; // resume at the original instruction
    a.mov(r9, rax)?; // breakpoint address
    a.movzx(r12d, byte_ptr(rcx + 8))?; // its original byte
                                       // Threads that trapped at once must not interleave: one's mprotect(PROT_READ|PROT_EXEC)
                                       // between another's mprotect(+WRITE) and its write would fault that write. A spinlock in
                                       // the area serializes them (the section is two system calls and a store).
    let mut spin = a.create_label();
    let mut locked = a.create_label();
    a.mov(r11, base + LOCK_OFFSET)?;
    a.set_label(&mut spin)?;
    a.lock().bts(qword_ptr(r11), 0)?;
    a.jae(locked)?; // carry clear: the bit was 0, the lock is ours
    a.pause()?;
    a.jmp(spin)?;
    a.set_label(&mut locked)?;
    // mprotect(page, 4096, PROT_READ|PROT_WRITE|PROT_EXEC)
    a.mov(rdi, r9)?;
    a.and(rdi, -4096i32)?;
    a.mov(esi, 4096)?;
    a.mov(edx, 7)?;
    a.mov(eax, libc::SYS_mprotect as u32)?;
    a.syscall()?;
    a.mov(byte_ptr(r9), r12b)?;
    // mprotect(page, 4096, PROT_READ|PROT_EXEC): code pages are r-x.
    a.mov(rdi, r9)?;
    a.and(rdi, -4096i32)?;
    a.mov(esi, 4096)?;
    a.mov(edx, 5)?;
    a.mov(eax, libc::SYS_mprotect as u32)?;
    a.syscall()?;
    a.mov(r11, base + LOCK_OFFSET)?; // the syscalls clobbered r11
    a.mov(qword_ptr(r11), 0)?; // release (a plain store is a release on x86)
    a.ret()?;

    // Not one of ours, in a program with its own SIGTRAP handler: that handler gets it, with
    // the arguments (rdi, rsi, rdx, untouched so far) and the stack we were given; it returns
    // through our restorer, which is rt_sigreturn like any. Ignored by the program: nothing.
    let mut default = a.create_label();
    a.set_label(&mut not_ours)?;
    a.mov(rax, base + PREVIOUS_ACTION_OFFSET)?;
    a.mov(rax, qword_ptr(rax))?;
    a.test(rax, rax)?;
    a.jz(default)?;
    a.cmp(rax, SIG_IGN as i32)?;
    let mut ignored = a.create_label();
    a.je(ignored)?;
    a.jmp(rax)?;
    a.set_label(&mut ignored)?;
    a.ret()?;
    // Otherwise restore the default action and re-raise; SIGTRAP is blocked while the handler
    // runs, so it is delivered, with its default effect, right after we return.
    a.set_label(&mut default)?;
    a.mov(edi, libc::SIGTRAP as u32)?;
    a.mov(rsi, base + DEFAULT_ACTION_OFFSET)?;
    a.xor(edx, edx)?;
    a.mov(r10d, 8)?;
    a.mov(eax, libc::SYS_rt_sigaction as u32)?;
    a.syscall()?;
    a.mov(eax, libc::SYS_getpid as u32)?;
    a.syscall()?;
    a.mov(r12, rax)?;
    a.mov(eax, libc::SYS_gettid as u32)?;
    a.syscall()?;
    a.mov(rdi, r12)?;
    a.mov(rsi, rax)?;
    a.mov(edx, libc::SIGTRAP as u32)?;
    a.mov(eax, libc::SYS_tgkill as u32)?;
    a.syscall()?;
    a.ret()?;

    a.set_label(&mut restorer)?;
    a.mov(eax, libc::SYS_rt_sigreturn as u32)?;
    a.syscall()?;
    let ip = base + HANDLER_OFFSET;
    let result = a.assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let restorer_ip = result.label_ip(&restorer)?;
    Ok((result.inner.code_buffer, restorer_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_fits_before_the_slots() {
        let (code, restorer) = handler_code(0x7f00_0000_0000).unwrap();
        assert!((code.len() as u64) < STUB_OFFSET - HANDLER_OFFSET);
        assert!(restorer > 0x7f00_0000_0000 + HANDLER_OFFSET);
        let a = handler_action(0x1000, restorer, &KernelSigaction::default());
        let back = KernelSigaction::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back.handler, 0x1000 + HANDLER_OFFSET);
        assert_eq!(back.flags, a.flags);
    }
}
