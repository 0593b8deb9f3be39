//! Logins: users with argon2 password hashes, and per-role broker
//! credentials that the gateway puts into the CONNECT it sends upstream, so the browser never
//! holds the broker's secrets.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$..."   # `kite passwd` prints one
//! role = "operator"
//!
//! [[role]]
//! name = "operator"
//! upstream_username = "kite-gateway"     # what the broker sees
//! upstream_password = "broker-secret"
//! client_id_prefix = "web-"              # prepended to the browser's client id
//! ```
//!
//! When users are configured, every CONNECT must carry a known user name and its password.

use std::collections::HashMap;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use bytes::Bytes;
use bytestring::ByteString;
use kite_mqtt::codec::{Connect, ReasonCode};

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name in CONNECT.
    pub name: String,
    /// The argon2 hash of the password, as a PHC string.
    pub password_hash: String,
    /// The role (broker credentials, client id prefix).
    pub role: Option<String>,
}

/// What a role gets at the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// Name referenced by users.
    pub name: String,
    /// User name sent to the broker (none: the CONNECT carries none).
    pub upstream_username: Option<String>,
    /// Password sent to the broker.
    pub upstream_password: Option<String>,
    /// Prepended to the browser's client id.
    pub client_id_prefix: String,
    /// Topic permissions (enforced by the embedded broker).
    pub acl: crate::acl::Acl,
    /// May create, change and delete alarm rules, and forget devices (`manage_alarms = true`).
    pub manage_alarms: bool,
    /// What it may do with the gateway's dashboards (`dashboards = "view"`, the default).
    pub dashboards: DashboardAccess,
}

/// What a role may do with dashboards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum DashboardAccess {
    /// Not even list them.
    None,
    /// List and open them (what each widget shows still follows the role's topic rules).
    #[default]
    View,
    /// Also create, change and delete them.
    Edit,
}

impl DashboardAccess {
    /// Every access, least first.
    pub const ALL: [Self; 3] = [Self::None, Self::View, Self::Edit];

    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::View => "view",
            Self::Edit => "edit",
        }
    }

    /// The access named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl Role {
    /// The role of a token without a role claim: it may log in, and may neither publish nor
    /// subscribe to anything.
    pub fn without_permissions() -> Self {
        Self {
            name: "(a token without a role)".into(),
            acl: crate::acl::Acl {
                publish: Some(Vec::new()),
                subscribe: Some(Vec::new()),
                ..Default::default()
            },
            dashboards: DashboardAccess::None,
            ..Self::default()
        }
    }
}

/// Why the users and roles of a config are refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A password hash is not an argon2 PHC string.
    #[error(
        "user {user:?}: password_hash is not an argon2 hash ({detail}); make one with `kite passwd`"
    )]
    BadHash {
        /// The user.
        user: String,
        /// Why.
        detail: String,
    },
    /// A user names a role that does not exist.
    #[error("user {user:?} has role {role:?}, which no [[role]] defines")]
    UnknownRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// A topic rule is not a valid filter.
    #[error("{0}")]
    Acl(#[from] crate::acl::AclError),
    /// `[acl] anonymous_role` names a role that does not exist.
    #[error("[acl] anonymous_role = {role:?}, which no [[role]] defines")]
    UnknownAnonymousRole {
        /// The role.
        role: String,
    },
    /// `[acl] anonymous_role` with users or `[jwt]`, where every session logs in.
    #[error(
        "[acl] anonymous_role = {role:?} would never apply: with [[user]] or [jwt] every session must log in; remove anonymous_role, or give the users a role"
    )]
    AnonymousRoleWithLogins {
        /// The role.
        role: String,
    },
    /// Two users or two roles share a name.
    #[error("{what} {name:?} is defined twice")]
    Duplicate {
        /// "user" or "role".
        what: &'static str,
        /// The name.
        name: String,
    },
}

/// Which entry of the config's users or roles a problem is about (0-based, in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The `i`-th `[[user]]`.
    User(usize),
    /// The `i`-th `[[role]]`.
    Role(usize),
}

/// One problem of the users and roles: where it is, and what.
#[derive(Debug)]
pub struct AuthProblem {
    /// The entry.
    pub entry: Entry,
    /// Its key the problem is about (`password_hash`, `role`, `name`, `deny_publish`, ...).
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub error: AuthConfigError,
}

/// The users and roles, checked, and the JWT verifier if `[jwt]` is set.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    users: HashMap<String, User>,
    roles: HashMap<String, Role>,
    jwt: Option<crate::jwt::Jwt>,
    /// The role of sessions without a login (`[acl] anonymous_role`).
    anonymous: Option<Role>,
}

/// A login that passed: who (the user name, or a token's `sub`) and their role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name (`%u` in topic rules).
    pub user: String,
    /// The role, if the user has one.
    pub role: Option<Role>,
}

/// A refused login: the CONNACK reason code, and why (for the log, and for MQTT 5 clients as
/// the CONNACK's reason string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 0x86 Bad user name or password, or 0x87 Not authorized (3.1.1: 4 or 5).
    pub code: ReasonCode,
    /// What was wrong.
    pub detail: String,
    /// What was refused: the credentials, or the Will topic.
    pub cause: Cause,
}

/// What a CONNECT was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The login: no credentials, wrong ones, a bad token, or no check possible in time.
    Credentials,
    /// The Will topic is one the role may not publish to.
    WillTopic,
}

impl Refused {
    /// A refused login with `code` and what was wrong.
    pub fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            cause: Cause::Credentials,
        }
    }
}

/// A CONNECT admitted: who it is (none: no logins configured and no anonymous role) and so
/// which topic rules apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admission {
    /// The login, and with it the role.
    pub login: Option<Login>,
}

impl Admission {
    /// The role's topic rules (`None`: unrestricted).
    pub fn acl(&self) -> Option<&crate::acl::Acl> {
        self.login.as_ref()?.role.as_ref().map(|r| &r.acl)
    }

    /// The login's user name (`%u`): the user, a token's `sub`, or empty for the anonymous
    /// role; `None` without a login.
    pub fn user(&self) -> Option<&str> {
        self.login.as_ref().map(|l| l.user.as_str())
    }
}

/// A hash nobody's password matches, verified for unknown users so that a missing user costs
/// the same time as a wrong password (no user enumeration by timing).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$CdG4jWZAdJxCVSnXgKnPALGpmBFzzyi5uNvH7nJl2ng";

impl Auth {
    /// Checks the users and roles of a config: the first problem, if any (see [`Auth::build`]
    /// for all of them).
    pub fn new(users: Vec<User>, roles: Vec<Role>) -> Result<Self, AuthConfigError> {
        let (auth, problems) = Self::build(users, roles);
        match problems.into_iter().next() {
            Some(p) => Err(p.error),
            None => Ok(auth),
        }
    }

    /// The users and roles that are sound, and every problem of the others, each with the
    /// entry and key it is about (a config reports them all, each at its line). A user whose
    /// role is unknown or whose hash is unusable is left out, as is a role whose rules are not
    /// valid filters: an [`Auth`] never holds one.
    pub fn build(users: Vec<User>, roles: Vec<Role>) -> (Self, Vec<AuthProblem>) {
        let mut problems = Vec::new();
        let mut role_map = HashMap::new();
        let mut defined = std::collections::HashSet::new();
        for (i, r) in roles.into_iter().enumerate() {
            let fresh = defined.insert(r.name.clone());
            if let Err(e) = r.acl.validate(&r.name) {
                problems.push(AuthProblem {
                    entry: Entry::Role(i),
                    key: e.kind(),
                    error: e.into(),
                });
            } else if fresh {
                role_map.insert(r.name.clone(), r);
                continue;
            }
            if !fresh {
                problems.push(AuthProblem {
                    entry: Entry::Role(i),
                    key: "name",
                    error: AuthConfigError::Duplicate {
                        what: "role",
                        name: r.name,
                    },
                });
            }
        }
        let mut user_map = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (i, u) in users.into_iter().enumerate() {
            let mut sound = true;
            if !seen.insert(u.name.clone()) {
                sound = false;
                problems.push(AuthProblem {
                    entry: Entry::User(i),
                    key: "name",
                    error: AuthConfigError::Duplicate {
                        what: "user",
                        name: u.name.clone(),
                    },
                });
            }
            if let Err(e) = PasswordHash::new(&u.password_hash) {
                sound = false;
                problems.push(AuthProblem {
                    entry: Entry::User(i),
                    key: "password_hash",
                    error: AuthConfigError::BadHash {
                        user: u.name.clone(),
                        detail: e.to_string(),
                    },
                });
            }
            if let Some(role) = &u.role
                && !defined.contains(role)
            {
                sound = false;
                problems.push(AuthProblem {
                    entry: Entry::User(i),
                    key: "role",
                    error: AuthConfigError::UnknownRole {
                        user: u.name.clone(),
                        role: role.clone(),
                    },
                });
            }
            if sound {
                user_map.insert(u.name.clone(), u);
            }
        }
        let auth = Self {
            users: user_map,
            roles: role_map,
            jwt: None,
            anonymous: None,
        };
        (auth, problems)
    }

    /// Gives the sessions without a login (there are any only without users and `[jwt]`)
    /// the role `name`: its topic rules, and in front of an upstream its broker credentials
    /// and client id prefix. Call after [`Auth::with_jwt`].
    pub fn with_anonymous_role(mut self, name: Option<&str>) -> Result<Self, AuthConfigError> {
        let Some(name) = name else {
            return Ok(self);
        };
        let Some(role) = self.roles.get(name) else {
            return Err(AuthConfigError::UnknownAnonymousRole {
                role: name.to_owned(),
            });
        };
        if self.required() {
            return Err(AuthConfigError::AnonymousRoleWithLogins {
                role: name.to_owned(),
            });
        }
        self.anonymous = Some(role.clone());
        Ok(self)
    }

    /// The login of a session that gives none, when `[acl] anonymous_role` is set: no user
    /// name (`%u` never matches, whatever the CONNECT says) and that role.
    pub fn anonymous(&self) -> Option<Login> {
        self.anonymous.clone().map(|role| Login {
            user: String::new(),
            role: Some(role),
        })
    }

    /// Also accepts JSON Web Tokens verified by `jwt` as passwords.
    pub fn with_jwt(mut self, jwt: crate::jwt::Jwt) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Whether CONNECT must carry credentials.
    pub fn required(&self) -> bool {
        !self.users.is_empty() || self.jwt.is_some()
    }

    /// The connect-time admission, once the credentials are checked: `checked` is what
    /// [`Auth::check`] returned when [`Auth::required`] (run it off the async threads), else
    /// `None`. Sessions without a login get `[acl] anonymous_role`; the Will topic must be one
    /// the role may publish to (`client_id`: the session's, for `%c`). The embedded broker and
    /// the gateway in front of an upstream admit through this one function.
    pub fn admit(
        &self,
        connect: &Connect,
        client_id: &str,
        checked: Option<Login>,
    ) -> Result<Admission, Refused> {
        let login = match checked {
            Some(login) => Some(login),
            None if self.required() => {
                return Err(Refused::new(
                    ReasonCode::NotAuthorized,
                    "no login was checked for this CONNECT",
                ));
            }
            None => self.anonymous(),
        };
        let admission = Admission { login };
        if let (Some(acl), Some(will)) = (admission.acl(), &connect.will) {
            let user = admission.user().unwrap_or("");
            if !acl.may_publish(&will.topic, user, client_id) {
                return Err(Refused {
                    code: ReasonCode::NotAuthorized,
                    detail: format!(
                        "the Will topic {:?} is not allowed for user {:?}",
                        shown(&will.topic),
                        shown(user)
                    ),
                    cause: Cause::WillTopic,
                });
            }
        }
        Ok(admission)
    }

    /// Checks a CONNECT's credentials (argon2: call it off the async threads): a configured
    /// user's password, or else (with `[jwt]`) a token in the password.
    pub fn check(&self, username: Option<&str>, password: Option<&[u8]>) -> Result<Login, Refused> {
        let Some(password) = password else {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "no password (or token) in CONNECT",
            ));
        };
        let user = username.and_then(|n| self.users.get(n));
        if let (None, Some(jwt)) = (user, &self.jwt)
            && crate::jwt::Jwt::looks_like_token(password)
        {
            let claims = jwt
                .verify(password)
                .map_err(|d| Refused::new(ReasonCode::BadUserNameOrPassword, d))?;
            if let Some(name) = username
                && name != claims.subject
            {
                return Err(Refused::new(
                    ReasonCode::BadUserNameOrPassword,
                    format!(
                        "the user name {:?} is not the token's subject {:?}",
                        shown(name),
                        shown(&claims.subject)
                    ),
                ));
            }
            let role = match claims.role {
                // Fail closed: a token that names no role grants nothing (it was once
                // unrestricted, as a [[user]] without a role is by the operator's choice).
                None => Some(Role::without_permissions()),
                Some(r) => Some(self.roles.get(&r).cloned().ok_or_else(|| {
                    Refused::new(
                        ReasonCode::NotAuthorized,
                        format!("the token's role {r:?} is not a [[role]] of this gateway"),
                    )
                })?),
            };
            return Ok(Login {
                user: claims.subject,
                role,
            });
        }
        let Some(name) = username else {
            return Err(Refused::new(
                ReasonCode::NotAuthorized,
                "no user name in CONNECT",
            ));
        };
        let hash = user.map_or(DUMMY_HASH, |u| u.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok());
        match (user, ok) {
            (Some(u), true) => Ok(Login {
                user: name.to_owned(),
                role: u.role.as_ref().and_then(|r| self.roles.get(r)).cloned(),
            }),
            _ => Err(Refused::new(
                ReasonCode::BadUserNameOrPassword,
                format!("user {:?}: unknown user or wrong password", shown(name)),
            )),
        }
    }
}

/// A client's name as a refusal quotes it: at most 64 characters, so that a 65,535-byte
/// user name makes neither a huge log line nor a huge reason string.
fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(64) {
        None => name.into(),
        Some((end, _)) => format!("{}…", &name[..end]).into(),
    }
}

/// The CONNECT the broker gets: the role's credentials instead of the browser's, and the
/// client id with the role's prefix.
///
/// With `scope` (the login's user, in front of an upstream with `[acl] scope_client_ids`), a
/// non-empty client id becomes `<prefix><user>:<client id>`, the user's own `:` doubled — so
/// two users' ids never meet, and another user's same client id is another session at the
/// broker, which the gateway cannot ask whose a session is. An empty client id stays empty
/// (the broker assigns one).
pub fn rewrite_connect(connect: &Connect, role: Option<&Role>, scope: Option<&str>) -> Connect {
    let mut c = connect.clone();
    let role = role.cloned().unwrap_or_default();
    c.username = role.upstream_username.map(ByteString::from);
    c.password = role.upstream_password.map(Bytes::from);
    let scoped = match scope {
        Some(user) if !c.client_id.is_empty() => {
            format!("{}:{}", user.replace(':', "::"), c.client_id)
        }
        _ => c.client_id.to_string(),
    };
    if !role.client_id_prefix.is_empty() || scoped.len() != c.client_id.len() {
        c.client_id = ByteString::from(format!("{}{scoped}", role.client_id_prefix));
    }
    c
}

/// An argon2id hash (PHC string) of `password`, for `password_hash` in the config.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            vec![User {
                name: "alice".into(),
                password_hash: hash_password(b"s3cret").unwrap(),
                role: Some("op".into()),
            }],
            vec![Role {
                name: "op".into(),
                upstream_username: Some("gw".into()),
                upstream_password: Some("broker-secret".into()),
                client_id_prefix: "web-".into(),
                ..Role::default()
            }],
        )
        .unwrap()
    }

    #[test]
    fn checks_credentials() {
        let a = auth();
        assert!(a.required());
        let login = a.check(Some("alice"), Some(b"s3cret")).unwrap();
        assert_eq!(
            (login.user.as_str(), login.role.unwrap().name.as_str()),
            ("alice", "op")
        );
        let code = |u: Option<&str>, p: Option<&[u8]>| a.check(u, p).unwrap_err().code;
        assert_eq!(
            code(Some("alice"), Some(b"wrong")),
            ReasonCode::BadUserNameOrPassword
        );
        assert_eq!(
            code(Some("mallory"), Some(b"s3cret")),
            ReasonCode::BadUserNameOrPassword
        );
        assert_eq!(code(None, None), ReasonCode::NotAuthorized);
        // Without [jwt], a token-shaped password is just a wrong password.
        assert_eq!(
            code(Some("alice"), Some(b"aaa.bbb.ccc")),
            ReasonCode::BadUserNameOrPassword
        );
        assert!(
            PasswordHash::new(DUMMY_HASH).is_ok(),
            "the dummy hash must parse, or timing would differ"
        );
    }

    fn with_will(topic: &str) -> Connect {
        Connect {
            client_id: "tab-1".into(),
            will: Some(kite_mqtt::codec::Will {
                topic: topic.into(),
                payload: Bytes::new(),
                qos: kite_mqtt::QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
            }),
            ..Connect::default()
        }
    }

    fn guarded(users: Vec<User>) -> Auth {
        let role = Role {
            name: "dev".into(),
            acl: crate::acl::Acl {
                publish: Some(vec!["devices/%u/#".into(), "clients/%c".into()]),
                ..Default::default()
            },
            ..Role::default()
        };
        let anonymous = users.is_empty().then_some("dev");
        Auth::new(users, vec![role])
            .unwrap()
            .with_anonymous_role(anonymous)
            .unwrap()
    }

    #[test]
    fn admits_with_the_login_and_checks_the_will_topic() {
        let a = guarded(vec![User {
            name: "alice".into(),
            password_hash: hash_password(b"s3cret").unwrap(),
            role: Some("dev".into()),
        }]);
        let alice = || a.check(Some("alice"), Some(b"s3cret")).ok();
        // With users, a CONNECT is admitted only with a checked login.
        let e = a.admit(&Connect::default(), "c", None).unwrap_err();
        assert_eq!(
            (e.code, e.cause),
            (ReasonCode::NotAuthorized, Cause::Credentials)
        );
        let ok = a
            .admit(&with_will("devices/alice/state"), "c", alice())
            .unwrap();
        assert_eq!(ok.user(), Some("alice"));
        assert!(ok.acl().is_some());
        // `%c` is the client id given to `admit` (the broker's assigned one, if any).
        assert!(
            a.admit(&with_will("clients/tab-7"), "tab-7", alice())
                .is_ok()
        );
        // A Will topic the role may not publish to refuses the CONNECT with 0x87; the cause
        // tells it from a bad login (the gateway counts it as a denied Will).
        let e = a
            .admit(&with_will("devices/bob/state"), "c", alice())
            .unwrap_err();
        assert_eq!(
            (e.code, e.cause),
            (ReasonCode::NotAuthorized, Cause::WillTopic)
        );
        assert!(
            e.detail.contains("devices/bob/state") && e.detail.contains("alice"),
            "{e:?}"
        );
    }

    #[test]
    fn admits_without_logins_under_the_anonymous_role() {
        let a = guarded(vec![]);
        let ok = a.admit(&with_will("clients/c"), "c", None).unwrap();
        assert_eq!(ok.user(), Some(""));
        // The anonymous login has no user name: `%u` matches nothing.
        let e = a.admit(&with_will("devices//x"), "c", None).unwrap_err();
        assert_eq!(e.cause, Cause::WillTopic);
        // Without any role, everything is admitted, unrestricted.
        let open = Auth::default()
            .admit(&with_will("any/thing"), "c", None)
            .unwrap();
        assert_eq!((open.user(), open.acl()), (None, None));
    }

    #[test]
    fn rewrites_connect_with_the_roles_credentials() {
        let a = auth();
        let role = a.check(Some("alice"), Some(b"s3cret")).unwrap().role;
        let browser = Connect {
            client_id: "tab-1".into(),
            username: Some("alice".into()),
            password: Some(Bytes::from_static(b"s3cret")),
            ..Connect::default()
        };
        let upstream = rewrite_connect(&browser, role.as_ref(), None);
        assert_eq!(upstream.client_id, "web-tab-1");
        assert_eq!(upstream.username.as_deref(), Some("gw"));
        assert_eq!(upstream.password.as_deref(), Some(&b"broker-secret"[..]));
    }

    #[test]
    fn config_errors_name_the_user_and_the_fix() {
        let bad = Auth::new(
            vec![User {
                name: "bob".into(),
                password_hash: "plaintext".into(),
                role: None,
            }],
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("\"bob\"") && bad.contains("kite passwd"),
            "{bad}"
        );
        let unknown = Auth::new(
            vec![User {
                name: "c".into(),
                password_hash: hash_password(b"x").unwrap(),
                role: Some("ghost".into()),
            }],
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("ghost"), "{unknown}");
    }

    /// `build` reports every problem with its entry and key, and keeps the sound entries.
    #[test]
    fn build_reports_every_problem_and_keeps_the_rest() {
        let good = hash_password(b"x").unwrap();
        let user = |name: &str, hash: &str, role: Option<&str>| User {
            name: name.into(),
            password_hash: hash.into(),
            role: role.map(Into::into),
        };
        let role = |name: &str, deny: &[&str]| Role {
            name: name.into(),
            acl: crate::acl::Acl {
                deny_publish: deny.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
            ..Role::default()
        };
        let (auth, problems) = Auth::build(
            vec![
                user("a", &good, Some("r")),
                user("b", "plain", None),
                user("a", &good, None),
                user("c", &good, Some("ghost")),
            ],
            vec![role("r", &[]), role("r", &[]), role("s", &["a/#/b"])],
        );
        let found: Vec<(Entry, &str)> = problems.iter().map(|p| (p.entry, p.key)).collect();
        assert_eq!(
            found,
            [
                (Entry::Role(1), "name"),
                (Entry::Role(2), "deny_publish"),
                (Entry::User(1), "password_hash"),
                (Entry::User(2), "name"),
                (Entry::User(3), "role"),
            ]
        );
        assert!(auth.check(Some("a"), Some(b"x")).is_ok());
        assert!(auth.check(Some("c"), Some(b"x")).is_err());
    }
}
