//! Batched login admission over a real embedded store: one batch with valid and
//! invalid logins mixed, the same device twice, forbidden, deleted and unknown users,
//! and the node-wide limit refusing the excess at once with 80009.

mod support;

use std::sync::Arc;

use serde_json::json;
use support::{app_config, Harness, APP};
use tern_logic::login::{LoginBatch, LoginRequest};
use tern_logic::{Logic, LogicConfig};
use tern_schema::client::{Body, KickReason, SyncKind as WireKind};
use tern_schema::frame::{parse_client, parse_link, HEADER_LEN};
use tern_schema::link::{ConnRef, LinkBody};
use tern_storage::{AppId, Seq, SyncKind, UserId, UserRecord, WriteBatch};
use tokio::sync::mpsc;

fn harness(config: LogicConfig) -> Harness {
    Harness::new(config, vec![app_config(APP, json!({}))], None)
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// Users: alice, dave, erin (active), bob (forbiddenFlag), carol (deleted); alice's
/// phone acknowledged Message seq 7.
async fn seed(h: &Harness) {
    let app = AppId(APP);
    let mut b = WriteBatch::new();
    for u in ["alice", "dave", "erin"] {
        b.put_user(app, UserRecord::new(uid(u), 1));
    }
    let mut bob = UserRecord::new(uid("bob"), 1);
    bob.forbidden_flag = true;
    b.put_user(app, bob);
    let mut carol = UserRecord::new(uid("carol"), 1);
    carol.deleted = true;
    b.put_user(app, carol);
    b.put_device_ack(app, uid("alice"), "phone".into(), SyncKind::Message, Seq(7));
    h.store.write(b).await.unwrap();
}

fn login(slot: u32, app: u32, user: &str, device: &str, request_id: u32) -> LoginRequest {
    LoginRequest {
        conn: ConnRef::new(1, 0, slot, 1),
        app: AppId(app),
        user_id: user.into(),
        device_id: device.into(),
        client_type: 3,
        request_id,
        resume: false,
    }
}

/// What the link carried back, in order.
#[derive(Debug, PartialEq)]
enum Out {
    /// SessionOpened ok with a LoginAck: (slot, request id, acked Message seq).
    Ack(u32, u32, u64),
    /// SessionOpened refused with an Error: (slot, request id, code).
    Refused(u32, u32, u32),
    /// Close with a Kick: (slot, reason).
    Kick(u32, KickReason),
}

fn drain(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<Out> {
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let f = parse_link(&f[HEADER_LEN..]).unwrap();
        match f.body_type() {
            LinkBody::SessionOpened => {
                let o = f.body_as_session_opened().unwrap();
                let slot = o.conn().unwrap().slot();
                let c = parse_client(&o.frame().unwrap().bytes()[HEADER_LEN..]).unwrap();
                match c.body_type() {
                    Body::LoginAck => {
                        assert!(o.ok());
                        let ack = c.body_as_login_ack().unwrap();
                        let acked = ack
                            .acked_seqs()
                            .map(|v| v.iter().find(|k| k.kind() == WireKind::Message).map_or(0, |k| k.seq()))
                            .unwrap_or(0);
                        out.push(Out::Ack(slot, c.request_id(), acked));
                    }
                    Body::Error => {
                        assert!(!o.ok());
                        out.push(Out::Refused(slot, c.request_id(), c.body_as_error().unwrap().code()));
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            LinkBody::Close => {
                let cl = f.body_as_close().unwrap();
                let c = parse_client(&cl.frame().unwrap().bytes()[HEADER_LEN..]).unwrap();
                out.push(Out::Kick(cl.conn().unwrap().slot(), c.body_as_kick().unwrap().reason()));
            }
            other => panic!("unexpected link frame {other:?}"),
        }
    }
    out
}

fn link(logic: &Arc<Logic>) -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel(1024);
    logic.sessions.register_link((1, 0), tx.clone());
    (tx, rx)
}

#[tokio::test]
async fn one_batch_applies_every_login_rule_in_arrival_order() {
    let h = harness(LogicConfig::default());
    seed(&h).await;
    let (tx, mut rx) = link(&h.logic);
    let mut batch = LoginBatch::new();
    for req in [
        login(1, APP, "alice", "phone", 11),
        login(2, APP, "ghost", "phone", 12),
        login(3, APP, "bob", "phone", 13),
        login(4, APP, "carol", "phone", 14),
        // The same device again in the same batch: it replaces the first.
        login(5, APP, "alice", "phone", 15),
        login(6, 99, "alice", "phone", 16),
        login(7, APP, "admin", "phone", 17),
        login(8, APP, "has space", "phone", 18),
        login(9, APP, "dave", "tablet", 19),
    ] {
        batch.push(req);
    }
    assert_eq!(batch.len(), 9);
    batch.run(&h.logic, &tx).await;
    assert!(batch.is_empty());
    let mut out = drain(&mut rx);
    // Refusals of the cheap checks go out before the store trip's answers; the order
    // that matters is per connection: slot 1's LoginAck before its Kick.
    let kick_at = out.iter().position(|o| *o == Out::Kick(1, KickReason::ReplacedByNewLogin)).expect("slot 1 kicked");
    let ack_at = out.iter().position(|o| *o == Out::Ack(1, 11, 7)).expect("slot 1 acked");
    assert!(ack_at < kick_at, "{out:?}");
    out.sort_by_key(|o| match o {
        Out::Ack(s, ..) | Out::Refused(s, ..) => (*s, 0),
        Out::Kick(s, _) => (*s, 1),
    });
    assert_eq!(
        out,
        vec![
            Out::Ack(1, 11, 7),
            Out::Kick(1, KickReason::ReplacedByNewLogin),
            Out::Refused(2, 12, 20001),
            Out::Refused(3, 13, 50003),
            Out::Refused(4, 14, 20002),
            Out::Ack(5, 15, 7),
            Out::Refused(6, 16, 60001),
            Out::Refused(7, 17, 80010),
            Out::Refused(8, 18, 80010),
            Out::Ack(9, 19, 0),
        ]
    );
    let app = AppId(APP);
    let alice = h.logic.sessions.devices(app, &uid("alice"));
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].conn.slot(), 5);
    assert_eq!(h.logic.sessions.devices(app, &uid("dave")).len(), 1);
    assert_eq!(h.logic.sessions.len(), 2);
    // What the trip read is in memory now: the next logins of these users read only
    // their device acks.
    assert!(h.logic.seqs.is_loaded(app, &uid("alice")) && h.logic.seqs.is_loaded(app, &uid("dave")));
    assert_eq!(h.logic.user_cache.get(app, &uid("alice")), Some(tern_logic::user_cache::UserState::Active));
    assert_eq!(h.logic.user_cache.get(app, &uid("bob")), Some(tern_logic::user_cache::UserState::Disabled));
    assert_eq!(h.logic.user_cache.get(app, &uid("ghost")), None, "missing users are never cached");

    // A forbidden user stays refused when its state comes from the cache.
    batch.push(login(20, APP, "bob", "phone", 30));
    batch.push(login(21, APP, "alice", "web", 31));
    batch.run(&h.logic, &tx).await;
    let mut out = drain(&mut rx);
    out.sort_by_key(|o| match o {
        Out::Ack(s, ..) | Out::Refused(s, ..) | Out::Kick(s, _) => *s,
    });
    assert_eq!(out, vec![Out::Refused(20, 30, 50003), Out::Ack(21, 31, 0)]);
    assert_eq!(h.logic.sessions.devices(app, &uid("alice")).len(), 2, "login model 4: another device stays");
}

#[tokio::test]
async fn past_the_node_limit_logins_are_refused_at_once_but_resumes_are_not() {
    let mut config = LogicConfig::default();
    config.link.max_logins_in_flight = 2;
    let h = harness(config);
    seed(&h).await;
    let (tx, mut rx) = link(&h.logic);
    let mut batch = LoginBatch::new();
    batch.push(login(1, APP, "alice", "phone", 1));
    batch.push(login(2, APP, "dave", "phone", 2));
    batch.push(login(3, APP, "erin", "phone", 3));
    let mut resume = login(4, APP, "erin", "web", 0);
    resume.resume = true;
    batch.push(resume);
    assert!(batch.has_resume());
    batch.push(login(5, APP, "dave", "web", 5));
    batch.run(&h.logic, &tx).await;
    assert!(!batch.has_resume());
    let mut out = drain(&mut rx);
    out.sort_by_key(|o| match o {
        Out::Ack(s, ..) | Out::Refused(s, ..) | Out::Kick(s, _) => *s,
    });
    // A resume gets no answer; it is registered.
    assert_eq!(out, vec![Out::Ack(1, 1, 7), Out::Ack(2, 2, 0), Out::Refused(3, 3, 80009), Out::Refused(5, 5, 80009)]);
    let erin = h.logic.sessions.devices(AppId(APP), &uid("erin"));
    assert_eq!(erin.len(), 1);
    assert_eq!(erin[0].conn.slot(), 4);
    assert_eq!(h.logic.logins.in_flight(), 0, "the batch gave its room back");
    // With room again, the refused logins succeed on retry.
    batch.push(login(3, APP, "erin", "phone", 6));
    batch.run(&h.logic, &tx).await;
    assert_eq!(drain(&mut rx), vec![Out::Ack(3, 6, 0)]);
}

/// Friend views load after the batch is answered, in a trip of their own: every admitted
/// user's view ends up in memory (two devices of one user in the batch, one refused
/// user's never), and a view already in memory is kept.
#[tokio::test]
async fn friend_views_load_after_the_answers() {
    let h = harness(LogicConfig::default());
    seed(&h).await;
    let (tx, mut rx) = link(&h.logic);
    let app = AppId(APP);
    for u in ["alice", "dave", "bob"] {
        assert!(!h.logic.friends.is_view_loaded(app, &uid(u)));
    }
    let mut batch = LoginBatch::new();
    batch.push(login(1, APP, "alice", "phone", 1));
    batch.push(login(2, APP, "alice", "web", 2));
    batch.push(login(3, APP, "dave", "phone", 3));
    batch.push(login(4, APP, "bob", "phone", 4));
    batch.run(&h.logic, &tx).await;
    let mut out = drain(&mut rx);
    out.sort_by_key(|o| match o {
        Out::Ack(s, ..) | Out::Refused(s, ..) | Out::Kick(s, _) => *s,
    });
    assert_eq!(out, vec![Out::Ack(1, 1, 7), Out::Ack(2, 2, 0), Out::Ack(3, 3, 0), Out::Refused(4, 4, 50003)]);
    assert_eq!(h.logic.sessions.devices(app, &uid("alice")).len(), 2, "login model 4: both devices stay");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !(h.logic.friends.is_view_loaded(app, &uid("alice")) && h.logic.friends.is_view_loaded(app, &uid("dave"))) {
        assert!(std::time::Instant::now() < deadline, "friend views not loaded after the batch");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!h.logic.friends.is_view_loaded(app, &uid("bob")), "a refused login loads nothing");
    // A later login of a user whose view is in memory keeps it.
    batch.push(login(5, APP, "dave", "web", 5));
    batch.run(&h.logic, &tx).await;
    assert_eq!(drain(&mut rx), vec![Out::Ack(5, 5, 0)]);
    assert!(h.logic.friends.is_view_loaded(app, &uid("dave")));
}
