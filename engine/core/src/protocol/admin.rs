//! memcached's administration commands, sans-IO: `slabs automove|reassign`, `lru_crawler
//! enable|disable|crawl|tocrawl|sleep`, `lru tune|mode|temp_ttl`, `cache_memlimit`,
//! `refresh_certs` and `shutdown`, their lines checked as memcached 1.6.18's `proto_text.c` checks them into an
//! [`Admin`] (what the server does) or the error line memcached answers. ringcache has no
//! slab classes and no LRU threads: what only tunes those is accepted and answered as
//! memcached answers it (README says which).

use super::{done, Parse, ProtocolError, Request, Tokens};
use crate::numbers::{parse_i32_truncating, parse_u32_truncating};

/// The largest slab class id of memcached 1.6 with its default settings (48-byte chunks
/// grown by 1.25 up to half a 1 MiB page): `slabs reassign` answers `BADCLASS` beyond it.
pub const MEMCACHED_LARGEST_SLAB_CLASS: i32 = 39;
/// memcached's `MAX_NUMBER_OF_SLAB_CLASSES`: `lru_crawler crawl` takes ids below it.
const MAX_SLAB_CLASSES: u32 = 64;

/// An administration command to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// `slabs automove 0|1|2` (the level) or `slabs automove ratio R` (None): `OK`.
    SlabsAutomove {
        level: Option<u8>,
    },
    /// `slabs reassign <src> <dst>` with both in range and different: there is never a
    /// spare page to move (`NOSPARE`).
    SlabsReassign,
    CrawlerEnable,
    CrawlerDisable,
    /// `lru_crawler crawl <classes>`: expired items are reclaimed now.
    CrawlerCrawl,
    /// `lru_crawler metadump <classes>`: every live item's metadata; `classes` has a bit
    /// for each TTL class asked for (memcached's class id N is TTL class N - 1), None for
    /// a bad id (answered `BADCLASS` once memcached's other checks pass).
    CrawlerMetadump {
        classes: Option<u64>,
    },
    /// `lru_crawler tocrawl N`, `lru_crawler sleep N`, `lru tune|mode|temp_ttl ...`: `OK`.
    Accepted,
    /// `cache_memlimit <megabytes>`.
    CacheMemlimit {
        megabytes: u32,
    },
    /// `shutdown [graceful]` (only with `-A`; memcached checks that before the mode).
    Shutdown(ShutdownMode),
    /// `stats detail on|off`: count by key prefix, or stop.
    Detail(bool),
    /// `watch [fetchers|mutations|evictions|connevents|...]`: the connection becomes a
    /// log watcher of these kinds (`shard::watch`'s bits; none for memcached's kinds
    /// that never log here).
    Watch {
        kinds: u8,
    },
    /// `refresh_certs`: read the TLS certificate and key again (`OK`, or memcached's
    /// error line, which `noreply` does not silence).
    RefreshCerts,
}

/// How `shutdown` was asked to stop the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// `shutdown`: as on SIGINT.
    Now,
    /// `shutdown graceful`: as on SIGUSR1.
    Graceful,
    /// Anything else: `CLIENT_ERROR invalid shutdown mode` (once `-A` allows shutdown).
    Invalid,
}

pub const INVALID_SHUTDOWN_MODE: &[u8] = b"CLIENT_ERROR invalid shutdown mode\r\n";

pub const OK: &[u8] = b"OK\r\n";
const ERROR: &[u8] = b"ERROR\r\n";
const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
pub const BADCLASS: &[u8] = b"BADCLASS invalid class id\r\n";
pub const NOSPARE: &[u8] = b"NOSPARE source class has no spare pages\r\n";
pub const CRAWLER_START_FAILED: &[u8] = b"ERROR failed to start lru crawler thread\r\n";
pub const CRAWLER_DISABLED: &[u8] = b"CLIENT_ERROR lru crawler disabled\r\n";
pub const METADUMP_PIPELINED: &[u8] = b"ERROR cannot pipeline other commands before metadump\r\n";
pub const SHUTDOWN_DISABLED: &[u8] = b"ERROR: shutdown not enabled\r\n";
pub const WATCHER_TOO_MANY: &[u8] = b"WATCHER_TOO_MANY log watcher limit reached\r\n";
/// `refresh_certs` on a server without TLS (memcached built with TLS, started without `-Z`).
pub const TLS_NOT_ENABLED: &[u8] = b"Error TLS not enabled\r\n";
pub const MEMLIMIT_FAILED: &[u8] = b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n";

/// memcached's `safe_strtod`: a finite or infinite double, the whole token (or up to a
/// space).
fn parse_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.trim_start().parse().ok()
}

fn answer<'a>(line: &'static [u8], noreply: bool, consumed: usize) -> Parse<'a> {
    done(Request::Answer(line), noreply, consumed)
}

fn admin<'a>(a: Admin, noreply: bool, consumed: usize) -> Parse<'a> {
    done(Request::Admin(a), noreply, consumed)
}

/// The classes of `lru_crawler crawl|metadump <classes>` (`all`, `hash`, or ids 1 to 63
/// separated by commas) as a bit per TTL class; None for a bad id (`BADCLASS`).
fn crawl_classes(classes: &[u8]) -> Option<u64> {
    if classes == b"all" || classes == b"hash" {
        return Some(u64::MAX);
    }
    let mut bits = 0u64;
    for c in classes.split(|&b| b == b',').filter(|c| !c.is_empty()) {
        let id = parse_u32_truncating(c).filter(|id| (1..MAX_SLAB_CLASSES).contains(id))?;
        bits |= 1 << (id - 1);
    }
    Some(bits)
}

/// Parses an administration command (`command` is its first token); None when it is
/// not one.
pub(super) fn parse<'a>(command: &[u8], tokens: &Tokens<'a>, line_end: usize) -> Option<Parse<'a>> {
    let n = tokens.count;
    let sub = tokens.get(1);
    Some(match command {
        b"slabs" => {
            if n == 5 && sub == b"reassign" {
                let (Some(src), Some(dst)) = (parse_i32_truncating(tokens.get(2)), parse_i32_truncating(tokens.get(3)))
                else {
                    return Some(answer(BAD_FORMAT, false, line_end));
                };
                if src == dst {
                    return Some(answer(b"SAME src and dst class are identical\r\n", false, line_end));
                }
                let range = 0..=MEMCACHED_LARGEST_SLAB_CLASS;
                if !range.contains(&src) || !range.contains(&dst) {
                    return Some(answer(b"BADCLASS invalid src or dst class id\r\n", false, line_end));
                }
                admin(Admin::SlabsReassign, false, line_end)
            } else if n >= 4 && sub == b"automove" {
                let noreply = tokens.noreply();
                if tokens.get(2) == b"ratio" {
                    if n < 5 || parse_f64(tokens.get(3)).is_none() {
                        return Some(answer(ERROR, noreply, line_end));
                    }
                    return Some(admin(Admin::SlabsAutomove { level: None }, noreply, line_end));
                }
                match parse_u32_truncating(tokens.get(2)) {
                    None => answer(BAD_FORMAT, noreply, line_end),
                    Some(level @ 0..=2) => admin(Admin::SlabsAutomove { level: Some(level as u8) }, noreply, line_end),
                    Some(_) => answer(ERROR, noreply, line_end),
                }
            } else {
                answer(ERROR, false, line_end)
            }
        }
        b"watch" => {
            // memcached 1.6.18: a bare `watch` is `fetchers`; one unknown argument (or
            // `noreply`, which is not one, and then hushes the error) refuses it all.
            use crate::shard::watch;
            let noreply = tokens.noreply();
            let mut kinds = if n > 2 { 0 } else { watch::FETCHERS };
            for i in 1..n.saturating_sub(1) {
                kinds |= match tokens.get(i) {
                    b"fetchers" => watch::FETCHERS,
                    b"mutations" => watch::MUTATIONS,
                    b"evictions" => watch::EVICTIONS,
                    b"connevents" => watch::CONNEVENTS,
                    // Kinds memcached 1.6.18 takes that never log here (nor there, but
                    // for sysevents: ringcache has no LRU maintainer to report on).
                    b"sysevents" | b"rawcmds" | b"proxyreqs" | b"proxyevents" | b"proxyuser" => 0,
                    _ => return Some(answer(ERROR, noreply, line_end)),
                };
            }
            admin(Admin::Watch { kinds }, false, line_end)
        }
        b"lru_crawler" => match (n, sub) {
            (4, b"crawl") => match crawl_classes(tokens.get(2)) {
                Some(_) => admin(Admin::CrawlerCrawl, false, line_end),
                None => answer(BADCLASS, false, line_end),
            },
            (4, b"metadump") => {
                admin(Admin::CrawlerMetadump { classes: crawl_classes(tokens.get(2)) }, false, line_end)
            }
            (4, b"tocrawl") => match parse_u32_truncating(tokens.get(2)) {
                Some(_) => admin(Admin::Accepted, false, line_end),
                None => answer(BAD_FORMAT, false, line_end),
            },
            (4, b"sleep") => match parse_u32_truncating(tokens.get(2)) {
                Some(t) if t > 1_000_000 => {
                    answer(b"CLIENT_ERROR sleep must be one second or less\r\n", false, line_end)
                }
                Some(_) => admin(Admin::Accepted, false, line_end),
                None => answer(BAD_FORMAT, false, line_end),
            },
            (3, b"enable") => admin(Admin::CrawlerEnable, false, line_end),
            (3, b"disable") => admin(Admin::CrawlerDisable, false, line_end),
            _ => answer(ERROR, false, line_end),
        },
        b"lru" => {
            if n < 3 {
                return Some(done(Request::Error(ProtocolError::UnknownCommand), false, line_end));
            }
            let noreply = tokens.noreply();
            let reply = match sub {
                b"tune" if n >= 7 => {
                    let pcts = (parse_u32_truncating(tokens.get(2)), parse_u32_truncating(tokens.get(3)));
                    let factors = (parse_f64(tokens.get(4)), parse_f64(tokens.get(5)));
                    match (pcts, factors) {
                        ((Some(hot), Some(warm)), (Some(hot_factor), Some(factor))) => {
                            if u64::from(hot) + u64::from(warm) > 80 {
                                Err(&b"ERROR hot and warm pcts must not exceed 80\r\n"[..])
                            } else if factor <= 0.0 || hot_factor <= 0.0 {
                                Err(&b"ERROR hot/warm age factors must be greater than 0\r\n"[..])
                            } else {
                                Ok(())
                            }
                        }
                        _ => Err(ERROR),
                    }
                }
                b"mode" if n >= 4 => match tokens.get(2) {
                    b"flat" | b"segmented" => Ok(()),
                    _ => Err(ERROR),
                },
                b"temp_ttl" if n >= 4 => parse_i32_truncating(tokens.get(2)).map(|_| ()).ok_or(ERROR),
                _ => Err(ERROR),
            };
            match reply {
                Ok(()) => admin(Admin::Accepted, noreply, line_end),
                Err(line) => answer(line, noreply, line_end),
            }
        }
        b"cache_memlimit" => {
            if n != 3 && n != 4 {
                return Some(done(Request::Error(ProtocolError::UnknownCommand), false, line_end));
            }
            let noreply = tokens.noreply();
            match parse_u32_truncating(sub) {
                None => answer(ERROR, noreply, line_end),
                Some(m) if m < 8 => {
                    answer(b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n", noreply, line_end)
                }
                Some(m) if m > 1_000_000_000 => {
                    answer(b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n", noreply, line_end)
                }
                Some(megabytes) => admin(Admin::CacheMemlimit { megabytes }, noreply, line_end),
            }
        }
        // memcached takes any arguments; only a last `noreply` matters (it silences `OK`).
        b"refresh_certs" => admin(Admin::RefreshCerts, tokens.noreply(), line_end),
        b"shutdown" => {
            let mode = match (n, sub) {
                (2, _) => ShutdownMode::Now,
                (3, b"graceful") => ShutdownMode::Graceful,
                _ => ShutdownMode::Invalid,
            };
            admin(Admin::Shutdown(mode), false, line_end)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_largest_default_slab_class() {
        // slabs_init: 48-byte item header + 48-byte chunk, times 1.25, 8-byte aligned, up
        // to half a 1 MiB page.
        let (mut size, mut class) = (96.0f64, 0);
        while class + 1 < 63 {
            if size >= f64::from(512 * 1024) / 1.25 {
                break;
            }
            class += 1;
            size = ((size as u32).div_ceil(8) * 8) as f64 * 1.25;
        }
        assert_eq!(class + 1, MEMCACHED_LARGEST_SLAB_CLASS);
    }
}
