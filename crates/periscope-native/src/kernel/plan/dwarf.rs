//! DWARF location expressions translated into kernel ops: the whole stack machine compilers
//! emit in optimized builds (registers and offsets, `dup`/`pick`/`over`/`swap`/`rot`/`drop`,
//! arithmetic, logic, shifts and comparisons, typed values and `convert`, dereferences,
//! pieces, implicit values and pointers).
//!
//! What the kernel cannot compute is left to user space, for that variable alone: a value
//! known only from the caller (`DW_OP_entry_value`, `DW_OP_GNU_parameter_ref`) needs the
//! caller's call-site parameters, so the plan copies their inputs (the registers, the frame's
//! saved registers and return address, the caller's frame bottom, the code the evaluator
//! checks) and the evaluator the ptrace path uses finishes the evaluation over those bytes.
//! The same goes for any computed value that reads no memory (only registers and constants):
//! the registers are in every record, so user space computes it whatever its operators.
//!
//! Past 800 lines for a reason: this is one translator, a match over DWARF's operation set whose
//! arms share the plan compiler's state (the op stack, pieces, the fallback inputs); split
//! across files it would read as several concerns when it is one.

use super::{Bin, Compiler, Loc, Reason};
use crate::index::R;
use crate::kernel::program::OpCode;
use crate::unwind::{rules_at, CfaRule, Rule};
use gimli::{Operation, Reader as _, UnitOffset};

/// The longest location expression translated (in DWARF operations).
const MAX_DWARF_OPS: usize = 64;
/// Bytes of the caller's frame, from the CFA up, copied for call-site values that read the
/// caller's stack (`DW_OP_breg7 N; DW_OP_deref`, the usual spill slot form).
const CALLER_WINDOW: u32 = 64;
/// The longest stretch of code from the function's entry the evaluator decodes to tell which
/// argument registers still hold their entry values (`Frame::untouched_since_entry`).
const ENTRY_CODE: u64 = 256;

/// The type of one entry of the DWARF stack (DWARF 5 typed stack): the generic 64-bit type,
/// or a base type, kept in the kernel sign- or zero-extended to 64 bits, as gimli's
/// `to_u64` gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Generic,
    Int { size: u32, signed: bool },
}

/// One entry of the DWARF stack as the translation sees it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ty: Ty,
    /// Known only in user space (an entry value): the kernel holds a placeholder.
    deferred: bool,
}

/// What a DWARF expression (or one piece of it) leaves.
enum Result1 {
    Address,
    Value,
    /// Computed in user space from what the record holds; nothing on the kernel's stack.
    Deferred,
}

impl Compiler<'_> {
    /// Translates a DWARF location expression into kernel ops. `top`: a variable's location
    /// (a register there means the value is in it); `false` for a frame base, which leaves
    /// its value on the stack.
    pub(super) fn location_ops(
        &mut self,
        expr: gimli::Expression<R>,
        name: &str,
        top: bool,
    ) -> Result<Loc, Reason> {
        let ops = self.parse_ops(expr, name)?;
        if let [Operation::Register { register }] = ops.as_slice() {
            let r = self.general_register(register.0, name)?;
            self.emit(OpCode::Reg, r, 0, 0);
            return Ok(Loc::Value);
        }
        if let [Operation::ImplicitPointer { value, byte_offset }] = ops.as_slice() {
            if !top {
                return Err(format!("`{name}`'s frame base is an implicit pointer"));
            }
            return self.implicit_pointer(value.0, *byte_offset, name);
        }
        if let [Operation::ImplicitValue { data }] = ops.as_slice() {
            return self.implicit_value(data, name);
        }
        if ops.iter().any(|o| matches!(o, Operation::Piece { .. })) {
            if !top {
                return Err(format!("`{name}`'s frame base is split into pieces"));
            }
            return self.pieces(&ops, name);
        }
        match self.stack_program_or_defer(&ops, name)? {
            Result1::Address if top => Ok(Loc::Address),
            Result1::Address | Result1::Value => Ok(Loc::Value),
            Result1::Deferred if top => Ok(Loc::InRecord),
            Result1::Deferred => Err(format!(
                "`{name}`'s frame base is known only from the caller; read on the ptrace path"
            )),
        }
    }

    fn parse_ops(
        &self,
        expr: gimli::Expression<R>,
        name: &str,
    ) -> Result<Vec<Operation<R>>, Reason> {
        let encoding = self.index.encoding(self.site.unit);
        let mut bytes = expr.0;
        let mut ops = Vec::new();
        while !bytes.is_empty() {
            ops.push(Operation::parse(&mut bytes, encoding).map_err(|e| {
                format!("`{name}` has a location the debug info does not encode right: {e}")
            })?);
            if ops.len() > MAX_DWARF_OPS {
                return Err(format!("`{name}` has a location too long for the kernel"));
            }
        }
        Ok(ops)
    }

    /// A general register (DWARF 0–16); the SSE registers are not in a uprobe's registers.
    fn general_register(&self, r: u16, name: &str) -> Result<u8, Reason> {
        if r <= 16 {
            return Ok(r as u8);
        }
        if (17..=32).contains(&r) {
            return Err(format!(
                "`{name}` is in an SSE register, which a uprobe does not see; read on the ptrace path"
            ));
        }
        Err(format!(
            "`{name}` is in DWARF register {r}, which a uprobe does not see; read on the ptrace path"
        ))
    }

    /// The stack program, in the kernel where it can run there; otherwise, when it reads no
    /// memory and ends in a value, deferred to user space (the registers are in the record).
    fn stack_program_or_defer(
        &mut self,
        ops: &[Operation<R>],
        name: &str,
    ) -> Result<Result1, Reason> {
        if self.capturing && registers_only(ops) && ops.iter().any(needs_caller) {
            // The kernel has no caller's frame to run it in: it copies the inputs.
            self.entry_inputs = true;
            return Ok(Result1::Deferred);
        }
        let (mark, depth, entry_inputs) = (self.ops.len(), self.depth, self.entry_inputs);
        match self.stack_program(ops, name) {
            Ok(r) => Ok(r),
            Err(why) if self.capturing && registers_only(ops) => {
                // Nothing the kernel must copy beyond the registers (and, for entry values,
                // the caller's inputs): user space computes it.
                self.ops.truncate(mark);
                self.depth = depth;
                self.entry_inputs = entry_inputs || ops.iter().any(needs_caller);
                let _ = why;
                Ok(Result1::Deferred)
            }
            Err(why) => Err(why),
        }
    }

    /// Translates a stack program (no pieces), mirroring the DWARF stack's types so typed
    /// arithmetic wraps and compares as gimli's evaluator does on the ptrace path.
    fn stack_program(&mut self, ops: &[Operation<R>], name: &str) -> Result<Result1, Reason> {
        let mut st: Vec<Entry> = Vec::new();
        let mut value = false;
        let generic = Entry {
            ty: Ty::Generic,
            deferred: false,
        };
        for op in ops {
            match op {
                Operation::RegisterOffset {
                    register,
                    offset,
                    base_type,
                } => {
                    let r = self.general_register(register.0, name)?;
                    self.emit(OpCode::Reg, r, 0, 0);
                    self.emit(OpCode::AddI, 0, 0, *offset);
                    let ty = self.base_type(*base_type, name)?;
                    self.extend(ty);
                    st.push(Entry {
                        ty,
                        deferred: false,
                    });
                }
                Operation::Register { .. } => {
                    return Err(format!(
                        "`{name}`'s location names a register in the middle of a computation"
                    ))
                }
                Operation::FrameOffset { offset } => {
                    self.frame_base(name)?;
                    self.emit(OpCode::AddI, 0, 0, *offset);
                    st.push(generic);
                }
                Operation::CallFrameCFA => {
                    self.cfa_ops(name)?;
                    st.push(generic);
                }
                Operation::Address { address } => {
                    self.emit(OpCode::Const, 0, 0, address.wrapping_add(self.bias) as i64);
                    st.push(generic);
                }
                Operation::UnsignedConstant { value } => {
                    self.emit(OpCode::Const, 0, 0, *value as i64);
                    st.push(generic);
                }
                Operation::SignedConstant { value } => {
                    self.emit(OpCode::Const, 0, 0, *value);
                    st.push(generic);
                }
                Operation::TypedLiteral { base_type, value } => {
                    let ty = self.base_type(*base_type, name)?;
                    let bytes = value.to_slice().map_err(|e| e.to_string())?;
                    let mut w = [0u8; 8];
                    let n = bytes.len().min(8);
                    w[..n].copy_from_slice(&bytes[..n]);
                    self.emit(OpCode::Const, 0, 0, i64::from_le_bytes(w));
                    self.extend(ty);
                    st.push(Entry {
                        ty,
                        deferred: false,
                    });
                }
                Operation::PlusConstant { value } => {
                    let e = top_of(&st, name)?;
                    self.emit(OpCode::AddI, 0, 0, *value as i64);
                    self.extend(e.ty);
                }
                Operation::Deref {
                    base_type,
                    size,
                    space,
                } => {
                    if *space {
                        return Err(format!("`{name}`'s location reads another address space"));
                    }
                    let e = top_of(&st, name)?;
                    if e.deferred {
                        return Err(format!(
                            "`{name}` is read at an address known only from the caller (DW_OP_entry_value); read on the ptrace path"
                        ));
                    }
                    let ty = self.base_type(*base_type, name)?;
                    let size = match ty {
                        Ty::Int { size, .. } => size,
                        Ty::Generic => u32::from(*size),
                    };
                    self.emit(OpCode::Load, 0, size.clamp(1, 8), 0);
                    self.extend(ty);
                    st.pop();
                    st.push(Entry {
                        ty,
                        deferred: false,
                    });
                }
                Operation::Drop => {
                    top_of(&st, name)?;
                    self.emit(OpCode::Pop, 0, 0, 0);
                    st.pop();
                }
                Operation::Pick { index } => {
                    let i = *index as usize;
                    let e = *st
                        .len()
                        .checked_sub(i + 1)
                        .and_then(|at| st.get(at))
                        .ok_or_else(|| format!("`{name}`'s location picks below its stack"))?;
                    if i == 0 {
                        self.emit(OpCode::Dup, 0, 0, 0);
                    } else {
                        self.emit(OpCode::Pick, *index, 0, 0);
                    }
                    st.push(e);
                }
                Operation::Swap => {
                    let n = st.len();
                    if n < 2 {
                        return Err(format!("`{name}`'s location swaps below its stack"));
                    }
                    self.emit(OpCode::Swap, 0, 0, 0);
                    st.swap(n - 1, n - 2);
                }
                Operation::Rot => {
                    let n = st.len();
                    if n < 3 {
                        return Err(format!("`{name}`'s location rotates below its stack"));
                    }
                    self.emit(OpCode::Rot, 0, 0, 0);
                    let a = st[n - 1];
                    st[n - 1] = st[n - 2];
                    st[n - 2] = st[n - 3];
                    st[n - 3] = a;
                }
                Operation::Neg => {
                    let e = top_of(&st, name)?;
                    self.emit(OpCode::Neg, 0, 0, 0);
                    self.extend(e.ty);
                }
                Operation::Not => {
                    let e = top_of(&st, name)?;
                    self.emit(OpCode::Const, 0, 0, -1);
                    self.emit(OpCode::Bin, Bin::Xor as u8, 0, 0);
                    self.extend(e.ty);
                }
                Operation::Abs => {
                    let e = top_of(&st, name)?;
                    // (x ^ m) - m with m = x >> 63 (arithmetic): |x| without a branch.
                    self.emit(OpCode::Dup, 0, 0, 0);
                    self.emit(OpCode::Const, 0, 0, 63);
                    self.emit(OpCode::Bin, Bin::Sar as u8, 0, 0);
                    self.emit(OpCode::Swap, 0, 0, 0);
                    self.emit(OpCode::Pick, 1, 0, 0);
                    self.emit(OpCode::Bin, Bin::Xor as u8, 0, 0);
                    self.emit(OpCode::Swap, 0, 0, 0);
                    self.emit(OpCode::Bin, Bin::Sub as u8, 0, 0);
                    self.extend(e.ty);
                }
                Operation::Plus
                | Operation::Minus
                | Operation::Mul
                | Operation::Div
                | Operation::Mod
                | Operation::And
                | Operation::Or
                | Operation::Xor
                | Operation::Shl
                | Operation::Shr
                | Operation::Shra
                | Operation::Eq
                | Operation::Ne
                | Operation::Lt
                | Operation::Le
                | Operation::Gt
                | Operation::Ge => {
                    let n = st.len();
                    if n < 2 {
                        return Err(format!("`{name}`'s location computes below its stack"));
                    }
                    let (a, b) = (st[n - 2], st[n - 1]);
                    let ty = self.binary_op(op, a.ty)?;
                    st.truncate(n - 2);
                    st.push(Entry {
                        ty,
                        deferred: a.deferred || b.deferred,
                    });
                }
                Operation::Convert { base_type } | Operation::Reinterpret { base_type } => {
                    top_of(&st, name)?;
                    let ty = self.base_type(*base_type, name)?;
                    self.extend(ty);
                    if let Some(e) = st.last_mut() {
                        e.ty = ty;
                    }
                }
                Operation::EntryValue { .. } | Operation::ParameterRef { .. } => {
                    if !self.capturing {
                        return Err(format!(
                            "`{name}` is known here only as its value at entry (DW_OP_entry_value), which needs the caller's frame; conditions on it run on the ptrace path"
                        ));
                    }
                    self.entry_inputs = true;
                    self.emit(OpCode::Const, 0, 0, 0);
                    st.push(Entry {
                        ty: Ty::Generic,
                        deferred: true,
                    });
                }
                Operation::StackValue => value = true,
                Operation::Nop => {}
                Operation::TLS | Operation::AddressIndex { .. } => {
                    return Err(format!("`{name}` is thread-local; read on the ptrace path"))
                }
                Operation::Bra { .. } | Operation::Skip { .. } => {
                    return Err(format!(
                        "`{name}`'s location branches (DW_OP_bra/skip), which the kernel plan does not run"
                    ))
                }
                other => {
                    return Err(format!(
                        "`{name}`'s location uses {other:?}, which the kernel plan does not translate"
                    ))
                }
            }
        }
        let Some(last) = st.last() else {
            return Err(format!("`{name}` has an empty location here"));
        };
        if last.deferred && !value {
            return Err(format!(
                "`{name}` is at an address known only from the caller (DW_OP_entry_value); read on the ptrace path"
            ));
        }
        // Only the result stays on the kernel's stack.
        for _ in 1..st.len() {
            self.emit(OpCode::Swap, 0, 0, 0);
            self.emit(OpCode::Pop, 0, 0, 0);
        }
        if last.deferred {
            self.emit(OpCode::Pop, 0, 0, 0);
            return Ok(Result1::Deferred);
        }
        Ok(if value {
            Result1::Value
        } else {
            Result1::Address
        })
    }

    /// One binary operator on the top two entries, typed as the left one (gimli requires both
    /// of one type); the result's type.
    fn binary_op(&mut self, op: &Operation<R>, ty: Ty) -> Result<Ty, Reason> {
        let (signed, int) = match ty {
            Ty::Generic => (true, None),
            Ty::Int { size, signed } => (signed, Some(size)),
        };
        let pick = |s: Bin, u: Bin| if signed { s } else { u };
        let (bin, result) = match op {
            Operation::Plus => (Bin::Add, ty),
            Operation::Minus => (Bin::Sub, ty),
            Operation::Mul => (Bin::Mul, ty),
            Operation::Div => (pick(Bin::DivS, Bin::DivU), ty),
            // A generic remainder is unsigned in gimli; a typed one follows its type.
            Operation::Mod if int.is_none() => (Bin::ModU, ty),
            Operation::Mod => (pick(Bin::ModS, Bin::ModU), ty),
            Operation::And => (Bin::And, ty),
            Operation::Or => (Bin::Or, ty),
            Operation::Xor => (Bin::Xor, ty),
            Operation::Shl => (Bin::Shl, ty),
            Operation::Shr => {
                if let Some(size) = int {
                    // A logical shift of the type's own bits.
                    self.emit(OpCode::Swap, 0, 0, 0);
                    self.emit(OpCode::Zext, 0, size, 0);
                    self.emit(OpCode::Swap, 0, 0, 0);
                }
                (Bin::Shr, ty)
            }
            Operation::Shra => {
                if let Some(size) = int {
                    self.emit(OpCode::Swap, 0, 0, 0);
                    self.emit(OpCode::Sext, 0, size, 0);
                    self.emit(OpCode::Swap, 0, 0, 0);
                }
                (Bin::Sar, ty)
            }
            Operation::Eq => (Bin::Eq, Ty::Generic),
            Operation::Ne => (Bin::Ne, Ty::Generic),
            Operation::Lt => (pick(Bin::LtS, Bin::LtU), Ty::Generic),
            Operation::Le => (pick(Bin::LeS, Bin::LeU), Ty::Generic),
            Operation::Gt => (pick(Bin::GtS, Bin::GtU), Ty::Generic),
            Operation::Ge => (pick(Bin::GeS, Bin::GeU), Ty::Generic),
            _ => return Err("not a binary operator".into()),
        };
        self.emit(OpCode::Bin, bin as u8, 0, 0);
        self.extend(result);
        Ok(result)
    }

    /// Wraps the top to its type: a base type narrower than 64 bits keeps only its bits,
    /// sign- or zero-extended.
    fn extend(&mut self, ty: Ty) {
        if let Ty::Int { size, signed } = ty {
            if size < 8 {
                let code = if signed { OpCode::Sext } else { OpCode::Zext };
                self.emit(code, 0, size, 0);
            }
        }
    }

    /// The type a typed operation names: 0 is the generic type; otherwise a base type DIE.
    fn base_type(&self, off: UnitOffset<usize>, name: &str) -> Result<Ty, Reason> {
        if off.0 == 0 {
            return Ok(Ty::Generic);
        }
        match crate::frame::value_type(self.index, self.site.unit, off) {
            Some(gimli::ValueType::Generic) => Ok(Ty::Generic),
            Some(gimli::ValueType::I8) => Ok(Ty::Int {
                size: 1,
                signed: true,
            }),
            Some(gimli::ValueType::U8) => Ok(Ty::Int {
                size: 1,
                signed: false,
            }),
            Some(gimli::ValueType::I16) => Ok(Ty::Int {
                size: 2,
                signed: true,
            }),
            Some(gimli::ValueType::U16) => Ok(Ty::Int {
                size: 2,
                signed: false,
            }),
            Some(gimli::ValueType::I32) => Ok(Ty::Int {
                size: 4,
                signed: true,
            }),
            Some(gimli::ValueType::U32) => Ok(Ty::Int {
                size: 4,
                signed: false,
            }),
            Some(gimli::ValueType::I64) => Ok(Ty::Int {
                size: 8,
                signed: true,
            }),
            Some(gimli::ValueType::U64) => Ok(Ty::Int {
                size: 8,
                signed: false,
            }),
            Some(_) => Err(format!(
                "`{name}`'s location computes in floating point, which the kernel does not"
            )),
            None => Err(format!(
                "`{name}`'s location names a type that is not a base type"
            )),
        }
    }

    /// A value split into pieces (`DW_OP_piece`). Capturing: each piece's memory is copied
    /// (registers are in the record) and user space assembles the value as ptrace does. In a
    /// condition: a value of at most 8 bytes is assembled on the kernel's stack.
    fn pieces(&mut self, ops: &[Operation<R>], name: &str) -> Result<Loc, Reason> {
        let mut groups: Vec<(&[Operation<R>], u64)> = Vec::new();
        let mut start = 0;
        for (i, op) in ops.iter().enumerate() {
            if let Operation::Piece {
                size_in_bits,
                bit_offset,
            } = op
            {
                if bit_offset.is_some_and(|b| b != 0) || size_in_bits % 8 != 0 {
                    return Err(format!(
                        "`{name}` is split into bit pieces (DW_OP_bit_piece); read on the ptrace path"
                    ));
                }
                groups.push((&ops[start..i], size_in_bits / 8));
                start = i + 1;
            }
        }
        if start != ops.len() {
            return Err(format!("`{name}` has a piece without its size"));
        }
        let total: u64 = groups.iter().map(|(_, s)| s).sum();
        if !self.capturing && total > 8 {
            return Err(format!(
                "`{name}` is split into pieces of {total} bytes; conditions compare values of up to 8"
            ));
        }
        let mut offset = 0u64;
        for (i, (group, size)) in groups.into_iter().enumerate() {
            let size32 = size as u32;
            if self.capturing {
                self.capture_piece(group, size32, name)?;
            } else {
                self.piece_value(group, size32, name)?;
                self.emit(OpCode::Zext, 0, size32, 0);
                if offset > 0 {
                    self.emit(OpCode::Const, 0, 0, (offset * 8) as i64);
                    self.emit(OpCode::Bin, Bin::Shl as u8, 0, 0);
                }
                if i > 0 {
                    self.emit(OpCode::Bin, Bin::Or as u8, 0, 0);
                }
            }
            offset += size;
        }
        Ok(if self.capturing {
            Loc::InRecord
        } else {
            Loc::Value
        })
    }

    /// Copies what one piece reads: memory at its address; nothing for a register or a
    /// constant (in the record and the debug info).
    fn capture_piece(
        &mut self,
        group: &[Operation<R>],
        size: u32,
        name: &str,
    ) -> Result<(), Reason> {
        match group {
            [] | [Operation::ImplicitValue { .. }] => Ok(()),
            [Operation::Register { register }] => {
                self.general_register(register.0, name).map(|_| ())
            }
            _ => match self.stack_program_or_defer(group, name)? {
                Result1::Address => {
                    self.emit(OpCode::CapM, 0, size, 0);
                    Ok(())
                }
                Result1::Value => {
                    self.emit(OpCode::Pop, 0, 0, 0);
                    Ok(())
                }
                Result1::Deferred => Ok(()),
            },
        }
    }

    /// Pushes one piece's value (a condition).
    fn piece_value(&mut self, group: &[Operation<R>], size: u32, name: &str) -> Result<(), Reason> {
        match group {
            [] => Err(format!("`{name}` is partly optimized out here")),
            [Operation::ImplicitValue { data }] => {
                self.emit(OpCode::Const, 0, 0, le_word(data)? as i64);
                Ok(())
            }
            [Operation::Register { register }] => {
                let r = self.general_register(register.0, name)?;
                self.emit(OpCode::Reg, r, 0, 0);
                Ok(())
            }
            _ => match self.stack_program(group, name)? {
                Result1::Address => {
                    self.emit(OpCode::Load, 0, size.clamp(1, 8), 0);
                    Ok(())
                }
                Result1::Value => Ok(()),
                Result1::Deferred => Err(format!("`{name}` is known only from the caller")),
            },
        }
    }

    /// `DW_OP_implicit_value`: the bytes are in the debug info. A condition takes them as a
    /// constant; a capture needs nothing from the kernel.
    fn implicit_value(&mut self, data: &R, name: &str) -> Result<Loc, Reason> {
        if self.capturing {
            return Ok(Loc::InRecord);
        }
        if data.len() > 8 {
            return Err(format!(
                "`{name}` is a constant of {} bytes; conditions compare values of up to 8",
                data.len()
            ));
        }
        self.emit(OpCode::Const, 0, 0, le_word(data)? as i64);
        Ok(Loc::Value)
    }

    /// `DW_OP_implicit_pointer`: the pointer was optimized away, but what it points to is the
    /// variable at DIE `die`, `byte_offset` in. Its place is what the plan computes.
    fn implicit_pointer(
        &mut self,
        die: usize,
        byte_offset: i64,
        name: &str,
    ) -> Result<Loc, Reason> {
        if self.implicit_depth >= 4 {
            return Err(format!("`{name}`: implicit pointers nested too deep"));
        }
        let (unit, ud) = self
            .index
            .units
            .iter()
            .enumerate()
            .rev()
            .find(|(_, u)| u.start <= die)
            .ok_or_else(|| format!("`{name}` is an implicit pointer to no known variable"))?;
        if unit as u32 != self.site.unit {
            return Err(format!(
                "`{name}` is an implicit pointer into another compilation unit; read on the ptrace path"
            ));
        }
        let entry = ud
            .unit
            .entry(gimli::UnitOffset(die - ud.start))
            .map_err(|e| e.to_string())?;
        let inner = match entry.attr_value(gimli::DW_AT_location) {
            Some(attr) => {
                let expr = self
                    .expression_at(&attr)?
                    .ok_or_else(|| format!("`{name}` points to a variable optimized out here"))?;
                self.implicit_depth += 1;
                let inner = self.location_ops(expr, name, true);
                self.implicit_depth -= 1;
                inner?
            }
            // A constant: its bytes are in the debug info.
            None if self.capturing => Loc::InRecord,
            None => {
                return Err(format!(
                    "`{name}` points to a constant; conditions on it run on the ptrace path"
                ))
            }
        };
        let inner = match inner {
            Loc::Address => {
                self.emit(OpCode::AddI, 0, 0, byte_offset);
                Loc::Address
            }
            Loc::Value if byte_offset == 0 => Loc::Value,
            Loc::Value => {
                self.emit(OpCode::Const, 0, 0, byte_offset.wrapping_mul(8));
                self.emit(OpCode::Bin, Bin::Shr as u8, 0, 0);
                Loc::Value
            }
            Loc::InRecord => Loc::InRecord,
            Loc::Implicit(_) => {
                return Err(format!(
                    "`{name}` is an implicit pointer to an implicit pointer"
                ))
            }
        };
        Ok(Loc::Implicit(Box::new(inner)))
    }

    pub(super) fn frame_base(&mut self, name: &str) -> Result<(), Reason> {
        let attr = self
            .site
            .visible
            .frame_base
            .clone()
            .ok_or("the function has no frame base")?;
        let expr = self
            .expression_at(&attr)?
            .ok_or_else(|| format!("no frame base for `{name}` at this pc"))?;
        self.location_ops(expr, name, false).map(|_| ())
    }

    pub(super) fn cfa_ops(&mut self, name: &str) -> Result<(), Reason> {
        match self.cfa {
            Some(CfaRule::RegOffset { reg, offset }) if reg <= 16 => {
                self.emit(OpCode::Reg, reg as u8, 0, 0);
                self.emit(OpCode::AddI, 0, 0, offset);
                Ok(())
            }
            _ => Err(format!(
                "no call frame information for `{name}` at {}",
                self.site.short_location()
            )),
        }
    }

    /// A slot that copies what evaluating an entry value in user space reads beyond the
    /// registers: this frame's saved registers and return address (the unwinder finds the
    /// caller with them), the function's code from its entry to the pc (which argument
    /// registers still hold their entry values), and the bottom of the caller's frame (where
    /// call-site values spilled to the stack are). The window goes last: near the top of the
    /// stack it may fault, and a fault ends the slot.
    pub(super) fn entry_inputs_slot(&mut self) -> Result<(), Reason> {
        let (cfa, rules) = rules_at(self.index, self.site.file_address).ok_or_else(|| {
            format!(
                "no call frame information at {}, so the caller of an entry value is not known",
                self.site.short_location()
            )
        })?;
        let CfaRule::RegOffset { reg, offset } = cfa;
        if reg > 16 {
            return Err("the frame's CFA is in a register a uprobe does not see".into());
        }
        self.depth = 0;
        let start = self.ops.len();
        self.emit(OpCode::Slot, 0, 0, 0);
        let saved: Vec<i64> = rules
            .iter()
            .filter_map(|(_, r)| match r {
                Rule::At(n) => Some(*n),
                _ => None,
            })
            .collect();
        if let (Some(lo), Some(hi)) = (saved.iter().min(), saved.iter().max()) {
            let len = hi - lo + 8;
            if len <= super::MAX_OBJECT as i64 {
                self.emit(OpCode::Reg, reg as u8, 0, 0);
                self.emit(OpCode::AddI, 0, 0, offset + lo);
                self.emit(OpCode::CapM, 0, len as u32, 0);
            } else {
                for n in saved {
                    self.emit(OpCode::Reg, reg as u8, 0, 0);
                    self.emit(OpCode::AddI, 0, 0, offset + n);
                    self.emit(OpCode::CapM, 0, 8, 0);
                }
            }
        }
        if let Some(f) = self.index.function_at(self.site.file_address) {
            let len = self.site.file_address.wrapping_sub(f.low_pc);
            if len > 0 && len <= ENTRY_CODE {
                self.emit(OpCode::Const, 0, 0, f.low_pc.wrapping_add(self.bias) as i64);
                self.emit(OpCode::CapM, 0, len as u32, 0);
            }
        }
        self.emit(OpCode::Reg, reg as u8, 0, 0);
        self.emit(OpCode::AddI, 0, 0, offset);
        self.emit(OpCode::CapM, 0, CALLER_WINDOW, 0);
        self.ops[start].next = self.ops.len() as u16;
        Ok(())
    }
}

fn top_of(st: &[Entry], name: &str) -> Result<Entry, Reason> {
    st.last()
        .copied()
        .ok_or_else(|| format!("`{name}`'s location operates on an empty stack"))
}

fn le_word(data: &R) -> Result<u64, Reason> {
    let bytes = data.to_slice().map_err(|e| e.to_string())?;
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    Ok(u64::from_le_bytes(w))
}

/// The expression reads nothing but general registers and constants (an entry value's inputs
/// are copied separately) and ends in a value: user space can compute it from a record.
fn registers_only(ops: &[Operation<R>]) -> bool {
    let reads_only_registers = ops.iter().all(|op| match op {
        Operation::Deref { .. }
        | Operation::TLS
        | Operation::AddressIndex { .. }
        | Operation::ConstantIndex { .. }
        | Operation::Call { .. }
        | Operation::PushObjectAddress
        | Operation::VariableValue { .. }
        | Operation::ImplicitPointer { .. }
        | Operation::Piece { .. } => false,
        Operation::Register { register } | Operation::RegisterOffset { register, .. } => {
            register.0 <= 16
        }
        _ => true,
    });
    reads_only_registers && ops.iter().any(|o| matches!(o, Operation::StackValue))
}

fn needs_caller(op: &Operation<R>) -> bool {
    matches!(
        op,
        Operation::EntryValue { .. } | Operation::ParameterRef { .. }
    )
}
