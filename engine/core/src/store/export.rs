//! A store's contents as effects: every live item as the `Put` that recreates it (its
//! flags, absolute expiry, CAS and value), after a `Flush` for a pending delayed
//! `flush_all`. Applying them, in order, to an empty store with the same settings gives
//! a store that answers every read the same way: this is what a replication snapshot
//! carries, and what tests compare replicas with.
//!
//! Items come out in the order they were written (segments oldest first, each along its
//! item chain): the receiving store then ages them as this one does, and its index is
//! filled in key-hash order no more than it would be by clients (walking the index
//! instead gives keys in hash order, which piles a growing linear-probing index up into
//! long runs: 20 us an insert instead of 0.2).

use super::segments::SegState;
use super::Store;
use crate::effect::{Effect, PutValue};

impl Store {
    /// Calls `each` with the effects that recreate this store's live items at relative
    /// time `now` (index order). Reads only: nothing expires, nothing is marked used.
    pub fn export(&self, now: u32, mut each: impl FnMut(&Effect<'_>)) {
        if let Some(t) = self.oldest_live {
            if t <= now {
                return;
            }
            each(&Effect::Flush { at: Some(self.absolute(t)) });
        }
        let mut order: Vec<usize> =
            (0..self.segs.span()).filter(|&s| self.segs.meta[s].state != SegState::Free).collect();
        order.sort_by_key(|&s| (self.segs.meta[s].created, s));
        for seg in order {
            for (loc, h) in self.chain(seg, 0) {
                // Live: the index points here (not an overwritten or deleted copy), not expired.
                if !self.is_live_copy(loc, &h) || (h.exptime != 0 && h.exptime <= now) {
                    continue;
                }
                let value_at = loc as usize + h.value_at();
                each(&Effect::Put {
                    key: self.key_at(loc, &h),
                    flags: h.flags,
                    expires_at: self.absolute(h.exptime),
                    value: PutValue::Bytes(&self.arena.bytes()[value_at..value_at + h.value_len]),
                    cas: self.cas_of(loc, &h),
                    lease: h.lease,
                });
            }
        }
    }
}
