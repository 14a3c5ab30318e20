//! Helpers shared by the logic crate's integration tests.

#![allow(dead_code)]

use tern_logic::sessions::Session;
use tern_logic::{Logic, LoginModel};
use tern_schema::link::ConnRef;
use tern_storage::{AppId, UserId};
use tokio::sync::mpsc;

/// Registers one gateway link (gateway 1, core 0) and an online session per
/// (user, device) of `app` at slots 10, 11, ...; returns the link's outbound queue.
pub fn online(logic: &Logic, app: u32, devices: &[(&str, &str)], queue: usize) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(queue);
    logic.sessions.register_link((1, 0), tx);
    for (i, (user, device)) in devices.iter().enumerate() {
        let session = Session {
            conn: ConnRef::new(1, 0, 10 + i as u32, 1),
            client_type: 1,
            device_id: device.to_string(),
            session_id: i as u64 + 1,
            since_ms: 1,
        };
        let uid = UserId::new(*user).expect("test user ids are valid");
        logic.sessions.admit(AppId(app), &uid, session, LoginModel::Unlimited, false);
    }
    rx
}
