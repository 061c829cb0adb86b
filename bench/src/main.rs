//! `ringcache-bench` entry point: parses the command line, installs the Ctrl-C handler, runs
//! the benchmark and prints/writes the report (and the `--plot` image). Exit status: 0 success,
//! 1 verification mismatches, 2 the run failed (bad arguments, connection refused, server went
//! away, ...), 130 interrupted by SIGINT/SIGTERM (the partial report is still printed).

use anyhow::Context;
use clap::Parser;
use ringcache_bench::config::{Cli, Config};
use ringcache_bench::plot::{LatencyPlot, PlotError};
use ringcache_bench::report::Report;
use ringcache_bench::runner;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringcache-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let cfg = Arc::new(Config::from_cli(&cli)?);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("installing signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let progress = !cli.quiet && std::io::stderr().is_terminal();
    let outcome = runner::run(Arc::clone(&cfg), stop, progress);
    let report = Report::new(&cfg, &outcome);
    print!("{}", report.text());
    if let Some(path) = &cli.json {
        let json = report.json().context("serialising the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.plot {
        let written = match &outcome.measure {
            Some(m) => LatencyPlot::for_run(&report, m).and_then(|p| p.write_png(path)),
            None => Err(PlotError::Empty),
        };
        match written {
            Ok(()) => {}
            Err(PlotError::Empty) => eprintln!("ringcache-bench: no latencies were measured, so no plot was written"),
            Err(e) => return Err(e).with_context(|| format!("writing the plot {}", path.display())),
        }
    }
    if let Some(e) = &outcome.error {
        eprintln!("ringcache-bench: error: {e}");
        return Ok(ExitCode::from(2));
    }
    let mismatches = outcome.counters().verify_mismatches;
    if mismatches > 0 {
        eprintln!("ringcache-bench: {mismatches} value(s) failed verification");
        return Ok(ExitCode::from(1));
    }
    if outcome.interrupted {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}
