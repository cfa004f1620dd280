//! Stack unwinding from the CFI (`.eh_frame`, `.debug_frame`), so frames without frame pointers
//! and frames in shared libraries unwind alike. Where an object has no CFI for a pc, the frame
//! pointer chain is tried, as gdb does.

use crate::process::{dwarf_reg, Memory, Regs};
use crate::target::Target;
use gimli::UnwindSection;

/// How to compute the canonical frame address at one code address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfaRule {
    RegOffset { reg: u16, offset: i64 },
}

impl CfaRule {
    pub fn eval(&self, regs: &Regs) -> Option<u64> {
        match *self {
            CfaRule::RegOffset { reg, offset } => {
                dwarf_reg(regs, reg).map(|v| v.wrapping_add(offset as u64))
            }
        }
    }
}

/// The CFA rule at a file address, from `.eh_frame` or `.debug_frame`. Computed once per probe
/// site, so the per-hit cost is one addition.
pub fn cfa_rule(index: &crate::index::ObjectIndex, file_pc: u64) -> Option<CfaRule> {
    rules_at(index, file_pc).map(|(cfa, _)| cfa)
}

/// DWARF numbers of the registers a caller can rely on after a call (System V x86-64).
const CALLEE_SAVED: [u16; 6] = [3, 6, 12, 13, 14, 15];
const RSP: u16 = 7;
const RA: u16 = 16;

/// One physical frame: its registers as recovered, and which of them are known.
#[derive(Debug, Clone)]
pub struct UnwoundFrame {
    pub regs: Regs,
    /// Bit n set: DWARF register n's value is not known in this frame (a caller-saved register
    /// the callee may have clobbered). Frame 0 knows everything.
    pub unknown: u64,
    pub cfa: Option<u64>,
}

impl UnwoundFrame {
    pub fn pc(&self) -> u64 {
        self.regs.rip
    }
}

pub(crate) enum Rule {
    Undefined,
    Same,
    At(i64),
    ValOffset(i64),
    Reg(u16),
}

/// The CFA rule and the rules for the registers we recover, at a file address.
pub(crate) fn rules_at(
    index: &crate::index::ObjectIndex,
    file_pc: u64,
) -> Option<(CfaRule, Vec<(u16, Rule)>)> {
    fn convert<T: gimli::ReaderOffset>(
        row: &gimli::UnwindTableRow<T>,
    ) -> Option<(CfaRule, Vec<(u16, Rule)>)> {
        let cfa = match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => CfaRule::RegOffset {
                reg: register.0,
                offset: *offset,
            },
            gimli::CfaRule::Expression(_) => return None,
        };
        let mut rules = Vec::new();
        for reg in CALLEE_SAVED.iter().copied().chain([RA]) {
            let rule = match row.register(gimli::Register(reg)) {
                None | Some(gimli::RegisterRule::SameValue) => {
                    if reg == RA {
                        Rule::Undefined
                    } else {
                        Rule::Same
                    }
                }
                Some(gimli::RegisterRule::Offset(n)) => Rule::At(n),
                Some(gimli::RegisterRule::ValOffset(n)) => Rule::ValOffset(n),
                Some(gimli::RegisterRule::Register(r)) => Rule::Reg(r.0),
                Some(_) => Rule::Undefined,
            };
            rules.push((reg, rule));
        }
        Some((cfa, rules))
    }
    if let Some((eh, bases)) = &index.eh_frame {
        let mut ctx = gimli::UnwindContext::new();
        if let Ok(row) =
            eh.unwind_info_for_address(bases, &mut ctx, file_pc, gimli::EhFrame::cie_from_offset)
        {
            return convert(row);
        }
    }
    if let Some(df) = &index.debug_frame {
        let mut ctx = gimli::UnwindContext::new();
        let bases = gimli::BaseAddresses::default();
        if let Ok(row) = df.unwind_info_for_address(
            &bases,
            &mut ctx,
            file_pc,
            gimli::DebugFrame::cie_from_offset,
        ) {
            return convert(row);
        }
    }
    None
}

/// Unwinds up to `max` frames from a stopped thread's registers.
pub fn unwind(target: &Target, mem: &Memory, regs: &Regs, max: usize) -> Vec<UnwoundFrame> {
    let mut frames = vec![UnwoundFrame {
        regs: *regs,
        unknown: 0,
        cfa: None,
    }];
    while frames.len() < max {
        let Some(cur) = frames.last_mut() else { break };
        let first = cur.unknown == 0;
        // A caller's pc is a return address: look up the call instruction before it.
        let lookup = if first {
            cur.regs.rip
        } else {
            cur.regs.rip.wrapping_sub(1)
        };
        let Some((_, obj)) = target.object_at(lookup) else {
            break;
        };
        let file_pc = lookup.wrapping_sub(obj.bias);
        let mut caller = cur.regs;
        let mut unknown: u64 = !0;
        match rules_at(&obj.index, file_pc) {
            Some((cfa_rule, rules)) => {
                let Some(cfa) = cfa_rule.eval(&cur.regs) else {
                    break;
                };
                cur.cfa = Some(cfa);
                let cur_regs = cur.regs;
                let cur_unknown = cur.unknown;
                let mut ra = None;
                for (reg, rule) in rules {
                    let v = match rule {
                        Rule::Undefined => None,
                        Rule::Same => (cur_unknown & (1 << reg) == 0)
                            .then(|| crate::process::dwarf_reg(&cur_regs, reg))
                            .flatten(),
                        Rule::At(n) => mem.read_u64(cfa.wrapping_add(n as u64)).ok(),
                        Rule::ValOffset(n) => Some(cfa.wrapping_add(n as u64)),
                        Rule::Reg(r) => crate::process::dwarf_reg(&cur_regs, r),
                    };
                    if let Some(v) = v {
                        crate::process::set_dwarf_reg(&mut caller, reg, v);
                        unknown &= !(1 << reg);
                        if reg == RA {
                            ra = Some(v);
                        }
                    }
                }
                let Some(ra) = ra else { break };
                caller.rip = ra;
                caller.rsp = cfa;
                unknown &= !((1 << RSP) | (1 << RA));
            }
            None => {
                // No CFI: follow the frame pointer chain, if it looks like one.
                let fp = cur.regs.rbp;
                if fp == 0 || fp < cur.regs.rsp {
                    break;
                }
                let (Ok(saved_fp), Ok(ra)) = (mem.read_u64(fp), mem.read_u64(fp + 8)) else {
                    break;
                };
                cur.cfa = Some(fp + 16);
                caller.rbp = saved_fp;
                caller.rip = ra;
                caller.rsp = fp + 16;
                unknown &= !((1 << RSP) | (1 << RA) | (1 << 6));
            }
        }
        // Stop at the end of the stack, or when the unwind makes no progress (corrupt stack).
        let prev_sp = frames.last().map(|f| f.regs.rsp).unwrap_or(0);
        if caller.rip == 0 || caller.rsp <= prev_sp {
            break;
        }
        frames.push(UnwoundFrame {
            regs: caller,
            unknown,
            cfa: None,
        });
    }
    // The last frame's CFA, for its own locals.
    if let Some(last) = frames.last_mut() {
        if last.cfa.is_none() {
            let pc = if last.unknown == 0 {
                last.regs.rip
            } else {
                last.regs.rip.wrapping_sub(1)
            };
            if let Some((_, obj)) = target.object_at(pc) {
                last.cfa = cfa_rule(&obj.index, pc.wrapping_sub(obj.bias))
                    .and_then(|r| r.eval(&last.regs));
            }
        }
    }
    frames
}
