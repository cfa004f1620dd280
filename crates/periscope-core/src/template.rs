//! Log templates: literal text with expressions in braces, `"fee={fee} user={u.name}"`.
//! `{{` and `}}` stand for literal braces.

use crate::expr::{self, Expr, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(String),
    /// An expression hole; `source` is its text as written, used as the key in `values`.
    Hole {
        source: String,
        expr: Expr,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses a template; errors point at the column within the whole template text.
    pub fn parse(text: &str) -> Result<Template, ParseError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(ParseError::new(
                        text,
                        i,
                        "unmatched `}` in template (write `}}` for a literal brace)",
                    ))
                }
                '{' => {
                    let start = i + 1;
                    let end = find_hole_end(text, start).ok_or_else(|| {
                        ParseError::new(text, i, "unclosed `{` in template: add a `}`")
                    })?;
                    let source = text[start..end].trim().to_string();
                    let expr = expr::parse(&text[start..end]).map_err(|e| {
                        // Re-anchor the column on the whole template.
                        let offset = text[start..end]
                            .char_indices()
                            .nth(e.column - 1)
                            .map(|(o, _)| o)
                            .unwrap_or(end - start);
                        ParseError::new(text, start + offset, e.message)
                    })?;
                    if !literal.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Hole { source, expr });
                    while chars.peek().is_some_and(|(j, _)| *j <= end) {
                        chars.next();
                    }
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Ok(Template { segments })
    }

    pub fn holes(&self) -> impl Iterator<Item = (&str, &Expr)> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Hole { source, expr } => Some((source.as_str(), expr)),
            Segment::Text(_) => None,
        })
    }
}

/// Finds the `}` closing a hole, skipping braces inside string and char literals.
fn find_hole_end(text: &str, start: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    // Braces inside the hole nest: `{if x > 1 { a } else { b }}`.
    let mut depth = 0usize;
    for (off, c) in text[start..].char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                '}' => return Some(start + off),
                _ => {}
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_holes() {
        let t = Template::parse("amount={t.amount_cents} fee={ fee } {{literal}}").unwrap();
        let holes: Vec<&str> = t.holes().map(|(s, _)| s).collect();
        assert_eq!(holes, ["t.amount_cents", "fee"]);
        assert_eq!(t.segments.last(), Some(&Segment::Text(" {literal}".into())));
        let t = Template::parse("s={name == \"}\"}").unwrap();
        assert_eq!(t.holes().count(), 1);
    }

    #[test]
    fn errors_point_into_the_template() {
        let e = Template::parse("x={a.} y").unwrap_err();
        assert_eq!(e.column, 6, "{e}");
        let e = Template::parse("x={a").unwrap_err();
        assert_eq!(e.column, 3);
        assert!(Template::parse("x}").is_err());
    }
}
