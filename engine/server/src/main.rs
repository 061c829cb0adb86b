//! The `ringcache` binary: parse flags, refuse settings that cannot work, plan the CPU
//! map, load the TLS certificate (`-Z`), log it, detach (`-d`) and write the pid file (`-P`), run the server. Exit status: 0 after a clean stop, 64 (`EX_USAGE`) for
//! settings that cannot work, 71 (`EX_OSERR`) when the address cannot be listened on or
//! enough files cannot be opened (memcached's statuses), 1 for any other failure.

use std::process::ExitCode;

use clap::Parser;
use ringcache_server::config::{Args, ConfigError};
use ringcache_server::server::connection::{max_request_bytes, READ_BUFFER_BASE};
use ringcache_server::{server, topology};

fn refuse(status: u8, message: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::from(status)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (verbose, json) = args.logging();
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        logs.json().with_current_span(false).init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    for flag in args.ignored_flags() {
        tracing::warn!("memcached option {flag} does not apply to ringcache; ignored");
    }
    let mut config = match args.resolve() {
        Ok(c) => c,
        Err(e) => return refuse(e.exit_status(), e),
    };
    let shards = config.threads.unwrap_or_else(|| {
        let cores = topology::physical_cores();
        let fit = config.max_shards_for_memory();
        if fit < cores {
            tracing::info!("{cores} cores but -m feeds only {fit} shards; running {fit}");
        }
        cores.min(fit)
    });
    let plan = match topology::plan(shards) {
        Ok(p) => p,
        Err(e) => return refuse(ConfigError::EXIT_STATUS, e),
    };
    let largest_request = max_request_bytes(config.max_item_size) - READ_BUFFER_BASE;
    if let Err(e) = config.fit_to_shards(plan.len(), largest_request) {
        return refuse(ConfigError::EXIT_STATUS, e);
    }
    // The certificate is read before the process detaches, so that a bad one is said.
    let tls = match config.tls.clone().map(server::tls::Tls::open).transpose() {
        Ok(tls) => tls,
        Err(e) => return refuse(ConfigError::EXIT_STATUS, e),
    };
    for slot in &plan {
        tracing::info!("cpu map: {slot}");
    }
    if config.daemon {
        // Before any thread starts: the parent returns at once, the child runs on in a
        // new session (the working directory is kept, so relative paths still work;
        // stdout and stderr go to /dev/null unless -v).
        // SAFETY: daemon() forks; this process has no other thread yet.
        if unsafe { libc::daemon(1, i32::from(config.verbose > 0)) } != 0 {
            return refuse(71, format!("-d: cannot detach: {}", std::io::Error::last_os_error()));
        }
    }
    let pidfile = config.pidfile.clone();
    if let Some(path) = &pidfile {
        // As memcached: a pid file that cannot be written is reported, not fatal.
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            tracing::error!("could not write the pid file {}: {e}", path.display());
        }
    }
    let status = match server::run(config, plan, tls) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => refuse(e.exit_status(), e),
    };
    if let Some(path) = &pidfile {
        let _ = std::fs::remove_file(path);
    }
    status
}
