//! `kite check-config FILE`: every problem of a config file, each with its line — not only the
//! first one, as starting `kite serve` would stop at.
//!
//! The file is parsed as TOML (a syntax error is the one problem then), then each section and
//! each `[[upstream]]`, `[[user]]` and `[[role]]` on its own, then each value's meaning (ranges,
//! addresses, URLs, hashes, rules, certificate files, the anonymous-broker rule).

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::config::{
    BrokerUrl, ConfigError, FileBroker, FileHttp, FileLimits, FileRole, FileTls, FileUpstream,
    FileUser, check_name, check_origin, parse_listen,
};

/// One problem: its line (1-based; 0 when it is about the whole file) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
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
            // Not a key: a value the message quotes (`unknown variant \`maybe\``).
            let quoted = format!("\"{key}\"");
            for (i, line) in self.text.lines().enumerate().take(last).skip(first) {
                if line.contains(&quoted) {
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

/// Every problem of the config file at `path` (empty: it is fine).
pub fn check_file(path: &Path) -> Vec<Problem> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return vec![Problem {
                line: 0,
                message: format!("cannot read the file: {e}"),
            }];
        }
    };
    let mut problems = check_text(&text, path.parent().unwrap_or(Path::new(".")));
    // What `kite serve` would also take from the environment.
    let vars = super::env::from_process();
    if !vars.is_empty()
        && let Ok(mut table) = toml::from_str::<toml::Table>(&text)
        && let Err(e) = super::env::apply::<super::FileConfig>(&mut table, &vars)
    {
        problems.push(Problem {
            line: 0,
            message: e.to_string(),
        });
    }
    problems
}

/// Every problem of a config file's text; relative paths are taken from `base`.
pub fn check_text(text: &str, base: &Path) -> Vec<Problem> {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            return vec![Problem {
                line,
                message: e.message().trim().replace('\n', " "),
            }];
        }
    };
    let layout = Layout::new(text);
    let mut problems = Vec::new();
    let mut add = |line: usize, message: String| problems.push(Problem { line, message });

    fn parse<T: DeserializeOwned>(
        value: &toml::Value,
        layout: &Layout<'_>,
        name: &str,
        index: usize,
        add: &mut dyn FnMut(usize, String),
    ) -> Option<T> {
        match T::deserialize(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                let message = e.message().trim().replace('\n', " ");
                let line = layout.line(name, index, named_key(&message));
                let what = if name == "upstream" || name == "user" || name == "role" {
                    format!("[[{name}]] #{}", index + 1)
                } else {
                    format!("[{name}]")
                };
                add(line, format!("{what}: {message}"));
                None
            }
        }
    }

    let mut http = None;
    let mut limits = None;
    let mut broker = None;
    let mut upstreams: Vec<(usize, FileUpstream)> = Vec::new();
    let mut users: Vec<(usize, FileUser)> = Vec::new();
    let mut roles: Vec<(usize, FileRole)> = Vec::new();
    let mut has_tls = false;
    let mut anonymous_role = None;
    let has_jwt = table.contains_key("jwt");
    for (key, value) in &table {
        match key.as_str() {
            "http" => http = parse::<FileHttp>(value, &layout, "http", 0, &mut add),
            "limits" => limits = parse::<FileLimits>(value, &layout, "limits", 0, &mut add),
            "broker" => broker = parse::<FileBroker>(value, &layout, "broker", 0, &mut add),
            "acl" => {
                anonymous_role =
                    parse::<crate::config::FileAcl>(value, &layout, "acl", 0, &mut add)
                        .and_then(|a| a.anonymous_role);
            }
            "jwt" => {
                if let Some(jwt) =
                    parse::<kite_policy::jwt::JwtSettings>(value, &layout, "jwt", 0, &mut add)
                    && let Err(e) = crate::config::load_jwt(&jwt, base)
                {
                    let key = match e {
                        kite_policy::jwt::JwtConfigError::Algorithm(_) => "algorithm",
                        kite_policy::jwt::JwtConfigError::Leeway(_) => "leeway_secs",
                        _ => "key_file",
                    };
                    add(layout.line("jwt", 0, Some(key)), format!("[jwt]: {e}"));
                }
            }
            "tls" => {
                has_tls = true;
                if let Some(tls) = parse::<FileTls>(value, &layout, "tls", 0, &mut add) {
                    let files = crate::tls::TlsFiles {
                        cert: base.join(&tls.cert),
                        key: base.join(&tls.key),
                    };
                    if let Err(e) = crate::tls::load(&files) {
                        add(layout.line("tls", 0, Some("cert")), format!("[tls]: {e}"));
                    }
                }
            }
            "upstream" | "user" | "role" => {
                let Some(items) = value.as_array() else {
                    add(
                        layout.line(key, 0, None),
                        format!("{key} must be written as [[{key}]] tables"),
                    );
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    match key.as_str() {
                        "upstream" => {
                            if let Some(u) = parse(item, &layout, key, i, &mut add) {
                                upstreams.push((i, u));
                            }
                        }
                        "user" => {
                            if let Some(u) = parse(item, &layout, key, i, &mut add) {
                                users.push((i, u));
                            }
                        }
                        _ => {
                            if let Some(r) = parse(item, &layout, key, i, &mut add) {
                                roles.push((i, r));
                            }
                        }
                    }
                }
            }
            other => add(
                layout.line(other, 0, None),
                format!(
                    "unknown section [{other}]: the sections are [http], [limits], [tls], [broker], [acl], [jwt], [[upstream]], [[user]], [[role]]"
                ),
            ),
        }
    }

    if let Some(h) = &http {
        if let Some(listen) = &h.listen
            && let Err(e) = parse_listen(listen.clone(), "http", "127.0.0.1:8080")
        {
            add(layout.line("http", 0, Some("listen")), e.to_string());
        }
        for origin in &h.allowed_origins {
            if let Err(e) = check_origin(origin) {
                add(
                    layout.line("http", 0, Some("allowed_origins")),
                    e.to_string(),
                );
            }
        }
        if let Some(assets) = &h.assets
            && !base.join(assets).join("index.html").is_file()
        {
            add(
                layout.line("http", 0, Some("assets")),
                format!(
                    "[http] assets: {} has no index.html (build the app with `cargo xtask dist`)",
                    base.join(assets).display()
                ),
            );
        }
    }
    // Each limit on its own, so that every bad one is reported.
    let mut resolved_limits = crate::config::GatewayLimits::default();
    if let Some(l) = &limits {
        let singles: [(&str, FileLimits); 9] = [
            (
                "max_connections",
                FileLimits {
                    max_connections: l.max_connections,
                    ..Default::default()
                },
            ),
            (
                "max_packet_size",
                FileLimits {
                    max_packet_size: l.max_packet_size,
                    ..Default::default()
                },
            ),
            (
                "max_connections_per_address",
                FileLimits {
                    max_connections_per_address: l.max_connections_per_address,
                    ..Default::default()
                },
            ),
            (
                "max_user_properties",
                FileLimits {
                    max_user_properties: l.max_user_properties,
                    ..Default::default()
                },
            ),
            (
                "connect_timeout_secs",
                FileLimits {
                    connect_timeout_secs: l.connect_timeout_secs,
                    ..Default::default()
                },
            ),
            (
                "max_subscriptions",
                FileLimits {
                    max_subscriptions: l.max_subscriptions,
                    ..Default::default()
                },
            ),
            (
                "publish_rate",
                FileLimits {
                    publish_rate: l.publish_rate,
                    ..Default::default()
                },
            ),
            (
                "publish_bytes_rate",
                FileLimits {
                    publish_bytes_rate: l.publish_bytes_rate,
                    ..Default::default()
                },
            ),
            (
                "idle_timeout_secs",
                FileLimits {
                    idle_timeout_secs: l.idle_timeout_secs,
                    ..Default::default()
                },
            ),
        ];
        for (key, single) in singles {
            if let Err(e) = single.resolve() {
                add(layout.line("limits", 0, Some(key)), e.to_string());
            }
        }
        if let Ok(r) = l.resolve() {
            resolved_limits = r;
        }
    }
    let mut broker_listen = None;
    if let Some(b) = &broker {
        let keys: [(&str, FileBroker); 18] = [
            (
                "listen",
                FileBroker {
                    listen: b.listen.clone(),
                    ..Default::default()
                },
            ),
            (
                "tls_listen",
                FileBroker {
                    tls_listen: b.tls_listen.clone(),
                    ..Default::default()
                },
            ),
            (
                "max_queued_messages",
                FileBroker {
                    max_queued_messages: b.max_queued_messages,
                    ..Default::default()
                },
            ),
            (
                "max_queued_messages_online",
                FileBroker {
                    max_queued_messages_online: b.max_queued_messages_online,
                    ..Default::default()
                },
            ),
            (
                "max_queued_bytes",
                FileBroker {
                    max_queued_bytes: b.max_queued_bytes,
                    ..Default::default()
                },
            ),
            (
                "max_topic_levels",
                FileBroker {
                    max_topic_levels: b.max_topic_levels,
                    ..Default::default()
                },
            ),
            (
                "max_topic_length",
                FileBroker {
                    max_topic_length: b.max_topic_length,
                    ..Default::default()
                },
            ),
            (
                "max_subscriptions",
                FileBroker {
                    max_subscriptions: b.max_subscriptions,
                    ..Default::default()
                },
            ),
            (
                "max_retained_messages",
                FileBroker {
                    max_retained_messages: b.max_retained_messages,
                    ..Default::default()
                },
            ),
            (
                "max_retained_bytes",
                FileBroker {
                    max_retained_bytes: b.max_retained_bytes,
                    ..Default::default()
                },
            ),
            (
                "max_inflight",
                FileBroker {
                    max_inflight: b.max_inflight,
                    ..Default::default()
                },
            ),
            (
                "receive_maximum",
                FileBroker {
                    receive_maximum: b.receive_maximum,
                    ..Default::default()
                },
            ),
            (
                "topic_alias_maximum",
                FileBroker {
                    topic_alias_maximum: b.topic_alias_maximum,
                    ..Default::default()
                },
            ),
            (
                "max_keep_alive_secs",
                FileBroker {
                    max_keep_alive_secs: b.max_keep_alive_secs,
                    ..Default::default()
                },
            ),
            (
                "max_session_expiry_secs",
                FileBroker {
                    max_session_expiry_secs: b.max_session_expiry_secs,
                    ..Default::default()
                },
            ),
            (
                "sys_interval_secs",
                FileBroker {
                    sys_interval_secs: b.sys_interval_secs,
                    ..Default::default()
                },
            ),
            (
                "sync",
                FileBroker {
                    sync: b.sync.clone(),
                    ..Default::default()
                },
            ),
            (
                "persistence",
                FileBroker {
                    persistence: b.persistence,
                    ..Default::default()
                },
            ),
        ];
        for (key, single) in keys {
            if let Err(e) = single.resolve(None, &resolved_limits) {
                add(layout.line("broker", 0, Some(key)), e.to_string());
            }
        }
        if let Ok(settings) = b.resolve(None, &resolved_limits) {
            if settings.tls_listen.is_some() && !has_tls {
                add(
                    layout.line("broker", 0, Some("tls_listen")),
                    ConfigError::BrokerTlsWithoutCertificate {
                        addr: settings.tls_listen.unwrap_or(settings.listen),
                    }
                    .to_string(),
                );
            }
            broker_listen = Some(settings);
        }
    }
    let mut names = HashSet::new();
    for (i, u) in &upstreams {
        if let Err(e) = check_name(&u.name) {
            add(layout.line("upstream", *i, Some("name")), e.to_string());
        }
        if !names.insert(u.name.clone()) {
            add(
                layout.line("upstream", *i, Some("name")),
                ConfigError::DuplicateUpstream {
                    name: u.name.clone(),
                }
                .to_string(),
            );
        }
        if u.addresses.is_empty() {
            add(
                layout.line("upstream", *i, Some("addresses")),
                ConfigError::NoAddresses {
                    name: u.name.clone(),
                }
                .to_string(),
            );
        }
        let mut urls_ok = true;
        for a in &u.addresses {
            if let Err(e) = a.parse::<BrokerUrl>() {
                urls_ok = false;
                add(
                    layout.line("upstream", *i, Some("addresses")),
                    e.to_string(),
                );
            }
        }
        // TLS settings: their rules, then their files, as `kite serve` would load them.
        let mut u = u.clone();
        for path in [&mut u.ca_file, &mut u.client_cert, &mut u.client_key]
            .into_iter()
            .flatten()
        {
            *path = base.join(&*path);
        }
        if urls_ok && !u.addresses.is_empty() && check_name(&u.name).is_ok() {
            let problem = match u.resolve() {
                Ok(resolved) => crate::upstream::Connector::new(&[resolved])
                    .err()
                    .map(|e| e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(message) = problem {
                // The line of the key the message is about.
                let key = ["client_cert", "client_key", "server_name", "ca_file"]
                    .into_iter()
                    .find(|k| message.contains(&k.replace('_', " ")) || message.contains(k))
                    .unwrap_or("addresses");
                add(layout.line("upstream", *i, Some(key)), message);
            }
        }
    }
    let role_names: HashSet<&str> = roles.iter().map(|(_, r)| r.name.as_str()).collect();
    let mut seen_roles = HashSet::new();
    for (i, r) in &roles {
        if !seen_roles.insert(r.name.as_str()) {
            add(
                layout.line("role", *i, Some("name")),
                format!("role {:?} is defined twice", r.name),
            );
        }
        if let Err(e) = r.acl().validate(&r.name) {
            add(layout.line("role", *i, Some(e.kind())), e.to_string());
        }
    }
    if let Some(role) = anonymous_role {
        let problem = if !role_names.contains(role.as_str()) {
            Some(kite_policy::auth::AuthConfigError::UnknownAnonymousRole { role })
        } else if !users.is_empty() || has_jwt {
            Some(kite_policy::auth::AuthConfigError::AnonymousRoleWithLogins { role })
        } else {
            None
        };
        if let Some(e) = problem {
            add(layout.line("acl", 0, Some("anonymous_role")), e.to_string());
        }
    }
    let mut seen_users = HashSet::new();
    for (i, u) in &users {
        if !seen_users.insert(u.name.as_str()) {
            add(
                layout.line("user", *i, Some("name")),
                format!("user {:?} is defined twice", u.name),
            );
        }
        let one = kite_policy::auth::Auth::new(
            vec![kite_policy::auth::User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                role: None,
            }],
            vec![],
        );
        if let Err(e) = one {
            add(
                layout.line("user", *i, Some("password_hash")),
                e.to_string(),
            );
        }
        if let Some(role) = &u.role
            && !role_names.contains(role.as_str())
        {
            add(
                layout.line("user", *i, Some("role")),
                format!(
                    "user {:?} has role {role:?}, which no [[role]] defines",
                    u.name
                ),
            );
        }
    }
    // Like mosquitto 2: no anonymous broker on the network.
    if let Some(addr) = broker_listen
        .and_then(|b| b.anonymous_on_network(!upstreams.is_empty(), !users.is_empty() || has_jwt))
    {
        add(
            layout.line("broker", 0, Some("listen")),
            ConfigError::AnonymousBroker { addr }.to_string(),
        );
    }
    problems.sort_by_key(|p| p.line);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
