//! The `ringcache` binary: parse flags, plan the CPU map, log it, run the server.

use anyhow::Context;
use clap::Parser;
use ringcache_engine::config::Args;
use ringcache_engine::{server, topology};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    for flag in args.ignored_flags() {
        tracing::warn!("memcached flag {flag} does not apply to ringcache; ignored");
    }
    let config = args.resolve().context("invalid configuration")?;
    let plan = topology::plan(config.threads);
    tracing::info!("listening on {}:{} with {} shards", config.listen, config.port, plan.len());
    for slot in &plan {
        tracing::info!("cpu map: {slot}");
    }
    server::run(config, plan).context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
