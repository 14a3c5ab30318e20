//! Authentication of management calls.
//!
//! Every `/v1` call carries the query parameters `appId`, `identifier` and `userSign`.
//! Admin calls ([`AdminCall`]) check, in this order: the app exists (60001), an
//! identifier is given (60002), it is one of the app's admins (60005), and `userSign`
//! is that identifier's valid, unexpired signature (60000/60003/60004/60006). Login
//! ([`UserCall`]) instead checks the user's own signature (identifier = the user id)
//! and needs no admin. `appId` may also come from the body; the query wins.
//!
//! The body is parsed as JSON before authentication (a syntax error is the caller's
//! own input and reveals nothing), but its fields are interpreted only after it.
//!
//! This module must never answer a call whose signature it has not verified, and never
//! compare secrets or MACs itself: `tern_schema::sig` does that in constant time.

use std::sync::Arc;

use axum::extract::{FromRequest, Query, Request};
use axum::http::Uri;
use serde::Deserialize;
use serde_json::{Map, Value};
use tern_schema::sig;
use tern_storage::{AppId, UserId};
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{parse_body, read_object, FromBody, APP_ID};
use super::ApiState;
use crate::{now_ms, AppConfig};

/// The authentication query parameters of every management call.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuthQuery {
    /// The app (tenant) id. May instead be given in the body; the query wins.
    #[param(required = true, value_type = u32)]
    pub app_id: Option<String>,
    /// Who is acting: one of the app's admin identifiers (for `/v1/user/login`: the
    /// user id logging in).
    #[param(required = true)]
    pub identifier: Option<String>,
    /// The identifier's signature (`tern sig`), 55 characters.
    #[param(required = true)]
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

/// Finds the app: query `appId`, else body `appId` (a number or a numeric string).
fn resolve_app(
    state: &ApiState,
    query: &AuthQuery,
    body: &Map<String, Value>,
) -> Result<(AppId, Arc<AppConfig>), ApiError> {
    let raw = match (&query.app_id, body.get(APP_ID)) {
        (Some(q), _) => q.trim().to_string(),
        (None, Some(Value::Number(n))) => n.to_string(),
        (None, Some(Value::String(s))) => s.trim().to_string(),
        (None, None | Some(Value::Null)) => return Err(ApiError::BadApp("missing".into())),
        (None, Some(_)) => return Err(ApiError::BadApp("must be a number".into())),
    };
    let id: u32 = raw.parse().map_err(|_| ApiError::BadApp(format!("`{raw}` is not an app id")))?;
    let app = AppId(id);
    let cfg = state.logic.apps.get(app).cloned().ok_or_else(|| ApiError::BadApp(format!("no app {id}")))?;
    tracing::Span::current().record("app_id", id);
    Ok((app, cfg))
}

fn identifier(query: &AuthQuery) -> Result<&str, ApiError> {
    query.identifier.as_deref().filter(|s| !s.is_empty()).ok_or(ApiError::NoOperator)
}

fn verify(cfg: &AppConfig, app: AppId, who: &str, query: &AuthQuery) -> Result<(), ApiError> {
    let sign = query.user_sign.as_deref().unwrap_or("");
    sig::verify(cfg.secret.as_bytes(), app.0, who, sign, now_ms() / 1000).map(|_| ()).map_err(ApiError::Signature)
}

/// A management call by an app admin, with its parsed body.
#[derive(Debug)]
pub struct AdminCall<T> {
    pub app: AppId,
    /// The admin acting.
    pub identifier: String,
    pub body: T,
}

impl<T: FromBody + Send> FromRequest<Arc<ApiState>> for AdminCall<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let query = AuthQuery::from_uri(req.uri())?;
        let map = read_object(req, state.max_body_bytes).await?;
        let (app, cfg) = resolve_app(state, &query, &map)?;
        let who = identifier(&query)?;
        if !cfg.admins.iter().any(|a| a == who) {
            return Err(ApiError::OperatorMismatch(format!("`{who}` is not an admin of app {app}")));
        }
        verify(&cfg, app, who, &query)?;
        let body = parse_body::<T>(&map)?;
        Ok(Self { app, identifier: who.to_string(), body })
    }
}

/// A call authenticated by a user's own signature (`/v1/user/login`).
#[derive(Debug)]
pub struct UserCall<T> {
    pub app: AppId,
    /// The user, from `identifier`.
    pub user: UserId,
    pub body: T,
}

impl<T: FromBody + Send> FromRequest<Arc<ApiState>> for UserCall<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let query = AuthQuery::from_uri(req.uri())?;
        let map = read_object(req, state.max_body_bytes).await?;
        let (app, cfg) = resolve_app(state, &query, &map)?;
        let who = identifier(&query)?;
        let user = UserId::new(who).map_err(|e| ApiError::bad("identifier", e))?;
        tracing::Span::current().record("user_id", user.as_str());
        verify(&cfg, app, who, &query)?;
        let body = parse_body::<T>(&map)?;
        Ok(Self { app, user, body })
    }
}
