//! Breakpoints and out-of-line execution of the instruction each one displaces.
//!
//! An `int3` replaces the first byte of the probed instruction and stays there for the whole life
//! of the probe, so no thread can pass the spot unseen. When a thread traps, the tracer handles
//! the hit and then resumes the thread at a copy of the displaced instruction in a scratch page,
//! followed by a jump back to the next original instruction: one stop per hit, and other threads
//! keep running the whole time. RIP-relative operands and relative branches are re-encoded for
//! the copy's address by iced-x86's block encoder; near calls are emulated by the tracer instead
//! (push the original return address, jump), because a copied call would push an address inside
//! the scratch page.

use crate::error::NativeError;
use crate::process::{Memory, Regs};
use iced_x86::{
    BlockEncoder, BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction,
    InstructionBlock, OpKind, Register,
};

/// Bytes reserved per displaced instruction in a scratch page: the relocated instruction (15 at
/// most, longer once re-encoded) and a 5-byte jump back.
pub const SLOT_SIZE: u64 = 64;

#[derive(Debug, Clone)]
pub enum Displaced {
    /// Resume at `slot`, where a relocated copy runs and jumps back; `back` is the address of
    /// that jump (a thread there has executed the displaced instruction).
    OutOfLine { slot: u64, back: u64 },
    /// A near call, emulated by the tracer.
    Call(Box<Instruction>),
}

#[derive(Debug, Clone)]
pub struct Breakpoint {
    pub address: u64,
    /// The displaced instruction's original bytes (only the first is overwritten).
    pub original: Vec<u8>,
    pub displaced: Displaced,
}

/// Decodes the instruction at `address` and prepares its out-of-line copy for `slot`.
/// Returns how to resume after a hit and, for out-of-line copies, the code to write at `slot`.
pub fn plan(
    address: u64,
    code: &[u8],
    slot: u64,
) -> Result<(Breakpoint, Option<Vec<u8>>), NativeError> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let instr = decoder.decode();
    let refuse = |reason: &str| NativeError::Breakpoint {
        address,
        reason: reason.to_string(),
    };
    if instr.is_invalid() {
        return Err(refuse(
            "the bytes there do not decode as an instruction (not the start of one?)",
        ));
    }
    let len = instr.len();
    let original = code[..len].to_vec();
    match instr.flow_control() {
        FlowControl::Call | FlowControl::IndirectCall
            if instr.is_call_near() || instr.is_call_near_indirect() =>
        {
            return Ok((
                Breakpoint {
                    address,
                    original,
                    displaced: Displaced::Call(Box::new(instr)),
                },
                None,
            ));
        }
        FlowControl::Call | FlowControl::IndirectCall => {
            return Err(refuse("far calls cannot be stepped out of line"));
        }
        FlowControl::Interrupt if instr.code() == Code::Int3 => {
            return Err(refuse(
                "there is already an int3 there: another debugger's breakpoint, or a uprobe (bpftrace, or another periscope's kernel probe); probe it with --engine bpf",
            ));
        }
        FlowControl::XbeginXabortXend => {
            return Err(refuse(
                "transactional-memory instructions cannot be stepped out of line",
            ));
        }
        _ => {}
    }
    let back = Instruction::with_branch(Code::Jmp_rel32_64, address + len as u64)
        .map_err(|e| refuse(&e.to_string()))?;
    let insns = [instr, back];
    let block = InstructionBlock::new(&insns, slot);
    let encoded = BlockEncoder::encode(
        64,
        block,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )
    .map_err(|e| refuse(&format!("cannot relocate {:?}: {e}", instr.code())))?;
    let back = match encoded.new_instruction_offsets.get(1) {
        Some(&off) if off != u32::MAX => slot + u64::from(off),
        _ => return Err(refuse("the relocated copy's jump back has no known place")),
    };
    if encoded.code_buffer.len() as u64 > SLOT_SIZE {
        return Err(refuse("the relocated instruction does not fit its slot"));
    }
    Ok((
        Breakpoint {
            address,
            original,
            displaced: Displaced::OutOfLine { slot, back },
        },
        Some(encoded.code_buffer),
    ))
}

/// Emulates a near call at a breakpoint: pushes the original return address and sets RIP to the
/// call's target. `regs.rip` must be the call's own address.
pub fn emulate_call(instr: &Instruction, regs: &mut Regs, mem: &Memory) -> Result<(), NativeError> {
    let ret = instr.next_ip();
    let target = match instr.op0_kind() {
        OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16 => {
            instr.near_branch_target()
        }
        OpKind::Register => reg_value(regs, instr.op0_register()).ok_or_else(|| bad(instr))?,
        OpKind::Memory => {
            let ea = instr
                .virtual_address(0, 0, |reg, _, _| {
                    if reg == Register::RIP {
                        Some(instr.next_ip())
                    } else {
                        reg_value(regs, reg)
                    }
                })
                .ok_or_else(|| bad(instr))?;
            mem.read_u64(ea).map_err(|e| NativeError::Breakpoint {
                address: instr.ip(),
                reason: format!("call through unreadable memory: {e}"),
            })?
        }
        _ => return Err(bad(instr)),
    };
    let sp = regs.rsp.wrapping_sub(8);
    mem.write(sp, &ret.to_le_bytes())?;
    regs.rsp = sp;
    regs.rip = target;
    Ok(())
}

fn bad(instr: &Instruction) -> NativeError {
    NativeError::Breakpoint {
        address: instr.ip(),
        reason: format!("cannot emulate {:?}", instr.code()),
    }
}

fn reg_value(regs: &Regs, reg: Register) -> Option<u64> {
    let full = reg.full_register();
    let v = match full {
        Register::RAX => regs.rax,
        Register::RBX => regs.rbx,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::RBP => regs.rbp,
        Register::RSP => regs.rsp,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        Register::RIP => regs.rip,
        // iced asks for the segment base of every memory operand: zero in 64-bit mode except
        // FS and GS.
        Register::ES | Register::CS | Register::SS | Register::DS => 0,
        Register::FS => regs.fs_base,
        Register::GS => regs.gs_base,
        _ => return None,
    };
    let size = reg.size();
    Some(match size {
        8 => v,
        4 => v & 0xffff_ffff,
        2 => v & 0xffff,
        _ => v & 0xff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rip_relative_loads_are_relocated() {
        // mov rax, [rip+0x10] at 0x1000 reads 0x1017.
        let code = [0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00];
        let (bp, slot_code) = plan(0x1000, &code, 0x2000).unwrap();
        assert_eq!(bp.original.len(), 7);
        let slot_code = slot_code.unwrap();
        let mut d = Decoder::with_ip(64, &slot_code, 0x2000, DecoderOptions::NONE);
        let moved = d.decode();
        assert_eq!(moved.ip_rel_memory_address(), 0x1017);
        let jmp = d.decode();
        assert_eq!(jmp.near_branch_target(), 0x1007);
    }

    #[test]
    fn calls_are_emulated_and_int3_refused() {
        let call = [0xe8, 0x00, 0x01, 0x00, 0x00];
        let (bp, code) = plan(0x1000, &call, 0x2000).unwrap();
        assert!(code.is_none());
        assert!(matches!(bp.displaced, Displaced::Call(_)));
        assert!(plan(0x1000, &[0xcc, 0x90], 0x2000).is_err());
    }

    #[test]
    fn indirect_calls_through_memory_are_emulated() {
        // call qword ptr [rip+0x10] at 0x1000 reads its target from 0x1016.
        let code = [0xff, 0x15, 0x10, 0x00, 0x00, 0x00];
        let (bp, _) = plan(0x1000, &code, 0x2000).unwrap();
        let Displaced::Call(instr) = bp.displaced else {
            panic!("not a call")
        };
        let regs: Regs = unsafe { std::mem::zeroed() };
        let ea = instr
            .virtual_address(0, 0, |reg, _, _| reg_value(&regs, reg))
            .unwrap();
        assert_eq!(ea, 0x1016);
    }

    #[test]
    fn conditional_branches_keep_their_targets() {
        // je +0x20 at 0x1000 → 0x1022.
        let (_, code) = plan(0x1000, &[0x74, 0x20], 0x5000).unwrap();
        let code = code.unwrap();
        let mut d = Decoder::with_ip(64, &code, 0x5000, DecoderOptions::NONE);
        assert_eq!(d.decode().near_branch_target(), 0x1022);
    }
}
