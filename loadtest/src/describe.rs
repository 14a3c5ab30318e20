//! One human-readable line per client frame, for `tern client` output, test failure
//! messages and load-test logs.
//!
//! The line starts with the body's name (`LoginAck`, `Push`, …) followed by its fields
//! as `key=value` pairs; free text from the wire is quoted and escaped (`{:?}`), so a
//! line never contains a newline whatever the peer sent. A non-zero request id is
//! appended as ` req=N`, keeping the start of the line stable for tests that match on
//! it. Signatures are never printed, only their length. This module only formats: it
//! never fails and never panics on a verified frame.

use std::fmt::Write;

use tern_schema::client::{Body, Elem, ElemType, Frame, KindSeq, Message};
use tern_schema::flatbuffers::{ForwardsUOffset, Vector};

/// Describes a verified frame on one line (see the module docs for the shape).
pub fn describe(frame: &Frame<'_>) -> String {
    let mut s = String::with_capacity(96);
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = describe_body(frame, &mut s);
    if frame.request_id() != 0 {
        let _ = write!(s, " req={}", frame.request_id());
    }
    s
}

fn describe_body(frame: &Frame<'_>, s: &mut String) -> std::fmt::Result {
    match frame.body_type() {
        Body::Login => {
            let Some(b) = frame.body_as_login() else { return missing(s, "Login") };
            write!(
                s,
                "Login app={} user={} type={:?} device={} version={:?} sign=<{} chars>",
                b.app_id(),
                b.user_id().unwrap_or(""),
                b.client_type(),
                b.device_id().unwrap_or(""),
                b.client_version().unwrap_or(""),
                b.user_sign().map_or(0, str::len),
            )
        }
        Body::LoginAck => {
            let Some(b) = frame.body_as_login_ack() else { return missing(s, "LoginAck") };
            write!(
                s,
                "LoginAck session={} hb={}/{} max_seqs=",
                b.session_id(),
                b.heartbeat_interval_ms(),
                b.heartbeat_timeout_ms()
            )?;
            kind_seqs(s, b.max_seqs())?;
            s.push_str(" acked_seqs=");
            kind_seqs(s, b.acked_seqs())?;
            write!(s, " max_frame={} server_time={}", b.max_frame_bytes(), b.server_time_ms())
        }
        Body::Logout => s.write_str("Logout"),
        Body::Ping => {
            let Some(b) = frame.body_as_ping() else { return missing(s, "Ping") };
            write!(s, "Ping t={}", b.client_time_ms())
        }
        Body::Pong => {
            let Some(b) = frame.body_as_pong() else { return missing(s, "Pong") };
            write!(s, "Pong client_t={} server_t={}", b.client_time_ms(), b.server_time_ms())
        }
        Body::Send => {
            let Some(b) = frame.body_as_send() else { return missing(s, "Send") };
            write!(
                s,
                "Send id={} {:?} to={} t={}",
                b.client_msg_id().unwrap_or(""),
                b.conversation_type(),
                b.to_id().unwrap_or(""),
                b.client_time_ms()
            )?;
            elems(s, b.elems())
        }
        Body::SendAck => {
            let Some(b) = frame.body_as_send_ack() else { return missing(s, "SendAck") };
            write!(
                s,
                "SendAck id={} code={} key={} seq={} server_time={}",
                b.client_msg_id().unwrap_or(""),
                b.code(),
                b.message_key(),
                b.seq(),
                b.server_time_ms()
            )?;
            match b.message() {
                Some(m) if !m.is_empty() => write!(s, " {m:?}"),
                _ => Ok(()),
            }
        }
        Body::Push => {
            let Some(b) = frame.body_as_push() else { return missing(s, "Push") };
            s.write_str("Push ")?;
            messages(s, b.messages())
        }
        Body::PushAck => {
            let Some(b) = frame.body_as_push_ack() else { return missing(s, "PushAck") };
            write!(s, "PushAck kind={:?} seq={}", b.kind(), b.seq())
        }
        Body::Pull => {
            let Some(b) = frame.body_as_pull() else { return missing(s, "Pull") };
            write!(s, "Pull kind={:?} after={} limit={}", b.kind(), b.after_seq(), b.limit())
        }
        Body::PullResult => {
            let Some(b) = frame.body_as_pull_result() else { return missing(s, "PullResult") };
            write!(s, "PullResult kind={:?} max_seq={} completed={} ", b.kind(), b.max_seq(), b.completed())?;
            messages(s, b.messages())
        }
        Body::ReadReceipt => {
            let Some(b) = frame.body_as_read_receipt() else { return missing(s, "ReadReceipt") };
            write!(
                s,
                "ReadReceipt {:?} peer={} read_seq={}",
                b.conversation_type(),
                b.peer_id().unwrap_or(""),
                b.read_seq()
            )
        }
        Body::ReadReceiptNotify => {
            let Some(b) = frame.body_as_read_receipt_notify() else { return missing(s, "ReadReceiptNotify") };
            write!(
                s,
                "ReadReceiptNotify {:?} reader={} peer={} read_seq={}",
                b.conversation_type(),
                b.reader_id().unwrap_or(""),
                b.peer_id().unwrap_or(""),
                b.read_seq()
            )
        }
        Body::SyncNotify => {
            let Some(b) = frame.body_as_sync_notify() else { return missing(s, "SyncNotify") };
            write!(s, "SyncNotify kind={:?} seq={}", b.kind(), b.seq())
        }
        Body::Recall => {
            let Some(b) = frame.body_as_recall() else { return missing(s, "Recall") };
            write!(s, "Recall key={} {:?} peer={}", b.message_key(), b.conversation_type(), b.peer_id().unwrap_or(""))
        }
        Body::RecallNotify => {
            let Some(b) = frame.body_as_recall_notify() else { return missing(s, "RecallNotify") };
            write!(
                s,
                "RecallNotify key={} from={} to={} seq={}",
                b.message_key(),
                b.from_id().unwrap_or(""),
                b.to_id().unwrap_or(""),
                b.seq()
            )
        }
        Body::Kick => {
            let Some(b) = frame.body_as_kick() else { return missing(s, "Kick") };
            write!(s, "Kick reason={:?} {:?}", b.reason(), b.message().unwrap_or(""))
        }
        Body::Error => {
            let Some(b) = frame.body_as_error() else { return missing(s, "Error") };
            write!(s, "Error code={} {:?}", b.code(), b.message().unwrap_or(""))
        }
        Body::ConversationGet => {
            let Some(b) = frame.body_as_conversation_get() else { return missing(s, "ConversationGet") };
            write!(s, "ConversationGet offset={} limit={}", b.offset(), b.limit())
        }
        Body::ConversationSync => {
            let Some(b) = frame.body_as_conversation_sync() else { return missing(s, "ConversationSync") };
            write!(s, "ConversationSync after={} limit={}", b.after_seq(), b.limit())
        }
        Body::ConversationList => {
            let Some(b) = frame.body_as_conversation_list() else { return missing(s, "ConversationList") };
            let n = b.conversations().map_or(0, |v| v.len());
            write!(s, "ConversationList n={n} max_seq={} completed={} total={}", b.max_seq(), b.completed(), b.total())
        }
        other => write!(s, "Unknown body type {}", other.0),
    }
}

/// A union whose type says `name` but whose table is absent (the verifier allows it).
fn missing(s: &mut String, name: &str) -> std::fmt::Result {
    write!(s, "{name} <no body>")
}

fn kind_seqs(s: &mut String, v: Option<Vector<'_, KindSeq>>) -> std::fmt::Result {
    s.push('[');
    for (i, ks) in v.iter().flatten().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        write!(s, "{:?}:{}", ks.kind(), ks.seq())?;
    }
    s.push(']');
    Ok(())
}

fn messages(s: &mut String, v: Option<Vector<'_, ForwardsUOffset<Message<'_>>>>) -> std::fmt::Result {
    let n = v.map_or(0, |v| v.len());
    write!(s, "{n} message{}", if n == 1 { "" } else { "s" })?;
    for (i, m) in v.iter().flatten().enumerate() {
        s.push_str(if i == 0 { ": " } else { ", " });
        message(s, &m)?;
    }
    Ok(())
}

fn message(s: &mut String, m: &Message<'_>) -> std::fmt::Result {
    write!(
        s,
        "[seq={} from={} to={} key={}",
        m.seq(),
        m.from_id().unwrap_or(""),
        m.to_id().unwrap_or(""),
        m.message_key()
    )?;
    if m.conversation_type() != tern_schema::client::ConversationType::Single {
        write!(s, " {:?}", m.conversation_type())?;
    }
    if let Some(d) = m.from_device().filter(|d| !d.is_empty()) {
        write!(s, " device={d}")?;
    }
    if let Some(id) = m.client_msg_id().filter(|d| !d.is_empty()) {
        write!(s, " id={id}")?;
    }
    if m.recalled() {
        s.push_str(" recalled");
    }
    elems(s, m.elems())?;
    s.push(']');
    Ok(())
}

fn elems(s: &mut String, v: Option<Vector<'_, ForwardsUOffset<Elem<'_>>>>) -> std::fmt::Result {
    for e in v.iter().flatten() {
        s.push(' ');
        elem(s, &e)?;
    }
    Ok(())
}

fn elem(s: &mut String, e: &Elem<'_>) -> std::fmt::Result {
    let text = e.text().unwrap_or("");
    match e.type_() {
        ElemType::Text => write!(s, "text={text:?}"),
        ElemType::Custom => {
            write!(s, "custom=<{} bytes>", e.data().map_or(0, |d| d.len()))?;
            if !text.is_empty() {
                write!(s, " {text:?}")?;
            }
            Ok(())
        }
        ElemType::Location => write!(s, "location={text:?} {:?}", e.extra().unwrap_or("")),
        other => {
            let name = match other {
                ElemType::Image => "image",
                ElemType::File => "file",
                ElemType::Sound => "sound",
                ElemType::Video => "video",
                _ => return write!(s, "elem<{}>", other.0),
            };
            write!(s, "{name}={:?}", e.url().unwrap_or(""))?;
            match e.extra() {
                Some(x) if !x.is_empty() => write!(s, " {x:?}"),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_schema::client::{self, ClientType, ConversationType, KickReason, SyncKind};
    use tern_schema::encode::{self, LoginAckParts};
    use tern_schema::flatbuffers::FlatBufferBuilder;
    use tern_schema::frame::{parse_client_framed, MAX_PAYLOAD_LEN};

    #[track_caller]
    fn check(frame_bytes: &[u8], expected_line: &str) {
        let frame = parse_client_framed(frame_bytes, MAX_PAYLOAD_LEN).expect("test frames are valid");
        assert_eq!(describe(&frame), expected_line);
    }

    /// Test-only builders for frames `encode` has no helper for (yet).
    mod build {
        use super::*;
        use tern_schema::flatbuffers::WIPOffset;

        pub struct Msg<'a> {
            pub seq: u64,
            pub from: &'a str,
            pub to: &'a str,
            pub key: u64,
            pub text: &'a str,
        }

        fn text_elem<'a>(fbb: &mut FlatBufferBuilder<'a>, text: &str) -> WIPOffset<client::Elem<'a>> {
            let text = fbb.create_string(text);
            client::Elem::create(
                fbb,
                &client::ElemArgs { type_: ElemType::Text, text: Some(text), ..Default::default() },
            )
        }

        fn message<'a>(fbb: &mut FlatBufferBuilder<'a>, m: &Msg<'_>) -> WIPOffset<client::Message<'a>> {
            let elem = text_elem(fbb, m.text);
            let elems = fbb.create_vector(&[elem]);
            let from_id = fbb.create_string(m.from);
            let to_id = fbb.create_string(m.to);
            client::Message::create(
                fbb,
                &client::MessageArgs {
                    message_key: m.key,
                    from_id: Some(from_id),
                    to_id: Some(to_id),
                    seq: m.seq,
                    elems: Some(elems),
                    ..Default::default()
                },
            )
        }

        pub fn push(msgs: &[Msg<'_>]) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let offs: Vec<_> = msgs.iter().map(|m| message(&mut fbb, m)).collect();
            let messages = fbb.create_vector(&offs);
            let body =
                client::Push::create(&mut fbb, &client::PushArgs { messages: Some(messages), ..Default::default() });
            encode::finish_client(fbb, 0, Body::Push, body.as_union_value())
        }

        pub fn pull_result(req: u32, kind: SyncKind, msgs: &[Msg<'_>], max_seq: u64, completed: bool) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let offs: Vec<_> = msgs.iter().map(|m| message(&mut fbb, m)).collect();
            let messages = fbb.create_vector(&offs);
            let body = client::PullResult::create(
                &mut fbb,
                &client::PullResultArgs { kind, messages: Some(messages), max_seq, completed },
            );
            encode::finish_client(fbb, req, Body::PullResult, body.as_union_value())
        }

        pub fn rich_push() -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let data = fbb.create_vector(&[1u8, 2, 3]);
            let desc = fbb.create_string("card");
            let custom = client::Elem::create(
                &mut fbb,
                &client::ElemArgs { type_: ElemType::Custom, data: Some(data), text: Some(desc), ..Default::default() },
            );
            let url = fbb.create_string("http://x/a.png");
            let extra = fbb.create_string("{\"w\":10}");
            let image = client::Elem::create(
                &mut fbb,
                &client::ElemArgs { type_: ElemType::Image, url: Some(url), extra: Some(extra), ..Default::default() },
            );
            let label = fbb.create_string("home");
            let ll = fbb.create_string("{\"lat\":1}");
            let loc = client::Elem::create(
                &mut fbb,
                &client::ElemArgs {
                    type_: ElemType::Location,
                    text: Some(label),
                    extra: Some(ll),
                    ..Default::default()
                },
            );
            let elems = fbb.create_vector(&[custom, image, loc]);
            let from_id = fbb.create_string("alice");
            let to_id = fbb.create_string("g1");
            let dev = fbb.create_string("phone-1");
            let cid = fbb.create_string("c-9");
            let m = client::Message::create(
                &mut fbb,
                &client::MessageArgs {
                    message_key: 42,
                    conversation_type: ConversationType::Group,
                    from_id: Some(from_id),
                    to_id: Some(to_id),
                    seq: 8,
                    client_msg_id: Some(cid),
                    elems: Some(elems),
                    recalled: true,
                    from_device: Some(dev),
                    ..Default::default()
                },
            );
            let messages = fbb.create_vector(&[m]);
            let body =
                client::Push::create(&mut fbb, &client::PushArgs { messages: Some(messages), ..Default::default() });
            encode::finish_client(fbb, 0, Body::Push, body.as_union_value())
        }

        pub fn send(req: u32, id: &str, to: &str, text: &str) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let elem = text_elem(&mut fbb, text);
            let elems = fbb.create_vector(&[elem]);
            let client_msg_id = fbb.create_string(id);
            let to_id = fbb.create_string(to);
            let body = client::Send::create(
                &mut fbb,
                &client::SendArgs {
                    client_msg_id: Some(client_msg_id),
                    conversation_type: ConversationType::Single,
                    to_id: Some(to_id),
                    elems: Some(elems),
                    client_time_ms: 1000,
                },
            );
            encode::finish_client(fbb, req, Body::Send, body.as_union_value())
        }

        pub fn send_ack(req: u32, id: &str, code: u32, message: &str, key: u64, seq: u64) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let client_msg_id = fbb.create_string(id);
            let message = fbb.create_string(message);
            let body = client::SendAck::create(
                &mut fbb,
                &client::SendAckArgs {
                    client_msg_id: Some(client_msg_id),
                    code,
                    message: Some(message),
                    message_key: key,
                    seq,
                    server_time_ms: 5,
                },
            );
            encode::finish_client(fbb, req, Body::SendAck, body.as_union_value())
        }

        pub fn read_receipt(req: u32, peer: &str, read_seq: u64) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let peer_id = fbb.create_string(peer);
            let body = client::ReadReceipt::create(
                &mut fbb,
                &client::ReadReceiptArgs {
                    conversation_type: ConversationType::Single,
                    peer_id: Some(peer_id),
                    read_seq,
                },
            );
            encode::finish_client(fbb, req, Body::ReadReceipt, body.as_union_value())
        }

        pub fn read_receipt_notify(reader: &str, peer: &str, read_seq: u64) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let reader_id = fbb.create_string(reader);
            let peer_id = fbb.create_string(peer);
            let body = client::ReadReceiptNotify::create(
                &mut fbb,
                &client::ReadReceiptNotifyArgs {
                    conversation_type: ConversationType::Single,
                    reader_id: Some(reader_id),
                    peer_id: Some(peer_id),
                    read_seq,
                },
            );
            encode::finish_client(fbb, 0, Body::ReadReceiptNotify, body.as_union_value())
        }

        pub fn recall(req: u32, key: u64, peer: &str) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let peer_id = fbb.create_string(peer);
            let body = client::Recall::create(
                &mut fbb,
                &client::RecallArgs {
                    message_key: key,
                    conversation_type: ConversationType::Single,
                    peer_id: Some(peer_id),
                },
            );
            encode::finish_client(fbb, req, Body::Recall, body.as_union_value())
        }

        pub fn recall_notify(key: u64, from: &str, to: &str, seq: u64) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let from_id = fbb.create_string(from);
            let to_id = fbb.create_string(to);
            let body = client::RecallNotify::create(
                &mut fbb,
                &client::RecallNotifyArgs { message_key: key, from_id: Some(from_id), to_id: Some(to_id), seq },
            );
            encode::finish_client(fbb, 0, Body::RecallNotify, body.as_union_value())
        }

        /// A frame whose union type is a value this build does not know (a newer peer).
        pub fn unknown_body() -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let body = client::Logout::create(&mut fbb, &client::LogoutArgs {});
            encode::finish_client(fbb, 3, Body(200), body.as_union_value())
        }
    }

    use build::Msg;

    #[test]
    fn session_frames() {
        check(
            &encode::login(1, 10_000, "alice", "s".repeat(55).as_str(), ClientType::Linux, "cli-1", "0.1"),
            r#"Login app=10000 user=alice type=Linux device=cli-1 version="0.1" sign=<55 chars> req=1"#,
        );
        check(
            &encode::login_ack(
                1,
                &LoginAckParts {
                    session_id: 5,
                    server_time_ms: 77,
                    heartbeat_interval_ms: 30_000,
                    heartbeat_timeout_ms: 90_000,
                    max_seqs: &[(SyncKind::Message, 3), (SyncKind::Profile, 1)],
                    acked_seqs: &[(SyncKind::Message, 2)],
                    max_frame_bytes: 65_536,
                },
            ),
            "LoginAck session=5 hb=30000/90000 max_seqs=[Message:3, Profile:1] acked_seqs=[Message:2] \
             max_frame=65536 server_time=77 req=1",
        );
        check(
            &encode::login_ack(0, &LoginAckParts::default()),
            "LoginAck session=0 hb=0/0 max_seqs=[] acked_seqs=[] max_frame=0 server_time=0",
        );
        check(&encode::logout(9), "Logout req=9");
        check(&encode::ping(2, 1234), "Ping t=1234 req=2");
        check(&encode::pong(2, 1234, 1240), "Pong client_t=1234 server_t=1240 req=2");
        check(
            &encode::kick(KickReason::ReplacedByNewLogin, "another device"),
            r#"Kick reason=ReplacedByNewLogin "another device""#,
        );
        check(&encode::kick(KickReason(99), ""), r#"Kick reason=<UNKNOWN 99> """#);
        check(&encode::error(4, 60004, "signature has expired"), r#"Error code=60004 "signature has expired" req=4"#);
        check(&encode::error(0, 80000, "bad\nline \"x\""), r#"Error code=80000 "bad\nline \"x\"""#);
    }

    #[test]
    fn message_frames() {
        check(&build::send(3, "c1", "bob", "hi"), r#"Send id=c1 Single to=bob t=1000 text="hi" req=3"#);
        check(&build::send_ack(3, "c1", 200, "", 99, 5), "SendAck id=c1 code=200 key=99 seq=5 server_time=5 req=3");
        check(
            &build::send_ack(3, "c1", 50001, "blocked", 0, 0),
            r#"SendAck id=c1 code=50001 key=0 seq=0 server_time=5 "blocked" req=3"#,
        );
        check(
            &build::push(&[
                Msg { seq: 5, from: "alice", to: "bob", key: 11, text: "hi" },
                Msg { seq: 6, from: "bob", to: "alice", key: 12, text: "yo" },
            ]),
            r#"Push 2 messages: [seq=5 from=alice to=bob key=11 text="hi"], [seq=6 from=bob to=alice key=12 text="yo"]"#,
        );
        check(&build::push(&[]), "Push 0 messages");
        check(
            &build::rich_push(),
            concat!(
                "Push 1 message: [seq=8 from=alice to=g1 key=42 Group device=phone-1 id=c-9 recalled ",
                r#"custom=<3 bytes> "card" image="http://x/a.png" "{\"w\":10}" location="home" "{\"lat\":1}"]"#,
            ),
        );
        check(&encode::push_ack(7, SyncKind::Message, 6), "PushAck kind=Message seq=6 req=7");
        check(&encode::pull(8, SyncKind::Message, 3, 100), "Pull kind=Message after=3 limit=100 req=8");
        check(
            &build::pull_result(
                8,
                SyncKind::Message,
                &[Msg { seq: 4, from: "a", to: "b", key: 1, text: "x" }],
                9,
                false,
            ),
            r#"PullResult kind=Message max_seq=9 completed=false 1 message: [seq=4 from=a to=b key=1 text="x"] req=8"#,
        );
        check(
            &build::pull_result(8, SyncKind::Profile, &[], 9, true),
            "PullResult kind=Profile max_seq=9 completed=true 0 messages req=8",
        );
    }

    #[test]
    fn notify_frames() {
        check(&encode::sync_notify(SyncKind::Profile, 4), "SyncNotify kind=Profile seq=4");
        check(&build::read_receipt(5, "bob", 7), "ReadReceipt Single peer=bob read_seq=7 req=5");
        check(
            &build::read_receipt_notify("bob", "alice", 7),
            "ReadReceiptNotify Single reader=bob peer=alice read_seq=7",
        );
        check(&build::recall(6, 42, "bob"), "Recall key=42 Single peer=bob req=6");
        check(&build::recall_notify(42, "alice", "bob", 9), "RecallNotify key=42 from=alice to=bob seq=9");
    }

    #[test]
    fn unknown_body_type_is_described_not_rejected() {
        check(&build::unknown_body(), "Unknown body type 200 req=3");
    }

    /// Guards "every union member has a case": a new member without one would describe
    /// as "Unknown body type".
    #[test]
    fn every_union_member_has_a_name() {
        for body in Body::ENUM_VALUES.iter().filter(|b| **b != Body::NONE) {
            let mut fbb = FlatBufferBuilder::new();
            // An empty Logout table stands in for any body: all their fields are optional.
            let t = client::Logout::create(&mut fbb, &client::LogoutArgs {});
            let bytes = encode::finish_client(fbb, 0, *body, t.as_union_value());
            let frame = parse_client_framed(&bytes, MAX_PAYLOAD_LEN).expect("valid");
            let line = describe(&frame);
            let name = body.variant_name().unwrap_or("?");
            assert!(line.starts_with(name), "{name}: {line}");
        }
    }
}
