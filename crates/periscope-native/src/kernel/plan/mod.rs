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

mod capture;
mod dwarf;
mod value;

use super::program::{Op, OpCode, PlanData, MAX_OPS, PLAN_QUIET};
use crate::index::scope::Var;
use crate::index::types::{Type, TypeKind};
use crate::index::{Lang, ObjectIndex};
use crate::probe::{Action, ProbeSpec};
use crate::target::{Site, Target};
use crate::unwind::{cfa_rule, CfaRule};
use periscope_core::expr::{Expr, ExprKind};
use std::sync::Arc;

/// Bytes of a string's text captured (the evaluator's default `string_bytes` limit + 1 for
/// C strings' terminating NUL).
pub(super) const STRING_BYTES: u32 = 256;
/// The largest object captured whole.
pub(super) const MAX_OBJECT: u64 = 256;
/// The value stack's depth in the kernel program.
const STACK_DEPTH: usize = 8;

/// The end of the reason given for a variable the compiler dropped at this address.
pub(super) const OPTIMIZED_OUT_HERE: &str = " is optimized out here";

/// The end of the reason given for a local an `async fn` keeps in its state machine, where
/// the kernel would need its one place (a condition, a field path).
const SAVED_IN_ASYNC_STATE: &str =
    " is saved in the async fn's state machine here; which state holds it is read at each hit, so a condition or field path on it runs on the ptrace path";

/// Why an expression cannot run in the kernel, in words for the user.
pub type Reason = String;

/// Binary operators of the kernel program (`enum bin` in periscope.bpf.c).
#[derive(Clone, Copy)]
#[repr(u8)]
pub(super) enum Bin {
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
    And,
    /// Shifts by 64 or more leave no bits, as in DWARF.
    Shr,
    Or,
    Xor,
    Shl,
    Sar,
}

/// What a number on the kernel's stack stands for, so operators pick signed, unsigned or float
/// comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Signed,
    Unsigned,
    Bool,
    /// Float bits already mapped to an ordered integer (`OP_FORD`); only comparisons apply.
    Float(u32),
}

/// Where a variable is at the site, as the kernel program reaches it.
#[derive(Debug)]
pub(super) enum Loc {
    /// Its address is on the stack.
    Address,
    /// Its value (the whole of it) is on the stack.
    Value,
    /// Nothing on the stack: what its value is made of is in the record already (registers,
    /// pieces the plan copied, the inputs of an entry value, constants of the debug info),
    /// and user space computes it from there.
    InRecord,
    /// A pointer the compiler optimized away (`DW_OP_implicit_pointer`): the place of what
    /// it pointed to (an address, a value or nothing on the stack, as for a variable).
    Implicit(Box<Loc>),
}

/// Compiles the plans of a probe, one per site. Errors say why the probe cannot run in the
/// kernel.
pub fn compile(target: &Target, spec: &ProbeSpec, sites: &[Site]) -> Result<Vec<PlanData>, Reason> {
    let goid = crate::engine::goid_offset(target);
    sites
        .iter()
        .map(|site| {
            let go = target.objects[site.object].index.unit_lang(site.unit) == Lang::Go;
            compile_site(target, spec, site, goid.filter(|_| go))
        })
        .collect()
}

fn compile_site(
    target: &Target,
    spec: &ProbeSpec,
    site: &Site,
    goid: Option<u64>,
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
        capturing: false,
        entry_inputs: false,
        implicit_depth: 0,
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
    if c.entry_inputs {
        c.entry_inputs_slot()?;
    }
    if let Some(off) = goid {
        // Go keeps the running goroutine's `g` in r14 (its register ABI): its id goes into
        // the record as the ptrace path reads it.
        c.depth = 0;
        c.emit(OpCode::Slot, 0, 0, 0);
        let start = c.ops.len() - 1;
        c.emit(OpCode::Reg, 14, 0, 0);
        c.emit(OpCode::AddI, 0, 0, off as i64);
        c.emit(OpCode::Load, 0, 8, 0);
        c.emit(OpCode::Pop, 0, 0, 0);
        c.ops[start].next = c.ops.len() as u16;
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
    // The probe's slot in the kernel is set when the engine takes the probe.
    let mut plan = PlanData::empty(0);
    plan.cond_len = cond_len as u16;
    plan.nops = c.ops.len() as u16;
    plan.flags = flags;
    plan.ops[..c.ops.len()].copy_from_slice(&c.ops);
    Ok(plan)
}

pub(super) struct Compiler<'a> {
    pub(super) index: &'a ObjectIndex,
    pub(super) bias: u64,
    pub(super) site: &'a Site,
    pub(super) spec: &'a ProbeSpec,
    pub(super) cfa: Option<CfaRule>,
    pub(super) ops: Vec<Op>,
    /// Values on the kernel's stack now, and the most at any point.
    pub(super) depth: usize,
    pub(super) max_depth: usize,
    /// Compiling a capture slot (values rendered in user space), not the condition (a number
    /// the kernel needs itself).
    pub(super) capturing: bool,
    /// A value here is an entry value: the plan ends with a slot copying its inputs.
    pub(super) entry_inputs: bool,
    /// Implicit pointers being followed (bounded, for malformed debug info).
    pub(super) implicit_depth: u8,
}

impl Loc {
    /// Whether the place leaves a number on the kernel's stack.
    pub(super) fn on_stack(&self) -> bool {
        match self {
            Loc::Address | Loc::Value => true,
            Loc::InRecord => false,
            Loc::Implicit(inner) => inner.on_stack(),
        }
    }
}

impl Compiler<'_> {
    pub(super) fn emit(&mut self, code: OpCode, arg: u8, size: u32, imm: i64) {
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

    pub(super) fn ty(&self, r: crate::index::scope::TypeRef) -> Arc<Type> {
        self.index.type_at(r.unit, r.offset)
    }

    pub(super) fn var(&self, name: &str) -> Result<&Var, Reason> {
        self.site
            .visible
            .vars
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                if self.saved_in_async_state(name) {
                    format!("`{name}`{SAVED_IN_ASYNC_STATE}")
                } else if self.index.find_global(name, &self.site.function).is_some() {
                    format!("`{name}` is a global; globals are read on the ptrace path")
                } else {
                    format!(
                        "`{name}` is not a variable at {}",
                        self.site.short_location()
                    )
                }
            })
    }

    pub(super) fn redacted(&self, name: &str) -> bool {
        self.spec.redactor.is_sensitive(name)
    }

    // ---- places ------------------------------------------------------------------------

    /// Puts the place of `e` on the stack: its address, or its value where it has no address
    /// (a register, a computed location). Returns its type.
    pub(super) fn place(&mut self, e: &Expr) -> Result<(Loc, Arc<Type>), Reason> {
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
            ExprKind::Field(base, field) | ExprKind::Arrow(base, field) => {
                let (loc, ty) = self.place(base)?;
                let (loc, ty) = self.see_through_pointer(loc, ty, base)?;
                self.member(loc, ty, field, e)
            }
            ExprKind::Deref(inner) => {
                let (loc, ty) = self.place(inner)?;
                let target = self.pointee(&ty, inner)?;
                Ok((self.pointed_to(loc, inner)?, target))
            }
            ExprKind::Index(..) => Err(format!("indexing (`{e}`) is not supported in the kernel")),
            _ => Err(format!("`{e}` is not a variable or field")),
        }
    }

    /// The place of what the pointer at `loc` points to.
    fn pointed_to(&mut self, loc: Loc, e: &Expr) -> Result<Loc, Reason> {
        match loc {
            Loc::Address => {
                self.emit(OpCode::Load, 0, 8, 0);
                Ok(Loc::Address)
            }
            Loc::Value => Ok(Loc::Address),
            Loc::Implicit(target) => Ok(*target),
            Loc::InRecord => Err(format!(
                "`{e}` is known here only from the caller or in pieces, so what it points to is read on the ptrace path"
            )),
        }
    }

    /// For `p.x` on a pointer and `p->x`: the pointee's place; for a struct, its own.
    pub(super) fn see_through_pointer(
        &mut self,
        loc: Loc,
        ty: Arc<Type>,
        base: &Expr,
    ) -> Result<(Loc, Arc<Type>), Reason> {
        match &ty.kind {
            TypeKind::Pointer { .. } => {
                let target = self.pointee(&ty, base)?;
                Ok((self.pointed_to(loc, base)?, target))
            }
            _ => match loc {
                Loc::Address | Loc::InRecord => Ok((loc, ty)),
                // A small struct in one register: its fields are bits of it.
                Loc::Value if size_of(self, &ty) <= 8 => Ok((loc, ty)),
                Loc::Value => Err(format!(
                    "`{base}` is a {} held in registers; its fields are read on the ptrace path",
                    ty.name
                )),
                Loc::Implicit(_) => Err(format!("`{base}` ({}) is not a pointer", ty.name)),
            },
        }
    }

    pub(super) fn pointee(&self, ty: &Type, e: &Expr) -> Result<Arc<Type>, Reason> {
        match &ty.kind {
            TypeKind::Pointer { target: Some(t) } => Ok(self.ty(*t)),
            _ => Err(format!("`{e}` ({}) is not a pointer", ty.name)),
        }
    }

    /// The member `field` of the struct at `loc`.
    pub(super) fn member(
        &mut self,
        loc: Loc,
        ty: Arc<Type>,
        field: &str,
        e: &Expr,
    ) -> Result<(Loc, Arc<Type>), Reason> {
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
        match loc {
            Loc::Address => {
                self.emit(OpCode::AddI, 0, 0, m.offset as i64);
                Ok((Loc::Address, mt))
            }
            Loc::Value => {
                if m.offset != 0 {
                    self.emit(OpCode::Const, 0, 0, (m.offset * 8) as i64);
                    self.emit(OpCode::Bin, Bin::Shr as u8, 0, 0);
                }
                Ok((Loc::Value, mt))
            }
            Loc::InRecord => Ok((Loc::InRecord, mt)),
            Loc::Implicit(_) => Err(format!("`{e}`: an optimized-away pointer has no fields")),
        }
    }

    /// The ops that compute a variable's place at this site's pc, from its DWARF location
    /// (the expression itself, or the location-list entry covering the pc).
    pub(super) fn var_location(&mut self, var: &Var) -> Result<Loc, Reason> {
        let expr = match &var.location {
            Some(attr) => self.expression_at(attr)?,
            None => None,
        };
        let Some(expr) = expr else {
            if var.const_value.is_none() && self.saved_in_async_state(&var.name) {
                return Err(format!("`{}`{SAVED_IN_ASYNC_STATE}", var.name));
            }
            return Err(format!("`{}`{OPTIMIZED_OUT_HERE}", var.name));
        };
        self.location_ops(expr, &var.name, true)
    }

    /// Whether `name` is read from an `async fn`'s state machine here: no live local of that
    /// name (absent, or without a location at this pc), and some state saves it.
    pub(super) fn saved_local_here(&self, name: &str) -> bool {
        let live = self
            .site
            .visible
            .vars
            .iter()
            .find(|v| v.name == name)
            .is_some_and(|v| {
                v.const_value.is_some()
                    || v.location
                        .as_ref()
                        .is_some_and(|a| matches!(self.expression_at(a), Ok(Some(_))))
            });
        !live && self.saved_in_async_state(name)
    }

    /// Whether `name` is a local an `async fn`'s state machine saves across an `.await`, at a
    /// site in such a body. Which state's field holds it is known only at the hit (the state
    /// the body resumed from), so such reads go to the ptrace path, which reads the state
    /// first.
    pub(super) fn saved_in_async_state(&self, name: &str) -> bool {
        self.site
            .visible
            .env_param
            .as_ref()
            .and_then(|p| crate::coroutine::Env::of(self.index, p))
            .is_some_and(|env| env.saved_type(self.index, name).is_some())
    }

    pub(super) fn expression_at(
        &self,
        attr: &gimli::AttributeValue<crate::index::R>,
    ) -> Result<Option<gimli::Expression<crate::index::R>>, Reason> {
        crate::frame::expression_at(self.index, self.site.unit, attr, self.site.file_address)
    }
}

/// A type's size in bytes; an array's from its element's (DWARF often gives arrays none).
pub(super) fn size_of(c: &Compiler, ty: &Type) -> u64 {
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

pub(super) fn f_of(k: &ExprKind) -> Option<f64> {
    match k {
        ExprKind::Float(f) => Some(*f),
        _ => None,
    }
}
