//! `ringcache-ctl`'s looking commands (they change nothing): `stats` of one node or many
//! as a table, `watch` (the same table again every interval, with rates), `dump` (the
//! nodes' items, `lru_crawler metadump all`, up to a limit) and `metrics` (a node's
//! admin listener's `/metrics`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::conn::{connect, each_line};

/// The columns of `stats` and `watch`: (heading, `stats` field).
const COLUMNS: [(&str, &str); 9] = [
    ("conns", "curr_connections"),
    ("items", "curr_items"),
    ("bytes", "bytes"),
    ("limit", "limit_maxbytes"),
    ("gets", "cmd_get"),
    ("sets", "cmd_set"),
    ("hits", "get_hits"),
    ("evictions", "evictions"),
    ("expired", "reclaimed"),
];
/// Columns `watch` shows as a rate per second rather than a total.
const RATES: [&str; 5] = ["cmd_get", "cmd_set", "get_hits", "evictions", "reclaimed"];

/// `stats` of `node`: name -> value.
pub fn stats(node: &str) -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    each_line(node, "stats", |line| {
        let (name, value) =
            line.strip_prefix("STAT ").and_then(|l| l.split_once(' ')).ok_or(format!("{node}: {line}"))?;
        fields.insert(name.to_string(), value.to_string());
        Ok(true)
    })?;
    Ok(fields)
}

fn number(fields: &BTreeMap<String, String>, name: &str) -> u64 {
    fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn heading(out: &mut String, rates: bool) {
    out.push_str(&format!("{:<22}", "node"));
    for (head, field) in COLUMNS {
        let head = if rates && RATES.contains(&field) { format!("{head}/s") } else { head.to_string() };
        out.push_str(&format!(" {head:>12}"));
    }
    out.push_str(&format!(" {:>7}\n", "hit%"));
}

/// One node's row: totals, or (`watch`, with the sample before and the seconds since)
/// the counting columns as rates and the hit percentage over the interval. `watch`'s
/// first sample has no interval yet: its rates are `-`.
fn row(
    out: &mut String,
    node: &str,
    now: &BTreeMap<String, String>,
    before: Option<(&BTreeMap<String, String>, f64)>,
    rates: bool,
) {
    out.push_str(&format!("{node:<22}"));
    let delta = |field: &str| before.map(|(then, _)| number(now, field).saturating_sub(number(then, field)));
    for (_, field) in COLUMNS {
        let value = match before {
            Some((_, secs)) if RATES.contains(&field) => format!("{:.0}", delta(field).unwrap_or(0) as f64 / secs),
            None if rates && RATES.contains(&field) => "-".to_string(),
            _ => number(now, field).to_string(),
        };
        out.push_str(&format!(" {value:>12}"));
    }
    let (gets, hits) = match before {
        Some(_) => (delta("cmd_get").unwrap_or(0), delta("get_hits").unwrap_or(0)),
        None => (number(now, "cmd_get"), number(now, "get_hits")),
    };
    let hit = if gets == 0 || (rates && before.is_none()) {
        "-".to_string()
    } else {
        format!("{:.1}", hits as f64 * 100.0 / gets as f64)
    };
    out.push_str(&format!(" {hit:>7}\n"));
}

/// `stats`: one row per node, and a total when there are several.
pub fn table(nodes: &[String]) -> Result<String, String> {
    let mut out = String::new();
    heading(&mut out, false);
    let mut total: BTreeMap<String, String> = BTreeMap::new();
    for node in nodes {
        match stats(node) {
            Ok(fields) => {
                row(&mut out, node, &fields, None, false);
                for (_, field) in COLUMNS {
                    let sum = number(&total, field) + number(&fields, field);
                    total.insert(field.to_string(), sum.to_string());
                }
            }
            Err(e) => out.push_str(&format!("{node:<22} unreachable: {e}\n")),
        }
    }
    if nodes.len() > 1 {
        row(&mut out, "total", &total, None, false);
    }
    Ok(out)
}

/// `watch`: the table every `interval`, `count` times (0: until interrupted), with the
/// counting columns as rates over the interval.
pub fn watch(nodes: &[String], interval: Duration, count: u64) -> Result<(), String> {
    let mut before: Vec<Option<(BTreeMap<String, String>, Instant)>> = vec![None; nodes.len()];
    let mut shown = 0;
    loop {
        let mut out = String::new();
        heading(&mut out, true);
        for (i, node) in nodes.iter().enumerate() {
            match stats(node) {
                Ok(fields) => {
                    let now = Instant::now();
                    let then = before[i].as_ref().map(|(f, t)| (f, now.duration_since(*t).as_secs_f64().max(1e-3)));
                    row(&mut out, node, &fields, then, true);
                    before[i] = Some((fields, now));
                }
                Err(e) => out.push_str(&format!("{node:<22} unreachable: {e}\n")),
            }
        }
        print!("{out}");
        shown += 1;
        if count != 0 && shown >= count {
            return Ok(());
        }
        std::thread::sleep(interval);
        println!();
    }
}

/// `dump`: each node's items (`lru_crawler metadump all`), at most `limit` lines a node
/// (with a limit of 0, none: it only checks that the node answers a dump).
pub fn dump(nodes: &[String], limit: usize) -> Result<(), String> {
    for node in nodes {
        let mut shown = 0;
        each_line(node, "lru_crawler metadump all", |line| {
            if !line.starts_with("key=") {
                return Err(format!("{node}: {line}"));
            }
            if shown >= limit {
                return Ok(false); // closing mid-dump is a vanishing client to the node: it stops the walk
            }
            println!("{node} {line}");
            shown += 1;
            Ok(true)
        })?;
    }
    Ok(())
}

/// `metrics`: the text of `http://ADDR/metrics` (with a bearer `token`).
pub fn metrics(addr: &str, token: Option<&str>) -> Result<String, String> {
    let mut s = connect(addr)?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| format!("{addr}: {e}"))?;
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("{addr}: {status}"));
    }
    Ok(body.to_string())
}
