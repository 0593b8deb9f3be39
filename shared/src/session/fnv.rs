//! The hasher of the session's maps in the `no_std` build (kite.js): FNV-1a, with no seed.
//!
//! The maps are keyed by packet ids, topic alias numbers and the topics the page itself
//! publishes to — nothing a server chooses to collide — so a seeded hasher (and the code
//! that gathers its seed) would only weigh on the wasm.

use core::hash::{BuildHasherDefault, Hasher};

/// FNV-1a over 64 bits.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What the maps are built with.
pub type BuildFnv = BuildHasherDefault<Fnv>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut h = Fnv::default();
        h.write(bytes);
        h.finish()
    }

    #[test]
    fn fnv_1a_gives_the_published_values() {
        // The reference values of FNV-1a 64 (draft-eastlake-fnv, test vectors).
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
