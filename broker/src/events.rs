//! What happens to client connections, for those in the gateway that watch them (the device
//! monitor): [`crate::Broker::client_events`]. In-process clients (the gateway's own: the
//! recorder, the monitor, bridges) are not reported.

use std::sync::Arc;

/// Events kept for a receiver that has not taken them: beyond, it lags (and is told how many
/// it missed).
pub const CAPACITY: usize = 4096;

/// A client connection opened or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A CONNECT was accepted.
    Connected {
        /// This connection (a later connection of the same client id has a larger one).
        conn: u64,
        /// The client id.
        client_id: Arc<str>,
        /// `tcp`, `tls` or `websocket`.
        transport: &'static str,
        /// The keep-alive in force (s; 0: none).
        keep_alive: u16,
        /// When (ms since the epoch).
        t: u64,
    },
    /// The connection ended (after its Will, if any, was published).
    Disconnected {
        /// The connection, as in `Connected`.
        conn: u64,
        /// The client id.
        client_id: Arc<str>,
        /// How it ended, for people ("keep-alive timeout", "client disconnected", ...).
        reason: String,
        /// Whether the client ended it normally (DISCONNECT without its Will): else it was
        /// lost, cut off or taken over.
        clean: bool,
        /// Another connection took its session over: the client is still connected.
        taken_over: bool,
        /// When (ms since the epoch).
        t: u64,
    },
}

/// The time now, in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
