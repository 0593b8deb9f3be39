//! Connections per source address (`[limits] max_connections_per_address`): without a bound,
//! one address could take every connection permit (`max_connections`) and leave nothing for
//! anyone else. One count serves all listeners (HTTP and WebSocket, the broker's TCP and TLS);
//! an IPv6 address counts by its /64, as for logins. A connection beyond the bound is closed
//! as soon as it is accepted, and counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// The open connections of each source address (clones share them).
#[derive(Debug, Clone)]
pub struct PerAddress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// 0: no bound.
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    inner: Arc<Inner>,
    source: IpAddr,
}

impl PerAddress {
    /// At most `max` connections open at once per source address; 0: no bound.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max,
                open: Mutex::new(HashMap::new()),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// A place for one more connection from `peer`, or `None` (counted) when its address has
    /// as many open as it may.
    pub fn enter(&self, peer: IpAddr) -> Option<AddressSlot> {
        let source = kite_broker::logins::source_of(peer);
        if self.inner.max > 0 {
            let mut open = self
                .inner
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(source).or_insert(0);
            if *n >= self.inner.max {
                drop(open);
                self.inner.refused.fetch_add(1, Relaxed);
                return None;
            }
            *n += 1;
        }
        Some(AddressSlot {
            inner: self.inner.clone(),
            source,
        })
    }

    /// Connections closed at accept because their address was at its bound.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Relaxed)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if self.inner.max == 0 {
            return;
        }
        let mut open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_bound_and_its_places_back() {
        let p = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let (one, two) = (p.enter(a).unwrap(), p.enter(a).unwrap());
        assert!(p.enter(a).is_none());
        assert!(p.enter(b).is_some(), "another address is not affected");
        drop(one);
        assert!(p.enter(a).is_some());
        drop(two);
        assert_eq!(p.refused(), 1);
        // IPv6: by /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let _x = (p.enter(v6a).unwrap(), p.enter(v6b).unwrap());
        assert!(p.enter("2001:db8::3".parse().unwrap()).is_none());
        assert!(PerAddress::new(0).enter(a).is_some(), "0: no bound");
        assert!(p.inner.open.lock().unwrap().len() <= 2);
    }
}
