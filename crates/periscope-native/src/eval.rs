//! Evaluating probe expressions against a stopped frame. Read-only by construction: the only
//! effect of evaluation is reading target memory, bounded by the capture limits and a step budget.

use crate::frame::{Frame, Place};
use crate::index::scope::{TypeRef, Var};
use crate::index::types::{Type, TypeKind};
use crate::values::{int_from, Reader};
use periscope_core::expr::{BinOp, Expr, ExprKind};
use periscope_core::value::{Int128, Value};
use std::cell::Cell;
use std::sync::Arc;

/// An intermediate result: a typed place in the target, or a computed scalar.
#[derive(Debug, Clone)]
pub enum Ev {
    Place {
        place: Place,
        ty: Arc<Type>,
    },
    Int(i128, Option<String>),
    Float(f64),
    Bool(bool),
    Char(char),
    Str(String),
    /// A value already read (an element found in a rendered map or list).
    Rendered(Value),
    /// An enum variant written in the expression, to compare with: `None`, `Method::Get`,
    /// `Some("a")`, `Put(3)`. `path` as written; `args` the payload's fields, if given.
    Variant {
        path: String,
        args: Vec<Ev>,
    },
}

impl Ev {
    fn variant_name(path: &str) -> &str {
        path.rsplit("::").next().unwrap_or(path)
    }
}

const MAX_STEPS: u32 = 10_000;

/// Where an enum value's active variant keeps its fields, and their struct type.
type Payload = (Place, Arc<Type>);

pub struct Evaluator<'a> {
    pub frame: &'a Frame<'a>,
    pub reader: &'a Reader<'a>,
    pub vars: &'a [Var],
    /// The function being evaluated in, to find its crate's globals.
    pub function: &'a str,
    steps: Cell<u32>,
    /// Values given to names or paths for this evaluation (a closure's parameter, a candidate
    /// fix's assignments), innermost last. Read-only: the program's memory is never written.
    bindings: std::cell::RefCell<Vec<(String, Ev)>>,
}

type Res<T> = Result<T, String>;

impl<'a> Evaluator<'a> {
    pub fn new(
        frame: &'a Frame<'a>,
        reader: &'a Reader<'a>,
        vars: &'a [Var],
        function: &'a str,
    ) -> Self {
        Evaluator {
            frame,
            reader,
            vars,
            function,
            steps: Cell::new(0),
            bindings: Default::default(),
        }
    }

    /// Evaluates `f` with `name` (a variable or a field path as written, `t.fee`) bound to
    /// `value`, shadowing what the program has there.
    pub fn with_binding<T>(&self, name: &str, value: Ev, f: impl FnOnce(&Self) -> T) -> T {
        self.bindings.borrow_mut().push((name.to_string(), value));
        let out = f(self);
        self.bindings.borrow_mut().pop();
        out
    }

    /// Binds `name` until [`Evaluator::unbind`] (for several bindings made in sequence).
    pub fn bind(&self, name: &str, value: Ev) {
        self.bindings.borrow_mut().push((name.to_string(), value));
    }

    pub fn unbind(&self, n: usize) {
        let mut b = self.bindings.borrow_mut();
        let keep = b.len().saturating_sub(n);
        b.truncate(keep);
    }

    fn bound(&self, e: &Expr) -> Option<Ev> {
        let b = self.bindings.borrow();
        if b.is_empty() {
            return None;
        }
        if !matches!(
            e.kind,
            ExprKind::Name(_) | ExprKind::Field(..) | ExprKind::Arrow(..) | ExprKind::Index(..)
        ) {
            return None;
        }
        let key = e.to_string();
        b.iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    /// Evaluates an expression to a value for a log message or a watch.
    pub fn value(&self, e: &Expr) -> Value {
        match self.eval(e) {
            Ok(ev) => self.to_value(ev),
            Err(reason) => Value::unavailable(None, reason),
        }
    }

    /// Evaluates a condition.
    pub fn condition(&self, e: &Expr) -> Res<bool> {
        let v = self.eval(e)?;
        self.truthy(&v)
    }

    pub fn to_value(&self, ev: Ev) -> Value {
        match ev {
            Ev::Place { place, ty } => self.reader.render(&place, &ty, self.reader.limits.depth),
            Ev::Int(v, ty) => Value::Int {
                ty,
                value: Int128::Signed(v),
            },
            Ev::Float(v) => Value::Float {
                ty: Some("f64".into()),
                value: v,
            },
            Ev::Bool(v) => Value::Bool {
                ty: Some("bool".into()),
                value: v,
            },
            Ev::Char(c) => Value::Char {
                ty: Some("char".into()),
                value: c.to_string(),
            },
            Ev::Str(s) => Value::String {
                ty: None,
                len: s.len() as u64,
                value: s,
                truncated: false,
            },
            Ev::Rendered(v) => v,
            Ev::Variant { path, args } => Value::Enum {
                ty: None,
                variant: Ev::variant_name(&path).to_string(),
                fields: periscope_core::value::Fields(
                    args.into_iter()
                        .enumerate()
                        .map(|(i, a)| (i.to_string(), self.to_value(a)))
                        .collect(),
                ),
            },
        }
    }

    fn ty(&self, r: TypeRef) -> Arc<Type> {
        self.reader.ty(r)
    }

    pub fn eval(&self, e: &Expr) -> Res<Ev> {
        let n = self.steps.get() + 1;
        self.steps.set(n);
        if n > MAX_STEPS {
            return Err("expression too costly to evaluate".into());
        }
        if let Some(v) = self.bound(e) {
            return Ok(v);
        }
        match &e.kind {
            ExprKind::If(c, a, b) => {
                let c = self.eval(c)?;
                if self.truthy(&c)? {
                    self.eval(a)
                } else {
                    self.eval(b)
                }
            }
            ExprKind::Lambda(..) => Err(format!(
                "`{e}` is a closure: it goes in sum(xs, |x| …), count, any or all"
            )),
            ExprKind::Name(name) => self.name(name),
            ExprKind::Int(v) => Ok(Ev::Int(*v, None)),
            ExprKind::Float(v) => Ok(Ev::Float(*v)),
            ExprKind::Bool(v) => Ok(Ev::Bool(*v)),
            ExprKind::Char(v) => Ok(Ev::Char(*v)),
            ExprKind::Str(v) => Ok(Ev::Str(v.clone())),
            ExprKind::Field(base, field) => {
                let b = self.eval(base)?;
                self.field(b, field, &base.to_string())
            }
            ExprKind::Arrow(base, field) => {
                let b = self.eval(base)?;
                let d = self.deref(b, &base.to_string())?;
                self.field(d, field, &base.to_string())
            }
            ExprKind::Deref(inner) => {
                let v = self.eval(inner)?;
                self.deref(v, &inner.to_string())
            }
            ExprKind::AddrOf(inner) => match self.eval(inner)? {
                Ev::Place { place: Place::Memory(a), .. } => Ok(Ev::Int(a.into(), Some("usize".into()))),
                _ => Err(format!("`{inner}` has no address (it lives in a register or is computed)")),
            },
            ExprKind::Index(base, idx) => {
                let b = self.eval(base)?;
                let i = self.eval(idx)?;
                self.index(b, i, &base.to_string())
            }
            ExprKind::Method(base, m, args) => {
                let b = self.eval(base)?;
                self.method(b, m, args, &base.to_string())
            }
            ExprKind::Call(f, args) => match (f.as_str(), args.as_slice()) {
                ("len", [a]) => {
                    let v = self.eval(a)?;
                    self.method(v, "len", &[], &a.to_string())
                }
                ("min" | "max", [first, rest @ ..]) if !rest.is_empty() => {
                    let mut best = self.scalar(self.eval(first)?)?;
                    for r in rest {
                        let v = self.scalar(self.eval(r)?)?;
                        let less = number(&v, r)? < number(&best, first)?;
                        if (f == "min") == less {
                            best = v;
                        }
                    }
                    Ok(best)
                }
                ("abs", [a]) => match self.scalar(self.eval(a)?)? {
                    Ev::Int(i, t) => Ok(Ev::Int(i.abs(), t)),
                    Ev::Float(x) => Ok(Ev::Float(x.abs())),
                    _ => Err(format!("abs({a}): `{a}` is not a number")),
                },
                ("sum" | "count" | "any" | "all", [list, closure]) => {
                    self.fold(f, list, closure)
                }
                ("matches", [value, pattern]) => {
                    let v = self.eval(value)?;
                    let pat = match self.pattern(pattern)? {
                        Some(p) => p,
                        None => {
                            return Err(format!(
                                "matches(x, VARIANT): `{pattern}` is not a variant name such as `Get`, `Method::Put` or `Some`"
                            ))
                        }
                    };
                    // A bare variant name matches whatever its payload: `matches(m, Put)`.
                    Ok(Ev::Bool(self.matches_variant(v, &pat, &value.to_string())?))
                }
                (f, _) if periscope_core::expr::is_variant_path(f) => Ok(Ev::Variant {
                    path: f.to_string(),
                    args: args.iter().map(|a| self.eval_pattern_arg(a)).collect::<Res<_>>()?,
                }),
                _ => Err(format!(
                    "`{f}(…)` is not available: expressions cannot call target functions; built-ins are len(x), matches(x, VARIANT), min(a, b), max(a, b), abs(x), sum(xs, |x| …), count(xs, |x| …), any(xs, |x| …), all(xs, |x| …), x.len(), x.is_some(), x.is_none(), x.is_ok(), x.is_err(), x.unwrap(), s.contains(\"…\")"
                )),
            },
            ExprKind::Not(inner) => {
                let v = self.eval(inner)?;
                match v {
                    Ev::Int(i, t) => Ok(Ev::Int(!i, t)),
                    other => Ok(Ev::Bool(!self.truthy(&other)?)),
                }
            }
            ExprKind::Neg(inner) => match self.scalar(self.eval(inner)?)? {
                Ev::Int(i, t) => Ok(Ev::Int(-i, t)),
                Ev::Float(f) => Ok(Ev::Float(-f)),
                _ => Err(format!("cannot negate `{inner}`: it is not a number")),
            },
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b),
            ExprKind::Cast(inner, ty) => self.cast(self.eval(inner)?, ty),
        }
    }

    fn name(&self, name: &str) -> Res<Ev> {
        if self.reader.redactor.is_sensitive(name) {
            return Err(format!("`{name}` is redacted: its value cannot be read"));
        }
        if let Some(var) = self.vars.iter().find(|v| v.name == name) {
            let ty = var
                .ty
                .map(|t| self.ty(t))
                .ok_or_else(|| format!("`{name}` has no type information"))?;
            return Ok(Ev::Place {
                place: self.frame.var_place(var),
                ty,
            });
        }
        if let Some(g) = self.global(name) {
            return Ok(g);
        }
        if periscope_core::expr::is_variant_path(name) {
            return Ok(Ev::Variant {
                path: name.to_string(),
                args: Vec::new(),
            });
        }
        let mut names: Vec<&str> = self.vars.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        Err(format!(
            "`{name}` is not in scope here; in scope: {}",
            if names.is_empty() {
                "no variables".to_string()
            } else {
                names.join(", ")
            }
        ))
    }

    fn global(&self, name: &str) -> Option<Ev> {
        let index = self.frame.index;
        let g = index.find_global(name, self.function)?;
        let ud = index.units.get(g.unit as usize)?;
        let entry = ud.unit.entry(g.offset).ok()?;
        let ty = self.ty(index.type_ref(g.unit, entry.attr_value(gimli::DW_AT_type))?);
        let expr = match entry.attr_value(gimli::DW_AT_location)? {
            gimli::AttributeValue::Exprloc(e) => e,
            _ => return None,
        };
        let frame = Frame {
            index,
            bias: self.frame.bias,
            unit: g.unit,
            mem: self.frame.mem,
            regs: self.frame.regs,
            tid: self.frame.tid,
            cfa: self.frame.cfa,
            frame_base: None,
            unknown_regs: self.frame.unknown_regs,
            caller: self.frame.caller,
            target: self.frame.target,
        };
        Some(Ev::Place {
            place: frame.eval_location(expr),
            ty,
        })
    }

    /// Follows references and smart pointers that `.` sees through (Rust `&T`, `Box<T>`).
    fn auto_deref(&self, v: Ev) -> Res<Ev> {
        let mut v = v;
        for _ in 0..4 {
            match &v {
                Ev::Place { ty, .. } if matches!(ty.kind, TypeKind::Pointer { .. }) => {
                    v = self.deref(v, "value")?;
                }
                _ => return Ok(v),
            }
        }
        Ok(v)
    }

    fn field(&self, base: Ev, field: &str, base_text: &str) -> Res<Ev> {
        if self.reader.redactor.is_sensitive(field) {
            return Err(format!(
                "`{base_text}.{field}` is redacted: its value cannot be read"
            ));
        }
        let base = self.auto_deref(base)?;
        let Ev::Place { place, ty } = base else {
            return Err(format!(
                "`{base_text}` is not a struct; it has no field `{field}`"
            ));
        };
        if let TypeKind::Struct {
            variants: Some(vp), ..
        } = &ty.kind
        {
            return self.variant_field(&place, &ty, vp, field, base_text);
        }
        let tuple_name = format!("__{field}");
        let member = ty.member(field).or_else(|| ty.member(&tuple_name));
        if member.is_none() {
            if let Some(inner) = self.newtype_inner(&place, &ty) {
                return self.field(inner, field, base_text);
            }
        }
        match member {
            Some(m) => {
                let mt =
                    m.ty.map(|t| self.ty(t))
                        .ok_or_else(|| format!("field `{field}` has no type information"))?;
                if let Some((bit, size)) = m.bits {
                    let v =
                        self.reader
                            .bytes(&place, m.offset, (bit + size).div_ceil(8) as usize)?;
                    let raw = (int_from(&v, false) as u128 >> bit) & ((1u128 << size) - 1);
                    return Ok(Ev::Int(raw as i128, Some(mt.name.clone())));
                }
                Ok(Ev::Place {
                    place: Reader::sub_place(&place, m.offset),
                    ty: mt,
                })
            }
            None => {
                let names: Vec<&str> = match &ty.kind {
                    TypeKind::Struct { members, .. } => {
                        members.iter().map(|m| m.name.as_str()).collect()
                    }
                    _ => Vec::new(),
                };
                Err(format!(
                    "`{base_text}` ({}) has no field `{field}`{}",
                    ty.name,
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!("; fields: {}", names.join(", "))
                    }
                ))
            }
        }
    }

    fn deref(&self, v: Ev, text: &str) -> Res<Ev> {
        let Ev::Place { place, ty } = v else {
            return Err(format!("`{text}` is not a pointer"));
        };
        match ty.kind {
            TypeKind::Pointer { target: Some(t) } => {
                if let Place::Implicit(pointee) = place {
                    return Ok(Ev::Place {
                        place: *pointee,
                        ty: self.ty(t),
                    });
                }
                let addr = self.reader.read_u64_at(&place, 0)?;
                if addr == 0 {
                    return Err(format!("`{text}` is a null pointer"));
                }
                Ok(Ev::Place {
                    place: Place::Memory(addr),
                    ty: self.ty(t),
                })
            }
            _ => Err(format!("`{text}` ({}) is not a pointer", ty.name)),
        }
    }

    fn index(&self, base: Ev, key: Ev, text: &str) -> Res<Ev> {
        let base = self.auto_deref(base)?;
        let Ev::Place { place, ty } = base else {
            return Err(format!("`{text}` cannot be indexed"));
        };
        let keyed = matches!(ty.kind, TypeKind::Array { .. })
            || ty.name.starts_with("alloc::vec::Vec<")
            || ty.name.starts_with("&[")
            || ty.name.starts_with("&mut [");
        if !keyed {
            return self.index_rendered(&place, &ty, key, text);
        }
        let i = self.as_int(&key)?;
        let (data, len, et): (Place, Option<u64>, Arc<Type>) = match &ty.kind {
            TypeKind::Array { elem, count } => (place.clone(), *count, self.ty(*elem)),
            _ if ty.name.starts_with("alloc::vec::Vec<") => {
                let (p, l) = self
                    .reader
                    .rust_vec_parts(&place, &ty)
                    .ok_or("unreadable Vec")?;
                let et = ty
                    .param("T")
                    .map(|t| self.ty(t))
                    .ok_or("Vec without element type")?;
                (Place::Memory(p), Some(l), et)
            }
            _ if ty.name.starts_with("&[") || ty.name.starts_with("&mut [") => {
                let (p, l) = self
                    .reader
                    .rust_slice_parts(&place, &ty)
                    .ok_or("unreadable slice")?;
                let pt = ty
                    .member("data_ptr")
                    .and_then(|m| m.ty)
                    .map(|t| self.ty(t))
                    .ok_or("slice without element type")?;
                let et = match pt.kind {
                    TypeKind::Pointer { target: Some(t) } => self.ty(t),
                    _ => return Err("slice without element type".into()),
                };
                (Place::Memory(p), Some(l), et)
            }
            _ => unreachable!("checked by `keyed` above"),
        };
        if i < 0 || len.is_some_and(|l| i as u64 >= l) {
            return Err(format!(
                "index {i} out of range for len {}",
                len.unwrap_or(0)
            ));
        }
        let stride = et.size.unwrap_or(0);
        Ok(Ev::Place {
            place: Reader::sub_place(&data, i as u64 * stride),
            ty: et,
        })
    }

    /// Indexes a collection through its rendered value: `map["key"]`, `map[3]`, `deque[0]`.
    fn index_rendered(&self, place: &Place, ty: &Arc<Type>, key: Ev, text: &str) -> Res<Ev> {
        let key = self.scalar(key)?;
        match self.reader.render(place, ty, 2) {
            Value::Map {
                entries,
                len,
                truncated,
                ..
            } => {
                let found = entries.into_iter().find(|e| scalar_equals(&e.key, &key));
                match found {
                    Some(e) => Ok(Ev::Rendered(e.value)),
                    None if truncated => Err(format!(
                        "key not among the first {} of {len} entries of `{text}` read",
                        self.reader.limits.items
                    )),
                    None => Err(format!("no key {} in `{text}`", describe(&key))),
                }
            }
            Value::List { items, len, .. } => {
                let i = self.as_int(&key)?;
                if i < 0 || i as u64 >= len {
                    return Err(format!("index {i} out of range for len {len}"));
                }
                items
                    .into_iter()
                    .nth(i as usize)
                    .map(Ev::Rendered)
                    .ok_or_else(|| format!("index {i} is beyond the items read"))
            }
            _ => Err(format!("`{text}` ({}) cannot be indexed", ty.name)),
        }
    }

    fn method(&self, base: Ev, m: &str, args: &[Expr], text: &str) -> Res<Ev> {
        match (m, args) {
            ("len", []) => {
                if let Ev::Str(s) = &base {
                    return Ok(Ev::Int(s.len() as i128, Some("usize".into())));
                }
                let base = self.auto_deref_unless_sized(base)?;
                let Ev::Place { place, ty } = base else {
                    return Err(format!("`{text}` has no length"));
                };
                let n = if ty.name == "alloc::string::String" || ty.name.starts_with("alloc::vec::Vec<") {
                    self.reader.rust_vec_parts(&place, &ty).map(|p| p.1)
                } else if ty.member("length").is_some() && ty.member("data_ptr").is_some() {
                    self.reader.rust_slice_parts(&place, &ty).map(|p| p.1)
                } else if let TypeKind::Array { count, .. } = ty.kind {
                    count
                } else {
                    match self.scalar(Ev::Place { place: place.clone(), ty: ty.clone() }).ok() {
                        Some(Ev::Str(s)) => Some(s.len() as u64),
                        _ => None,
                    }
                };
                n.or_else(|| match self.reader.render(&place, &ty, 1) {
                    Value::List { len, .. } | Value::Map { len, .. } | Value::String { len, .. } => Some(len),
                    _ => None,
                })
                .map(|n| Ev::Int(n.into(), Some("usize".into())))
                .ok_or_else(|| format!("`{text}` ({}) has no length", ty.name))
            }
            ("is_some" | "is_none" | "is_ok" | "is_err", []) => {
                let base = self.auto_deref_unless_sized(base)?;
                let Ev::Place { place, ty } = base else {
                    return Err(format!("`{text}` is not an Option or Result"));
                };
                let TypeKind::Struct { variants: Some(vp), .. } = &ty.kind else {
                    return Err(format!("`{text}` ({}) is not an Option or Result", ty.name));
                };
                let v = self.reader.active_variant(&place, vp).ok_or("unknown enum discriminant")?;
                let want = match m {
                    "is_some" => "Some",
                    "is_none" => "None",
                    "is_ok" => "Ok",
                    _ => "Err",
                };
                Ok(Ev::Bool(v.member.name == want))
            }
            ("unwrap" | "expect", _) => {
                let base = self.auto_deref_unless_sized(base)?;
                let Ev::Place { place, ty } = base else {
                    return Err(format!("`{text}` is not an Option or Result"));
                };
                let TypeKind::Struct { variants: Some(vp), .. } = &ty.kind else {
                    return Err(format!("`{text}` ({}) is not an Option or Result; `.unwrap()` reads inside those", ty.name));
                };
                let v = self.reader.active_variant(&place, vp).ok_or("unknown enum discriminant")?;
                match v.member.name.as_str() {
                    "Some" | "Ok" => self.variant_field(&place, &ty, vp, "0", text),
                    other => Err(format!("`{text}` is {other}: `.unwrap()` has nothing to read (guard it: `{text}.is_some() && …`)")),
                }
            }
            ("contains", [needle]) => {
                let hay = self.as_str(base, text)?;
                let n = self.eval(needle)?;
                let n = self.as_str(n, &needle.to_string())?;
                Ok(Ev::Bool(hay.contains(&n)))
            }
            ("starts_with" | "ends_with", [needle]) => {
                let hay = self.as_str(base, text)?;
                let n = self.eval(needle)?;
                let n = self.as_str(n, &needle.to_string())?;
                Ok(Ev::Bool(if m == "starts_with" { hay.starts_with(&n) } else { hay.ends_with(&n) }))
            }
            _ => Err(format!(
                "`.{m}(…)` is not a built-in method; available: len(), is_some(), is_none(), is_ok(), is_err(), unwrap(), contains(s), starts_with(s), ends_with(s)"
            )),
        }
    }

    /// `sum(xs, |x| e)`, `count(xs, |x| cond)`, `any`, `all` over a list's elements.
    fn fold(&self, how: &str, list: &Expr, closure: &Expr) -> Res<Ev> {
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
    fn elements(&self, v: Ev, text: &str) -> Res<Vec<Ev>> {
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

    /// `ev.Payment` (the payload of the active variant, an error naming the active one
    /// otherwise), or a field of the active variant's payload: `x.0`, `method.soft`.
    fn variant_field(
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
    fn newtype_inner(&self, place: &Place, ty: &Arc<Type>) -> Option<Ev> {
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
    fn variant_of(&self, v: Ev, text: &str) -> Res<(String, Option<Payload>)> {
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
    fn matches_variant(&self, v: Ev, pattern: &str, text: &str) -> Res<bool> {
        let (name, _) = self.variant_of(v, text)?;
        Ok(name == Ev::variant_name(pattern))
    }

    /// `x == Some("a")`: the same variant, and each written payload field equal.
    fn equals_variant(&self, v: Ev, path: &str, args: &[Ev], text: &str) -> Res<bool> {
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
    fn pattern(&self, e: &Expr) -> Res<Option<String>> {
        Ok(match &e.kind {
            ExprKind::Name(n) if periscope_core::expr::is_variant_path(n) => Some(n.clone()),
            ExprKind::Call(n, _) if periscope_core::expr::is_variant_path(n) => Some(n.clone()),
            _ => None,
        })
    }

    /// A payload field written in a variant (`"a"` in `Some("a")`), a nested variant included.
    fn eval_pattern_arg(&self, e: &Expr) -> Res<Ev> {
        self.eval(e)
    }

    /// Rust references deref for methods, but C `char *` is itself the string.
    fn auto_deref_unless_sized(&self, v: Ev) -> Res<Ev> {
        if let Ev::Place { ty, .. } = &v {
            if let TypeKind::Pointer { target: Some(t) } = ty.kind {
                let tt = self.ty(t);
                if ty.lang == crate::index::Lang::Rust && !matches!(tt.kind, TypeKind::Base(_)) {
                    return self.auto_deref(v);
                }
            }
        }
        Ok(v)
    }

    fn as_str(&self, v: Ev, text: &str) -> Res<String> {
        match self.scalar(v)? {
            Ev::Str(s) => Ok(s),
            _ => Err(format!("`{text}` is not a string")),
        }
    }

    fn as_int(&self, v: &Ev) -> Res<i128> {
        match self.scalar(v.clone())? {
            Ev::Int(i, _) => Ok(i),
            Ev::Char(c) => Ok(c as i128),
            Ev::Bool(b) => Ok(b as i128),
            _ => Err("expected an integer".into()),
        }
    }

    /// Loads a place as a scalar (number, bool, char or string) for operators.
    pub fn scalar(&self, v: Ev) -> Res<Ev> {
        let (value, tname) = match v {
            Ev::Place { place, ty } => (self.reader.render(&place, &ty, 1), ty.name.clone()),
            Ev::Rendered(value) => {
                let t = value.type_name().unwrap_or("value").to_string();
                (value, t)
            }
            other => return Ok(other),
        };
        Ok(match value {
            Value::Int { value, ty } => match value.as_i128() {
                Some(v) => Ev::Int(v, ty),
                None => return Err(format!("{value} is too large to compute with")),
            },
            Value::Float { value, .. } => Ev::Float(value),
            Value::Bool { value, .. } => Ev::Bool(value),
            Value::Char { value, .. } => Ev::Char(value.chars().next().unwrap_or('\0')),
            Value::String { value, .. } => Ev::Str(value),
            Value::Enum {
                variant, fields, ..
            } if fields.is_empty() => Ev::Str(variant),
            Value::Pointer { address, .. } => Ev::Int(
                i128::from_str_radix(address.trim_start_matches("0x"), 16).unwrap_or(0),
                Some(tname.clone()),
            ),
            Value::Unavailable { reason, .. } => return Err(reason),
            Value::Redacted { .. } => return Err("the value is redacted".into()),
            Value::Enum { variant, .. } => {
                return Err(format!(
                    "a {tname} (here {variant}, with a payload) is compared by variant: `x == Some(\"a\")`, `matches(x, {variant})`, or read inside with `x.unwrap()` / `x.0`"
                ))
            }
            _ => {
                return Err(format!(
                    "a {tname} cannot be compared or computed with: only numbers, bools, chars, strings and enum variants can (pick a field with `.`)"
                ))
            }
        })
    }

    fn truthy(&self, v: &Ev) -> Res<bool> {
        match self.scalar(v.clone())? {
            Ev::Bool(b) => Ok(b),
            Ev::Int(i, _) => Ok(i != 0),
            Ev::Float(f) => Ok(f != 0.0),
            Ev::Char(c) => Ok(c != '\0'),
            Ev::Str(_) => Err("a string is not a condition; compare it, e.g. s == \"x\"".into()),
            Ev::Place { .. } | Ev::Rendered(_) => Err("not a condition".into()),
            Ev::Variant { path, .. } => Err(format!(
                "`{path}` is a variant, not a condition; compare with it: x == {path}, or matches(x, {path})"
            )),
        }
    }

    fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> Res<Ev> {
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

    fn cast(&self, v: Ev, ty: &str) -> Res<Ev> {
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

/// Whether a rendered map key equals an evaluated scalar (`map["alice"]`, `map[3]`).
fn scalar_equals(key: &Value, want: &Ev) -> bool {
    match (key, want) {
        (Value::String { value, .. }, Ev::Str(w)) => value == w,
        (Value::Int { value, .. }, Ev::Int(w, _)) => value.as_i128() == Some(*w),
        (Value::Char { value, .. }, Ev::Char(w)) => value.chars().eq(std::iter::once(*w)),
        (Value::Bool { value, .. }, Ev::Bool(w)) => value == w,
        (
            Value::Enum {
                variant, fields, ..
            },
            Ev::Str(w),
        ) => fields.is_empty() && variant == w,
        _ => false,
    }
}

/// A scalar as a number for comparisons (`min`, `max`, `sum`).
fn number(v: &Ev, e: &Expr) -> Res<f64> {
    match v {
        Ev::Int(i, _) => Ok(*i as f64),
        Ev::Float(x) => Ok(*x),
        Ev::Char(c) => Ok(*c as u32 as f64),
        _ => Err(format!("`{e}` is not a number")),
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

fn describe(v: &Ev) -> String {
    match v {
        Ev::Str(s) => format!("{s:?}"),
        Ev::Int(i, _) => i.to_string(),
        Ev::Char(c) => format!("{c:?}"),
        Ev::Bool(b) => b.to_string(),
        Ev::Float(f) => f.to_string(),
        _ => "?".into(),
    }
}
