//! `/v1/friendshipRequest/...`: friend requests. Each handler parses its body, calls
//! [`crate::friends`] and shapes the answer. A request `id` is answered as a decimal
//! string (64 bits, like `messageKey`) and accepted as a string or a number. Without
//! `fromId` the common field `operater` names the acting user, as in the original
//! system (its approveFriendRequest has no `fromId`).
//!
//! This module must never hold business rules (who may approve what, what approval
//! makes): those live in `crate::friends`. It only translates.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use tern_schema::codes;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{AdminCall, AuthQuery};
use super::common::{acting_user, ApiResult, FromIdReq, RequestId};
use super::endpoints::Endpoints;
use super::error::{ApiError, ApiOk, Envelope};
use super::ApiState;
use crate::friends::{self, errors, Request};

/// The friend-request endpoints, each with its own error codes (besides the common
/// ones) and the original system's paths as aliases.
pub fn routes(e: Endpoints) -> Endpoints {
    e.add(routes!(get_friend_request), &[codes::USER_NOT_FOUND], &[])
        .add(routes!(read_all_friend_request), &[codes::USER_NOT_FOUND, codes::USER_DELETED], &[])
        .alias("/v1/friendshipRequest/readFriendShipRequest")
        .add(
            routes!(approve),
            &[
                codes::USER_NOT_FOUND,
                codes::USER_DELETED,
                errors::NOT_YOUR_REQUEST,
                errors::NO_SUCH_REQUEST,
                errors::REQUEST_HANDLED,
                errors::YOU_BLOCKED_THEM,
                errors::THEY_BLOCKED_YOU,
                errors::FRIEND_LIMIT,
            ],
            &[],
        )
        .alias("/v1/friendshipRequest/approveFriendRequest")
}

// ---------------------------------------------------------------- request types

/// Body of /friendshipRequest/getFriendRequest.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetFriendRequestReq {
    /// Whose requests.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// true: the requests `fromId` sent; false or absent: those it received.
    pub sent: Option<bool>,
}

/// Body of /friendshipRequest/approve.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproveReq {
    /// The approver: the request's recipient.
    /// (Absent: the common field `operater` names the user.)
    #[schema(min_length = 1, max_length = 64)]
    pub from_id: Option<String>,
    /// The request (a decimal string, or a number up to 2^53).
    #[schema(value_type = String, pattern = "^[1-9][0-9]{0,19}$")]
    pub id: RequestId,
    /// 1 agree (the users become friends as requested), 2 reject.
    #[schema(minimum = 1, maximum = 2)]
    pub status: u8,
}

// ---------------------------------------------------------------- response types

/// A friend request as one of its parties holds it.
/// A friend request as one of its parties holds it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FriendRequestItem {
    /// The request id, a decimal string.
    pub id: String,
    /// Who asked.
    pub from_id: String,
    /// Who decides.
    pub to_id: String,
    pub remark: String,
    pub add_source: String,
    pub add_wording: String,
    pub extra: String,
    /// 1 one-way, 2 two-way (what approval makes).
    pub add_type: u8,
    /// 0 pending, 1 approved, 2 rejected.
    pub status: u8,
    /// The recipient marked it read (always false in sent lists).
    pub read: bool,
    pub create_time: u64,
    pub update_time: u64,
    /// The sequence (in `fromId`'s friend-request log) of its last change.
    pub sequence: u64,
}

impl From<Request> for FriendRequestItem {
    fn from(r: Request) -> Self {
        let rec = r.record;
        Self {
            id: rec.id.to_string(),
            from_id: rec.from_id.into_string(),
            to_id: rec.to_id.into_string(),
            remark: rec.remark,
            add_source: rec.add_source,
            add_wording: rec.add_wording,
            extra: rec.extra,
            add_type: if rec.two_way { 2 } else { 1 },
            status: rec.status,
            read: rec.read,
            create_time: rec.create_time,
            update_time: rec.update_time,
            sequence: r.seq.0,
        }
    }
}

/// Answer of /friendshipRequest/getFriendRequest.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetFriendRequestResp {
    /// Received requests not yet marked read.
    pub unread_count: usize,
    /// Pending and handled requests, the latest per peer, newest change first.
    pub data_list: Vec<FriendRequestItem>,
}

/// Answer of /friendshipRequest/readAllFriendRequest.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadAllResp {
    /// Requests marked read by this call.
    pub count: usize,
    /// `fromId`'s friend-request sequence afterwards.
    pub sequence: u64,
}

/// Answer of /friendshipRequest/approve.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveResp {
    pub id: String,
    /// 1 approved, 2 rejected.
    pub status: u8,
}

// ---------------------------------------------------------------- handlers

/// Friend requests of a user.
///
/// The requests `fromId` received (or, with `sent: true`, sent): pending and handled,
/// the latest per peer, newest change first; and how many received ones are unread.
#[utoipa::path(post, path = "/v1/friendshipRequest/getFriendRequest", tag = "friendship", params(AuthQuery),
    request_body = GetFriendRequestReq,
    responses((status = 200, description = "Requests", body = Envelope<GetFriendRequestResp>)))]
pub async fn get_friend_request(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<GetFriendRequestReq>,
) -> ApiResult<GetFriendRequestResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let list = friends::list_requests(&state.logic, call.app, &user, req.sent.unwrap_or(false)).await?;
    Ok(ApiOk(GetFriendRequestResp {
        unread_count: list.unread,
        data_list: list.requests.into_iter().map(FriendRequestItem::from).collect(),
    }))
}

/// Mark every received friend request read.
///
/// Notifies every online device of `fromId` when anything changed.
#[utoipa::path(post, path = "/v1/friendshipRequest/readAllFriendRequest", tag = "friendship", params(AuthQuery),
    request_body = FromIdReq,
    responses((status = 200, description = "Marked read", body = Envelope<ReadAllResp>)))]
pub async fn read_all_friend_request(
    State(state): State<Arc<ApiState>>,
    call: AdminCall<FromIdReq>,
) -> ApiResult<ReadAllResp> {
    let user = acting_user(call.body.from_id, &call.common)?;
    let (count, seq) = friends::read_all(&state.logic, call.app, &user).await?;
    Ok(ApiOk(ReadAllResp { count, sequence: seq.0 }))
}

/// Approve or reject a friend request.
///
/// `fromId` must be the request's recipient (30011 if it sent it, 30012 if it has no
/// such request); a request is decided once (30013). `status` 1 makes the users
/// friends as the request asked (its `addType`), under the same checks as an add
/// (30006, 30007, 30018); 2 rejects it. Both users' devices are notified.
#[utoipa::path(post, path = "/v1/friendshipRequest/approve", tag = "friendship", params(AuthQuery),
    request_body = ApproveReq,
    responses((status = 200, description = "Decided", body = Envelope<ApproveResp>)))]
pub async fn approve(State(state): State<Arc<ApiState>>, call: AdminCall<ApproveReq>) -> ApiResult<ApproveResp> {
    let req = call.body;
    let user = acting_user(req.from_id, &call.common)?;
    let agree = match req.status {
        1 => true,
        2 => false,
        n => return Err(ApiError::bad("status", format!("must be 1 (agree) or 2 (reject), not {n}"))),
    };
    friends::approve(&state.logic, call.app, &user, req.id.0, agree).await?;
    Ok(ApiOk(ApproveResp { id: req.id.0.to_string(), status: req.status }))
}
