//! The open-loop send schedule. With a target rate, message `i` is due at `start + i / rate`
//! whether or not the broker kept up; latency is measured from that due time, so a stall shows
//! up as latency of every message it delayed instead of as fewer messages sent (no coordinated
//! omission). Without a rate, each message is due when it is generated.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between messages; `None` means as fast as possible.
    interval_ns: Option<f64>,
}

impl Schedule {
    /// `rate` in messages per second for this generator; `None` or 0 for maximum rate.
    pub fn new(start: Instant, rate: Option<f64>) -> Self {
        let interval_ns = rate.filter(|r| *r > 0.0).map(|r| 1e9 / r);
        Schedule { start, interval_ns }
    }

    pub fn is_open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// When message `i` is due (for maximum rate: `now`).
    pub fn due(&self, i: u64, now: Instant) -> Instant {
        match self.interval_ns {
            Some(ns) => self.start + Duration::from_nanos((i as f64 * ns) as u64),
            None => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_not_the_sender() {
        let start = Instant::now();
        let s = Schedule::new(start, Some(1000.0));
        assert!(s.is_open_loop());
        assert_eq!(s.due(0, start), start);
        assert_eq!(s.due(1, start) - start, Duration::from_millis(1));
        assert_eq!(s.due(2500, start) - start, Duration::from_millis(2500));
        // However late the sender asks, message 10 was due at 10 ms.
        let late = start + Duration::from_secs(5);
        assert_eq!(s.due(10, late) - start, Duration::from_millis(10));
    }

    #[test]
    fn maximum_rate_is_due_now() {
        let start = Instant::now();
        let s = Schedule::new(start, None);
        assert!(!s.is_open_loop());
        let now = start + Duration::from_millis(7);
        assert_eq!(s.due(123, now), now);
        assert!(!Schedule::new(start, Some(0.0)).is_open_loop());
    }
}
