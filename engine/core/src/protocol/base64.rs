//! Base64 as memcached 1.6's `base64.c` does it, for the meta protocol's binary keys
//! (`b`): decoding skips bytes outside the alphabet, needs a multiple of four alphabet
//! bytes, and stops after the first block with padding; encoding is standard, padded,
//! without line breaks. A general-purpose base64 library would refuse what memcached
//! accepts, and byte-identical answers are the contract.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Not in the alphabet (skipped when decoding).
const SKIP: u8 = 0x80;

const fn decode_table() -> [u8; 256] {
    let mut table = [SKIP; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table[b'=' as usize] = 0;
    table
}

const DECODE: [u8; 256] = decode_table();

/// Decodes `src` into `out` (which must hold `src.len()` bytes); returns the decoded
/// length, or None where memcached's `base64_decode` returns 0 (its failure).
pub fn decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    let count = src.iter().filter(|&&b| DECODE[usize::from(b)] != SKIP).count();
    if count == 0 || count % 4 != 0 || count / 4 * 3 > out.len() {
        return None;
    }
    let mut pos = 0;
    let mut block = [0u8; 4];
    let mut filled = 0;
    let mut pad = 0;
    for &b in src {
        let v = DECODE[usize::from(b)];
        if v == SKIP {
            continue;
        }
        if b == b'=' {
            pad += 1;
        }
        block[filled] = v;
        filled += 1;
        if filled == 4 {
            out[pos] = (block[0] << 2) | (block[1] >> 4);
            out[pos + 1] = (block[1] << 4) | (block[2] >> 2);
            out[pos + 2] = (block[2] << 6) | block[3];
            pos += 3;
            filled = 0;
            if pad > 0 {
                match pad {
                    1 => pos -= 1,
                    2 => pos -= 2,
                    _ => return None,
                }
                break;
            }
        }
    }
    (pos > 0).then_some(pos)
}

/// Appends the base64 encoding of `src` to `out`.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut chunks = src.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend_from_slice(&[
            ALPHABET[(n >> 18) as usize & 63],
            ALPHABET[(n >> 12) as usize & 63],
            ALPHABET[(n >> 6) as usize & 63],
            ALPHABET[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => out.extend_from_slice(&[ALPHABET[usize::from(a >> 2)], ALPHABET[usize::from(a & 3) << 4], b'=', b'=']),
        [a, b] => out.extend_from_slice(&[
            ALPHABET[usize::from(a >> 2)],
            ALPHABET[(usize::from(a & 3) << 4) | usize::from(b >> 4)],
            ALPHABET[usize::from(b & 15) << 2],
            b'=',
        ]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(s: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; s.len()];
        decode(s, &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 1..40 {
            let mut enc = Vec::new();
            encode(&data[len..len * 2], &mut enc);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(decoded(&enc).as_deref(), Some(&data[len..len * 2]), "length {len}");
        }
        let mut enc = Vec::new();
        encode(b"key", &mut enc);
        assert_eq!(enc, b"a2V5");
    }

    #[test]
    fn decodes_as_memcached_does() {
        assert_eq!(decoded(b"a2V5").as_deref(), Some(&b"key"[..]));
        assert_eq!(decoded(b"a2-V5").as_deref(), Some(&b"key"[..]), "bytes outside the alphabet are skipped");
        assert_eq!(decoded(b"a2V"), None, "not a multiple of four");
        assert_eq!(decoded(b""), None);
        assert_eq!(decoded(b"a2V5a2V5").as_deref(), Some(&b"keykey"[..]));
        assert_eq!(decoded(b"aw==").as_deref(), Some(&b"k"[..]));
        assert_eq!(decoded(b"aw==a2V5").as_deref(), Some(&b"k"[..]), "stops after a padded block");
        assert_eq!(decoded(b"a==="), None, "three pads");
        assert_eq!(decoded(b"===="), None);
    }
}
