//! Operators on scalars: comparisons and arithmetic (checked; integers of any width, floats,
//! strings, chars, bools) and casts (`x as u8`), as Rust computes them.

use super::{Ev, Evaluator, Res};
use periscope_core::expr::{BinOp, Expr};

impl Evaluator<'_> {
    pub(super) fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> Res<Ev> {
        match op {
            BinOp::And => {
                let l = self.eval(a)?;
                if !self.truthy(&l)? {
                    return Ok(Ev::Bool(false));
                }
                let r = self.eval(b)?;
                return Ok(Ev::Bool(self.truthy(&r)?));
            }
            BinOp::Or => {
                let l = self.eval(a)?;
                if self.truthy(&l)? {
                    return Ok(Ev::Bool(true));
                }
                let r = self.eval(b)?;
                return Ok(Ev::Bool(self.truthy(&r)?));
            }
            _ => {}
        }
        if let Some(r) = self.nil_comparison(op, a, b) {
            return r;
        }
        if matches!(op, BinOp::Eq | BinOp::Ne) {
            // `x == Some("a")`, `method == Method::Get`, `color == RED`.
            let (l, r) = (self.eval(a)?, self.eval(b)?);
            let found = match (l, r) {
                (Ev::Variant { .. }, Ev::Variant { .. }) => {
                    return Err(format!("`{a} {} {b}` compares two written variants; one side must be a value of the program", op.symbol()))
                }
                (v, Ev::Variant { path, args }) => Some(self.equals_variant(v, &path, &args, &a.to_string())?),
                (Ev::Variant { path, args }, v) => Some(self.equals_variant(v, &path, &args, &b.to_string())?),
                _ => None,
            };
            if let Some(eq) = found {
                return Ok(Ev::Bool(eq == (op == BinOp::Eq)));
            }
        }
        let l = self.scalar(self.eval(a)?)?;
        let r = self.scalar(self.eval(b)?)?;
        let cmp = |o: std::cmp::Ordering| -> bool {
            match op {
                BinOp::Eq => o.is_eq(),
                BinOp::Ne => !o.is_eq(),
                BinOp::Lt => o.is_lt(),
                BinOp::Le => o.is_le(),
                BinOp::Gt => o.is_gt(),
                BinOp::Ge => o.is_ge(),
                _ => false,
            }
        };
        let is_cmp = matches!(
            op,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        );
        let mismatch = || format!("cannot apply `{}` to `{a}` and `{b}`", op.symbol());
        match (l, r) {
            (Ev::Str(x), Ev::Str(y)) if is_cmp => Ok(Ev::Bool(cmp(x.cmp(&y)))),
            (Ev::Str(x), Ev::Char(y)) | (Ev::Char(y), Ev::Str(x))
                if matches!(op, BinOp::Eq | BinOp::Ne) =>
            {
                Ok(Ev::Bool(cmp(x.cmp(&y.to_string()))))
            }
            (Ev::Bool(x), Ev::Bool(y)) if is_cmp => Ok(Ev::Bool(cmp(x.cmp(&y)))),
            (l, r) => {
                let num = |v: &Ev| -> Option<Num> {
                    match v {
                        Ev::Int(i, _) => Some(Num::I(*i)),
                        Ev::Char(c) => Some(Num::I(*c as i128)),
                        Ev::Bool(b) => Some(Num::I(*b as i128)),
                        Ev::Float(f) => Some(Num::F(*f)),
                        _ => None,
                    }
                };
                let (Some(x), Some(y)) = (num(&l), num(&r)) else {
                    return Err(mismatch());
                };
                let ty = match (&l, &r) {
                    (Ev::Int(_, Some(t)), _) | (_, Ev::Int(_, Some(t))) => Some(t.clone()),
                    _ => None,
                };
                match (x, y) {
                    (Num::I(x), Num::I(y)) => {
                        if is_cmp {
                            return Ok(Ev::Bool(cmp(x.cmp(&y))));
                        }
                        let v = match op {
                            BinOp::Add => x.checked_add(y),
                            BinOp::Sub => x.checked_sub(y),
                            BinOp::Mul => x.checked_mul(y),
                            BinOp::Div if y == 0 => {
                                return Err(format!("division by zero in `{b}`"))
                            }
                            BinOp::Div => x.checked_div(y),
                            BinOp::Rem if y == 0 => {
                                return Err(format!("division by zero in `{b}`"))
                            }
                            BinOp::Rem => x.checked_rem(y),
                            _ => None,
                        };
                        v.map(|v| Ev::Int(v, ty))
                            .ok_or_else(|| "arithmetic overflow".to_string())
                    }
                    (x, y) => {
                        let (x, y) = (x.f(), y.f());
                        if is_cmp {
                            return Ok(Ev::Bool(x.partial_cmp(&y).is_some_and(cmp)));
                        }
                        Ok(Ev::Float(match op {
                            BinOp::Add => x + y,
                            BinOp::Sub => x - y,
                            BinOp::Mul => x * y,
                            BinOp::Div => x / y,
                            BinOp::Rem => x % y,
                            _ => return Err(mismatch()),
                        }))
                    }
                }
            }
        }
    }

    pub(super) fn cast(&self, v: Ev, ty: &str) -> Res<Ev> {
        let v = self.scalar(v)?;
        let bits = |t: &str| -> Option<(u32, bool)> {
            Some(match t {
                "u8" => (8, false),
                "u16" => (16, false),
                "u32" => (32, false),
                "u64" | "usize" => (64, false),
                "u128" => (128, false),
                "i8" => (8, true),
                "i16" => (16, true),
                "i32" => (32, true),
                "i64" | "isize" => (64, true),
                "i128" => (128, true),
                _ => return None,
            })
        };
        if ty == "f64" || ty == "f32" {
            return match v {
                Ev::Int(i, _) => Ok(Ev::Float(i as f64)),
                Ev::Float(f) => Ok(Ev::Float(if ty == "f32" { f as f32 as f64 } else { f })),
                _ => Err(format!("cannot cast to {ty}")),
            };
        }
        let Some((n, signed)) = bits(ty) else {
            return Err(format!(
                "unknown type `{ty}` in cast; use u8…u128, i8…i128, usize, isize, f32 or f64"
            ));
        };
        let i = match v {
            Ev::Int(i, _) => i,
            Ev::Float(f) => f as i128,
            Ev::Char(c) => c as i128,
            Ev::Bool(b) => b as i128,
            _ => return Err(format!("cannot cast to {ty}")),
        };
        let truncated = if n == 128 {
            i
        } else {
            let mask = (1i128 << n) - 1;
            let u = i & mask;
            if signed && u & (1 << (n - 1)) != 0 {
                u - (1 << n)
            } else {
                u
            }
        };
        Ok(Ev::Int(truncated, Some(ty.to_string())))
    }
}

#[derive(Clone, Copy)]
enum Num {
    I(i128),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}
