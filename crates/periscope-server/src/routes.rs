//! The HTTP API under `/api/v1`, described by the document served at `/api/v1/openapi.json`
//! (generated from the types and these handlers' annotations: see [`crate::openapi`]). Every
//! handler starts by checking the caller's token and role.

use crate::auth::{self, Caller};
use crate::openapi::{InstanceList, ProbeEnvelope, ProbeGone, ProbeList, Status};
use crate::request::{ok, parse_body, ApiError, ApiQuery, ApiResult, Request};
use crate::store;
use crate::tls::Peer;
use crate::{db, AppState};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use periscope_core::api::{
    InstallState, NewProbe, Probe, ProbeInstance, ProbeLifecycle, Role, Selector,
    DEFAULT_TTL_SECONDS,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The server's routes: the API (each documented, see [`crate::openapi`]), its document, and
/// the console's page.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, doc) = crate::openapi::api().split_for_parts();
    let doc: Arc<str> = crate::openapi::document(doc).to_string().into();
    api.merge(crate::console::pages())
        .fallback(no_such_path)
        .layer(Extension(Document(doc)))
        .with_state(state)
}

/// The OpenAPI document, as served.
#[derive(Clone)]
struct Document(Arc<str>);

/// This module's part of the API.
pub(crate) fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(openapi))
        .routes(routes!(status))
        .routes(routes!(list_probes, add_probe))
        .routes(routes!(show_probe, remove_probe))
        .routes(routes!(resume_probe))
        .routes(routes!(instances))
}

/// A probe's id in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct ProbeId {
    /// probe id
    id: String,
}

/// Any other path: a JSON 404 like every other API error (axum's own is an empty body).
async fn no_such_path(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such path: {}; /api/v1/openapi.json lists the API",
        uri.path()
    ))
}

/// This document
#[utoipa::path(get, path = "/api/v1/openapi.json", description = "Needs a token of role viewer.",
    responses((status = 200, description = "OK", body = Value)))]
async fn openapi(r: Request, Extension(doc): Extension<Document>) -> ApiResult {
    r.caller(Role::Viewer, "openapi.read").await?;
    Ok(([("content-type", "application/json")], doc.0.to_string()).into_response())
}

/// Server status and counters
#[utoipa::path(get, path = "/api/v1/status", description = "Needs a token of role viewer.",
    responses((status = 200, description = "OK", body = Status)))]
async fn status(r: Request) -> ApiResult {
    r.caller(Role::Viewer, "status.read").await?;
    let s = r.state();
    let (last_seq, bytes) = db(s, |st| st.event_totals()).await?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(Json(Status {
        version: *s.version.borrow(),
        events_ingested: s.stats.events_ingested.load(Relaxed),
        agent_dropped_events: s.stats.agent_dropped.load(Relaxed),
        agent_reports: s.stats.reports.load(Relaxed),
        last_event_seq: last_seq,
        stored_event_bytes: bytes,
        retention_seconds: s.config.retention.as_secs(),
        max_event_bytes: s.config.max_event_bytes,
        otlp: s.exports.otlp_stats.as_ref().map(|o| o.status()),
        jsonl_last_seq: s
            .exports
            .jsonl
            .as_ref()
            .map(|j| j.lock().map(|w| w.last_seq()).unwrap_or(0)),
    })
    .into_response())
}

// ---- probes -------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// include ended probes
    #[serde(default)]
    all: bool,
}

/// List probes (active; all=true for removed and expired too)
#[utoipa::path(get, path = "/api/v1/probes", description = "Needs a token of role viewer.",
    params(ListQuery), responses((status = 200, description = "OK", body = ProbeList)))]
async fn list_probes(r: Request, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult {
    r.caller(Role::Viewer, "probe.list").await?;
    let probes = db(r.state(), move |s| s.probes(q.all)).await?;
    Ok(Json(ProbeList { probes }).into_response())
}

/// Checks every field of a new probe; the error names the field and says what is expected.
pub fn validate(p: &NewProbe) -> Result<(), ApiError> {
    Selector::parse(&p.target).map_err(|e| ApiError::bad("target", e))?;
    periscope_core::compile::compile(p).map_err(|e| ApiError::bad(e.field, e.message))?;
    Ok(())
}

/// Places a probe for `caller`. Probes placed over MCP get the MCP TTL by default and count
/// against the per-token cap.
pub async fn place_probe(
    state: &Arc<AppState>,
    caller: &Caller,
    mut spec: NewProbe,
) -> Result<Probe, ApiError> {
    validate(&spec)?;
    let mcp = caller.via == "mcp";
    if mcp {
        let name = caller.name.clone();
        let held = db(state, move |s| {
            Ok(s.probes(false)?
                .into_iter()
                .filter(|p| p.via == "mcp" && p.created_by == name)
                .count())
        })
        .await?;
        if held >= state.config.mcp_max_probes {
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "this token already holds {held} probes placed over MCP (the limit is {}); remove one with remove_probe first",
                    state.config.mcp_max_probes
                ),
                field: None,
            });
        }
    }
    let ttl = spec.ttl_seconds.unwrap_or(if mcp {
        state.config.mcp_ttl.as_secs()
    } else {
        DEFAULT_TTL_SECONDS
    });
    spec.ttl_seconds = Some(ttl);
    let (by, via) = (caller.name.clone(), caller.via.clone());
    let probe = db(state, move |s| {
        s.insert_probe(&spec, &by, &via, time::OffsetDateTime::now_utc(), ttl)
    })
    .await?;
    auth::record(
        state,
        caller.audit(
            "probe.add",
            &probe.id,
            serde_json::to_value(&probe.spec).unwrap_or_default(),
        ),
    )
    .await;
    state.bump_version();
    state.expiry_changed.notify_one();
    state.announce(crate::peers::Change::Expiry);
    Ok(probe)
}

/// Place a probe
#[utoipa::path(post, path = "/api/v1/probes", description = "Needs a token of role operator.",
    request_body = periscope_core::schema::ProbeRequest,
    responses(
        (status = 201, description = "OK", body = ProbeEnvelope),
        (status = 429, description = "Over MCP: the token already holds as many probes as allowed",
            body = periscope_core::api::ApiError),
    ))]
async fn add_probe(r: Request, body: Bytes) -> ApiResult {
    let caller = r.caller(Role::Operator, "probe.add").await?;
    let spec: NewProbe = parse_body(&body)?;
    let probe = place_probe(r.state(), &caller, spec).await?;
    let probe = with_instances(r.state(), probe).await?;
    Ok((StatusCode::CREATED, Json(ProbeEnvelope { probe })).into_response())
}

/// Fills a probe's per-instance states: every instance it applies to (pending until its agent
/// reports), plus instances that reported on it before and no longer match.
pub async fn with_instances(state: &Arc<AppState>, mut probe: Probe) -> Result<Probe, ApiError> {
    let id = probe.id.clone();
    let offline = state.config.offline_after.as_millis() as i64;
    let (statuses, instances) = db(state, move |s| {
        Ok((
            s.statuses(&id)?,
            s.instances(store::now_ms(), offline, false)?,
        ))
    })
    .await?;
    let selector = Selector::parse(&probe.spec.target).ok();
    let mut by_instance: HashMap<String, ProbeInstance> = statuses
        .into_iter()
        .map(|s| (s.instance.clone(), s))
        .collect();
    let mut out = Vec::new();
    for i in &instances {
        if selector.as_ref().is_some_and(|s| s.matches(i)) {
            let status = by_instance.remove(&i.id).unwrap_or(ProbeInstance {
                engine: None,
                instance: i.id.clone(),
                state: InstallState::Pending,
                hits: 0,
                dropped: 0,
                errors: 0,
                last_error: None,
                sites: None,
                updated_at: String::new(),
            });
            out.push(status);
        }
    }
    out.extend(by_instance.into_values());
    if !probe.state.is_live() {
        // Whatever the agents last said, the probe is gone everywhere.
        let end = if probe.state == ProbeLifecycle::Expired {
            InstallState::Expired
        } else {
            InstallState::Removed
        };
        for s in &mut out {
            if matches!(
                s.state,
                InstallState::Pending | InstallState::Installed | InstallState::Paused
            ) {
                s.state = end;
            }
        }
    }
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    probe.hits = out.iter().fold(0u64, |n, s| n.saturating_add(s.hits));
    probe.instances = out;
    Ok(probe)
}

pub(crate) async fn find_probe(state: &Arc<AppState>, id: &str) -> Result<Probe, ApiError> {
    let id2 = id.to_string();
    db(state, move |s| s.probe(&id2)).await?.ok_or_else(|| {
        ApiError::not_found(format!("no probe `{id}`; `periscope probe ls` lists them"))
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ShowQuery {
    /// Wait up to this long (milliseconds, at most 60000) until no instance is `pending` any
    /// more.
    settle_ms: Option<u64>,
}

/// A probe with its state on each instance
#[utoipa::path(get, path = "/api/v1/probes/{id}", description = "Needs a token of role viewer.",
    params(ProbeId, ShowQuery),
    responses(
        (status = 200, description = "OK", body = ProbeEnvelope),
        (status = 404, description = "No such probe, or the probe was removed: then `probe` still describes it",
            body = ProbeGone),
    ))]
async fn show_probe(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "probe.show").await?;
    let wait = Duration::from_millis(q.settle_ms.unwrap_or(0).min(60_000));
    let probe = settled_probe(r.state(), &id, wait).await?;
    let removed = probe.state == ProbeLifecycle::Removed;
    answer(&id, removed, json!({ "probe": probe }))
}

/// The answer about a probe, or about what it gathered: 200, or, once the probe was removed,
/// 404 as for any deleted resource, with the same body (and `error` saying so) so what the
/// probe was and did stays readable.
pub(crate) fn answer(id: &str, removed: bool, mut body: Value) -> ApiResult {
    if !removed {
        return ok(body);
    }
    body["error"] = json!(format!("probe {id} was removed"));
    Ok((StatusCode::NOT_FOUND, Json(body)).into_response())
}

/// A probe with its per-instance states, waiting up to `wait` for the agents to report an
/// outcome (installed or error) on every instance it applies to.
pub async fn settled_probe(
    state: &Arc<AppState>,
    id: &str,
    wait: Duration,
) -> Result<Probe, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before reading, so a report in between still wakes us.
        let changed = state.status_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let probe = with_instances(state, find_probe(state, id).await?).await?;
        let pending = probe
            .instances
            .iter()
            .any(|i| i.state == InstallState::Pending);
        if !pending || tokio::time::Instant::now() >= deadline {
            return Ok(probe);
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Ok(probe);
        }
    }
}

/// Removes a probe for `caller` (404 if unknown; removing an ended probe changes nothing).
pub async fn delete_probe(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
) -> Result<Probe, ApiError> {
    find_probe(state, id).await?;
    let id2 = id.to_string();
    let changed = db(state, move |s| s.end_probe(&id2, ProbeLifecycle::Removed)).await?;
    if changed {
        auth::record(state, caller.audit("probe.remove", id, Value::Null)).await;
        state.bump_version();
    }
    find_probe(state, id).await
}

/// Remove a probe everywhere
#[utoipa::path(delete, path = "/api/v1/probes/{id}", description = "Needs a token of role operator.",
    params(ProbeId),
    responses(
        (status = 200, description = "OK", body = ProbeEnvelope),
        (status = 404, response = crate::openapi::NotFound),
    ))]
async fn remove_probe(r: Request, Path(id): Path<String>) -> ApiResult {
    let caller = r.caller(Role::Operator, "probe.remove").await?;
    let probe = delete_probe(r.state(), &caller, &id).await?;
    let probe = with_instances(r.state(), probe).await?;
    Ok(Json(ProbeEnvelope { probe }).into_response())
}

/// Resumes a probe where its overhead budget paused it (optionally with a new budget).
pub async fn resume(
    state: &Arc<AppState>,
    caller: &Caller,
    id: &str,
    req: periscope_core::api::ResumeProbe,
) -> Result<Probe, ApiError> {
    let probe = find_probe(state, id).await?;
    if !probe.state.is_live() {
        return Err(ApiError::conflict(format!(
            "probe {id} is {}; only a live probe can be resumed (place a new one)",
            probe.state.as_str()
        )));
    }
    if req.budget_ms.is_some_and(|b| b == 0 || b > 10_000) {
        return Err(ApiError::bad(
            "budget_ms",
            "budget_ms is milliseconds of the target's time per 10 s window, from 1 to 10000",
        ));
    }
    let id2 = id.to_string();
    let budget = req.budget_ms;
    db(state, move |s| s.resume_probe(&id2, budget)).await?;
    let detail = json!({ "budget_ms": req.budget_ms });
    auth::record(state, caller.audit("probe.resume", id, detail)).await;
    state.bump_version();
    find_probe(state, id).await
}

/// Resume a probe its overhead budget paused
#[utoipa::path(post, path = "/api/v1/probes/{id}/resume",
    description = "Needs a token of role operator. Agents reinstall the probe on the instances where it is paused. 409 when the probe was removed or expired.",
    params(ProbeId),
    request_body(content = Option<periscope_core::api::ResumeProbe>),
    responses(
        (status = 200, description = "OK", body = ProbeEnvelope),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    ))]
async fn resume_probe(r: Request, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let caller = r.caller(Role::Operator, "probe.resume").await?;
    let req: periscope_core::api::ResumeProbe = if body.is_empty() {
        Default::default()
    } else {
        parse_body(&body)?
    };
    let probe = resume(r.state(), &caller, &id, req).await?;
    let probe = with_instances(r.state(), probe).await?;
    Ok(Json(ProbeEnvelope { probe }).into_response())
}

pub async fn list_instances(
    state: &Arc<AppState>,
) -> Result<Vec<periscope_core::api::Instance>, ApiError> {
    let offline = state.config.offline_after.as_millis() as i64;
    Ok(db(state, move |s| s.instances(store::now_ms(), offline, false)).await?)
}

/// Instances the agents watch
#[utoipa::path(get, path = "/api/v1/instances", description = "Needs a token of role viewer.",
    responses((status = 200, description = "OK", body = InstanceList)))]
async fn instances(r: Request) -> ApiResult {
    r.caller(Role::Viewer, "instance.list").await?;
    let instances = list_instances(r.state()).await?;
    Ok(Json(InstanceList { instances }).into_response())
}

/// Guards a surface mounted beside the API (`/mcp`): any valid token passes; what it may do is
/// then checked call by call by the API itself.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers().clone();
    let via = "mcp".to_string();
    match auth::authorize_token(
        &state,
        auth::bearer(&headers),
        remote.to_string(),
        via,
        Role::Viewer,
        "mcp.connect",
    )
    .await
    {
        Ok(_) => next.run(request).await,
        Err(d) => ApiError::from(d).into_response(),
    }
}
