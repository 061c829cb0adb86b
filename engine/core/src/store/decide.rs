//! memcached's storage semantics in two steps. *Decide* evaluates a command's condition
//! against what the store holds (add: is the key absent? cas: does the version match?
//! incr: is the value a number?) and returns what the client is told and the
//! [`Effect`] to apply, if any; it changes nothing but local bookkeeping (an expired item
//! found on the way is dropped, `add` of an existing key marks it used). *Apply* makes
//! the change with no condition and no clock of its own: times in an effect are absolute
//! and turned into this store's relative time here. Standalone, a shard decides and
//! applies at once ([`Store::store`] and friends); replicated, the deciding node's
//! effects are applied by every node.

use super::item::Lease;
use super::{item, ArithOutcome, CasSource, Found, ItemRef, Store, StoreMode, StoreOutcome, Value};
use crate::effect::{Effect, PutValue};
use crate::numbers::parse_u64;

/// What the meta protocol's `ms` adds to a storage command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// `I`: a `Cas` whose CAS is below the item's stores the value anyway, marked stale,
    /// with the item's expiry and win token.
    pub invalidate: bool,
    /// `E`: the CAS the stored item gets (0: one of the store's).
    pub new_cas: u64,
    /// `N` with append or prepend: a missing item is created from the data, expiring at
    /// this relative time (0: never).
    pub vivify: Option<u32>,
}

/// What applying an effect did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// No memory for the new version (evictions off, or nothing could be freed); the old
    /// version, if any, is untouched.
    OutOfMemory,
    /// A `Concat` whose base this store does not hold (or lost while making room): the
    /// key is dropped rather than given a value the deciding store would not have.
    Dropped,
    /// A `Touch` or `Delete` of a key this store does not hold.
    Missing,
    /// A write without a CAS stamp given to a store whose CAS is [`CasSource::Stamped`]:
    /// refused, nothing changed (the store cannot make up a version every replica shares).
    Unstamped,
}

impl Store {
    /// Absolute Unix time of relative time `rel` (0, never, stays 0).
    pub fn absolute(&self, rel: u32) -> i64 {
        if rel == 0 {
            0
        } else {
            self.config.clock_base_unix + i64::from(rel)
        }
    }

    /// This store's relative time of Unix time `at` (0 stays 0; the past is 1, expired).
    fn relative(&self, at: i64) -> u32 {
        if at == 0 {
            0
        } else {
            (at - self.config.clock_base_unix).clamp(1, i64::from(u32::MAX)) as u32
        }
    }

    /// The CAS a write whose effect carries `stamp` stores in its item: a stamp (a log's,
    /// or the client's own) is kept; without one, a derived store derives it from the
    /// location (0 here) and a stamped store refuses the write (None); with CAS off, 0.
    fn written_cas(&self, stamp: u64) -> Option<u64> {
        match self.config.cas {
            CasSource::Stamped => (stamp != 0).then_some(stamp),
            CasSource::Derived => Some(stamp),
            CasSource::Off => Some(0),
        }
    }

    /// Decides a storage command (memcached's `do_store_item` rules); `expiry` is the new
    /// item's relative expiry (0: never). `cas` (0: none) is also checked by append and
    /// prepend (the meta protocol's `ms ... MA C<cas>`); `options` carry the rest of the
    /// meta protocol's `ms` (see [`StoreOptions`]).
    #[allow(clippy::too_many_arguments)]
    pub fn decide_store<'a>(
        &mut self,
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        expiry: u32,
        data: &'a [u8],
        cas: u64,
        options: StoreOptions,
        now: u32,
    ) -> (StoreOutcome, Option<Effect<'a>>) {
        let StoreOptions { invalidate, new_cas, vivify } = options;
        let put = Effect::Put {
            key,
            flags,
            expires_at: self.absolute(expiry),
            value: PutValue::Bytes(data),
            cas: new_cas,
            lease: Lease::NONE,
        };
        if mode == StoreMode::Set {
            // Unconditional: no need to look.
            return (StoreOutcome::Stored, Some(put));
        }
        let existing = self.lookup(key, self.hash(key), now);
        match (mode, existing) {
            (StoreMode::Add, Some(found)) => {
                self.bump(&found, now);
                (StoreOutcome::NotStored, None)
            }
            (StoreMode::Append | StoreMode::Prepend, None) if vivify.is_some() => {
                let expires_at = self.absolute(vivify.unwrap_or(0));
                (
                    StoreOutcome::Stored,
                    Some(Effect::Put {
                        key,
                        flags,
                        expires_at,
                        value: PutValue::Bytes(data),
                        cas: new_cas,
                        lease: Lease::NONE,
                    }),
                )
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => (StoreOutcome::NotStored, None),
            (StoreMode::Cas, None) => (StoreOutcome::NotFound, None),
            (StoreMode::Cas, Some(found)) if invalidate && cas != 0 && cas < self.cas_of(found.loc, &found.header) => {
                let h = found.header;
                let lease = Lease { stale: true, win_sent: h.lease.win_sent };
                let expires_at = self.absolute(h.exptime);
                (
                    StoreOutcome::Stored,
                    Some(Effect::Put { key, flags, expires_at, value: PutValue::Bytes(data), cas: new_cas, lease }),
                )
            }
            // memcached: a CAS of 0 never matches (with -C every item's CAS is 0).
            (StoreMode::Cas, Some(found)) if cas == 0 || self.cas_of(found.loc, &found.header) != cas => {
                (StoreOutcome::Exists, None)
            }
            (StoreMode::Append | StoreMode::Prepend, Some(found))
                if cas != 0 && self.cas_of(found.loc, &found.header) != cas =>
            {
                (StoreOutcome::Exists, None)
            }
            (StoreMode::Append | StoreMode::Prepend, Some(found)) => {
                let h = found.header;
                if !self.config.limits.item_fits(key.len(), h.flags, h.value_len + data.len()) {
                    return (StoreOutcome::NotStored, None);
                }
                let base_cas = self.cas_of(found.loc, &h);
                let prepend = mode == StoreMode::Prepend;
                (StoreOutcome::Stored, Some(Effect::Concat { key, data, prepend, base_cas, cas: new_cas }))
            }
            (StoreMode::Set | StoreMode::Add | StoreMode::Replace | StoreMode::Cas, _) => {
                (StoreOutcome::Stored, Some(put))
            }
        }
    }

    /// Decides `incr`/`decr` with memcached's rules: 64-bit unsigned, incr wraps, decr
    /// stops at 0, and a result no longer than the old value keeps its length,
    /// space-padded. The effect writes the result, keeping flags and expiry.
    pub fn decide_arith<'a>(
        &mut self,
        key: &'a [u8],
        incr: bool,
        delta: u64,
        now: u32,
    ) -> (ArithOutcome, Option<Effect<'a>>) {
        let Some(found) = self.lookup(key, self.hash(key), now) else { return (ArithOutcome::NotFound, None) };
        let h = found.header;
        let value = self.item_ref(&found).value;
        let Some(current) = (if value.is_empty() { None } else { parse_u64(value) }) else {
            return (ArithOutcome::NonNumeric, None);
        };
        let result = if incr { current.wrapping_add(delta) } else { current.saturating_sub(delta) };
        let digits = PutValue::number(result, 0);
        let pad_to = if digits.len() <= h.value_len { h.value_len } else { 0 };
        let value = PutValue::number(result, pad_to);
        let expires_at = self.absolute(h.exptime);
        let effect = Effect::Put { key, flags: h.flags, expires_at, value, cas: 0, lease: Lease::NONE };
        (ArithOutcome::Value(result), Some(effect))
    }

    /// Decides `touch`/`gat`: the new relative expiry of a live item, or nothing.
    pub fn decide_touch<'a>(&mut self, key: &'a [u8], expiry: u32, now: u32) -> Option<Effect<'a>> {
        self.lookup(key, self.hash(key), now)?;
        Some(Effect::Touch { key, expires_at: self.absolute(expiry) })
    }

    /// Decides `delete`: the key's removal if it is live, else nothing.
    pub fn decide_delete<'a>(&mut self, key: &'a [u8], now: u32) -> Option<Effect<'a>> {
        self.lookup(key, self.hash(key), now)?;
        Some(Effect::Delete { key })
    }

    /// Decides `flush_all`: `oldest_live` None flushes now; Some(t) flushes everything once
    /// relative time `t` is reached.
    pub fn decide_flush(&self, oldest_live: Option<u32>, now: u32) -> Effect<'static> {
        Effect::Flush { at: oldest_live.filter(|&t| t > now).map(|t| self.absolute(t)) }
    }

    /// Applies `effect` (see the module documentation).
    pub fn apply(&mut self, effect: &Effect<'_>, now: u32) -> Applied {
        self.apply_pending_flush(now);
        match *effect {
            Effect::Put { key, flags, expires_at, value, cas, lease } => {
                let Some(cas) = self.written_cas(cas) else { return Applied::Unstamped };
                let expiry = self.relative(expires_at);
                let value = match value {
                    PutValue::Bytes(b) => Value::Bytes(b),
                    PutValue::Number { ref digits, len, pad_to } => {
                        Value::Number { digits: &digits[..usize::from(len)], pad_to: pad_to as usize }
                    }
                };
                match self.put(key, self.hash(key), value, flags, expiry, cas, lease, now) {
                    StoreOutcome::Stored => Applied::Done,
                    StoreOutcome::OutOfMemory => Applied::OutOfMemory,
                    _ => Applied::Dropped,
                }
            }
            Effect::Concat { key, data, prepend, base_cas, cas } => {
                let Some(cas) = self.written_cas(cas) else { return Applied::Unstamped };
                let hash = self.hash(key);
                let Some(found) = self.lookup(key, hash, now) else { return Applied::Dropped };
                let h = found.header;
                if self.cas_of(found.loc, &h) != base_cas {
                    self.unlink(&found);
                    return Applied::Dropped;
                }
                let (old_at, old_len) = (found.loc as usize + h.value_at(), h.value_len);
                let value = if prepend {
                    Value::Prepend { old_at, old_len, data }
                } else {
                    Value::Append { old_at, old_len, data }
                };
                match self.put(key, hash, value, h.flags, h.exptime, cas, Lease::NONE, now) {
                    StoreOutcome::Stored => Applied::Done,
                    StoreOutcome::OutOfMemory => Applied::OutOfMemory,
                    _ => Applied::Dropped,
                }
            }
            Effect::Touch { key, expires_at } => {
                let hash = self.hash(key);
                let Some(found) = self.lookup(key, hash, now) else { return Applied::Missing };
                self.set_expiry(&found, key, hash, self.relative(expires_at), now)
            }
            Effect::Delete { key } => match self.lookup(key, self.hash(key), now) {
                Some(found) => {
                    self.unlink(&found);
                    Applied::Done
                }
                None => Applied::Missing,
            },
            Effect::Mark { key, base_cas, lease, expires_at, new_version, cas } => {
                let stamp = if new_version { cas } else { 1 };
                let Some(cas) = self.written_cas(stamp) else { return Applied::Unstamped };
                let hash = self.hash(key);
                let Some(found) = self.lookup(key, hash, now) else { return Applied::Missing };
                if self.cas_of(found.loc, &found.header) != base_cas {
                    self.unlink(&found);
                    return Applied::Dropped;
                }
                let expiry = expires_at.map_or(found.header.exptime, |at| self.relative(at));
                if new_version {
                    return self.rewrite(&found, key, hash, expiry, cas, lease, now);
                }
                item::set_lease(&mut self.arena.bytes_mut()[found.loc as usize..], lease);
                match expires_at {
                    Some(_) => {
                        let found = Found { header: item::Header { lease, ..found.header }, ..found };
                        self.set_expiry(&found, key, hash, expiry, now)
                    }
                    None => Applied::Done,
                }
            }
            Effect::Flush { at } => {
                match at.map(|at| self.relative(at)) {
                    Some(t) if t > now => self.oldest_live = Some(t),
                    _ => {
                        self.oldest_live = None;
                        self.clear();
                    }
                }
                Applied::Done
            }
        }
    }

    /// Sets a new expiry on a live item: in place when its exptime field can hold it,
    /// else by rewriting the item with the same CAS (the same version).
    fn set_expiry(&mut self, found: &Found, key: &[u8], hash: u64, expiry: u32, now: u32) -> Applied {
        let at = found.loc as usize;
        if item::set_exptime(&mut self.arena.bytes_mut()[at..], &found.header, expiry) {
            let seg = self.seg_of(found.loc);
            self.segs.meta[seg].note_expiry(expiry);
            return Applied::Done;
        }
        if expiry == 0 {
            // No exptime field and none wanted: nothing to change.
            return Applied::Done;
        }
        let cas = self.cas_of(found.loc, &found.header);
        self.rewrite(found, key, hash, expiry, cas, found.header.lease, now)
    }

    /// Writes the item at `found` again, its value and flags unchanged, with expiry
    /// `expiry`, CAS `cas` (0: a new one) and lease `lease`.
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        &mut self,
        found: &Found,
        key: &[u8],
        hash: u64,
        expiry: u32,
        cas: u64,
        lease: Lease,
        now: u32,
    ) -> Applied {
        let old_at = found.loc as usize + found.header.value_at();
        let value = Value::Append { old_at, old_len: found.header.value_len, data: &[] };
        match self.put(key, hash, value, found.header.flags, expiry, cas, lease, now) {
            StoreOutcome::Stored => Applied::Done,
            StoreOutcome::OutOfMemory => Applied::OutOfMemory,
            _ => Applied::Missing,
        }
    }

    // Standalone: decide, then apply at once.

    /// The storage commands, decided and applied.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        expiry: u32,
        data: &[u8],
        cas: u64,
        now: u32,
    ) -> StoreOutcome {
        let (outcome, effect) = self.decide_store(mode, key, flags, expiry, data, cas, StoreOptions::default(), now);
        match effect.map(|e| self.apply(&e, now)) {
            None | Some(Applied::Done) => outcome,
            Some(Applied::OutOfMemory) => StoreOutcome::OutOfMemory,
            Some(Applied::Dropped | Applied::Missing | Applied::Unstamped) => StoreOutcome::NotStored,
        }
    }

    /// `incr`/`decr`, decided and applied.
    pub fn arith(&mut self, key: &[u8], incr: bool, delta: u64, now: u32) -> ArithOutcome {
        let (outcome, effect) = self.decide_arith(key, incr, delta, now);
        match effect.map(|e| self.apply(&e, now)) {
            None | Some(Applied::Done) => outcome,
            Some(_) => ArithOutcome::OutOfMemory,
        }
    }

    /// `touch`/`gat`, decided and applied: the item, marked as recently used, if it was
    /// live (and its new expiry could be set). It is returned even when the new expiry
    /// is already past, as memcached's `gat -1` returns the item it expires.
    pub fn touch(&mut self, key: &[u8], expiry: u32, now: u32) -> Option<ItemRef<'_>> {
        let effect = self.decide_touch(key, expiry, now)?;
        if self.apply(&effect, now) != Applied::Done {
            return None;
        }
        let found = self.find(key, self.hash(key))?;
        self.bump(&found, now);
        Some(self.item_ref(&found))
    }

    /// `delete`, decided and applied: true if a live item was removed.
    pub fn delete(&mut self, key: &[u8], now: u32) -> bool {
        self.decide_delete(key, now).is_some_and(|e| self.apply(&e, now) == Applied::Done)
    }

    /// A `set` that failed: memcached drops the old value so a stale one is not served.
    pub fn drop_key(&mut self, key: &[u8], now: u32) {
        self.apply(&Effect::Delete { key }, now);
    }

    /// `flush_all`, decided and applied.
    pub fn flush(&mut self, oldest_live: Option<u32>, now: u32) {
        let effect = self.decide_flush(oldest_live, now);
        self.apply(&effect, now);
    }
}
