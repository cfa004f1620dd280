//! The expression language of probes: conditions (`--if`), template holes and watches.
//!
//! Expressions are read-only by construction: the grammar has no assignment and no calls into the
//! target, only paths, literals, operators and a closed set of built-in methods (`len`, `is_some`,
//! …) that the evaluator implements by reading memory.
//!
//! Grammar, loosest binding first:
//! ```text
//! or      := and ("||" and)*
//! and     := cmp ("&&" cmp)*
//! cmp     := add (("=="|"!="|"<"|"<="|">"|">=") add)?
//! add     := mul (("+"|"-") mul)*
//! mul     := cast (("*"|"/"|"%") cast)*
//! cast    := unary ("as" IDENT)*
//! unary   := ("!"|"-"|"*"|"&") unary | postfix
//! postfix := primary ("." IDENT ["(" args ")"] | "." INT | "->" IDENT | "[" or "]")*
//! primary := IDENT ["(" args ")"] | INT | FLOAT | STRING | CHAR | "true" | "false" | "(" or ")"
//! ```

mod lex;
mod parser;

pub use parser::parse;

use std::fmt;

/// Byte range of a piece of expression text; columns in errors are derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A variable name, possibly a path (`COUNTER`, `crate::CONFIG`).
    Name(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Char(char),
    Str(String),
    /// `a.b` or the tuple field `a.0`.
    Field(Box<Expr>, String),
    /// `p->x`: dereference then field.
    Arrow(Box<Expr>, String),
    Deref(Box<Expr>),
    /// `&x`: the address of a place.
    AddrOf(Box<Expr>),
    Index(Box<Expr>, Box<Expr>),
    /// `x.len()`, `s.contains("a")`.
    Method(Box<Expr>, String, Vec<Expr>),
    /// `len(x)`.
    Call(String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Cast(Box<Expr>, String),
    /// `if COND { A } else { B }`.
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `|x| e`, only as an argument of `sum`, `count`, `any`, `all`.
    Lambda(String, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

impl Expr {
    /// Every variable name the expression reads, in order of first appearance.
    pub fn names(&self) -> Vec<(String, Span)> {
        let mut out: Vec<(String, Span)> = Vec::new();
        self.visit_names(&mut |name, span| {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.to_string(), span));
            }
        });
        out
    }

    fn visit_names(&self, f: &mut dyn FnMut(&str, Span)) {
        match &self.kind {
            // `method == Method::Get`, `matches(ev, Payment)`: a variant name where a pattern
            // goes is not a variable (a variable of that name still wins when evaluated).
            ExprKind::Binary(BinOp::Eq | BinOp::Ne, a, b) => {
                for side in [a, b] {
                    if !side.is_variant_name() {
                        side.visit_names(f);
                    }
                }
            }
            ExprKind::Call(name, args) if name == "matches" && args.len() == 2 => {
                args[0].visit_names(f);
                if !args[1].is_variant_name() {
                    args[1].visit_names(f);
                }
            }
            ExprKind::Name(n) => f(n, self.span),
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Bool(_)
            | ExprKind::Char(_)
            | ExprKind::Str(_) => {}
            ExprKind::Field(e, _)
            | ExprKind::Arrow(e, _)
            | ExprKind::Deref(e)
            | ExprKind::AddrOf(e)
            | ExprKind::Not(e)
            | ExprKind::Neg(e)
            | ExprKind::Cast(e, _) => e.visit_names(f),
            ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
                a.visit_names(f);
                b.visit_names(f);
            }
            ExprKind::Method(e, _, args) => {
                e.visit_names(f);
                args.iter().for_each(|a| a.visit_names(f));
            }
            ExprKind::Call(_, args) => args.iter().for_each(|a| a.visit_names(f)),
            ExprKind::If(c, a, b) => {
                c.visit_names(f);
                a.visit_names(f);
                b.visit_names(f);
            }
            // The parameter is bound by the closure, not read from the program.
            ExprKind::Lambda(param, body) => body.visit_names(&mut |n, span| {
                if n != param {
                    f(n, span)
                }
            }),
        }
    }
}

impl Expr {
    /// A bare name that reads as an enum variant: `None`, `Get`, `Method::Get`, `RED` (the last
    /// path segment starts with an upper-case letter).
    pub fn is_variant_name(&self) -> bool {
        match &self.kind {
            ExprKind::Name(n) => is_variant_path(n),
            _ => false,
        }
    }
}

/// Whether a path's last segment starts with an upper-case letter, as Rust variants and C
/// enumerators do.
pub fn is_variant_path(path: &str) -> bool {
    path.rsplit("::")
        .next()
        .and_then(|last| last.chars().next())
        .is_some_and(|c| c.is_ascii_uppercase())
}

/// A parse error, pointing at a column of the expression text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at column {column}\n  {source_text}\n  {caret}")]
pub struct ParseError {
    pub message: String,
    /// 1-based column (in characters) of the offending spot.
    pub column: usize,
    pub source_text: String,
    caret: String,
}

impl ParseError {
    pub fn new(source: &str, byte_offset: usize, message: impl Into<String>) -> Self {
        let column = source[..byte_offset.min(source.len())].chars().count() + 1;
        ParseError {
            message: message.into(),
            column,
            source_text: source.to_string(),
            caret: format!("{}^", " ".repeat(column - 1)),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Name(n) => write!(f, "{n}"),
            ExprKind::Int(i) => write!(f, "{i}"),
            ExprKind::Float(x) => write!(f, "{x:?}"),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Char(c) => write!(f, "{c:?}"),
            ExprKind::Str(s) => write!(f, "{s:?}"),
            ExprKind::Field(e, n) => write!(f, "{e}.{n}"),
            ExprKind::Arrow(e, n) => write!(f, "{e}->{n}"),
            ExprKind::Deref(e) => write!(f, "*{e}"),
            ExprKind::AddrOf(e) => write!(f, "&{e}"),
            ExprKind::Index(a, b) => write!(f, "{a}[{b}]"),
            ExprKind::Method(e, m, args) => {
                write!(f, "{e}.{m}(")?;
                write_args(f, args)?;
                write!(f, ")")
            }
            ExprKind::Call(n, args) => {
                write!(f, "{n}(")?;
                write_args(f, args)?;
                write!(f, ")")
            }
            ExprKind::Not(e) => write!(f, "!{e}"),
            ExprKind::Neg(e) => write!(f, "-{e}"),
            ExprKind::Binary(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            ExprKind::Cast(e, t) => write!(f, "({e} as {t})"),
            ExprKind::If(c, a, b) => write!(f, "if {c} {{ {a} }} else {{ {b} }}"),
            ExprKind::Lambda(x, e) => write!(f, "|{x}| {e}"),
        }
    }
}

fn write_args(f: &mut fmt::Formatter<'_>, args: &[Expr]) -> fmt::Result {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{a}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        parse(s)
            .map(|e| e.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn precedence_and_paths() {
        assert_eq!(show("a.b.c > 3 && !done"), "((a.b.c > 3) && !done)");
        assert_eq!(show("p->x + 2 * y"), "(p->x + (2 * y))");
        assert_eq!(
            show("*p == 'a' || s == \"x\\n\""),
            "((*p == 'a') || (s == \"x\\n\"))"
        );
        assert_eq!(show("v[i + 1].len()"), "v[(i + 1)].len()");
        assert_eq!(show("t.0.1"), "t.0.1");
        assert_eq!(show("x as u64 / 3"), "((x as u64) / 3)");
        assert_eq!(show("crate::COUNT >= 0x10"), "(crate::COUNT >= 16)");
        assert_eq!(show("1_000u64 + 2.5"), "(1000 + 2.5)");
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = parse("a.b > ").unwrap_err();
        assert_eq!(e.column, 7);
        assert!(e.message.contains("expected a value"), "{e}");
        let e = parse("a $ b").unwrap_err();
        assert_eq!(e.column, 3);
        let e = parse("x == \"open").unwrap_err();
        assert!(e.message.contains("unterminated"));
        let e = parse("(a > 1").unwrap_err();
        assert!(e.message.contains("`)`"), "{e}");
        assert!(parse("").is_err());
        assert!(parse("a b")
            .unwrap_err()
            .message
            .contains("after a complete"));
    }

    #[test]
    fn names_are_collected_once() {
        let e = parse("a.x + b[a.y] > c.len()").unwrap();
        let names: Vec<String> = e.names().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
