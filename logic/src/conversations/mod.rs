//! Conversations (issue 12): every user's list of 1:1 and group conversations, with the
//! last message, exact unread counts, pin / mute / extra, server-side delete (history
//! kept or cleared) and an incremental sync log with tombstones.
//!
//! **Derived at read time, not written per message.** A record changes in the log only
//! when the *user* changes it (pin, mute, extra, read mark, delete) or when a
//! conversation first appears; the last message and the unread count are derived when
//! the list is read: for 1:1 from the user's inbox timeline (folded incrementally from
//! where the view last stopped) and, on a cold load, from the conversation index (the
//! newest entry, and the entries above the read mark: an exact count, since seqs skip);
//! for groups from the group's timeline above `max(read mark, join seq)`. So a 1:1 send
//! writes nothing more than before (6 keys, no store read), and a group send writes no
//! key per member. ARCHITECTURE.md says why.
//!
//! The view of a user is held in memory after its first read (under an async lock per
//! user; at most `[conversations] max_held` conversations over all views, idle views
//! are dropped beyond it). A cold load starts from the user's snapshot (`snapshot.rs`:
//! the view as saved after a list read, every `[conversations] snapshot_every` folded
//! entries) and folds only what came after it; without one it folds the conversation
//! log (records), derives each 1:1 conversation from its index, and resumes the inbox
//! fold at the last position the log records (a put carries it; a checkpoint entry is
//! written every `[conversations] checkpoint_every` folded inbox entries).
//!
//! **Compaction.** Every read logs the record's new state, so the log keeps growing;
//! entries a later one supersedes are deleted (`WriteOp::DeleteLogEntry`) in the same
//! batch as a later log write once there are `[conversations] compact_after` of them
//! and at least as many as the user's conversations (the log stays within about twice
//! its live size). What stays is each conversation's newest state, tombstones
//! included, so a sync from any `maxSequence` is still exact without a reset: see
//! `View::garbage`.
//!
//! Must never: write per message on the send path, count an entry twice (see
//! `view.rs`), or show one user another's conversations.

pub mod flags;
pub mod record;
pub mod snapshot;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::ServiceError;
use crate::{now_ms, Logic};
use record::{LogRecord, Op};
use tern_schema::client;
use tern_schema::{codes, encode};
use tern_storage::{AppId, Conversation, GroupId, Owner, Seq, SyncKind, UserId, WriteBatch};
use tokio::sync::Mutex as AsyncMutex;
use view::{Conv, Last, MessageSummary, View};

/// Conversation error codes (50000s, beside the message codes).
pub mod errors {
    /// The user has no such conversation (never had a message, or deleted).
    pub const NO_SUCH_CONVERSATION: u32 = 50011;
    /// A mute beyond `flags::MAX_MUTED` muted conversations.
    pub const TOO_MANY_MUTED: u32 = 50012;
}

/// Superseded log entries deleted per write at most (the rest go with the next one).
const MAX_DELETES_PER_WRITE: usize = 4096;
/// Timeline entries read per store call while folding.
const PAGE: usize = 1000;
/// Longest `extra` of a conversation, in bytes.
pub const MAX_EXTRA_LEN: usize = 4096;

type Slot = Arc<AsyncMutex<Option<View>>>;

/// The views of this node and how many conversations they hold together (kept as the
/// views change, so taking a new view does not sum over every user's).
#[derive(Default)]
struct Views {
    by_user: HashMap<(AppId, UserId), (Slot, usize)>,
    held: usize,
}

/// The conversation views of this node.
#[derive(Default)]
pub struct Conversations {
    views: Mutex<Views>,
    /// The flags of users that have any (mutes, group clear floors): read by the push
    /// and pull paths, loaded at login (see `flags.rs`).
    pub flags: flags::FlagIndex,
}

impl Conversations {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, app: AppId, user: &UserId, max_held: usize) -> Slot {
        let mut g = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, _)) = g.by_user.get(&(app, user.clone())) {
            return s.clone();
        }
        metrics::gauge!("tern_conversations_held").set(g.held as f64);
        if g.held > max_held {
            // Drop idle views (nobody holds their slot) until under the bound.
            let mut over = g.held - max_held;
            let mut dropped = 0;
            g.by_user.retain(|_, (s, n)| {
                if over == 0 || Arc::strong_count(s) > 1 {
                    return true;
                }
                over = over.saturating_sub(*n);
                dropped += *n;
                false
            });
            g.held -= dropped;
        }
        let s: Slot = Arc::new(AsyncMutex::new(None));
        g.by_user.insert((app, user.clone()), (s.clone(), 0));
        s
    }

    fn account(&self, app: AppId, user: &UserId, n: usize) {
        let mut g = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = g.by_user.get_mut(&(app, user.clone())) {
            let old = std::mem::replace(&mut e.1, n);
            g.held = g.held - old + n;
        }
    }

    /// Whether every peer in `peers` is a 1:1 conversation `user` muted (false for an
    /// empty list). From memory: the flags of every online user are loaded at login.
    pub fn all_muted<'a>(&self, app: AppId, user: &UserId, peers: impl Iterator<Item = &'a str>) -> bool {
        self.flags.all_muted(app, user, peers)
    }

    /// Drops the views of `slot`'s users, waiting for the ones in use (a slot move).
    /// Returns how many views went.
    pub async fn drop_slot(&self, slot: crate::slots::Slot) -> usize {
        crate::owners::remove_when_free(|| {
            let mut g = self.views.lock().unwrap_or_else(|p| p.into_inner());
            let mut freed = 0;
            let (removed, busy) = crate::owners::remove_free(
                &mut g.by_user,
                |(app, user)| crate::slots::slot_of(*app, user) == slot,
                |(s, n)| {
                    let free = Arc::strong_count(s) == 1;
                    if free {
                        freed += *n;
                    }
                    free
                },
            );
            g.held -= freed;
            (removed, busy)
        })
        .await
    }

    /// Conversations held in memory (all views).
    pub fn held(&self) -> usize {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).held
    }
}

/// One conversation as the list and the sync answer show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub conversation: Conversation,
    pub is_top: bool,
    pub is_mute: bool,
    pub extra: String,
    pub read_seq: Seq,
    pub cleared_seq: Seq,
    pub unread: u64,
    pub last: Option<Last>,
    pub sync_seq: Seq,
    pub updated_ms: u64,
}

impl Item {
    fn of(conv: &Conversation, c: &Conv) -> Self {
        Self {
            conversation: conv.clone(),
            is_top: c.is_top,
            is_mute: c.is_mute,
            extra: c.extra.clone(),
            read_seq: c.read_seq,
            cleared_seq: c.cleared_seq,
            unread: c.unread,
            last: c.last.clone(),
            sync_seq: c.sync_seq,
            updated_ms: c.updated_ms,
        }
    }
}

/// A page of the conversation list.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Item>,
    /// Conversations in the whole list.
    pub total: usize,
    /// The offset of the next page, if there is one.
    pub next: Option<usize>,
    /// The user's committed conversation log seq.
    pub max_seq: Seq,
}

/// One entry of the sync answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: Seq,
    pub conversation: Conversation,
    pub op: Op,
    pub is_top: bool,
    pub is_mute: bool,
    pub extra: String,
    pub read_seq: Seq,
    pub cleared_seq: Seq,
    pub time_ms: u64,
}

/// A page of the sync log.
#[derive(Debug, Clone)]
pub struct SyncPage {
    pub changes: Vec<Change>,
    pub max_seq: Seq,
    pub completed: bool,
}

/// Locks `user`'s view, loading it on first touch, and brings it up to date with the
/// timelines (writing log entries for conversations that appeared or revived).
async fn locked(
    logic: &Logic,
    app: AppId,
    user: &UserId,
) -> Result<tokio::sync::OwnedMutexGuard<Option<View>>, ServiceError> {
    let max_held = logic.config.conversations.max_held;
    let mut g = logic.conversations.slot(app, user, max_held).lock_owned().await;
    if g.is_none() {
        *g = Some(load(logic, app, user).await?);
    }
    let v = g.as_mut().expect("loaded above");
    if let Err(e) = refresh(logic, app, user, v).await {
        // A failed fold may have left the view half-applied: reload next time.
        *g = None;
        return Err(e);
    }
    logic.conversations.account(app, user, v.convs.len());
    if v.since_snapshot >= logic.config.conversations.snapshot_every {
        snapshot_later(logic, app, user);
    }
    Ok(g)
}

/// Saves the user's view as their snapshot once the current call is answered (the
/// encode and the write take a few ms for 10,000 conversations: not on the read's
/// latency).
fn snapshot_later(logic: &Logic, app: AppId, user: &UserId) {
    let slot = logic.conversations.slot(app, user, logic.config.conversations.max_held);
    let (store, every, user) = (logic.store.clone(), logic.config.conversations.snapshot_every, user.clone());
    tokio::spawn(async move {
        let mut g = slot.lock_owned().await;
        if let Some(v) = g.as_mut().filter(|v| v.since_snapshot >= every) {
            save_snapshot(&*store, app, &user, v).await;
        }
    });
}

/// Writes `v` as the user's snapshot (`snapshot.rs`): every part in one batch, parts
/// of a longer older one deleted. A failure is logged, not returned: it is a cache, and
/// the next read of the list tries again.
async fn save_snapshot(store: &dyn tern_storage::Store, app: AppId, user: &UserId, v: &mut View) {
    let now = now_ms();
    let id = now.max(v.snapshot_id + 1);
    let parts = snapshot::encode(v, id);
    let n = parts.len() as u64;
    let bytes: usize = parts.iter().map(|p| p.len()).sum();
    let owner = Owner::User(user.clone());
    let mut batch = WriteBatch::with_capacity(parts.len() + v.snapshot_parts.saturating_sub(n) as usize);
    for (i, payload) in parts.into_iter().enumerate() {
        let entry = tern_storage::LogEntry { seq: Seq(i as u64 + 1), time_ms: now, payload };
        batch.replace_log_entry(app, owner.clone(), SyncKind::ConversationSnapshot, entry);
    }
    for seq in n + 1..=v.snapshot_parts {
        batch.delete_log_entry(app, owner.clone(), SyncKind::ConversationSnapshot, Seq(seq));
    }
    match store.write(batch).await {
        Ok(()) => {
            (v.snapshot_id, v.snapshot_parts, v.since_snapshot) = (id, n, 0);
            metrics::counter!("tern_conversation_snapshots_total").increment(1);
            metrics::counter!("tern_conversation_snapshot_bytes_total").increment(bytes as u64);
        }
        Err(e) => {
            // Some parts may be stored: delete up to these next time.
            v.snapshot_parts = v.snapshot_parts.max(n);
            tracing::warn!(%user, error = %e, "saving a conversation snapshot failed; the next list read tries again");
        }
    }
}

/// Builds a view from the store: from the user's snapshot and what was logged after
/// it if there is a usable one, else from the conversation log and the conversation
/// index (see the module docs); `refresh` then folds the timelines from where it stops.
async fn load(logic: &Logic, app: AppId, user: &UserId) -> Result<View, ServiceError> {
    let own = Owner::User(user.clone());
    let mut stored = Vec::new();
    loop {
        let after = stored.last().map_or(Seq::ZERO, |e: &tern_storage::LogEntry| e.seq);
        let page = logic.store.read_log(app, &own, SyncKind::ConversationSnapshot, after, 64).await?;
        let more = page.len() == 64;
        stored.extend(page);
        if !more {
            break;
        }
    }
    let parts = stored.last().map_or(0, |e| e.seq.0);
    match decode_snapshot(stored).await {
        Ok(Some(mut v)) => {
            v.snapshot_parts = parts;
            resume(logic, app, user, &mut v).await?;
            metrics::counter!("tern_conversation_loads_total", "from" => "snapshot").increment(1);
            return Ok(v);
        }
        Ok(None) => {}
        Err(e) => tracing::info!(%user, error = %e, "conversation snapshot not used; the list is rebuilt from the log"),
    }
    let mut v = fold_log(logic, app, user).await?;
    v.inbox_to = v.logged_inbox;
    join_groups(logic, app, user, &mut v, |_| true).await?;
    for (conv, c) in v.convs.iter_mut() {
        if matches!(conv, Conversation::Single(_)) {
            derive_single(logic, app, user, &own, conv, c).await?;
        }
    }
    // Nothing of this is saved yet: the first read saves it.
    (v.snapshot_parts, v.since_snapshot) = (parts, u64::MAX);
    metrics::counter!("tern_conversation_loads_total", "from" => "log").increment(1);
    Ok(v)
}

/// [`snapshot::decode`], each part on the blocking pool (10,000 conversations take
/// ~10 ms of CPU to decode: in parallel, and not on a runtime worker).
async fn decode_snapshot(stored: Vec<tern_storage::LogEntry>) -> Result<Option<View>, String> {
    if stored.is_empty() {
        return Ok(None);
    }
    let tasks: Vec<_> =
        stored.into_iter().map(|e| tokio::task::spawn_blocking(move || snapshot::decode_part(&e))).collect();
    let mut parts = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await.map_err(|e| format!("decoding a part: {e}"))?? {
            Some(p) => parts.push(p),
            None => return Ok(None),
        }
    }
    snapshot::assemble(parts).map(Some)
}

/// Brings a view decoded from a snapshot up to the conversation log (the entries
/// logged after the snapshot) and to the user's group memberships; `refresh` then folds
/// the inbox and the group timelines from the positions the snapshot holds. Exact as
/// the view in memory was: a record whose read mark or clear point moved is recounted
/// over `(floor, seen_to]` (entries above `seen_to` are counted by the fold), a group
/// rejoined since is refolded from the new join.
async fn resume(logic: &Logic, app: AppId, user: &UserId, v: &mut View) -> Result<(), ServiceError> {
    // Conversations the log tail changes: their (floor, cleared) before it (None: new).
    let mut touched: HashMap<Conversation, Option<(Seq, Seq)>> = HashMap::new();
    let mut after = v.log_to;
    loop {
        let (entries, _, completed) = logic.read_synced(app, user, SyncKind::Conversation, after, PAGE).await?;
        for e in &entries {
            after = e.seq;
            v.since_snapshot += 1;
            let Some(r) = LogRecord::decode(&e.payload) else {
                tracing::warn!(%user, seq = e.seq.0, "undecodable conversation log entry skipped");
                continue;
            };
            if let Some(conv) = r.conversation() {
                let before = v.convs.get(&conv).map(|c| (c.floor(), c.cleared_seq));
                touched.entry(conv).or_insert(before);
            }
            v.apply_log(e.seq, &r);
        }
        if completed || entries.is_empty() {
            break;
        }
    }
    let groups: Vec<GroupId> = v
        .convs
        .keys()
        .filter_map(|k| match k {
            Conversation::Group(g) => Some(g.clone()),
            Conversation::Single(_) => None,
        })
        .collect();
    for g in groups {
        let conv = Conversation::Group(g.clone());
        let Some(Some(m)) = logic.store.get_group_members(app, &g, std::slice::from_ref(user)).await?.pop() else {
            continue;
        };
        let c = v.convs.get_mut(&conv).expect("listed above");
        if matches!(touched.get(&conv), Some(None)) || m.join_seq != c.join_seq {
            // New since the snapshot, or rejoined: derived from the join as at a full load.
            (c.join_seq, c.seen_to, c.unread, c.last) = (m.join_seq, m.join_seq, 0, None);
            c.read_seq = c.read_seq.max(m.read_seq);
            touched.remove(&conv);
        }
    }
    for (conv, before) in touched {
        // A new 1:1 conversation has no inbox entry at or below the snapshot's position
        // (the fold would have made it then): the inbox fold finds all of it.
        let (Some((floor, cleared)), Some(c)) = (before, v.convs.get_mut(&conv)) else { continue };
        if c.cleared_seq > cleared && c.last.as_ref().is_some_and(|l| l.seq <= c.cleared_seq) {
            c.last = None;
        }
        if c.floor() > floor {
            let (floor, upto) = (c.floor(), c.seen_to);
            c.unread = match &conv {
                Conversation::Single(_) => count_single(logic, app, user, &conv, floor, upto).await?,
                Conversation::Group(g) => count_group(logic, app, user, &Owner::Group(g.clone()), floor, upto).await?,
            };
        }
    }
    Ok(())
}

/// The records of `user`'s conversation log, folded (nothing derived yet).
async fn fold_log(logic: &Logic, app: AppId, user: &UserId) -> Result<View, ServiceError> {
    let mut v = View::default();
    let mut after = Seq::ZERO;
    loop {
        let (entries, _, completed) = logic.read_synced(app, user, SyncKind::Conversation, after, PAGE).await?;
        for e in &entries {
            after = e.seq;
            match LogRecord::decode(&e.payload) {
                Some(r) => v.apply_log(e.seq, &r),
                None => tracing::warn!(%user, seq = e.seq.0, "undecodable conversation log entry skipped"),
            }
        }
        if completed || entries.is_empty() {
            break;
        }
    }
    Ok(v)
}

/// Sets the join seq (and the group read mark) of the group conversations `which`
/// picks from the user's member records.
async fn join_groups(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    v: &mut View,
    which: impl Fn(&Conv) -> bool,
) -> Result<(), ServiceError> {
    let groups: Vec<_> = v
        .convs
        .iter()
        .filter_map(|(k, c)| match k {
            Conversation::Group(g) if which(c) => Some(g.clone()),
            _ => None,
        })
        .collect();
    for g in groups {
        let member = logic.store.get_group_members(app, &g, std::slice::from_ref(user)).await?;
        if let (Some(Some(m)), Some(c)) = (member.into_iter().next(), v.convs.get_mut(&Conversation::Group(g))) {
            c.join_seq = m.join_seq;
            c.read_seq = c.read_seq.max(m.read_seq);
            c.seen_to = m.join_seq;
        }
    }
    Ok(())
}

/// Writes `user`'s flags entry from their conversation records if there is none —
/// mutes (and group clear points) set by a build before the entry existed, which the
/// push path would otherwise not see until the user's next mute — and installs it.
/// The entry is written even if empty, so this runs once per user (login starts it
/// when its read found no entry). Under the user's view lock, so no change of theirs
/// interleaves; folds only the conversation log if the view is not in memory.
pub async fn rebuild_flags(logic: &Logic, app: AppId, user: &UserId) -> Result<(), ServiceError> {
    let slot = logic.conversations.slot(app, user, logic.config.conversations.max_held);
    let g = slot.lock().await;
    let owner = Owner::User(user.clone());
    let stored = logic.store.read_log(app, &owner, SyncKind::ConversationFlags, Seq::ZERO, 1).await?;
    if flags::Flags::stored_in(&stored) {
        install_loaded_flags(logic, app, user, &stored);
        return Ok(());
    }
    let folded;
    let v = match g.as_ref() {
        Some(v) => v,
        None => {
            let mut v = fold_log(logic, app, user).await?;
            // Only a clear point above the join is a flag: those groups need the join.
            join_groups(logic, app, user, &mut v, |c| c.cleared_seq > Seq::ZERO).await?;
            folded = v;
            &folded
        }
    };
    let now = now_ms();
    let held = logic.conversations.flags.get(app, user).map_or(0, |h| h.version);
    let f = flags::of_view(v.convs.iter(), now.max(held + 1));
    let mut batch = WriteBatch::with_capacity(1);
    batch.replace_log_entry(app, owner, SyncKind::ConversationFlags, f.entry(now));
    logic.write_retrying(batch).await?;
    metrics::counter!("tern_conversation_flags_rebuilt_total").increment(1);
    install_flags(logic, app, user, Some(f));
    Ok(())
}

/// Last message and unread count of a 1:1 conversation from its index.
async fn derive_single(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    own: &Owner,
    conv: &Conversation,
    c: &mut Conv,
) -> Result<(), ServiceError> {
    let newest = logic.store.read_conv_back(app, user, conv, Seq::MAX, 1).await?;
    let Some(&seq) = newest.first() else { return Ok(()) };
    c.seen_to = seq;
    let mut newest_unread = 0;
    if seq > c.cleared_seq {
        if let Some(e) = logic.store.get_log_entry(app, own, SyncKind::Message, seq).await? {
            if let Some(m) = MessageSummary::of(&e.payload) {
                if seq > c.floor() && m.sender != user.as_str() {
                    newest_unread = 1;
                }
                c.last = Some(Last {
                    message_key: m.message_key,
                    seq,
                    time_ms: e.time_ms,
                    sender: m.sender,
                    preview: if m.recalled { String::new() } else { m.preview },
                    recalled: m.recalled,
                });
            }
        }
    }
    // The newest entry was read above; count the rest below it.
    c.unread = newest_unread;
    if seq > c.floor() {
        c.unread += count_single(logic, app, user, conv, c.floor(), Seq(seq.0 - 1)).await?;
    }
    Ok(())
}

/// Others' messages of a 1:1 conversation in `(floor, upto]`: the exact unread count.
/// Walks the conversation index down from `upto` and reads each entry's sender (seqs
/// skip, so the count is of entries, never a difference of seqs).
async fn count_single(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    conv: &Conversation,
    floor: Seq,
    upto: Seq,
) -> Result<u64, ServiceError> {
    let own = Owner::User(user.clone());
    let mut n = 0u64;
    let mut before = Seq(upto.0.saturating_add(1));
    loop {
        let seqs = logic.store.read_conv_back(app, user, conv, before, PAGE).await?;
        for s in &seqs {
            if *s <= floor {
                return Ok(n);
            }
            let Some(e) = logic.store.get_log_entry(app, &own, SyncKind::Message, *s).await? else { continue };
            if MessageSummary::of(&e.payload).is_some_and(|m| m.sender != user.as_str()) {
                n += 1;
            }
        }
        match seqs.last() {
            Some(s) if seqs.len() == PAGE => before = *s,
            _ => return Ok(n),
        }
    }
}

/// Others' messages (not recall events) of a group timeline in `(floor, upto]`.
async fn count_group(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    owner: &Owner,
    floor: Seq,
    upto: Seq,
) -> Result<u64, ServiceError> {
    let mut n = 0u64;
    let mut after = floor;
    while after < upto {
        let entries = logic.store.read_log(app, owner, SyncKind::Message, after, PAGE).await?;
        for e in &entries {
            if e.seq > upto {
                return Ok(n);
            }
            if MessageSummary::of(&e.payload)
                .is_some_and(|m| m.entry != client::EntryKind::Recall && m.sender != user.as_str())
            {
                n += 1;
            }
        }
        match entries.last() {
            Some(e) if entries.len() == PAGE => after = e.seq,
            _ => break,
        }
    }
    Ok(n)
}

/// Brings a view up to date: folds the inbox past `inbox_to`, the user's groups past
/// each conversation's `seen_to`, picks up group read marks, then logs what changed.
async fn refresh(logic: &Logic, app: AppId, user: &UserId, v: &mut View) -> Result<(), ServiceError> {
    let folded_from = v.inbox_to;
    loop {
        let (entries, _, completed) = logic.read_synced(app, user, SyncKind::Message, v.inbox_to, PAGE).await?;
        v.since_snapshot = v.since_snapshot.saturating_add(entries.len() as u64);
        for e in &entries {
            v.inbox_to = e.seq;
            let Some(m) = MessageSummary::of(&e.payload) else { continue };
            let Some(conv) = m.single_of(user) else { continue };
            let c = v.convs.entry(conv).or_insert_with(|| Conv { dirty: true, ..Conv::default() });
            c.account(user, e.seq, e.time_ms, &m);
        }
        if completed || entries.is_empty() {
            break;
        }
    }
    refresh_groups(logic, app, user, v).await?;
    let mut dirty: Vec<(Conversation, LogRecord)> = Vec::new();
    let now = now_ms();
    for (conv, c) in v.convs.iter() {
        if c.dirty {
            let op = if c.deleted { Op::Delete } else { Op::Put };
            dirty.push((conv.clone(), c.record(conv, op, v.inbox_to, now)));
        }
    }
    let checkpoint_every = logic.config.conversations.checkpoint_every;
    if dirty.is_empty() && v.inbox_to.0.saturating_sub(v.logged_inbox.0.max(folded_from.0)) < checkpoint_every {
        return Ok(());
    }
    if dirty.is_empty() {
        dirty_write(logic, app, user, v, vec![(None, LogRecord::checkpoint(v.inbox_to, now))], WriteBatch::new(), None)
            .await?;
        return Ok(());
    }
    let entries = dirty.into_iter().map(|(c, r)| (Some(c), r)).collect();
    dirty_write(logic, app, user, v, entries, WriteBatch::new(), None).await?;
    Ok(())
}

async fn refresh_groups(logic: &Logic, app: AppId, user: &UserId, v: &mut View) -> Result<(), ServiceError> {
    let joined = crate::groups::joined(logic, app, user).await?;
    let live: Vec<_> = joined.into_iter().filter(|(_, r, _)| !r.left && !r.destroyed).map(|(g, _, _)| g).collect();
    if live.is_empty() {
        return Ok(());
    }
    let marks: HashMap<Conversation, Seq> = logic
        .store
        .get_read_marks(app, user)
        .await?
        .into_iter()
        .filter(|(c, _)| matches!(c, Conversation::Group(_)))
        .collect();
    let mut folded = 0u64;
    for g in live {
        let conv = Conversation::Group(g.clone());
        let owner = Owner::Group(g.clone());
        if !v.convs.contains_key(&conv) {
            let Some(Some(m)) = logic.store.get_group_members(app, &g, std::slice::from_ref(user)).await?.pop() else {
                continue;
            };
            v.convs.insert(
                conv.clone(),
                Conv {
                    join_seq: m.join_seq,
                    seen_to: m.join_seq,
                    read_seq: m.read_seq,
                    dirty: true,
                    ..Conv::default()
                },
            );
        }
        let c = v.convs.get_mut(&conv).expect("inserted above");
        if let Some(mark) = marks.get(&conv).copied().filter(|m| *m > c.read_seq) {
            c.read_seq = mark;
            c.unread = count_group(logic, app, user, &owner, c.floor(), c.seen_to).await?;
            c.dirty = true;
        }
        // Not past a send of the group still being written: an entry below one already
        // folded would never be counted.
        let settled = logic.groups.committed_if_loaded(app, &g).await.unwrap_or(Seq::MAX);
        while c.seen_to < settled {
            let entries = logic.store.read_log(app, &owner, SyncKind::Message, c.seen_to, PAGE).await?;
            folded += entries.len() as u64;
            for e in entries.iter().take_while(|e| e.seq <= settled) {
                if let Some(m) = MessageSummary::of(&e.payload) {
                    c.account(user, e.seq, e.time_ms, &m);
                }
            }
            if entries.len() < PAGE || entries.last().is_some_and(|e| e.seq >= settled) {
                break;
            }
        }
    }
    v.since_snapshot = v.since_snapshot.saturating_add(folded);
    Ok(())
}

/// Appends `entries` to the user's conversation log (with `extra` writes) in one
/// durable batch, folds them into the view and tells the user's devices (all but
/// `origin`).
async fn dirty_write(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    v: &mut View,
    entries: Vec<(Option<Conversation>, LogRecord)>,
    extra: WriteBatch,
    origin: Option<&tern_schema::link::ConnRef>,
) -> Result<Seq, ServiceError> {
    let mut extra = extra;
    // Compaction rides along: superseded entries once there are enough of them.
    let compact_at = logic.config.conversations.compact_after.max(v.convs.len()).max(1);
    let mut compacted = 0;
    let mut deleting: Vec<Seq> = Vec::new();
    if v.garbage.len() >= compact_at {
        let n = v.garbage.len().min(MAX_DELETES_PER_WRITE);
        deleting = v.garbage.drain(..n).collect();
        for seq in &deleting {
            extra.delete_log_entry(app, Owner::User(user.clone()), SyncKind::Conversation, *seq);
        }
        // If the write fails they stay stored; the next cold load finds them again.
        compacted = n;
    }
    let payloads = entries.iter().map(|(_, r)| (user.clone(), SyncKind::Conversation, r.encode())).collect();
    let seqs = match logic.append_many(app, payloads, extra).await {
        Ok(seqs) => seqs,
        Err(e) => {
            // Still stored, still to delete (a snapshot must not forget them).
            v.garbage.splice(0..0, deleting);
            return Err(e.into());
        }
    };
    v.since_snapshot = v.since_snapshot.saturating_add(seqs.len() as u64);
    metrics::counter!("tern_conversation_log_compacted_total").increment(compacted as u64);
    for ((_, r), seq) in entries.iter().zip(&seqs) {
        v.apply_log(*seq, r);
    }
    let last = seqs.last().copied().unwrap_or_default();
    let frame = encode::sync_notify(client::SyncKind(SyncKind::Conversation.as_u8()), last.0);
    logic.sessions.send_to_user(app, user, &frame, origin);
    metrics::counter!("tern_conversation_log_entries_total").increment(seqs.len() as u64);
    Ok(last)
}

/// A page of `user`'s conversation list: pinned first, then newest activity first;
/// `offset` conversations skipped, at most `limit`.
pub async fn get(logic: &Logic, app: AppId, user: &UserId, offset: usize, limit: usize) -> Result<Page, ServiceError> {
    let g = locked(logic, app, user).await?;
    let v = g.as_ref().expect("locked loads");
    let sorted = v.sorted(offset.saturating_add(limit));
    let total = sorted.len();
    let items: Vec<Item> = sorted.iter().skip(offset).take(limit).map(|(k, c)| Item::of(k, c)).collect();
    let end = offset.saturating_add(items.len());
    Ok(Page { items, total, next: (end < total).then_some(end), max_seq: v.log_to })
}

/// One conversation of `user` (deleted ones included, flagged by their record).
pub async fn get_one(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    conv: &Conversation,
) -> Result<Option<Item>, ServiceError> {
    let g = locked(logic, app, user).await?;
    let v = g.as_ref().expect("locked loads");
    Ok(v.convs.get(conv).filter(|c| !c.deleted).map(|c| Item::of(conv, c)))
}

/// The changes of `user`'s conversation records after `after` (at most `limit`), in
/// log order; checkpoints are left out.
pub async fn sync(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    after: Seq,
    limit: usize,
) -> Result<SyncPage, ServiceError> {
    // Conversations that appeared since the last read are logged first.
    drop(locked(logic, app, user).await?);
    let (entries, max_seq, completed) = logic.read_synced(app, user, SyncKind::Conversation, after, limit).await?;
    let changes = entries
        .iter()
        .filter_map(|e| {
            let r = LogRecord::decode(&e.payload)?;
            Some(Change {
                seq: e.seq,
                conversation: r.conversation()?,
                op: r.op,
                is_top: r.is_top,
                is_mute: r.is_mute,
                extra: r.extra,
                read_seq: Seq(r.read_seq),
                cleared_seq: Seq(r.cleared_seq),
                time_ms: r.time_ms,
            })
        })
        .collect();
    Ok(SyncPage { changes, max_seq, completed })
}

/// What an update changes (`None`: left as it is).
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub is_top: Option<bool>,
    pub is_mute: Option<bool>,
    pub extra: Option<String>,
}

/// Pins / mutes a conversation or sets its extra. Returns the log seq of the change
/// (the current one if nothing changed).
pub async fn update(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    conv: &Conversation,
    u: Update,
) -> Result<Seq, ServiceError> {
    if u.extra.as_ref().is_some_and(|e| e.len() > MAX_EXTRA_LEN) {
        return Err(ServiceError::refused(codes::INVALID_FIELD, format!("extra: more than {MAX_EXTRA_LEN} bytes")));
    }
    let mut g = locked(logic, app, user).await?;
    let v = g.as_mut().expect("locked loads");
    let c = existing(v, conv)?;
    let mut next = c.clone();
    next.is_top = u.is_top.unwrap_or(c.is_top);
    next.is_mute = u.is_mute.unwrap_or(c.is_mute);
    next.extra = u.extra.unwrap_or_else(|| c.extra.clone());
    if (next.is_top, next.is_mute, &next.extra) == (c.is_top, c.is_mute, &c.extra) {
        return Ok(c.sync_seq);
    }
    if next.is_mute && !c.is_mute && v.convs.values().filter(|c| c.is_mute).count() >= flags::MAX_MUTED {
        let msg =
            format!("isMute: {} conversations are muted already (at most {})", flags::MAX_MUTED, flags::MAX_MUTED);
        return Err(ServiceError::refused(errors::TOO_MANY_MUTED, msg));
    }
    let now = now_ms();
    let rec = next.record(conv, Op::Put, v.inbox_to, now);
    let mut extra = WriteBatch::new();
    let changed = flags_change(logic, app, user, v, conv, &next, &mut extra, now);
    let seq = dirty_write(logic, app, user, v, vec![(Some(conv.clone()), rec)], extra, None).await?;
    install_flags(logic, app, user, changed);
    Ok(seq)
}

/// If changing `conv` to `next` changes the user's flags (`flags.rs`): adds their new
/// entry to `batch` and returns them, to be installed once the batch is durable.
#[allow(clippy::too_many_arguments)]
fn flags_change(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    v: &View,
    conv: &Conversation,
    next: &Conv,
    batch: &mut WriteBatch,
    now: u64,
) -> Option<flags::Flags> {
    let before = flags::of_view(v.convs.iter(), 0);
    let after = flags::of_view(v.convs.iter().map(|(k, c)| (k, if k == conv { next } else { c })), 0);
    if before == after {
        return None;
    }
    let held = logic.conversations.flags.get(app, user).map_or(0, |h| h.version);
    let after = flags::Flags { version: now.max(held + 1), ..after };
    batch.replace_log_entry(app, Owner::User(user.clone()), SyncKind::ConversationFlags, after.entry(now));
    Some(after)
}

fn install_flags(logic: &Logic, app: AppId, user: &UserId, f: Option<flags::Flags>) {
    if let Some(f) = f {
        let online = |a: AppId, u: &UserId| !logic.sessions.devices(a, u).is_empty();
        logic.conversations.flags.install(app, user, &f, now_ms(), online);
    }
}

/// Installs flags read at login (`login.rs`) for `user`.
pub fn install_loaded_flags(logic: &Logic, app: AppId, user: &UserId, entries: &[tern_storage::LogEntry]) {
    match flags::Flags::from_entries(entries) {
        Ok(f) => install_flags(logic, app, user, Some(f)),
        Err(e) => tracing::warn!(%user, error = %e, "conversation flags do not decode; pushes are not silenced"),
    }
}

fn existing<'a>(v: &'a View, conv: &Conversation) -> Result<&'a Conv, ServiceError> {
    v.convs
        .get(conv)
        .filter(|c| !c.deleted)
        .ok_or_else(|| ServiceError::refused(errors::NO_SUCH_CONVERSATION, format!("no such conversation: {conv}")))
}

/// How a delete acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Remove the record; the messages stay in history.
    KeepHistory,
    /// Remove the record and clear the user's history of it up to now.
    ClearHistory,
    /// Change nothing on the server: tell the user's devices to remove it locally.
    NotifyOnly,
}

/// Deletes a conversation of `user` (see [`DeleteMode`]). A server-side delete also
/// marks everything up to now read; a later message brings the conversation back with
/// only the newer messages unread. Returns the log seq of the change.
pub async fn delete(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    conv: &Conversation,
    mode: DeleteMode,
) -> Result<Seq, ServiceError> {
    let mut g = locked(logic, app, user).await?;
    let v = g.as_mut().expect("locked loads");
    let c = existing(v, conv)?;
    let now = now_ms();
    if mode == DeleteMode::NotifyOnly {
        let rec = c.record(conv, Op::NotifyDelete, v.inbox_to, now);
        return dirty_write(logic, app, user, v, vec![(Some(conv.clone()), rec)], WriteBatch::new(), None).await;
    }
    let mut next = c.clone();
    next.read_seq = next.read_seq.max(c.seen_to);
    if mode == DeleteMode::ClearHistory {
        next.cleared_seq = c.seen_to;
    }
    let mut extra = WriteBatch::with_capacity(1);
    if next.read_seq > Seq::ZERO {
        extra.put_read_mark(app, user.clone(), conv.clone(), next.read_seq);
    }
    let rec = next.record(conv, Op::Delete, v.inbox_to, now);
    let changed = flags_change(logic, app, user, v, conv, &next, &mut extra, now);
    let seq = dirty_write(logic, app, user, v, vec![(Some(conv.clone()), rec)], extra, None).await?;
    install_flags(logic, app, user, changed);
    if let Some(c) = v.convs.get_mut(conv) {
        c.unread = 0;
        if mode == DeleteMode::ClearHistory {
            c.last = None;
        }
    }
    Ok(seq)
}

/// `user` read `conv` up to `seq` (their inbox seq for 1:1): persists the read mark and
/// the record change in one batch, recounts the unread messages, and tells the user's
/// other devices (all but `origin`). A mark at or below the current one changes
/// nothing.
pub async fn mark_read(
    logic: &Logic,
    app: AppId,
    user: &UserId,
    conv: &Conversation,
    seq: Seq,
    origin: Option<&tern_schema::link::ConnRef>,
) -> Result<(), ServiceError> {
    let mut g = locked(logic, app, user).await?;
    let v = g.as_mut().expect("locked loads");
    let c = v.convs.get(conv).cloned().unwrap_or_default();
    let mut batch = WriteBatch::with_capacity(2);
    batch.put_read_mark(app, user.clone(), conv.clone(), seq);
    if seq <= c.read_seq {
        // Keep the store's max-register as it was before this module (idempotent).
        logic.write_retrying(batch).await?;
        return Ok(());
    }
    let mut next = c;
    next.read_seq = seq;
    let rec = next.record(conv, if next.deleted { Op::Delete } else { Op::Put }, v.inbox_to, now_ms());
    dirty_write(logic, app, user, v, vec![(Some(conv.clone()), rec)], batch, origin).await?;
    let floor = v.convs.get(conv).map(Conv::floor).unwrap_or_default();
    let upto = v.convs.get(conv).map(|c| c.seen_to).unwrap_or_default();
    let unread = match conv {
        Conversation::Single(_) => count_single(logic, app, user, conv, floor, upto).await,
        Conversation::Group(gid) => count_group(logic, app, user, &Owner::Group(gid.clone()), floor, upto).await,
    };
    match unread {
        Ok(n) => {
            if let Some(c) = v.convs.get_mut(conv) {
                c.unread = n;
            }
            Ok(())
        }
        Err(e) => {
            // The count is stale now: rebuild the view next time (never snapshot it).
            *g = None;
            Err(e)
        }
    }
}

/// The seq up to which `user` cleared their history of `conv` (`Seq::ZERO`: none).
/// Read from memory once the user's view is loaded.
pub async fn cleared_seq(logic: &Logic, app: AppId, user: &UserId, conv: &Conversation) -> Result<Seq, ServiceError> {
    let g = locked(logic, app, user).await?;
    Ok(g.as_ref().and_then(|v| v.convs.get(conv)).map_or(Seq::ZERO, |c| c.cleared_seq))
}

/// The group seq up to which `user` cleared their history of `group` (`Seq::ZERO`:
/// none): from memory for online users (their flags are loaded at login), else one
/// read of the user's flags entry. Never loads the conversation view.
pub async fn group_cleared(logic: &Logic, app: AppId, user: &UserId, group: &GroupId) -> Result<Seq, ServiceError> {
    if let Some(h) = logic.conversations.flags.get(app, user) {
        return Ok(h.cleared.get(group).copied().unwrap_or_default());
    }
    if !logic.sessions.devices(app, user).is_empty() {
        // Online without flags held: they have none.
        return Ok(Seq::ZERO);
    }
    let owner = Owner::User(user.clone());
    let entries = logic.store.read_log(app, &owner, SyncKind::ConversationFlags, Seq::ZERO, 1).await?;
    let f = flags::Flags::from_entries(&entries).map_err(|e| ServiceError::refused(codes::INTERNAL, e))?;
    Ok(f.cleared_groups.iter().find(|(g, _)| g == group.as_str()).map_or(Seq::ZERO, |(_, s)| Seq(*s)))
}

/// Answers a TCP ConversationGet: a ConversationList frame (or an Error frame).
pub async fn get_frame(logic: &Logic, app: AppId, user: &UserId, rid: u32, offset: u32, limit: u32) -> Vec<u8> {
    let limit = tcp_limit(limit);
    match get(logic, app, user, offset as usize, limit).await {
        Ok(page) => {
            let infos: Vec<_> = page.items.iter().map(info).collect();
            let total = u32::try_from(page.total).unwrap_or(u32::MAX);
            tern_schema::conversation::list(rid, &infos, page.max_seq.0, page.next.is_none(), total)
        }
        Err(r) => encode::error(rid, r.code(), &r.message()),
    }
}

/// Answers a TCP ConversationSync: a ConversationList frame (or an Error frame).
pub async fn sync_frame(logic: &Logic, app: AppId, user: &UserId, rid: u32, after: Seq, limit: u32) -> Vec<u8> {
    match sync(logic, app, user, after, tcp_limit(limit)).await {
        Ok(page) => {
            let infos: Vec<_> = page
                .changes
                .iter()
                .map(|c| tern_schema::conversation::InfoParts {
                    conversation_type: wire_type(&c.conversation),
                    target_id: record::target_of(&c.conversation),
                    op: match c.op {
                        Op::Delete => client::ConversationOp::Delete,
                        Op::NotifyDelete => client::ConversationOp::ClientDelete,
                        Op::Put | Op::Checkpoint => client::ConversationOp::Put,
                    },
                    is_top: c.is_top,
                    is_mute: c.is_mute,
                    extra: &c.extra,
                    read_seq: c.read_seq.0,
                    cleared_seq: c.cleared_seq.0,
                    sync_seq: c.seq.0,
                    updated_ms: c.time_ms,
                    ..Default::default()
                })
                .collect();
            tern_schema::conversation::list(rid, &infos, page.max_seq.0, page.completed, 0)
        }
        Err(r) => encode::error(rid, r.code(), &r.message()),
    }
}

/// A TCP page size: 0 is the default page, larger values are capped.
fn tcp_limit(limit: u32) -> usize {
    match limit {
        0 => crate::config::DEFAULT_PAGE_LIMIT,
        n => (n as usize).min(crate::config::MAX_PAGE_LIMIT),
    }
}

fn wire_type(conv: &Conversation) -> client::ConversationType {
    match conv {
        Conversation::Single(_) => client::ConversationType::Single,
        Conversation::Group(_) => client::ConversationType::Group,
    }
}

fn info(i: &Item) -> tern_schema::conversation::InfoParts<'_> {
    let last = i.last.as_ref();
    tern_schema::conversation::InfoParts {
        conversation_type: wire_type(&i.conversation),
        target_id: record::target_of(&i.conversation),
        op: client::ConversationOp::Put,
        is_top: i.is_top,
        is_mute: i.is_mute,
        extra: &i.extra,
        read_seq: i.read_seq.0,
        cleared_seq: i.cleared_seq.0,
        unread: i.unread,
        sync_seq: i.sync_seq.0,
        updated_ms: i.updated_ms,
        last_message_key: last.map_or(0, |l| l.message_key),
        last_seq: last.map_or(0, |l| l.seq.0),
        last_time_ms: last.map_or(0, |l| l.time_ms),
        last_sender: last.map_or("", |l| l.sender.as_str()),
        last_preview: last.map_or("", |l| l.preview.as_str()),
        last_recalled: last.is_some_and(|l| l.recalled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// The running count of held conversations follows every view's size, and taking a
    /// view past `max_held` drops idle views (never one whose slot is in use) and
    /// subtracts exactly what they held.
    #[test]
    fn held_conversations_are_counted_and_bounded() {
        let c = Conversations::new();
        let app = AppId(1);
        let busy = c.slot(app, &uid("a"), 100);
        let _ = c.slot(app, &uid("b"), 100);
        let _ = c.slot(app, &uid("c"), 100);
        c.account(app, &uid("a"), 40);
        c.account(app, &uid("b"), 30);
        c.account(app, &uid("c"), 20);
        assert_eq!(c.held(), 90);
        c.account(app, &uid("b"), 35);
        assert_eq!(c.held(), 95);
        // A view of a user not held counts nothing.
        c.account(app, &uid("nobody"), 7);
        assert_eq!(c.held(), 95);
        // 95 > 50: idle views go until under the bound; "a" is in use and stays.
        let _ = c.slot(app, &uid("d"), 50);
        let left = c.held();
        assert!(left <= 50 + 40, "held {left}");
        let g = c.views.lock().unwrap();
        assert!(g.by_user.contains_key(&(app, uid("a"))), "a view in use is never dropped");
        assert!(g.by_user.contains_key(&(app, uid("d"))));
        assert_eq!(g.held, g.by_user.values().map(|(_, n)| *n).sum::<usize>(), "the count matches the views");
        drop(g);
        drop(busy);
    }
}
