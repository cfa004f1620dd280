//! The web console: one page and its script and style, embedded in the binary (nothing is
//! fetched from elsewhere at run time), served at `/` on the API's origin. The page is a client
//! of the API like the CLI: it reads the same endpoints and the same event stream, and sends
//! `x-periscope-via: web` so its changes are audited as such.

use crate::request::{ApiResult, Request};
use crate::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use periscope_core::api::Role;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// The page, its script and its style: not part of the API (the document lists the API).
pub fn pages() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/console/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/console/app.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

/// The console's part of the API.
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(whoami))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Only this origin's own script, style and API: nothing from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The calling token's name and role
///
/// So a client can show what it may do.
#[utoipa::path(get, path = "/api/v1/whoami", description = "Needs any valid token (viewer or above).",
    responses((status = 200, description = "OK", body = crate::openapi::WhoAmI)))]
async fn whoami(r: Request) -> ApiResult {
    let caller = r.caller(Role::Viewer, "token.whoami").await?;
    Ok(Json(crate::openapi::WhoAmI {
        name: caller.name,
        role: caller.role,
    })
    .into_response())
}
