//! Verifiable values: every value the tool writes is a pure function of (key, version, length),
//! so a value read back can be checked to be *some* value the tool wrote for *that* key.
//!
//! Layout of a value of length `L >= HEADER_LEN`:
//! `[0..8)` the version as 8 lowercase hex digits, `[8..16)` a 32-bit checksum of
//! (key, version, L) as 8 lowercase hex digits, `[16..L)` filler bytes from a PRNG seeded by
//! the same inputs. Checking recomputes everything and compares byte for byte, so a value
//! written for another key, a truncated or extended value, or any flipped byte is caught.

/// Smallest value length that can carry the header.
pub const HEADER_LEN: usize = 16;

/// Why a value failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("value is {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    #[error("value header is not hex")]
    BadHeader,
    #[error("checksum does not match key, version and length")]
    Checksum,
    #[error("value body differs from what was written at byte {0}")]
    Body(usize),
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const FILL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn seed_of(key: &[u8], version: u32, len: usize) -> u64 {
    // FNV-1a over the inputs, then a splitmix64 finaliser for good bit spread.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.iter().chain(version.to_le_bytes().iter()).chain((len as u64).to_le_bytes().iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn checksum(seed: u64) -> u32 {
    (seed ^ (seed >> 32)) as u32
}

fn write_hex32(v: u32, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate().take(8) {
        *b = HEX[((v >> (28 - 4 * i)) & 0xf) as usize];
    }
}

fn read_hex32(s: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u32::from(d);
    }
    Some(v)
}

/// The filler stream (xorshift64*), 8 bytes per step.
struct Filler {
    state: u64,
    word: u64,
    left: u32,
}

impl Filler {
    fn new(seed: u64) -> Self {
        Filler { state: seed | 1, word: 0, left: 0 }
    }

    #[inline]
    fn next_byte(&mut self) -> u8 {
        if self.left == 0 {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            self.left = 8;
        }
        let b = FILL[(self.word & 63) as usize];
        self.word >>= 8;
        self.left -= 1;
        b
    }
}

/// Fills `out` (the whole value, `out.len() >= HEADER_LEN`) with the value for `key` at `version`.
pub fn fill_value(key: &[u8], version: u32, out: &mut [u8]) {
    debug_assert!(out.len() >= HEADER_LEN);
    let seed = seed_of(key, version, out.len());
    write_hex32(version, &mut out[0..8]);
    write_hex32(checksum(seed), &mut out[8..16]);
    let mut f = Filler::new(seed);
    for b in &mut out[HEADER_LEN..] {
        *b = f.next_byte();
    }
}

/// Checks that `value` is one the tool wrote for `key`; returns its version.
pub fn check_value(key: &[u8], value: &[u8]) -> Result<u32, VerifyError> {
    if value.len() < HEADER_LEN {
        return Err(VerifyError::TooShort(value.len()));
    }
    let version = read_hex32(&value[0..8]).ok_or(VerifyError::BadHeader)?;
    let sum = read_hex32(&value[8..16]).ok_or(VerifyError::BadHeader)?;
    let seed = seed_of(key, version, value.len());
    if sum != checksum(seed) {
        return Err(VerifyError::Checksum);
    }
    let mut f = Filler::new(seed);
    for (i, &b) in value[HEADER_LEN..].iter().enumerate() {
        if b != f.next_byte() {
            return Err(VerifyError::Body(HEADER_LEN + i));
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_sizes_and_versions() {
        for len in [HEADER_LEN, 17, 32, 100, 4096] {
            for version in [0u32, 1, 0xdead_beef, u32::MAX] {
                let mut v = vec![0u8; len];
                fill_value(b"key:000042", version, &mut v);
                assert_eq!(check_value(b"key:000042", &v), Ok(version));
                assert!(v.iter().all(|b| b.is_ascii_graphic()));
            }
        }
    }

    #[test]
    fn detects_corruption_anywhere() {
        let mut v = vec![0u8; 64];
        fill_value(b"key:000001", 7, &mut v);
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            assert!(check_value(b"key:000001", &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn detects_value_of_another_key_or_length() {
        let mut v = vec![0u8; 48];
        fill_value(b"key:000001", 3, &mut v);
        assert_eq!(check_value(b"key:000002", &v), Err(VerifyError::Checksum));
        assert!(check_value(b"key:000001", &v[..47]).is_err());
        let mut longer = v.clone();
        longer.push(b'A');
        assert!(check_value(b"key:000001", &longer).is_err());
        assert_eq!(check_value(b"key:000001", &v[..10]), Err(VerifyError::TooShort(10)));
    }

    #[test]
    fn differs_by_version() {
        let mut a = vec![0u8; 32];
        let mut b = vec![0u8; 32];
        fill_value(b"k", 1, &mut a);
        fill_value(b"k", 2, &mut b);
        assert_ne!(a, b);
    }
}
