//! The web console: one page and its script and style, embedded in the binary (nothing is
//! fetched from elsewhere at run time), served at `/` on the API's origin. The page is a client
//! of the API like the CLI: it reads the same endpoints and the same event stream, and sends
//! `x-periscope-via: web` so its changes are audited as such.

use crate::routes::{ApiResult, Request};
use crate::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use periscope_core::api::Role;
use serde_json::json;
use std::sync::Arc;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

pub fn router() -> Router<Arc<AppState>> {
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
        .route("/api/v1/whoami", get(whoami))
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

/// `GET /api/v1/whoami`: the token's name and role, so a client can show what it may do.
async fn whoami(r: Request) -> ApiResult {
    let caller = r.caller(Role::Viewer, "token.whoami").await?;
    Ok(Json(json!({ "name": caller.name, "role": caller.role.as_str() })).into_response())
}
