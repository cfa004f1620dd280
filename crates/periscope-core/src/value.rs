//! The typed value tree every captured variable becomes, and its two renderings: the stable JSON
//! shape (see ARCHITECTURE.md, "JSON shapes") and a one-line text form for log messages.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::openapi::{schema, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A value read from the target, tagged by `kind`. The value tree is recursive: its nested
/// values are marked `no_recursion` so the document's schema collection stops at the
/// `TypedValue` component they refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[schema(as = TypedValue)]
pub enum Value {
    Int {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        value: Int128,
    },
    Float {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        value: f64,
    },
    Bool {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        value: bool,
    },
    Char {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        value: String,
    },
    String {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        value: String,
        /// The real length in bytes, even when `value` was cut.
        len: u64,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    Struct {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        fields: Fields,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    Enum {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        variant: String,
        #[serde(default, skip_serializing_if = "Fields::is_empty")]
        fields: Fields,
    },
    List {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        len: u64,
        /// A Go slice's capacity.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cap: Option<u64>,
        #[schema(no_recursion, value_type = Vec<Nested>)]
        items: Vec<Value>,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    Map {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        len: u64,
        #[schema(no_recursion)]
        entries: Vec<Entry>,
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    Pointer {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        /// `0x…` in hex; [`NULL_ADDRESS`] for null, in every language (a Go `nil` too).
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(no_recursion, value_type = Option<Nested>)]
        target: Option<Box<Value>>,
        /// A C++ `std::shared_ptr`/`std::weak_ptr`: the owners (`use_count()`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        use_count: Option<u64>,
        /// A C++ `std::shared_ptr`/`std::weak_ptr`: the weak references, as gdb counts them
        /// (the one the owners hold together left out while any owner lives).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weak_count: Option<u64>,
    },
    Function {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        symbol: String,
    },
    Unit {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
    },
    Unavailable {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
        reason: String,
    },
    Redacted {
        #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
        ty: Option<String>,
    },
}

/// The reason text used for values whose type the renderer does not know yet; rendered as
/// `<unsupported: TYPE>` so a user never mistakes it for data.
pub const UNSUPPORTED: &str = "unsupported type";
pub const OPTIMIZED_OUT: &str = "optimized out";
/// The address of a null pointer, whatever the language calls it (`NULL`, `nullptr`, `nil`):
/// one shape for null, `{"kind":"pointer","type":…,"address":"0x0"}` with no `target`.
pub const NULL_ADDRESS: &str = "0x0";

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    #[schema(no_recursion, value_type = Nested)]
    pub key: Value,
    #[schema(no_recursion, value_type = Nested)]
    pub value: Value,
}

/// [`Value`] under another name for its schema: utoipa takes a field's type named `Value` for
/// `serde_json::Value` (any JSON), so nested values name the type so.
type Nested = Value;

/// Named fields in declaration order (JSON objects keep that order when written).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields(pub Vec<(String, Value)>);

impl Fields {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A JSON object of values. Its schema refers to `TypedValue` without collecting it (the
/// value tree would recurse): the document lists `TypedValue` itself.
impl PartialSchema for Fields {
    fn schema() -> RefOr<Schema> {
        schema::ObjectBuilder::new()
            .description(Some("Named values, in declaration order."))
            .additional_properties(Some(schema::Ref::from_schema_name(Value::name())))
            .into()
    }
}

impl ToSchema for Fields {}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of field names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An integer of up to 128 bits, signed or unsigned: a JSON number when it fits 64 bits, a
/// decimal string beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int128 {
    Signed(i128),
    Unsigned(u128),
}

/// A JSON number from `i64::MIN` to `u64::MAX`, or a decimal string (up to 38 digits: within
/// 128 bits) beyond.
impl PartialSchema for Int128 {
    fn schema() -> RefOr<Schema> {
        let number = schema::ObjectBuilder::new()
            .schema_type(schema::Type::Integer)
            .minimum(Some(utoipa::Number::Int(i64::MIN as isize)))
            .maximum(Some(utoipa::Number::UInt(u64::MAX as usize)));
        let text = schema::ObjectBuilder::new()
            .schema_type(schema::Type::String)
            .pattern(Some("^-?[0-9]{1,38}$"));
        schema::OneOfBuilder::new().item(number).item(text).into()
    }
}

impl ToSchema for Int128 {}

impl Int128 {
    /// The value as i128, when it fits (every value but unsigned ones above i128::MAX).
    pub fn as_i128(self) -> Option<i128> {
        match self {
            Int128::Signed(v) => Some(v),
            Int128::Unsigned(v) => i128::try_from(v).ok(),
        }
    }
}

impl From<i128> for Int128 {
    fn from(v: i128) -> Self {
        Int128::Signed(v)
    }
}

impl fmt::Display for Int128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Int128::Signed(v) => write!(f, "{v}"),
            Int128::Unsigned(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for Int128 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (as_i64, as_u64) = match *self {
            Int128::Signed(v) => (i64::try_from(v).ok(), u64::try_from(v).ok()),
            Int128::Unsigned(v) => (i64::try_from(v).ok(), u64::try_from(v).ok()),
        };
        match (as_i64, as_u64) {
            (Some(v), _) => s.serialize_i64(v),
            (None, Some(v)) => s.serialize_u64(v),
            _ => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Int128 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int128;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int128, E> {
                Ok(Int128::Signed(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int128, E> {
                Ok(Int128::Signed(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int128, E> {
                match v.parse::<i128>() {
                    Ok(i) => Ok(Int128::Signed(i)),
                    Err(_) => v.parse::<u128>().map(Int128::Unsigned).map_err(E::custom),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Value {
    pub fn int(ty: impl Into<String>, v: i128) -> Value {
        Value::Int {
            ty: Some(ty.into()),
            value: Int128::Signed(v),
        }
    }

    /// A null pointer (or Go's `nil` map, slice, channel, function or interface) of type `ty`.
    pub fn null(ty: Option<String>) -> Value {
        Value::Pointer {
            ty,
            address: NULL_ADDRESS.into(),
            target: None,
            use_count: None,
            weak_count: None,
        }
    }

    /// Whether this is the null pointer shape.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Pointer { address, target: None, .. } if address == NULL_ADDRESS)
    }

    pub fn unavailable(ty: Option<String>, reason: impl Into<String>) -> Value {
        Value::Unavailable {
            ty,
            reason: reason.into(),
        }
    }

    pub fn type_name(&self) -> Option<&str> {
        match self {
            Value::Int { ty, .. }
            | Value::Float { ty, .. }
            | Value::Bool { ty, .. }
            | Value::Char { ty, .. }
            | Value::String { ty, .. }
            | Value::Struct { ty, .. }
            | Value::Enum { ty, .. }
            | Value::List { ty, .. }
            | Value::Map { ty, .. }
            | Value::Pointer { ty, .. }
            | Value::Function { ty, .. }
            | Value::Unit { ty }
            | Value::Unavailable { ty, .. }
            | Value::Redacted { ty } => ty.as_deref(),
        }
    }

    /// The text form used in a log message: top-level strings bare, everything else as
    /// [`fmt::Display`] renders it.
    pub fn to_message_text(&self) -> String {
        match self {
            Value::String {
                value, truncated, ..
            } => {
                if *truncated {
                    format!("{value}…")
                } else {
                    value.clone()
                }
            }
            Value::Char { value, .. } => value.clone(),
            Value::Pointer {
                ty,
                target: Some(t),
                ..
            } if ty.as_deref().is_some_and(|t| t.starts_with('&')) => t.to_message_text(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int { value, .. } => write!(f, "{value}"),
            // Debug form: shortest round-trip digits, exponent for very large or small values.
            Value::Float { value, .. } => write!(f, "{value:?}"),
            Value::Bool { value, .. } => write!(f, "{value}"),
            Value::Char { value, .. } => write!(f, "'{value}'"),
            Value::String {
                value, truncated, ..
            } => {
                write!(f, "{value:?}")?;
                if *truncated {
                    write!(f, "…")?;
                }
                Ok(())
            }
            Value::Struct {
                ty,
                fields,
                truncated,
            } => {
                // Tuples read as `(1, "x")`, not with their type name in front.
                let name = ty
                    .as_deref()
                    .filter(|t| !t.starts_with('('))
                    .map(short_type_name)
                    .unwrap_or_default();
                let tuple = fields.0.first().is_some_and(|(n, _)| n == "0");
                write_fields(f, &name, fields, tuple, *truncated)
            }
            Value::Enum {
                variant, fields, ..
            } => {
                if fields.is_empty() {
                    write!(f, "{variant}")
                } else {
                    let tuple = fields.0.first().is_some_and(|(n, _)| n == "0");
                    write_fields(f, variant, fields, tuple, false)
                }
            }
            Value::List {
                items, truncated, ..
            } => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if *truncated {
                    write!(f, "{}…", if items.is_empty() { "" } else { ", " })?;
                }
                write!(f, "]")
            }
            Value::Map {
                entries, truncated, ..
            } => {
                write!(f, "{{")?;
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}: {}", e.key, e.value)?;
                }
                if *truncated {
                    write!(f, "{}…", if entries.is_empty() { "" } else { ", " })?;
                }
                write!(f, "}}")
            }
            Value::Pointer {
                address,
                target,
                ty,
                use_count,
                weak_count,
            } => {
                match target {
                    // Rust references read as the value they refer to, as in `{:?}`.
                    Some(t) if ty.as_deref().is_some_and(|t| t.starts_with('&')) => {
                        write!(f, "{t}")?
                    }
                    Some(t) => write!(f, "{address} → {t}")?,
                    None => write!(f, "{address}")?,
                }
                match (use_count, weak_count) {
                    (Some(0), Some(w)) => write!(f, " (expired, weak count {w})"),
                    (Some(u), Some(w)) => write!(f, " (use count {u}, weak count {w})"),
                    _ => Ok(()),
                }
            }
            Value::Function { symbol, .. } => write!(f, "fn {symbol}"),
            Value::Unit { .. } => write!(f, "()"),
            Value::Unavailable { ty, reason } => {
                if reason == OPTIMIZED_OUT {
                    write!(f, "<optimized out>")
                } else if reason == UNSUPPORTED {
                    write!(f, "<unsupported: {}>", ty.as_deref().unwrap_or("?"))
                } else {
                    write!(f, "<unavailable: {reason}>")
                }
            }
            Value::Redacted { .. } => write!(f, "<redacted>"),
        }
    }
}

fn write_fields(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    fields: &Fields,
    tuple: bool,
    truncated: bool,
) -> fmt::Result {
    let (open, close) = if tuple { ("(", ")") } else { (" { ", " }") };
    if fields.0.is_empty() && truncated {
        // Cut at the depth limit before any field: the type, and that it was cut.
        return write!(f, "{name}{}", if tuple { "(…)" } else { " {…}" });
    }
    write!(f, "{name}{open}")?;
    for (i, (n, v)) in fields.0.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        if tuple {
            write!(f, "{v}")?;
        } else {
            write!(f, "{n}: {v}")?;
        }
    }
    if truncated {
        write!(f, ", …")?;
    }
    write!(f, "{close}")
}

/// `ledger::Account` → `Account`, `alloc::vec::Vec<u8>` → `Vec<u8>`: the name a reader expects in a
/// one-line rendering.
pub fn short_type_name(full: &str) -> String {
    let head = full.split('<').next().unwrap_or(full);
    let cut = head.rfind("::").map(|i| i + 2).unwrap_or(0);
    full[cut..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_one_shape() {
        let v = Value::null(Some("*main.Request".into()));
        assert!(v.is_null());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"kind":"pointer","type":"*main.Request","address":"0x0"}"#
        );
        assert_eq!(v.to_string(), "0x0");
    }

    #[test]
    fn json_shape_is_stable() {
        let v = Value::Struct {
            ty: Some("ledger::Account".into()),
            fields: Fields(vec![
                (
                    "owner".into(),
                    Value::String {
                        ty: Some("alloc::string::String".into()),
                        value: "owner-1".into(),
                        len: 7,
                        truncated: false,
                    },
                ),
                ("balance".into(), Value::int("i64", 8591)),
                (
                    "big".into(),
                    Value::Int {
                        ty: Some("u128".into()),
                        value: Int128::Unsigned(u128::MAX),
                    },
                ),
            ]),
            truncated: false,
        };
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(
            j,
            r#"{"kind":"struct","type":"ledger::Account","fields":{"owner":{"kind":"string","type":"alloc::string::String","value":"owner-1","len":7},"balance":{"kind":"int","type":"i64","value":8591},"big":{"kind":"int","type":"u128","value":"340282366920938463463374607431768211455"}}}"#
        );
        let back: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(back, v);
        assert_eq!(
            v.to_string(),
            "Account { owner: \"owner-1\", balance: 8591, big: 340282366920938463463374607431768211455 }"
        );
    }

    #[test]
    fn values_cut_at_the_depth_limit_show_their_type_and_the_cut() {
        let cut = Value::Struct {
            ty: Some("shop::Item".into()),
            fields: Fields::default(),
            truncated: true,
        };
        assert_eq!(cut.to_string(), "Item {…}");
        let list = Value::List {
            ty: Some("alloc::vec::Vec<u8>".into()),
            len: 4,
            cap: None,
            items: Vec::new(),
            truncated: true,
        };
        assert_eq!(list.to_string(), "[…]");
        let outer = Value::Struct {
            ty: Some("shop::Order".into()),
            fields: Fields(vec![
                ("item".into(), cut),
                ("n".into(), Value::int("u8", 1)),
            ]),
            truncated: false,
        };
        assert_eq!(outer.to_string(), "Order { item: Item {…}, n: 1 }");
    }

    #[test]
    fn text_forms() {
        let na = Value::unavailable(Some("Foo".into()), UNSUPPORTED);
        assert_eq!(na.to_string(), "<unsupported: Foo>");
        assert_eq!(
            Value::unavailable(None, OPTIMIZED_OUT).to_string(),
            "<optimized out>"
        );
        let s = Value::String {
            ty: None,
            value: "hi".into(),
            len: 2,
            truncated: false,
        };
        assert_eq!(s.to_message_text(), "hi");
        assert_eq!(s.to_string(), "\"hi\"");
    }
}
