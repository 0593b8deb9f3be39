//! Kite's browser app (Yew, WebAssembly).
//!
//! Architecture invariant: the app knows nothing of TCP; it reaches brokers only through the
//! gateway's WebSocket endpoint, and it never parses MQTT bytes itself (that is `kite-mqtt`).
#![forbid(unsafe_code)]

pub mod alarms;
pub mod api;
pub mod app;
pub mod compose;
pub mod connview;
pub mod dashboard;
pub mod devices;
pub mod editor;
pub mod explorer;
pub mod forms;
pub mod history;
pub mod mqtt;
pub mod payload;
pub mod profile;
pub mod reach;
pub mod route;
pub mod sort;
pub mod storage;
pub mod store;
pub mod tick;
pub mod workspace;

/// Mounts the app on the document's body.
pub fn start() {
    yew::Renderer::<app::App>::new().render();
}
