//! Dashboards as [`crate::Storage`] keeps them: each a checked JSON document (its widgets,
//! layout and variables — the gateway checks them; the store keeps them whole) with who
//! changed it and when.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// One dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// Its id (made by the gateway; in URLs).
    pub id: String,
    /// The document as the API gives it: `schemaVersion`, `title`, `variables`, `widgets`...
    pub doc: serde_json::Value,
    /// When it was made (ms since the epoch).
    pub created: Millis,
    /// When it was last changed.
    pub updated: Millis,
    /// Who last changed it (the login; empty without logins).
    pub updated_by: String,
    /// 1 when made, one more with each change: a change made from an older version is refused
    /// (two people editing at once do not silently undo each other).
    pub version: u64,
}
