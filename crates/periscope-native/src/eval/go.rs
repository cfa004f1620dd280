//! What expressions need to read Go the Go way: `x == nil` / `x != nil` on pointers, maps,
//! channels, slices, functions and interfaces; promoted fields of embedded structs
//! (`cart.Touched` for `cart.Audit.Touched`); slices indexed in place.

use super::{Ev, Evaluator, Res};
use crate::frame::Place;
use crate::index::types::{Type, TypeKind};
use crate::index::Lang;
use crate::values::Reader;
use periscope_core::expr::{BinOp, Expr, ExprKind};
use std::sync::Arc;

impl Evaluator<'_> {
    /// `x == nil` and `x != nil`, when one side is `nil` (and no variable is called that).
    pub(super) fn nil_comparison(&self, op: BinOp, a: &Expr, b: &Expr) -> Option<Res<Ev>> {
        if !matches!(op, BinOp::Eq | BinOp::Ne) {
            return None;
        }
        let is_nil = |e: &Expr| {
            matches!(&e.kind, ExprKind::Name(n) if n == "nil")
                && !self.vars.iter().any(|v| v.name == "nil")
        };
        let other = match (is_nil(a), is_nil(b)) {
            (true, false) => b,
            (false, true) => a,
            _ => return None,
        };
        Some(self.eval(other).and_then(|v| {
            let nil = self.is_nil(v, &other.to_string())?;
            Ok(Ev::Bool(nil == (op == BinOp::Eq)))
        }))
    }

    fn is_nil(&self, v: Ev, text: &str) -> Res<bool> {
        let Ev::Place { place, ty } = v else {
            return Err(format!("`{text}` cannot be nil: only pointers, maps, channels, slices, functions and interfaces can"));
        };
        let word = |off: u64| self.reader.read_u64_at(&place, off);
        match &ty.kind {
            TypeKind::Pointer { .. } | TypeKind::Function => Ok(word(0)? == 0),
            TypeKind::Struct { .. } if crate::go_values::is_interface(&ty) => {
                let m = ty.member("_type").or_else(|| ty.member("tab")).ok_or("no type word")?;
                Ok(word(m.offset)? == 0)
            }
            TypeKind::Struct { .. } if crate::go_values::is_slice(&ty) => {
                let m = ty.member("array").ok_or("no array word")?;
                Ok(word(m.offset)? == 0)
            }
            _ => Err(format!(
                "`{text}` ({}) cannot be nil: only pointers, maps, channels, slices, functions and interfaces can",
                ty.name
            )),
        }
    }

    /// A field promoted from an embedded struct (Go) or a base class (C++), searched breadth
    /// first as the languages do.
    pub(super) fn promoted_field(&self, place: &Place, ty: &Arc<Type>, field: &str) -> Option<Ev> {
        let mut level: Vec<(Place, Arc<Type>)> = vec![(place.clone(), ty.clone())];
        for _ in 0..4 {
            let mut next = Vec::new();
            for (p, t) in &level {
                let TypeKind::Struct { members, .. } = &t.kind else {
                    continue;
                };
                for m in members.iter().filter(|m| m.embedded) {
                    let Some(mt) = m.ty.map(|r| self.ty(r)) else {
                        continue;
                    };
                    let mp = Reader::sub_place(p, m.offset);
                    // An embedded pointer (`*Audit`) is followed.
                    let (mp, mt) = match mt.kind {
                        TypeKind::Pointer {
                            target: Some(inner),
                        } => {
                            let Ok(addr) = self.reader.read_u64_at(&mp, 0) else {
                                continue;
                            };
                            if addr == 0 {
                                continue;
                            }
                            (Place::Memory(addr), self.ty(inner))
                        }
                        _ => (mp, mt),
                    };
                    if let Some(f) = mt.member(field) {
                        let ft = f.ty.map(|r| self.ty(r))?;
                        return Some(Ev::Place {
                            place: Reader::sub_place(&mp, f.offset),
                            ty: ft,
                        });
                    }
                    next.push((mp, mt));
                }
            }
            if next.is_empty() {
                return None;
            }
            level = next;
        }
        None
    }

    /// `len(x)` of a Go string, slice, map or channel (0 when nil).
    pub(super) fn go_len(&self, place: &Place, ty: &Arc<Type>) -> Option<u64> {
        if ty.lang != Lang::Go {
            return None;
        }
        if crate::go_values::is_slice(ty) {
            return self.reader.go_slice_parts(place, ty).map(|p| p.1);
        }
        if crate::go_values::is_string(ty) {
            return self.reader.go_string_parts(place, ty).map(|p| p.1);
        }
        if is_go_reference(ty) {
            let addr = self.reader.read_u64_at(place, 0).ok()?;
            if addr == 0 {
                return Some(0);
            }
            // map<K,V> { used uint64; … } and hchan { qcount uint; … } both start with it.
            return self.reader.read_u64_at(&Place::Memory(addr), 0).ok();
        }
        None
    }

    /// A Go slice's element `i`, in place.
    pub(super) fn go_slice_element(&self, place: &Place, ty: &Type, i: i128) -> Res<Ev> {
        let (ptr, len, _, et) = self
            .reader
            .go_slice_parts(place, ty)
            .ok_or("unreadable slice")?;
        if i < 0 || i as u64 >= len {
            return Err(format!("index {i} out of range [{i}] with length {len}"));
        }
        let stride = et.size.unwrap_or(0);
        Ok(Ev::Place {
            place: Place::Memory(ptr + i as u64 * stride),
            ty: et,
        })
    }
}

/// Go's maps and channels are pointers in DWARF, but read as values: `.` and `[]` never
/// dereference them.
pub(super) fn is_go_reference(ty: &Type) -> bool {
    ty.lang == Lang::Go && (ty.name.starts_with("map[") || ty.name.contains("chan "))
}
