//! What the generated document needs besides the attributes: optional bodies, the bounds of
//! integer formats, and the OpenAPI 3.0 dialect the API has always been described in.
//!
//! utoipa writes OpenAPI 3.1 (JSON Schema 2020-12). The document stays 3.0.3: client
//! generators read it as they always did, and in 3.0 an `integer` is a JSON number without a
//! fraction (`5`, not `5.0`), which is what the server's integer fields take; in 2020-12 `5.0`
//! is an integer too.

use serde_json::{Map, Value};

/// An optional request body is annotated `Option<T>`: it may be left out, never sent as
/// `null` (every body is a JSON object), so its schema is `T`'s and the body not required.
pub(super) fn optional_bodies(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|m| m.values_mut())
    {
        let Some(body) = op.get_mut("requestBody") else {
            continue;
        };
        if body.get("required") == Some(&Value::Bool(true)) {
            continue;
        }
        let schemas = body
            .get_mut("content")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|c| c.values_mut())
            .filter_map(|media| media.get_mut("schema"));
        for schema in schemas {
            let inner = schema
                .get("oneOf")
                .and_then(Value::as_array)
                .and_then(|alts| {
                    let rest: Vec<&Value> = alts.iter().filter(|a| a["type"] != "null").collect();
                    (rest.len() == 1 && alts.len() == 2).then(|| rest[0].clone())
                });
            if let Some(inner) = inner {
                *schema = inner;
            }
        }
    }
}

/// Gives each integer schema the range of its format (`int64`, `uint32`, …) unless it says its
/// own; an unsigned integer without a format (a `usize`) gets `u64`'s range.
pub(super) fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let is_int = map.get("type").is_some_and(|t| {
                t == "integer"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|t| t == "integer"))
            });
            if is_int {
                // utoipa names the unsigned formats `u-int32`/`u-int64`; OpenAPI's registry
                // spells them `uint32`/`uint64`.
                if let Some(Value::String(f)) = map.get_mut("format") {
                    *f = f.replace("u-int", "uint");
                }
                let format = map.get("format").and_then(Value::as_str).unwrap_or("");
                let unsigned = map.get("minimum").and_then(Value::as_i64) == Some(0);
                let range: Option<(Value, Value)> = match format {
                    "int32" => Some((i32::MIN.into(), i32::MAX.into())),
                    "int64" => Some((i64::MIN.into(), i64::MAX.into())),
                    "uint8" => Some((0.into(), u8::MAX.into())),
                    "uint16" => Some((0.into(), u16::MAX.into())),
                    "uint32" => Some((0.into(), u32::MAX.into())),
                    "uint64" => Some((0.into(), u64::MAX.into())),
                    "" if unsigned => Some((0.into(), u64::MAX.into())),
                    _ => None,
                };
                if let Some((min, max)) = range {
                    map.entry("minimum").or_insert(min);
                    map.entry("maximum").or_insert(max);
                }
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// A struct that refuses unknown fields is a closed schema; flattened into another (serde's
/// `flatten`, an `allOf` part) it must not be, or no object with the other part's fields
/// would match (a `Probe` is its `ProbeFields` and more). Request shapes that are closed say
/// so themselves.
pub(super) fn open_flattened(doc: &mut Value) {
    let mut parts = Vec::new();
    collect_all_of_refs(doc, &mut parts);
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for name in parts {
        if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            if s.get("additionalProperties") == Some(&false.into()) {
                s.remove("additionalProperties");
            }
        }
    }
}

fn collect_all_of_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(parts)) = map.get("allOf") {
                let names = parts.iter().filter_map(|p| {
                    p.get("$ref")?
                        .as_str()?
                        .strip_prefix("#/components/schemas/")
                });
                out.extend(names.map(str::to_string));
            }
            map.values().for_each(|v| collect_all_of_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_all_of_refs(v, out)),
        _ => {}
    }
}

/// Rewrites the 3.1 schema keywords utoipa writes into their 3.0 forms: `type: [T, "null"]`
/// becomes `type: T, nullable: true`, a `oneOf` of null and one schema that schema made
/// nullable, a numeric `exclusiveMinimum` the 3.0 boolean with `minimum`; what 3.0 lacks
/// (`propertyNames`, the license `identifier`) is dropped.
pub(super) fn to_openapi_30(doc: &mut Value) {
    doc["openapi"] = "3.0.3".into();
    if let Some(license) = doc
        .pointer_mut("/info/license")
        .and_then(Value::as_object_mut)
    {
        license.remove("identifier");
    }
    schemas_30(doc);
}

fn schemas_30(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.values_mut().for_each(schemas_30);
            nullable_30(map);
            for (exclusive, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(n) = map.get(exclusive).filter(|n| n.is_number()).cloned() {
                    map.insert(bound.into(), n);
                    map.insert(exclusive.into(), true.into());
                }
            }
            if map
                .get("propertyNames")
                .is_some_and(|p| p.get("type") == Some(&"string".into()))
            {
                map.remove("propertyNames");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(schemas_30),
        _ => {}
    }
}

fn nullable_30(map: &mut Map<String, Value>) {
    match map.get("type") {
        Some(Value::Array(types)) if types.iter().any(|t| t == "null") => {
            let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            if let [one] = rest.as_slice() {
                map.insert("type".into(), one.clone());
            } else {
                map.insert("type".into(), rest.into());
            }
            map.insert("nullable".into(), true.into());
        }
        // Only null: a field that may be given as null and nothing else.
        Some(Value::String(t)) if t == "null" => {
            map.remove("type");
            map.insert("nullable".into(), true.into());
            map.insert("enum".into(), vec![Value::Null].into());
        }
        _ => {}
    }
    let null_or_one = map.get("oneOf").and_then(Value::as_array).and_then(|alts| {
        let is_null = |a: &Value| {
            a.get("nullable") == Some(&true.into())
                && a.get("enum") == Some(&vec![Value::Null].into())
        };
        let rest: Vec<&Value> = alts.iter().filter(|a| !is_null(a)).collect();
        (alts.len() == 2 && rest.len() == 1).then(|| rest[0].clone())
    });
    if let Some(one) = null_or_one {
        map.remove("oneOf");
        // A $ref takes no siblings in 3.0: the nullable reference is an allOf of one.
        map.insert("allOf".into(), vec![one].into());
        map.insert("nullable".into(), true.into());
    }
}
