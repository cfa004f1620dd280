//! The API's OpenAPI document, generated: the schemas are the Rust types' (`periscope-core`'s
//! `api`, `event` and `value`, derived with utoipa and honouring their serde attributes), the
//! operations are the handlers' `#[utoipa::path]` annotations, and the paths are the routes
//! themselves: every router is a `utoipa_axum` `OpenApiRouter` whose routes are added with
//! `routes!`, so a route cannot be served without being in the document.
//!
//! What no attribute says is added here, once for every operation: the bearer token every
//! request carries, the errors every handler may answer (400 for a bad query or body, 401, 403),
//! and the bounds of each integer format (so a client or a tester never sends a number the
//! server's type cannot hold).

use crate::AppState;
use periscope_core::api::{Probe, Role, TokenInfo};
use periscope_core::event::Event;
use periscope_core::value::{Entry, Value as TypedValue};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};
use utoipa_axum::router::OpenApiRouter;

mod dialect;

// The document's frame: what is not an operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Periscope server API",
        version = "1",
        description = "Control plane of Periscope: probes placed across a fleet, events from agents, tokens and the audit log. Every request carries `Authorization: Bearer TOKEN`. Errors are `{\"error\": message, \"field\": name}`."
    ),
    security(("bearer" = [])),
    components(responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, AgentUnavailable, Timeout)),
    modifiers(&Frame)
)]
struct Base;

/// The routers of every part of the API, documented.
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(Base::openapi())
        .merge(crate::routes::api())
        .merge(crate::events::api())
        .merge(crate::agents::router())
        .merge(crate::tokens::router())
        .merge(crate::code::router())
        .merge(crate::verdicts::router())
        .merge(crate::console::api())
}

/// The document as served, from the routers [`api`] builds.
pub fn document(mut doc: Document) -> Value {
    let ops = doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
    });
    for op in ops {
        for (status, name) in [
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("403", "Forbidden"),
        ] {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| Ref::from_response_name(name).into());
        }
    }
    let mut v = serde_json::to_value(&doc).unwrap_or(Value::Null);
    dialect::optional_bodies(&mut v);
    dialect::open_flattened(&mut v);
    dialect::bound_integers(&mut v);
    dialect::to_openapi_30(&mut v);
    v
}

/// The bearer token scheme, and the value tree: it is recursive, so the types holding values
/// refer to `TypedValue` without collecting it, and it is listed here.
struct Frame;

impl Modify for Frame {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut values = vec![
            (TypedValue::name().into_owned(), TypedValue::schema()),
            (Entry::name().into_owned(), Entry::schema()),
        ];
        TypedValue::schemas(&mut values);
        components.schemas.extend(values);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(
                    <periscope_core::api::ApiError as ToSchema>::name(),
                )))
                .build(),
        )
        .build()
        .into()
}

/// The shared error answers, `{"error", "field"}` each (see [`crate::request::ApiError`]).
macro_rules! error_responses {
    ($($name:ident: $description:literal),* $(,)?) => {$(
        pub struct $name;
        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description))
            }
        }
    )*};
}

error_responses! {
    BadRequest: "Bad input; `field` names it",
    Unauthorized: "No valid token",
    Forbidden: "The token's role does not allow this",
    NotFound: "No such probe, instance or token; the error says how to list them",
    Conflict: "The request conflicts with the current state (a name in use, a probe that ended)",
    AgentUnavailable: "The instance's agent cannot answer: it is offline, or too old to answer code requests",
    Timeout: "The instance's agent did not answer in time (--code-timeout); the error names the agent and instance",
}

// ---- answers --------------------------------------------------------------------------------
// The handlers answer with these types, so the document says what they send.

#[derive(Serialize, ToSchema)]
pub struct ProbeEnvelope {
    pub probe: Probe,
}

#[derive(Serialize, ToSchema)]
pub struct ProbeList {
    pub probes: Vec<Probe>,
}

/// Events as stored: each an [`Event`]'s JSON, kept as the agent's report gave it, with its
/// `text` added.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    #[schema(value_type = Vec<EventWithText>)]
    pub events: Vec<Value>,
}

/// An event as the API serves it: the [`Event`] and its one line (or tree) of text.
#[derive(Serialize, ToSchema)]
pub struct EventWithText {
    #[serde(flatten)]
    pub event: Event,
    /// The event as every surface shows it to a person: instance, probe, then what it says
    /// (`periscope_core::render::event_text`; a snapshot is several lines).
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<periscope_core::api::Instance>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenEnvelope {
    pub token: TokenInfo,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<periscope_core::api::AuditEntry>,
}

/// What a report stored: events new to the server (one sent again is stored once).
#[derive(Serialize, ToSchema)]
pub struct Stored {
    pub stored: usize,
}

/// The calling token.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    pub role: Role,
}

/// The server's counters.
pub use periscope_core::api::ServerStatus as Status;

/// An agent's answer was stored.
#[derive(Serialize, ToSchema)]
pub struct Answered {
    /// The code request answered.
    pub answered: i64,
}

pub use periscope_core::code::Checked;

pub use periscope_core::api::Verdict;

/// 404 for a probe that was removed: the answer it had, with `error` (or, for an unknown
/// probe, `error` alone).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProbeGone {
    error: String,
    probe: Option<Probe>,
}

/// 404 for the events of a probe that was removed: what it gathered, with `error`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventsGone {
    error: String,
    #[schema(value_type = Option<Vec<EventWithText>>)]
    events: Option<Vec<Value>>,
}

/// 404 for the result of a verify probe that was removed: its result, with `error`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct VerdictGone {
    error: String,
    hits: Option<u64>,
    candidates: Option<Vec<periscope_core::verify::CandidateResult>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's routers: each adds its routes with `routes!`, so each is documented; a plain
    /// axum `.route(` (undocumented) appears only for the console's page, script and style.
    const ROUTERS: [(&str, &str); 6] = [
        ("routes.rs", include_str!("routes.rs")),
        ("agents.rs", include_str!("agents.rs")),
        ("code.rs", include_str!("code.rs")),
        ("tokens.rs", include_str!("tokens.rs")),
        ("verdicts.rs", include_str!("verdicts.rs")),
        ("console.rs", include_str!("console.rs")),
    ];

    #[test]
    fn routes_are_added_only_where_they_are_documented() {
        for (file, text) in ROUTERS {
            for plain in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                for (at, _) in text.match_indices(plain) {
                    let path = text[at + plain.len()..]
                        .trim_start()
                        .split('"')
                        .nth(1)
                        .unwrap_or_default();
                    assert!(
                        file == "console.rs" && !path.starts_with("/api/"),
                        "{file}: `{plain}\"{path}\"` serves a route the document does not list; add it with routes! and #[utoipa::path]"
                    );
                }
            }
        }
    }

    #[test]
    fn every_operation_says_its_errors_and_the_document_is_openapi_3_0() {
        let (_, doc) = api().split_for_parts();
        let doc = document(doc);
        assert_eq!(doc["openapi"], "3.0.3");
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        let text = doc.to_string();
        for v31 in ["\"type\":[", "\"type\":\"null\"", "propertyNames"] {
            assert!(!text.contains(v31), "3.1 keyword left: {v31}");
        }
        let mut ops = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops += 1;
                for code in ["400", "401", "403"] {
                    assert!(
                        op["responses"][code].is_object(),
                        "{method} {path} lacks {code}"
                    );
                }
                let has_2xx = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|c| c.starts_with('2'));
                assert!(has_2xx, "{method} {path} has no success answer");
                // Every path parameter is declared.
                for name in path.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                    let declared = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path")
                    });
                    assert!(declared, "{method} {path}: `{name}` not declared");
                }
            }
        }
        assert_eq!(ops, 24, "operations documented");
        // Every reference resolves.
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = part.split('"').next().unwrap();
            let (kind, name) = target.split_once('/').unwrap();
            assert!(
                doc["components"][kind][name].is_object(),
                "unresolved reference {target}"
            );
        }
    }

    #[test]
    fn integers_get_their_format_bounds_and_optional_bodies_are_never_null() {
        let (_, doc) = api().split_for_parts();
        let doc = document(doc);
        let pid = &doc["components"]["schemas"]["Instance"]["properties"]["pid"];
        assert_eq!(
            (pid["minimum"].as_u64(), pid["maximum"].as_u64()),
            (Some(0), Some(u32::MAX as u64))
        );
        let resume = &doc["paths"]["/api/v1/probes/{id}/resume"]["post"]["requestBody"];
        assert_ne!(resume["required"], true);
        let schema = &resume["content"]["application/json"]["schema"];
        assert_eq!(
            schema["$ref"], "#/components/schemas/ResumeProbe",
            "{schema}"
        );
    }
}
