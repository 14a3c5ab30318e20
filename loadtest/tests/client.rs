//! The client and `tern client` against small in-test servers (TCP and WebSocket) that
//! play the gateway's part of a session from a script.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tern_loadtest::cli::{run_client_to, CliClientType, ClientArgs};
use tern_loadtest::client::{Client, ClientError, FrameBuffer, LoginOutcome, LoginRequest, OwnedFrame, Transport};
use tern_schema::client::{Body, ClientType, SyncKind};
use tern_schema::encode::{self, LoginAckParts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(5);

/// The server end of one connection.
enum ServerConn {
    Tcp(TcpStream, FrameBuffer),
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl ServerConn {
    async fn accept(listener: &TcpListener, transport: Transport) -> (ServerConn, SocketAddr) {
        let (stream, peer) = listener.accept().await.expect("accept");
        let conn = match transport {
            Transport::Tcp => ServerConn::Tcp(stream, FrameBuffer::new()),
            Transport::Ws => {
                ServerConn::Ws(Box::new(tokio_tungstenite::accept_async(stream).await.expect("ws handshake")))
            }
        };
        (conn, peer)
    }

    /// The next frame, or `None` once the client has closed.
    async fn recv(&mut self) -> Option<OwnedFrame> {
        match self {
            ServerConn::Tcp(s, fb) => loop {
                if let Some(f) = fb.next_frame().expect("client sends valid frames") {
                    return Some(f);
                }
                let mut chunk = [0u8; 1024];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => fb.extend(&chunk[..n]),
                }
            },
            ServerConn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Some(OwnedFrame::parse(b).expect("valid frame")),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    async fn expect(&mut self, body: Body) -> OwnedFrame {
        let f = tokio::time::timeout(T, self.recv()).await.expect("client frame in time").expect("client open");
        assert_eq!(f.body_type(), body, "got {}", f.describe());
        f
    }

    /// Sends frames; on TCP all of them in one write, so the client reads several at once.
    async fn send(&mut self, frames: &[&[u8]]) {
        match self {
            ServerConn::Tcp(s, _) => s.write_all(&frames.concat()).await.expect("write"),
            ServerConn::Ws(ws) => {
                for f in frames {
                    ws.send(Message::Binary(f.to_vec().into())).await.expect("ws send");
                }
            }
        }
    }

    /// Sends one frame in three pieces with pauses, so the client sees partial reads
    /// (on WebSocket a frame is one message, so it goes whole).
    async fn send_in_pieces(&mut self, frame: &[u8]) {
        match self {
            ServerConn::Tcp(s, _) => {
                for piece in [&frame[..3], &frame[3..9], &frame[9..]] {
                    s.write_all(piece).await.expect("write");
                    s.flush().await.expect("flush");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            ServerConn::Ws(_) => self.send(&[frame]).await,
        }
    }

    async fn close(self, reason: &str) {
        match self {
            ServerConn::Tcp(mut s, _) => {
                let _ = s.shutdown().await;
            }
            ServerConn::Ws(mut ws) => {
                let cf = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                let _ = WebSocketStream::close(&mut *ws, Some(cf)).await;
                // Let the close handshake finish before the socket goes.
                let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                tokio::time::timeout(T, drain).await.expect("client completes the close handshake");
            }
        }
    }
}

async fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}

fn login_request(user: &str) -> LoginRequest {
    LoginRequest {
        app_id: 10_000,
        user_id: user.into(),
        user_sign: "sig".into(),
        client_type: ClientType::Linux,
        device_id: "dev-1".into(),
        request_id: 1,
    }
}

fn ack(request_id: u32, hb_ms: u32) -> Vec<u8> {
    encode::login_ack(
        request_id,
        &LoginAckParts {
            session_id: 5,
            server_time_ms: 1,
            heartbeat_interval_ms: hb_ms,
            heartbeat_timeout_ms: hb_ms * 3,
            max_seqs: &[(SyncKind::Message, 3), (SyncKind::Profile, 4)],
            acked_seqs: &[(SyncKind::Message, 1)],
            max_frame_bytes: 65_536,
        },
    )
}

async fn login_then_notify(transport: Transport) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, transport).await;
        let login = conn.expect(Body::Login).await;
        let l = login.frame().body_as_login().expect("login body");
        assert_eq!((l.app_id(), l.user_id(), l.device_id()), (10_000, Some("alice"), Some("dev-1")));
        conn.send(&[&ack(login.request_id(), 30_000), &encode::sync_notify(SyncKind::Profile, 4)]).await;
        conn.send_in_pieces(&encode::pong(9, 100, 101)).await;
        conn.expect(Body::Logout).await;
        conn.close("bye").await;
    });

    let mut c = Client::connect(transport, &addr).await.expect("connect");
    let LoginOutcome::Ok(info) = c.login(&login_request("alice")).await.expect("login") else {
        panic!("login not accepted")
    };
    assert_eq!((info.session_id, info.heartbeat_interval_ms, info.heartbeat_timeout_ms), (5, 30_000, 90_000));
    assert_eq!(info.max_seqs, vec![(SyncKind::Message, 3), (SyncKind::Profile, 4)]);
    assert_eq!((info.acked_seq(SyncKind::Message), info.max_frame_bytes), (1, 65_536));

    let n = c.recv_timeout(T).await.expect("recv").expect("a frame");
    assert_eq!(n.describe(), "SyncNotify kind=Profile seq=4");
    let p = c.recv_timeout(T).await.expect("recv").expect("a frame");
    assert_eq!(p.describe(), "Pong client_t=100 server_t=101 req=9");

    c.send(&encode::logout(2)).await.expect("send logout");
    let closed = c.recv_timeout(T).await;
    let Err(ClientError::Closed { reason }) = closed else { panic!("expected close, got {closed:?}") };
    match transport {
        Transport::Tcp => assert_eq!(reason, None),
        Transport::Ws => assert_eq!(reason.as_deref(), Some("1008 bye")),
    }
    assert!(c.closed().is_some());
    assert!(matches!(c.recv().await, Err(ClientError::Closed { .. })), "a close is sticky");
    server.await.expect("server script");
}

#[tokio::test]
async fn login_then_notify_tcp() {
    login_then_notify(Transport::Tcp).await;
}

#[tokio::test]
async fn login_then_notify_ws() {
    login_then_notify(Transport::Ws).await;
}

async fn rejected(transport: Transport) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, transport).await;
        let login = conn.expect(Body::Login).await;
        conn.send(&[&encode::error(login.request_id(), 60004, "signature has expired")]).await;
        conn.close("signature has expired").await;
    });
    let mut c = Client::connect(transport, &addr).await.expect("connect");
    let outcome = c.login(&login_request("alice")).await.expect("an answer");
    assert_eq!(outcome, LoginOutcome::Rejected { code: 60004, message: "signature has expired".into() });
    assert!(matches!(c.recv_timeout(T).await, Err(ClientError::Closed { .. })));
    server.await.expect("server script");
}

#[tokio::test]
async fn rejected_tcp() {
    rejected(Transport::Tcp).await;
}

#[tokio::test]
async fn rejected_ws() {
    rejected(Transport::Ws).await;
}

#[tokio::test]
async fn close_before_login_answer_is_reported() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, Transport::Ws).await;
        conn.expect(Body::Login).await;
        conn.close("server full").await;
    });
    let mut c = Client::connect(Transport::Ws, &addr).await.expect("connect");
    let res = c.login(&login_request("alice")).await;
    let Err(ClientError::Closed { reason }) = res else { panic!("expected close, got {res:?}") };
    assert_eq!(reason.as_deref(), Some("1008 server full"));
    server.await.expect("server script");
}

#[tokio::test]
async fn frames_before_the_ack_are_kept_and_recv_until_requeues_on_timeout() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, Transport::Tcp).await;
        let login = conn.expect(Body::Login).await;
        conn.send(&[&encode::sync_notify(SyncKind::Message, 1), &ack(login.request_id(), 1000)]).await;
        conn.send(&[&encode::sync_notify(SyncKind::Message, 2), &encode::pong(7, 1, 2)]).await;
        conn.expect(Body::Logout).await;
    });
    let mut c = Client::connect(Transport::Tcp, &addr).await.expect("connect");
    assert!(matches!(c.login(&login_request("alice")).await, Ok(LoginOutcome::Ok(_))));

    let (reply, skipped) = c.recv_reply(7, T).await.expect("pong");
    assert_eq!(reply.body_type(), Body::Pong);
    let skipped: Vec<_> = skipped.iter().map(OwnedFrame::describe).collect();
    assert_eq!(skipped, ["SyncNotify kind=Message seq=1", "SyncNotify kind=Message seq=2"]);

    // Nothing more is coming: a timeout, and no frame lost on the way.
    assert!(matches!(c.recv_timeout(Duration::from_millis(50)).await, Ok(None)));
    assert!(matches!(c.recv_until(|_| false, Duration::from_millis(50)).await, Err(ClientError::Timeout)));
    c.send(&encode::logout(3)).await.expect("logout");
    server.await.expect("server script");
}

#[tokio::test]
async fn connect_from_binds_the_source_address() {
    let (listener, addr) = listen().await;
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for transport in [Transport::Tcp, Transport::Ws] {
        let accept = ServerConn::accept(&listener, transport);
        let (conn, (_server, peer)) = tokio::join!(Client::connect_from(transport, &addr, source), accept);
        let c = conn.expect("connect");
        assert_eq!((peer.ip(), c.local_addr().ip()), (source, source), "{transport}");
    }
}

// ------------------------------------------------------------------ tern client

fn cli_args(addr: &str, transport: Transport) -> ClientArgs {
    ClientArgs {
        user: "alice".into(),
        app_id: 10_000,
        sign: None,
        secret: Some("s3cret".into()),
        device_id: Some("cli-test".into()),
        client_type: CliClientType::Linux,
        transport,
        addr: Some(addr.into()),
        duration: 1,
        pull: true,
        pull_limit: 2,
        ack: true,
    }
}

/// Builds a PullResult (there is no `encode` helper for it yet).
fn pull_result(request_id: u32, seqs: &[u64], max_seq: u64, completed: bool) -> Vec<u8> {
    use tern_schema::client as c;
    use tern_schema::flatbuffers::FlatBufferBuilder;
    let mut fbb = FlatBufferBuilder::new();
    let msgs: Vec<_> = seqs
        .iter()
        .map(|&seq| {
            let from_id = fbb.create_string("bob");
            let to_id = fbb.create_string("alice");
            c::Message::create(
                &mut fbb,
                &c::MessageArgs {
                    seq,
                    message_key: seq * 10,
                    from_id: Some(from_id),
                    to_id: Some(to_id),
                    ..Default::default()
                },
            )
        })
        .collect();
    let messages = fbb.create_vector(&msgs);
    let body = c::PullResult::create(
        &mut fbb,
        &c::PullResultArgs { kind: SyncKind::Message, messages: Some(messages), max_seq, completed },
    );
    encode::finish_client(fbb, request_id, Body::PullResult, body.as_union_value())
}

async fn cli_session(transport: Transport) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, transport).await;
        let login = conn.expect(Body::Login).await;
        let l = login.frame().body_as_login().expect("login body");
        let sign = l.user_sign().expect("a signature").to_owned();
        assert!(tern_schema::sig::verify(b"s3cret", 10_000, "alice", &sign, 0).is_ok(), "minted signature verifies");
        conn.send(&[&ack(login.request_id(), 200)]).await;
        // Pages: acked 1 → (2, 3) not completed → () completed.
        let pull = conn.expect(Body::Pull).await;
        assert_eq!(pull.describe(), format!("Pull kind=Message after=1 limit=2 req={}", pull.request_id()));
        conn.send(&[&pull_result(pull.request_id(), &[2, 3], 3, false)]).await;
        let ack = conn.expect(Body::PushAck).await;
        assert!(ack.describe().starts_with("PushAck kind=Message seq=3"));
        let pull = conn.expect(Body::Pull).await;
        assert!(pull.describe().starts_with("Pull kind=Message after=3 limit=2"));
        conn.send(&[&pull_result(pull.request_id(), &[], 3, true)]).await;
        conn.send(&[&encode::sync_notify(SyncKind::Profile, 4)]).await;
        let mut pings = 0;
        loop {
            let f = tokio::time::timeout(T, conn.recv()).await.expect("in time").expect("open");
            match f.body_type() {
                Body::Ping => pings += 1,
                Body::Logout => break,
                _ => panic!("unexpected {}", f.describe()),
            }
        }
        conn.close("bye").await;
        pings
    });
    let mut out = Vec::new();
    run_client_to(cli_args(&addr, transport), &mut out).await.expect("client succeeds");
    let pings = server.await.expect("server script");
    assert!(pings >= 3, "heartbeat every 200 ms for 1 s, got {pings} pings");

    let out = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = out.lines().collect();
    for line in &lines {
        let (ts, rest) = line.split_at(12);
        assert!(ts.as_bytes()[2] == b':' && ts.as_bytes()[8] == b'.', "timestamp in {line:?}");
        assert!([" < ", " > ", " * "].iter().any(|d| rest.starts_with(d)), "direction in {line:?}");
    }
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    for needle in [
        "< LoginAck session=5 hb=200/600",
        "> Pull kind=Message after=1 limit=2",
        "< PullResult kind=Message max_seq=3 completed=false 2 messages",
        "> PushAck kind=Message seq=3",
        "< SyncNotify kind=Profile seq=4",
        "> Ping t=",
        "* duration elapsed",
        "> Logout",
    ] {
        assert!(has(needle), "no line with {needle:?} in:\n{out}");
    }
}

#[tokio::test]
async fn cli_session_tcp() {
    cli_session(Transport::Tcp).await;
}

#[tokio::test]
async fn cli_session_ws() {
    cli_session(Transport::Ws).await;
}

#[tokio::test]
async fn cli_reports_rejection() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, Transport::Tcp).await;
        let login = conn.expect(Body::Login).await;
        conn.send(&[&encode::error(login.request_id(), 60004, "signature has expired")]).await;
        conn.close("").await;
    });
    let mut out = Vec::new();
    let err = run_client_to(cli_args(&addr, Transport::Tcp), &mut out).await.expect_err("rejected login fails");
    assert_eq!(err.to_string(), r#"login rejected: code=60004 "signature has expired""#);
    let out = String::from_utf8(out).expect("utf-8");
    assert!(out.contains(r#"< Error code=60004 "signature has expired""#), "{out}");
    server.await.expect("server script");
}

#[tokio::test]
async fn cli_exits_nonzero_when_the_server_closes() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (mut conn, _) = ServerConn::accept(&listener, Transport::Ws).await;
        let login = conn.expect(Body::Login).await;
        conn.send(&[&ack(login.request_id(), 30_000)]).await;
        conn.send(&[&encode::kick(tern_schema::client::KickReason::ReplacedByNewLogin, "another device")]).await;
        conn.close("kicked").await;
    });
    let mut args = cli_args(&addr, Transport::Ws);
    (args.pull, args.duration) = (false, 0);
    let mut out = Vec::new();
    let err = run_client_to(args, &mut out).await.expect_err("a kick ends the session with an error");
    assert!(err.to_string().contains("ReplacedByNewLogin"), "{err}");
    server.await.expect("server script");
}
