//! Key layout and value encodings of the embedded backend.
//!
//! Keys are built so that every read the trait offers is a point get or one range
//! scan over contiguous keys:
//!
//! | keyspace        | key                                                         | value                          |
//! |-----------------|-------------------------------------------------------------|--------------------------------|
//! | `users`         | app u32 BE · user id                                        | v1 · JSON [`UserRecord`]       |
//! | `log`           | app u32 BE · owner · kind u8 · seq u64 BE                   | v1 · time_ms u64 BE · payload  |
//! | `seq_bounds`    | app u32 BE · owner · kind u8                                | v1 · bound u64 BE              |
//! | `dedup`         | dedup key bytes                                             | v1 · expires_ms u64 BE · value |
//! | `apps`          | app u32 BE                                                  | v1 · JSON [`AppRecord`]        |
//! | `device_acks`   | app u32 BE · user · device len u8 · device id · log (below) | v1 · seq u64 BE                |
//! | `msg_index`     | app u32 BE · message key u64 BE                             | v2 · locator (below)           |
//! | `conv_index`    | app u32 BE · user · conversation · seq u64 BE               | empty                          |
//! | `read_marks`    | app u32 BE · user · conversation                            | v1 · seq u64 BE                |
//! | `conversations` | app u32 BE · user · conversation                            | v1 · record (below)            |
//! | `groups`        | app u32 BE · group                                          | v1 · JSON [`GroupRecord`]      |
//! | `group_members` | app u32 BE · group · member (a user)                        | v1 · JSON [`GroupMemberRecord`]|
//! | `meta`          | `format`                                                    | on-disk format number u8       |
//!
//! **Owners and conversations in keys.** A user is `len u8 · id` (len 1..=64) and a
//! group `0x80|len u8 · id`: the tag rides in the length byte's top bit, so a group
//! costs no extra byte, and every key written before groups existed (format 1, users
//! only) is byte for byte the key of the same user today. A conversation is encoded
//! the same way: `Single(peer)` as the peer user, `Group(g)` as the group. The `log`
//! part of a device-ack key is `kind u8` for the device's own user's log (the only
//! kind of ack format 1 had) and `0xFF · owner · kind u8` for another owner's log (a
//! group timeline); kinds are < 0x80, so the two never meet.
//!
//! A locator value is `v2 · time_ms u64 BE · sender · copy*`, each copy `owner · seq
//! u64 BE`, in the locator's order; `sender` is `0x00` when the sender is the user of
//! the first copy (every 1:1 message: one byte instead of repeating the id), else
//! `len u8 · id`. Format 1 wrote 1:1 locators as `v1 · from_seq u64 · to_seq u64 ·
//! time_ms u64 · from len · from · to len · to`; they are still read.
//!
//! A conversation record value is `v1 · flags u8 · read_seq u64 · sync_seq u64 ·
//! updated_ms u64 · [last] · extra`, flags bit 0 = pinned, bit 1 = muted, bit 2 = has
//! `last` = `message_key u64 · seq u64 · time_ms u64 · sender len u8 · sender ·
//! preview len u16 BE · preview`; `extra` runs to the end.
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

use crate::{
    AppId, AppRecord, Conversation, ConversationRecord, GroupId, GroupMemberRecord, GroupRecord, LastMessage,
    MessageCopy, MessageLocator, Owner, Seq, StoreError, SyncKind, UserId, UserRecord,
};

/// The version byte that starts every value this code writes (but locators).
const V1: u8 = 1;
/// The version byte of owner-based locators.
const V2: u8 = 2;
/// Set in an id's length byte: the id is a group's.
const GROUP_TAG: u8 = 0x80;
/// Starts the log part of a device-ack key for another owner's log.
const OTHER_OWNER: u8 = 0xFF;

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

/// Appends an owner: `len · id` for a user, `0x80|len · id` for a group.
fn push_owner(key: &mut Vec<u8>, owner: &Owner) {
    match owner {
        Owner::User(u) => push_id(key, u.as_bytes()),
        Owner::Group(g) => push_group(key, g),
    }
}

/// Appends a group id with its tag. [`GroupId`] guarantees 1..=64 bytes.
fn push_group(key: &mut Vec<u8>, group: &GroupId) {
    key.push(GROUP_TAG | group.as_bytes().len() as u8);
    key.extend_from_slice(group.as_bytes());
}

/// Appends a conversation: the peer as a user, or the group.
fn push_conversation(key: &mut Vec<u8>, conv: &Conversation) {
    match conv {
        Conversation::Single(peer) => push_id(key, peer.as_bytes()),
        Conversation::Group(g) => push_group(key, g),
    }
}

/// `app · owner`: the prefix shared by one owner's logs and bounds.
pub(crate) fn owner_prefix(app: AppId, owner: &Owner) -> Vec<u8> {
    match owner {
        // Users: exactly the format-1 bytes.
        Owner::User(u) => user_prefix(app, u),
        Owner::Group(g) => {
            let mut key = Vec::with_capacity(APP_LEN + 1 + g.as_bytes().len() + 1 + SEQ_LEN);
            key.extend_from_slice(&app.0.to_be_bytes());
            push_group(&mut key, g);
            key
        }
    }
}

/// `app · owner · kind`: the prefix of one log, and the key of one bound.
pub(crate) fn log_prefix(app: AppId, owner: &Owner, kind: SyncKind) -> Vec<u8> {
    let mut key = owner_prefix(app, owner);
    key.push(kind.as_u8());
    key
}

/// Key of a seq bound.
pub(crate) fn bound_key(app: AppId, owner: &Owner, kind: SyncKind) -> Vec<u8> {
    log_prefix(app, owner, kind)
}

/// Key of one log entry.
pub(crate) fn log_key(app: AppId, owner: &Owner, kind: SyncKind, seq: Seq) -> Vec<u8> {
    let mut key = log_prefix(app, owner, kind);
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

/// `app · user · conversation`: the prefix of one conversation's index entries, and
/// the key of one read mark and of one conversation record.
pub(crate) fn conv_prefix(app: AppId, user: &UserId, conv: &Conversation) -> Vec<u8> {
    let mut key = user_prefix(app, user);
    key.reserve(1 + conv_id_len(conv) + SEQ_LEN);
    push_conversation(&mut key, conv);
    key
}

fn conv_id_len(conv: &Conversation) -> usize {
    match conv {
        Conversation::Single(u) => u.as_bytes().len(),
        Conversation::Group(g) => g.as_bytes().len(),
    }
}

/// Key of one conv index entry.
pub(crate) fn conv_key(app: AppId, user: &UserId, conv: &Conversation, seq: Seq) -> Vec<u8> {
    let mut key = conv_prefix(app, user, conv);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

/// Key of a read mark.
pub(crate) fn read_mark_key(app: AppId, user: &UserId, conv: &Conversation) -> Vec<u8> {
    conv_prefix(app, user, conv)
}

/// Key of a conversation record.
pub(crate) fn conversation_key(app: AppId, user: &UserId, conv: &Conversation) -> Vec<u8> {
    conv_prefix(app, user, conv)
}

/// The conversation of a read-mark or conversation-record key that starts with
/// `user_prefix` (see [`user_prefix`]); `what` names the key in errors.
pub(crate) fn conv_of_key(what: &str, user_prefix: &[u8], key: &[u8]) -> Result<Conversation, StoreError> {
    let rest =
        key.strip_prefix(user_prefix).ok_or_else(|| StoreError::corrupt(format!("{what} key outside its prefix")))?;
    match take_owner(what, rest)? {
        (owner, []) => Ok(match owner {
            Owner::User(u) => Conversation::Single(u),
            Owner::Group(g) => Conversation::Group(g),
        }),
        (_, extra) => Err(StoreError::corrupt(format!("{what} key with {} trailing bytes", extra.len()))),
    }
}

/// `app · user · device len · device`: the prefix of one device's acks.
/// The device id must have passed [`crate::check_device_id`].
pub(crate) fn device_prefix(app: AppId, user: &UserId, device_id: &str) -> Vec<u8> {
    let mut key = user_prefix(app, user);
    key.reserve(1 + device_id.len() + 1);
    push_id(&mut key, device_id.as_bytes());
    key
}

/// Key of one device ack: the device's own user's log is `kind` (as in format 1),
/// another owner's is `0xFF · owner · kind`.
pub(crate) fn device_ack_key(app: AppId, user: &UserId, device_id: &str, owner: &Owner, kind: SyncKind) -> Vec<u8> {
    let mut key = device_prefix(app, user, device_id);
    if owner.as_user() != Some(user) {
        key.push(OTHER_OWNER);
        push_owner(&mut key, owner);
    }
    key.push(kind.as_u8());
    key
}

/// The (owner, kind number) of a device-ack key that starts with `device_prefix`; the
/// kind is left a number so a newer build's kinds can be skipped.
pub(crate) fn log_of_device_ack_key(
    user: &UserId,
    device_prefix: &[u8],
    key: &[u8],
) -> Result<(Owner, u8), StoreError> {
    const WHAT: &str = "device ack key";
    let bad = || StoreError::corrupt(format!("{WHAT} of {} bytes", key.len()));
    match key.strip_prefix(device_prefix).ok_or_else(bad)? {
        [kind] if *kind != OTHER_OWNER => Ok((Owner::User(user.clone()), *kind)),
        [OTHER_OWNER, rest @ ..] => match take_owner(WHAT, rest)? {
            (owner, [kind]) => Ok((owner, *kind)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Splits a tagged owner (`len · id` user or `0x80|len · id` group) off the front.
fn take_owner<'a>(what: &str, bytes: &'a [u8]) -> Result<(Owner, &'a [u8]), StoreError> {
    let short = || StoreError::corrupt(format!("{what}: too short"));
    let (&tagged, rest) = bytes.split_first().ok_or_else(short)?;
    let len = usize::from(tagged & !GROUP_TAG);
    if rest.len() < len {
        return Err(short());
    }
    let (id, rest) = rest.split_at(len);
    let owner = if tagged & GROUP_TAG == 0 {
        Owner::User(user_id_from_bytes(what, id)?)
    } else {
        let id = std::str::from_utf8(id).map_err(|_| StoreError::corrupt(format!("{what}: group id is not UTF-8")))?;
        Owner::Group(GroupId::new(id).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))?)
    };
    Ok((owner, rest))
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

/// `app · group` (tagged, as in every key): the key of a group record, and the
/// prefix of its members' keys.
pub(crate) fn group_key(app: AppId, group: &GroupId) -> Vec<u8> {
    let mut key = Vec::with_capacity(APP_LEN + 1 + group.as_bytes().len() + 1 + UserId::MAX_LEN);
    key.extend_from_slice(&app.0.to_be_bytes());
    push_group(&mut key, group);
    key
}

/// Key of one member: `app · group · len · member`.
pub(crate) fn group_member_key(app: AppId, group: &GroupId, member: &UserId) -> Vec<u8> {
    let mut key = group_key(app, group);
    push_id(&mut key, member.as_bytes());
    key
}

/// Value of a group record.
pub(crate) fn encode_group(rec: &GroupRecord) -> Result<Vec<u8>, StoreError> {
    encode_json("group record", rec)
}

/// A group record value.
pub(crate) fn decode_group(bytes: &[u8]) -> Result<GroupRecord, StoreError> {
    decode_json("group record", bytes)
}

/// Value of a member record.
pub(crate) fn encode_group_member(rec: &GroupMemberRecord) -> Result<Vec<u8>, StoreError> {
    encode_json("group member record", rec)
}

/// A member record value.
pub(crate) fn decode_group_member(bytes: &[u8]) -> Result<GroupMemberRecord, StoreError> {
    decode_json("group member record", bytes)
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

/// Value of a message locator (v2).
pub(crate) fn encode_locator(loc: &MessageLocator) -> Vec<u8> {
    let ids: usize = loc.copies.iter().map(|c| 1 + c.owner.id().len() + 8).sum();
    let mut out = Vec::with_capacity(1 + 8 + 1 + loc.sender.as_bytes().len() + ids);
    out.push(V2);
    out.extend_from_slice(&loc.time_ms.to_be_bytes());
    match loc.copies.first() {
        Some(MessageCopy { owner: Owner::User(u), .. }) if *u == loc.sender => out.push(0),
        _ => push_id(&mut out, loc.sender.as_bytes()),
    }
    for c in &loc.copies {
        push_owner(&mut out, &c.owner);
        out.extend_from_slice(&c.seq.0.to_be_bytes());
    }
    out
}

/// A message locator value: v2, or a format-1 (v1, 1:1 only) one.
pub(crate) fn decode_locator(bytes: &[u8]) -> Result<MessageLocator, StoreError> {
    const WHAT: &str = "message locator";
    match bytes.split_first() {
        Some((&V1, rest)) => {
            let (from_seq, rest) = take_u64(WHAT, rest)?;
            let (to_seq, rest) = take_u64(WHAT, rest)?;
            let (time_ms, rest) = take_u64(WHAT, rest)?;
            let (from, rest) = take_id(WHAT, rest)?;
            let (to, rest) = take_id(WHAT, rest)?;
            if !rest.is_empty() {
                return Err(StoreError::corrupt(format!("{WHAT}: {} trailing bytes", rest.len())));
            }
            Ok(MessageLocator::single(from, Seq(from_seq), to, Seq(to_seq), time_ms))
        }
        Some((&V2, rest)) => {
            let (time_ms, rest) = take_u64(WHAT, rest)?;
            let (sender, mut rest) = match rest.split_first() {
                Some((0, rest)) => (None, rest),
                _ => {
                    let (id, rest) = take_id(WHAT, rest)?;
                    (Some(id), rest)
                }
            };
            let mut copies = Vec::with_capacity(2);
            while !rest.is_empty() {
                let (owner, r) = take_owner(WHAT, rest)?;
                let (seq, r) = take_u64(WHAT, r)?;
                copies.push(MessageCopy { owner, seq: Seq(seq) });
                rest = r;
            }
            let sender = match (sender, copies.first()) {
                (Some(s), Some(_)) => s,
                (None, Some(MessageCopy { owner: Owner::User(u), .. })) => u.clone(),
                _ => return Err(StoreError::corrupt(format!("{WHAT}: no sender or no copies"))),
            };
            Ok(MessageLocator { sender, time_ms, copies })
        }
        Some((v, _)) => Err(StoreError::corrupt(format!("{WHAT}: unknown value version {v}"))),
        None => Err(StoreError::corrupt(format!("{WHAT}: empty value"))),
    }
}

const FLAG_TOP: u8 = 1;
const FLAG_MUTE: u8 = 2;
const FLAG_LAST: u8 = 4;

/// Value of a conversation record (its conversation is in the key).
pub(crate) fn encode_conversation(rec: &ConversationRecord) -> Vec<u8> {
    let last_len = rec.last.as_ref().map_or(0, |l| 3 * 8 + 1 + l.sender.as_bytes().len() + 2 + l.preview.len());
    let mut out = Vec::with_capacity(2 + 3 * 8 + last_len + rec.extra.len());
    out.push(V1);
    let flags = if rec.is_top { FLAG_TOP } else { 0 }
        | if rec.is_mute { FLAG_MUTE } else { 0 }
        | if rec.last.is_some() { FLAG_LAST } else { 0 };
    out.push(flags);
    for n in [rec.read_seq.0, rec.sync_seq.0, rec.updated_ms] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    if let Some(l) = &rec.last {
        for n in [l.message_key, l.seq.0, l.time_ms] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        push_id(&mut out, l.sender.as_bytes());
        // Validated ≤ ConversationRecord::MAX_TEXT_LEN (4 KiB): fits a u16.
        out.extend_from_slice(&(l.preview.len() as u16).to_be_bytes());
        out.extend_from_slice(l.preview.as_bytes());
    }
    out.extend_from_slice(rec.extra.as_bytes());
    out
}

/// A conversation record value, for the conversation its key names.
pub(crate) fn decode_conversation(conversation: Conversation, bytes: &[u8]) -> Result<ConversationRecord, StoreError> {
    const WHAT: &str = "conversation record";
    let rest = versioned(WHAT, bytes)?;
    let (&flags, rest) = rest.split_first().ok_or_else(|| StoreError::corrupt(format!("{WHAT}: value too short")))?;
    if flags & !(FLAG_TOP | FLAG_MUTE | FLAG_LAST) != 0 {
        return Err(StoreError::corrupt(format!("{WHAT}: unknown flags {flags:#x}")));
    }
    let (read_seq, rest) = take_u64(WHAT, rest)?;
    let (sync_seq, rest) = take_u64(WHAT, rest)?;
    let (updated_ms, mut rest) = take_u64(WHAT, rest)?;
    let last = if flags & FLAG_LAST != 0 {
        let (message_key, r) = take_u64(WHAT, rest)?;
        let (seq, r) = take_u64(WHAT, r)?;
        let (time_ms, r) = take_u64(WHAT, r)?;
        let (sender, r) = take_id(WHAT, r)?;
        let (len, r) =
            r.split_first_chunk::<2>().ok_or_else(|| StoreError::corrupt(format!("{WHAT}: value too short")))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if r.len() < len {
            return Err(StoreError::corrupt(format!("{WHAT}: value too short")));
        }
        let (preview, r) = r.split_at(len);
        rest = r;
        Some(LastMessage { message_key, seq: Seq(seq), time_ms, sender, preview: utf8(WHAT, preview)? })
    } else {
        None
    };
    Ok(ConversationRecord {
        conversation,
        last,
        read_seq: Seq(read_seq),
        is_top: flags & FLAG_TOP != 0,
        is_mute: flags & FLAG_MUTE != 0,
        extra: utf8(WHAT, rest)?,
        sync_seq: Seq(sync_seq),
        updated_ms,
    })
}

fn utf8(what: &str, bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::corrupt(format!("{what}: text is not UTF-8")))
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

    fn user(s: &str) -> Owner {
        Owner::User(uid(s))
    }

    fn group(s: &str) -> Owner {
        Owner::Group(GroupId::new(s).unwrap())
    }

    #[test]
    fn log_keys_sort_by_seq_and_never_mix_prefix_owners() {
        let a = log_key(AppId(1), &user("a"), SyncKind::Message, Seq(u64::MAX));
        let ab = log_key(AppId(1), &user("ab"), SyncKind::Message, Seq(0));
        let prefix_a = log_prefix(AppId(1), &user("a"), SyncKind::Message);
        assert!(a.starts_with(&prefix_a));
        assert!(!ab.starts_with(&prefix_a));
        let k1 = log_key(AppId(1), &user("a"), SyncKind::Message, Seq(255));
        let k2 = log_key(AppId(1), &user("a"), SyncKind::Message, Seq(256));
        assert!(k1 < k2);
        assert_eq!(seq_of_key("log", &prefix_a, &k2).unwrap(), Seq(256));
        assert!(seq_of_key("log", &prefix_a, &prefix_a).is_err());
        // A group and a user with the same id never share a prefix.
        let g = log_prefix(AppId(1), &group("a"), SyncKind::Message);
        assert!(!g.starts_with(&prefix_a) && !prefix_a.starts_with(&g));
        assert!(!log_key(AppId(1), &group("a"), SyncKind::Message, Seq(0)).starts_with(&prefix_a));
    }

    /// Format-1 keys (users only) are byte for byte what this code writes for users:
    /// the upgrade to format 2 rewrites no key.
    #[test]
    fn user_keys_are_the_format_1_bytes() {
        let app = [0, 0, 0, 7];
        let mut want = app.to_vec();
        want.extend_from_slice(&[2, b'a', b'b', SyncKind::Profile.as_u8()]);
        want.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(log_key(AppId(7), &user("ab"), SyncKind::Profile, Seq(9)), want);
        assert_eq!(bound_key(AppId(7), &user("ab"), SyncKind::Profile), want[..8].to_vec());
        let mut want = app.to_vec();
        want.extend_from_slice(&[1, b'u', 2, b'd', b'v', SyncKind::Message.as_u8()]);
        assert_eq!(device_ack_key(AppId(7), &uid("u"), "dv", &user("u"), SyncKind::Message), want);
        let mut want = app.to_vec();
        want.extend_from_slice(&[1, b'u', 1, b'p']);
        assert_eq!(read_mark_key(AppId(7), &uid("u"), &Conversation::Single(uid("p"))), want);
        want.extend_from_slice(&3u64.to_be_bytes());
        assert_eq!(conv_key(AppId(7), &uid("u"), &Conversation::Single(uid("p")), Seq(3)), want);
        // A group is tagged in its length byte.
        let mut want = app.to_vec();
        want.extend_from_slice(&[0x81, b'g', 0]);
        assert_eq!(log_prefix(AppId(7), &group("g"), SyncKind::Message), want);
    }

    #[test]
    fn length_prefixes_keep_composite_keys_apart() {
        let single = |s: &str| Conversation::Single(uid(s));
        // User "a" with peer "bc" vs user "ab" with peer "c": same bytes without lengths.
        let a_bc = conv_prefix(AppId(1), &uid("a"), &single("bc"));
        let ab_c = conv_prefix(AppId(1), &uid("ab"), &single("c"));
        assert_ne!(a_bc, ab_c);
        assert!(!a_bc.starts_with(&ab_c) && !ab_c.starts_with(&a_bc));
        let a_b = conv_prefix(AppId(1), &uid("a"), &single("b"));
        assert!(!conv_key(AppId(1), &uid("a"), &single("bc"), Seq(0)).starts_with(&a_b));
        assert!(!conv_key(AppId(1), &uid("a"), &single("b"), Seq(u64::MAX)).starts_with(&a_bc));
        let c1 = conv_key(AppId(1), &uid("a"), &single("b"), Seq(255));
        let c2 = conv_key(AppId(1), &uid("a"), &single("b"), Seq(256));
        assert!(c1 < c2);
        assert_eq!(seq_of_key("conv", &a_b, &c2).unwrap(), Seq(256));
        assert_eq!(conv_key(AppId(1), &uid("a"), &single("b"), Seq(7)), seq_key(&a_b, Seq(7)));
        let a_gb = conv_prefix(AppId(1), &uid("a"), &Conversation::Group(GroupId::new("b").unwrap()));
        assert!(!a_gb.starts_with(&a_b) && !a_b.starts_with(&a_gb));

        // Devices likewise, and a device prefix never covers another device's keys.
        let m = SyncKind::Message;
        let dev = device_prefix(AppId(1), &uid("a"), "bc");
        assert!(!device_ack_key(AppId(1), &uid("ab"), "c", &user("ab"), m).starts_with(&dev));
        assert!(!device_ack_key(AppId(1), &uid("a"), "bcd", &user("a"), m).starts_with(&dev));
        assert!(device_ack_key(AppId(1), &uid("a"), "bc", &user("a"), SyncKind::Profile).starts_with(&dev));
        for owner in [user("a"), user("b"), group("a"), group(&"g".repeat(64))] {
            let key = device_ack_key(AppId(1), &uid("a"), "bc", &owner, SyncKind::Profile);
            assert!(key.starts_with(&dev));
            assert_eq!(log_of_device_ack_key(&uid("a"), &dev, &key).unwrap(), (owner, SyncKind::Profile.as_u8()));
        }
        for bad in [&[][..], &[OTHER_OWNER], &[0, 0], &[OTHER_OWNER, 1, b'x'], &[OTHER_OWNER, 0x82, b'g', 0]] {
            let mut key = dev.clone();
            key.extend_from_slice(bad);
            assert!(log_of_device_ack_key(&uid("a"), &dev, &key).is_err(), "{bad:?}");
        }

        // Read-mark keys give their conversation back, and only well-formed ones.
        let user_a = user_prefix(AppId(1), &uid("a"));
        let g = Conversation::Group(GroupId::new("bc").unwrap());
        for conv in [single("bc"), g] {
            let key = read_mark_key(AppId(1), &uid("a"), &conv);
            assert_eq!(conv_of_key("read mark", &user_a, &key).unwrap(), conv);
        }
        assert!(conv_of_key("read mark", &user_a, &user_a).is_err());
        let mut long = read_mark_key(AppId(1), &uid("a"), &single("bc"));
        long.push(b'x');
        assert!(conv_of_key("read mark", &user_a, &long).is_err());
        let mut bad = user_a.clone();
        bad.extend_from_slice(&[2, b'a', b' ']);
        assert!(matches!(conv_of_key("read mark", &user_a, &bad), Err(StoreError::Corrupt { .. })));

        // Message keys sort numerically within an app and never cross apps.
        assert!(message_index_key(AppId(1), 255) < message_index_key(AppId(1), 256));
        assert!(message_index_key(AppId(1), u64::MAX) < message_index_key(AppId(2), 0));
    }

    fn sample_locators() -> Vec<MessageLocator> {
        let g = GroupId::new("g".repeat(64)).unwrap();
        vec![
            MessageLocator::single(uid("a"), Seq(1), uid(&"b".repeat(64)), Seq(u64::MAX), 3),
            MessageLocator::single(uid("me"), Seq(5), uid("me"), Seq(5), 4),
            MessageLocator::group(uid("s"), g.clone(), Seq(9), 5),
            MessageLocator {
                sender: uid("x"),
                time_ms: 6,
                copies: vec![
                    MessageCopy { owner: Owner::User(uid("y")), seq: Seq(1) },
                    MessageCopy { owner: Owner::Group(g), seq: Seq(2) },
                ],
            },
        ]
    }

    #[test]
    fn values_roundtrip() {
        let v = encode_log_value(42, b"hi");
        assert_eq!(decode_log_value(&v).unwrap(), (42, &b"hi"[..]));
        let v = encode_dedup_value(7, b"");
        assert_eq!(decode_dedup_value(&v).unwrap(), (7, &b""[..]));
        assert_eq!(decode_seq_value("seq bound", &encode_seq_value(Seq(9))).unwrap(), Seq(9));
        for loc in sample_locators() {
            assert_eq!(decode_locator(&encode_locator(&loc)).unwrap(), loc);
        }
        // A 1:1 locator costs one byte more than format 1's (the copy tags), not a
        // second copy of the sender's id.
        let one = MessageLocator::single(uid("alice"), Seq(1), uid("bob"), Seq(2), 3);
        assert_eq!(encode_locator(&one).len(), 1 + 8 + 1 + (1 + 5 + 8) + (1 + 3 + 8));
        assert!(check_conv_value(&CONV_VALUE).is_ok());
        let rec = UserRecord::new(uid("u"), 5);
        assert_eq!(decode_user(&encode_user(&rec).unwrap()).unwrap(), rec);
        let app = AppRecord { app_id: AppId(3), secret: "s".into(), created_ms: 1 };
        assert_eq!(decode_app(&encode_app(&app).unwrap()).unwrap(), app);
        let conv = Conversation::Single(uid("p"));
        let mut full = ConversationRecord::new(conv.clone());
        full.last = Some(LastMessage {
            message_key: 1,
            seq: Seq(2),
            time_ms: 3,
            sender: uid("s"),
            preview: "ünïcode ✓".into(),
        });
        full.is_top = true;
        full.extra = "{}".into();
        full.read_seq = Seq(u64::MAX);
        for rec in [ConversationRecord::new(conv.clone()), full] {
            assert_eq!(decode_conversation(conv.clone(), &encode_conversation(&rec)).unwrap(), rec);
        }
    }

    /// Locators written by format 1 (v1, 1:1 only) still read, as owner-based ones.
    #[test]
    fn format_1_locators_read() {
        let mut v1 = vec![V1];
        for n in [1u64, 2, 3] {
            v1.extend_from_slice(&n.to_be_bytes());
        }
        v1.extend_from_slice(&[2, b'a', b'b', 1, b'c']);
        assert_eq!(decode_locator(&v1).unwrap(), MessageLocator::single(uid("ab"), Seq(1), uid("c"), Seq(2), 3));
        let mut to_self = vec![V1];
        for n in [4u64, 4, 5] {
            to_self.extend_from_slice(&n.to_be_bytes());
        }
        to_self.extend_from_slice(&[1, b'm', 1, b'm']);
        let loc = decode_locator(&to_self).unwrap();
        assert_eq!(loc.copies, vec![MessageCopy { owner: Owner::User(uid("m")), seq: Seq(4) }]);
        for cut in 0..v1.len() {
            assert!(matches!(decode_locator(&v1[..cut]), Err(StoreError::Corrupt { .. })), "cut at {cut}");
        }
    }

    #[test]
    fn bad_bytes_are_corrupt_not_panics() {
        for bad in [&b""[..], &[0], &[3, 0, 0], &[V1], &[V1, 1, 2, 3]] {
            assert!(matches!(decode_log_value(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_dedup_value(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_seq_value("seq bound", bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_locator(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_user(bad), Err(StoreError::Corrupt { .. })));
            assert!(matches!(decode_app(bad), Err(StoreError::Corrupt { .. })));
            let conv = Conversation::Single(uid("p"));
            assert!(matches!(decode_conversation(conv, bad), Err(StoreError::Corrupt { .. })));
        }
        let mut long = encode_seq_value(Seq(1));
        long.push(0);
        assert!(decode_seq_value("seq bound", &long).is_err());
        assert!(matches!(check_conv_value(&[V1]), Err(StoreError::Corrupt { .. })));

        // Locators: every truncation inside a field, bad lengths and bad ids.
        for loc in sample_locators() {
            let good = encode_locator(&loc);
            for cut in 0..good.len() {
                // Cutting exactly between copies leaves a shorter valid locator.
                if let Ok(shorter) = decode_locator(&good[..cut]) {
                    assert!(shorter.copies.len() < loc.copies.len() && !shorter.copies.is_empty(), "cut at {cut}");
                }
            }
        }
        let good = encode_locator(&MessageLocator::single(uid("ab"), Seq(1), uid("c"), Seq(2), 3));
        let first_copy_at = 1 + 8 + 1;
        let mut zero_len = good.clone();
        zero_len[first_copy_at] = 0; // empty id
        assert!(decode_locator(&zero_len).is_err());
        let mut huge_len = good.clone();
        huge_len[first_copy_at] = 0x7f;
        assert!(decode_locator(&huge_len).is_err());
        let mut bad_char = good.clone();
        bad_char[first_copy_at + 1] = b' ';
        assert!(decode_locator(&bad_char).is_err());
        let mut not_utf8 = good.clone();
        not_utf8[first_copy_at + 1] = 0xff;
        assert!(decode_locator(&not_utf8).is_err());
        // Sender "the first copy's user" with no copies, or a group first.
        assert!(decode_locator(&good[..first_copy_at]).is_err());
        let g = encode_locator(&MessageLocator::group(uid("s"), GroupId::new("g").unwrap(), Seq(1), 1));
        let mut implied = g[..1 + 8].to_vec();
        implied.push(0);
        implied.extend_from_slice(&g[1 + 8 + 2..]);
        assert!(decode_locator(&implied).is_err());

        // Conversation records: truncations, unknown flags, bad text.
        let conv = Conversation::Single(uid("p"));
        let mut rec = ConversationRecord::new(conv.clone());
        rec.last =
            Some(LastMessage { message_key: 1, seq: Seq(2), time_ms: 3, sender: uid("s"), preview: "pv".into() });
        let good = encode_conversation(&rec);
        let fixed = 2 + 3 * 8 + 3 * 8 + 2 + 2 + 2;
        for cut in 0..fixed {
            assert!(decode_conversation(conv.clone(), &good[..cut]).is_err(), "cut at {cut}");
        }
        let mut flags = good.clone();
        flags[1] |= 0x80;
        assert!(decode_conversation(conv.clone(), &flags).is_err());
        let mut bad_text = good;
        bad_text.push(0xff);
        assert!(decode_conversation(conv, &bad_text).is_err());
        // A record whose user id breaks the UserId rules is corrupt, not accepted.
        assert!(decode_user(b"\x01{\"user_id\":\"a b\"}").is_err());
    }
}
