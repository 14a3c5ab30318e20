//! One user's conversation view in memory: the records folded from their conversation
//! log, plus what is derived from the timelines (last message, exact unread count, how
//! far each timeline was accounted). Pure: the I/O is `conversations/mod.rs`'s.
//!
//! Must never: count an entry twice or skip one. Every conversation keeps `seen_to`, the
//! highest seq of its timeline already accounted in `last` and `unread`; a fold applies
//! only entries above it, whichever way (index count at load, inbox fold, group fold)
//! they arrive.

use std::collections::HashMap;

use tern_schema::client::{ConversationType, ElemType, EntryKind};
use tern_schema::message;
use tern_storage::{Conversation, Seq, UserId};

use super::record::{target_of, LogRecord, Op};

/// Longest preview of a last message, in characters.
pub const PREVIEW_CHARS: usize = 64;

/// The newest message of a conversation as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    pub message_key: u64,
    /// Its seq in the timeline the user reads (inbox for 1:1, group timeline).
    pub seq: Seq,
    pub time_ms: u64,
    pub sender: String,
    pub preview: String,
    pub recalled: bool,
}

/// One conversation of the view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conv {
    pub is_top: bool,
    pub is_mute: bool,
    pub extra: String,
    pub read_seq: Seq,
    pub cleared_seq: Seq,
    /// Removed on the server (a tombstone in the log); revived by a newer message.
    pub deleted: bool,
    /// The log entry that last changed the record (0: not logged yet).
    pub sync_seq: Seq,
    /// The newest Put / Delete entry of the record, and a NotifyDelete logged after it
    /// (0: none): the entries compaction keeps (see [`View::garbage`]).
    pub state_seq: Seq,
    pub notify_seq: Seq,
    pub updated_ms: u64,
    pub last: Option<Last>,
    /// Messages above `max(read_seq, cleared_seq, join_seq)` up to `seen_to`.
    pub unread: u64,
    pub seen_to: Seq,
    /// Groups: the group seq when the user joined (entries up to it are not theirs).
    pub join_seq: Seq,
    /// Changed in memory, not yet written to the log.
    pub dirty: bool,
}

impl Conv {
    /// Below or at this, an entry counts as read.
    pub fn floor(&self) -> Seq {
        self.read_seq.max(self.cleared_seq).max(self.join_seq)
    }

    /// What the list sorts "newest activity" by.
    /// (last message time, its seq), or the record's change time without a message:
    /// the seq breaks ties of one millisecond (within one timeline it is send order).
    pub fn activity(&self) -> (u64, u64) {
        self.last.as_ref().map_or((self.updated_ms, 0), |l| (l.time_ms, l.seq.0))
    }

    /// The record as a log entry of `op`.
    pub fn record(&self, conv: &Conversation, op: Op, inbox_seq: Seq, time_ms: u64) -> LogRecord {
        LogRecord {
            version: LogRecord::VERSION,
            op,
            conversation_type: conv.type_number(),
            target: target_of(conv).to_string(),
            is_top: self.is_top,
            is_mute: self.is_mute,
            extra: self.extra.clone(),
            read_seq: self.read_seq.0,
            cleared_seq: self.cleared_seq.0,
            inbox_seq: inbox_seq.0,
            time_ms,
        }
    }

    /// Accounts one timeline entry of this conversation (`seq` in its timeline) for
    /// `user`. Entries at or below `seen_to` were accounted already. Only others'
    /// messages are unread. A message above a tombstone revives the conversation.
    pub fn account(&mut self, user: &UserId, seq: Seq, time_ms: u64, m: &MessageSummary) {
        if seq <= self.seen_to {
            return;
        }
        self.seen_to = seq;
        match m.entry {
            EntryKind::Recall => {
                if let Some(l) = self.last.as_mut().filter(|l| l.message_key == m.message_key) {
                    l.recalled = true;
                    l.preview.clear();
                }
            }
            _ => {
                // Before the join or a cleared history: not part of the conversation.
                if seq <= self.cleared_seq.max(self.join_seq) {
                    return;
                }
                // At or below the read mark it is read, but still the latest message (a
                // read can reach the server before the entry is folded here).
                let unread = seq > self.floor();
                if unread && m.sender != user.as_str() {
                    self.unread += 1;
                }
                // A deleted conversation counts as read up to its deletion: only a newer
                // message brings it back.
                if self.deleted && !unread {
                    return;
                }
                self.last = Some(Last {
                    message_key: m.message_key,
                    seq,
                    time_ms,
                    sender: m.sender.clone(),
                    preview: m.preview.clone(),
                    recalled: m.recalled,
                });
                if self.deleted {
                    self.deleted = false;
                    self.dirty = true;
                }
            }
        }
    }
}

/// What a conversation needs of a stored timeline entry.
#[derive(Debug, Clone)]
pub struct MessageSummary {
    pub message_key: u64,
    pub conversation_type: ConversationType,
    pub from: String,
    pub to: String,
    pub sender: String,
    pub entry: EntryKind,
    pub recalled: bool,
    pub preview: String,
}

impl MessageSummary {
    /// Decodes a stored entry (`None` if it is not a message).
    pub fn of(payload: &[u8]) -> Option<Self> {
        let m = message::decode_stored(payload).ok()?;
        let from = m.from_id().unwrap_or_default().to_string();
        Some(Self {
            message_key: m.message_key(),
            conversation_type: m.conversation_type(),
            to: m.to_id().unwrap_or_default().to_string(),
            sender: from.clone(),
            from,
            entry: m.entry(),
            recalled: m.recalled(),
            preview: preview(&message::elems_of(m.elems())),
        })
    }

    /// The 1:1 conversation this inbox entry belongs to, seen from `user`.
    pub fn single_of(&self, user: &UserId) -> Option<Conversation> {
        if self.conversation_type != ConversationType::Single {
            return None;
        }
        let peer = if self.from == user.as_str() { &self.to } else { &self.from };
        UserId::new(peer.clone()).ok().map(Conversation::Single)
    }
}

fn preview(elems: &[message::ElemParts<'_>]) -> String {
    let Some(e) = elems.first() else { return String::new() };
    match e.elem_type {
        ElemType::Text => e.text.chars().take(PREVIEW_CHARS).collect(),
        ElemType::Image => "[image]".into(),
        ElemType::Sound => "[voice]".into(),
        ElemType::Video => "[video]".into(),
        ElemType::File => "[file]".into(),
        ElemType::Location => "[location]".into(),
        _ => "[message]".into(),
    }
}

/// A user's conversations (see the module docs).
#[derive(Debug, Default)]
pub struct View {
    pub convs: HashMap<Conversation, Conv>,
    /// The user's inbox is folded up to here.
    pub inbox_to: Seq,
    /// The highest `inbox_seq` the log records (where a cold load resumes the fold).
    pub logged_inbox: Seq,
    /// The conversation log is folded up to here.
    pub log_to: Seq,
    /// Log entries a later entry supersedes, still stored (compaction deletes them):
    /// a conversation's older Put / Delete entries once a newer one is logged, a
    /// NotifyDelete once any newer entry of the conversation is, and a checkpoint once
    /// any newer entry is. What stays is each conversation's newest state (tombstones
    /// included) and the NotifyDelete after it, so a sync from ANY point still ends in
    /// the same records: every conversation changed after the point has its newest
    /// entry after the point.
    pub garbage: Vec<Seq>,
    /// The newest entry if it is a checkpoint.
    pub checkpoint: Option<Seq>,
    /// The stored snapshot (`snapshot.rs`): its write id, its parts (seqs 1..=this in
    /// the snapshot log), and the entries folded since it was taken (inbox, group
    /// timelines, conversation log): a new one is saved once these reach
    /// `[conversations] snapshot_every`.
    pub snapshot_id: u64,
    pub snapshot_parts: u64,
    pub since_snapshot: u64,
}

impl View {
    /// Folds one conversation log entry (at `seq`) into the records.
    pub fn apply_log(&mut self, seq: Seq, r: &LogRecord) {
        self.log_to = self.log_to.max(seq);
        self.logged_inbox = self.logged_inbox.max(Seq(r.inbox_seq));
        // Every entry carries the inbox position: a newer one supersedes a checkpoint.
        self.garbage.extend(self.checkpoint.take());
        let Some(conv) = r.conversation() else {
            self.checkpoint = Some(seq);
            return;
        };
        let c = self.convs.entry(conv).or_default();
        let superseded = match r.op {
            Op::NotifyDelete => [c.notify_seq, Seq::ZERO],
            _ => [c.state_seq, c.notify_seq],
        };
        self.garbage.extend(superseded.into_iter().filter(|s| *s > Seq::ZERO && *s != seq));
        if r.op == Op::NotifyDelete {
            c.notify_seq = seq;
        } else {
            c.state_seq = seq;
            c.notify_seq = Seq::ZERO;
        }
        if r.op != Op::NotifyDelete {
            c.is_top = r.is_top;
            c.is_mute = r.is_mute;
            c.extra = r.extra.clone();
            c.read_seq = c.read_seq.max(Seq(r.read_seq));
            c.cleared_seq = c.cleared_seq.max(Seq(r.cleared_seq));
            c.deleted = r.op == Op::Delete;
        }
        c.sync_seq = seq;
        c.updated_ms = r.time_ms;
        c.dirty = false;
    }

    /// The conversations the list shows (not deleted), pinned first, then newest
    /// activity first, then by conversation (a total order, so pages are stable): the
    /// first `head` in order, the rest unordered after them (a page needs only its
    /// head sorted: O(n + head log head), not a sort of every conversation per read).
    pub fn sorted(&self, head: usize) -> Vec<(&Conversation, &Conv)> {
        let mut v: Vec<_> = self.convs.iter().filter(|(_, c)| !c.deleted).collect();
        let order = |(ka, a): &(&Conversation, &Conv), (kb, b): &(&Conversation, &Conv)| {
            b.is_top
                .cmp(&a.is_top)
                .then(b.activity().cmp(&a.activity()))
                .then_with(|| ka.type_number().cmp(&kb.type_number()))
                .then_with(|| target_of(ka).cmp(target_of(kb)))
        };
        if head < v.len() {
            if head > 0 {
                v.select_nth_unstable_by(head - 1, order);
            }
            v[..head].sort_unstable_by(order);
        } else {
            v.sort_unstable_by(order);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_storage::GroupId;

    fn put(conv: &Conversation, op: Op, inbox: u64) -> LogRecord {
        let mut r = Conv::default().record(conv, op, Seq(inbox), 0);
        r.is_top = op == Op::Put;
        r
    }

    /// Superseded entries are garbage; each conversation's newest state (tombstones
    /// included), a NotifyDelete after it and a trailing checkpoint are not.
    #[test]
    fn garbage_is_what_a_later_entry_supersedes() {
        let a = Conversation::Single(UserId::new("a").unwrap());
        let g = Conversation::Group(GroupId::new("g").unwrap());
        let mut v = View::default();
        v.apply_log(Seq(1), &put(&a, Op::Put, 1));
        v.apply_log(Seq(2), &put(&g, Op::Put, 1));
        v.apply_log(Seq(3), &LogRecord::checkpoint(Seq(5), 0));
        assert_eq!((v.garbage.clone(), v.checkpoint), (vec![], Some(Seq(3))));
        v.apply_log(Seq(4), &put(&a, Op::NotifyDelete, 6));
        // The checkpoint is superseded; a's Put is not (the NotifyDelete carries no state).
        assert_eq!(v.garbage, [Seq(3)]);
        v.apply_log(Seq(5), &put(&a, Op::NotifyDelete, 6));
        assert_eq!(v.garbage, [Seq(3), Seq(4)]);
        v.apply_log(Seq(6), &put(&a, Op::Delete, 7));
        assert_eq!(v.garbage, [Seq(3), Seq(4), Seq(1), Seq(5)]);
        v.apply_log(Seq(7), &put(&g, Op::Put, 7));
        assert_eq!(v.garbage, [Seq(3), Seq(4), Seq(1), Seq(5), Seq(2)]);
        assert_eq!((v.convs[&a].state_seq, v.convs[&a].notify_seq, v.convs[&g].state_seq), (Seq(6), Seq(0), Seq(7)));
        assert!(v.convs[&a].deleted);
        assert_eq!(v.logged_inbox, Seq(7));
        // Folding only what stays gives the same records.
        let mut kept = View::default();
        kept.apply_log(Seq(6), &put(&a, Op::Delete, 7));
        kept.apply_log(Seq(7), &put(&g, Op::Put, 7));
        for c in [&a, &g] {
            let (x, y) = (&v.convs[c], &kept.convs[c]);
            assert_eq!((x.is_top, x.deleted, x.sync_seq), (y.is_top, y.deleted, y.sync_seq));
        }
        assert_eq!(kept.logged_inbox, v.logged_inbox);
    }
}
