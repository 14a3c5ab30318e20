//! Batched login admission: every `SessionOpen` a link reader finds in one read turn is
//! checked and admitted together.
//!
//! A login needs the user's record (exists, not deleted, not disabled), the user's seq
//! bounds (the LoginAck's `max_seqs`, and the allocator's state for the first send),
//! the device's acks (`acked_seqs`) and, for the send path, the user's friend view. One
//! at a time that was three or more store reads per login, each a hop to the blocking
//! pool and back; a link then admitted one login per few hundred microseconds however
//! idle the store was. Here a batch costs ONE store trip ([`Store::read_many`]) for
//! whatever is not in memory already, then one pass that fills the caches, decides
//! every login and admits it — in arrival order, so the rules are exactly those of one
//! login at a time (a second login of the same device in one batch replaces the first,
//! whose LoginAck went out just before its Kick).
//!
//! The friend views are not on that path: no LoginAck needs them, so the batch's
//! answers go out first and the views of the admitted users that are not in memory
//! load afterwards in one store trip of their own ([`warm_friend_views`]) — three of a
//! first login's six reads, which the link reader no longer waits for.
//!
//! Limits: a link's batch holds at most `link.max_logins_per_batch` logins (the reader
//! runs it when full), and the node admits at most `link.max_logins_in_flight` new
//! logins at once over all links; past it a login is refused at once with 80009 (retry
//! with backoff) instead of queueing into the client's login deadline. Resumes (a
//! gateway re-registering live sessions after a link reconnect) are never refused for
//! load: refusing one would end a session that is already up.
//!
//! [`Store::read_many`]: tern_storage::Store::read_many

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tern_schema::client::{self, SyncKind as WireKind};
use tern_schema::codes;
use tern_schema::encode::{self, LoginAckParts};
use tern_schema::link::{self, ConnRef};
use tern_storage::{AppId, Owner, Read, ReadAnswer, Seq, StoreError, SyncKind, UserId};
use tokio::sync::mpsc;

use crate::friends::view::{View, LOAD_PAGE, VIEW_KINDS};
use crate::user_cache::UserState;
use crate::{now_ms, Logic};

/// Default of `link.max_logins_per_batch`: one store trip reads for this many logins
/// (~6 point reads each for a first login, a few ms of engine time in all).
pub const DEFAULT_MAX_LOGINS_PER_BATCH: usize = 512;
/// Default of `link.max_logins_in_flight`: new logins being admitted at once, all links
/// together. About half a second of logins at the measured capacity: more would wait
/// towards the 5 s login deadline instead of being refused while a retry can succeed.
pub const DEFAULT_MAX_LOGINS_IN_FLIGHT: usize = 16_384;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// The node-wide bound on new logins being admitted. Two relaxed atomics per batch.
#[derive(Debug)]
pub struct LoginLimit {
    in_flight: AtomicUsize,
    max: usize,
}

impl LoginLimit {
    pub fn new(max: usize) -> Self {
        Self { in_flight: AtomicUsize::new(0), max: max.max(1) }
    }

    /// Takes room for up to `want` logins; returns how many got room.
    fn acquire(&self, want: usize) -> usize {
        let mut granted = 0;
        let _ = self.in_flight.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            granted = want.min(self.max.saturating_sub(n));
            Some(n + granted)
        });
        granted
    }

    fn release(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
    }

    /// New logins being admitted now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Room taken in a [`LoginLimit`], given back however the batch ends.
struct Grant<'a>(&'a LoginLimit, usize);

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// One `SessionOpen`, owned: the link reader reuses its buffer for the next frame.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginRequest {
    pub conn: ConnRef,
    pub app: AppId,
    pub user_id: String,
    pub device_id: String,
    pub client_type: u8,
    pub request_id: u32,
    /// A re-registration after a link reconnect: no LoginAck, replaces nobody.
    pub resume: bool,
}

impl LoginRequest {
    /// `None` if the frame has no connection reference (a protocol error of the link).
    pub fn from_open(open: &link::SessionOpen<'_>) -> Option<Self> {
        Some(Self {
            conn: *open.conn()?,
            app: AppId(open.app_id()),
            user_id: open.user_id().unwrap_or_default().to_owned(),
            device_id: open.device_id().unwrap_or_default().to_owned(),
            client_type: open.client_type(),
            request_id: open.request_id(),
            resume: open.resume(),
        })
    }
}

/// The logins of one link waiting to be admitted together.
#[derive(Debug, Default)]
pub struct LoginBatch {
    items: Vec<LoginRequest>,
    resumes: usize,
}

/// What the batch's store trip brings for one user (each user once per batch).
#[derive(Default)]
struct UserReads {
    /// From the user cache, or filled from the read.
    state: Option<UserState>,
    /// (index of the app's `Read::Users`, position in it).
    user_at: Option<(usize, usize)>,
    bounds_at: Option<usize>,
    /// The conversation flags (mutes: `Push.silent` from the first push).
    flags_at: Option<usize>,
    /// The friend view is not in memory: warmed after the batch is answered.
    warm_friends: bool,
    /// The user has no conversation-flags entry (mutes set by a build before it
    /// existed): rebuilt from their conversation records after the batch is answered.
    rebuild_flags: bool,
    /// A read this user needs failed: its logins get 90000.
    failed: bool,
}

/// One login past the cheap checks.
struct Checked {
    req: LoginRequest,
    user: UserId,
    model: crate::apps::LoginModel,
    acks_at: Option<usize>,
}

impl LoginBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, req: LoginRequest) {
        self.resumes += usize::from(req.resume);
        self.items.push(req);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether a resume waits here: its connection is live at the gateway and may
    /// already have sent frames behind it, so those must wait for the batch.
    pub fn has_resume(&self) -> bool {
        self.resumes > 0
    }

    /// Admits (or refuses) every login of the batch and queues the answers on `tx`;
    /// leaves the batch empty.
    pub async fn run(&mut self, logic: &Arc<Logic>, tx: &mpsc::Sender<Vec<u8>>) {
        let items = std::mem::take(&mut self.items);
        self.resumes = 0;
        if items.is_empty() {
            return;
        }
        metrics::histogram!("tern_login_batch_size").record(items.len() as f64);
        let started = std::time::Instant::now();
        let mut late: Vec<Vec<u8>> = Vec::new();
        admit_batch(logic, tx, items, &mut late).await;
        metrics::histogram!("tern_login_batch_seconds").record(started.elapsed().as_secs_f64());
        // Answers that did not fit the link queue: wait for room (backpressure onto
        // the reader, as for every other frame of the link).
        for frame in late {
            crate::link::send(tx, frame).await;
        }
    }
}

/// Queues `frame` on the link, or keeps it in `late` if the queue is full.
fn queue(tx: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>, late: &mut Vec<Vec<u8>>) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
        late.push(frame);
    }
}

/// The answer refusing `req`: an Error for a login, a Kick and close for a resume.
fn refusal(req: &LoginRequest, code: u32, msg: &str) -> Vec<u8> {
    if req.resume {
        let kick = encode::kick(client::KickReason::UserDeleted, msg);
        encode::link_close(&req.conn, &kick)
    } else {
        metrics::counter!("tern_logins_refused_total", "code" => code.to_string()).increment(1);
        encode::link_session_opened(&req.conn, false, &encode::error(req.request_id, code, msg))
    }
}

async fn admit_batch(
    logic: &Arc<Logic>,
    tx: &mpsc::Sender<Vec<u8>>,
    items: Vec<LoginRequest>,
    late: &mut Vec<Vec<u8>>,
) {
    // 1. Room and the checks that need no store.
    let new_logins = items.iter().filter(|r| !r.resume).count();
    let grant = Grant(&logic.logins, logic.logins.acquire(new_logins));
    let mut room = grant.1;
    let mut checked: Vec<Checked> = Vec::with_capacity(items.len());
    for req in items {
        if !req.resume {
            if room == 0 {
                let msg = "server busy: too many logins in progress; retry with backoff";
                queue(tx, refusal(&req, codes::SERVICE_UNAVAILABLE, msg), late);
                continue;
            }
            room -= 1;
        }
        let Some(app_cfg) = logic.apps.get(req.app) else {
            queue(tx, refusal(&req, codes::SIGN_BAD_APP, "unknown app"), late);
            continue;
        };
        let Ok(user) = UserId::new(&req.user_id) else {
            queue(tx, refusal(&req, codes::INVALID_FIELD, "user_id: invalid"), late);
            continue;
        };
        if app_cfg.admins.iter().any(|a| a == user.as_str()) {
            // Admin identifiers are never users (import refuses them); one imported
            // before that rule must not log in: its signature doubles as an admin
            // credential.
            let msg = "user_id: an admin identifier of this app cannot log in";
            queue(tx, refusal(&req, codes::INVALID_FIELD, msg), late);
            continue;
        }
        checked.push(Checked { req, user, model: app_cfg.login_model, acks_at: None });
    }
    if checked.is_empty() {
        return;
    }

    // 2. One store trip for everything not in memory.
    let user_epoch = logic.user_cache.epoch();
    let mut reads: Vec<Read> = Vec::new();
    let mut users: HashMap<(AppId, UserId), UserReads> = HashMap::with_capacity(checked.len());
    // The users' seq states stay in memory until their LoginAcks are out (eviction
    // skips pinned states): the max seqs reported come from them.
    let mut pins = logic.seqs.pins();
    let mut user_lists: Vec<(AppId, Vec<UserId>)> = Vec::new();
    for c in &mut checked {
        let app = c.req.app;
        users.entry((app, c.user.clone())).or_insert_with(|| {
            let mut u = UserReads { state: logic.user_cache.get(app, &c.user), ..UserReads::default() };
            if u.state.is_none() {
                let li = match user_lists.iter().position(|(a, _)| *a == app) {
                    Some(i) => i,
                    None => {
                        user_lists.push((app, Vec::new()));
                        user_lists.len() - 1
                    }
                };
                u.user_at = Some((li, user_lists[li].1.len()));
                user_lists[li].1.push(c.user.clone());
            }
            if !pins.pin(&logic.seqs, app, &c.user) {
                u.bounds_at = Some(reads.len());
                reads.push(Read::SeqBounds { app, owner: Owner::User(c.user.clone()) });
            }
            if !logic.conversations.flags.has(app, &c.user) {
                u.flags_at = Some(reads.len());
                let (owner, kind) = (Owner::User(c.user.clone()), SyncKind::ConversationFlags);
                reads.push(Read::Log { app, owner, kind, after: Seq::ZERO, limit: 1 });
            }
            if logic.friends.needs_load(app, &c.user) {
                u.warm_friends = true;
            }
            u
        });
        if !c.req.resume {
            c.acks_at = Some(reads.len());
            reads.push(Read::DeviceAcks { app, user: c.user.clone(), device_id: c.req.device_id.clone() });
        }
    }
    let users_base = reads.len();
    for (app, ids) in &user_lists {
        reads.push(Read::Users { app: *app, ids: ids.clone() });
    }
    let mut answers: Vec<Option<Result<ReadAnswer, StoreError>>> = if reads.is_empty() {
        Vec::new()
    } else {
        match logic.store.read_many(reads).await {
            Ok(a) => a.into_iter().map(Some).collect(),
            Err(e) => {
                tracing::error!(error = %e, "store read failed during login");
                for c in &checked {
                    queue(tx, refusal(&c.req, codes::INTERNAL, "internal error"), late);
                }
                return;
            }
        }
    };

    // 3. Fill the caches (user states, seq state, friend views) from what was read.
    let mut filled: Vec<(AppId, UserId, UserState)> = Vec::new();
    for ((app, user), u) in &mut users {
        if let Some((li, pos)) = u.user_at {
            match &answers[users_base + li] {
                Some(Ok(ReadAnswer::Users(found))) => {
                    let state = found.get(pos).and_then(Option::as_ref).map_or(UserState::Missing, UserState::of);
                    u.state = Some(state);
                    filled.push((*app, user.clone(), state));
                }
                other => {
                    tracing::error!(error = ?other, "store read of a user failed during login");
                    u.failed = true;
                }
            }
        }
        if let Some(i) = u.bounds_at {
            match answers[i].take() {
                Some(Ok(ReadAnswer::SeqBounds(bounds))) => pins.install(*app, user, &bounds),
                other => {
                    tracing::error!(error = ?other, "loading seqs failed during login");
                    u.failed = true;
                }
            }
        }
        if let Some(i) = u.flags_at {
            match answers[i].take() {
                Some(Ok(ReadAnswer::Log(entries))) => {
                    u.rebuild_flags = !crate::conversations::flags::Flags::stored_in(&entries);
                    crate::conversations::install_loaded_flags(logic, *app, user, &entries)
                }
                other => {
                    tracing::error!(error = ?other, "loading conversation flags failed during login");
                    u.failed = true;
                }
            }
        }
    }
    for (app, _) in &user_lists {
        let states = filled.iter().filter(|(a, _, _)| a == app).map(|(_, u, s)| (u, *s));
        logic.user_cache.fill(*app, user_epoch, states);
    }

    // 4. Decide and admit, in arrival order.
    let mut prefetch: Vec<(AppId, &UserId)> = Vec::with_capacity(checked.len());
    for c in &checked {
        let u = &users[&(c.req.app, c.user.clone())];
        let refuse = match (u.failed, u.state) {
            (true, _) | (false, None) => Some((codes::INTERNAL, "internal error")),
            (false, Some(UserState::Missing)) => Some((codes::USER_NOT_FOUND, "no such user; import it first")),
            (false, Some(UserState::Deleted)) => Some((codes::USER_DELETED, "user was deleted")),
            (false, Some(UserState::Disabled)) => {
                Some((crate::messages::errors::SENDER_DISABLED, "user is disabled (forbiddenFlag)"))
            }
            (false, Some(UserState::Active | UserState::Muted)) => None,
        };
        if let Some((code, msg)) = refuse {
            queue(tx, refusal(&c.req, code, msg), late);
            continue;
        }
        let acked = match c.acks_at.map(|i| answers[i].take()) {
            None => Vec::new(),
            Some(Some(Ok(ReadAnswer::DeviceAcks(stored)))) => {
                crate::messages::device_acks_from(logic, c.req.app, &c.user, &c.req.device_id, stored)
            }
            Some(other) => {
                tracing::error!(error = ?other, "loading device acks failed during login");
                queue(tx, refusal(&c.req, codes::INTERNAL, "internal error"), late);
                continue;
            }
        };
        prefetch.push((c.req.app, &c.user));
        if let Some(frame) = admit(logic, tx, c, &acked) {
            late.push(frame);
        }
    }
    // The users' first sends should not wait for a bound write: one write raises them all.
    logic.seqs.prefetch_loaded(&prefetch, SyncKind::Message);
    drop(pins);
    drop(grant);
    // The admitted users' friend views (the send path's blacklist check reads them) load
    // after the answers are out, in one store trip of their own: they were half of a
    // cold login's reads, and no LoginAck needs them (a send that comes first loads the
    // view itself; `Friends::install` then keeps the one in memory).
    let admitted = |u: &UserReads| matches!(u.state, Some(UserState::Active | UserState::Muted)) && !u.failed;
    // Mutes an older build kept only in the conversation records: rebuilt into the
    // flags entry once (it is written even if empty, so this happens once per user).
    let rebuild: Vec<(AppId, UserId)> =
        users.iter().filter(|(_, u)| u.rebuild_flags && admitted(u)).map(|(k, _)| k.clone()).collect();
    if !rebuild.is_empty() {
        let logic = logic.clone();
        tokio::spawn(async move {
            for (app, user) in rebuild {
                if let Err(e) = crate::conversations::rebuild_flags(&logic, app, &user).await {
                    tracing::warn!(%user, error = %e.message(), "rebuilding conversation flags failed; retried at the next login");
                }
            }
        });
    }
    let cold: Vec<(AppId, UserId)> =
        users.into_iter().filter(|(_, u)| u.warm_friends && admitted(u)).map(|(k, _)| k).collect();
    if !cold.is_empty() {
        let logic = logic.clone();
        tokio::spawn(async move { warm_friend_views(&logic, cold).await });
    }
}

/// Loads the friend views of `users` (not in memory when their logins were admitted)
/// with ONE store trip for their first log pages.
async fn warm_friend_views(logic: &Arc<Logic>, users: Vec<(AppId, UserId)>) {
    let epoch = logic.friends.install_epoch();
    let users: Vec<(AppId, UserId)> = users.into_iter().filter(|(a, u)| logic.friends.needs_load(*a, u)).collect();
    if users.is_empty() {
        return;
    }
    let mut reads = Vec::with_capacity(users.len() * VIEW_KINDS.len());
    for (app, user) in &users {
        for kind in VIEW_KINDS {
            let owner = Owner::User(user.clone());
            reads.push(Read::Log { app: *app, owner, kind, after: Seq::ZERO, limit: LOAD_PAGE });
        }
    }
    let mut answers: Vec<Option<Result<ReadAnswer, StoreError>>> = match logic.store.read_many(reads).await {
        Ok(a) => a.into_iter().map(Some).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "reading friend logs after logins failed; the first send loads them");
            return;
        }
    };
    let n = VIEW_KINDS.len();
    for (i, (app, user)) in users.iter().enumerate() {
        warm_friends(logic, *app, user, epoch, &mut answers[i * n..(i + 1) * n]);
    }
}

/// Folds the friend-log pages read for `user` into a view and installs it; a log longer
/// than one page is loaded in the background instead, as before batching.
fn warm_friends(
    logic: &Arc<Logic>,
    app: AppId,
    user: &UserId,
    epoch: u64,
    pages: &mut [Option<Result<ReadAnswer, StoreError>>],
) {
    let mut logs: Vec<Vec<tern_storage::LogEntry>> = Vec::with_capacity(3);
    for p in pages.iter_mut() {
        match p.take() {
            Some(Ok(ReadAnswer::Log(entries))) => logs.push(entries),
            other => {
                tracing::debug!(error = ?other, "reading a friend log at login failed; the first send loads it");
                return;
            }
        }
    }
    match View::from_first_pages(app, user, [&logs[0], &logs[1], &logs[2]]) {
        Ok(Some(view)) => logic.friends.install(app, user, epoch, view),
        Ok(None) => {
            let (logic, user) = (logic.clone(), user.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::friends::warm(&logic, app, &user).await {
                    tracing::debug!(error = %e, "warming a friend view failed; the first send loads it");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "a friend log does not decode; the first send loads it"),
    }
}

/// Admits one checked login. Queues its answer on `tx`, or returns it if the link
/// queue is full.
fn admit(logic: &Arc<Logic>, tx: &mpsc::Sender<Vec<u8>>, c: &Checked, acked: &[(SyncKind, Seq)]) -> Option<Vec<u8>> {
    let (app, user, req) = (c.req.app, &c.user, &c.req);
    let session_id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let session = crate::sessions::Session {
        conn: req.conn,
        client_type: req.client_type,
        device_id: req.device_id.as_str().into(),
        session_id,
        since_ms: now_ms(),
    };
    // Admission, the watermarks the LoginAck reports and queueing the LoginAck happen
    // under the user's delivery lock, which every push of the user's messages holds: a
    // message that completes before is within `max_seqs` (the device pulls it), one that
    // completes after is pushed behind the LoginAck on this link. Otherwise a message
    // completing in between was neither reported nor pushed (the gateway drops pushes to
    // a connection whose session is not open yet) until the device's next sync.
    logic.messaging.delivery.locked(app, user, || {
        let announce = (!req.resume && logic.callbacks.has_state_change(app)).then(|| session.clone());
        let admission = logic.sessions.admit(app, user, session, c.model, req.resume);
        if let Some(s) = &announce {
            crate::callbacks::session_opened(logic, app, user, s, &admission.kicked);
        }
        for k in &admission.kicked {
            tracing::info!(device = &*k.device_id, "session replaced by a new login");
            metrics::counter!("tern_kicks_total", "reason" => "replaced").increment(1);
        }
        if req.resume {
            return None;
        }
        let max_seqs = logic.seqs.committed_all_now(app, user).unwrap_or_else(|| {
            // Cannot happen: the batch pinned the state before this. Report zeros (the
            // device syncs at its next push) rather than fail the login.
            tracing::error!(%user, "a logging-in user's seq state is not in memory");
            Vec::new()
        });
        let wire: Vec<(WireKind, u64)> = max_seqs.iter().map(|(k, s)| (WireKind(k.as_u8()), s.0)).collect();
        let acked: Vec<(WireKind, u64)> = acked.iter().map(|(k, s)| (WireKind(k.as_u8()), s.0)).collect();
        let ack = encode::login_ack(
            req.request_id,
            &LoginAckParts {
                session_id,
                server_time_ms: now_ms(),
                heartbeat_interval_ms: logic.config.heartbeat_interval_ms,
                heartbeat_timeout_ms: logic.config.heartbeat_timeout_ms,
                max_seqs: &wire,
                acked_seqs: &acked,
                max_frame_bytes: logic.config.max_frame_bytes,
            },
        );
        metrics::counter!("tern_logins_total").increment(1);
        match tx.try_send(encode::link_session_opened(&req.conn, true, &ack)) {
            Ok(()) => None,
            // A full link queue already drops pushes (and kicks their devices): send the
            // answer when there is room, outside the lock.
            Err(mpsc::error::TrySendError::Full(frame)) => Some(frame),
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_grants_what_is_left_and_takes_it_back() {
        let l = LoginLimit::new(10);
        assert_eq!(l.acquire(4), 4);
        assert_eq!(l.acquire(8), 6);
        assert_eq!(l.acquire(1), 0);
        l.release(6);
        assert_eq!(l.in_flight(), 4);
        {
            let _g = Grant(&l, l.acquire(3));
            assert_eq!(l.in_flight(), 7);
        }
        assert_eq!(l.in_flight(), 4);
    }
}
