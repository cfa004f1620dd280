//! The schema of a probe request (`POST /api/v1/probes`, `POST /api/v1/probes/check`): one
//! shape per kind, each with only the fields that kind takes, so a client generator or an API
//! tester reading the document builds requests the server accepts.
//!
//! Every property's schema (type, format, bounds, description) is the derived schema of
//! [`NewProbe`] (the `ProbeFields` component): this module only says which fields each kind
//! requires and allows, the rules [`crate::compile`] checks.

use crate::api::{NewProbe, ProbeKind};
use std::borrow::Cow;
use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The request body's schema, named `NewProbe` in the document.
pub struct ProbeRequest;

/// Fields every kind takes besides `kind`, `target` and `location`.
const COMMON: [&str; 7] = [
    "ttl_seconds",
    "max_hits",
    "rate_limit",
    "frames",
    "budget_ms",
    "condition",
    "engine",
];

/// Lists whose items must differ (two candidates alike are refused): utoipa has no attribute
/// for `uniqueItems`, so it is set here.
const UNIQUE: [&str; 1] = ["fixes"];

/// Every kind, in the order the document lists their shapes.
pub const KINDS: [ProbeKind; 7] = [
    ProbeKind::Log,
    ProbeKind::Snapshot,
    ProbeKind::Count,
    ProbeKind::Duration,
    ProbeKind::Gauge,
    ProbeKind::Failures,
    ProbeKind::Verify,
];

/// One shape of a probe request.
pub struct Shape {
    pub kind: ProbeKind,
    /// Fields required beyond `kind`, `target` and `location`.
    pub required: &'static [&'static str],
    /// Optional fields beyond [`COMMON`].
    pub optional: &'static [&'static str],
    /// Common fields this shape does not take.
    pub without: &'static [&'static str],
    /// Fields that may only be given as `null` (absent in effect), with why.
    pub null_only: &'static [(&'static str, &'static str)],
}

/// The shapes of `kind`'s requests (a verify probe has two: shadow and replay mode).
pub fn shapes(kind: ProbeKind) -> Vec<Shape> {
    let shape = |required, optional| Shape {
        kind,
        required,
        optional,
        without: &[],
        null_only: &[],
    };
    match kind {
        ProbeKind::Log => vec![shape(&["template"], &[])],
        ProbeKind::Snapshot => vec![shape(&[], &["watch"])],
        ProbeKind::Count | ProbeKind::Duration => vec![shape(&[], &["by"])],
        ProbeKind::Gauge => vec![shape(&["value"], &["by"])],
        ProbeKind::Failures => vec![shape(&[], &[])],
        ProbeKind::Verify => vec![
            Shape {
                null_only: &[("replay", "shadow mode: no replay")],
                ..shape(&["failure", "fixes"], &["keep"])
            },
            // Replay mode reads the failure in the copy at UNTIL: no condition at FROM.
            Shape {
                without: &["condition"],
                ..shape(&["failure", "fixes", "replay"], &["keep"])
            },
        ],
    }
}

/// A list field's schema with `uniqueItems` when [`UNIQUE`] names it.
fn unique(name: &str, schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Array(mut a)) if UNIQUE.contains(&name) => {
            a.unique_items = true;
            RefOr::T(Schema::Array(a))
        }
        other => other,
    }
}

/// A required field's schema: its type without `null` (an absent field is not null).
fn not_null(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut o)) => {
            if let SchemaType::Array(types) = &o.schema_type {
                let mut left: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                o.schema_type = match left.len() {
                    1 => SchemaType::Type(left.remove(0)),
                    _ => SchemaType::Array(left),
                };
            }
            RefOr::T(Schema::Object(o))
        }
        other => other,
    }
}

fn shape_schema(fields: &Object, shape: &Shape) -> Object {
    let mut o = ObjectBuilder::new()
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([shape.kind.as_str()])),
        )
        .required("kind")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build();
    let required = ["target", "location"].iter().chain(shape.required);
    for name in required {
        if let Some(s) = fields.properties.get(*name) {
            o.properties
                .insert(name.to_string(), unique(name, not_null(s.clone())));
            o.required.push(name.to_string());
        }
    }
    let optional = COMMON
        .iter()
        .filter(|f| !shape.without.contains(f))
        .chain(shape.optional);
    for name in optional {
        if let Some(s) = fields.properties.get(*name) {
            o.properties
                .insert(name.to_string(), unique(name, s.clone()));
        }
    }
    for (name, why) in shape.null_only {
        let null = ObjectBuilder::new()
            .schema_type(Type::Null)
            .description(Some(*why));
        o.properties.insert(name.to_string(), null.into());
    }
    o
}

impl PartialSchema for ProbeRequest {
    fn schema() -> RefOr<Schema> {
        let fields = match NewProbe::schema() {
            RefOr::T(Schema::Object(o)) => o,
            // The derive makes an object of a struct: nothing else can come here.
            _ => Object::new(),
        };
        let mut one_of = OneOfBuilder::new().description(Some(
            "A probe request: one shape per kind (a verify probe in shadow or replay mode). \
             Expression, template, location, selector, fix and replay texts are in the Periscope \
             syntax the README describes; the server parses them and answers 400 naming the \
             field when one does not parse.",
        ));
        for kind in KINDS {
            for shape in shapes(kind) {
                one_of = one_of.item(shape_schema(&fields, &shape));
            }
        }
        one_of.into()
    }
}

impl ToSchema for ProbeRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NewProbe")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((NewProbe::name().into_owned(), NewProbe::schema()));
        NewProbe::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, MAX_FRAMES, MAX_TTL_SECONDS};
    use serde_json::{json, Value};

    fn document() -> Value {
        serde_json::to_value(ProbeRequest::schema()).unwrap()
    }

    #[test]
    fn every_kind_has_a_shape_and_each_shape_forbids_other_fields() {
        let doc = document();
        let shapes = doc["oneOf"].as_array().unwrap();
        let kinds: Vec<&str> = shapes
            .iter()
            .map(|s| s["properties"]["kind"]["enum"][0].as_str().unwrap())
            .collect();
        for k in KINDS {
            assert!(kinds.contains(&k.as_str()), "{k:?} has no shape");
        }
        let all = serde_json::to_value(ProbeKind::schema()).unwrap();
        assert_eq!(all["enum"].as_array().unwrap().len(), KINDS.len());
        for s in shapes {
            assert_eq!(s["additionalProperties"], false);
            for r in s["required"].as_array().unwrap() {
                let p = &s["properties"][r.as_str().unwrap()];
                assert!(p.is_object(), "{r} is required but not described");
                assert_ne!(p["type"], json!(null), "{r}: {p}");
                assert!(!p["type"].to_string().contains("null"), "{r} may be null");
            }
        }
    }

    /// A minimal request of each shape, with its required texts filled: compile accepts it,
    /// and rejects it with a field no shape of the kind allows.
    #[test]
    fn the_shapes_are_what_compile_accepts() {
        let sample = |field: &str| match field {
            "template" => json!("x={x}"),
            "value" | "failure" => json!("x > 1"),
            "fixes" => json!(["capped: x = 1"]),
            "replay" => json!("main.rs:1..main.rs:9"),
            _ => json!(null),
        };
        for kind in KINDS {
            for shape in shapes(kind) {
                let mut body =
                    json!({"kind": kind.as_str(), "target": "service=a", "location": "main.rs:3"});
                for f in shape.required {
                    body[*f] = sample(f);
                }
                let p: NewProbe = serde_json::from_value(body.clone()).unwrap();
                compile(&p).unwrap_or_else(|e| panic!("{body}: {}", e.message));
                let allowed: Vec<&str> = shapes(kind)
                    .iter()
                    .flat_map(|s| s.required.iter().chain(s.optional))
                    .copied()
                    .collect();
                for (field, v) in [
                    ("watch", json!(["x"])),
                    ("by", json!("x")),
                    ("value", json!("x")),
                ] {
                    if allowed.contains(&field) {
                        continue;
                    }
                    let mut bad = body.clone();
                    bad[field] = v;
                    let p: NewProbe = serde_json::from_value(bad.clone()).unwrap();
                    assert!(
                        compile(&p).is_err(),
                        "{bad} compiles, yet no shape takes {field}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_bounds_are_those_compile_checks() {
        let fields = serde_json::to_value(NewProbe::schema()).unwrap();
        let p = &fields["properties"];
        assert_eq!(p["ttl_seconds"]["maximum"], json!(MAX_TTL_SECONDS));
        assert_eq!(p["frames"]["maximum"], json!(MAX_FRAMES));
        let mut probe = NewProbe::new(ProbeKind::Snapshot, "service=a", "main.rs:3");
        probe.ttl_seconds = Some(MAX_TTL_SECONDS + 1);
        assert_eq!(compile(&probe).unwrap_err().field, "ttl_seconds");
        probe.ttl_seconds = Some(MAX_TTL_SECONDS);
        probe.frames = Some(MAX_FRAMES + 1);
        assert_eq!(compile(&probe).unwrap_err().field, "frames");
        probe.frames = None;
        let max_budget = p["budget_ms"]["maximum"].as_u64().unwrap();
        probe.budget_ms = Some(max_budget);
        assert!(compile(&probe).is_ok());
        probe.budget_ms = Some(max_budget + 1);
        assert_eq!(compile(&probe).unwrap_err().field, "budget_ms");
    }
}
