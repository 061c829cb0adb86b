//! Workload generation: key naming (`key:000123`, zero-padded to a fixed size), key popularity
//! (uniform, zipf, sequential), the GET/SET mix and value sizes. Everything is deterministic for
//! a given seed and allocation-free per request.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use std::fmt;
use std::str::FromStr;

/// Longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;

/// Errors in workload parameters (all of them come from the command line).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    #[error("key distribution must be uniform, sequential or zipf:S (S > 0), got {0:?}")]
    BadKeyDist(String),
    #[error("ratio must be GET:SET with non-negative integers, not both zero, got {0:?}")]
    BadRatio(String),
    #[error("value size must be N or MIN-MAX with 1 <= MIN <= MAX, got {0:?}")]
    BadValueSize(String),
    #[error("--keys must be at least 1")]
    NoKeys,
    #[error(
        "--key-size {size} is too small for {keys} keys: need at least {need} bytes (\"key:\" plus {digits} digits)"
    )]
    KeySizeTooSmall { size: usize, keys: u64, need: usize, digits: usize },
    #[error("--key-size {0} exceeds memcached's limit of {MAX_KEY_LEN} bytes")]
    KeySizeTooLarge(usize),
    #[error("zipf parameters rejected: {0}")]
    Zipf(String),
}

/// How keys are picked from the key space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Rank-frequency zipf with exponent S over the key space; key 0 is the most popular.
    Zipf(f64),
    /// Keys in order, wrapping around; each thread starts at its own offset.
    Sequential,
}

impl FromStr for KeyDist {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WorkloadError::BadKeyDist(s.to_string());
        match s {
            "uniform" => Ok(KeyDist::Uniform),
            "sequential" => Ok(KeyDist::Sequential),
            _ => {
                let exp = s.strip_prefix("zipf:").ok_or_else(bad)?;
                let exp: f64 = exp.parse().map_err(|_| bad())?;
                if exp.is_finite() && exp > 0.0 {
                    Ok(KeyDist::Zipf(exp))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => write!(f, "uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
            KeyDist::Sequential => write!(f, "sequential"),
        }
    }
}

/// GET:SET proportions, e.g. `10:1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub get: u32,
    pub set: u32,
}

impl FromStr for Ratio {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WorkloadError::BadRatio(s.to_string());
        let (g, st) = s.split_once(':').ok_or_else(bad)?;
        let get: u32 = g.trim().parse().map_err(|_| bad())?;
        let set: u32 = st.trim().parse().map_err(|_| bad())?;
        if get == 0 && set == 0 {
            return Err(bad());
        }
        Ok(Ratio { get, set })
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.get, self.set)
    }
}

/// Value size: fixed (`min == max`) or uniform in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl FromStr for ValueSize {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WorkloadError::BadValueSize(s.to_string());
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?),
            None => {
                let v: usize = s.trim().parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(ValueSize { min, max })
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// The set of keys: `count` keys named `key:` followed by a zero-padded index, `size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpace {
    count: u64,
    size: usize,
}

impl KeySpace {
    pub const PREFIX: &'static [u8] = b"key:";

    pub fn new(count: u64, size: usize) -> Result<Self, WorkloadError> {
        if count == 0 {
            return Err(WorkloadError::NoKeys);
        }
        if size > MAX_KEY_LEN {
            return Err(WorkloadError::KeySizeTooLarge(size));
        }
        let digits = decimal_digits(count - 1);
        let need = Self::PREFIX.len() + digits;
        if size < need {
            return Err(WorkloadError::KeySizeTooSmall { size, keys: count, need, digits });
        }
        Ok(KeySpace { count, size })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn key_size(&self) -> usize {
        self.size
    }

    /// Writes the name of key `idx` into `out`, which must be exactly `key_size()` long.
    pub fn write_key(&self, idx: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.size);
        let p = Self::PREFIX.len();
        out[..p].copy_from_slice(Self::PREFIX);
        let mut v = idx;
        for b in out[p..].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }

    /// Appends the name of key `idx` to `out`.
    pub fn append_key(&self, idx: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.size, 0);
        self.write_key(idx, &mut out[start..]);
    }

    /// The index of a key name produced by this key space, or `None` if it is not one.
    pub fn parse_key(&self, key: &[u8]) -> Option<u64> {
        if key.len() != self.size || !key.starts_with(Self::PREFIX) {
            return None;
        }
        let mut v: u64 = 0;
        for &b in &key[Self::PREFIX.len()..] {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        (v < self.count).then_some(v)
    }
}

fn decimal_digits(mut v: u64) -> usize {
    let mut d = 1;
    while v >= 10 {
        v /= 10;
        d += 1;
    }
    d
}

/// What one operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Set,
}

/// Everything that shapes the generated requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadSpec {
    pub keys: KeySpace,
    pub dist: KeyDist,
    pub ratio: Ratio,
    pub multiget: usize,
    pub value_size: ValueSize,
}

enum Sampler {
    Uniform,
    Zipf(Zipf<f64>),
    Sequential { next: u64 },
}

/// Per-thread request generator. Seed it differently per thread (see [`thread_seed`]).
pub struct Generator {
    rng: SmallRng,
    spec: WorkloadSpec,
    sampler: Sampler,
}

/// Mixes a user seed with a thread index into an independent per-thread seed (splitmix64).
pub fn thread_seed(seed: u64, thread: usize) -> u64 {
    let mut z = seed ^ (thread as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Generator {
    /// `thread`/`threads` place a sequential walk's start so threads do not march in lockstep.
    pub fn new(spec: WorkloadSpec, seed: u64, thread: usize, threads: usize) -> Result<Self, WorkloadError> {
        let n = spec.keys.count();
        let sampler = match spec.dist {
            KeyDist::Uniform => Sampler::Uniform,
            KeyDist::Zipf(s) => Sampler::Zipf(Zipf::new(n as f64, s).map_err(|e| WorkloadError::Zipf(e.to_string()))?),
            KeyDist::Sequential => {
                Sampler::Sequential { next: ((n as u128 * thread as u128) / threads.max(1) as u128) as u64 }
            }
        };
        Ok(Generator { rng: SmallRng::seed_from_u64(thread_seed(seed, thread)), spec, sampler })
    }

    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    pub fn next_kind(&mut self) -> OpKind {
        let Ratio { get, set } = self.spec.ratio;
        if set == 0 {
            return OpKind::Get;
        }
        if get == 0 {
            return OpKind::Set;
        }
        if self.rng.random_range(0..get + set) < set {
            OpKind::Set
        } else {
            OpKind::Get
        }
    }

    pub fn next_key(&mut self) -> u64 {
        let n = self.spec.keys.count();
        match &mut self.sampler {
            Sampler::Uniform => self.rng.random_range(0..n),
            Sampler::Zipf(z) => {
                let rank = z.sample(&mut self.rng) as u64;
                rank.clamp(1, n) - 1
            }
            Sampler::Sequential { next } => {
                let k = *next;
                *next = if k + 1 >= n { 0 } else { k + 1 };
                k
            }
        }
    }

    pub fn next_value_size(&mut self) -> usize {
        let ValueSize { min, max } = self.spec.value_size;
        if min == max {
            min
        } else {
            self.rng.random_range(min..=max)
        }
    }

    /// How many keys a GET fetches.
    pub fn multiget(&self) -> usize {
        self.spec.multiget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(keys: u64, dist: KeyDist, ratio: Ratio) -> WorkloadSpec {
        WorkloadSpec {
            keys: KeySpace::new(keys, 16).unwrap(),
            dist,
            ratio,
            multiget: 1,
            value_size: ValueSize { min: 32, max: 32 },
        }
    }

    #[test]
    fn keys_are_zero_padded_to_size_and_parse_back() {
        let ks = KeySpace::new(1000, 10).unwrap();
        let mut out = Vec::new();
        ks.append_key(123, &mut out);
        assert_eq!(out, b"key:000123");
        assert_eq!(ks.parse_key(b"key:000123"), Some(123));
        assert_eq!(ks.parse_key(b"key:00123"), None);
        assert_eq!(ks.parse_key(b"key:001000"), None, "out of range");
        assert_eq!(ks.parse_key(b"kex:000123"), None);
        assert_eq!(ks.parse_key(b"key:0001a3"), None);
    }

    #[test]
    fn key_size_must_fit_the_largest_index() {
        assert!(KeySpace::new(1000, 7).is_ok()); // key:999
        assert!(matches!(KeySpace::new(1001, 7), Err(WorkloadError::KeySizeTooSmall { need: 8, .. })));
        assert!(KeySpace::new(10, 251).is_err());
        assert!(KeySpace::new(0, 16).is_err());
    }

    #[test]
    fn parses_cli_forms() {
        assert_eq!("uniform".parse::<KeyDist>(), Ok(KeyDist::Uniform));
        assert_eq!("zipf:0.99".parse::<KeyDist>(), Ok(KeyDist::Zipf(0.99)));
        assert!("zipf:-1".parse::<KeyDist>().is_err());
        assert!("zipf".parse::<KeyDist>().is_err());
        assert_eq!("10:1".parse::<Ratio>(), Ok(Ratio { get: 10, set: 1 }));
        assert_eq!("0:1".parse::<Ratio>(), Ok(Ratio { get: 0, set: 1 }));
        assert!("0:0".parse::<Ratio>().is_err());
        assert!("10".parse::<Ratio>().is_err());
        assert_eq!("100-200".parse::<ValueSize>(), Ok(ValueSize { min: 100, max: 200 }));
        assert_eq!("32".parse::<ValueSize>(), Ok(ValueSize { min: 32, max: 32 }));
        assert!("200-100".parse::<ValueSize>().is_err());
        assert!("0".parse::<ValueSize>().is_err());
    }

    #[test]
    fn uniform_spreads_evenly() {
        let n = 100u64;
        let mut g = Generator::new(spec(n, KeyDist::Uniform, Ratio { get: 1, set: 0 }), 7, 0, 1).unwrap();
        let draws = 200_000;
        let mut counts = vec![0u32; n as usize];
        for _ in 0..draws {
            counts[g.next_key() as usize] += 1;
        }
        let expect = draws as f64 / n as f64; // 2000 per key, sd ~ 44.5
        for (k, &c) in counts.iter().enumerate() {
            let dev = (c as f64 - expect).abs() / expect;
            assert!(dev < 0.12, "key {k}: {c} draws, expected ~{expect}");
        }
    }

    #[test]
    fn zipf_is_skewed_like_zipf() {
        let n = 1000u64;
        let s = 1.0;
        let mut g = Generator::new(spec(n, KeyDist::Zipf(s), Ratio { get: 1, set: 0 }), 42, 0, 1).unwrap();
        let draws = 400_000;
        let mut counts = vec![0u32; n as usize];
        for _ in 0..draws {
            counts[g.next_key() as usize] += 1;
        }
        // Expected share of rank r is (1/r^s) / H(n,s).
        let h: f64 = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).sum();
        for rank in [1usize, 2, 10] {
            let expect = draws as f64 / (rank as f64).powf(s) / h;
            let got = counts[rank - 1] as f64;
            assert!((got - expect).abs() / expect < 0.1, "rank {rank}: {got} draws, expected ~{expect:.0}");
        }
        // The hottest 1% of keys take far more than 1% of draws (about 39% for s=1, n=1000).
        let top: u32 = counts[..10].iter().sum();
        let share = top as f64 / draws as f64;
        assert!(share > 0.35 && share < 0.43, "top-10 share {share}");
        // And popularity falls with rank.
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[500]);
    }

    #[test]
    fn sequential_walks_in_order_and_wraps() {
        let mut g = Generator::new(spec(10, KeyDist::Sequential, Ratio { get: 1, set: 0 }), 1, 1, 2).unwrap();
        let got: Vec<u64> = (0..12).map(|_| g.next_key()).collect();
        assert_eq!(got, vec![5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn ratio_proportions_hold() {
        let mut g = Generator::new(spec(10, KeyDist::Uniform, Ratio { get: 10, set: 1 }), 3, 0, 1).unwrap();
        let draws = 110_000;
        let sets = (0..draws).filter(|_| g.next_kind() == OpKind::Set).count();
        // Expected 10_000 sets; binomial sd ~ 95.
        assert!((sets as i64 - 10_000).abs() < 500, "{sets} sets");

        let mut only_gets = Generator::new(spec(10, KeyDist::Uniform, Ratio { get: 5, set: 0 }), 3, 0, 1).unwrap();
        assert!((0..1000).all(|_| only_gets.next_kind() == OpKind::Get));
    }

    #[test]
    fn value_sizes_stay_in_range_and_cover_it() {
        let mut sp = spec(10, KeyDist::Uniform, Ratio { get: 1, set: 1 });
        sp.value_size = ValueSize { min: 10, max: 20 };
        let mut g = Generator::new(sp, 9, 0, 1).unwrap();
        let mut seen = [false; 21];
        for _ in 0..10_000 {
            let v = g.next_value_size();
            assert!((10..=20).contains(&v));
            seen[v] = true;
        }
        assert!(seen[10..=20].iter().all(|&s| s));
    }

    #[test]
    fn same_seed_same_stream_different_threads_differ() {
        let sp = spec(1_000_000, KeyDist::Uniform, Ratio { get: 1, set: 1 });
        let mut a = Generator::new(sp, 5, 0, 2).unwrap();
        let mut b = Generator::new(sp, 5, 0, 2).unwrap();
        let mut c = Generator::new(sp, 5, 1, 2).unwrap();
        let xa: Vec<u64> = (0..100).map(|_| a.next_key()).collect();
        let xb: Vec<u64> = (0..100).map(|_| b.next_key()).collect();
        let xc: Vec<u64> = (0..100).map(|_| c.next_key()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }
}
