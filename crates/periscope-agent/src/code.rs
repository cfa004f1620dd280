//! Answers the server's code requests (source listings, function and message lookups, probe
//! checks) through the seam, on a thread of its own: indexing a large binary takes seconds,
//! and the reconciler must never wait for it. The code opened is kept per instance, so the
//! second request about an instance is answered from memory.

use crate::outbox::Outbox;
use crate::servers::{self, Servers};
use periscope_core::api::{NewProbe, ProbeKind};
use periscope_core::code::{CodeAsk, CodeRequest};
use periscope_runtime::{Code, CodeAnswer, EngineProbe, ErrorKind, Limits, RuntimeError};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// Instances whose code is kept at once (each holds an index; the runtime keeps its own too).
const KEPT: usize = 16;

/// Starts the worker; requests sent to the returned channel are answered in order.
pub fn start(
    servers: Arc<Servers>,
    outbox: Arc<Outbox>,
) -> Result<Sender<CodeRequest>, crate::AgentError> {
    let (tx, rx) = std::sync::mpsc::channel();
    crate::spawn("periscope-code", move || serve(&servers, &outbox, rx))?;
    Ok(tx)
}

fn serve(servers: &Servers, outbox: &Outbox, rx: Receiver<CodeRequest>) {
    // By instance id and build id: a process that exec'd is another instance.
    let mut kept: HashMap<(String, Option<String>), Arc<dyn Code>> = HashMap::new();
    for request in rx {
        let answer = answer(&mut kept, outbox, &request);
        post(servers, request.id, &answer);
    }
}

/// Sends the answer; a failed send goes to the next server once (replicas share the request).
fn post(servers: &Servers, id: i64, answer: &CodeAnswer) {
    for _ in 0..2 {
        let (which, client) = servers.current();
        match client.code_answer(id, answer) {
            Ok(()) => return,
            Err(e) if e.status().is_some() => {
                // Answered already, or the caller stopped waiting: nothing to retry.
                eprintln!("periscope agent: the server did not take code answer {id}: {e}");
                return;
            }
            Err(e) => {
                eprintln!("periscope agent: cannot send code answer {id}: {e}");
                if !servers::worth_another(&e) || servers.failed(which) {
                    return;
                }
            }
        }
    }
}

fn failed(error: impl Into<String>, field: Option<&str>) -> CodeAnswer {
    CodeAnswer::Failed {
        error: error.into(),
        field: field.map(str::to_string),
    }
}

fn answer(
    kept: &mut HashMap<(String, Option<String>), Arc<dyn Code>>,
    outbox: &Outbox,
    r: &CodeRequest,
) -> CodeAnswer {
    // Only an instance this agent watches, as it reported it: the server names the process,
    // the agent decides what it reads.
    let Some(mine) = outbox.instance(&r.instance) else {
        return failed(
            format!(
                "this agent no longer watches {} (the process exited?)",
                r.instance
            ),
            None,
        );
    };
    if mine.pid != r.pid || mine.executable != r.executable {
        return failed(
            format!(
                "{} is pid {} running {} now, not pid {} running {}",
                r.instance, mine.pid, mine.executable, r.pid, r.executable
            ),
            None,
        );
    }
    let key = (mine.id.clone(), mine.build_id.clone());
    let code = match kept.get(&key) {
        Some(c) => c.clone(),
        None => {
            match periscope_runtimes::open_instance(
                mine.pid,
                &mine.executable,
                mine.build_id.as_deref(),
            ) {
                Ok(c) => {
                    if kept.len() >= KEPT {
                        // The instances asked about least recently are not tracked; any one
                        // goes (the runtime's own cache still has it).
                        if let Some(k) = kept.keys().next().cloned() {
                            kept.remove(&k);
                        }
                    }
                    kept.insert(key, c.clone());
                    c
                }
                Err(e) => return failed(e.to_string(), None),
            }
        }
    };
    match &r.ask {
        CodeAsk::Source { file, from, to } => {
            let range = match (from, to) {
                (None, None) => None,
                (from, to) => Some((from.unwrap_or(1), to.unwrap_or(u32::MAX))),
            };
            match code.source_lines(file, range) {
                Ok(listing) => CodeAnswer::Source { listing },
                Err(e) => failed(e.to_string(), Some("file")),
            }
        }
        CodeAsk::Functions { pattern } => CodeAnswer::Functions {
            functions: code.functions(pattern),
        },
        CodeAsk::Messages { text } => CodeAnswer::Messages {
            matches: code.find_message(text),
        },
        CodeAsk::Check { probe } => match check(&code, probe) {
            Ok(sites) => CodeAnswer::Checked { sites },
            Err((field, error)) => failed(error, Some(field)),
        },
    }
}

/// Resolves the probe at its location, the condition first and then the rest, so an error
/// names the request field it is in.
fn check(code: &Arc<dyn Code>, spec: &NewProbe) -> Result<usize, (&'static str, String)> {
    let attempt = |p: &NewProbe| -> Result<usize, RuntimeError> {
        let compiled = periscope_core::compile::compile(p)
            .map_err(|e| RuntimeError::new(ErrorKind::Expression, e.message))?;
        let redactor = periscope_core::redact::Redactor::default();
        match EngineProbe::new("check", compiled, Limits::default(), redactor) {
            EngineProbe::Breakpoint(spec) => code.check(&spec),
            EngineProbe::Failures { .. } => Ok(0),
        }
    };
    let field_of = |e: RuntimeError, field: &'static str| match e.kind {
        ErrorKind::Expression => (field, e.message),
        _ => ("location", e.message),
    };
    if spec.kind == ProbeKind::Verify {
        // The failure and the fixes are resolved together; the message names what is not in
        // scope, and the field is the one whose text has it.
        return attempt(spec).map_err(|e| {
            let text = e.to_string();
            let missing = text.split('`').nth(1).unwrap_or_default().to_string();
            let in_failure = spec
                .failure
                .as_deref()
                .is_some_and(|f| f.contains(&missing));
            field_of(
                e,
                if in_failure && !missing.is_empty() {
                    "failure"
                } else {
                    "fixes"
                },
            )
        });
    }
    // The probe without its texts first, so an error there is the location's or the
    // condition's; a gauge keeps a value that reads nothing.
    let bare = NewProbe {
        template: spec.template.as_ref().map(|_| "-".to_string()),
        value: spec.value.as_ref().map(|_| "0".to_string()),
        watch: Vec::new(),
        by: None,
        ..spec.clone()
    };
    attempt(&bare).map_err(|e| field_of(e, "condition"))?;
    let rest = match spec.kind {
        ProbeKind::Count | ProbeKind::Duration => "by",
        ProbeKind::Gauge
            if spec.by.as_deref().is_none_or(|b| {
                attempt(&NewProbe {
                    by: Some(b.to_string()),
                    value: Some("0".into()),
                    ..spec.clone()
                })
                .is_ok()
            }) =>
        {
            "value"
        }
        ProbeKind::Gauge => "by",
        ProbeKind::Snapshot => "watch",
        _ => "template",
    };
    attempt(spec).map_err(|e| field_of(e, rest))
}
