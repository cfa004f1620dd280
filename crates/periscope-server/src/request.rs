//! What every handler shares: the API's error answer, the request (its state, token and
//! client address), parsing a body or a query so that a mistake is a 400 naming the field.
//! The routers import from here; nothing here imports a router.

use crate::auth::{self, Caller, Denied};
use crate::store::StoreError;
use crate::tls::Peer;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use periscope_core::api::Role;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// An API error: status, a message saying what was wrong and what would be right, and the
/// request field at fault when there is one.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            field: None,
        }
    }

    /// The one who would answer cannot (an agent offline, or one from before code requests):
    /// a conflict with the current state, not a server failure.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            field: None,
        }
    }

    /// The one who would answer did not within the bound.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: message.into(),
            field: None,
        }
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message});
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        ApiError {
            status: d.status,
            message: d.message,
            field: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError {
            status: match e {
                StoreError::Nul => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            message: e.to_string(),
            field: None,
        }
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Query parameters, parsed so that a bad one is a JSON 400 naming it, like every other API
/// error (axum's own `Query` answers in plain text).
pub(crate) struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad("query", format!("bad query parameters: {}", e.body_text())))
    }
}

pub(crate) fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// Parses a JSON body ourselves so a mistake is a 400 naming the field, not a bare 422.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    // Every request body is an object (serde would also read a struct from an array).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad(
            "body",
            "the request body must be a JSON object ({…})",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let field = ["unknown field", "missing field"]
            .iter()
            .any(|p| msg.contains(p))
            .then_some("body");
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("bad request body: {msg}"),
            field,
        }
    })
}

/// What every handler starts from: the state, the request's headers (for the token) and the
/// client's address (for the audit log).
pub struct Request {
    state: Arc<AppState>,
    headers: HeaderMap,
    remote: SocketAddr,
}

impl axum::extract::FromRequestParts<Arc<AppState>> for Request {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0 .0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(Request {
            state: state.clone(),
            headers: parts.headers.clone(),
            remote,
        })
    }
}

impl Request {
    pub(crate) async fn caller(&self, needed: Role, action: &str) -> Result<Caller, ApiError> {
        Ok(auth::authorize(&self.state, &self.headers, self.remote, needed, action).await?)
    }

    pub(crate) fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}
