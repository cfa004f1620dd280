//! The one probe compiler: a probe request ([`NewProbe`], as the API, the CLI and MCP take it)
//! becomes a [`CompiledProbe`]: every text parsed, every field checked, each error naming the
//! field at fault. The server validates with it, the agent and the CLI's local commands build
//! engine probes from its output; so a probe means the same thing on every surface.

use crate::api::{NewProbe, ProbeKind};
use crate::expr::{self, Expr};
use crate::template::Template;
use crate::Location;

/// The longest TTL a probe may have: 30 days.
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;
/// Most frames whose variables a snapshot may capture.
pub const MAX_FRAMES: usize = 64;
/// The largest overhead budget: milliseconds of the target's time per 10 s window (the API's
/// document and MCP's tool schemas give this bound; a test checks it is the one enforced).
pub const MAX_BUDGET_MS: u64 = 10_000;
/// Frames with variables when the request does not say.
pub const DEFAULT_FRAMES: usize = 5;

/// What a probe does at each hit (the engine runs these as they are).
#[derive(Debug, Clone)]
pub enum Action {
    /// Render the template with the values of its expressions.
    Log(Template),
    /// Count hits, optionally grouped by the value of an expression.
    Count { by: Option<Expr> },
    /// Time each call of the function at the location, from entry to return, optionally
    /// grouped by an expression read at entry. Runs in the kernel only (a uprobe and a
    /// uretprobe): breakpoints on every return would hold each call twice.
    Duration { by: Option<Expr> },
    /// Sample a numeric value at each hit (last, min, max, mean per interval), optionally
    /// grouped.
    Gauge { value: Expr, by: Option<Expr> },
    /// Capture the stack, with arguments and locals of the top `frames` frames, and the value
    /// of each watch expression (text as written, parsed).
    Snapshot {
        frames: usize,
        watches: Vec<(String, Expr)>,
    },
    /// Panics and fatal signals, with the variables of the top `frames` frames of the
    /// program's own code. In the engine: a breakpoint on `rust_panic` (before unwinding
    /// starts) plus the session's signal watch.
    Failures { frames: usize },
    /// Verify candidate fixes: at each hit the failure and the kept results are evaluated on
    /// the real state and with each fix's assignments; read-only.
    Verify {
        failure: Expr,
        /// (text as written, parsed).
        keep: Vec<(String, Expr)>,
        /// `keep` was asked for (not the default of every assigned variable).
        keep_given: bool,
        fixes: Vec<crate::verify::Fix>,
        /// Replay mode; `None`: shadow mode.
        replay: Option<crate::verify::Replay>,
    },
}

#[derive(Debug, Clone)]
pub struct CompiledProbe {
    /// `None` for failures probes, which have no location.
    pub location: Option<Location>,
    pub action: Action,
    pub condition: Option<Expr>,
    pub max_hits: Option<u64>,
    /// As requested; a fleet applies [`ProbeKind::default_rate_limit`] when `None`.
    pub rate_limit: Option<f64>,
    pub budget_ms: Option<u64>,
    pub engine: crate::api::Engine,
}

/// A request field that is wrong, and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// The request field, as the API names it (`template`, `condition`, `max_hits`, …).
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

fn parse(field: &'static str, what: &str, text: &str) -> Result<Expr, FieldError> {
    expr::parse(text).map_err(|e| bad(field, format!("bad {what}: {e}")))
}

/// Compiles a probe request (its `target` selector is the fleet's business, not checked here).
pub fn compile(p: &NewProbe) -> Result<CompiledProbe, FieldError> {
    let location = match p.kind {
        ProbeKind::Failures => None,
        _ => Some(
            p.location
                .parse::<Location>()
                .map_err(|e| bad("location", e.to_string()))?,
        ),
    };
    let condition = p
        .condition
        .as_deref()
        .map(|c| parse("condition", "condition", c))
        .transpose()?;
    let watches = p
        .watch
        .iter()
        .map(|w| Ok((w.trim().to_string(), parse("watch", "watch expression", w)?)))
        .collect::<Result<Vec<_>, FieldError>>()?;
    if !watches.is_empty() && p.kind != ProbeKind::Snapshot {
        return Err(bad("watch", "only snapshot probes take watch expressions"));
    }
    let by =
        p.by.as_deref()
            .map(|b| parse("by", "grouping expression", b))
            .transpose()?;
    if by.is_some()
        && !matches!(
            p.kind,
            ProbeKind::Count | ProbeKind::Duration | ProbeKind::Gauge
        )
    {
        return Err(bad(
            "by",
            "only count, duration and gauge probes group by an expression",
        ));
    }
    let value = p
        .value
        .as_deref()
        .map(|v| parse("value", "gauge expression", v))
        .transpose()?;
    if value.is_some() && p.kind != ProbeKind::Gauge {
        return Err(bad("value", "only gauge probes take a value expression"));
    }
    let frames = p.frames.unwrap_or(DEFAULT_FRAMES);
    if frames > MAX_FRAMES {
        return Err(bad("frames", format!("frames may be at most {MAX_FRAMES}")));
    }
    let action = match (p.kind, &p.template) {
        (ProbeKind::Log, None) => {
            return Err(bad(
                "template",
                "a log probe needs a template, e.g. \"user={user.name} total={total}\"",
            ))
        }
        (ProbeKind::Log, Some(t)) => Action::Log(
            Template::parse(t).map_err(|e| bad("template", format!("bad template: {e}")))?,
        ),
        (_, Some(_)) => {
            return Err(bad(
                "template",
                "only log probes take a template; snapshots take `watch` expressions",
            ))
        }
        (ProbeKind::Snapshot, None) => Action::Snapshot { frames, watches },
        (ProbeKind::Count, None) => Action::Count { by },
        (ProbeKind::Duration, None) => Action::Duration { by },
        (ProbeKind::Gauge, None) => match value {
            Some(value) => Action::Gauge { value, by },
            None => return Err(bad(
                "value",
                "a gauge probe needs the value to sample, e.g. \"queue.len()\" or \"total_cents\"",
            )),
        },
        (ProbeKind::Failures, None) => Action::Failures { frames },
        (ProbeKind::Verify, None) => verify_action(p)?,
    };
    if p.kind != ProbeKind::Verify
        && (p.failure.is_some() || !p.fixes.is_empty() || !p.keep.is_empty() || p.replay.is_some())
    {
        return Err(bad(
            "failure",
            "only verify probes take failure, fixes, keep and replay",
        ));
    }
    match p.ttl_seconds {
        Some(0) => return Err(bad("ttl_seconds", "ttl must be at least 1 second")),
        Some(t) if t > MAX_TTL_SECONDS => {
            return Err(bad(
                "ttl_seconds",
                format!("ttl may be at most {MAX_TTL_SECONDS} seconds (30 days)"),
            ))
        }
        _ => {}
    }
    if p.max_hits == Some(0) {
        return Err(bad("max_hits", "max_hits must be at least 1"));
    }
    if let Some(r) = p.rate_limit {
        if !(r.is_finite() && r > 0.0) {
            return Err(bad(
                "rate_limit",
                "rate_limit is hits per second and must be above 0",
            ));
        }
    }
    if p.budget_ms.is_some_and(|b| b == 0 || b > 10_000) {
        return Err(bad(
            "budget_ms",
            "budget_ms is milliseconds per 10 s window, from 1 to 10000",
        ));
    }
    Ok(CompiledProbe {
        location,
        action,
        condition,
        max_hits: p.max_hits,
        rate_limit: p.rate_limit,
        budget_ms: p.budget_ms,
        engine: p.engine.unwrap_or_default(),
    })
}

/// A verify probe's action: the failure, the candidates, and what to keep (by default every
/// variable or field a candidate assigns).
fn verify_action(p: &NewProbe) -> Result<Action, FieldError> {
    let failure =
        match p.failure.as_deref() {
            Some(f) => parse("failure", "failure condition", f)?,
            None => return Err(bad(
                "failure",
                "a verify probe needs the failure as a condition, e.g. \"refund > charge.amount\"",
            )),
        };
    if p.fixes.is_empty() {
        return Err(bad(
            "fixes",
            "a verify probe needs at least one candidate fix, e.g. \"capped: refund = min(refund, charge.amount)\"",
        ));
    }
    let fixes = p
        .fixes
        .iter()
        .map(|f| crate::verify::parse_fix(f).map_err(|e| bad("fixes", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: Vec<&str> = fixes.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("fixes", "two candidate fixes have the same name"));
    }
    let replay = p
        .replay
        .as_deref()
        .map(|r| crate::verify::parse_replay(r).map_err(|e| bad("replay", e)))
        .transpose()?;
    if replay.is_some() && p.condition.is_some() {
        return Err(bad(
            "condition",
            "a replay takes no condition: every copy is compared at UNTIL (shadow mode, without replay, takes one)",
        ));
    }
    let keep_given = !p.keep.is_empty();
    let mut keep = p
        .keep
        .iter()
        .map(|k| Ok((k.trim().to_string(), parse("keep", "keep expression", k)?)))
        .collect::<Result<Vec<_>, FieldError>>()?;
    if keep.is_empty() {
        for f in &fixes {
            for (target, _) in &f.assigns {
                let text = target.to_string();
                if !keep.iter().any(|(k, _)| *k == text) {
                    keep.push((text, target.clone()));
                }
            }
        }
    }
    Ok(Action::Verify {
        failure,
        keep,
        keep_given,
        fixes,
        replay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: ProbeKind) -> NewProbe {
        NewProbe::new(kind, "service=a", "main.rs:10")
    }

    #[test]
    fn each_error_names_its_field() {
        let mut p = probe(ProbeKind::Log);
        assert_eq!(compile(&p).unwrap_err().field, "template");
        p.template = Some("x={x".into());
        assert_eq!(compile(&p).unwrap_err().field, "template");
        p.template = Some("x={x}".into());
        p.condition = Some("x >".into());
        let e = compile(&p).unwrap_err();
        assert_eq!(e.field, "condition");
        assert!(e.message.starts_with("bad condition"), "{e}");
        p.condition = None;
        p.max_hits = Some(0);
        assert_eq!(compile(&p).unwrap_err().field, "max_hits");
        let mut s = probe(ProbeKind::Count);
        s.watch = vec!["x".into()];
        assert_eq!(compile(&s).unwrap_err().field, "watch");
        let mut f = probe(ProbeKind::Snapshot);
        f.frames = Some(65);
        assert_eq!(compile(&f).unwrap_err().field, "frames");
        let mut g = probe(ProbeKind::Gauge);
        assert_eq!(compile(&g).unwrap_err().field, "value");
        g.value = Some("a +".into());
        assert_eq!(compile(&g).unwrap_err().field, "value");
        let mut d = probe(ProbeKind::Duration);
        d.value = Some("a".into());
        assert_eq!(compile(&d).unwrap_err().field, "value");
        let mut l = probe(ProbeKind::Log);
        l.template = Some("x".into());
        l.by = Some("a".into());
        assert_eq!(compile(&l).unwrap_err().field, "by");
    }

    #[test]
    fn durations_and_gauges_compile_with_their_grouping() {
        let mut d = probe(ProbeKind::Duration);
        d.by = Some("kind".into());
        assert!(matches!(
            compile(&d).unwrap().action,
            Action::Duration { by: Some(_) }
        ));
        let mut g = probe(ProbeKind::Gauge);
        g.value = Some("queue.len()".into());
        assert!(matches!(
            compile(&g).unwrap().action,
            Action::Gauge { by: None, .. }
        ));
    }

    #[test]
    fn a_good_request_compiles_to_its_action() {
        let mut p = probe(ProbeKind::Snapshot);
        p.watch = vec![" a.b ".into()];
        let c = compile(&p).unwrap();
        match c.action {
            Action::Snapshot { frames, watches } => {
                assert_eq!(frames, DEFAULT_FRAMES);
                assert_eq!(watches[0].0, "a.b");
            }
            other => panic!("{other:?}"),
        }
        let mut f = NewProbe::new(ProbeKind::Failures, "service=a", "");
        f.frames = Some(3);
        let c = compile(&f).unwrap();
        assert!(c.location.is_none());
        assert!(matches!(c.action, Action::Failures { frames: 3 }));
    }
}
