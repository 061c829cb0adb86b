//! What one shard's connection layer counts for the admin listener's metrics: service
//! time (a histogram of how long a round of requests took, from its bytes reaching the
//! connection to its replies being taken by the kernel, counted once per request of the
//! round), connections closed and why, round trips to other shards, and `-Y` logins. Plain cells
//! owned by the shard's thread (no atomic, no lock), read by the shard's report on a
//! scrape. The histogram's buckets are powers of two of a microsecond, 1 µs to about
//! 1 s, so a sample costs a `leading_zeros`, and two clock reads per round (not per
//! request).

use std::cell::Cell;
use std::time::Duration;

/// Buckets: `le` 1 µs, 2 µs, ... 2^(BUCKETS-2) µs, then +Inf.
pub const BUCKETS: usize = 22;

/// The upper bound of bucket `i`, in seconds (the last one is +Inf, which
/// prometheus-client spells `f64::MAX`).
pub fn upper_bound(i: usize) -> f64 {
    if i + 1 == BUCKETS {
        f64::MAX
    } else {
        (1u64 << i) as f64 * 1e-6
    }
}

/// The bucket a duration falls in.
fn bucket(elapsed: Duration) -> usize {
    let micros = elapsed.as_micros();
    if micros <= 1 {
        return 0;
    }
    // ceil(log2(micros)): the first bucket whose bound is at least `micros`.
    let ceil_log2 = (u128::BITS - (micros - 1).leading_zeros()) as usize;
    ceil_log2.min(BUCKETS - 1)
}

/// One shard's connection-layer figures.
#[derive(Default)]
pub struct ConnectionFigures {
    pub service_time: ServiceTime,
    /// Connections closed, for any reason.
    pub closed: Cell<u64>,
    /// Connections closed for a request larger than any bound allows.
    pub over_bound: Cell<u64>,
    /// Batches of ops sent to other shards (each a round trip over the mesh).
    pub cross_shard_trips: Cell<u64>,
    /// `-Y` logins tried, and those refused (memcached's `auth_cmds`, `auth_errors`).
    pub auth_cmds: Cell<u64>,
    pub auth_errors: Cell<u64>,
}

/// What [`ConnectionFigures`] held when read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionSnapshot {
    pub service_time: ServiceTimeSnapshot,
    pub closed: u64,
    pub over_bound: u64,
    pub cross_shard_trips: u64,
    pub auth_cmds: u64,
    pub auth_errors: u64,
}

impl ConnectionFigures {
    pub fn snapshot(&self) -> ConnectionSnapshot {
        ConnectionSnapshot {
            service_time: self.service_time.snapshot(),
            closed: self.closed.get(),
            over_bound: self.over_bound.get(),
            cross_shard_trips: self.cross_shard_trips.get(),
            auth_cmds: self.auth_cmds.get(),
            auth_errors: self.auth_errors.get(),
        }
    }

    /// One more of `counter`.
    pub fn count(counter: &Cell<u64>) {
        counter.set(counter.get() + 1);
    }
}

/// One shard's histogram.
#[derive(Default)]
pub struct ServiceTime {
    counts: [Cell<u64>; BUCKETS],
    sum_nanos: Cell<u64>,
}

/// What a histogram held when it was read (per bucket, not cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceTimeSnapshot {
    pub counts: [u64; BUCKETS],
    pub sum_nanos: u64,
}

impl ServiceTimeSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl ServiceTime {
    /// A round of `requests` requests took `elapsed`.
    pub fn record(&self, elapsed: Duration, requests: u64) {
        let cell = &self.counts[bucket(elapsed)];
        cell.set(cell.get() + requests);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.set(self.sum_nanos.get().saturating_add(nanos.saturating_mul(requests)));
    }

    pub fn snapshot(&self) -> ServiceTimeSnapshot {
        ServiceTimeSnapshot { counts: std::array::from_fn(|i| self.counts[i].get()), sum_nanos: self.sum_nanos.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_falls_in_the_first_bucket_whose_bound_holds_it() {
        for (micros, expected) in [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (1024, 10), (1025, 11)] {
            let i = bucket(Duration::from_micros(micros));
            assert_eq!(i, expected, "{micros} µs");
            assert!(micros as f64 * 1e-6 <= upper_bound(i), "{micros} µs within its bucket's bound");
            assert!(i == 0 || micros as f64 * 1e-6 > upper_bound(i - 1), "{micros} µs above the bound before");
        }
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1, "an hour is +Inf");
        assert_eq!(upper_bound(BUCKETS - 1), f64::MAX);
    }

    #[test]
    fn a_round_counts_once_per_request() {
        let h = ServiceTime::default();
        h.record(Duration::from_micros(3), 4);
        h.record(Duration::from_millis(2), 1);
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.counts[2], 4);
        assert_eq!(s.counts[11], 1, "2 ms is under 2048 µs");
        assert_eq!(s.sum_nanos, 4 * 3_000 + 2_000_000);
    }
}
