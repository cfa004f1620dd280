//! Folds over a list's elements: `sum(xs, |x| e)`, `count`, `any`, `all`; each element bound
//! to the closure's parameter for the evaluation of its body.

use super::{number, Ev, Evaluator, Res};
use crate::index::types::TypeKind;
use periscope_core::expr::{Expr, ExprKind};
use periscope_core::value::Value;

impl Evaluator<'_> {
    /// `sum(xs, |x| e)`, `count(xs, |x| cond)`, `any`, `all` over a list's elements.
    pub(super) fn fold(&self, how: &str, list: &Expr, closure: &Expr) -> Res<Ev> {
        let ExprKind::Lambda(param, body) = &closure.kind else {
            return Err(format!(
                "{how}({list}, …) takes a closure second, e.g. {how}({list}, |x| x.amount)"
            ));
        };
        let items = self.elements(self.eval(list)?, &list.to_string())?;
        let mut total = Ev::Int(0, None);
        let mut n: i128 = 0;
        for item in items {
            let v = self.with_binding(param, item, |ev| ev.eval(body))?;
            match how {
                "sum" => {
                    total = match (self.scalar(total)?, self.scalar(v)?) {
                        (Ev::Int(a, t), Ev::Int(b, _)) => {
                            Ev::Int(a.checked_add(b).ok_or("arithmetic overflow")?, t)
                        }
                        (a, b) => Ev::Float(number(&a, list)? + number(&b, body)?),
                    }
                }
                _ => {
                    let yes = self.truthy(&v)?;
                    match how {
                        "any" if yes => return Ok(Ev::Bool(true)),
                        "all" if !yes => return Ok(Ev::Bool(false)),
                        "count" if yes => n += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok(match how {
            "sum" => total,
            "count" => Ev::Int(n, Some("usize".into())),
            "any" => Ev::Bool(false),
            _ => Ev::Bool(true),
        })
    }

    /// A list's elements as places (a Vec, slice or array) or as values read (other
    /// collections, through their rendering).
    pub(super) fn elements(&self, v: Ev, text: &str) -> Res<Vec<Ev>> {
        let v = self.auto_deref(v)?;
        if let Ev::Place { place, ty } = &v {
            let keyed = matches!(ty.kind, TypeKind::Array { .. })
                || ty.name.starts_with("alloc::vec::Vec<")
                || ty.name.starts_with("&[")
                || ty.name.starts_with("&mut [");
            if keyed {
                let len = match self.method(v.clone(), "len", &[], text)? {
                    Ev::Int(n, _) => n,
                    _ => 0,
                };
                let cap = len.min(self.reader.limits.items as i128 * 100);
                return (0..cap)
                    .map(|i| self.index(v.clone(), Ev::Int(i, None), text))
                    .collect();
            }
            return match self.reader.render(place, ty, 2) {
                Value::List { items, .. } => Ok(items.into_iter().map(Ev::Rendered).collect()),
                _ => Err(format!("`{text}` ({}) is not a list", ty.name)),
            };
        }
        match v {
            Ev::Rendered(Value::List { items, .. }) => {
                Ok(items.into_iter().map(Ev::Rendered).collect())
            }
            _ => Err(format!("`{text}` is not a list")),
        }
    }
}
