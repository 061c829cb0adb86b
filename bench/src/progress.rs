//! The terminal progress display, shown only when stderr is a terminal: a bar (drawn with
//! `indicatif`) for the prefill and one for the timed phase (warmup plus measurement), and
//! under them the once-a-second status line (ops/s, hit ratio, p50/p99, errors, timeouts,
//! mismatches). Nothing here writes anything when stderr is not a terminal: the runner does not
//! create a display then.

use crate::config::{Config, StopAt};
use crate::stats::{LatencySummary, Recorder};
use crate::sync::PhaseTag;
use indicatif::{HumanCount, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Every bar: the suffix is the message, padded so that bars one above the other line up.
const BAR_TEMPLATE: &str = "{prefix:>7} [{elapsed_precise}] [{wide_bar}] {msg:<32}";
const STATUS_TEMPLATE: &str = "{wide_msg}";

/// What the bar on screen counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BarKind {
    /// Prefill sets done, out of the key count.
    Prefill { keys: u64 },
    /// Time since the timed phase began, out of warmup plus `--duration` (in milliseconds).
    Time { total: Duration },
    /// Measured requests done, out of `--requests`.
    Requests { total: u64 },
}

impl BarKind {
    fn len(self) -> u64 {
        match self {
            BarKind::Prefill { keys } => keys,
            BarKind::Time { total } => total.as_millis().try_into().unwrap_or(u64::MAX),
            BarKind::Requests { total } => total,
        }
    }

    /// The text after the bar: how far it is, out of what, and (counting operations) the
    /// time left at the current pace.
    fn message(self, bar: &ProgressBar, elapsed: Duration) -> String {
        let count = |what: &str| {
            let eta = HumanDuration(bar.eta());
            format!("{}/{} {what}, eta {eta:#}", HumanCount(bar.position()), HumanCount(self.len()))
        };
        match self {
            BarKind::Prefill { .. } => count("sets"),
            BarKind::Requests { .. } => count("requests"),
            BarKind::Time { total } => format!("{:.1}/{:.1} s", elapsed.as_secs_f64(), total.as_secs_f64()),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants that indicatif accepts; fall back to its default rather than
    // fail a run over the display.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// The bar currently on screen.
struct Bar {
    kind: BarKind,
    bar: ProgressBar,
    started: Instant,
}

/// Progress bars plus the status line, redrawn by `indicatif` at most 20 times a second.
pub struct ProgressDisplay {
    multi: MultiProgress,
    status: ProgressBar,
    bar: Option<Bar>,
    keys: u64,
    timed: BarKind,
}

impl ProgressDisplay {
    /// A display on stderr for a run of `cfg`.
    pub fn new(cfg: &Config) -> Self {
        Self::with_target(cfg, ProgressDrawTarget::stderr())
    }

    fn with_target(cfg: &Config, target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let status = multi.add(ProgressBar::new(0).with_style(style(STATUS_TEMPLATE)));
        let timed = match cfg.stop {
            StopAt::Duration(d) => BarKind::Time { total: cfg.warmup + d },
            StopAt::Requests(n) => BarKind::Requests { total: n },
        };
        ProgressDisplay { multi, status, bar: None, keys: cfg.workload.prefill_items(), timed }
    }

    /// Moves the bar to where the workers are: in `phase`, with `done` of its counted
    /// operations complete (see [`crate::sync::Shared::progress`]).
    pub fn update(&mut self, phase: PhaseTag, done: u64) {
        let (kind, prefix) = match phase {
            PhaseTag::Connecting => return,
            PhaseTag::Prefill => (BarKind::Prefill { keys: self.keys }, "prefill"),
            PhaseTag::Warmup => (self.timed, "warmup"),
            PhaseTag::Measure => (self.timed, "measure"),
        };
        if self.bar.as_ref().is_none_or(|b| b.kind != kind) {
            if let Some(old) = self.bar.take() {
                // The previous phase ended normally, or there would be no next one.
                old.bar.set_position(old.kind.len());
                old.bar.set_message(old.kind.message(&old.bar, old.started.elapsed()));
                old.bar.finish();
            }
            let bar = self.multi.insert_before(&self.status, ProgressBar::new(kind.len()));
            bar.set_style(style(BAR_TEMPLATE));
            self.bar = Some(Bar { kind, bar, started: Instant::now() });
        }
        let Some(b) = &self.bar else { return };
        b.bar.set_prefix(prefix);
        let elapsed = match kind {
            BarKind::Time { total } => b.started.elapsed().min(total),
            BarKind::Prefill { .. } | BarKind::Requests { .. } => b.started.elapsed(),
        };
        let position = match kind {
            BarKind::Time { .. } => elapsed.as_millis().try_into().unwrap_or(u64::MAX),
            BarKind::Prefill { .. } | BarKind::Requests { .. } => done,
        };
        b.bar.set_position(position.min(kind.len()));
        b.bar.set_message(kind.message(&b.bar, elapsed));
    }

    /// Replaces the status line.
    pub fn set_status(&self, line: String) {
        self.status.set_message(line);
    }

    /// Leaves the display on screen: the bar full when the run ended as planned (`complete`),
    /// as it stood otherwise.
    pub fn finish(self, complete: bool) {
        if let Some(b) = self.bar {
            if complete {
                b.bar.set_position(b.kind.len());
                let total = match b.kind {
                    BarKind::Time { total } => total,
                    BarKind::Prefill { .. } | BarKind::Requests { .. } => b.started.elapsed(),
                };
                b.bar.set_message(b.kind.message(&b.bar, total));
                b.bar.finish();
            } else {
                b.bar.abandon();
            }
        }
        self.status.abandon();
    }

    #[cfg(test)]
    fn bar_state(&self) -> Option<(BarKind, u64, Option<u64>, String)> {
        self.bar.as_ref().map(|b| (b.kind, b.bar.position(), b.bar.length(), b.bar.prefix()))
    }

    #[cfg(test)]
    fn bar_message(&self) -> String {
        self.bar.as_ref().map(|b| b.bar.message()).unwrap_or_default()
    }
}

/// The status line: one interval's throughput, hit ratio, p50/p99 and error counts. `dt` is the
/// interval's length, `total` the time since the run started.
pub fn status_line(rec: &Recorder, phase: PhaseTag, dt: Duration, total: Duration) -> String {
    let c = &rec.counters;
    let l = LatencySummary::of(&rec.latency);
    let label = match phase {
        PhaseTag::Connecting => "connect",
        PhaseTag::Prefill => "prefill",
        PhaseTag::Warmup => "warmup",
        PhaseTag::Measure => "measure",
    };
    let hit = c.hit_ratio().map_or_else(|| "   -  ".to_string(), |h| format!("{:5.1}%", h * 100.0));
    format!(
        "[{:>4.0}s {label:>7}] {:>10.0} ops/s  hit {hit}  p50 {:>8.1}us  p99 {:>8.1}us  errors {}  timeouts {}  mismatches {}",
        total.as_secs_f64(),
        c.ops as f64 / dt.as_secs_f64().max(1e-9),
        l.p50_us,
        l.p99_us,
        c.errors,
        c.timeouts,
        c.verify_mismatches,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use clap::Parser;

    fn display(args: &[&str]) -> ProgressDisplay {
        let mut v = vec!["ringcache-bench"];
        v.extend_from_slice(args);
        let cfg = Config::from_cli(&Cli::try_parse_from(v).expect("clap accepts")).expect("valid config");
        ProgressDisplay::with_target(&cfg, ProgressDrawTarget::hidden())
    }

    #[test]
    fn prefill_then_requests() {
        let mut d = display(&["--keys", "1000", "--requests", "500", "--prefill"]);
        d.update(PhaseTag::Connecting, 0);
        assert!(d.bar_state().is_none());
        d.update(PhaseTag::Prefill, 250);
        assert_eq!(d.bar_state(), Some((BarKind::Prefill { keys: 1000 }, 250, Some(1000), "prefill".into())));
        assert!(d.bar_message().starts_with("250/1,000 sets, eta "), "{}", d.bar_message());
        d.update(PhaseTag::Measure, 600);
        assert_eq!(d.bar_state(), Some((BarKind::Requests { total: 500 }, 500, Some(500), "measure".into())));
        assert!(d.bar_message().starts_with("500/500 requests"), "{}", d.bar_message());
        d.finish(true);
    }

    #[test]
    fn timed_bar_spans_warmup_and_duration() {
        let mut d = display(&["--duration", "2", "--warmup", "1"]);
        d.update(PhaseTag::Warmup, 0);
        let (kind, pos, len, prefix) = d.bar_state().expect("a bar");
        assert_eq!(kind, BarKind::Time { total: Duration::from_secs(3) });
        assert_eq!(len, Some(3000));
        assert!(pos < 1000, "{pos}");
        assert_eq!(prefix, "warmup");
        assert!(d.bar_message().ends_with("/3.0 s"), "{}", d.bar_message());
        d.update(PhaseTag::Measure, 10);
        assert_eq!(d.bar_state().map(|s| s.3), Some("measure".to_string()), "same bar, new label");
        d.finish(false);
    }

    #[test]
    fn status_line_reports_the_interval() {
        let mut r = Recorder::default();
        r.counters.ops = 2000;
        r.counters.get_keys = 4;
        r.counters.hits = 3;
        r.counters.errors = 1;
        r.record(10_000, 10_000);
        let s = status_line(&r, PhaseTag::Measure, Duration::from_millis(500), Duration::from_secs(3));
        assert!(s.starts_with("[   3s measure]"), "{s}");
        assert!(s.contains("4000 ops/s") && s.contains("hit  75.0%") && s.contains("errors 1"), "{s}");
        assert!(s.contains("p50     10.0us"), "{s}");
    }
}
