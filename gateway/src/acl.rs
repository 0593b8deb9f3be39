//! Topic permissions per role: which topics a user may publish to, and which filters it may
//! subscribe to.
//!
//! ```toml
//! [[role]]
//! name = "operator"
//! publish = ["plant/+/cmd", "users/%u/#"]    # %u: the user name, %c: the client id
//! subscribe = ["plant/#", "users/%u/#"]
//! ```
//!
//! - A role without `publish` may publish anywhere; with it, only to topic names matched by
//!   one of its filters (the Will topic too). Same for `subscribe`.
//! - A SUBSCRIBE filter is allowed only if one rule *covers* it: every topic the filter can
//!   match, the rule matches too (`plant/+/temp` is covered by `plant/#`; `#` is not). So a
//!   subscription can never receive a message the role may not read. `$share/<group>/` is
//!   looked through: the inner filter is checked.
//! - `%u` and `%c` are replaced by the user name and client id; a name containing `/`, `+` or
//!   `#` never matches a rule that uses it (it could widen the rule).
//! - The `$`-topic rule applies: `#` does not give access to `$SYS/...` [MQTT-4.7.2-1].

use kite_mqtt::topic::{self, levels};

/// One role's topic rules, as written in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Filters of the topics the role may publish to; `None`: any.
    pub publish: Option<Vec<String>>,
    /// Filters covering what the role may subscribe to; `None`: any.
    pub subscribe: Option<Vec<String>>,
}

/// Why a rule in the config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {role:?}: {kind} rule {rule:?} is not a valid topic filter ({detail})")]
pub struct AclError {
    role: String,
    kind: &'static str,
    rule: String,
    detail: String,
}

impl Acl {
    /// Checks that every rule is a valid topic filter once `%u`/`%c` are substituted.
    pub fn validate(&self, role: &str) -> Result<(), AclError> {
        for (kind, rules) in [("publish", &self.publish), ("subscribe", &self.subscribe)] {
            for rule in rules.iter().flatten() {
                let sample = rule.replace("%u", "u").replace("%c", "c");
                topic::validate_filter(&sample).map_err(|e| AclError {
                    role: role.to_owned(),
                    kind,
                    rule: rule.clone(),
                    detail: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    /// Whether the role has any rule (without, it may use every topic).
    pub fn restricts(&self) -> bool {
        self.publish.is_some() || self.subscribe.is_some()
    }

    /// Whether `user`/`client_id` may publish to the topic name `name`.
    pub fn may_publish(&self, name: &str, user: &str, client_id: &str) -> bool {
        match &self.publish {
            None => true,
            Some(rules) => rules
                .iter()
                .any(|r| substitute(r, user, client_id).is_some_and(|r| topic::matches(&r, name))),
        }
    }

    /// Whether `user`/`client_id` may subscribe to `filter` (a valid filter, possibly
    /// `$share/<group>/<filter>`).
    pub fn may_subscribe(&self, filter: &str, user: &str, client_id: &str) -> bool {
        let Some(rules) = &self.subscribe else {
            return true;
        };
        let inner = match topic::parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return false,
        };
        rules
            .iter()
            .any(|r| substitute(r, user, client_id).is_some_and(|r| covers(&r, inner)))
    }
}

/// The rule with `%u` and `%c` replaced; `None` if a value would change the rule's shape.
fn substitute(rule: &str, user: &str, client_id: &str) -> Option<String> {
    let unsafe_value = |v: &str| v.is_empty() || v.contains(['/', '+', '#']);
    if rule.contains("%u") && unsafe_value(user) {
        return None;
    }
    if rule.contains("%c") && unsafe_value(client_id) {
        return None;
    }
    Some(rule.replace("%u", user).replace("%c", client_id))
}

/// Whether every topic name matched by `filter` is matched by `rule` (both valid filters).
pub fn covers(rule: &str, filter: &str) -> bool {
    let mut r = levels(rule);
    let mut f = levels(filter);
    let mut first = true;
    loop {
        match (r.next(), f.next()) {
            // A `#` rule covers the rest — but not `$` topics from the first level.
            // (`+` and `#` in the filter do not reach `$` topics at the first level either.)
            (Some("#"), Some(level)) => return !(first && level.starts_with('$')),
            (Some("#"), None) => return true, // `a/#` covers `a`
            (Some("+"), Some(level)) => {
                if level == "#" || (first && level.starts_with('$')) {
                    return false;
                }
            }
            (Some(rl), Some(fl)) => {
                if rl != fl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        for (rule, filter, expected) in [
            ("plant/#", "plant/+/temp", true),
            ("plant/#", "plant/#", true),
            ("plant/#", "plant", true),
            ("plant/#", "#", false),
            ("plant/+/temp", "plant/a/temp", true),
            ("plant/+/temp", "plant/+/temp", true),
            ("plant/+/temp", "plant/#", false),
            ("plant/a", "plant/+", false),
            ("plant/a", "plant/a", true),
            ("plant/a", "plant/a/b", false),
            ("#", "a/b/#", true),
            ("#", "+/x", true),
            ("#", "#", true),
            // The $ rule: `#` and `+` at the first level do not reach $ topics.
            ("#", "$SYS/#", false),
            ("+/broker", "$SYS/broker", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
        ] {
            assert_eq!(covers(rule, filter), expected, "{rule} covers {filter}");
        }
    }

    #[test]
    fn rules_with_user_and_client() {
        let acl = Acl {
            publish: Some(vec!["users/%u/#".into(), "devices/%c".into()]),
            subscribe: Some(vec!["plant/#".into(), "users/%u/#".into()]),
        };
        assert!(acl.may_publish("users/alice/x", "alice", "c1"));
        assert!(!acl.may_publish("users/bob/x", "alice", "c1"));
        assert!(acl.may_publish("devices/c1", "alice", "c1"));
        assert!(!acl.may_publish("plant/a", "alice", "c1"));
        // A user name with wildcards never widens a rule.
        assert!(!acl.may_publish("users/x/y", "+", "c1"));
        assert!(!acl.may_subscribe("users/#", "#", "c1"));
        assert!(acl.may_subscribe("plant/+/temp", "alice", "c1"));
        assert!(acl.may_subscribe("$share/g/plant/a", "alice", "c1"));
        assert!(!acl.may_subscribe("$share/g/#", "alice", "c1"));
        assert!(!acl.may_subscribe("#", "alice", "c1"));
        let open = Acl::default();
        assert!(open.may_publish("anything", "", ""));
        assert!(open.may_subscribe("#", "", ""));
        assert!(
            Acl {
                publish: Some(vec!["a/#/b".into()]),
                subscribe: None
            }
            .validate("r")
            .unwrap_err()
            .to_string()
            .contains("role \"r\": publish rule \"a/#/b\"")
        );
    }
}
