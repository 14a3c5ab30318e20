//! Configuration of the logic tier. Every knob has a default constant saying why.

use serde::{Deserialize, Serialize};

/// HTTP API listen address. Loopback: the management API is for business servers on the
/// same host or behind a proxy, never the open internet by default.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8000";
/// Gateway link listen address. Loopback: in the one-process deployment the gateway is
/// local; multi-host deployments set it to a private interface.
pub const DEFAULT_LINK_ADDR: &str = "127.0.0.1:9100";
/// Most items one batch call may carry (importUser, getUserInfo, ...): bounds request
/// cost and response size; the original system used 100 too.
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Largest accepted HTTP request body: a full batch of profiles fits easily.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Open HTTP connections at most: business servers use few, pooled connections; the
/// cap keeps idle or hostile ones from taking the descriptors the gateway needs.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1_024;
/// Descriptors kept free besides the gateway's connections and the HTTP cap (store
/// files, gateway links, logs, the CQL driver's sockets).
pub const DEFAULT_HTTP_FD_RESERVE: usize = 256;
/// A request's headers must arrive within this once its first byte has: generous for
/// any real client, short for a slowloris.
pub const DEFAULT_HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;
/// A request body must arrive within this once its headers have (1 MiB at 1 Mbit/s
/// takes 8 s).
pub const DEFAULT_HTTP_BODY_TIMEOUT_MS: u64 = 30_000;
/// A connection with no request in flight is closed after this much silence (also a
/// new connection that sends nothing). Pools of business servers reconnect cheaply.
pub const DEFAULT_HTTP_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default and ceiling of `maxLimit`/`limit` on sync and paged calls.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
pub const MAX_PAGE_LIMIT: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the HTTP management API.
    pub addr: String,
    /// Most items in one batch call.
    pub max_batch: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Open connections at most (further ones are closed at once); cut at start to what
    /// the descriptor limit leaves after the gateway's connections and `fd_reserve`.
    pub max_connections: usize,
    /// Descriptors kept free for everything else.
    pub fd_reserve: usize,
    /// A request's headers must be complete this long after their first byte.
    pub header_timeout_ms: u64,
    /// A request's body must be complete this long after its headers (90007).
    pub body_timeout_ms: u64,
    /// A connection with no request in flight is closed after this much silence.
    pub idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_HTTP_ADDR.into(),
            max_batch: DEFAULT_MAX_BATCH,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            fd_reserve: DEFAULT_HTTP_FD_RESERVE,
            header_timeout_ms: DEFAULT_HTTP_HEADER_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_HTTP_BODY_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_HTTP_IDLE_TIMEOUT_MS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// Where logic listens for gateway links (and where gateways connect): `host:port`
    /// or `unix:PATH`.
    pub addr: String,
    /// `tern all`: link the process's own gateway cores through in-process socket pairs
    /// rather than over `addr`.
    pub in_process: bool,
    /// Logins of one link admitted together with one store trip (the reader admits a
    /// batch when it has read everything that arrived, or when it holds this many).
    pub max_logins_per_batch: usize,
    /// New logins being admitted at once over all links; past it a login is refused at
    /// once with 80009 (retry with backoff).
    pub max_logins_in_flight: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            addr: DEFAULT_LINK_ADDR.into(),
            in_process: true,
            max_logins_per_batch: crate::login::DEFAULT_MAX_LOGINS_PER_BATCH,
            max_logins_in_flight: crate::login::DEFAULT_MAX_LOGINS_IN_FLIGHT,
        }
    }
}

/// Largest message body (sum of element sizes), bytes: room for a long text or a small
/// custom payload; files and images travel as references.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 12 * 1024;
/// A resend with the same client message id within this window gets the original ack.
pub const DEFAULT_DEDUP_WINDOW_SECS: u64 = 24 * 3600;
/// Messages one connection may send per second (token bucket, burst twice this).
pub const DEFAULT_SENDS_PER_SEC: u32 = 20;
/// Largest page of a TCP Pull or HTTP offline/history call.
pub const DEFAULT_MAX_PULL: usize = 500;
/// Sends from one gateway link (one gateway core) accepted but not yet durable. Past it
/// new sends are refused at once with 80009 instead of queueing: at the embedded
/// store's group-commit rate this many sends clear in tens of milliseconds, so an
/// accepted send never waits seconds behind a backlog.
pub const DEFAULT_MAX_SENDS_IN_FLIGHT_PER_LINK: usize = 1_024;
/// Default of [`MessageConfig::max_sends_in_flight`]: the ceiling of the node-wide
/// adaptive limit (about 0.3 s of the embedded store's group-commit rate on 2 cores; the
/// latency target keeps the limit well below it under overload).
pub const DEFAULT_MAX_SENDS_IN_FLIGHT: usize = 4_096;
/// Default of [`MessageConfig::send_latency_target_ms`]: a store turn (submitted to
/// durable) takes 1-5 ms on a node with headroom. Measured at twice saturation (2
/// cores, p2p 20,000 msgs/s offered): a fixed bound let turns wait 109 ms (p50), ack p99
/// 762 ms; 50 ms gave ack p99 390 ms for 6% fewer accepted sends; 20 ms gave 333 ms for
/// 18% fewer, and refused sends even at half that rate on passing stalls.
pub const DEFAULT_SEND_LATENCY_TARGET_MS: u64 = 50;

/// Default of [`MessageConfig::max_loaded_groups`].
pub const DEFAULT_MAX_LOADED_GROUPS: usize = 50_000;

/// Default of [`MessageConfig::max_joined_views`]: a view is a few hundred bytes per
/// joined group, so 200,000 users in ~10 groups each hold a few hundred MB at most.
pub const DEFAULT_MAX_JOINED_VIEWS: usize = 200_000;

/// Messaging limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MessageConfig {
    /// Largest message body in bytes.
    pub max_body_bytes: usize,
    /// Dedup window for client message ids, seconds.
    pub dedup_window_secs: u64,
    /// Sends per second per connection.
    pub sends_per_sec: u32,
    /// Largest page of pulled messages.
    pub max_pull: usize,
    /// Sends of one gateway link accepted and not yet durable before new ones are
    /// refused with 80009.
    pub max_sends_in_flight_per_link: usize,
    /// Ceiling of the node-wide limit of sends (all links) handed to the store and not
    /// yet durable; past the current limit new sends are refused with 80009.
    pub max_sends_in_flight: usize,
    /// The limit shrinks while store turns take longer than this, and grows back while
    /// they do not (milliseconds; 0 = a fixed limit of `max_sends_in_flight`).
    pub send_latency_target_ms: u64,
    /// Groups kept in memory (record, members, seq allocator) at most; past it the
    /// least recently used idle groups are dropped and reloaded from the store when
    /// next touched (issue 11). Gauge `tern_groups_loaded`, counter
    /// `tern_groups_evicted_total`.
    pub max_loaded_groups: usize,
    /// Users' joined-groups views kept in memory at most; past it the least recently
    /// used idle ones are dropped and folded again from the user's `GroupList` log when
    /// next used. Gauge `tern_group_joined_views_loaded`, counter
    /// `tern_group_joined_views_evicted_total`.
    pub max_joined_views: usize,
}

impl Default for MessageConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            dedup_window_secs: DEFAULT_DEDUP_WINDOW_SECS,
            sends_per_sec: DEFAULT_SENDS_PER_SEC,
            max_pull: DEFAULT_MAX_PULL,
            max_sends_in_flight_per_link: DEFAULT_MAX_SENDS_IN_FLIGHT_PER_LINK,
            max_sends_in_flight: DEFAULT_MAX_SENDS_IN_FLIGHT,
            send_latency_target_ms: DEFAULT_SEND_LATENCY_TARGET_MS,
            max_loaded_groups: DEFAULT_MAX_LOADED_GROUPS,
            max_joined_views: DEFAULT_MAX_JOINED_VIEWS,
        }
    }
}

/// Default of [`ConversationConfig::max_held`]: at ~150 bytes a conversation (record,
/// last message preview, map entry) about 150 MB; a list read of a user whose view was
/// dropped costs a cold load from their snapshot (the bench: ~10 ms for 10,000
/// conversations), so keep the views of the users who read lists often.
pub const DEFAULT_MAX_HELD_CONVERSATIONS: usize = 1_000_000;
/// Default of [`ConversationConfig::checkpoint_every`]: a cold load refolds at most this
/// many inbox entries (a few ms), at one small log entry per this many inbox entries.
pub const DEFAULT_CONVERSATION_CHECKPOINT_EVERY: u64 = 1_000;
/// Default of [`ConversationConfig::compact_after`]: a user's conversation log is
/// compacted once it holds this many superseded entries and at least as many as it has
/// conversations, so it stays within about twice its live size plus this; one batch of
/// deletes per this many list reads or changes.
pub const DEFAULT_CONVERSATION_COMPACT_AFTER: usize = 1_000;
/// Default of [`ConversationConfig::snapshot_every`]: a list loaded after a restart
/// folds at most about this many entries after its snapshot (~1 ms), and a user whose
/// list is read rewrites it (~150 bytes a conversation) at most once per this many.
pub const DEFAULT_CONVERSATION_SNAPSHOT_EVERY: u64 = 1_000;

/// Conversation lists (issue 12, `[conversations]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationConfig {
    /// Conversations held in memory over all users' views; past it idle views are
    /// dropped (rebuilt from the store on their next read). Gauge
    /// `tern_conversations_held` (as of the newest view made).
    pub max_held: usize,
    /// Inbox entries folded without a record change before a checkpoint entry is
    /// logged (where a cold load resumes the fold).
    pub checkpoint_every: u64,
    /// Superseded conversation-log entries of one user before they are deleted (and at
    /// least as many as the user's conversations).
    pub compact_after: usize,
    /// Entries folded into a user's list (inbox and group messages, conversation-log
    /// entries) since its snapshot before a new snapshot is saved (after a list read);
    /// a list loaded after a restart starts from the snapshot and folds only these.
    /// Counter `tern_conversation_snapshots_total`.
    pub snapshot_every: u64,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self {
            max_held: DEFAULT_MAX_HELD_CONVERSATIONS,
            checkpoint_every: DEFAULT_CONVERSATION_CHECKPOINT_EVERY,
            compact_after: DEFAULT_CONVERSATION_COMPACT_AFTER,
            snapshot_every: DEFAULT_CONVERSATION_SNAPSHOT_EVERY,
        }
    }
}

impl ConversationConfig {
    /// What is wrong with these settings (empty: nothing), as `key: reason` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_held == 0 {
            p.push("max_held: must be at least 1".to_string());
        }
        if self.checkpoint_every == 0 {
            p.push("checkpoint_every: must be at least 1".to_string());
        }
        if self.compact_after == 0 {
            p.push("compact_after: must be at least 1".to_string());
        }
        if self.snapshot_every == 0 {
            p.push("snapshot_every: must be at least 1".to_string());
        }
        p
    }
}

/// Everything the logic tier needs that is not an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogicConfig {
    pub http: HttpConfig,
    pub link: LinkConfig,
    /// Reserved-bound step of the seq allocator (one bound write per this many seqs).
    pub seq_step: u64,
    /// Bytes of per-user state loaded on touch (seq states, friend views) kept in
    /// memory; past it idle entries are evicted, least recently used first, and loaded
    /// again on their next touch (`owners.rs`).
    pub owner_state_max_bytes: u64,
    /// Gateway TCP addresses `/user/login` hands to clients.
    pub advertise_tcp: Vec<String>,
    /// Gateway WebSocket URLs `/user/login` hands to clients.
    pub advertise_ws: Vec<String>,
    /// Heartbeat settings reported in LoginAck (the gateway enforces them).
    pub heartbeat_interval_ms: u32,
    pub heartbeat_timeout_ms: u32,
    /// Largest client frame the gateway accepts (reported in LoginAck).
    pub max_frame_bytes: u32,
    /// Messaging limits.
    pub messages: MessageConfig,
    /// Conversation lists (`[conversations]`).
    pub conversations: ConversationConfig,
    /// The web chat page (`[demo]`).
    pub demo: DemoConfig,
    /// The development app's id when `tern` runs it (no `[[apps]]` configured): only then
    /// does `/demo/session` mint signatures.
    pub dev_app_id: Option<u32>,
}

impl Default for LogicConfig {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            link: LinkConfig::default(),
            seq_step: crate::seq::DEFAULT_SEQ_STEP,
            owner_state_max_bytes: crate::owners::DEFAULT_OWNER_STATE_MAX_BYTES,
            advertise_tcp: vec!["127.0.0.1:9000".into()],
            advertise_ws: vec!["ws://127.0.0.1:19000/".into()],
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 90_000,
            max_frame_bytes: 65_536,
            messages: MessageConfig::default(),
            conversations: ConversationConfig::default(),
            demo: DemoConfig::default(),
            dev_app_id: None,
        }
    }
}

/// The web chat page `/demo` (built on the TypeScript SDK, embedded in the binary).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Serve `/demo`. Its signature endpoint `/demo/session` additionally needs the
    /// development app (no `[[apps]]` configured); with configured apps the page asks for
    /// a signature instead.
    pub enabled: bool,
}

impl Default for DemoConfig {
    /// On: the page is static and harmless, and the only thing that signs anything is
    /// limited to the development app, which a deployment with `[[apps]]` does not run.
    fn default() -> Self {
        Self { enabled: true }
    }
}
