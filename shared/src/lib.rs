//! Kite's MQTT protocol core, shared by the browser app (wasm) and the gateway (native).
//!
//! Architecture invariant: this crate does no I/O and never reads the clock. Time is passed
//! in by the caller; bytes go in and come out as buffers.
#![forbid(unsafe_code)]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

/// What `std`'s prelude would give, for the `no_std` build (see the `std` feature).
mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
}

pub mod codec;
pub mod session;
pub mod topic;

pub use codec::{
    DecodeError, EncodeError, Limits, MqttStr, Packet, QoS, Version, decode, decode_raw,
};

// wasm tests run in headless Chromium, like the app that embeds this crate.
#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);
