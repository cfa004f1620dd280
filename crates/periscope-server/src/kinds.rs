//! Refuses a numeric `kind` anywhere in a request body.
//!
//! Events and typed values are tagged by a `kind` name (`"log"`, `"int"`, …). serde, reading
//! a tagged enum, also takes a variant's index (`"kind": 0`), which the API does not document
//! and no client should rely on. Nowhere in the API is a `kind` a number, so one pass over the
//! JSON (no tree built, keys borrowed) finds any: serde has no switch to turn the index off.

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Deserializing this checks a JSON document and keeps nothing.
pub struct NoNumericKind;

impl<'de> Deserialize<'de> for NoNumericKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Walk)
    }
}

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = NoNumericKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoNumericKind)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoNumericKind)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoNumericKind)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoNumericKind)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoNumericKind)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoNumericKind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoNumericKind>()?.is_some() {}
        Ok(NoNumericKind)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "kind" {
                let value = map.next_value::<KindValue>()?;
                if value.0 {
                    return Err(A::Error::custom(
                        "`kind` must be a name such as \"log\" or \"int\", not a number",
                    ));
                }
            } else {
                map.next_value::<NoNumericKind>()?;
            }
        }
        Ok(NoNumericKind)
    }
}

/// A `kind` value: whether it is a number (anything else is left to the real parse).
struct KindValue(bool);

impl<'de> Deserialize<'de> for KindValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KindValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a kind")
            }
            fn visit_i64<E>(self, _: i64) -> Result<KindValue, E> {
                Ok(KindValue(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<KindValue, E> {
                Ok(KindValue(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<KindValue, E> {
                Ok(KindValue(true))
            }
            fn visit_str<E>(self, _: &str) -> Result<KindValue, E> {
                Ok(KindValue(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<KindValue, E> {
                Ok(KindValue(false))
            }
            fn visit_unit<E>(self) -> Result<KindValue, E> {
                Ok(KindValue(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<KindValue, A::Error> {
                Walk.visit_seq(seq).map(|_| KindValue(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KindValue, A::Error> {
                // A variable named `kind` holds a value object: check inside it too.
                Walk.visit_map(map).map(|_| KindValue(false))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> bool {
        serde_json::from_str::<NoNumericKind>(s).is_ok()
    }

    #[test]
    fn a_numeric_kind_is_refused_at_any_depth_and_names_pass() {
        assert!(check(
            r#"{"events":[{"kind":"log","values":{"x":{"kind":"int","value":1}}}]}"#
        ));
        assert!(check(r#"{"values":{"kind":{"kind":"int","value":1}}}"#));
        assert!(!check(r#"{"events":[{"kind":0}]}"#));
        assert!(!check(r#"{"a":[{"b":{"target":{"kind":3}}}]}"#));
    }
}
