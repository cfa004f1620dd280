//! Capture plans: what the in-kernel program runs at one probe site, compiled from the probe's
//! expressions and the DWARF at that address.
//!
//! A plan has two parts. The condition ops leave one number on the stack (zero: the hit is
//! filtered). The capture ops copy into the record every byte user space will need to render
//! the probe's values: the objects the expressions name, the pointers followed to reach them,
//! the text of strings. User space then renders with the very same evaluator the ptrace path
//! uses, reading from those bytes instead of the live process (see `decode`), so a value reads
//! the same on both paths. What cannot be planned is refused with the reason, which `auto`
//! shows when it falls back to ptrace.

use super::program::{Op, OpCode, PlanData, MAX_OPS, PLAN_QUIET};
use crate::index::scope::Var;
use crate::index::types::{Type, TypeKind};
use crate::index::{Lang, ObjectIndex};
use crate::probe::{Action, ProbeSpec};
use crate::target::{Site, Target};
use crate::unwind::{cfa_rule, CfaRule};
use gimli::{Operation, Reader as _};
use periscope_core::expr::{BinOp, Expr, ExprKind};
use std::sync::Arc;

/// Bytes of a string's text captured (the evaluator's default `string_bytes` limit + 1 for
/// C strings' terminating NUL).
const STRING_BYTES: u32 = 256;
/// The largest object captured whole.
const MAX_OBJECT: u64 = 256;
/// The value stack's depth in the kernel program.
const STACK_DEPTH: usize = 8;

/// The end of the reason given for a variable the compiler dropped at this address.
const OPTIMIZED_OUT_HERE: &str = " is optimized out here";

/// Why an expression cannot run in the kernel, in words for the user.
pub type Reason = String;

/// Binary operators of the kernel program (`enum bin` in periscope.bpf.c).
#[derive(Clone, Copy)]
#[repr(u8)]
enum Bin {
    Add = 0,
    Sub,
    Mul,
    DivU,
    DivS,
    ModU,
    ModS,
    Eq,
    Ne,
    LtU,
    LeU,
    GtU,
    GeU,
    LtS,
    LeS,
    GtS,
    GeS,
}

/// What a number on the kernel's stack stands for, so operators pick signed, unsigned or float
/// comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Signed,
    Unsigned,
    Bool,
    /// Float bits already mapped to an ordered integer (`OP_FORD`); only comparisons apply.
    Float(u32),
}

/// Where a variable is at the site, as the kernel program reaches it.
enum Loc {
    /// Its address is on the stack.
    Address,
    /// Its value (the whole of it) is on the stack.
    Value,
}

/// Compiles the plans of a probe, one per site. Errors say why the probe cannot run in the
/// kernel.
pub fn compile(
    target: &Target,
    spec: &ProbeSpec,
    sites: &[Site],
    probe_slot: u32,
) -> Result<Vec<PlanData>, Reason> {
    sites
        .iter()
        .map(|site| compile_site(target, spec, site, probe_slot))
        .collect()
}

fn compile_site(
    target: &Target,
    spec: &ProbeSpec,
    site: &Site,
    probe_slot: u32,
) -> Result<PlanData, Reason> {
    let object = &target.objects[site.object];
    let mut c = Compiler {
        index: &object.index,
        bias: object.bias,
        site,
        spec,
        cfa: cfa_rule(&object.index, site.file_address),
        ops: Vec::new(),
        depth: 0,
        max_depth: 0,
    };
    if let Some(cond) = &spec.condition {
        let num = c.value(cond)?;
        if num == Num::Float(4) || num == Num::Float(8) {
            return Err(format!("`{cond}` is a float, not a condition"));
        }
        c.depth = 0;
    }
    let cond_len = c.ops.len();
    let mut flags = 0;
    let slots: Vec<&Expr> = match &spec.action {
        Action::Log(t) => t.holes().map(|(_, e)| e).collect(),
        Action::Count { by } | Action::Duration { by } => {
            flags |= PLAN_QUIET;
            by.iter().collect()
        }
        Action::Gauge { value, by } => {
            flags |= PLAN_QUIET;
            std::iter::once(value).chain(by.iter()).collect()
        }
        Action::Snapshot { .. } => return Err("snapshots capture the whole stack".into()),
        Action::Failures { .. } => return Err("failure capture needs the process stopped".into()),
        Action::Verify { .. } => return Err("verify evaluates candidate fixes".into()),
    };
    for e in slots {
        c.slot(e)?;
    }
    if c.ops.len() > MAX_OPS {
        return Err(format!(
            "the probe needs {} kernel steps at {}, more than the {MAX_OPS} a plan holds",
            c.ops.len(),
            site.short_location()
        ));
    }
    if c.max_depth > STACK_DEPTH {
        return Err("the expressions nest deeper than the kernel program's stack".into());
    }
    let mut plan = PlanData::empty(probe_slot);
    plan.cond_len = cond_len as u16;
    plan.nops = c.ops.len() as u16;
    plan.flags = flags;
    plan.ops[..c.ops.len()].copy_from_slice(&c.ops);
    Ok(plan)
}

struct Compiler<'a> {
    index: &'a ObjectIndex,
    bias: u64,
    site: &'a Site,
    spec: &'a ProbeSpec,
    cfa: Option<CfaRule>,
    ops: Vec<Op>,
    /// Values on the kernel's stack now, and the most at any point.
    depth: usize,
    max_depth: usize,
}

impl Compiler<'_> {
    fn emit(&mut self, code: OpCode, arg: u8, size: u32, imm: i64) {
        if code == OpCode::AddI {
            // Offsets in a row (CFA, then frame base, then a field) are one addition; no jump
            // ever lands between them, since jumps are patched after their operands.
            if imm == 0 {
                return;
            }
            if let Some(last) = self.ops.last_mut() {
                if last.code == OpCode::AddI as u8 {
                    last.imm = last.imm.wrapping_add(imm);
                    return;
                }
            }
        }
        let d = self.depth as isize + code.stack_effect();
        self.depth = d.max(0) as usize;
        self.max_depth = self.max_depth.max(self.depth);
        self.ops.push(Op {
            code: code as u8,
            arg,
            next: 0,
            size,
            imm,
        });
    }

    fn ty(&self, r: crate::index::scope::TypeRef) -> Arc<Type> {
        self.index.type_at(r.unit, r.offset)
    }

    fn var(&self, name: &str) -> Result<&Var, Reason> {
        self.site
            .visible
            .vars
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                if self.index.find_global(name, &self.site.function).is_some() {
                    format!("`{name}` is a global; globals are read on the ptrace path")
                } else {
                    format!(
                        "`{name}` is not a variable at {}",
                        self.site.short_location()
                    )
                }
            })
    }

    fn redacted(&self, name: &str) -> bool {
        self.spec.redactor.is_sensitive(name)
    }

    // ---- places ------------------------------------------------------------------------

    /// Puts the place of `e` on the stack: its address, or its value where it has no address
    /// (a register, a computed location). Returns its type.
    fn place(&mut self, e: &Expr) -> Result<(Loc, Arc<Type>), Reason> {
        match &e.kind {
            ExprKind::Name(n) => {
                if self.redacted(n) {
                    return Err(format!("`{n}` is redacted: it is never read"));
                }
                let var = self.var(n)?.clone();
                let ty = var
                    .ty
                    .map(|t| self.ty(t))
                    .ok_or_else(|| format!("`{n}` has no type in the debug info"))?;
                let loc = self.var_location(&var)?;
                Ok((loc, ty))
            }
            ExprKind::Field(base, field) => {
                let (loc, ty) = self.place(base)?;
                let ty = self.see_through_pointer(loc, ty, base)?;
                self.member(ty, field, e)
            }
            ExprKind::Arrow(base, field) => {
                let (loc, ty) = self.place(base)?;
                let ty = self.see_through_pointer(loc, ty, base)?;
                self.member(ty, field, e)
            }
            ExprKind::Deref(inner) => {
                let (loc, ty) = self.place(inner)?;
                let target = self.pointee(&ty, inner)?;
                if let Loc::Address = loc {
                    self.emit(OpCode::Load, 0, 8, 0);
                }
                Ok((Loc::Address, target))
            }
            ExprKind::Index(..) => Err(format!("indexing (`{e}`) is not supported in the kernel")),
            _ => Err(format!("`{e}` is not a variable or field")),
        }
    }

    /// For `p.x` on a pointer and `p->x`: loads the pointer, leaving the pointee's address.
    fn see_through_pointer(
        &mut self,
        loc: Loc,
        ty: Arc<Type>,
        base: &Expr,
    ) -> Result<Arc<Type>, Reason> {
        match &ty.kind {
            TypeKind::Pointer { .. } => {
                let target = self.pointee(&ty, base)?;
                if let Loc::Address = loc {
                    self.emit(OpCode::Load, 0, 8, 0);
                }
                Ok(target)
            }
            _ => match loc {
                Loc::Address => Ok(ty),
                Loc::Value => Err(format!(
                    "`{base}` is a {} held in registers; its fields are read on the ptrace path",
                    ty.name
                )),
            },
        }
    }

    fn pointee(&self, ty: &Type, e: &Expr) -> Result<Arc<Type>, Reason> {
        match &ty.kind {
            TypeKind::Pointer { target: Some(t) } => Ok(self.ty(*t)),
            _ => Err(format!("`{e}` ({}) is not a pointer", ty.name)),
        }
    }

    /// The member `field` of the struct whose address is on the stack.
    fn member(&mut self, ty: Arc<Type>, field: &str, e: &Expr) -> Result<(Loc, Arc<Type>), Reason> {
        if self.redacted(field) {
            return Err(format!("`{e}` is redacted: it is never read"));
        }
        let TypeKind::Struct {
            members, variants, ..
        } = &ty.kind
        else {
            return Err(format!("`{e}`: {} has no fields", ty.name));
        };
        if variants.is_some() {
            return Err(format!(
                "`{e}`: the fields of an enum's variants are read on the ptrace path"
            ));
        }
        let tuple = format!("__{field}");
        let m = members
            .iter()
            .find(|m| m.name == field || m.name == tuple)
            .ok_or_else(|| format!("`{e}`: {} has no field `{field}`", ty.name))?;
        if m.bits.is_some() {
            return Err(format!(
                "`{e}` is a bitfield; bitfields are read on the ptrace path"
            ));
        }
        let mt =
            m.ty.map(|t| self.ty(t))
                .ok_or_else(|| format!("`{e}` has no type in the debug info"))?;
        if m.offset != 0 {
            self.emit(OpCode::AddI, 0, 0, m.offset as i64);
        }
        Ok((Loc::Address, mt))
    }

    /// The ops that compute a variable's place at this site's pc, from its DWARF location
    /// (the expression itself, or the location-list entry covering the pc).
    fn var_location(&mut self, var: &Var) -> Result<Loc, Reason> {
        let Some(attr) = &var.location else {
            return Err(format!("`{}`{OPTIMIZED_OUT_HERE}", var.name));
        };
        let expr = self
            .expression_at(attr)?
            .ok_or_else(|| format!("`{}`{OPTIMIZED_OUT_HERE}", var.name))?;
        self.location_ops(expr, &var.name, true)
    }

    fn expression_at(
        &self,
        attr: &gimli::AttributeValue<crate::index::R>,
    ) -> Result<Option<gimli::Expression<crate::index::R>>, Reason> {
        if let gimli::AttributeValue::Exprloc(e) = attr {
            return Ok(Some(e.clone()));
        }
        let ud = self
            .index
            .units
            .get(self.site.unit as usize)
            .ok_or("no unit")?;
        let offset = self
            .index
            .dwarf
            .attr_locations_offset(&ud.unit, attr.clone())
            .map_err(|e| e.to_string())?
            .ok_or("unsupported location form")?;
        let mut iter = self
            .index
            .dwarf
            .locations(&ud.unit, offset)
            .map_err(|e| e.to_string())?;
        let pc = self.site.file_address;
        while let Ok(Some(entry)) = iter.next() {
            if pc >= entry.range.begin && pc < entry.range.end {
                return Ok(Some(entry.data));
            }
        }
        Ok(None)
    }

    /// Translates a DWARF location expression into kernel ops. The common forms compilers
    /// emit are covered: registers, register + offset, frame base and CFA offsets, static
    /// addresses, dereferences, constants and computed values. `top`: a variable's location
    /// (a register there means the value is in it); `false` for a frame base.
    fn location_ops(
        &mut self,
        expr: gimli::Expression<crate::index::R>,
        name: &str,
        top: bool,
    ) -> Result<Loc, Reason> {
        let encoding = self
            .index
            .units
            .get(self.site.unit as usize)
            .ok_or("no unit")?
            .unit
            .encoding();
        let mut bytes = expr.0;
        let mut ops = Vec::new();
        while !bytes.is_empty() {
            ops.push(Operation::parse(&mut bytes, encoding).map_err(|e| e.to_string())?);
            if ops.len() > 16 {
                return Err(format!("`{name}` has a location too long for the kernel"));
            }
        }
        if let [Operation::Register { register }] = ops.as_slice() {
            let r = register.0;
            if r > 16 {
                return Err(format!(
                    "`{name}` is in an SSE register, which a uprobe does not see"
                ));
            }
            self.emit(OpCode::Reg, r as u8, 0, 0);
            return Ok(Loc::Value);
        }
        let mut loc = Loc::Address;
        for op in ops {
            match op {
                Operation::RegisterOffset {
                    register, offset, ..
                } => {
                    if register.0 > 16 {
                        return Err(format!("`{name}` is based on an SSE register"));
                    }
                    self.emit(OpCode::Reg, register.0 as u8, 0, 0);
                    self.emit(OpCode::AddI, 0, 0, offset);
                }
                Operation::FrameOffset { offset } => {
                    self.frame_base(name)?;
                    self.emit(OpCode::AddI, 0, 0, offset);
                }
                Operation::CallFrameCFA => self.cfa_ops(name)?,
                Operation::Address { address } => {
                    self.emit(OpCode::Const, 0, 0, address.wrapping_add(self.bias) as i64)
                }
                Operation::PlusConstant { value } => self.emit(OpCode::AddI, 0, 0, value as i64),
                Operation::Deref {
                    size, space: false, ..
                } => self.emit(OpCode::Load, 0, u32::from(size), 0),
                Operation::UnsignedConstant { value } => {
                    self.emit(OpCode::Const, 0, 0, value as i64)
                }
                Operation::SignedConstant { value } => self.emit(OpCode::Const, 0, 0, value),
                Operation::StackValue => loc = Loc::Value,
                Operation::Plus => self.emit(OpCode::Bin, Bin::Add as u8, 0, 0),
                Operation::Minus => self.emit(OpCode::Bin, Bin::Sub as u8, 0, 0),
                Operation::Piece { .. } => {
                    return Err(format!(
                        "`{name}` is split into pieces here (DW_OP_piece); read on the ptrace path"
                    ))
                }
                Operation::EntryValue { .. } => {
                    return Err(format!(
                        "`{name}` is known here only as its value at entry (DW_OP_entry_value)"
                    ))
                }
                Operation::ImplicitPointer { .. } | Operation::ImplicitValue { .. } => {
                    return Err(format!(
                        "`{name}` was optimized into an implicit value or pointer here"
                    ))
                }
                Operation::TLS | Operation::AddressIndex { .. } => {
                    return Err(format!("`{name}` is thread-local; read on the ptrace path"))
                }
                other => {
                    return Err(format!(
                    "`{name}`'s location uses {other:?}, which the kernel plan does not translate"
                ))
                }
            }
        }
        if !top {
            return Ok(Loc::Value);
        }
        Ok(loc)
    }

    fn frame_base(&mut self, name: &str) -> Result<(), Reason> {
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

    fn cfa_ops(&mut self, name: &str) -> Result<(), Reason> {
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

    // ---- values (conditions) -------------------------------------------------------------

    /// Leaves the value of `e` on the stack, as a number.
    fn value(&mut self, e: &Expr) -> Result<Num, Reason> {
        match &e.kind {
            ExprKind::Int(v) => {
                let v = i64::try_from(*v).map_err(|_| format!("{v} does not fit in 64 bits"))?;
                self.emit(OpCode::Const, 0, 0, v);
                Ok(Num::Signed)
            }
            ExprKind::Bool(b) => {
                self.emit(OpCode::Const, 0, 0, i64::from(*b));
                Ok(Num::Bool)
            }
            ExprKind::Char(c) => {
                self.emit(OpCode::Const, 0, 0, i64::from(u32::from(*c)));
                Ok(Num::Unsigned)
            }
            ExprKind::Float(_) => Err(format!(
                "`{e}`: a float on its own is compared on the ptrace path"
            )),
            ExprKind::Str(_) => Err(format!(
                "`{e}`: string comparisons are not supported in the kernel"
            )),
            ExprKind::Not(a) => {
                self.value(a)?;
                self.emit(OpCode::Not, 0, 0, 0);
                Ok(Num::Bool)
            }
            ExprKind::Neg(a) => {
                let n = self.value(a)?;
                if matches!(n, Num::Float(_)) {
                    return Err(format!(
                        "`{e}`: float arithmetic is not supported in the kernel"
                    ));
                }
                self.emit(OpCode::Neg, 0, 0, 0);
                Ok(Num::Signed)
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, e),
            ExprKind::Method(recv, m, args) if m == "len" && args.is_empty() => self.len(recv),
            ExprKind::Call(f, args) if f == "len" && args.len() == 1 => self.len(&args[0]),
            ExprKind::Name(_) | ExprKind::Field(..) | ExprKind::Arrow(..) | ExprKind::Deref(_) => {
                let (loc, ty) = self.place(e)?;
                self.scalar(loc, &ty, e)
            }
            _ => Err(format!("`{e}` is not supported in the kernel")),
        }
    }

    /// Turns the place on the stack into its scalar value.
    fn scalar(&mut self, loc: Loc, ty: &Type, e: &Expr) -> Result<Num, Reason> {
        let size = ty.size.unwrap_or(0);
        let num = match &ty.kind {
            TypeKind::Base(enc) if *enc == gimli::DW_ATE_float => Num::Float(size as u32),
            TypeKind::Base(enc) if *enc == gimli::DW_ATE_boolean => Num::Bool,
            TypeKind::Base(enc)
                if *enc == gimli::DW_ATE_signed || *enc == gimli::DW_ATE_signed_char =>
            {
                Num::Signed
            }
            TypeKind::Base(_) => Num::Unsigned,
            TypeKind::Enum { signed, .. } => {
                if *signed {
                    Num::Signed
                } else {
                    Num::Unsigned
                }
            }
            TypeKind::Pointer { .. } if size == 8 => Num::Unsigned,
            _ => {
                return Err(format!(
                    "`{e}` is a {}, not a number; compare its fields",
                    ty.name
                ))
            }
        };
        if !(1..=8).contains(&size) || (matches!(num, Num::Float(_)) && size != 4 && size != 8) {
            return Err(format!("`{e}` ({}) is wider than 64 bits", ty.name));
        }
        let size = size as u32;
        match loc {
            Loc::Address => self.emit(OpCode::Load, u8::from(num == Num::Signed), size, 0),
            Loc::Value if num == Num::Signed => self.emit(OpCode::Sext, 0, size, 0),
            Loc::Value => self.emit(OpCode::Zext, 0, size, 0),
        }
        if let Num::Float(s) = num {
            self.emit(OpCode::Ford, 0, s, 0);
        }
        Ok(num)
    }

    fn binary(&mut self, op: BinOp, a: &Expr, b: &Expr, e: &Expr) -> Result<Num, Reason> {
        if matches!(op, BinOp::And | BinOp::Or) {
            self.value(a)?;
            self.emit(OpCode::Bool, 0, 0, 0);
            let jump = self.ops.len();
            let code = if op == BinOp::And {
                OpCode::JzK
            } else {
                OpCode::JnzK
            };
            self.emit(code, 0, 0, 0);
            self.emit(OpCode::Pop, 0, 0, 0);
            self.value(b)?;
            self.emit(OpCode::Bool, 0, 0, 0);
            self.ops[jump].next = self.ops.len() as u16;
            return Ok(Num::Bool);
        }
        // An enumerator or a float literal takes its meaning from the other side's type.
        let (na, nb) = if self.is_literal_for(b) {
            let na = self.value(a)?;
            let nb = self.literal_like(b, na, f_of(&b.kind), e)?;
            (na, nb)
        } else if self.is_literal_for(a) {
            // The variable side first, to learn its type; then the two swapped back.
            let nb = self.value(b)?;
            let na = self.literal_like(a, nb, f_of(&a.kind), e)?;
            self.emit(OpCode::Swap, 0, 0, 0);
            (na, nb)
        } else {
            let na = self.value(a)?;
            let nb = self.value(b)?;
            (na, nb)
        };
        let float = matches!(na, Num::Float(_)) || matches!(nb, Num::Float(_));
        if float && na != nb {
            return Err(format!(
                "`{e}` mixes a float with another type; compared on the ptrace path"
            ));
        }
        let signed = na == Num::Signed || nb == Num::Signed;
        let cmp = |s: Bin, u: Bin| if signed { s } else { u };
        let bin = match op {
            BinOp::Eq => Bin::Eq,
            BinOp::Ne => Bin::Ne,
            BinOp::Lt => cmp(Bin::LtS, Bin::LtU),
            BinOp::Le => cmp(Bin::LeS, Bin::LeU),
            BinOp::Gt => cmp(Bin::GtS, Bin::GtU),
            BinOp::Ge => cmp(Bin::GeS, Bin::GeU),
            _ if float => {
                return Err(format!(
                    "`{e}`: float arithmetic is not supported in the kernel"
                ))
            }
            BinOp::Add => Bin::Add,
            BinOp::Sub => Bin::Sub,
            BinOp::Mul => Bin::Mul,
            BinOp::Div => cmp(Bin::DivS, Bin::DivU),
            BinOp::Rem => cmp(Bin::ModS, Bin::ModU),
            BinOp::And | BinOp::Or => unreachable!("handled above"),
        };
        self.emit(OpCode::Bin, bin as u8, 0, 0);
        Ok(match op {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => Num::Bool,
            _ if signed => Num::Signed,
            _ => Num::Unsigned,
        })
    }

    /// A float literal, or a name that is no variable here (an enumerator, compared by value).
    fn is_literal_for(&self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Float(_) => true,
            ExprKind::Name(n) => !self.site.visible.vars.iter().any(|v| &v.name == n),
            _ => false,
        }
    }

    /// Pushes a literal in the form the other side's number has: a float as ordered bits of
    /// its width, an enumerator as its value.
    fn literal_like(
        &mut self,
        lit: &Expr,
        other: Num,
        f: Option<f64>,
        e: &Expr,
    ) -> Result<Num, Reason> {
        if let Some(f) = f {
            let bits = match other {
                Num::Float(4) => u64::from((f as f32).to_bits()),
                Num::Float(_) => f.to_bits(),
                _ => return Err(format!("`{e}` compares a float with a non-float")),
            };
            let width = if other == Num::Float(4) { 4 } else { 8 };
            self.emit(OpCode::Const, 0, 0, bits as i64);
            self.emit(OpCode::Ford, 0, width, 0);
            return Ok(other);
        }
        let ExprKind::Name(name) = &lit.kind else {
            return Err(format!("`{lit}` is not supported in the kernel"));
        };
        let value = self
            .enumerator(name)
            .ok_or_else(|| format!("`{name}` is neither a variable nor an enumerator here"))?;
        self.emit(OpCode::Const, 0, 0, value as i64);
        Ok(other)
    }

    /// The value of a C/C++ enumerator named `name` (or `Type::name`), from the enum types of
    /// the variables in scope.
    fn enumerator(&self, name: &str) -> Option<i128> {
        let short = name.rsplit("::").next().unwrap_or(name);
        self.site.visible.vars.iter().find_map(|v| {
            let mut ty = self.ty(v.ty?);
            for _ in 0..4 {
                match &ty.kind {
                    TypeKind::Pointer { target: Some(t) } => ty = self.ty(*t),
                    _ => break,
                }
            }
            self.enumerator_in(&ty, short, 0)
        })
    }

    fn enumerator_in(&self, ty: &Type, name: &str, level: u32) -> Option<i128> {
        match &ty.kind {
            TypeKind::Enum { enumerators, .. } => {
                enumerators.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
            }
            TypeKind::Struct { members, .. } if level < 3 => members
                .iter()
                .find_map(|m| self.enumerator_in(&self.ty(m.ty?), name, level + 1)),
            _ => None,
        }
    }

    /// `len()` of a Rust `&str`, slice, `String` or `Vec`, a Go string or slice, or a C array.
    fn len(&mut self, recv: &Expr) -> Result<Num, Reason> {
        let (loc, ty) = self.place(recv)?;
        let (loc, ty) = self.through_references(loc, ty);
        if let TypeKind::Array { count: Some(n), .. } = ty.kind {
            if let Loc::Address = loc {
                self.emit(OpCode::Pop, 0, 0, 0);
            }
            self.emit(OpCode::Const, 0, 0, n as i64);
            return Ok(Num::Unsigned);
        }
        let Loc::Address = loc else {
            return Err(format!(
                "`{recv}` is held in registers; its length is read on the ptrace path"
            ));
        };
        let (_, len_off) = self
            .sequence_parts(&ty)
            .ok_or_else(|| format!("`{recv}` ({}) has no length the kernel knows", ty.name))?;
        self.emit(OpCode::AddI, 0, 0, len_off as i64);
        self.emit(OpCode::Load, 0, 8, 0);
        Ok(Num::Unsigned)
    }

    /// A reference (`&Vec<T>`, `&mut String`) to a struct, seen through as methods do: the
    /// struct's address left on the stack.
    fn through_references(&mut self, mut loc: Loc, mut ty: Arc<Type>) -> (Loc, Arc<Type>) {
        for _ in 0..4 {
            let TypeKind::Pointer { target: Some(t) } = ty.kind else {
                break;
            };
            let target = self.ty(t);
            if !matches!(target.kind, TypeKind::Struct { .. }) || self.string_parts(&ty).is_some() {
                break;
            }
            if let Loc::Address = loc {
                self.emit(OpCode::Load, 0, 8, 0);
            }
            loc = Loc::Address;
            ty = target;
        }
        (loc, ty)
    }

    /// Offsets of (data pointer, length) in a Rust `&str`/slice/`String`/`Vec` or a Go
    /// string/slice, found by field names as `rust_std` does.
    fn sequence_parts(&self, ty: &Type) -> Option<(u64, u64)> {
        if let (Some(p), Some(l)) = (ty.member("data_ptr"), ty.member("length")) {
            return Some((p.offset, l.offset));
        }
        if ty.lang == Lang::Go {
            let p = ty.member("str").or_else(|| ty.member("array"))?;
            return Some((p.offset, ty.member("len")?.offset));
        }
        if let Some(vec) = ty.member("vec") {
            let (p, l) = self.sequence_parts(&self.ty(vec.ty?))?;
            return Some((vec.offset + p, vec.offset + l));
        }
        let len = ty.member("len")?.offset;
        let buf = ty.member("buf")?;
        let ptr = first_pointer(self, &self.ty(buf.ty?), buf.offset, 0)?;
        Some((ptr, len))
    }

    // ---- captures (values shown) ------------------------------------------------------------

    /// One value to show: a slot of ops that copies what rendering `e` reads.
    fn slot(&mut self, e: &Expr) -> Result<(), Reason> {
        let start = self.ops.len();
        self.emit(OpCode::Slot, 0, 0, 0);
        self.depth = 0;
        self.capture_expr(e)?;
        let end = self.ops.len() as u16;
        self.ops[start].next = end;
        Ok(())
    }

    fn capture_expr(&mut self, e: &Expr) -> Result<(), Reason> {
        match &e.kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Bool(_)
            | ExprKind::Char(_)
            | ExprKind::Str(_) => Ok(()),
            ExprKind::Name(n) if self.redacted(n) => Ok(()),
            ExprKind::Name(n) if self.is_literal_for(e) && self.enumerator(n).is_some() => Ok(()),
            ExprKind::Field(_, f) | ExprKind::Arrow(_, f) if self.redacted(f) => Ok(()),
            ExprKind::Name(_) | ExprKind::Field(..) | ExprKind::Arrow(..) | ExprKind::Deref(_) => {
                let (mark, depth) = (self.ops.len(), self.depth);
                let (loc, ty) = match self.place(e) {
                    Ok(p) => p,
                    // The reader says so itself, reading nothing: as on the ptrace path.
                    Err(why) if why.ends_with(OPTIMIZED_OUT_HERE) => {
                        self.ops.truncate(mark);
                        self.depth = depth;
                        return Ok(());
                    }
                    Err(why) => return Err(why),
                };
                match loc {
                    Loc::Address => self.capture_object(&ty, e),
                    Loc::Value => self.capture_value(&ty, e),
                }
            }
            ExprKind::Method(recv, m, args) if m == "len" && args.is_empty() => {
                self.capture_len(recv)
            }
            ExprKind::Call(f, args) if f == "len" && args.len() == 1 => self.capture_len(&args[0]),
            ExprKind::Not(a) | ExprKind::Neg(a) | ExprKind::Cast(a, _) => self.capture_expr(a),
            ExprKind::Binary(_, a, b) => {
                self.capture_expr(a)?;
                self.capture_expr(b)
            }
            ExprKind::Index(..) => Err(format!("indexing (`{e}`) is not supported in the kernel")),
            ExprKind::Method(_, m, _) | ExprKind::Call(m, _) => {
                Err(format!("`{m}` (in `{e}`) is not supported in the kernel"))
            }
            _ => Err(format!("`{e}` is not supported in the kernel")),
        }
    }

    fn capture_len(&mut self, recv: &Expr) -> Result<(), Reason> {
        let (loc, ty) = self.place(recv)?;
        if let TypeKind::Pointer { .. } = ty.kind {
            // The reference itself, then the object it refers to.
            if let Loc::Address = loc {
                self.emit(OpCode::Dup, 0, 0, 0);
                self.emit(OpCode::CapM, 0, 8, 0);
            }
        }
        let (loc, ty) = self.through_references(loc, ty);
        match loc {
            Loc::Address => {
                let size = Some(size_of(self, &ty))
                    .filter(|s| *s > 0 && *s <= MAX_OBJECT)
                    .ok_or_else(|| {
                        format!("`{recv}` ({}) is too large to read in the kernel", ty.name)
                    })?;
                self.emit(OpCode::CapM, 0, size as u32, 0);
                Ok(())
            }
            Loc::Value => self.capture_value(&ty, recv),
        }
    }

    /// A value held whole in registers or computed by its location: the registers and any
    /// memory its location read are already in the record; a pointer's target is captured.
    fn capture_value(&mut self, ty: &Type, e: &Expr) -> Result<(), Reason> {
        match &ty.kind {
            TypeKind::Pointer { target } => self.capture_pointee(*target, e, 1),
            TypeKind::Base(_) | TypeKind::Enum { .. } => {
                self.emit(OpCode::Pop, 0, 0, 0);
                Ok(())
            }
            _ => Err(format!(
                "`{e}` ({}) is held in registers; it is read on the ptrace path",
                ty.name
            )),
        }
    }

    /// The object of type `ty` whose address is on the stack (popped), and what showing it
    /// reads behind its pointers: a string's text, a pointer's target, the members' targets.
    fn capture_object(&mut self, ty: &Type, e: &Expr) -> Result<(), Reason> {
        self.capture_at(ty, e, 0)
    }

    fn capture_at(&mut self, ty: &Type, e: &Expr, level: u32) -> Result<(), Reason> {
        if level > 2 {
            // Deeper than the reader follows by default: it shows no more than this.
            self.emit(OpCode::Pop, 0, 0, 0);
            return Ok(());
        }
        if let TypeKind::Pointer { target } = &ty.kind {
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::CapM, 0, 8, 0);
            self.emit(OpCode::Load, 0, 8, 0);
            return self.capture_pointee(*target, e, level + 1);
        }
        if let Some((ptr, len)) = self.string_parts(ty) {
            // The fat pointer itself, then min(len, limit) bytes of its text.
            let size = ty.size.unwrap_or(16) as u32;
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::CapM, 0, size, 0);
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::AddI, 0, 0, ptr as i64);
            self.emit(OpCode::Load, 0, 8, 0);
            self.emit(OpCode::Swap, 0, 0, 0);
            self.emit(OpCode::AddI, 0, 0, len as i64);
            self.emit(OpCode::Load, 0, 8, 0);
            self.emit(OpCode::CapBuf, 0, STRING_BYTES - 1, 0);
            return Ok(());
        }
        if self.is_flat(ty, 0) {
            return self.capture_flat(ty, e, 0);
        }
        // A struct with pointers in it: its bytes (leaving out redacted members), then what
        // each member that is not plain bytes leads to.
        let TypeKind::Struct {
            members,
            variants: None,
            ..
        } = &ty.kind
        else {
            return Err(format!(
                "`{e}` is a {}: its values behind pointers are read on the ptrace path",
                ty.name
            ));
        };
        let size = size_of(self, ty);
        let whole = size > 0 && size <= MAX_OBJECT && !self.has_redacted(ty, 0);
        if whole {
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::CapM, 0, size as u32, 0);
        }
        for m in members.clone() {
            if self.redacted(&m.name) {
                continue;
            }
            let Some(mt) = m.ty.map(|t| self.ty(t)) else {
                continue;
            };
            if whole && self.is_flat(&mt, 0) {
                continue;
            }
            self.emit(OpCode::Dup, 0, 0, 0);
            if m.offset != 0 {
                self.emit(OpCode::AddI, 0, 0, m.offset as i64);
            }
            self.capture_at(&mt, e, level + 1)?;
        }
        self.emit(OpCode::Pop, 0, 0, 0);
        Ok(())
    }

    /// A pointer's target (the pointer on the stack, popped): a C string's text, or an object
    /// without pointers of its own.
    fn capture_pointee(
        &mut self,
        target: Option<crate::index::scope::TypeRef>,
        e: &Expr,
        level: u32,
    ) -> Result<(), Reason> {
        let Some(t) = target else {
            self.emit(OpCode::Pop, 0, 0, 0);
            return Ok(());
        };
        let pt = self.ty(t);
        if matches!(pt.kind, TypeKind::Base(enc) if enc == gimli::DW_ATE_signed_char || enc == gimli::DW_ATE_unsigned_char)
            && pt.lang != Lang::Rust
        {
            self.emit(OpCode::CapStr, 0, STRING_BYTES, 0);
            return Ok(());
        }
        match pt.kind {
            TypeKind::Void | TypeKind::Function => {
                self.emit(OpCode::Pop, 0, 0, 0);
                Ok(())
            }
            _ => self.capture_at(&pt, e, level),
        }
    }

    /// An object without pointers: its bytes, leaving out redacted members (never read).
    fn capture_flat(&mut self, ty: &Type, e: &Expr, level: u32) -> Result<(), Reason> {
        if level > 4 {
            return Err(format!("`{e}` nests too deep to read in the kernel"));
        }
        let size = size_of(self, ty);
        if !self.is_flat(ty, 0) || size == 0 || size > MAX_OBJECT {
            return Err(format!(
                "`{e}` is a {}: values behind its pointers (or more than {MAX_OBJECT} bytes) are read on the ptrace path",
                ty.name
            ));
        }
        if !self.has_redacted(ty, 0) {
            self.emit(OpCode::CapM, 0, size as u32, 0);
            return Ok(());
        }
        let TypeKind::Struct { members, .. } = &ty.kind else {
            self.emit(OpCode::CapM, 0, size as u32, 0);
            return Ok(());
        };
        for m in members.clone() {
            if self.redacted(&m.name) {
                continue;
            }
            let Some(mt) = m.ty.map(|t| self.ty(t)) else {
                continue;
            };
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::AddI, 0, 0, m.offset as i64);
            self.capture_flat(&mt, e, level + 1)?;
        }
        self.emit(OpCode::Pop, 0, 0, 0);
        Ok(())
    }

    /// (data pointer, length) offsets of a Rust `&str` or `String`, or a Go string.
    fn string_parts(&self, ty: &Type) -> Option<(u64, u64)> {
        let name = ty.name.as_str();
        let is_string = matches!(
            name,
            "&str" | "&mut str" | "*const str" | "alloc::string::String" | "String"
        ) || (ty.lang == Lang::Go && name == "string");
        if is_string {
            self.sequence_parts(ty)
        } else {
            None
        }
    }

    /// No pointers anywhere inside: its bytes are the whole of its value.
    fn is_flat(&self, ty: &Type, level: u32) -> bool {
        if level > 8 {
            return false;
        }
        match &ty.kind {
            TypeKind::Base(_) | TypeKind::Enum { .. } => true,
            TypeKind::Array { elem, count } => {
                count.is_some() && self.is_flat(&self.ty(*elem), level + 1)
            }
            TypeKind::Struct {
                members, variants, ..
            } => {
                members
                    .iter()
                    .all(|m| m.ty.is_some_and(|t| self.is_flat(&self.ty(t), level + 1)))
                    && variants.as_ref().is_none_or(|vp| {
                        vp.variants.iter().all(|v| {
                            v.member
                                .ty
                                .is_some_and(|t| self.is_flat(&self.ty(t), level + 1))
                        })
                    })
            }
            _ => false,
        }
    }

    fn has_redacted(&self, ty: &Type, level: u32) -> bool {
        if level > 4 {
            return false;
        }
        match &ty.kind {
            TypeKind::Struct { members, .. } => members.iter().any(|m| {
                self.redacted(&m.name)
                    || m.ty
                        .is_some_and(|t| self.has_redacted(&self.ty(t), level + 1))
            }),
            _ => false,
        }
    }
}

/// A type's size in bytes; an array's from its element's (DWARF often gives arrays none).
fn size_of(c: &Compiler, ty: &Type) -> u64 {
    match (&ty.kind, ty.size) {
        (_, Some(s)) => s,
        (
            TypeKind::Array {
                elem,
                count: Some(n),
            },
            None,
        ) => size_of(c, &c.ty(*elem)) * n,
        _ => 0,
    }
}

/// The offset of the first pointer inside a (nested) struct: RawVec's data pointer, whose
/// nesting changes between rustc versions (as `rust_std` finds it).
fn first_pointer(c: &Compiler, ty: &Type, base: u64, level: u32) -> Option<u64> {
    if level > 8 {
        return None;
    }
    match &ty.kind {
        TypeKind::Pointer { .. } => Some(base),
        TypeKind::Struct { members, .. } => {
            const PREFERRED: [&str; 3] = ["ptr", "pointer", "inner"];
            let preferred = members
                .iter()
                .filter(|m| PREFERRED.contains(&m.name.as_str()));
            let others = members
                .iter()
                .filter(|m| !PREFERRED.contains(&m.name.as_str()));
            preferred
                .chain(others)
                .find_map(|m| first_pointer(c, &c.ty(m.ty?), base + m.offset, level + 1))
        }
        _ => None,
    }
}

fn f_of(k: &ExprKind) -> Option<f64> {
    match k {
        ExprKind::Float(f) => Some(*f),
        _ => None,
    }
}
