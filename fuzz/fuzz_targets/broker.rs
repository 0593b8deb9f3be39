//! The embedded broker driven by arbitrary scripts (three clients, time jumps): the driver and
//! its invariants are `broker/tests/fuzzing/mod.rs`, also run seeded by
//! `broker/tests/fuzz.rs`.
#![no_main]

#[path = "../../broker/tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::broker_script(data));
