//! Error codes carried by `Error`, `SendAck` and login failures on the long connection.
//!
//! Numbers follow the HTTP API's families (`../shared/api.md`) so one table serves both:
//! 200 success; 20000s users; 30000s friendship; 50000s messages; 60000s signatures;
//! 80000s connection/protocol (new to Tern: the original had no long-connection spec);
//! 90000s generic. PROTOCOL.md lists every code; keep the two in step.

/// Success.
pub const OK: u32 = 200;

/// The user does not exist (never imported) in this app.
pub const USER_NOT_FOUND: u32 = 20001;
/// The user was deleted and may not log in or send.
pub const USER_DELETED: u32 = 20002;

/// Login without a signature.
pub const SIGN_MISSING: u32 = 60000;
/// Unknown app id.
pub const SIGN_BAD_APP: u32 = 60001;
/// The recipient has blocked the sender (SendAck).
pub const BLOCKED_BY_RECIPIENT: u32 = 30007;
/// The sender exceeded its send rate (`[messages] sends_per_sec`); nothing stored, retry.
pub const SEND_RATE_EXCEEDED: u32 = 50006;

/// Signature does not verify (wrong secret, user, app or tampered).
pub const SIGN_WRONG: u32 = 60003;
/// Signature expired.
pub const SIGN_EXPIRED: u32 = 60004;
/// Signature is not in the documented encoding.
pub const SIGN_MALFORMED: u32 = 60006;

/// The frame could not be decoded (bad FlatBuffers, no body, wrong length).
pub const MALFORMED_FRAME: u32 = 80000;
/// The header's version byte is not one this server speaks. Followed by close.
pub const BAD_VERSION: u32 = 80001;
/// The frame exceeds the server's maximum frame size. Followed by close.
pub const FRAME_TOO_LARGE: u32 = 80002;
/// The first frame was not a Login. Followed by close.
pub const LOGIN_REQUIRED: u32 = 80003;
/// No Login arrived within the login deadline. Followed by close.
pub const LOGIN_TIMEOUT: u32 = 80004;
/// The connection exceeded its inbound frame rate. The offending frame is dropped.
pub const RATE_LIMITED: u32 = 80005;
/// The gateway holds its maximum number of connections. Followed by close.
pub const SERVER_FULL: u32 = 80006;
/// A second Login on an already authenticated connection.
pub const ALREADY_LOGGED_IN: u32 = 80007;
/// The frame kind is not one a client may send (e.g. a Push). The frame is dropped.
pub const UNEXPECTED_FRAME: u32 = 80008;
/// The logic tier is unreachable; retry later. Followed by close.
pub const SERVICE_UNAVAILABLE: u32 = 80009;
/// A field is invalid (the message names it).
pub const INVALID_FIELD: u32 = 80010;

/// SendAck(80009) text for a Send held behind an earlier busy refusal on its connection.
/// After refusing a Send as busy (80009, 80005, 50006), the server refuses every later
/// Send of that connection with another `client_msg_id` until the refused one is sent
/// again, for at most [`SEND_HOLD_MS`]: so a client that resends refused sends in the
/// order it first sent them gets its whole burst stored in that order (PROTOCOL.md,
/// "One sender's order").
pub const SEND_HELD: &str = "an earlier send of this connection was refused as busy: send it again first";
/// How long a connection's Sends stay held behind a refused one that is not sent again
/// (a client that gave it up is not refused for ever).
pub const SEND_HOLD_MS: u64 = 10_000;

/// Whether a refused Send's code means "busy, nothing stored, retry": the codes that
/// hold the connection's later Sends behind it.
pub fn is_busy_send_refusal(code: u32) -> bool {
    matches!(code, SERVICE_UNAVAILABLE | RATE_LIMITED | SEND_RATE_EXCEEDED)
}

/// Unexpected server-side failure.
pub const INTERNAL: u32 = 90000;
/// A parameter is invalid (the message names the field).
pub const BAD_PARAMETER: u32 = 90001;
