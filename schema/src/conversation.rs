//! Builders of the conversation frames (issue 12): ConversationGet and
//! ConversationSync requests (clients; also the load harness and tests) and the
//! ConversationList answer (logic). Only this crate knows the wire format.

use flatbuffers::FlatBufferBuilder;

use crate::client::{self, Body, ConversationOp, ConversationType};
use crate::encode::finish_client;

/// One conversation (or one change of it) as a ConversationList carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoParts<'a> {
    pub conversation_type: ConversationType,
    pub target_id: &'a str,
    pub op: ConversationOp,
    pub is_top: bool,
    pub is_mute: bool,
    pub extra: &'a str,
    pub read_seq: u64,
    pub cleared_seq: u64,
    pub unread: u64,
    pub sync_seq: u64,
    pub updated_ms: u64,
    pub last_message_key: u64,
    pub last_seq: u64,
    pub last_time_ms: u64,
    pub last_sender: &'a str,
    pub last_preview: &'a str,
    pub last_recalled: bool,
}

/// A ConversationList answering request `request_id`.
pub fn list(request_id: u32, items: &[InfoParts<'_>], max_seq: u64, completed: bool, total: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128 + items.len() * 160);
    let offsets: Vec<_> = items
        .iter()
        .map(|i| {
            let target_id = fbb.create_string(i.target_id);
            let extra = fbb.create_string(i.extra);
            let last_sender = fbb.create_string(i.last_sender);
            let last_preview = fbb.create_string(i.last_preview);
            client::ConversationInfo::create(
                &mut fbb,
                &client::ConversationInfoArgs {
                    conversation_type: i.conversation_type,
                    target_id: Some(target_id),
                    op: i.op,
                    is_top: i.is_top,
                    is_mute: i.is_mute,
                    extra: Some(extra),
                    read_seq: i.read_seq,
                    cleared_seq: i.cleared_seq,
                    unread: i.unread,
                    sync_seq: i.sync_seq,
                    updated_ms: i.updated_ms,
                    last_message_key: i.last_message_key,
                    last_seq: i.last_seq,
                    last_time_ms: i.last_time_ms,
                    last_sender: Some(last_sender),
                    last_preview: Some(last_preview),
                    last_recalled: i.last_recalled,
                },
            )
        })
        .collect();
    let conversations = fbb.create_vector(&offsets);
    let body = client::ConversationList::create(
        &mut fbb,
        &client::ConversationListArgs { conversations: Some(conversations), max_seq, completed, total },
    );
    finish_client(fbb, request_id, Body::ConversationList, body.as_union_value())
}

/// A ConversationGet request.
pub fn get(request_id: u32, offset: u32, limit: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::ConversationGet::create(&mut fbb, &client::ConversationGetArgs { offset, limit });
    finish_client(fbb, request_id, Body::ConversationGet, body.as_union_value())
}

/// A ConversationSync request.
pub fn sync(request_id: u32, after_seq: u64, limit: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::ConversationSync::create(&mut fbb, &client::ConversationSyncArgs { after_seq, limit });
    finish_client(fbb, request_id, Body::ConversationSync, body.as_union_value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::parse_client_framed;

    #[test]
    fn a_list_round_trips() {
        let item = InfoParts {
            conversation_type: ConversationType::Group,
            target_id: "g",
            op: ConversationOp::Delete,
            is_top: true,
            unread: 3,
            last_preview: "hi",
            ..InfoParts::default()
        };
        let f = list(7, &[item], 9, true, 1);
        let f = parse_client_framed(&f, 1 << 16).unwrap();
        assert_eq!(f.request_id(), 7);
        let l = f.body_as_conversation_list().unwrap();
        assert_eq!((l.max_seq(), l.completed(), l.total()), (9, true, 1));
        let c = l.conversations().unwrap().get(0);
        assert_eq!((c.target_id(), c.op(), c.is_top(), c.unread()), (Some("g"), ConversationOp::Delete, true, 3));
        assert_eq!(c.conversation_type(), ConversationType::Group);
        let g = get(1, 2, 3);
        let g = parse_client_framed(&g, 1 << 16).unwrap();
        assert_eq!(g.body_as_conversation_get().map(|b| (b.offset(), b.limit())), Some((2, 3)));
        let s = sync(1, 5, 6);
        let s = parse_client_framed(&s, 1 << 16).unwrap();
        assert_eq!(s.body_as_conversation_sync().map(|b| (b.after_seq(), b.limit())), Some((5, 6)));
    }
}
