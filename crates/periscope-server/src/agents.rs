//! The agents' side of the API: `POST /api/v1/agent/report` (instances, probe states and
//! events), `GET /api/v1/agent/desired` (the probes each instance must have, and the code
//! requests for the agent, long-polled) and `POST /api/v1/agent/code/{id}` (an answer to a
//! code request).
//!
//! Code requests ride on the desired-state poll rather than a poll of their own: an agent
//! already holds that poll open all the time, so a request reaches it at once with no second
//! connection per agent, and an agent behind a proxy that allows one long request needs
//! nothing new. Each request is handed out once (claimed in the store), so a poll that
//! returns for a code request alone does not return again for the same one.

use crate::request::{parse_body, ApiError, ApiQuery, ApiResult, Request};
use crate::{db, ingest, store, AppState};
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::Json;
use periscope_core::api::{AgentReport, Assignment, Desired, Role, Selector, FEATURE_CODE};
use periscope_core::code::CodeRequest;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(agent_report))
        .routes(routes!(agent_desired))
        .routes(routes!(agent_code_answer))
}

/// The names and ids in a report that the store keeps as such (not inside JSON) may not hold
/// a NUL character: PostgreSQL cannot store one, and both stores take the same inputs.
fn check_report_names(report: &AgentReport) -> Result<(), ApiError> {
    let nul = |field: &'static str, s: &str| {
        if s.contains('\0') {
            Err(ApiError::bad(
                field,
                format!("{field} may not contain a NUL character"),
            ))
        } else {
            Ok(())
        }
    };
    nul("agent.id", &report.agent.id)?;
    nul("run", report.run.as_deref().unwrap_or(""))?;
    for i in &report.instances {
        nul("instances[].id", &i.id)?;
    }
    for s in &report.statuses {
        nul("statuses[].probe", &s.probe)?;
        nul("statuses[].instance", &s.status.instance)?;
    }
    for e in &report.events {
        nul("events[].probe", e.probe())?;
        nul("events[].instance", &e.instance)?;
    }
    Ok(())
}

/// An agent's instances, probe states and events
#[utoipa::path(post, path = "/api/v1/agent/report", description = "Needs a token of role agent.",
    request_body = AgentReport,
    responses((status = 200, description = "OK", body = crate::openapi::Stored)))]
async fn agent_report(r: Request, body: Bytes) -> ApiResult {
    r.caller(Role::Agent, "agent.report").await?;
    let _: crate::kinds::NoNumericKind = parse_body(&body)?;
    let report: AgentReport = parse_body(&body)?;
    check_report_names(&report)?;
    let state = r.state();
    use std::sync::atomic::Ordering::Relaxed;
    state.stats.reports.fetch_add(1, Relaxed);
    state
        .stats
        .agent_dropped
        .fetch_add(report.dropped_events, Relaxed);
    let agent = report.agent.id.clone();
    {
        let mut known = state
            .exports
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for i in &report.instances {
            known.insert(i.id.clone(), i.clone());
        }
    }
    let instances = report.instances;
    let statuses = report.statuses;
    let stopping = report.stopping;
    let answers_code = report.agent.features.iter().any(|f| f == FEATURE_CODE);
    // Events first: a state such as hit_limit is never visible before the events that led
    // to it.
    let stored = ingest(state, report.run.clone(), report.events).await?;
    let changed = db(state, move |s| {
        let changed = s.record_instances(&agent, &instances, store::now_ms(), stopping)?;
        s.record_statuses(&agent, &statuses)?;
        s.record_agent_features(&agent, answers_code)?;
        Ok(changed)
    })
    .await?;
    if changed {
        state.bump_version();
    }
    state.status_changed.notify_waiters();
    state.announce(crate::peers::Change::Status);
    Ok(Json(crate::openapi::Stored { stored }).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DesiredQuery {
    /// agent id
    agent: String,
    /// the version the agent has
    version: Option<u64>,
    /// longest wait (milliseconds, at most 60000)
    wait_ms: Option<u64>,
}

/// The probes that apply to an agent's instances, and the code requests for it. With
/// `version`, waits (up to `wait_ms`) until the desired state may have changed or a code
/// request for the agent arrives: a long poll, so agents learn of a new probe at once.
#[utoipa::path(get, path = "/api/v1/agent/desired",
    summary = "Probes for an agent's instances; waits for a newer version or a code request",
    description = "Needs a token of role agent. `code_requests` are handed out once each; the agent answers each on POST /api/v1/agent/code/{id}.",
    params(DesiredQuery), responses((status = 200, description = "OK", body = Desired)))]
async fn agent_desired(r: Request, ApiQuery(q): ApiQuery<DesiredQuery>) -> ApiResult {
    r.caller(Role::Agent, "agent.desired").await?;
    let state = r.state();
    let mut rx = state.version.subscribe();
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(60_000));
    let deadline = tokio::time::Instant::now() + wait;
    let code_requests = loop {
        // Subscribed before looking, so a request stored after the look still wakes us.
        let mut code_rx = state.code_requested.subscribe();
        code_rx.borrow_and_update();
        let agent = q.agent.clone();
        let claimed = db(state, move |s| s.claim_code_requests(&agent)).await?;
        let claimed = code_requests_of(claimed);
        if !claimed.is_empty() || q.version.is_none_or(|v| *rx.borrow() != v) {
            break claimed;
        }
        let v = q.version.unwrap_or_default();
        tokio::select! {
            _ = rx.wait_for(|cur| *cur != v) => {}
            _ = code_rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => break Vec::new(),
            _ = state.stopped() => break Vec::new(),
        }
    };
    let version = *rx.borrow();
    let agent = q.agent.clone();
    let offline = state.config.offline_after.as_millis() as i64;
    let (probes, instances) = db(state, move |s| {
        Ok((
            s.probes(false)?,
            s.instances(store::now_ms(), offline, false)?,
        ))
    })
    .await?;
    let mine: Vec<_> = instances.into_iter().filter(|i| i.agent == agent).collect();
    let assignments = probes
        .into_iter()
        .filter_map(|p| {
            let sel = Selector::parse(&p.spec.target).ok()?;
            let ids: Vec<String> = mine
                .iter()
                .filter(|i| sel.matches(i))
                .map(|i| i.id.clone())
                .collect();
            (!ids.is_empty()).then_some(Assignment {
                probe: p,
                instances: ids,
            })
        })
        .collect();
    Ok(Json(Desired {
        version,
        assignments,
        code_requests,
    })
    .into_response())
}

/// The stored requests as the agent reads them; one the store holds but cannot read (never
/// written by this server) is skipped: its caller's wait ends with the bound.
fn code_requests_of(claimed: Vec<(i64, String)>) -> Vec<CodeRequest> {
    claimed
        .into_iter()
        .filter_map(|(id, body)| {
            let mut r: CodeRequest = serde_json::from_str(&body).ok()?;
            r.id = id;
            Some(r)
        })
        .collect()
}

/// An agent's answer to a code request
#[utoipa::path(post, path = "/api/v1/agent/code/{id}",
    description = "Needs a token of role agent. The answer to the code request `id` handed out in GET /api/v1/agent/desired; the code view waiting for it (on any replica) returns it.",
    params(("id" = i64, Path, description = "the code request's id")),
    request_body = periscope_runtime::CodeAnswer,
    responses(
        (status = 200, description = "Stored", body = crate::openapi::Answered),
        (status = 404, response = crate::openapi::NotFound),
    ))]
async fn agent_code_answer(r: Request, Path(id): Path<String>, body: Bytes) -> ApiResult {
    r.caller(Role::Agent, "agent.code").await?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::bad(
            "id",
            format!(
                "`{id}` is not a code request id (a number from a desired state's code_requests)"
            ),
        )
    })?;
    let answer: periscope_runtime::CodeAnswer = parse_body(&body)?;
    let text = serde_json::to_string(&answer)
        .map_err(|e| ApiError::internal(format!("cannot store the answer: {e}")))?;
    let state = r.state();
    let stored = db(state, move |s| s.answer_code_request(id, &text)).await?;
    if !stored {
        return Err(ApiError::not_found(format!(
            "no code request {id} waits for an answer (answered already, or its caller stopped waiting)"
        )));
    }
    state.code_answered.send_modify(|v| *v += 1);
    state.announce(crate::peers::Change::Answer);
    Ok(Json(crate::openapi::Answered { answered: id }).into_response())
}
