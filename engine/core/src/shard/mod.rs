//! A shard: one executor's store, time base and counters, and [`Shard::execute`], which
//! runs one [`Op`] at the relative time `now` it is given and appends memcached's reply
//! bytes. Both a connection on this shard and the mesh server (for ops sent from other
//! shards) call it.

pub mod ops;
pub mod stats;

pub use ops::{Op, OpBatch};

use crate::protocol::{self, reply};
use crate::store::StoreMode;
use crate::store::{ArithOutcome, Store, StoreOutcome};
use crate::time::TimeBase;
use stats::Counters;

/// Which shard owns `key`: stable across restarts (fixed hash seeds).
pub fn owner_of(key: &[u8], nshards: usize) -> usize {
    if nshards <= 1 {
        return 0;
    }
    (crate::store::key_hasher().hash_one(key) % nshards as u64) as usize
}

pub struct Shard {
    pub store: Store,
    /// What relative time 0 is (to turn absolute exptimes into relative ones).
    pub time: TimeBase,
    pub counters: Counters,
    /// `-F`: refuse `flush_all`.
    pub flush_enabled: bool,
}

impl Shard {
    /// Executes `op` and appends its reply to `out` (nothing when `noreply`).
    pub fn execute(&mut self, op: &Op<'_>, noreply: bool, now: u32, out: &mut Vec<u8>) {
        let mark = out.len();
        self.execute_inner(op, now, out);
        if noreply {
            out.truncate(mark);
        }
    }

    fn execute_inner(&mut self, op: &Op<'_>, now: u32, out: &mut Vec<u8>) {
        let c = &mut self.counters;
        match *op {
            Op::Get { key, cas, touch } => {
                c.cmd_get += 1;
                let item = match touch {
                    Some(exptime) => {
                        c.cmd_touch += 1;
                        let exp = self.time.expiry(exptime, now);
                        let found = self.store.touch(key, exp, now);
                        if found.is_some() {
                            self.counters.touch_hits += 1;
                        } else {
                            self.counters.touch_misses += 1;
                        }
                        found
                    }
                    None => self.store.get(key, now),
                };
                match item {
                    Some(item) => {
                        self.counters.get_hits += 1;
                        reply::value(out, key, item.flags, item.value, cas.then_some(item.cas));
                    }
                    None => self.counters.get_misses += 1,
                }
            }
            Op::Store { mode, key, flags, exptime, data, cas } => {
                c.cmd_set += 1;
                let exp = self.time.expiry(exptime, now);
                let outcome = self.store.store(mode, key, flags, exp, data, cas, now);
                if mode == StoreMode::Cas {
                    match outcome {
                        StoreOutcome::Stored => self.counters.cas_hits += 1,
                        StoreOutcome::Exists => self.counters.cas_badval += 1,
                        StoreOutcome::NotFound => self.counters.cas_misses += 1,
                        _ => {}
                    }
                }
                out.extend_from_slice(match outcome {
                    StoreOutcome::Stored => reply::STORED,
                    StoreOutcome::NotStored => reply::NOT_STORED,
                    StoreOutcome::Exists => reply::EXISTS,
                    StoreOutcome::NotFound => reply::NOT_FOUND,
                    StoreOutcome::OutOfMemory => {
                        if mode == StoreMode::Set {
                            self.store.drop_key(key, now);
                        }
                        reply::OUT_OF_MEMORY
                    }
                });
            }
            Op::TooLarge { mode, key } => {
                c.cmd_set += 1;
                if mode == StoreMode::Set {
                    self.store.drop_key(key, now);
                }
                out.extend_from_slice(reply::TOO_LARGE);
            }
            Op::Delete { key } => {
                if self.store.delete(key, now) {
                    c.delete_hits += 1;
                    out.extend_from_slice(reply::DELETED);
                } else {
                    c.delete_misses += 1;
                    out.extend_from_slice(reply::NOT_FOUND);
                }
            }
            Op::Arith { key, incr, delta } => match self.store.arith(key, incr, delta, now) {
                ArithOutcome::Value(v) => {
                    if incr {
                        self.counters.incr_hits += 1;
                    } else {
                        self.counters.decr_hits += 1;
                    }
                    reply::number_line(out, v);
                }
                ArithOutcome::NotFound => {
                    if incr {
                        self.counters.incr_misses += 1;
                    } else {
                        self.counters.decr_misses += 1;
                    }
                    out.extend_from_slice(reply::NOT_FOUND);
                }
                ArithOutcome::NonNumeric => out.extend_from_slice(reply::NON_NUMERIC),
                ArithOutcome::OutOfMemory => out.extend_from_slice(reply::ARITH_OUT_OF_MEMORY),
            },
            Op::Touch { key, exptime } => {
                c.cmd_touch += 1;
                let exp = self.time.expiry(exptime, now);
                if self.store.touch(key, exp, now).is_some() {
                    self.counters.touch_hits += 1;
                    out.extend_from_slice(reply::TOUCHED);
                } else {
                    self.counters.touch_misses += 1;
                    out.extend_from_slice(reply::NOT_FOUND);
                }
            }
            Op::FlushAll { delay, reply: answer } => {
                if answer {
                    c.cmd_flush += 1;
                }
                if !self.flush_enabled {
                    if answer {
                        out.extend_from_slice(reply::FLUSH_DISABLED);
                    }
                    return;
                }
                // memcached: oldest_live = realtime(delay) - 1 for a positive delay.
                let oldest_live = (delay > 0).then(|| self.time.realtime(i64::from(delay), now).saturating_sub(1));
                self.store.flush(oldest_live, now);
                if answer {
                    out.extend_from_slice(reply::OK);
                }
            }
        }
    }

    /// The most bytes the reply to `op` can take, looking at (not touching) the store.
    fn reply_size_bound(&self, op: &Op<'_>, noreply: bool, now: u32) -> usize {
        match *op {
            Op::Get { key, .. } => {
                self.store.peek_value_len(key, now).map_or(0, |len| reply::VALUE_HEADER_MAX + key.len() + len)
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
