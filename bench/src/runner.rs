//! Runs a benchmark: starts one worker thread per configured CPU, keeps the progress display
//! (bars and the once-a-second status line) current while they run, and merges their results
//! into an [`Outcome`].

use crate::config::Config;
use crate::progress::{self, ProgressDisplay};
use crate::stats::{Counters, Recorder};
use crate::sync::Shared;
use crate::worker::{self, ThreadResult, WorkerError};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Merged result of one phase over all threads.
#[derive(Debug, Clone)]
pub struct PhaseTotals {
    pub rec: Recorder,
    /// The longest per-thread measured time.
    pub elapsed: Duration,
}

impl PhaseTotals {
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rec.counters.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub prefill: Option<PhaseTotals>,
    pub measure: Option<PhaseTotals>,
    /// The first failure of any thread (the others were stopped because of it).
    pub error: Option<WorkerError>,
    /// Stopped early by the stop flag (Ctrl-C) rather than by a failure.
    pub interrupted: bool,
}

impl Outcome {
    pub fn counters(&self) -> Counters {
        self.measure.as_ref().map(|m| m.rec.counters).unwrap_or_default()
    }
}

fn merge(phases: impl Iterator<Item = worker::PhaseResult>) -> Option<PhaseTotals> {
    let mut out: Option<PhaseTotals> = None;
    for p in phases {
        let t = out.get_or_insert_with(|| PhaseTotals { rec: Recorder::default(), elapsed: Duration::ZERO });
        t.rec.merge(&p.rec);
        t.elapsed = t.elapsed.max(p.elapsed);
    }
    out
}

/// Runs the benchmark described by `cfg`. `stop` ends it early when set (e.g. by Ctrl-C).
/// With `progress`, progress bars and a status line on stderr are kept current.
pub fn run(cfg: Arc<Config>, stop: Arc<AtomicBool>, progress: bool) -> Outcome {
    let threads = cfg.threads();
    let shared = Arc::new(Shared::new(threads, stop));
    let mut handles = Vec::with_capacity(threads);
    let mut spawn_error = None;
    for i in 0..threads {
        let (c, s) = (Arc::clone(&cfg), Arc::clone(&shared));
        match std::thread::Builder::new().name(format!("bench-{i}")).spawn(move || worker::run_worker(i, c, s)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.request_stop();
                spawn_error = Some(WorkerError::Ring(e));
                break;
            }
        }
    }

    let mut display = progress.then(|| ProgressDisplay::new(&cfg));
    let started = Instant::now();
    let mut last = started;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(d) = &mut display {
            let (phase, done) = shared.progress();
            d.update(phase, done);
        }
        let now = Instant::now();
        if now.duration_since(last) >= Duration::from_secs(1) {
            let (rec, phase) = shared.take_interval();
            if let Some(d) = &display {
                d.set_status(progress::status_line(&rec, phase, now.duration_since(last), started.elapsed()));
            }
            last = now;
        }
    }

    let mut results: Vec<ThreadResult> = Vec::with_capacity(threads);
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r),
            Err(_) => {
                results.push(ThreadResult {
                    error: Some(WorkerError::Ring(std::io::Error::other("a worker thread panicked"))),
                    ..ThreadResult::default()
                });
            }
        }
    }
    let mut error = spawn_error;
    for r in &mut results {
        if error.is_none() {
            error = r.error.take();
        }
    }
    let interrupted = error.is_none() && shared.stopped();
    if let Some(mut d) = display {
        let (phase, done) = shared.progress();
        d.update(phase, done);
        d.finish(error.is_none() && !interrupted);
    }
    Outcome {
        prefill: merge(results.iter_mut().filter_map(|r| r.prefill.take())),
        measure: merge(results.iter_mut().filter_map(|r| r.measure.take())),
        error,
        interrupted,
    }
}
