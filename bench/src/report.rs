//! The final report: built from the configuration and the run's outcome, printed as text and
//! serialised as JSON for `--json`.

use crate::config::{Config, StopAt};
use crate::runner::Outcome;
use crate::stats::{Counters, LatencySummary};
use serde::Serialize;
use std::fmt::Write as _;

/// The run's parameters, echoed into the report.
#[derive(Debug, Serialize)]
pub struct ConfigEcho {
    pub servers: Vec<String>,
    pub threads: usize,
    pub cpus: Vec<Option<usize>>,
    pub connections_per_thread: usize,
    pub pipeline: usize,
    pub mode: &'static str,
    pub rate: Option<f64>,
    /// "classic" or "meta" (`--protocol`).
    pub protocol: &'static str,
    pub keys: u64,
    pub key_size: usize,
    pub key_dist: String,
    pub ratio: String,
    /// What the `ratio` weights stand for: "get:set" or "get:set:delete:incr:cas".
    pub ratio_label: &'static str,
    #[serde(skip)]
    pub ratio_weights: crate::workload::Ratio,
    pub multiget: usize,
    pub value_size: String,
    pub ttl: u32,
    pub seed: u64,
    pub prefill: bool,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub verify: bool,
    pub timeout_ms: u64,
}

/// Totals of one phase.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub hit_ratio: Option<f64>,
    pub counters: Counters,
    /// From the intended send time. In open loop this is the coordinated-omission corrected
    /// latency; in closed loop it equals `service_time`.
    pub latency: LatencySummary,
    /// From the actual send to the end of the reply.
    pub service_time: LatencySummary,
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// "ok", "interrupted" or "failed".
    pub status: &'static str,
    pub error: Option<String>,
    pub config: ConfigEcho,
    pub prefill: Option<PhaseReport>,
    pub measured: Option<PhaseReport>,
}

fn phase_report(t: &crate::runner::PhaseTotals) -> PhaseReport {
    PhaseReport {
        seconds: t.elapsed.as_secs_f64(),
        ops: t.rec.counters.ops,
        ops_per_sec: t.ops_per_sec(),
        hit_ratio: t.rec.counters.hit_ratio(),
        counters: t.rec.counters,
        latency: LatencySummary::of(&t.rec.latency),
        service_time: LatencySummary::of(&t.rec.service),
    }
}

impl Report {
    pub fn new(cfg: &Config, outcome: &Outcome) -> Report {
        let (duration_s, requests) = match cfg.stop {
            StopAt::Duration(d) => (Some(d.as_secs_f64()), None),
            StopAt::Requests(n) => (None, Some(n)),
        };
        Report {
            tool: "ringcache-bench",
            version: env!("CARGO_PKG_VERSION"),
            status: if outcome.error.is_some() {
                "failed"
            } else if outcome.interrupted {
                "interrupted"
            } else {
                "ok"
            },
            error: outcome.error.as_ref().map(|e| e.to_string()),
            config: ConfigEcho {
                servers: cfg.servers.iter().map(|s| s.name()).collect(),
                threads: cfg.threads(),
                cpus: cfg.cpus.clone(),
                connections_per_thread: cfg.connections,
                pipeline: cfg.pipeline,
                mode: if cfg.rate.is_some() { "open" } else { "closed" },
                rate: cfg.rate,
                protocol: cfg.protocol.name(),
                keys: cfg.workload.keys.count(),
                key_size: cfg.workload.keys.key_size(),
                key_dist: cfg.workload.dist.to_string(),
                ratio: cfg.workload.ratio.to_string(),
                ratio_label: cfg.workload.ratio.label(),
                ratio_weights: cfg.workload.ratio,
                multiget: cfg.workload.multiget,
                value_size: cfg.workload.value_size.to_string(),
                ttl: cfg.ttl,
                seed: cfg.seed,
                prefill: cfg.prefill,
                duration_s,
                requests,
                warmup_s: cfg.warmup.as_secs_f64(),
                verify: cfg.verify,
                timeout_ms: cfg.timeout.as_millis() as u64,
            },
            prefill: outcome.prefill.as_ref().map(phase_report),
            measured: outcome.measure.as_ref().map(phase_report),
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let cpus = if c.cpus.iter().all(Option::is_none) {
            "unpinned".to_string()
        } else {
            let list: Vec<String> = c.cpus.iter().map(|x| x.map_or("-".into(), |v| v.to_string())).collect();
            format!("cpus {}", list.join(","))
        };
        let mode = match c.rate {
            Some(r) => format!("open loop at {r} ops/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            s,
            "ringcache-bench {}: {} thread(s) ({cpus}), {} connection(s)/thread/server, pipeline {}, {mode}, \
             {} protocol",
            self.version, c.threads, c.connections_per_thread, c.pipeline, c.protocol
        );
        let _ = writeln!(s, "servers: {}", c.servers.join(", "));
        let _ = writeln!(
            s,
            "workload: {} keys of {} B, {}, {} {}, multiget {}, values {} B, ttl {}{}",
            c.keys,
            c.key_size,
            c.key_dist,
            c.ratio_label,
            c.ratio,
            c.multiget,
            c.value_size,
            c.ttl,
            if c.verify { ", verify" } else { "" }
        );
        if let Some(p) = &self.prefill {
            let _ = writeln!(
                s,
                "prefill: {} sets in {:.2} s ({:.0} ops/s), stored {}, errors {}, timeouts {}",
                p.ops, p.seconds, p.ops_per_sec, p.counters.stored, p.counters.errors, p.counters.timeouts
            );
        }
        match &self.measured {
            None => {
                let _ = writeln!(s, "no measurement was made");
            }
            Some(m) => {
                let k = &m.counters;
                let _ = writeln!(s);
                let target = c.rate.map_or(String::new(), |r| format!(", target {r} ops/s"));
                let _ = writeln!(
                    s,
                    "throughput  {:.1} ops/s  ({} ops in {:.2} s{target})",
                    m.ops_per_sec, m.ops, m.seconds
                );
                let hit = m.hit_ratio.map_or("-".to_string(), |h| format!("{:.2}%", h * 100.0));
                let _ = writeln!(
                    s,
                    "gets        {}  ({} keys: {} hits, {} misses, hit ratio {hit})",
                    k.gets, k.get_keys, k.hits, k.misses
                );
                let _ = writeln!(s, "sets        {}  ({} stored, {} not stored)", k.sets, k.stored, k.not_stored);
                let r = c.ratio_weights;
                if r.delete > 0 || k.deletes > 0 {
                    let _ = writeln!(
                        s,
                        "deletes     {}  ({} deleted, {} not found)",
                        k.deletes, k.delete_hits, k.delete_misses
                    );
                }
                if r.incr > 0 || k.incrs > 0 {
                    let _ = writeln!(s, "incrs       {}  ({} hits, {} not found)", k.incrs, k.incr_hits, k.incr_misses);
                }
                if r.cas > 0 || k.cas > 0 {
                    let _ = writeln!(
                        s,
                        "cas         {}  ({} stored, {} exists, {} not found, {} gets misses)",
                        k.cas, k.cas_stored, k.cas_exists, k.cas_not_found, k.cas_misses
                    );
                }
                let _ = writeln!(
                    s,
                    "errors {}  timeouts {}  verify mismatches {}{}",
                    k.errors,
                    k.timeouts,
                    k.verify_mismatches,
                    if c.rate.is_some() { format!("  unsent {}", k.unsent) } else { String::new() }
                );
                if k.unsent > 0 {
                    let _ = writeln!(
                        s,
                        "warning: {} requests due before the end were never sent: the target rate was not reached",
                        k.unsent
                    );
                }
                let _ = writeln!(s);
                let _ = writeln!(
                    s,
                    "{:<34}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
                    "latency (us)", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
                );
                let row = |s: &mut String, name: &str, l: &LatencySummary| {
                    let _ = writeln!(
                        s,
                        "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                        name, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us, l.mean_us
                    );
                };
                if c.rate.is_some() {
                    row(&mut s, "from intended send (CO-corrected)", &m.latency);
                    row(&mut s, "service time (from actual send)", &m.service_time);
                } else {
                    row(&mut s, "request latency", &m.service_time);
                }
            }
        }
        if self.status == "interrupted" {
            let _ = writeln!(s, "\nrun interrupted before its planned end");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "\nrun failed: {e}");
        }
        s
    }

    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}
