//! The response envelope and the API's error type.
//!
//! Every answer of the management API, success or failure, is the envelope
//! `{"code": 200, "msg": "success", "data": ...}`. Failures are [`ApiError`] values, each
//! mapping to one documented code and one HTTP status; [`CODES`] is the table the docs
//! and the OpenAPI document are built from, so it must list every code `ApiError` can
//! produce (a test checks this).
//!
//! This module must never let a framework's plain-text rejection or an internal error's
//! details reach the client: internal failures are logged here, where they are handled,
//! and answered with a generic message.

use crate::error::ServiceError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tern_schema::codes;
use tern_schema::sig::SigError;
use utoipa::ToSchema;

use crate::callbacks::errors as cb;
use crate::friends::errors as rel;
use crate::groups::errors as grp;
use crate::messages::errors as msg;
use crate::users::BATCH_TOO_LARGE;

/// Success.
pub const OK: u32 = codes::OK;
/// 90002: the request body is larger than `http.max_body_bytes` (new to Tern).
pub const BODY_TOO_LARGE: u32 = 90002;
/// 90003: the path exists but not with this HTTP method (every `/v1` call is a POST).
pub const METHOD_NOT_ALLOWED: u32 = 90003;
/// 90004: no endpoint at this path.
pub const NO_SUCH_ENDPOINT: u32 = 90004;
/// 90005: too many requests (reserved for the rate limiter; nothing answers it yet).
pub const RATE_LIMITED: u32 = 90005;
/// 90006: the server is starting (recovering its store); retry shortly. Answered by the
/// HTTP front (`crate::server`) before the API is installed, never by a handler.
pub const STARTING: u32 = 90006;
/// 90007: the request body did not arrive within `http.body_timeout_ms` (new to Tern).
pub const BODY_TIMEOUT: u32 = 90007;
/// 60002: the `identifier` query parameter (the acting operator) is missing.
pub const NO_OPERATOR: u32 = 60002;
/// 60005: the operator is not an admin of the app (or, for login, not the user named).
pub const OPERATOR_MISMATCH: u32 = 60005;

/// The envelope of every answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// 200 on success, otherwise an error code (see the error table).
    pub code: u32,
    /// "success", or what went wrong (naming the field for 90001).
    pub msg: String,
    /// The answer; null on errors.
    pub data: T,
}

/// The envelope of a failed call (`data` is always null).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error code (see the error table).
    pub code: u32,
    /// What went wrong; for 90001 it starts with the field's path, e.g.
    /// `userData[3].nickName: longer than 64 characters`.
    pub msg: String,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
}

/// The API code of a response, attached as a response extension so the metrics layer
/// can count by code without parsing bodies.
#[derive(Debug, Clone, Copy)]
pub struct ApiCode(pub u32);

/// A successful answer: serialized as the envelope with code 200.
pub struct ApiOk<T>(pub T);

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        let mut resp = Json(Envelope { code: OK, msg: "success".to_string(), data: self.0 }).into_response();
        resp.extensions_mut().insert(ApiCode(OK));
        resp
    }
}

/// Why a call failed. Each variant has one code and one HTTP status; see [`CODES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 60000 (missing), 60003 (wrong), 60004 (expired), 60006 (malformed).
    #[error("userSign: {0}")]
    Signature(SigError),
    /// 60001: `appId` missing, not a number, or no such app.
    #[error("appId: {0}")]
    BadApp(String),
    /// 60002: `identifier` missing.
    #[error("identifier: missing (the admin acting, or for login the user)")]
    NoOperator,
    /// 60005: `identifier` is not allowed to act (not an admin of the app; for login,
    /// not the user named in the body).
    #[error("identifier: {0}")]
    OperatorMismatch(String),
    /// 90001: a parameter is invalid; the message starts with the field's path.
    #[error("{0}")]
    BadParameter(String),
    /// 90002: body over the limit.
    #[error("request body is larger than the {limit} bytes allowed")]
    BodyTooLarge { limit: usize },
    /// 90007: the body was not received in time.
    #[error("request body not received within {ms} ms")]
    BodyTimeout { ms: u64 },
    /// 90003: wrong HTTP method.
    #[error("method {0} is not allowed here (management calls are POST)")]
    MethodNotAllowed(String),
    /// 90004: unknown path.
    #[error("no such endpoint: {0}")]
    NoSuchEndpoint(String),
    /// 90005: rate limited (reserved).
    #[error("too many requests; retry later")]
    RateLimited,
    /// 90000: something failed inside; the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
    /// 20000: a batch is over the limit; the message names the field.
    #[error("{field}: {len} items, more than the {max} allowed in one call")]
    BatchTooLarge { field: String, len: usize, max: usize },
    /// 20001: no such user.
    #[error("no such user: {0}")]
    UserNotFound(String),
    /// 20002: the user was deleted.
    #[error("user {0} is deleted")]
    UserDeleted(String),
    /// A refusal of the message service (50000s, or 20001/20002 for a send's parties)
    /// or of the relation service (30000s), its code and message kept as they are.
    #[error("{message}")]
    Refused { code: u32, message: String },
}

/// One row of the error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: u32,
    pub status: u16,
    pub meaning: &'static str,
}

/// Every code the HTTP API answers, with its HTTP status and meaning.
pub const CODES: &[CodeInfo] = &[
    CodeInfo { code: OK, status: 200, meaning: "success" },
    CodeInfo { code: BATCH_TOO_LARGE, status: 400, meaning: "a batch carries more items than http.max_batch" },
    CodeInfo { code: codes::USER_NOT_FOUND, status: 404, meaning: "no such user in this app (never imported)" },
    CodeInfo {
        code: codes::USER_DELETED,
        status: 410,
        meaning: "the user was deleted: no login, no change, no re-import; its profile stays readable",
    },
    CodeInfo { code: codes::SIGN_MISSING, status: 401, meaning: "userSign missing or empty" },
    CodeInfo { code: codes::SIGN_BAD_APP, status: 401, meaning: "appId missing, not a number, or no such app" },
    CodeInfo { code: NO_OPERATOR, status: 401, meaning: "identifier missing" },
    CodeInfo { code: codes::SIGN_WRONG, status: 401, meaning: "userSign does not verify for this app and identifier" },
    CodeInfo { code: codes::SIGN_EXPIRED, status: 401, meaning: "userSign has expired" },
    CodeInfo {
        code: OPERATOR_MISMATCH,
        status: 403,
        meaning: "identifier is not an admin of the app (login: not the user named in the body)",
    },
    CodeInfo { code: codes::SIGN_MALFORMED, status: 401, meaning: "userSign is not in the signature encoding" },
    CodeInfo { code: codes::INTERNAL, status: 500, meaning: "internal error (details in the server log)" },
    CodeInfo {
        code: codes::BAD_PARAMETER,
        status: 400,
        meaning: "bad parameter or unparsable JSON; msg names the field, e.g. userData[3].nickName",
    },
    CodeInfo { code: BODY_TOO_LARGE, status: 413, meaning: "request body larger than http.max_body_bytes" },
    CodeInfo {
        code: BODY_TIMEOUT,
        status: 408,
        meaning: "request body not received within http.body_timeout_ms of its headers",
    },
    CodeInfo { code: METHOD_NOT_ALLOWED, status: 405, meaning: "HTTP method not allowed on this path (use POST)" },
    CodeInfo { code: NO_SUCH_ENDPOINT, status: 404, meaning: "no such endpoint" },
    CodeInfo { code: RATE_LIMITED, status: 429, meaning: "too many requests (reserved for the rate limiter)" },
    CodeInfo {
        code: STARTING,
        status: 503,
        meaning: "the server is starting (recovering its store); retry shortly (/healthz says how far it is)",
    },
    CodeInfo {
        code: msg::INVALID_MESSAGE,
        status: 400,
        meaning:
            "invalid message: msg names the field, e.g. messageBody[0] (empty element) or messageId (not 1..=64 bytes)",
    },
    CodeInfo { code: msg::BODY_TOO_LARGE, status: 413, meaning: "message body larger than messages.max_body_bytes" },
    CodeInfo {
        code: msg::SENDER_MUTED,
        status: 403,
        meaning: "the sender is muted (silentFlag in its profile) and may not send (also a send-ack code)",
    },
    CodeInfo {
        code: msg::SENDER_DISABLED,
        status: 403,
        meaning:
            "the user is disabled (forbiddenFlag in its profile): it may not send (also a send-ack code) nor log in",
    },
    CodeInfo { code: msg::RECALL_WINDOW_PASSED, status: 403, meaning: "the sender's recall window has passed" },
    CodeInfo { code: msg::ALREADY_RECALLED, status: 409, meaning: "the message was already recalled" },
    CodeInfo {
        code: msg::SEND_RATE_EXCEEDED,
        status: 429,
        meaning: "a client connection sends too fast (TCP sends only; HTTP sends are not rate limited per connection)",
    },
    CodeInfo { code: msg::NO_SUCH_MESSAGE, status: 404, meaning: "no message with this messageKey in this app" },
    CodeInfo {
        code: msg::NOT_A_PARTY,
        status: 403,
        meaning: "fromId is not a party to the message (withdraw: not its sender, or toId is not the other party)",
    },
    CodeInfo {
        code: rel::ALREADY_FRIENDS,
        status: 409,
        meaning: "reserved (already friends): re-adding a friend is idempotent and answers 200 with result 3",
    },
    CodeInfo { code: rel::NOT_FRIENDS, status: 404, meaning: "toId is not in fromId's friend list" },
    CodeInfo { code: rel::YOU_BLOCKED_THEM, status: 403, meaning: "fromId blocked the other user (unblock first)" },
    CodeInfo {
        code: rel::THEY_BLOCKED_YOU,
        status: 403,
        meaning: "the other user blocked fromId: no adding and no messages (also a send-ack code)",
    },
    CodeInfo { code: rel::NO_RELATION, status: 404, meaning: "neither user lists the other (two-way delete)" },
    CodeInfo { code: rel::NOT_BLOCKED, status: 404, meaning: "toId is not in fromId's blacklist" },
    CodeInfo {
        code: rel::NOT_YOUR_REQUEST,
        status: 403,
        meaning: "fromId sent this friend request; only its recipient may approve or reject it",
    },
    CodeInfo {
        code: rel::NO_SUCH_REQUEST,
        status: 404,
        meaning: "no friend request with this id among fromId's requests",
    },
    CodeInfo {
        code: rel::REQUEST_HANDLED,
        status: 409,
        meaning: "the friend request was already approved or rejected",
    },
    CodeInfo {
        code: rel::ADD_FORBIDDEN,
        status: 403,
        meaning: "the target accepts no friend requests (friendAllowType 3 or disableAddFriend)",
    },
    CodeInfo { code: rel::FRIEND_LIMIT, status: 409, meaning: "a friend list would pass the app's max_friends" },
    CodeInfo { code: rel::BLACKLIST_LIMIT, status: 409, meaning: "the blacklist would pass the app's max_blacklist" },
    CodeInfo {
        code: crate::conversations::errors::NO_SUCH_CONVERSATION,
        status: 404,
        meaning: "fromId has no such conversation (no message yet, or deleted)",
    },
    CodeInfo {
        code: crate::conversations::errors::TOO_MANY_MUTED,
        status: 409,
        meaning: "fromId has muted 1,000 conversations already (the most a user may)",
    },
    CodeInfo { code: grp::NO_SUCH_GROUP, status: 404, meaning: "no such group in this app" },
    CodeInfo { code: grp::GROUP_EXISTS, status: 409, meaning: "a group with this groupId exists already" },
    CodeInfo { code: grp::ALREADY_MEMBER, status: 409, meaning: "the user is a member of the group already" },
    CodeInfo { code: grp::GROUP_FULL, status: 409, meaning: "the group is full (maxMemberCount)" },
    CodeInfo {
        code: grp::NOT_MEMBER,
        status: 403,
        meaning: "the user (member, sender or acting operater) is not a member of the group",
    },
    CodeInfo { code: grp::ADMIN_ONLY, status: 403, meaning: "only the group's owner or an admin may do this" },
    CodeInfo { code: grp::OWNER_ONLY, status: 403, meaning: "only the group's owner may do this" },
    CodeInfo {
        code: grp::OWNER_NOT_REMOVABLE,
        status: 403,
        meaning: "the owner cannot be removed (transfer the group first)",
    },
    CodeInfo {
        code: grp::GROUP_MUTED,
        status: 403,
        meaning: "the whole group is muted: only the owner and admins may send (also a send-ack code)",
    },
    CodeInfo { code: grp::PUBLIC_NEEDS_OWNER, status: 400, meaning: "a public group (groupType 2) needs an ownerId" },
    CodeInfo {
        code: grp::MEMBER_MUTED,
        status: 403,
        meaning: "the member is muted in this group until speakDate (also a send-ack code)",
    },
    CodeInfo { code: grp::DESTROYED, status: 410, meaning: "the group was dissolved" },
    CodeInfo {
        code: cb::REFUSED_BY_APP,
        status: 403,
        meaning: "the app's business server refused the message (before-send callback) with a code outside \
                  120001-130000; msg carries its code and reason (also a send-ack code)",
    },
    CodeInfo {
        code: cb::APP_UNAVAILABLE,
        status: 503,
        meaning: "the app's callbacks fail closed and its business server did not decide on the message in time; \
                  retry (also a send-ack code)",
    },
    CodeInfo {
        code: cb::APP_CODE_FIRST,
        status: 403,
        meaning: "120001-130000: the app's business server refused the message (before-send callback); code and msg \
                  are its own (also send-ack codes)",
    },
];

/// The table row of `code`.
pub fn code_info(code: u32) -> Option<&'static CodeInfo> {
    // The app's own refusal codes share one row.
    let code = if cb::APP_CODES.contains(&code) { cb::APP_CODE_FIRST } else { code };
    CODES.iter().find(|c| c.code == code)
}

impl ApiError {
    /// Shorthand for a 90001 naming `field`.
    pub fn bad(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        ApiError::BadParameter(format!("{field}: {reason}"))
    }

    /// The documented code.
    pub fn code(&self) -> u32 {
        match self {
            ApiError::Signature(e) => e.code(),
            ApiError::BadApp(_) => codes::SIGN_BAD_APP,
            ApiError::NoOperator => NO_OPERATOR,
            ApiError::OperatorMismatch(_) => OPERATOR_MISMATCH,
            ApiError::BadParameter(_) => codes::BAD_PARAMETER,
            ApiError::BodyTooLarge { .. } => BODY_TOO_LARGE,
            ApiError::BodyTimeout { .. } => BODY_TIMEOUT,
            ApiError::MethodNotAllowed(_) => METHOD_NOT_ALLOWED,
            ApiError::NoSuchEndpoint(_) => NO_SUCH_ENDPOINT,
            ApiError::RateLimited => RATE_LIMITED,
            ApiError::Internal(_) => codes::INTERNAL,
            ApiError::BatchTooLarge { .. } => BATCH_TOO_LARGE,
            ApiError::UserNotFound(_) => codes::USER_NOT_FOUND,
            ApiError::UserDeleted(_) => codes::USER_DELETED,
            ApiError::Refused { code, .. } => *code,
        }
    }

    /// The HTTP status (from the error table).
    pub fn status(&self) -> StatusCode {
        code_info(self.code()).and_then(|c| StatusCode::from_u16(c.status).ok()).unwrap_or(StatusCode::BAD_REQUEST)
    }

    /// Converts a service error, prefixing invalid-field messages with `prefix` (the
    /// path of the item in the request, e.g. `userData[3].`, or empty) and naming
    /// `batch_field` in a batch-too-large answer.
    pub fn from_service(e: ServiceError, prefix: &str, batch_field: &str) -> Self {
        match e {
            ServiceError::Invalid { field, reason } => ApiError::BadParameter(format!("{prefix}{field}: {reason}")),
            ServiceError::BatchTooLarge { len, max } => {
                ApiError::BatchTooLarge { field: batch_field.to_string(), len, max }
            }
            ServiceError::UserNotFound(id) => ApiError::UserNotFound(id.into_string()),
            ServiceError::UserDeleted(id) => ApiError::UserDeleted(id.into_string()),
            // A refusal that stands for a failure (its detail was logged where it
            // happened) is one.
            ServiceError::Refused { code: codes::INTERNAL, message } => ApiError::Internal(message),
            ServiceError::Refused { code, message } => ApiError::Refused { code, message },
            e @ ServiceError::Store(tern_storage::StoreError::Unavailable(_)) => {
                ApiError::Refused { code: e.code(), message: e.message() }
            }
            ServiceError::Store(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::from_service(e, "", "userIds")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = self.status();
        match &self {
            // Handled here, so logged here: a human must look at internal failures.
            ApiError::Internal(detail) => tracing::error!(code, detail = %detail, "request failed"),
            // Bad input is the caller's business, not an operator's.
            other => tracing::debug!(code, error = %other, "request refused"),
        }
        let mut resp = (status, Json(ErrorEnvelope { code, msg: self.to_string(), data: None })).into_response();
        resp.extensions_mut().insert(ApiCode(code));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_storage::{StoreError, UserId};

    fn every_variant() -> Vec<ApiError> {
        vec![
            ApiError::Signature(SigError::Missing),
            ApiError::Signature(SigError::Malformed),
            ApiError::Signature(SigError::Expired),
            ApiError::Signature(SigError::Mismatch),
            ApiError::BadApp("x".into()),
            ApiError::NoOperator,
            ApiError::OperatorMismatch("x".into()),
            ApiError::BadParameter("x".into()),
            ApiError::BodyTooLarge { limit: 1 },
            ApiError::BodyTimeout { ms: 1 },
            ApiError::MethodNotAllowed("GET".into()),
            ApiError::NoSuchEndpoint("/x".into()),
            ApiError::RateLimited,
            ApiError::Internal("x".into()),
            ApiError::BatchTooLarge { field: "userIds".into(), len: 2, max: 1 },
            ApiError::UserNotFound("u".into()),
            ApiError::UserDeleted("u".into()),
            ApiError::Refused { code: msg::NOT_A_PARTY, message: "x".into() },
        ]
    }

    #[test]
    fn every_message_code_is_in_the_table() {
        let expect = [
            (msg::INVALID_MESSAGE, 400),
            (msg::BODY_TOO_LARGE, 413),
            (msg::RECALL_WINDOW_PASSED, 403),
            (msg::ALREADY_RECALLED, 409),
            (msg::SEND_RATE_EXCEEDED, 429),
            (msg::SENDER_MUTED, 403),
            (msg::NO_SUCH_MESSAGE, 404),
            (msg::NOT_A_PARTY, 403),
            (codes::USER_NOT_FOUND, 404),
            (codes::USER_DELETED, 410),
        ];
        for (code, status) in expect {
            let e = ApiError::from(ServiceError::refused(code, "m"));
            assert_eq!((e.code(), e.status().as_u16()), (code, status), "{e:?}");
            assert_eq!(e.to_string(), "m");
        }
        let e = ApiError::from(ServiceError::refused(codes::INTERNAL, "internal error"));
        assert!(matches!(e, ApiError::Internal(_)));
    }

    #[test]
    fn every_code_is_in_the_table_once() {
        for e in every_variant() {
            assert!(code_info(e.code()).is_some(), "{e:?} has code {} missing from CODES", e.code());
        }
        let mut codes: Vec<u32> = CODES.iter().map(|c| c.code).collect();
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n, "a code is listed twice");
    }

    #[test]
    fn statuses_follow_the_error_class() {
        let check = |e: ApiError, status: u16| assert_eq!(e.status().as_u16(), status, "{e:?}");
        check(ApiError::Signature(SigError::Mismatch), 401);
        check(ApiError::OperatorMismatch("x".into()), 403);
        check(ApiError::BadParameter("x".into()), 400);
        check(ApiError::BodyTooLarge { limit: 1 }, 413);
        check(ApiError::RateLimited, 429);
        check(ApiError::Internal("x".into()), 500);
        check(ApiError::UserNotFound("u".into()), 404);
    }

    #[test]
    fn internal_details_are_not_sent() {
        let e = ApiError::from(ServiceError::Store(StoreError::Io("disk /var/secret failed".into())));
        assert_eq!(e.to_string(), "internal error");
    }

    #[test]
    fn user_errors_keep_their_codes() {
        let u = UserId::new("u").unwrap();
        for e in [
            ServiceError::UserNotFound(u.clone()),
            ServiceError::UserDeleted(u),
            ServiceError::BatchTooLarge { len: 2, max: 1 },
            ServiceError::Invalid { field: "f".into(), reason: "r".into() },
        ] {
            assert_eq!(ApiError::from(e.clone()).code(), e.code());
        }
        let e = ApiError::from_service(
            ServiceError::Invalid { field: "nickName".into(), reason: "too long".into() },
            "userData[3].",
            "",
        );
        assert_eq!(e.to_string(), "userData[3].nickName: too long");
    }
}
