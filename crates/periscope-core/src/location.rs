//! Where a probe goes: `FILE:LINE` or a function name.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A source line; `file` is matched against the debug info's paths by suffix.
    Line { file: String, line: u32 },
    /// A function, qualified (`shop::cart::Cart::total`) or unqualified when unique; or
    /// `LIBRARY:FUNCTION` (`libplugin.so:compute`), the function in that shared library only
    /// (see [`library_function`]).
    Function(String),
}

/// `libplugin.so:compute` → (`libplugin.so`, `compute`): a function named with the shared
/// library it is in. The library part ends in `.so` or has `.so.` in it (`libz.so.1`), so a
/// C++ or Rust path (`a::b`) or `FILE:LINE` is never taken for one.
pub fn library_function(name: &str) -> Option<(&str, &str)> {
    let (library, function) = name.split_once(':')?;
    let is_library = library.ends_with(".so") || library.contains(".so.");
    let ok = is_library && !function.is_empty() && !function.starts_with(':');
    ok.then_some((library, function))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad location `{text}`: {reason} (write FILE:LINE such as main.rs:42, or a function name such as cart::total)")]
pub struct LocationError {
    pub text: String,
    pub reason: String,
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let err = |reason: &str| LocationError {
            text: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(err(&format!(
                "it contains the control character U+{:04X}; write FILE:LINE or a function name",
                c as u32
            )));
        }
        // `a::b` is a path, never FILE:LINE; a single `:` followed by digits is a line.
        if let Some((file, line)) = s.rsplit_once(':') {
            if !file.ends_with(':') && !file.is_empty() {
                if line.chars().all(|c| c.is_ascii_digit()) && !line.is_empty() {
                    let line: u32 = line.parse().map_err(|_| err("line number too large"))?;
                    if line == 0 {
                        return Err(err("lines are numbered from 1"));
                    }
                    return Ok(Location::Line {
                        file: file.to_string(),
                        line,
                    });
                }
                if let Some((_, function)) = library_function(s) {
                    if function.contains(char::is_whitespace) {
                        return Err(err("a function name has no spaces"));
                    }
                    return Ok(Location::Function(s.to_string()));
                }
                return Err(err(
                    "the part after `:` must be a line number (or, after a shared library such as libplugin.so, a function name)",
                ));
            }
        }
        if s.contains(char::is_whitespace) {
            return Err(err("a function name has no spaces"));
        }
        Ok(Location::Function(s.to_string()))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line { file, line } => write!(f, "{file}:{line}"),
            Location::Function(name) => write!(f, "{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            "src/cart.rs:88".parse(),
            Ok(Location::Line {
                file: "src/cart.rs".into(),
                line: 88
            })
        );
        assert_eq!(
            "shop::cart::Cart::total".parse(),
            Ok(Location::Function("shop::cart::Cart::total".into()))
        );
        assert_eq!("total".parse(), Ok(Location::Function("total".into())));
        assert!("main.rs:x".parse::<Location>().is_err());
        assert_eq!(
            "libplugin.so:compute".parse(),
            Ok(Location::Function("libplugin.so:compute".into()))
        );
        assert_eq!(
            library_function("libz.so.1:inflate"),
            Some(("libz.so.1", "inflate"))
        );
        assert_eq!(library_function("shop::cart::total"), None);
        assert!("libplugin.so:".parse::<Location>().is_err());
        assert!("main.rs:0".parse::<Location>().is_err());
        assert!("".parse::<Location>().is_err());
    }
}
