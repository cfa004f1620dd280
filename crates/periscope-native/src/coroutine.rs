//! Locals of a Rust `async fn` (or async block) that live across an `.await`.
//!
//! rustc compiles the body into a resume function (`{async_fn#0}`) whose unnamed first
//! parameter is `Pin<&mut {async_fn_env#0}>`: the state machine. That type is a struct with a
//! variant part whose discriminant is the artificial `__state` member; each variant
//! (`Unresumed`, `Returned`, `Panicked`, `Suspend0`, `Suspend1`, …) is a struct of the locals
//! saved across that suspension point, named as in the source. In an optimized build the
//! body's own DWARF variables have no location between awaits (the value is in the env, which
//! DWARF does not say), so a name that is not a live local is read from the variant of the
//! state the body resumed from: `__state` is only written when the body suspends or returns,
//! so while it runs it names the await it came out of, and the fields of that variant hold
//! what was saved there. A local that the current variant does not save (computed after that
//! await, kept in registers) stays optimized out: a field of another variant at the same
//! offset may hold anything.

use crate::frame::{Frame, Place};
use crate::index::scope::{TypeRef, Var};
use crate::index::types::{Type, TypeKind, VariantPart};
use crate::index::ObjectIndex;
use std::sync::Arc;

/// The name of the discriminant rustc gives a coroutine's state.
const STATE: &str = "__state";

/// A coroutine's state type, reached from its resume function's first parameter.
pub struct Env {
    /// The state machine's own type (`{async_fn_env#0}`).
    pub ty: Arc<Type>,
}

impl Env {
    /// The state type behind `param` (`Pin<&mut T>` or `&mut T`), when `T` is a coroutine's:
    /// a variant part discriminated by `__state`.
    pub fn of(index: &ObjectIndex, param: &Var) -> Option<Env> {
        let mut ty = index.type_at(param.ty?.unit, param.ty?.offset);
        // Pin<&mut T> is a struct of one pointer; &mut T the pointer itself.
        for _ in 0..3 {
            match &ty.kind {
                TypeKind::Struct { members, .. } if members.len() == 1 && ty.size == Some(8) => {
                    let m = members[0].ty?;
                    ty = index.type_at(m.unit, m.offset);
                }
                TypeKind::Pointer { target: Some(t) } => {
                    let env = index.type_at(t.unit, t.offset);
                    return is_coroutine(&env).then_some(Env { ty: env });
                }
                _ => return None,
            }
        }
        None
    }

    fn variants(&self) -> Option<&VariantPart> {
        match &self.ty.kind {
            TypeKind::Struct {
                variants: Some(vp), ..
            } => Some(vp),
            _ => None,
        }
    }

    /// The type of the local `name` as some state saves it (every state that saves a local
    /// saves it with its one type).
    pub fn saved_type(&self, index: &ObjectIndex, name: &str) -> Option<TypeRef> {
        self.variants()?.variants.iter().find_map(|v| {
            let vt = v.member.ty?;
            index.type_at(vt.unit, vt.offset).member(name)?.ty
        })
    }

    /// Every local some state saves, for "in scope" lists (rustc's own `__awaitee`, `__0`
    /// left out: they are no source names).
    pub fn saved_names(&self, index: &ObjectIndex) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for v in self.variants().map(|vp| &vp.variants[..]).unwrap_or(&[]) {
            let Some(vt) = v.member.ty else { continue };
            if let TypeKind::Struct { members, .. } = &index.type_at(vt.unit, vt.offset).kind {
                for m in members {
                    if !m.name.starts_with("__") && !names.contains(&m.name) {
                        names.push(m.name.clone());
                    }
                }
            }
        }
        names
    }

    /// The discriminant's offset in the state machine and its size in bytes.
    pub fn discr(&self, index: &ObjectIndex) -> Option<(u64, u32)> {
        let d = self.variants()?.discr.as_ref()?;
        let size =
            d.ty.and_then(|t| index.type_at(t.unit, t.offset).size)
                .unwrap_or(1)
                .clamp(1, 8);
        Some((d.offset, size as u32))
    }

    /// Every place some state saves `name` at: (offset in the state machine, type), each once.
    /// Which one holds it at a hit depends on the state; a capture copies them all.
    pub fn saved_slots(&self, index: &ObjectIndex, name: &str) -> Vec<(u64, TypeRef)> {
        let mut slots: Vec<(u64, TypeRef)> = Vec::new();
        for v in self.variants().map(|vp| &vp.variants[..]).unwrap_or(&[]) {
            let Some(vt) = v.member.ty else { continue };
            let vty = index.type_at(vt.unit, vt.offset);
            let Some(m) = vty.member(name) else { continue };
            let Some(ty) = m.ty else { continue };
            let off = v.member.offset.wrapping_add(m.offset);
            if !slots.iter().any(|(o, _)| *o == off) {
                slots.push((off, ty));
            }
        }
        slots
    }

    /// Where `name` is saved in the state the body resumed from, in a stopped frame of the
    /// resume function. `Unavailable` when that state does not save it.
    pub fn saved_place(&self, frame: &Frame, param: &Var, name: &str) -> Place {
        match self.try_saved_place(frame, param, name) {
            Ok(p) => p,
            Err(why) => Place::Unavailable(why),
        }
    }

    fn try_saved_place(&self, frame: &Frame, param: &Var, name: &str) -> Result<Place, String> {
        let vp = self.variants().ok_or("no state variants")?;
        // The parameter is one pointer (Pin's only field is at offset 0): in a register, or
        // in a stack slot to read.
        let lost =
            |why: String| format!("the async fn's state cannot be found here (its `self`: {why})");
        let env = match frame.var_place(param) {
            Place::Memory(slot) => frame.mem.read_u64(slot).map_err(|e| lost(e.to_string()))?,
            other => other.word().map_err(lost)?,
        };
        let (discr, size) = self
            .discr(frame.index)
            .ok_or("the state has no discriminant")?;
        let mut b = [0u8; 8];
        frame
            .mem
            .read(env.wrapping_add(discr), &mut b[..size as usize])
            .map_err(|e| format!("the async fn's state at {env:#x} cannot be read: {e}"))?;
        let state = u64::from_le_bytes(b);
        let variant = vp
            .variants
            .iter()
            .find(|v| v.discr_value == Some(state))
            .ok_or_else(|| format!("the async fn's state is {state}, which no variant has"))?;
        let vt = variant.member.ty.ok_or("a state variant without a type")?;
        let vty = frame.index.type_at(vt.unit, vt.offset);
        match vty.member(name) {
            Some(m) => Ok(Place::Memory(
                env.wrapping_add(variant.member.offset)
                    .wrapping_add(m.offset),
            )),
            // Not saved by the await it resumed from: in registers, which DWARF does not say.
            None => Ok(Place::Unavailable(
                periscope_core::value::OPTIMIZED_OUT.into(),
            )),
        }
    }
}

/// Whether `ty` is a coroutine's state: a variant part discriminated by `__state`.
fn is_coroutine(ty: &Type) -> bool {
    matches!(&ty.kind, TypeKind::Struct { variants: Some(vp), .. }
        if vp.discr.as_ref().is_some_and(|d| d.name == STATE && d.artificial))
}
