//! The one error type of logic's services (users, relations, groups, messages,
//! conversations, callbacks): why a call failed, with the documented API code.
//!
//! The codes are owned by the services that raise them (`users::BATCH_TOO_LARGE`,
//! `friends::errors`, `groups::errors`, `messages::errors`, the shared ones in
//! `tern_schema::codes`); this type only carries them. The HTTP layer maps a
//! [`ServiceError`] to its envelope once (`http::error`), the link to an Error frame or
//! a SendAck code once (`code()` and `message()`).
//!
//! Must never put a storage failure's detail in front of a client: [`message`] says
//! "internal error" for those (the detail is logged where the failure is converted).
//!
//! [`message`]: ServiceError::message

use tern_schema::codes;
use tern_storage::{StoreError, UserId};

/// Why a service call failed. `code()` gives the documented API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A field is invalid. `field` is the API field name relative to the item (e.g.
    /// `nickName`); the HTTP layer prefixes where the item sits in its request.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The batch carries more items than one call may.
    #[error("{len} items, more than the {max} allowed in one call")]
    BatchTooLarge { len: usize, max: usize },
    /// The user was never imported into this app.
    #[error("no such user: {0}")]
    UserNotFound(UserId),
    /// The user was deleted.
    #[error("user {0} is deleted")]
    UserDeleted(UserId),
    /// A rule refused the call, with the code of the service that owns the rule.
    #[error("{message}")]
    Refused { code: u32, message: String },
    /// Storage failed (or returned data that does not decode), or cannot take the
    /// write here right now ([`StoreError::Unavailable`]: 80009, retryable).
    #[error(transparent)]
    Store(StoreError),
}

impl ServiceError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ServiceError::Invalid { field: field.to_string(), reason: reason.into() }
    }

    pub fn refused(code: u32, message: impl Into<String>) -> Self {
        ServiceError::Refused { code, message: message.into() }
    }

    /// The user is disabled (`forbiddenFlag`): it may neither log in nor send.
    pub fn disabled(user: &UserId) -> Self {
        Self::refused(
            crate::messages::errors::SENDER_DISABLED,
            format!("user {user} is disabled (forbiddenFlag) and may not log in"),
        )
    }

    /// The documented API error code.
    pub fn code(&self) -> u32 {
        match self {
            ServiceError::Invalid { .. } => codes::BAD_PARAMETER,
            ServiceError::BatchTooLarge { .. } => crate::users::BATCH_TOO_LARGE,
            ServiceError::UserNotFound(_) => codes::USER_NOT_FOUND,
            ServiceError::UserDeleted(_) => codes::USER_DELETED,
            ServiceError::Refused { code, .. } => *code,
            ServiceError::Store(StoreError::Unavailable(_)) => codes::SERVICE_UNAVAILABLE,
            ServiceError::Store(_) => codes::INTERNAL,
        }
    }

    /// What a client is told (an Error frame's or a SendAck's message).
    pub fn message(&self) -> String {
        match self {
            ServiceError::Store(StoreError::Unavailable(why)) => format!("{why}; retry shortly"),
            ServiceError::Store(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ServiceError {
    /// Logs the detail (a human must look at storage failures; clients only learn
    /// "internal error"), except for the passing [`StoreError::Unavailable`].
    fn from(e: StoreError) -> Self {
        if !matches!(e, StoreError::Unavailable(_)) {
            tracing::error!(error = %e, "store failure");
        }
        ServiceError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_client_messages() {
        let u = UserId::new("a").unwrap();
        assert_eq!(ServiceError::invalid("nickName", "too long").to_string(), "nickName: too long");
        assert_eq!(ServiceError::invalid("x", "y").code(), codes::BAD_PARAMETER);
        assert_eq!(ServiceError::UserNotFound(u.clone()).code(), codes::USER_NOT_FOUND);
        assert_eq!(ServiceError::disabled(&u).code(), crate::messages::errors::SENDER_DISABLED);
        assert_eq!(ServiceError::refused(30007, "blocked").message(), "blocked");
        let store = ServiceError::from(StoreError::Io("disk on fire".into()));
        assert_eq!((store.code(), store.message()), (codes::INTERNAL, "internal error".to_string()));
        let moving = ServiceError::from(StoreError::Unavailable("slot 7 is moving".into()));
        assert_eq!(moving.code(), codes::SERVICE_UNAVAILABLE);
        assert_eq!(moving.message(), "slot 7 is moving; retry shortly");
    }
}
