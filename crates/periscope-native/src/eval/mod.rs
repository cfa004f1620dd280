//! Evaluating probe expressions against a stopped frame. Read-only by construction: the only
//! effect of evaluation is reading target memory, bounded by the capture limits and a step budget.

use crate::frame::{Frame, Place};
use crate::index::scope::{TypeRef, Var};
use crate::index::types::{Type, TypeKind};
use crate::values::{int_from, Reader};
use periscope_core::expr::{Expr, ExprKind};
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

mod folds;
mod go;
mod ops;
mod variants;

const MAX_STEPS: u32 = 10_000;

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

pub(super) type Res<T> = Result<T, String>;

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
        // An async fn's local saved across an `.await` that DWARF does not list here.
        if let Some((place, ty)) = self.frame.saved_local(name) {
            return Ok(Ev::Place {
                place,
                ty: self.ty(ty),
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
            env_param: None,
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
                Ev::Place { ty, .. } if go::is_go_reference(ty) => return Ok(v),
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
            if let Some(promoted) = self.promoted_field(&place, &ty, field) {
                return Ok(promoted);
            }
            // `sp.x` through a smart pointer, as `sp->x`.
            if let Some(r) = self
                .cpp_std(&ty)
                .then(|| self.reader.cpp_deref(&place, &ty, base_text))
                .flatten()
            {
                let (place, ty) = r?;
                return self.field(Ev::Place { place, ty }, field, base_text);
            }
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
        if let Some(r) = self
            .cpp_std(&ty)
            .then(|| self.reader.cpp_deref(&place, &ty, text))
            .flatten()
        {
            let (place, ty) = r?;
            return Ok(Ev::Place { place, ty });
        }
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
        if crate::go_values::is_slice(&ty) {
            let i = self.as_int(&key)?;
            return self.go_slice_element(&place, &ty, i);
        }
        if self.cpp_std(&ty) {
            if let Ok(i) = self.as_int(&key) {
                if let Some(r) = self.reader.cpp_element(&place, &ty, i) {
                    let (place, ty) = r?;
                    return Ok(Ev::Place { place, ty });
                }
            }
        }
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
                if let Some(n) = self.go_len(&place, &ty) {
                    return Ok(Ev::Int(n.into(), Some("int".into())));
                }
                if let Some(n) = self.cpp_std(&ty).then(|| self.reader.cpp_len(&place, &ty)).flatten() {
                    return Ok(Ev::Int(n?.into(), Some("size_t".into())));
                }
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
            ("is_some" | "is_none" | "has_value", []) if self.cpp_optional(&base) => {
                let Ev::Place { place, ty } = base else { unreachable!("checked by cpp_optional") };
                let full = self.reader.optional_payload(&place, &ty)?.is_some();
                Ok(Ev::Bool(full == (m != "is_none")))
            }
            ("unwrap" | "value", []) if self.cpp_optional(&base) => self.deref(base, text),
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
                "`.{m}(…)` is not a built-in method; available: len(), is_some(), is_none(), is_ok(), is_err(), unwrap(), contains(s), starts_with(s), ends_with(s); on a C++ std::optional also has_value(), value()"
            )),
        }
    }

    /// Whether `ty` is a C++ type (the standard library's are shown specially).
    fn cpp_std(&self, ty: &Type) -> bool {
        ty.lang == crate::index::Lang::Cpp && matches!(ty.kind, TypeKind::Struct { .. })
    }

    fn cpp_optional(&self, v: &Ev) -> bool {
        matches!(v, Ev::Place { ty, .. } if self.cpp_std(ty)
            && crate::cpp_std::classify(self.reader.index, ty) == Some(crate::cpp_std::StdKind::Optional))
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
            Ev::Place { place, ty } if self.cpp_std(&ty) => {
                // An optional computes as what it holds, a duration as its count.
                if let Some(r) = self.reader.cpp_scalar_place(&place, &ty) {
                    let (place, ty) = r?;
                    return self.scalar(Ev::Place { place, ty });
                }
                if let Some(v) = self.reader.cpp_number(&place, &ty) {
                    return self.scalar(Ev::Rendered(v));
                }
                let v = self.reader.render(&place, &ty, 1);
                return self.scalar(Ev::Rendered(v));
            }
            Ev::Place { place, ty } => {
                let number = (ty.lang == crate::index::Lang::Go)
                    .then(|| self.reader.render_number(&place, &ty))
                    .flatten();
                let v = number.unwrap_or_else(|| self.reader.render(&place, &ty, 1));
                (v, ty.name.clone())
            }
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
pub(super) fn number(v: &Ev, e: &Expr) -> Res<f64> {
    match v {
        Ev::Int(i, _) => Ok(*i as f64),
        Ev::Float(x) => Ok(*x),
        Ev::Char(c) => Ok(*c as u32 as f64),
        _ => Err(format!("`{e}` is not a number")),
    }
}

pub(super) fn describe(v: &Ev) -> String {
    match v {
        Ev::Str(s) => format!("{s:?}"),
        Ev::Int(i, _) => i.to_string(),
        Ev::Char(c) => format!("{c:?}"),
        Ev::Bool(b) => b.to_string(),
        Ev::Float(f) => f.to_string(),
        _ => "?".into(),
    }
}
