//! End-to-end tests of the gateway: `start()` on ephemeral ports, a fake logic link
//! server (a test double of the internal peer, speaking the link protocol with
//! tern_schema), and hand-rolled std TCP and WebSocket clients.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_gateway::{AppSecrets, GatewayConfig, GatewayExtras, GatewayHandle};
use tern_schema::client::{Body, ClientType, KickReason, SyncKind};
use tern_schema::link::{CloseReason, ConnRef, LinkBody};
use tern_schema::{codes, encode, frame, message, sig, HEADER_LEN};

const APP: u32 = 10_000;
const SECRET: &str = "test-secret";
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- fake logic

#[derive(Debug)]
enum Ev {
    Hello,
    Open { conn: ConnRef, user: String, resume: bool },
    Upstream { conn: ConnRef, frame: Vec<u8> },
    Closed { conn: ConnRef, reason: CloseReason },
}

/// Accepts link connections, reports what gateways send, answers logins.
struct FakeLogic {
    addr: SocketAddr,
    events: mpsc::Receiver<Ev>,
    /// Events received but not yet matched by an `expect`.
    pending: RefCell<VecDeque<Ev>>,
    links: Arc<Mutex<HashMap<u16, TcpStream>>>,
    /// Answer SessionOpen with ok + LoginAck (true) or a refusal (false).
    accept_logins: Arc<AtomicBool>,
}

fn read_frame(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let len = frame::parse_header(h, frame::MAX_PAYLOAD_LEN).ok()?;
    let mut f = h.to_vec();
    f.resize(HEADER_LEN + len, 0);
    s.read_exact(&mut f[HEADER_LEN..]).ok()?;
    Some(f)
}

impl FakeLogic {
    fn start() -> FakeLogic {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::channel();
        let links: Arc<Mutex<HashMap<u16, TcpStream>>> = Arc::default();
        let accept_logins = Arc::new(AtomicBool::new(true));
        let (l2, a2) = (links.clone(), accept_logins.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, links, accept) = (tx.clone(), l2.clone(), a2.clone());
                std::thread::spawn(move || serve_link(stream, tx, links, accept));
            }
        });
        FakeLogic { addr, events, pending: RefCell::default(), links, accept_logins }
    }

    fn send(&self, core: u16, frame: &[u8]) {
        let mut links = self.links.lock().unwrap();
        links.get_mut(&core).expect("link of that core").write_all(frame).unwrap();
    }

    /// Drops every link connection (logic restarting).
    fn kill_links(&self) {
        for (_, s) in self.links.lock().unwrap().drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Waits for the first event matching `pred`; other events stay for later.
    fn expect<T>(&self, what: &str, mut pred: impl FnMut(&Ev) -> Option<T>) -> T {
        self.expect_within(WAIT, &mut pred).unwrap_or_else(|| panic!("timed out waiting for {what}"))
    }

    fn expect_within<T>(&self, wait: Duration, pred: &mut impl FnMut(&Ev) -> Option<T>) -> Option<T> {
        let mut pending = self.pending.borrow_mut();
        if let Some(i) = pending.iter().position(|e| pred(e).is_some()) {
            return pending.remove(i).and_then(|e| pred(&e));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.events.recv_timeout(left).ok()?;
            match pred(&ev) {
                Some(t) => return Some(t),
                None => pending.push_back(ev),
            }
        }
    }

    fn wait_hellos(&self, n: usize) {
        for _ in 0..n {
            self.expect("hello", |e| matches!(e, Ev::Hello).then_some(()));
        }
        // Let the gateway's cores see their links as up.
        std::thread::sleep(Duration::from_millis(50));
    }

    fn expect_open(&self, user: &str) -> ConnRef {
        self.expect(&format!("SessionOpen of {user}"), |e| match e {
            Ev::Open { conn, user: u, resume: false } if u == user => Some(*conn),
            _ => None,
        })
    }

    fn expect_closed(&self, conn: ConnRef) -> CloseReason {
        self.expect("SessionClosed", |e| match e {
            Ev::Closed { conn: c, reason } if *c == conn => Some(*reason),
            _ => None,
        })
    }
}

fn serve_link(
    mut stream: TcpStream,
    tx: mpsc::Sender<Ev>,
    links: Arc<Mutex<HashMap<u16, TcpStream>>>,
    accept: Arc<AtomicBool>,
) {
    let Some(first) = read_frame(&mut stream) else { return };
    let hello = frame::parse_link(&first[HEADER_LEN..]).unwrap().body_as_hello().expect("Hello first");
    assert_eq!(hello.version(), encode::LINK_VERSION);
    let core = hello.core();
    links.lock().unwrap().insert(core, stream.try_clone().unwrap());
    assert!(core < hello.cores());
    let _ = tx.send(Ev::Hello);
    while let Some(f) = read_frame(&mut stream) {
        let lf = frame::parse_link(&f[HEADER_LEN..]).expect("gateway sends valid link frames");
        let ev = match lf.body_type() {
            LinkBody::SessionOpen => {
                let o = lf.body_as_session_open().unwrap();
                let conn = *o.conn().unwrap();
                assert_eq!(conn.core(), core, "a core opens only its own connections");
                if !o.resume() {
                    let reply = if accept.load(Ordering::SeqCst) {
                        let ack = encode::login_ack(
                            o.request_id(),
                            &encode::LoginAckParts {
                                session_id: 42,
                                heartbeat_interval_ms: 1_000,
                                max_seqs: &[(SyncKind::Message, 7)],
                                ..Default::default()
                            },
                        );
                        encode::link_session_opened(&conn, true, &ack)
                    } else {
                        let err = encode::error(o.request_id(), codes::USER_DELETED, "deleted");
                        encode::link_session_opened(&conn, false, &err)
                    };
                    let mut links = links.lock().unwrap();
                    let _ = links.get_mut(&core).map(|s| s.write_all(&reply));
                }
                Ev::Open { conn, user: o.user_id().unwrap_or("").to_owned(), resume: o.resume() }
            }
            LinkBody::Upstream => {
                let u = lf.body_as_upstream().unwrap();
                Ev::Upstream { conn: *u.conn().unwrap(), frame: u.frame().unwrap().bytes().to_vec() }
            }
            LinkBody::SessionClosed => {
                let c = lf.body_as_session_closed().unwrap();
                Ev::Closed { conn: *c.conn().unwrap(), reason: c.reason() }
            }
            _ => continue,
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- clients

/// A client over plain TCP or WebSocket.
struct Client {
    s: TcpStream,
    ws: bool,
}

impl Client {
    fn tcp(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        Client { s, ws: false }
    }

    fn ws(addr: SocketAddr) -> Client {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: tern\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut resp = Vec::new();
        let mut b = [0u8; 1];
        while !resp.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            resp.push(b[0]);
        }
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{resp}");
        Client { s, ws: true }
    }

    fn send(&mut self, f: &[u8]) {
        let bytes = self.wire_bytes(f);
        self.s.write_all(&bytes).unwrap();
    }

    /// The bytes that carry Tern frame `f` on this connection (a masked binary message
    /// on WebSocket).
    fn wire_bytes(&self, f: &[u8]) -> Vec<u8> {
        if !self.ws {
            return f.to_vec();
        }
        ws_client_frame(0x82, f)
    }
}

/// A masked client WebSocket frame with first byte `b0` (FIN + opcode).
fn ws_client_frame(b0: u8, f: &[u8]) -> Vec<u8> {
    {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![b0];
        match f.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(f.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }
}

impl Client {
    /// Writes `bytes` in two pieces cut at `at`, with a pause between them long enough
    /// for the gateway to read the first piece on its own.
    fn send_split(&mut self, bytes: &[u8], at: usize, pause: Duration) {
        let at = at.min(bytes.len());
        self.s.write_all(&bytes[..at]).unwrap();
        std::thread::sleep(pause);
        self.s.write_all(&bytes[at..]).unwrap();
    }

    /// The next Tern frame, or None at end of stream / WebSocket close.
    fn recv(&mut self) -> Option<Vec<u8>> {
        if !self.ws {
            return read_frame(&mut self.s);
        }
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).ok()?;
            assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
            let len = match h[1] & 0x7F {
                126 => {
                    let mut l = [0u8; 2];
                    self.s.read_exact(&mut l).ok()?;
                    u16::from_be_bytes(l) as usize
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.s.read_exact(&mut l).ok()?;
                    u64::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut p = vec![0u8; len];
            self.s.read_exact(&mut p).ok()?;
            match h[0] & 0x0F {
                0x2 => return Some(p),
                0x8 => return None,
                _ => continue,
            }
        }
    }

    fn recv_kind(&mut self) -> String {
        self.recv().map_or_else(|| "closed".to_owned(), |f| kind(&f))
    }

    /// The server closes the connection (after any frames still in flight).
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 1024];
        loop {
            assert!(Instant::now() < deadline, "connection not closed");
            match self.s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("expected close, got {e}"),
            }
        }
    }

    fn login(&mut self, user: &str) -> String {
        self.send(&login_frame(user, &sign(user)));
        self.recv_kind()
    }
}

fn sign(user: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    sig::sign(SECRET.as_bytes(), APP, user, now + 3_600)
}

fn login_frame(user: &str, sign: &str) -> Vec<u8> {
    encode::login(1, APP, user, sign, ClientType::Ios, "phone-1", "test")
}

/// A short description of a client frame: kind plus the detail tests check.
fn kind(f: &[u8]) -> String {
    let fr = frame::parse_client_framed(f, 1 << 24).expect("valid client frame");
    match fr.body_type() {
        Body::Error => format!("Error({})", fr.body_as_error().unwrap().code()),
        Body::Kick => format!("Kick({:?})", fr.body_as_kick().unwrap().reason()),
        Body::Pong => format!("Pong({})", fr.request_id()),
        Body::LoginAck => format!("LoginAck({})", fr.body_as_login_ack().unwrap().session_id()),
        b => b.variant_name().unwrap_or("?").to_owned(),
    }
}

fn config(fake: &FakeLogic) -> GatewayConfig {
    GatewayConfig {
        tcp_addr: "127.0.0.1:0".into(),
        ws_addr: "127.0.0.1:0".into(),
        cores: 2,
        gateway_id: 7,
        link_addr: fake.addr.to_string(),
        link_reconnect_max_ms: 200,
        ..GatewayConfig::default()
    }
}

fn gateway(fake: &FakeLogic, tweak: impl FnOnce(&mut GatewayConfig)) -> GatewayHandle {
    let mut c = config(fake);
    tweak(&mut c);
    let cores = c.cores;
    let g = tern_gateway::start(c, AppSecrets(vec![(APP, SECRET.to_owned())])).unwrap();
    fake.wait_hellos(cores);
    g
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn tcp_login_ping_upstream_logout() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |_| {});
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("alice"), "LoginAck(42)");
    let conn = fake.expect_open("alice");
    assert_eq!(conn.gateway_id(), 7);
    wait_until("the connection is counted", || g.connection_count() == 1);

    c.send(&encode::ping(5, 123));
    assert_eq!(c.recv_kind(), "Pong(5)");

    let pull = encode::pull(9, SyncKind::Message, 3, 50);
    c.send(&pull);
    let (from, bytes) = fake.expect("Upstream", |e| match e {
        Ev::Upstream { conn, frame } => Some((*conn, frame.clone())),
        _ => None,
    });
    assert_eq!((from, bytes), (conn, pull), "forwarded unchanged, with its connection");

    c.send(&encode::logout(10));
    assert_eq!(fake.expect_closed(conn), CloseReason::ClientLogout);
    c.expect_closed();
    wait_until("the connection is released", || g.connection_count() == 0);
    drop(c);
    g.shutdown();
}

#[test]
fn sends_past_the_cores_window_are_answered_by_the_gateway() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| {
        c.cores = 1;
        c.max_sends_in_flight_per_core = 2;
    });
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("sam"), "LoginAck(42)");
    let conn = fake.expect_open("sam");
    let send =
        |rid, id: &str| message::send(rid, id, "bob", &[message::ElemParts { text: "hi", ..Default::default() }], 1);
    let upstream = |rid: u32| {
        fake.expect(&format!("Send {rid} forwarded"), |e| match e {
            Ev::Upstream { frame, .. } => {
                (frame::parse_client_framed(frame, 1 << 20).unwrap().request_id() == rid).then_some(())
            }
            _ => None,
        })
    };
    // Logic reports that it has answered none: from now on two may be in flight.
    fake.send(0, &encode::link_sends_answered(0));
    std::thread::sleep(Duration::from_millis(50));
    c.send(&send(1, "m1"));
    c.send(&send(2, "m2"));
    upstream(1);
    upstream(2);
    c.send(&send(3, "m3"));
    let refused = c.recv().expect("an answer to the third Send");
    let f = frame::parse_client_framed(&refused, 1 << 20).unwrap();
    let ack = f.body_as_send_ack().expect("a SendAck from the gateway itself");
    assert_eq!((f.request_id(), ack.code(), ack.client_msg_id()), (3, codes::SERVICE_UNAVAILABLE, Some("m3")));
    assert!(
        fake.expect_within(Duration::from_millis(200), &mut |e| matches!(e, Ev::Upstream { .. }).then_some(()))
            .is_none(),
        "a refused Send never reaches logic"
    );
    // Logic answers the first: one place is free again.
    let ok = message::send_ack(
        1,
        &message::SendAckParts { client_msg_id: "m1", code: codes::OK, seq: 1, ..Default::default() },
    );
    fake.send(0, &encode::link_deliver(&[conn], &ok));
    fake.send(0, &encode::link_sends_answered(1));
    assert_eq!(c.recv_kind(), "SendAck");
    // A place is free, but m3 was refused first: a new Send is held behind it ...
    c.send(&send(4, "m4"));
    let held = c.recv().expect("an answer to the fourth Send");
    let f = frame::parse_client_framed(&held, 1 << 20).unwrap();
    let ack = f.body_as_send_ack().expect("a SendAck from the gateway itself");
    assert_eq!((f.request_id(), ack.code(), ack.message()), (4, codes::SERVICE_UNAVAILABLE, Some(codes::SEND_HELD)));
    // ... until m3 comes again, which takes the place.
    c.send(&send(5, "m3"));
    upstream(5);
    drop(c);
    g.shutdown();
}

#[test]
fn websocket_login_ping_upstream() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |_| {});
    let mut c = Client::ws(g.local_ws_addr());
    assert_eq!(c.login("wendy"), "LoginAck(42)");
    let conn = fake.expect_open("wendy");
    c.send(&encode::ping(6, 1));
    assert_eq!(c.recv_kind(), "Pong(6)");
    let ack = encode::push_ack(2, SyncKind::Message, 7);
    c.send(&ack);
    let got = fake.expect("Upstream", |e| match e {
        Ev::Upstream { frame, .. } => Some(frame.clone()),
        _ => None,
    });
    assert_eq!(got, ack);
    drop(c);
    assert_eq!(fake.expect_closed(conn), CloseReason::ClientClosed);
    g.shutdown();
}

#[test]
fn login_refusals() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| c.login_timeout_ms = 300);
    let addr = g.local_tcp_addr();

    let mut c = Client::tcp(addr);
    c.send(&login_frame("mallory", &sign("alice")));
    assert_eq!(c.recv_kind(), format!("Error({})", codes::SIGN_WRONG));
    c.expect_closed();

    c = Client::tcp(addr);
    c.send(&encode::ping(1, 1));
    assert_eq!(c.recv_kind(), format!("Error({})", codes::LOGIN_REQUIRED));
    c.expect_closed();

    c = Client::tcp(addr);
    c.send(&[0xff, 0xff, 0xff, 0x01]);
    assert_eq!(c.recv_kind(), format!("Error({})", codes::FRAME_TOO_LARGE));
    c.expect_closed();

    c = Client::tcp(addr);
    assert_eq!(c.recv_kind(), format!("Error({})", codes::LOGIN_TIMEOUT));
    c.expect_closed();

    // WebSocket: login timeout after the upgrade, then a close frame.
    c = Client::ws(g.local_ws_addr());
    assert_eq!(c.recv_kind(), format!("Error({})", codes::LOGIN_TIMEOUT));
    assert!(c.recv().is_none());

    // Logic refuses: its frame is relayed, then close.
    fake.accept_logins.store(false, Ordering::SeqCst);
    c = Client::tcp(addr);
    assert_eq!(c.login("ghost"), format!("Error({})", codes::USER_DELETED));
    c.expect_closed();
    drop(c);
    g.shutdown();
}

#[test]
fn deliver_to_two_connections_and_drop_stale() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |_| {});
    let mut a = Client::tcp(g.local_tcp_addr());
    let mut b = Client::ws(g.local_ws_addr());
    assert_eq!(a.login("alice"), "LoginAck(42)");
    assert_eq!(b.login("bob"), "LoginAck(42)");
    let ca = fake.expect_open("alice");
    let cb = fake.expect_open("bob");

    let notify = encode::sync_notify(SyncKind::Friendship, 3);
    let stale = ConnRef::new(ca.gateway_id(), ca.core(), ca.slot(), ca.generation() + 1);
    let mut by_core: HashMap<u16, Vec<ConnRef>> = HashMap::new();
    for c in [ca, cb, stale] {
        by_core.entry(c.core()).or_default().push(c);
    }
    for (core, conns) in &by_core {
        fake.send(*core, &encode::link_deliver(conns, &notify));
    }
    assert_eq!(a.recv().unwrap(), notify);
    assert_eq!(b.recv().unwrap(), notify);

    // Nothing else arrived (the stale reference was dropped), and both still work.
    a.send(&encode::ping(1, 0));
    assert_eq!(a.recv_kind(), "Pong(1)");
    b.send(&encode::ping(2, 0));
    assert_eq!(b.recv_kind(), "Pong(2)");
    drop((a, b));
    g.shutdown();
}

#[test]
fn logic_close_kicks_the_client() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |_| {});
    let mut c = Client::ws(g.local_ws_addr());
    assert_eq!(c.login("carol"), "LoginAck(42)");
    let conn = fake.expect_open("carol");
    let kick = encode::kick(KickReason::ReplacedByNewLogin, "signed in elsewhere");
    fake.send(conn.core(), &encode::link_close(&conn, &kick));
    assert_eq!(c.recv_kind(), "Kick(ReplacedByNewLogin)");
    assert!(c.recv().is_none(), "close frame follows");
    c.expect_closed();
    wait_until("the connection is released", || g.connection_count() == 0);
    drop(c);
    g.shutdown();
}

#[test]
fn heartbeat_timeout_kicks_silent_clients() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| {
        c.heartbeat_interval_ms = 100;
        c.heartbeat_timeout_ms = 400;
    });
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("dave"), "LoginAck(42)");
    let conn = fake.expect_open("dave");
    // Pings keep it alive past the timeout.
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(150));
        c.send(&encode::ping(i, 0));
        assert_eq!(c.recv_kind(), format!("Pong({i})"));
    }
    let silent = Instant::now();
    assert_eq!(c.recv_kind(), "Kick(HeartbeatTimeout)");
    assert!(silent.elapsed() >= Duration::from_millis(350), "kicked too early");
    c.expect_closed();
    assert_eq!(fake.expect_closed(conn), CloseReason::HeartbeatTimeout);
    drop(c);
    g.shutdown();
}

#[test]
fn link_reconnect_resumes_sessions() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |_| {});
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("erin"), "LoginAck(42)");
    let conn = fake.expect_open("erin");

    fake.kill_links();
    fake.wait_hellos(2);
    let resumed = fake.expect("resumed SessionOpen", |e| match e {
        Ev::Open { conn, user, resume: true } if user == "erin" => Some(*conn),
        _ => None,
    });
    assert_eq!(resumed, conn);

    // The client never noticed; traffic flows over the new link.
    c.send(&encode::ping(3, 0));
    assert_eq!(c.recv_kind(), "Pong(3)");
    let pull = encode::pull(4, SyncKind::Message, 0, 1);
    c.send(&pull);
    let got = fake.expect("Upstream", |e| match e {
        Ev::Upstream { frame, .. } => Some(frame.clone()),
        _ => None,
    });
    assert_eq!(got, pull);
    fake.send(conn.core(), &encode::link_deliver(&[conn], &encode::sync_notify(SyncKind::Message, 8)));
    assert_eq!(c.recv_kind(), "SyncNotify");
    drop(c);
    g.shutdown();
}

#[test]
fn link_down_refuses_logins_and_upstream() {
    // Nothing listens here: the link never comes up.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = GatewayConfig { link_addr: dead.to_string(), ..config(&FakeLogic::start()) };
    let g = tern_gateway::start(c, AppSecrets(vec![(APP, SECRET.to_owned())])).unwrap();
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("frank"), format!("Error({})", codes::SERVICE_UNAVAILABLE));
    c.expect_closed();
    drop(c);
    g.shutdown();
}

#[test]
fn server_full_refuses_past_the_cap() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| {
        c.cores = 1;
        c.max_connections = 2;
    });
    let addr = g.local_tcp_addr();
    let mut a = Client::tcp(addr);
    let _b = Client::tcp(addr);
    assert_eq!(a.login("a"), "LoginAck(42)");
    wait_until("two connections", || g.connection_count() == 2);
    let mut c = Client::tcp(addr);
    assert_eq!(c.recv_kind(), format!("Error({})", codes::SERVER_FULL));
    c.expect_closed();
    drop((a, _b, c));
    g.shutdown();
}

#[test]
fn slow_consumer_is_kicked() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| c.outbound_queue_frames = 8);
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("slow"), "LoginAck(42)");
    let conn = fake.expect_open("slow");
    // The client does not read; push until socket buffers and the queue overflow.
    let big = encode::error(0, codes::OK, &"x".repeat(60_000));
    let deliver = encode::link_deliver(&[conn], &big);
    let mut reason = None;
    for _ in 0..2_000 {
        fake.send(conn.core(), &deliver);
        reason = fake.expect_within(Duration::ZERO, &mut |e| match e {
            Ev::Closed { conn: c, reason } if *c == conn => Some(*reason),
            _ => None,
        });
        if reason.is_some() {
            break;
        }
    }
    let reason = reason.unwrap_or_else(|| fake.expect_closed(conn));
    assert_eq!(reason, CloseReason::SlowConsumer);
    // What was already in flight arrives, then the kick, then the close.
    let mut last = String::new();
    while let Some(f) = c.recv() {
        if f != big {
            last = kind(&f);
        }
    }
    assert_eq!(last, "Kick(SlowConsumer)");
    drop(c);
    g.shutdown();
}

#[test]
fn shutdown_kicks_clients_and_tells_logic() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |_| {});
    let mut a = Client::tcp(g.local_tcp_addr());
    let mut b = Client::ws(g.local_ws_addr());
    assert_eq!(a.login("x"), "LoginAck(42)");
    assert_eq!(b.login("y"), "LoginAck(42)");
    let cx = fake.expect_open("x");
    let cy = fake.expect_open("y");
    let started = Instant::now();
    let stopper = std::thread::spawn(move || g.shutdown());
    assert_eq!(a.recv_kind(), "Kick(ServerShutdown)");
    assert_eq!(b.recv_kind(), "Kick(ServerShutdown)");
    let mut closed = vec![fake.expect_closed_any(), fake.expect_closed_any()];
    closed.sort_by_key(|(c, _)| c.slot() as u64 + (u64::from(c.core()) << 32));
    let mut want = vec![(cx, CloseReason::GatewayShutdown), (cy, CloseReason::GatewayShutdown)];
    want.sort_by_key(|(c, _)| c.slot() as u64 + (u64::from(c.core()) << 32));
    assert_eq!(closed, want);
    stopper.join().unwrap();
    assert!(started.elapsed() < Duration::from_millis(3_500), "shutdown took {:?}", started.elapsed());
    a.expect_closed();
}

/// Parked connections (design.md §5): a drained connection holds no buffer; a partial
/// frame (TCP, WebSocket frame, fragmented WebSocket message) unparks it until the rest
/// arrives; pushes, kicks and the login deadline reach parked connections.
#[test]
fn idle_connections_park_and_wake() {
    let fake = FakeLogic::start();
    // Login timeout 400 ms: the sweep (which counts parked connections) runs every 100 ms.
    let g = gateway(&fake, |c| c.login_timeout_ms = 400);
    let sweep = Duration::from_millis(250);
    let mut t = Client::tcp(g.local_tcp_addr());
    let mut w = Client::ws(g.local_ws_addr());
    assert_eq!(t.login("pat"), "LoginAck(42)");
    assert_eq!(w.login("quinn"), "LoginAck(42)");
    let ct = fake.expect_open("pat");
    let cw = fake.expect_open("quinn");
    wait_until("both connections are parked", || g.parked_count() == 2);

    // Half a TCP frame: the connection keeps it (unparked) across sweeps, then the rest.
    let ping = encode::ping(3, 0);
    t.s.write_all(&ping[..3]).unwrap();
    wait_until("the partial frame unparks the connection", || g.parked_count() == 1);
    std::thread::sleep(sweep);
    assert_eq!(g.parked_count(), 1, "still holding the partial frame");
    t.s.write_all(&ping[3..]).unwrap();
    assert_eq!(t.recv_kind(), "Pong(3)");
    wait_until("parked again", || g.parked_count() == 2);

    // A WebSocket frame cut in two, and a message in two fragments, each across a park.
    let bytes = w.wire_bytes(&encode::ping(4, 0));
    w.send_split(&bytes, 5, sweep);
    assert_eq!(w.recv_kind(), "Pong(4)");
    let ping = encode::ping(5, 0);
    w.s.write_all(&ws_client_frame(0x02, &ping[..6])).unwrap();
    wait_until("the open message unparks the connection", || g.parked_count() == 1);
    w.s.write_all(&ws_client_frame(0x80, &ping[6..])).unwrap();
    assert_eq!(w.recv_kind(), "Pong(5)");
    wait_until("parked again", || g.parked_count() == 2);

    // A push wakes parked connections on either transport; they park again after it.
    let notify = encode::sync_notify(SyncKind::Message, 9);
    for c in [ct, cw] {
        fake.send(c.core(), &encode::link_deliver(&[c], &notify));
    }
    assert_eq!(t.recv().unwrap(), notify);
    assert_eq!(w.recv().unwrap(), notify);
    wait_until("parked after the push", || g.parked_count() == 2);

    // A kick reaches a parked connection.
    let kick = encode::kick(KickReason::ReplacedByNewLogin, "elsewhere");
    fake.send(ct.core(), &encode::link_close(&ct, &kick));
    assert_eq!(t.recv_kind(), "Kick(ReplacedByNewLogin)");
    t.expect_closed();

    // A connection that never logs in is parked too, and its deadline still fires.
    let mut silent = Client::tcp(g.local_tcp_addr());
    assert_eq!(silent.recv_kind(), format!("Error({})", codes::LOGIN_TIMEOUT));
    silent.expect_closed();
    wait_until("only the WebSocket client is left", || g.connection_count() == 1);
    drop((t, w, silent));
    g.shutdown();
}

/// Park/unpark interleavings: a seeded random script of whole frames, frames cut at
/// random points with pauses between the pieces (so the gateway parks with a partial
/// frame or without), pushes from logic and pauses, on one TCP and one WebSocket
/// connection; every answer arrives whole and in order, and both end parked.
#[test]
fn park_unpark_interleavings_keep_every_frame() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| c.login_timeout_ms = 200);
    let mut clients = [Client::tcp(g.local_tcp_addr()), Client::ws(g.local_ws_addr())];
    let mut refs = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let user = format!("mix{i}");
        assert_eq!(c.login(&user), "LoginAck(42)");
        refs.push(fake.expect_open(&user));
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..120u32 {
        let i = next(2) as usize;
        let c = &mut clients[i];
        match next(4) {
            0 => {
                c.send(&encode::ping(step, 0));
                assert_eq!(c.recv_kind(), format!("Pong({step})"), "step {step}");
            }
            1 => {
                let bytes = c.wire_bytes(&encode::ping(step, 0));
                let at = 1 + next(bytes.len() as u64 - 1) as usize;
                let pause = Duration::from_millis(next(3) * 20);
                c.send_split(&bytes, at, pause);
                assert_eq!(c.recv_kind(), format!("Pong({step})"), "step {step}, cut at {at}");
            }
            2 => {
                let notify = encode::sync_notify(SyncKind::Message, u64::from(step));
                fake.send(refs[i].core(), &encode::link_deliver(&[refs[i]], &notify));
                assert_eq!(c.recv().unwrap(), notify, "step {step}");
            }
            _ => std::thread::sleep(Duration::from_millis(next(4) * 10)),
        }
    }
    wait_until("both end parked", || g.parked_count() == 2);
    drop(clients);
    g.shutdown();
}

#[test]
fn address_in_use_is_reported_by_start() {
    let fake = FakeLogic::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = GatewayConfig { tcp_addr: taken.local_addr().unwrap().to_string(), ..config(&fake) };
    let err = tern_gateway::start(c, AppSecrets::default()).unwrap_err();
    assert!(err.to_string().contains("cannot bind"), "{err}");
}

impl FakeLogic {
    fn expect_closed_any(&self) -> (ConnRef, CloseReason) {
        self.expect("SessionClosed", |e| match e {
            Ev::Closed { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
    }
}

#[test]
fn metrics_endpoint_serves_the_render_callback() {
    let fake = FakeLogic::start();
    let c = GatewayConfig { metrics_addr: "127.0.0.1:0".into(), ..config(&fake) };
    let err = tern_gateway::start(c.clone(), AppSecrets::default()).unwrap_err().to_string();
    assert!(err.contains("metrics_addr"), "without a renderer the knob is refused: {err}");

    let extras = GatewayExtras {
        metrics_render: Some(Box::new(|| "tern_test_total 3\n".to_owned())),
        ..GatewayExtras::default()
    };
    let g = tern_gateway::start_with(c, AppSecrets(vec![(APP, SECRET.to_owned())]), extras).unwrap();
    fake.wait_hellos(2);
    let addr = g.local_metrics_addr().expect("metrics endpoint bound");
    let get = |req: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let r = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n") && r.ends_with("\r\n\r\ntern_test_total 3\n"), "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
    assert!(get("GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.0 404"));
    // A client that never finishes its request does not block the next scrape forever.
    let idle = TcpStream::connect(addr).unwrap();
    assert!(get("GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200"));
    drop(idle);
    g.shutdown();
    assert!(TcpStream::connect(addr).is_err(), "endpoint closed with the gateway");
}

#[test]
fn pinned_cores_serve_clients() {
    let fake = FakeLogic::start();
    let g = gateway(&fake, |c| c.pin_cores = true);
    let mut c = Client::tcp(g.local_tcp_addr());
    assert_eq!(c.login("pinned"), "LoginAck(42)");
    c.send(&encode::ping(5, 1));
    assert_eq!(c.recv_kind(), "Pong(5)");
    drop(c);
    g.shutdown();
}
