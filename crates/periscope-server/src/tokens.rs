//! Tokens and the audit log over the API: `/api/v1/tokens` (create, list, revoke) and
//! `/api/v1/audit`. Admins only.

use crate::events::since_param;
use crate::openapi::{AuditList, TokenEnvelope, TokenList};
use crate::request::{parse_body, ApiError, ApiQuery, ApiResult, Request};
use crate::{auth, db, AppState};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use periscope_core::api::{NewToken, Role, TokenInfo};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(audit))
}

/// Create a token; the answer holds the secret once
#[utoipa::path(post, path = "/api/v1/tokens", description = "Needs a token of role admin.",
    request_body = NewToken,
    responses(
        (status = 201, description = "OK", body = TokenEnvelope),
        (status = 409, response = crate::openapi::Conflict),
    ))]
async fn create_token(r: Request, body: Bytes) -> ApiResult {
    let caller = r.caller(Role::Admin, "token.create").await?;
    let new: NewToken = parse_body(&body)?;
    let name = new.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(ApiError::bad(
            "name",
            "token names are 1-64 characters: letters, digits, - _ . @",
        ));
    }
    let secret = auth::new_token().map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("no randomness for a token: {e}"),
        field: None,
    })?;
    let hash = auth::hash_token(&secret);
    let now = periscope_core::event::now_rfc3339();
    let (n2, h2, now2, role) = (name.clone(), hash.clone(), now.clone(), new.role);
    let inserted = db(r.state(), move |s| s.insert_token(&n2, role, &h2, &now2)).await?;
    if !inserted {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "a token named `{name}` exists already; pick another name or revoke it first"
            ),
            field: Some("name"),
        });
    }
    let info = TokenInfo {
        name: name.clone(),
        role,
        created_at: now,
        revoked_at: None,
        token: None,
    };
    r.state().tokens.insert(hash, info.clone());
    r.state().announce(crate::peers::Change::Tokens);
    auth::record(
        r.state(),
        caller.audit("token.create", &name, json!({"role": role})),
    )
    .await;
    let shown = TokenInfo {
        token: Some(secret),
        ..info
    };
    Ok((StatusCode::CREATED, Json(TokenEnvelope { token: shown })).into_response())
}

/// List tokens (never their secrets)
#[utoipa::path(get, path = "/api/v1/tokens", description = "Needs a token of role admin.",
    responses((status = 200, description = "OK", body = TokenList)))]
async fn list_tokens(r: Request) -> ApiResult {
    r.caller(Role::Admin, "token.list").await?;
    let tokens = db(r.state(), |s| s.tokens()).await?;
    Ok(Json(TokenList { tokens }).into_response())
}

/// Revoke a token
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", description = "Needs a token of role admin.",
    params(("name" = String, Path, description = "token name")),
    responses(
        (status = 200, description = "OK", body = TokenEnvelope),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    ))]
async fn revoke_token(r: Request, Path(name): Path<String>) -> ApiResult {
    let caller = r.caller(Role::Admin, "token.revoke").await?;
    if caller.name == name {
        // A server whose only admin revoked itself could no longer be administered.
        return Err(ApiError::conflict(format!(
            "`{name}` is the token making this request; revoke it with another admin token"
        )));
    }
    let now = periscope_core::event::now_rfc3339();
    let (n2, now2) = (name.clone(), now.clone());
    let info = db(r.state(), move |s| s.revoke_token(&n2, &now2))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no token named `{name}`; `periscope token ls` lists them"
            ))
        })?;
    r.state().tokens.revoke(&name, &now);
    r.state().announce(crate::peers::Change::Tokens);
    auth::record(r.state(), caller.audit("token.revoke", &name, Value::Null)).await;
    Ok(Json(TokenEnvelope { token: info }).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// RFC 3339 time
    #[param(format = DateTime)]
    since: Option<String>,
    /// at most this many
    limit: Option<usize>,
}

/// The audit log, append-only
#[utoipa::path(get, path = "/api/v1/audit", description = "Needs a token of role admin.",
    params(AuditQuery), responses((status = 200, description = "OK", body = AuditList)))]
async fn audit(r: Request, ApiQuery(q): ApiQuery<AuditQuery>) -> ApiResult {
    r.caller(Role::Admin, "audit.read").await?;
    let since = since_param(q.since.as_deref())?;
    let limit = q.limit.unwrap_or(10_000).clamp(1, 100_000);
    let entries = db(r.state(), move |s| s.audit_since(since, limit)).await?;
    Ok(Json(AuditList { entries }).into_response())
}
