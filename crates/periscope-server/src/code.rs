//! The code of an instance, read from its binary on the machine the server runs on: the source
//! listing with the lines a probe can take, and a check of a probe against the scope at its
//! location before it is placed. The console (and any client) uses these; MCP's `read_source`
//! reads binaries the same way.
//!
//! The binary is read from the live process when it runs here (through /proc, so containers
//! work), else from the executable path the agent reported. Indexed binaries are kept per
//! (executable, build id): indexing is the slow part, a large binary takes seconds.

use crate::openapi::Checked;
use crate::request::{ApiError, ApiQuery, ApiResult, Request};
use crate::routes::validate;
use crate::{db, store, AppState};
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::IntoResponse;
use axum::Json;
use periscope_core::api::{Instance, NewProbe, Role, Selector};
use periscope_runtime::{Code, EngineProbe, ErrorKind, Limits, RuntimeError};
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(source))
        .routes(routes!(check))
}

/// The instance's code, through its runtime (which keeps what it indexed per executable and
/// build id). Blocking: call from the blocking pool.
fn target_of(i: &Instance) -> Result<Arc<dyn Code>, ApiError> {
    periscope_runtimes::open_instance(i.pid, &i.executable, i.build_id.as_deref())
        .map_err(|e| {
            ApiError::not_found(format!(
                "cannot read the binary of {} ({} on host {}): {e}; the code view needs the binary on the server's machine",
                i.id, i.executable, i.host
            ))
        })
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

/// Runs blocking code reading binaries on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("code task failed: {e}"))))
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
    description = "Needs a token of role viewer. Reads the instance's binary on the server's machine (from the live process when it runs there). `file` is matched by path suffix, as `periscope lines` matches it; an unknown or ambiguous name is a 400 listing candidates.",
    params(("id" = String, Path, description = "instance id"), SourceQuery),
    responses(
        (status = 200, description = "OK", body = periscope_runtime::SourceListing),
        (status = 404, response = crate::openapi::NotFound),
    ))]
async fn source(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SourceQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "code.source").await?;
    let inst = instance(r.state(), &id).await?;
    let listing = blocking(move || {
        let t = target_of(&inst)?;
        let range = match (q.from, q.to) {
            (None, None) => None,
            (from, to) => Some((from.unwrap_or(1), to.unwrap_or(u32::MAX))),
        };
        t.source_lines(&q.file, range)
            .map_err(|e| ApiError::bad("file", e.to_string()))
    })
    .await?;
    Ok(Json(listing).into_response())
}

/// `POST /api/v1/probes/check`: validates a probe as placing it would, then resolves it against
/// the binary of the first instance its target selects, so a location without code, a name not
/// in scope or a misspelled field is an error (with its field) before anything is placed.
/// Nothing is stored or attached.
#[utoipa::path(post, path = "/api/v1/probes/check", summary = "Check a probe without placing it",
    description = "Needs a token of role viewer. Validates the probe as POST /api/v1/probes would, then resolves its location and expressions against the binary of the first instance its target selects: a line without code, a name not in scope or a missing field is a 400 whose `field` names the request field (`location`, `condition`, `template`, `by`, `watch`). Nothing is stored or attached.",
    request_body = periscope_core::schema::ProbeRequest,
    responses((status = 200, description = "The probe would be placed", body = crate::openapi::Checked)))]
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
    let Some(inst) = instances.into_iter().find(|i| selector.matches(i)) else {
        return Ok(Json(Checked {
            ok: true,
            checked_on: None,
            sites: None,
            note: Some("no instance matches the target yet; the location and names are checked when an agent installs it".into()),
        })
        .into_response());
    };
    let checked_on = inst.id.clone();
    let sites = blocking(move || {
        let t = target_of(&inst)?;
        resolve_fields(&t, &spec)
    })
    .await?;
    Ok(Json(Checked {
        ok: true,
        checked_on: Some(checked_on),
        sites: Some(sites),
        note: None,
    })
    .into_response())
}

/// Resolves the probe at its location, the condition first and then the rest, so an error
/// names the field it is in.
fn resolve_fields(t: &Arc<dyn Code>, spec: &NewProbe) -> Result<usize, ApiError> {
    let attempt = |p: &NewProbe| -> Result<usize, RuntimeError> {
        let compiled = periscope_core::compile::compile(p)
            .map_err(|e| RuntimeError::new(ErrorKind::Expression, e.message))?;
        let redactor = periscope_core::redact::Redactor::default();
        match EngineProbe::new("check", compiled, Limits::default(), redactor) {
            EngineProbe::Breakpoint(spec) => t.check(&spec),
            EngineProbe::Failures { .. } => Ok(0),
        }
    };
    let field_of = |e: RuntimeError, field: &'static str| match e.kind {
        ErrorKind::Expression => ApiError::bad(field, e.message),
        _ => ApiError::bad("location", e.message),
    };
    if spec.kind == periscope_core::api::ProbeKind::Verify {
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
        periscope_core::api::ProbeKind::Count | periscope_core::api::ProbeKind::Duration => "by",
        periscope_core::api::ProbeKind::Gauge
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
        periscope_core::api::ProbeKind::Gauge => "by",
        periscope_core::api::ProbeKind::Snapshot => "watch",
        _ => "template",
    };
    attempt(spec).map_err(|e| field_of(e, rest))
}
