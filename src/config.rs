//! The `tern` configuration: one TOML document whose sections belong to the crates
//! (`[http]`, `[link]`, `[gateway]`, `[storage]`, `[logic]`, `[[apps]]`), layered as
//! defaults < file (`--config`) < environment (`TERN_SECTION__KEY`) < command-line flags.
//! Loading collects every problem before failing. `tern config defaults` prints
//! [`DEFAULTS_TOML`], which a test keeps identical to the typed defaults.

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use tern_gateway::GatewayConfig;
use tern_logic::config::{ConversationConfig, DemoConfig, HttpConfig, LinkConfig, MessageConfig};
use tern_logic::AppConfig;
use tern_storage_embedded::Durability;
use tern_storage_scylla::ScyllaConfig;

/// Where `tern` keeps its data when nothing says otherwise: beside the working
/// directory, so a first run needs no setup and leaves nothing elsewhere.
pub const DEFAULT_DATA_DIR: &str = "./tern-data";

/// The full configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TernConfig {
    /// Directory for the embedded store and the development app's secret.
    pub data_dir: PathBuf,
    /// `tracing` filter, e.g. "info" or "tern_gateway=debug,info". `RUST_LOG` wins.
    pub log: String,
    pub http: HttpConfig,
    pub link: LinkConfig,
    pub gateway: GatewayConfig,
    pub storage: StorageConfig,
    pub logic: LogicTuning,
    pub messages: MessageConfig,
    pub conversations: ConversationConfig,
    pub demo: DemoConfig,
    pub apps: Vec<AppConfig>,
}

impl Default for TernConfig {
    fn default() -> Self {
        Self {
            data_dir: DEFAULT_DATA_DIR.into(),
            log: "info".into(),
            http: HttpConfig::default(),
            link: LinkConfig::default(),
            gateway: GatewayConfig::default(),
            storage: StorageConfig::default(),
            logic: LogicTuning::default(),
            messages: MessageConfig::default(),
            conversations: ConversationConfig::default(),
            demo: DemoConfig::default(),
            apps: Vec::new(),
        }
    }
}

/// Which store and how durable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    /// Embedded store: `process` (survives a process crash; default) or `fsync`
    /// (survives power loss; one fsync per group-committed batch).
    pub durability: Durability,
    /// Embedded store: write memtables to table files once they hold this many bytes,
    /// which bounds what a restart after a crash replays (0 = off). Default:
    /// [`tern_storage_embedded::DEFAULT_MAX_UNFLUSHED_BYTES`].
    pub max_unflushed_bytes: u64,
    /// Embedded store: ... or once the oldest unflushed write is this many seconds old
    /// (0 = off). Default: [`tern_storage_embedded::DEFAULT_MAX_UNFLUSHED_SECS`].
    pub max_unflushed_secs: u64,
    /// Embedded store: nice value (0..=19) of the background flush and compaction
    /// threads, so they yield a busy core to the write path (0 = unchanged). Default:
    /// [`tern_storage_embedded::DEFAULT_BACKGROUND_NICE`].
    pub background_nice: i32,
    /// The ScyllaDB (or Cassandra) cluster, when `backend = "scylla"`.
    pub scylla: ScyllaConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let flush = tern_storage_embedded::FlushPolicy::default();
        Self {
            backend: Backend::default(),
            durability: Durability::default(),
            max_unflushed_bytes: flush.max_unflushed_bytes,
            max_unflushed_secs: flush.max_unflushed_secs,
            background_nice: tern_storage_embedded::DEFAULT_BACKGROUND_NICE,
            scylla: ScyllaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fjall in `data_dir/store`.
    #[default]
    Embedded,
    /// A ScyllaDB / Cassandra cluster (`[storage.scylla]`); run `tern migrate` first.
    Scylla,
}

/// Most threads `[logic] worker_threads` may ask for: far more than any machine's
/// cores, low enough that a typo cannot start thousands of threads.
pub const MAX_LOGIC_WORKER_THREADS: usize = 1024;

/// Logic-tier knobs that are not listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogicTuning {
    /// Seqs reserved per bound write (seqsvr step).
    pub seq_step: u64,
    /// Bytes of per-user state loaded on touch kept in memory before idle entries are
    /// evicted.
    pub owner_state_max_bytes: u64,
    /// Gateway addresses `/user/login` hands out; empty = the local gateway's.
    pub advertise_tcp: Vec<String>,
    pub advertise_ws: Vec<String>,
    /// Threads of logic's async runtime (link readers, turn completions, the HTTP API).
    /// 0 = automatic: one per CPU for `tern logic`; for `tern all`, half the CPUs (at
    /// least one), since the gateway's cores run beside them.
    pub worker_threads: usize,
}

impl LogicTuning {
    /// The runtime's thread count on a machine with `cpus` CPUs; `beside_gateway` when
    /// the gateway's cores run in the same process (`tern all`).
    pub fn runtime_threads(&self, cpus: usize, beside_gateway: bool) -> usize {
        match self.worker_threads {
            0 if beside_gateway => (cpus / 2).max(1),
            0 => cpus.max(1),
            n => n,
        }
    }
}

impl Default for LogicTuning {
    fn default() -> Self {
        Self {
            seq_step: tern_logic::seq::DEFAULT_SEQ_STEP,
            owner_state_max_bytes: tern_logic::owners::DEFAULT_OWNER_STATE_MAX_BYTES,
            advertise_tcp: Vec::new(),
            advertise_ws: Vec::new(),
            worker_threads: 0,
        }
    }
}

/// Values given as command-line flags; `None` = not given.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<AddrOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<AddrOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayOverride>,
}

#[derive(Debug, Default, Serialize)]
pub struct AddrOverride {
    pub addr: String,
}

#[derive(Debug, Default, Serialize)]
pub struct GatewayOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_addr: Option<String>,
}

/// Why configuration could not be loaded (all problems, one per line).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{0}")]
pub struct ConfigError(pub String);

/// Loads the layered configuration. `env` is the process environment (a parameter so
/// tests can layer without touching the real one).
pub fn load(
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &FlagOverrides,
) -> Result<TernConfig, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(TernConfig::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!("- config file {} does not exist", path.display())));
        }
        fig = fig.merge(Toml::file(path));
    }
    // Env: TERN_HTTP__ADDR -> http.addr. A double underscore separates levels because
    // keys themselves contain single underscores (data_dir, tcp_addr).
    let vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("TERN_")).collect();
    fig = fig.merge(Toml::string(&env_to_toml(&vars)));
    fig = fig.merge(Serialized::defaults(flags));
    let config: TernConfig = fig.extract().map_err(|e| {
        let all: Vec<String> = e.into_iter().map(|e| format!("- {e}")).collect();
        ConfigError(all.join("\n"))
    })?;
    validate(&config)?;
    Ok(config)
}

/// Top-level keys the environment may set.
const CONFIG_SECTIONS: &[&str] =
    &["data_dir", "log", "http", "link", "gateway", "storage", "logic", "messages", "conversations", "demo"];

/// Renders TERN_ variables as a TOML document: `TERN_GATEWAY__TCP_ADDR=x` becomes
/// `[gateway] tcp_addr = "x"`. Values that parse as TOML (numbers, booleans, arrays) keep
/// their type; anything else is a string.
fn env_to_toml(vars: &[(String, String)]) -> String {
    let mut root = toml::Table::new();
    for (k, v) in vars {
        let Some(path) = k.strip_prefix("TERN_") else { continue };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        // Other TERN_ variables (TERN_SECRET for `tern client`, TERN_CONFIG, test
        // switches) are not configuration keys.
        if !CONFIG_SECTIONS.contains(&parts[0].as_str()) {
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.clone()));
        insert_path(&mut root, &parts, value);
    }
    toml::to_string(&root).unwrap_or_default()
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = entry {
                insert_path(t, rest, value);
            }
        }
    }
}

fn validate(c: &TernConfig) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, app) in c.apps.iter().enumerate() {
        if !ids.insert(app.id) {
            problems.push(format!("- apps[{i}].id: app {} is configured twice", app.id));
        }
        if app.secret.len() < 16 {
            problems.push(format!("- apps[{i}].secret: must be at least 16 characters"));
        }
        if app.admins.is_empty() {
            problems.push(format!("- apps[{i}].admins: at least one admin identifier is needed"));
        }
        for p in app.callbacks.iter().flat_map(|c| c.problems()) {
            problems.push(format!("- apps[{i}].{p}"));
        }
    }
    if c.storage.backend == Backend::Scylla {
        if let Err(e) = c.storage.scylla.validate() {
            problems.push(format!("- storage.scylla: {e}"));
        }
    }
    for p in c.conversations.problems() {
        problems.push(format!("- conversations.{p}"));
    }
    if c.logic.seq_step == 0 {
        problems.push("- logic.seq_step: must be at least 1".into());
    }
    if c.logic.worker_threads > MAX_LOGIC_WORKER_THREADS {
        problems.push(format!(
            "- logic.worker_threads: {} is more than {MAX_LOGIC_WORKER_THREADS} (0 = automatic)",
            c.logic.worker_threads
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError(problems.join("\n")))
    }
}

/// The full commented default configuration (`tern config defaults`).
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn logic_runtime_threads_default_to_half_the_cpus_beside_the_gateway() {
        let auto = LogicTuning::default();
        assert_eq!(auto.runtime_threads(2, true), 1, "tern all on 2 CPUs");
        assert_eq!(auto.runtime_threads(1, true), 1, "never zero");
        assert_eq!(auto.runtime_threads(8, true), 4);
        assert_eq!(auto.runtime_threads(8, false), 8, "tern logic: one per CPU");
        let fixed = LogicTuning { worker_threads: 3, ..LogicTuning::default() };
        assert_eq!((fixed.runtime_threads(2, true), fixed.runtime_threads(64, false)), (3, 3));

        let mut c = TernConfig::default();
        c.logic.worker_threads = MAX_LOGIC_WORKER_THREADS + 1;
        let err = validate(&c).unwrap_err().to_string();
        assert!(err.contains("logic.worker_threads"), "{err}");
    }

    #[test]
    fn printed_defaults_are_the_typed_defaults() {
        let parsed: TernConfig = toml::from_str(DEFAULTS_TOML).expect("defaults.toml parses");
        assert_eq!(parsed, TernConfig::default());
    }

    #[test]
    fn layering_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tern.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[http]\naddr = \"127.0.0.1:1\"\n[gateway]\ntcp_addr = \"0.0.0.0:2\"\nws_addr = \"0.0.0.0:3\"\n",
        )
        .unwrap();
        let c = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!((c.data_dir.to_str().unwrap(), c.http.addr.as_str()), ("/from/file", "127.0.0.1:1"));

        let e = env(&[
            ("TERN_HTTP__ADDR", "127.0.0.1:4"),
            ("TERN_GATEWAY__CORES", "3"),
            ("HOME", "/x"),
            ("TERN_SECRET", "not config"),
            ("TERN_SLOW_TESTS", "1"),
        ]);
        let c = load(Some(&file), e.clone(), &FlagOverrides::default()).unwrap();
        assert_eq!(
            (c.http.addr.as_str(), c.gateway.cores, c.gateway.tcp_addr.as_str()),
            ("127.0.0.1:4", 3, "0.0.0.0:2")
        );

        let flags = FlagOverrides {
            http: Some(AddrOverride { addr: "127.0.0.1:5".into() }),
            gateway: Some(GatewayOverride { ws_addr: Some("0.0.0.0:6".into()), ..Default::default() }),
            ..Default::default()
        };
        let c = load(Some(&file), e, &flags).unwrap();
        assert_eq!(
            (c.http.addr.as_str(), c.gateway.ws_addr.as_str(), c.gateway.cores),
            ("127.0.0.1:5", "0.0.0.0:6", 3)
        );
    }

    #[test]
    fn apps_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tern.toml");
        std::fs::write(&file, "[[apps]]\nid = 7\nsecret = \"0123456789abcdef\"\nlogin_model = 2\n").unwrap();
        let c = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].admins, vec!["admin".to_string()]);
        assert_eq!(u8::from(c.apps[0].login_model), 2);
    }

    #[test]
    fn app_callbacks_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tern.toml");
        let app = "[[apps]]\nid = 7\nsecret = \"0123456789abcdef\"\n[apps.callbacks]\n";
        std::fs::write(
            &file,
            format!("{app}before_send_url = \"http://127.0.0.1:9/b\"\nfailure_policy = \"closed\"\n"),
        )
        .unwrap();
        let c = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap();
        let cb = c.apps[0].callbacks.as_ref().expect("callbacks");
        assert_eq!(cb.before_send_url.as_ref().map(|u| u.as_str()), Some("http://127.0.0.1:9/b"));
        assert_eq!(cb.failure_policy, tern_logic::callbacks::FailurePolicy::Closed);
        // TLS URLs and zero bounds are refused at load.
        std::fs::write(&file, format!("{app}before_send_url = \"https://biz/b\"\n")).unwrap();
        let err = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("only http://"), "{err}");
        std::fs::write(&file, format!("{app}max_attempts = 0\n")).unwrap();
        let err = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("apps[0].callbacks.max_attempts"), "{err}");
    }

    #[test]
    fn all_problems_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tern.toml");
        std::fs::write(
            &file,
            "[[apps]]\nid = 7\nsecret = \"short\"\n[[apps]]\nid = 7\nsecret = \"0123456789abcdef\"\nadmins = []\n",
        )
        .unwrap();
        let err = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("apps[0].secret"), "{err}");
        assert!(err.contains("apps[1].id"), "{err}");
        assert!(err.contains("apps[1].admins"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tern.toml");
        std::fs::write(&file, "[http]\nadress = \"x\"\n").unwrap();
        let err = load(Some(&file), env(&[]), &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        let err = load(None, env(&[("TERN_GATEWAY__CORES", "many")]), &FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("cores"), "{err}");
        assert!(
            load(Some(std::path::Path::new("/nonexistent/tern.toml")), env(&[]), &FlagOverrides::default()).is_err()
        );
    }

    #[test]
    fn conversation_knobs_are_read_and_checked() {
        let e = env(&[("TERN_CONVERSATIONS__MAX_HELD", "5"), ("TERN_CONVERSATIONS__COMPACT_AFTER", "7")]);
        let c = load(None, e, &FlagOverrides::default()).unwrap();
        assert_eq!((c.conversations.max_held, c.conversations.compact_after), (5, 7));
        assert_eq!(c.conversations.checkpoint_every, tern_logic::config::DEFAULT_CONVERSATION_CHECKPOINT_EVERY);
        let e = env(&[("TERN_CONVERSATIONS__MAX_HELD", "0"), ("TERN_CONVERSATIONS__CHECKPOINT_EVERY", "0")]);
        let err = load(None, e, &FlagOverrides::default()).unwrap_err().to_string();
        assert!(err.contains("conversations.max_held") && err.contains("conversations.checkpoint_every"), "{err}");
    }
}
