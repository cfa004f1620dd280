//! The code of an instance, as the agent that reported it reads it: the source listing with
//! the lines a probe can take, the functions matching a pattern, the constants that can produce
//! a message, and a check of a probe against the scope at its location before it is placed.
//! The console, MCP and any client use these.
//!
//! The server never opens a binary: the process and its files are on the agent's machine
//! (another host, another container). A view stores a code request for the agent
//! (`store::code`), wakes the agent's desired-state poll (on whichever replica holds it, by
//! `peers`), and waits, bounded by `--code-timeout`, for the answer the agent posts
//! (`agents::agent_code_answer`). The agent keeps what it indexed, so the next view is fast.

use crate::openapi::Checked;
use crate::request::{ApiError, ApiQuery, ApiResult, Request};
use crate::routes::validate;
use crate::{db, store, AppState};
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::Json;
use periscope_core::api::{Instance, NewProbe, Role, Selector};
use periscope_core::code::{CodeAsk, CodeRequest};
use periscope_runtime::CodeAnswer;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(source))
        .routes(routes!(functions))
        .routes(routes!(messages))
        .routes(routes!(check))
}

/// Asks the instance's agent and waits for its answer (bounded by `code_wait`).
async fn ask(state: &Arc<AppState>, inst: &Instance, ask: CodeAsk) -> Result<CodeAnswer, ApiError> {
    let id = inst.id.clone();
    let target = db(state, move |s| s.code_target(&id)).await?;
    let Some(target) = target else {
        return Err(ApiError::not_found(format!("no instance `{}`", inst.id)));
    };
    let agent = target.agent;
    if inst.state != "online" {
        return Err(ApiError::unavailable(format!(
            "the agent `{agent}` that reported {} is {} (last heard from {}): the code views ask it to read the binary; start it again (`periscope agent`) or pick an online instance",
            inst.id, inst.state, inst.last_seen
        )));
    }
    if !target.answers_code {
        return Err(ApiError::unavailable(format!(
            "the agent `{agent}` that reported {} is too old to answer code requests (its reports name no `code` feature): upgrade it to this server's version",
            inst.id
        )));
    }
    let request = CodeRequest {
        id: 0,
        instance: inst.id.clone(),
        pid: inst.pid,
        executable: inst.executable.clone(),
        build_id: inst.build_id.clone(),
        ask,
    };
    let body = serde_json::to_string(&request)
        .map_err(|e| ApiError::internal(format!("cannot store the code request: {e}")))?;
    let (a, now) = (agent.clone(), store::now_ms());
    let rid = db(state, move |s| s.insert_code_request(&a, &body, now)).await?;
    state.code_requested.send_modify(|v| *v += 1);
    state.announce(crate::peers::Change::Code);
    let wait = state.config.code_wait;
    let deadline = tokio::time::Instant::now() + wait;
    let answer = loop {
        // Subscribed before looking, so an answer stored after the look still wakes us.
        let mut rx = state.code_answered.subscribe();
        rx.borrow_and_update();
        if let Some(a) = db(state, move |s| s.code_answer(rid)).await? {
            break Some(a);
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => break None,
            _ = state.stopped() => break None,
        }
    };
    let claimed = db(state, move |s| {
        let claimed = s.code_request_claimed(rid)?;
        s.delete_code_request(rid)?;
        Ok(claimed)
    })
    .await?;
    let Some(answer) = answer else {
        let what = if claimed {
            "took the request but did not answer"
        } else {
            "did not pick the request up"
        };
        return Err(ApiError::timeout(format!(
            "the agent `{agent}` that reported {} ({} pid {} on host {}) {what} within {:.0} s; indexing a large binary takes seconds (a longer --code-timeout on the server waits longer), or the agent is stuck or cut off",
            inst.id, inst.executable, inst.pid, inst.host, wait.as_secs_f64()
        )));
    };
    let answer: CodeAnswer = serde_json::from_str(&answer).map_err(|e| {
        ApiError::internal(format!(
            "the agent `{agent}` answered something unreadable: {e}"
        ))
    })?;
    match answer {
        CodeAnswer::Failed {
            error,
            field: Some(f),
        } => Err(ApiError::bad(request_field(&f), error)),
        CodeAnswer::Failed { error, field: None } => Err(ApiError::not_found(format!(
            "cannot read the code of {} ({} on host {}, agent `{agent}`): {error}",
            inst.id, inst.executable, inst.host
        ))),
        other => Ok(other),
    }
}

/// The request field an agent's answer names, among those the code views take.
fn request_field(name: &str) -> &'static str {
    const FIELDS: &[&str] = &[
        "file",
        "pattern",
        "text",
        "location",
        "condition",
        "template",
        "by",
        "watch",
        "value",
        "failure",
        "fixes",
        "replay",
        "keep",
    ];
    FIELDS
        .iter()
        .find(|f| **f == name)
        .copied()
        .unwrap_or("location")
}

fn unexpected(what: &str) -> ApiError {
    ApiError::internal(format!(
        "the agent answered a {what} request with another kind of answer"
    ))
}

async fn instance(state: &Arc<AppState>, id: &str) -> Result<Instance, ApiError> {
    let offline = state.config.offline_after.as_millis() as i64;
    let list = db(state, move |s| s.instances(store::now_ms(), offline, false)).await?;
    let ids: Vec<String> = list.iter().map(|i| i.id.clone()).collect();
    list.into_iter().find(|i| i.id == id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no instance `{id}`; instances: {}",
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        ))
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SourceQuery {
    /// the source file, matched by path suffix
    file: String,
    /// first line
    from: Option<u32>,
    /// last line
    to: Option<u32>,
}

/// A source file of an instance's binary, with the lines a probe can take
///
/// `GET /api/v1/instances/{id}/source?file=NAME`: the file (matched by path suffix, as
/// `periscope lines` matches it), each line with its text and whether a probe can go there.
#[utoipa::path(get, path = "/api/v1/instances/{id}/source",
    description = "Needs a token of role viewer. The instance's agent reads its binary (from the live process) and answers; the server waits for it up to --code-timeout (30 s by default). `file` is matched by path suffix, as `periscope lines` matches it; an unknown or ambiguous name is a 400 listing candidates.",
    params(("id" = String, Path, description = "instance id"), SourceQuery),
    responses(
        (status = 200, description = "OK", body = periscope_runtime::SourceListing),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::AgentUnavailable),
        (status = 504, response = crate::openapi::Timeout),
    ))]
async fn source(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SourceQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "code.source").await?;
    let inst = instance(r.state(), &id).await?;
    let asked = CodeAsk::Source {
        file: q.file,
        from: q.from,
        to: q.to,
    };
    match ask(r.state(), &inst, asked).await? {
        CodeAnswer::Source { listing } => Ok(Json(listing).into_response()),
        _ => Err(unexpected("source")),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FunctionsQuery {
    /// part of the qualified name
    pattern: String,
}

/// The functions of an instance's binary.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FunctionList {
    pub functions: Vec<periscope_runtime::FunctionInfo>,
}

/// The functions of an instance's binary whose qualified name contains `pattern`
#[utoipa::path(get, path = "/api/v1/instances/{id}/functions",
    description = "Needs a token of role viewer. The instance's agent reads its binary and answers, as for the source listing; each function with the file and line where it is defined.",
    params(("id" = String, Path, description = "instance id"), FunctionsQuery),
    responses(
        (status = 200, description = "OK", body = FunctionList),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::AgentUnavailable),
        (status = 504, response = crate::openapi::Timeout),
    ))]
async fn functions(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FunctionsQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "code.functions").await?;
    let inst = instance(r.state(), &id).await?;
    let asked = CodeAsk::Functions { pattern: q.pattern };
    match ask(r.state(), &inst, asked).await? {
        CodeAnswer::Functions { functions } => Ok(Json(FunctionList { functions }).into_response()),
        _ => Err(unexpected("functions")),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MessagesQuery {
    /// the message as seen (a log line, an error text)
    text: String,
}

/// The places in an instance's code that can produce a message.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageList {
    pub matches: Vec<periscope_runtime::MessageMatch>,
}

/// The constants and format strings of an instance's binary that can produce a message
#[utoipa::path(get, path = "/api/v1/instances/{id}/messages",
    description = "Needs a token of role viewer. The instance's agent reads its binary and answers, as for the source listing; exact matches first, each with the function, file and line that uses it.",
    params(("id" = String, Path, description = "instance id"), MessagesQuery),
    responses(
        (status = 200, description = "OK", body = MessageList),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::AgentUnavailable),
        (status = 504, response = crate::openapi::Timeout),
    ))]
async fn messages(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "code.messages").await?;
    let inst = instance(r.state(), &id).await?;
    let asked = CodeAsk::Messages { text: q.text };
    match ask(r.state(), &inst, asked).await? {
        CodeAnswer::Messages { matches } => Ok(Json(MessageList { matches }).into_response()),
        _ => Err(unexpected("messages")),
    }
}

/// `POST /api/v1/probes/check`: validates a probe as placing it would, then has the agent of the
/// first instance its target selects resolve it against that instance's binary, so a location without code, a name not
/// in scope or a misspelled field is an error (with its field) before anything is placed.
/// Nothing is stored or attached.
#[utoipa::path(post, path = "/api/v1/probes/check", summary = "Check a probe without placing it",
    description = "Needs a token of role viewer. Validates the probe as POST /api/v1/probes would, then the agent of the first instance its target selects resolves its location and expressions against that instance's binary (waiting for it as for the source listing): a line without code, a name not in scope or a missing field is a 400 whose `field` names the request field (`location`, `condition`, `template`, `by`, `watch`). Nothing is stored or attached.",
    request_body = periscope_core::schema::ProbeRequest,
    responses(
        (status = 200, description = "The probe would be placed", body = crate::openapi::Checked),
        (status = 409, response = crate::openapi::AgentUnavailable),
        (status = 504, response = crate::openapi::Timeout),
    ))]
async fn check(r: Request, body: Bytes) -> ApiResult {
    r.caller(Role::Viewer, "probe.check").await?;
    let spec: NewProbe = crate::request::parse_body(&body)?;
    validate(&spec)?;
    let selector = Selector::parse(&spec.target).map_err(|e| ApiError::bad("target", e))?;
    let offline = r.state().config.offline_after.as_millis() as i64;
    let instances = db(r.state(), move |s| {
        s.instances(store::now_ms(), offline, false)
    })
    .await?;
    // An online instance first: its agent can answer.
    let mut matching: Vec<Instance> = instances
        .into_iter()
        .filter(|i| selector.matches(i))
        .collect();
    matching.sort_by_key(|i| i.state != "online");
    let Some(inst) = matching.into_iter().next() else {
        return Ok(Json(Checked {
            ok: true,
            checked_on: None,
            sites: None,
            note: Some("no instance matches the target yet; the location and names are checked when an agent installs it".into()),
        })
        .into_response());
    };
    let checked_on = inst.id.clone();
    let asked = CodeAsk::Check {
        probe: Box::new(spec),
    };
    let sites = match ask(r.state(), &inst, asked).await? {
        CodeAnswer::Checked { sites } => sites,
        _ => return Err(unexpected("check")),
    };
    Ok(Json(Checked {
        ok: true,
        checked_on: Some(checked_on),
        sites: Some(sites),
        note: None,
    })
    .into_response())
}
