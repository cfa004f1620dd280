//! What a runtime says about a program's code, whatever the runtime: a source file's lines
//! with the ones a probe can take, and the functions matching a pattern.

use std::path::PathBuf;

/// A source file's lines, as [`crate::Code::source_lines`] lists them. Serialized, it is the
/// `--json` and MCP shape: `{"file", "lines":[{"line","text","instrumentable"}]}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SourceListing {
    #[schema(value_type = String)]
    pub file: PathBuf,
    pub lines: Vec<SourceLine>,
}

impl SourceListing {
    /// The listing as a person reads it: `*` marks the lines a probe can go to.
    pub fn text(&self) -> String {
        let mut out = format!("{}  (* = a probe can go here)\n", self.file.display());
        if self.lines.iter().all(|l| l.text.is_none()) {
            out.push_str("(source not found on disk; lines with code from the debug info:)\n");
        }
        for l in &self.lines {
            let mark = if l.instrumentable { '*' } else { ' ' };
            out.push_str(&format!(
                "{mark} {:>5}  {}\n",
                l.line,
                l.text.as_deref().unwrap_or("")
            ));
        }
        out
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SourceLine {
    pub line: u32,
    /// `None` when the source file is not on disk (the line table still knows the line).
    pub text: Option<String>,
    pub instrumentable: bool,
}

/// A function, as [`crate::Code::functions`] lists it. Serialized:
/// `{"name","file","line"}`, plus `"inlined": true` and `"inlined_into": [callers]` for a
/// function that exists only inlined into others (an optimized build's small functions).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct FunctionInfo {
    pub name: String,
    /// The declaring source file, or the object file when the debug info does not say.
    #[schema(value_type = String)]
    pub file: PathBuf,
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
    /// The functions it is inlined into (where a probe on it goes), for an inlined-only one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined_into: Vec<String>,
}

impl FunctionInfo {
    /// `name  file:line`, as listings show it.
    pub fn text(&self) -> String {
        let at = match self.line {
            Some(line) => format!("{}  {}:{line}", self.name, self.file.display()),
            None => format!("{}  {}", self.name, self.file.display()),
        };
        if !self.inlined {
            return at;
        }
        let mut into: Vec<&str> = self.inlined_into.iter().map(String::as_str).collect();
        let more = into.len().saturating_sub(5);
        into.truncate(5);
        format!(
            "{at}  [inlined into {}{}]",
            into.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// One place in the code that can produce the message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MessageMatch {
    /// The constant as found: its literal pieces, with `{…}` where a placeholder goes.
    pub text: String,
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The source line's text, when the file is on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The constant explains the whole message.
    pub exact: bool,
    /// Characters of the message the constant's literal text covers.
    pub covered: usize,
}

/// An agent's answer to a code request (`periscope_core::code::CodeRequest`), posted to
/// `POST /api/v1/agent/code/{id}`: what the seam's [`crate::Code`] said, in its own types.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CodeAnswer {
    Source {
        listing: SourceListing,
    },
    Functions {
        functions: Vec<FunctionInfo>,
    },
    Messages {
        matches: Vec<MessageMatch>,
    },
    /// The probe resolves: at this many sites.
    Checked {
        sites: usize,
    },
    /// The question has no answer: with `field`, the request field at fault (a file not in
    /// the debug info, a probe whose location or names do not resolve); without, the code
    /// could not be read at all (the process is gone, the binary unreadable).
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}
