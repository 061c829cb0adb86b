//! The `stats` family of replies (`stats`, `stats settings|items|slabs|conns|sizes|reset`),
//! built from every shard's [`ShardReport`] and named as memcached names them. Not on the
//! request hot path.

use std::sync::atomic::Ordering;

use super::shard_report::ShardReport;
use super::Shared;
use ringcache_core::protocol::reply::{self, stat};
use ringcache_core::shard::detail::PrefixCounts;
use ringcache_core::shard::stats::Counters;
use ringcache_core::store::ClassReport;
use ringcache_core::store::StoreStats;
use ringcache_replication::group::StateRole;
use std::io::Write as _;

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
        store.dead_reclaims += r.store.dead_reclaims;
        store.dead_reclaim_moves += r.store.dead_reclaim_moves;
        store.dead_compactions += r.store.dead_compactions;
        store.evicting_drains += r.store.evicting_drains;
        for (sum, n) in store.segments_by_live.iter_mut().zip(r.store.segments_by_live) {
            *sum += n;
        }
        store.index_bytes += r.store.index_bytes;
        store.index_capacity += r.store.index_capacity;
        store.index_expanding += r.store.index_expanding;
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
/// The rest of `stats` after the connection counts: every field memcached 1.6.18 prints,
/// in its order (those of machinery ringcache does not have are 0, or what memcached
/// shows for them idle), with ringcache's own among them where they belong: the data
/// path's io_uring counters after `bytes_written`, `dead_bytes` (and its share, and the
/// dead-byte reclaims) after `bytes`.
fn general(
    out: &mut Vec<u8>,
    shared: &Shared,
    reports: &[ShardReport],
    c: &ringcache_core::shard::stats::Counters,
    store: &ringcache_core::store::StoreStats,
    limit: usize,
) {
    let curr = shared.curr_connections.load(Ordering::Relaxed);
    stat(out, "connection_structures", curr);
    for name in ["response_obj_oom", "response_obj_count", "response_obj_bytes"] {
        stat(out, name, 0);
    }
    for name in ["read_buf_count", "read_buf_bytes", "read_buf_bytes_free", "read_buf_oom", "reserved_fds"] {
        stat(out, name, 0);
    }
    stat(out, "cmd_get", c.cmd_get);
    stat(out, "cmd_set", c.cmd_set);
    stat(out, "cmd_flush", c.cmd_flush);
    stat(out, "cmd_touch", c.cmd_touch);
    stat(out, "cmd_meta", c.cmd_meta);
    stat(out, "get_hits", c.get_hits);
    stat(out, "get_misses", c.get_misses);
    stat(out, "get_expired", store.get_expired);
    // memcached counts gets that found an item a flush_all had invalidated; ringcache
    // removes flushed items when the flush applies, so a get never finds one.
    stat(out, "get_flushed", 0);
    stat(out, "delete_misses", c.delete_misses);
    stat(out, "delete_hits", c.delete_hits);
    stat(out, "incr_misses", c.incr_misses);
    stat(out, "incr_hits", c.incr_hits);
    stat(out, "decr_misses", c.decr_misses);
    stat(out, "decr_hits", c.decr_hits);
    stat(out, "cas_misses", c.cas_misses);
    stat(out, "cas_hits", c.cas_hits);
    stat(out, "cas_badval", c.cas_badval);
    stat(out, "touch_hits", c.touch_hits);
    stat(out, "touch_misses", c.touch_misses);
    stat(out, "store_too_large", c.store_too_large);
    stat(out, "store_no_memory", c.store_no_memory);
    stat(out, "auth_cmds", reports.iter().map(|r| r.conns.auth_cmds).sum::<u64>());
    stat(out, "auth_errors", reports.iter().map(|r| r.conns.auth_errors).sum::<u64>());
    stat(out, "bytes_read", c.bytes_read);
    stat(out, "bytes_written", c.bytes_written);
    let ring = reports.iter().fold(super::uring::RingCounters::default(), |a, r| a.sum(&r.ring));
    // The data path's system calls: every one is an io_uring_enter of a shard's ring.
    stat(out, "io_uring_enters", ring.enters);
    stat(out, "io_uring_completions", ring.completions);
    stat(out, "io_uring_sleeps", ring.sleeps);
    stat(out, "recv_paused", ring.recv_paused);
    stat(out, "recv_starved", ring.recv_starved);
    stat(out, "recv_direct", ring.recv_direct);
    stat(out, "io_uring_fixed_file_conns", ring.fixed_file_conns);
    stat(out, "io_uring_idle_spin_us", ring.idle_spin_ns / 1000);
    stat(out, "io_uring_look_backoffs", ring.look_backoffs);
    stat(out, "limit_maxbytes", limit);
    stat(out, "accepting_conns", 1);
    stat(out, "listen_disabled_num", 0);
    stat(out, "time_in_listen_disabled_us", 0);
    stat(out, "threads", shared.nshards);
    stat(out, "conn_yields", c.conn_yields);
    // The index: log2 of its entries' room, its bytes, whether it is growing.
    stat(out, "hash_power_level", u64::BITS - store.index_capacity.max(1).leading_zeros() - 1);
    stat(out, "hash_bytes", store.index_bytes);
    stat(out, "hash_is_expanding", store.index_expanding.min(1));
    for name in [
        "slab_reassign_rescues",
        "slab_reassign_chunk_rescues",
        "slab_reassign_evictions_nomem",
        "slab_reassign_inline_reclaim",
        "slab_reassign_busy_items",
        "slab_reassign_busy_deletes",
        "slab_reassign_running",
        "slabs_moved",
    ] {
        stat(out, name, 0);
    }
    stat(out, "lru_crawler_running", 0);
    stat(out, "lru_crawler_starts", 0);
    stat(out, "lru_maintainer_juggles", 0);
    stat(out, "malloc_fails", 0);
    let w = &shared.watchers;
    stat(out, "log_worker_dropped", reports.iter().map(|r| r.watch_dropped).sum::<u64>());
    stat(out, "log_worker_written", w.written.load(Ordering::Relaxed));
    stat(out, "log_watcher_skipped", w.skipped.load(Ordering::Relaxed));
    stat(out, "log_watcher_sent", w.sent.load(Ordering::Relaxed));
    stat(out, "log_watchers", w.count());
    if let Some(tls) = &shared.tls {
        // memcached prints these only with TLS on (and ssl_new_sessions only with its
        // session cache, which ringcache does not offer).
        stat(out, "ssl_handshake_errors", tls.handshake_errors.load(Ordering::Relaxed));
        stat(out, "time_since_server_cert_refresh", tls.seconds_since_refresh());
    }
    stat(out, "unexpected_napi_ids", 0);
    stat(out, "round_robin_fallback", 0);
    stat(out, "bytes", store.bytes);
    stat(out, "dead_bytes", store.dead_bytes);
    // Dead bytes per thousand bytes of item memory written; segments drained keeping
    // every live item, the items they moved, and segments compacted in place for it
    // when drains fell behind; segments drained keeping hot items (ringcache's own).
    stat(
        out,
        "dead_bytes_permille",
        (store.dead_bytes * 1000).checked_div(store.bytes + store.dead_bytes).unwrap_or(0),
    );
    stat(out, "dead_reclaims", store.dead_reclaims);
    stat(out, "dead_reclaim_moves", store.dead_reclaim_moves);
    stat(out, "dead_compactions", store.dead_compactions);
    stat(out, "evicting_drains", store.evicting_drains);
    stat(out, "curr_items", store.curr_items);
    stat(out, "total_items", store.total_items);
    stat(out, "slab_global_page_pool", 0);
    stat(out, "expired_unfetched", store.expired_unfetched);
    stat(out, "evicted_unfetched", 0);
    stat(out, "evicted_active", 0);
    stat(out, "evictions", store.evictions);
    stat(out, "reclaimed", store.reclaimed);
    stat(out, "crawler_reclaimed", store.crawler_reclaimed);
    stat(out, "crawler_items_checked", store.crawler_items_checked);
    for name in ["lrutail_reflocked", "moves_to_cold", "moves_to_warm", "moves_within_lru", "direct_reclaims"] {
        stat(out, name, 0);
    }
    stat(out, "lru_bumps_dropped", 0);
}

/// Every shard's TTL classes, summed by class (memcached's slab class ids: TTL class + 1).
fn classes(reports: &[ShardReport]) -> Vec<(usize, ClassReport)> {
    let mut by_class: std::collections::BTreeMap<usize, ClassReport> = std::collections::BTreeMap::new();
    for r in reports.iter().flat_map(|r| &r.classes) {
        let c = by_class.entry(r.class + 1).or_insert(ClassReport { class: r.class, ..ClassReport::default() });
        c.items += r.items;
        c.live_bytes += r.live_bytes;
        c.used_bytes += r.used_bytes;
        c.segments += r.segments;
        c.age = c.age.max(r.age);
        c.counters.add(&r.counters);
    }
    by_class.into_iter().collect()
}

/// `stats items`: memcached's fields for each class that holds items. ringcache's classes
/// are TTL classes (id 1: items that never expire; id N+1: items written with 2^(N-1) to
/// 2^N seconds to live) and it has no hot/warm/cold LRUs: those figures are 0.
fn items(out: &mut Vec<u8>, reports: &[ShardReport]) {
    for (id, c) in classes(reports).into_iter().filter(|(_, c)| c.items > 0) {
        let k = &c.counters;
        let mut field = |name: &str, value: u64| stat(out, &format!("items:{id}:{name}"), value);
        field("number", c.items);
        field("number_hot", 0);
        field("number_warm", 0);
        field("number_cold", c.items);
        field("age_hot", 0);
        field("age_warm", 0);
        field("age", c.age);
        field("mem_requested", c.live_bytes);
        field("evicted", k.evicted);
        field("evicted_nonzero", k.evicted_nonzero);
        field("evicted_time", k.evicted_time);
        field("outofmemory", k.outofmemory);
        field("tailrepairs", 0);
        field("reclaimed", k.reclaimed);
        field("expired_unfetched", k.expired_unfetched);
        field("evicted_unfetched", k.evicted_unfetched);
        field("evicted_active", 0);
        field("crawler_reclaimed", k.crawler_reclaimed);
        field("crawler_items_checked", 0);
        field("lrutail_reflocked", 0);
        field("moves_to_cold", 0);
        field("moves_to_warm", 0);
        field("moves_within_lru", 0);
        field("direct_reclaims", 0);
        field("hits_to_hot", 0);
        field("hits_to_warm", 0);
        field("hits_to_cold", k.get_hits);
        field("hits_to_temp", 0);
        // ringcache's own: bytes of overwritten or deleted copies not yet reclaimed.
        field("dead_bytes", c.used_bytes - c.live_bytes);
    }
}

/// `stats slabs`: memcached's fields for each class with segments. A page is a segment;
/// a class's chunk size is the average size of its items (header, key and value), so
/// `used_chunks` is its items and `total_chunks` what its segments would hold of them.
/// Per-class counts of commands other than gets and sets are not kept (0).
fn slabs(out: &mut Vec<u8>, reports: &[ShardReport], store: &StoreStats) {
    let mut active = 0;
    for (id, c) in classes(reports).into_iter().filter(|(_, c)| c.segments > 0) {
        active += 1;
        let chunk = c.live_bytes.checked_div(c.items).map_or(store.segment_size, |b| b.max(1));
        let per_page = (store.segment_size / chunk).max(1);
        let total = c.segments * per_page;
        let mut field = |name: &str, value: u64| stat(out, &format!("{id}:{name}"), value);
        field("chunk_size", chunk);
        field("chunks_per_page", per_page);
        field("total_pages", c.segments);
        field("total_chunks", total);
        field("used_chunks", c.items);
        field("free_chunks", total.saturating_sub(c.items));
        field("free_chunks_end", 0);
        field("get_hits", c.counters.get_hits);
        field("cmd_set", c.counters.cmd_set);
        for name in ["delete_hits", "incr_hits", "decr_hits", "cas_hits", "cas_badval", "touch_hits"] {
            field(name, 0);
        }
        // ringcache's own.
        field("mem_requested", c.live_bytes);
        field("dead_bytes", c.used_bytes - c.live_bytes);
    }
    stat(out, "active_slabs", active);
    stat(out, "total_malloced", (store.segments_total - store.segments_free) * store.segment_size);
    stat(out, "segments_free", store.segments_free);
    stat(out, "segments_pinned", store.segments_pinned);
    stat(out, "segments_parked", store.segments_parked);
    // Segments in use by the share of their written bytes still live, a tenth at a time.
    for (i, n) in store.segments_by_live.iter().enumerate() {
        stat(out, &format!("segments_live_{}_{}pct", i * 10, (i + 1) * 10), n);
    }
    stat(out, "index_bytes", store.index_bytes);
}

/// `stats settings`: every field memcached 1.6.18 prints, in its order, then ringcache's
/// own. Settings that mean something here carry ringcache's values (the memory limit as
/// `cache_memlimit` left it, the admin commands' state); those of machinery ringcache
/// does not have (slab classes, LRU threads, extstore, SASL) carry memcached's defaults,
/// so scripts that read them keep working.
fn settings(out: &mut Vec<u8>, shared: &Shared, limit: usize) {
    let config = &shared.config;
    let admin = &shared.admin;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let limits = &config.connections;
    let secs = |t: Option<std::time::Duration>| t.map_or(0, |t| t.as_secs());
    stat(out, "maxbytes", limit);
    stat(out, "maxconns", config.conn_limit);
    stat(out, "tcpport", config.port);
    stat(out, "udpport", 0);
    stat(out, "inter", &config.listen);
    stat(out, "verbosity", admin.verbosity());
    stat(out, "oldest", 0);
    stat(out, "evictions", if config.evictions { "on" } else { "off" });
    stat(out, "domain_socket", config.unix_socket.as_ref().map_or("NULL".into(), |p| p.display().to_string()));
    stat(out, "umask", format_args!("{:o}", config.unix_mask));
    stat(out, "shutdown_command", yes_no(config.shutdown_command));
    stat(out, "growth_factor", "1.25");
    stat(out, "chunk_size", 48);
    stat(out, "num_threads", shared.nshards);
    stat(out, "num_threads_per_udp", shared.nshards);
    stat(out, "stat_key_prefix", ":");
    stat(out, "detail_enabled", yes_no(admin.detail()));
    // memcached's default is 20; ringcache's is no limit (shown as 0) unless -R is given.
    stat(out, "reqs_per_event", config.reqs_per_event.unwrap_or(0));
    stat(out, "cas_enabled", yes_no(config.cas_enabled));
    stat(out, "tcp_backlog", config.backlog);
    stat(out, "binding_protocol", config.binding_protocol);
    stat(out, "auth_enabled_sasl", "no");
    match &shared.auth {
        Some(auth) => stat(out, "auth_enabled_ascii", auth.path().display()),
        None => stat(out, "auth_enabled_ascii", "no"),
    }
    stat(out, "item_size_max", config.max_item_size);
    stat(out, "maxconns_fast", "yes");
    stat(out, "hashpower_init", 0);
    stat(out, "slab_reassign", "yes");
    stat(out, "slab_automove", admin.slab_automove());
    stat(out, "slab_automove_ratio", "0.80");
    stat(out, "slab_automove_window", 30);
    stat(out, "slab_chunk_max", 524_288);
    stat(out, "lru_crawler", yes_no(admin.crawler_running()));
    stat(out, "lru_crawler_sleep", 100);
    stat(out, "lru_crawler_tocrawl", 0);
    stat(out, "tail_repair_time", 0);
    stat(out, "flush_enabled", yes_no(config.flush_enabled));
    stat(out, "dump_enabled", "yes");
    stat(out, "hash_algorithm", "ahash");
    stat(out, "lru_maintainer_thread", "no");
    stat(out, "lru_segmented", "no");
    stat(out, "hot_lru_pct", 20);
    stat(out, "warm_lru_pct", 40);
    stat(out, "hot_max_factor", "0.20");
    stat(out, "warm_max_factor", "2.00");
    stat(out, "temp_lru", "no");
    stat(out, "temporary_ttl", 61);
    stat(out, "idle_timeout", secs(limits.idle_timeout));
    stat(out, "watcher_logbuf_size", 262_144);
    stat(out, "worker_logbuf_size", 65_536);
    stat(out, "read_buf_mem_limit", limits.read_buf_mem_limit >> 20);
    stat(out, "track_sizes", "no");
    stat(out, "inline_ascii_response", "no");
    for (name, value) in [
        ("ext_item_size", "512"),
        ("ext_item_age", "4294967295"),
        ("ext_low_ttl", "0"),
        ("ext_recache_rate", "2000"),
        ("ext_wbuf_size", "4194304"),
        ("ext_compact_under", "0"),
        ("ext_drop_under", "0"),
        ("ext_max_sleep", "1000000"),
        ("ext_max_frag", "0.80"),
        ("slab_automove_freeratio", "0.010"),
        ("ext_drop_unread", "no"),
    ] {
        stat(out, name, value);
    }
    // memcached prints its paths with %s: "(null)" when not set.
    let tls = shared.tls.as_ref().map(|t| t.files());
    let path = |p: Option<&std::path::Path>| p.map_or("(null)".into(), |p| p.display().to_string());
    stat(out, "ssl_enabled", yes_no(tls.is_some()));
    stat(out, "ssl_chain_cert", path(tls.map(|f| f.cert.as_path())));
    stat(out, "ssl_key", path(tls.map(|f| f.key.as_path())));
    for (name, value) in [
        ("ssl_verify_mode", "0"),
        ("ssl_keyformat", "1"),
        ("ssl_ciphers", "NULL"),
        ("ssl_ca_cert", "NULL"),
        ("ssl_wbuf_size", "16384"),
        ("ssl_session_cache", "no"),
        ("ssl_kernel_tls", "no"),
        ("ssl_min_version", "tlsv1.2"),
        ("num_napi_ids", "(null)"),
    ] {
        stat(out, name, value);
    }
    stat(out, "memory_file", config.memory_file.as_ref().map_or("(null)".into(), |p| p.display().to_string()));
    // ringcache's own.
    stat(out, "request_timeout", secs(limits.request_timeout));
    stat(out, "write_timeout", secs(limits.write_timeout));
    stat(out, "reply_buffer_limit", limits.reply_buffer_limit);
    stat(out, "shutdown_grace", config.shutdown_grace.as_secs());
}

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
            general(out, shared, reports, &counters, &store, limit);
        }
        b"settings" => settings(out, shared, limit),
        b"items" => items(out, reports),
        b"detail" => {
            // `stats detail dump`: one line per prefix, every shard's counts summed.
            let mut all: std::collections::BTreeMap<&[u8], PrefixCounts> = std::collections::BTreeMap::new();
            for (prefix, c) in reports.iter().flat_map(|r| &r.prefixes) {
                let sum = all.entry(prefix.as_slice()).or_default();
                sum.gets += c.gets;
                sum.hits += c.hits;
                sum.sets += c.sets;
                sum.deletes += c.deletes;
            }
            for (prefix, c) in all {
                out.extend_from_slice(b"PREFIX ");
                out.extend_from_slice(prefix);
                let _ = write!(out, " get {} hit {} set {} del {}\r\n", c.gets, c.hits, c.sets, c.deletes);
            }
        }
        b"slabs" => slabs(out, reports, &store),
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
