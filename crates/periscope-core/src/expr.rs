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

/// Parses one whole expression.
pub fn parse(source: &str) -> Result<Expr, ParseError> {
    let tokens = lex(source)?;
    let mut p = Parser {
        src: source,
        tokens,
        pos: 0,
    };
    if p.peek().tok == Tok::End {
        return Err(ParseError::new(source, 0, "empty expression"));
    }
    let e = p.or()?;
    let t = p.peek();
    if t.tok != Tok::End {
        return Err(ParseError::new(
            source,
            t.span.start,
            format!(
                "unexpected {} after a complete expression",
                t.tok.describe()
            ),
        ));
    }
    Ok(e)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i128),
    Float(f64),
    Str(String),
    Char(char),
    Punct(&'static str),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("name `{s}`"),
            Tok::Int(i) => format!("number `{i}`"),
            Tok::Float(f) => format!("number `{f}`"),
            Tok::Str(_) => "string".to_string(),
            Tok::Char(_) => "character".to_string(),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::End => "end of expression".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    span: Span,
}

const PUNCTS: &[&str] = &[
    "->", "==", "!=", "<=", ">=", "&&", "||", "::", ".", "*", "&", "[", "]", "(", ")", ",", "!",
    "-", "+", "/", "%", "<", ">", "|", "{", "}",
];

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            // Identifiers may be paths (`a::b::C`), joined here so the parser sees one name.
            while i < bytes.len() {
                if bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' {
                    i += 1;
                } else if src[i..].starts_with("::")
                    && bytes
                        .get(i + 2)
                        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                {
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].to_string()),
                span: Span { start, end: i },
            });
            continue;
        }
        if c.is_ascii_digit() {
            let (tok, end) = lex_number(src, start)?;
            i = end;
            out.push(Token {
                tok,
                span: Span { start, end },
            });
            continue;
        }
        if c == b'"' {
            let (s, end) = lex_string(src, start)?;
            i = end;
            out.push(Token {
                tok: Tok::Str(s),
                span: Span { start, end },
            });
            continue;
        }
        if c == b'\'' {
            let (s, end) = lex_quoted(src, start, '\'')?;
            let mut chars = s.chars();
            let ch = match (chars.next(), chars.next()) {
                (Some(ch), None) => ch,
                _ => {
                    return Err(ParseError::new(
                        src,
                        start,
                        "a character literal holds exactly one character",
                    ))
                }
            };
            i = end;
            out.push(Token {
                tok: Tok::Char(ch),
                span: Span { start, end },
            });
            continue;
        }
        match PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            Some(p) => {
                i += p.len();
                out.push(Token {
                    tok: Tok::Punct(p),
                    span: Span { start, end: i },
                });
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(ParseError::new(
                    src,
                    i,
                    format!("unexpected character `{ch}`"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        span: Span {
            start: src.len(),
            end: src.len(),
        },
    });
    Ok(out)
}

fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut i = start;
    let hex = src[start..].starts_with("0x") || src[start..].starts_with("0X");
    if hex {
        i += 2;
        while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b'_') {
            i += 1;
        }
        let digits: String = src[start + 2..i].chars().filter(|c| *c != '_').collect();
        return i128::from_str_radix(&digits, 16)
            .map(|v| (Tok::Int(v), skip_suffix(src, i)))
            .map_err(|_| ParseError::new(src, start, "bad hexadecimal number"));
    }
    let mut float = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() || b == b'_' {
            i += 1;
        } else if b == b'.' && !float && bytes.get(i + 1).is_some_and(|n| n.is_ascii_digit()) {
            float = true;
            i += 1;
        } else if (b == b'e' || b == b'E') && float {
            i += 1;
            if i < bytes.len() && (bytes[i] == b'-' || bytes[i] == b'+') {
                i += 1;
            }
        } else {
            break;
        }
    }
    let digits: String = src[start..i].chars().filter(|c| *c != '_').collect();
    let end = skip_suffix(src, i);
    if float || src[i..end].starts_with('f') {
        digits
            .parse::<f64>()
            .map(|v| (Tok::Float(v), end))
            .map_err(|_| ParseError::new(src, start, "bad number"))
    } else {
        digits
            .parse::<i128>()
            .map(|v| (Tok::Int(v), end))
            .map_err(|_| ParseError::new(src, start, "number too large"))
    }
}

/// Skips a Rust literal suffix such as `u64`, `i32` or `f64` (the value's type comes from the
/// comparison, so the suffix carries no meaning here).
fn skip_suffix(src: &str, mut i: usize) -> usize {
    let rest = &src[i..];
    for s in [
        "usize", "isize", "u128", "i128", "u64", "i64", "u32", "i32", "u16", "i16", "u8", "i8",
        "f64", "f32",
    ] {
        if rest.starts_with(s) {
            i += s.len();
            break;
        }
    }
    i
}

fn lex_string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    lex_quoted(src, start, '"')
}

fn lex_quoted(src: &str, start: usize, quote: char) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        if c == quote {
            return Ok((out, at + c.len_utf8()));
        }
        if c == '\\' {
            let esc = match chars.next() {
                Some((_, e)) => e,
                None => break,
            };
            out.push(match esc {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                '\\' => '\\',
                '\'' => '\'',
                '"' => '"',
                other => {
                    return Err(ParseError::new(
                        src,
                        at,
                        format!(
                            "unknown escape `\\{other}` (use \\n, \\t, \\r, \\0, \\\\, \\\", \\')"
                        ),
                    ))
                }
            });
        } else {
            out.push(c);
        }
    }
    Err(ParseError::new(
        src,
        start,
        format!("unterminated literal: add a closing {quote}"),
    ))
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.peek().tok == Tok::Punct(punct(p)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str, what: &str) -> Result<Token, ParseError> {
        let t = self.next();
        if t.tok == Tok::Punct(punct(p)) {
            Ok(t)
        } else {
            Err(self.err_at(
                &t,
                format!("expected `{p}` {what}, found {}", t.tok.describe()),
            ))
        }
    }

    fn err_at(&self, t: &Token, message: String) -> ParseError {
        ParseError::new(self.src, t.span.start, message)
    }

    fn binary_chain(
        &mut self,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self) -> Result<Expr, ParseError>,
    ) -> Result<Expr, ParseError> {
        let mut lhs = next(self)?;
        'outer: loop {
            for (sym, op) in ops {
                if self.eat(sym) {
                    let rhs = next(self)?;
                    let span = Span {
                        start: lhs.span.start,
                        end: rhs.span.end,
                    };
                    lhs = Expr {
                        kind: ExprKind::Binary(*op, Box::new(lhs), Box::new(rhs)),
                        span,
                    };
                    continue 'outer;
                }
            }
            return Ok(lhs);
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.binary_chain(&[("||", BinOp::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        self.binary_chain(&[("&&", BinOp::And)], Self::cmp)
    }

    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let lhs = self.add()?;
        let ops = [
            ("==", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ];
        for (sym, op) in ops {
            if self.eat(sym) {
                let rhs = self.add()?;
                let span = Span {
                    start: lhs.span.start,
                    end: rhs.span.end,
                };
                return Ok(Expr {
                    kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                    span,
                });
            }
        }
        Ok(lhs)
    }

    fn add(&mut self) -> Result<Expr, ParseError> {
        self.binary_chain(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::mul)
    }

    fn mul(&mut self) -> Result<Expr, ParseError> {
        self.binary_chain(
            &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Rem)],
            Self::cast,
        )
    }

    fn cast(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        while matches!(&self.peek().tok, Tok::Ident(s) if s == "as") {
            self.next();
            let t = self.next();
            match t.tok.clone() {
                Tok::Ident(ty) => {
                    let span = Span {
                        start: e.span.start,
                        end: t.span.end,
                    };
                    e = Expr {
                        kind: ExprKind::Cast(Box::new(e), ty),
                        span,
                    };
                }
                other => {
                    return Err(self.err_at(
                        &t,
                        format!(
                            "expected a type name after `as` (such as u64, i32, f64), found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek().clone();
        let wrap: Option<fn(Box<Expr>) -> ExprKind> = match t.tok.clone() {
            Tok::Punct("!") => Some(ExprKind::Not),
            Tok::Punct("-") => Some(ExprKind::Neg),
            Tok::Punct("*") => Some(ExprKind::Deref),
            Tok::Punct("&") => Some(ExprKind::AddrOf),
            _ => None,
        };
        match wrap {
            Some(wrap) => {
                self.next();
                let inner = self.unary()?;
                let span = Span {
                    start: t.span.start,
                    end: inner.span.end,
                };
                Ok(Expr {
                    kind: wrap(Box::new(inner)),
                    span,
                })
            }
            None => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                let t = self.next();
                let name = match t.tok.clone() {
                    Tok::Ident(n) => n,
                    Tok::Int(i) if i >= 0 => i.to_string(),
                    // `t.0.1` lexes as `t` `.` `0.1`: split it back into two tuple fields.
                    Tok::Float(_) => {
                        let text = &self.src[t.span.start..t.span.end];
                        let mut parts = text.splitn(2, '.');
                        let a = parts.next().unwrap_or_default().to_string();
                        let b = parts.next().unwrap_or_default().to_string();
                        let start = e.span.start;
                        let mid = Expr {
                            kind: ExprKind::Field(Box::new(e), a),
                            span: Span {
                                start,
                                end: t.span.end,
                            },
                        };
                        e = Expr {
                            span: Span {
                                start,
                                end: t.span.end,
                            },
                            kind: ExprKind::Field(Box::new(mid), b),
                        };
                        continue;
                    }
                    other => {
                        return Err(self.err_at(
                            &t,
                            format!(
                                "expected a field name after `.`, found {}",
                                other.describe()
                            ),
                        ))
                    }
                };
                if self.eat("(") {
                    let args = self.args()?;
                    let end = self.tokens[self.pos - 1].span.end;
                    e = Expr {
                        span: Span {
                            start: e.span.start,
                            end,
                        },
                        kind: ExprKind::Method(Box::new(e), name, args),
                    };
                } else {
                    e = Expr {
                        span: Span {
                            start: e.span.start,
                            end: t.span.end,
                        },
                        kind: ExprKind::Field(Box::new(e), name),
                    };
                }
            } else if self.eat("->") {
                let t = self.next();
                match t.tok.clone() {
                    Tok::Ident(n) => {
                        e = Expr {
                            span: Span {
                                start: e.span.start,
                                end: t.span.end,
                            },
                            kind: ExprKind::Arrow(Box::new(e), n),
                        }
                    }
                    other => {
                        return Err(self.err_at(
                            &t,
                            format!(
                                "expected a field name after `->`, found {}",
                                other.describe()
                            ),
                        ))
                    }
                }
            } else if self.eat("[") {
                let idx = self.or()?;
                let close = self.expect("]", "to close the index")?;
                e = Expr {
                    span: Span {
                        start: e.span.start,
                        end: close.span.end,
                    },
                    kind: ExprKind::Index(Box::new(e), Box::new(idx)),
                };
            } else {
                return Ok(e);
            }
        }
    }

    /// `if COND { A } else { B }`, after the `if`.
    fn if_else(&mut self, start: usize) -> Result<Expr, ParseError> {
        let cond = self.or()?;
        self.expect("{", "after the condition of `if`")?;
        let then = self.or()?;
        self.expect("}", "to close the `if` branch")?;
        let t = self.next();
        if t.tok != Tok::Ident("else".into()) {
            return Err(self.err_at(
                &t,
                format!(
                    "expected `else {{ … }}` after `if … {{ … }}` (an expression needs both branches), found {}",
                    t.tok.describe()
                ),
            ));
        }
        self.expect("{", "after `else`")?;
        let otherwise = self.or()?;
        let close = self.expect("}", "to close the `else` branch")?;
        Ok(Expr {
            kind: ExprKind::If(Box::new(cond), Box::new(then), Box::new(otherwise)),
            span: Span {
                start,
                end: close.span.end,
            },
        })
    }

    /// An argument: an expression, or a closure `|x| e`.
    fn arg(&mut self) -> Result<Expr, ParseError> {
        let start = self.peek().span.start;
        if !self.eat("|") {
            return self.or();
        }
        let t = self.next();
        let Tok::Ident(param) = t.tok.clone() else {
            return Err(self.err_at(
                &t,
                format!(
                    "expected the closure's parameter name after `|`, found {}",
                    t.tok.describe()
                ),
            ));
        };
        self.expect("|", "after the closure's parameter")?;
        let body = self.or()?;
        Ok(Expr {
            span: Span {
                start,
                end: body.span.end,
            },
            kind: ExprKind::Lambda(param, Box::new(body)),
        })
    }

    fn args(&mut self) -> Result<Vec<Expr>, ParseError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.arg()?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",", "between arguments")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let t = self.next();
        let kind = match t.tok.clone() {
            Tok::Ident(n) if n == "if" => return self.if_else(t.span.start),
            Tok::Ident(n) if n == "true" => ExprKind::Bool(true),
            Tok::Ident(n) if n == "false" => ExprKind::Bool(false),
            Tok::Ident(n) => {
                if self.eat("(") {
                    let args = self.args()?;
                    let end = self.tokens[self.pos - 1].span.end;
                    return Ok(Expr {
                        kind: ExprKind::Call(n, args),
                        span: Span {
                            start: t.span.start,
                            end,
                        },
                    });
                }
                ExprKind::Name(n)
            }
            Tok::Int(i) => ExprKind::Int(i),
            Tok::Float(f) => ExprKind::Float(f),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Char(c) => ExprKind::Char(c),
            Tok::Punct("(") => {
                let inner = self.or()?;
                self.expect(")", "to close the parenthesis")?;
                return Ok(inner);
            }
            other => {
                return Err(self.err_at(
                    &t,
                    format!(
                        "expected a value (a name, number, string or `(`), found {}",
                        other.describe()
                    ),
                ))
            }
        };
        Ok(Expr { kind, span: t.span })
    }
}

/// Interns a punctuation string so tokens can hold `&'static str`.
fn punct(p: &str) -> &'static str {
    PUNCTS.iter().find(|q| **q == p).copied().unwrap_or("")
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
