//! Numbers exactly as memcached reads and writes them: parsing as its `safe_strtoull`,
//! `safe_strtoul` and `safe_strtol` do on top of C's `strtoull`/`strtol` (so odd inputs
//! such as leading blanks, `+`/`-` signs, trailing tabs or out-of-range values get the
//! same answer), and decimal formatting without allocation. Shared by the protocol (the
//! numbers of a command line) and the store (`incr`/`decr` on a stored value).

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What C's `strtoull`/`strtol` scan of a base-10 number found.
struct Scan {
    negative: bool,
    magnitude: u64,
    overflow: bool,
    /// Index one past the last digit; 0 when no digits were found (C sets endptr = str).
    end: usize,
}

fn scan(s: &[u8]) -> Scan {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = u64::from(s[i] - b'0');
        match magnitude.checked_mul(10).and_then(|m| m.checked_add(d)) {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    let end = if i == digits_start { 0 } else { i };
    Scan { negative, magnitude, overflow, end }
}

/// memcached's rule after the scan: the number must be followed by a C space or by the
/// end of the token.
fn followed_well(s: &[u8], end: usize) -> bool {
    end != 0 && (end == s.len() || is_c_space(s[end]) || s[end] == 0)
}

/// `safe_strtoull`: a 64-bit unsigned number; a `-` is refused only when the result would
/// look negative as a signed value (so `-0` is accepted, as in memcached).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let sc = scan(s);
    if sc.overflow || !followed_well(s, sc.end) {
        return None;
    }
    let value = if sc.negative { sc.magnitude.wrapping_neg() } else { sc.magnitude };
    if (value as i64) < 0 && s[..sc.end].contains(&b'-') {
        return None;
    }
    Some(value)
}

/// `safe_strtoul` as memcached uses it for client flags: a 64-bit `unsigned long` that is
/// then stored into 32 bits (so 4294967296 becomes 0, as memcached does).
pub fn parse_u32_truncating(s: &[u8]) -> Option<u32> {
    parse_u64(s).map(|v| v as u32)
}

/// `safe_strtol` into an `int32_t`: a 64-bit `long` truncated to 32 bits (memcached
/// stores `strtol`'s result into an int32 without a range check).
pub fn parse_i32_truncating(s: &[u8]) -> Option<i32> {
    let sc = scan(s);
    if !followed_well(s, sc.end) {
        return None;
    }
    // strtol range: [-2^63, 2^63-1]; beyond it errno is ERANGE.
    let limit = if sc.negative { 1u64 << 63 } else { (1u64 << 63) - 1 };
    if sc.overflow || sc.magnitude > limit {
        return None;
    }
    let value = if sc.negative { (sc.magnitude as i64).wrapping_neg() } else { sc.magnitude as i64 };
    Some(value as i32)
}

/// Formats `n` in decimal into `buf`, returning the digits.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_like_memcached() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b"  12"), Some(12));
        assert_eq!(parse_u64(b"+7"), Some(7));
        assert_eq!(parse_u64(b"12\t"), Some(12));
        assert_eq!(parse_u64(b"12x"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"abc"), None);
        assert_eq!(parse_u64(b"-"), None);
    }

    #[test]
    fn flags_truncate_to_32_bits() {
        assert_eq!(parse_u32_truncating(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32_truncating(b"4294967296"), Some(0));
        assert_eq!(parse_u32_truncating(b"-1"), None);
    }

    #[test]
    fn i32_truncates_like_an_int32_store() {
        assert_eq!(parse_i32_truncating(b"-5"), Some(-5));
        assert_eq!(parse_i32_truncating(b"4294967296"), Some(0));
        assert_eq!(parse_i32_truncating(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32_truncating(b"-2147483649"), Some(i32::MAX));
        assert_eq!(parse_i32_truncating(b"9223372036854775808"), None);
        assert_eq!(parse_i32_truncating(b"1.5"), None);
    }
}
