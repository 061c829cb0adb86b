//! The memcached text protocol, sans-IO: bytes in, [`Request`]s out ([`parse`]), replies
//! out as bytes ([`reply`]). Nothing here does I/O or allocates per request; a request
//! borrows the read buffer it was parsed from. Every rule follows memcached 1.6's
//! `proto_text.c`, including its odd corners (token counts, `noreply` on errors, numbers
//! truncated to 32 bits), because byte-identical replies are the contract.

pub mod admin;
pub mod auth;
pub mod base64;
pub mod meta;
pub mod reply;

pub use meta::{KeyBuf, MetaCmd, MetaFlags, MetaOp};

use crate::numbers::{parse_i32_truncating, parse_u32_truncating, parse_u64};
pub use crate::store::{Limits, StoreMode};

/// Longest key memcached accepts.
pub const KEY_MAX_LENGTH: usize = 250;
/// A line longer than this without a newline closes the connection (unless it is a get).
pub const MAX_LINE_WITHOUT_NEWLINE: usize = 2048;
/// Our bound on one multi-key get line (memcached grows its buffer without limit).
pub const MAX_MULTIGET_LINE: usize = 8 << 20;
/// Error replies the protocol layer produces by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `ERROR`
    UnknownCommand,
    /// `CLIENT_ERROR bad command line format`
    BadFormat,
    /// `CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]`
    BadDeleteFormat,
    /// `CLIENT_ERROR bad data chunk`
    BadDataChunk,
    /// `CLIENT_ERROR invalid exptime argument`
    InvalidExptime,
    /// `CLIENT_ERROR invalid numeric delta argument`
    InvalidDelta,
}

/// The keys of a multi-key get: the rest of the request line, split on spaces lazily.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a>(&'a [u8]);

impl<'a> Keys<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.split(|&b| b == b' ').filter(|k| !k.is_empty())
    }

    /// The first key and the keys after it (to resume a long get part way).
    pub fn split_first(&self) -> Option<(&'a [u8], Keys<'a>)> {
        let start = self.0.iter().position(|&b| b != b' ')?;
        let rest = &self.0[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        Some((&rest[..end], Keys(&rest[end..])))
    }
}

/// One parsed request. Slices borrow the read buffer.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `get`/`gets` (cas = true) and `gat`/`gats` (touch = Some(exptime)).
    Get {
        keys: Keys<'a>,
        cas: bool,
        touch: Option<i32>,
    },
    /// A single-key command: set/add/replace/append/prepend/cas (or one whose value is
    /// over `-I`: answer `SERVER_ERROR object too large for cache`, drop the key if it was
    /// a `set`, and skip its data, see [`Parse::Request`]), delete, incr/decr, touch.
    Op(Op<'a>),
    FlushAll {
        delay: i32,
    },
    Version,
    /// `verbosity <level>`.
    Verbosity {
        level: u32,
    },
    Quit,
    Stats {
        args: &'a [u8],
    },
    /// ringcache's own: `cluster <subcommand> ...`, the replica group's administration
    /// (a node alone answers `ERROR`, as memcached does to any unknown command).
    Cluster {
        args: &'a [u8],
    },
    Error(ProtocolError),
    /// `mn`: answered `MN`.
    MetaNoop,
    /// A line memcached answers by itself (a meta command or an administration command
    /// it refuses): the line to answer (unless `noreply`; a meta error never is).
    Answer(&'static [u8]),
    /// An administration command (`slabs`, `lru_crawler`, `lru`, `cache_memlimit`,
    /// `refresh_certs`, `shutdown`).
    Admin(admin::Admin),
}

/// One single-key operation (or, for `FlushAll`, one shard's part of a flush): what a
/// request is broken into and what a shard executes.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// One key of get/gets/gat/gats: emits a `VALUE` block or nothing.
    Get {
        key: &'a [u8],
        cas: bool,
        touch: Option<i32>,
    },
    Store {
        mode: StoreMode,
        key: &'a [u8],
        flags: u32,
        exptime: i32,
        data: &'a [u8],
        cas: u64,
    },
    /// A storage command whose value was over the size limit.
    TooLarge {
        mode: StoreMode,
        key: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    Arith {
        key: &'a [u8],
        incr: bool,
        delta: u64,
    },
    Touch {
        key: &'a [u8],
        exptime: i32,
    },
    /// `flush_all [delay]`; only one shard (the connection's) writes the `OK`.
    FlushAll {
        delay: i32,
        reply: bool,
    },
    /// A meta command (`mg ms md ma me`).
    Meta(MetaOp<'a>),
}

impl<'a> Op<'a> {
    /// The key the op is addressed to (None for a flush, which goes to every shard); a
    /// meta op's base64 key is decoded into `buf`.
    pub fn key<'k>(&self, buf: &'k mut [u8]) -> Option<&'k [u8]>
    where
        'a: 'k,
    {
        match *self {
            Op::Get { key, .. }
            | Op::Store { key, .. }
            | Op::TooLarge { key, .. }
            | Op::Delete { key }
            | Op::Arith { key, .. }
            | Op::Touch { key, .. } => Some(key),
            Op::Meta(ref meta) => meta.key(buf),
            Op::FlushAll { .. } => None,
        }
    }

    /// `f` of the op's key (see [`Op::key`]), without a buffer unless a meta key must
    /// be decoded (the hot path: routing an op to its shard).
    pub fn with_key<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match *self {
            Op::Meta(ref meta) if meta.binary_key() => meta.key(&mut [0u8; KEY_MAX_LENGTH]).map(f),
            Op::Meta(ref meta) => Some(f(meta.key)),
            _ => self.key(&mut []).map(f),
        }
    }
}

/// The outcome of one [`parse`] call.
#[derive(Debug)]
pub enum Parse<'a> {
    /// More bytes are needed before anything can be said.
    Incomplete,
    /// A storage command's line is complete but its data block is not: the request
    /// needs `total` bytes of the buffer in all.
    NeedData { total: usize },
    /// The protocol says to close the connection (over-long line, an HTTP request).
    Close,
    /// A request (possibly an error reply) that used `consumed` bytes of the buffer; the
    /// next `swallow` bytes (the data block of a too-large value) are to be skipped.
    Request { request: Request<'a>, noreply: bool, consumed: usize, swallow: usize },
}

const MAX_TOKENS: usize = 8;

/// The tokens of a command line, memcached style: split on single spaces only, empty
/// tokens skipped. `count` includes memcached's terminal empty token, saturating the way
/// memcached's 24-token tokenizer does for our purposes (every fixed-arity command has
/// fewer than 8 tokens).
struct Tokens<'a> {
    items: [&'a [u8]; MAX_TOKENS],
    count: usize,
}

impl<'a> Tokens<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut items: [&'a [u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
        let mut count = 0;
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if count < MAX_TOKENS {
                items[count] = token;
            }
            count += 1;
        }
        Tokens { items, count: count + 1 }
    }

    fn get(&self, i: usize) -> &'a [u8] {
        if i < MAX_TOKENS {
            self.items[i]
        } else {
            &[]
        }
    }

    /// memcached's `set_noreply_maybe`: the last real token is exactly `noreply`.
    fn noreply(&self) -> bool {
        self.count >= 2 && self.count - 2 < MAX_TOKENS && self.get(self.count - 2) == b"noreply"
    }
}

fn done(request: Request<'_>, noreply: bool, consumed: usize) -> Parse<'_> {
    Parse::Request { request, noreply, consumed, swallow: 0 }
}

/// Parses the first request in `buf`.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Parse<'a> {
    let Some(newline) = memchr(b'\n', buf) else {
        return incomplete_line(buf);
    };
    let line_end = newline + 1;
    // memcached strips a '\r' before '\n' only when the line has at least 2 bytes.
    let mut line = &buf[..newline];
    if line.len() > 1 && line[line.len() - 1] == b'\r' {
        line = &line[..line.len() - 1];
    }
    // memcached treats the line as a C string: a NUL byte ends it.
    if let Some(nul) = memchr(0, line) {
        line = &line[..nul];
    }
    let tokens = Tokens::split(line);
    let command = tokens.get(0);
    if tokens.count < 2 || command.len() < 2 {
        return done(Request::Error(ProtocolError::UnknownCommand), false, line_end);
    }
    if command.len() == 2 && command[0] == b'm' {
        return meta::parse(buf, line, &tokens, line_end, limits);
    }
    let wrong_arity = done(Request::Error(ProtocolError::UnknownCommand), false, line_end);
    match command {
        b"get" | b"gets" | b"gat" | b"gats" | b"bget" => {
            if tokens.count < 3 {
                return wrong_arity;
            }
            parse_get(line, command, line_end)
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" => {
            if tokens.count != 6 && tokens.count != 7 {
                return wrong_arity;
            }
            let mode = match command {
                b"set" => StoreMode::Set,
                b"add" => StoreMode::Add,
                b"replace" => StoreMode::Replace,
                b"append" => StoreMode::Append,
                _ => StoreMode::Prepend,
            };
            parse_store(buf, &tokens, mode, line_end, limits)
        }
        b"cas" => {
            if tokens.count != 7 && tokens.count != 8 {
                return wrong_arity;
            }
            parse_store(buf, &tokens, StoreMode::Cas, line_end, limits)
        }
        b"incr" | b"decr" => {
            if tokens.count != 4 && tokens.count != 5 {
                return wrong_arity;
            }
            let incr = command == b"incr";
            let request = key_and_number(&tokens, parse_u64, ProtocolError::InvalidDelta, |key, delta| {
                Request::Op(Op::Arith { key, incr, delta })
            });
            done(request, tokens.noreply(), line_end)
        }
        b"delete" => {
            if !(3..=5).contains(&tokens.count) {
                return wrong_arity;
            }
            let noreply = tokens.noreply();
            if tokens.count > 3 {
                let hold_is_zero = tokens.get(2) == b"0";
                let valid =
                    (tokens.count == 4 && (hold_is_zero || noreply)) || (tokens.count == 5 && hold_is_zero && noreply);
                if !valid {
                    return done(Request::Error(ProtocolError::BadDeleteFormat), noreply, line_end);
                }
            }
            let key = tokens.get(1);
            if key.len() > KEY_MAX_LENGTH {
                return done(Request::Error(ProtocolError::BadFormat), noreply, line_end);
            }
            done(Request::Op(Op::Delete { key }), noreply, line_end)
        }
        b"touch" => {
            if tokens.count != 4 && tokens.count != 5 {
                return wrong_arity;
            }
            let request =
                key_and_number(&tokens, parse_i32_truncating, ProtocolError::InvalidExptime, |key, exptime| {
                    Request::Op(Op::Touch { key, exptime })
                });
            done(request, tokens.noreply(), line_end)
        }
        b"flush_all" => {
            if !(2..=4).contains(&tokens.count) {
                return wrong_arity;
            }
            let noreply = tokens.noreply();
            let mut delay = 0;
            if tokens.count != if noreply { 3 } else { 2 } {
                match parse_i32_truncating(tokens.get(1)) {
                    Some(d) => delay = d,
                    None => return done(Request::Error(ProtocolError::InvalidExptime), noreply, line_end),
                }
            }
            done(Request::FlushAll { delay }, noreply, line_end)
        }
        b"version" => done(Request::Version, false, line_end),
        b"quit" => done(Request::Quit, false, line_end),
        b"verbosity" => {
            if tokens.count != 3 && tokens.count != 4 {
                return wrong_arity;
            }
            let noreply = tokens.noreply();
            match parse_u32_truncating(tokens.get(1)) {
                Some(level) => done(Request::Verbosity { level }, noreply, line_end),
                None => done(Request::Error(ProtocolError::BadFormat), noreply, line_end),
            }
        }
        b"stats" => {
            if tokens.get(1) == b"detail" {
                return match tokens.get(2) {
                    b"on" => done(Request::Admin(admin::Admin::Detail(true)), false, line_end),
                    b"off" => done(Request::Admin(admin::Admin::Detail(false)), false, line_end),
                    b"dump" => done(Request::Stats { args: b"detail" }, false, line_end),
                    _ => done(Request::Answer(b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"), false, line_end),
                };
            }
            let args = line.get(line.iter().position(|&b| b != b' ').unwrap_or(0) + command.len()..).unwrap_or(&[]);
            done(Request::Stats { args }, false, line_end)
        }
        b"cluster" => {
            let args = line.get(line.iter().position(|&b| b != b' ').unwrap_or(0) + command.len()..).unwrap_or(&[]);
            done(Request::Cluster { args }, false, line_end)
        }
        _ => {
            if let Some(parsed) = admin::parse(command, &tokens, line_end) {
                return parsed;
            }
            if tokens.count >= 2 && tokens.count - 2 < MAX_TOKENS && tokens.get(tokens.count - 2).starts_with(b"HTTP/")
            {
                return Parse::Close;
            }
            wrong_arity
        }
    }
}

/// `<cmd> <key> <number> [noreply]` (incr, decr, touch): memcached checks the key length,
/// then the number, answering `bad_number` when it does not parse.
fn key_and_number<'a, T>(
    tokens: &Tokens<'a>,
    parse_number: fn(&[u8]) -> Option<T>,
    bad_number: ProtocolError,
    make: impl FnOnce(&'a [u8], T) -> Request<'a>,
) -> Request<'a> {
    let key = tokens.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return Request::Error(ProtocolError::BadFormat);
    }
    match parse_number(tokens.get(2)) {
        Some(n) => make(key, n),
        None => Request::Error(bad_number),
    }
}

/// No newline yet: wait, unless the line is already too long to be anything but a
/// multi-key get (memcached's rule: more than 2048 bytes, and not `get `/`gets ` after at
/// most 100 leading spaces, closes the connection).
fn incomplete_line(buf: &[u8]) -> Parse<'_> {
    if buf.len() <= MAX_LINE_WITHOUT_NEWLINE {
        return Parse::Incomplete;
    }
    let spaces = buf.iter().take_while(|&&b| b == b' ').count();
    let rest = &buf[spaces..];
    if spaces > 100 || !(rest.starts_with(b"get ") || rest.starts_with(b"gets ")) {
        return Parse::Close;
    }
    if buf.len() > MAX_MULTIGET_LINE {
        return Parse::Close;
    }
    Parse::Incomplete
}

fn parse_get<'a>(line: &'a [u8], command: &'a [u8], line_end: usize) -> Parse<'a> {
    let start = line.iter().position(|&b| b != b' ').unwrap_or(0) + command.len();
    let rest = &line[start..];
    let cas = command == b"gets" || command == b"gats";
    if command == b"gat" || command == b"gats" {
        // The first token after the command is the exptime; the keys follow it.
        let trimmed = &rest[rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())..];
        let mut parts = trimmed.splitn(2, |&b| b == b' ');
        let exptime_token = parts.next().unwrap_or(&[]);
        let keys = parts.next().unwrap_or(&[]);
        return match parse_i32_truncating(exptime_token) {
            Some(exptime) => done(Request::Get { keys: Keys(keys), cas, touch: Some(exptime) }, false, line_end),
            None => done(Request::Error(ProtocolError::InvalidExptime), false, line_end),
        };
    }
    done(Request::Get { keys: Keys(rest), cas, touch: None }, false, line_end)
}

fn parse_store<'a>(buf: &'a [u8], tokens: &Tokens<'a>, mode: StoreMode, line_end: usize, limits: &Limits) -> Parse<'a> {
    let noreply = tokens.noreply();
    let bad = done(Request::Error(ProtocolError::BadFormat), noreply, line_end);
    let key = tokens.get(1);
    if key.len() > KEY_MAX_LENGTH {
        return bad;
    }
    let (Some(flags), Some(exptime), Some(vlen)) =
        (parse_u32_truncating(tokens.get(2)), parse_i32_truncating(tokens.get(3)), parse_i32_truncating(tokens.get(4)))
    else {
        return bad;
    };
    let mut cas = 0;
    if mode == StoreMode::Cas {
        match parse_u64(tokens.get(5)) {
            Some(c) => cas = c,
            None => return bad,
        }
    }
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return bad;
    }
    let vlen = vlen as usize;
    if !limits.item_fits(key.len(), flags, vlen) {
        let request = Request::Op(Op::TooLarge { mode, key });
        return Parse::Request { request, noreply, consumed: line_end, swallow: vlen + 2 };
    }
    let data_end = line_end + vlen + 2;
    if buf.len() < data_end {
        return Parse::NeedData { total: data_end };
    }
    if &buf[data_end - 2..data_end] != b"\r\n" {
        return done(Request::Error(ProtocolError::BadDataChunk), noreply, data_end);
    }
    let data = &buf[line_end..line_end + vlen];
    done(Request::Op(Op::Store { mode, key, flags, exptime, data, cas }), noreply, data_end)
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_item_size: 1 << 20, cas_enabled: true };

    fn parsed(buf: &[u8]) -> (Request<'_>, bool, usize) {
        match parse(buf, &LIMITS) {
            Parse::Request { request, noreply, consumed, .. } => (request, noreply, consumed),
            other => panic!("expected a request from {buf:?}, got {other:?}"),
        }
    }

    #[test]
    fn set_with_data_block() {
        let (req, noreply, used) = parsed(b"set k 5 10 3\r\nabc\r\nget k\r\n");
        assert!(!noreply);
        assert_eq!(used, 19);
        match req {
            Request::Op(Op::Store { mode, key, flags, exptime, data, .. }) => {
                assert_eq!((mode, key, flags, exptime, data), (StoreMode::Set, &b"k"[..], 5, 10, &b"abc"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refresh_certs_takes_any_arguments_and_a_last_noreply() {
        use admin::Admin::RefreshCerts;
        for (line, quiet) in [
            (&b"refresh_certs\r\n"[..], false),
            (b"refresh_certs noreply\r\n", true),
            (b"refresh_certs a b\r\n", false),
        ] {
            let (req, noreply, used) = parsed(line);
            assert!(matches!(req, Request::Admin(RefreshCerts)), "{req:?}");
            assert_eq!((noreply, used), (quiet, line.len()));
        }
    }

    #[test]
    fn partial_data_is_incomplete() {
        assert!(matches!(parse(b"set k 0 0 10\r\nabc", &LIMITS), Parse::NeedData { total: 26 }));
        assert!(matches!(parse(b"set k 0 0 10\r\n", &LIMITS), Parse::NeedData { total: 26 }));
        assert!(matches!(parse(b"get k", &LIMITS), Parse::Incomplete));
        assert!(matches!(parse(b"set k 0 0 10", &LIMITS), Parse::Incomplete));
    }

    #[test]
    fn bad_data_chunk_consumes_declared_length() {
        let (req, _, used) = parsed(b"set a 0 0 3\r\nabcd\r\n");
        assert!(matches!(req, Request::Error(ProtocolError::BadDataChunk)));
        assert_eq!(used, 13 + 5);
    }

    #[test]
    fn multiget_keys_split_on_spaces() {
        let (req, _, _) = parsed(b"get a  b c\r\n");
        let Request::Get { keys, cas: false, touch: None } = req else { panic!("{req:?}") };
        assert_eq!(keys.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn split_first_walks_the_same_keys_as_iter() {
        for line in [&b"a  b c"[..], b"  x", b"", b"   ", b"k1 k2 ", b"one"] {
            let keys = Keys(line);
            let mut walked = Vec::new();
            let mut rest = keys;
            while let Some((key, after)) = rest.split_first() {
                walked.push(key);
                rest = after;
            }
            assert_eq!(walked, keys.iter().collect::<Vec<_>>(), "{line:?}");
        }
    }

    #[test]
    fn gat_takes_exptime_then_keys() {
        let (req, _, _) = parsed(b"gats 100 a b\r\n");
        let Request::Get { keys, cas: true, touch: Some(100) } = req else { panic!("{req:?}") };
        assert_eq!(keys.iter().count(), 2);
    }

    #[test]
    fn too_large_values_are_swallowed() {
        let parse = parse(b"set k 0 0 2000000\r\n", &LIMITS);
        let Parse::Request { request, consumed, swallow, .. } = parse else { panic!("{parse:?}") };
        assert!(matches!(request, Request::Op(Op::TooLarge { mode: StoreMode::Set, key: b"k" })));
        assert_eq!((consumed, swallow), (19, 2_000_002));
    }

    #[test]
    fn long_lines_close_unless_get() {
        let junk = vec![b'x'; 3000];
        assert!(matches!(parse(&junk, &LIMITS), Parse::Close));
        let mut get = b"get ".to_vec();
        get.extend(std::iter::repeat_n(b'k', 3000));
        assert!(matches!(parse(&get, &LIMITS), Parse::Incomplete));
    }

    #[test]
    fn noreply_and_arity() {
        let (req, noreply, _) = parsed(b"delete k noreply\r\n");
        assert!(matches!(req, Request::Op(Op::Delete { .. })) && noreply);
        let (req, _, _) = parsed(b"delete k 1\r\n");
        assert!(matches!(req, Request::Error(ProtocolError::BadDeleteFormat)));
        let (req, _, _) = parsed(b"incr k\r\n");
        assert!(matches!(req, Request::Error(ProtocolError::UnknownCommand)));
        let (req, _, _) = parsed(b"\r\n");
        assert!(matches!(req, Request::Error(ProtocolError::UnknownCommand)));
    }

    #[test]
    fn item_size_matches_memcached() {
        // Measured against memcached 1.6.18 with -I 1m: key "k", flags 0 fits 1048516 bytes.
        assert!(LIMITS.item_fits(1, 0, 1_048_516));
        assert!(!LIMITS.item_fits(1, 0, 1_048_517));
        assert!(!LIMITS.item_fits(1, 5, 1_048_513));
    }
}
