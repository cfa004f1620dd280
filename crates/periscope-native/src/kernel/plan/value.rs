//! Conditions: expressions compiled to ops that leave one number on the kernel's stack.

use super::{f_of, Bin, Compiler, Loc, Num, Reason};
use crate::index::types::{Type, TypeKind};
use crate::index::Lang;
use crate::kernel::program::OpCode;
use periscope_core::expr::{BinOp, Expr, ExprKind};
use std::sync::Arc;

impl Compiler<'_> {
    /// Leaves the value of `e` on the stack, as a number.
    pub(super) fn value(&mut self, e: &Expr) -> Result<Num, Reason> {
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
    pub(super) fn scalar(&mut self, loc: Loc, ty: &Type, e: &Expr) -> Result<Num, Reason> {
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
            Loc::InRecord => {
                return Err(format!(
                    "`{e}` is computed here from values the kernel cannot evaluate; conditions on it run on the ptrace path"
                ))
            }
            Loc::Implicit(_) => {
                return Err(format!("`{e}`: {}", crate::frame::IMPLICIT_POINTER))
            }
        }
        if let Num::Float(s) = num {
            self.emit(OpCode::Ford, 0, s, 0);
        }
        Ok(num)
    }

    pub(super) fn binary(
        &mut self,
        op: BinOp,
        a: &Expr,
        b: &Expr,
        e: &Expr,
    ) -> Result<Num, Reason> {
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
    pub(super) fn is_literal_for(&self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Float(_) => true,
            ExprKind::Name(n) => !self.site.visible.vars.iter().any(|v| &v.name == n),
            _ => false,
        }
    }

    /// Pushes a literal in the form the other side's number has: a float as ordered bits of
    /// its width, an enumerator as its value.
    pub(super) fn literal_like(
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
    pub(super) fn enumerator(&self, name: &str) -> Option<i128> {
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

    pub(super) fn enumerator_in(&self, ty: &Type, name: &str, level: u32) -> Option<i128> {
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
    pub(super) fn len(&mut self, recv: &Expr) -> Result<Num, Reason> {
        let (loc, ty) = self.place(recv)?;
        let (loc, ty) = self.through_references(loc, ty);
        if let TypeKind::Array { count: Some(n), .. } = ty.kind {
            if loc.on_stack() {
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
    pub(super) fn through_references(
        &mut self,
        mut loc: Loc,
        mut ty: Arc<Type>,
    ) -> (Loc, Arc<Type>) {
        for _ in 0..4 {
            let TypeKind::Pointer { target: Some(t) } = ty.kind else {
                break;
            };
            let target = self.ty(t);
            if !matches!(target.kind, TypeKind::Struct { .. })
                || self.string_parts(&ty).is_some()
                || !matches!(loc, Loc::Address | Loc::Value)
            {
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
    pub(super) fn sequence_parts(&self, ty: &Type) -> Option<(u64, u64)> {
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
        let (ptr, _) =
            crate::rust_std::first_typed_pointer(self.index, &self.ty(buf.ty?), buf.offset, 0)?;
        Some((ptr, len))
    }
}
