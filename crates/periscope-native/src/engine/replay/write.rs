//! Writing a candidate's assignment into a copy of the process: the value encoded as the
//! variable's type, written where DWARF says the variable lives, and into the registers that
//! still hold its old value for the code about to run.
//!
//! Why registers: even unoptimized code keeps a value it has just computed or received in a
//! register within a basic block (`let refund = requested; charge.refunded += refund` adds the
//! argument's register, not the variable's stack slot). A write to the stack slot alone would
//! then change nothing, and the replay would call a right fix "not fixed". So the instructions
//! from the location on are decoded (to the first branch, at most a few), and a register they
//! read before writing that holds exactly the old value gets the new one. A register holding
//! that value by coincidence would get it too: each register changed is named in the
//! evidence, and this only ever happens in the copy.

use crate::eval::{Ev, Evaluator};
use crate::frame::Place;
use crate::index::types::{Type, TypeKind};
use crate::process::{dwarf_number, dwarf_reg, set_dwarf_reg, Memory, Regs};
use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};
use periscope_core::expr::Expr;

/// Instructions looked at after the location for registers that carry the old value.
const LOOKAHEAD: usize = 12;

/// A value written: its old and new bytes (little-endian, the variable's size).
pub(super) struct Written {
    old: Vec<u8>,
    new: Vec<u8>,
}

/// Writes `value` where `target` (a variable or field path) lives in `mem`, a copy's memory.
pub(super) fn write_place(
    ev: &Evaluator,
    target: &Expr,
    value: &Ev,
    mem: &Memory,
) -> Result<Written, String> {
    let Ev::Place { place, ty } = ev.eval(target)? else {
        return Err(format!("`{target}` is not a place in memory"));
    };
    let addr = match place {
        Place::Memory(a) => a,
        Place::Unavailable(why) => return Err(why),
        _ => {
            return Err(format!(
                "`{target}` lives in a register here (an optimized build); replay writes memory only, shadow mode (without --replay) evaluates it"
            ))
        }
    };
    let new = encode(value, &ty).map_err(|e| format!("`{target}`: {e}"))?;
    let mut old = vec![0u8; new.len()];
    mem.read(addr, &mut old).map_err(|e| e.to_string())?;
    mem.write(addr, &new).map_err(|e| e.to_string())?;
    Ok(Written { old, new })
}

/// Gives the registers that carry `w`'s old value into the code at `pc` its new value;
/// returns their names.
pub(super) fn sync_registers(regs: &mut Regs, code: &[u8], pc: u64, w: &Written) -> Vec<String> {
    if w.old.len() > 8 || w.old == w.new {
        return Vec::new();
    }
    let word = |b: &[u8]| {
        let mut x = [0u8; 8];
        x[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(x)
    };
    let mask = if w.old.len() == 8 {
        u64::MAX
    } else {
        (1u64 << (w.old.len() * 8)) - 1
    };
    let (old, new) = (word(&w.old), word(&w.new));
    let mut changed = Vec::new();
    for reg in read_before_written(code, pc) {
        let Some(n) = dwarf_number(reg) else {
            continue;
        };
        let Some(v) = dwarf_reg(regs, n) else {
            continue;
        };
        if v & mask == old {
            set_dwarf_reg(regs, n, (v & !mask) | new);
            changed.push(format!("{reg:?}").to_lowercase());
        }
    }
    changed
}

/// The general registers the straight-line code at `pc` reads before it writes them.
fn read_before_written(code: &[u8], pc: u64) -> Vec<Register> {
    let mut decoder = Decoder::with_ip(64, code, pc, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut written: Vec<Register> = Vec::new();
    let mut read: Vec<Register> = Vec::new();
    for instr in decoder.iter().take(LOOKAHEAD) {
        if instr.is_invalid() {
            break;
        }
        let used = info.info(&instr);
        for u in used.used_registers() {
            let full = u.register().full_register();
            // The stack and frame pointers never carry a variable's value.
            if !full.is_gpr64() || matches!(full, Register::RSP | Register::RBP) {
                continue;
            }
            if written.contains(&full) {
                continue;
            }
            let reads = matches!(
                u.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite
            );
            if reads && !read.contains(&full) {
                read.push(full);
            }
        }
        for u in used.used_registers() {
            let full = u.register().full_register();
            if full.is_gpr64()
                && matches!(
                    u.access(),
                    OpAccess::Write
                        | OpAccess::ReadWrite
                        | OpAccess::CondWrite
                        | OpAccess::ReadCondWrite
                )
                && !written.contains(&full)
            {
                written.push(full);
            }
        }
        if instr.flow_control() != FlowControl::Next {
            break;
        }
    }
    read
}

/// The bytes of `value` as a `ty`: numbers, bools, chars and C enums; a number must fit.
fn encode(value: &Ev, ty: &Type) -> Result<Vec<u8>, String> {
    let size = ty.size.unwrap_or(0) as usize;
    let int = |v: i128, signed: bool| -> Result<Vec<u8>, String> {
        if !(1..=16).contains(&size) {
            return Err(format!("a {} of {size} bytes cannot be written", ty.name));
        }
        let bits = size as u32 * 8;
        let fits = if bits >= 128 {
            true
        } else if signed {
            let half = 1i128 << (bits - 1);
            (-half..half).contains(&v)
        } else {
            v >= 0 && v < (1i128 << bits)
        };
        if !fits {
            return Err(format!("{v} does not fit in a {}", ty.name));
        }
        Ok(v.to_le_bytes()[..size].to_vec())
    };
    match (&ty.kind, value) {
        (TypeKind::Base(ate), v) if *ate == gimli::DW_ATE_float => {
            let f = match v {
                Ev::Float(f) => *f,
                Ev::Int(i, _) => *i as f64,
                _ => return Err(format!("a {} takes a number", ty.name)),
            };
            match size {
                4 => Ok((f as f32).to_le_bytes().to_vec()),
                8 => Ok(f.to_le_bytes().to_vec()),
                _ => Err(format!("a float of {size} bytes cannot be written")),
            }
        }
        (TypeKind::Base(ate), v) if *ate == gimli::DW_ATE_boolean => match v {
            Ev::Bool(b) => int(i128::from(*b), false),
            _ => Err(format!("a {} takes true or false", ty.name)),
        },
        (TypeKind::Base(ate), v) => {
            let signed = *ate == gimli::DW_ATE_signed || *ate == gimli::DW_ATE_signed_char;
            match v {
                Ev::Int(i, _) => int(*i, signed),
                Ev::Char(c) => int(i128::from(u32::from(*c)), signed),
                Ev::Bool(b) => int(i128::from(*b), signed),
                _ => Err(format!("a {} takes a number", ty.name)),
            }
        }
        (TypeKind::Enum { signed, .. }, Ev::Int(i, _)) => int(*i, *signed),
        (TypeKind::Pointer { .. }, Ev::Int(i, _)) => int(*i, false),
        _ => Err(format!(
            "a {} cannot be assigned in replay: numbers, bools, chars and C enums can",
            ty.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_read_before_written_are_found() {
        // mov rcx,[rdi+0x10]; mov rax,rcx; add rax,rsi; ret
        let code = [
            0x48, 0x8b, 0x4f, 0x10, 0x48, 0x89, 0xc8, 0x48, 0x01, 0xf0, 0xc3,
        ];
        let regs = read_before_written(&code, 0x1000);
        assert_eq!(regs, vec![Register::RDI, Register::RSI]);
    }

    #[test]
    fn only_registers_with_the_old_value_change() {
        let mut regs: Regs = unsafe { std::mem::zeroed() };
        regs.rsi = 695;
        regs.rdi = 0x7fff_0000;
        let code = [0x48, 0x8b, 0x4f, 0x10, 0x48, 0x01, 0xf0, 0xc3];
        let w = Written {
            old: 695u64.to_le_bytes().to_vec(),
            new: 545u64.to_le_bytes().to_vec(),
        };
        assert_eq!(sync_registers(&mut regs, &code, 0x1000, &w), vec!["rsi"]);
        assert_eq!((regs.rsi, regs.rdi), (545, 0x7fff_0000));
    }
}
