//! The shard a connection and the mesh execute on: a store of its own (a node alone),
//! or a store inside its replica group, which only the replica changes (writes and
//! linearizable reads go to it as jobs; see `replicated`). Either way the counters,
//! the stats and the sweeper reach the [`Shard`] through [`ShardCell::borrow_mut`].

use std::cell::{Ref, RefCell, RefMut};
use std::rc::Rc;

use ringcache_core::shard::Shard;

use super::replicated::Replicated;

// One per shard, inside an Rc: its size does not matter; boxing the shard would add an
// indirection to every op of a node alone.
#[allow(clippy::large_enum_variant)]
pub enum ShardCell {
    Alone(RefCell<Shard>),
    Replicated(Rc<Replicated>),
}

impl ShardCell {
    pub fn borrow_mut(&self) -> RefMut<'_, Shard> {
        match self {
            ShardCell::Alone(shard) => shard.borrow_mut(),
            ShardCell::Replicated(r) => RefMut::map(r.replica.borrow_mut(), |r| r.group_mut().shard_mut()),
        }
    }

    pub fn borrow(&self) -> Ref<'_, Shard> {
        match self {
            ShardCell::Alone(shard) => shard.borrow(),
            ShardCell::Replicated(r) => Ref::map(r.replica.borrow(), |r| r.group().shard()),
        }
    }

    /// The replica, when this shard is one.
    pub fn replicated(&self) -> Option<&Rc<Replicated>> {
        match self {
            ShardCell::Alone(_) => None,
            ShardCell::Replicated(r) => Some(r),
        }
    }
}
