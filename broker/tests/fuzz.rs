//! A bounded, deterministic fuzz run in the normal test suite (open-ended: `cargo xtask fuzz
//! broker`): 10,000 scripts from a fixed seed for the embedded broker, each three in-process
//! clients doing what its bytes say (see `fuzzing/mod.rs` for the invariants). Inputs that once
//! broke something are kept in `fuzzing/regressions/broker/` and replayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fuzzing;

const SCRIPTS: usize = 10_000;

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
    replay("broker", fuzzing::broker_script);
}

#[test]
fn seeded_scripts_keep_the_broker_whole() {
    let mut rng = Rng(0x6b69_7465_6675_7a7a);
    for i in 0..SCRIPTS {
        let len = 16 + (rng.next() % 400) as usize;
        let script: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let outcome = std::panic::catch_unwind(|| fuzzing::broker_script(&script));
        if let Err(e) = outcome {
            let hex: String = script.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("script {i} failed; its bytes (hex): {hex}");
            std::panic::resume_unwind(e);
        }
    }
}
