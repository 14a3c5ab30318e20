//! Reading request bodies: bytes (within the body limit) → one JSON object → the
//! original system's common fields taken off ([`Common`]) → a typed request derived
//! with serde, with every failure a 90001 that names the field (or 90002 for a body
//! over the limit).
//!
//! Request types derive `Deserialize` with `deny_unknown_fields` (so a typo such as
//! `lastSeq` never silently syncs from zero); [`serde_path_to_error`] says where a
//! value failed and [`field_error`] turns serde's wording into the API's
//! (`userData[3].userSex: invalid type: string "x", expected u8`, `userId: missing`,
//! `usrId: unknown field (expected one of: userId)`). Before a value is typed it is
//! normalised once ([`normalize`]): `null` counts as absent and integral floats such as
//! `50.0` become integers, so every integer field accepts them without a per-field
//! helper (no request field is a float).
//!
//! This module must never turn a body into a plain-text axum rejection.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use utoipa::ToSchema;

use super::error::ApiError;

/// The fields every body of the original system may carry (its `RequestBase`). They are
/// taken off the top-level object before the request is typed, so request types never
/// repeat them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Common {
    /// The app; if given it must equal the query's `appId` (a number or a numeric
    /// string).
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 4294967295_u64)]
    pub app_id: Option<AppIdField>,
    /// The acting user (the original system's spelling). User-scoped calls use it when
    /// `fromId` is absent.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub operater: Option<String>,
    /// The caller's client type, as the original numbered them: 0 webApi, 1 web, 2 ios,
    /// 3 android, 4 windows, 5 mac (6 linux is Tern's addition).
    #[schema(minimum = 0, maximum = 6)]
    pub client_type: Option<u8>,
    /// The caller's device id (recorded in the request log only).
    #[schema(max_length = 128)]
    pub imei: Option<String>,
}

/// The names of [`Common`]'s fields in the API.
pub const COMMON_FIELDS: [&str; 4] = ["appId", "operater", "clientType", "imei"];

/// Highest `clientType` number (see [`Common::client_type`]).
pub const MAX_CLIENT_TYPE: u8 = 6;

/// `appId` as a body may write it: a number or a numeric string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppIdField(pub u32);

impl<'de> Deserialize<'de> for AppIdField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        n.and_then(|n| u32::try_from(n).ok())
            .map(AppIdField)
            .ok_or_else(|| serde::de::Error::custom(format!("{v} is not an app id")))
    }
}

/// Reads the body within the configured limit and parses it as a JSON object. An empty
/// body counts as `{}` so calls without parameters need no body at all.
/// The body must be complete within `timeout` (90007): a slow body must not hold a
/// connection and a task for ever.
pub async fn read_object(req: Request<Body>, limit: usize, timeout: Duration) -> Result<Map<String, Value>, ApiError> {
    let read = tokio::time::timeout(timeout, Bytes::from_request(req, &()))
        .await
        .map_err(|_| ApiError::BodyTimeout { ms: timeout.as_millis() as u64 })?;
    let bytes = read.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::bad("body", "could not read the request body")
        }
    })?;
    parse_object(&bytes)
}

/// Parses `bytes` as one JSON object, normalised (see [`normalize`]).
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut map)) => {
            normalize_map(&mut map);
            Ok(map)
        }
        Ok(other) => Err(ApiError::bad("body", format!("expected a JSON object, found {}", json_kind(&other)))),
        Err(e) => Err(ApiError::bad("body", format!("invalid JSON: {e}"))),
    }
}

/// `null` members of objects are dropped (null counts as absent) and integral floats
/// within the integer range become integers (`50.0` → `50`), recursively.
pub fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => normalize_map(map),
        Value::Array(items) => items.iter_mut().for_each(normalize),
        Value::Number(n) => {
            if let Some(i) = integral(n) {
                *n = i;
            }
        }
        _ => {}
    }
}

fn normalize_map(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    map.values_mut().for_each(normalize);
}

/// The integer an integral float stands for, if it fits `u64` or `i64`.
fn integral(n: &Number) -> Option<Number> {
    if n.is_u64() || n.is_i64() {
        return None;
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 || !f.is_finite() {
        return None;
    }
    // 2^64 and -2^63 are exact in f64; the comparisons keep the casts in range.
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some(Number::from(f as u64))
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Some(Number::from(f as i64))
    } else {
        None
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

/// Takes the common fields off a body object.
pub fn take_common(map: &mut Map<String, Value>) -> Result<Common, ApiError> {
    let mut common = Map::new();
    for name in COMMON_FIELDS {
        if let Some(v) = map.remove(name) {
            common.insert(name.to_string(), v);
        }
    }
    let common: Common = parse_value(Value::Object(common), "")?;
    if let Some(t) = common.client_type.filter(|t| *t > MAX_CLIENT_TYPE) {
        return Err(ApiError::bad(
            "clientType",
            format!("must be 0 webApi, 1 web, 2 ios, 3 android, 4 windows, 5 mac or 6 linux, not {t}"),
        ));
    }
    if let Some(o) = &common.operater {
        // It names a user (the acting one when `fromId` is absent).
        tern_storage::UserId::new(o.as_str()).map_err(|e| ApiError::bad("operater", e))?;
    }
    if common.imei.as_ref().is_some_and(|i| i.len() > 128) {
        return Err(ApiError::bad("imei", "longer than 128 bytes"));
    }
    Ok(common)
}

/// Types a (normalised) JSON value as `T`; error paths start with `prefix` (the
/// value's place in the request, e.g. `userData[3]`, or empty for the body).
pub fn parse_value<T: DeserializeOwned>(v: Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix, inner.as_str()) {
            (p, ".") => p.to_string(),
            ("", i) => i.to_string(),
            (p, i) if i.starts_with('[') => format!("{p}{i}"),
            (p, i) => format!("{p}.{i}"),
        };
        field_error(&path, &e.into_inner().to_string())
    })
}

/// Joins an object's path and one of its keys.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A serde error message at `path` in the API's words.
pub fn field_error(path: &str, msg: &str) -> ApiError {
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return ApiError::bad(join(path, name), "missing");
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let expected = rest.split_once("expected ").map_or("", |(_, e)| e);
        let list = expected.trim_start_matches("one of ").replace('`', "").replace(", or ", ", ").replace(" or ", ", ");
        let reason = if list.is_empty() || list.starts_with("there are no fields") {
            "unknown field (this object takes no fields)".to_string()
        } else {
            format!("unknown field (expected one of: {list})")
        };
        // serde_path_to_error already counts the unknown key as the path's last segment.
        let at = if path == name || path.ends_with(&format!(".{name}")) { path.to_string() } else { join(path, name) };
        return ApiError::bad(at, reason);
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        // Containers read better as JSON words than as serde's data-model words.
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let found = match found.split(' ').next().unwrap_or_default() {
            "map" => "an object",
            "sequence" => "an array",
            "integer" | "floating" => "a number",
            "string" => "a string",
            "boolean" => "a boolean",
            "null" => "null",
            _ => "",
        };
        let container = if expected == "a sequence" {
            Some("an array")
        } else if expected.starts_with("struct ") || expected == "a map" {
            Some("an object")
        } else {
            None
        };
        if let (Some(want), false) = (container, found.is_empty()) {
            return ApiError::bad(path, format!("expected {want}, found {found}"));
        }
    }
    let field = if path.is_empty() { "body" } else { path };
    ApiError::bad(field, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Item {
        user_id: String,
        user_sex: Option<u8>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Req {
        user_data: Vec<Item>,
        limit: Option<u64>,
    }

    fn check_err(body: &[u8], expect: &str) {
        match parse_object(body) {
            Err(e) => assert!(e.to_string().starts_with(expect), "{e} does not start with {expect}"),
            Ok(m) => panic!("{m:?} parsed"),
        }
    }

    fn err(v: Value, prefix: &str) -> String {
        let mut v = v;
        normalize(&mut v);
        parse_value::<Req>(v, prefix).unwrap_err().to_string()
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
        assert_eq!(err(json!({}), ""), "userData: missing");
        assert_eq!(err(json!({"userData": {}}), ""), "userData: expected an array, found an object");
        assert_eq!(err(json!({"userData": [7]}), ""), "userData[0]: expected an object, found a number");
        assert_eq!(err(json!({"userData": [{}]}), ""), "userData[0].userId: missing");
        assert_eq!(
            err(json!({"userData": [{"userId": "a", "userSex": "m"}]}), ""),
            "userData[0].userSex: invalid type: string \"m\", expected u8"
        );
        assert_eq!(
            err(json!({"userData": [{"userId": "a", "usrSex": 1}]}), ""),
            "userData[0].usrSex: unknown field (expected one of: userId, userSex)"
        );
        assert_eq!(
            err(json!({"userData": [], "lmit": 1}), "x"),
            "x.lmit: unknown field (expected one of: userData, limit)"
        );
        assert_eq!(
            err(json!({"userData": [{"userId": 5}]}), "p[2]"),
            "p[2].userData[0].userId: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn large_integral_floats_are_read_exactly() {
        // Without serde_json's float_roundtrip this read as 2251799813685247.25.
        let mut v: Value = serde_json::from_str(r#"{"maxLimit": 2251799813685247.0}"#).unwrap();
        normalize(&mut v);
        assert_eq!(v["maxLimit"], serde_json::json!(2_251_799_813_685_247u64));
    }

    #[test]
    fn nulls_are_absent_and_integral_floats_are_integers() {
        let mut v = json!({"userData": [{"userId": "a", "userSex": 2.0}], "limit": 50.0, "x": null});
        normalize(&mut v);
        assert_eq!(v, json!({"userData": [{"userId": "a", "userSex": 2}], "limit": 50}));
        let r: Req = parse_value(v, "").unwrap();
        assert_eq!(r.limit, Some(50));
        assert!(err(json!({"userData": [], "limit": 50.5}), "").starts_with("limit: invalid type: floating point"));
        assert!(err(json!({"userData": [], "limit": -1.0}), "").starts_with("limit: invalid value: integer `-1`"));
        assert!(err(json!({"userData": [], "limit": 1e300}), "").starts_with("limit: invalid type: floating point"));
    }

    #[test]
    fn common_fields_come_off_the_top() {
        let mut m =
            parse_object(br#"{"appId": "7", "operater": "u1", "clientType": 3.0, "imei": "x", "a": 1}"#).unwrap();
        let c = take_common(&mut m).unwrap();
        assert_eq!(
            c,
            Common {
                app_id: Some(AppIdField(7)),
                operater: Some("u1".into()),
                client_type: Some(3),
                imei: Some("x".into())
            }
        );
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a"]);
        let mut m = parse_object(br#"{"clientType": 9}"#).unwrap();
        assert!(take_common(&mut m).unwrap_err().to_string().starts_with("clientType: must be 0 webApi"));
        let mut m = parse_object(br#"{"appId": true}"#).unwrap();
        assert!(take_common(&mut m).unwrap_err().to_string().starts_with("appId: true is not an app id"));
    }
}
