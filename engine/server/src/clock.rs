//! The process's clock: memcached's relative time (seconds since 62 s before the process
//! started, so it is never 0), read by the server and handed to the core as `now`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ringcache_core::time::TimeBase;

/// memcached starts its relative clock `ITEM_UPDATE_INTERVAL + 2` seconds in the past.
const START_OFFSET_SECS: u64 = 62;

/// A process-wide clock, shared read-only by every shard.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
    base: TimeBase,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Clock { started: Instant::now(), base: TimeBase { unix_at_zero: unix - START_OFFSET_SECS as i64 } }
    }

    /// memcached's `current_time`: relative seconds, never 0 (0 means "never expires").
    pub fn now(&self) -> u32 {
        (self.started.elapsed().as_secs() + START_OFFSET_SECS) as u32
    }

    /// What relative time 0 is, in Unix time.
    pub fn base(&self) -> TimeBase {
        self.base
    }

    /// Seconds since the process started.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_time_starts_past_zero_and_maps_back_to_now() {
        let clock = Clock::new();
        let now = clock.now();
        assert!(now >= START_OFFSET_SECS as u32);
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        assert!((clock.base().to_unix(now) - unix).abs() <= 1);
    }
}
