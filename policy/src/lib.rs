//! Kite's policy: who may connect, as whom, and what they may publish and read.
//!
//! - [`auth`]: users (argon2 password hashes), roles, `[acl] anonymous_role`, and
//!   [`Auth::admit`] — the one connect-time admission both the embedded broker and the gateway
//!   in front of an upstream apply (login, role, Will topic rules).
//! - [`jwt`]: JSON Web Tokens as logins.
//! - [`acl`]: a role's topic rules (`Acl`), with `covers` and `overlaps` for filters.
//! - [`DeniedPublish`]: what a refused MQTT 3.1.1 PUBLISH gets.
//!
//! **Invariant:** this crate does no I/O — it opens no file or socket and starts no task or
//! thread (the key file of `[jwt]` is read by the caller, [`jwt::Jwt::new`] takes its bytes).
//! Password checks are slow on purpose (argon2): callers run [`Auth::check`] off their async
//! threads (the broker's `Logins`).
#![forbid(unsafe_code)]

pub mod acl;
pub mod auth;
mod denied;
pub mod jwt;

pub use auth::{Admission, Auth, AuthProblem, Cause, Entry, Login, Refused, Role, User};
pub use denied::DeniedPublish;
