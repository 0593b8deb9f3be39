//! Reconnect delays: exponential backoff with jitter, as a pure function (no clock, no RNG:
//! the driver passes a random number).

use core::time::Duration;

/// Exponential backoff between reconnect attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
    /// A connection that lasted this long resets the attempt count.
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first), with `jitter` in `[0, 1)`
    /// from the driver's random source: between half and all of `min · 2^attempt`, capped at
    /// `max` ("equal jitter", so clients that lost the same broker do not return in step).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ceiling / 2 + ceiling.mul_f64(jitter / 2.0)
    }

    /// The attempt number after a connection that lasted `connected_for` ended: 0 again if it
    /// was stable, else one more than `attempt`.
    pub fn next_attempt(&self, attempt: u32, connected_for: Duration) -> u32 {
        if connected_for >= self.stable_after {
            0
        } else {
            attempt.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn grows_then_caps_and_jitters_within_half() {
        let b = Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(6));
        // Capped at max, whatever the attempt (no overflow at huge attempts).
        assert_eq!(b.delay(4, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(1_000, 1.0), Duration::from_secs(10));
        // Bad jitter is clamped, never panics.
        assert_eq!(b.delay(0, f64::NAN), Duration::from_millis(500));
        assert_eq!(b.delay(0, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn a_stable_connection_resets_the_count() {
        let b = Backoff::default();
        assert_eq!(b.next_attempt(5, Duration::from_secs(1)), 6);
        assert_eq!(b.next_attempt(5, Duration::from_secs(60)), 0);
        assert_eq!(b.next_attempt(u32::MAX, Duration::ZERO), u32::MAX);
    }
}
