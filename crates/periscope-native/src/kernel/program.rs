//! The in-kernel program, loaded with aya: its maps (plans, probe states, the ring buffer),
//! and uprobe links per site. The layouts here mirror `bpf/periscope.bpf.c` exactly.
//!
//! Every link is an fd of this process: when periscope exits, however it exits (`kill -9`
//! included), the kernel closes them and removes the uprobes. Nothing is pinned, and no byte
//! of the target's code is written by us.

use aya::maps::{Array, MapData, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::UProbe;
use aya::Ebpf;
use std::num::NonZeroU32;
use std::path::Path;

/// The program, built by `build.rs` from `bpf/periscope.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/periscope.bpf.o"));

pub(crate) const MAX_OPS: usize = 128;
/// Sites (plans) one program holds, and probes.
pub(crate) const MAX_SITES: u32 = 4096;
pub(crate) const MAX_PROBES: u32 = 1024;
/// Counters and metrics: records are read in batches, without a wake-up each.
pub(crate) const PLAN_QUIET: u32 = 1;
/// The probe has several sites: one execution of its line reports once (`is_repeat`).
pub(crate) const PLAN_REPEATS: u32 = 2;

/// `enum op_code` of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum OpCode {
    Reg = 1,
    Const = 2,
    AddI = 3,
    Load = 4,
    Dup = 5,
    Swap = 6,
    Pop = 7,
    Bin = 8,
    Not = 9,
    Neg = 10,
    Bool = 11,
    JzK = 12,
    JnzK = 13,
    Sext = 14,
    Zext = 15,
    Ford = 16,
    CapM = 17,
    CapStr = 18,
    CapBuf = 19,
    Slot = 20,
    /// Pushes the entry `arg` below the top (`DW_OP_pick`).
    Pick = 21,
    /// `DW_OP_rot`.
    Rot = 22,
}

impl OpCode {
    /// How the op changes the depth of the value stack.
    pub(crate) fn stack_effect(self) -> isize {
        match self {
            OpCode::Reg | OpCode::Const | OpCode::Dup | OpCode::Pick => 1,
            OpCode::Pop | OpCode::Bin | OpCode::CapM | OpCode::CapStr => -1,
            OpCode::CapBuf => -2,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Op {
    pub code: u8,
    pub arg: u8,
    /// Jump target, or where a slot ends.
    pub next: u16,
    pub size: u32,
    pub imm: i64,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct PlanData {
    pub probe: u32,
    pub cond_len: u16,
    pub nops: u16,
    pub flags: u32,
    /// The DIE offset of the function or inlined call around the site.
    pub scope: u32,
    pub addr: u64,
    /// The frame's CFA: DWARF register `cfa_reg` (above 16: unknown) plus `cfa_off`.
    pub cfa_off: i64,
    pub cfa_reg: u32,
    pub pad: u32,
    pub ops: [Op; MAX_OPS],
}

impl PlanData {
    pub(crate) fn empty(probe: u32) -> PlanData {
        PlanData {
            probe,
            cond_len: 0,
            nops: 0,
            flags: 0,
            scope: 0,
            addr: 0,
            cfa_off: 0,
            cfa_reg: u32::MAX,
            pad: 0,
            ops: [Op::default(); MAX_OPS],
        }
    }
}

/// A probe's limits and the kernel's counts for it (`struct probe_state`).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct ProbeCounters {
    pub hits: u64,
    pub filtered: u64,
    pub errors: u64,
    pub rate_dropped: u64,
    pub max_hits: u64,
    pub rate_allowed: u64,
    pub rate_window_ns: u64,
    pub window_start: u64,
    pub window_count: u64,
    /// The overhead budget: at most `budget_ns` of the program's time per `budget_window_ns`
    /// (0: none), the current window's start and what it used.
    pub budget_ns: u64,
    pub budget_window_ns: u64,
    pub budget_start: u64,
    pub budget_used: u64,
    /// All the program's time for the probe.
    pub busy_ns: u64,
    /// When the budget ran out (kernel time); 0 while the probe runs.
    pub paused_at: u64,
}

// SAFETY: plain `repr(C)` data without padding holes the kernel could leave uninitialized
// (every field is an integer and sizes are multiples of 8), as aya's `Pod` requires.
unsafe impl aya::Pod for PlanData {}
// SAFETY: as above.
unsafe impl aya::Pod for ProbeCounters {}

/// Which of the program's entry points a site uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A hit at an address (log, count, gauge).
    Hit,
    /// A function's entry, for a duration.
    CallStart,
    /// The same function's return.
    CallReturn,
}

impl Entry {
    fn program(self) -> &'static str {
        match self {
            Entry::Hit => "periscope_hit",
            Entry::CallStart => "periscope_entry",
            Entry::CallReturn => "periscope_return",
        }
    }
}

pub(crate) struct Program {
    ebpf: Ebpf,
    pub ring: RingBuf<MapData>,
}

/// A uprobe in place: which program, and aya's handle to take it out.
pub(crate) struct Link {
    entry: Entry,
    id: UProbeLinkId,
}

impl Program {
    /// Loads the program and its maps into the kernel (the verifier checks it here).
    pub(crate) fn load() -> Result<Program, String> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| unavailable(&e.to_string()))?;
        for entry in [Entry::Hit, Entry::CallStart, Entry::CallReturn] {
            let prog: &mut UProbe = ebpf
                .program_mut(entry.program())
                .ok_or("the BPF object lacks a program")?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            prog.load().map_err(|e| unavailable(&format!("{e:#}")))?;
        }
        let ring = ebpf
            .take_map("events")
            .ok_or("the BPF object lacks its ring buffer")
            .and_then(|m| {
                RingBuf::try_from(m).map_err(|_| "the events map is not a ring buffer")
            })?;
        Ok(Program { ebpf, ring })
    }

    pub(crate) fn set_plan(&mut self, site: u32, plan: &PlanData) -> Result<(), String> {
        let mut plans: Array<&mut MapData, PlanData> =
            Array::try_from(self.ebpf.map_mut("plans").ok_or("no plans map")?)
                .map_err(|e| e.to_string())?;
        plans.set(site, plan, 0).map_err(|e| e.to_string())
    }

    pub(crate) fn set_counters(&mut self, slot: u32, c: &ProbeCounters) -> Result<(), String> {
        let mut probes: Array<&mut MapData, ProbeCounters> =
            Array::try_from(self.ebpf.map_mut("probes").ok_or("no probes map")?)
                .map_err(|e| e.to_string())?;
        probes.set(slot, c, 0).map_err(|e| e.to_string())
    }

    pub(crate) fn counters(&self, slot: u32) -> Option<ProbeCounters> {
        let probes: Array<&MapData, ProbeCounters> =
            Array::try_from(self.ebpf.map("probes")?).ok()?;
        probes.get(&slot, 0).ok()
    }

    /// Puts a uprobe at `file_offset` of the object at `path`, for process `pid` only (all its
    /// threads, those started later too: the kernel filters by address space).
    pub(crate) fn attach(
        &mut self,
        entry: Entry,
        path: &Path,
        file_offset: u64,
        pid: u32,
        site: u32,
    ) -> Result<Link, String> {
        let pid = NonZeroU32::new(pid).ok_or("no process id")?;
        let prog: &mut UProbe = self
            .ebpf
            .program_mut(entry.program())
            .ok_or("the BPF object lacks a program")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(file_offset),
            cookie: Some(u64::from(site)),
        };
        let id = prog
            .attach(point, path, UProbeScope::OneProcess(pid))
            .map_err(|e| {
                format!(
                    "attach a uprobe at {}+{file_offset:#x}: {e:#}",
                    path.display()
                )
            })?;
        Ok(Link { entry, id })
    }

    pub(crate) fn detach(&mut self, link: Link) {
        if let Some(Ok(prog)) = self
            .ebpf
            .program_mut(link.entry.program())
            .map(<&mut UProbe>::try_from)
        {
            // An error here means the link is already gone (the target exited).
            let _ = prog.detach(link.id);
        }
    }
}

/// Why BPF cannot be used here, and how to grant it.
fn unavailable(detail: &str) -> String {
    let perm = detail.contains("Operation not permitted") || detail.contains("EPERM");
    if perm {
        format!(
            "BPF is not permitted here ({detail}): run periscope as root, or grant it CAP_BPF and CAP_PERFMON (setcap cap_bpf,cap_perfmon,cap_sys_ptrace+ep $(command -v periscope)); a kernel in lockdown mode refuses BPF to everyone"
        )
    } else {
        format!("the kernel refused the BPF program ({detail}); it needs Linux 5.17 or later with BPF ring buffers, bpf_loop and uprobe cookies")
    }
}
