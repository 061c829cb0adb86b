//! The meta commands on a shard, in the same three steps as the classic ones: *decide*
//! (what the client is told, the lease and expiry changes, as one [`Effect`]), *apply*
//! (the shard's), and *answer*: the status line with the return flags in request order,
//! read from the store once the effect is in (so a replicated write answers with the CAS
//! the log gave it). memcached 1.6.18's `proto_text.c` is the reference for every rule.
//!
//! Lease state (`X` stale, `W`/`Z` win token) is part of an item's version and travels
//! in effects, so every replica agrees on who won; the fetched bit and last access time
//! (`h`, `l`) are this node's access bookkeeping, like the eviction frequency.

use super::{Decision, Outcome, Shard};
use crate::effect::{Effect, PutValue};
use crate::numbers::decimal;
use crate::protocol::meta::{errors, flag_tokens, KeyBuf, MetaCmd, MetaFlags, MetaOp};
use crate::protocol::{base64, reply};
use crate::store::item::Lease;
use crate::store::{Applied, ArithOutcome, StoreMode, StoreOptions, StoreOutcome};

/// What a meta command tells the client (with [`MetaOutcome`]'s details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaStatus {
    /// `mg`/`me` found the item (or `mg ... N` created it): `HD`, `VA`, `ME`.
    Hit,
    /// `EN`.
    Miss,
    /// `ms`: `HD NS EX NF`, or out of memory.
    Stored(StoreOutcome),
    /// `ms` of a value over the item size limit.
    TooLarge,
    /// `md`: `HD`.
    Deleted,
    /// `md`/`ma`: `NF`.
    NotFound,
    /// `md`/`ma`: `EX` (the CAS did not match).
    Exists,
    /// `ma`: `HD`/`VA` with the new number.
    Counted(u64),
    /// `ma` creating a missing counter (`N`) could not store it: `NS`.
    NotStored,
    NonNumeric,
    /// `ma` could not store its result.
    ArithOutOfMemory,
    /// The op's flags no longer parse (an op is only made from a line that parsed).
    BadLine,
}

/// A meta command's outcome: the status and what was true before the command changed
/// anything (the flags that report it: `h l Z X`, and `t` before a `T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaOutcome {
    pub status: MetaStatus,
    /// `W`: this client is to recompute the value.
    pub won: bool,
    /// `Z`: a win token had already been handed out.
    pub token_sent: bool,
    /// `X`: the item is stale.
    pub stale: bool,
    /// `h`: fetched before this command.
    pub fetched: bool,
    /// Relative time of the last access before this command (`l`, `la=`).
    pub last_access: u32,
    /// The item's relative expiry before this command's `T`/`N` (0: never).
    pub exptime_before: u32,
    /// Created by this command (`N`).
    pub created: bool,
    /// Where the item read lies, when the command changed nothing (0: look it up): its
    /// answer reads it there, with no second index probe.
    pub at: u64,
}

impl MetaOutcome {
    fn of(status: MetaStatus) -> Self {
        MetaOutcome {
            status,
            won: false,
            token_sent: false,
            stale: false,
            fetched: false,
            last_access: 0,
            exptime_before: 0,
            created: false,
            at: 0,
        }
    }

    /// The outcome once the effect was applied (or could not be).
    pub(super) fn after(self, applied: Applied) -> MetaOutcome {
        if applied == Applied::Done {
            return self;
        }
        let status = match self.status {
            MetaStatus::Stored(_) if applied == Applied::OutOfMemory => MetaStatus::Stored(StoreOutcome::OutOfMemory),
            MetaStatus::Stored(_) => MetaStatus::Stored(StoreOutcome::NotStored),
            MetaStatus::Counted(_) if self.created => MetaStatus::NotStored,
            MetaStatus::Counted(_) => MetaStatus::ArithOutOfMemory,
            // A created item that could not be stored is a miss, as in memcached.
            MetaStatus::Hit if self.created => MetaStatus::Miss,
            MetaStatus::Deleted => MetaStatus::NotFound,
            other => other,
        };
        MetaOutcome { status, ..self }
    }
}

impl Shard {
    fn absolute(&self, rel: u32) -> i64 {
        self.store.absolute(rel)
    }

    /// Decides a meta op: its outcome and at most one effect. `key_buf` holds a base64
    /// key decoded. (`Shard::execute` reads the key and flags once for decide and answer:
    /// see `execute_meta`.)
    pub(super) fn decide_meta<'a: 'k, 'k>(
        &mut self,
        op: &MetaOp<'a>,
        key_buf: &'k mut KeyBuf,
        now: u32,
    ) -> Decision<'k> {
        let (Some(key), Ok(f)) = (op.key(key_buf), flags_of(op)) else {
            return Decision { outcome: Outcome::Meta(MetaOutcome::of(MetaStatus::BadLine)), effect: None };
        };
        self.decide_meta_parsed(op, key, &f, now)
    }

    /// [`Shard::decide_meta`] of an op whose key and flags are read.
    pub(super) fn decide_meta_parsed<'k>(
        &mut self,
        op: &MetaOp<'k>,
        key: &'k [u8],
        f: &MetaFlags,
        now: u32,
    ) -> Decision<'k> {
        let f = *f;
        let (outcome, effect) = match op.cmd {
            MetaCmd::Get => self.decide_get(key, &f, op.flags, now),
            MetaCmd::Set => {
                let (stored, effect) = self.decide_set(key, &f, op.data, now);
                (MetaOutcome::of(MetaStatus::Stored(stored)), effect)
            }
            // memcached drops the old value of any `ms` it cannot store.
            MetaCmd::SetTooLarge => (MetaOutcome::of(MetaStatus::TooLarge), Some(Effect::Delete { key })),
            MetaCmd::Delete => self.decide_delete(key, &f, now),
            MetaCmd::Arith => self.decide_arith(key, &f, op.flags, now),
            MetaCmd::Debug => match self.store.inspect(key, false, now) {
                Some(it) => {
                    (MetaOutcome { last_access: it.last_access, at: it.loc, ..MetaOutcome::of(MetaStatus::Hit) }, None)
                }
                None => (MetaOutcome::of(MetaStatus::Miss), None),
            },
        };
        Decision { outcome: Outcome::Meta(outcome), effect }
    }

    /// `mg`: reads (recording the fetch unless `u`), and hands out a win token (`N` on a
    /// miss creates an empty item; `R` when the TTL left is below its; a stale item's
    /// first reader) or sets a TTL (`T`).
    fn decide_get<'k>(
        &mut self,
        key: &'k [u8],
        f: &MetaFlags,
        tokens: &[u8],
        now: u32,
    ) -> (MetaOutcome, Option<Effect<'k>>) {
        let found = self
            .store
            .inspect(key, !f.has(b'u'), now)
            .map(|it| (it.item.cas, it.exptime, it.lease, it.fetched, it.last_access, it.loc));
        let Some((cas, item_exptime, lease, fetched, last_access, loc)) = found else {
            if !f.has(b'N') {
                return (MetaOutcome::of(MetaStatus::Miss), None);
            }
            let expires_at = self.absolute(self.time.expiry(f.vivify_ttl, now));
            let lease = Lease { stale: false, win_sent: true };
            let put = Effect::Put { key, flags: 0, expires_at, value: PutValue::Bytes(&[]), cas: f.new_cas, lease };
            let outcome =
                MetaOutcome { won: true, created: true, last_access: now, ..MetaOutcome::of(MetaStatus::Hit) };
            return (outcome, Some(put));
        };
        // Flags act in request order: an `R` after a `T` compares with the new TTL.
        let mut exptime = item_exptime;
        let mut new_ttl = None;
        let mut won = false;
        for token in flag_tokens(tokens) {
            match token[0] {
                b'T' => {
                    exptime = self.time.expiry(f.ttl, now);
                    new_ttl = Some(exptime);
                }
                b'R' => {
                    let recache_below = self.time.expiry(f.recache_ttl, now);
                    won |= !lease.win_sent && exptime != 0 && exptime < recache_below;
                }
                _ => {}
            }
        }
        won |= lease.stale && !lease.win_sent;
        let outcome = MetaOutcome {
            status: MetaStatus::Hit,
            won,
            token_sent: lease.win_sent,
            stale: lease.stale,
            fetched,
            last_access,
            exptime_before: item_exptime,
            created: false,
            at: 0,
        };
        let expires_at = new_ttl.map(|t| self.absolute(t));
        let effect = match (won, expires_at) {
            (true, _) => Some(Effect::Mark {
                key,
                base_cas: cas,
                lease: Lease { stale: lease.stale, win_sent: true },
                expires_at,
                new_version: false,
                cas: 0,
            }),
            (false, Some(expires_at)) => Some(Effect::Touch { key, expires_at }),
            (false, None) => None,
        };
        let at = if effect.is_none() { loc } else { 0 };
        (MetaOutcome { at, ..outcome }, effect)
    }

    /// `ms`: `M` picks the mode (`E` add, `A` append, `P` prepend, `R` replace, `S` set);
    /// a CAS (`C`) makes set and replace a `cas`, and is checked by append and prepend;
    /// `I` with a CAS below the item's stores the value marked stale.
    fn decide_set<'k>(
        &mut self,
        key: &'k [u8],
        f: &MetaFlags,
        data: &'k [u8],
        now: u32,
    ) -> (StoreOutcome, Option<Effect<'k>>) {
        let mut mode = match f.mode {
            b'E' => StoreMode::Add,
            b'A' => StoreMode::Append,
            b'P' => StoreMode::Prepend,
            b'R' => StoreMode::Replace,
            _ => StoreMode::Set,
        };
        let has_cas = f.has(b'C');
        if has_cas && matches!(mode, StoreMode::Set | StoreMode::Replace) {
            mode = StoreMode::Cas;
        }
        let options = StoreOptions {
            invalidate: f.has(b'I') && mode == StoreMode::Cas,
            new_cas: f.new_cas,
            vivify: (f.has(b'N') && matches!(mode, StoreMode::Append | StoreMode::Prepend))
                .then(|| self.time.expiry(f.vivify_ttl, now)),
        };
        let expiry = self.time.expiry(f.ttl, now);
        let cas = if has_cas { f.cas } else { 0 };
        self.store.decide_store(mode, key, f.client_flags, expiry, data, cas, options, now)
    }

    /// `md`: deletes, or with `I` marks the item stale (a new version, its win token
    /// taken back, `T` its new TTL), or with `x` empties its value and keeps it; `C` must
    /// match; `E` names the new CAS.
    fn decide_delete<'k>(&mut self, key: &'k [u8], f: &MetaFlags, now: u32) -> (MetaOutcome, Option<Effect<'k>>) {
        let Some(cas) = self.store.inspect(key, false, now).map(|it| it.item.cas) else {
            return (MetaOutcome::of(MetaStatus::NotFound), None);
        };
        if f.has(b'C') && f.cas != cas {
            return (MetaOutcome::of(MetaStatus::Exists), None);
        }
        let effect = if f.has(b'x') {
            // memcached 1.6.21+: the value goes, the item stays, an empty tombstone with
            // the flags of `F` and the TTL of `T`, keeping its CAS (or taking `E`'s);
            // with `I` it is also marked stale (a new CAS then, or `E`'s).
            let expires_at = self.absolute(if f.has(b'T') { self.time.expiry(f.ttl, now) } else { 0 });
            let (lease, cas) = match f.has(b'I') {
                true => (Lease { stale: true, win_sent: false }, f.new_cas),
                false => (Lease::NONE, if f.new_cas != 0 { f.new_cas } else { cas }),
            };
            Effect::Put { key, flags: f.client_flags, expires_at, value: PutValue::Bytes(&[]), cas, lease }
        } else if f.has(b'I') {
            let expires_at = f.has(b'T').then(|| self.absolute(self.time.expiry(f.ttl, now)));
            let lease = Lease { stale: true, win_sent: false };
            Effect::Mark { key, base_cas: cas, lease, expires_at, new_version: true, cas: f.new_cas }
        } else {
            Effect::Delete { key }
        };
        (MetaOutcome::of(MetaStatus::Deleted), Some(effect))
    }

    /// `ma`: incr (`MI`, `M+`, the default) or decr (`MD`, `M-`) by `D` (1); on a miss
    /// with `N`, the counter is created at `J` (0); `C` must match; `T` (and `N` for a
    /// created counter) set the TTL, in request order.
    fn decide_arith<'k>(
        &mut self,
        key: &'k [u8],
        f: &MetaFlags,
        tokens: &[u8],
        now: u32,
    ) -> (MetaOutcome, Option<Effect<'k>>) {
        let incr = !matches!(f.mode, b'D' | b'-');
        let existing = self.store.inspect(key, false, now).map(|it| (it.item.cas, it.exptime));
        let created = existing.is_none();
        let exptime_before = existing.map_or(0, |(_, exptime)| exptime);
        let mut exptime = exptime_before;
        for token in flag_tokens(tokens) {
            match token[0] {
                b'T' => exptime = self.time.expiry(f.ttl, now),
                b'N' if created => exptime = self.time.expiry(f.vivify_ttl, now),
                _ => {}
            }
        }
        let outcome = |status| MetaOutcome { exptime_before, created, ..MetaOutcome::of(status) };
        let Some((cas, _)) = existing else {
            if !f.has(b'N') {
                return (outcome(MetaStatus::NotFound), None);
            }
            let value = PutValue::number(f.initial, 0);
            let expires_at = self.absolute(exptime);
            let put = Effect::Put { key, flags: 0, expires_at, value, cas: f.new_cas, lease: Lease::NONE };
            return (outcome(MetaStatus::Counted(f.initial)), Some(put));
        };
        if f.cas != 0 && f.cas != cas {
            return (outcome(MetaStatus::Exists), None);
        }
        match self.store.decide_arith(key, incr, f.delta, now) {
            (ArithOutcome::Value(v), Some(Effect::Put { key, flags, value, .. })) => {
                let expires_at = self.absolute(exptime);
                let put = Effect::Put { key, flags, expires_at, value, cas: f.new_cas, lease: Lease::NONE };
                (outcome(MetaStatus::Counted(v)), Some(put))
            }
            (ArithOutcome::NonNumeric, _) => (outcome(MetaStatus::NonNumeric), None),
            _ => (outcome(MetaStatus::NotFound), None),
        }
    }

    /// Counts a meta op's outcome and appends its reply (what `q` leaves of it).
    pub(super) fn answer_meta(&mut self, op: &MetaOp<'_>, o: MetaOutcome, now: u32, out: &mut Vec<u8>) {
        let mut key_buf = [0u8; crate::protocol::KEY_MAX_LENGTH];
        let (Some(key), Ok(f)) = (op.key(&mut key_buf), flags_of(op)) else {
            out.extend_from_slice(errors::BAD_FORMAT);
            return;
        };
        self.answer_meta_parsed(op, key, &f, o, now, out);
    }

    /// [`Shard::answer_meta`] of an op whose key and flags are read.
    pub(super) fn answer_meta_parsed(
        &mut self,
        op: &MetaOp<'_>,
        key: &[u8],
        f: &MetaFlags,
        o: MetaOutcome,
        now: u32,
        out: &mut Vec<u8>,
    ) {
        let f = *f;
        if self.watch.mask() != 0 {
            self.watch_meta(op, key, &f, o.status, now);
        }
        let quiet = f.has(b'q');
        let binary = op.binary_key();
        let c = &mut self.counters;
        let touch = op.cmd == MetaCmd::Get && f.has(b'T');
        if op.cmd == MetaCmd::Debug {
            // memcached's `cmd_meta` counts `me` only.
            c.cmd_meta += 1;
        }
        match (op.cmd, o.status) {
            (MetaCmd::Get, MetaStatus::Hit) => {
                if touch {
                    c.cmd_touch += 1;
                    c.touch_hits += 1;
                } else {
                    c.cmd_get += 1;
                    c.get_hits += 1;
                }
                let it = if o.at != 0 { self.store.view_at(o.at) } else { self.store.view(key) };
                let Some(it) = it else { return };
                if f.has(b'v') {
                    out.extend_from_slice(b"VA ");
                    reply::number(out, it.item.value.len() as u64);
                } else {
                    out.extend_from_slice(b"HD");
                }
                let mut exptime = o.exptime_before;
                for token in flag_tokens(op.flags) {
                    match token[0] {
                        b'T' => exptime = it.exptime,
                        b'N' if o.created => exptime = it.exptime,
                        b's' => flag_number(out, b's', it.item.value.len() as u64),
                        b't' => ttl_flag(out, exptime, now),
                        b'c' => flag_number(out, b'c', it.item.cas),
                        b'f' => flag_number(out, b'f', u64::from(it.item.flags)),
                        b'l' => flag_number(out, b'l', u64::from(now.wrapping_sub(o.last_access))),
                        b'h' => flag_number(out, b'h', u64::from(o.fetched)),
                        b'O' => opaque(out, token),
                        b'k' => key_flag(out, key, binary),
                        _ => {}
                    }
                }
                if o.token_sent {
                    out.extend_from_slice(b" Z");
                }
                if o.stale {
                    out.extend_from_slice(b" X");
                }
                if o.won {
                    out.extend_from_slice(b" W");
                }
                out.extend_from_slice(b"\r\n");
                if f.has(b'v') {
                    out.extend_from_slice(it.item.value);
                    out.extend_from_slice(reply::VALUE_END);
                }
            }
            (MetaCmd::Get, _) => {
                if touch {
                    c.cmd_touch += 1;
                    c.touch_misses += 1;
                } else {
                    c.cmd_get += 1;
                    c.get_misses += 1;
                }
                if !quiet {
                    status_line(out, b"EN", op.flags, key, binary);
                }
            }
            (MetaCmd::Set, MetaStatus::Stored(stored)) => {
                c.cmd_set += 1;
                let status: &[u8] = match stored {
                    StoreOutcome::Stored => b"HD",
                    StoreOutcome::NotStored => b"NS",
                    StoreOutcome::Exists => b"EX",
                    StoreOutcome::NotFound => b"NF",
                    StoreOutcome::OutOfMemory => {
                        c.store_no_memory += 1;
                        out.extend_from_slice(reply::OUT_OF_MEMORY);
                        return;
                    }
                };
                if quiet && stored == StoreOutcome::Stored {
                    return;
                }
                let cas = match stored {
                    StoreOutcome::Stored => self.store.view(key).map_or(0, |it| it.item.cas),
                    _ => 0,
                };
                out.extend_from_slice(status);
                for token in flag_tokens(op.flags) {
                    match token[0] {
                        b'O' => opaque(out, token),
                        b'k' => key_flag(out, key, binary),
                        b'c' => flag_number(out, b'c', cas),
                        _ => {}
                    }
                }
                out.extend_from_slice(b"\r\n");
            }
            (_, MetaStatus::TooLarge) => {
                c.store_too_large += 1;
                out.extend_from_slice(reply::TOO_LARGE);
            }
            (MetaCmd::Delete, status) => {
                let line: &[u8] = match status {
                    MetaStatus::Deleted => {
                        c.delete_hits += 1;
                        if quiet {
                            return;
                        }
                        b"HD"
                    }
                    MetaStatus::Exists => {
                        c.delete_misses += 1;
                        b"EX"
                    }
                    _ => {
                        c.delete_misses += 1;
                        b"NF"
                    }
                };
                status_line(out, line, op.flags, key, binary);
            }
            (MetaCmd::Arith, status) => {
                let incr = !matches!(f.mode, b'D' | b'-');
                let (hits, misses) =
                    if incr { (&mut c.incr_hits, &mut c.incr_misses) } else { (&mut c.decr_hits, &mut c.decr_misses) };
                match status {
                    MetaStatus::Counted(n) => {
                        if !o.created {
                            *hits += 1;
                        }
                        if quiet {
                            return;
                        }
                        self.counted(out, key, binary, op.flags, &f, o, n, now);
                    }
                    MetaStatus::NotFound => {
                        *misses += 1;
                        status_line(out, b"NF", op.flags, key, binary);
                    }
                    MetaStatus::Exists => status_line(out, b"EX", op.flags, key, binary),
                    MetaStatus::NotStored => status_line(out, b"NS", op.flags, key, binary),
                    MetaStatus::NonNumeric => out.extend_from_slice(reply::NON_NUMERIC),
                    _ => out.extend_from_slice(reply::ARITH_OUT_OF_MEMORY),
                }
            }
            (MetaCmd::Debug, MetaStatus::Hit) => match self.store.view_at(o.at) {
                Some(it) => {
                    out.extend_from_slice(b"ME ");
                    write_key(out, key, binary);
                    out.extend_from_slice(b" exp=");
                    if it.exptime == 0 {
                        out.extend_from_slice(b"-1");
                    } else {
                        signed(out, i64::from(now) - i64::from(it.exptime));
                    }
                    out.extend_from_slice(b" la=");
                    reply::number(out, u64::from(now.wrapping_sub(o.last_access)));
                    out.extend_from_slice(b" cas=");
                    reply::number(out, it.item.cas);
                    out.extend_from_slice(if it.fetched { b" fetch=yes cls=" } else { b" fetch=no cls=" });
                    reply::number(out, u64::from(it.class));
                    out.extend_from_slice(b" size=");
                    reply::number(out, it.size as u64);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(b"EN\r\n"),
            },
            (MetaCmd::Debug, _) => out.extend_from_slice(b"EN\r\n"),
            (_, _) => out.extend_from_slice(errors::BAD_FORMAT),
        }
    }

    /// `ma`'s answer when it counted: `HD` or `VA <len>`, its flags, the number.
    #[allow(clippy::too_many_arguments)]
    fn counted(
        &self,
        out: &mut Vec<u8>,
        key: &[u8],
        binary: bool,
        tokens: &[u8],
        f: &MetaFlags,
        o: MetaOutcome,
        n: u64,
        now: u32,
    ) {
        let mut digits = [0u8; 20];
        let digits = decimal(n, &mut digits);
        if f.has(b'v') {
            out.extend_from_slice(b"VA ");
            reply::number(out, digits.len() as u64);
        } else {
            out.extend_from_slice(b"HD");
        }
        let it = self.store.view(key);
        let mut exptime = o.exptime_before;
        for token in flag_tokens(tokens) {
            match token[0] {
                b'c' => flag_number(out, b'c', it.map_or(0, |it| it.item.cas)),
                b't' => ttl_flag(out, exptime, now),
                b'T' => exptime = it.map_or(exptime, |it| it.exptime),
                b'N' if o.created => exptime = it.map_or(exptime, |it| it.exptime),
                b'O' => opaque(out, token),
                b'k' => key_flag(out, key, binary),
                _ => {}
            }
        }
        out.extend_from_slice(b"\r\n");
        if f.has(b'v') {
            out.extend_from_slice(digits);
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl Shard {
    /// Executes a meta op (decide, apply, answer), reading its key and flags once.
    /// Records a meta op's event while its kind is watched: `ms` as an `item_store`
    /// (its mode as the command), `mg`, `md` and `ma` as the `item_get` of their lookup.
    fn watch_meta(&mut self, op: &MetaOp<'_>, key: &[u8], f: &MetaFlags, status: MetaStatus, now: u32) {
        use super::watch::StoreStatus;
        match (op.cmd, status) {
            (MetaCmd::Get, MetaStatus::Hit) => {
                let size = self.store.peek_value_len(key, now).unwrap_or(0);
                self.watch_fetch(key, true, size);
            }
            (MetaCmd::Get, _) => self.watch_fetch(key, false, 0),
            (MetaCmd::Set | MetaCmd::SetTooLarge, status) => {
                let status = match status {
                    MetaStatus::Stored(stored) => StoreStatus::of(stored),
                    _ => StoreStatus::TooLarge,
                };
                let mode = match f.mode {
                    b'E' | b'e' => StoreMode::Add,
                    b'A' | b'a' => StoreMode::Append,
                    b'P' | b'p' => StoreMode::Prepend,
                    b'R' | b'r' => StoreMode::Replace,
                    _ if f.has(b'C') => StoreMode::Cas,
                    _ => StoreMode::Set,
                };
                self.watch_store(key, status, mode, f.ttl, op.data.len(), now);
            }
            (MetaCmd::Delete | MetaCmd::Arith, status) => {
                self.watch_fetch(key, !matches!(status, MetaStatus::NotFound | MetaStatus::NotStored), 0);
            }
            _ => {}
        }
    }

    pub(super) fn execute_meta(&mut self, op: &MetaOp<'_>, now: u32, out: &mut Vec<u8>) {
        let mut key_buf = [0u8; crate::protocol::KEY_MAX_LENGTH];
        let (Some(key), Ok(f)) = (op.key(&mut key_buf), flags_of(op)) else {
            out.extend_from_slice(errors::BAD_FORMAT);
            return;
        };
        let decision = self.decide_meta_parsed(op, key, &f, now);
        let applied = decision.effect.map(|e| self.apply(&e, now));
        let Outcome::Meta(mut o) = decision.outcome.after(applied) else { return };
        if o.status == MetaStatus::Stored(StoreOutcome::OutOfMemory) {
            // memcached drops the old value of any `ms` it could not store.
            self.store.apply(&Effect::Delete { key }, now);
        }
        if applied.is_some() {
            o.at = 0;
        }
        self.answer_meta_parsed(op, key, &f, o, now, out);
    }
}

/// The flags of `op` (`me` takes none: what follows its key is ignored).
fn flags_of(op: &MetaOp<'_>) -> Result<MetaFlags, &'static [u8]> {
    match op.cmd {
        MetaCmd::Debug => Ok(MetaFlags::default()),
        _ => MetaFlags::parse(op.flags, op.key),
    }
}

/// ` <letter><n>`.
fn flag_number(out: &mut Vec<u8>, letter: u8, n: u64) {
    out.push(b' ');
    out.push(letter);
    reply::number(out, n);
}

/// ` t<seconds left>` (`-1`: never expires), as memcached computes it (unsigned).
fn ttl_flag(out: &mut Vec<u8>, exptime: u32, now: u32) {
    if exptime == 0 {
        out.extend_from_slice(b" t-1");
    } else {
        flag_number(out, b't', u64::from(exptime.wrapping_sub(now)));
    }
}

fn signed(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    reply::number(out, n.unsigned_abs());
}

/// The opaque token, echoed whole.
fn opaque(out: &mut Vec<u8>, token: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(token);
}

fn write_key(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    if binary {
        base64::encode(key, out);
    } else {
        out.extend_from_slice(key);
    }
}

/// ` k<key>`, base64 and followed by ` b` when the key was sent that way.
fn key_flag(out: &mut Vec<u8>, key: &[u8], binary: bool) {
    out.extend_from_slice(b" k");
    write_key(out, key, binary);
    if binary {
        out.extend_from_slice(b" b");
    }
}

/// `<status>` with the `O` and `k` flags in request order, and the line end.
fn status_line(out: &mut Vec<u8>, status: &[u8], tokens: &[u8], key: &[u8], binary: bool) {
    out.extend_from_slice(status);
    for token in flag_tokens(tokens) {
        match token[0] {
            b'O' => opaque(out, token),
            b'k' => key_flag(out, key, binary),
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}
