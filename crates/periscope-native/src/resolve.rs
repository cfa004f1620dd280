//! Probe resolution: a location becomes code addresses, and every name and field path a probe
//! reads is checked against the scope and types there, before anything is attached.

use crate::error::NativeError;
use crate::index::types::{Type, TypeKind};
use crate::probe::ProbeSpec;
use crate::target::{Site, Target};
use periscope_core::expr::Expr;
use std::sync::Arc;

/// A resolved probe: where it goes and what it evaluates there.
pub struct ResolvedProbe {
    pub spec: ProbeSpec,
    pub sites: Vec<Site>,
}

/// Resolves a probe's location and checks its expressions against each site's scope: sites where
/// some name is not visible are dropped (a closure written on the same line as the code around
/// it), and it is an error only when no site can evaluate them all.
pub fn resolve(target: &Target, spec: ProbeSpec) -> Result<ResolvedProbe, NativeError> {
    let sites = target.resolve(&spec.location)?;
    let names: Vec<(String, periscope_core::expr::Span)> =
        spec.expressions().iter().flat_map(|e| e.names()).collect();
    let in_scope = |site: &Site, name: &str| {
        site.visible.vars.iter().any(|v| v.name == name)
            || target.objects[site.object]
                .index
                .find_global(name, &site.function)
                .is_some()
    };
    let (good, bad): (Vec<Site>, Vec<Site>) = sites
        .into_iter()
        .partition(|s| names.iter().all(|(n, _)| in_scope(s, n)));
    if good.is_empty() {
        let site = &bad[0];
        let mut missing: Vec<&str> = Vec::new();
        for (n, _) in &names {
            if !in_scope(site, n) && !missing.contains(&n.as_str()) {
                missing.push(n);
            }
        }
        let mut visible: Vec<&str> = site.visible.vars.iter().map(|v| v.name.as_str()).collect();
        visible.sort_unstable();
        visible.dedup();
        return Err(NativeError::Expression(format!(
            "`{}` {} not in scope at {}:{} (in {}); names in scope there: {}",
            missing.join("`, `"),
            if missing.len() == 1 { "is" } else { "are" },
            site.file.display(),
            site.line,
            site.function,
            if visible.is_empty() {
                "none".to_string()
            } else {
                visible.join(", ")
            }
        )));
    }
    // Field paths are checked against the types now, so a typo is an error before attaching
    // rather than an `unavailable` on every hit.
    for e in spec.expressions() {
        if let Err(msg) = static_type(target, &good[0], e) {
            return Err(NativeError::Expression(msg));
        }
    }
    Ok(ResolvedProbe { spec, sites: good })
}

/// The type an expression has at a site, as far as field paths go: `Ok(None)` where it is not
/// known statically (calls, arithmetic, indexing), an error naming the missing field otherwise.
fn static_type(target: &Target, site: &Site, e: &Expr) -> Result<Option<Arc<Type>>, String> {
    use periscope_core::expr::ExprKind;
    let index = &target.objects[site.object].index;
    let deref_all = |mut t: Arc<Type>| {
        for _ in 0..4 {
            match t.kind {
                TypeKind::Pointer { target: Some(p) } => t = index.type_at(p.unit, p.offset),
                _ => break,
            }
        }
        t
    };
    match &e.kind {
        ExprKind::Name(n) => Ok(site
            .visible
            .vars
            .iter()
            .find(|v| &v.name == n)
            .and_then(|v| v.ty)
            .map(|t| index.type_at(t.unit, t.offset))),
        ExprKind::Field(base, field) | ExprKind::Arrow(base, field) => {
            let Some(bt) = static_type(target, site, base)? else {
                return Ok(None);
            };
            let bt = deref_all(bt);
            let TypeKind::Struct {
                members, variants, ..
            } = &bt.kind
            else {
                return Ok(None);
            };
            if let Some(vp) = variants {
                // `ev.Payment`: that variant's payload; other fields depend on the variant
                // active at the hit, checked then.
                return Ok(vp
                    .variants
                    .iter()
                    .find(|v| &v.member.name == field)
                    .and_then(|v| v.member.ty)
                    .map(|t| index.type_at(t.unit, t.offset)));
            }
            let tuple = format!("__{field}");
            match members.iter().find(|m| &m.name == field || m.name == tuple) {
                Some(m) => Ok(m.ty.map(|t| index.type_at(t.unit, t.offset))),
                // A newtype (`Payment(Money)`, `struct Id(u64)`) is seen through: the field
                // is looked for in what it wraps, at the hit.
                None if members.len() == 1 && members[0].name == "__0" => Ok(None),
                None => {
                    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                    Err(format!(
                        "`{base}` ({}) has no field `{field}` (in `{e}`); its fields: {}",
                        bt.name,
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                }
            }
        }
        ExprKind::Deref(inner) => {
            Ok(
                static_type(target, site, inner)?.and_then(|t| match t.kind {
                    TypeKind::Pointer { target: Some(p) } => Some(index.type_at(p.unit, p.offset)),
                    _ => None,
                }),
            )
        }
        ExprKind::Binary(_, a, b) => {
            static_type(target, site, a)?;
            static_type(target, site, b)?;
            Ok(None)
        }
        ExprKind::Not(a) | ExprKind::Neg(a) | ExprKind::Cast(a, _) | ExprKind::AddrOf(a) => {
            static_type(target, site, a)?;
            Ok(None)
        }
        ExprKind::Method(a, m, args) => {
            let base = static_type(target, site, a)?.map(deref_all);
            for x in args {
                static_type(target, site, x)?;
            }
            let Some(bt) = base else {
                return Ok(None);
            };
            let variants = match &bt.kind {
                TypeKind::Struct {
                    variants: Some(vp), ..
                } => Some(vp),
                _ => None,
            };
            match (m.as_str(), variants) {
                ("contains" | "starts_with" | "ends_with", Some(vp)) => {
                    let some = vp.variants.iter().any(|v| v.member.name == "Some");
                    Err(if some {
                        format!(
                            "`{a}` is an {}, not a string: `.{m}(…)` needs the string inside; write `{a}.is_some() && {a}.unwrap().{m}(…)`, or compare: `{a} == Some(\"…\")`",
                            bt.name
                        )
                    } else {
                        format!(
                            "`{a}` is an enum ({}), not a string: compare it with a variant (`{a} == Variant`, `matches({a}, Variant)`)",
                            bt.name
                        )
                    })
                }
                ("is_some" | "is_none" | "is_ok" | "is_err" | "unwrap" | "expect", None)
                    if bt.lang == crate::index::Lang::Rust =>
                {
                    Err(format!(
                        "`{a}` ({}) is not an Option or Result; `.{m}()` applies to those",
                        bt.name
                    ))
                }
                ("unwrap" | "expect", Some(vp)) => Ok(vp
                    .variants
                    .iter()
                    .find(|v| v.member.name == "Some" || v.member.name == "Ok")
                    .and_then(|v| v.member.ty)
                    .map(|t| index.type_at(t.unit, t.offset))
                    .and_then(|payload| payload.member("__0").and_then(|m| m.ty))
                    .map(|t| index.type_at(t.unit, t.offset))),
                _ => Ok(None),
            }
        }
        ExprKind::Index(a, i) => {
            static_type(target, site, a)?;
            static_type(target, site, i)?;
            Ok(None)
        }
        _ => Ok(None),
    }
}
