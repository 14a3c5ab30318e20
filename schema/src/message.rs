//! Messages: the borrowed view every tier uses ([`MessageParts`]), the stored form of a
//! timeline entry (a bare FlatBuffers `Message` without the owner's seq, which is the
//! storage key), and the frames that carry messages (Send, SendAck, Push, PullResult).
//!
//! A message is decoded from storage and re-encoded into a frame with the receiving
//! user's seq; nothing here allocates beyond the output buffers.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, InvalidFlatbuffer, Vector, VerifierOptions, WIPOffset};

use crate::client::{self, Body, ConversationType, ElemType, EntryKind, SyncKind};
use crate::encode::{finish_client, finish_client_in, with_builder};

/// One body element, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ElemParts<'a> {
    pub elem_type: ElemType,
    pub text: &'a str,
    pub data: &'a [u8],
    pub url: &'a str,
    pub extra: &'a str,
}

impl ElemParts<'_> {
    /// Bytes this element contributes to the body-size limit.
    pub fn size(&self) -> usize {
        self.text.len() + self.data.len() + self.url.len() + self.extra.len()
    }
}

/// A message or timeline event, borrowed. `seq` is the owner's seq (0 in storage).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageParts<'a> {
    pub message_key: u64,
    pub conversation_type: ConversationType,
    pub from_id: &'a str,
    pub to_id: &'a str,
    pub seq: u64,
    pub server_time_ms: u64,
    pub client_time_ms: u64,
    pub client_msg_id: &'a str,
    pub elems: Vec<ElemParts<'a>>,
    pub recalled: bool,
    pub from_device: &'a str,
    pub entry: EntryKind,
    /// The original system's `messageRandom` (opaque).
    pub random: u64,
    /// The original system's `badgeMode` (opaque).
    pub badge_mode: u8,
    /// Seconds after `server_time_ms` when the message leaves offline sync; 0: never
    /// before the app's retention.
    pub life_time_secs: u32,
}

/// Reads the elements of a `Message`/`Send` vector.
pub fn elems_of<'a>(v: Option<Vector<'a, ForwardsUOffset<client::Elem<'a>>>>) -> Vec<ElemParts<'a>> {
    v.map(|v| {
        v.iter()
            .map(|e| ElemParts {
                elem_type: e.type_(),
                text: e.text().unwrap_or_default(),
                data: e.data().map(|d| d.bytes()).unwrap_or_default(),
                url: e.url().unwrap_or_default(),
                extra: e.extra().unwrap_or_default(),
            })
            .collect()
    })
    .unwrap_or_default()
}

impl<'a> MessageParts<'a> {
    /// A view of a decoded `Message` table.
    pub fn from_table(m: &client::Message<'a>) -> Self {
        MessageParts {
            message_key: m.message_key(),
            conversation_type: m.conversation_type(),
            from_id: m.from_id().unwrap_or_default(),
            to_id: m.to_id().unwrap_or_default(),
            seq: m.seq(),
            server_time_ms: m.server_time_ms(),
            client_time_ms: m.client_time_ms(),
            client_msg_id: m.client_msg_id().unwrap_or_default(),
            elems: elems_of(m.elems()),
            recalled: m.recalled(),
            from_device: m.from_device().unwrap_or_default(),
            entry: m.entry(),
            random: m.random(),
            badge_mode: m.badge_mode(),
            life_time_secs: m.life_time_secs(),
        }
    }

    /// Total body size (for limits).
    pub fn body_size(&self) -> usize {
        self.elems.iter().map(ElemParts::size).sum()
    }

    /// Whether a message with a lifetime has left offline sync at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.life_time_secs != 0 && self.server_time_ms.saturating_add(u64::from(self.life_time_secs) * 1000) <= now_ms
    }
}

fn build_elems<'b>(
    fbb: &mut FlatBufferBuilder<'b>,
    elems: &[ElemParts<'_>],
) -> WIPOffset<Vector<'b, ForwardsUOffset<client::Elem<'b>>>> {
    let offsets: Vec<_> = elems
        .iter()
        .map(|e| {
            let text = (!e.text.is_empty()).then(|| fbb.create_string(e.text));
            let data = (!e.data.is_empty()).then(|| fbb.create_vector(e.data));
            let url = (!e.url.is_empty()).then(|| fbb.create_string(e.url));
            let extra = (!e.extra.is_empty()).then(|| fbb.create_string(e.extra));
            client::Elem::create(fbb, &client::ElemArgs { type_: e.elem_type, text, data, url, extra })
        })
        .collect();
    fbb.create_vector(&offsets)
}

fn build_message<'b>(fbb: &mut FlatBufferBuilder<'b>, m: &MessageParts<'_>) -> WIPOffset<client::Message<'b>> {
    let from_id = fbb.create_string(m.from_id);
    let to_id = fbb.create_string(m.to_id);
    let client_msg_id = fbb.create_string(m.client_msg_id);
    let from_device = fbb.create_string(m.from_device);
    let elems = build_elems(fbb, &m.elems);
    client::Message::create(
        fbb,
        &client::MessageArgs {
            message_key: m.message_key,
            conversation_type: m.conversation_type,
            from_id: Some(from_id),
            to_id: Some(to_id),
            seq: m.seq,
            server_time_ms: m.server_time_ms,
            client_time_ms: m.client_time_ms,
            client_msg_id: Some(client_msg_id),
            elems: Some(elems),
            recalled: m.recalled,
            from_device: Some(from_device),
            entry: m.entry,
            random: m.random,
            badge_mode: m.badge_mode,
            life_time_secs: m.life_time_secs,
        },
    )
}

/// Encodes a message for storage: a bare FlatBuffers `Message` (no frame header).
pub fn encode_stored(m: &MessageParts<'_>) -> Vec<u8> {
    with_builder(|fbb| {
        let root = build_message(fbb, m);
        fbb.finish(root, None);
        fbb.finished_data().to_vec()
    })
}

/// Opens a stored message, verifying it (storage bytes are input too).
pub fn decode_stored(bytes: &[u8]) -> Result<client::Message<'_>, InvalidFlatbuffer> {
    let opts = VerifierOptions { max_depth: 8, max_tables: 10_000, ..Default::default() };
    flatbuffers::root_with_opts::<client::Message>(&opts, bytes)
}

/// A Send frame (client → server).
pub fn send(
    request_id: u32,
    client_msg_id: &str,
    to_id: &str,
    elems: &[ElemParts<'_>],
    client_time_ms: u64,
) -> Vec<u8> {
    send_in(request_id, ConversationType::Single, client_msg_id, to_id, elems, client_time_ms)
}

/// A Send to the group `group_id` (conversation type Group).
pub fn send_to_group(
    request_id: u32,
    client_msg_id: &str,
    group_id: &str,
    elems: &[ElemParts<'_>],
    client_time_ms: u64,
) -> Vec<u8> {
    send_in(request_id, ConversationType::Group, client_msg_id, group_id, elems, client_time_ms)
}

fn send_in(
    request_id: u32,
    conversation_type: ConversationType,
    client_msg_id: &str,
    to_id: &str,
    elems: &[ElemParts<'_>],
    client_time_ms: u64,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let client_msg_id = fbb.create_string(client_msg_id);
    let to_id = fbb.create_string(to_id);
    let elems = build_elems(&mut fbb, elems);
    let body = client::Send::create(
        &mut fbb,
        &client::SendArgs {
            client_msg_id: Some(client_msg_id),
            conversation_type,
            to_id: Some(to_id),
            elems: Some(elems),
            client_time_ms,
        },
    );
    finish_client(fbb, request_id, Body::Send, body.as_union_value())
}

/// What a SendAck reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendAckParts<'a> {
    pub client_msg_id: &'a str,
    pub code: u32,
    pub message: &'a str,
    pub message_key: u64,
    pub seq: u64,
    pub server_time_ms: u64,
}

pub fn send_ack(request_id: u32, a: &SendAckParts<'_>) -> Vec<u8> {
    with_builder(|fbb| {
        let client_msg_id = fbb.create_string(a.client_msg_id);
        let message = fbb.create_string(a.message);
        let body = client::SendAck::create(
            fbb,
            &client::SendAckArgs {
                client_msg_id: Some(client_msg_id),
                code: a.code,
                message: Some(message),
                message_key: a.message_key,
                seq: a.seq,
                server_time_ms: a.server_time_ms,
            },
        );
        finish_client_in(fbb, request_id, Body::SendAck, body.as_union_value())
    })
}

/// A Push of messages (already in the receiving user's seq order).
pub fn push(messages: &[MessageParts<'_>]) -> Vec<u8> {
    push_with(messages, false)
}

/// A Push of `messages` with its `silent` flag (every message is from a conversation
/// the recipient muted: show, do not alert).
pub fn push_with(messages: &[MessageParts<'_>], silent: bool) -> Vec<u8> {
    with_builder(|fbb| {
        let offsets: Vec<_> = messages.iter().map(|m| build_message(fbb, m)).collect();
        let messages = fbb.create_vector(&offsets);
        let body = client::Push::create(fbb, &client::PushArgs { messages: Some(messages), silent });
        finish_client_in(fbb, 0, Body::Push, body.as_union_value())
    })
}

/// A page answering a Pull.
pub fn pull_result(
    request_id: u32,
    kind: SyncKind,
    messages: &[MessageParts<'_>],
    max_seq: u64,
    completed: bool,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256 + messages.iter().map(|m| 160 + m.body_size()).sum::<usize>());
    let offsets: Vec<_> = messages.iter().map(|m| build_message(&mut fbb, m)).collect();
    let messages = fbb.create_vector(&offsets);
    let body = client::PullResult::create(
        &mut fbb,
        &client::PullResultArgs { kind, messages: Some(messages), max_seq, completed },
    );
    finish_client(fbb, request_id, Body::PullResult, body.as_union_value())
}

pub fn read_receipt(request_id: u32, peer_id: &str, read_seq: u64) -> Vec<u8> {
    read_receipt_in(request_id, ConversationType::Single, peer_id, read_seq)
}

/// A ReadReceipt of the group `group_id` up to group seq `read_seq`.
pub fn read_receipt_group(request_id: u32, group_id: &str, read_seq: u64) -> Vec<u8> {
    read_receipt_in(request_id, ConversationType::Group, group_id, read_seq)
}

fn read_receipt_in(request_id: u32, conversation_type: ConversationType, peer_id: &str, read_seq: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let peer_id = fbb.create_string(peer_id);
    let body = client::ReadReceipt::create(
        &mut fbb,
        &client::ReadReceiptArgs { conversation_type, peer_id: Some(peer_id), read_seq },
    );
    finish_client(fbb, request_id, Body::ReadReceipt, body.as_union_value())
}

pub fn read_receipt_notify(reader_id: &str, peer_id: &str, read_seq: u64) -> Vec<u8> {
    read_receipt_notify_in(ConversationType::Single, reader_id, peer_id, read_seq)
}

/// `reader_id` read the group `group_id` up to group seq `read_seq`.
pub fn read_receipt_notify_group(reader_id: &str, group_id: &str, read_seq: u64) -> Vec<u8> {
    read_receipt_notify_in(ConversationType::Group, reader_id, group_id, read_seq)
}

fn read_receipt_notify_in(
    conversation_type: ConversationType,
    reader_id: &str,
    peer_id: &str,
    read_seq: u64,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let reader_id = fbb.create_string(reader_id);
    let peer_id = fbb.create_string(peer_id);
    let body = client::ReadReceiptNotify::create(
        &mut fbb,
        &client::ReadReceiptNotifyArgs {
            conversation_type,
            reader_id: Some(reader_id),
            peer_id: Some(peer_id),
            read_seq,
        },
    );
    finish_client(fbb, 0, Body::ReadReceiptNotify, body.as_union_value())
}

pub fn recall(request_id: u32, message_key: u64, peer_id: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let peer_id = fbb.create_string(peer_id);
    let body = client::Recall::create(
        &mut fbb,
        &client::RecallArgs { message_key, conversation_type: ConversationType::Single, peer_id: Some(peer_id) },
    );
    finish_client(fbb, request_id, Body::Recall, body.as_union_value())
}

pub fn recall_notify(message_key: u64, from_id: &str, to_id: &str, seq: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let from_id = fbb.create_string(from_id);
    let to_id = fbb.create_string(to_id);
    let body = client::RecallNotify::create(
        &mut fbb,
        &client::RecallNotifyArgs { message_key, from_id: Some(from_id), to_id: Some(to_id), seq },
    );
    finish_client(fbb, 0, Body::RecallNotify, body.as_union_value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{parse_client, HEADER_LEN};

    fn sample<'a>() -> MessageParts<'a> {
        MessageParts {
            message_key: 99,
            from_id: "alice",
            to_id: "bob",
            server_time_ms: 5,
            client_msg_id: "c1",
            elems: vec![
                ElemParts { elem_type: ElemType::Text, text: "hi", ..Default::default() },
                ElemParts { elem_type: ElemType::Custom, data: &[1, 2, 3], ..Default::default() },
            ],
            from_device: "p1",
            random: 7,
            badge_mode: 1,
            life_time_secs: 60,
            ..Default::default()
        }
    }

    #[test]
    fn lifetimes_expire() {
        let m = sample();
        assert!(!m.expired_at(5 + 59_999));
        assert!(m.expired_at(5 + 60_000));
        assert!(!MessageParts { life_time_secs: 0, ..sample() }.expired_at(u64::MAX));
    }

    #[test]
    fn stored_roundtrip_then_push_with_owner_seq() {
        let stored = encode_stored(&sample());
        let m = decode_stored(&stored).unwrap();
        let mut parts = MessageParts::from_table(&m);
        assert_eq!(parts, sample());
        parts.seq = 42;
        let f = push(std::slice::from_ref(&parts));
        let frame = parse_client(&f[HEADER_LEN..]).unwrap();
        let pushed = frame.body_as_push().unwrap().messages().unwrap().get(0);
        assert_eq!(pushed.seq(), 42);
        assert_eq!(MessageParts::from_table(&pushed).elems[1].data, &[1, 2, 3]);
    }

    #[test]
    fn corrupt_stored_bytes_are_an_error() {
        assert!(decode_stored(&[1, 2, 3, 4, 5, 6, 7, 8]).is_err());
    }

    #[test]
    fn send_and_ack_roundtrip() {
        let f = send(3, "c1", "bob", &sample().elems, 7);
        let fr = parse_client(&f[HEADER_LEN..]).unwrap();
        let s = fr.body_as_send().unwrap();
        assert_eq!((s.client_msg_id(), s.to_id(), elems_of(s.elems()).len()), (Some("c1"), Some("bob"), 2));
        let a =
            send_ack(3, &SendAckParts { client_msg_id: "c1", code: 200, message_key: 9, seq: 4, ..Default::default() });
        let fr = parse_client(&a[HEADER_LEN..]).unwrap();
        assert_eq!(fr.body_as_send_ack().unwrap().seq(), 4);
    }
}
