//! The session's clock in the `no_std` build (kite.js): the caller's own time, handed in.

use core::ops::Add;
use core::time::Duration;

/// A point in time: how long after the caller's origin (kite.js: the page's `performance.now()`).
/// The session only compares instants and adds durations to them, as it does with std's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    /// The instant `since` after the caller's origin.
    pub const fn after_origin(since: Duration) -> Self {
        Self(since)
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates rather than overflowing: a deadline past the end of time is never reached.
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_compare_and_subtract_as_std_does_and_saturate_where_it_would_panic() {
        let a = Instant::after_origin(Duration::from_millis(1_000));
        let b = a + Duration::from_millis(500);
        assert!(b > a);
        assert_eq!(b.saturating_duration_since(a), Duration::from_millis(500));
        // Earlier minus later is zero, not a panic.
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        // A deadline past the end of time stays there instead of overflowing.
        let far = Instant::after_origin(Duration::MAX) + Duration::from_secs(1);
        assert_eq!(far, Instant::after_origin(Duration::MAX));
        assert!(far > b);
    }
}
