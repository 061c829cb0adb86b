//! The meta commands (`mg ms md ma me mn`), sans-IO: their command lines checked as
//! memcached 1.6.18's `proto_text.c` checks them (token counts, flag pre-parsing, the
//! error each mistake gets), into a [`MetaOp`] that borrows the line. A meta op keeps
//! its flag tokens as sent: the shard reads their values with [`MetaFlags::parse`] and
//! writes the return flags in request order (`shard::meta`). Keys sent in base64 (`b`)
//! stay encoded in the op and are decoded where they are used ([`MetaOp::key`]).

use super::{base64, done, Op, Parse, ProtocolError, Request, Tokens, KEY_MAX_LENGTH};
use crate::numbers::{parse_i32_truncating, parse_u32_truncating, parse_u64};
use crate::store::Limits;

/// memcached's `MFLAG_MAX_OPT_LENGTH`: a meta line of more tokens (counting the
/// command, the key and the terminal empty token) is refused.
const MAX_TOKENS: usize = 20;
/// The longest opaque token (`O...`, its `O` included).
pub const MAX_OPAQUE: usize = 32;

/// Which meta command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCmd {
    /// `mg`
    Get,
    /// `ms`
    Set,
    /// `ms` whose value is over the item size limit: the key is dropped and the answer
    /// is `SERVER_ERROR object too large for cache` (the value is skipped).
    SetTooLarge,
    /// `md`
    Delete,
    /// `ma`
    Arith,
    /// `me`
    Debug,
}

/// One meta command for one key: what a shard executes. `flags` is the rest of the line
/// after the key (after the data length for `ms`), as sent.
#[derive(Debug, Clone, Copy)]
pub struct MetaOp<'a> {
    pub cmd: MetaCmd,
    /// The key as sent (base64 when the key is binary, see [`MetaOp::binary_key`]).
    pub key: &'a [u8],
    pub flags: &'a [u8],
    /// The value of an `ms`.
    pub data: &'a [u8],
}

/// Room for a decoded key.
pub type KeyBuf = [u8; KEY_MAX_LENGTH];

impl<'a> MetaOp<'a> {
    /// Whether the key was sent in base64: the `b` flag (for `me`, a `b` right after
    /// the key, as memcached reads it).
    pub fn binary_key(&self) -> bool {
        match self.cmd {
            MetaCmd::Debug => flag_tokens(self.flags).next() == Some(b"b"),
            _ => flag_tokens(self.flags).any(|t| t[0] == b'b'),
        }
    }

    /// The key the op is for: decoded into `buf` (a [`KeyBuf`]) when it was sent in
    /// base64 (an op only exists once its key decoded; None if it does not).
    pub fn key<'k>(&self, buf: &'k mut [u8]) -> Option<&'k [u8]>
    where
        'a: 'k,
    {
        if !self.binary_key() {
            return Some(self.key);
        }
        let n = base64::decode(self.key, buf)?;
        Some(&buf[..n])
    }
}

/// The flag tokens of a meta line (split on spaces, empty tokens skipped).
pub fn flag_tokens(flags: &[u8]) -> impl Iterator<Item = &[u8]> {
    flags.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// The values of a meta command's flags (memcached's `_meta_flag_preparse`). Numbers
/// are as memcached parses them; a flag not given has its default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaFlags {
    /// One bit per flag letter present (see [`MetaFlags::has`]).
    letters: u64,
    /// `T`: the new TTL.
    pub ttl: i32,
    /// `N`: the TTL of an item created on a miss.
    pub vivify_ttl: i32,
    /// `R`: win a recache when the TTL left is below this.
    pub recache_ttl: i32,
    /// `F`: client flags.
    pub client_flags: u32,
    /// `C`: compare CAS.
    pub cas: u64,
    /// `E`: the CAS the write gives the item (the client's own; 0: none). A flag of
    /// memcached 1.6.21 and later.
    pub new_cas: u64,
    /// `D`: delta (default 1).
    pub delta: u64,
    /// `J`: initial value (default 0).
    pub initial: u64,
    /// `M`: the mode character (0 when none).
    pub mode: u8,
}

fn letter_bit(c: u8) -> Option<u64> {
    match c {
        b'A'..=b'Z' => Some(1 << (c - b'A')),
        b'a'..=b'z' => Some(1 << (26 + c - b'a')),
        _ => None,
    }
}

/// memcached's answers to a meta line it cannot take.
pub mod errors {
    pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
    pub const DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
    pub const INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
    pub const BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
    pub const KEY_DECODING: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
    pub const M_LENGTH: &[u8] = b"CLIENT_ERROR incorrect length for M token\r\n";
    pub const INITIAL: &[u8] = b"CLIENT_ERROR invalid numeric initial value\r\n";
    pub const DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta value\r\n";
    pub const INVALID_OR_DUPLICATE: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
    pub const OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
    pub const MG_FLAGS_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags are too long\r\n";
    pub const FLAGS_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags too long\r\n";
    pub const MS_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
    pub const MA_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";
}

impl MetaFlags {
    /// Whether flag `c` (a letter) was given.
    pub fn has(&self, c: u8) -> bool {
        letter_bit(c).is_some_and(|bit| self.letters & bit != 0)
    }

    /// Reads the flag tokens `flags` of a command whose key is `key` (as sent), as
    /// memcached's pre-parse does: a repeated flag (or a byte above 126) and an unknown
    /// letter stop it at once; a bad number, a `b` key that does not decode or a bad `M`
    /// is remembered and the last such error is the answer.
    pub fn parse(flags: &[u8], key: &[u8]) -> Result<MetaFlags, &'static [u8]> {
        let mut f = MetaFlags { delta: 1, ..MetaFlags::default() };
        let mut seen = [false; 127];
        let mut error: Option<&'static [u8]> = None;
        let mut failed = false;
        for token in flag_tokens(flags) {
            let c = token[0];
            if c >= 127 || seen[usize::from(c)] {
                return Err(errors::DUPLICATE_FLAG);
            }
            seen[usize::from(c)] = true;
            let value = &token[1..];
            let mut fail = |e: Option<&'static [u8]>| {
                failed = true;
                if e.is_some() {
                    error = e;
                }
            };
            match c {
                b'b' => {
                    if base64::decode(key, &mut [0u8; KEY_MAX_LENGTH]).is_none() {
                        fail(Some(errors::KEY_DECODING));
                    }
                }
                b'N' | b'T' | b'R' => match parse_i32_truncating(value) {
                    Some(v) => match c {
                        b'N' => f.vivify_ttl = v,
                        b'T' => f.ttl = v,
                        _ => f.recache_ttl = v,
                    },
                    None => fail(Some(errors::BAD_TOKEN)),
                },
                b'F' => match parse_u32_truncating(value) {
                    Some(v) => f.client_flags = v,
                    None => fail(None),
                },
                b'C' => match parse_u64(value) {
                    Some(v) => f.cas = v,
                    None => fail(Some(errors::BAD_TOKEN)),
                },
                b'E' => match parse_u64(value) {
                    Some(v) => f.new_cas = v,
                    None => fail(Some(errors::BAD_TOKEN)),
                },
                b'M' => match value {
                    [mode] => f.mode = *mode,
                    _ => fail(Some(errors::M_LENGTH)),
                },
                b'J' => match parse_u64(value) {
                    Some(v) => f.initial = v,
                    None => fail(Some(errors::INITIAL)),
                },
                b'D' => match parse_u64(value) {
                    Some(v) => f.delta = v,
                    None => fail(Some(errors::DELTA)),
                },
                b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'v' | b'h' | b'u' | b'q' | b'l' | b'I'
                | b'x' => {}
                _ => return Err(errors::INVALID_FLAG),
            }
            if let Some(bit) = letter_bit(c) {
                f.letters |= bit;
            }
        }
        if failed {
            return Err(error.unwrap_or(errors::BAD_FORMAT));
        }
        Ok(f)
    }
}

fn meta_error(line: &'static [u8], consumed: usize) -> Parse<'static> {
    done(Request::Answer(line), false, consumed)
}

/// An `O` token longer than memcached takes.
fn opaque_too_long(flags: &[u8]) -> bool {
    flag_tokens(flags).any(|t| t[0] == b'O' && t.len() > MAX_OPAQUE)
}

/// The rest of `line` after its first `n` tokens.
fn after_tokens(line: &[u8], n: usize) -> &[u8] {
    let mut rest = line;
    for _ in 0..n {
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    rest
}

/// Parses a meta command line (`tokens` of `line`, which ends at `line_end` in `buf`).
pub(super) fn parse<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    tokens: &Tokens<'a>,
    line_end: usize,
    limits: &Limits,
) -> Parse<'a> {
    let which = tokens.get(0)[1];
    if which == b'n' {
        return done(Request::MetaNoop, false, line_end);
    }
    let cmd = match which {
        b'g' => MetaCmd::Get,
        b's' => MetaCmd::Set,
        b'd' => MetaCmd::Delete,
        b'a' => MetaCmd::Arith,
        b'e' => MetaCmd::Debug,
        _ => return done(Request::Error(ProtocolError::UnknownCommand), false, line_end),
    };
    let key = tokens.get(1);
    if cmd == MetaCmd::Debug {
        return parse_debug(line, tokens, line_end);
    }
    if tokens.count < 3 {
        return done(Request::Error(ProtocolError::UnknownCommand), false, line_end);
    }
    if key.len() > KEY_MAX_LENGTH {
        return meta_error(errors::BAD_FORMAT, line_end);
    }
    if cmd == MetaCmd::Set {
        return parse_set(buf, line, tokens, line_end, limits);
    }
    if tokens.count > MAX_TOKENS {
        let too_long = if cmd == MetaCmd::Get { errors::MG_FLAGS_TOO_LONG } else { errors::FLAGS_TOO_LONG };
        return meta_error(too_long, line_end);
    }
    let flags = after_tokens(line, 2);
    let parsed = match MetaFlags::parse(flags, key) {
        // `x` (remove the value, keep the item) is `md`'s alone.
        Ok(parsed) if parsed.has(b'x') && cmd != MetaCmd::Delete => Err(errors::INVALID_FLAG),
        other => other,
    };
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(_) if cmd != MetaCmd::Get => return meta_error(errors::INVALID_OR_DUPLICATE, line_end),
        Err(e) => return meta_error(e, line_end),
    };
    if opaque_too_long(flags) {
        return meta_error(errors::OPAQUE_TOO_LONG, line_end);
    }
    if cmd == MetaCmd::Arith && !matches!(parsed.mode, 0 | b'I' | b'+' | b'D' | b'-') {
        return meta_error(errors::MA_MODE, line_end);
    }
    done(Request::Op(Op::Meta(MetaOp { cmd, key, flags, data: &[] })), false, line_end)
}

/// `me <key> [b]`: extra tokens are ignored; a `b` right after the key decodes it.
fn parse_debug<'a>(line: &'a [u8], tokens: &Tokens<'a>, line_end: usize) -> Parse<'a> {
    let key = tokens.get(1);
    if tokens.count < 3 || key.len() > KEY_MAX_LENGTH {
        return meta_error(errors::BAD_FORMAT, line_end);
    }
    let op = MetaOp { cmd: MetaCmd::Debug, key, flags: after_tokens(line, 2), data: &[] };
    if op.key(&mut [0u8; KEY_MAX_LENGTH]).is_none() {
        return meta_error(errors::BAD_FORMAT, line_end);
    }
    done(Request::Op(Op::Meta(op)), false, line_end)
}

/// `ms <key> <datalen> <flags>*\r\n<data>\r\n`: errors found before the data length is
/// known leave the data to be read as commands (as memcached does); later ones skip it.
fn parse_set<'a>(buf: &'a [u8], line: &'a [u8], tokens: &Tokens<'a>, line_end: usize, limits: &Limits) -> Parse<'a> {
    let key = tokens.get(1);
    if tokens.count == 3 {
        return meta_error(errors::BAD_FORMAT, line_end);
    }
    if tokens.count > MAX_TOKENS {
        return meta_error(errors::FLAGS_TOO_LONG, line_end);
    }
    let Some(vlen) = parse_i32_truncating(tokens.get(2)) else { return meta_error(errors::BAD_FORMAT, line_end) };
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return meta_error(errors::BAD_FORMAT, line_end);
    }
    let vlen = vlen as usize;
    let skip = |e: &'static [u8]| Parse::Request {
        request: Request::Answer(e),
        noreply: false,
        consumed: line_end,
        swallow: vlen + 2,
    };
    let flags = after_tokens(line, 3);
    let parsed = match MetaFlags::parse(flags, key) {
        Ok(parsed) if parsed.has(b'x') => return skip(errors::INVALID_FLAG),
        Ok(parsed) => parsed,
        Err(e) => return skip(e),
    };
    if opaque_too_long(flags) {
        return skip(errors::OPAQUE_TOO_LONG);
    }
    if !matches!(parsed.mode, 0 | b'E' | b'A' | b'P' | b'R' | b'S') {
        return skip(errors::MS_MODE);
    }
    let op = MetaOp { cmd: MetaCmd::Set, key, flags, data: &[] };
    let key_len = op.key(&mut [0u8; KEY_MAX_LENGTH]).map_or(key.len(), <[u8]>::len);
    if !limits.item_fits(key_len, parsed.client_flags, vlen) {
        let op = MetaOp { cmd: MetaCmd::SetTooLarge, ..op };
        return Parse::Request {
            request: Request::Op(Op::Meta(op)),
            noreply: false,
            consumed: line_end,
            swallow: vlen + 2,
        };
    }
    let data_end = line_end + vlen + 2;
    if buf.len() < data_end {
        return Parse::NeedData { total: data_end };
    }
    if &buf[data_end - 2..data_end] != b"\r\n" {
        return done(Request::Error(ProtocolError::BadDataChunk), false, data_end);
    }
    let data = &buf[line_end..line_end + vlen];
    done(Request::Op(Op::Meta(MetaOp { data, ..op })), false, data_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_as_memcached_preparses_them() {
        let f = MetaFlags::parse(b"v T30 N-1 F7 C99 D5 J3 MA O123 k", b"key").expect("valid");
        assert!(f.has(b'v') && f.has(b'k') && f.has(b'O') && !f.has(b'q'));
        assert_eq!(
            (f.ttl, f.vivify_ttl, f.client_flags, f.cas, f.delta, f.initial, f.mode),
            (30, -1, 7, 99, 5, 3, b'A')
        );
        assert_eq!(MetaFlags::parse(b"", b"k").map(|f| f.delta), Ok(1));
        assert_eq!(MetaFlags::parse(b"v v", b"k"), Err(errors::DUPLICATE_FLAG));
        assert_eq!(MetaFlags::parse(b"\x80", b"k"), Err(errors::DUPLICATE_FLAG));
        assert_eq!(MetaFlags::parse(b"Tx Nz", b"k"), Err(errors::BAD_TOKEN));
        assert_eq!(MetaFlags::parse(b"F1x", b"k"), Err(errors::BAD_FORMAT));
        assert_eq!(MetaFlags::parse(b"Tx Y5", b"k"), Err(errors::INVALID_FLAG), "an unknown flag stops at once");
        assert_eq!(MetaFlags::parse(b"E77 x", b"k").map(|f| (f.new_cas, f.has(b'x'))), Ok((77, true)));
        assert_eq!(MetaFlags::parse(b"Ex", b"k"), Err(errors::BAD_TOKEN));
        assert_eq!(MetaFlags::parse(b"MAB", b"k"), Err(errors::M_LENGTH));
        assert_eq!(MetaFlags::parse(b"b", b"a2V"), Err(errors::KEY_DECODING));
        assert_eq!(MetaFlags::parse(b"Jx Dy", b"k"), Err(errors::DELTA), "the last error is the answer");
    }

    #[test]
    fn binary_keys_decode_where_used() {
        let op = MetaOp { cmd: MetaCmd::Get, key: b"a2V5", flags: b"v b", data: b"" };
        assert_eq!(op.key(&mut [0; KEY_MAX_LENGTH]), Some(&b"key"[..]));
        let plain = MetaOp { flags: b"v", ..op };
        assert_eq!(plain.key(&mut [0; KEY_MAX_LENGTH]), Some(&b"a2V5"[..]));
        let debug = MetaOp { cmd: MetaCmd::Debug, flags: b" b", ..op };
        assert!(debug.binary_key());
        assert!(!MetaOp { flags: b" x b", ..debug }.binary_key());
    }

    #[test]
    fn the_rest_after_tokens() {
        assert_eq!(after_tokens(b"ms  k 5 T1 v", 3), b" T1 v");
        assert_eq!(after_tokens(b"mg k", 2), b"");
    }
}
