//! Per-app callback settings (`[apps.callbacks]` in the config file): where the app's
//! business server listens for each kind of event, how long a before-send may take, what
//! a send does when the business server cannot answer, and the bounds of the queue of
//! after-event deliveries. Every knob has a default saying why.

use serde::{Deserialize, Serialize};

/// A before-send request waits at most this long (connect, request and answer). A
/// business server on the same network answers in milliseconds; a send is held this
/// long at most when it does not, well inside a client's usual 5-10 s send timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Before-send requests of one app in flight at once. With a business server answering
/// in 5 ms this is ~50,000 sends/s; with one that hangs, at most this many sends wait
/// for the timeout while every further send follows the failure policy at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// After-events of one app queued for delivery. At 5 attempts over ~3 s this covers a
/// few seconds of a busy app's sends while its business server restarts; past it new
/// events are dropped (counted), never the sends that caused them.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// After-event deliveries of one app in flight at once (including those waiting to
/// retry): enough to keep up with thousands of events/s at a few ms each.
pub const DEFAULT_AFTER_IN_FLIGHT: usize = 32;
/// Attempts per after-event before it is dropped (counted).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Pause before the first retry of an after-event; each further retry doubles it (200,
/// 400, 800, 1,600 ms: ~3 s in all with the defaults), up to [`MAX_RETRY_BACKOFF_MS`].
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 200;
/// Longest pause between two attempts, whatever the doubling says.
pub const MAX_RETRY_BACKOFF_MS: u64 = 30_000;

/// What a send does when its before-send callback cannot decide (timeout, connection
/// error, a non-2xx status, an answer that is not the documented JSON, or the app's
/// `max_in_flight` before-send requests are all busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Send as if the business server had allowed it (the default, as Tencent IM does:
    /// an outage of the business server does not stop the chat).
    #[default]
    Open,
    /// Refuse the send with 50010 (the client may retry).
    Closed,
}

/// An `http://` URL of the business server, checked when the configuration is read.
/// TLS is not spoken: put the business server on a private network or behind a local
/// TLS-terminating proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallbackUrl(String);

impl CallbackUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CallbackUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let uri: hyper::Uri = s.parse().map_err(|e| format!("callback URL {s:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("callback URL {s:?}: only http:// is supported (no TLS; use a local proxy)"));
        }
        if uri.authority().is_none() {
            return Err(format!("callback URL {s:?}: no host"));
        }
        if s.contains('#') {
            return Err(format!("callback URL {s:?}: no fragment allowed"));
        }
        Ok(Self(s))
    }
}

impl From<CallbackUrl> for String {
    fn from(u: CallbackUrl) -> String {
        u.0
    }
}

/// One app's callbacks. Every URL is optional: an event without a URL costs nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackConfig {
    /// Asked before every 1:1 and group message is accepted; may allow, rewrite the
    /// body, or refuse with a code and a reason.
    pub before_send_url: Option<CallbackUrl>,
    /// Told after every message is durable (1:1 and group).
    pub after_send_url: Option<CallbackUrl>,
    /// Told when a device logs in or its session ends.
    pub state_change_url: Option<CallbackUrl>,
    /// Told after every friendship, blacklist and friend-request change.
    pub friendship_url: Option<CallbackUrl>,
    /// Told after every group change (create, profile, members, roles, mutes,
    /// ownership, dissolve); imports are not reported.
    pub group_url: Option<CallbackUrl>,
    /// Longest wait for one request, milliseconds (before-send and each after attempt).
    pub timeout_ms: u64,
    /// What a send does when the before-send callback cannot decide.
    pub failure_policy: FailurePolicy,
    /// Before-send requests in flight at most; past it sends follow `failure_policy`.
    pub max_in_flight: usize,
    /// After-events queued at most; past it new events are dropped (counted).
    pub queue_capacity: usize,
    /// After-event deliveries in flight at most (retries included).
    pub after_in_flight: usize,
    /// Attempts per after-event before it is dropped (counted).
    pub max_attempts: u32,
    /// First retry pause of an after-event, milliseconds; doubles per retry.
    pub retry_backoff_ms: u64,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            before_send_url: None,
            after_send_url: None,
            state_change_url: None,
            friendship_url: None,
            group_url: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            failure_policy: FailurePolicy::Open,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            after_in_flight: DEFAULT_AFTER_IN_FLIGHT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
        }
    }
}

impl CallbackConfig {
    /// Whether any URL is set.
    pub fn any(&self) -> bool {
        self.before_send_url.is_some()
            || self.after_send_url.is_some()
            || self.state_change_url.is_some()
            || self.friendship_url.is_some()
            || self.group_url.is_some()
    }

    /// What is wrong with the numbers, if anything (the config loader reports it).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, v) in [
            ("timeout_ms", self.timeout_ms),
            ("max_in_flight", self.max_in_flight as u64),
            ("queue_capacity", self.queue_capacity as u64),
            ("after_in_flight", self.after_in_flight as u64),
            ("max_attempts", u64::from(self.max_attempts)),
        ] {
            if v == 0 {
                p.push(format!("callbacks.{name}: must be at least 1"));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http() {
        assert!(CallbackUrl::try_from("http://127.0.0.1:8080/cb".to_string()).is_ok());
        assert!(CallbackUrl::try_from("http://biz.internal/im?x=1".to_string()).is_ok());
        for bad in ["https://biz/cb", "ftp://x/", "/relative", "http://", "not a url", "http://h/p#frag"] {
            assert!(CallbackUrl::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_with_defaults_and_refuses_unknown_fields() {
        let c: CallbackConfig =
            serde_json::from_str(r#"{"before_send_url":"http://h/b","failure_policy":"closed"}"#).expect("parses");
        assert_eq!(c.failure_policy, FailurePolicy::Closed);
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(c.any());
        assert!(c.problems().is_empty());
        assert!(serde_json::from_str::<CallbackConfig>(r#"{"before_send":"http://h/b"}"#).is_err());
        assert!(serde_json::from_str::<CallbackConfig>(r#"{"failure_policy":"maybe"}"#).is_err());
        let zero = CallbackConfig { max_attempts: 0, ..Default::default() };
        assert_eq!(zero.problems(), vec!["callbacks.max_attempts: must be at least 1".to_string()]);
        assert!(!CallbackConfig::default().any());
    }
}
