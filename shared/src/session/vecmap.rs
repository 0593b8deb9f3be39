//! The session's maps in the browser (the app and kite.js, wasm32) and without std: a vector
//! kept sorted by key. Natively (the bridge, the gateway's clients) they are std's hash maps.
//!
//! In a page they are small or grow only by what the page itself does: packet ids of
//! SUBSCRIBEs and UNSUBSCRIBEs awaiting their answer, QoS 2 ids awaiting PUBREL, topic aliases
//! (ours up to the server's Topic Alias Maximum, the server's up to ours). A lookup is a binary
//! search; an insert or removal moves the entries after it (at 65,535 aliases, about a
//! megabyte once per new topic on a connection). hashbrown's maps cost kite.js's wasm 3.3 KB
//! gzip more, the app's 2.2 KB.

use crate::prelude::*;

/// A map as a vector sorted by key.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// Where `k` is (`Ok`), or where it would go (`Err`).
    fn find(&self, k: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(key, _)| key.cmp(k))
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.find(k).ok().map(|i| &self.0[i].1)
    }

    pub(crate) fn contains_key(&self, k: &K) -> bool {
        self.find(k).is_ok()
    }

    /// Sets `k` to `v`; the value it had, if any.
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(core::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (k, v));
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        self.find(k).ok().map(|i| self.0.remove(i).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// A set as a [`VecMap`] to nothing.
#[derive(Debug, Clone)]
pub(crate) struct VecSet<K>(VecMap<K, ()>);

impl<K> Default for VecSet<K> {
    fn default() -> Self {
        Self(VecMap::default())
    }
}

impl<K: Ord> VecSet<K> {
    /// Adds `k`; whether it was new.
    pub(crate) fn insert(&mut self, k: K) -> bool {
        self.0.insert(k, ()).is_none()
    }

    /// Removes `k`; whether it was there.
    pub(crate) fn remove(&mut self, k: &K) -> bool {
        self.0.remove(k).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::{VecMap, VecSet};
    use alloc::collections::{BTreeMap, BTreeSet};

    /// Against std's ordered map and set, over a fixed pseudo-random walk of inserts,
    /// replacements, lookups and removals (keys from a small range, so all of them happen).
    #[test]
    fn behaves_as_a_map_and_a_set() {
        let (mut map, mut model) = (VecMap::default(), BTreeMap::new());
        let (mut set, mut set_model) = (VecSet::default(), BTreeSet::new());
        let mut x = 0x2545_f491_u32;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let k = (x % 64) as u16;
            match x % 4 {
                0 | 1 => {
                    assert_eq!(map.insert(k, step), model.insert(k, step), "insert {k}");
                    assert_eq!(set.insert(k), set_model.insert(k), "set insert {k}");
                }
                2 => {
                    assert_eq!(map.remove(&k), model.remove(&k), "remove {k}");
                    assert_eq!(set.remove(&k), set_model.remove(&k), "set remove {k}");
                }
                _ => {
                    assert_eq!(map.get(&k), model.get(&k), "get {k}");
                    assert_eq!(map.contains_key(&k), model.contains_key(&k));
                }
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.is_empty(), model.is_empty());
            assert_eq!(set.len(), set_model.len());
            assert!(map.0.windows(2).all(|w| w[0].0 < w[1].0), "kept sorted");
        }
        map.clear();
        set.clear();
        assert!(map.is_empty() && set.len() == 0);
    }
}
