//! Configuration: built-in defaults, then an optional TOML file, then
//! `HERALD_*` environment variables, then command-line flags — each layer
//! overriding the one before. A bad value fails start-up with one line that
//! names the setting and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::JwtAlgorithm;
#[cfg(feature = "jwt")]
use crate::auth::{KeyError, TokenVerifier};
use herald_protocol::channel::Channel;
use herald_protocol::{ErrorBody, ErrorCode};

/// The secret and API key standalone uses when none is configured, so the
/// first run needs no set-up. Distributed services refuse to start without
/// real ones, and standalone warns loudly.
pub const DEV_JWT_SECRET: &str = "herald-development-secret-do-not-deploy";
/// The server API key standalone accepts when none is configured.
pub const DEV_API_KEY: &str = "herald-dev-key";

/// Environment variables with this prefix are settings (`HERALD_HTTP_ADDR`
/// → `http_addr`), except `HERALD_CONFIG` and `HERALD_TEST_*`.
pub const ENV_PREFIX: &str = "HERALD_";
/// `HERALD_*` variables that are not settings: the config-file path itself
/// and the test suite's own variables.
const ENV_NOT_SETTINGS: &[&str] = &["config"];
const ENV_TEST_PREFIX: &str = "test_";

/// A setting that cannot be used: which, where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad setting `{key}`{origin}: {message}")]
pub struct ConfigError {
    /// The setting's name (`ping_interval_secs`).
    pub key: String,
    /// Where the value came from (` (from HERALD_…)`), or empty when unknown.
    pub origin: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key` (a setting's name, placed in its table:
    /// `ping_interval_secs` is `edge.ping_interval_secs`), with no origin.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        let key = match crate::settings_doc::section_of(key) {
            Some(section) => format!("{section}.{key}"),
            None => key.to_owned(),
        };
        ConfigError {
            key,
            origin: String::new(),
            message: message.into(),
        }
    }

    fn from_figment(error: figment::Error) -> Self {
        let profile = error.profile.clone().unwrap_or_default();
        let key = error.path.join(".");
        let origin = match &error.metadata {
            Some(md) => {
                let name = if error.path.is_empty() {
                    md.name.to_string()
                } else if md.name.contains("environment") {
                    // A variable is named after the setting alone, whatever
                    // its table.
                    let setting = error.path.last().map(String::as_str).unwrap_or_default();
                    format!("{ENV_PREFIX}{}", setting.to_ascii_uppercase())
                } else {
                    md.interpolate(&profile, &error.path)
                };
                match &md.source {
                    Some(source) => format!(" (from {name} in {source})"),
                    None => format!(" (from {name})"),
                }
            }
            None => String::new(),
        };
        let message = match &error.kind {
            // figment lists every known field: one line should stay readable
            figment::error::Kind::UnknownField(name, _) => {
                match crate::settings_doc::section_of(name) {
                    Some(section) if error.path.len() <= 1 => format!(
                        "`{name}` is a setting of the `[{section}]` table, not of the top level"
                    ),
                    _ => format!(
                        "unknown setting `{name}` (a typo? `herald config defaults` lists them all)"
                    ),
                }
            }
            kind => kind.to_string(),
        };
        ConfigError {
            key: if key.is_empty() {
                "<config>".into()
            } else {
                key
            },
            origin,
            message,
        }
    }
}

/// Per-namespace channel behaviour. A namespace not listed gets `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// How many publications of each channel are kept for recovery.
    pub history_size: usize,
    /// How long a publication is kept, in seconds.
    pub history_ttl_secs: u64,
    /// Whether clients (not only the server API) may publish.
    pub allow_publish: bool,
    /// Whether the `presence` command may ask who is in a channel.
    pub presence: bool,
    /// Whether subscribers are told when users join and leave.
    pub join_leave: bool,
    /// Whether clients may send `typing`.
    pub typing: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            history_size: 100,
            history_ttl_secs: 3600,
            allow_publish: true,
            presence: true,
            join_leave: true,
            typing: true,
        }
    }
}

/// Every setting: the part every service shares, then one section per
/// service (see docs/SETTINGS.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address: the edge's (and standalone's) for clients,
    /// `0.0.0.0:8080` — standalone with the development secret
    /// `127.0.0.1:8080`; routing's server API `0.0.0.0:8081`; presence
    /// `0.0.0.0:8082` and notify `0.0.0.0:8083` (health, metrics, notify's
    /// device API).
    pub http_addr: Option<SocketAddr>,
    /// gRPC listen address: routing (and standalone) `0.0.0.0:50051` —
    /// standalone with the development secret `127.0.0.1:50051`; presence
    /// `0.0.0.0:50052`; notify `0.0.0.0:50053`.
    pub grpc_addr: Option<SocketAddr>,
    /// This process's name in the cluster; generated when unset.
    pub node_id: Option<String>,
    /// NATS servers: a comma-separated seed list
    /// (`nats://a:4222,nats://b:4222`); seeds that are down are skipped at
    /// start, and the client then reconnects to any server of the cluster.
    pub nats_url: String,
    /// NATS user name, with `nats_password`, when the servers require one.
    pub nats_user: Option<String>,
    /// The password of `nats_user`.
    pub nats_password: Option<String>,
    /// Or a NATS authentication token.
    pub nats_token: Option<String>,
    /// Or a NATS `.creds` file (a user JWT and its NKey seed).
    pub nats_creds_file: Option<PathBuf>,
    /// PEM CA certificates NATS servers are verified against (else the
    /// system's roots).
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, when the servers verify clients.
    pub nats_tls_cert_file: Option<PathBuf>,
    /// The private key of `nats_tls_cert_file`.
    pub nats_tls_key_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS (implied by a CA or client
    /// certificate, or a `tls://` URL).
    pub nats_tls_required: bool,
    /// The presence service's gRPC address, which routing asks who is online
    /// and the edge asks for `presence`; unset: no pushes, no `presence`.
    pub presence_url: Option<String>,
    /// Notify's gRPC address, where routing asks whether offline users have
    /// devices (`SendToUser` → `no_devices`); unset: offline users are
    /// `pushed`, and the worker drops the jobs of users without devices.
    pub notify_url: Option<String>,
    /// The first token of every NATS subject and the prefix of stream names,
    /// so several Herald clusters (or test runs) can share one NATS.
    pub subject_prefix: String,
    /// Server API keys (`Authorization: Bearer <key>`), each at least 8
    /// characters; required outside standalone (comma-separated in the
    /// variable).
    #[serde(deserialize_with = "string_or_list")]
    pub api_keys: Vec<String>,
    /// Load balancers and proxies in front of Herald (addresses or CIDRs):
    /// their connections carry many clients, so the per-address limits
    /// apply to the client they name in `X-Forwarded-For` instead.
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,

    /// Seconds a new HTTP connection has to send its request headers.
    pub http_header_timeout_secs: u64,
    /// Connections (sockets) one client address may hold on one process
    /// (0: no limit). A tenth of `max_connections` by default: enough for a
    /// large office or carrier NAT, not enough for one host to take all.
    pub max_connections_per_ip: usize,
    /// Largest client frame, and largest publication `data`, in bytes.
    pub max_message_bytes: usize,
    /// Deepest nesting of arrays and objects in publication `data`.
    pub max_json_depth: usize,
    /// Seconds to finish in-flight work after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Seconds between an edge's presence heartbeats; an edge silent for
    /// three is taken for dead.
    pub presence_heartbeat_secs: u64,
    /// Copies JetStream keeps of the notify queue and the presence lease.
    pub queue_replicas: usize,
    /// How long a push job taken by a notify process that died is held
    /// before another takes it, seconds.
    pub push_ack_wait_secs: u64,
    /// Whether a stream that exists with other settings than configured
    /// (replicas, storage, limits) is changed to the configuration. Off: it
    /// is left as it is, and the difference is reported in the logs and in
    /// routing's `/readyz`.
    pub stream_update: bool,

    /// Refuse channels in namespaces not listed (104) instead of giving them
    /// the `default` namespace's settings.
    pub strict_namespaces: bool,
    /// Settings per namespace (`[namespaces.<name>]`); `default` is used for
    /// channels of unlisted namespaces, and those with none.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Push credentials per app (`[apps.<id>]`), chosen by a device's app.
    pub apps: BTreeMap<String, AppCredentials>,

    /// `pretty`, `json`, or unset: pretty on a terminal, JSON otherwise.
    pub log_format: Option<LogFormat>,
    /// The edge: client connections, their tokens, limits and timeouts (`[edge]`).
    pub edge: EdgeConfig,
    /// Routing: the write path, history and the server API (`[routing]`).
    pub routing: RoutingConfig,
    /// Presence: who is online (`[presence]`).
    pub presence: PresenceConfig,
    /// Notify: device tokens and push providers (`[notify]`).
    pub notify: NotifyConfig,
}

/// The edge: client connections, their tokens, limits and timeouts (`[edge]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The one algorithm client tokens must be signed with.
    pub jwt_algorithm: JwtAlgorithm,
    /// The HS256 secret, at least 32 bytes; required outside standalone.
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 / ES256.
    pub jwt_public_key_file: Option<PathBuf>,
    /// Or a JWKS file of public keys (RS256 / ES256), chosen by the token's
    /// `kid` (a token without one only when the file holds one usable key);
    /// an unknown `kid` makes the edge read the file again if it changed, so
    /// a provider's key rotation needs no restart; a changed file that does
    /// not parse keeps the keys already loaded; the algorithm stays pinned.
    pub jwt_jwks_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` / `nbf`, seconds.
    pub jwt_leeway_secs: u64,
    /// Browser origins allowed to open client connections; empty allows all.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// New client connections one address may open per second (its share
    /// of `connection_rate`; bursts of the same size).
    pub connection_rate_per_ip: u32,

    /// Seconds between server pings on client connections.
    pub ping_interval_secs: u64,
    /// Seconds a client has to answer a ping.
    pub pong_timeout_secs: u64,
    /// Seconds a new connection has to send `connect`.
    pub connect_timeout_secs: u64,
    /// Frames waiting to be written to one client before it counts as a
    /// slow consumer.
    pub client_queue_len: usize,
    /// Bytes waiting to be written to one client before it counts as a slow
    /// consumer.
    pub client_queue_bytes: usize,
    /// Seconds a write to a WebSocket client may take: longer, and the
    /// client has stopped reading — it is closed as a slow consumer (4001).
    pub write_timeout_secs: u64,
    /// Seconds the last frames and the close frame may take to leave, and
    /// the client to answer the close.
    pub close_timeout_secs: u64,
    /// Seconds a slow consumer (4001) gets to read what is already in its
    /// socket ahead of the close frame (only kernel buffers are held).
    pub slow_close_timeout_secs: u64,
    /// Frames written to a WebSocket before one flush (1: a write per frame).
    pub write_batch_frames: usize,
    /// How long an edge waits for routing to answer a client publish, ms.
    pub route_timeout_ms: u64,
    /// Seconds over which an edge tells its clients to reconnect elsewhere
    /// after SIGTERM, each at a random moment (no thundering herd).
    pub drain_window_secs: u64,
    /// Commands one connection may send per second (sustained)…
    pub command_rate: u32,
    /// …and in a burst.
    pub command_burst: u32,
    /// Commands of one connection waiting on routing or presence at once;
    /// past it the connection reads no more until one is answered.
    pub max_commands_in_flight: usize,
    /// Connections one edge holds at most; fewer when the descriptors or
    /// the memory (`memory_limit_mb` / `memory_per_connection_kb`) would
    /// not hold that many.
    pub max_connections: usize,
    /// The memory this process may use, MiB (a pod's limit); 0: read the
    /// cgroup's `memory.max`, no memory bound if there is none.
    pub memory_limit_mb: u64,
    /// The memory budgeted per client connection, KiB: an idle SSE stream
    /// costs about 44, an idle WebSocket about 10; a busy one more.
    pub memory_per_connection_kb: u64,
    /// A client connection older than this (seconds, ±10 %) is asked to
    /// reconnect (close 4004), so long-lived connections spread onto edges
    /// added since; 0: never.
    pub max_connection_age_secs: u64,
    /// New connections one edge accepts per second (sustained; bursts of
    /// the same size).
    pub connection_rate: u32,
    /// Connections one user may hold on one edge.
    pub max_connections_per_user: usize,
    /// An SSE stream is ended after this many seconds (0: never), so
    /// clients reconnect and rebalance; they resume with `Last-Event-ID`.
    pub sse_max_duration_secs: u64,
    /// How long a long-poll client counts as connected after its poll ends,
    /// seconds.
    pub poll_grace_secs: u64,
    /// Typing events one user may send per channel per second (bursts of
    /// three).
    pub typing_rate: u32,
}

/// Routing: the write path, history and the server API (`[routing]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// How long an idempotency key is remembered, seconds.
    pub idempotency_window_secs: u64,
    /// Channels one broadcast may name at most.
    pub max_broadcast_channels: usize,
    /// How long routing waits for presence before treating users as
    /// unknown, ms.
    pub presence_timeout_ms: u64,
    /// Where JetStream keeps history: `file` (default) or `memory`.
    pub history_storage: HistoryStorage,
    /// Bytes standalone's in-memory history keeps at most, every channel
    /// together (past it the oldest publications go first).
    pub history_memory_bytes: usize,
    /// Copies JetStream keeps of each history stream: 1 for one NATS
    /// server, 3 for a cluster (a node can then die without loss).
    pub history_replicas: usize,
    /// How long storing a publication may take, milliseconds: past it the
    /// publisher is answered — 503 (nothing stored) or 504 with the
    /// idempotency key to retry with (the outcome is unknown) — instead of
    /// waiting on an unreachable JetStream.
    pub publish_timeout_ms: u64,
}

/// Presence: who is online (`[presence]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How long a user whose last connection closed still counts as online,
    /// ms (a quick reconnect is not an offline moment).
    pub presence_grace_ms: u64,
}

/// Notify: device tokens and push providers (`[notify]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Notify's device store: `postgres://…` or `sqlite:…`; required by
    /// notify, and standalone's is `herald.db` in `data_dir` when unset.
    pub database_url: Option<String>,
    /// Where standalone keeps its files (the SQLite device store,
    /// `herald.db`, when `database_url` is unset); the working directory
    /// when unset. Made if missing.
    pub data_dir: Option<PathBuf>,

    /// APNs base URLs (production, sandbox) and FCM's; tests point them at
    /// fakes.
    pub apns_url: String,
    /// APNs' sandbox base URL, for devices of development builds.
    pub apns_sandbox_url: String,
    /// FCM's base URL.
    pub fcm_url: String,
    /// A PEM bundle of CA certificates trusted, besides the system's, by
    /// the APNs, FCM and Web Push clients (a private CA in front of them).
    pub provider_ca_file: Option<PathBuf>,
    /// Web Push endpoints `host` or `host:port` exempt from the rule that an
    /// endpoint must resolve to public addresses only (still `https`).
    #[serde(deserialize_with = "string_or_list")]
    pub webpush_allowed_hosts: Vec<String>,
    /// Alerts for one user and collapse key within this window become one
    /// summary at its end, ms.
    pub coalesce_window_ms: u64,
    /// Pushes one user may get per hour.
    pub push_rate_per_hour: u32,
    /// Tries per device before a push is given up (dead-lettered).
    pub push_max_attempts: u32,
    /// Push jobs handled at once by one notify process.
    pub push_concurrency: usize,
    /// Devices one user may register; the least recently seen go first.
    pub max_devices_per_user: usize,
}

/// One app's push credentials. Each platform is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppCredentials {
    /// The Apple developer team that owns the APNs key.
    pub apns_team_id: Option<String>,
    /// The id of the APNs key (the `kid` of provider tokens).
    pub apns_key_id: Option<String>,
    /// The `.p8` key from Apple (PKCS#8 PEM).
    pub apns_key_file: Option<PathBuf>,
    /// The bundle id; defaults to the app id.
    pub apns_topic: Option<String>,
    /// A Google service-account JSON file.
    pub fcm_service_account_file: Option<PathBuf>,
    /// The VAPID private key: 32 bytes, base64url (what web-push tools print).
    pub vapid_private_key: Option<String>,
    /// Who the push service may contact: `mailto:…` or `https://…`.
    pub vapid_subject: Option<String>,
}

/// Where JetStream keeps history streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStorage {
    /// On disk: survives a NATS restart.
    #[default]
    File,
    /// In memory: lost when NATS restarts.
    Memory,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object a line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: None,
            grpc_addr: None,
            node_id: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_creds_file: None,
            nats_tls_ca_file: None,
            nats_tls_cert_file: None,
            nats_tls_key_file: None,
            nats_tls_required: false,
            presence_url: None,
            notify_url: None,
            subject_prefix: "herald".into(),
            api_keys: Vec::new(),
            trusted_proxies: Vec::new(),
            http_header_timeout_secs: 10,
            max_connections_per_ip: 10_000,
            max_message_bytes: 64 * 1024,
            max_json_depth: 64,
            shutdown_grace_secs: 10,
            presence_heartbeat_secs: 5,
            queue_replicas: 1,
            push_ack_wait_secs: 60,
            stream_update: false,
            strict_namespaces: false,
            namespaces: BTreeMap::new(),
            apps: BTreeMap::new(),
            log_format: None,
            edge: EdgeConfig::default(),
            routing: RoutingConfig::default(),
            presence: PresenceConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_leeway_secs: 5,
            allowed_origins: Vec::new(),
            connection_rate_per_ip: 100,
            ping_interval_secs: 25,
            pong_timeout_secs: 10,
            connect_timeout_secs: 10,
            client_queue_len: 1024,
            client_queue_bytes: 4 * 1024 * 1024,
            write_timeout_secs: 10,
            close_timeout_secs: 10,
            slow_close_timeout_secs: 30,
            write_batch_frames: 64,
            route_timeout_ms: 5000,
            drain_window_secs: 10,
            command_rate: 50,
            command_burst: 100,
            max_commands_in_flight: 16,
            max_connections: 100_000,
            memory_limit_mb: 0,
            memory_per_connection_kb: 48,
            max_connection_age_secs: 0,
            connection_rate: 1000,
            max_connections_per_user: 100,
            sse_max_duration_secs: 0,
            poll_grace_secs: 10,
            typing_rate: 1,
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            idempotency_window_secs: 120,
            max_broadcast_channels: 1000,
            presence_timeout_ms: 500,
            history_storage: HistoryStorage::File,
            history_memory_bytes: crate::history::DEFAULT_MEMORY_BUDGET,
            history_replicas: 1,
            publish_timeout_ms: 2000,
        }
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            database_url: None,
            data_dir: None,
            apns_url: "https://api.push.apple.com".into(),
            apns_sandbox_url: "https://api.sandbox.push.apple.com".into(),
            fcm_url: "https://fcm.googleapis.com".into(),
            provider_ca_file: None,
            webpush_allowed_hosts: Vec::new(),
            coalesce_window_ms: 3000,
            push_rate_per_hour: 60,
            push_max_attempts: 5,
            push_concurrency: 32,
            max_devices_per_user: 10,
        }
    }
}

/// Accepts `"a,b"` (as environment variables give it) or `["a","b"]`.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Why a channel's namespace is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown namespace `{0}`")]
pub struct UnknownNamespace(pub String);

impl From<UnknownNamespace> for ErrorBody {
    fn from(e: UnknownNamespace) -> Self {
        ErrorBody::new(ErrorCode::UnknownChannel, e.to_string())
    }
}

impl Config {
    /// Loads the layers: defaults < `file` (if any) < `HERALD_*` < `flags`.
    /// `flags` holds only the settings given on the command line.
    pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "config",
                    format!("no such file: {}", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // A variable is the setting's own name; the setting lives in its
        // service's table (`HERALD_PING_INTERVAL_SECS` → `edge.ping_interval_secs`).
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                !key.starts_with(ENV_TEST_PREFIX) && !ENV_NOT_SETTINGS.contains(&key.as_str())
            })
            .map(|key| {
                let key = key.as_str().to_ascii_lowercase();
                match crate::settings_doc::section_of(&key) {
                    Some(section) => format!("{section}.{key}").into(),
                    None => key.into(),
                }
            });
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(ConfigError::from_figment)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("ping_interval_secs", self.edge.ping_interval_secs)?;
        positive("pong_timeout_secs", self.edge.pong_timeout_secs)?;
        positive("connect_timeout_secs", self.edge.connect_timeout_secs)?;
        positive("route_timeout_ms", self.edge.route_timeout_ms)?;
        positive("publish_timeout_ms", self.routing.publish_timeout_ms)?;
        positive("max_message_bytes", self.max_message_bytes as u64)?;
        positive("max_json_depth", self.max_json_depth as u64)?;
        positive("client_queue_len", self.edge.client_queue_len as u64)?;
        positive("client_queue_bytes", self.edge.client_queue_bytes as u64)?;
        positive("write_timeout_secs", self.edge.write_timeout_secs)?;
        positive("close_timeout_secs", self.edge.close_timeout_secs)?;
        positive("slow_close_timeout_secs", self.edge.slow_close_timeout_secs)?;
        positive("write_batch_frames", self.edge.write_batch_frames as u64)?;
        positive(
            "idempotency_window_secs",
            self.routing.idempotency_window_secs,
        )?;
        positive("command_rate", self.edge.command_rate as u64)?;
        positive("command_burst", self.edge.command_burst as u64)?;
        positive(
            "max_commands_in_flight",
            self.edge.max_commands_in_flight as u64,
        )?;
        positive("max_connections", self.edge.max_connections as u64)?;
        positive(
            "memory_per_connection_kb",
            self.edge.memory_per_connection_kb,
        )?;
        positive("connection_rate", self.edge.connection_rate as u64)?;
        positive(
            "connection_rate_per_ip",
            self.edge.connection_rate_per_ip as u64,
        )?;
        positive("http_header_timeout_secs", self.http_header_timeout_secs)?;
        for (key, replicas) in [
            ("history_replicas", self.routing.history_replicas),
            ("queue_replicas", self.queue_replicas),
        ] {
            // JetStream's own limit.
            if !(1..=5).contains(&replicas) {
                return Err(ConfigError::new(key, "must be 1 to 5"));
            }
        }
        for proxy in &self.trusted_proxies {
            if proxy.parse::<ipnet::IpNet>().is_err() && proxy.parse::<std::net::IpAddr>().is_err()
            {
                return Err(ConfigError::new(
                    "trusted_proxies",
                    format!("`{proxy}` is not an address or a CIDR (10.0.0.0/8)"),
                ));
            }
        }
        positive(
            "max_connections_per_user",
            self.edge.max_connections_per_user as u64,
        )?;
        positive(
            "max_broadcast_channels",
            self.routing.max_broadcast_channels as u64,
        )?;
        positive("presence_timeout_ms", self.routing.presence_timeout_ms)?;
        positive("presence_heartbeat_secs", self.presence_heartbeat_secs)?;
        positive("typing_rate", self.edge.typing_rate as u64)?;
        positive("push_rate_per_hour", self.notify.push_rate_per_hour as u64)?;
        positive("push_max_attempts", self.notify.push_max_attempts as u64)?;
        positive("push_concurrency", self.notify.push_concurrency as u64)?;
        positive(
            "max_devices_per_user",
            self.notify.max_devices_per_user as u64,
        )?;
        // Jobs folded into a summary wait unacknowledged for the window:
        // past the queue's ack wait they would be handed out again, each
        // its own alert.
        if self.notify.coalesce_window_ms > 30_000
            || self.notify.coalesce_window_ms >= self.push_ack_wait_secs.saturating_mul(1000)
        {
            return Err(ConfigError::new(
                "coalesce_window_ms",
                "must be at most 30000 and shorter than push_ack_wait_secs",
            ));
        }
        if let Some(node) = &self.node_id
            && (node.is_empty()
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(ConfigError::new(
                "node_id",
                "must be non-empty and use only A-Z a-z 0-9 _ - (it names NATS subjects)",
            ));
        }
        if self.subject_prefix.is_empty()
            || !self
                .subject_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::new(
                "subject_prefix",
                "must be non-empty and use only A-Z a-z 0-9 _ -",
            ));
        }
        for (name, ns) in &self.namespaces {
            // Namespace names become JetStream stream names and subject
            // tokens, so they are kept to letters, digits, `_` and `-`.
            let valid = name == "default"
                || (name != "_"
                    && !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            if !valid {
                return Err(ConfigError::new(
                    &format!("namespaces.{name}"),
                    "is not a valid namespace name",
                ));
            }
            if ns.history_size > 1_000_000 {
                return Err(ConfigError::new(
                    &format!("namespaces.{name}.history_size"),
                    "must be at most 1000000",
                ));
            }
        }
        if let Some(bad) = self
            .notify
            .webpush_allowed_hosts
            .iter()
            .find(|h| !is_host_and_port(h))
        {
            return Err(ConfigError::new(
                "webpush_allowed_hosts",
                format!("`{bad}` is not a host or host:port (like push.example.com:8443)"),
            ));
        }
        self.nats()
            .check()
            .map_err(|(key, why)| ConfigError::new(key, why))?;
        if self.api_keys.iter().any(|k| k.len() < 8) {
            return Err(ConfigError::new(
                "api_keys",
                "every API key must be at least 8 characters long",
            ));
        }
        Ok(())
    }

    #[cfg(feature = "jwt")]
    /// The token verifier for client connections. `allow_dev_secret` lets
    /// standalone fall back to [`DEV_JWT_SECRET`].
    pub fn token_verifier(&self, allow_dev_secret: bool) -> Result<TokenVerifier, ConfigError> {
        let leeway = Duration::from_secs(self.edge.jwt_leeway_secs);
        fn key_error(key: &'static str) -> impl Fn(KeyError) -> ConfigError {
            move |e| ConfigError::new(key, e.0)
        }
        match self.edge.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                if self.edge.jwt_jwks_file.is_some() {
                    return Err(ConfigError::new(
                        "jwt_jwks_file",
                        "holds public keys: set jwt_algorithm to RS256 or ES256",
                    ));
                }
                let secret = match (&self.edge.jwt_secret, allow_dev_secret) {
                    (Some(s), _) => s.as_str(),
                    (None, true) => DEV_JWT_SECRET,
                    (None, false) => {
                        return Err(ConfigError::new(
                            "jwt_secret",
                            "is required (HERALD_JWT_SECRET) for HS256",
                        ));
                    }
                };
                TokenVerifier::new(JwtAlgorithm::HS256, secret.as_bytes(), leeway)
                    .map_err(key_error("jwt_secret"))
            }
            algorithm => {
                let path = match (&self.edge.jwt_public_key_file, &self.edge.jwt_jwks_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::new(
                            "jwt_jwks_file",
                            "set either jwt_public_key_file or jwt_jwks_file, not both",
                        ));
                    }
                    (None, Some(jwks)) => {
                        return TokenVerifier::from_jwks_file(algorithm, jwks, leeway)
                            .map_err(key_error("jwt_jwks_file"));
                    }
                    (Some(path), None) => path,
                    (None, None) => {
                        return Err(ConfigError::new(
                            "jwt_public_key_file",
                            format!("is required for {} (or jwt_jwks_file)", algorithm.name()),
                        ));
                    }
                };
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new(
                        "jwt_public_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                TokenVerifier::new(algorithm, &pem, leeway)
                    .map_err(key_error("jwt_public_key_file"))
            }
        }
    }

    /// How to reach and authenticate to NATS.
    pub fn nats(&self) -> crate::bus::NatsOptions {
        use crate::bus::{NatsAuth, NatsOptions, NatsTls};
        let auth = match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (Some(_), None) => NatsAuth::Incomplete("nats_password", "is required with nats_user"),
            (None, Some(_)) => NatsAuth::Incomplete("nats_user", "is required with nats_password"),
            (None, None) => NatsAuth::None,
        };
        let others = [
            self.nats_token.clone().map(NatsAuth::Token),
            self.nats_creds_file.clone().map(NatsAuth::CredsFile),
        ];
        let auth = others
            .into_iter()
            .flatten()
            .fold(auth, |chosen, next| match chosen {
                NatsAuth::None => next,
                _ => NatsAuth::Incomplete(
                    "nats_token",
                    "set one of nats_user/nats_password, nats_token or nats_creds_file",
                ),
            });
        NatsOptions {
            urls: self.nats_url.clone(),
            auth,
            tls: NatsTls {
                ca_file: self.nats_tls_ca_file.clone(),
                cert_file: self.nats_tls_cert_file.clone(),
                key_file: self.nats_tls_key_file.clone(),
                required: self.nats_tls_required,
            },
        }
    }

    /// Where to serve HTTP: the configured address, else the service's
    /// built-in `default`.
    pub fn http_listen(&self, default: &str) -> Result<SocketAddr, ConfigError> {
        listen(self.http_addr, default, "http_addr")
    }

    /// Where to serve gRPC: the configured address, else `default`.
    pub fn grpc_listen(&self, default: &str) -> Result<SocketAddr, ConfigError> {
        listen(self.grpc_addr, default, "grpc_addr")
    }

    /// The server API keys; standalone falls back to [`DEV_API_KEY`].
    pub fn api_keys(&self, allow_dev_key: bool) -> Result<Vec<String>, ConfigError> {
        match (self.api_keys.is_empty(), allow_dev_key) {
            (false, _) => Ok(self.api_keys.clone()),
            (true, true) => Ok(vec![DEV_API_KEY.to_owned()]),
            (true, false) => Err(ConfigError::new(
                "api_keys",
                "at least one API key is required (HERALD_API_KEYS)",
            )),
        }
    }

    /// The settings of the channel's namespace; `default` (or the built-in
    /// defaults) for channels without one or with an unlisted one, unless
    /// `strict_namespaces` is on.
    pub fn namespace(&self, channel: &Channel) -> Result<&NamespaceConfig, UnknownNamespace> {
        static BUILT_IN: std::sync::OnceLock<NamespaceConfig> = std::sync::OnceLock::new();
        let default = || {
            self.namespaces
                .get("default")
                .unwrap_or_else(|| BUILT_IN.get_or_init(NamespaceConfig::default))
        };
        match channel.namespace() {
            None => Ok(default()),
            Some(ns) => match self.namespaces.get(ns) {
                Some(config) => Ok(config),
                None if self.strict_namespaces => Err(UnknownNamespace(ns.to_owned())),
                None => Ok(default()),
            },
        }
    }

    /// This node's id, or a generated one.
    pub fn node_id_or_generate(&self, role: &str) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("{role}-{:08x}", rand::random::<u32>()))
    }

    /// `ping_interval_secs` as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.edge.ping_interval_secs)
    }

    /// `pong_timeout_secs` as a duration.
    pub fn pong_timeout(&self) -> Duration {
        Duration::from_secs(self.edge.pong_timeout_secs)
    }

    fn on_stream_drift(&self) -> crate::streams::OnDrift {
        if self.stream_update {
            crate::streams::OnDrift::Update
        } else {
            crate::streams::OnDrift::Report
        }
    }

    /// How the history streams are kept.
    pub fn history_streams(&self) -> crate::streams::StreamSettings {
        crate::streams::StreamSettings {
            replicas: self.routing.history_replicas,
            on_drift: self.on_stream_drift(),
        }
    }

    /// How the notify queue and the presence lease streams are kept.
    pub fn queue_streams(&self) -> crate::streams::StreamSettings {
        crate::streams::StreamSettings {
            replicas: self.queue_replicas,
            on_drift: self.on_stream_drift(),
        }
    }

    /// How long a publish may take before it is answered anyway.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.routing.publish_timeout_ms)
    }

    /// `idempotency_window_secs` as a duration.
    pub fn idempotency_window(&self) -> Duration {
        Duration::from_secs(self.routing.idempotency_window_secs)
    }

    /// `presence_timeout_ms` as a duration.
    pub fn presence_timeout(&self) -> Duration {
        Duration::from_millis(self.routing.presence_timeout_ms)
    }

    /// `route_timeout_ms` as a duration.
    pub fn route_timeout(&self) -> Duration {
        Duration::from_millis(self.edge.route_timeout_ms)
    }

    /// `trusted_proxies` as networks (a bare address is a /32 or /128).
    pub fn trusted_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| {
                p.parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| p.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect()
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`: no scheme, path or user.
fn is_host_and_port(entry: &str) -> bool {
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, tail)) => match tail.strip_prefix(':') {
                Some(port) => (v6, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        },
    };
    let host_ok = if entry.starts_with('[') {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn listen(
    configured: Option<SocketAddr>,
    default: &str,
    key: &'static str,
) -> Result<SocketAddr, ConfigError> {
    match configured {
        Some(a) => Ok(a),
        None => default
            .parse()
            .map_err(|_| ConfigError::new(key, "bad built-in default")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        http_addr: Option<String>,
    }

    #[allow(clippy::result_large_err)] // figment's Jail API, tests only
    fn load(
        toml: Option<&str>,
        vars: &[(&str, &str)],
        flags: Flags,
    ) -> Result<Config, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            let path = toml.map(|t| {
                jail.create_file("herald.toml", t).expect("write file");
                PathBuf::from("herald.toml")
            });
            // Jail serializes tests that touch the process environment.
            out = Some(Config::load(path.as_deref(), &flags));
            Ok(())
        });
        out.expect("the jail ran")
    }

    #[test]
    fn layers_override_in_order() {
        let c = load(None, &[], Flags::default()).unwrap();
        assert_eq!(c, Config::default());

        let toml = "http_addr = \"127.0.0.1:1000\"\napi_keys = [\"aaaaaaaa\"]\n[edge]\nping_interval_secs = 7\n";
        let c = load(Some(toml), &[], Flags::default()).unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:1000".parse().unwrap()));
        assert_eq!(c.edge.ping_interval_secs, 7);

        let c = load(
            Some(toml),
            &[
                ("HERALD_HTTP_ADDR", "127.0.0.1:2000"),
                ("HERALD_API_KEYS", "k1k1k1k1, k2k2k2k2"),
            ],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:2000".parse().unwrap()));
        assert_eq!(c.api_keys, vec!["k1k1k1k1", "k2k2k2k2"]);
        assert_eq!(
            c.edge.ping_interval_secs, 7,
            "TOML still applies where env is silent"
        );

        let c = load(
            Some(toml),
            &[("HERALD_HTTP_ADDR", "127.0.0.1:2000")],
            Flags {
                http_addr: Some("127.0.0.1:3000".into()),
            },
        )
        .unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:3000".parse().unwrap()));

        // a variable is the setting's own name, whatever its table
        let c = load(
            Some(toml),
            &[
                ("HERALD_PING_INTERVAL_SECS", "9"),
                ("HERALD_PUSH_CONCURRENCY", "3"),
            ],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(c.edge.ping_interval_secs, 9);
        assert_eq!(c.notify.push_concurrency, 3);
    }

    #[test]
    fn a_setting_outside_its_table_is_refused_naming_the_table() {
        let e = load(Some("ping_interval_secs = 7\n"), &[], Flags::default()).unwrap_err();
        assert!(
            e.message.contains("`[edge]`"),
            "the message names the table: {e}"
        );
        let e = load(
            Some("[edge]\npush_concurrency = 7\n"),
            &[],
            Flags::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("push_concurrency"), "{e}");
    }

    #[test]
    fn bad_values_name_the_setting_in_one_line() {
        let e = load(
            None,
            &[("HERALD_HTTP_ADDR", "not-an-address")],
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "http_addr");
        assert!(e.origin.contains("HERALD_HTTP_ADDR"), "{e}");
        assert!(!e.to_string().contains('\n'));

        let e = load(
            None,
            &[("HERALD_PING_INTERVAL_SECS", "soon")],
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "edge.ping_interval_secs");
        assert!(e.origin.contains("HERALD_PING_INTERVAL_SECS"), "{e}");

        let e = load(
            Some("[edge]\nping_interval_secs = 0\n"),
            &[],
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad setting `edge.ping_interval_secs`: must be greater than 0"
        );

        let e = load(
            Some("[edge]\njwt_algorithm = \"HS999\"\n"),
            &[],
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "edge.jwt_algorithm");
        assert!(e.origin.contains("herald.toml"), "{e}");

        // a typo in a setting name is refused, not ignored
        let e = load(None, &[("HERALD_HTTP_ADR", "x")], Flags::default()).unwrap_err();
        assert!(e.message.contains("http_adr"), "{e}");

        let e = load(
            Some("[namespaces.chat]\nhistory_sise = 3\n"),
            &[],
            Flags::default(),
        )
        .unwrap_err();
        assert!(e.message.contains("history_sise"), "{e}");

        let e = load(None, &[("HERALD_API_KEYS", "short")], Flags::default()).unwrap_err();
        assert_eq!(e.key, "api_keys");

        let e = load(
            None,
            &[("HERALD_WEBPUSH_ALLOWED_HOSTS", "push.test:8443,https://x/")],
            Flags::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "notify.webpush_allowed_hosts");
        let c = load(
            Some("[notify]\nwebpush_allowed_hosts = [\"127.0.0.1:8443\", \"[::1]:9\", \"push.test\"]\n"),
            &[],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(c.notify.webpush_allowed_hosts.len(), 3);

        // the test suite's own variables are not settings
        assert!(load(None, &[("HERALD_TEST_NATS_URL", "x")], Flags::default()).is_ok());
    }

    #[test]
    fn the_printed_defaults_load_as_the_defaults_and_name_every_setting() {
        use crate::settings_doc::{CONFIG_DOCS, SECTIONS, as_object, defaults_toml};
        let text = defaults_toml();
        let loaded = load(Some(&text), &[], Flags::default()).expect("the printed file loads");
        assert_eq!(loaded, Config::default());
        let defaults = as_object(&Config::default());
        for (name, value) in &defaults {
            assert!(
                CONFIG_DOCS.iter().any(|(n, _)| n == name),
                "{name} has no doc entry"
            );
            let section = SECTIONS.iter().find(|(s, _)| s == name);
            match (section, value) {
                (Some((section, docs)), serde_json::Value::Object(fields)) => {
                    assert!(text.contains(&format!("\n[{section}]\n")), "[{section}]");
                    for field in fields.keys() {
                        assert!(
                            docs.iter().any(|(n, _)| n == field),
                            "{section}.{field} has no doc entry"
                        );
                        assert!(text.contains(&format!("{field} =")), "{field} missing");
                    }
                }
                _ if matches!(name.as_str(), "namespaces" | "apps") => {}
                _ => assert!(text.contains(&format!("{name} =")), "{name} missing"),
            }
        }
        let undocumented: Vec<_> = CONFIG_DOCS
            .iter()
            .chain(SECTIONS.iter().flat_map(|(_, docs)| docs.iter()))
            .filter(|(_, doc)| doc.is_empty())
            .collect();
        assert!(undocumented.is_empty(), "{undocumented:?}");
    }

    #[test]
    fn nats_credentials_are_one_complete_way() {
        let refused = |env: &[(&str, &str)]| load(None, env, Flags::default()).unwrap_err().key;
        assert_eq!(refused(&[("HERALD_NATS_USER", "herald")]), "nats_password");
        assert_eq!(refused(&[("HERALD_NATS_PASSWORD", "pw")]), "nats_user");
        assert_eq!(
            refused(&[
                ("HERALD_NATS_TOKEN", "t"),
                ("HERALD_NATS_CREDS_FILE", "/x.creds")
            ]),
            "nats_token"
        );
        assert_eq!(
            refused(&[("HERALD_NATS_TLS_CERT_FILE", "/c.pem")]),
            "nats_tls_key_file"
        );
        let config = load(
            None,
            &[
                ("HERALD_NATS_USER", "herald"),
                ("HERALD_NATS_PASSWORD", "pw"),
            ],
            Flags::default(),
        )
        .expect("user and password together load");
        let shown = format!("{:?}", config.nats());
        assert!(shown.contains("herald") && !shown.contains("pw"), "{shown}");
    }

    #[test]
    fn namespaces_default_and_strict() {
        let toml = "[namespaces.chat]\nhistory_size = 5\nallow_publish = false\n";
        let c = load(Some(toml), &[], Flags::default()).unwrap();
        let ch = |s| Channel::new(s).unwrap();
        assert_eq!(c.namespace(&ch("chat:1")).unwrap().history_size, 5);
        assert!(!c.namespace(&ch("chat:1")).unwrap().allow_publish);
        assert_eq!(c.namespace(&ch("news:1")).unwrap().history_size, 100);
        assert_eq!(c.namespace(&ch("lobby")).unwrap().history_size, 100);

        let strict = load(
            Some(&format!("strict_namespaces = true\n{toml}")),
            &[],
            Flags::default(),
        )
        .unwrap();
        assert!(strict.namespace(&ch("chat:1")).is_ok());
        assert_eq!(
            strict.namespace(&ch("news:1")),
            Err(UnknownNamespace("news".into()))
        );
        assert!(strict.namespace(&ch("lobby")).is_ok());
    }

    #[test]
    fn secrets_are_required_outside_standalone() {
        let c = Config::default();
        assert_eq!(c.token_verifier(false).unwrap_err().key, "edge.jwt_secret");
        assert!(c.token_verifier(true).is_ok());
        assert_eq!(c.api_keys(false).unwrap_err().key, "api_keys");
        assert_eq!(c.api_keys(true).unwrap(), vec![DEV_API_KEY]);
        let rs = Config {
            edge: EdgeConfig {
                jwt_algorithm: JwtAlgorithm::RS256,
                ..EdgeConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(
            rs.token_verifier(true).unwrap_err().key,
            "edge.jwt_public_key_file"
        );
        // a JWKS file: not with HS256, not next to a PEM key, and it must exist
        let jwks = Some(PathBuf::from("/nonexistent/jwks.json"));
        let hs_jwks = Config {
            edge: EdgeConfig {
                jwt_secret: Some("0123456789abcdef0123-abcdef012345678".into()),
                jwt_jwks_file: jwks.clone(),
                ..EdgeConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(
            hs_jwks.token_verifier(false).unwrap_err().key,
            "edge.jwt_jwks_file"
        );
        let both = Config {
            edge: EdgeConfig {
                jwt_public_key_file: Some(PathBuf::from("/nonexistent/key.pem")),
                jwt_jwks_file: jwks.clone(),
                ..rs.edge.clone()
            },
            ..rs.clone()
        };
        assert_eq!(
            both.token_verifier(false).unwrap_err().key,
            "edge.jwt_jwks_file"
        );
        let missing = Config {
            edge: EdgeConfig {
                jwt_jwks_file: jwks,
                ..rs.edge.clone()
            },
            ..rs
        };
        let e = missing.token_verifier(false).unwrap_err();
        assert_eq!(e.key, "edge.jwt_jwks_file");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
