//! Topic permissions per role: which topics a user may publish to, and which filters it may
//! subscribe to.
//!
//! ```toml
//! [[role]]
//! name = "operator"
//! publish = ["plant/+/cmd", "users/%u/#"]    # %u: the user name, %c: the client id
//! subscribe = ["plant/#", "users/%u/#"]
//! deny_publish = ["plant/+/cmd/reboot"]      # refused even where the lists above allow
//! deny_subscribe = ["plant/secret/#"]
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
//! - `deny_publish`: a topic name one of them matches is refused, whatever `publish` says.
//! - `deny_subscribe`: what the role may never read. A filter a deny rule covers is refused
//!   (`plant/secret/#` refuses `plant/secret/+`). A filter that only overlaps one (`plant/#`,
//!   `#`) is granted, and the embedded broker does not deliver the denied topics through it
//!   ([`Acl::read_denials`]). The gateway in front of an upstream broker cannot sort what the
//!   broker sends, so there an overlapping filter is refused too ([`Acl::subscribe_upstream_refusal`]).
//! - A refusal by a deny rule is answered with 0x80 Unspecified error, one outside the lists with
//!   0x87 Not authorized ([`Refusal::reason`]).
//! - In a deny rule, `%u`/`%c` with a value that cannot be substituted (empty, or with `/`,
//!   `+`, `#`) deny the whole level (`+`): a deny rule never gets narrower by a strange name.
//! - The `$`-topic rule applies: `#` does not give access to `$SYS/...` [MQTT-4.7.2-1] — nor,
//!   as a deny rule, take it away: `$SYS/#` needs a rule of its own.

use std::borrow::Cow;

use kite_mqtt::codec::ReasonCode;
use kite_mqtt::topic::{self, levels};

/// One role's topic rules, as written in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Filters of the topics the role may publish to; `None`: any.
    pub publish: Option<Vec<String>>,
    /// Filters covering what the role may subscribe to; `None`: any.
    pub subscribe: Option<Vec<String>>,
    /// Topic names matched by one of these may not be published to.
    pub deny_publish: Vec<String>,
    /// Topic names matched by one of these may not be read.
    pub deny_subscribe: Vec<String>,
}

/// Why the rules refuse a topic or a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside the role's `publish` / `subscribe` lists.
    NotAllowed,
    /// Matched by a `deny_publish` / `deny_subscribe` rule.
    Denied,
}

impl Refusal {
    /// The MQTT 5 reason code that answers it: 0x87 Not authorized outside the lists; 0x80
    /// Unspecified error for a deny rule, which guards a topic without telling that it is
    /// guarded (MQTT 5 §3.9.3: "the Server ... does not wish to reveal the reason"). In
    /// MQTT 3.1.1 both are the SUBACK's 0x80.
    pub fn reason(self) -> ReasonCode {
        match self {
            Self::NotAllowed => ReasonCode::NotAuthorized,
            Self::Denied => ReasonCode::UnspecifiedError,
        }
    }
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

impl AclError {
    /// The config key of the refused rule (`publish`, `deny_subscribe`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl Acl {
    /// Checks that every rule is a valid topic filter once `%u`/`%c` are substituted.
    pub fn validate(&self, role: &str) -> Result<(), AclError> {
        for (kind, rules) in [
            ("publish", self.publish.as_deref().unwrap_or_default()),
            ("subscribe", self.subscribe.as_deref().unwrap_or_default()),
            ("deny_publish", &self.deny_publish[..]),
            ("deny_subscribe", &self.deny_subscribe[..]),
        ] {
            for rule in rules {
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
        self.publish.is_some()
            || self.subscribe.is_some()
            || !self.deny_publish.is_empty()
            || !self.deny_subscribe.is_empty()
    }

    /// Whether `user`/`client_id` may publish to the topic name `name`.
    pub fn may_publish(&self, name: &str, user: &str, client_id: &str) -> bool {
        self.publish_refusal(name, user, client_id).is_none()
    }

    /// Why `user`/`client_id` may not publish to `name`, if they may not.
    pub fn publish_refusal(&self, name: &str, user: &str, client_id: &str) -> Option<Refusal> {
        let allowed = match &self.publish {
            None => true,
            Some(rules) => rules
                .iter()
                .any(|r| substitute(r, user, client_id).is_some_and(|r| topic::matches(&r, name))),
        };
        if !allowed {
            return Some(Refusal::NotAllowed);
        }
        self.deny_publish
            .iter()
            .any(|r| topic::matches(&substitute_deny(r, user, client_id), name))
            .then_some(Refusal::Denied)
    }

    /// Whether `user`/`client_id` may subscribe to `filter` (a valid filter, possibly
    /// `$share/<group>/<filter>`).
    ///
    /// What a deny rule only overlaps is granted: the broker must not deliver the denied
    /// topics through it ([`Acl::read_denials`]).
    pub fn may_subscribe(&self, filter: &str, user: &str, client_id: &str) -> bool {
        self.subscribe_refusal(filter, user, client_id).is_none()
    }

    /// Why `user`/`client_id` may not subscribe to `filter`, if they may not.
    pub fn subscribe_refusal(&self, filter: &str, user: &str, client_id: &str) -> Option<Refusal> {
        self.check_subscribe(filter, user, client_id, covers)
    }

    /// Like [`Acl::subscribe_refusal`], for a broker that cannot be told what not to deliver
    /// (an upstream): a filter a deny rule overlaps is refused too.
    pub fn subscribe_upstream_refusal(
        &self,
        filter: &str,
        user: &str,
        client_id: &str,
    ) -> Option<Refusal> {
        self.check_subscribe(filter, user, client_id, overlaps)
    }

    fn check_subscribe(
        &self,
        filter: &str,
        user: &str,
        client_id: &str,
        denied_by: fn(&str, &str) -> bool,
    ) -> Option<Refusal> {
        let inner = match topic::parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return Some(Refusal::NotAllowed),
        };
        let allowed = match &self.subscribe {
            None => true,
            Some(rules) => rules
                .iter()
                .any(|r| substitute(r, user, client_id).is_some_and(|r| covers(&r, inner))),
        };
        if !allowed {
            return Some(Refusal::NotAllowed);
        }
        self.deny_subscribe
            .iter()
            .any(|r| denied_by(&substitute_deny(r, user, client_id), inner))
            .then_some(Refusal::Denied)
    }

    /// The `subscribe` rules for this user and client, substituted (a rule that cannot be is
    /// left out): a delivery whose topic none of them covers must not reach the session,
    /// whoever made the subscription it came through. `None`: no allow list, all may be read.
    pub fn read_allowances(&self, user: &str, client_id: &str) -> Option<Vec<String>> {
        self.subscribe.as_ref().map(|rules| {
            rules
                .iter()
                .filter_map(|r| substitute(r, user, client_id))
                .collect()
        })
    }

    /// The `deny_subscribe` filters for this user and client, substituted: a delivery whose
    /// topic one of them matches must not reach the session. Empty: deliver everything the
    /// session's subscriptions match.
    pub fn read_denials(&self, user: &str, client_id: &str) -> Vec<String> {
        self.deny_subscribe
            .iter()
            .map(|r| substitute_deny(r, user, client_id).into_owned())
            .collect()
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

/// A deny rule with `%u`/`%c` replaced; a level whose value cannot be substituted safely
/// becomes `+` (the rule denies more, never less).
fn substitute_deny<'a>(rule: &'a str, user: &str, client_id: &str) -> Cow<'a, str> {
    if !rule.contains("%u") && !rule.contains("%c") {
        // The common case, checked on every PUBLISH: no copy.
        return Cow::Borrowed(rule);
    }
    let mut out = String::with_capacity(rule.len());
    for (i, level) in levels(rule).enumerate() {
        if i > 0 {
            out.push('/');
        }
        match substitute(level, user, client_id) {
            Some(l) => out.push_str(&l),
            None => out.push('+'),
        }
    }
    Cow::Owned(out)
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

/// Whether some topic name is matched by both filters (both valid).
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut a = levels(a);
    let mut b = levels(b);
    let mut first = true;
    loop {
        match (a.next(), b.next()) {
            (Some("#"), Some(level)) | (Some(level), Some("#")) => {
                // `#` and `+` at the first level reach no `$` topic [MQTT-4.7.2-1].
                return !(first && level.starts_with('$'));
            }
            // `a/#` matches `a`.
            (Some("#"), None) | (None, Some("#")) => return true,
            (Some("+"), Some(level)) | (Some(level), Some("+")) => {
                if first && level.starts_with('$') {
                    return false;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
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
            ..Acl::default()
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
                ..Acl::default()
            }
            .validate("r")
            .unwrap_err()
            .to_string()
            .contains("role \"r\": publish rule \"a/#/b\"")
        );
    }

    #[test]
    fn overlap() {
        for (a, b, expected) in [
            ("test/nosubscribe", "test/nosubscribe", true),
            ("test/nosubscribe", "test/+", true),
            ("test/nosubscribe", "+/+", true),
            ("test/nosubscribe", "#", true),
            ("test/nosubscribe", "test", false),
            ("test/nosubscribe", "test/other", false),
            ("test/nosubscribe", "+", false),
            ("test/#", "test", true),
            ("a/+/c", "a/b/+", true),
            ("a/+/c", "a/b/d", false),
            ("a/b", "a/b/c", false),
            // The $ rule, both ways round.
            ("$SYS/#", "#", false),
            ("+/broker", "$SYS/broker", false),
            ("$SYS/#", "$SYS/broker", true),
            ("#", "+", true),
        ] {
            assert_eq!(overlaps(a, b), expected, "{a} overlaps {b}");
            assert_eq!(overlaps(b, a), expected, "{b} overlaps {a}");
        }
    }

    #[test]
    fn deny_rules() {
        let acl = Acl {
            deny_publish: vec!["plant/+/cmd/reboot".into(), "users/%u/locked".into()],
            deny_subscribe: vec!["test/nosubscribe".into(), "private/%c/#".into()],
            ..Acl::default()
        };
        assert!(acl.restricts());
        assert!(acl.may_publish("plant/a/cmd/start", "alice", "c1"));
        assert!(!acl.may_publish("plant/a/cmd/reboot", "alice", "c1"));
        assert!(!acl.may_publish("users/alice/locked", "alice", "c1"));
        assert!(acl.may_publish("users/bob/locked", "alice", "c1"));
        // No usable user name (anonymous): the %u level denies every name.
        assert!(!acl.may_publish("users/bob/locked", "", "c1"));

        assert!(!acl.may_subscribe("test/nosubscribe", "", "c1"));
        assert!(!acl.may_subscribe("$share/g/test/nosubscribe", "", "c1"));
        assert!(!acl.may_subscribe("private/c1/+", "", "c1"));
        // Overlapping, not covered: granted by the embedded broker (which filters
        // deliveries), refused in front of an upstream.
        for filter in ["#", "+/+", "test/+", "private/+/x"] {
            assert!(acl.may_subscribe(filter, "", "c1"), "{filter}");
            assert_eq!(
                acl.subscribe_upstream_refusal(filter, "", "c1"),
                Some(Refusal::Denied),
                "{filter}"
            );
        }
        assert_eq!(acl.subscribe_upstream_refusal("test/other", "", "c1"), None);
        assert_eq!(
            acl.subscribe_upstream_refusal("private/c2/x", "", "c1"),
            None
        );
        assert_eq!(
            acl.subscribe_refusal("test/nosubscribe", "", "c1"),
            Some(Refusal::Denied)
        );
        assert_eq!(
            acl.publish_refusal("plant/a/cmd/reboot", "", "c1"),
            Some(Refusal::Denied)
        );
        let listed = Acl {
            subscribe: Some(vec!["a/#".into()]),
            deny_subscribe: vec!["a/secret".into()],
            ..Acl::default()
        };
        assert_eq!(
            listed.subscribe_refusal("b", "", ""),
            Some(Refusal::NotAllowed)
        );
        assert_eq!(
            listed.subscribe_refusal("a/secret", "", ""),
            Some(Refusal::Denied)
        );
        assert_eq!(Refusal::NotAllowed.reason(), ReasonCode::NotAuthorized);
        assert_eq!(Refusal::Denied.reason(), ReasonCode::UnspecifiedError);
        assert_eq!(
            acl.read_denials("", "c1"),
            vec!["test/nosubscribe".to_owned(), "private/c1/#".to_owned()]
        );
        // A client id with a wildcard cannot narrow the rule to nothing.
        assert_eq!(
            acl.read_denials("", "a/+"),
            vec!["test/nosubscribe", "private/+/#"]
        );
        assert!(
            Acl {
                deny_subscribe: vec!["a/#/b".into()],
                ..Acl::default()
            }
            .validate("r")
            .unwrap_err()
            .to_string()
            .contains("deny_subscribe rule \"a/#/b\"")
        );
    }
}
