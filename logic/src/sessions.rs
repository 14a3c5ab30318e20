//! The registry of online sessions: which device of which user is connected through
//! which gateway core, and the outbound queue of every gateway link.
//!
//! This is the only place that knows where a user's devices are. It decides nothing
//! about business rules: callers ask it to admit a session under a [`LoginModel`], to
//! send a frame to a user's devices, or to close sessions. Frames are encoded by the
//! caller once and wrapped once per gateway core here.

use std::collections::HashMap;
use std::sync::Mutex;

use tern_schema::client::KickReason;
use tern_schema::encode;
use tern_schema::link::ConnRef;
use tern_storage::{AppId, UserId};
use tokio::sync::mpsc;

use crate::apps::LoginModel;
use crate::user_key::{UserKeyRef, UserMap};

/// (gateway id, core): one link connection.
pub type LinkKey = (u32, u16);

/// Bytes queued towards one gateway core. Bounded so a stuck gateway cannot make logic
/// grow without limit; when full, frames for that core are dropped (devices catch up by
/// seq) and counted.
pub type LinkSender = mpsc::Sender<Vec<u8>>;

/// One online device.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub conn: ConnRef,
    pub client_type: u8,
    /// Shared: every client frame of the connection looks the session up and keeps the
    /// device id across its awaits (a refcount, not a copy).
    pub device_id: std::sync::Arc<str>,
    pub session_id: u64,
    pub since_ms: u64,
}

/// Who gets the muted variant of a frame, and that variant (`send_to_members_muted`).
pub type MutedFrame<'a> = (&'a dyn Fn(&UserId) -> bool, &'a [u8]);

fn link_of(c: &ConnRef) -> LinkKey {
    (c.gateway_id(), c.core())
}

fn same_conn(a: &ConnRef, b: &ConnRef) -> bool {
    a.gateway_id() == b.gateway_id() && a.core() == b.core() && a.slot() == b.slot() && a.generation() == b.generation()
}

type ConnKey = (u32, u16, u32);

fn conn_key(c: &ConnRef) -> ConnKey {
    (c.gateway_id(), c.core(), c.slot())
}

struct Link {
    sender: LinkSender,
    /// Distinguishes a reconnected link from the one it replaced.
    epoch: u64,
    /// Connections that missed a frame because this link's queue was full. They are
    /// kicked (SlowConsumer) as soon as the queue has room, so they reconnect and pull:
    /// a device is never left believing it saw everything when a push was dropped.
    stale: Vec<ConnRef>,
}

/// Online sessions by user, looked up by borrowed key (one lookup per push, one per
/// member of a group fan-out, none copying a user id).
type ByUser = UserMap<Vec<Session>>;

#[derive(Default)]
struct Inner {
    by_user: ByUser,
    /// Each live connection's user and session (the same `Session` as in `by_user`):
    /// every forwarded client frame looks its connection up here, once.
    by_conn: HashMap<ConnKey, (AppId, UserId, Session)>,
    links: HashMap<LinkKey, Link>,
    next_epoch: u64,
}

/// Outcome of [`Sessions::admit`].
#[derive(Debug, Default)]
pub struct Admission {
    /// Sessions the new login replaced; they have been removed and sent a Kick.
    pub kicked: Vec<Session>,
}

/// The registry. Cheap operations under one mutex: the logic tier's session changes are
/// logins and logouts, not messages, and a message fan-out holds it only to copy targets.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the link of one gateway core. Returns its epoch, needed to unregister.
    pub fn register_link(&self, key: LinkKey, sender: LinkSender) -> u64 {
        let mut g = self.lock();
        g.next_epoch += 1;
        let epoch = g.next_epoch;
        if g.links.insert(key, Link { sender, epoch, stale: Vec::new() }).is_some() {
            tracing::info!(gateway = key.0, core = key.1, "gateway link replaced by a new connection");
        }
        epoch
    }

    /// Forgets a link (if it is still the one registered with `epoch`) and every session
    /// on it: the gateway re-registers live sessions when it reconnects.
    pub fn unregister_link(&self, key: LinkKey, epoch: u64) -> usize {
        let mut g = self.lock();
        if g.links.get(&key).is_some_and(|l| l.epoch == epoch) {
            g.links.remove(&key);
        } else {
            return 0;
        }
        let mut removed = 0;
        g.by_user.retain(|_, list| {
            let before = list.len();
            list.retain(|s| link_of(&s.conn) != key);
            removed += before - list.len();
            !list.is_empty()
        });
        g.by_conn.retain(|k, _| (k.0, k.1) != key);
        metrics::gauge!("tern_sessions_online").decrement(removed as f64);
        removed
    }

    /// Admits a new session of a user, replacing the sessions `model` says it replaces
    /// (unless `resume`: a re-registration after a link reconnect replaces nobody).
    /// Replaced sessions are removed and sent a Kick followed by a close.
    pub fn admit(&self, app: AppId, user: &UserId, session: Session, model: LoginModel, resume: bool) -> Admission {
        let mut g = self.lock();
        let mut kicked = Vec::new();
        let key = (app, user.clone());
        let list = g.by_user.entry(key.clone()).or_default();
        if !resume {
            let new = (session.client_type, &*session.device_id);
            let mut i = 0;
            while i < list.len() {
                if model.replaces(new, (list[i].client_type, &list[i].device_id)) {
                    kicked.push(list.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // A re-registered or reused slot must not leave a stale entry behind.
        list.retain(|s| conn_key(&s.conn) != conn_key(&session.conn));
        let ck = conn_key(&session.conn);
        list.push(session.clone());
        // The kicked first: one of them may have held this very slot (its close not yet
        // arrived when the slot's next connection logged in).
        for k in &kicked {
            g.by_conn.remove(&conn_key(&k.conn));
        }
        g.by_conn.insert(ck, (app, user.clone(), session));
        let frame = encode::kick(KickReason::ReplacedByNewLogin, "another login of this user replaced this device");
        for k in &kicked {
            send_locked(&mut g, link_of(&k.conn), encode::link_close(&k.conn, &frame), &[]);
        }
        metrics::gauge!("tern_sessions_online").increment(1.0 - kicked.len() as f64);
        Admission { kicked }
    }

    /// Removes a closed session. Returns its user if it was registered.
    pub fn close(&self, conn: &ConnRef) -> Option<(AppId, UserId)> {
        let mut g = self.lock();
        let ck = conn_key(conn);
        match g.by_conn.get(&ck) {
            Some((_, _, s)) if s.conn.generation() == conn.generation() => {}
            _ => return None,
        }
        let (app, user, _) = g.by_conn.remove(&ck)?;
        let key = (app, user);
        if let Some(list) = g.by_user.get_mut(&key) {
            list.retain(|s| !same_conn(&s.conn, conn));
            if list.is_empty() {
                g.by_user.remove(&key);
            }
        }
        metrics::gauge!("tern_sessions_online").decrement(1.0);
        Some(key)
    }

    /// The user and device behind a live connection (generation-checked).
    pub fn session_of(&self, conn: &ConnRef) -> Option<(AppId, UserId, Session)> {
        let g = self.lock();
        let (app, user, session) = g.by_conn.get(&conn_key(conn))?;
        (session.conn.generation() == conn.generation()).then(|| (*app, user.clone(), session.clone()))
    }

    /// The online devices of a user.
    pub fn devices(&self, app: AppId, user: &UserId) -> Vec<Session> {
        self.lock().by_user.get(&UserKeyRef(app, user.as_str())).cloned().unwrap_or_default()
    }

    /// Number of online sessions.
    pub fn len(&self) -> usize {
        self.lock().by_conn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends a complete client frame to every online device of `user` except `except`.
    /// The frame is wrapped once per gateway core. Returns how many devices it targeted.
    pub fn send_to_user(&self, app: AppId, user: &UserId, frame: &[u8], except: Option<&ConnRef>) -> usize {
        let mut g = self.lock();
        let Some(list) = g.by_user.get(&UserKeyRef(app, user.as_str())) else { return 0 };
        let mut per_link: Vec<(LinkKey, Vec<ConnRef>)> = Vec::new();
        for s in list {
            if except.is_some_and(|e| same_conn(e, &s.conn)) {
                continue;
            }
            let lk = link_of(&s.conn);
            match per_link.iter_mut().find(|(k, _)| *k == lk) {
                Some((_, v)) => v.push(s.conn),
                None => per_link.push((lk, vec![s.conn])),
            }
        }
        let mut n = 0;
        for (lk, mut conns) in per_link {
            n += conns.len();
            skip_stale(&g, lk, &mut conns);
            if !conns.is_empty() {
                send_locked(&mut g, lk, encode::link_deliver(&conns, frame), &conns);
            }
        }
        n
    }

    /// Sends a complete client frame to every online device of the users `is_target`
    /// accepts (a group's members), except `except`: ONE Deliver per gateway core for
    /// all of them, so the frame is wrapped once per core, not once per member. Walks
    /// whichever is smaller — the `candidates` (every member) or the online users — so
    /// the cost is O(min(members, online users)), never a lookup per offline member
    /// of a large group when few users are online. Returns how many devices it targeted.
    pub fn send_to_members<'a>(
        &self,
        app: AppId,
        candidates: impl ExactSizeIterator<Item = &'a UserId>,
        is_target: impl Fn(&UserId) -> bool,
        frame: &[u8],
        except: Option<&ConnRef>,
    ) -> usize {
        self.send_to_members_muted(app, candidates, is_target, frame, None, except)
    }

    /// [`Sessions::send_to_members`], with the members `muted` accepts getting
    /// `muted_frame` instead (conversations: the same Push with `silent` set). A core
    /// with devices of both kinds gets two Delivers; a core with only one kind, one.
    pub fn send_to_members_muted<'a>(
        &self,
        app: AppId,
        candidates: impl ExactSizeIterator<Item = &'a UserId>,
        is_target: impl Fn(&UserId) -> bool,
        frame: &[u8],
        muted: Option<MutedFrame<'_>>,
        except: Option<&ConnRef>,
    ) -> usize {
        let mut g = self.lock();
        // Per link: the devices of the frame, and of the muted frame.
        let mut per_link: Vec<(LinkKey, Vec<ConnRef>, Vec<ConnRef>)> = Vec::new();
        let mut add = |u: &UserId, list: &Vec<Session>| {
            let quiet = muted.is_some_and(|(is_muted, _)| is_muted(u));
            for s in list {
                if except.is_some_and(|e| same_conn(e, &s.conn)) {
                    continue;
                }
                let lk = link_of(&s.conn);
                let i = match per_link.iter().position(|(k, _, _)| *k == lk) {
                    Some(i) => i,
                    None => {
                        per_link.push((lk, Vec::new(), Vec::new()));
                        per_link.len() - 1
                    }
                };
                if quiet {
                    per_link[i].2.push(s.conn);
                } else {
                    per_link[i].1.push(s.conn);
                }
            }
        };
        if candidates.len() <= g.by_user.len() {
            for u in candidates {
                if let Some(list) = g.by_user.get(&UserKeyRef(app, u.as_str())) {
                    add(u, list);
                }
            }
        } else {
            for ((a, u), list) in &g.by_user {
                if *a == app && is_target(u) {
                    add(u, list);
                }
            }
        }
        let mut n = 0;
        for (lk, conns, quiet) in per_link {
            for (mut conns, frame) in [(conns, frame), (quiet, muted.map_or(frame, |(_, f)| f))] {
                n += conns.len();
                skip_stale(&g, lk, &mut conns);
                if !conns.is_empty() {
                    send_locked(&mut g, lk, encode::link_deliver(&conns, frame), &conns);
                }
            }
        }
        n
    }

    /// Sends `frame` to one connection, then closes it; forgets the session.
    pub fn close_with(&self, conn: &ConnRef, frame: &[u8]) {
        self.close(conn);
        let mut g = self.lock();
        send_locked(&mut g, link_of(conn), encode::link_close(conn, frame), &[]);
    }

    /// Kicks every session of a user with `reason`. Returns how many were kicked.
    pub fn kick_user(&self, app: AppId, user: &UserId, reason: KickReason, message: &str) -> usize {
        let frame = encode::kick(reason, message);
        let devices = self.devices(app, user);
        for d in &devices {
            self.close_with(&d.conn, &frame);
        }
        devices.len()
    }

    /// Kicks the connections that missed frames on a full link queue, as far as the
    /// queues now have room. Called periodically; returns how many were kicked.
    pub fn repair_stale(&self) -> usize {
        let mut g = self.lock();
        let frame =
            encode::kick(KickReason::SlowConsumer, "frames were dropped for this connection; reconnect and pull");
        let mut kicked = Vec::new();
        for link in g.links.values_mut() {
            while let Some(conn) = link.stale.last().copied() {
                if link.sender.try_send(encode::link_close(&conn, &frame)).is_err() {
                    break;
                }
                link.stale.pop();
                kicked.push(conn);
            }
        }
        drop(g);
        for conn in &kicked {
            self.close(conn);
            metrics::counter!("tern_kicks_total", "reason" => "link_overflow").increment(1);
        }
        kicked.len()
    }
}

/// Most connections remembered as stale per link; past it the link is hopeless and is
/// better reset by the gateway's reconnect.
const MAX_STALE_PER_LINK: usize = 1 << 20;

/// Leaves out of `conns` the connections that already missed a frame on this link: a
/// later frame must not reach them before their kick (a client that saw it and acked it
/// would resume past the frame it never got). Costs nothing while the link has no stale
/// connection.
fn skip_stale(g: &Inner, link: LinkKey, conns: &mut Vec<ConnRef>) {
    if let Some(l) = g.links.get(&link).filter(|l| !l.stale.is_empty()) {
        conns.retain(|c| !l.stale.iter().any(|s| same_conn(s, c)));
    }
}

fn send_locked(g: &mut Inner, link: LinkKey, link_frame: Vec<u8>, affected: &[ConnRef]) {
    match g.links.get_mut(&link) {
        Some(l) => {
            if l.sender.try_send(link_frame).is_err() {
                metrics::counter!("tern_link_frames_dropped_total").increment(1);
                tracing::warn!(
                    gateway = link.0,
                    core = link.1,
                    "link queue full; affected devices will be kicked to resync"
                );
                for c in affected {
                    if l.stale.len() < MAX_STALE_PER_LINK && !l.stale.iter().any(|s| same_conn(s, c)) {
                        l.stale.push(*c);
                    }
                }
            }
        }
        None => {
            metrics::counter!("tern_link_frames_dropped_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_schema::frame::{parse_link, HEADER_LEN};

    fn session(core: u16, slot: u32, client_type: u8, device: &str) -> Session {
        Session {
            conn: ConnRef::new(1, core, slot, 1),
            client_type,
            device_id: device.into(),
            session_id: slot as u64,
            since_ms: 0,
        }
    }

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn admit_kicks_per_policy_and_sends_close() {
        let s = Sessions::new();
        let (tx, mut rx) = mpsc::channel(16);
        s.register_link((1, 0), tx);
        let app = AppId(1);
        assert!(s.admit(app, &user("a"), session(0, 1, 1, "phone"), LoginModel::OneDevice, false).kicked.is_empty());
        let adm = s.admit(app, &user("a"), session(0, 2, 3, "web"), LoginModel::OneDevice, false);
        assert_eq!(adm.kicked.len(), 1);
        assert_eq!(&*adm.kicked[0].device_id, "phone");
        let f = rx.try_recv().unwrap();
        let close = parse_link(&f[HEADER_LEN..]).unwrap();
        assert_eq!(close.body_as_close().unwrap().conn().unwrap().slot(), 1);
        assert_eq!(s.devices(app, &user("a")).len(), 1);
    }

    /// The slot's previous connection is gone but its close has not arrived when the
    /// slot's next connection logs in as the same device: the old session is replaced,
    /// and the new one is the connection's session (its frames are served).
    #[test]
    fn a_login_on_a_reused_slot_replacing_its_old_session_keeps_the_new_one() {
        let s = Sessions::new();
        let (tx, _rx) = mpsc::channel(16);
        s.register_link((1, 0), tx);
        let app = AppId(1);
        s.admit(app, &user("a"), session(0, 5, 1, "phone"), LoginModel::OneDevice, false);
        let mut next = session(0, 5, 1, "phone");
        next.conn = ConnRef::new(1, 0, 5, 2);
        let adm = s.admit(app, &user("a"), next, LoginModel::OneDevice, false);
        assert_eq!(adm.kicked.len(), 1, "the old session is replaced");
        let (_, who, got) = s.session_of(&ConnRef::new(1, 0, 5, 2)).expect("the new connection has its session");
        assert_eq!((who.as_str(), got.conn.generation()), ("a", 2));
        assert!(s.session_of(&ConnRef::new(1, 0, 5, 1)).is_none(), "the old generation has none");
        assert_eq!(s.devices(app, &user("a")).len(), 1);
        assert!(s.close(&ConnRef::new(1, 0, 5, 1)).is_none(), "the late close of the old one closes nothing");
        assert!(s.close(&ConnRef::new(1, 0, 5, 2)).is_some());
        assert!(s.is_empty() && s.devices(app, &user("a")).is_empty());
    }

    #[test]
    fn close_checks_generation() {
        let s = Sessions::new();
        let app = AppId(1);
        s.admit(app, &user("a"), session(0, 1, 1, "p"), LoginModel::Unlimited, false);
        assert!(s.close(&ConnRef::new(1, 0, 1, 2)).is_none(), "stale generation must not close");
        assert!(s.close(&ConnRef::new(1, 0, 1, 1)).is_some());
        assert!(s.is_empty());
    }

    /// A registry linked to two cores of gateway 1, with what each core's link receives.
    fn two_cores() -> (Sessions, mpsc::Receiver<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
        let s = Sessions::new();
        let (tx0, rx0) = mpsc::channel(16);
        let (tx1, rx1) = mpsc::channel(16);
        s.register_link((1, 0), tx0);
        s.register_link((1, 1), tx1);
        (s, rx0, rx1)
    }

    /// The Delivers a link received so far: (connections targeted, client frame) each.
    fn deliveries(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<(usize, Vec<u8>)> {
        let mut got = Vec::new();
        while let Ok(d) = rx.try_recv() {
            let l = parse_link(&d[HEADER_LEN..]).unwrap();
            let d = l.body_as_deliver().unwrap();
            got.push((d.conns().unwrap().len(), d.frame().unwrap().bytes().to_vec()));
        }
        got
    }

    #[test]
    fn send_to_user_groups_by_core_and_skips_except() {
        let (s, mut rx0, mut rx1) = two_cores();
        let app = AppId(7);
        let a = user("a");
        s.admit(app, &a, session(0, 1, 1, "p"), LoginModel::Unlimited, false);
        s.admit(app, &a, session(0, 2, 3, "w"), LoginModel::Unlimited, false);
        s.admit(app, &a, session(1, 3, 5, "m"), LoginModel::Unlimited, false);
        let frame = encode::ping(0, 1);
        let n = s.send_to_user(app, &a, &frame, Some(&ConnRef::new(1, 0, 2, 1)));
        assert_eq!(n, 2);
        // One Deliver per core; core 0 without the excepted connection.
        assert_eq!(deliveries(&mut rx0), [(1, frame.clone())]);
        assert_eq!(deliveries(&mut rx1), [(1, frame)]);
    }

    #[test]
    fn members_who_muted_get_the_muted_frame_in_one_more_deliver_per_core() {
        let (s, mut rx0, mut rx1) = two_cores();
        let app = AppId(7);
        let (a, b, c) = (user("a"), user("b"), user("c"));
        s.admit(app, &a, session(0, 1, 1, "p"), LoginModel::Unlimited, false);
        s.admit(app, &b, session(0, 2, 1, "p"), LoginModel::Unlimited, false);
        s.admit(app, &b, session(0, 4, 1, "w"), LoginModel::Unlimited, false);
        s.admit(app, &c, session(1, 3, 1, "p"), LoginModel::Unlimited, false);
        let members = [a.clone(), b.clone(), c.clone()];
        let (loud, quiet) = (encode::ping(0, 1), encode::ping(0, 2));
        let is_muted = |u: &UserId| u.as_str() != "a";
        let n = s.send_to_members_muted(app, members.iter(), |_| true, &loud, Some((&is_muted, &quiet)), None);
        assert_eq!(n, 4);
        // Core 0: a's device with the frame, b's two devices with the muted one.
        assert_eq!(deliveries(&mut rx0), [(1, loud.clone()), (2, quiet.clone())]);
        // Core 1: only c, muted: one Deliver.
        assert_eq!(deliveries(&mut rx1), [(1, quiet.clone())]);
        // Without mutes: one Deliver per core, as before.
        assert_eq!(s.send_to_members(app, members.iter(), |_| true, &loud, None), 4);
        assert_eq!(deliveries(&mut rx0), [(3, loud.clone())]);
        assert_eq!(deliveries(&mut rx1), [(1, loud)]);
    }

    #[test]
    fn devices_that_missed_a_frame_on_a_full_link_are_kicked_when_it_drains() {
        let s = Sessions::new();
        let (tx, mut rx) = mpsc::channel(1);
        s.register_link((1, 0), tx);
        let app = AppId(1);
        let a = user("a");
        s.admit(app, &a, session(0, 1, 1, "p"), LoginModel::Unlimited, false);
        let frame = encode::ping(0, 1);
        s.send_to_user(app, &a, &frame, None); // fills the queue
        s.send_to_user(app, &a, &frame, None); // dropped: the device is now stale
        assert_eq!(s.repair_stale(), 0, "no room yet");
        assert!(rx.try_recv().is_ok());
        assert_eq!(s.repair_stale(), 1);
        let close = rx.try_recv().unwrap();
        let close = parse_link(&close[HEADER_LEN..]).unwrap();
        let kick = close.body_as_close().unwrap().frame().unwrap().bytes().to_vec();
        let kick = tern_schema::frame::parse_client(&kick[HEADER_LEN..]).unwrap();
        assert_eq!(kick.body_as_kick().unwrap().reason(), KickReason::SlowConsumer);
        assert!(s.devices(app, &a).is_empty(), "the stale session is gone from the registry");
    }

    #[test]
    fn a_device_that_missed_a_frame_gets_no_later_frame_before_its_kick() {
        let s = Sessions::new();
        let (tx, mut rx) = mpsc::channel(2);
        s.register_link((1, 0), tx);
        let app = AppId(1);
        let (a, b) = (user("a"), user("b"));
        s.admit(app, &a, session(0, 1, 1, "p"), LoginModel::Unlimited, false);
        s.admit(app, &b, session(0, 2, 1, "p"), LoginModel::Unlimited, false);
        let frame = encode::ping(0, 1);
        s.send_to_user(app, &a, &frame, None);
        s.send_to_user(app, &a, &frame, None); // the queue is full now
        s.send_to_user(app, &a, &frame, None); // dropped: a is stale
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        // Room again: a later frame for a is held back, b's goes through.
        s.send_to_user(app, &a, &frame, None);
        assert!(rx.try_recv().is_err(), "a frame after the gap reached the stale device");
        s.send_to_user(app, &b, &frame, None);
        let d = rx.try_recv().unwrap();
        let d = parse_link(&d[HEADER_LEN..]).unwrap();
        assert_eq!(d.body_as_deliver().unwrap().conns().unwrap().get(0).slot(), 2);
        // The kick then goes out and the device is forgotten.
        assert_eq!(s.repair_stale(), 1);
        assert!(s.devices(app, &a).is_empty());
    }

    #[test]
    fn unregister_link_drops_its_sessions_only() {
        let s = Sessions::new();
        let (tx0, _rx0) = mpsc::channel(16);
        let (tx1, _rx1) = mpsc::channel(16);
        let e0 = s.register_link((1, 0), tx0);
        s.register_link((1, 1), tx1);
        let app = AppId(1);
        s.admit(app, &user("a"), session(0, 1, 1, "p"), LoginModel::Unlimited, false);
        s.admit(app, &user("b"), session(1, 2, 1, "p"), LoginModel::Unlimited, false);
        assert_eq!(s.unregister_link((1, 0), e0 + 100), 0, "wrong epoch is ignored");
        assert_eq!(s.unregister_link((1, 0), e0), 1);
        assert_eq!(s.len(), 1);
        assert!(s.devices(app, &user("a")).is_empty());
    }
}
