//! The logic crate's one HTTP test harness, shared by its integration tests: a node over
//! a real embedded store in a temporary directory, its router driven without sockets
//! (`tower::ServiceExt::oneshot`), admin and user signatures, the envelope checks, and
//! online sessions on a fake gateway link. Test files add only their own shorthands.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tern_logic::sessions::Session;
use tern_logic::{AppConfig, AppRegistry, Logic, LogicConfig, LoginModel};
use tern_schema::link::ConnRef;
use tern_schema::sig;
use tern_storage::{AppId, Store, UserId};
use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// The app every harness has.
pub const APP: u32 = 10_000;
/// The secret of every harness app.
pub const SECRET: &str = "test-secret-0123456789";
/// The admin identifier of every harness app.
pub const ADMIN: &str = "admin";

/// An hour from now, in Unix seconds.
pub fn far_future() -> u64 {
    tern_logic::now_ms() / 1000 + 3600
}

/// An app (`id`, [`SECRET`], admin [`ADMIN`], login model 4) with `extra` settings.
/// Built through serde so fields added to AppConfig later take their defaults here too.
pub fn app_config(id: u32, extra: Value) -> AppConfig {
    let mut v = json!({"id": id, "secret": SECRET, "admins": [ADMIN], "login_model": 4});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    serde_json::from_value(v).expect("app config")
}

/// The query of an admin call of `app` with a valid admin signature.
pub fn admin_query(app: u32) -> String {
    let sign = sig::sign_admin(SECRET.as_bytes(), app, ADMIN, far_future());
    format!("appId={app}&identifier={ADMIN}&userSign={sign}")
}

/// The query of `user`'s own call (login) with its login signature.
pub fn user_query(app: u32, user: &str) -> String {
    let sign = sig::sign(SECRET.as_bytes(), app, user, far_future());
    format!("appId={app}&identifier={user}&userSign={sign}")
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with `what` if it is not).
    pub fn json(&self, what: &str) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
    }

    /// Checks the envelope: its exact shape, `code`, the HTTP status the code implies,
    /// that `msg` contains `msg_part` ("success" for 200) and that errors carry null
    /// data. Returns `data`.
    pub fn check(&self, what: &str, code: u32, msg_part: &str) -> Value {
        assert!(self.content_type.starts_with("application/json"), "{what}: content type {}", self.content_type);
        let v = self.json(what);
        let mut keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "data", "msg"], "{what}: envelope shape of {v}");
        assert_eq!(v["code"], json!(code), "{what}: {v}");
        let expected_status = tern_logic::http::error::code_info(code).map_or(0, |c| c.status);
        assert_eq!(self.status, expected_status, "{what}: HTTP status for code {code}: {v}");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(msg_part), "{what}: msg {msg:?} lacks {msg_part:?}");
        if code == 200 {
            assert_eq!(msg, "success", "{what}");
        } else {
            assert!(v["data"].is_null(), "{what}: error data must be null: {v}");
        }
        v["data"].clone()
    }
}

/// Sends one request to `router`.
pub async fn send(router: &Router, method: Method, uri: &str, body: Vec<u8>) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec();
    Answer { status, content_type, body }
}

/// A logic node over a fresh embedded store, with its router.
pub struct Harness {
    pub router: Router,
    pub logic: Arc<Logic>,
    pub store: Arc<dyn Store>,
    pub apps: AppRegistry,
    pub config: LogicConfig,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A node with `config`, the apps `apps`, and `/metrics` rendered by `metrics`.
    pub fn new(config: LogicConfig, apps: Vec<AppConfig>, metrics: Option<PrometheusHandle>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("store"));
        let apps = AppRegistry::new(apps);
        let logic = Logic::new(config.clone(), store.clone(), apps.clone());
        let router = tern_logic::http::router(logic.clone(), metrics);
        Self { router, logic, store, apps, config, _dir: dir }
    }

    /// A node as [`Harness::new`] (no `/metrics`), on the backend the environment names:
    /// with `TERN_LOGIC_BACKEND=scylla` on the CQL backend (a node from `scripts/cassandra
    /// start`, or `TERN_CQL_NODES`), in a namespace of its own in one keyspace this
    /// process migrates once; otherwise on a fresh embedded store.
    pub async fn on_test_backend(config: LogicConfig, apps: Vec<AppConfig>) -> Self {
        if !std::env::var("TERN_LOGIC_BACKEND").is_ok_and(|v| v == "scylla") {
            return Self::new(config, apps, None);
        }
        let store: Arc<dyn Store> = Arc::new(cql_store().await);
        let apps = AppRegistry::new(apps);
        let logic = Logic::new(config.clone(), store.clone(), apps.clone());
        let router = tern_logic::http::router(logic.clone(), None);
        Self { router, logic, store, apps, config, _dir: tempfile::tempdir().expect("tempdir") }
    }

    /// A second node over the same store, as after a restart: its views are rebuilt
    /// from the logs.
    pub fn restarted(&self) -> (Arc<Logic>, Router) {
        let logic = Logic::new(self.config.clone(), self.store.clone(), self.apps.clone());
        (logic.clone(), tern_logic::http::router(logic, None))
    }

    /// An admin `POST /v1{path}` of `app`.
    pub async fn admin(&self, app: u32, path: &str, body: &Value) -> Answer {
        let uri = format!("/v1{path}?{}", admin_query(app));
        send(&self.router, Method::POST, &uri, body.to_string().into_bytes()).await
    }

    /// An admin call of `app` that must answer `code` with `msg_part` in its message.
    pub async fn check_in(&self, app: u32, path: &str, body: Value, code: u32, msg_part: &str) -> Value {
        self.admin(app, path, &body).await.check(&format!("{path} {body}"), code, msg_part)
    }

    /// An admin call of [`APP`] that must succeed; answers `data`.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        self.check_in(APP, path, body, 200, "success").await
    }

    /// Registers a gateway link and an online session per (user, device) of [`APP`].
    pub fn online(&self, devices: &[(&str, &str)], queue: usize) -> mpsc::Receiver<Vec<u8>> {
        online(&self.logic, APP, devices, queue)
    }
}

/// Registers one gateway link (gateway 1, core 0) and an online session per
/// (user, device) of `app` at slots 10, 11, ...; returns the link's outbound queue.
pub fn online(logic: &Logic, app: u32, devices: &[(&str, &str)], queue: usize) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(queue);
    logic.sessions.register_link((1, 0), tx);
    for (i, (user, device)) in devices.iter().enumerate() {
        let session = Session {
            conn: ConnRef::new(1, 0, 10 + i as u32, 1),
            client_type: 1,
            device_id: (*device).into(),
            session_id: i as u64 + 1,
            since_ms: 1234,
        };
        let uid = UserId::new(*user).expect("test user ids are valid");
        logic.sessions.admit(AppId(app), &uid, session, LoginModel::Unlimited, false);
    }
    rx
}

/// A CQL store in a namespace of its own (see [`Harness::on_test_backend`]). The keyspace
/// is named like the storage tests' (`tern_test_<unix secs>_…`), so their next run drops
/// it once it is an hour old (creating one per test costs seconds on Cassandra).
async fn cql_store() -> tern_storage_scylla::ScyllaStore {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    use tern_storage_scylla::{BucketBits, ScyllaConfig, ScyllaStore, TestLayout};
    static KEYSPACE: OnceLock<ScyllaConfig> = OnceLock::new();
    static NAMESPACE: AtomicU32 = AtomicU32::new(1);
    let config = KEYSPACE
        .get_or_init(|| {
            let nodes = std::env::var("TERN_CQL_NODES").unwrap_or_else(|_| "127.0.0.1:9042".into());
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let config = ScyllaConfig {
                nodes: nodes.split(',').map(|n| n.trim().to_string()).collect(),
                keyspace: format!("tern_test_{secs}_{}_logic", std::process::id()),
                ..ScyllaConfig::default()
            };
            let c = config.clone();
            // Migrated once, on a runtime of its own (this may run inside a test's).
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(ScyllaStore::migrate(&c)).map(|_| ())
            })
            .join()
            .expect("migration thread")
            .expect("migrating the test keyspace: is a CQL node running? (scripts/cassandra start)");
            config
        })
        .clone();
    let layout = TestLayout { bits: BucketBits::DEFAULT, namespace: NAMESPACE.fetch_add(1, Ordering::Relaxed) };
    ScyllaStore::connect_with_layout(&config, layout).await.expect("connecting to the test keyspace")
}

/// One message a Push frame carried to one device (its connection's slot).
#[derive(Debug, Clone)]
pub struct Pushed {
    pub conn_slot: u32,
    pub to_id: String,
    pub seq: u64,
    pub client_msg_id: String,
    /// The first element's text.
    pub text: String,
}

/// The messages of every Push frame a link queue holds, in arrival order, once per
/// device they went to; other frames are skipped.
pub fn drain_pushes(rx: &mut mpsc::Receiver<Vec<u8>>) -> Vec<Pushed> {
    use tern_schema::frame::{parse_client_framed, parse_link, HEADER_LEN};
    let mut out = Vec::new();
    while let Ok(f) = rx.try_recv() {
        let lf = parse_link(&f[HEADER_LEN..]).expect("link frame");
        let Some(d) = lf.body_as_deliver() else { continue };
        let cf = parse_client_framed(d.frame().unwrap().bytes(), 1 << 16).unwrap();
        let Some(p) = cf.body_as_push() else { continue };
        for c in d.conns().unwrap().iter() {
            for m in p.messages().unwrap().iter() {
                out.push(Pushed {
                    conn_slot: c.slot(),
                    to_id: m.to_id().unwrap_or_default().to_string(),
                    seq: m.seq(),
                    client_msg_id: m.client_msg_id().unwrap_or_default().to_string(),
                    text: m.elems().map(|e| e.get(0).text().unwrap_or_default().to_string()).unwrap_or_default(),
                });
            }
        }
    }
    out
}
