//! Kite end to end: the real gateway, a real mosquitto, real clients, a real headless Chromium.
//! One test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alarms;
mod api;
mod app;
mod app_connections;
mod app_dashboards;
mod app_devices;
mod app_explore;
mod auth;
mod bridge;
mod broker;
mod dashboards;
mod devices;
mod embed;
mod events;
mod gateway;
mod history;
mod hostile;
mod jwt;
mod limits;
mod rules;
mod session;
mod tls;
mod transparency;
