//! A store's contents as effects: every live item as the `Put` that recreates it (its
//! flags, absolute expiry, CAS and value), after a `Flush` for a pending delayed
//! `flush_all`. Applying them, in order, to an empty store with the same settings gives
//! a store that answers every read the same way: this is what a replication snapshot
//! carries, and what tests compare replicas with.

use super::{item, Store};
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
        let bytes = self.arena.bytes();
        for loc in self.index.locations() {
            let at = loc as usize;
            let Some(h) = item::decode(&bytes[at..]) else { continue };
            if h.exptime != 0 && h.exptime <= now {
                continue;
            }
            let value_at = at + h.value_at();
            each(&Effect::Put {
                key: &bytes[at + h.key_at..at + h.key_at + h.key_len],
                flags: h.flags,
                expires_at: self.absolute(h.exptime),
                value: PutValue::Bytes(&bytes[value_at..value_at + h.value_len]),
                cas: self.cas_of(loc, &h),
            });
        }
    }
}
