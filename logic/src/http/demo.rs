//! The web chat page at `/demo`: a small chat client built on the TypeScript SDK
//! (`sdk/typescript`), served from files embedded in the binary, so `cargo build` needs no
//! Node (the bundled `demo/demo.js` is committed; `scripts/sdk-test` rebuilds it and fails
//! on drift).
//!
//! `POST /demo/session` `{"userId": "alice"}` signs a user in for the page: it creates the
//! user if needed and answers a login signature, the gateway's WebSocket URL and the
//! user's groups. It exists
//! only for the development app (`tern` with no `[[apps]]` configured, whose secret is
//! printed at start anyway) — with configured apps it answers 90004 like any unknown path,
//! and the page asks for a signature instead. `[demo] enabled = false` removes all of it.
//!
//! These routes are no part of the management API (not in `/openapi.json`): they take no
//! admin signature and their answers are for the page alone.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tern_storage::{AppId, UserId};

use super::error::{ApiError, ApiOk};
use super::ApiState;
use crate::users::{ImportItem, ProfilePatch};

const INDEX_HTML: &str = include_str!("demo/index.html");
const DEMO_JS: &str = include_str!("demo/demo.js");
/// Signatures the page gets are short-lived: the SDK asks for a new one at each login.
const SESSION_SIG_SECS: u64 = 3_600;

/// The page's routes, or none when `[demo] enabled = false`.
pub fn routes(state: &ApiState) -> Router<Arc<ApiState>> {
    let config = &state.logic.config;
    if !config.demo.enabled {
        return Router::new();
    }
    let router = Router::new().route("/demo", get(index)).route("/demo/demo.js", get(script));
    if config.dev_app_id.is_some() {
        router.route("/demo/session", post(session))
    } else {
        router
    }
}

async fn index() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-cache")], INDEX_HTML).into_response()
}

async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "no-cache")], DEMO_JS).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionRequest {
    user_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionAnswer {
    app_id: u32,
    user_id: String,
    user_sign: String,
    /// Unix seconds after which `userSign` no longer verifies.
    expires_at: u64,
    /// Where the page connects (the gateway's advertised WebSocket URLs).
    ws_urls: Vec<String>,
    /// The groups the user is a member of, whose timelines the page syncs.
    groups: Vec<String>,
}

/// Creates the user in the development app if needed and signs it in.
async fn session(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<SessionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<ApiOk<SessionAnswer>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadParameter(format!("body: {}", e.body_text())))?;
    let logic = &state.logic;
    let app_id = logic.config.dev_app_id.ok_or_else(|| ApiError::NoSuchEndpoint("/demo/session".into()))?;
    let app = logic.apps.get(AppId(app_id)).ok_or_else(|| ApiError::BadApp(format!("no app {app_id}")))?;
    let user = UserId::new(req.user_id).map_err(|e| ApiError::BadParameter(format!("userId: {e}")))?;
    let results = state
        .users
        .import(
            AppId(app_id),
            vec![ImportItem { user_id: user.clone(), fields: ProfilePatch::default(), password: None }],
        )
        .await?;
    if let Some(Err(e)) = results.into_iter().next() {
        return Err(e.into());
    }
    let groups = crate::groups::joined(logic, AppId(app_id), &user)
        .await
        .map_err(|e| ApiError::Internal(format!("joined groups: {e}")))?
        .into_iter()
        .map(|(g, ..)| g.as_str().to_string())
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let expires_at = now + SESSION_SIG_SECS;
    let user_sign = tern_schema::sig::sign(app.secret.as_bytes(), app_id, user.as_str(), expires_at);
    Ok(ApiOk(SessionAnswer {
        app_id,
        user_id: user.as_str().to_string(),
        user_sign,
        expires_at,
        ws_urls: logic.config.advertise_ws.clone(),
        groups,
    }))
}
