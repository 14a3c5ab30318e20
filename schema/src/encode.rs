//! Builders for the frames every tier sends. Each returns a complete frame: the 4-byte
//! header followed by the FlatBuffers payload, ready to write to a socket or to carry
//! as bytes on the link. Callers never assemble headers themselves.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::client::{self, Body, ClientType, KickReason, SyncKind};
use crate::frame::{header, HEADER_LEN};
use crate::link::{self, ConnRef, LinkBody};

/// Copies a finished builder into `header ‖ payload`.
pub fn finish_bytes(fbb: &FlatBufferBuilder) -> Vec<u8> {
    let data = fbb.finished_data();
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header(data.len()));
    out.extend_from_slice(data);
    out
}

/// Finishes a client frame around an already-built body.
pub fn finish_client(
    mut fbb: FlatBufferBuilder,
    request_id: u32,
    body_type: Body,
    body: WIPOffset<UnionWIPOffset>,
) -> Vec<u8> {
    let root = client::Frame::create(&mut fbb, &client::FrameArgs { request_id, body_type, body: Some(body) });
    fbb.finish(root, None);
    finish_bytes(&fbb)
}

/// [`finish_client`] on a borrowed builder (this thread's scratch one: see
/// [`with_builder`]).
pub(crate) fn finish_client_in(
    fbb: &mut FlatBufferBuilder,
    request_id: u32,
    body_type: Body,
    body: WIPOffset<UnionWIPOffset>,
) -> Vec<u8> {
    let root = client::Frame::create(fbb, &client::FrameArgs { request_id, body_type, body: Some(body) });
    fbb.finish(root, None);
    finish_bytes(fbb)
}

/// Runs `build` on this thread's scratch builder (reset first) and returns what it
/// made, typically the finished frame copied out: the hot encoders (SendAck, Push,
/// Deliver, stored messages) then allocate the frame and nothing else — no builder,
/// no zeroed buffer — and write into memory that is already in cache.
pub(crate) fn with_builder<R>(build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> R) -> R {
    SCRATCH.with(|cell| {
        // Nested use (an encoder called while building) gets a builder of its own.
        let mut fresh;
        let mut guard = cell.try_borrow_mut();
        let fbb = match guard.as_deref_mut() {
            Ok(fbb) => fbb,
            Err(_) => {
                fresh = FlatBufferBuilder::new();
                &mut fresh
            }
        };
        fbb.reset();
        let made = build(fbb);
        if fbb.unfinished_data().len() > KEEP_SCRATCH_BYTES {
            *fbb = FlatBufferBuilder::with_capacity(1024);
        }
        made
    })
}

/// Finishes a link frame around an already-built body.
pub fn finish_link(mut fbb: FlatBufferBuilder, body_type: LinkBody, body: WIPOffset<UnionWIPOffset>) -> Vec<u8> {
    let root = link::LinkFrame::create(&mut fbb, &link::LinkFrameArgs { body_type, body: Some(body) });
    fbb.finish(root, None);
    finish_bytes(&fbb)
}

// ---------------------------------------------------------------- client frames

#[allow(clippy::too_many_arguments)]
pub fn login(
    request_id: u32,
    app_id: u32,
    user_id: &str,
    user_sign: &str,
    client_type: ClientType,
    device_id: &str,
    client_version: &str,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let user_id = fbb.create_string(user_id);
    let user_sign = fbb.create_string(user_sign);
    let device_id = fbb.create_string(device_id);
    let client_version = fbb.create_string(client_version);
    let body = client::Login::create(
        &mut fbb,
        &client::LoginArgs {
            app_id,
            user_id: Some(user_id),
            user_sign: Some(user_sign),
            client_type,
            device_id: Some(device_id),
            client_version: Some(client_version),
        },
    );
    finish_client(fbb, request_id, Body::Login, body.as_union_value())
}

/// The parts of a LoginAck, as logic knows them.
#[derive(Debug, Clone, Default)]
pub struct LoginAckParts<'a> {
    pub session_id: u64,
    pub server_time_ms: u64,
    pub heartbeat_interval_ms: u32,
    pub heartbeat_timeout_ms: u32,
    pub max_seqs: &'a [(SyncKind, u64)],
    pub acked_seqs: &'a [(SyncKind, u64)],
    pub max_frame_bytes: u32,
}

pub fn login_ack(request_id: u32, p: &LoginAckParts<'_>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let max: Vec<client::KindSeq> = p.max_seqs.iter().map(|(k, s)| client::KindSeq::new(*k, *s)).collect();
    let acked: Vec<client::KindSeq> = p.acked_seqs.iter().map(|(k, s)| client::KindSeq::new(*k, *s)).collect();
    let max_seqs = fbb.create_vector(&max);
    let acked_seqs = fbb.create_vector(&acked);
    let body = client::LoginAck::create(
        &mut fbb,
        &client::LoginAckArgs {
            session_id: p.session_id,
            server_time_ms: p.server_time_ms,
            heartbeat_interval_ms: p.heartbeat_interval_ms,
            heartbeat_timeout_ms: p.heartbeat_timeout_ms,
            max_seqs: Some(max_seqs),
            acked_seqs: Some(acked_seqs),
            max_frame_bytes: p.max_frame_bytes,
        },
    );
    finish_client(fbb, request_id, Body::LoginAck, body.as_union_value())
}

pub fn logout(request_id: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::Logout::create(&mut fbb, &client::LogoutArgs {});
    finish_client(fbb, request_id, Body::Logout, body.as_union_value())
}

pub fn ping(request_id: u32, client_time_ms: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::Ping::create(&mut fbb, &client::PingArgs { client_time_ms });
    finish_client(fbb, request_id, Body::Ping, body.as_union_value())
}

pub fn pong(request_id: u32, client_time_ms: u64, server_time_ms: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::Pong::create(&mut fbb, &client::PongArgs { client_time_ms, server_time_ms });
    finish_client(fbb, request_id, Body::Pong, body.as_union_value())
}

pub fn error(request_id: u32, code: u32, message: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let message = fbb.create_string(message);
    let body = client::Error::create(&mut fbb, &client::ErrorArgs { code, message: Some(message) });
    finish_client(fbb, request_id, Body::Error, body.as_union_value())
}

pub fn kick(reason: KickReason, message: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let message = fbb.create_string(message);
    let body = client::Kick::create(&mut fbb, &client::KickArgs { reason, message: Some(message) });
    finish_client(fbb, 0, Body::Kick, body.as_union_value())
}

pub fn sync_notify(kind: SyncKind, seq: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::SyncNotify::create(&mut fbb, &client::SyncNotifyArgs { kind, seq });
    finish_client(fbb, 0, Body::SyncNotify, body.as_union_value())
}

pub fn push_ack(request_id: u32, kind: SyncKind, seq: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::PushAck::create(&mut fbb, &client::PushAckArgs { kind, seq, group_id: None });
    finish_client(fbb, request_id, Body::PushAck, body.as_union_value())
}

/// A PushAck of a group's timeline up to group seq `seq`.
pub fn push_ack_group(request_id: u32, group_id: &str, seq: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64 + group_id.len());
    let group_id = Some(fbb.create_string(group_id));
    let body = client::PushAck::create(&mut fbb, &client::PushAckArgs { kind: SyncKind::Message, seq, group_id });
    finish_client(fbb, request_id, Body::PushAck, body.as_union_value())
}

pub fn pull(request_id: u32, kind: SyncKind, after_seq: u64, limit: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = client::Pull::create(&mut fbb, &client::PullArgs { kind, after_seq, limit, group_id: None });
    finish_client(fbb, request_id, Body::Pull, body.as_union_value())
}

/// A Pull of a group's timeline: messages with a group seq above `after_seq`.
pub fn pull_group(request_id: u32, group_id: &str, after_seq: u64, limit: u32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64 + group_id.len());
    let group_id = Some(fbb.create_string(group_id));
    let args = client::PullArgs { kind: SyncKind::Message, after_seq, limit, group_id };
    let body = client::Pull::create(&mut fbb, &args);
    finish_client(fbb, request_id, Body::Pull, body.as_union_value())
}

// ---------------------------------------------------------------- link frames

/// Link protocol version carried in `Hello`.
pub const LINK_VERSION: u32 = 1;

pub fn link_hello(gateway_id: u32, core: u16, cores: u16) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = link::Hello::create(&mut fbb, &link::HelloArgs { gateway_id, core, cores, version: LINK_VERSION });
    finish_link(fbb, LinkBody::Hello, body.as_union_value())
}

/// What the gateway knows about a freshly authenticated connection.
#[derive(Debug, Clone)]
pub struct SessionOpenParts<'a> {
    pub conn: ConnRef,
    pub app_id: u32,
    pub user_id: &'a str,
    pub client_type: u8,
    pub device_id: &'a str,
    pub request_id: u32,
    pub resume: bool,
    pub remote_addr: &'a str,
}

pub fn link_session_open(p: &SessionOpenParts<'_>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let user_id = fbb.create_string(p.user_id);
    let device_id = fbb.create_string(p.device_id);
    let remote_addr = fbb.create_string(p.remote_addr);
    let body = link::SessionOpen::create(
        &mut fbb,
        &link::SessionOpenArgs {
            conn: Some(&p.conn),
            app_id: p.app_id,
            user_id: Some(user_id),
            client_type: p.client_type,
            device_id: Some(device_id),
            request_id: p.request_id,
            resume: p.resume,
            remote_addr: Some(remote_addr),
        },
    );
    finish_link(fbb, LinkBody::SessionOpen, body.as_union_value())
}

pub fn link_session_opened(conn: &ConnRef, ok: bool, frame: &[u8]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(frame.len() + 64);
    let frame = fbb.create_vector(frame);
    let body =
        link::SessionOpened::create(&mut fbb, &link::SessionOpenedArgs { conn: Some(conn), ok, frame: Some(frame) });
    finish_link(fbb, LinkBody::SessionOpened, body.as_union_value())
}

pub fn link_upstream(conn: &ConnRef, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 64);
    link_upstream_into(&mut out, conn, frame);
    out
}

/// [`link_upstream`] appended to `out`. Allocates nothing once `out` and this thread's
/// scratch builder have grown to the frame sizes in use (the per-frame path of a
/// gateway core, which batches link frames in one buffer).
pub fn link_upstream_into(out: &mut Vec<u8>, conn: &ConnRef, frame: &[u8]) {
    with_scratch(out, |fbb| {
        let frame = fbb.create_vector(frame);
        let body = link::Upstream::create(fbb, &link::UpstreamArgs { conn: Some(conn), frame: Some(frame) });
        (LinkBody::Upstream, body.as_union_value())
    });
}

pub fn link_session_closed(conn: &ConnRef, reason: link::CloseReason) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    link_session_closed_into(&mut out, conn, reason);
    out
}

/// [`link_session_closed`] appended to `out`, without allocating (see
/// [`link_upstream_into`]).
pub fn link_session_closed_into(out: &mut Vec<u8>, conn: &ConnRef, reason: link::CloseReason) {
    with_scratch(out, |fbb| {
        let body = link::SessionClosed::create(fbb, &link::SessionClosedArgs { conn: Some(conn), reason });
        (LinkBody::SessionClosed, body.as_union_value())
    });
}

/// A scratch builder that grew past this is dropped after use rather than kept.
const KEEP_SCRATCH_BYTES: usize = 1 << 20;

thread_local! {
    /// Reused by the `*_into` encoders: `reset` keeps the builder's buffer.
    static SCRATCH: std::cell::RefCell<FlatBufferBuilder<'static>> =
        std::cell::RefCell::new(FlatBufferBuilder::with_capacity(1024));
}

/// Builds a link frame with this thread's scratch builder (`body` creates the body)
/// and appends `header ‖ payload` to `out`.
fn with_scratch(
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut FlatBufferBuilder<'static>) -> (LinkBody, WIPOffset<UnionWIPOffset>),
) {
    with_builder(|fbb| {
        let (body_type, body) = body(fbb);
        let root = link::LinkFrame::create(fbb, &link::LinkFrameArgs { body_type, body: Some(body) });
        fbb.finish(root, None);
        let data = fbb.finished_data();
        out.reserve(HEADER_LEN + data.len());
        out.extend_from_slice(&header(data.len()));
        out.extend_from_slice(data);
    });
}

/// One encoding of `frame` for every connection in `conns` (all on one gateway core).
/// Built in this thread's scratch builder: the frame is the only allocation.
pub fn link_deliver(conns: &[ConnRef], frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    with_scratch(&mut out, |fbb| {
        let frame = fbb.create_vector(frame);
        let conns = fbb.create_vector(conns);
        let body = link::Deliver::create(fbb, &link::DeliverArgs { conns: Some(conns), frame: Some(frame) });
        (LinkBody::Deliver, body.as_union_value())
    });
    out
}

pub fn link_close(conn: &ConnRef, frame: &[u8]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(frame.len() + 64);
    let frame = fbb.create_vector(frame);
    let body = link::Close::create(&mut fbb, &link::CloseArgs { conn: Some(conn), frame: Some(frame) });
    finish_link(fbb, LinkBody::Close, body.as_union_value())
}

pub fn link_ping(time_ms: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = link::LinkPing::create(&mut fbb, &link::LinkPingArgs { time_ms });
    finish_link(fbb, LinkBody::LinkPing, body.as_union_value())
}

pub fn link_pong(time_ms: u64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let body = link::LinkPong::create(&mut fbb, &link::LinkPongArgs { time_ms });
    finish_link(fbb, LinkBody::LinkPong, body.as_union_value())
}

/// Logic's running total of the link's Sends it has answered (see `SendsAnswered` in
/// link.fbs).
pub fn link_sends_answered(total: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    link_sends_answered_into(&mut out, total);
    out
}

/// [`link_sends_answered`] appended to `out`, without allocating (see
/// [`link_upstream_into`]).
pub fn link_sends_answered_into(out: &mut Vec<u8>, total: u64) {
    with_scratch(out, |fbb| {
        let body = link::SendsAnswered::create(fbb, &link::SendsAnsweredArgs { total });
        (LinkBody::SendsAnswered, body.as_union_value())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{parse_client, parse_link, split_frame};

    fn payload(f: &[u8]) -> &[u8] {
        assert_eq!(split_frame(f, 1 << 20), Ok(Some(f.len())));
        &f[HEADER_LEN..]
    }

    #[test]
    fn login_roundtrip() {
        let f = login(9, 10_000, "alice", "sig", ClientType::Web, "web-1", "0.1");
        let fr = parse_client(payload(&f)).unwrap();
        let l = fr.body_as_login().unwrap();
        assert_eq!(
            (fr.request_id(), l.app_id(), l.user_id(), l.device_id()),
            (9, 10_000, Some("alice"), Some("web-1"))
        );
        assert_eq!(l.client_type(), ClientType::Web);
    }

    #[test]
    fn login_ack_roundtrip() {
        let max = [(SyncKind::Message, 5), (SyncKind::Profile, 2)];
        let f = login_ack(
            1,
            &LoginAckParts { session_id: 77, max_seqs: &max, max_frame_bytes: 65_536, ..Default::default() },
        );
        let ack = parse_client(payload(&f)).unwrap().body_as_login_ack().unwrap();
        assert_eq!(ack.session_id(), 77);
        let got: Vec<_> = ack.max_seqs().unwrap().iter().map(|k| (k.kind(), k.seq())).collect();
        assert_eq!(got, max);
    }

    #[test]
    fn link_deliver_carries_frame_and_targets() {
        let inner = sync_notify(SyncKind::Profile, 3);
        let conns = [ConnRef::new(1, 0, 5, 1), ConnRef::new(1, 0, 6, 2)];
        let f = link_deliver(&conns, &inner);
        let d = parse_link(payload(&f)).unwrap().body_as_deliver().unwrap();
        assert_eq!(d.conns().unwrap().len(), 2);
        assert_eq!(d.conns().unwrap().get(1).slot(), 6);
        assert_eq!(d.frame().unwrap().bytes(), &inner[..]);
    }

    #[test]
    fn sends_answered_carries_its_total() {
        let f = link_sends_answered(u64::MAX - 1);
        let a = parse_link(payload(&f)).unwrap().body_as_sends_answered().unwrap();
        assert_eq!(a.total(), u64::MAX - 1);
    }

    #[test]
    fn into_encoders_append_the_same_frames() {
        let c = ConnRef::new(1, 2, 3, 4);
        let inner = ping(5, 6);
        let big = vec![7u8; KEEP_SCRATCH_BYTES + 10];
        let mut out = b"prefix".to_vec();
        link_upstream_into(&mut out, &c, &inner);
        link_session_closed_into(&mut out, &c, link::CloseReason::LoginTimeout);
        link_upstream_into(&mut out, &c, &big);
        link_upstream_into(&mut out, &c, &inner);
        let mut want = b"prefix".to_vec();
        want.extend(link_upstream(&c, &inner));
        want.extend(link_session_closed(&c, link::CloseReason::LoginTimeout));
        want.extend(link_upstream(&c, &big));
        want.extend(link_upstream(&c, &inner));
        assert_eq!(out, want);
        let f = link_upstream(&c, &inner);
        let up = parse_link(payload(&f)).unwrap().body_as_upstream().unwrap();
        assert_eq!((up.conn().unwrap().slot(), up.frame().unwrap().bytes()), (3, &inner[..]));
        let f = link_session_closed(&c, link::CloseReason::LoginTimeout);
        let closed = parse_link(payload(&f)).unwrap().body_as_session_closed().unwrap();
        assert_eq!(closed.reason(), link::CloseReason::LoginTimeout);
    }

    #[test]
    fn error_and_kick_roundtrip() {
        let e = error(4, 80003, "login required");
        let fr = parse_client(payload(&e)).unwrap();
        assert_eq!(fr.body_as_error().unwrap().code(), 80003);
        let k = kick(KickReason::ReplacedByNewLogin, "another device");
        let fr = parse_client(payload(&k)).unwrap();
        assert_eq!(fr.body_as_kick().unwrap().reason(), KickReason::ReplacedByNewLogin);
    }
}
