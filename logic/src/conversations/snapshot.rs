//! A user's conversation view saved to the store, so a list read after a restart (or
//! after the view was dropped under `[conversations] max_held`) starts from it instead
//! of rebuilding every conversation from the conversation log and the conversation
//! index (~0.6 s for 10,000 conversations: three store reads per conversation).
//!
//! The snapshot is the whole view as it was derived — records, last messages, exact
//! unread counts, `seen_to` per conversation, how far the inbox and the conversation
//! log were folded, the log entries compaction still has to delete — so the counts are
//! exact at its positions, and a load folds only what came after them, exactly as a
//! view in memory does on its next read (`conversations/mod.rs`, `resume`). It is a
//! cache: one that is missing, of another version, or whose parts do not match is not
//! used (the list is rebuilt from the log, and a new snapshot written).
//!
//! Stored in the user's server-internal `SyncKind::ConversationSnapshot` log as parts at
//! seqs 1, 2, … (each under [`PART_BYTES`]; the store takes values up to 1 MiB), all
//! rewritten in one batch. A backend whose batch is not atomic (CQL) may keep some parts
//! of a newer write beside older ones: every part names its snapshot (`id`) and the
//! count of parts, and a load takes the parts only if they all agree.
//!
//! Pure: encoding and decoding only; the I/O is `conversations/mod.rs`'s. JSON arrays
//! (tuple structs), not objects: a conversation is ~100 bytes, not ~400, and decodes
//! accordingly faster.
//!
//! Must never: hold a conversation that is dirty (changed in memory, not logged) — the
//! caller saves right after a refresh wrote every change — or be trusted when its
//! parts disagree.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_storage::{Conversation, GroupId, LogEntry, Seq, UserId};

use super::record::target_of;
use super::view::{Conv, Last, View};

/// The format of the parts; a snapshot of another version is not used.
pub const VERSION: u8 = 1;
/// Bytes of one part at most (the store's value limit is 1 MiB; one conversation is
/// at most ~30 KiB even with a 4 KiB extra of escaped characters).
/// Small enough that a big snapshot has a part per core to decode (10,000
/// conversations: ~10 parts).
pub const PART_BYTES: usize = 128 * 1024;

/// What every part carries, and the view's positions in part 0.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    v: u8,
    /// Which write the part belongs to (monotonic per user).
    id: u64,
    part: u32,
    parts: u32,
    /// Part 0 only: `View::inbox_to`, `logged_inbox`, `log_to`, `checkpoint` (0: none),
    /// `garbage`.
    #[serde(default)]
    at: (u64, u64, u64, u64),
    #[serde(default)]
    garbage: Vec<u64>,
}

/// One part as decoded.
#[derive(Debug, Deserialize)]
struct Part {
    #[serde(flatten)]
    head: Head,
    convs: Vec<SConv>,
}

/// One conversation: type, target, bits (1 pinned, 2 muted, 4 deleted), extra,
/// read_seq, cleared_seq, sync_seq, state_seq, notify_seq, updated_ms, unread, seen_to,
/// join_seq, last message.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::type_complexity)]
struct SConv(u8, String, u8, String, u64, u64, u64, u64, u64, u64, u64, u64, u64, Option<SLast>);

/// A last message: key, seq, time, sender, preview, recalled.
#[derive(Debug, Serialize, Deserialize)]
struct SLast(u64, u64, u64, String, String, bool);

impl SConv {
    fn of(conv: &Conversation, c: &Conv) -> Self {
        let bits = u8::from(c.is_top) | u8::from(c.is_mute) << 1 | u8::from(c.deleted) << 2;
        let last = c
            .last
            .as_ref()
            .map(|l| SLast(l.message_key, l.seq.0, l.time_ms, l.sender.clone(), l.preview.clone(), l.recalled));
        Self(
            conv.type_number(),
            target_of(conv).to_string(),
            bits,
            c.extra.clone(),
            c.read_seq.0,
            c.cleared_seq.0,
            c.sync_seq.0,
            c.state_seq.0,
            c.notify_seq.0,
            c.updated_ms,
            c.unread,
            c.seen_to.0,
            c.join_seq.0,
            last,
        )
    }

    fn into_conv(self) -> Result<(Conversation, Conv), String> {
        let SConv(ty, target, bits, extra, read, cleared, sync, state, notify, updated_ms, unread, seen_to, join, last) =
            self;
        let conv = match ty {
            1 => UserId::new(target).map(Conversation::Single).map_err(|e| e.to_string())?,
            2 => GroupId::new(target).map(Conversation::Group).map_err(|e| e.to_string())?,
            t => return Err(format!("conversation type {t}")),
        };
        let c = Conv {
            is_top: bits & 1 != 0,
            is_mute: bits & 2 != 0,
            deleted: bits & 4 != 0,
            extra,
            read_seq: Seq(read),
            cleared_seq: Seq(cleared),
            sync_seq: Seq(sync),
            state_seq: Seq(state),
            notify_seq: Seq(notify),
            updated_ms,
            unread,
            seen_to: Seq(seen_to),
            join_seq: Seq(join),
            last: last.map(|SLast(message_key, seq, time_ms, sender, preview, recalled)| Last {
                message_key,
                seq: Seq(seq),
                time_ms,
                sender,
                preview,
                recalled,
            }),
            dirty: false,
        };
        Ok((conv, c))
    }
}

/// The parts of a snapshot of `v` (to be stored at seqs 1, 2, …), as write `id`.
pub fn encode(v: &View, id: u64) -> Vec<Bytes> {
    encode_sized(v, id, PART_BYTES)
}

fn encode_sized(v: &View, id: u64, part_bytes: usize) -> Vec<Bytes> {
    // Each conversation encoded alone first: parts are cut by exact size.
    let mut groups: Vec<Vec<u8>> = vec![Vec::new()];
    for (conv, c) in &v.convs {
        let one = serde_json::to_vec(&SConv::of(conv, c)).unwrap_or_default();
        let cur = groups.last_mut().expect("one at least");
        if !cur.is_empty() && cur.len() + one.len() > part_bytes {
            groups.push(Vec::new());
        }
        let cur = groups.last_mut().expect("one at least");
        if !cur.is_empty() {
            cur.push(b',');
        }
        cur.extend_from_slice(&one);
    }
    let parts = groups.len() as u32;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, convs)| {
            let mut head = Head { v: VERSION, id, part: i as u32, parts, at: (0, 0, 0, 0), garbage: Vec::new() };
            if i == 0 {
                let cp = v.checkpoint.map_or(0, |s| s.0);
                head.at = (v.inbox_to.0, v.logged_inbox.0, v.log_to.0, cp);
                head.garbage = v.garbage.iter().map(|s| s.0).collect();
            }
            let mut out = serde_json::to_vec(&head).unwrap_or_default();
            out.pop(); // the closing brace: the conversations go in the same object
            out.extend_from_slice(b",\"convs\":[");
            out.extend_from_slice(&convs);
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        })
        .collect()
}

/// The view a read of the whole snapshot log holds: `Ok(None)` if there is no
/// snapshot or one of another version, `Err` if its parts do not make one snapshot (a
/// write that did not complete) or do not decode. The view's `since_snapshot` is 0.
pub fn decode(entries: &[LogEntry]) -> Result<Option<View>, String> {
    if entries.is_empty() {
        return Ok(None);
    }
    let parts: Result<Option<Vec<Decoded>>, String> =
        entries.iter().map(decode_part).collect::<Result<Vec<_>, _>>().map(|v| v.into_iter().collect());
    match parts? {
        Some(parts) => assemble(parts).map(Some),
        None => Ok(None),
    }
}

/// One part, decoded on its own (parts of a big snapshot decode in parallel: the
/// caller runs this on the blocking pool per part, then [`assemble`]s them).
pub struct Decoded {
    seq: Seq,
    head: Head,
    convs: Vec<(Conversation, Conv)>,
}

/// Decodes the snapshot part stored as `e`: `Ok(None)` if it is of another version.
pub fn decode_part(e: &LogEntry) -> Result<Option<Decoded>, String> {
    let p: Part = match serde_json::from_slice(&e.payload) {
        Ok(p) => p,
        // Another version may have another shape: not ours to read.
        Err(_) if version_of(&e.payload).is_some_and(|v| v != VERSION) => return Ok(None),
        Err(err) => return Err(format!("part at seq {}: {err}", e.seq.0)),
    };
    if p.head.v != VERSION {
        return Ok(None);
    }
    let convs = p.convs.into_iter().map(SConv::into_conv).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Decoded { seq: e.seq, head: p.head, convs }))
}

/// The view of decoded parts (in seq order), if they make one snapshot.
pub fn assemble(parts: Vec<Decoded>) -> Result<View, String> {
    let mut v = View::default();
    let total = parts.len() as u32;
    let id = parts.first().map_or(0, |p| p.head.id);
    v.convs.reserve(parts.iter().map(|p| p.convs.len()).sum());
    for (i, p) in parts.into_iter().enumerate() {
        let want = (id, i as u32, total, Seq(i as u64 + 1));
        if (p.head.id, p.head.part, p.head.parts, p.seq) != want {
            return Err(format!(
                "part at seq {} is part {} of {} of snapshot {}, expected part {} of {} of snapshot {}",
                p.seq.0, p.head.part, p.head.parts, p.head.id, want.1, want.2, want.0
            ));
        }
        if i == 0 {
            let (inbox_to, logged_inbox, log_to, checkpoint) = p.head.at;
            v.inbox_to = Seq(inbox_to);
            v.logged_inbox = Seq(logged_inbox);
            v.log_to = Seq(log_to);
            v.checkpoint = (checkpoint > 0).then_some(Seq(checkpoint));
            v.garbage = p.head.garbage.into_iter().map(Seq).collect();
        }
        v.convs.extend(p.convs);
    }
    v.snapshot_id = id;
    Ok(v)
}

fn version_of(payload: &[u8]) -> Option<u8> {
    #[derive(Deserialize)]
    struct V {
        v: u8,
    }
    serde_json::from_slice::<V>(payload).ok().map(|x| x.v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize) -> View {
        let mut v = View { inbox_to: Seq(90), logged_inbox: Seq(80), log_to: Seq(70), ..View::default() };
        v.checkpoint = Some(Seq(69));
        v.garbage = vec![Seq(3), Seq(5)];
        for i in 0..n {
            let conv = if i % 3 == 0 {
                Conversation::Group(GroupId::new(format!("g{i}")).unwrap())
            } else {
                Conversation::Single(UserId::new(format!("p-{i}")).unwrap())
            };
            let c = Conv {
                is_top: i % 2 == 0,
                is_mute: i % 5 == 0,
                deleted: i % 7 == 0,
                extra: "x\u{1}".repeat(i % 4),
                read_seq: Seq(i as u64),
                cleared_seq: Seq(i as u64 / 2),
                sync_seq: Seq(i as u64 + 1),
                state_seq: Seq(i as u64 + 1),
                notify_seq: Seq(0),
                updated_ms: 1_700_000_000_000 + i as u64,
                unread: i as u64 % 11,
                seen_to: Seq(u64::MAX - i as u64),
                join_seq: Seq(i as u64 / 3),
                last: (i % 4 != 1).then(|| Last {
                    message_key: u64::MAX - 1,
                    seq: Seq(i as u64 * 2),
                    time_ms: 5,
                    sender: "s".into(),
                    preview: "héllo 👋".into(),
                    recalled: i % 2 == 1,
                }),
                dirty: false,
            };
            v.convs.insert(conv, c);
        }
        v
    }

    fn entries(parts: &[Bytes]) -> Vec<LogEntry> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| LogEntry { seq: Seq(i as u64 + 1), time_ms: 0, payload: p.clone() })
            .collect()
    }

    fn same(a: &View, b: &View) {
        assert_eq!(a.convs, b.convs);
        assert_eq!(
            (a.inbox_to, a.logged_inbox, a.log_to, a.checkpoint),
            (b.inbox_to, b.logged_inbox, b.log_to, b.checkpoint)
        );
        assert_eq!(a.garbage, b.garbage);
    }

    #[test]
    fn a_view_round_trips_in_one_part_or_many() {
        let v = view(50);
        let one = encode(&v, 7);
        assert_eq!(one.len(), 1);
        let back = decode(&entries(&one)).unwrap().unwrap();
        same(&v, &back);
        assert_eq!((back.snapshot_id, back.since_snapshot), (7, 0));
        let many = encode_sized(&v, 8, 600);
        assert!(many.len() > 3, "{} parts", many.len());
        assert!(many.iter().all(|p| p.len() < 600 + 400), "a part is its conversations plus the head");
        same(&v, &decode(&entries(&many)).unwrap().unwrap());
        // An empty view is one part too (it says where the folds stopped).
        let empty = View { inbox_to: Seq(4), ..View::default() };
        let e = encode(&empty, 1);
        assert_eq!(e.len(), 1);
        same(&empty, &decode(&entries(&e)).unwrap().unwrap());
    }

    #[test]
    fn parts_of_different_writes_or_missing_parts_are_refused() {
        let v = view(50);
        let (a, b) = (encode_sized(&v, 1, 600), encode_sized(&v, 2, 600));
        assert!(decode(&[]).unwrap().is_none());
        // Part 2 of a newer write beside the rest of an older one (a CQL write cut short).
        let mut mixed = entries(&a);
        mixed[1].payload = b[1].clone();
        assert!(decode(&mixed).unwrap_err().contains("snapshot 2"));
        // A part missing, or one left over from a longer snapshot.
        let mut short = entries(&a);
        short.pop();
        assert!(decode(&short).is_err());
        let mut long = entries(&encode(&v, 3));
        long.push(entries(&a)[1].clone());
        assert!(decode(&long).is_err());
        assert!(decode(&entries(&[Bytes::from_static(b"{\"v\":1,")])).is_err());
        // Another version is not ours: no snapshot, not an error.
        assert!(decode(&entries(&[Bytes::from_static(b"{\"v\":2,\"new\":[]}")])).unwrap().is_none());
    }
}
