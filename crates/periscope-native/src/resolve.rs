//! Probe resolution: a location becomes code addresses, and every name and field path a probe
//! reads is checked against the scope and types there, before anything is attached.

use crate::error::NativeError;
use crate::index::types::{Type, TypeKind};
use crate::probe::{Action, ProbeSpec};
use crate::target::{Site, Target};
use periscope_core::expr::Expr;
use std::sync::Arc;

/// A resolved probe: where it goes and what it evaluates there.
pub struct ResolvedProbe {
    pub spec: ProbeSpec,
    /// The location's sites; for a replay probe, then FROM's and UNTIL's (see [`Self::role`]).
    pub sites: Vec<Site>,
    /// A replay probe's FROM and UNTIL sites: where each begins in `sites`.
    pub replay: Option<ReplaySites>,
    /// Pending: its location is in no object loaded yet (`sites` is empty); what the user is
    /// told. See [`resolve_or_pending`].
    pub pending: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReplaySites {
    pub from: usize,
    pub until: usize,
}

/// What a site of a probe is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteRole {
    /// The probe's location (for a replay probe: where a copy gets the fix's assignments).
    Location,
    /// Replay: a copy of the process is made here.
    From,
    /// Replay: the outcome is read here, in the copy and in the original.
    Until,
}

impl ResolvedProbe {
    pub fn role(&self, si: usize) -> SiteRole {
        match self.replay {
            Some(r) if si >= r.until => SiteRole::Until,
            Some(r) if si >= r.from => SiteRole::From,
            _ => SiteRole::Location,
        }
    }
}

/// Resolves a probe's location and checks its expressions against each site's scope: sites where
/// some name is not visible are dropped (a closure written on the same line as the code around
/// it), and it is an error only when no site can evaluate them all. A replay probe's FROM and
/// UNTIL are resolved too, the failure and kept results checked at UNTIL.
pub fn resolve(target: &Target, mut spec: ProbeSpec) -> Result<ResolvedProbe, NativeError> {
    if matches!(spec.action, Action::Failures { .. }) {
        return resolve_failures(target, spec);
    }
    let Some(replay) = spec.replay().cloned() else {
        let sites = sites_for(target, &spec.location, &spec.expressions())?;
        return Ok(ResolvedProbe {
            spec,
            sites,
            replay: None,
            pending: None,
        });
    };
    let mut sites = sites_for(target, &spec.location, &spec.expressions())?;
    let from_sites = sites_for(target, &replay.from, &[])?;
    let until_all = target.resolve(&replay.until)?;
    // By default the assigned variables are kept; at UNTIL only those still in scope there
    // can be compared (a fix of a local of a function that has returned).
    if let Action::Verify {
        keep, keep_given, ..
    } = &mut spec.action
    {
        if !*keep_given {
            keep.retain(|(_, e)| {
                e.names()
                    .iter()
                    .all(|(n, _)| until_all.iter().any(|s| in_scope(target, s, n)))
            });
        }
    }
    let until_sites = sites_for(target, &replay.until, &spec.outcome_expressions())?;
    let from = sites.len();
    sites.extend(from_sites);
    let until = sites.len();
    sites.extend(until_sites);
    Ok(ResolvedProbe {
        spec,
        sites,
        replay: Some(ReplaySites { from, until }),
        pending: None,
    })
}

/// [`resolve`], except that a location found in no loaded object (a library the process has
/// not loaded yet) gives a pending probe, with no sites and the message the user is told
/// (see [`crate::pending`]). Replay probes and failure probes are never pending.
pub fn resolve_or_pending(target: &Target, spec: ProbeSpec) -> Result<ResolvedProbe, NativeError> {
    let plain = spec.replay().is_none() && !matches!(spec.action, Action::Failures { .. });
    let location = spec.location.clone();
    let kept = plain.then(|| spec.clone());
    match resolve(target, spec) {
        Err(e) => match (kept, crate::pending::pending_reason(target, &location, &e)) {
            (Some(spec), Some(message)) => Ok(ResolvedProbe {
                spec,
                sites: Vec::new(),
                replay: None,
                pending: Some(message),
            }),
            _ => Err(e),
        },
        ok => ok,
    }
}

/// A Go runtime function where a failure is caught before anything unwinds.
#[derive(Debug)]
pub struct GoFailure {
    pub function: &'static str,
    /// The failure's `kind` in events.
    pub kind: &'static str,
    /// The parameter holding what failed: the panic value, the fatal error's text.
    pub value: &'static str,
}

/// Where Go's failures are caught: `runtime.gopanic` (before deferred calls and recovery run)
/// and the runtime's fatal errors (`runtime.fatal`: concurrent map writes and the like;
/// `runtime.throw`: the runtime's own). A Rust program's are caught at `rust_panic`.
pub const GO_FAILURES: [GoFailure; 3] = [
    GoFailure {
        function: "runtime.gopanic",
        kind: "panic",
        value: "e",
    },
    GoFailure {
        function: "runtime.fatal",
        kind: "fatal error",
        value: "s",
    },
    GoFailure {
        function: "runtime.throw",
        kind: "fatal error",
        value: "s",
    },
];

/// The Go failure caught at `function`, if it is one of [`GO_FAILURES`].
pub fn go_failure(function: &str) -> Option<&'static GoFailure> {
    GO_FAILURES.iter().find(|f| f.function == function)
}

fn resolve_failures(target: &Target, spec: ProbeSpec) -> Result<ResolvedProbe, NativeError> {
    let rust = target.resolve(&spec.location);
    let sites = match rust {
        Ok(sites) => sites,
        Err(e) => {
            let go: Vec<Site> = GO_FAILURES
                .iter()
                .filter_map(|f| {
                    target
                        .resolve(&periscope_core::Location::Function(f.function.to_string()))
                        .ok()
                })
                .flatten()
                .collect();
            if go.is_empty() {
                return Err(e);
            }
            go
        }
    };
    Ok(ResolvedProbe {
        spec,
        sites,
        replay: None,
        pending: None,
    })
}

/// The type of `name` as an `async fn`'s state machine saves it across an `.await`, when the
/// site is in such a body.
fn saved_type(target: &Target, site: &Site, name: &str) -> Option<crate::index::scope::TypeRef> {
    let index = &target.objects[site.object].index;
    let param = site.visible.env_param.as_ref()?;
    crate::coroutine::Env::of(index, param)?.saved_type(index, name)
}

/// The locals an `async fn`'s states save, for the names listed as in scope at a site.
fn saved_names(target: &Target, site: &Site) -> Vec<String> {
    let index = &target.objects[site.object].index;
    site.visible
        .env_param
        .as_ref()
        .and_then(|p| crate::coroutine::Env::of(index, p))
        .map(|env| env.saved_names(index))
        .unwrap_or_default()
}

fn in_scope(target: &Target, site: &Site, name: &str) -> bool {
    // Go's `nil` (`err != nil`), unless the program has a variable of that name.
    name == "nil"
        || site.visible.vars.iter().any(|v| v.name == name)
        || saved_type(target, site, name).is_some()
        || target.objects[site.object]
            .index
            .find_global(name, &site.function)
            .is_some()
}

/// The sites of `location` where every name of `exprs` is in scope, their field paths checked.
fn sites_for(
    target: &Target,
    location: &periscope_core::Location,
    exprs: &[&Expr],
) -> Result<Vec<Site>, NativeError> {
    let sites = target.resolve(location)?;
    let names: Vec<(String, periscope_core::expr::Span)> =
        exprs.iter().flat_map(|e| e.names()).collect();
    let (good, bad): (Vec<Site>, Vec<Site>) = sites
        .into_iter()
        .partition(|s| names.iter().all(|(n, _)| in_scope(target, s, n)));
    if good.is_empty() {
        let site = &bad[0];
        let mut missing: Vec<&str> = Vec::new();
        for (n, _) in &names {
            if !in_scope(target, site, n) && !missing.contains(&n.as_str()) {
                missing.push(n);
            }
        }
        if site.unit == crate::index::NO_UNIT {
            let index = &target.objects[site.object].index;
            let offered = if site.visible.vars.is_empty() {
                "none here (not the function's entry)".to_string()
            } else {
                site.visible
                    .vars
                    .iter()
                    .map(|v| format!("{{{}}}", v.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let go = index.go_pclntab.is_some();
            let (whose, keep) = if go {
                (
                    format!("{}:{} ({})", site.file.display(), site.line, site.function),
                    " (a Go binary built with `-ldflags=-w`, or `-s -w`: build it without `-w` to read variables by name)",
                )
            } else {
                (site.function.clone(), "")
            };
            return Err(NativeError::Expression(format!(
                "`{}` cannot be read at {whose}: {} has no DWARF debug info{keep}, so a probe reads the arguments by position only, at a function's entry: {offered} ({})",
                missing.join("`, `"),
                index.path.display(),
                crate::index::abi::described(go),
            )));
        }
        let saved = saved_names(target, site);
        let mut visible: Vec<&str> = site.visible.vars.iter().map(|v| v.name.as_str()).collect();
        visible.extend(saved.iter().map(String::as_str));
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
    for e in exprs {
        if let Err(msg) = static_type(target, &good[0], e) {
            return Err(NativeError::Expression(msg));
        }
    }
    Ok(good)
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
            .or_else(|| saved_type(target, site, n))
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
                // Promoted from an embedded struct (Go) or a base class: found at the hit.
                None if members.iter().any(|m| m.embedded) => Ok(None),
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
