//! Test harness for end-to-end tests: starts the real `tern` binary (one process, or a
//! `tern logic` + `tern gateway` pair) on free ports with a private data dir, and talks
//! to it as business servers and clients do: HTTP for the API, TCP and WebSocket for
//! devices. Processes are killed when the handle drops.

#![allow(dead_code)]

/// Expands each named `async fn name(mode: Mode)` of the test file into two tests: one
/// against `tern all`, one against `tern logic` + `tern gateway`.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod all_in_one {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Mode::AllInOne).await })*
        }
        mod split_processes {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Mode::Split).await })*
        }
    };
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tern_loadtest::client::{Client, LoginOutcome, LoginRequest, Transport};
use tern_schema::client::ClientType;

pub const SECRET: &str = "e2e-secret-0123456789";

/// How the server under test is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tern all`.
    AllInOne,
    /// `tern logic` and `tern gateway` as two processes over the link (TCP).
    Split,
    /// The same over a Unix-socket link (`unix:PATH` in the data directory).
    SplitUnix,
}

/// Knobs a test may change from the defaults below.
#[derive(Debug, Clone)]
pub struct Options {
    pub login_timeout_ms: u64,
    pub heartbeat_timeout_ms: u32,
    /// Appended to the [gateway] section.
    pub extra_toml: String,
    /// Extra [[apps]] entries.
    pub extra_apps: String,
    /// Top-level sections appended after everything else (e.g. "[storage]\n...");
    /// not combinable with `TERN_E2E_BACKEND=scylla`, whose [storage] it would repeat.
    pub extra_sections: String,
}

impl Options {
    pub fn with_apps(mut self, apps: String) -> Self {
        self.extra_apps = apps;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            login_timeout_ms: 2_000,
            heartbeat_timeout_ms: 30_000,
            extra_toml: String::new(),
            extra_apps: String::new(),
            extra_sections: String::new(),
        }
    }
}

pub struct Tern {
    pub http: String,
    pub tcp: String,
    pub ws: String,
    /// Split mode: the link address logic listens on (fixed across logic restarts).
    link: Option<String>,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Drop for Tern {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Apps: 10000 (login model 4) plus 10001..=10003 with models 1..=3 and 10004 model 4.
/// `TERN_E2E_BACKEND=scylla` runs the end-to-end tests on the CQL backend (a node from
/// `scripts/cassandra start`, or `TERN_CQL_NODES`), each server in a fresh keyspace.
pub fn scylla_backend() -> bool {
    std::env::var("TERN_E2E_BACKEND").is_ok_and(|v| v == "scylla")
}

fn storage_toml(dir: &std::path::Path) -> String {
    if !scylla_backend() {
        return String::new();
    }
    // One keyspace per server directory: stable across restarts of that server.
    let keyspace = dir.file_name().unwrap().to_string_lossy().replace(['.', '-'], "_").to_lowercase();
    let nodes = std::env::var("TERN_CQL_NODES").unwrap_or_else(|_| "127.0.0.1:9042".into());
    let nodes: Vec<String> = nodes.split(',').map(|n| format!("\"{n}\"")).collect();
    format!(
        "[storage]\nbackend = \"scylla\"\n[storage.scylla]\nnodes = [{}]\nkeyspace = \"e2e{keyspace}\"\nconsistency = \"one\"\n",
        nodes.join(", ")
    )
}

fn config_toml(dir: &std::path::Path, o: &Options) -> String {
    let mut apps = String::new();
    for (id, model) in [(10_000, 4), (10_001, 1), (10_002, 2), (10_003, 3)] {
        apps.push_str(&format!(
            "[[apps]]\nid = {id}\nsecret = \"{SECRET}\"\nadmins = [\"admin\"]\nlogin_model = {model}\n"
        ));
    }
    format!(
        "data_dir = \"{}\"\nlog = \"warn\"\n[gateway]\ncores = 2\nlogin_timeout_ms = {}\nheartbeat_interval_ms = {}\nheartbeat_timeout_ms = {}\n{}\n{}\n{}",
        dir.join("data").display(),
        o.login_timeout_ms,
        o.heartbeat_timeout_ms / 3,
        o.heartbeat_timeout_ms,
        o.extra_toml,
        o.extra_sections,
        storage_toml(dir) + &apps + &o.extra_apps
    )
}

fn spawn(args: &[&str], config: &std::path::Path) -> (Child, String) {
    try_spawn(args, config).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `tern` and waits for its listen line; an error if it exits (or stays silent
/// for a minute) first.
fn try_spawn(args: &[&str], config: &std::path::Path) -> Result<(Child, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tern");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => Ok((child, line)),
        Err(e) => {
            // Never leave a half-started server behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("tern did not print its listen line ({e}); see its stderr above"))
        }
    }
}

/// Kills a child process when dropped (a panic between two spawns must not leak the first).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_string()
}

impl Tern {
    pub fn start(mode: Mode) -> Tern {
        Self::start_with(mode, Options::default())
    }

    pub fn start_with(mode: Mode, o: Options) -> Tern {
        Self::start_in(mode, o, tempfile::tempdir().unwrap())
    }

    /// Kills every process with SIGKILL (a crash, not a shutdown) and returns the data
    /// directory, so a new instance can start on the same data.
    pub fn crash(mut self) -> tempfile::TempDir {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Sends SIGTERM to every process and waits (bounded) for them to exit; returns
    /// whether all exited successfully, and the data directory.
    pub fn terminate(self) -> (bool, tempfile::TempDir) {
        self.terminate_within(Duration::from_secs(15))
    }

    /// [`Tern::terminate`] with another bound on the wait (large stores in debug builds).
    pub fn terminate_within(mut self, bound: Duration) -> (bool, tempfile::TempDir) {
        for c in &self.children {
            sigterm(c);
        }
        let mut ok = true;
        for c in &mut self.children {
            ok &= wait_exit(c, bound);
        }
        self.children.clear();
        let placeholder = tempfile::tempdir().unwrap();
        (ok, std::mem::replace(&mut self.dir, placeholder))
    }

    /// Split mode: SIGTERM the logic process only (the gateway keeps running and
    /// reconnecting); returns whether it exited successfully.
    pub fn stop_logic(&mut self) -> bool {
        assert!(self.link.is_some() && self.children.len() == 2, "stop_logic needs a running split server");
        let mut logic = self.children.remove(0);
        sigterm(&logic);
        wait_exit(&mut logic, Duration::from_secs(15))
    }

    /// Split mode: starts logic again on the same data and link address (after
    /// [`Tern::stop_logic`]); returns when it is ready.
    pub fn start_logic(&mut self) {
        let link = self.link.clone().expect("split mode");
        let config = self.dir.path().join("tern.toml");
        let (logic, line) = spawn(&["logic", "--http-addr", "127.0.0.1:0", "--link-addr", &link], &config);
        self.http = field(&line, "http");
        self.children.insert(0, logic);
    }

    /// Split mode: kills the gateway with SIGKILL (every client connection drops at
    /// once, logic sees the link end) and starts a new one on the same client ports;
    /// returns when it listens.
    pub fn crash_and_restart_gateway(&mut self) {
        let link = self.link.clone().expect("split mode");
        let mut gw = self.children.pop().expect("a running gateway");
        let _ = gw.kill();
        let _ = gw.wait();
        let config = self.dir.path().join("tern.toml");
        let (tcp, ws) = (self.tcp.clone(), self.ws.clone());
        let (gw, _) = spawn(&["gateway", "--tcp-addr", &tcp, "--ws-addr", &ws, "--link-addr", &link], &config);
        self.children.push(gw);
    }

    /// `GET /healthz`: (HTTP status, parsed envelope).
    pub fn health(&self) -> (u16, Value) {
        let (status, text) = http(&self.http, "GET", "/healthz", "");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON /healthz {text:?}: {e}")))
    }

    /// Starts on an existing directory (its data dir and config are reused).
    pub fn start_in(mode: Mode, o: Options, dir: tempfile::TempDir) -> Tern {
        let config = dir.path().join("tern.toml");
        std::fs::write(&config, config_toml(dir.path(), &o)).unwrap();
        if scylla_backend() {
            // Idempotent: creates the keyspace the first time, no-op on restarts.
            let out =
                Command::new(env!("CARGO_BIN_EXE_tern")).arg("migrate").arg("--config").arg(&config).output().unwrap();
            assert!(out.status.success(), "tern migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let ports = ["--http-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"];
        match mode {
            Mode::AllInOne => {
                let mut args = vec!["all"];
                args.extend_from_slice(&ports);
                args.extend_from_slice(&["--link-addr", "127.0.0.1:0"]);
                let (child, line) = spawn(&args, &config);
                Tern {
                    http: field(&line, "http"),
                    tcp: field(&line, "tcp"),
                    ws: field(&line, "ws"),
                    link: None,
                    children: vec![child],
                    dir,
                }
            }
            Mode::Split | Mode::SplitUnix => {
                // A TCP link port is picked here (both processes need it) and may be
                // taken by another socket before logic binds it: then try another.
                let mut attempts = 0;
                let (link, (logic, line)) = loop {
                    let link = match mode {
                        Mode::SplitUnix => format!("unix:{}", dir.path().join("link.sock").display()),
                        _ => format!("127.0.0.1:{}", free_port()),
                    };
                    attempts += 1;
                    match try_spawn(&["logic", "--http-addr", "127.0.0.1:0", "--link-addr", &link], &config) {
                        Ok(started) => break (link, started),
                        Err(e) if attempts < 3 && mode == Mode::Split => eprintln!("{e}; retrying on another port"),
                        Err(e) => panic!("{e}"),
                    }
                };
                let mut logic = KillOnDrop(Some(logic));
                let http = field(&line, "http");
                let (gw, gline) = spawn(
                    &["gateway", "--tcp-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--link-addr", &link],
                    &config,
                );
                Tern {
                    http,
                    tcp: field(&gline, "tcp"),
                    ws: field(&gline, "ws"),
                    link: Some(link),
                    children: vec![logic.0.take().expect("logic child"), gw],
                    dir,
                }
            }
        }
    }

    /// The pid of the process holding client connections (`tern all` or `tern gateway`).
    pub fn pid(&self) -> u32 {
        self.children.last().expect("a running server").id()
    }

    pub fn addr(&self, t: Transport) -> &str {
        match t {
            Transport::Tcp => &self.tcp,
            Transport::Ws => &self.ws,
        }
    }

    /// POSTs `body` to `/v1{path}` as admin of `app`; returns the parsed envelope.
    pub fn api(&self, app: u32, path: &str, body: Value) -> Value {
        let q = format!("appId={app}&identifier=admin&userSign={}", sign_admin(app, "admin", 3600));
        self.post(&format!("/v1{path}?{q}"), &body.to_string())
    }

    /// POST with a raw query and body; returns the parsed JSON response body.
    pub fn post(&self, path_and_query: &str, body: &str) -> Value {
        let (_, text) = http(&self.http, "POST", path_and_query, body);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("non-JSON response {text:?}: {e}"))
    }

    pub fn import(&self, app: u32, users: &[&str]) {
        let data: Vec<Value> = users.iter().map(|u| json!({"userId": u, "nickName": u})).collect();
        let r = self.api(app, "/user/importUser", json!({ "userData": data }));
        assert_eq!(r["code"], 200, "{r}");
        assert_eq!(r["data"]["successId"].as_array().unwrap().len(), users.len(), "{r}");
    }

    /// Connects and logs in; panics unless the login succeeds.
    pub async fn device(&self, t: Transport, app: u32, user: &str, ct: ClientType, device: &str) -> Client {
        let (c, outcome) = self.login(t, app, user, &sign(app, user, 3600), ct, device).await;
        match outcome {
            LoginOutcome::Ok(_) => c,
            other => panic!("login of {user}/{device} failed: {other:?}"),
        }
    }

    pub async fn login(
        &self,
        t: Transport,
        app: u32,
        user: &str,
        user_sign: &str,
        ct: ClientType,
        device: &str,
    ) -> (Client, LoginOutcome) {
        let mut c = Client::connect(t, self.addr(t)).await.expect("connect");
        let req = LoginRequest {
            app_id: app,
            user_id: user.into(),
            user_sign: user_sign.into(),
            client_type: ct,
            device_id: device.into(),
            request_id: 1,
        };
        let outcome = c.login(&req).await.expect("login answered");
        (c, outcome)
    }

    /// Polls queryOnlineStatus until `user`'s online device count is `n`.
    pub fn wait_online(&self, app: u32, user: &str, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.api(app, "/user/queryOnlineStatus", json!({"userIds": [user]}));
            let entry = r["data"]["statusList"].as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
            let devices = entry["devices"].as_array().map_or(0, |d| d.len());
            if devices == n {
                return entry;
            }
            assert!(Instant::now() < deadline, "{user} never had {n} devices online: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn sigterm(c: &Child) {
    // SAFETY: kill(2) on a child pid we own; no memory is involved.
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
}

/// Waits (at most `bound`, then kills) for a child to exit; whether it exited successfully.
fn wait_exit(c: &mut Child, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        match c.try_wait().unwrap() {
            Some(status) => return status.success(),
            None if Instant::now() > deadline => {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Pulls a device's whole Message timeline after `after`, `page` entries per Pull:
/// (seq, the texts of its elements joined, recalled), in seq order.
pub async fn pull_timeline(c: &mut Client, after: u64, page: u32) -> Vec<(u64, String, bool)> {
    let (mut after, mut out) = (after, Vec::new());
    loop {
        let rid = c.next_request_id();
        c.send(&tern_schema::encode::pull(rid, tern_schema::client::SyncKind::Message, after, page)).await.unwrap();
        let (f, _) = c.recv_reply(rid, Duration::from_secs(20)).await.expect("pull result");
        let r = f.frame().body_as_pull_result().unwrap_or_else(|| panic!("not a PullResult: {}", f.describe()));
        for m in r.messages().unwrap() {
            let text = m
                .elems()
                .map(|e| e.iter().map(|x| x.text().unwrap_or_default().to_string()).collect())
                .unwrap_or_default();
            assert!(m.seq() > after, "pull went backwards");
            after = m.seq();
            out.push((m.seq(), text, m.recalled()));
        }
        if r.completed() {
            return out;
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn sign(app: u32, user: &str, ttl: u64) -> String {
    tern_schema::sig::sign(SECRET.as_bytes(), app, user, now_secs() + ttl)
}

/// An admin signature (admin calls refuse login signatures).
pub fn sign_admin(app: u32, admin: &str, ttl: u64) -> String {
    tern_schema::sig::sign_admin(SECRET.as_bytes(), app, admin, now_secs() + ttl)
}

/// Minimal HTTP/1.1 request (Connection: close). Returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("http response");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}
