//! Coordination between worker threads and the main thread: the stop flag, phase rendezvous
//! (all connected, all prefilled), and per-thread interval statistics that the progress line
//! reads once a second.

use crate::stats::Recorder;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a worker is doing, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhaseTag {
    #[default]
    Connecting,
    Prefill,
    Warmup,
    Measure,
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
