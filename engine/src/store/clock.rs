//! memcached's notion of time: "relative" seconds since a start point 62 s before the
//! process started (memcached subtracts `ITEM_UPDATE_INTERVAL + 2`), and the `realtime()`
//! rule that turns a client's exptime into that scale (relative up to 30 days, absolute
//! Unix time beyond, negative meaning already expired).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// 30 days: exptimes above this are absolute Unix times.
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;
const START_OFFSET_SECS: u64 = 62;

/// A process-wide clock, shared read-only by every shard.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
    /// Unix time that corresponds to relative time 0.
    process_started: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Clock { started: Instant::now(), process_started: unix - START_OFFSET_SECS as i64 }
    }

    /// memcached's `current_time`: relative seconds, never 0 (0 means "never expires").
    pub fn now(&self) -> u32 {
        (self.started.elapsed().as_secs() + START_OFFSET_SECS) as u32
    }

    /// Unix time of relative time 0.
    pub fn base_unix(&self) -> i64 {
        self.process_started
    }

    /// Seconds since the process started.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Unix time of relative time `rel`.
    pub fn to_unix(&self, rel: u32) -> i64 {
        self.process_started + i64::from(rel)
    }

    /// memcached's `realtime(EXPTIME_TO_POSITIVE_TIME(exptime))`: 0 stays 0 (never),
    /// a negative exptime becomes relative time 1 (already expired).
    pub fn expiry(&self, exptime: i32, now: u32) -> u32 {
        let exptime = if exptime < 0 { REALTIME_MAXDELTA + 1 } else { i64::from(exptime) };
        self.realtime(exptime, now)
    }

    /// memcached's `realtime()`.
    pub fn realtime(&self, exptime: i64, now: u32) -> u32 {
        if exptime == 0 {
            0
        } else if exptime > REALTIME_MAXDELTA {
            if exptime <= self.process_started {
                1
            } else {
                (exptime - self.process_started).min(i64::from(u32::MAX)) as u32
            }
        } else {
            (exptime + i64::from(now)).min(i64::from(u32::MAX)) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rules() {
        let clock = Clock::new();
        let now = clock.now();
        assert_eq!(clock.expiry(0, now), 0);
        assert_eq!(clock.expiry(-1, now), 1);
        assert_eq!(clock.expiry(10, now), now + 10);
        // Absolute time in the past: expired.
        assert_eq!(clock.expiry(REALTIME_MAXDELTA as i32 + 1, now), 1);
        // Absolute time in the future: relative to the process start.
        let future = clock.to_unix(now) + 100;
        assert_eq!(clock.expiry(future as i32, now), now + 100);
    }
}
