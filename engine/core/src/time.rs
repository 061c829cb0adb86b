//! memcached's notion of time, as pure rules: "relative" seconds since a start point (a
//! Unix time, [`TimeBase`]), and the `realtime()` rule that turns a client's exptime into
//! that scale (relative up to 30 days, absolute Unix time beyond, negative meaning
//! already expired). Nothing here reads a clock: the current relative time `now` is
//! always an argument, and the server (which owns the clock) supplies it.

/// 30 days: exptimes above this are absolute Unix times.
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// The Unix time of relative time 0 (memcached's `process_started`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBase {
    pub unix_at_zero: i64,
}

impl TimeBase {
    /// Unix time of relative time `rel`.
    pub fn to_unix(&self, rel: u32) -> i64 {
        self.unix_at_zero + i64::from(rel)
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
            if exptime <= self.unix_at_zero {
                1
            } else {
                (exptime - self.unix_at_zero).min(i64::from(u32::MAX)) as u32
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
        let base = TimeBase { unix_at_zero: 1_700_000_000 };
        let now = 100;
        assert_eq!(base.expiry(0, now), 0);
        assert_eq!(base.expiry(-1, now), 1);
        assert_eq!(base.expiry(10, now), now + 10);
        // Absolute time in the past: expired.
        assert_eq!(base.expiry(REALTIME_MAXDELTA as i32 + 1, now), 1);
        // Absolute time in the future: relative to the base.
        let future = base.to_unix(now) + 100;
        assert_eq!(base.expiry(future as i32, now), now + 100);
    }
}
