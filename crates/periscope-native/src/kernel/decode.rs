//! Records from the ring buffer, parsed (layouts of `struct rec_head` and `struct region` in
//! `bpf/periscope.bpf.c`) and rendered: the probe's expressions are evaluated by the same
//! evaluator as on the ptrace path, over the registers and bytes the kernel captured.

use crate::eval::Evaluator;
use crate::frame::Frame;
use crate::probe::ProbeSpec;
use crate::process::{Captured, Memory, Regs};
use crate::target::{Site, Target};
use crate::unwind::CfaRule;
use crate::values::Reader;

pub(crate) const REC_ERROR: u16 = 2;
pub(crate) const REC_RETURN: u16 = 3;

const HEAD: usize = 176;
const REGION: usize = 16;

pub(crate) struct Record {
    pub site: u32,
    pub kind: u16,
    pub err: u16,
    pub tid: u32,
    pub ktime: u64,
    /// Nanoseconds of a call (returns); the faulting address (errors).
    pub value: u64,
    regs: [u64; 17],
    regions: Vec<Captured>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .unwrap_or(0)
}

/// Parses one record; `None` when it is shorter than its header says (never trusted blindly:
/// the bytes come from the kernel, but a layout mismatch must not panic).
pub(crate) fn parse(b: &[u8]) -> Option<Record> {
    if b.len() < HEAD {
        return None;
    }
    let mut regs = [0u64; 17];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = u64_at(b, 32 + i * 8);
    }
    let len = u32_at(b, 168) as usize;
    let data = b.get(HEAD..HEAD + len.min(b.len() - HEAD))?;
    let mut regions = Vec::new();
    let mut at = 0;
    while at + REGION <= data.len() {
        let addr = u64_at(data, at);
        let n = u16_at(data, at + 8) as usize;
        let flags = u16_at(data, at + 10);
        at += REGION;
        let bytes = data.get(at..at + n)?.to_vec();
        at += n;
        if flags & 2 != 0 {
            continue; // the read faulted: nothing captured there, the reader says so
        }
        let c_string = flags & 1 != 0;
        // A C string's region holds its NUL; the text is what comes before it.
        let bytes = if c_string {
            let end = bytes.iter().position(|c| *c == 0).unwrap_or(bytes.len());
            bytes[..end].to_vec()
        } else {
            bytes
        };
        regions.push(Captured {
            addr,
            bytes,
            c_string,
        });
    }
    Some(Record {
        site: u32_at(b, 0),
        kind: u16_at(b, 4),
        err: u16_at(b, 6),
        tid: u32_at(b, 12),
        ktime: u64_at(b, 16),
        value: u64_at(b, 24),
        regs,
        regions,
    })
}

impl Record {
    /// The registers as ptrace would show them at the breakpoint: the pc at the site.
    fn user_regs(&self, site: &Site) -> Regs {
        // SAFETY: `user_regs_struct` is plain integers; all-zero is a valid value.
        let mut r: Regs = unsafe { std::mem::zeroed() };
        let g = &self.regs;
        r.rax = g[0];
        r.rdx = g[1];
        r.rcx = g[2];
        r.rbx = g[3];
        r.rsi = g[4];
        r.rdi = g[5];
        r.rbp = g[6];
        r.rsp = g[7];
        r.r8 = g[8];
        r.r9 = g[9];
        r.r10 = g[10];
        r.r11 = g[11];
        r.r12 = g[12];
        r.r13 = g[13];
        r.r14 = g[14];
        r.r15 = g[15];
        r.rip = site.address;
        r
    }

    /// Go: the goroutine id the plan copied from `g` (r14) at offset `goid`.
    pub(crate) fn goroutine(&self, goid: u64) -> Option<u64> {
        let at = self.regs[14].checked_add(goid)?;
        self.regions.iter().find_map(|r| {
            let start = at.checked_sub(r.addr)? as usize;
            let b = r.bytes.get(start..start + 8)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        })
    }

    /// What went wrong, for an error record or a failed capture.
    pub(crate) fn error_text(&self) -> String {
        match self.err {
            1 => format!("cannot read memory at {:#x}", self.value),
            2 => "division by zero".into(),
            3 => "the values are larger than one kernel record (2 KiB)".into(),
            _ => "the kernel program's stack overflowed".into(),
        }
    }

    /// Evaluates with the captured state: `f` gets an evaluator reading only what the kernel
    /// copied at the hit.
    pub(crate) fn with_evaluator<T>(
        self,
        target: &Target,
        site: &Site,
        cfa: Option<CfaRule>,
        spec: &ProbeSpec,
        pid: u32,
        f: impl FnOnce(&Evaluator) -> T,
    ) -> T {
        let regs = self.user_regs(site);
        let mem = Memory::captured(pid, self.regions);
        let cfa = cfa.and_then(|r| r.eval(&regs));
        let frame = Frame::at_site(target, site, &mem, regs, self.tid as i32, cfa);
        let object = &target.objects[site.object];
        let reader =
            Reader::new(&object.index, &mem, spec.limits, &spec.redactor).with_target(target);
        let ev = Evaluator::new(&frame, &reader, &site.visible.vars, &site.function);
        f(&ev)
    }
}
