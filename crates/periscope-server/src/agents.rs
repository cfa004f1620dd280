//! The agents' side of the API: `POST /api/v1/agent/report` (instances, probe states and
//! events) and `GET /api/v1/agent/desired` (the probes each instance must have, long-polled).

use crate::request::{parse_body, ApiError, ApiQuery, ApiResult, Request};
use crate::{db, ingest, store, AppState};
use axum::body::Bytes;
use axum::response::IntoResponse;
use axum::Json;
use periscope_core::api::{AgentReport, Assignment, Desired, Role, Selector};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(agent_report))
        .routes(routes!(agent_desired))
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
    // Events first: a state such as hit_limit is never visible before the events that led
    // to it.
    let stored = ingest(state, report.run.clone(), report.events).await?;
    let changed = db(state, move |s| {
        let changed = s.record_instances(&agent, &instances, store::now_ms(), stopping)?;
        s.record_statuses(&agent, &statuses)?;
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

/// The probes that apply to an agent's instances. With `version`, waits (up to `wait_ms`) until
/// the desired state may have changed: a long poll, so agents learn of a new probe at once.
#[utoipa::path(get, path = "/api/v1/agent/desired",
    summary = "Probes for an agent's instances; waits for a newer version",
    description = "Needs a token of role agent.",
    params(DesiredQuery), responses((status = 200, description = "OK", body = Desired)))]
async fn agent_desired(r: Request, ApiQuery(q): ApiQuery<DesiredQuery>) -> ApiResult {
    r.caller(Role::Agent, "agent.desired").await?;
    let state = r.state();
    let mut rx = state.version.subscribe();
    if let Some(v) = q.version {
        let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(60_000));
        tokio::select! {
            _ = tokio::time::timeout(wait, rx.wait_for(|cur| *cur != v)) => {}
            _ = state.stopped() => {}
        }
    }
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
    })
    .into_response())
}
