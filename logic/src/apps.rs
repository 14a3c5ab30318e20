//! Tenants: the apps configured for this deployment, their secrets, admins and
//! multi-device policy (`loginModel`). Apps come from configuration; this module only
//! looks them up and decides which sessions a new login replaces.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tern_schema::client::ClientType;
use tern_storage::AppId;

/// One tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The tenant id (`appId`).
    pub id: u32,
    /// HMAC key for user and admin signatures. Keep it secret; at least 16 characters.
    pub secret: String,
    /// Identifiers allowed to call the management API (`identifier` query parameter).
    #[serde(default = "default_admins")]
    pub admins: Vec<String>,
    /// Multi-device policy, 1..=4 (see [`LoginModel`]).
    #[serde(default)]
    pub login_model: LoginModel,
    /// How long after sending a sender may recall a message, seconds. Admins may
    /// recall any time.
    #[serde(default = "default_recall_window_secs")]
    pub recall_window_secs: u64,
    /// Messages older than this are no longer served by sync, offline pull or
    /// history (retention by time, never by count).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Most friends one user may have (entries in their own friend list). An add or an
    /// approval that would pass it is refused with 30018.
    #[serde(default = "default_max_friends")]
    pub max_friends: usize,
    /// Most users one user may block. A block that would pass it is refused with 30019.
    #[serde(default = "default_max_blacklist")]
    pub max_blacklist: usize,
    /// Callbacks to the app's business server (`[apps.callbacks]`; none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callbacks: Option<crate::callbacks::CallbackConfig>,
}

/// Two minutes: the customary recall window of IM apps.
pub const DEFAULT_RECALL_WINDOW_SECS: u64 = 120;
/// Thirty days of history for devices that come back after a long time.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// 3,000 friends: the original system's default, and enough that a friend list (and the
/// profile fan-out of one change to it) stays a small, bounded amount of work.
pub const DEFAULT_MAX_FRIENDS: usize = 3_000;
/// 1,000 blocked users: blocking is rare; the bound keeps the in-memory blacklist small.
pub const DEFAULT_MAX_BLACKLIST: usize = 1_000;

fn default_recall_window_secs() -> u64 {
    DEFAULT_RECALL_WINDOW_SECS
}

fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

fn default_max_friends() -> usize {
    DEFAULT_MAX_FRIENDS
}

fn default_max_blacklist() -> usize {
    DEFAULT_MAX_BLACKLIST
}

impl AppConfig {
    /// An app with defaults for everything but id and secret.
    pub fn new(id: u32, secret: impl Into<String>) -> Self {
        Self {
            id,
            secret: secret.into(),
            admins: default_admins(),
            login_model: LoginModel::default(),
            recall_window_secs: DEFAULT_RECALL_WINDOW_SECS,
            retention_days: DEFAULT_RETENTION_DAYS,
            max_friends: DEFAULT_MAX_FRIENDS,
            max_blacklist: DEFAULT_MAX_BLACKLIST,
            callbacks: None,
        }
    }
}

fn default_admins() -> Vec<String> {
    vec!["admin".to_string()]
}

/// How many devices of one user may be online at once (the original system's
/// `loginModel`). A device is (client type, device id); the same device logging in again
/// always replaces its previous session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum LoginModel {
    /// 1: one device in all.
    OneDevice,
    /// 2: one app-or-desktop device plus one web.
    OneClientPlusWeb,
    /// 3: one phone plus one desktop plus one web.
    PhoneDesktopWeb,
    /// 4: no limit (the default: least surprising for a new deployment).
    #[default]
    Unlimited,
}

impl TryFrom<u8> for LoginModel {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(Self::OneDevice),
            2 => Ok(Self::OneClientPlusWeb),
            3 => Ok(Self::PhoneDesktopWeb),
            4 => Ok(Self::Unlimited),
            _ => Err(format!("login_model must be 1, 2, 3 or 4, not {v}")),
        }
    }
}

impl From<LoginModel> for u8 {
    fn from(m: LoginModel) -> u8 {
        match m {
            LoginModel::OneDevice => 1,
            LoginModel::OneClientPlusWeb => 2,
            LoginModel::PhoneDesktopWeb => 3,
            LoginModel::Unlimited => 4,
        }
    }
}

/// Device classes the policies talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceClass {
    Phone,
    Desktop,
    Web,
}

fn class_of(client_type: u8) -> DeviceClass {
    match ClientType(client_type) {
        ClientType::Web => DeviceClass::Web,
        ClientType::Windows | ClientType::Mac | ClientType::Linux => DeviceClass::Desktop,
        // Unknown clients count as phones: the strictest common class.
        _ => DeviceClass::Phone,
    }
}

impl LoginModel {
    /// Whether a new login of `new` (client type, device id) replaces an existing session of `old`.
    pub fn replaces(self, new: (u8, &str), old: (u8, &str)) -> bool {
        if new == old {
            return true;
        }
        let (n, o) = (class_of(new.0), class_of(old.0));
        match self {
            LoginModel::OneDevice => true,
            LoginModel::OneClientPlusWeb => (n == DeviceClass::Web) == (o == DeviceClass::Web),
            LoginModel::PhoneDesktopWeb => n == o,
            LoginModel::Unlimited => false,
        }
    }
}

/// Lookup of configured apps by id.
#[derive(Debug, Clone, Default)]
pub struct AppRegistry {
    apps: HashMap<u32, Arc<AppConfig>>,
}

impl AppRegistry {
    pub fn new(apps: impl IntoIterator<Item = AppConfig>) -> Self {
        Self { apps: apps.into_iter().map(|a| (a.id, Arc::new(a))).collect() }
    }

    pub fn get(&self, app: AppId) -> Option<&Arc<AppConfig>> {
        self.apps.get(&app.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<AppConfig>> {
        self.apps.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The original system's numbering (PROTOCOL.md).
    const IOS: u8 = ClientType::Ios.0;
    const ANDROID: u8 = ClientType::Android.0;
    const WEB: u8 = ClientType::Web.0;
    const MAC: u8 = ClientType::Mac.0;

    #[test]
    fn client_types_are_the_originals_numbers() {
        assert_eq!([ClientType::WebApi.0, WEB, IOS, ANDROID, ClientType::Windows.0, MAC], [0, 1, 2, 3, 4, 5]);
    }

    fn check(model: u8, new: (u8, &str), old: (u8, &str), expect: bool) {
        let m = LoginModel::try_from(model).unwrap();
        assert_eq!(m.replaces(new, old), expect, "model {model}: {new:?} replaces {old:?}");
    }

    #[test]
    fn same_device_always_replaced() {
        for m in 1..=4 {
            check(m, (IOS, "d1"), (IOS, "d1"), true);
        }
    }

    #[test]
    fn policies() {
        check(1, (WEB, "w"), (IOS, "p"), true);
        check(2, (WEB, "w"), (IOS, "p"), false);
        check(2, (MAC, "m"), (IOS, "p"), true);
        check(2, (WEB, "w2"), (WEB, "w1"), true);
        check(3, (ANDROID, "a"), (IOS, "p"), true);
        check(3, (MAC, "m"), (IOS, "p"), false);
        check(3, (WEB, "w"), (MAC, "m"), false);
        check(4, (IOS, "p2"), (IOS, "p1"), false);
    }

    #[test]
    fn login_model_parsing() {
        assert!(LoginModel::try_from(0).is_err());
        assert!(LoginModel::try_from(5).is_err());
        assert_eq!(LoginModel::default(), LoginModel::Unlimited);
    }
}
