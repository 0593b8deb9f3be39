//! Kite's browser app (Yew, WebAssembly).
//!
//! Architecture invariant: the app knows nothing of TCP; it reaches brokers only through the
//! gateway's WebSocket endpoint, and it never parses MQTT bytes itself (that is `kite-mqtt`).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod explorer;
pub mod mqtt;
pub mod payload;
pub mod store;

/// Mounts the app on the document's body.
pub fn start() {
    yew::Renderer::<app::App>::new().render();
}
