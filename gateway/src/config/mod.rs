//! The gateway's configuration: a TOML file, overridden by `KITE_<SECTION>__<KEY>`
//! environment variables ([`crate::env`]), overridden by command-line flags.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8080"   # where the app and /mqtt are served
//! assets = "target/dist/app"  # the built app (optional)
//!
//! [[upstream]]                # the first upstream serves /mqtt; each also /mqtt/<name>
//! name = "local"
//! addresses = ["mqtt://127.0.0.1:1883", "mqtt://10.0.0.2:1883"]  # tried in order
//! ```

pub mod check;
pub mod env;

pub use crate::upstream::{BrokerUrl, Upstream, UpstreamTls, UrlError};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

/// Where the gateway listens for HTTP and WebSocket by default.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// The name given to an upstream passed as `--upstream URL` without a `NAME=` part.
pub const DEFAULT_UPSTREAM_NAME: &str = "default";

/// Limits that keep one browser (or a crowd of hostile ones) from hurting the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// Open TCP connections at most (HTTP and WebSocket); a permit is taken before accept.
    pub max_connections: usize,
    /// Open connections per source address at most, all listeners together; 0: no bound.
    pub max_connections_per_address: usize,
    /// Largest MQTT packet from a browser, and largest WebSocket message, in bytes.
    pub max_packet_size: u32,
    /// User Properties one MQTT 5 packet may carry (browsers and devices).
    pub max_user_properties: usize,
    /// Time a new WebSocket has to send its CONNECT (slowloris defence).
    pub connect_timeout: std::time::Duration,
    /// Subscriptions, publish rate and idle timeout per browser session.
    pub session: crate::proxy::SessionLimits,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            max_packet_size: 16 * 1024 * 1024,
            max_user_properties: 64,
            connect_timeout: std::time::Duration::from_secs(10),
            session: crate::proxy::SessionLimits {
                max_subscriptions: 1000,
                publish_rate: 0,
                publish_bytes_rate: 0,
                idle_timeout: None,
            },
        }
    }
}

/// A configuration problem, always with what is wrong, where, and how to fix it.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An upstream URL is malformed.
    #[error("{0}")]
    Url(#[from] UrlError),
    /// An upstream has an unusable name.
    #[error(
        "invalid upstream name {name:?}: use 1 to 64 letters, digits, '-' or '_' (it appears in the /mqtt/<name> path)"
    )]
    UpstreamName {
        /// The name as given.
        name: String,
    },
    /// An upstream's TLS settings are unusable.
    #[error("upstream {name:?}: {problem}")]
    UpstreamTls {
        /// The upstream.
        name: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// An upstream has no address.
    #[error("upstream {name:?} has no addresses: add `addresses = [\"mqtt://HOST:1883\"]`")]
    NoAddresses {
        /// The upstream.
        name: String,
    },
    /// Two upstreams share a name in the config file.
    #[error("upstream {name:?} is defined twice in the config file: names must be unique")]
    DuplicateUpstream {
        /// The upstream.
        name: String,
    },
    /// A limit is out of its range.
    #[error("invalid [limits] {key} = {value}: {expected}")]
    Limit {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: u64,
        /// The accepted range.
        expected: &'static str,
    },
    /// An allowed origin is not `*` or `scheme://host[:port]`.
    #[error(
        "invalid [http] allowed_origins entry {value:?}: use \"*\" or an origin like \"https://dash.example.com\" (scheme and host, no path)"
    )]
    Origin {
        /// The value as given.
        value: String,
    },
    /// The listen address does not parse.
    #[error(
        "invalid listen address {value:?} in [{section}] listen: expected IP:PORT, e.g. \"{example}\""
    )]
    Listen {
        /// The value as given.
        value: String,
        /// `http` or `broker`.
        section: &'static str,
        /// A valid address for that section.
        example: &'static str,
    },
    /// A `[broker]` setting is out of its range.
    #[error("invalid [broker] {key} = {value}: {expected}")]
    Broker {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: u64,
        /// The accepted range.
        expected: &'static str,
    },
    /// `[broker] sync` is not one of the policies.
    #[error(
        "invalid [broker] sync = {value:?}: use \"always\" (fsync before acknowledging) or \"periodic\" (fsync once a second)"
    )]
    Sync {
        /// The value as given.
        value: String,
    },
    /// MQTT over TLS was asked for without a certificate.
    #[error(
        "the embedded broker's TLS listener ({addr}) needs a certificate: add [tls] cert and key (or --tls-cert and --tls-key)"
    )]
    BrokerTlsWithoutCertificate {
        /// The TLS address.
        addr: SocketAddr,
    },
    /// The embedded broker would accept anyone from the network.
    #[error(
        "the embedded broker would listen on {addr} without authentication: add [[user]] entries, listen on 127.0.0.1 (--mqtt 127.0.0.1:1883), or set allow_anonymous = true in [broker] if anyone who can reach {addr} may use it"
    )]
    AnonymousBroker {
        /// The non-loopback address.
        addr: SocketAddr,
    },
}

/// `--upstream [NAME=]URL` as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamArg {
    /// The upstream's name (`default` when not given).
    pub name: String,
    /// One address of it.
    pub url: BrokerUrl,
}

impl FromStr for UpstreamArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, url) = match s.split_once('=') {
            Some((name, url)) => (name, url),
            None => (DEFAULT_UPSTREAM_NAME, s),
        };
        check_name(name).map_err(|e| e.to_string())?;
        let url = url.parse::<BrokerUrl>().map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_owned(),
            url,
        })
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP/WebSocket listen address.
    pub http: SocketAddr,
    /// Directory holding the built app (`index.html` and its assets), if any.
    pub assets: Option<PathBuf>,
    /// Upstream brokers; the first one serves `/mqtt`.
    pub upstreams: Vec<Upstream>,
    /// Origins (besides the gateway's own) whose pages may open `/mqtt` and use the HTTP API
    /// (CORS); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Connection and packet limits.
    pub limits: GatewayLimits,
    /// Certificate and key when the gateway serves `https://` and `wss://` itself.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Users and roles (empty: no authentication at the gateway).
    pub auth: kite_policy::auth::Auth,
    /// The embedded broker, used when no upstream is configured.
    pub broker: BrokerSettings,
    /// What a refused MQTT 3.1.1 PUBLISH gets (`[acl] v311_denied_publish`).
    pub v311_denied_publish: kite_policy::DeniedPublish,
    /// In front of an upstream, with logins: the client id sent upstream carries the user
    /// (`[acl] scope_client_ids`, default true), so that another user's same client id is
    /// another session there.
    pub scope_client_ids: bool,
    /// The embedded broker's bridges to other brokers (`[[bridge]]`).
    pub bridges: Vec<Bridge>,
    /// What the gateway records, when `[history] record` is set.
    pub history: Option<History>,
    /// The device monitor, when `[[devices]]` rules are given.
    pub devices: Option<Devices>,
    /// Alarms, when there is a data directory to keep them in.
    pub alarms: Option<Alarms>,
}

/// Alarms: the rules of the config file (`[[alarm]]`; more are made through the API), and
/// where rules and alarms are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarms {
    /// The `[[alarm]]` rules, checked, in the file's order.
    pub rules: Vec<kite_data::AlarmRule>,
    /// The data directory (`[broker] data_dir`): kept in its `data.redb`.
    pub dir: PathBuf,
    /// When commits reach the disk (`[broker] sync`).
    pub sync: kite_data::Sync,
    /// In front of an upstream: the login of the gateway's own sessions there.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
}

/// `[[devices]]`: the device monitor's rules, and where it keeps the devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// The rules, in the file's order.
    pub rules: Vec<crate::presence::Rule>,
    /// The data directory (`[broker] data_dir`): devices are kept in its `data.redb`.
    pub dir: PathBuf,
    /// When commits reach the disk (`[broker] sync`).
    pub sync: kite_data::Sync,
    /// In front of an upstream: the monitor's login there (`[history] username`,
    /// `password`: the login of the gateway's own sessions).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
}

/// Seconds of silence before an `activity` device is stale by default.
pub const DEFAULT_STALE_AFTER_SECS: u64 = 300;

/// `[history]`: the topics the gateway records, where, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The filters recorded.
    pub record: Vec<String>,
    /// Age and size bounds.
    pub retention: kite_data::Retention,
    /// The data directory (`[broker] data_dir`): the file is `data.redb` in it.
    pub dir: PathBuf,
    /// When commits reach the disk (`[broker] sync`).
    pub sync: kite_data::Sync,
    /// In front of an upstream: the recorder's login there (`[history] username`, `password`).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
}

/// Days kept by default (`[history] retention_days`).
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// Bytes kept at most by default (`[history] max_bytes`): 1 GiB.
pub const DEFAULT_HISTORY_BYTES: u64 = 1 << 30;

/// One `[[bridge]]`: what the bridge does, and how to reach the remote (its addresses in order
/// and TLS settings, as an upstream's).
#[derive(Debug, Clone)]
pub struct Bridge {
    /// The bridge, checked.
    pub config: kite_broker::bridge::BridgeConfig,
    /// The remote broker: the bridge's name, addresses and TLS settings.
    pub remote: Upstream,
}

/// Where the embedded broker listens for devices, and its limits (`[broker]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// TCP address for MQTT clients (devices).
    pub listen: SocketAddr,
    /// TLS address for MQTT clients, with the `[tls]` certificate.
    pub tls_listen: Option<SocketAddr>,
    /// Accept clients without credentials on a non-loopback address when no users are
    /// configured (like mosquitto 2's `allow_anonymous`).
    pub allow_anonymous: bool,
    /// The broker's own limits.
    pub config: kite_broker::BrokerConfig,
    /// Where retained messages and persistent sessions are kept; `None`: in memory only.
    pub data_dir: Option<PathBuf>,
    /// When writes reach the disk.
    pub sync: kite_broker::store::Sync,
}

impl BrokerSettings {
    /// The non-loopback address where the embedded broker would accept anyone, if it would
    /// (no upstream, so it runs; no users; `allow_anonymous` not set) — refused, like
    /// mosquitto 2.
    pub fn anonymous_on_network(&self, has_upstreams: bool, has_users: bool) -> Option<SocketAddr> {
        if has_upstreams || has_users || self.allow_anonymous {
            return None;
        }
        std::iter::once(self.listen)
            .chain(self.tls_listen)
            .find(|a| !a.ip().is_loopback())
    }
}

/// The embedded broker's data directory by default (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "kite-data";

/// Where the embedded broker listens for devices by default.
pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";

impl Config {
    /// The upstream that serves `/mqtt`.
    pub fn default_upstream(&self) -> Option<&Upstream> {
        self.upstreams.first()
    }

    /// The upstream with this name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// The config file's shape. The pass reads each section on its own ([`check`]); this whole
/// is what an environment variable's key is checked against ([`env::apply`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "read only by serde, to check the environment's keys"
)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) http: FileHttp,
    #[serde(default)]
    pub(crate) upstream: Vec<FileUpstream>,
    #[serde(default)]
    pub(crate) limits: FileLimits,
    pub(crate) tls: Option<FileTls>,
    #[serde(default)]
    pub(crate) user: Vec<FileUser>,
    #[serde(default)]
    pub(crate) role: Vec<FileRole>,
    #[serde(default)]
    pub(crate) broker: FileBroker,
    #[serde(default)]
    pub(crate) acl: FileAcl,
    pub(crate) jwt: Option<kite_policy::jwt::JwtSettings>,
    pub(crate) history: Option<FileHistory>,
    #[serde(default)]
    pub(crate) devices: Vec<FileDevices>,
    #[serde(default)]
    pub(crate) alarm: Vec<toml::Table>,
}

/// One `[[devices]]` rule as written: one of `status_topic`, `activity`, `sparkplug`,
/// `clients`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDevices {
    pub(crate) status_topic: Option<String>,
    pub(crate) online: Option<Vec<String>>,
    pub(crate) offline: Option<Vec<String>>,
    pub(crate) activity: Option<String>,
    pub(crate) stale_after_secs: Option<u64>,
    pub(crate) sparkplug: Option<bool>,
    pub(crate) clients: Option<bool>,
    pub(crate) client_ids: Option<Vec<String>>,
    pub(crate) except_client_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHistory {
    pub(crate) record: Option<Vec<String>>,
    pub(crate) retention_days: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAcl {
    pub(crate) v311_denied_publish: Option<kite_policy::DeniedPublish>,
    pub(crate) scope_client_ids: Option<bool>,
    pub(crate) anonymous_role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBroker {
    pub(crate) listen: Option<String>,
    pub(crate) tls_listen: Option<String>,
    #[serde(default)]
    pub(crate) allow_anonymous: bool,
    pub(crate) max_queued_messages: Option<u64>,
    pub(crate) max_queued_messages_online: Option<u64>,
    pub(crate) max_queued_bytes: Option<u64>,
    pub(crate) max_topic_levels: Option<u64>,
    pub(crate) max_topic_length: Option<u64>,
    pub(crate) max_subscriptions: Option<u64>,
    pub(crate) max_retained_messages: Option<u64>,
    pub(crate) max_retained_bytes: Option<u64>,
    pub(crate) max_inflight: Option<u64>,
    pub(crate) receive_maximum: Option<u64>,
    pub(crate) topic_alias_maximum: Option<u64>,
    pub(crate) max_keep_alive_secs: Option<u64>,
    pub(crate) max_session_expiry_secs: Option<u64>,
    pub(crate) sys_interval_secs: Option<u64>,
    pub(crate) persistence: Option<bool>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) sync: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileUser {
    pub(crate) name: String,
    pub(crate) password_hash: String,
    pub(crate) role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRole {
    pub(crate) name: String,
    pub(crate) upstream_username: Option<String>,
    pub(crate) upstream_password: Option<String>,
    #[serde(default)]
    pub(crate) client_id_prefix: String,
    pub(crate) publish: Option<Vec<String>>,
    pub(crate) subscribe: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) deny_publish: Vec<String>,
    #[serde(default)]
    pub(crate) deny_subscribe: Vec<String>,
    #[serde(default)]
    pub(crate) manage_alarms: bool,
    pub(crate) dashboards: Option<String>,
}

impl FileRole {
    /// The role's topic rules.
    pub(crate) fn acl(&self) -> kite_policy::acl::Acl {
        kite_policy::acl::Acl {
            publish: self.publish.clone(),
            subscribe: self.subscribe.clone(),
            deny_publish: self.deny_publish.clone(),
            deny_subscribe: self.deny_subscribe.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_packet_size: Option<u64>,
    pub(crate) max_user_properties: Option<u64>,
    pub(crate) max_connections_per_address: Option<u64>,
    pub(crate) connect_timeout_secs: Option<u64>,
    pub(crate) max_subscriptions: Option<u64>,
    pub(crate) publish_rate: Option<u64>,
    pub(crate) publish_bytes_rate: Option<u64>,
    pub(crate) idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttp {
    pub(crate) listen: Option<String>,
    pub(crate) assets: Option<PathBuf>,
    #[serde(default)]
    pub(crate) allowed_origins: Vec<String>,
}

/// A `[[bridge]]` without its `[[bridge.topic]]` entries (read on their own, for their lines).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBridge {
    pub(crate) name: String,
    pub(crate) addresses: Vec<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<PathBuf>,
    pub(crate) client_key: Option<PathBuf>,
    pub(crate) server_name: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) clean_start: bool,
    pub(crate) keep_alive_secs: Option<u64>,
    pub(crate) restart_secs: Option<Vec<u64>>,
    pub(crate) try_private: Option<bool>,
    pub(crate) notification_topic: Option<String>,
    pub(crate) max_queued_messages: Option<u64>,
    pub(crate) max_queued_bytes: Option<u64>,
}

/// One `[[bridge.topic]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileBridgeTopic {
    pub(crate) pattern: String,
    pub(crate) direction: String,
    pub(crate) qos: Option<u8>,
    #[serde(default)]
    pub(crate) local_prefix: String,
    #[serde(default)]
    pub(crate) remote_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileUpstream {
    pub(crate) name: String,
    pub(crate) addresses: Vec<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) client_cert: Option<PathBuf>,
    pub(crate) client_key: Option<PathBuf>,
    pub(crate) server_name: Option<String>,
}

/// Keys of the file that hold paths: relative ones are taken from the file's directory.
const PATH_KEYS: [(&str, &str); 5] = [
    ("http", "assets"),
    ("tls", "cert"),
    ("tls", "key"),
    ("jwt", "key_file"),
    ("broker", "data_dir"),
];

/// The same, in each `[[upstream]]`.
const UPSTREAM_PATH_KEYS: [&str; 3] = ["ca_file", "client_cert", "client_key"];

/// The same, in each `[[bridge]]`.
const BRIDGE_PATH_KEYS: [&str; 4] = ["ca_file", "client_cert", "client_key", "password_file"];

/// Makes the file's relative paths relative to `base` (the file's directory), so that the
/// file means the same whatever directory `kite` is started from.
pub(crate) fn anchor_paths(table: &mut toml::Table, base: &Path) {
    let anchor = |value: &mut toml::Value| {
        if let toml::Value::String(s) = value
            && Path::new(s.as_str()).is_relative()
        {
            *s = base.join(s.as_str()).to_string_lossy().into_owned();
        }
    };
    for (section, key) in PATH_KEYS {
        if let Some(toml::Value::Table(t)) = table.get_mut(section)
            && let Some(v) = t.get_mut(key)
        {
            anchor(v);
        }
    }
    for (section, keys) in [
        ("upstream", &UPSTREAM_PATH_KEYS[..]),
        ("bridge", &BRIDGE_PATH_KEYS[..]),
    ] {
        if let Some(toml::Value::Array(entries)) = table.get_mut(section) {
            for entry in entries {
                if let toml::Value::Table(t) = entry {
                    for key in keys {
                        if let Some(v) = t.get_mut(*key) {
                            anchor(v);
                        }
                    }
                }
            }
        }
    }
}

/// What the command line says, to be merged over the config file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--http`.
    pub http: Option<SocketAddr>,
    /// `--assets`.
    pub assets: Option<PathBuf>,
    /// `--upstream`, in order.
    pub upstreams: Vec<UpstreamArg>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `--mqtt`: the embedded broker's TCP address.
    pub mqtt: Option<SocketAddr>,
    /// `--mqtts`: the embedded broker's TLS address.
    pub mqtts: Option<SocketAddr>,
    /// `--data-dir`: the embedded broker's data directory.
    pub data_dir: Option<PathBuf>,
    /// `KITE_<SECTION>__<KEY>` environment variables (see [`crate::env`]), set over the file.
    pub env: Vec<(String, String)>,
}

pub(crate) fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::UpstreamName {
            name: name.to_owned(),
        })
    }
}

pub(crate) fn parse_listen(
    value: String,
    section: &'static str,
    example: &'static str,
) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Listen {
        value,
        section,
        example,
    })
}

pub(crate) fn check_origin(origin: &str) -> Result<(), ConfigError> {
    let ok = origin == "*"
        || origin.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty() && !rest.is_empty() && !rest.contains('/')
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Origin {
            value: origin.to_owned(),
        })
    }
}

/// Reads `[jwt]`'s key file (relative paths from `base`, the config file's directory) and
/// checks the settings with it.
pub fn load_jwt(
    settings: &kite_policy::jwt::JwtSettings,
    base: &Path,
) -> Result<kite_policy::jwt::Jwt, kite_policy::jwt::JwtConfigError> {
    settings.algorithm()?;
    let path = base.join(&settings.key_file);
    let bytes = std::fs::read(&path).map_err(|e| kite_policy::jwt::JwtConfigError::Read {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    kite_policy::jwt::Jwt::new(settings, &bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> BrokerUrl {
        s.parse().unwrap()
    }

    #[test]
    fn jwt_key_file_errors_name_the_file() {
        let settings = |alg: &str| kite_policy::jwt::JwtSettings {
            algorithm: alg.into(),
            key_file: "missing.key".into(),
            issuer: None,
            audience: None,
            role_claim: None,
            leeway_secs: None,
        };
        let dir = Path::new("/nonexistent-kite-dir");
        let e = load_jwt(&settings("HS256"), dir).unwrap_err().to_string();
        assert!(
            e.contains("cannot read") && e.contains("/nonexistent-kite-dir/missing.key"),
            "{e}"
        );
        // The algorithm is checked before the file is read.
        let e = load_jwt(&settings("ES256"), dir).unwrap_err().to_string();
        assert!(e.contains("HS256") && e.contains("RS256"), "{e}");
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            url("mqtt://broker.local:1884"),
            BrokerUrl {
                tls: false,
                host: "broker.local".into(),
                port: 1884
            }
        );
        assert_eq!(url("mqtt://h").port, 1883);
        assert_eq!(url("mqtts://h").port, 8883);
        assert_eq!(url("mqtts://h/").port, 8883);
        let v6 = url("mqtt://[::1]:1999");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1999));
        assert_eq!(v6.to_string(), "mqtt://[::1]:1999");
        assert_eq!(url("mqtt://[::1]").port, 1883);
    }

    #[test]
    fn bad_broker_urls_say_why() {
        for (input, needle) in [
            ("broker:1883", "missing scheme"),
            ("ws://h:80", "unsupported scheme \"ws\""),
            ("mqtt://h:0", "1 to 65535"),
            ("mqtt://h:99999", "1 to 65535"),
            ("mqtt://h:x", "1 to 65535"),
            ("mqtt://:1883", "missing host"),
            ("mqtt://u:p@h", "no path, query or user info"),
            ("mqtt://h/topic", "no path"),
            ("mqtt://[::1", "unclosed"),
        ] {
            let err = input.parse::<BrokerUrl>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(
                err.contains(input),
                "{input}: error must quote the input: {err}"
            );
        }
    }

    #[test]
    fn upstream_args() {
        let a: UpstreamArg = "mqtt://h:1".parse().unwrap();
        assert_eq!(a.name, "default");
        let b: UpstreamArg = "lab=mqtts://h".parse().unwrap();
        assert_eq!((b.name.as_str(), b.url.tls), ("lab", true));
        assert!(
            "bad name=mqtt://h"
                .parse::<UpstreamArg>()
                .unwrap_err()
                .contains("invalid upstream name")
        );
    }

    fn load_text(text: &str, overrides: Overrides) -> Result<Config, check::Problems> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kite-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{n}.toml"));
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), overrides)
    }

    #[test]
    fn upstream_tls_settings_are_checked_and_paths_anchored_to_the_file() {
        let e = load_text(
            "[[upstream]]\nname = \"a\"\naddresses = [\"mqtts://h\"]\nclient_cert = \"c.pem\"\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("client_cert and client_key go together"), "{e}");
        let e = load_text(
            "[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://h\"]\nca_file = \"ca.pem\"\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("without an mqtts:// address"), "{e}");
        let e = load_text(
            "[[upstream]]\nname = \"a\"\naddresses = [\"mqtts://h\"]\nserver_name = \"not a name\"\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("server_name"), "{e}");
        // Relative paths in the file are the file's directory's; absolute ones stay.
        let dir = std::env::temp_dir().join(format!("kite-config-test-{}", std::process::id()));
        let mut table: toml::Table = toml::from_str(
            "[http]\nassets = \"app\"\n[[upstream]]\nname = \"a\"\naddresses = [\"mqtts://h\"]\nca_file = \"pki/ca.pem\"\nclient_cert = \"/etc/c.pem\"\nclient_key = \"k.pem\"\n",
        )
        .unwrap();
        anchor_paths(&mut table, &dir);
        let upstream = &table["upstream"][0];
        let path = |v: &toml::Value| PathBuf::from(v.as_str().unwrap());
        assert_eq!(path(&table["http"]["assets"]), dir.join("app"));
        assert_eq!(path(&upstream["ca_file"]), dir.join("pki/ca.pem"));
        assert_eq!(path(&upstream["client_cert"]), PathBuf::from("/etc/c.pem"));
        assert_eq!(path(&upstream["client_key"]), dir.join("k.pem"));
        // ... and loading uses them so: the missing CA file is named by its anchored path.
        let e = load_text(
            "[[upstream]]\nname = \"a\"\naddresses = [\"mqtts://h\"]\nca_file = \"pki/ca.pem\"\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&dir.join("pki/ca.pem").display().to_string()),
            "{e}"
        );
        std::fs::create_dir_all(dir.join("app")).unwrap();
        std::fs::write(dir.join("app/index.html"), "<html></html>").unwrap();
        let cfg = load_text("[http]\nassets = \"app\"\n", Overrides::default()).unwrap();
        assert_eq!(cfg.assets, Some(dir.join("app")));
    }

    #[test]
    fn environment_between_file_and_flags() {
        let env = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let file = "[http]\nlisten = \"127.0.0.1:9000\"\n[limits]\nmax_connections = 10\n";
        let cfg = load_text(
            file,
            Overrides {
                env: env(&[
                    ("KITE_HTTP__LISTEN", "127.0.0.1:9001"),
                    ("KITE_LIMITS__MAX_CONNECTIONS", "20"),
                ]),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.http, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(cfg.limits.max_connections, 20);
        // A flag wins over both.
        let cfg = load_text(
            file,
            Overrides {
                http: Some("127.0.0.1:9002".parse().unwrap()),
                env: env(&[("KITE_HTTP__LISTEN", "127.0.0.1:9001")]),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.http, "127.0.0.1:9002".parse().unwrap());
        // Without a file, and checked like the file's values.
        let e = Config::load(
            None,
            Overrides {
                env: env(&[("KITE_LIMITS__MAX_CONNECTIONS", "0")]),
                ..Overrides::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[limits] max_connections = 0"), "{e}");
    }

    #[test]
    fn file_and_flags_merge() {
        let cfg = load_text(
            "[http]\nlisten = \"127.0.0.1:9000\"\n[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://x\", \"mqtt://y:2\"]\n",
            Overrides {
                upstreams: vec!["a=mqtt://z".parse().unwrap(), "mqtt://w".parse().unwrap()],
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.http.to_string(), "127.0.0.1:9000");
        assert_eq!(cfg.default_upstream().unwrap().name, "a");
        let a: Vec<String> = cfg
            .upstream("a")
            .unwrap()
            .addresses
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(a, ["mqtt://x:1883", "mqtt://y:2", "mqtt://z:1883"]);
        assert_eq!(cfg.upstream("default").unwrap().addresses[0].host, "w");
    }

    #[test]
    fn limits_and_origins() {
        let cfg = load_text(
            "[http]\nallowed_origins = [\"https://dash.example.com\", \"*\"]\n[limits]\nmax_connections = 5\nmax_packet_size = 4096\nconnect_timeout_secs = 3\n",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.limits.max_connections, 5);
        assert_eq!(cfg.limits.max_packet_size, 4096);
        assert_eq!(cfg.limits.connect_timeout.as_secs(), 3);
        assert_eq!(cfg.allowed_origins.len(), 2);
        let bad = load_text("[limits]\nmax_packet_size = 10\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("max_packet_size = 10") && bad.contains("128 to"),
            "{bad}"
        );
        let bad = load_text("[limits]\nconnect_timeout_secs = 0\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(bad.contains("1 to 300 seconds"), "{bad}");
        let bad = load_text(
            "[http]\nallowed_origins = [\"dash.example.com/x\"]\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("no path"), "{bad}");
    }

    #[test]
    fn defaults_without_file() {
        let cfg = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(cfg.http.to_string(), DEFAULT_HTTP);
        assert!(cfg.upstreams.is_empty());
    }

    #[test]
    fn file_errors_name_the_problem() {
        let unknown = load_text(
            "[http]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("unknown field `lisen`"), "{unknown}");
        assert!(unknown.contains(".toml:3: [http]"), "{unknown}");
        let bad_listen = load_text("[http]\nlisten = \"localhost\"\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(bad_listen.contains("IP:PORT"), "{bad_listen}");
        let empty = load_text(
            "[[upstream]]\nname = \"a\"\naddresses = []\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(empty.contains("no addresses"), "{empty}");
        let dup = load_text(
            "[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://x\"]\n[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://y\"]\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(dup.contains("defined twice"), "{dup}");
        let missing = Config::load(
            Some(Path::new("/nonexistent/kite.toml")),
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("/nonexistent/kite.toml"), "{missing}");
    }

    #[test]
    fn broker_section() {
        let cfg = load_text(
            "[broker]\nlisten = \"127.0.0.1:1884\"\nmax_queued_messages = 5\nsys_interval_secs = 0\n",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.broker.listen.to_string(), "127.0.0.1:1884");
        assert_eq!(cfg.broker.config.max_queued_messages, 5);
        assert_eq!(cfg.broker.config.sys_interval, None);
        let flag = load_text(
            "",
            Overrides {
                mqtt: Some("127.0.0.1:2000".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(flag.broker.listen.port(), 2000);

        let range = load_text("[broker]\nmax_inflight = 0\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            range.contains("[broker] max_inflight = 0: 1 to 65535"),
            "{range}"
        );
        let listen = load_text("[broker]\nlisten = \"1883\"\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(listen.contains("[broker] listen"), "{listen}");
    }

    /// `[acl] anonymous_role`: the role of sessions without a login, with `deny_*` rules.
    #[test]
    fn anonymous_role() {
        let cfg = load_text(
            "[acl]\nanonymous_role = \"guest\"\n[[role]]\nname = \"guest\"\ndeny_publish = [\"cmd/#\"]\ndeny_subscribe = [\"test/nosubscribe\"]\n",
            Overrides::default(),
        )
        .unwrap();
        let login = cfg.auth.anonymous().unwrap();
        assert_eq!(login.user, "");
        let acl = login.role.unwrap().acl;
        assert_eq!(acl.deny_publish, vec!["cmd/#"]);
        assert!(!acl.may_subscribe("test/nosubscribe", "", "c"));
        assert!(
            load_text("", Overrides::default())
                .unwrap()
                .auth
                .anonymous()
                .is_none()
        );
        let unknown = load_text("[acl]\nanonymous_role = \"guest\"\n", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("which no [[role]] defines"), "{unknown}");
    }

    /// Like mosquitto 2: no anonymous broker on the network unless asked for explicitly.
    #[test]
    fn anonymous_broker_beyond_loopback_is_refused() {
        let open = load_text(
            "[broker]\nlisten = \"0.0.0.0:1883\"\n",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(open.contains("without authentication"), "{open}");
        assert!(open.contains("allow_anonymous = true"), "{open}");
        load_text(
            "[broker]\nlisten = \"0.0.0.0:1883\"\nallow_anonymous = true\n",
            Overrides::default(),
        )
        .unwrap();
        // With an upstream, the embedded broker does not run.
        load_text(
            "[broker]\nlisten = \"0.0.0.0:1883\"\n[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://x\"]\n",
            Overrides::default(),
        )
        .unwrap();
    }
}
