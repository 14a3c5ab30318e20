//! `[storage.scylla]`: how to reach the cluster and how to lay out the keyspace.
//!
//! Every setting has a default constant saying why; [`ScyllaConfig::validate`] collects
//! every problem before failing, so an operator fixes a config file in one pass.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::PathBuf};

/// Default contact point: a local node on the standard CQL port (what
/// `scripts/cassandra start` runs). Contact points only bootstrap discovery: the driver
/// learns the whole cluster from them.
pub const DEFAULT_NODES: &[&str] = &["127.0.0.1:9042"];
/// Default keyspace.
pub const DEFAULT_KEYSPACE: &str = "tern";
/// Default replication factor of the default `SimpleStrategy`: 1, which suits one local
/// node. Production clusters should use `NetworkTopologyStrategy` with RF 3 per DC.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 1;
/// Default time to establish a connection to a node: long enough for a node across a
/// region, short enough that a dead contact point does not stall start-up for long.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default client-side timeout of one request (all its retries included). Above the
/// server's own write/read timeouts (2 s / 5 s by default) so the server answers first.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 12_000;
/// Default retention of the message timeline: 0 = keep forever. Retention is a product
/// decision; the store never drops messages unless told to.
pub const DEFAULT_MESSAGE_TTL_SECS: u64 = 0;
/// Requests this process keeps outstanding to the cluster at once. Well under one
/// connection's 32,768 streams, and at a few milliseconds per request enough for tens
/// of thousands of requests per second.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 1_024;
/// Longest accepted `message_ttl_secs` (5 years). Bucket markers live twice as long as
/// entries, and CQL refuses TTLs above 20 years; 5 years keeps every expiry far inside
/// what both Cassandra and ScyllaDB can represent.
pub const MAX_MESSAGE_TTL_SECS: u64 = 5 * 365 * 24 * 3600;

/// How to reach a ScyllaDB (or Cassandra) cluster and which keyspace to use. `Debug`
/// hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (default `["127.0.0.1:9042"]`). On ScyllaDB list the
    /// standard port 9042; the driver finds the shard-aware port (19042) by itself.
    pub nodes: Vec<String>,
    /// Keyspace holding every Tern table (default `tern`): lowercase letters, digits and
    /// `_`, starting with a letter, at most 48 characters.
    pub keyspace: String,
    /// Replication of the keyspace, used by `tern migrate` when it creates the keyspace
    /// (an existing keyspace is never altered: changing replication needs a repair).
    pub replication: Replication,
    /// Consistency level of every read and write (default `local_quorum`: reads see every
    /// acknowledged write as long as a majority of the local DC's replicas is up).
    pub consistency: Consistency,
    /// Prefer this datacenter's nodes as coordinators and fail over to no other DC. Set it
    /// in multi-DC clusters, or LOCAL_* consistency may be served by a remote DC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_datacenter: Option<String>,
    /// User name for password authentication (with `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for password authentication (with `username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// TLS to the nodes; absent = plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ScyllaTlsConfig>,
    /// Time to open a connection to a node, milliseconds.
    pub connect_timeout_ms: u64,
    /// Client-side timeout of one request including retries, milliseconds.
    pub request_timeout_ms: u64,
    /// Retention of the message timeline ([`SyncKind::Message`](crate::SyncKind::Message)
    /// log and conversation index) as a CQL TTL in seconds; 0 keeps messages forever.
    /// Applies to writes made after it is set. Other logs (profile, friendship, …) are
    /// never expired: they are the only record of those changes.
    pub message_ttl_secs: u64,
    /// Requests outstanding to the cluster at once; more wait in the store (default 1024).
    pub max_in_flight_requests: usize,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: DEFAULT_NODES.iter().map(|s| (*s).to_owned()).collect(),
            keyspace: DEFAULT_KEYSPACE.into(),
            replication: Replication::default(),
            consistency: Consistency::default(),
            local_datacenter: None,
            username: None,
            password: None,
            tls: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            message_ttl_secs: DEFAULT_MESSAGE_TTL_SECS,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        }
    }
}

impl std::fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("local_datacenter", &self.local_datacenter)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("message_ttl_secs", &self.message_ttl_secs)
            .field("max_in_flight_requests", &self.max_in_flight_requests)
            .finish()
    }
}

impl ScyllaConfig {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<(), StoreError> {
        let mut errors = Vec::new();
        if self.nodes.is_empty() {
            errors.push("nodes: list at least one contact point (host:port)".to_owned());
        }
        for node in &self.nodes {
            if node.trim().is_empty() || !node.contains(':') {
                errors.push(format!("nodes: {node:?} is not host:port"));
            }
        }
        if let Err(e) = check_keyspace_name(&self.keyspace) {
            errors.push(format!("keyspace: {e}"));
        }
        if let Err(e) = self.replication.validate() {
            errors.push(format!("replication: {e}"));
        }
        if self.username.is_some() != self.password.is_some() {
            errors.push("username and password: set both or neither".to_owned());
        }
        if self.connect_timeout_ms == 0 {
            errors.push("connect_timeout_ms: must be positive".to_owned());
        }
        if self.max_in_flight_requests == 0 {
            errors.push("max_in_flight_requests: must be positive".to_owned());
        }
        if self.request_timeout_ms == 0 {
            errors.push("request_timeout_ms: must be positive".to_owned());
        }
        if self.message_ttl_secs > MAX_MESSAGE_TTL_SECS {
            errors.push(format!("message_ttl_secs: at most {MAX_MESSAGE_TTL_SECS} (5 years), or 0 for no expiry"));
        }
        if let Some(dc) = &self.local_datacenter {
            if dc.is_empty() {
                errors.push("local_datacenter: empty; omit it instead".to_owned());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(StoreError::InvalidArgument(format!("invalid [storage.scylla] config: {}", errors.join("; "))))
        }
    }
}

/// Checks a keyspace name: `[a-z][a-z0-9_]{0,47}`. Lowercase only, so the name means the
/// same quoted and unquoted in CQL and never needs escaping.
pub fn check_keyspace_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1..=48 of a-z, 0-9 and _, starting with a letter"))
    }
}

/// Keyspace replication, written as a TOML table:
///
/// ```toml
/// [storage.scylla.replication]
/// class = "NetworkTopologyStrategy"
/// datacenters = { dc1 = 3, dc2 = 3 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", deny_unknown_fields)]
pub enum Replication {
    /// One replica set for the whole cluster, ignoring datacenters: for one node or tests.
    SimpleStrategy {
        /// Copies of each row.
        replication_factor: u32,
    },
    /// Replicas per datacenter: the production choice (and the only one ScyllaDB allows
    /// with tablets).
    NetworkTopologyStrategy {
        /// Datacenter name → copies of each row there.
        datacenters: BTreeMap<String, u32>,
    },
}

impl Default for Replication {
    fn default() -> Self {
        Replication::SimpleStrategy { replication_factor: DEFAULT_REPLICATION_FACTOR }
    }
}

impl Replication {
    fn validate(&self) -> Result<(), String> {
        match self {
            Replication::SimpleStrategy { replication_factor: 0 } => Err("replication_factor must be ≥ 1".into()),
            Replication::SimpleStrategy { .. } => Ok(()),
            Replication::NetworkTopologyStrategy { datacenters } => {
                if datacenters.is_empty() {
                    return Err("datacenters: name at least one".into());
                }
                for (dc, rf) in datacenters {
                    if dc.is_empty() || !dc.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
                        return Err(format!("datacenter name {dc:?} must be ASCII letters, digits, _ - ."));
                    }
                    if *rf == 0 {
                        return Err(format!("datacenter {dc:?}: replication factor must be ≥ 1"));
                    }
                }
                Ok(())
            }
        }
    }

    /// The CQL map literal, e.g. `{'class': 'SimpleStrategy', 'replication_factor': 1}`.
    /// Only called on validated values (names restricted to characters needing no escape).
    pub fn to_cql(&self) -> String {
        match self {
            Replication::SimpleStrategy { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Replication::NetworkTopologyStrategy { datacenters } => {
                let dcs: Vec<String> = datacenters.iter().map(|(dc, rf)| format!(", '{dc}': {rf}")).collect();
                format!("{{'class': 'NetworkTopologyStrategy'{}}}", dcs.concat())
            }
        }
    }
}

/// CQL consistency level of reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// One replica anywhere.
    One,
    /// One replica in the local DC.
    LocalOne,
    /// A majority of all replicas.
    Quorum,
    /// A majority of the local DC's replicas (default).
    #[default]
    LocalQuorum,
    /// A majority in every DC (writes only; reads fall back to QUORUM semantics).
    EachQuorum,
    /// Every replica.
    All,
}

impl Consistency {
    pub(crate) fn to_driver(self) -> scylla::statement::Consistency {
        use scylla::statement::Consistency as C;
        match self {
            Consistency::One => C::One,
            Consistency::LocalOne => C::LocalOne,
            Consistency::Quorum => C::Quorum,
            Consistency::LocalQuorum => C::LocalQuorum,
            Consistency::EachQuorum => C::EachQuorum,
            Consistency::All => C::All,
        }
    }
}

/// TLS to the cluster (rustls). The node's certificate must be valid for the address the
/// driver connects to: the driver names each node by its IP, so certificates need the
/// nodes' IP addresses as subject alternative names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaTlsConfig {
    /// PEM file of the CA(s) that signed the nodes' certificates. Only these are trusted.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, for clusters that require client certificates (with
    /// `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl ScyllaTlsConfig {
    /// Builds the rustls client config (reads the PEM files).
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, StoreError> {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
            StoreError::InvalidArgument(format!("[storage.scylla.tls] {what} {}: {e}", path.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.ca_file)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| bad("ca_file", &self.ca_file, &e))?;
        if cas.is_empty() {
            return Err(bad("ca_file", &self.ca_file, &"no certificate in the file"));
        }
        for ca in cas {
            roots.add(ca).map_err(|e| bad("ca_file", &self.ca_file, &e))?;
        }
        // aws-lc-rs explicitly: the driver's rustls build enables it, and naming the
        // provider avoids depending on a process-wide default.
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::InvalidArgument(format!("[storage.scylla.tls]: {e}")))?
        .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| bad("cert_file", cert, &e))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key_file", key, &e))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| bad("cert_file", cert, &e))
            }
            _ => Err(StoreError::InvalidArgument(
                "[storage.scylla.tls]: set both cert_file and key_file, or neither".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = ScyllaConfig::default();
        c.validate().unwrap();
        assert_eq!(c.nodes, vec!["127.0.0.1:9042"]);
        assert_eq!(c.keyspace, "tern");
        assert_eq!(c.consistency, Consistency::LocalQuorum);
        assert_eq!(c.replication.to_cql(), "{'class': 'SimpleStrategy', 'replication_factor': 1}");
    }

    #[test]
    fn defaults_roundtrip_through_toml() {
        let text = toml::to_string(&ScyllaConfig::default()).unwrap();
        assert!(text.contains("class = \"SimpleStrategy\""), "{text}");
        assert_eq!(toml::from_str::<ScyllaConfig>(&text).unwrap(), ScyllaConfig::default());
        let with_tls = ScyllaConfig {
            tls: Some(ScyllaTlsConfig { ca_file: "/ca.pem".into(), cert_file: None, key_file: None }),
            username: Some("u".into()),
            password: Some("p".into()),
            ..ScyllaConfig::default()
        };
        let text = toml::to_string(&with_tls).unwrap();
        assert_eq!(toml::from_str::<ScyllaConfig>(&text).unwrap(), with_tls);
        let debug = format!("{with_tls:?}");
        assert!(debug.contains("<redacted>") && !debug.contains("\"p\""), "{debug}");
    }

    #[test]
    fn parses_toml_and_refuses_unknown_fields() {
        let c: ScyllaConfig = toml::from_str(
            r#"
            nodes = ["10.0.0.1:9042", "10.0.0.2:9042"]
            keyspace = "chat"
            consistency = "quorum"
            message_ttl_secs = 86400
            [replication]
            class = "NetworkTopologyStrategy"
            datacenters = { dc1 = 3, "dc-2" = 2 }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.consistency, Consistency::Quorum);
        assert_eq!(c.replication.to_cql(), "{'class': 'NetworkTopologyStrategy', 'dc-2': 2, 'dc1': 3}");
        assert!(toml::from_str::<ScyllaConfig>("nodez = []").is_err());
        assert!(toml::from_str::<ScyllaConfig>("[replication]\nclass = \"SimpleStrategy\"\nfoo = 1").is_err());
        assert!(toml::from_str::<ScyllaConfig>("consistency = \"serial\"").is_err());
    }

    #[test]
    fn validation_collects_every_error() {
        let c = ScyllaConfig {
            nodes: vec![],
            keyspace: "Bad-Name".into(),
            replication: Replication::SimpleStrategy { replication_factor: 0 },
            username: Some("u".into()),
            message_ttl_secs: MAX_MESSAGE_TTL_SECS + 1,
            ..ScyllaConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        for part in ["nodes", "keyspace", "replication", "username", "message_ttl_secs"] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        for bad in ["", "1abc", "a b", "a;drop", &"a".repeat(49)] {
            assert!(check_keyspace_name(bad).is_err(), "{bad:?}");
        }
        check_keyspace_name(&"a".repeat(48)).unwrap();
        let nts = Replication::NetworkTopologyStrategy { datacenters: BTreeMap::from([("dc'1".to_owned(), 3)]) };
        assert!(nts.validate().is_err());
    }

    #[test]
    fn tls_refuses_missing_files() {
        let tls = ScyllaTlsConfig { ca_file: "/nonexistent/ca.pem".into(), cert_file: None, key_file: None };
        let err = tls.client_config().unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(ref m) if m.contains("ca_file")), "{err:?}");
    }
}
