//! A bounded, deterministic fuzz run in the normal test suite (open-ended: `cargo xtask fuzz
//! inbound`): 50,000 inputs for the gateway's checks of what browsers send (see
//! `fuzzing/mod.rs` for the invariants). Inputs that once broke something are kept in
//! `fuzzing/regressions/inbound/` and replayed. The broker's run is `broker/tests/fuzz.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fuzzing;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Every input kept in `fuzzing/regressions/<target>/` (found by a fuzz run once).
fn replay(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzzing/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&input));
        assert!(outcome.is_ok(), "{} fails again", path.display());
    }
}

#[test]
fn regressions_replay() {
    replay("inbound", fuzzing::inbound_script);
}

#[test]
fn seeded_browser_input_keeps_the_gateway_checks_whole() {
    let mut rng = Rng(0x6b69_7465_696e_626f);
    for i in 0..50_000 {
        let len = 1 + (rng.next() % 300) as usize;
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Most inputs start with a real CONNECT (3.1.1 or 5.0), so the checks after it run.
        if i % 4 != 0 {
            let connect: &[u8] = if i % 2 == 0 {
                &[
                    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c',
                ]
            } else {
                &[
                    0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'c',
                ]
            };
            input.splice(1..1, connect.iter().copied());
        }
        let outcome = std::panic::catch_unwind(|| fuzzing::inbound_script(&input));
        if let Err(e) = outcome {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("input {i} failed; its bytes (hex): {hex}");
            std::panic::resume_unwind(e);
        }
    }
}
