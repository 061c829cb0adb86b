//! When operations go out: the phases of a run (prefill, warmup, measure), the source of
//! their operations, the open-loop schedule (operation `i` is due at `start + i / rate`)
//! and what is left unsent at a deadline. Pure bookkeeping, no I/O.

use super::Recorder;
use crate::sync::PhaseTag;

pub(super) enum Source {
    /// Keys `next..end`, then (when the mix has incrs) counters `ctr_next..ctr_end`.
    Prefill {
        next: u64,
        end: u64,
        ctr_next: u64,
        ctr_end: u64,
    },
    Workload,
}

pub(super) struct OpenLoop {
    pub(super) start: u64,
    pub(super) interval_ns: f64,
    pub(super) next: u64,
}

impl OpenLoop {
    pub(super) fn due(&self, i: u64) -> u64 {
        self.start + (i as f64 * self.interval_ns) as u64
    }
}

pub(super) struct Phase {
    pub(super) tag: PhaseTag,
    pub(super) source: Source,
    pub(super) depth: usize,
    pub(super) open: Option<OpenLoop>,
    pub(super) measure_start: u64,
    pub(super) deadline: Option<u64>,
    /// Measured operations still to issue (`--requests`, or the prefill range size).
    pub(super) quota: Option<u64>,
    /// Give outstanding requests up after this long once issuing has stopped.
    pub(super) drain_limit: Option<u64>,
    pub(super) drain_start: Option<u64>,
    pub(super) rec: Recorder,
    pub(super) last_measured_done: Option<u64>,
    pub(super) interrupted: bool,
    pub(super) rr: usize,
}

impl Phase {
    /// A phase of `depth` operations in flight per group, measured from `measure_start`,
    /// with no schedule, deadline, quota or drain limit yet.
    pub(super) fn new(tag: PhaseTag, source: Source, depth: usize, measure_start: u64) -> Self {
        Phase {
            tag,
            source,
            depth,
            open: None,
            measure_start,
            deadline: None,
            quota: None,
            drain_limit: None,
            drain_start: None,
            rec: Recorder::default(),
            last_measured_done: None,
            interrupted: false,
            rr: 0,
        }
    }
}

/// Open loop with a deadline: measured operations scheduled before the deadline that were
/// never sent (the backlog when sending stopped).
pub(super) fn unsent(p: &Phase) -> u64 {
    let (Some(o), Some(d)) = (&p.open, p.deadline) else {
        return 0;
    };
    // First index scheduled at or after `t`.
    let first_at = |t: u64| {
        let mut i = (t.saturating_sub(o.start) as f64 / o.interval_ns).ceil() as u64;
        while i > 0 && o.due(i - 1) >= t {
            i -= 1;
        }
        while o.due(i) < t {
            i += 1;
        }
        i
    };
    first_at(d).saturating_sub(o.next.max(first_at(p.measure_start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_phase(start: u64, interval_ns: f64, next: u64, measure_start: u64, deadline: u64) -> Phase {
        let mut p = Phase::new(PhaseTag::Measure, Source::Workload, 1, measure_start);
        p.open = Some(OpenLoop { start, interval_ns, next });
        p.deadline = Some(deadline);
        p
    }

    #[test]
    fn schedule_is_evenly_spaced_from_the_start() {
        let o = OpenLoop { start: 1_000, interval_ns: 250.5, next: 0 };
        assert_eq!(o.due(0), 1_000);
        assert_eq!(o.due(2), 1_501);
        assert_eq!(o.due(1_000), 251_500);
    }

    #[test]
    fn unsent_counts_the_measured_backlog_before_the_deadline() {
        // One request per 1000 ns from t=0; measured from t=10_000; deadline t=100_000, so
        // requests 10..=99 are measured ones.
        assert_eq!(unsent(&open_phase(0, 1000.0, 100, 10_000, 100_000)), 0);
        assert_eq!(unsent(&open_phase(0, 1000.0, 60, 10_000, 100_000)), 40);
        // Backlog reaching into the warmup only counts the measured part.
        assert_eq!(unsent(&open_phase(0, 1000.0, 5, 10_000, 100_000)), 90);
        // A deadline between two scheduled times.
        assert_eq!(unsent(&open_phase(0, 1000.0, 0, 0, 99_500)), 100);
        let mut closed = open_phase(0, 1000.0, 0, 0, 100_000);
        closed.open = None;
        assert_eq!(unsent(&closed), 0);
    }
}
