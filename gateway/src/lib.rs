//! Kite's gateway: serves the browser app and carries MQTT over WebSocket to TCP brokers.
//!
//! `main.rs` parses arguments and configuration, binds, and calls [`server::run`]; tests bind
//! `127.0.0.1:0` and call the same function.
#![forbid(unsafe_code)]

pub mod alarming;
pub mod alarms;
pub mod alarms_api;
pub mod bridges_api;
pub mod cli;
pub mod client;
pub mod config;
pub mod dashboards;
pub mod dashboards_api;
pub mod devices;
pub mod devices_api;
pub mod events_api;
pub mod feed;
pub mod history_api;
pub mod http;
pub mod listen;
pub mod logs;
pub mod metrics;
pub mod monitor;
pub mod per_address;
pub mod presence;
pub mod proxy;
pub mod publish_api;
pub mod recorder;
pub mod rules;
pub mod server;
pub mod sparkplug;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod violation;
pub mod webhook;
