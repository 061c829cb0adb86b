//! Coordination between worker threads and the main thread: the stop flag, phase rendezvous
//! (all connected, all prefilled), per-thread interval statistics that the progress line
//! reads once a second, and lock-free phase progress counts for the progress bar.

use crate::stats::Recorder;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a worker is doing, for the progress line. Phases come in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum PhaseTag {
    #[default]
    Connecting,
    Prefill,
    Warmup,
    Measure,
}

impl PhaseTag {
    fn from_u8(v: u8) -> PhaseTag {
        match v {
            1 => PhaseTag::Prefill,
            2 => PhaseTag::Warmup,
            3 => PhaseTag::Measure,
            _ => PhaseTag::Connecting,
        }
    }
}

/// One thread's position, cheap to read at any moment: its phase and how many of that phase's
/// counted operations (prefill sets, or measured operations) have completed.
#[derive(Debug, Default)]
struct Progress {
    phase: AtomicU8,
    done: AtomicU64,
}

/// Statistics gathered since the progress printer last looked.
#[derive(Debug, Default)]
pub struct Interval {
    pub rec: Recorder,
    pub phase: PhaseTag,
}

/// State shared by all threads of one run.
#[derive(Debug)]
pub struct Shared {
    /// Set on Ctrl-C or when any worker fails; workers end their phase promptly when they see it.
    pub stop: Arc<AtomicBool>,
    threads: usize,
    arrived: AtomicUsize,
    intervals: Vec<Mutex<Interval>>,
    progress: Vec<Progress>,
}

fn lock(m: &Mutex<Interval>) -> MutexGuard<'_, Interval> {
    // A worker that panicked while holding the lock left plain counters behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(threads: usize, stop: Arc<AtomicBool>) -> Self {
        Shared {
            stop,
            threads,
            arrived: AtomicUsize::new(0),
            intervals: (0..threads).map(|_| Mutex::default()).collect(),
            progress: (0..threads).map(|_| Progress::default()).collect(),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until every thread has reached rendezvous number `stage` (1, 2, ...). Returns
    /// false if the run was stopped meanwhile.
    pub fn rendezvous(&self, stage: usize) -> bool {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let target = self.threads * stage;
        loop {
            if self.arrived.load(Ordering::Acquire) >= target {
                return true;
            }
            if self.stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Moves a worker's recent statistics into its shared slot and clears them.
    pub fn publish(&self, thread: usize, rec: &mut Recorder, phase: PhaseTag) {
        if let Some(m) = self.intervals.get(thread) {
            let mut slot = lock(m);
            slot.rec.merge(rec);
            slot.phase = phase;
        }
        rec.reset();
    }

    /// Records that `thread` is in `phase` and has completed `done` of its counted operations.
    pub fn set_progress(&self, thread: usize, phase: PhaseTag, done: u64) {
        if let Some(p) = self.progress.get(thread) {
            // Count before phase (release/acquire): a reader that sees a new phase also sees its
            // count, never the previous phase's. The display is refreshed often, so a stale
            // pair in the other direction lasts a moment only.
            p.done.store(done, Ordering::Relaxed);
            p.phase.store(phase as u8, Ordering::Release);
        }
    }

    /// The furthest phase any thread is in, and the operations completed in it, summed over
    /// the threads that are in that phase.
    pub fn progress(&self) -> (PhaseTag, u64) {
        let mut out = (PhaseTag::Connecting, 0);
        for p in &self.progress {
            let phase = PhaseTag::from_u8(p.phase.load(Ordering::Acquire));
            let done = p.done.load(Ordering::Relaxed);
            if phase > out.0 {
                out = (phase, done);
            } else if phase == out.0 {
                out.1 += done;
            }
        }
        out
    }

    /// Takes (and clears) everything published since the last call, merged over threads, and
    /// the furthest phase any thread is in.
    pub fn take_interval(&self) -> (Recorder, PhaseTag) {
        let mut out = Recorder::default();
        let mut phase = PhaseTag::Connecting;
        for m in &self.intervals {
            let mut slot = lock(m);
            out.merge(&slot.rec);
            slot.rec.reset();
            phase = match (phase, slot.phase) {
                (PhaseTag::Measure, _) | (_, PhaseTag::Measure) => PhaseTag::Measure,
                (PhaseTag::Warmup, _) | (_, PhaseTag::Warmup) => PhaseTag::Warmup,
                (PhaseTag::Prefill, _) | (_, PhaseTag::Prefill) => PhaseTag::Prefill,
                _ => PhaseTag::Connecting,
            };
        }
        (out, phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_sums_the_threads_in_the_furthest_phase() {
        let s = Shared::new(3, Arc::new(AtomicBool::new(false)));
        assert_eq!(s.progress(), (PhaseTag::Connecting, 0));
        s.set_progress(0, PhaseTag::Prefill, 10);
        s.set_progress(1, PhaseTag::Prefill, 5);
        assert_eq!(s.progress(), (PhaseTag::Prefill, 15));
        // One thread moves on: the others' prefill counts no longer add up into it.
        s.set_progress(2, PhaseTag::Measure, 7);
        assert_eq!(s.progress(), (PhaseTag::Measure, 7));
        s.set_progress(0, PhaseTag::Measure, 1);
        assert_eq!(s.progress(), (PhaseTag::Measure, 8));
        // An out-of-range thread index is ignored.
        s.set_progress(9, PhaseTag::Measure, 100);
        assert_eq!(s.progress(), (PhaseTag::Measure, 8));
    }
}
