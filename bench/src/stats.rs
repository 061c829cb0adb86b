//! Measurement state: operation counters and HDR latency histograms (per thread, merged at the
//! end), the per-second interval snapshot shared with the progress printer, and percentile
//! summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Lowest and highest recordable latency in nanoseconds (1 ns .. 1 hour), 3 significant digits.
const HIST_LOW_NS: u64 = 1;
const HIST_HIGH_NS: u64 = 3_600_000_000_000;
const HIST_SIGFIG: u8 = 3;

/// Creates an empty latency histogram (values in nanoseconds).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIG).expect("constant histogram bounds are valid")
}

/// Event counts for one phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Operations whose complete reply arrived (including error replies).
    pub ops: u64,
    pub gets: u64,
    pub sets: u64,
    /// Keys asked for by gets (a multiget of K counts K).
    pub get_keys: u64,
    pub hits: u64,
    pub misses: u64,
    /// Sets answered `STORED`.
    pub stored: u64,
    /// Sets answered `NOT_STORED`/`EXISTS`/`NOT_FOUND`.
    pub not_stored: u64,
    /// Deletes, and how they were answered: `DELETED` (hit) or `NOT_FOUND` (miss).
    pub deletes: u64,
    pub delete_hits: u64,
    pub delete_misses: u64,
    /// Incrs of counter keys: answered with the new value (hit) or `NOT_FOUND` (miss).
    pub incrs: u64,
    pub incr_hits: u64,
    pub incr_misses: u64,
    /// Read-modify-writes (`gets`, then `cas` on a hit).
    pub cas: u64,
    /// The `cas` was answered `STORED`.
    pub cas_stored: u64,
    /// The `cas` was answered `EXISTS`: the key changed between the `gets` and the `cas`.
    pub cas_exists: u64,
    /// The `cas` was answered `NOT_FOUND`: the key vanished between the `gets` and the `cas`.
    pub cas_not_found: u64,
    /// The `gets` missed, so no `cas` was sent.
    pub cas_misses: u64,
    /// Replies `ERROR`, `CLIENT_ERROR` or `SERVER_ERROR`.
    pub errors: u64,
    /// Requests whose reply took longer than the timeout, or never came.
    pub timeouts: u64,
    /// Values that did not verify as written by this tool for the key (only with `--verify`).
    pub verify_mismatches: u64,
    /// Open loop: requests that were due but never sent before the run ended.
    pub unsent: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.ops += o.ops;
        self.gets += o.gets;
        self.sets += o.sets;
        self.get_keys += o.get_keys;
        self.hits += o.hits;
        self.misses += o.misses;
        self.stored += o.stored;
        self.not_stored += o.not_stored;
        self.deletes += o.deletes;
        self.delete_hits += o.delete_hits;
        self.delete_misses += o.delete_misses;
        self.incrs += o.incrs;
        self.incr_hits += o.incr_hits;
        self.incr_misses += o.incr_misses;
        self.cas += o.cas;
        self.cas_stored += o.cas_stored;
        self.cas_exists += o.cas_exists;
        self.cas_not_found += o.cas_not_found;
        self.cas_misses += o.cas_misses;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.verify_mismatches += o.verify_mismatches;
        self.unsent += o.unsent;
    }

    /// Hits over keys asked for by gets; `None` when no get completed.
    pub fn hit_ratio(&self) -> Option<f64> {
        (self.get_keys > 0).then(|| self.hits as f64 / self.get_keys as f64)
    }
}

/// Counters and both latency histograms.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub counters: Counters,
    /// Latency from the intended send time (coordinated-omission corrected in open loop; equal
    /// to `service` in closed loop, where the intended time is the actual send time).
    pub latency: Histogram<u64>,
    /// Service time: from the actual send to the last byte of the reply.
    pub service: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { counters: Counters::default(), latency: new_histogram(), service: new_histogram() }
    }
}

impl Recorder {
    /// Records one reply's latencies in nanoseconds.
    #[inline]
    pub fn record(&mut self, latency_ns: u64, service_ns: u64) {
        self.latency.saturating_record(latency_ns.max(HIST_LOW_NS));
        self.service.saturating_record(service_ns.max(HIST_LOW_NS));
    }

    pub fn merge(&mut self, o: &Recorder) {
        self.counters.add(&o.counters);
        // Same bounds on both sides, so adding cannot fail; ignore the impossible error.
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
    }

    pub fn reset(&mut self) {
        self.counters = Counters::default();
        self.latency.reset();
        self.service.reset();
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return LatencySummary {
                count: 0,
                min_us: 0.0,
                mean_us: 0.0,
                p50_us: 0.0,
                p90_us: 0.0,
                p99_us: 0.0,
                p999_us: 0.0,
                p9999_us: 0.0,
                max_us: 0.0,
            };
        }
        LatencySummary {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002 + 0.001
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = Recorder::default();
        // 1..=10_000 microseconds, once each.
        for us in 1..=10_000u64 {
            r.record(us * 1000, us * 1000);
        }
        let s = LatencySummary::of(&r.latency);
        assert_eq!(s.count, 10_000);
        assert!(close(s.min_us, 1.0), "{s:?}");
        assert!(close(s.p50_us, 5000.0), "{s:?}");
        assert!(close(s.p90_us, 9000.0), "{s:?}");
        assert!(close(s.p99_us, 9900.0), "{s:?}");
        assert!(close(s.p999_us, 9990.0), "{s:?}");
        assert!(close(s.p9999_us, 9999.0), "{s:?}");
        assert!(close(s.max_us, 10_000.0), "{s:?}");
        assert!(close(s.mean_us, 5000.5), "{s:?}");
    }

    #[test]
    fn a_single_outlier_shows_only_at_the_top() {
        let mut r = Recorder::default();
        for _ in 0..9_999 {
            r.record(100_000, 100_000); // 100 us
        }
        r.record(200_000_000, 50_000); // one 200 ms latency
        let l = LatencySummary::of(&r.latency);
        assert!(close(l.p99_us, 100.0));
        assert!(close(l.p999_us, 100.0));
        assert!(close(l.max_us, 200_000.0), "{l:?}");
        let s = LatencySummary::of(&r.service);
        assert!(close(s.max_us, 100.0));
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.counters.ops = 2;
        a.counters.get_keys = 4;
        a.counters.hits = 3;
        b.counters.ops = 1;
        a.record(1_000, 1_000);
        b.record(3_000_000, 2_000);
        a.merge(&b);
        assert_eq!(a.counters.ops, 3);
        assert_eq!(a.counters.hit_ratio(), Some(0.75));
        assert_eq!(a.latency.len(), 2);
        assert!(close(LatencySummary::of(&a.latency).max_us, 3000.0));
        a.reset();
        assert_eq!(LatencySummary::of(&a.latency).count, 0);
        assert_eq!(a.counters.hit_ratio(), None);
    }

    #[test]
    fn huge_values_saturate_instead_of_failing() {
        let mut r = Recorder::default();
        r.record(u64::MAX, 0);
        assert_eq!(r.latency.len(), 1);
        assert_eq!(r.service.len(), 1);
    }
}
