//! Workload generation: key naming (`key:000123`, zero-padded to a fixed size; counters for
//! `incr` live in a parallel `ctr:000123` space), key popularity (uniform, zipf, sequential), the
//! get/set/delete/incr/cas mix and value sizes (fixed, uniform, or log-normal). Everything is
//! deterministic for a given seed and allocation-free per request.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};
use std::fmt;
use std::str::FromStr;

/// Longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;

/// Errors in workload parameters (all of them come from the command line).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    #[error("key distribution must be uniform, sequential or zipf:S (S > 0), got {0:?}")]
    BadKeyDist(String),
    #[error("ratio must be GET:SET[:DELETE[:INCR[:CAS]]] with non-negative integer weights, not all zero, got {0:?}")]
    BadRatio(String),
    #[error(
        "value size must be N, MIN-MAX with 1 <= MIN <= MAX, or lognormal:MEDIAN:SIGMA[:MAX] with \
         1 <= MEDIAN <= MAX and SIGMA >= 0, got {0:?}"
    )]
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

/// Operation weights, `GET:SET[:DELETE[:INCR[:CAS]]]`, e.g. `10:1` or `6:2:1:1:1`; omitted
/// trailing weights are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub get: u32,
    pub set: u32,
    pub delete: u32,
    pub incr: u32,
    pub cas: u32,
}

impl Ratio {
    /// A get/set-only mix.
    pub const fn get_set(get: u32, set: u32) -> Ratio {
        Ratio { get, set, delete: 0, incr: 0, cas: 0 }
    }

    /// The weights in the order [`OpKind::ALL`] lists the kinds.
    pub fn weights(&self) -> [u32; 5] {
        [self.get, self.set, self.delete, self.incr, self.cas]
    }

    /// What the weights stand for, as [`fmt::Display`] prints them.
    pub fn label(&self) -> &'static str {
        if self.delete == 0 && self.incr == 0 && self.cas == 0 {
            "get:set"
        } else {
            "get:set:delete:incr:cas"
        }
    }

    /// Sum of the weights (at least 1 for a parsed ratio).
    pub fn total(&self) -> u64 {
        self.weights().iter().map(|&w| u64::from(w)).sum()
    }
}

impl FromStr for Ratio {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WorkloadError::BadRatio(s.to_string());
        let mut w = [0u32; 5];
        let mut n = 0;
        for field in s.split(':') {
            let slot = w.get_mut(n).ok_or_else(bad)?;
            *slot = field.trim().parse().map_err(|_| bad())?;
            n += 1;
        }
        if n < 2 || w.iter().all(|&x| x == 0) {
            return Err(bad());
        }
        // The draw in `next_kind` is over a u32 range.
        if w.iter().map(|&x| u64::from(x)).sum::<u64>() > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Ratio { get: w[0], set: w[1], delete: w[2], incr: w[3], cas: w[4] })
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.delete == 0 && self.incr == 0 && self.cas == 0 {
            write!(f, "{}:{}", self.get, self.set)
        } else {
            write!(f, "{}:{}:{}:{}:{}", self.get, self.set, self.delete, self.incr, self.cas)
        }
    }
}

/// Default upper clamp of `lognormal:MEDIAN:SIGMA` when no MAX is given.
pub const LOGNORMAL_DEFAULT_MAX: usize = 64 * 1024;

/// The shape of the value size distribution between [`ValueSize::min`] and [`ValueSize::max`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeDist {
    /// Fixed (`min == max`) or uniform in `min..=max`.
    Uniform,
    /// Log-normal with the given median (bytes) and sigma (of the underlying normal), rounded to
    /// whole bytes and clamped to `min..=max`: a heavy right tail.
    LogNormal { median: f64, sigma: f64 },
}

/// Value size: fixed, uniform in `min..=max`, or log-normal clamped to `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
    pub dist: SizeDist,
}

impl ValueSize {
    /// Fixed (`min == max`) or uniform sizes.
    pub const fn uniform(min: usize, max: usize) -> ValueSize {
        ValueSize { min, max, dist: SizeDist::Uniform }
    }
}

impl FromStr for ValueSize {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WorkloadError::BadValueSize(s.to_string());
        if let Some(rest) = s.trim().strip_prefix("lognormal:") {
            let mut f = rest.split(':');
            let median: f64 = f.next().ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
            let sigma: f64 = f.next().ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
            let max: usize = match f.next() {
                Some(m) => m.trim().parse().map_err(|_| bad())?,
                None => LOGNORMAL_DEFAULT_MAX,
            };
            if f.next().is_some()
                || !(median.is_finite() && median >= 1.0 && median <= max as f64)
                || !(sigma.is_finite() && sigma >= 0.0)
            {
                return Err(bad());
            }
            return Ok(ValueSize { min: 1, max, dist: SizeDist::LogNormal { median, sigma } });
        }
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
        Ok(ValueSize::uniform(min, max))
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dist {
            SizeDist::LogNormal { median, sigma } => {
                write!(f, "lognormal:{median}:{sigma}:{}", self.max)
            }
            SizeDist::Uniform if self.min == self.max => write!(f, "{}", self.min),
            SizeDist::Uniform => write!(f, "{}-{}", self.min, self.max),
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
    /// Prefix of the counter keys that `incr` works on (same length as [`Self::PREFIX`], so
    /// counter names have the key size too).
    pub const COUNTER_PREFIX: &'static [u8] = b"ctr:";

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
        self.write_with_prefix(Self::PREFIX, idx, out);
    }

    /// Writes the name of counter `idx` (`ctr:` + index) into `out`, `key_size()` long.
    pub fn write_counter_key(&self, idx: u64, out: &mut [u8]) {
        self.write_with_prefix(Self::COUNTER_PREFIX, idx, out);
    }

    fn write_with_prefix(&self, prefix: &[u8], idx: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.size);
        let p = prefix.len();
        out[..p].copy_from_slice(prefix);
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
    /// `get` of `--multiget` keys.
    Get,
    /// `set` of one key.
    Set,
    /// `delete` of one key.
    Delete,
    /// `incr` of one counter key (`ctr:` space).
    Incr,
    /// `gets` of one key, then (on a hit) `cas` of a new value with the unique it returned.
    Cas,
}

impl OpKind {
    /// Every kind, in the order of [`Ratio::weights`].
    pub const ALL: [OpKind; 5] = [OpKind::Get, OpKind::Set, OpKind::Delete, OpKind::Incr, OpKind::Cas];
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

impl WorkloadSpec {
    /// What `--prefill` writes: every key, plus every counter when the mix has incrs.
    pub fn prefill_items(&self) -> u64 {
        self.keys.count() * if self.ratio.incr > 0 { 2 } else { 1 }
    }
}

enum SizeSampler {
    Uniform,
    LogNormal(LogNormal<f64>),
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
    sizes: SizeSampler,
    /// Cumulative weights in draw order (set, get, delete, incr, cas), and their kinds.
    cumulative: [(u32, OpKind); 5],
    /// The kind when only one has a non-zero weight (no random draw then).
    only: Option<OpKind>,
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
        let sizes = match spec.value_size.dist {
            SizeDist::Uniform => SizeSampler::Uniform,
            SizeDist::LogNormal { median, sigma } => SizeSampler::LogNormal(
                LogNormal::new(median.ln(), sigma)
                    .map_err(|_| WorkloadError::BadValueSize(spec.value_size.to_string()))?,
            ),
        };
        // Sets are drawn first and gets second, so a GET:SET ratio keeps the stream of kinds it
        // had before the other kinds existed.
        let r = spec.ratio;
        let mut cumulative = [(0u32, OpKind::Get); 5];
        let mut acc = 0u32;
        for (i, (w, kind)) in [
            (r.set, OpKind::Set),
            (r.get, OpKind::Get),
            (r.delete, OpKind::Delete),
            (r.incr, OpKind::Incr),
            (r.cas, OpKind::Cas),
        ]
        .into_iter()
        .enumerate()
        {
            acc = acc.saturating_add(w);
            cumulative[i] = (acc, kind);
        }
        let nonzero = r.weights().iter().filter(|&&w| w > 0).count();
        let only = if nonzero == 1 {
            OpKind::ALL.iter().zip(r.weights()).find(|(_, w)| *w > 0).map(|(k, _)| *k)
        } else {
            None
        };
        Ok(Generator {
            rng: SmallRng::seed_from_u64(thread_seed(seed, thread)),
            spec,
            sampler,
            sizes,
            cumulative,
            only,
        })
    }

    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    pub fn next_kind(&mut self) -> OpKind {
        if let Some(k) = self.only {
            return k;
        }
        let total = self.cumulative[4].0;
        let x = self.rng.random_range(0..total);
        for &(upto, kind) in &self.cumulative {
            if x < upto {
                return kind;
            }
        }
        OpKind::Get
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
        let ValueSize { min, max, .. } = self.spec.value_size;
        match &self.sizes {
            SizeSampler::Uniform if min == max => min,
            SizeSampler::Uniform => self.rng.random_range(min..=max),
            SizeSampler::LogNormal(d) => {
                let v = d.sample(&mut self.rng).round();
                // NaN cannot come out of a valid log-normal; `as` saturates the huge ones.
                (v as usize).clamp(min, max)
            }
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
            value_size: ValueSize::uniform(32, 32),
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
        assert_eq!("10:1".parse::<Ratio>(), Ok(Ratio::get_set(10, 1)));
        assert_eq!("0:1".parse::<Ratio>(), Ok(Ratio::get_set(0, 1)));
        assert!("0:0".parse::<Ratio>().is_err());
        assert!("10".parse::<Ratio>().is_err());
        assert_eq!("100-200".parse::<ValueSize>(), Ok(ValueSize::uniform(100, 200)));
        assert_eq!("32".parse::<ValueSize>(), Ok(ValueSize::uniform(32, 32)));
        assert!("200-100".parse::<ValueSize>().is_err());
        assert!("0".parse::<ValueSize>().is_err());
    }

    #[test]
    fn uniform_spreads_evenly() {
        let n = 100u64;
        let mut g = Generator::new(spec(n, KeyDist::Uniform, Ratio::get_set(1, 0)), 7, 0, 1).unwrap();
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
        let mut g = Generator::new(spec(n, KeyDist::Zipf(s), Ratio::get_set(1, 0)), 42, 0, 1).unwrap();
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
        let mut g = Generator::new(spec(10, KeyDist::Sequential, Ratio::get_set(1, 0)), 1, 1, 2).unwrap();
        let got: Vec<u64> = (0..12).map(|_| g.next_key()).collect();
        assert_eq!(got, vec![5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn ratio_proportions_hold() {
        let mut g = Generator::new(spec(10, KeyDist::Uniform, Ratio::get_set(10, 1)), 3, 0, 1).unwrap();
        let draws = 110_000;
        let sets = (0..draws).filter(|_| g.next_kind() == OpKind::Set).count();
        // Expected 10_000 sets; binomial sd ~ 95.
        assert!((sets as i64 - 10_000).abs() < 500, "{sets} sets");

        let mut only_gets = Generator::new(spec(10, KeyDist::Uniform, Ratio::get_set(5, 0)), 3, 0, 1).unwrap();
        assert!((0..1000).all(|_| only_gets.next_kind() == OpKind::Get));
    }

    #[test]
    fn parses_extended_ratios() {
        assert_eq!("6:2:1:1:1".parse::<Ratio>(), Ok(Ratio { get: 6, set: 2, delete: 1, incr: 1, cas: 1 }));
        assert_eq!("3:1:2".parse::<Ratio>(), Ok(Ratio { get: 3, set: 1, delete: 2, incr: 0, cas: 0 }));
        assert_eq!("0:0:0:1".parse::<Ratio>(), Ok(Ratio { get: 0, set: 0, delete: 0, incr: 1, cas: 0 }));
        assert_eq!("0:0:0:0:5".parse::<Ratio>().map(|r| r.cas), Ok(5));
        for bad in ["0:0:0:0:0", "1:1:1:1:1:1", "1:1:x", "1::1", "1:-1:1", "4294967295:1"] {
            assert!(bad.parse::<Ratio>().is_err(), "{bad}");
        }
        // The two-field form prints as before; longer ones print all five weights.
        assert_eq!(Ratio::get_set(10, 1).to_string(), "10:1");
        assert_eq!("6:2:1".parse::<Ratio>().unwrap().to_string(), "6:2:1:0:0");
    }

    #[test]
    fn mixed_ratio_proportions_hold() {
        let r: Ratio = "6:2:1:1:1".parse().unwrap();
        let mut g = Generator::new(spec(10, KeyDist::Uniform, r), 11, 0, 1).unwrap();
        let draws = 220_000u32;
        let mut counts = [0u32; 5];
        for _ in 0..draws {
            let k = g.next_kind();
            counts[OpKind::ALL.iter().position(|&x| x == k).unwrap()] += 1;
        }
        for (i, w) in r.weights().iter().enumerate() {
            let expect = f64::from(draws) * f64::from(*w) / 11.0;
            let got = f64::from(counts[i]);
            // 20_000 expected for weight 1 (sd ~135): 3% is over 4 sd.
            assert!((got - expect).abs() / expect < 0.03, "{:?}: {got}, expected ~{expect}", OpKind::ALL[i]);
        }
        // A single non-zero weight never draws.
        let mut only = Generator::new(spec(10, KeyDist::Uniform, "0:0:0:3".parse().unwrap()), 1, 0, 1).unwrap();
        assert!((0..100).all(|_| only.next_kind() == OpKind::Incr));
    }

    #[test]
    fn get_set_stream_is_unchanged_by_the_new_kinds() {
        // The GET:SET draw is the same as before delete/incr/cas existed: set iff the draw over
        // get+set is below set.
        let mut g = Generator::new(spec(10, KeyDist::Uniform, Ratio::get_set(10, 1)), 3, 0, 1).unwrap();
        let mut rng = SmallRng::seed_from_u64(thread_seed(3, 0));
        for _ in 0..10_000 {
            let want = if rng.random_range(0..11u32) < 1 { OpKind::Set } else { OpKind::Get };
            assert_eq!(g.next_kind(), want);
        }
    }

    #[test]
    fn counter_keys_share_the_key_size() {
        let ks = KeySpace::new(1000, 10).unwrap();
        let mut out = [0u8; 10];
        ks.write_counter_key(42, &mut out);
        assert_eq!(&out, b"ctr:000042");
        assert_eq!(ks.parse_key(&out), None, "counters are not values");
    }

    #[test]
    fn parses_lognormal_sizes() {
        let v: ValueSize = "lognormal:300:1.2:100000".parse().unwrap();
        assert_eq!(v, ValueSize { min: 1, max: 100_000, dist: SizeDist::LogNormal { median: 300.0, sigma: 1.2 } });
        assert_eq!(v.to_string(), "lognormal:300:1.2:100000");
        let d: ValueSize = "lognormal:300:1.2".parse().unwrap();
        assert_eq!(d.max, LOGNORMAL_DEFAULT_MAX);
        for bad in ["lognormal:300", "lognormal:0:1", "lognormal:300:-1", "lognormal:300:1:100", "lognormal:a:1"] {
            assert!(bad.parse::<ValueSize>().is_err(), "{bad}");
        }
        assert!("lognormal:300:1:1000:5".parse::<ValueSize>().is_err());
    }

    #[test]
    fn lognormal_sizes_have_their_median_and_respect_the_clamps() {
        let mut sp = spec(10, KeyDist::Uniform, Ratio::get_set(1, 1));
        sp.value_size = ValueSize { min: 16, max: 20_000, dist: SizeDist::LogNormal { median: 500.0, sigma: 1.5 } };
        let mut g = Generator::new(sp, 17, 0, 1).unwrap();
        let mut sizes: Vec<usize> = (0..100_001).map(|_| g.next_value_size()).collect();
        assert!(sizes.iter().all(|&v| (16..=20_000).contains(&v)));
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2] as f64;
        assert!((median - 500.0).abs() / 500.0 < 0.05, "median {median}");
        // Heavy tail: P(X > 20000) = P(Z > ln(40)/1.5) ~ 0.7%, all clamped to the max; and the
        // low clamp catches P(X < 16) = P(Z < -ln(31.25)/1.5) ~ 1.1%.
        let at_max = sizes.iter().filter(|&&v| v == 20_000).count() as f64 / sizes.len() as f64;
        let at_min = sizes.iter().filter(|&&v| v == 16).count() as f64 / sizes.len() as f64;
        assert!(at_max > 0.004 && at_max < 0.011, "share at max {at_max}");
        assert!(at_min > 0.007 && at_min < 0.016, "share at min {at_min}");
        // Mean well above the median (for sigma 1.5 the unclamped mean is ~3.1x the median).
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!(mean > 2.0 * median, "mean {mean}");
    }

    #[test]
    fn value_sizes_stay_in_range_and_cover_it() {
        let mut sp = spec(10, KeyDist::Uniform, Ratio::get_set(1, 1));
        sp.value_size = ValueSize::uniform(10, 20);
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
        let sp = spec(1_000_000, KeyDist::Uniform, Ratio::get_set(1, 1));
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
