//! How a tool answers: structured content with a short text, or a failure whose message tells
//! the model what to do next.

use periscope_client::ClientError;
use periscope_core::event::Event;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Value};

/// A tool failure: the message tells the model what to do next.
pub struct Failure(String);

impl Failure {
    pub(crate) fn result(self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(self.0)])
    }
}

pub(crate) fn tool_error(message: impl Into<String>) -> Failure {
    Failure(message.into())
}

/// Structured content plus a short text for models that read text only.
pub(crate) fn tool_ok(value: Value, summary: String) -> CallToolResult {
    let mut r = CallToolResult::structured(value);
    r.content = vec![ContentBlock::text(summary)];
    r
}

pub(crate) fn explain(e: ClientError, what: &str) -> Failure {
    let hint = match e.status() {
        Some(400) => " Fix the argument named and call again.",
        Some(401) => " The token is missing or not valid for this server.",
        Some(403) => " This token's role does not allow it (viewers can list and read only).",
        Some(404) => " list_probes lists the probes, list_instances the instances.",
        Some(429) => "",
        _ => "",
    };
    tool_error(format!("{what} failed: {e}.{hint}"))
}

pub(crate) fn bad_args(tool: &str, e: String) -> CallToolResult {
    tool_error(format!(
        "bad arguments for {tool}: {e}. See the tool's input schema for the fields and their types."
    ))
    .result()
}

pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, Failure> {
    match cursor {
        None => Ok(None),
        Some(c) => c.parse().map(Some).map_err(|_| {
            tool_error(format!(
                "bad cursor `{c}`: pass the next_cursor value of an earlier answer"
            ))
        }),
    }
}

/// Events as a tool returns them: the events, a cursor for the next call, and their text.
pub(crate) fn events_result(probe: &str, events: Vec<Event>, after: Option<i64>) -> CallToolResult {
    let next = events
        .last()
        .and_then(|e| e.seq)
        .or(after)
        .map(|s| s.to_string());
    let summary = if events.is_empty() {
        format!("no events of {probe} yet; call wait_for_events to wait for them")
    } else {
        let lines: Vec<String> = events
            .iter()
            .take(20)
            .map(periscope_core::render::event_text)
            .collect();
        format!("{} event(s):\n{}", events.len(), lines.join("\n"))
    };
    tool_ok(json!({ "events": events, "next_cursor": next }), summary)
}
