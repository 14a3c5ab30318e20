//! Key layout and value encodings of the embedded backend.
//!
//! Keys are built so that every read the trait offers is a point get or one range
//! scan over contiguous keys:
//!
//! | keyspace      | key                                                                      | value                          |
//! |---------------|--------------------------------------------------------------------------|--------------------------------|
//! | `users`       | app u32 BE · user id                                                     | v1 · JSON [`UserRecord`]       |
//! | `log`         | app u32 BE · user len u8 · user id · kind u8 · seq u64 BE                | v1 · time_ms u64 BE · payload  |
//! | `seq_bounds`  | app u32 BE · user len u8 · user id · kind u8                             | v1 · bound u64 BE              |
//! | `dedup`       | dedup key bytes                                                          | v1 · expires_ms u64 BE · value |
//! | `apps`        | app u32 BE                                                               | v1 · JSON [`AppRecord`]        |
//! | `device_acks` | app u32 BE · user len u8 · user id · device len u8 · device id · kind u8 | v1 · seq u64 BE                |
//! | `msg_index`   | app u32 BE · message key u64 BE                                          | v1 · locator (below)           |
//! | `conv_index`  | app u32 BE · user len u8 · user id · peer len u8 · peer id · seq u64 BE  | empty                          |
//! | `read_marks`  | app u32 BE · user len u8 · user id · peer len u8 · peer id               | v1 · seq u64 BE                |
//! | `meta`        | `format`                                                                 | on-disk format number u8       |
//!
//! A locator value is `v1 · from_seq u64 BE · to_seq u64 BE · time_ms u64 BE · from
//! len u8 · from id · to len u8 · to id`.
//!
//! Every variable-length id inside a composite key (user, peer, device) is
//! length-prefixed, so the scan of user "a" can never run into the keys of user "ab",
//! and user "a" with peer "bc" never meets user "ab" with peer "c". Big-endian integers
//! make byte order equal numeric order, so a seq range is a key range.
//!
//! Every value starts with a version byte so the encoding can evolve; decoding never
//! panics on bad bytes, it returns [`StoreError::Corrupt`]. The one exception is
//! `conv_index`, whose entries are keys only: its value is empty, and anything else
//! (a newer encoding this build does not know) is corrupt to it.

use crate::{AppId, AppRecord, MessageLocator, Seq, StoreError, SyncKind, UserId, UserRecord};

/// The version byte that starts every value this code writes.
const V1: u8 = 1;

/// Length of an app id in a key.
const APP_LEN: usize = 4;
/// Length of a seq in a key.
const SEQ_LEN: usize = 8;

/// `app · user len · user`: the prefix shared by one user's logs and bounds.
pub(crate) fn user_prefix(app: AppId, user: &UserId) -> Vec<u8> {
    let id = user.as_bytes();
    let mut key = Vec::with_capacity(APP_LEN + 1 + id.len() + 1 + SEQ_LEN);
    key.extend_from_slice(&app.0.to_be_bytes());
    // UserId guarantees 1..=64 bytes, so the length always fits one byte.
    key.push(id.len() as u8);
    key.extend_from_slice(id);
    key
}

/// Key of a user's profile.
pub(crate) fn user_key(app: AppId, user: &UserId) -> Vec<u8> {
    let mut key = Vec::with_capacity(APP_LEN + user.as_bytes().len());
    key.extend_from_slice(&app.0.to_be_bytes());
    key.extend_from_slice(user.as_bytes());
    key
}

/// `app · user len · user · kind`: the prefix of one log, and the key of one bound.
pub(crate) fn log_prefix(app: AppId, user: &UserId, kind: SyncKind) -> Vec<u8> {
    let mut key = user_prefix(app, user);
    key.push(kind.as_u8());
    key
}

/// Key of a seq bound.
pub(crate) fn bound_key(app: AppId, user: &UserId, kind: SyncKind) -> Vec<u8> {
    log_prefix(app, user, kind)
}

/// Key of one log entry.
pub(crate) fn log_key(app: AppId, user: &UserId, kind: SyncKind, seq: Seq) -> Vec<u8> {
    let mut key = log_prefix(app, user, kind);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

/// `prefix · seq`: a key of a seq-ordered family (log entries, conv index entries)
/// whose prefix is already built.
pub(crate) fn seq_key(prefix: &[u8], seq: Seq) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + SEQ_LEN);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

/// The seq of a `what` key that starts with `prefix`.
pub(crate) fn seq_of_key(what: &str, prefix: &[u8], key: &[u8]) -> Result<Seq, StoreError> {
    key.strip_prefix(prefix)
        .and_then(|rest| <[u8; SEQ_LEN]>::try_from(rest).ok())
        .map(|b| Seq(u64::from_be_bytes(b)))
        .ok_or_else(|| StoreError::corrupt(format!("{what} key of {} bytes outside its prefix", key.len())))
}

/// Appends `len u8 · bytes`. Callers pass validated ids ([`UserId`], or device ids
/// checked by [`crate::check_device_id`]): at most 64 bytes, so the length fits.
fn push_id(key: &mut Vec<u8>, id: &[u8]) {
    key.push(id.len() as u8);
    key.extend_from_slice(id);
}

/// `app · user len · user · peer len · peer`: the prefix of one conversation's index
/// entries, and the key of one read mark.
pub(crate) fn peer_prefix(app: AppId, user: &UserId, peer: &UserId) -> Vec<u8> {
    let mut key = user_prefix(app, user);
    key.reserve(1 + peer.as_bytes().len() + SEQ_LEN);
    push_id(&mut key, peer.as_bytes());
    key
}

/// Key of one conv index entry.
pub(crate) fn conv_key(app: AppId, user: &UserId, peer: &UserId, seq: Seq) -> Vec<u8> {
    let mut key = peer_prefix(app, user, peer);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

/// Key of a read mark.
pub(crate) fn read_mark_key(app: AppId, user: &UserId, peer: &UserId) -> Vec<u8> {
    peer_prefix(app, user, peer)
}

/// The peer of a read-mark key that starts with `user_prefix` (see [`user_prefix`]).
pub(crate) fn peer_of_read_mark_key(user_prefix: &[u8], key: &[u8]) -> Result<UserId, StoreError> {
    let bad = || StoreError::corrupt(format!("read mark key of {} bytes", key.len()));
    let (&len, id) = key.strip_prefix(user_prefix).and_then(<[u8]>::split_first).ok_or_else(bad)?;
    if id.len() != usize::from(len) {
        return Err(bad());
    }
    user_id_from_bytes("read mark key", id)
}

/// `app · user len · user · device len · device`: the prefix of one device's acks.
/// The device id must have passed [`crate::check_device_id`].
pub(crate) fn device_prefix(app: AppId, user: &UserId, device_id: &str) -> Vec<u8> {
    let mut key = user_prefix(app, user);
    key.reserve(1 + device_id.len() + 1);
    push_id(&mut key, device_id.as_bytes());
    key
}

/// Key of one device ack.
pub(crate) fn device_ack_key(app: AppId, user: &UserId, device_id: &str, kind: SyncKind) -> Vec<u8> {
    let mut key = device_prefix(app, user, device_id);
    key.push(kind.as_u8());
    key
}

/// Key of a message locator.
pub(crate) fn message_index_key(app: AppId, message_key: u64) -> [u8; APP_LEN + 8] {
    let mut key = [0; APP_LEN + 8];
    key[..APP_LEN].copy_from_slice(&app.0.to_be_bytes());
    key[APP_LEN..].copy_from_slice(&message_key.to_be_bytes());
    key
}

/// A stored id that must be a valid [`UserId`].
fn user_id_from_bytes(what: &str, id: &[u8]) -> Result<UserId, StoreError> {
    let id = std::str::from_utf8(id).map_err(|_| StoreError::corrupt(format!("{what}: user id is not UTF-8")))?;
    UserId::new(id).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

/// Key of an app.
pub(crate) fn app_key(app: AppId) -> [u8; APP_LEN] {
    app.0.to_be_bytes()
}

/// Splits off the version byte and refuses versions this code does not know.
fn versioned<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    match bytes.split_first() {
        Some((&V1, rest)) => Ok(rest),
        Some((v, _)) => Err(StoreError::corrupt(format!("{what}: unknown value version {v}"))),
        None => Err(StoreError::corrupt(format!("{what}: empty value"))),
    }
}

/// Splits a big-endian u64 off the front.
fn take_u64<'a>(what: &str, bytes: &'a [u8]) -> Result<(u64, &'a [u8]), StoreError> {
    match bytes.split_first_chunk::<8>() {
        Some((n, rest)) => Ok((u64::from_be_bytes(*n), rest)),
        None => Err(StoreError::corrupt(format!("{what}: value too short"))),
    }
}

fn with_u64_header(n: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + body.len());
    out.push(V1);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Value of a log entry.
pub(crate) fn encode_log_value(time_ms: u64, payload: &[u8]) -> Vec<u8> {
    with_u64_header(time_ms, payload)
}

/// `(time_ms, payload)` of a log value.
pub(crate) fn decode_log_value(bytes: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    take_u64("log entry", versioned("log entry", bytes)?)
}

/// Value of a dedup record.
pub(crate) fn encode_dedup_value(expires_ms: u64, value: &[u8]) -> Vec<u8> {
    with_u64_header(expires_ms, value)
}

/// `(expires_ms, value)` of a dedup value.
pub(crate) fn decode_dedup_value(bytes: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    take_u64("dedup record", versioned("dedup record", bytes)?)
}

/// Value holding one seq: a seq bound, a device ack or a read mark.
pub(crate) fn encode_seq_value(seq: Seq) -> Vec<u8> {
    with_u64_header(seq.0, &[])
}

/// A value holding one seq (`what` names it in errors).
pub(crate) fn decode_seq_value(what: &str, bytes: &[u8]) -> Result<Seq, StoreError> {
    match take_u64(what, versioned(what, bytes)?)? {
        (n, []) => Ok(Seq(n)),
        (_, rest) => Err(StoreError::corrupt(format!("{what}: {} trailing bytes", rest.len()))),
    }
}

/// Value of a conv index entry: nothing, the key is the data.
pub(crate) const CONV_VALUE: [u8; 0] = [];

/// Checks a conv index value.
pub(crate) fn check_conv_value(bytes: &[u8]) -> Result<(), StoreError> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(StoreError::corrupt(format!("conv index entry: unexpected {}-byte value", bytes.len())))
    }
}

/// Value of a message locator.
pub(crate) fn encode_locator(loc: &MessageLocator) -> Vec<u8> {
    let (from, to) = (loc.from.as_bytes(), loc.to.as_bytes());
    let mut out = Vec::with_capacity(1 + 3 * 8 + 2 + from.len() + to.len());
    out.push(V1);
    for n in [loc.from_seq.0, loc.to_seq.0, loc.time_ms] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    push_id(&mut out, from);
    push_id(&mut out, to);
    out
}

/// A message locator value.
pub(crate) fn decode_locator(bytes: &[u8]) -> Result<MessageLocator, StoreError> {
    const WHAT: &str = "message locator";
    let rest = versioned(WHAT, bytes)?;
    let (from_seq, rest) = take_u64(WHAT, rest)?;
    let (to_seq, rest) = take_u64(WHAT, rest)?;
    let (time_ms, rest) = take_u64(WHAT, rest)?;
    let (from, rest) = take_id(WHAT, rest)?;
    let (to, rest) = take_id(WHAT, rest)?;
    if !rest.is_empty() {
        return Err(StoreError::corrupt(format!("{WHAT}: {} trailing bytes", rest.len())));
    }
    Ok(MessageLocator { from, to, from_seq: Seq(from_seq), to_seq: Seq(to_seq), time_ms })
}

/// Splits a `len u8 · user id` off the front.
fn take_id<'a>(what: &str, bytes: &'a [u8]) -> Result<(UserId, &'a [u8]), StoreError> {
    let (&len, rest) = bytes.split_first().ok_or_else(|| StoreError::corrupt(format!("{what}: value too short")))?;
    if rest.len() < usize::from(len) {
        return Err(StoreError::corrupt(format!("{what}: value too short")));
    }
    let (id, rest) = rest.split_at(usize::from(len));
    Ok((user_id_from_bytes(what, id)?, rest))
}

fn encode_json<T: serde::Serialize>(what: &str, rec: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![V1];
    serde_json::to_writer(&mut out, rec)
        .map_err(|e| StoreError::InvalidArgument(format!("{what} cannot be encoded: {e}")))?;
    Ok(out)
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(versioned(what, bytes)?).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

/// Value of a user record.
pub(crate) fn encode_user(rec: &UserRecord) -> Result<Vec<u8>, StoreError> {
    encode_json("user record", rec)
}

/// A user record value.
pub(crate) fn decode_user(bytes: &[u8]) -> Result<UserRecord, StoreError> {
    decode_json("user record", bytes)
}

/// Value of an app record.
pub(crate) fn encode_app(rec: &AppRecord) -> Result<Vec<u8>, StoreError> {
    encode_json("app record", rec)
}

/// An app record value.
pub(crate) fn decode_app(bytes: &[u8]) -> Result<AppRecord, StoreError> {
    decode_json("app record", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn log_keys_sort_by_seq_and_never_mix_prefix_users() {
        let a = log_key(AppId(1), &uid("a"), SyncKind::Message, Seq(u64::MAX));
        let ab = log_key(AppId(1), &uid("ab"), SyncKind::Message, Seq(0));
        let prefix_a = log_prefix(AppId(1), &uid("a"), SyncKind::Message);
        assert!(a.starts_with(&prefix_a));
        assert!(!ab.starts_with(&prefix_a));
        let k1 = log_key(AppId(1), &uid("a"), SyncKind::Message, Seq(255));
        let k2 = log_key(AppId(1), &uid("a"), SyncKind::Message, Seq(256));
        assert!(k1 < k2);
        assert_eq!(seq_of_key("log", &prefix_a, &k2).unwrap(), Seq(256));
        assert!(seq_of_key("log", &prefix_a, &prefix_a).is_err());
    }

    #[test]
    fn length_prefixes_keep_composite_keys_apart() {
        // User "a" with peer "bc" vs user "ab" with peer "c": same bytes without lengths.
        let a_bc = peer_prefix(AppId(1), &uid("a"), &uid("bc"));
        let ab_c = peer_prefix(AppId(1), &uid("ab"), &uid("c"));
        assert_ne!(a_bc, ab_c);
        assert!(!a_bc.starts_with(&ab_c) && !ab_c.starts_with(&a_bc));
        let a_b = peer_prefix(AppId(1), &uid("a"), &uid("b"));
        assert!(!conv_key(AppId(1), &uid("a"), &uid("bc"), Seq(0)).starts_with(&a_b));
        assert!(!conv_key(AppId(1), &uid("a"), &uid("b"), Seq(u64::MAX)).starts_with(&a_bc));
        let c1 = conv_key(AppId(1), &uid("a"), &uid("b"), Seq(255));
        let c2 = conv_key(AppId(1), &uid("a"), &uid("b"), Seq(256));
        assert!(c1 < c2);
        assert_eq!(seq_of_key("conv", &a_b, &c2).unwrap(), Seq(256));
        assert_eq!(conv_key(AppId(1), &uid("a"), &uid("b"), Seq(7)), seq_key(&a_b, Seq(7)));

        // Devices likewise, and a device prefix never covers another device's keys.
        let dev = device_prefix(AppId(1), &uid("a"), "bc");
        assert!(!device_ack_key(AppId(1), &uid("ab"), "c", SyncKind::Message).starts_with(&dev));
        assert!(!device_ack_key(AppId(1), &uid("a"), "bcd", SyncKind::Message).starts_with(&dev));
        assert!(device_ack_key(AppId(1), &uid("a"), "bc", SyncKind::Profile).starts_with(&dev));

        // Read-mark keys give their peer back, and only well-formed ones.
        let user_a = user_prefix(AppId(1), &uid("a"));
        assert_eq!(peer_of_read_mark_key(&user_a, &read_mark_key(AppId(1), &uid("a"), &uid("bc"))).unwrap(), uid("bc"));
        assert!(peer_of_read_mark_key(&user_a, &user_a).is_err());
        let mut long = read_mark_key(AppId(1), &uid("a"), &uid("bc"));
        long.push(b'x');
        assert!(peer_of_read_mark_key(&user_a, &long).is_err());
        let mut bad = user_a.clone();
        bad.extend_from_slice(&[2, b'a', b' ']);
        assert!(matches!(peer_of_read_mark_key(&user_a, &bad), Err(StoreError::Corrupt { .. })));

        // Message keys sort numerically within an app and never cross apps.
        assert!(message_index_key(AppId(1), 255) < message_index_key(AppId(1), 256));
        assert!(message_index_key(AppId(1), u64::MAX) < message_index_key(AppId(2), 0));
    }

    #[test]
    fn values_roundtrip() {
        let v = encode_log_value(42, b"hi");
        assert_eq!(decode_log_value(&v).unwrap(), (42, &b"hi"[..]));
        let v = encode_dedup_value(7, b"");
        assert_eq!(decode_dedup_value(&v).unwrap(), (7, &b""[..]));
        assert_eq!(decode_seq_value("seq bound", &encode_seq_value(Seq(9))).unwrap(), Seq(9));
        let loc = MessageLocator {
            from: uid("a"),
            to: uid(&"b".repeat(64)),
            from_seq: Seq(1),
            to_seq: Seq(u64::MAX),
            time_ms: 3,
        };
        assert_eq!(decode_locator(&encode_locator(&loc)).unwrap(), loc);
        assert!(check_conv_value(&CONV_VALUE).is_ok());
        let rec = UserRecord::new(uid("u"), 5);
        assert_eq!(decode_user(&encode_user(&rec).unwrap()).unwrap(), rec);
        let app = AppRecord { app_id: AppId(3), secret: "s".into(), created_ms: 1 };
        assert_eq!(decode_app(&encode_app(&app).unwrap()).unwrap(), app);
    }

    #[test]
    fn bad_bytes_are_corrupt_not_panics() {
        for bad in [&b""[..], &[0], &[2, 0, 0], &[V1], &[V1, 1, 2, 3]] {
            assert!(matches!(decode_log_value(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_dedup_value(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_seq_value("seq bound", bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_locator(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_user(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_app(bad), Err(StoreError::Corrupt { .. })));
        }
        let mut long = encode_seq_value(Seq(1));
        long.push(0);
        assert!(decode_seq_value("seq bound", &long).is_err());
        assert!(matches!(check_conv_value(&[V1]), Err(StoreError::Corrupt { .. })));

        // Locators: every truncation, trailing bytes, bad lengths and bad ids.
        let loc = MessageLocator { from: uid("ab"), to: uid("c"), from_seq: Seq(1), to_seq: Seq(2), time_ms: 3 };
        let good = encode_locator(&loc);
        for cut in 0..good.len() {
            assert!(matches!(decode_locator(&good[..cut]), Err(StoreError::Corrupt { .. })), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(b'x');
        assert!(decode_locator(&long).is_err());
        let from_len_at = 1 + 3 * 8;
        let mut zero_len = good.clone();
        zero_len[from_len_at] = 0; // empty id
        assert!(decode_locator(&zero_len).is_err());
        let mut huge_len = good.clone();
        huge_len[from_len_at] = 255;
        assert!(decode_locator(&huge_len).is_err());
        let mut bad_char = good.clone();
        bad_char[from_len_at + 1] = b' ';
        assert!(decode_locator(&bad_char).is_err());
        let mut not_utf8 = good;
        not_utf8[from_len_at + 1] = 0xff;
        assert!(decode_locator(&not_utf8).is_err());
        // A record whose user id breaks the UserId rules is corrupt, not accepted.
        assert!(decode_user(b"\x01{\"user_id\":\"a b\"}").is_err());
    }
}
