//! The `stats` family of replies (`stats`, `stats settings|items|slabs|conns|sizes|reset`),
//! built from every shard's [`ShardReport`] and named as memcached names them. Not on the
//! request hot path.

use std::sync::atomic::Ordering;

use super::shard_report::ShardReport;
use super::Shared;
use ringcache_core::protocol::reply::{self, stat};
use ringcache_core::shard::stats::Counters;
use ringcache_core::store::StoreStats;
use ringcache_replication::group::StateRole;

fn subcommand(args: &[u8]) -> &[u8] {
    args.split(|&b| b == b' ').find(|t| !t.is_empty()).unwrap_or(&[])
}

/// True for `stats reset` (memcached looks only at the first word).
pub fn is_reset(args: &[u8]) -> bool {
    subcommand(args) == b"reset"
}

fn totals(reports: &[ShardReport]) -> (Counters, StoreStats, usize) {
    let mut counters = Counters::default();
    let mut store = StoreStats::default();
    let mut limit = 0;
    for r in reports {
        counters.add(&r.counters);
        store.curr_items += r.store.curr_items;
        store.total_items += r.store.total_items;
        store.bytes += r.store.bytes;
        store.evictions += r.store.evictions;
        store.expired_unfetched += r.store.expired_unfetched;
        store.reclaimed += r.store.reclaimed;
        store.crawler_reclaimed += r.store.crawler_reclaimed;
        store.crawler_items_checked += r.store.crawler_items_checked;
        store.get_expired += r.store.get_expired;
        store.dead_bytes += r.store.dead_bytes;
        store.index_bytes += r.store.index_bytes;
        store.segments_total += r.store.segments_total;
        store.segments_free += r.store.segments_free;
        store.segments_pinned += r.store.segments_pinned;
        store.segments_parked += r.store.segments_parked;
        store.segment_size = r.store.segment_size;
        limit += r.memory_limit;
    }
    (counters, store, limit)
}

fn rusage() -> (f64, f64) {
    // SAFETY: getrusage fills a zeroed rusage struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// `stats replication`: each shard's group (nothing for a node alone): role, leader,
/// term, commit and applied index, the log's span, the peers' match index (on a
/// leader), and the batching achieved: effects per entry, entries per fsync, bytes per
/// append message, fsyncs in the last second.
fn replication(out: &mut Vec<u8>, reports: &[ShardReport]) {
    let mut groups: Vec<_> = reports.iter().filter_map(|r| r.replication.as_ref()).collect();
    groups.sort_by_key(|g| g.shard);
    for g in groups {
        let (s, st, b) = (g.shard, &g.status, &g.stats);
        let role = match st.role {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "precandidate",
        };
        stat(out, &format!("shard:{s}:node"), st.node_id);
        stat(out, &format!("shard:{s}:role"), role);
        stat(out, &format!("shard:{s}:leader"), st.leader);
        stat(out, &format!("shard:{s}:term"), st.term);
        stat(out, &format!("shard:{s}:commit"), st.commit);
        stat(out, &format!("shard:{s}:applied"), st.applied);
        stat(out, &format!("shard:{s}:first_index"), st.first_index);
        stat(out, &format!("shard:{s}:last_index"), st.last_index);
        stat(out, &format!("shard:{s}:snapshot_index"), st.snapshot);
        let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        stat(out, &format!("shard:{s}:voters"), ids(&st.voters));
        stat(out, &format!("shard:{s}:learners"), ids(&st.learners));
        for &(peer, matched, _) in &st.peers {
            stat(out, &format!("shard:{s}:peer:{peer}:match"), matched);
            stat(out, &format!("shard:{s}:peer:{peer}:lag"), st.last_index.saturating_sub(matched));
        }
        stat(out, &format!("shard:{s}:jobs_waiting"), g.jobs);
        stat(out, &format!("shard:{s}:proposals"), b.proposals);
        stat(out, &format!("shard:{s}:effects_proposed"), b.effects_proposed);
        stat(out, &format!("shard:{s}:entries_persisted"), b.entries_persisted);
        stat(out, &format!("shard:{s}:fsyncs"), g.syncs);
        stat(out, &format!("shard:{s}:fsyncs_per_second"), g.syncs_per_second);
        stat(out, &format!("shard:{s}:append_messages"), b.append_messages);
        stat(out, &format!("shard:{s}:append_bytes"), b.bytes_sent);
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        stat(
            out,
            &format!("shard:{s}:writes_per_entry"),
            format_args!("{:.2}", ratio(b.effects_proposed, b.proposals)),
        );
        stat(out, &format!("shard:{s}:entries_per_fsync"), format_args!("{:.2}", ratio(b.entries_persisted, g.syncs)));
        stat(
            out,
            &format!("shard:{s}:bytes_per_append"),
            format_args!("{:.1}", ratio(b.bytes_sent, b.append_messages)),
        );
        stat(out, &format!("shard:{s}:snapshots_taken"), b.snapshots_taken);
        stat(out, &format!("shard:{s}:snapshots_sent"), b.snapshots_sent);
        stat(out, &format!("shard:{s}:snapshots_installed"), b.snapshots_installed);
    }
}

/// Appends the reply to `stats <args>`.
pub fn write(out: &mut Vec<u8>, args: &[u8], reports: &[ShardReport], shared: &Shared) {
    let config = &shared.config;
    let (counters, store, limit) = totals(reports);
    let now = shared.clock.now();
    match subcommand(args) {
        b"" => {
            let (user, system) = rusage();
            stat(out, "pid", std::process::id());
            stat(out, "uptime", now.saturating_sub(shared.clock.now().min(62)));
            stat(out, "time", shared.clock.base().to_unix(now));
            stat(out, "version", env!("CARGO_PKG_VERSION"));
            stat(out, "pointer_size", usize::BITS);
            stat(out, "rusage_user", format_args!("{user:.6}"));
            stat(out, "rusage_system", format_args!("{system:.6}"));
            stat(out, "max_connections", config.conn_limit);
            stat(out, "curr_connections", shared.curr_connections.load(Ordering::Relaxed));
            stat(out, "total_connections", shared.total_connections.load(Ordering::Relaxed));
            stat(out, "rejected_connections", shared.rejected_connections.load(Ordering::Relaxed));
            for (name, value) in counters.fields() {
                if name == "total_connections" {
                    continue;
                }
                stat(out, name, value);
                if name == "get_misses" {
                    stat(out, "get_expired", store.get_expired);
                    // memcached counts gets that found an item a flush_all had
                    // invalidated; ringcache removes flushed items when the flush
                    // applies, so a get never finds one: always 0.
                    stat(out, "get_flushed", 0);
                }
            }
            let ring = reports.iter().fold(super::uring::RingCounters::default(), |a, r| a.sum(&r.ring));
            // The data path's system calls: every one is an io_uring_enter of a shard's ring.
            stat(out, "io_uring_enters", ring.enters);
            stat(out, "io_uring_completions", ring.completions);
            stat(out, "io_uring_sleeps", ring.sleeps);
            stat(out, "recv_paused", ring.recv_paused);
            stat(out, "recv_starved", ring.recv_starved);
            stat(out, "recv_direct", ring.recv_direct);
            stat(out, "limit_maxbytes", limit);
            stat(out, "threads", shared.nshards);
            stat(out, "bytes", store.bytes);
            stat(out, "dead_bytes", store.dead_bytes);
            stat(out, "curr_items", store.curr_items);
            stat(out, "total_items", store.total_items);
            stat(out, "expired_unfetched", store.expired_unfetched);
            stat(out, "evictions", store.evictions);
            stat(out, "reclaimed", store.reclaimed);
            stat(out, "crawler_reclaimed", store.crawler_reclaimed);
            stat(out, "crawler_items_checked", store.crawler_items_checked);
        }
        b"settings" => {
            stat(out, "maxbytes", config.memory_limit_bytes);
            stat(out, "maxconns", config.conn_limit);
            stat(out, "tcpport", config.port);
            stat(out, "udpport", 0);
            stat(out, "inter", &config.listen);
            stat(out, "verbosity", config.verbose);
            stat(out, "evictions", if config.evictions { "on" } else { "off" });
            stat(out, "num_threads", shared.nshards);
            stat(out, "cas_enabled", if config.cas_enabled { "yes" } else { "no" });
            stat(out, "item_size_max", config.max_item_size);
            stat(out, "flush_enabled", if config.flush_enabled { "yes" } else { "no" });
            stat(out, "memory_file", config.memory_file.as_ref().map_or("(null)".into(), |p| p.display().to_string()));
            let limits = &config.connections;
            let secs = |t: Option<std::time::Duration>| t.map_or(0, |t| t.as_secs());
            stat(out, "idle_timeout", secs(limits.idle_timeout));
            stat(out, "read_buf_mem_limit", limits.read_buf_mem_limit >> 20);
            stat(out, "request_timeout", secs(limits.request_timeout));
            stat(out, "write_timeout", secs(limits.write_timeout));
            stat(out, "reply_buffer_limit", limits.reply_buffer_limit);
            stat(out, "shutdown_grace", config.shutdown_grace.as_secs());
        }
        b"items" => {
            // One item class: the store is not slab-structured.
            if store.curr_items > 0 {
                stat(out, "items:1:number", store.curr_items);
                stat(out, "items:1:live_bytes", store.bytes);
                stat(out, "items:1:dead_bytes", store.dead_bytes);
                stat(out, "items:1:evicted", store.evictions);
                stat(out, "items:1:expired_unfetched", store.expired_unfetched);
                stat(out, "items:1:reclaimed", store.reclaimed);
            }
        }
        b"slabs" => {
            // One "slab class": the segments. Live and dead bytes are reported honestly.
            if store.curr_items > 0 {
                stat(out, "1:chunk_size", store.segment_size);
                stat(out, "1:total_pages", store.segments_total - store.segments_free);
                stat(out, "1:used_chunks", store.curr_items);
                stat(out, "1:mem_requested", store.bytes);
                stat(out, "1:dead_bytes", store.dead_bytes);
            }
            stat(out, "active_slabs", u64::from(store.curr_items > 0));
            stat(out, "total_malloced", (store.segments_total - store.segments_free) * store.segment_size);
            stat(out, "segments_free", store.segments_free);
            stat(out, "segments_pinned", store.segments_pinned);
            stat(out, "segments_parked", store.segments_parked);
            stat(out, "index_bytes", store.index_bytes);
        }
        b"conns" => {
            for r in reports {
                for (fd, addr) in &r.connections {
                    stat(out, &format!("{fd}:addr"), format_args!("tcp:{addr}"));
                    stat(out, &format!("{fd}:state"), "conn_parse_cmd");
                }
            }
        }
        b"replication" => replication(out, reports),
        b"sizes" => stat(out, "sizes_status", "disabled"),
        b"detail" => {
            // Per-prefix detail is not collected; accept the switches as memcached does.
            let what = args.split(|&b| b == b' ').filter(|t| !t.is_empty()).nth(1).unwrap_or(&[]);
            out.extend_from_slice(match what {
                b"on" | b"off" => reply::OK,
                b"dump" => reply::END,
                _ => b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
            });
            return;
        }
        b"reset" => {
            out.extend_from_slice(reply::RESET);
            return;
        }
        _ => {
            out.extend_from_slice(reply::ERROR);
            return;
        }
    }
    out.extend_from_slice(reply::END);
}
