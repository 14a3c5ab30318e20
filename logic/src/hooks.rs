//! Checks other features add to the message path, so the send path does not change
//! when a feature lands. Today: the blacklist (30007 "they blocked you").

use crate::error::ServiceError;
use tern_storage::{AppId, UserId};

use crate::friends::{self, errors::THEY_BLOCKED_YOU};
use crate::Logic;

/// Whether `from` may message `to`: refused with 30007 when `to` blocked `from`.
pub async fn check_send_allowed(logic: &Logic, app: AppId, from: &UserId, to: &UserId) -> Result<(), ServiceError> {
    if from != to && friends::is_blocked(logic, app, to, from).await? {
        // "recipient ..." is renamed to "toId: recipient ..." by the HTTP layer.
        return Err(ServiceError::refused(THEY_BLOCKED_YOU, "recipient has blocked the sender"));
    }
    Ok(())
}
