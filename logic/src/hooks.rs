//! Checks other features add to the message path. Today: none is configured beyond the
//! user checks in `messages`; the friendship issue's blacklist plugs in here (30007
//! "they blocked you"), so the send path does not change when it lands.

use tern_storage::{AppId, UserId};

use crate::messages::Refusal;
use crate::Logic;

/// Whether `from` may message `to`.
pub async fn check_send_allowed(_logic: &Logic, _app: AppId, _from: &UserId, _to: &UserId) -> Result<(), Refusal> {
    Ok(())
}
