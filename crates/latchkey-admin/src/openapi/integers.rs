//! Unsigned 64-bit integers as the server reads them.
//!
//! utoipa writes a `u64` as `"format": "int64"`, whose range ends at 2^63 − 1, while the
//! server accepts anything up to 2^64 − 1: a client (or a fuzzer) that trusts the format
//! expects `9223372036854775808` to be refused, and it is not. This pass states the real
//! range, `"format": "uint64"` with `"maximum": 18446744073709551615` unless it states a
//! maximum of its own, on every `int64` schema with a non-negative `minimum`.

use serde_json::Value;
use utoipa::Modify;
use utoipa::openapi::OpenApi;

/// Rewrites every non-negative `int64` schema of the document as `uint64`.
pub(super) struct UnsignedIntegers;

impl Modify for UnsignedIntegers {
    fn modify(&self, openapi: &mut OpenApi) {
        let Ok(mut document) = serde_json::to_value(&*openapi) else {
            return;
        };
        rewrite(&mut document);
        if let Ok(rewritten) = serde_json::from_value(document) {
            *openapi = rewritten;
        }
    }
}

/// Walks the whole document: schemas sit in components, parameters and bodies alike.
fn rewrite(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let unsigned = object.get("format").and_then(Value::as_str) == Some("int64")
                && object.get("minimum").and_then(Value::as_u64).is_some();
            if unsigned {
                object.insert("format".into(), "uint64".into());
                object
                    .entry("maximum")
                    .or_insert_with(|| Value::from(u64::MAX));
            }
            object.values_mut().for_each(rewrite);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn only_non_negative_int64_becomes_uint64() {
        let mut doc = json!({
            "a": {"type": "integer", "format": "int64", "minimum": 0},
            "b": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 31_536_000},
            "c": [{"type": "integer", "format": "int64"}],
            "d": {"type": "integer", "format": "int32", "minimum": 0},
            "e": {"type": "integer", "format": "int64", "minimum": 1},
        });
        super::rewrite(&mut doc);
        assert_eq!(
            doc,
            json!({
                "a": {"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX},
                "b": {"type": "integer", "format": "uint64", "minimum": 0, "maximum": 31_536_000},
                "c": [{"type": "integer", "format": "int64"}],
                "d": {"type": "integer", "format": "int32", "minimum": 0},
                "e": {"type": "integer", "format": "uint64", "minimum": 1, "maximum": u64::MAX},
            })
        );
    }
}
