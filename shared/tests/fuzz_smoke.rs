//! A bounded, deterministic fuzz run in the normal test suite (the open-ended one is
//! `fuzz/`, cargo-fuzz): 400,000 inputs from a fixed seed, pseudo-random and mutated from the
//! 165 real packets of the vector file, decoded as 3.1.1 and 5.0.
//!
//! Checked for every input: no panic; `Err` and `Ok(None)` consume nothing; `Ok(Some)`
//! consumes a prefix, and the packet re-encodes to bytes that decode to the same packet.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::BytesMut;
use kite_mqtt::{EncodeError, Limits, Version, decode};

const INPUTS: usize = 400_000;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mqtt-packet-vectors.json"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["hex"].as_str())
        .map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
            3 if !b.is_empty() => {
                b.remove(rng.below(b.len()));
            }
            4 => b.truncate(rng.below(b.len() + 1)),
            5 if b.len() > 2 => {
                // Rewrite the remaining length to something plausible.
                let n = rng.below(b.len());
                b[1] = (n as u8) & 0x7f;
            }
            _ => {
                let extra = seed.to_vec();
                b.extend_from_slice(&extra[..rng.below(extra.len() + 1)]);
            }
        }
    }
    b
}

fn check(input: &[u8], version: Version, limits: &Limits) -> bool {
    let mut buf = BytesMut::from(input);
    match decode(&mut buf, version, limits) {
        Err(_) | Ok(None) => {
            assert_eq!(&buf[..], input, "nothing may be consumed: {input:02x?}");
            false
        }
        Ok(Some(packet)) => {
            let consumed = input.len() - buf.len();
            assert!(
                consumed > 0 && input[consumed..] == buf[..],
                "a prefix is consumed: {input:02x?}"
            );
            let mut again = BytesMut::new();
            match packet.encode(version, &mut again) {
                Ok(()) => {
                    let back = decode(&mut again, version, &Limits::default()).unwrap();
                    assert_eq!(back.as_ref(), Some(&packet), "{input:02x?}");
                }
                Err(EncodeError::EmptyClientIdNeedsCleanStart) => {}
                Err(e) => panic!("decoded but cannot re-encode ({e}): {input:02x?}"),
            }
            true
        }
    }
}

#[test]
fn decoder_survives_random_and_mutated_input() {
    let corpus = corpus();
    let mut rng = Rng(0x6b69_7465_6d71_7474); // "kitemqtt"
    let limits = [
        Limits::default(),
        Limits {
            max_packet_size: 64,
            max_user_properties: 2,
        },
    ];
    let mut decoded = 0usize;
    for i in 0..INPUTS {
        let input = if i % 4 == 0 {
            let len = rng.below(48);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let seed = &corpus[rng.below(corpus.len())];
            mutate(&mut rng, seed)
        };
        let version = if i % 2 == 0 {
            Version::V3_1_1
        } else {
            Version::V5
        };
        decoded += usize::from(check(&input, version, &limits[i % 7 / 6]));
    }
    // The mutations must reach the parsers, not just the fixed-header checks.
    assert!(
        decoded > INPUTS / 20,
        "only {decoded} of {INPUTS} inputs decoded"
    );
}
