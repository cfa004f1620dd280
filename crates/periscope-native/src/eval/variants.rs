//! Options and enums: the active variant, its payload's fields (`x.0`, `ev.Payment.amount`),
//! and comparing with a variant written in the expression (`x == Some("a")`, `matches(m, Put)`).

use super::{describe, Ev, Evaluator, Res};
use crate::frame::Place;
use crate::index::types::{Type, TypeKind};
use crate::values::Reader;
use periscope_core::expr::{Expr, ExprKind};
use periscope_core::value::Value;
use std::sync::Arc;

/// Where an enum value's active variant keeps its fields, and their struct type.
type Payload = (Place, Arc<Type>);

impl Evaluator<'_> {
    /// `ev.Payment` (the payload of the active variant, an error naming the active one
    /// otherwise), or a field of the active variant's payload: `x.0`, `method.soft`.
    pub(super) fn variant_field(
        &self,
        place: &Place,
        ty: &Arc<Type>,
        vp: &crate::index::types::VariantPart,
        field: &str,
        base_text: &str,
    ) -> Res<Ev> {
        let active = self
            .reader
            .active_variant(place, vp)
            .ok_or_else(|| format!("`{base_text}` has an unknown enum discriminant"))?;
        let payload_ty = active
            .member
            .ty
            .map(|t| self.ty(t))
            .ok_or("variant without type information")?;
        let payload = Reader::sub_place(place, active.member.offset);
        if field == active.member.name {
            return Ok(Ev::Place {
                place: payload,
                ty: payload_ty,
            });
        }
        if vp.variants.iter().any(|v| v.member.name == field) {
            return Err(format!(
                "`{base_text}` is {}, not {field} (guard with `matches({base_text}, {field}) && …`)",
                active.member.name
            ));
        }
        let tuple_name = format!("__{field}");
        let found = payload_ty
            .member(field)
            .or_else(|| payload_ty.member(&tuple_name));
        if found.is_none() {
            if let Some(inner) = self.newtype_inner(&payload, &payload_ty) {
                return self.field(inner, field, base_text);
            }
        }
        match found {
            Some(m) => Ok(Ev::Place {
                place: Reader::sub_place(&payload, m.offset),
                ty: m
                    .ty
                    .map(|t| self.ty(t))
                    .ok_or_else(|| format!("field `{field}` has no type information"))?,
            }),
            None => {
                let fields: Vec<String> = match &payload_ty.kind {
                    TypeKind::Struct { members, .. } => members
                        .iter()
                        .map(|m| m.name.trim_start_matches("__").to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                let variants: Vec<&str> =
                    vp.variants.iter().map(|v| v.member.name.as_str()).collect();
                Err(format!(
                    "`{base_text}` ({}) is {}{}, which has no field `{field}` (guard with `matches({base_text}, VARIANT) && …`); variants: {}",
                    ty.name,
                    active.member.name,
                    if fields.is_empty() {
                        " (no fields)".to_string()
                    } else {
                        format!(" (fields: {})", fields.join(", "))
                    },
                    variants.join(", ")
                ))
            }
        }
    }

    /// What a newtype (one unnamed field: `Payment(Money)`, `struct Id(u64)`) wraps, so a
    /// field path can see through it.
    pub(super) fn newtype_inner(&self, place: &Place, ty: &Arc<Type>) -> Option<Ev> {
        let TypeKind::Struct {
            members,
            variants: None,
            ..
        } = &ty.kind
        else {
            return None;
        };
        let [only] = members.as_slice() else {
            return None;
        };
        if only.name != "__0" {
            return None;
        }
        Some(Ev::Place {
            place: Reader::sub_place(place, only.offset),
            ty: self.ty(only.ty?),
        })
    }

    /// The active variant's name of an enum value (Rust enum, C enum, or a rendered one).
    pub(super) fn variant_of(&self, v: Ev, text: &str) -> Res<(String, Option<Payload>)> {
        let v = self.auto_deref_unless_sized(v)?;
        match v {
            Ev::Place { place, ty } => {
                if let TypeKind::Struct {
                    variants: Some(vp), ..
                } = &ty.kind
                {
                    let a = self
                        .reader
                        .active_variant(&place, vp)
                        .ok_or_else(|| format!("`{text}` has an unknown enum discriminant"))?;
                    let payload = a
                        .member
                        .ty
                        .map(|t| (Reader::sub_place(&place, a.member.offset), self.ty(t)));
                    return Ok((a.member.name.clone(), payload));
                }
                match self.reader.render(&place, &ty, 1) {
                    Value::Enum { variant, .. } => Ok((variant, None)),
                    _ => Err(format!(
                        "`{text}` ({}) is not an enum; compare it with a value, not a variant",
                        ty.name
                    )),
                }
            }
            Ev::Rendered(Value::Enum { variant, .. }) => Ok((variant, None)),
            Ev::Str(s) => Ok((s, None)),
            other => Err(format!(
                "`{text}` ({}) is not an enum; compare it with a value, not a variant",
                describe(&other)
            )),
        }
    }

    /// `matches(x, Put)`: the active variant's name, whatever the payload.
    pub(super) fn matches_variant(&self, v: Ev, pattern: &str, text: &str) -> Res<bool> {
        let (name, _) = self.variant_of(v, text)?;
        Ok(name == Ev::variant_name(pattern))
    }

    /// `x == Some("a")`: the same variant, and each written payload field equal.
    pub(super) fn equals_variant(&self, v: Ev, path: &str, args: &[Ev], text: &str) -> Res<bool> {
        let (name, payload) = self.variant_of(v, text)?;
        if name != Ev::variant_name(path) {
            return Ok(false);
        }
        let Some((place, pty)) = payload.filter(|_| !args.is_empty()) else {
            return Ok(true);
        };
        for (i, want) in args.iter().enumerate() {
            let m = pty.member(&format!("__{i}")).ok_or_else(|| {
                format!("`{text}` is {name}, which has no field {i} to compare with")
            })?;
            let mt =
                m.ty.map(|t| self.ty(t))
                    .ok_or("field without type information")?;
            let got = Ev::Place {
                place: Reader::sub_place(&place, m.offset),
                ty: mt,
            };
            let equal = match want {
                Ev::Variant { path, args } => self.equals_variant(got, path, args, text)?,
                want => scalars_equal(&self.scalar(got)?, &self.scalar(want.clone())?),
            };
            if !equal {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The second argument of `matches`: a variant name (`Get`, `Method::Put`, `Some`).
    pub(super) fn pattern(&self, e: &Expr) -> Res<Option<String>> {
        Ok(match &e.kind {
            ExprKind::Name(n) if periscope_core::expr::is_variant_path(n) => Some(n.clone()),
            ExprKind::Call(n, _) if periscope_core::expr::is_variant_path(n) => Some(n.clone()),
            _ => None,
        })
    }

    /// A payload field written in a variant (`"a"` in `Some("a")`), a nested variant included.
    pub(super) fn eval_pattern_arg(&self, e: &Expr) -> Res<Ev> {
        self.eval(e)
    }
}

/// Equality of two scalars as `==` sees it (numbers across widths, a string and a char).
fn scalars_equal(a: &Ev, b: &Ev) -> bool {
    match (a, b) {
        (Ev::Str(x), Ev::Str(y)) => x == y,
        (Ev::Str(x), Ev::Char(y)) | (Ev::Char(y), Ev::Str(x)) => *x == y.to_string(),
        (Ev::Int(x, _), Ev::Int(y, _)) => x == y,
        (Ev::Float(x), Ev::Float(y)) => x == y,
        (Ev::Int(x, _), Ev::Float(y)) | (Ev::Float(y), Ev::Int(x, _)) => *x as f64 == *y,
        (Ev::Bool(x), Ev::Bool(y)) => x == y,
        (Ev::Char(x), Ev::Char(y)) => x == y,
        _ => false,
    }
}
