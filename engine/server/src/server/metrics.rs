//! The admin listener (`--admin ADDR`, off by default, `--admin-token` to require a
//! bearer token): Prometheus text exposition at `GET /metrics`, through the
//! `prometheus-client` crate. It runs on shard 0's executor; a scrape asks every shard
//! for its report over the mesh, as `stats` does, so the data path keeps its plain
//! per-shard counters: no lock, no shared atomic per request.
//!
//! The HTTP side is as small as a scrape needs: one request per connection (its head
//! bounded to 8 KiB, read within 5 s), answered and closed.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::conn_figures::{self, ServiceTimeSnapshot};
use super::connection::{every_report, ShardContext};
use super::shard_report::ShardReport;
use ringcache_replication::group::StateRole;

/// The longest request head taken.
const MAX_HEAD: usize = 8 << 10;
/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Registers a counter family and returns it to fill.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// A gauge without labels.
fn plain_gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

fn set(family: &Family<Labels, Gauge>, pairs: &[(&str, &str)], value: u64) {
    family.get_or_create(&labels(pairs)).set(i64::try_from(value).unwrap_or(i64::MAX));
}

fn add(family: &Family<Labels, Counter>, pairs: &[(&str, &str)], value: u64) {
    family.get_or_create(&labels(pairs)).inc_by(value);
}

/// The service-time histogram of every shard (`shard` label), encoded from the bucket
/// counts the shards kept (prometheus-client's own histogram observes values itself).
#[derive(Debug, Default)]
struct ServiceTimes(Vec<(Labels, ServiceTimeSnapshot)>);

impl EncodeMetric for ServiceTimes {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, snapshot) in &self.0 {
            let buckets: Vec<(f64, u64)> =
                snapshot.counts.iter().enumerate().map(|(i, &n)| (conn_figures::upper_bound(i), n)).collect();
            let sum = snapshot.sum_nanos as f64 * 1e-9;
            encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, snapshot.count(), &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The Prometheus text of every shard's reports.
pub fn render(reports: &[ShardReport], ctx: &ShardContext) -> String {
    let mut registry = <Registry>::with_prefix("ringcache");
    let requests = counter(&mut registry, "requests", "Requests by command and outcome");
    let bytes = counter(&mut registry, "network_bytes", "Bytes read from and written to clients");
    let evictions = counter(&mut registry, "evictions", "Items evicted to make room");
    let expired = counter(&mut registry, "expired_reclaimed", "Expired items reclaimed");
    let dead_reclaims = counter(
        &mut registry,
        "dead_reclaims",
        "Segments drained (or compacted) to reclaim dead bytes, keeping every live item",
    );
    let store_failures = counter(&mut registry, "store_failures", "Writes refused (too large, out of memory)");
    let connections_total = counter(&mut registry, "connections", "Connections accepted, refused over -c, closed; of the closed, those timed out (idle, slow request, unread replies) and those over a bound");
    let items = gauge(&mut registry, "items", "Items held, per shard");
    let memory = gauge(&mut registry, "item_memory_bytes", "Item memory by state, per shard");
    let limit = gauge(&mut registry, "item_memory_limit_bytes", "Item memory limit, per shard");
    let hit_ratio = plain_gauge(&mut registry, "get_hit_ratio_permille", "Gets that hit, per thousand, since start");
    let shard_requests = counter(&mut registry, "shard_requests", "Gets and sets executed, per shard");
    let curr = plain_gauge(&mut registry, "connections_open", "Connections open now");
    let ring = counter(&mut registry, "io_uring_enters", "io_uring_enter calls, per shard");
    let role = gauge(&mut registry, "replication_leader", "1 where this node leads the shard's group");
    let raft = gauge(&mut registry, "replication_index", "Term, commit and applied index, per shard");
    let lag = gauge(&mut registry, "replication_lag_entries", "Committed entries not yet applied, per shard");
    let batching = counter(
        &mut registry,
        "replication_batching",
        "Proposals and the effects they carried, entries persisted, append messages and the entries they carried, per shard",
    );
    let trips = counter(&mut registry, "cross_shard_trips", "Batches of ops sent to another shard, per sending shard");
    let mut service = ServiceTimes::default();

    let (mut gets, mut hits) = (0u64, 0u64);
    let (mut closed, mut over_bound, mut timed_out) = (0u64, 0u64, 0u64);
    for (i, r) in reports.iter().enumerate() {
        let shard = i.to_string();
        let s = shard.as_str();
        let c = &r.counters;
        for (command, outcome, n) in [
            ("get", "hit", c.get_hits),
            ("get", "miss", c.get_misses),
            ("set", "done", c.cmd_set),
            ("delete", "hit", c.delete_hits),
            ("delete", "miss", c.delete_misses),
            ("incr", "hit", c.incr_hits),
            ("incr", "miss", c.incr_misses),
            ("decr", "hit", c.decr_hits),
            ("decr", "miss", c.decr_misses),
            ("cas", "stored", c.cas_hits),
            ("cas", "exists", c.cas_badval),
            ("cas", "miss", c.cas_misses),
            ("touch", "hit", c.touch_hits),
            ("touch", "miss", c.touch_misses),
            ("flush", "done", c.cmd_flush),
            ("meta_debug", "done", c.cmd_meta),
        ] {
            add(&requests, &[("command", command), ("outcome", outcome)], n);
        }
        add(&bytes, &[("direction", "read")], c.bytes_read);
        add(&bytes, &[("direction", "written")], c.bytes_written);
        add(&store_failures, &[("reason", "too_large")], c.store_too_large);
        add(&store_failures, &[("reason", "out_of_memory")], c.store_no_memory);
        add(&evictions, &[("shard", s)], r.store.evictions);
        add(&expired, &[("shard", s)], r.store.reclaimed);
        add(&dead_reclaims, &[("shard", s)], r.store.dead_reclaims + r.store.dead_compactions);
        add(&shard_requests, &[("shard", s)], c.cmd_get + c.cmd_set);
        add(&ring, &[("shard", s)], r.ring.enters);
        set(&items, &[("shard", s)], r.store.curr_items);
        set(&memory, &[("shard", s), ("state", "live")], r.store.bytes);
        set(&memory, &[("shard", s), ("state", "dead")], r.store.dead_bytes);
        set(&memory, &[("shard", s), ("state", "free")], r.store.segments_free * r.store.segment_size);
        set(&memory, &[("shard", s), ("state", "index")], r.store.index_bytes);
        set(&limit, &[("shard", s)], r.memory_limit as u64);
        add(&trips, &[("shard", s)], r.conns.cross_shard_trips);
        service.0.push((labels(&[("shard", s)]), r.conns.service_time));
        closed += r.conns.closed;
        over_bound += r.conns.over_bound;
        timed_out += r.ring.timed_out;
        gets += c.get_hits + c.get_misses;
        hits += c.get_hits;
        if let Some(rep) = &r.replication {
            let group = rep.shard.to_string();
            set(&role, &[("shard", &group)], u64::from(rep.status.role == StateRole::Leader));
            set(&raft, &[("shard", &group), ("index", "term")], rep.status.term);
            set(&raft, &[("shard", &group), ("index", "commit")], rep.status.commit);
            set(&raft, &[("shard", &group), ("index", "applied")], rep.status.applied);
            set(&lag, &[("shard", &group)], rep.status.commit.saturating_sub(rep.status.applied));
            let st = &rep.stats;
            for (what, n) in [
                ("proposals", st.proposals),
                ("effects_proposed", st.effects_proposed),
                ("entries_persisted", st.entries_persisted),
                ("fsyncs", rep.syncs),
                ("append_messages", st.append_messages),
                ("entries_sent", st.entries_sent),
            ] {
                add(&batching, &[("shard", &group), ("what", what)], n);
            }
        }
    }
    hit_ratio.set(i64::try_from((hits * 1000).checked_div(gets).unwrap_or(0)).unwrap_or(i64::MAX));
    let shared = &ctx.shared;
    use std::sync::atomic::Ordering;
    curr.set(i64::try_from(shared.curr_connections.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    add(&connections_total, &[("outcome", "accepted")], shared.total_connections.load(Ordering::Relaxed));
    add(&connections_total, &[("outcome", "refused")], shared.rejected_connections.load(Ordering::Relaxed));
    add(&connections_total, &[("outcome", "closed")], closed);
    add(&connections_total, &[("outcome", "timed_out")], timed_out);
    add(&connections_total, &[("outcome", "over_bound")], over_bound);
    registry.register(
        "request_duration_seconds",
        "Service time per request, from its round's bytes arriving to its replies taken by the kernel, per shard",
        service,
    );
    let mut text = String::new();
    // Encoding into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// Serves the admin listener until the shard stops (the task is dropped with it).
pub async fn serve(listener: glommio::net::TcpListener, ctx: Rc<ShardContext>, token: Option<Rc<str>>) {
    loop {
        let Ok(stream) = listener.accept().await else { continue };
        let (ctx, token) = (ctx.clone(), token.clone());
        glommio::spawn_local(async move {
            let _ = answer(stream, &ctx, token.as_deref()).await;
        })
        .detach();
    }
}

async fn answer(mut stream: glommio::net::TcpStream, ctx: &ShardContext, token: Option<&str>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let authorised = token.is_none_or(|t| {
        lines.any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("authorization") && value.trim() == format!("Bearer {t}")
            })
        })
    });
    let (status, body) = match request.split(' ').collect::<Vec<_>>().as_slice() {
        _ if !authorised => ("401 Unauthorized", "a bearer token is required\n".to_string()),
        ["GET", "/metrics", _] => match every_report(ctx).await {
            Some(reports) => ("200 OK", render(&reports, ctx)),
            None => ("503 Service Unavailable", "the server is stopping\n".to_string()),
        },
        ["GET", ..] => ("404 Not Found", "only /metrics is served here\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let content_type = if status.starts_with("200") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.close().await
}
