//! One hit of a verify probe: the failure and the kept results, evaluated on the real state and
//! on the state each candidate fix would have computed. Read-only: a fix's assignments are
//! bindings in the evaluator (names and field paths shadowed for the evaluation), never
//! writes to the target.

use crate::eval::Evaluator;
use periscope_core::expr::Expr;
use periscope_core::value::{Fields, Value};
use periscope_core::verify::{Cell, Fix};

/// What one candidate made of one hit: its cell, and the values that decided it.
pub(crate) struct Outcome {
    pub fix: String,
    pub cell: Cell,
    pub values: Fields,
}

/// Evaluates the hit for every candidate.
pub(crate) fn verify_hit(
    ev: &Evaluator,
    failure: &Expr,
    keep: &[(String, Expr)],
    fixes: &[Fix],
) -> Vec<Outcome> {
    let real_failure = ev.condition(failure);
    let real_keep: Vec<Value> = keep.iter().map(|(_, e)| ev.value(e)).collect();
    fixes
        .iter()
        .map(|fix| one(ev, failure, keep, fix, &real_failure, &real_keep))
        .collect()
}

fn one(
    ev: &Evaluator,
    failure: &Expr,
    keep: &[(String, Expr)],
    fix: &Fix,
    real_failure: &Result<bool, String>,
    real_keep: &[Value],
) -> Outcome {
    let mut values: Vec<(String, Value)> = Vec::new();
    let inconclusive = |why: String, mut values: Vec<(String, Value)>| {
        values.push(("reason".into(), Value::unavailable(None, why)));
        Outcome {
            fix: fix.name.clone(),
            cell: Cell::Inconclusive,
            values: Fields(values),
        }
    };
    let real = match real_failure {
        Ok(b) => *b,
        Err(e) => return inconclusive(format!("the failure condition: {e}"), values),
    };
    values.push((format!("{failure}"), bool_value(real)));
    // The fix's assignments, in order, each seeing the ones before it.
    let mut bound = 0;
    for (target, value) in &fix.assigns {
        match ev.eval(value).and_then(|v| ev.scalar(v)) {
            Ok(v) => {
                values.push((format!("{target} (fixed)"), ev.to_value(v.clone())));
                ev.bind(&target.to_string(), v);
                bound += 1;
            }
            Err(e) => {
                ev.unbind(bound);
                return inconclusive(format!("`{target} = {value}`: {e}"), values);
            }
        }
    }
    let fixed = ev.condition(failure);
    let fixed_keep: Vec<Value> = keep.iter().map(|(_, e)| ev.value(e)).collect();
    ev.unbind(bound);
    let fixed = match fixed {
        Ok(b) => b,
        Err(e) => return inconclusive(format!("the failure condition with the fix: {e}"), values),
    };
    values.push((format!("{failure} (fixed)"), bool_value(fixed)));
    let same = compare_kept(keep, real_keep, &fixed_keep, &mut values);
    Outcome {
        fix: fix.name.clone(),
        cell: Cell::of(real, fixed, same),
        values: Fields(values),
    }
}

/// Whether every kept result is the same with the fix as in reality; each pair is added to
/// `values` as evidence (`x`, `x (fixed)`). Shadow and replay mode compare the same way.
pub(crate) fn compare_kept(
    keep: &[(String, Expr)],
    real: &[Value],
    fixed: &[Value],
    values: &mut Vec<(String, Value)>,
) -> bool {
    let mut same = true;
    for (((text, _), real), fixed) in keep.iter().zip(real).zip(fixed) {
        same &= real.to_message_text() == fixed.to_message_text();
        values.push((text.clone(), real.clone()));
        values.push((format!("{text} (fixed)"), fixed.clone()));
    }
    same
}

pub(crate) fn bool_value(b: bool) -> Value {
    Value::Bool {
        ty: Some("bool".into()),
        value: b,
    }
}
