//! `/v1/blackList/...`: the blacklist. Each handler parses its body, calls
//! [`crate::friends`] and shapes the answer. Without `fromId` the common field
//! `operater` names the acting user, as in the original system.
//!
//! This module must never hold business rules (what a block stops, limits): those live
//! in `crate::friends`. It only translates.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;
use tern_schema::codes;
use tern_storage::Seq;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery};
use super::common::{acting_user, page_limit, user_id, ApiResult, ChangeResp, FromToReq, SyncReq};
use super::endpoints::Endpoints;
use super::error::{ApiOk, Envelope};
use super::ApiState;
use crate::config::MAX_PAGE_LIMIT;
use crate::friends::{self, errors, BlockOutcome};

/// The blacklist endpoints, each with its own error codes (besides the common ones)
/// and the original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(routes!(black_list_add), &[codes::USER_NOT_FOUND, codes::USER_DELETED, errors::BLACKLIST_LIMIT], &[])
        .alias("/v1/friendship/addBlack")
        .add(routes!(black_list_delete), &[codes::USER_NOT_FOUND, codes::USER_DELETED, errors::NOT_BLOCKED], &[])
        .alias("/v1/friendship/deleteBlack")
        .add(routes!(black_list_sync), &[codes::USER_NOT_FOUND], &[])
}

// ---------------------------------------------------------------- response types

/// One change in a blacklist sync answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlackChangeItem {
    pub sequence: u64,
    pub to_id: String,
    /// Unblocked (a tombstone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// When the block was made, milliseconds since the Unix epoch (blocks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_time: Option<u64>,
}

/// Answer of /blackList/sync.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncBlackListResp {
    /// `fromId`'s committed blacklist sequence.
    pub max_sequence: u64,
    /// True when this page reaches `maxSequence`.
    pub completed: bool,
    /// Changes with `sequence > lastSequence`, ascending.
    pub data_list: Vec<BlackChangeItem>,
}

// ---------------------------------------------------------------- handlers

/// Block a user.
///
/// `toId` can then no longer message `fromId` (send-ack / 30007) or add `fromId`
/// (30007); friend lists are left as they are. Blocking a blocked user changes nothing
/// (`changed: false`). Over the app's `max_blacklist` is 30019. Notifies every online
/// device of `fromId`.
#[utoipa::path(post, path = "/v1/blackList/add", tag = "friendship", params(AuthQuery), request_body = FromToReq,
    responses((status = 200, description = "Blocked", body = Envelope<ChangeResp>)))]
pub async fn black_list_add(State(state): State<Arc<ApiState>>, call: AdminCall<FromToReq>) -> ApiResult<ChangeResp> {
    let req = call.body;
    let from = acting_user(req.from_id, &call.common)?;
    let to = user_id(req.to_id, "toId")?;
    Ok(ApiOk(match friends::block(&state.logic, call.app, &from, &to).await? {
        BlockOutcome::Blocked(seq) => ChangeResp { sequence: seq.0, changed: true },
        BlockOutcome::AlreadyBlocked(seq) => ChangeResp { sequence: seq.0, changed: false },
    }))
}

/// Unblock a user.
///
/// 30010 if `toId` is not blocked. Notifies every online device of `fromId`; the
/// unblock appears in /blackList/sync as a tombstone.
#[utoipa::path(post, path = "/v1/blackList/delete", tag = "friendship", params(AuthQuery), request_body = FromToReq,
    responses((status = 200, description = "Unblocked", body = Envelope<ChangeResp>)))]
pub async fn black_list_delete(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<FromToReq>,
) -> ApiResult<ChangeResp> {
    let req = call.body;
    let from = acting_user(req.from_id, &call.common)?;
    let to = user_id(req.to_id, "toId")?;
    let seq = friends::unblock(&state.logic, call.app, &from, &to).await?;
    Ok(ApiOk(ChangeResp { sequence: seq.0, changed: true }))
}

/// Incremental blacklist sync.
///
/// The changes of `fromId`'s blacklist with `sequence > lastSequence`, ascending, at
/// most `maxLimit`: blocks, and unblocks as `deleted: true`.
#[utoipa::path(post, path = "/v1/blackList/sync", tag = "friendship", params(AuthQuery), request_body = SyncReq,
    responses((status = 200, description = "A page of changes", body = Envelope<SyncBlackListResp>)))]
pub async fn black_list_sync(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<SyncReq>,
) -> ApiResult<SyncBlackListResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let after = Seq(req.last_sequence.unwrap_or(0));
    let page = friends::sync_blacklist(&state.logic, call.app, &user, after, page_limit(req.max_limit, MAX_PAGE_LIMIT))
        .await?;
    Ok(ApiOk(SyncBlackListResp {
        max_sequence: page.max_seq.0,
        completed: page.completed,
        data_list: page
            .entries
            .into_iter()
            .map(|(s, r)| BlackChangeItem {
                sequence: s.0,
                to_id: r.to_id.into_string(),
                deleted: r.deleted,
                add_time: (!r.deleted).then_some(r.add_time),
            })
            .collect(),
    }))
}
