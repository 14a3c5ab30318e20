//! Model-based test of 1:1 messaging over the real server: a seeded random schedule of
//! sends, duplicate resends, device disconnects and reconnects, and pulls. Each device
//! behaves like a real client (it records its own sends from SendAck, pushes as they
//! come, and pulls from its last completed sync point on reconnect). After quiescence
//! every device of every user holds exactly the acknowledged messages of that user, once
//! each; pushes arrive in seq order; and no new item ever appears at or below a
//! `maxSequence` the device was already told. `TERN_MODEL_SEED` replays a schedule;
//! `TERN_SLOW_TESTS=1` runs more seeds and steps.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{sign, Mode, Options, Tern};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tern_loadtest::client::{Client, LoginOutcome, OwnedFrame, Transport};
use tern_schema::client::{Body, ClientType, ElemType, EntryKind, SyncKind};
use tern_schema::message::{self, ElemParts};
use tern_schema::{codes, encode};

const APP: u32 = 10_000;
const USERS: usize = 3;
const WAIT: Duration = Duration::from_secs(10);

struct Device {
    user: usize,
    name: String,
    transport: Transport,
    client: Option<Client>,
    /// Everything this device holds: seq → message key.
    held: BTreeMap<u64, u64>,
    /// Highest `maxSequence` from a pull that ran to completion: everything at or
    /// below it is held.
    synced: u64,
    /// Highest seq pushed on the current connection (pushes must increase).
    last_push: u64,
}

fn user(i: usize) -> String {
    format!("u{i}")
}

impl Device {
    fn take(&mut self, seq: u64, key: u64, source: &str) {
        match self.held.get(&seq) {
            Some(k) => assert_eq!(*k, key, "{}: seq {seq} changed key ({source})", self.name),
            None => {
                assert!(
                    seq > self.synced,
                    "{}: new item seq {seq} at or below the told maxSequence {} ({source})",
                    self.name,
                    self.synced
                );
                self.held.insert(seq, key);
            }
        }
    }

    fn absorb(&mut self, f: &OwnedFrame) {
        if let Some(p) = f.frame().body_as_push() {
            for m in p.messages().unwrap() {
                assert!(m.seq() > self.last_push, "{}: push seq {} after {}", self.name, m.seq(), self.last_push);
                self.last_push = m.seq();
                if m.entry() == EntryKind::Message {
                    self.take(m.seq(), m.message_key(), "push");
                }
            }
        }
    }

    /// Consumes whatever has arrived.
    async fn drain(&mut self) {
        let Some(mut c) = self.client.take() else { return };
        while let Ok(Some(f)) = c.recv_timeout(Duration::from_millis(5)).await {
            self.absorb(&f);
        }
        self.client = Some(c);
    }

    /// Pulls from the sync point to completion.
    async fn pull(&mut self) {
        let mut c = self.client.take().expect("connected");
        let mut after = self.synced;
        loop {
            let rid = c.next_request_id();
            c.send(&encode::pull(rid, SyncKind::Message, after, 7)).await.unwrap();
            let (f, skipped) = c.recv_reply(rid, WAIT).await.expect("pull answered");
            for s in &skipped {
                self.absorb(s);
            }
            let r = f.frame().body_as_pull_result().unwrap_or_else(|| panic!("{}", f.describe()));
            for m in r.messages().unwrap() {
                if m.entry() == EntryKind::Message {
                    self.take(m.seq(), m.message_key(), "pull");
                }
                after = m.seq();
            }
            if r.completed() {
                self.synced = self.synced.max(r.max_seq());
                break;
            }
        }
        c.send(&encode::push_ack(0, SyncKind::Message, self.synced)).await.unwrap();
        self.client = Some(c);
    }
}

async fn connect(t: &Tern, d: &mut Device) {
    let mut c = Client::connect(d.transport, t.addr(d.transport)).await.unwrap();
    let u = user(d.user);
    let ct = if d.transport == Transport::Ws { ClientType::Web } else { ClientType::Ios };
    let req = tern_loadtest::client::LoginRequest {
        app_id: APP,
        user_id: u.clone(),
        user_sign: sign(APP, &u, 600),
        client_type: ct,
        device_id: d.name.clone(),
        request_id: 1,
    };
    match c.login(&req).await.unwrap() {
        LoginOutcome::Ok(_) => {}
        other => panic!("{other:?}"),
    }
    d.client = Some(c);
    d.last_push = 0;
    d.pull().await;
}

async fn run(seed: u64, steps: usize) {
    let t = Tern::start_with(Mode::AllInOne, Options::default());
    t.import(APP, &(0..USERS).map(user).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut devices: Vec<Device> = (0..USERS)
        .flat_map(|u| {
            [(Transport::Tcp, "phone"), (Transport::Ws, "web")].map(|(tr, n)| Device {
                user: u,
                name: format!("u{u}-{n}"),
                transport: tr,
                client: None,
                held: BTreeMap::new(),
                synced: 0,
                last_push: 0,
            })
        })
        .collect();
    for d in devices.iter_mut() {
        connect(&t, d).await;
    }
    // Acked messages: key → (from, to); and client ids per user for resends.
    let mut acked: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut sent_ids: Vec<Vec<(String, usize, u64, u64)>> = vec![Vec::new(); USERS];
    let mut next_id = 0u64;
    for step in 0..steps {
        let i = rng.gen_range(0..devices.len());
        let roll = rng.gen_range(0..100);
        if devices[i].client.is_none() {
            if roll < 50 {
                connect(&t, &mut devices[i]).await;
            }
            continue;
        }
        match roll {
            0..=59 => {
                let from = devices[i].user;
                let resend = roll < 12 && !sent_ids[from].is_empty();
                let (id, to) = if resend {
                    let (id, to, _, _) = sent_ids[from][rng.gen_range(0..sent_ids[from].len())].clone();
                    (id, to)
                } else {
                    next_id += 1;
                    (format!("m{next_id}"), (from + rng.gen_range(1..USERS)) % USERS)
                };
                let d = &mut devices[i];
                let mut c = d.client.take().unwrap();
                let rid = c.next_request_id();
                let elems = [ElemParts { elem_type: ElemType::Text, text: &id, ..Default::default() }];
                c.send(&message::send(rid, &id, &user(to), &elems, 0)).await.unwrap();
                let (f, skipped) = c
                    .recv_until(|f| f.request_id() == rid && f.body_type() == Body::SendAck, WAIT)
                    .await
                    .unwrap_or_else(|e| panic!("step {step}: no ack: {e}"));
                for s in &skipped {
                    d.absorb(s);
                }
                let a = f.frame().body_as_send_ack().unwrap();
                assert_eq!(a.code(), codes::OK, "step {step}: {}", f.describe());
                if resend {
                    let orig = sent_ids[from].iter().find(|(x, ..)| *x == id).unwrap();
                    assert_eq!(
                        (a.message_key(), a.seq()),
                        (orig.2, orig.3),
                        "step {step}: resend created a new message"
                    );
                } else {
                    sent_ids[from].push((id, to, a.message_key(), a.seq()));
                    acked.insert(a.message_key(), (from, to));
                }
                // A client records its own send from the ack.
                d.take(a.seq(), a.message_key(), "ack");
                d.client = Some(c);
            }
            60..=74 => {
                devices[i].client = None; // disconnect
            }
            75..=89 => devices[i].pull().await,
            _ => {}
        }
        for d in devices.iter_mut() {
            d.drain().await;
        }
    }
    // Quiescence: everyone online, everything pulled, pushes drained.
    for d in devices.iter_mut() {
        if d.client.is_none() {
            connect(&t, d).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for d in devices.iter_mut() {
        d.drain().await;
        d.pull().await;
        d.drain().await;
    }
    for d in &devices {
        let expected: HashSet<u64> =
            acked.iter().filter(|(_, (f, to))| *f == d.user || *to == d.user).map(|(k, _)| *k).collect();
        let held: Vec<u64> = d.held.values().copied().collect();
        let held_set: HashSet<u64> = held.iter().copied().collect();
        assert_eq!(held.len(), held_set.len(), "{}: a message held twice under two seqs", d.name);
        assert_eq!(held_set, expected, "seed {seed}: {} holds the wrong messages", d.name);
    }
    eprintln!("seed {seed}: {} messages, {} devices consistent", acked.len(), devices.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_converge() {
    if let Ok(seed) = std::env::var("TERN_MODEL_SEED") {
        return run(seed.parse().expect("TERN_MODEL_SEED is a number"), 400).await;
    }
    let slow = std::env::var("TERN_SLOW_TESTS").is_ok_and(|v| v == "1");
    let (seeds, steps) = if slow { (20, 600) } else { (3, 200) };
    for seed in 0..seeds {
        run(seed, steps).await;
    }
}
