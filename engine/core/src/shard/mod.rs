//! A shard: one executor's store, time base and counters. [`Shard::execute`] runs one
//! [`Op`] at the relative time `now` it is given and appends memcached's reply bytes; a
//! mutating op runs in three steps, [`Shard::decide`] (conditions against the store: the
//! outcome and the [`Effect`]), [`Shard::apply`] (the change, unconditional) and the
//! answer (counters and reply). Standalone, the three run at once; a replication log
//! will carry the effects between decide and apply. Both a connection on this shard and
//! the mesh server (for ops sent from other shards) call `execute`.

pub mod detail;
pub mod meta;
pub mod ops;
pub mod stats;
pub mod watch;

pub use meta::{MetaOutcome, MetaStatus};
pub use ops::{Op, OpBatch};

use crate::effect::Effect;
use crate::protocol::{self, reply, KeyBuf, MetaCmd};
use crate::store::{Applied, ArithOutcome, PinnedValue, Store, StoreMode, StoreOutcome};
use crate::time::TimeBase;
use stats::Counters;

/// Segments whose expired items one background sweep reclaims (more wait for the next).
const CRAWL_PER_SWEEP: usize = 8;

/// Which shard owns `key`: stable across restarts (fixed hash seeds).
pub fn owner_of(key: &[u8], nshards: usize) -> usize {
    if nshards <= 1 {
        return 0;
    }
    (crate::store::key_hasher().hash_one(key) % nshards as u64) as usize
}

/// One shard's store, its time base and counters.
pub struct Shard {
    store: Store,
    /// What relative time 0 is (to turn absolute exptimes into relative ones).
    time: TimeBase,
    counters: Counters,
    /// `-F`: refuse `flush_all`.
    flush_enabled: bool,
    /// Counts by key prefix (`stats detail`): kept once started, counting while
    /// `detail_on`.
    detail: Option<Box<detail::PrefixStats>>,
    detail_on: bool,
    /// The events `watch` connections asked for.
    watch: watch::WatchLog,
}

/// What a mutating op decided: what the client will be told (unless applying the effect
/// fails), and the change to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub outcome: Outcome,
    pub effect: Option<Effect<'a>>,
}

/// What a mutating op tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// set/add/replace/append/prepend/cas.
    Store(StoreOutcome),
    /// A value over `-I` (a `set` also drops the key).
    TooLarge,
    /// delete: whether a live item was removed.
    Deleted(bool),
    /// incr/decr.
    Arith(ArithOutcome),
    /// touch: whether a live item got the new expiry.
    Touched(bool),
    /// flush_all done (or scheduled).
    Flushed,
    /// flush_all refused (`-F`).
    FlushDisabled,
    /// A get: nothing to decide ([`Shard::execute`] reads directly).
    Read,
    /// A meta command.
    Meta(MetaOutcome),
}

impl Outcome {
    /// The outcome once the effect was applied: an effect that could not be applied
    /// (no memory, a base version gone) changes what the client is told.
    pub fn after(self, applied: Option<Applied>) -> Outcome {
        match (self, applied) {
            (_, None | Some(Applied::Done)) => self,
            (Outcome::Store(_), Some(Applied::OutOfMemory)) => Outcome::Store(StoreOutcome::OutOfMemory),
            (Outcome::Store(_), Some(_)) => Outcome::Store(StoreOutcome::NotStored),
            (Outcome::Arith(_), Some(_)) => Outcome::Arith(ArithOutcome::OutOfMemory),
            (Outcome::Deleted(_), Some(_)) => Outcome::Deleted(false),
            (Outcome::Touched(_), Some(_)) => Outcome::Touched(false),
            (Outcome::Meta(m), Some(applied)) => Outcome::Meta(m.after(applied)),
            (other, Some(_)) => other,
        }
    }
}

impl Shard {
    /// A shard around `store`; `flush_enabled` false is memcached's `-F`.
    pub fn new(store: Store, flush_enabled: bool) -> Self {
        Shard {
            time: store.time_base(),
            store,
            counters: Counters::default(),
            flush_enabled,
            detail: None,
            detail_on: false,
            watch: watch::WatchLog::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Zeroes the counters and the store's statistics (`stats reset`).
    pub fn reset_stats(&mut self) {
        self.counters = Counters::default();
        self.store.reset_stats();
        if let Some(d) = &mut self.detail {
            **d = detail::PrefixStats::default();
        }
    }

    /// `stats detail on|off`: start or stop counting by key prefix (what was counted
    /// stays, as in memcached).
    pub fn set_detail(&mut self, on: bool) {
        if on && self.detail.is_none() {
            self.detail = Some(Box::default());
        }
        self.detail_on = on;
    }

    /// What `watch` connections see of this shard (the kinds watched, the connection
    /// whose ops run, the events so far). Evictions are recorded by the store while
    /// watched.
    pub fn watch_mut(&mut self) -> &mut watch::WatchLog {
        &mut self.watch
    }

    /// Watch `mask`'s kinds from now on (evictions are the store's).
    pub fn set_watch(&mut self, mask: u8) {
        if self.watch.mask() != mask {
            self.watch.set_mask(mask);
            self.store.watch_evictions(mask & watch::EVICTIONS != 0);
        }
    }

    /// Moves the events so far (evictions included) to `into`.
    pub fn take_watch_events(&mut self, into: &mut Vec<watch::Event>) {
        self.watch.take(into);
        for e in self.store.take_evicted() {
            let kind = watch::EventKind::Evict { fetched: e.fetched, ttl: e.ttl, idle: e.idle, size: e.size };
            into.push(watch::Event::new(&e.key, kind, -1));
        }
    }

    /// Records a fetch while fetchers are watched.
    fn watch_fetch(&mut self, key: &[u8], found: bool, size: usize) {
        if self.watch.wants(watch::FETCHERS) {
            let found = if found { watch::Found::Found } else { watch::Found::NotFound };
            self.watch.record(key, watch::EventKind::Fetch { found, size: size as u32 });
        }
    }

    /// Records a store while mutations are watched.
    fn watch_store(
        &mut self,
        key: &[u8],
        status: watch::StoreStatus,
        mode: StoreMode,
        exptime: i32,
        size: usize,
        now: u32,
    ) {
        if self.watch.wants(watch::MUTATIONS) {
            let ttl = self.time.expiry(exptime, now).saturating_sub(now);
            self.watch.record(key, watch::EventKind::Store { status, mode, ttl, size: size as u32 });
        }
    }

    /// The counts by key prefix, once `stats detail` was on.
    pub fn detail(&self) -> Option<&detail::PrefixStats> {
        self.detail.as_deref()
    }

    /// Where to count a request by its key's prefix, while `stats detail` is on.
    fn detail_counting(&mut self) -> Option<&mut detail::PrefixStats> {
        if self.detail_on {
            self.detail.as_deref_mut()
        } else {
            None
        }
    }

    pub fn count_bytes_read(&mut self, n: u64) {
        self.counters.bytes_read += n;
    }

    /// A connection yielded after `-R` requests in a row (`conn_yields`).
    pub fn count_conn_yield(&mut self) {
        self.counters.conn_yields += 1;
    }

    pub fn count_bytes_written(&mut self, n: u64) {
        self.counters.bytes_written += n;
    }

    /// Reclaims expired and flushed memory, a slice at a time (the background sweep):
    /// whole expired segments, then expired items of up to `CRAWL_PER_SWEEP` segments.
    pub fn sweep(&mut self, now: u32) -> usize {
        self.store.sweep(now, 64) + self.store.crawl(now, CRAWL_PER_SWEEP)
    }

    /// `lru_crawler crawl`: reclaims every expired item now.
    pub fn crawl_all(&mut self, now: u32) -> usize {
        self.store.crawl(now, usize::MAX)
    }

    /// `cache_memlimit`: this shard's share of item memory, in bytes (see
    /// [`Store::set_memory_limit`]).
    pub fn set_memory_limit(&mut self, bytes: usize) -> bool {
        self.store.set_memory_limit(bytes)
    }

    /// Executes `op` (decide, apply, answer) and appends its reply to `out` (nothing
    /// when `noreply`).
    pub fn execute(&mut self, op: &Op<'_>, noreply: bool, now: u32, out: &mut Vec<u8>) {
        let mark = out.len();
        match *op {
            Op::Get { key, cas, touch } => {
                self.get_in_place(key, cas, touch, now, out, usize::MAX);
            }
            Op::Meta(ref meta) => self.execute_meta(meta, now, out),
            _ => {
                if let Some(d) = self.detail_counting() {
                    match *op {
                        Op::Store { key, .. } | Op::TooLarge { key, .. } => d.record_set(key),
                        Op::Delete { key } => d.record_delete(key),
                        _ => {}
                    }
                }
                let mut key_buf = [0u8; protocol::KEY_MAX_LENGTH];
                let decision = self.decide(op, &mut key_buf, now);
                let applied = decision.effect.map(|e| self.apply(&e, now));
                let outcome = decision.outcome.after(applied);
                match (*op, outcome) {
                    (Op::Store { mode: StoreMode::Set, key, .. }, Outcome::Store(StoreOutcome::OutOfMemory)) => {
                        // memcached drops the old value of a set it could not store.
                        self.store.apply(&Effect::Delete { key }, now);
                    }
                    (
                        Op::Meta(meta),
                        Outcome::Meta(MetaOutcome { status: MetaStatus::Stored(StoreOutcome::OutOfMemory), .. }),
                    ) => {
                        // ... and of any `ms`.
                        if let Some(key) = meta.key(&mut key_buf) {
                            self.store.apply(&Effect::Delete { key }, now);
                        }
                    }
                    _ => {}
                }
                self.answer(op, outcome, now, out);
            }
        }
        if noreply {
            out.truncate(mark);
        }
    }

    /// Decides a mutating op (not a get) against the store: the outcome and the effect.
    /// Changes nothing but local bookkeeping (expired items found on the way, access
    /// bits). A meta op's base64 key is decoded into `key_buf`.
    pub fn decide<'a: 'k, 'k>(&mut self, op: &Op<'a>, key_buf: &'k mut KeyBuf, now: u32) -> Decision<'k> {
        let (outcome, effect) = match *op {
            Op::Meta(ref meta) => return self.decide_meta(meta, key_buf, now),
            Op::Get { .. } => (Outcome::Read, None),
            Op::Store { mode, key, flags, exptime, data, cas } => {
                let expiry = self.time.expiry(exptime, now);
                let (outcome, effect) =
                    self.store.decide_store(mode, key, flags, expiry, data, cas, Default::default(), now);
                (Outcome::Store(outcome), effect)
            }
            Op::TooLarge { mode, key } => {
                // A `set` that cannot be stored drops the old value, as memcached does.
                (Outcome::TooLarge, (mode == StoreMode::Set).then_some(Effect::Delete { key }))
            }
            Op::Delete { key } => {
                let effect = self.store.decide_delete(key, now);
                (Outcome::Deleted(effect.is_some()), effect)
            }
            Op::Arith { key, incr, delta } => {
                let (outcome, effect) = self.store.decide_arith(key, incr, delta, now);
                (Outcome::Arith(outcome), effect)
            }
            Op::Touch { key, exptime } => {
                let effect = self.store.decide_touch(key, self.time.expiry(exptime, now), now);
                (Outcome::Touched(effect.is_some()), effect)
            }
            Op::FlushAll { delay, .. } => {
                if !self.flush_enabled {
                    (Outcome::FlushDisabled, None)
                } else {
                    // memcached: oldest_live = realtime(delay) - 1 for a positive delay.
                    let oldest_live = (delay > 0).then(|| self.time.realtime(i64::from(delay), now).saturating_sub(1));
                    (Outcome::Flushed, Some(self.store.decide_flush(oldest_live, now)))
                }
            }
        };
        Decision { outcome, effect }
    }

    /// Applies an effect to the store (this shard's decision, or another node's).
    pub fn apply(&mut self, effect: &Effect<'_>, now: u32) -> Applied {
        self.store.apply(effect, now)
    }

    /// get/gets/gat/gats of one key, sending a large value from where it lies: as
    /// [`Shard::execute`] of [`Op::Get`], except that a value of at least `min_len`
    /// bytes is not copied. Then only its `VALUE` line is appended to `out`, and the value
    /// comes back pinned in place: the caller sends its bytes, then
    /// [`reply::VALUE_END`], and unpins it ([`Shard::unpin`]). A value is copied anyway
    /// when the store allows no more pins.
    pub fn get_in_place(
        &mut self,
        key: &[u8],
        cas: bool,
        touch: Option<i32>,
        now: u32,
        out: &mut Vec<u8>,
        min_len: usize,
    ) -> Option<PinnedValue> {
        let c = &mut self.counters;
        c.cmd_get += 1;
        let item = match touch {
            Some(exptime) => {
                c.cmd_touch += 1;
                let found = self.store.touch(key, self.time.expiry(exptime, now), now);
                if found.is_some() {
                    self.counters.touch_hits += 1;
                } else {
                    self.counters.touch_misses += 1;
                }
                found
            }
            None => self.store.get(key, now),
        };
        if self.detail_on {
            if let Some(d) = self.detail.as_deref_mut() {
                d.record_get(key, item.is_some());
            }
        }
        if self.watch.wants(watch::FETCHERS) {
            let size = item.as_ref().map_or(0, |i| i.value.len());
            let found = if item.is_some() { watch::Found::Found } else { watch::Found::NotFound };
            self.watch.record(key, watch::EventKind::Fetch { found, size: size as u32 });
        }
        let Some(item) = item else {
            self.counters.get_misses += 1;
            return None;
        };
        self.counters.get_hits += 1;
        let cas = cas.then_some(item.cas);
        if item.value.len() < min_len {
            reply::value(out, key, item.flags, item.value, cas);
            return None;
        }
        let (flags, value) = (item.flags, PinnedValue::of(&item));
        if self.store.pin(&value) {
            reply::value_line(out, key, flags, value.len, cas);
            return Some(value);
        }
        reply::value(out, key, flags, self.store.bytes_of(&value), cas);
        None
    }

    /// Lets go of a value [`Shard::get_in_place`] pinned.
    pub fn unpin(&mut self, value: &PinnedValue) {
        self.store.unpin(value);
    }

    /// Counts `op`'s outcome and appends memcached's reply for it (nothing when
    /// `noreply`): the third step of a mutating op, once its effect was applied (here,
    /// or by a replication log).
    pub fn reply(&mut self, op: &Op<'_>, outcome: Outcome, noreply: bool, now: u32, out: &mut Vec<u8>) {
        let mark = out.len();
        self.answer(op, outcome, now, out);
        if noreply {
            out.truncate(mark);
        }
    }

    /// Counts `op`'s outcome and appends memcached's reply for it.
    fn answer(&mut self, op: &Op<'_>, outcome: Outcome, now: u32, out: &mut Vec<u8>) {
        if let (Op::Meta(meta), Outcome::Meta(o)) = (op, outcome) {
            self.answer_meta(meta, o, now, out);
            return;
        }
        if self.watch.mask() != 0 {
            self.watch_op(op, outcome, now);
        }
        let c = &mut self.counters;
        let bytes = match (*op, outcome) {
            (Op::Store { mode, .. }, Outcome::Store(stored)) => {
                c.cmd_set += 1;
                if mode == StoreMode::Cas {
                    match stored {
                        StoreOutcome::Stored => c.cas_hits += 1,
                        StoreOutcome::Exists => c.cas_badval += 1,
                        StoreOutcome::NotFound => c.cas_misses += 1,
                        _ => {}
                    }
                }
                match stored {
                    StoreOutcome::Stored => reply::STORED,
                    StoreOutcome::NotStored => reply::NOT_STORED,
                    StoreOutcome::Exists => reply::EXISTS,
                    StoreOutcome::NotFound => reply::NOT_FOUND,
                    StoreOutcome::OutOfMemory => {
                        c.store_no_memory += 1;
                        reply::OUT_OF_MEMORY
                    }
                }
            }
            (_, Outcome::TooLarge) => {
                // memcached counts a set only once its value is read into an item.
                c.store_too_large += 1;
                reply::TOO_LARGE
            }
            (_, Outcome::Deleted(true)) => {
                c.delete_hits += 1;
                reply::DELETED
            }
            (_, Outcome::Deleted(false)) => {
                c.delete_misses += 1;
                reply::NOT_FOUND
            }
            (Op::Arith { incr, .. }, Outcome::Arith(arith)) => match arith {
                ArithOutcome::Value(v) => {
                    *(if incr { &mut c.incr_hits } else { &mut c.decr_hits }) += 1;
                    reply::number_line(out, v);
                    return;
                }
                ArithOutcome::NotFound => {
                    *(if incr { &mut c.incr_misses } else { &mut c.decr_misses }) += 1;
                    reply::NOT_FOUND
                }
                ArithOutcome::NonNumeric => reply::NON_NUMERIC,
                ArithOutcome::OutOfMemory => reply::ARITH_OUT_OF_MEMORY,
            },
            (_, Outcome::Touched(hit)) => {
                c.cmd_touch += 1;
                if hit {
                    c.touch_hits += 1;
                    reply::TOUCHED
                } else {
                    c.touch_misses += 1;
                    reply::NOT_FOUND
                }
            }
            (Op::FlushAll { reply: answer, .. }, flush) => {
                if !answer {
                    // Only the connection's own shard answers a flush_all.
                    return;
                }
                c.cmd_flush += 1;
                if flush == Outcome::FlushDisabled {
                    reply::FLUSH_DISABLED
                } else {
                    reply::OK
                }
            }
            (op, outcome) => {
                debug_assert!(false, "no reply for {outcome:?} of {op:?}");
                return;
            }
        };
        out.extend_from_slice(bytes);
    }

    /// Records a classic op's event while its kind is watched (as memcached logs them:
    /// a store as `item_store`; delete, incr, decr and touch as the `item_get` of their
    /// lookup).
    fn watch_op(&mut self, op: &Op<'_>, outcome: Outcome, now: u32) {
        match (*op, outcome) {
            (Op::Store { mode, key, exptime, data, .. }, Outcome::Store(stored)) => {
                self.watch_store(key, watch::StoreStatus::of(stored), mode, exptime, data.len(), now);
            }
            (Op::TooLarge { mode, key }, _) => self.watch_store(key, watch::StoreStatus::TooLarge, mode, 0, 0, now),
            (Op::Delete { key }, Outcome::Deleted(hit)) | (Op::Touch { key, .. }, Outcome::Touched(hit)) => {
                self.watch_fetch(key, hit, 0);
            }
            (Op::Arith { key, .. }, Outcome::Arith(a)) => {
                self.watch_fetch(key, !matches!(a, ArithOutcome::NotFound), 0);
            }
            _ => {}
        }
    }

    /// The most bytes the reply to `op` can take, looking at (not touching) the store.
    pub fn reply_size_bound(&self, op: &Op<'_>, noreply: bool, now: u32) -> usize {
        match *op {
            Op::Get { key, .. } => {
                self.store.peek_value_len(key, now).map_or(0, |len| reply::VALUE_HEADER_MAX + key.len() + len)
            }
            Op::Meta(ref meta) => {
                let value = match meta.cmd {
                    MetaCmd::Get => meta
                        .key(&mut [0u8; protocol::KEY_MAX_LENGTH])
                        .and_then(|key| self.store.peek_value_len(key, now)),
                    _ => None,
                };
                reply::META_LINE_MAX + value.map_or(0, |len| len + 2)
            }
            _ if noreply => 0,
            _ => reply::SMALL_REPLY_MAX,
        }
    }

    /// Executes the ops of `batch` (sent by another shard, at the sender's time `now`)
    /// from byte offset `from`, appending replies to `out` and the end offset of each op's reply to `ends`, for as
    /// long as the replies fit in `budget` bytes of `out`; with `must_progress` the first
    /// op runs whatever the size of its reply. Returns the offset of the first op not
    /// executed (the batch's length when all were), for the requester to send again once
    /// it has written these replies out.
    #[allow(clippy::too_many_arguments)]
    pub fn execute_batch(
        &mut self,
        batch: &OpBatch,
        from: usize,
        budget: usize,
        must_progress: bool,
        now: u32,
        out: &mut Vec<u8>,
        ends: &mut Vec<u32>,
    ) -> usize {
        let largest_reply = reply::VALUE_HEADER_MAX + protocol::KEY_MAX_LENGTH + self.store.limits().max_item_size;
        let (start_len, start_count) = (out.len(), ends.len());
        let mut ops = batch.iter_from(from);
        loop {
            let position = ops.position();
            let Some((op, noreply)) = ops.next() else { return position };
            let first = ends.len() == start_count;
            let used = out.len() - start_len;
            // Only look closer when the largest possible reply would not fit.
            if !(first && must_progress)
                && used + largest_reply > budget
                && used + self.reply_size_bound(&op, noreply, now) > budget
            {
                return position;
            }
            self.execute(&op, noreply, now, out);
            ends.push(out.len() as u32);
        }
    }
}

#[cfg(test)]
mod tests;
