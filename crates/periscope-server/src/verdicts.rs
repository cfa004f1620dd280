//! A verify probe's result across the fleet: each instance's newest counter report carries its
//! totals per candidate and cell; they are summed here, with the first examples of each cell,
//! into the same object `periscope verify --json` prints.

use crate::request::{ApiError, ApiResult, Request};
use crate::{db, AppState};
use axum::extract::Path;
use periscope_core::api::{Probe, ProbeKind, ProbeLifecycle, Role};
use periscope_core::event::{Body, Event};
use periscope_core::verify;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(verdict))
}

/// A verify probe's result, summed across instances
#[utoipa::path(get, path = "/api/v1/probes/{id}/verify",
    description = "Needs a token of role viewer. Each instance's newest counter report carries its totals per candidate and cell; examples are the first of each cell.",
    params(crate::routes::ProbeId),
    responses(
        (status = 200, description = "OK", body = crate::openapi::Verdict),
        (status = 404, description = "No such probe, or the probe was removed: then the body still holds its result",
            body = crate::openapi::VerdictGone),
        (status = 409, response = crate::openapi::Conflict),
    ))]
async fn verdict(r: Request, Path(id): Path<String>) -> ApiResult {
    r.caller(Role::Viewer, "probe.verify").await?;
    let (probe, verdict) = result(r.state(), &id).await?;
    crate::routes::answer(&id, probe.state == ProbeLifecycle::Removed, verdict)
}

/// The summed result of verify probe `id`, with the probe.
pub async fn result(state: &Arc<AppState>, id: &str) -> Result<(Probe, Value), ApiError> {
    let id2 = id.to_string();
    let probe = db(state, move |s| s.probe(&id2)).await?.ok_or_else(|| {
        ApiError::not_found(format!("no probe `{id}`; `periscope probe ls` lists them"))
    })?;
    if probe.spec.kind != ProbeKind::Verify {
        // The probe exists, but is not one that has verdicts: a conflict with its kind.
        return Err(ApiError::conflict(format!(
            "probe {id} is a {} probe, not verify",
            probe.spec.kind.as_str()
        )));
    }
    let names: Vec<String> = probe
        .spec
        .fixes
        .iter()
        .filter_map(|f| verify::parse_fix(f).ok().map(|f| f.name))
        .collect();
    let id2 = id.to_string();
    let (counts, logs) = db(state, move |s| {
        Ok((s.latest_counts(&id2)?, s.first_events(&id2, "log", 2000)?))
    })
    .await?;
    let mut hits = 0;
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for e in counts {
        if let Ok(Event {
            body: Body::Count(c),
            ..
        }) = serde_json::from_str::<Event>(&e.body)
        {
            hits += c.total;
            for (k, n) in c.groups.unwrap_or_default() {
                *totals.entry(k).or_default() += n;
            }
        }
    }
    let mut examples: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for e in logs {
        if let Ok(Event {
            body: Body::Log(l),
            instance,
            ..
        }) = serde_json::from_str::<Event>(&e.body)
        {
            if let Some(x) = &l.verify {
                let list = examples
                    .entry((x.fix.clone(), x.cell.as_str().to_string()))
                    .or_default();
                if list.len() < 3 {
                    let mut v = serde_json::to_value(&l.values).unwrap_or(Value::Null);
                    v["instance"] = instance.into();
                    list.push(v);
                }
            }
        }
    }
    let candidates = verify::results(
        &names,
        totals.iter().map(|(k, n)| (k.as_str(), *n)),
        &examples,
    );
    Ok((probe, json!({ "hits": hits, "candidates": candidates })))
}
