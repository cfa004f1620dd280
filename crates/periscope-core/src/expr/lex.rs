//! The lexer of the expression language: text to tokens with their spans.

use super::{ParseError, Span};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Int(i128),
    Float(f64),
    Str(String),
    Char(char),
    Punct(&'static str),
    End,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) span: Span,
}

pub(super) const PUNCTS: &[&str] = &[
    "->", "==", "!=", "<=", ">=", "&&", "||", "::", ".", "*", "&", "[", "]", "(", ")", ",", "!",
    "-", "+", "/", "%", "<", ">", "|", "{", "}",
];

pub(super) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
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

pub(super) fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
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
pub(super) fn skip_suffix(src: &str, mut i: usize) -> usize {
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

pub(super) fn lex_string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    lex_quoted(src, start, '"')
}

pub(super) fn lex_quoted(
    src: &str,
    start: usize,
    quote: char,
) -> Result<(String, usize), ParseError> {
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

/// Interns a punctuation string so tokens can hold `&'static str`.
pub(super) fn punct(p: &str) -> &'static str {
    PUNCTS.iter().find(|q| **q == p).copied().unwrap_or("")
}
