//! Authentication of management calls.
//!
//! Every `/v1` call carries the query parameters `appId`, `identifier` and `userSign`.
//! Admin calls ([`AdminCall`]) check, in this order: the app exists (60001), an
//! identifier is given (60002), it is one of the app's admins (60005), and `userSign`
//! is that identifier's valid, unexpired *admin* signature (60000/60003/60004/60006):
//! Tern's admin format (`tern sig --admin`) or the original system's UserSig. A user's
//! login signature never authorizes an admin call (60003), whatever id it was minted
//! for. Login ([`UserCall`]) instead checks the user's own login signature (identifier
//! = the user id) and needs no admin. `appId` may also come from the body; if both give
//! one they must agree (90001).
//!
//! The body is parsed as JSON before authentication (a syntax error is the caller's
//! own input and reveals nothing), but its fields are interpreted only after it.
//!
//! This module must never answer a call whose signature it has not verified, and never
//! compare secrets or MACs itself: `tern_schema::sig` does that in constant time.

use std::sync::Arc;

use axum::extract::{FromRequest, Query, Request};
use axum::http::Uri;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use tern_schema::sig::{self, Purpose};
use tern_storage::{AppId, UserId};
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{parse_value, read_object, take_common, Common, COMMON_FIELDS};
use super::ApiState;
use crate::{now_ms, AppConfig};

const APP_ID: &str = "appId";

/// The authentication query parameters of every management call.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuthQuery {
    /// The app (tenant) id. May instead be given in the body (then both must agree).
    #[param(required = true, value_type = u32, minimum = 0, maximum = 4294967295_u64)]
    pub app_id: Option<String>,
    /// Who is acting: one of the app's admin identifiers (for `/v1/user/login`: the
    /// user id logging in).
    #[param(required = true, min_length = 1, max_length = 64)]
    pub identifier: Option<String>,
    /// The identifier's signature: for admin calls an admin signature (`tern sig
    /// --admin`, 55 characters), for login the user's login signature (`tern sig`);
    /// or, for either, a UserSig in the original system's format.
    #[param(required = true, min_length = 1, max_length = 2048)]
    pub user_sign: Option<String>,
}

impl AuthQuery {
    fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        if uri.query().is_none() {
            return Ok(Self::default());
        }
        Query::<AuthQuery>::try_from_uri(uri).map(|q| q.0).map_err(|e| ApiError::bad("query", e.body_text()))
    }
}

/// Finds the app: query `appId`, else body `appId` (a number or a numeric string). A
/// body `appId` that differs from the query's is refused (90001): a business server
/// that writes both means one app.
fn resolve_app(
    state: &ApiState,
    query: &AuthQuery,
    body: &Map<String, Value>,
) -> Result<(AppId, Arc<AppConfig>), ApiError> {
    let in_body = match body.get(APP_ID) {
        None => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return Err(ApiError::BadApp("must be a number".into())),
    };
    let raw = match (&query.app_id, in_body) {
        (Some(q), _) => q.trim().to_string(),
        (None, Some(b)) => b,
        (None, None) => return Err(ApiError::BadApp("missing".into())),
    };
    let id: u32 = raw.parse().map_err(|_| ApiError::BadApp(format!("`{raw}` is not an app id")))?;
    let app = AppId(id);
    let cfg = state.logic.apps.get(app).cloned().ok_or_else(|| ApiError::BadApp(format!("no app {id}")))?;
    tracing::Span::current().record("app_id", id);
    Ok((app, cfg))
}

fn verify(cfg: &AppConfig, app: AppId, who: &str, query: &AuthQuery, purpose: Purpose) -> Result<(), ApiError> {
    let sign = query.user_sign.as_deref().unwrap_or("");
    sig::verify_for(purpose, cfg.secret.as_bytes(), app.0, who, sign, now_ms() / 1000)
        .map(|_| ())
        .map_err(ApiError::Signature)
}

fn identifier(query: &AuthQuery) -> Result<&str, ApiError> {
    query.identifier.as_deref().filter(|s| !s.is_empty()).ok_or(ApiError::NoOperator)
}

/// Types the common fields (taken off the body before authentication) and checks that
/// a body `appId` names the query's app.
fn common_of(raw: Map<String, Value>, app: AppId) -> Result<Common, ApiError> {
    let mut raw = raw;
    let common = take_common(&mut raw)?;
    if let Some(given) = common.app_id.filter(|a| a.0 != app.0) {
        return Err(ApiError::bad("appId", format!("{} differs from the query's appId {app}", given.0)));
    }
    if let Some(imei) = &common.imei {
        tracing::debug!(imei = %imei, client_type = ?common.client_type, "caller device");
    }
    Ok(common)
}

/// The body without the common fields (returned apart, untyped until authenticated).
fn split_common(map: &mut Map<String, Value>) -> Map<String, Value> {
    let mut common = Map::new();
    for name in COMMON_FIELDS {
        if let Some(v) = map.remove(name) {
            common.insert(name.to_string(), v);
        }
    }
    common
}

/// A management call by an app admin, with its parsed body.
#[derive(Debug)]
pub struct AdminCall<T> {
    pub app: AppId,
    /// The admin acting.
    pub identifier: String,
    /// The original system's common body fields.
    pub common: Common,
    pub body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<ApiState>> for AdminCall<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let query = AuthQuery::from_uri(req.uri())?;
        let mut map = read_object(req, state.max_body_bytes).await?;
        let common = split_common(&mut map);
        let (app, cfg) = resolve_app(state, &query, &common)?;
        let who = identifier(&query)?;
        if !cfg.admins.iter().any(|a| a == who) {
            return Err(ApiError::OperatorMismatch(format!("`{who}` is not an admin of app {app}")));
        }
        verify(&cfg, app, who, &query, Purpose::Admin)?;
        let common = common_of(common, app)?;
        let body = parse_value::<T>(Value::Object(map), "")?;
        Ok(Self { app, identifier: who.to_string(), common, body })
    }
}

/// A call authenticated by a user's own signature (`/v1/user/login`).
#[derive(Debug)]
pub struct UserCall<T> {
    pub app: AppId,
    /// The user, from `identifier`.
    pub user: UserId,
    /// The original system's common body fields.
    pub common: Common,
    pub body: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<ApiState>> for UserCall<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let query = AuthQuery::from_uri(req.uri())?;
        let mut map = read_object(req, state.max_body_bytes).await?;
        let common = split_common(&mut map);
        let (app, cfg) = resolve_app(state, &query, &common)?;
        let who = identifier(&query)?;
        let user = UserId::new(who).map_err(|e| ApiError::bad("identifier", e))?;
        tracing::Span::current().record("user_id", user.as_str());
        verify(&cfg, app, who, &query, Purpose::Login)?;
        let common = common_of(common, app)?;
        let body = parse_value::<T>(Value::Object(map), "")?;
        Ok(Self { app, user, common, body })
    }
}
