//! The fuzz harnesses on stable: the checked-in corpus replayed, proptests over random
//! and structured inputs, and the generator of that corpus (an ignored test).

use std::path::PathBuf;

use proptest::prelude::*;
use tern_schema::client::{ClientType, KickReason, SyncKind};
use tern_schema::link::{CloseReason, ConnRef};
use tern_schema::message::{self, ElemParts, MessageParts};
use tern_schema::{encode, sig};

use super::*;
use crate::ws::tests::client_frame as ws_frame;

/// Every fuzz target, by the name of its `fuzz/fuzz_targets/*.rs` and corpus folder.
type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 5] = [
    ("client_frame", client_frame),
    ("link_frame", link_frame),
    ("ws_codec", ws_codec),
    ("wire", wire),
    ("conn", conn),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

#[test]
fn checked_in_corpus_passes_every_harness() {
    for (target, harness) in TARGETS {
        let dir = corpus_dir(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            harness(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 3, "{target}: only {n} seeds in {}", dir.display());
        // The cargo-fuzz target (built on nightly only) still calls this harness.
        let src = dir.join("../../fuzz_targets").join(format!("{target}.rs"));
        let src = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert!(src.contains(&format!("tern_gateway::fuzzing::{target}(data)")), "{target}.rs");
    }
}

// ---------------------------------------------------------------- seeds

const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: tern\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

fn login() -> Vec<u8> {
    let sign = sig::sign(b"secret", 7, "alice", 4_000_000_000);
    encode::login(1, 7, "alice", &sign, ClientType::Ios, "phone-1", "1.2.3")
}

fn send() -> Vec<u8> {
    message::send(2, "cm-1", "bob", &[ElemParts { text: "hello", ..Default::default() }], 1_700_000_000_000)
}

fn push() -> Vec<u8> {
    let m = MessageParts {
        message_key: 42,
        from_id: "alice",
        to_id: "bob",
        seq: 3,
        client_msg_id: "cm-1",
        elems: vec![ElemParts { text: "hello", ..Default::default() }],
        ..Default::default()
    };
    message::push(&[m])
}

fn ack() -> Vec<u8> {
    let max = [(SyncKind::Message, 3)];
    encode::login_ack(1, &encode::LoginAckParts { session_id: 9, max_seqs: &max, ..Default::default() })
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn conn_script(params: [u8; 7], ops: &[ConnOp<'_>]) -> Vec<u8> {
    let mut v = params.to_vec();
    for op in ops {
        op.encode(&mut v);
    }
    v
}

/// Conn parameters: login timeout 5000 ms, heartbeat 4 * 2500 ms, max payload 8 + 1024,
/// 51 frames/s.
const CONN_PARAMS: [u8; 7] = [0x87, 0x13, 0xC4, 0x09, 0x00, 0x04, 50];

fn login_op() -> ConnOp<'static> {
    ConnOp::Login { user_len: 5, device_len: 5, other_app: false, expired: false }
}

/// The seed corpus, per target.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let c = ConnRef::new(7, 0, 3, 1);
    let ping = encode::ping(5, 1);
    let pull = encode::pull(6, SyncKind::Message, 0, 50);
    let tcp = [0u8, 0x00, 0x04, 0];
    let wsp = [1u8, 0x00, 0x04, 5];
    vec![
        ("client_frame", "login", login()),
        ("client_frame", "login_ack", ack()),
        ("client_frame", "ping", ping.clone()),
        ("client_frame", "pull", pull.clone()),
        ("client_frame", "send", send()),
        ("client_frame", "push", push()),
        ("client_frame", "read_receipt", message::read_receipt(7, "bob", 3)),
        ("client_frame", "recall", message::recall(8, 42, "bob")),
        ("client_frame", "kick", encode::kick(KickReason::ReplacedByNewLogin, "other device")),
        ("client_frame", "error", encode::error(9, 80000, "malformed frame")),
        ("link_frame", "hello", encode::link_hello(7, 0, 2)),
        (
            "link_frame",
            "session_open",
            encode::link_session_open(&encode::SessionOpenParts {
                conn: c,
                app_id: 7,
                user_id: "alice",
                client_type: 2,
                device_id: "phone-1",
                request_id: 1,
                resume: false,
                remote_addr: "10.0.0.1:5555",
            }),
        ),
        ("link_frame", "session_opened", encode::link_session_opened(&c, true, &ack())),
        ("link_frame", "upstream", encode::link_upstream(&c, &send())),
        ("link_frame", "session_closed", encode::link_session_closed(&c, CloseReason::LoginTimeout)),
        ("link_frame", "deliver", encode::link_deliver(&[c, ConnRef::new(7, 0, 4, 2)], &push())),
        ("link_frame", "close", encode::link_close(&c, &encode::kick(KickReason::UserDeleted, "bye"))),
        (
            "link_frame",
            "stream",
            cat(&[&encode::link_ping(1), &encode::link_pong(1), &encode::link_upstream(&c, &pull)]),
        ),
        ("ws_codec", "upgrade", cat(&[&[0, 4, 7], UPGRADE])),
        ("ws_codec", "binary", cat(&[&[0, 4, 3], &ws_frame(0x82, &login(), M)])),
        (
            "ws_codec",
            "fragments_ping_close",
            cat(&[
                &[0, 4, 11],
                &ws_frame(0x02, &ping[..6], M),
                &ws_frame(0x89, b"hb", M),
                &ws_frame(0x80, &ping[6..], M),
                &ws_frame(0x8A, b"", M),
                &ws_frame(0x88, &1000u16.to_be_bytes(), M),
            ]),
        ),
        ("ws_codec", "long_length", cat(&[&[0xFF, 0xFF, 1], &ws_frame(0x82, &[9; 300], M)])),
        ("wire", "tcp_stream", cat(&[&tcp, &login(), &ping, &pull, &send()])),
        ("wire", "tcp_bad_header", cat(&[&tcp, &ping, &[9, 0, 0, 9]])),
        (
            "wire",
            "ws_session",
            cat(&[
                &wsp,
                UPGRADE,
                &ws_frame(0x82, &login(), M),
                &ws_frame(0x89, b"", M),
                &ws_frame(0x02, &pull[..4], M),
                &ws_frame(0x80, &pull[4..], M),
                &ws_frame(0x88, &1000u16.to_be_bytes(), M),
            ]),
        ),
        ("wire", "ws_rejected", cat(&[&wsp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])),
        (
            "conn",
            "login_traffic_heartbeat",
            conn_script(
                CONN_PARAMS,
                &[
                    login_op(),
                    ConnOp::SessionOpened { ok: true, frame: 1 },
                    ConnOp::Ping,
                    ConnOp::Valid(0),
                    ConnOp::Valid(3),
                    ConnOp::Valid(6),
                    ConnOp::Tick(5_000),
                    ConnOp::Tick(6_000),
                ],
            ),
        ),
        ("conn", "login_timeout", conn_script(CONN_PARAMS, &[login_op(), ConnOp::Tick(4_000), ConnOp::Tick(1_000)])),
        (
            "conn",
            "link_down_resume_congested",
            conn_script(
                CONN_PARAMS,
                &[
                    login_op(),
                    ConnOp::SessionOpened { ok: true, frame: 1 },
                    ConnOp::LinkDown,
                    ConnOp::Valid(0),
                    ConnOp::LinkUp,
                    ConnOp::SessionOpened { ok: true, frame: 0 },
                    ConnOp::Congest,
                    ConnOp::Valid(1),
                    ConnOp::Congest,
                    ConnOp::Valid(2),
                ],
            ),
        ),
        (
            "conn",
            "bad_login",
            conn_script(CONN_PARAMS, &[ConnOp::Login { user_len: 0, device_len: 5, other_app: false, expired: false }]),
        ),
        (
            "conn",
            "logic_refuses",
            conn_script(CONN_PARAMS, &[login_op(), ConnOp::Ping, ConnOp::SessionOpened { ok: false, frame: 2 }]),
        ),
        (
            "conn",
            "logic_kicks",
            conn_script(
                CONN_PARAMS,
                &[login_op(), ConnOp::SessionOpened { ok: true, frame: 1 }, ConnOp::LogicClose(3)],
            ),
        ),
        (
            "conn",
            "shutdown",
            conn_script(
                CONN_PARAMS,
                &[login_op(), ConnOp::SessionOpened { ok: true, frame: 1 }, ConnOp::FrameError(1), ConnOp::Shutdown],
            ),
        ),
        (
            "conn",
            "raw_frames_rate_limit",
            conn_script(
                [0x87, 0x13, 0xC4, 0x09, 0x00, 0x04, 0],
                &[
                    login_op(),
                    ConnOp::SessionOpened { ok: true, frame: 1 },
                    ConnOp::RawFrame(&ping),
                    ConnOp::RawFrame(&ping),
                    ConnOp::RawFrame(&ping),
                    ConnOp::Wait(1_000),
                    ConnOp::RawFrame(&ping[..10]),
                ],
            ),
        ),
    ]
}

#[test]
fn seeds_pass_every_harness() {
    for (target, name, data) in seeds() {
        let (_, harness) = TARGETS.iter().find(|(t, _)| *t == target).unwrap_or_else(|| panic!("{target}"));
        let r = std::panic::catch_unwind(|| harness(&data));
        assert!(r.is_ok(), "seed {target}/{name} fails its harness");
    }
}

#[test]
fn conn_seeds_reach_the_interesting_states() {
    let trace = |name: &str| {
        let (_, _, data) = seeds().into_iter().find(|(t, n, _)| *t == "conn" && *n == name).unwrap();
        let mut log = Vec::new();
        run_conn(&data, Some(&mut log));
        log.join("\n")
    };
    let t = trace("login_traffic_heartbeat");
    for want in ["OpenSession { resume: false }", "Reply(LoginAck)", "Reply(Pong)", "Forward", "HeartbeatTimeout"] {
        assert!(t.contains(want), "{want} missing from\n{t}");
    }
    let t = trace("login_timeout");
    assert!(t.contains("SessionClosed(LoginTimeout), Close(LoginTimeout)"), "{t}");
    let t = trace("link_down_resume_congested");
    assert!(t.contains("OpenSession { resume: true }") && t.contains("Close(Logout)"), "{t}");
    assert!(trace("bad_login").contains("Reply(Error), Close(LoginFailed)"));
    assert!(trace("logic_refuses").contains("SessionOpened { ok: false }: Reply(Error), Close(LoginFailed)"));
    assert!(trace("logic_kicks").contains("LogicClose: Reply(Kick), Close(Kicked)"));
    let t = trace("shutdown");
    assert!(t.contains("SessionClosed(ProtocolError), Close(Protocol)") && t.ends_with("Shutdown: "), "{t}");
    let t = trace("raw_frames_rate_limit");
    assert!(t.contains("Reply(Error)") && t.contains("Close(Protocol)"), "{t}");
}

/// Regenerates `fuzz/corpus/*/` from [`seeds`]:
/// `cargo test -p tern-gateway write_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes the checked-in seed corpus"]
fn write_seed_corpus() {
    for (target, name, data) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
}

// ---------------------------------------------------------------- proptests

fn conn_op_strategy() -> impl Strategy<Value = Vec<u8>> {
    let op = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            let mut v = vec![0u8];
            v.extend_from_slice(&(b.len() as u16).to_le_bytes());
            v.extend(b);
            v
        }),
        (1u8..CONN_OPS, any::<[u8; 3]>()).prop_map(|(op, p)| vec![op, p[0], p[1], p[2]]),
    ];
    (any::<[u8; 7]>(), prop::collection::vec(op, 0..40)).prop_map(|(params, ops)| {
        let mut v = params.to_vec();
        // Mostly reachable timeouts and logins that pass.
        v[0] = v[0].max(50);
        v.extend(ops.concat());
        v
    })
}

fn mutated_seed() -> impl Strategy<Value = (usize, Vec<(usize, u8)>, usize)> {
    (0..seeds().len(), prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), any::<usize>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_break_no_harness(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        for (_, harness) in TARGETS {
            harness(&data);
        }
    }

    #[test]
    fn mutated_seeds_break_no_harness((i, flips, cut) in mutated_seed()) {
        let (target, _, mut data) = seeds().swap_remove(i);
        let (_, harness) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        for (at, b) in flips {
            if !data.is_empty() {
                let n = data.len();
                data[at % n] ^= b;
            }
        }
        data.truncate(cut % (data.len() + 1).max(1) + data.len() / 2);
        harness(&data);
    }

    #[test]
    fn conn_scripts_keep_the_invariants(data in conn_op_strategy()) {
        conn(&data);
    }

    #[test]
    fn wire_cut_anywhere_frames_alike(ws in any::<bool>(), seed in any::<u8>(), n in 1usize..6) {
        let one = if ws { ws_frame(0x82, &login(), M) } else { login() };
        let mut data = vec![u8::from(ws), 0x00, 0x04, seed];
        if ws {
            data.extend_from_slice(UPGRADE);
        }
        for _ in 0..n {
            data.extend_from_slice(&one);
        }
        wire(&data);
    }
}
