//! Differential conformance suite for the memcached text protocol.
//!
//! Owns the case-file format (`tests/conformance/cases.txt`, documented at its top), the parser
//! for it, the session runner and the reply normaliser. Every case is sent, on a fresh
//! connection after a `flush_all` on another connection, to Debian's `memcached` (the
//! reference: whatever it answers is the expected answer) and to `ringcache`; the two replies
//! must be byte-identical after normalisation. Nothing here hard-codes an expected reply.
//!
//! Reading a reply: after each step of a case the runner sends a sentinel `version\r\n` and reads
//! until as many `VERSION ` lines as the step asked for (its own `version` commands plus the
//! sentinel) have arrived. `@closes` cases send no sentinel after their last step and read to
//! EOF instead. Abnormal ends are appended to the reply as markers (`<<closed>>`,
//! `<<timeout>>`, `<<read error: ..>>`) so they take part in the comparison.
//!
//! Normalisation, applied to both replies before comparing, and nothing else:
//! - the CAS unique (5th field) of `VALUE <key> <flags> <bytes> <cas>` lines becomes `<cas>`;
//! - the text after `VERSION ` becomes `<version>`;
//! - in `@stats` cases only, each run of consecutive `STAT ...` lines becomes one `STAT <...>`
//!   line: the two servers expose different stat names and values, so for stats only the
//!   reply's shape is compared (`STAT` lines, then `END`, or `RESET`, `ERROR`...).
//!
//! Data blocks that follow `VALUE` lines are skipped by length, so value bytes are never
//! normalised. A case that misbehaves against memcached itself (times out, closes when not
//! marked `@closes`, stays open when marked) is reported as a case defect.
//!
//! Every read waits at most `IDLE_TIMEOUT` for more bytes; if ringcache times out in
//! `MAX_CONSECUTIVE_TIMEOUTS` cases in a row the run stops early instead of waiting on each case.
//!
//! Environment: `CONFORMANCE_FILTER=substring` runs only the cases whose name contains it;
//! `CONFORMANCE_VERBOSE=1` prints every case with memcached's (normalised) reply.
//!
//! The servers are started with the shared helpers (`start_memcached`, `start_ringcache`); the
//! runner opens its own connections instead of `Server::connect`/`roundtrip`, because those
//! panic on the first I/O error and this suite must report every mismatching case.

use ringcache_test_support::{start_memcached, start_ringcache};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The scripted sessions, compiled into the test so an edit re-runs it: the classic
/// commands, and the meta commands.
const CASE_FILE: &str = include_str!("conformance/cases.txt");
const META_CASE_FILE: &str = include_str!("conformance/meta.txt");
/// Minimum number of meta cases (guards against a truncated file).
const MIN_META_CASES: usize = 200;
/// The sentinel sent after every step; its reply, `VERSION ...\r\n`, marks the reply's end.
const SENTINEL: &[u8] = b"version\r\n";
/// How long a read may wait for more bytes before the reply counts as timed out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound for one step (a large value in a debug build still takes milliseconds).
const STEP_DEADLINE: Duration = Duration::from_secs(15);
/// Pause between the writes of a step that `@split` cut into several writes.
const SPLIT_PAUSE: Duration = Duration::from_millis(50);
/// Flags both servers are started with.
const SERVER_ARGS: &[&str] = &["-t", "2"];
/// Minimum size of the suite (guards against a truncated case file).
const MIN_CASES: usize = 150;
/// After this many consecutive cases in which ringcache timed out, the run stops: a server that
/// hangs would otherwise cost several seconds per remaining case.
const MAX_CONSECUTIVE_TIMEOUTS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Case file model and parser
// ---------------------------------------------------------------------------------------------

/// One piece of the bytes a step sends; `Cas` and `Now` are resolved per server at send time.
#[derive(Debug, Clone)]
enum Piece {
    Bytes(Vec<u8>),
    /// `{cas}` (latest CAS unique seen in this case) or `{cas:KEY}` (latest one for KEY),
    /// plus an offset (`{cas+N}`, `{cas-N}`: a CAS newer or older than the latest).
    Cas(Option<Vec<u8>>, i64),
    /// `{now}`, `{now+N}`, `{now-N}`: the current Unix time plus the offset, in seconds.
    Now(i64),
}

/// Bytes sent and answered as one unit: the reply is read (sentinel) before the next step.
#[derive(Debug)]
struct Step {
    /// Separate writes (cut by `@split`), sent with a short pause in between.
    writes: Vec<Vec<Piece>>,
    /// `@wait S`: sleep this long after the step's reply has been read.
    wait_after: Option<Duration>,
    /// `@conn N`: the connection (1 to `MAX_CONNS`) the step is sent on.
    conn: usize,
}

/// Connections a case may use (`@conn N`).
const MAX_CONNS: usize = 4;

impl Step {
    fn new(conn: usize) -> Self {
        Step { writes: vec![Vec::new()], wait_after: None, conn }
    }
}

#[derive(Debug)]
struct Case {
    name: String,
    line: usize,
    /// `@closes`: the server is expected to close the connection; read to EOF, no sentinel.
    closes: bool,
    /// `@stats`: compare runs of `STAT` lines by shape only.
    stats: bool,
    steps: Vec<Step>,
}

impl Case {
    fn new(name: String, line: usize) -> Self {
        Case { name, line, closes: false, stats: false, steps: vec![Step::new(1)] }
    }

    fn current_write(&mut self) -> &mut Vec<Piece> {
        let step = self.steps.last_mut().expect("a case always has a step");
        step.writes.last_mut().expect("a step always has a write")
    }
}

fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let err = |msg: String| format!("cases.txt line {line_no}: {msg}");
        if let Some(name) = raw.strip_prefix("===") {
            let name = name.trim();
            if name.is_empty() {
                return Err(err("empty case name".into()));
            }
            if cases.iter().any(|c| c.name == name) {
                return Err(err(format!("duplicate case name `{name}`")));
            }
            cases.push(Case::new(name.to_string(), line_no));
            continue;
        }
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err("text before the first `=== case` header".into()));
        };
        if let Some(directive) = raw.strip_prefix('@') {
            let words: Vec<&str> = directive.split_whitespace().collect();
            match words.as_slice() {
                ["closes"] => case.closes = true,
                ["stats"] => case.stats = true,
                ["split"] => case.steps.last_mut().expect("a case always has a step").writes.push(Vec::new()),
                ["sync"] => {
                    let conn = case.steps.last().map_or(1, |s| s.conn);
                    case.steps.push(Step::new(conn));
                }
                ["conn", n] => {
                    let n: usize = n.parse().map_err(|_| err(format!("bad @conn `{n}`")))?;
                    if !(1..=MAX_CONNS).contains(&n) {
                        return Err(err(format!("@conn must be 1 to {MAX_CONNS}")));
                    }
                    case.steps.push(Step::new(n));
                }
                ["wait", secs] => {
                    let secs: f64 = secs.parse().map_err(|_| err(format!("bad @wait seconds `{secs}`")))?;
                    if !(0.0..=10.0).contains(&secs) {
                        return Err(err("@wait must be between 0 and 10 seconds".into()));
                    }
                    let step = case.steps.last_mut().expect("a case always has a step");
                    step.wait_after = Some(Duration::from_secs_f64(secs));
                    let conn = step.conn;
                    case.steps.push(Step::new(conn));
                }
                _ => return Err(err(format!("unknown directive `{raw}`"))),
            }
            continue;
        }
        let (pieces, no_line_end) = parse_body_line(raw).map_err(err)?;
        let write = case.current_write();
        write.extend(pieces);
        if !no_line_end {
            write.push(Piece::Bytes(b"\r\n".to_vec()));
        }
    }
    for case in &mut cases {
        // Drop the empty writes and steps that directives leave behind.
        for step in &mut case.steps {
            step.writes.retain(|w| !w.is_empty());
        }
        case.steps.retain(|s| !s.writes.is_empty());
        if case.steps.is_empty() {
            return Err(format!("case `{}` (line {}) sends nothing", case.name, case.line));
        }
        if case.steps.last().is_some_and(|s| s.wait_after.is_some()) {
            return Err(format!(
                "case `{}` (line {}): @wait must be followed by more bytes to send",
                case.name, case.line
            ));
        }
    }
    Ok(cases)
}

/// Parses one body line into pieces; the bool is true when the line ends in a lone `\`
/// (no `\r\n` is appended and the next line continues the same bytes).
fn parse_body_line(line: &str) -> Result<(Vec<Piece>, bool), String> {
    let mut pieces = Vec::new();
    let mut buf = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 == bytes.len() => {
                push_bytes(&mut pieces, &mut buf);
                return Ok((pieces, true));
            }
            b'\\' => {
                let (byte, used) = decode_escape(&bytes[i..])?;
                buf.push(byte);
                i += used;
            }
            b'{' => {
                let close = find_unescaped(bytes, i + 1, b'}').ok_or_else(|| format!("unclosed `{{` in `{line}`"))?;
                let expr = &line[i + 1..close];
                match parse_expr(expr)? {
                    Piece::Bytes(b) => buf.extend(b),
                    other => {
                        push_bytes(&mut pieces, &mut buf);
                        pieces.push(other);
                    }
                }
                i = close + 1;
            }
            b'}' => return Err(format!("unmatched `}}` in `{line}` (escape it as `\\}}`)")),
            b => {
                buf.push(b);
                i += 1;
            }
        }
    }
    push_bytes(&mut pieces, &mut buf);
    Ok((pieces, false))
}

fn push_bytes(pieces: &mut Vec<Piece>, buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        pieces.push(Piece::Bytes(std::mem::take(buf)));
    }
}

fn find_unescaped(bytes: &[u8], mut from: usize, target: u8) -> Option<usize> {
    while from < bytes.len() {
        match bytes[from] {
            b'\\' => from += 2,
            b if b == target => return Some(from),
            _ => from += 1,
        }
    }
    None
}

/// Decodes the escape at the start of `s` (which starts with `\`): the byte and its length.
fn decode_escape(s: &[u8]) -> Result<(u8, usize), String> {
    let byte = match s.get(1) {
        Some(b'r') => b'\r',
        Some(b'n') => b'\n',
        Some(b't') => b'\t',
        Some(b'0') => 0,
        Some(b'\\') => b'\\',
        Some(b'{') => b'{',
        Some(b'}') => b'}',
        Some(b'x') => {
            let hex = s
                .get(2..4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("`\\x` needs two hex digits")?;
            return Ok((hex, 4));
        }
        other => return Err(format!("unknown escape `\\{}`", other.map(|&b| b as char).unwrap_or(' '))),
    };
    Ok((byte, 2))
}

/// Decodes escapes in the text of a `{TEXT*N}` repetition (no braces allowed inside).
fn decode_plain(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let (b, used) = decode_escape(&bytes[i..])?;
            out.push(b);
            i += used;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn parse_expr(expr: &str) -> Result<Piece, String> {
    if expr == "cas" {
        return Ok(Piece::Cas(None, 0));
    }
    if let Some(n) = expr.strip_prefix("cas+") {
        return Ok(Piece::Cas(None, n.parse().map_err(|e| format!("{{{expr}}}: {e}"))?));
    }
    if let Some(n) = expr.strip_prefix("cas-") {
        return Ok(Piece::Cas(None, -n.parse::<i64>().map_err(|e| format!("{{{expr}}}: {e}"))?));
    }
    if let Some(key) = expr.strip_prefix("cas:") {
        return Ok(Piece::Cas(Some(decode_plain(key)?), 0));
    }
    if let Some(rest) = expr.strip_prefix("now") {
        let offset = match rest.as_bytes().first() {
            None => 0,
            Some(b'+') => rest[1..].parse::<i64>().map_err(|e| format!("{{{expr}}}: {e}"))?,
            Some(b'-') => -rest[1..].parse::<i64>().map_err(|e| format!("{{{expr}}}: {e}"))?,
            _ => return Err(format!("bad time expression `{{{expr}}}`")),
        };
        return Ok(Piece::Now(offset));
    }
    let (text, count) = expr.rsplit_once('*').ok_or_else(|| format!("unknown expression `{{{expr}}}`"))?;
    let count: usize = count.parse().map_err(|_| format!("bad repeat count in `{{{expr}}}`"))?;
    let unit = decode_plain(text)?;
    let indexed = unit.windows(2).any(|w| w == b"%d");
    let mut out = Vec::with_capacity(unit.len() * count);
    for n in 0..count {
        if indexed {
            out.extend(replace_all(&unit, b"%d", n.to_string().as_bytes()));
        } else {
            out.extend_from_slice(&unit);
        }
    }
    Ok(Piece::Bytes(out))
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reply structure
// ---------------------------------------------------------------------------------------------

/// A reply split into protocol lines (without `\r\n`), the data blocks that `VALUE` lines
/// announce (with their `\r\n`), and a trailing fragment that is not a complete line.
enum Item<'a> {
    Line(&'a [u8]),
    Data(&'a [u8]),
    Tail(&'a [u8]),
}

fn items(reply: &[u8]) -> Vec<Item<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < reply.len() {
        let Some(eol) = find(&reply[pos..], b"\r\n") else {
            out.push(Item::Tail(&reply[pos..]));
            break;
        };
        let line = &reply[pos..pos + eol];
        out.push(Item::Line(line));
        pos += eol + 2;
        if let Some(len) = value_data_len(line) {
            let end = reply.len().min(pos.saturating_add(len).saturating_add(2));
            out.push(Item::Data(&reply[pos..end]));
            pos = end;
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn tokens(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect()
}

/// For a `VALUE key flags bytes [cas]` line, or a meta `VA bytes flags*` line: the number
/// of data bytes that follow.
fn value_data_len(line: &[u8]) -> Option<usize> {
    if line.starts_with(b"VA ") {
        return std::str::from_utf8(tokens(line).get(1)?).ok()?.parse().ok();
    }
    if !line.starts_with(b"VALUE ") {
        return None;
    }
    let t = tokens(line);
    if !(4..=5).contains(&t.len()) {
        return None;
    }
    std::str::from_utf8(t[3]).ok()?.parse().ok()
}

fn count_version_lines(reply: &[u8]) -> usize {
    items(reply).iter().filter(|i| matches!(i, Item::Line(l) if l.starts_with(b"VERSION "))).count()
}

/// How many `VERSION` lines the reply to `bytes` (plus the sentinel) must contain: one per
/// line whose first word is `version`, and one for the sentinel.
fn expected_versions(bytes: &[u8]) -> usize {
    1 + bytes
        .split(|&b| b == b'\n')
        .filter(|l| tokens(l).first().is_some_and(|t| t.strip_suffix(b"\r").unwrap_or(t) == b"version"))
        .count()
}

/// The CAS field of a `VALUE key flags bytes cas` line (a slice of `line`).
fn cas_token(line: &[u8]) -> Option<&[u8]> {
    if !line.starts_with(b"VALUE ") {
        return None;
    }
    value_data_len(line)?;
    let t = tokens(line);
    (t.len() == 5).then(|| t[4])
}

/// The return flags of a meta status line (`HD`, `VA <n>`, `EN`, `NS`, `EX`, `NF`), or
/// None for any other line.
fn meta_flags(line: &[u8]) -> Option<Vec<&[u8]>> {
    let t = tokens(line);
    let skip = match *t.first()? {
        b"VA" => 2,
        b"HD" | b"EN" | b"NS" | b"EX" | b"NF" => 1,
        _ => return None,
    };
    Some(t.into_iter().skip(skip).collect())
}

/// A meta return flag `<letter><digits>` with that letter: its digits.
fn numeric_flag(token: &[u8], letter: u8) -> Option<&[u8]> {
    let digits = token.strip_prefix(&[letter])?;
    (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some(digits)
}

/// The `name=value` field of an `ME` line.
fn me_field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if !line.starts_with(b"ME ") {
        return None;
    }
    tokens(line).into_iter().skip(2).find_map(|t| t.strip_prefix(name)?.strip_prefix(b"="))
}

/// Records the CAS uniques of `VALUE` lines with five fields, of meta `c` flags (by the
/// `k` flag's key when there is one) and of `ME` lines: the latest per key and overall.
fn record_cas(reply: &[u8], cas: &mut CasBook) {
    for item in items(reply) {
        if let Item::Line(line) = item {
            if let Some(unique) = cas_token(line) {
                let key = tokens(line)[1];
                cas.by_key.insert(key.to_vec(), unique.to_vec());
                cas.latest = Some(unique.to_vec());
            } else if let Some(flags) = meta_flags(line) {
                let Some(unique) = flags.iter().find_map(|t| numeric_flag(t, b'c')) else { continue };
                if let Some(key) = flags.iter().find_map(|t| t.strip_prefix(b"k")) {
                    cas.by_key.insert(key.to_vec(), unique.to_vec());
                }
                cas.latest = Some(unique.to_vec());
            } else if let Some(unique) = me_field(line, b"cas") {
                cas.by_key.insert(tokens(line)[1].to_vec(), unique.to_vec());
                cas.latest = Some(unique.to_vec());
            }
        }
    }
}

#[derive(Default)]
struct CasBook {
    latest: Option<Vec<u8>>,
    by_key: HashMap<Vec<u8>, Vec<u8>>,
}

/// A reply after normalisation: its bytes, and the clock readings taken out of it (meta
/// `t` and `l` flags, `ME`'s `exp=` and `la=`), which may differ by a second between two
/// servers whose clocks tick at different moments.
#[derive(Debug, PartialEq)]
struct Normalised {
    bytes: Vec<u8>,
    clock: Vec<i64>,
}

impl Normalised {
    /// Equal bytes, and clock readings within a second of each other.
    fn matches(&self, other: &Normalised) -> bool {
        self.bytes == other.bytes
            && self.clock.len() == other.clock.len()
            && self.clock.iter().zip(&other.clock).all(|(a, b)| a.abs_diff(*b) <= 1)
    }
}

/// The normalisation described in the module comment.
fn normalise(reply: &[u8], stats: bool) -> Normalised {
    let mut out = Vec::with_capacity(reply.len());
    let mut clock = Vec::new();
    let mut in_stat_run = false;
    for item in items(reply) {
        match item {
            Item::Line(line) => {
                if stats && line.starts_with(b"STAT ") {
                    if !in_stat_run {
                        out.extend_from_slice(b"STAT <...>\r\n");
                        in_stat_run = true;
                    }
                    continue;
                }
                in_stat_run = false;
                if line.starts_with(b"VERSION ") {
                    out.extend_from_slice(b"VERSION <version>");
                } else if let Some(cas) = cas_token(line) {
                    // Replace the CAS field in place; every other byte of the line is kept.
                    let at = cas.as_ptr() as usize - line.as_ptr() as usize;
                    out.extend_from_slice(&line[..at]);
                    out.extend_from_slice(b"<cas>");
                    out.extend_from_slice(&line[at + cas.len()..]);
                } else if meta_flags(line).is_some() || line.starts_with(b"ME ") {
                    normalise_meta_line(line, &mut out, &mut clock);
                } else {
                    out.extend_from_slice(line);
                }
                out.extend_from_slice(b"\r\n");
            }
            Item::Data(data) | Item::Tail(data) => {
                in_stat_run = false;
                out.extend_from_slice(data);
            }
        }
    }
    Normalised { bytes: out, clock }
}

/// A meta status line or an `ME` line, token by token: CAS values (`c<n>`, `cas=<n>`)
/// become `<cas>`, clock readings (`t<n>`, `l<n>`, `exp=<n>`, `la=<n>`) become `~` and go
/// to `clock`, and `ME`'s `cls=` and `size=` (ringcache's own figures) become `<cls>` and
/// `<size>`.
fn normalise_meta_line(line: &[u8], out: &mut Vec<u8>, clock: &mut Vec<i64>) {
    let me = line.starts_with(b"ME ");
    for (i, token) in line.split(|&b| b == b' ').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let number = |digits: &[u8]| std::str::from_utf8(digits).ok().and_then(|d| d.parse::<i64>().ok());
        let as_meta_flag = |letter: u8| if me || i == 0 { None } else { numeric_flag(token, letter) };
        if as_meta_flag(b'c').is_some() {
            out.extend_from_slice(b"c<cas>");
        } else if let Some(n) = as_meta_flag(b't').or_else(|| as_meta_flag(b'l')).and_then(number) {
            out.extend_from_slice(&token[..1]);
            out.push(b'~');
            clock.push(n);
        } else if let Some((name, value)) =
            token.iter().position(|&b| b == b'=').filter(|_| me).map(|eq| token.split_at(eq))
        {
            let value = &value[1..];
            out.extend_from_slice(name);
            match name {
                b"cas" => out.extend_from_slice(b"=<cas>"),
                b"cls" => out.extend_from_slice(b"=<cls>"),
                b"size" => out.extend_from_slice(b"=<size>"),
                b"exp" | b"la" => match number(value) {
                    Some(n) => {
                        out.extend_from_slice(b"=~");
                        clock.push(n);
                    }
                    None => {
                        out.push(b'=');
                        out.extend_from_slice(value);
                    }
                },
                _ => {
                    out.push(b'=');
                    out.extend_from_slice(value);
                }
            }
        } else {
            out.extend_from_slice(token);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case against one server
// ---------------------------------------------------------------------------------------------

/// What one server did with one case.
#[derive(Default)]
struct Outcome {
    /// Everything read, with abnormal-end markers appended.
    reply: Vec<u8>,
    /// The bytes of each step as actually sent (placeholders resolved, sentinel included).
    sent: Vec<Vec<u8>>,
    /// Problems that make this server's run of the case unreliable (reset failed, timeouts...).
    problems: Vec<String>,
    /// Some read (reset or step) waited `IDLE_TIMEOUT` in vain.
    timed_out: bool,
}

enum End {
    /// The reply is complete (enough `VERSION` lines, or EOF when EOF was expected).
    Done,
    Closed,
    TimedOut,
    Failed(io::Error),
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_DEADLINE))?;
    Ok(stream)
}

/// Empties the cache with `flush_all` on a separate connection; failures go to `out.problems`.
fn reset(addr: &str, out: &mut Outcome) {
    let mut stream = match connect(addr) {
        Ok(s) => s,
        Err(e) => return out.problems.push(format!("reset: connect: {e}")),
    };
    if let Err(e) = stream.write_all(b"flush_all\r\n") {
        return out.problems.push(format!("reset: send flush_all: {e}"));
    }
    let mut reply = Vec::new();
    let (end, _) = read_reply(&mut stream, &mut reply, |r| r.ends_with(b"\r\n"));
    let problem = match end {
        End::Done if reply == b"OK\r\n" => return,
        End::Done => format!("reset: flush_all answered {}", show(&reply, "")),
        End::Closed => "reset: connection closed before OK".into(),
        End::TimedOut => {
            out.timed_out = true;
            "reset: no answer to flush_all".into()
        }
        End::Failed(e) => format!("reset: read: {e}"),
    };
    out.problems.push(problem);
}

/// Reads into `reply` until `complete(reply)` holds, EOF, an error or the step deadline.
/// Returns how it ended and whether the peer reset the connection.
fn read_reply(stream: &mut TcpStream, reply: &mut Vec<u8>, complete: impl Fn(&[u8]) -> bool) -> (End, bool) {
    let deadline = Instant::now() + STEP_DEADLINE;
    let start = reply.len();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if complete(&reply[start..]) {
            return (End::Done, false);
        }
        if Instant::now() >= deadline {
            return (End::TimedOut, false);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return (End::Closed, false),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (End::TimedOut, false),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (End::Closed, true),
            Err(e) => return (End::Failed(e), false),
        }
    }
}

fn resolve(pieces: &[Piece], cas: &CasBook) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::Cas(key, offset) => {
                let found = match key {
                    None => cas.latest.as_ref(),
                    Some(k) => cas.by_key.get(k),
                };
                let moved = found.and_then(|c| {
                    let c: u64 = std::str::from_utf8(c).ok()?.parse().ok()?;
                    Some(c.checked_add_signed(*offset)?.to_string().into_bytes())
                });
                // A missing CAS is sent as a non-number, which the server rejects visibly.
                out.extend_from_slice(moved.as_deref().unwrap_or(b"NO_CAS_SEEN"));
            }
            Piece::Now(offset) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
                out.extend_from_slice((now + offset).to_string().as_bytes());
            }
        }
    }
    out
}

/// Sends `writes` on a helper thread (so a large request cannot deadlock against a large
/// reply) while this thread reads the reply.
fn send_and_read(
    stream: &mut TcpStream,
    writes: &[Vec<u8>],
    reply: &mut Vec<u8>,
    complete: impl Fn(&[u8]) -> bool,
) -> (End, bool, io::Result<()>) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => return (End::Failed(e), false, Ok(())),
    };
    std::thread::scope(|s| {
        let sender = s.spawn(move || -> io::Result<()> {
            for (n, bytes) in writes.iter().enumerate() {
                if n > 0 {
                    std::thread::sleep(SPLIT_PAUSE);
                }
                writer.write_all(bytes)?;
                writer.flush()?;
            }
            Ok(())
        });
        let (end, reset) = read_reply(stream, reply, complete);
        let sent = sender.join().unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")));
        (end, reset, sent)
    })
}

fn run_case(addr: &str, case: &Case) -> Outcome {
    let mut out = Outcome::default();
    reset(addr, &mut out);
    // Connection 1 is opened first; the others when a step first uses them.
    let mut conns: Vec<Option<TcpStream>> = (0..MAX_CONNS).map(|_| None).collect();
    let mut current = 1;
    let mut cas = CasBook::default();
    for (n, step) in case.steps.iter().enumerate() {
        if conns[step.conn - 1].is_none() {
            match connect(addr) {
                Ok(s) => conns[step.conn - 1] = Some(s),
                Err(e) => {
                    out.problems.push(format!("connect: {e}"));
                    out.reply.extend_from_slice(format!("<<connect failed: {e}>>").as_bytes());
                    return out;
                }
            }
        }
        if step.conn != current {
            // Both servers get the same marker: where the case moved to another connection.
            out.reply.extend_from_slice(format!("<<conn {}>>\r\n", step.conn).as_bytes());
            current = step.conn;
        }
        let stream = conns[step.conn - 1].as_mut().expect("opened above");
        let last = n + 1 == case.steps.len();
        let expect_close = case.closes && last;
        let mut writes: Vec<Vec<u8>> = step.writes.iter().map(|w| resolve(w, &cas)).collect();
        let want = expected_versions(&writes.concat());
        if !expect_close {
            writes.last_mut().expect("parser drops steps without writes").extend_from_slice(SENTINEL);
        }
        out.sent.push(writes.concat());
        let step_start = out.reply.len();
        let (end, was_reset, sent) = if expect_close {
            send_and_read(stream, &writes, &mut out.reply, |_| false)
        } else {
            send_and_read(stream, &writes, &mut out.reply, |r| r.ends_with(b"\r\n") && count_version_lines(r) >= want)
        };
        if let Err(e) = sent {
            // A server that closes early may make our write fail; only unexpected ones count.
            if !expect_close {
                out.problems.push(format!("step {}: send: {e}", n + 1));
            }
        }
        let marker = match (&end, expect_close) {
            (End::Done, _) => None,
            (End::Closed, true) => Some("<<closed>>".to_string()),
            (End::Closed, false) => {
                out.problems.push(format!(
                    "step {}: connection closed{} (case not marked @closes)",
                    n + 1,
                    if was_reset { " by reset" } else { "" }
                ));
                Some("<<closed>>".to_string())
            }
            (End::TimedOut, _) => {
                out.timed_out = true;
                out.problems.push(format!(
                    "step {}: timed out waiting for {}",
                    n + 1,
                    if expect_close { "the server to close" } else { "the sentinel VERSION" }
                ));
                Some("<<timeout>>".to_string())
            }
            (End::Failed(e), _) => {
                out.problems.push(format!("step {}: read: {e}", n + 1));
                Some(format!("<<read error: {:?}>>", e.kind()))
            }
        };
        record_cas(&out.reply[step_start..], &mut cas);
        if let Some(m) = marker {
            out.reply.extend_from_slice(m.as_bytes());
            break;
        }
        if let Some(wait) = step.wait_after {
            std::thread::sleep(wait);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

const SHOW_LIMIT: usize = 3000;
const LINE_LIMIT: usize = 300;

/// Escapes bytes readably: `\r`, `\t`, `\xNN`, `\\`; each line (ended by `\n`) is shown on its
/// own indented line, a run of identical lines once with `(xN)`, and a run of 32+ equal bytes
/// as `{c*N}` as in the case file. Output is capped at about `SHOW_LIMIT` characters,
/// and each line at `LINE_LIMIT`.
fn show(bytes: &[u8], indent: &str) -> String {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let mut s = String::new();
    let mut i = 0;
    while i < lines.len() {
        if s.len() > SHOW_LIMIT {
            let rest: usize = lines[i..].iter().map(|l| l.len()).sum();
            let _ = writeln!(s, "{indent}... ({rest} more bytes)");
            break;
        }
        let line = lines[i];
        let repeats = lines[i..].iter().take_while(|&&l| l == line).count();
        s.push_str(indent);
        let shown = escape_run(line);
        if shown.len() > LINE_LIMIT {
            let cut = (0..=LINE_LIMIT).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
            let _ = write!(s, "{}... ({} bytes in this line)", &shown[..cut], line.len());
        } else {
            s.push_str(&shown);
        }
        if repeats > 1 {
            let _ = write!(s, "   (x{repeats})");
        }
        s.push('\n');
        i += repeats;
    }
    s.truncate(s.trim_end().len());
    s
}

/// Escapes one line, showing runs of 32 or more equal bytes as `{c*N}`.
fn escape_run(bytes: &[u8]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let run = bytes[i..].iter().take_while(|&&c| c == b).count();
        if run >= 32 {
            let _ = write!(s, "{{{}*{run}}}", escape_byte(b));
            i += run;
        } else {
            s.push_str(&escape_byte(b));
            i += 1;
        }
    }
    s
}

fn escape_byte(b: u8) -> String {
    match b {
        b'\r' => "\\r".into(),
        b'\n' => "\\n".into(),
        b'\t' => "\\t".into(),
        b'\\' => "\\\\".into(),
        b'{' => "\\{".into(),
        b'}' => "\\}".into(),
        0x20..=0x7e => (b as char).to_string(),
        _ => format!("\\x{b:02x}"),
    }
}

fn describe_sent(out: &Outcome) -> String {
    let mut s = String::new();
    for (n, bytes) in out.sent.iter().enumerate() {
        let _ = writeln!(s, "  step {} sent:\n{}", n + 1, show(bytes, "    "));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

fn load_cases() -> Vec<Case> {
    let classic = parse_cases(CASE_FILE).unwrap_or_else(|e| panic!("malformed cases.txt: {e}"));
    let meta = parse_cases(META_CASE_FILE).unwrap_or_else(|e| panic!("malformed meta.txt: {e}"));
    let mut all = classic;
    for case in meta {
        assert!(all.iter().all(|c| c.name != case.name), "case `{}` is in both files", case.name);
        all.push(case);
    }
    all
}

#[test]
fn case_files_are_well_formed() {
    let classic = parse_cases(CASE_FILE).map(|c| c.len());
    assert!(classic.as_ref().is_ok_and(|&n| n >= MIN_CASES), "cases.txt: {classic:?} cases, want {MIN_CASES}");
    let meta = parse_cases(META_CASE_FILE).map(|c| c.len());
    assert!(meta.as_ref().is_ok_and(|&n| n >= MIN_META_CASES), "meta.txt: {meta:?} cases, want {MIN_META_CASES}");
    assert!(!load_cases().is_empty());
}

#[test]
fn normalisation_only_touches_cas_version_clocks_and_stats() {
    let reply = b"VALUE k 1 5 123\r\nVALUE\r\nVALUE k 1 1\r\nx\r\nSTAT a 1\r\nSTAT b 2\r\nEND\r\nVERSION 1.6.18\r\n";
    assert_eq!(
        normalise(reply, false).bytes,
        b"VALUE k 1 5 <cas>\r\nVALUE\r\nVALUE k 1 1\r\nx\r\nSTAT a 1\r\nSTAT b 2\r\nEND\r\nVERSION <version>\r\n"
    );
    assert_eq!(
        normalise(reply, true).bytes,
        b"VALUE k 1 5 <cas>\r\nVALUE\r\nVALUE k 1 1\r\nx\r\nSTAT <...>\r\nEND\r\nVERSION <version>\r\n"
    );
    let meta = |t: u32, c: u32| {
        format!("VA 2 s2 t{t} c{c} kc1 l3 t-1 X W\r\nc9\r\nHD c{c} t\r\nEN\r\nME k exp=-5 la=2 cas={c} fetch=no cls={c} size={c}\r\nVA 2\r\nt1\r\n")
    };
    let n = normalise(meta(99, 12).as_bytes(), false);
    assert_eq!(
        n.bytes,
        &b"VA 2 s2 t~ c<cas> kc1 l~ t-1 X W\r\nc9\r\nHD c<cas> t\r\nEN\r\nME k exp=~ la=~ cas=<cas> fetch=no cls=<cls> size=<size>\r\nVA 2\r\nt1\r\n"[..]
    );
    assert_eq!(n.clock, vec![99, 3, -5, 2]);
    assert!(n.matches(&normalise(meta(98, 7).as_bytes(), false)), "a second apart");
    assert!(!n.matches(&normalise(meta(97, 7).as_bytes(), false)), "two seconds apart");
    let mut book = CasBook::default();
    record_cas(meta(5, 42).as_bytes(), &mut book);
    assert_eq!(book.latest.as_deref(), Some(&b"42"[..]));
    assert_eq!(book.by_key.get(&b"c1"[..]).map(Vec::as_slice), Some(&b"42"[..]), "by the k flag's key");
    assert_eq!(expected_versions(b"version\r\n  version x\r\nversions\r\n"), 3);
}

#[test]
fn ringcache_matches_memcached() {
    let filter = std::env::var("CONFORMANCE_FILTER").unwrap_or_default();
    let verbose = std::env::var_os("CONFORMANCE_VERBOSE").is_some_and(|v| v != "0");
    let cases: Vec<Case> = load_cases().into_iter().filter(|c| c.name.contains(&filter)).collect();
    assert!(!cases.is_empty(), "CONFORMANCE_FILTER={filter:?} selects no case");

    let reference = start_memcached(SERVER_ARGS);
    let mut subject = start_ringcache!(SERVER_ARGS);
    let (ref_addr, sub_addr) = (reference.addr(), subject.addr());

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut run = 0;
    let mut consecutive_timeouts = 0;
    for (n, case) in cases.iter().enumerate() {
        // Both servers run the case at the same time, so waits inside a case count once.
        let (expected, actual) = std::thread::scope(|s| {
            let r = s.spawn(|| run_case(&ref_addr, case));
            let a = s.spawn(|| run_case(&sub_addr, case));
            (r.join().expect("memcached runner panicked"), a.join().expect("ringcache runner panicked"))
        });
        run += 1;
        let want = normalise(&expected.reply, case.stats);
        let got = normalise(&actual.reply, case.stats);
        let matched = want.matches(&got);
        let (want, got) = (want.bytes, got.bytes);
        let header = format!("[{}/{}] `{}` (cases.txt line {})", n + 1, cases.len(), case.name, case.line);
        if verbose {
            eprintln!("{header}\n{}  memcached:\n{}\n", describe_sent(&expected), show(&want, "    "));
        }
        if !expected.problems.is_empty() {
            failures.push(format!(
                "CASE DEFECT {header}: memcached itself misbehaved, fix the case:\n  {}\n{}  memcached replied:\n{}",
                expected.problems.join("\n  "),
                describe_sent(&expected),
                show(&want, "    ")
            ));
        } else if !matched {
            let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            let mut msg = format!("MISMATCH {header}\n{}", describe_sent(&expected));
            let _ = writeln!(msg, "  memcached replied:\n{}", show(&want, "    "));
            let _ = writeln!(msg, "  ringcache replied:\n{}", show(&got, "    "));
            let _ = write!(msg, "  (normalised replies; first difference at byte {at})");
            if !actual.problems.is_empty() {
                let _ = write!(msg, "\n  ringcache run: {}", actual.problems.join("; "));
            }
            failures.push(msg);
        }
        consecutive_timeouts = if actual.timed_out { consecutive_timeouts + 1 } else { 0 };
        if consecutive_timeouts >= MAX_CONSECUTIVE_TIMEOUTS {
            failures.push(format!(
                "ringcache timed out in {consecutive_timeouts} cases in a row, up to {header}; \
                 stopping, {} later case(s) not run",
                cases.len() - n - 1
            ));
            break;
        }
        if !subject.is_running() {
            failures.push(format!("ringcache exited during {header}; {} later case(s) not run", cases.len() - n - 1));
            break;
        }
    }
    eprintln!(
        "conformance: ran {run} of {} case(s) in {:.1} s, {} failure(s)",
        cases.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for f in &failures {
        eprintln!("\n{f}");
    }
    assert!(failures.is_empty(), "{} of {run} conformance case(s) failed (details above)", failures.len());
}
