//! A shard's command counters, summed across shards for `stats`. Each field is a plain
//! `u64` owned by one executor; `stats` asks every shard for a copy over the mesh.

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Per-shard counters, named as memcached names them in `stats`.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct Counters { $(pub $name: u64,)* }

        impl Counters {
            /// Adds `other` into `self`.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }

            /// `(name, value)` pairs in memcached's order.
            pub fn fields(&self) -> [(&'static str, u64); counters!(@count $($name)*)] {
                [$((stringify!($name), self.$name),)*]
            }
        }
    };
    (@count) => { 0 };
    (@count $head:ident $($tail:ident)*) => { 1 + counters!(@count $($tail)*) };
}

counters!(
    cmd_get,
    cmd_set,
    cmd_flush,
    cmd_touch,
    cmd_meta,
    get_hits,
    get_misses,
    delete_misses,
    delete_hits,
    incr_misses,
    incr_hits,
    decr_misses,
    decr_hits,
    cas_misses,
    cas_hits,
    cas_badval,
    touch_hits,
    touch_misses,
    store_too_large,
    store_no_memory,
    conn_yields,
    bytes_read,
    bytes_written,
    total_connections,
);
