//! Reading request bodies: bytes (within the body limit) → one JSON object → a typed
//! request, with every failure a 90001 that names the field (or 90002 for a body over
//! the limit).
//!
//! Requests are parsed field by field through [`Fields`] rather than by a derived
//! `Deserialize`, because serde's derived errors do not say *which* field was wrong
//! ("invalid type: string, expected u8") and the API promises messages such as
//! `userData[3].userSex: invalid type: string "x", expected u8`. Unknown fields are
//! refused (so a typo such as `lastSeq` never silently syncs from zero); `appId` is
//! always allowed at the top level because the conventions let the body repeat it.
//!
//! This module must never turn a body into a plain-text axum rejection.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Top-level key every body may carry besides its own fields.
pub const APP_ID: &str = "appId";

/// A request type parsed from a JSON object.
pub trait FromBody: Sized {
    /// Every field the request accepts (API names). Tests check this equals the
    /// request's OpenAPI schema, so the docs and the parser cannot drift apart.
    const FIELDS: &'static [&'static str];

    /// Builds the request from its fields (unknown ones were refused already).
    fn from_body(f: &Fields<'_>) -> Result<Self, ApiError>;
}

/// Reads the body within the configured limit and parses it as a JSON object. An empty
/// body counts as `{}` so calls without parameters need no body at all.
pub async fn read_object(req: Request<Body>, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let bytes = Bytes::from_request(req, &()).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::bad("body", "could not read the request body")
        }
    })?;
    parse_object(&bytes)
}

/// Parses `bytes` as one JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad("body", format!("expected a JSON object, found {}", json_kind(&other)))),
        Err(e) => Err(ApiError::bad("body", format!("invalid JSON: {e}"))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a whole body object into `T`, refusing unknown fields.
pub fn parse_body<T: FromBody>(map: &Map<String, Value>) -> Result<T, ApiError> {
    let f = Fields::new(map, "");
    f.only(T::FIELDS, true)?;
    T::from_body(&f)
}

/// Field-by-field access to one JSON object, with error paths. `prefix` is where the
/// object sits in the request (`""` for the body, `"userData[3]."` for an item).
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, prefix: impl Into<String>) -> Self {
        Self { map, prefix: prefix.into() }
    }

    /// The path of `key` for error messages.
    pub fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The prefix of this object (for nested paths).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Refuses any key not in `allowed` (plus `appId` if `top_level`).
    pub fn only(&self, allowed: &[&str], top_level: bool) -> Result<(), ApiError> {
        for key in self.map.keys() {
            let known = allowed.contains(&key.as_str()) || (top_level && key == APP_ID);
            if !known {
                return Err(ApiError::bad(
                    self.path(key),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The raw value of `key`; `null` counts as absent.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional field; `null` counts as absent.
    pub fn opt<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| ApiError::bad(self.path(key), e)),
        }
    }

    /// A required field.
    pub fn req<T: DeserializeOwned>(&self, key: &str) -> Result<T, ApiError> {
        self.opt(key)?.ok_or_else(|| ApiError::bad(self.path(key), "missing"))
    }

    /// A required array; its items are returned raw for per-item parsing.
    pub fn array(&self, key: &str) -> Result<&'a [Value], ApiError> {
        match self.raw(key) {
            None => Err(ApiError::bad(self.path(key), "missing")),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(ApiError::bad(self.path(key), format!("expected an array, found {}", json_kind(other)))),
        }
    }
}

/// An item of an array field as an object, for per-item parsing.
pub fn item_object<'v>(v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad(path, format!("expected an object, found {}", json_kind(other)))),
    }
}

/// Test helper: a request type's parser accepts exactly the fields its schema documents.
#[cfg(test)]
pub(crate) fn check_fields<T: utoipa::PartialSchema>(fields: &[&str]) {
    let schema = serde_json::to_value(T::schema()).expect("schemas serialize");
    let mut documented: Vec<String> =
        schema["properties"].as_object().expect("an object schema").keys().cloned().collect();
    documented.sort();
    let mut parsed: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    parsed.sort();
    assert_eq!(documented, parsed, "{}", std::any::type_name::<T>());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    fn check_err(body: &[u8], expect: &str) {
        match parse_object(body) {
            Err(e) => assert!(e.to_string().starts_with(expect), "{e} does not start with {expect}"),
            Ok(m) => panic!("{m:?} parsed"),
        }
    }

    #[test]
    fn bodies() {
        assert!(parse_object(b"").unwrap().is_empty());
        assert!(parse_object(b" \n").unwrap().is_empty());
        check_err(b"{", "body: invalid JSON: EOF while parsing an object at line 1 column 1");
        check_err(b"[1]", "body: expected a JSON object, found an array");
        check_err(b"nul", "body: invalid JSON");
    }

    #[test]
    fn field_errors_name_the_path() {
        let m = obj(json!({"a": "x", "n": null, "list": 3}));
        let f = Fields::new(&m, "userData[3].");
        assert_eq!(f.opt::<u8>("n").unwrap(), None);
        assert_eq!(f.req::<u8>("n").unwrap_err().to_string(), "userData[3].n: missing");
        assert_eq!(f.req::<u8>("a").unwrap_err().to_string(), "userData[3].a: invalid type: string \"x\", expected u8");
        assert_eq!(f.array("list").unwrap_err().to_string(), "userData[3].list: expected an array, found a number");
        let e = f.only(&["a", "n"], false).unwrap_err().to_string();
        assert!(e.starts_with("userData[3].list: unknown field"), "{e}");
    }

    #[test]
    fn app_id_is_allowed_at_the_top_only() {
        let m = obj(json!({"appId": 1}));
        assert!(Fields::new(&m, "").only(&[], true).is_ok());
        assert!(Fields::new(&m, "x.").only(&[], false).is_err());
    }
}
