//! Captures: the ops that copy into a record every byte rendering a value will read.

use super::{size_of, Compiler, Loc, Reason, MAX_OBJECT, OPTIMIZED_OUT_HERE, STRING_BYTES};
use crate::index::types::{Type, TypeKind};
use crate::index::Lang;
use crate::kernel::program::OpCode;
use crate::values::{Limits, MAX_POINTER_CHAIN};
use periscope_core::expr::{Expr, ExprKind};

impl Compiler<'_> {
    /// One value to show: a slot of ops that copies what rendering `e` reads.
    pub(super) fn slot(&mut self, e: &Expr) -> Result<(), Reason> {
        let start = self.ops.len();
        self.emit(OpCode::Slot, 0, 0, 0);
        self.depth = 0;
        self.capturing = true;
        let captured = self.capture_expr(e);
        self.capturing = false;
        captured?;
        let end = self.ops.len() as u16;
        self.ops[start].next = end;
        Ok(())
    }

    pub(super) fn capture_expr(&mut self, e: &Expr) -> Result<(), Reason> {
        match &e.kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Bool(_)
            | ExprKind::Char(_)
            | ExprKind::Str(_) => Ok(()),
            ExprKind::Name(n) if self.redacted(n) => Ok(()),
            ExprKind::Name(n) if self.is_literal_for(e) && self.enumerator(n).is_some() => Ok(()),
            ExprKind::Field(_, f) | ExprKind::Arrow(_, f) if self.redacted(f) => Ok(()),
            ExprKind::Name(n) if self.saved_local_here(n) => self.capture_saved(n, e),
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
                self.capture_place(loc, &ty, e)
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

    pub(super) fn capture_len(&mut self, recv: &Expr) -> Result<(), Reason> {
        let (loc, ty) = self.place(recv)?;
        if let TypeKind::Pointer { .. } = ty.kind {
            // The reference itself, then the object it refers to.
            if let Loc::Address = loc {
                self.emit(OpCode::Dup, 0, 0, 0);
                self.emit(OpCode::CapM, 0, 8, 0);
            }
        }
        let (loc, ty) = self.through_references(loc, ty);
        if ty.lang == Lang::Cpp
            && crate::cpp_std::classify(self.index, &ty)
                == Some(crate::cpp_std::StdKind::ForwardList)
        {
            return Err(format!(
                "`len({recv})` counts a std::forward_list's nodes: read on the ptrace path"
            ));
        }
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
            other => self.capture_place(other, &ty, recv),
        }
    }

    /// A local an `async fn` saved across an `.await`, named alone (a template's `{subtotal}`):
    /// the state machine's pointer, its `__state`, and the local at every offset a state saves
    /// it at. User space then reads the state from the record and picks the one it names, as
    /// the ptrace path reads it. (A condition or a field path needs the one place in the
    /// kernel, which depends on the state: those run on ptrace.)
    fn capture_saved(&mut self, name: &str, e: &Expr) -> Result<(), Reason> {
        let param = self
            .site
            .visible
            .env_param
            .clone()
            .ok_or_else(|| format!("`{name}`: no async fn state here"))?;
        let env = crate::coroutine::Env::of(self.index, &param)
            .ok_or_else(|| format!("`{name}`: no async fn state here"))?;
        let (discr, discr_size) = env
            .discr(self.index)
            .ok_or_else(|| format!("`{name}`: the async fn's state has no discriminant"))?;
        match self.var_location(&param)? {
            // The `Pin<&mut _>` in a stack slot: the slot is copied, then followed.
            Loc::Address => {
                self.emit(OpCode::Dup, 0, 0, 0);
                self.emit(OpCode::CapM, 0, 8, 0);
                self.emit(OpCode::Load, 0, 8, 0);
            }
            Loc::Value => {}
            _ => {
                return Err(format!(
                    "`{name}` is saved in the async fn's state machine, whose pointer is known here only from the caller; read on the ptrace path"
                ))
            }
        }
        self.emit(OpCode::Dup, 0, 0, 0);
        self.emit(OpCode::AddI, 0, 0, discr as i64);
        self.emit(OpCode::CapM, 0, discr_size, 0);
        for (off, ty) in env.saved_slots(self.index, name) {
            let ty = self.ty(ty);
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::AddI, 0, 0, off as i64);
            self.capture_place(Loc::Address, &ty, e)?;
        }
        self.emit(OpCode::Pop, 0, 0, 0);
        Ok(())
    }

    /// Copies what rendering the value at `loc` reads.
    pub(super) fn capture_place(&mut self, loc: Loc, ty: &Type, e: &Expr) -> Result<(), Reason> {
        match loc {
            Loc::Address => self.capture_object(ty, e),
            Loc::Value => self.capture_value(ty, e),
            Loc::InRecord => self.capture_in_record(ty, e),
            Loc::Implicit(target) => {
                // The reader shows what the pointer pointed to: that is what is copied.
                let TypeKind::Pointer { target: pointee } = &ty.kind else {
                    return Err(format!(
                        "`{e}` ({}) is an implicit pointer but no pointer",
                        ty.name
                    ));
                };
                let Some(pt) = pointee.map(|t| self.ty(t)) else {
                    if target.on_stack() {
                        self.emit(OpCode::Pop, 0, 0, 0);
                    }
                    return Ok(());
                };
                match *target {
                    Loc::Address => self.capture_pointee(*pointee, e, 0, 0),
                    other => self.capture_place(other, &pt, e),
                }
            }
        }
    }

    /// A value user space computes from the record alone (registers, copied pieces, entry
    /// values' inputs): nothing more to copy, unless it leads elsewhere.
    pub(super) fn capture_in_record(&mut self, ty: &Type, e: &Expr) -> Result<(), Reason> {
        if self.is_flat(ty, 0) {
            return Ok(());
        }
        Err(format!(
            "`{e}` ({}) is known here only from the caller or in pieces, so what it points to is read on the ptrace path",
            ty.name
        ))
    }

    /// A value held whole in registers or computed by its location: the registers and any
    /// memory its location read are already in the record; a pointer's target is captured.
    pub(super) fn capture_value(&mut self, ty: &Type, e: &Expr) -> Result<(), Reason> {
        match &ty.kind {
            TypeKind::Pointer { target } => self.capture_pointee(*target, e, 0, 0),
            TypeKind::Base(_) | TypeKind::Enum { .. } => {
                self.emit(OpCode::Pop, 0, 0, 0);
                Ok(())
            }
            // A small struct in a register: its bytes are the register's.
            _ if self.is_flat(ty, 0) => {
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
    pub(super) fn capture_object(&mut self, ty: &Type, e: &Expr) -> Result<(), Reason> {
        self.capture_at(ty, e, 0, 0)
    }

    /// The object of type `ty` at `level` structs below the expression (the reader's depth
    /// limit less its depth), reached through `hops` pointers in a row: the reader's rules, so
    /// the record holds what it reads and no more. A pointer is no level: its target is
    /// captured at the pointer's level, up to [`MAX_POINTER_CHAIN`] in a row.
    pub(super) fn capture_at(
        &mut self,
        ty: &Type,
        e: &Expr,
        level: u32,
        hops: u32,
    ) -> Result<(), Reason> {
        if let TypeKind::Pointer { target } = &ty.kind {
            self.emit(OpCode::Dup, 0, 0, 0);
            self.emit(OpCode::CapM, 0, 8, 0);
            self.emit(OpCode::Load, 0, 8, 0);
            return self.capture_pointee(*target, e, level, hops);
        }
        if ty.lang == Lang::Cpp {
            if let Some((off, target)) = crate::cpp_std::smart_pointer(self.index, ty) {
                // `shared_ptr`/`weak_ptr`: their counts, in the control block when there is
                // one (the pointer to it is recorded as it is loaded).
                if let Some((pi, counts)) = crate::cpp_std::ref_counts(self.index, ty) {
                    self.emit(OpCode::Dup, 0, 0, 0);
                    self.emit(OpCode::AddI, 0, 0, pi as i64);
                    self.emit(OpCode::Load, 0, 8, 0);
                    let jump = self.ops.len();
                    self.emit(OpCode::JzK, 0, 0, 0);
                    self.emit(OpCode::AddI, 0, 0, counts as i64);
                    self.emit(OpCode::Dup, 0, 0, 0);
                    self.emit(OpCode::CapM, 0, 8, 0);
                    self.ops[jump].next = self.ops.len() as u16;
                    self.emit(OpCode::Pop, 0, 0, 0);
                }
                // `unique_ptr`/`shared_ptr`/`weak_ptr`: the pointer they hold, as the reader
                // shows them.
                self.emit(OpCode::AddI, 0, 0, off as i64);
                self.emit(OpCode::Dup, 0, 0, 0);
                self.emit(OpCode::CapM, 0, 8, 0);
                self.emit(OpCode::Load, 0, 8, 0);
                return self.capture_pointee(target, e, level, hops);
            }
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
        if level >= Limits::default().depth {
            // At the depth limit the reader still shows plain values (numbers, C enums, an
            // enum's payload, `char[N]`), but a struct's type only, reading nothing of it.
            let plain = !matches!(ty.kind, TypeKind::Struct { variants: None, .. });
            let size = size_of(self, ty);
            if plain && self.is_flat(ty, 0) && size > 0 && size <= MAX_OBJECT {
                return self.capture_flat(ty, e, 0);
            }
            self.emit(OpCode::Pop, 0, 0, 0);
            return Ok(());
        }
        if self.is_flat(ty, 0) {
            return self.capture_flat(ty, e, 0);
        }
        if ty.lang == Lang::Cpp {
            // The standard library's containers are walked node by node and their wrappers
            // read by their alternatives: that walk runs on the ptrace path. (`std::string`
            // is captured as any struct: its text through `_M_p`.)
            match crate::cpp_std::classify(self.index, ty) {
                Some(crate::cpp_std::StdKind::String) | None => {}
                Some(kind) => {
                    return Err(format!(
                        "`{e}` is a {}: its elements are read on the ptrace path (its len() runs in the kernel)",
                        kind.name()
                    ))
                }
            }
        }
        if ty.lang == Lang::Go && (ty.member("tab").is_some() || ty.member("_type").is_some()) {
            return Err(format!(
                "`{e}` is a Go interface ({}): what it holds is known only at the hit; read on the ptrace path",
                ty.name
            ));
        }
        if ty.lang == Lang::Rust
            && ["alloc::", "std::", "core::", "hashbrown::"]
                .iter()
                .any(|p| ty.name.starts_with(p))
        {
            return Err(format!(
                "`{e}` is a {}: its elements are read on the ptrace path (its len() runs in the kernel)",
                ty.name
            ));
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
            self.capture_at(&mt, e, level + 1, 0)?;
        }
        self.emit(OpCode::Pop, 0, 0, 0);
        Ok(())
    }

    /// A pointer's target (the pointer on the stack, popped), as the reader shows it: a C
    /// string's text at any depth; anything else only above the depth limit and within the
    /// chain bound, at the pointer's own level.
    pub(super) fn capture_pointee(
        &mut self,
        target: Option<crate::index::scope::TypeRef>,
        e: &Expr,
        level: u32,
        hops: u32,
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
        let followed = level < Limits::default().depth && hops < MAX_POINTER_CHAIN;
        match pt.kind {
            TypeKind::Void | TypeKind::Function => {
                self.emit(OpCode::Pop, 0, 0, 0);
                Ok(())
            }
            _ if !followed => {
                self.emit(OpCode::Pop, 0, 0, 0);
                Ok(())
            }
            _ => self.capture_at(&pt, e, level, hops + 1),
        }
    }

    /// An object without pointers: its bytes, leaving out redacted members (never read).
    pub(super) fn capture_flat(&mut self, ty: &Type, e: &Expr, level: u32) -> Result<(), Reason> {
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
    pub(super) fn string_parts(&self, ty: &Type) -> Option<(u64, u64)> {
        let name = ty.name.as_str();
        if ty.lang == Lang::Cpp
            && crate::cpp_std::classify(self.index, ty) == Some(crate::cpp_std::StdKind::StringView)
        {
            return Some((ty.member("_M_str")?.offset, ty.member("_M_len")?.offset));
        }
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
    pub(super) fn is_flat(&self, ty: &Type, level: u32) -> bool {
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

    pub(super) fn has_redacted(&self, ty: &Type, level: u32) -> bool {
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
