//! The one validation pass of the config: [`Config::load`] (what `kite serve` runs) and
//! `kite check-config` ([`check_file`]) are this code. It reads the file, the environment's
//! `KITE_<SECTION>__<KEY>` keys and the flags, checks every value, and returns the config or
//! every problem found, each with where it is: the file and line and key, the environment
//! variable, or the flag.
//!
//! Each section is read on its own, so that one section's mistyped key does not hide the next
//! section's problems; each value is checked on its own (a bad value is reported and its
//! default stands in, so later checks still run).

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::env::{self, Applied};
use super::{
    Bridge, BrokerSettings, BrokerUrl, Config, ConfigError, DEFAULT_DATA_DIR, DEFAULT_MQTT,
    FileAcl, FileBridge, FileBridgeTopic, FileBroker, FileConfig, FileDevices, FileHistory,
    FileHttp, FileLimits, FileRole, FileTls, FileUpstream, FileUser, GatewayLimits, Overrides,
    Upstream, UpstreamTls, anchor_paths, check_name, check_origin, parse_listen,
};

/// One problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file, when the problem is in it.
    pub file: Option<PathBuf>,
    /// The line in that file (1-based); 0 when the problem is not on one line.
    pub line: usize,
    /// What it is about: a key (`limits.max_connections`, `upstream[2].addresses`), a section
    /// (`brokr`), an environment variable (`KITE_LIMITS__MAX_CONNECTIONS`) or a flag (`--mqtts`).
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), 0) => write!(f, "{}: {}", file.display(), self.message),
            (Some(file), line) => write!(f, "{}:{line}: {}", file.display(), self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

/// Every problem of a config, in file order (those of the environment and flags first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Problems {
    fn one(file: Option<&Path>, line: usize, key: &str, message: String) -> Self {
        Self(vec![Problem {
            file: file.map(Path::to_owned),
            line,
            key: key.to_owned(),
            message,
        }])
    }
}

/// Where each section starts and ends in the text.
struct Layout<'t> {
    text: &'t str,
    /// (name, index among `[[name]]`, first line, last line), 1-based lines.
    sections: Vec<(String, usize, usize, usize)>,
}

impl<'t> Layout<'t> {
    fn new(text: &'t str) -> Self {
        let mut sections: Vec<(String, usize, usize, usize)> = Vec::new();
        let total = text.lines().count();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            let name = if let Some(rest) = t.strip_prefix("[[") {
                rest.split("]]").next()
            } else if let Some(rest) = t.strip_prefix('[') {
                rest.split(']').next()
            } else {
                None
            };
            if let Some(name) = name {
                let name = name.trim().to_owned();
                if let Some(last) = sections.last_mut() {
                    last.3 = i;
                }
                let index = sections.iter().filter(|s| s.0 == name).count();
                sections.push((name, index, i + 1, total));
            }
        }
        Self { text, sections }
    }

    /// The line of `[name]` (or the `index`-th `[[name]]`), or of `key` inside it.
    fn line(&self, name: &str, index: usize, key: Option<&str>) -> usize {
        let Some(&(_, _, first, last)) = self.sections.iter().find(|s| s.0 == name && s.1 == index)
        else {
            return 0;
        };
        if let Some(key) = key {
            for (i, line) in self.text.lines().enumerate().take(last).skip(first) {
                let t = line.trim_start();
                if t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
                {
                    return i + 1;
                }
            }
            // Not a key: a value the message quotes (`unknown variant \`maybe\``,
            // `invalid type: integer \`8080\``).
            let quoted = format!("\"{key}\"");
            for (i, line) in self.text.lines().enumerate().take(last).skip(first) {
                let value = line.split_once('=').map(|(_, v)| v.trim());
                if line.contains(&quoted) || value == Some(key) {
                    return i + 1;
                }
            }
        }
        first
    }
}

/// The key a serde error message names (`unknown field \`x\``, `missing field \`x\``, ...).
fn named_key(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Every problem of the config file at `path`, with the environment's `KITE_…__…` keys over
/// it as `kite serve` would take them (empty: it is fine).
pub fn check_file(path: &Path) -> Vec<Problem> {
    let overrides = Overrides {
        env: env::from_process(),
        ..Overrides::default()
    };
    match load(Some(path), overrides) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0,
    }
}

/// The pass's state: where things are, and the problems so far.
struct Pass<'t> {
    file: Option<&'t Path>,
    layout: Layout<'t>,
    env: Applied,
    problems: Vec<Problem>,
}

impl Pass<'_> {
    /// A problem with `[section] key` (of the `index`-th `[[section]]`; `key` `None`: the
    /// section), at the environment variable that set it or else at its line in the file.
    fn report(
        &mut self,
        section: &str,
        index: Option<usize>,
        key: Option<&str>,
        message: impl fmt::Display,
    ) {
        if let Some(var) = key.and_then(|k| self.env.var(section, k)) {
            let var = var.to_owned();
            self.problems.push(Problem {
                file: None,
                line: 0,
                message: format!("environment variable {var}: {message}"),
                key: var,
            });
            return;
        }
        let mut name = match index {
            Some(i) => format!("{section}[{}]", i + 1),
            None => section.to_owned(),
        };
        if let Some(k) = key {
            name = format!("{name}.{k}");
        }
        let line = match self.file {
            Some(_) => self.layout.line(section, index.unwrap_or(0), key),
            None => 0,
        };
        self.problems.push(Problem {
            file: self.file.map(Path::to_owned),
            line,
            key: name,
            message: message.to_string(),
        });
    }

    /// A problem with a command-line flag's value.
    fn flag(&mut self, flag: &str, message: impl fmt::Display) {
        self.problems.push(Problem {
            file: None,
            line: 0,
            key: flag.to_owned(),
            message: format!("{flag}: {message}"),
        });
    }

    /// `[section]` (or the `index`-th `[[section]]`) read as `T`, or its problem reported.
    fn section<T: DeserializeOwned>(
        &mut self,
        section: &str,
        index: Option<usize>,
        value: &toml::Value,
    ) -> Option<T> {
        let e = match T::deserialize(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let message = e.message().trim().replace('\n', " ");
        let key = named_key(&message).map(str::to_owned);
        let vars = self.env.vars_of(section);
        // A key the environment set, or a section it started that misses a key.
        let by_env = !vars.is_empty()
            && (key
                .as_deref()
                .is_some_and(|k| self.env.var(section, k).is_some())
                || message.starts_with("missing field"));
        if by_env {
            let e = env::EnvError::Section {
                section: section.to_owned(),
                vars: vars.clone(),
                message,
            };
            self.problems.push(Problem {
                file: None,
                line: 0,
                key: vars,
                message: e.to_string(),
            });
            return None;
        }
        let what = match index {
            Some(i) => format!("[[{section}]] #{}", i + 1),
            None => format!("[{section}]"),
        };
        let line = self
            .layout
            .line(section, index.unwrap_or(0), key.as_deref());
        let mut name = match index {
            Some(i) => format!("{section}[{}]", i + 1),
            None => section.to_owned(),
        };
        if let Some(k) = &key {
            name = format!("{name}.{k}");
        }
        self.problems.push(Problem {
            file: self.file.map(Path::to_owned),
            line,
            key: name,
            message: format!("{what}: {message}"),
        });
        None
    }

    /// `Ok`'s value, or the problem reported at `[section] key`.
    fn take<T>(&mut self, section: &str, key: &str, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.report(section, None, Some(key), e)).ok()
    }
}

/// An integer key in `lo..=hi`, or its default after reporting it.
struct Range {
    key: &'static str,
    lo: u64,
    hi: u64,
    expected: &'static str,
    default: u64,
}

impl Pass<'_> {
    fn range(&mut self, section: &'static str, value: Option<u64>, r: Range) -> u64 {
        match value {
            None => r.default,
            Some(v) if (r.lo..=r.hi).contains(&v) => v,
            Some(value) => {
                let e = if section == "limits" {
                    ConfigError::Limit {
                        key: r.key,
                        value,
                        expected: r.expected,
                    }
                } else {
                    ConfigError::Broker {
                        key: r.key,
                        value,
                        expected: r.expected,
                    }
                };
                self.report(section, None, Some(r.key), e);
                r.default
            }
        }
    }
}

/// The default HTTP address ([`super::DEFAULT_HTTP`]).
const HTTP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// The default broker address ([`DEFAULT_MQTT`]).
const MQTT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1883));

// Here rather than in `mod.rs`, so that `config` does not call into `config::check`, which
// takes its types from `config` (no module circles: ARCHITECTURE.md).
impl Config {
    /// Reads the config file (if any), sets the environment's `KITE_<SECTION>__<KEY>` keys
    /// over it (`overrides.env`) and applies the command-line flags, checking everything
    /// once: the config, or every problem found, each with its file, line and key (or its
    /// variable or flag). Upstreams given on the command line are added after the file's; an
    /// address for an existing name is appended to that upstream's failover list.
    /// `kite check-config` runs this same pass ([`check_file`]).
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, Problems> {
        load(file, overrides)
    }
}

/// See [`Config::load`].
fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, Problems> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| {
            let e = ConfigError::Read {
                path: path.to_owned(),
                source,
            };
            Problems::one(None, 0, "", e.to_string())
        })?,
        None => String::new(),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            (
                line,
                before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
            )
        });
        let message = e.message().trim().replace('\n', " ");
        let message = if line > 0 {
            format!("invalid TOML at line {line}, column {column}: {message}")
        } else {
            format!("invalid TOML: {message}")
        };
        Problems::one(file, line, "", message)
    })?;
    // The file's relative paths are its directory's; the environment's (set next) are the
    // working directory's, like the flags'.
    if let Some(dir) = file.and_then(Path::parent) {
        anchor_paths(&mut table, dir);
    }
    let env = env::apply::<FileConfig>(&mut table, &overrides.env);
    let mut pass = Pass {
        file,
        layout: Layout::new(&text),
        problems: env
            .errors
            .iter()
            .map(|e| Problem {
                file: None,
                line: 0,
                key: match e {
                    env::EnvError::Var { var, .. } => var.clone(),
                    env::EnvError::Section { vars, .. } => vars.clone(),
                },
                message: e.to_string(),
            })
            .collect(),
        env,
    };
    let config = resolve(&mut pass, &table, overrides);
    if pass.problems.is_empty() {
        Ok(config)
    } else {
        let mut problems = pass.problems;
        problems.sort_by_key(|p| p.line);
        Err(Problems(problems))
    }
}

/// Every section and value checked; what is returned holds defaults where problems were found.
fn resolve(pass: &mut Pass<'_>, table: &toml::Table, overrides: Overrides) -> Config {
    let mut http = FileHttp::default();
    let mut limits = FileLimits::default();
    let mut broker = FileBroker::default();
    let mut acl = FileAcl::default();
    let mut tls: Option<FileTls> = None;
    let mut jwt: Option<kite_policy::jwt::JwtSettings> = None;
    let mut history: Option<FileHistory> = None;
    let mut devices: Vec<(usize, FileDevices)> = Vec::new();
    let mut alarm_rules: Vec<(usize, toml::Value)> = Vec::new();
    let mut upstreams: Vec<(usize, FileUpstream)> = Vec::new();
    let mut users: Vec<(usize, FileUser)> = Vec::new();
    let mut roles: Vec<(usize, FileRole)> = Vec::new();
    // Each [[bridge]] (its index) with its [[bridge.topic]] entries (each with its index
    // among all of the file's `[[bridge.topic]]` headers, for its line).
    let mut bridges: Vec<ReadBridge> = Vec::new();
    let mut topic_index = 0;
    for (key, value) in table {
        match key.as_str() {
            "http" => http = pass.section("http", None, value).unwrap_or_default(),
            "limits" => limits = pass.section("limits", None, value).unwrap_or_default(),
            "broker" => broker = pass.section("broker", None, value).unwrap_or_default(),
            "acl" => acl = pass.section("acl", None, value).unwrap_or_default(),
            "tls" => tls = pass.section("tls", None, value),
            "jwt" => jwt = pass.section("jwt", None, value),
            "history" => history = pass.section("history", None, value),
            "alarm" => {
                let Some(items) = value.as_array() else {
                    pass.report(key, None, None, "alarm must be written as [[alarm]] tables");
                    continue;
                };
                alarm_rules.extend(items.iter().cloned().enumerate());
            }
            "devices" => {
                let Some(items) = value.as_array() else {
                    pass.report(key, None, None, "devices must be written as [[devices]] tables");
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    if let Some(d) = pass.section(key, Some(i), item) {
                        devices.push((i, d));
                    }
                }
            }
            "upstream" | "user" | "role" => {
                let Some(items) = value.as_array() else {
                    pass.report(
                        key,
                        None,
                        None,
                        format!("{key} must be written as [[{key}]] tables"),
                    );
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    match key.as_str() {
                        "upstream" => {
                            if let Some(u) = pass.section(key, Some(i), item) {
                                upstreams.push((i, u));
                            }
                        }
                        "user" => {
                            if let Some(u) = pass.section(key, Some(i), item) {
                                users.push((i, u));
                            }
                        }
                        _ => {
                            if let Some(r) = pass.section(key, Some(i), item) {
                                roles.push((i, r));
                            }
                        }
                    }
                }
            }
            "bridge" => {
                let Some(items) = value.as_array() else {
                    pass.report(key, None, None, "bridge must be written as [[bridge]] tables");
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let mut without_topics = item.clone();
                    let topics = match &mut without_topics {
                        toml::Value::Table(t) => t.remove("topic"),
                        _ => None,
                    };
                    let mut entries = Vec::new();
                    match topics {
                        Some(toml::Value::Array(list)) => {
                            for t in &list {
                                if let Some(topic) = pass.section("bridge.topic", Some(topic_index), t) {
                                    entries.push((topic_index, topic));
                                }
                                topic_index += 1;
                            }
                        }
                        Some(_) => pass.report(
                            "bridge",
                            Some(i),
                            Some("topic"),
                            "a bridge's topics are written as [[bridge.topic]] tables",
                        ),
                        None => {}
                    }
                    if let Some(b) = pass.section(key, Some(i), &without_topics) {
                        bridges.push((i, b, entries));
                    }
                }
            }
            other => pass.report(
                other,
                None,
                None,
                format!(
                    "unknown section [{other}]: the sections are [http], [limits], [tls], [broker], [acl], [jwt], [history], [[upstream]], [[user]], [[role]], [[bridge]], [[devices]], [[alarm]]"
                ),
            ),
        }
    }

    // [http]
    let listen = http.listen.clone().and_then(|v| {
        let r = parse_listen(v, "http", super::DEFAULT_HTTP);
        pass.take("http", "listen", r)
    });
    let http_addr = overrides.http.or(listen).unwrap_or(HTTP);
    for origin in &http.allowed_origins {
        if let Err(e) = check_origin(origin) {
            pass.report("http", None, Some("allowed_origins"), e);
        }
    }
    let assets = match (overrides.assets, http.assets) {
        (Some(dir), _) => {
            if !dir.join("index.html").is_file() {
                pass.flag("--assets", no_index(&dir));
            }
            Some(dir)
        }
        (None, Some(dir)) => {
            if !dir.join("index.html").is_file() {
                pass.report("http", None, Some("assets"), no_index(&dir));
            }
            Some(dir)
        }
        (None, None) => None,
    };

    let gateway_limits = resolve_limits(pass, &limits);

    // [tls] or --tls-cert/--tls-key: the files are loaded as serving would.
    let tls_files = match (overrides.tls, tls) {
        (Some(files), _) => {
            if let Err(e) = crate::tls::load(&files) {
                pass.flag("--tls-cert/--tls-key", e);
            }
            Some(files)
        }
        (None, Some(t)) => {
            let files = crate::tls::TlsFiles {
                cert: t.cert,
                key: t.key,
            };
            if let Err(e) = crate::tls::load(&files) {
                pass.report("tls", None, Some("cert"), e);
            }
            Some(files)
        }
        (None, None) => None,
    };

    // A data directory asked for (in front of an upstream: keep alarms and dashboards there).
    let dir_given = broker.data_dir.is_some() || overrides.data_dir.is_some();
    let mut broker_settings = resolve_broker(pass, &broker, &gateway_limits);
    if let Some(addr) = overrides.mqtt {
        broker_settings.listen = addr;
    }
    if let Some(dir) = overrides.data_dir {
        broker_settings.data_dir = Some(dir);
    }
    if let Some(addr) = overrides.mqtts {
        broker_settings.tls_listen = Some(addr);
    }
    if let (Some(addr), None) = (broker_settings.tls_listen, &tls_files) {
        let e = ConfigError::BrokerTlsWithoutCertificate { addr };
        match overrides.mqtts {
            Some(_) => pass.flag("--mqtts", e),
            None => pass.report("broker", None, Some("tls_listen"), e),
        }
    }

    // [[upstream]], then --upstream.
    let mut resolved: Vec<Upstream> = Vec::new();
    let mut names = HashSet::new();
    for (i, u) in upstreams {
        if !names.insert(u.name.clone()) {
            let e = ConfigError::DuplicateUpstream {
                name: u.name.clone(),
            };
            pass.report("upstream", Some(i), Some("name"), e);
            continue;
        }
        if let Some(upstream) = resolve_upstream(pass, i, u) {
            // Its TLS files, loaded as forwarding would.
            if let Err(e) = crate::upstream::Connector::new(std::slice::from_ref(&upstream)) {
                let message = e.to_string();
                // The key the message is about.
                let key = ["client_cert", "client_key", "server_name", "ca_file"]
                    .into_iter()
                    .find(|k| message.contains(&k.replace('_', " ")) || message.contains(k))
                    .unwrap_or("addresses");
                pass.report("upstream", Some(i), Some(key), message);
            }
            resolved.push(upstream);
        }
    }
    for arg in overrides.upstreams {
        match resolved.iter_mut().find(|u| u.name == arg.name) {
            Some(u) => u.addresses.push(arg.url),
            None => resolved.push(Upstream::new(arg.name, vec![arg.url])),
        }
    }

    let bridges = resolve_bridges(pass, bridges, !resolved.is_empty());
    let login = history
        .as_ref()
        .map(|h| (h.username.clone(), h.password.clone()));
    let history =
        history.and_then(|h| resolve_history(pass, h, &broker_settings, !resolved.is_empty()));
    let login = login.unwrap_or_default();
    let devices = resolve_devices(
        pass,
        devices,
        &broker_settings,
        !resolved.is_empty(),
        login.clone(),
    );
    // In front of an upstream the gateway keeps no files unless something asks for them: the
    // alarms and dashboards are on there with [broker] data_dir (or --data-dir), [[alarm]]
    // rules, [history] or [[devices]].
    let stateless = !resolved.is_empty() && history.is_none() && devices.is_none() && !dir_given;
    let alarms = if stateless && alarm_rules.is_empty() {
        None
    } else {
        resolve_alarms(pass, alarm_rules, &broker_settings, login)
    };

    // [[role]], [[user]], [jwt], [acl].
    let access = |i: usize, r: &FileRole, pass: &mut Pass| {
        match r.dashboards.as_deref() {
        None => kite_policy::auth::DashboardAccess::default(),
        Some(s) => kite_policy::auth::DashboardAccess::parse(s).unwrap_or_else(|| {
            pass.report(
                "role",
                Some(i),
                Some("dashboards"),
                format!(
                    "[[role]] {:?}: dashboards = {s:?}: one of \"none\", \"view\" (list and open them, the default), \"edit\" (also create, change and delete them)",
                    r.name
                ),
            );
            kite_policy::auth::DashboardAccess::default()
        }),
    }
    };
    let dashboard_access: Vec<_> = roles.iter().map(|(i, r)| access(*i, r, pass)).collect();
    let (mut auth, problems) = kite_policy::auth::Auth::build(
        users
            .iter()
            .map(|(_, u)| kite_policy::auth::User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                role: u.role.clone(),
            })
            .collect(),
        roles
            .iter()
            .zip(dashboard_access)
            .map(|((_, r), dashboards)| kite_policy::auth::Role {
                acl: r.acl(),
                name: r.name.clone(),
                upstream_username: r.upstream_username.clone(),
                upstream_password: r.upstream_password.clone(),
                client_id_prefix: r.client_id_prefix.clone(),
                manage_alarms: r.manage_alarms,
                dashboards,
            })
            .collect(),
    );
    for p in problems {
        let (section, at) = match p.entry {
            kite_policy::Entry::User(n) => ("user", users.get(n).map(|(i, _)| *i)),
            kite_policy::Entry::Role(n) => ("role", roles.get(n).map(|(i, _)| *i)),
        };
        pass.report(section, at, Some(p.key), p.error);
    }
    // Relative paths were anchored to the file's directory above.
    if let Some(settings) = &jwt {
        match super::load_jwt(settings, Path::new("")) {
            Ok(verifier) => auth = auth.with_jwt(verifier),
            Err(e) => {
                let key = match e {
                    kite_policy::jwt::JwtConfigError::Algorithm(_) => "algorithm",
                    kite_policy::jwt::JwtConfigError::Leeway(_) => "leeway_secs",
                    _ => "key_file",
                };
                pass.report("jwt", None, Some(key), format!("[jwt]: {e}"));
            }
        }
    }
    let anonymous = acl.anonymous_role.as_deref();
    // A [jwt] or a user that was refused above still means logins are required.
    let logins = !users.is_empty() || jwt.is_some();
    let auth = match anonymous {
        Some(role) if logins && !auth.required() => {
            let e = kite_policy::auth::AuthConfigError::AnonymousRoleWithLogins {
                role: role.to_owned(),
            };
            pass.report("acl", None, Some("anonymous_role"), e);
            auth
        }
        _ => match auth.clone().with_anonymous_role(anonymous) {
            Ok(a) => a,
            Err(e) => {
                pass.report("acl", None, Some("anonymous_role"), e);
                auth
            }
        },
    };
    // Like mosquitto 2: no anonymous broker on the network.
    if let Some(addr) = broker_settings.anonymous_on_network(!resolved.is_empty(), logins) {
        let e = ConfigError::AnonymousBroker { addr };
        match overrides.mqtt.or(overrides.mqtts) {
            Some(_) => pass.flag("--mqtt/--mqtts", e),
            None if broker_settings.tls_listen == Some(addr) => {
                pass.report("broker", None, Some("tls_listen"), e)
            }
            None => pass.report("broker", None, Some("listen"), e),
        }
    }
    Config {
        auth,
        tls: tls_files,
        http: http_addr,
        assets,
        upstreams: resolved,
        allowed_origins: http.allowed_origins,
        limits: gateway_limits,
        broker: broker_settings,
        v311_denied_publish: acl.v311_denied_publish.unwrap_or_default(),
        scope_client_ids: acl.scope_client_ids.unwrap_or(true),
        bridges,
        history,
        devices,
        alarms,
    }
}

/// The data store's sync, as the broker's (`[broker] sync`).
fn data_sync(broker: &BrokerSettings) -> kite_data::Sync {
    match broker.sync {
        kite_broker::store::Sync::Always => kite_data::Sync::Always,
        kite_broker::store::Sync::Periodic => kite_data::Sync::Periodic,
    }
}

/// `[[alarm]]` checked rule by rule (the API's checks, `alarms::parse_rule`); `None` without
/// a data directory (then no rule may be given).
fn resolve_alarms(
    pass: &mut Pass<'_>,
    rules: Vec<(usize, toml::Value)>,
    broker: &BrokerSettings,
    (username, password): (Option<String>, Option<String>),
) -> Option<super::Alarms> {
    let mut out: Vec<kite_data::AlarmRule> = Vec::new();
    for (i, item) in &rules {
        let json = match serde_json::to_value(item) {
            Ok(j) => j,
            Err(e) => {
                pass.report("alarm", Some(*i), None, format!("[[alarm]]: {e}"));
                continue;
            }
        };
        match crate::alarms::parse_rule(&json) {
            Ok(rule) => {
                if out.iter().any(|r| r.name == rule.name) {
                    pass.report(
                        "alarm",
                        Some(*i),
                        Some("name"),
                        format!(
                            "[[alarm]] name {:?} is given twice: each rule has its own name",
                            rule.name
                        ),
                    );
                } else {
                    out.push(rule);
                }
            }
            Err(e) => {
                let key = e.field.split('.').next().unwrap_or("name").to_owned();
                let key = if key == "body" {
                    "name".to_owned()
                } else {
                    key
                };
                pass.report(
                    "alarm",
                    Some(*i),
                    Some(&key),
                    format!("[[alarm]] {}", e.message),
                );
            }
        }
    }
    let Some(dir) = broker.data_dir.clone() else {
        if !rules.is_empty() {
            pass.report(
                "alarm",
                Some(0),
                None,
                "[[alarm]] needs a data directory to keep alarms in, and [broker] persistence = false has none: remove that line",
            );
        }
        return None;
    };
    let sync = data_sync(broker);
    Some(super::Alarms {
        rules: out,
        dir,
        sync,
        username,
        password,
    })
}

/// `[[devices]]` checked rule by rule: `None` without rules.
fn resolve_devices(
    pass: &mut Pass<'_>,
    rules: Vec<(usize, FileDevices)>,
    broker: &BrokerSettings,
    upstreams: bool,
    (username, password): (Option<String>, Option<String>),
) -> Option<super::Devices> {
    use crate::presence::{Kind, Pattern, Rule};
    if rules.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (i, d) in rules {
        let mut report =
            |key: &str, message: String| pass.report("devices", Some(i), Some(key), message);
        let kinds = [
            d.status_topic.is_some(),
            d.activity.is_some(),
            d.sparkplug == Some(true),
            d.clients == Some(true),
        ];
        let kinds = kinds.iter().filter(|k| **k).count();
        if kinds != 1 {
            let what = if kinds == 0 { "none" } else { "more than one" };
            report(
                "status_topic",
                format!(
                    "[[devices]] has {what} of status_topic, activity, sparkplug = true, clients = true: give exactly one per [[devices]] table (several tables may name the same devices)"
                ),
            );
            continue;
        }
        let not_here = |key: &str, given: bool, report: &mut dyn FnMut(&str, String)| {
            if given {
                report(
                    key,
                    format!("[[devices]] {key} belongs to a status_topic rule: remove it here"),
                );
            }
        };
        let pattern = |key: &str, text: &str, report: &mut dyn FnMut(&str, String)| {
            Pattern::parse(text)
                .map_err(|e| report(key, format!("[[devices]] {key} = {e}")))
                .ok()
        };
        if let Some(text) = &d.status_topic {
            if d.stale_after_secs.is_some() {
                report(
                    "stale_after_secs",
                    "[[devices]] stale_after_secs belongs to an activity rule: add one (activity = \"<same topics>\") beside this status_topic rule".into(),
                );
            }
            let (default_on, default_off) = crate::presence::default_words();
            let online = d.online.clone().unwrap_or(default_on);
            let offline = d.offline.clone().unwrap_or(default_off);
            for (key, words) in [("online", &online), ("offline", &offline)] {
                if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                    report(
                        key,
                        format!(
                            "[[devices]] {key} = {words:?}: list the payloads that mean {key}, none of them empty, e.g. [\"{key}\"]"
                        ),
                    );
                }
            }
            if let Some(w) = online
                .iter()
                .find(|w| offline.iter().any(|o| o.eq_ignore_ascii_case(w)))
            {
                report(
                    "offline",
                    format!(
                        "[[devices]] {w:?} is both an online and an offline payload: keep it in one list"
                    ),
                );
            }
            if let Some(p) = pattern("status_topic", text, &mut report) {
                out.push(Rule {
                    kind: Kind::Status { online, offline },
                    pattern: Some(p),
                });
            }
            continue;
        }
        not_here("online", d.online.is_some(), &mut report);
        not_here("offline", d.offline.is_some(), &mut report);
        if let Some(text) = &d.activity {
            let secs = match d.stale_after_secs {
                None => super::DEFAULT_STALE_AFTER_SECS,
                Some(s @ 1..=31_536_000) => s,
                Some(s) => {
                    report(
                        "stale_after_secs",
                        format!(
                            "[[devices]] stale_after_secs = {s}: 1 to 31536000 (a year), e.g. 120"
                        ),
                    );
                    super::DEFAULT_STALE_AFTER_SECS
                }
            };
            if let Some(p) = pattern("activity", text, &mut report) {
                out.push(Rule {
                    kind: Kind::Activity {
                        stale_after: secs * 1000,
                    },
                    pattern: Some(p),
                });
            }
            continue;
        }
        if d.stale_after_secs.is_some() {
            report(
                "stale_after_secs",
                "[[devices]] stale_after_secs belongs to an activity rule: remove it here".into(),
            );
        }
        if d.clients != Some(true) {
            for (key, given) in [
                ("client_ids", d.client_ids.is_some()),
                ("except_client_ids", d.except_client_ids.is_some()),
            ] {
                if given {
                    report(
                        key,
                        format!(
                            "[[devices]] {key} belongs to a clients = true rule: remove it here"
                        ),
                    );
                }
            }
        }
        if d.sparkplug == Some(true) {
            out.push(Rule {
                kind: Kind::Sparkplug,
                pattern: None,
            });
            continue;
        }
        if upstreams {
            report(
                "clients",
                "[[devices]] clients = true needs the embedded broker: an [[upstream]] broker does not tell the gateway when its clients connect; use status_topic rules with the devices' Wills".into(),
            );
            continue;
        }
        let ids = d.client_ids.clone().unwrap_or_else(|| vec!["*".into()]);
        let except = d
            .except_client_ids
            .clone()
            .unwrap_or_else(|| vec![crate::presence::APP_CLIENT_IDS.into()]);
        if ids.is_empty() {
            report(
                "client_ids",
                "[[devices]] client_ids = []: no client would be a device; list the ids (\"*\" is any run of characters), e.g. [\"sensor-*\"], or leave the key out for every client".into(),
            );
        }
        out.push(Rule {
            kind: Kind::Clients { ids, except },
            pattern: None,
        });
    }
    let Some(dir) = broker.data_dir.clone() else {
        pass.report(
            "devices",
            Some(0),
            None,
            "[[devices]] needs a data directory to keep devices across restarts, and [broker] persistence = false has none: remove that line",
        );
        return None;
    };
    let sync = data_sync(broker);
    Some(super::Devices {
        rules: out,
        dir,
        sync,
        username,
        password,
    })
}

/// `[history]` checked: `None` without `record` (nothing is recorded).
fn resolve_history(
    pass: &mut Pass<'_>,
    h: FileHistory,
    broker: &BrokerSettings,
    upstreams: bool,
) -> Option<super::History> {
    let mut report = |key: &str, message: String| pass.report("history", None, Some(key), message);
    let retention_days = match h.retention_days {
        None => super::DEFAULT_RETENTION_DAYS,
        Some(d @ 0..=36_500) => d,
        Some(d) => {
            report(
                "retention_days",
                format!(
                    "[history] retention_days = {d}: 1 to 36500 days, or 0 to keep messages until max_bytes is reached"
                ),
            );
            super::DEFAULT_RETENTION_DAYS
        }
    };
    let max_bytes = match h.max_bytes {
        None => super::DEFAULT_HISTORY_BYTES,
        Some(b) if b >= 1 << 20 => b,
        Some(b) => {
            report(
                "max_bytes",
                format!(
                    "[history] max_bytes = {b}: at least 1048576 (1 MiB), e.g. 1073741824 for 1 GiB"
                ),
            );
            super::DEFAULT_HISTORY_BYTES
        }
    };
    let record = h.record?;
    if record.is_empty() {
        report(
            "record",
            "[history] record is empty: list the topic filters to record, e.g. [\"plant/#\"], or remove [history]".into(),
        );
    }
    for filter in &record {
        if let Err(e) = kite_mqtt::topic::validate_filter(filter) {
            report(
                "record",
                format!("[history] record: {filter:?} is not a topic filter: {e}"),
            );
        } else if filter.starts_with("$share/") {
            report(
                "record",
                format!(
                    "[history] record: {filter:?} is a shared subscription: the recorder must see every message; give the filter without $share/<group>/"
                ),
            );
        }
    }
    if !upstreams && (h.username.is_some() || h.password.is_some()) {
        report(
            "username",
            "[history] username and password are the login of the gateway's own sessions (recorder, device monitor) at an [[upstream]] broker; with the embedded broker they need none: remove them".into(),
        );
    }
    let Some(dir) = broker.data_dir.clone() else {
        report(
            "record",
            "[history] record needs a data directory, and [broker] persistence = false has none: remove that line (the history is kept in [broker] data_dir)".into(),
        );
        return None;
    };
    let sync = data_sync(broker);
    Some(super::History {
        record,
        retention: kite_data::Retention {
            max_age: (retention_days > 0).then(|| retention_days * 86_400_000),
            max_bytes,
        },
        dir,
        sync,
        username: h.username,
        password: h.password,
    })
}

/// A `[[bridge]]` as read (its index), with its `[[bridge.topic]]` entries (each with its
/// index among all of the file's `[[bridge.topic]]` headers, for its line).
type ReadBridge = (usize, FileBridge, Vec<(usize, FileBridgeTopic)>);

/// Each `[[bridge]]` checked, with its `[[bridge.topic]]` entries.
fn resolve_bridges(
    pass: &mut Pass<'_>,
    bridges: Vec<ReadBridge>,
    has_upstreams: bool,
) -> Vec<Bridge> {
    use kite_broker::bridge::{BridgeConfig, BridgeTopic, Direction};
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, b, topics) in bridges {
        let mut ok = true;
        let mut report = |pass: &mut Pass<'_>, key: &str, message: String| {
            ok = false;
            pass.report("bridge", Some(i), Some(key), message);
        };
        let name = b.name.clone();
        if has_upstreams {
            report(
                pass,
                "name",
                format!(
                    "bridge {name:?}: bridges belong to the embedded broker, which does not run in front of an [[upstream]]; bridge the upstream broker itself, or remove the [[upstream]] entries"
                ),
            );
        }
        if !names.insert(name.clone()) {
            report(
                pass,
                "name",
                format!("bridge {name:?} is defined twice: names must be unique"),
            );
        }
        // Name, addresses and TLS as an upstream's, then the files as connecting would.
        let remote = FileUpstream {
            name: name.clone(),
            addresses: b.addresses.clone(),
            ca_file: b.ca_file.clone(),
            client_cert: b.client_cert.clone(),
            client_key: b.client_key.clone(),
            server_name: b.server_name.clone(),
        };
        let remote = resolve_remote(pass, "bridge", i, remote);
        if let Some(r) = &remote
            && let Err(e) = crate::upstream::Connector::new(std::slice::from_ref(r))
        {
            let message = e.to_string();
            let key = ["client_cert", "client_key", "server_name", "ca_file"]
                .into_iter()
                .find(|k| message.contains(&k.replace('_', " ")) || message.contains(k))
                .unwrap_or("addresses");
            report(pass, key, message);
        }
        let version = match b.protocol.as_deref() {
            None | Some("5") => kite_mqtt::Version::V5,
            Some("3.1.1") => kite_mqtt::Version::V3_1_1,
            Some(other) => {
                report(
                    pass,
                    "protocol",
                    format!("bridge {name:?}: protocol = {other:?}: use \"5\" or \"3.1.1\""),
                );
                kite_mqtt::Version::V5
            }
        };
        let client_id = b
            .client_id
            .clone()
            .unwrap_or_else(|| format!("kite-bridge-{name}"));
        if client_id.is_empty() || client_id.len() > 65_535 {
            report(
                pass,
                "client_id",
                format!("bridge {name:?}: client_id must be 1 to 65535 bytes"),
            );
        }
        let password = match (&b.password, &b.password_file) {
            (Some(_), Some(_)) => {
                report(
                    pass,
                    "password_file",
                    format!("bridge {name:?}: give password or password_file, not both"),
                );
                None
            }
            (Some(p), None) => Some(bytes::Bytes::from(p.clone().into_bytes())),
            (None, Some(file)) => match std::fs::read(file) {
                // One line: its line ending is not part of the password.
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    Some(bytes::Bytes::from(bytes))
                }
                Err(e) => {
                    report(
                        pass,
                        "password_file",
                        format!(
                            "bridge {name:?}: cannot read password_file {}: {e}",
                            file.display()
                        ),
                    );
                    None
                }
            },
            (None, None) => None,
        };
        let keep_alive = match b.keep_alive_secs {
            None => 60,
            Some(v) if v <= 65_535 => v as u16,
            Some(v) => {
                report(
                    pass,
                    "keep_alive_secs",
                    format!("bridge {name:?}: keep_alive_secs = {v}: 0 to 65535 seconds"),
                );
                60
            }
        };
        let restart = match b.restart_secs.as_deref() {
            None => (1, 30),
            Some(&[min, max]) if (1..=3600).contains(&min) && (min..=3600).contains(&max) => {
                (min, max)
            }
            Some(other) => {
                report(
                    pass,
                    "restart_secs",
                    format!(
                        "bridge {name:?}: restart_secs = {other:?}: give [first, longest] reconnect delays in seconds, 1 to 3600, first ≤ longest (e.g. [1, 30])"
                    ),
                );
                (1, 30)
            }
        };
        let mut bound = |pass: &mut Pass<'_>,
                         key: &str,
                         v: Option<u64>,
                         lo: u64,
                         hi: u64,
                         default: u64| match v {
            None => default,
            Some(v) if (lo..=hi).contains(&v) => v,
            Some(v) => {
                report(
                    pass,
                    key,
                    format!("bridge {name:?}: {key} = {v}: {lo} to {hi}"),
                );
                default
            }
        };
        let max_queued = kite_broker::QueueBounds {
            messages: bound(
                pass,
                "max_queued_messages",
                b.max_queued_messages,
                1,
                100_000_000,
                100_000,
            ) as usize,
            bytes: bound(
                pass,
                "max_queued_bytes",
                b.max_queued_bytes,
                1024,
                1 << 40,
                256 << 20,
            ) as usize,
        };
        let notification_topic = b
            .notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/bridge/{name}/state"));
        if let Err(e) = kite_mqtt::topic::validate_name(&notification_topic) {
            report(
                pass,
                "notification_topic",
                format!(
                    "bridge {name:?}: notification_topic {notification_topic:?} is not a topic name: {e}"
                ),
            );
        }
        if topics.is_empty() {
            report(
                pass,
                "name",
                format!(
                    "bridge {name:?} has no topics: add [[bridge.topic]] entries after it (pattern, direction)"
                ),
            );
        }
        let mut checked = Vec::new();
        for (t, topic) in topics {
            let mut bad = |pass: &mut Pass<'_>, key: &str, message: String| {
                ok = false;
                pass.report("bridge.topic", Some(t), Some(key), message);
            };
            let direction = match topic.direction.as_str() {
                "out" => Direction::Out,
                "in" => Direction::In,
                "both" => Direction::Both,
                other => {
                    bad(
                        pass,
                        "direction",
                        format!(
                            "bridge {name:?} topic {:?}: direction = {other:?}: use \"out\" (here → remote), \"in\" (remote → here) or \"both\"",
                            topic.pattern
                        ),
                    );
                    Direction::Out
                }
            };
            let qos = match topic.qos.unwrap_or(0) {
                0 => kite_mqtt::QoS::AtMostOnce,
                1 => kite_mqtt::QoS::AtLeastOnce,
                2 => kite_mqtt::QoS::ExactlyOnce,
                other => {
                    bad(
                        pass,
                        "qos",
                        format!(
                            "bridge {name:?} topic {:?}: qos = {other}: 0, 1 or 2",
                            topic.pattern
                        ),
                    );
                    kite_mqtt::QoS::AtMostOnce
                }
            };
            if let Err(e) = kite_mqtt::topic::validate_filter(&topic.pattern) {
                bad(
                    pass,
                    "pattern",
                    format!(
                        "bridge {name:?}: pattern {:?} is not a topic filter: {e}",
                        topic.pattern
                    ),
                );
            }
            for (key, prefix) in [
                ("local_prefix", &topic.local_prefix),
                ("remote_prefix", &topic.remote_prefix),
            ] {
                if prefix.contains(['+', '#']) {
                    bad(
                        pass,
                        key,
                        format!(
                            "bridge {name:?}: {key} = {prefix:?} has a wildcard: a prefix is a fixed start of topic names, like \"site-a/\""
                        ),
                    );
                }
            }
            checked.push(BridgeTopic {
                pattern: topic.pattern,
                direction,
                qos,
                local_prefix: topic.local_prefix,
                remote_prefix: topic.remote_prefix,
            });
        }
        if let (true, Some(remote)) = (ok, remote) {
            out.push(Bridge {
                config: BridgeConfig {
                    name,
                    version,
                    client_id,
                    username: b.username,
                    password,
                    clean_start: b.clean_start,
                    keep_alive,
                    try_private: b.try_private.unwrap_or(true),
                    notification_topic,
                    restart: (
                        std::time::Duration::from_secs(restart.0),
                        std::time::Duration::from_secs(restart.1),
                    ),
                    max_queued,
                    topics: checked,
                },
                remote,
            });
        }
    }
    out
}

fn no_index(dir: &Path) -> String {
    format!(
        "assets directory {} has no index.html: build the app with `cargo xtask dist`, or point --assets at the directory trunk built",
        dir.display()
    )
}

/// One `[[upstream]]` (the `i`-th), checked.
fn resolve_upstream(pass: &mut Pass<'_>, i: usize, u: FileUpstream) -> Option<Upstream> {
    resolve_remote(pass, "upstream", i, u)
}

/// A remote broker's name, addresses and TLS settings, the `i`-th `[[section]]`'s, checked.
fn resolve_remote(
    pass: &mut Pass<'_>,
    section: &str,
    i: usize,
    u: FileUpstream,
) -> Option<Upstream> {
    let mut ok = true;
    let mut report = |pass: &mut Pass<'_>, key: &str, e: ConfigError| {
        ok = false;
        pass.report(section, Some(i), Some(key), e);
    };
    if let Err(e) = check_name(&u.name) {
        report(pass, "name", e);
    }
    if u.addresses.is_empty() {
        let e = ConfigError::NoAddresses {
            name: u.name.clone(),
        };
        report(pass, "addresses", e);
    }
    let mut addresses = Vec::new();
    for a in &u.addresses {
        match a.parse::<BrokerUrl>() {
            Ok(url) => addresses.push(url),
            Err(e) => report(pass, "addresses", e.into()),
        }
    }
    let tls = UpstreamTls {
        ca_file: u.ca_file,
        client_cert: u.client_cert,
        client_key: u.client_key,
        server_name: u.server_name,
    };
    let tls_problem = |problem: &str| ConfigError::UpstreamTls {
        name: u.name.clone(),
        problem: problem.to_owned(),
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        let key = if tls.client_cert.is_some() {
            "client_cert"
        } else {
            "client_key"
        };
        report(
            pass,
            key,
            tls_problem("client_cert and client_key go together: give both or neither"),
        );
    }
    if let Some(sni) = &tls.server_name
        && tokio_rustls::rustls::pki_types::ServerName::try_from(sni.as_str()).is_err()
    {
        report(
            pass,
            "server_name",
            tls_problem(&format!(
                "server_name {sni:?} is not a DNS name or IP address"
            )),
        );
    }
    if tls.is_set() && !addresses.is_empty() && !addresses.iter().any(|a| a.tls) {
        report(
            pass,
            "addresses",
            tls_problem(
                "TLS settings without an mqtts:// address would never be used: use mqtts://HOST:8883",
            ),
        );
    }
    ok.then_some(Upstream {
        name: u.name,
        addresses,
        tls,
    })
}

/// `[limits]`, each key checked.
fn resolve_limits(pass: &mut Pass<'_>, l: &FileLimits) -> GatewayLimits {
    let d = GatewayLimits::default();
    let mut r = |value, key, lo, hi, expected, default| {
        pass.range(
            "limits",
            value,
            Range {
                key,
                lo,
                hi,
                expected,
                default,
            },
        )
    };
    let max_connections = r(
        l.max_connections,
        "max_connections",
        1,
        1_000_000,
        "1 to 1000000",
        d.max_connections as u64,
    );
    let max_packet_size = r(
        l.max_packet_size,
        "max_packet_size",
        128,
        268_435_460,
        "128 to 268435460 bytes (the MQTT maximum)",
        u64::from(d.max_packet_size),
    );
    let max_connections_per_address = r(
        l.max_connections_per_address,
        "max_connections_per_address",
        0,
        1_000_000,
        "0 (no bound) to 1000000",
        d.max_connections_per_address as u64,
    );
    let max_user_properties = r(
        l.max_user_properties,
        "max_user_properties",
        0,
        1_000_000,
        "0 to 1000000 per packet",
        d.max_user_properties as u64,
    );
    let connect_timeout = r(
        l.connect_timeout_secs,
        "connect_timeout_secs",
        1,
        300,
        "1 to 300 seconds",
        d.connect_timeout.as_secs(),
    );
    let max_subscriptions = r(
        l.max_subscriptions,
        "max_subscriptions",
        0,
        1_000_000,
        "0 (no limit) to 1000000 per session",
        d.session.max_subscriptions as u64,
    );
    let publish_rate = r(
        l.publish_rate,
        "publish_rate",
        0,
        10_000_000,
        "0 (no limit) to 10000000 messages/s per session",
        0,
    );
    let publish_bytes_rate = r(
        l.publish_bytes_rate,
        "publish_bytes_rate",
        0,
        1 << 40,
        "0 (no limit) to 1099511627776 bytes/s per session",
        0,
    );
    let idle = r(
        l.idle_timeout_secs,
        "idle_timeout_secs",
        0,
        86_400,
        "0 (off) to 86400 seconds",
        0,
    );
    GatewayLimits {
        max_connections: usize::try_from(max_connections).unwrap_or(d.max_connections),
        max_packet_size: u32::try_from(max_packet_size).unwrap_or(d.max_packet_size),
        max_user_properties: usize::try_from(max_user_properties).unwrap_or(usize::MAX),
        max_connections_per_address: usize::try_from(max_connections_per_address)
            .unwrap_or(usize::MAX),
        connect_timeout: std::time::Duration::from_secs(connect_timeout),
        session: crate::proxy::SessionLimits {
            max_subscriptions: usize::try_from(max_subscriptions).unwrap_or(usize::MAX),
            publish_rate: u32::try_from(publish_rate).unwrap_or(u32::MAX),
            publish_bytes_rate,
            idle_timeout: (idle > 0).then(|| std::time::Duration::from_secs(idle)),
        },
    }
}

/// `[broker]`, each key checked (the flags are applied by the caller).
fn resolve_broker(pass: &mut Pass<'_>, b: &FileBroker, limits: &GatewayLimits) -> BrokerSettings {
    let listen = b
        .listen
        .clone()
        .and_then(|v| {
            let r = parse_listen(v, "broker", DEFAULT_MQTT);
            pass.take("broker", "listen", r)
        })
        .unwrap_or(MQTT);
    let tls_listen = b.tls_listen.clone().and_then(|v| {
        let r = parse_listen(v, "broker", "127.0.0.1:8883");
        pass.take("broker", "tls_listen", r)
    });
    let d = kite_broker::BrokerConfig::default();
    let mut r = |value, key, lo, hi, expected, default| {
        pass.range(
            "broker",
            value,
            Range {
                key,
                lo,
                hi,
                expected,
                default,
            },
        )
    };
    let u16_of = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let sys = r(
        b.sys_interval_secs,
        "sys_interval_secs",
        0,
        86_400,
        "0 (off) to 86400 seconds",
        d.sys_interval.map_or(0, |i| i.as_secs()),
    );
    let config = kite_broker::BrokerConfig {
        max_packet_size: limits.max_packet_size,
        max_user_properties: limits.max_user_properties,
        connect_timeout: limits.connect_timeout,
        max_connections: limits.max_connections,
        max_queued_messages: usize_of(r(
            b.max_queued_messages,
            "max_queued_messages",
            1,
            10_000_000,
            "1 to 10000000 messages per session",
            d.max_queued_messages as u64,
        )),
        max_queued_messages_online: usize_of(r(
            b.max_queued_messages_online,
            "max_queued_messages_online",
            1,
            10_000_000,
            "1 to 10000000 messages per session",
            d.max_queued_messages_online as u64,
        )),
        max_queued_bytes: usize_of(r(
            b.max_queued_bytes,
            "max_queued_bytes",
            1024,
            1 << 40,
            "1024 bytes to 1 TiB per session",
            d.max_queued_bytes as u64,
        )),
        max_topic_levels: usize_of(r(
            b.max_topic_levels,
            "max_topic_levels",
            1,
            65_536,
            "1 to 65536 levels (65,535 bytes hold at most 65,536 empty levels)",
            d.max_topic_levels as u64,
        )),
        max_topic_length: usize_of(r(
            b.max_topic_length,
            "max_topic_length",
            1,
            65_535,
            "1 to 65535 bytes",
            d.max_topic_length as u64,
        )),
        max_subscriptions: usize_of(r(
            b.max_subscriptions,
            "max_subscriptions",
            1,
            10_000_000,
            "1 to 10000000 subscriptions per session",
            d.max_subscriptions as u64,
        )),
        max_retained_messages: usize_of(r(
            b.max_retained_messages,
            "max_retained_messages",
            0,
            100_000_000,
            "0 (no retained messages) to 100000000 topics",
            d.max_retained_messages as u64,
        )),
        max_retained_bytes: usize_of(r(
            b.max_retained_bytes,
            "max_retained_bytes",
            0,
            1 << 40,
            "0 to 1 TiB",
            d.max_retained_bytes as u64,
        )),
        max_inflight: u16_of(r(
            b.max_inflight,
            "max_inflight",
            1,
            65_535,
            "1 to 65535 messages",
            u64::from(d.max_inflight),
        )),
        receive_maximum: u16_of(r(
            b.receive_maximum,
            "receive_maximum",
            1,
            65_535,
            "1 to 65535 messages",
            u64::from(d.receive_maximum),
        )),
        topic_alias_maximum: u16_of(r(
            b.topic_alias_maximum,
            "topic_alias_maximum",
            0,
            65_535,
            "0 (no aliases) to 65535",
            u64::from(d.topic_alias_maximum),
        )),
        max_keep_alive: u16_of(r(
            b.max_keep_alive_secs,
            "max_keep_alive_secs",
            0,
            65_535,
            "0 (no cap) to 65535 seconds",
            u64::from(d.max_keep_alive),
        )),
        max_session_expiry: u32_of(r(
            b.max_session_expiry_secs,
            "max_session_expiry_secs",
            0,
            u64::from(u32::MAX),
            "0 to 4294967295 seconds (4294967295: sessions never expire)",
            u64::from(d.max_session_expiry),
        )),
        sys_interval: (sys > 0).then(|| std::time::Duration::from_secs(sys)),
        // [acl] v311_denied_publish, set when the broker is made (`AppState::new`).
        v311_denied_publish: d.v311_denied_publish,
    };
    let sync = match b.sync.as_deref() {
        None | Some("always") => kite_broker::store::Sync::Always,
        Some("periodic") => kite_broker::store::Sync::Periodic,
        Some(other) => {
            let e = ConfigError::Sync {
                value: other.to_owned(),
            };
            pass.report("broker", None, Some("sync"), e);
            kite_broker::store::Sync::Always
        }
    };
    let data_dir = match b.persistence {
        Some(false) => None,
        _ => Some(
            b.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        ),
    };
    BrokerSettings {
        listen,
        tls_listen,
        allow_anonymous: b.allow_anonymous,
        config,
        data_dir,
        sync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of `text` as a config file in a directory of its own.
    fn check_text(text: &str, _base: &Path) -> Vec<Problem> {
        check_with(text, Overrides::default())
    }

    fn check_with(text: &str, overrides: Overrides) -> Vec<Problem> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kite-check-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{n}.toml"));
        std::fs::write(&path, text).unwrap();
        match load(Some(&path), overrides) {
            Ok(_) => Vec::new(),
            Err(p) => p.0,
        }
    }

    #[test]
    fn every_problem_with_its_line() {
        let text = "\
[http]
listen = \"localhost\"

[limits]
max_connections = 0
connect_timeout_secs = 9999

[[upstream]]
name = \"bad name\"
addresses = [\"ws://x\"]

[[role]]
name = \"r\"
publish = [\"a/#/b\"]

[[user]]
name = \"u\"
password_hash = \"not a hash\"
role = \"nobody\"
";
        let problems = check_text(text, Path::new("."));
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 5, 6, 9, 10, 14, 18, 19], "{problems:#?}");
        assert!(problems[0].message.contains("IP:PORT"), "{problems:#?}");
        assert!(
            problems[3].message.contains("invalid upstream name"),
            "{problems:#?}"
        );
        assert!(
            problems[4].message.contains("unsupported scheme"),
            "{problems:#?}"
        );
        assert!(
            problems[7].message.contains("which no [[role]] defines"),
            "{problems:#?}"
        );
    }

    #[test]
    fn acl_policy() {
        let problems = check_text("[acl]\nv311_denied_publish = \"maybe\"\n", Path::new("."));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, 2);
        assert!(
            problems[0].message.contains("[acl]")
                && problems[0].message.contains("v311_denied_publish")
                && problems[0].message.contains("\"disconnect\""),
            "{problems:#?}"
        );
        assert!(
            check_text(
                "[acl]\nv311_denied_publish = \"disconnect\"\n",
                Path::new(".")
            )
            .is_empty()
        );
    }

    #[test]
    fn anonymous_role_and_deny_rules() {
        let role = "[[role]]\nname = \"guest\"\ndeny_subscribe = [\"test/nosubscribe\"]\n";
        assert!(
            check_text(
                &format!("[acl]\nanonymous_role = \"guest\"\n{role}"),
                Path::new(".")
            )
            .is_empty()
        );
        let problems = check_text("[acl]\nanonymous_role = \"nobody\"\n", Path::new("."));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, 2);
        assert!(
            problems[0].message.contains("which no [[role]] defines"),
            "{problems:#?}"
        );
        let hash = kite_policy::auth::hash_password(b"pw").unwrap();
        let problems = check_text(
            &format!(
                "[acl]\nanonymous_role = \"guest\"\n{role}[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\n"
            ),
            Path::new("."),
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].message.contains("would never apply"),
            "{problems:#?}"
        );
        let problems = check_text(
            "[[role]]\nname = \"r\"\ndeny_publish = [\"a/#/b\"]\n",
            Path::new("."),
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, 3, "{problems:#?}");
        assert!(
            problems[0].message.contains("deny_publish rule \"a/#/b\""),
            "{problems:#?}"
        );
    }

    #[test]
    fn jwt_section() {
        let problems = check_text(
            "[jwt]\nalgorithm = \"ES256\"\nkey_file = \"k\"\n",
            Path::new("."),
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("RS256"), "{problems:#?}");
        let problems = check_text(
            "[jwt]\nalgorithm = \"HS256\"\nkey_file = \"/nonexistent/kite.key\"\n",
            Path::new("."),
        );
        assert_eq!(problems[0].line, 3, "{problems:#?}");
        assert!(
            problems[0].message.contains("/nonexistent/kite.key"),
            "{problems:#?}"
        );
    }

    #[test]
    fn unknown_keys_and_syntax() {
        let problems = check_text("[http]\nlisen = \"x\"\n[brokr]\n", Path::new("."));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("unknown field `lisen`"));
        assert_eq!(problems[1].line, 3);
        assert!(problems[1].message.contains("unknown section [brokr]"));
        let syntax = check_text("[http]\nlisten = \n", Path::new("."));
        assert_eq!(syntax.len(), 1);
        assert_eq!(syntax[0].line, 2);
        assert!(check_text("[broker]\nlisten = \"127.0.0.1:1883\"\n", Path::new(".")).is_empty());
    }

    /// One pass: every problem of every section, each with its file, line and key, as
    /// `kite serve` and `kite check-config` both report them.
    #[test]
    fn every_problem_has_its_file_line_and_key() {
        let hash = kite_policy::auth::hash_password(b"pw").unwrap();
        let text = format!(
            "\
[broker]
max_inflight = 0
sync = \"sometimes\"
listen = \"0.0.0.0:1883\"

[[role]]
name = \"r\"
[[role]]
name = \"r\"
deny_subscribe = [\"a/#/b\"]

[[user]]
name = \"u\"
password_hash = \"plain\"
[[user]]
name = \"v\"
password_hash = \"{hash}\"
role = \"ghost\"
"
        );
        let problems = check_text(&text, Path::new("."));
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (2, "broker.max_inflight"),
                (3, "broker.sync"),
                (9, "role[2].name"),
                (10, "role[2].deny_subscribe"),
                (14, "user[1].password_hash"),
                (18, "user[2].role"),
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| p.file.is_some()), "{problems:#?}");
        // The users' problems do not hide that logins are configured: the broker on 0.0.0.0
        // is not reported as anonymous.
        assert!(
            !problems
                .iter()
                .any(|p| p.message.contains("without authentication")),
            "{problems:#?}"
        );
        let shown = problems[0].to_string();
        assert!(
            shown.ends_with(".toml:2: invalid [broker] max_inflight = 0: 1 to 65535 messages"),
            "{shown}"
        );
    }

    /// A value the environment set is reported at its variable, not at a line of the file.
    #[test]
    fn environment_problems_name_their_variable() {
        let env = |list: &[(&str, &str)]| Overrides {
            env: list
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Overrides::default()
        };
        let problems = check_with(
            "[broker]\nmax_inflight = 5\n",
            env(&[
                ("KITE_BROKER__MAX_INFLIGHT", "0"),
                ("KITE_LIMITS__MAX_CONNECTIONS", "lots"),
            ]),
        );
        assert_eq!(problems.len(), 2, "{problems:#?}");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"KITE_BROKER__MAX_INFLIGHT"), "{problems:#?}");
        assert!(
            keys.contains(&"KITE_LIMITS__MAX_CONNECTIONS"),
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| p.file.is_none() && p.line == 0));
        assert!(
            problems.iter().any(|p| p
                .message
                .contains("KITE_BROKER__MAX_INFLIGHT: invalid [broker] max_inflight = 0")),
            "{problems:#?}"
        );
        // A section the environment left incomplete names the variables that touched it.
        let problems = check_with("", env(&[("KITE_TLS__CERT", "c.pem")]));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].message.contains("KITE_TLS__CERT")
                && problems[0].message.contains("missing field `key`"),
            "{problems:#?}"
        );
        // ... and with the file's key, what is wrong is the variable's file.
        let problems = check_with(
            "[tls]\ncert = \"a.pem\"\nkey = \"b.pem\"\n",
            env(&[("KITE_TLS__CERT", "/nonexistent/c.pem")]),
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].key, "KITE_TLS__CERT", "{problems:#?}");
        assert!(
            problems[0].message.contains("/nonexistent/c.pem"),
            "{problems:#?}"
        );
    }

    /// A flag's value is checked with the rest and named by the flag.
    #[test]
    fn flag_problems_name_their_flag() {
        let problems = check_with(
            "",
            Overrides {
                mqtts: Some("127.0.0.1:8883".parse().unwrap()),
                assets: Some(PathBuf::from("/nonexistent/app")),
                ..Overrides::default()
            },
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["--assets", "--mqtts"], "{problems:#?}");
        assert!(problems[0].message.contains("has no index.html"));
        assert!(problems[1].message.contains("needs a certificate"));
    }

    #[test]
    fn history_is_checked_key_by_key() {
        let problems = check_text(
            "[history]\nrecord = [\"a/#/b\", \"$share/g/x\", \"ok/#\"]\nretention_days = 99999\nmax_bytes = 10\n",
            Path::new(""),
        );
        let keys: Vec<(&str, usize)> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            keys,
            [
                ("history.record", 2),
                ("history.record", 2),
                ("history.retention_days", 3),
                ("history.max_bytes", 4)
            ],
            "{problems:?}"
        );
        assert!(
            problems[1].message.contains("shared subscription"),
            "{problems:?}"
        );
        // Without `record` nothing is recorded; with it, the defaults.
        let config = load(None, Overrides::default()).unwrap();
        assert_eq!(config.history, None);
        let dir = std::env::temp_dir().join(format!("kite-history-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kite.toml");
        std::fs::write(&file, "[history]\nrecord = [\"plant/#\"]\n").unwrap();
        let h = load(Some(&file), Overrides::default())
            .unwrap()
            .history
            .unwrap();
        assert_eq!(h.record, ["plant/#"]);
        assert_eq!(h.retention.max_age, Some(30 * 86_400_000));
        assert_eq!(h.retention.max_bytes, 1 << 30);
        // [broker] data_dir's default, relative to the working directory.
        assert_eq!(h.dir, PathBuf::from("kite-data"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn devices_are_checked_rule_by_rule() {
        let problems = check_text(
            "[[devices]]\nstatus_topic = \"plant/{device}/status\"\nonline = [\"up\", \"\"]\n\n[[devices]]\nactivity = \"sensors/dev-{device}/#\"\nstale_after_secs = 0\n\n[[devices]]\nsparkplug = true\n\n[[devices]]\nclients = true\nactivity = \"x/{device}\"\n\n[[devices]]\nonline = [\"1\"]\n\n[[devices]]\nsparkplug = true\nclient_ids = [\"a\"]\n\n[[devices]]\nclients = true\nclient_ids = []\n",
            Path::new(""),
        );
        let keys: Vec<(&str, usize)> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            keys,
            [
                ("devices[1].online", 3),
                ("devices[2].activity", 6),
                ("devices[2].stale_after_secs", 7),
                ("devices[4].status_topic", 12),
                ("devices[5].status_topic", 16),
                ("devices[6].client_ids", 21),
                ("devices[7].client_ids", 25),
            ],
            "{problems:#?}"
        );
        assert!(problems[1].message.contains("whole level"), "{problems:?}");
        assert!(problems[3].message.contains("exactly one"), "{problems:?}");
        // A good file: the rules in order, with defaults.
        let dir = std::env::temp_dir().join(format!("kite-devices-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kite.toml");
        std::fs::write(
            &file,
            "[[devices]]\nstatus_topic = \"plant/{device}/status\"\n[[devices]]\nactivity = \"sensors/{device}/#\"\n[[devices]]\nclients = true\n",
        )
        .unwrap();
        let d = load(Some(&file), Overrides::default())
            .unwrap()
            .devices
            .unwrap();
        assert_eq!(d.rules.len(), 3);
        assert_eq!(
            d.rules[1].kind,
            crate::presence::Kind::Activity {
                stale_after: 300_000
            }
        );
        // Every client but the app's own sessions.
        assert_eq!(
            d.rules[2].kind,
            crate::presence::Kind::Clients {
                ids: vec!["*".into()],
                except: vec!["kite-*".into()],
            }
        );
        assert_eq!(d.dir, PathBuf::from("kite-data"));
        // Client connections are the embedded broker's to tell.
        let problems = check_text(
            "[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://127.0.0.1:1883\"]\n[[devices]]\nclients = true\n",
            Path::new(""),
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].key, "devices[1].clients");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn loaded(name: &str, text: &str) -> Config {
        let dir =
            std::env::temp_dir().join(format!("kite-dash-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kite.toml");
        std::fs::write(&file, text).unwrap();
        let c = load(Some(&file), Overrides::default()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        c
    }

    /// `dashboards` of a role: none, view (the default), edit; anything else is named.
    #[test]
    fn roles_have_a_dashboard_access() {
        use kite_policy::auth::DashboardAccess;
        let problems = check_text(
            "[[role]]\nname = \"ops\"\ndashboards = \"write\"\n",
            Path::new(""),
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            (problems[0].key.as_str(), problems[0].line),
            ("role[1].dashboards", 3)
        );
        assert!(problems[0].message.contains("\"edit\""), "{problems:?}");
        for (given, access) in [
            ("dashboards = \"edit\"\n", DashboardAccess::Edit),
            ("dashboards = \"none\"\n", DashboardAccess::None),
            ("", DashboardAccess::View),
        ] {
            let c = loaded(
                "role",
                &format!("[[role]]\nname = \"guest\"\n{given}[acl]\nanonymous_role = \"guest\"\n"),
            );
            let role = c.auth.anonymous().and_then(|l| l.role);
            assert_eq!(role.map(|r| r.dashboards), Some(access), "{given}");
        }
    }

    /// In front of an upstream the gateway keeps nothing unless given a data directory; then
    /// alarms and dashboards are kept there.
    #[test]
    fn an_upstream_gateway_keeps_dashboards_only_with_a_data_dir() {
        let upstream = "[[upstream]]\nname = \"a\"\naddresses = [\"mqtt://127.0.0.1:1883\"]\n";
        assert!(loaded("stateless", upstream).alarms.is_none());
        let c = loaded(
            "dir",
            &format!("{upstream}[broker]\ndata_dir = \"/tmp/kite-dash-dir\"\n"),
        );
        assert_eq!(
            c.alarms.map(|a| a.dir),
            Some(PathBuf::from("/tmp/kite-dash-dir"))
        );
    }
}
