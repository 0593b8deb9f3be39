//! The gateway's checks of what a browser sends (`proxy::Inbound`, with and without topic
//! rules): the driver and its invariants are `gateway/tests/fuzzing/mod.rs`, also run seeded
//! by `gateway/tests/fuzz_inbound.rs`.
#![no_main]

#[path = "../../gateway/tests/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::inbound_script(data));
