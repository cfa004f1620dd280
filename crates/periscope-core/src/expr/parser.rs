//! The parser of the expression language: tokens to an [`Expr`], by recursive descent over the
//! grammar in the module's documentation.

use super::lex::{lex, punct, Tok, Token};
use super::{BinOp, Expr, ExprKind, ParseError, Span};

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

pub(super) struct Parser<'a> {
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
