//! The client side of the memcached text protocol, sans-IO: request encoding into
//! reusable buffers and incremental, allocation-free reply parsing that copes with
//! replies split across reads. Both the classic commands (`get set delete incr ...`) and the
//! meta commands (`mg ms md ma mn`, see [`meta_get`] and [`parse_meta_get_item`]). Shared by the load tool (`ringcache-bench`) and the admin
//! tool; the server side (parsing requests, encoding replies) is `ringcache_core::protocol`.
//!
//! Parsers take the unread part of the receive buffer and return [`Parsed::Incomplete`] until a
//! whole unit (one line, or one `VALUE` header plus its data block) is there; the caller keeps
//! the bytes and calls again after the next read. A GET reply is consumed one unit at a time
//! (`VALUE` blocks, then `END`), so a large multiget never has to be rescanned from its start.
//!
//! Meta replies map onto the same reply types, so a caller handles a value, a miss or a store
//! outcome the same way whichever protocol asked: an `mg`'s `VA` block is a
//! [`GetItem::Value`], its `EN` (and the `MN` that ends a quiet pipeline) a [`GetItem::End`];
//! `HD`/`NS`/`EX`/`NF` are the [`StoreReply`] outcomes of `STORED`/`NOT_STORED`/`EXISTS`/`NOT_FOUND`.

/// Longest reply line accepted before the stream is declared garbage (memcached's are short).
pub const MAX_LINE: usize = 8192;

/// A reply that cannot be a memcached text-protocol reply to what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unexpected reply line {0:?}")]
    UnexpectedLine(String),
    #[error("malformed VALUE or VA line {0:?}")]
    BadValueLine(String),
    #[error("VALUE data block not terminated by \\r\\n")]
    BadDataTerminator,
    #[error("reply line longer than {MAX_LINE} bytes without \\r\\n")]
    LineTooLong,
}

/// Result of trying to parse one unit from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// Not enough bytes yet; `need` is the total length required when already known.
    Incomplete { need: Option<usize> },
    /// A unit of `consumed` bytes.
    Done { consumed: usize, item: T },
}

/// Server error replies, which end the reply to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReply {
    /// `ERROR` (unknown command).
    Error,
    /// `CLIENT_ERROR <msg>`.
    Client,
    /// `SERVER_ERROR <msg>`.
    Server,
}

/// One unit of a GET reply (or of an `mg` reply, see [`parse_meta_get_item`]).
#[derive(Debug, PartialEq, Eq)]
pub enum GetItem<'a> {
    /// `cas` is the unique a `gets` reply carries (`None` for a plain `get`; for `mg`, the `c`
    /// return flag).
    Value {
        key: &'a [u8],
        flags: u32,
        data: &'a [u8],
        cas: Option<u64>,
    },
    End,
    Error(ErrorReply),
}

/// The reply to a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    Stored,
    NotStored,
    Exists,
    NotFound,
    Error(ErrorReply),
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
}

/// Finds the first line; returns (line without \r\n, bytes including \r\n).
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    match memchr::memchr(b'\n', buf) {
        Some(nl) => {
            let end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
            Ok(Some((&buf[..end], nl + 1)))
        }
        None if buf.len() > MAX_LINE => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

fn error_reply(line: &[u8]) -> Option<ErrorReply> {
    if line == b"ERROR" || line.starts_with(b"ERROR ") {
        Some(ErrorReply::Error)
    } else if line.starts_with(b"CLIENT_ERROR") {
        Some(ErrorReply::Client)
    } else if line.starts_with(b"SERVER_ERROR") {
        Some(ErrorReply::Server)
    } else {
        None
    }
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses the next unit of a GET/GETS reply.
pub fn parse_get_item(buf: &[u8]) -> Result<Parsed<GetItem<'_>>, ProtocolError> {
    let Some((l, header_len)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    if l == b"END" {
        return Ok(Parsed::Done { consumed: header_len, item: GetItem::End });
    }
    if let Some(e) = error_reply(l) {
        return Ok(Parsed::Done { consumed: header_len, item: GetItem::Error(e) });
    }
    let Some(rest) = l.strip_prefix(b"VALUE ") else {
        return Err(ProtocolError::UnexpectedLine(lossy(l)));
    };
    let mut fields = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let bad = || ProtocolError::BadValueLine(lossy(l));
    let key = fields.next().ok_or_else(bad)?;
    let flags = fields.next().and_then(parse_u64).and_then(|f| u32::try_from(f).ok()).ok_or_else(bad)?;
    let len = fields.next().and_then(parse_u64).and_then(|n| usize::try_from(n).ok()).ok_or_else(bad)?;
    // An optional CAS unique may follow; anything after that is malformed.
    let cas = match fields.next() {
        Some(c) => Some(parse_u64(c).ok_or_else(bad)?),
        None => None,
    };
    if fields.next().is_some() {
        return Err(bad());
    }
    let total = header_len.checked_add(len).and_then(|n| n.checked_add(2)).ok_or_else(bad)?;
    if buf.len() < total {
        return Ok(Parsed::Incomplete { need: Some(total) });
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(ProtocolError::BadDataTerminator);
    }
    Ok(Parsed::Done {
        consumed: total,
        item: GetItem::Value { key, flags, data: &buf[header_len..header_len + len], cas },
    })
}

/// Parses the reply to a storage command (set/add/replace/...).
pub fn parse_store_reply(buf: &[u8]) -> Result<Parsed<StoreReply>, ProtocolError> {
    let Some((l, consumed)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    let item = match l {
        b"STORED" => StoreReply::Stored,
        b"NOT_STORED" => StoreReply::NotStored,
        b"EXISTS" => StoreReply::Exists,
        b"NOT_FOUND" => StoreReply::NotFound,
        _ => match error_reply(l) {
            Some(e) => StoreReply::Error(e),
            None => return Err(ProtocolError::UnexpectedLine(lossy(l))),
        },
    };
    Ok(Parsed::Done { consumed, item })
}

/// The reply to `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReply {
    Deleted,
    NotFound,
    Error(ErrorReply),
}

/// Parses the reply to `delete`: `DELETED`, `NOT_FOUND` or an error line.
pub fn parse_delete_reply(buf: &[u8]) -> Result<Parsed<DeleteReply>, ProtocolError> {
    let Some((l, consumed)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    let item = match l {
        b"DELETED" => DeleteReply::Deleted,
        b"NOT_FOUND" => DeleteReply::NotFound,
        _ => match error_reply(l) {
            Some(e) => DeleteReply::Error(e),
            None => return Err(ProtocolError::UnexpectedLine(lossy(l))),
        },
    };
    Ok(Parsed::Done { consumed, item })
}

/// The reply to `incr`/`decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrReply {
    /// The counter's new value.
    Value(u64),
    NotFound,
    Error(ErrorReply),
}

/// Parses the reply to `incr`/`decr`: the new value as a decimal line, `NOT_FOUND`, or an error
/// line (memcached answers `CLIENT_ERROR` for a non-numeric value).
pub fn parse_incr_reply(buf: &[u8]) -> Result<Parsed<IncrReply>, ProtocolError> {
    let Some((l, consumed)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    // memcached may pad the number with trailing spaces when it rewrites a value in place.
    let trimmed = l.iter().rposition(|&b| b != b' ').map_or(&l[..0], |end| &l[..=end]);
    let item = if l == b"NOT_FOUND" {
        IncrReply::NotFound
    } else if let Some(v) = parse_u64(trimmed) {
        IncrReply::Value(v)
    } else {
        match error_reply(l) {
            Some(e) => IncrReply::Error(e),
            None => return Err(ProtocolError::UnexpectedLine(lossy(l))),
        }
    };
    Ok(Parsed::Done { consumed, item })
}

/// Appends the decimal form of `v`.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(ringcache_core::numbers::decimal(v, &mut [0u8; 20]));
}

/// Starts a `get` request; add keys with [`push_get_key`] and finish with [`end_line`].
pub fn begin_get(out: &mut Vec<u8>) {
    out.extend_from_slice(b"get");
}

/// Starts a `gets` request (values with their CAS uniques); add keys with [`push_get_key`] and
/// finish with [`end_line`].
pub fn begin_gets(out: &mut Vec<u8>) {
    out.extend_from_slice(b"gets");
}

/// Appends `delete <key>\r\n`.
pub fn delete(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"delete ");
    out.extend_from_slice(key);
    end_line(out);
}

/// Appends `incr <key> <delta>\r\n`.
pub fn incr(out: &mut Vec<u8>, key: &[u8], delta: u64) {
    out.extend_from_slice(b"incr ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_u64(out, delta);
    end_line(out);
}

/// Appends `cas <key> <flags> <ttl> <len> <unique>\r\n`; the caller appends `len` data bytes
/// and then [`end_line`].
pub fn cas_header(out: &mut Vec<u8>, key: &[u8], flags: u32, ttl: u32, len: usize, unique: u64) {
    storage_header(out, b"cas ", key, flags, ttl, len);
    out.push(b' ');
    push_u64(out, unique);
    end_line(out);
}

fn storage_header(out: &mut Vec<u8>, cmd: &[u8], key: &[u8], flags: u32, ttl: u32, len: usize) {
    out.extend_from_slice(cmd);
    out.extend_from_slice(key);
    out.push(b' ');
    push_u64(out, u64::from(flags));
    out.push(b' ');
    push_u64(out, u64::from(ttl));
    out.push(b' ');
    push_u64(out, len as u64);
}

/// Appends one key to a `get` started with [`begin_get`].
pub fn push_get_key(out: &mut Vec<u8>, key: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(key);
}

/// Ends a command line or a data block.
pub fn end_line(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> <flags> <ttl> <len>\r\n`; the caller appends `len` data bytes and then
/// [`end_line`].
pub fn set_header(out: &mut Vec<u8>, key: &[u8], flags: u32, ttl: u32, len: usize) {
    storage_header(out, b"set ", key, flags, ttl, len);
    end_line(out);
}

// ---- meta commands ------------------------------------------------------------------------

/// Appends `mg <key> <flags>\r\n`: `flags` are the flag tokens as sent, space separated (for
/// example `b"v f k"`: value, client flags and key; add `c` for the CAS unique, `q` to suppress
/// the `EN` of a miss), or empty for none.
pub fn meta_get(out: &mut Vec<u8>, key: &[u8], flags: &[u8]) {
    out.extend_from_slice(b"mg ");
    out.extend_from_slice(key);
    if !flags.is_empty() {
        out.push(b' ');
        out.extend_from_slice(flags);
    }
    end_line(out);
}

/// Appends `mn\r\n`, the meta no-op: the server answers `MN` once everything before it was
/// answered, which ends a pipeline of quiet (`q`) commands.
pub fn meta_noop(out: &mut Vec<u8>) {
    out.extend_from_slice(b"mn\r\n");
}

/// Appends `ms <key> <len> F<flags> T<ttl>\r\n`, with ` C<unique>` before the `\r\n` when `cas`
/// is given (stored only if the item still has that unique: the meta form of `cas`). The caller
/// appends `len` data bytes and then [`end_line`].
pub fn meta_set_header(out: &mut Vec<u8>, key: &[u8], len: usize, flags: u32, ttl: u32, cas: Option<u64>) {
    out.extend_from_slice(b"ms ");
    out.extend_from_slice(key);
    out.push(b' ');
    push_u64(out, len as u64);
    out.extend_from_slice(b" F");
    push_u64(out, u64::from(flags));
    out.extend_from_slice(b" T");
    push_u64(out, u64::from(ttl));
    if let Some(unique) = cas {
        out.extend_from_slice(b" C");
        push_u64(out, unique);
    }
    end_line(out);
}

/// Appends `md <key>\r\n`.
pub fn meta_delete(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"md ");
    out.extend_from_slice(key);
    end_line(out);
}

/// Appends `ma <key> D<delta>\r\n` (an increment that does not ask for the new value: the reply
/// is `HD`, or `NF` for a missing key).
pub fn meta_incr(out: &mut Vec<u8>, key: &[u8], delta: u64) {
    out.extend_from_slice(b"ma ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" D");
    push_u64(out, delta);
    end_line(out);
}

/// Splits a meta reply line into its two-letter status and the return flags after it (empty
/// when there are none); `None` when the line does not start with a status token.
fn meta_status(l: &[u8]) -> Option<(&[u8], &[u8])> {
    match l.get(2) {
        None if l.len() == 2 => Some((l, &l[2..])),
        Some(b' ') => Some((&l[..2], &l[3..])),
        _ => None,
    }
}

/// The return flags of a meta reply line that [`GetItem::Value`] carries.
struct ReturnFlags<'a> {
    key: &'a [u8],
    flags: u32,
    cas: Option<u64>,
}

/// Reads `k<key>`, `f<flags>` and `c<unique>` from return flags in any order; every other flag
/// (`t-1`, `s<size>`, `W`, `X`, `Z`, `O<opaque>`, ...) is ignored. `None` when `f` or `c` is
/// not a number.
fn return_flags(flags: &[u8]) -> Option<ReturnFlags<'_>> {
    let mut r = ReturnFlags { key: &[], flags: 0, cas: None };
    for token in flags.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
        let value = &token[1..];
        match token[0] {
            b'k' => r.key = value,
            b'f' => r.flags = u32::try_from(parse_u64(value)?).ok()?,
            b'c' => r.cas = Some(parse_u64(value)?),
            _ => {}
        }
    }
    Some(r)
}

/// Splits the rest of a `VA` line into the data length and the return flags.
fn va_line(rest: &[u8]) -> Option<(usize, &[u8])> {
    let (len, flags) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    Some((usize::try_from(parse_u64(len)?).ok()?, flags))
}

/// Parses the next unit of an `mg` reply (or of a pipeline of quiet `mg`s ended by `mn`):
///
/// - `VA <len> <flags>*` and its data block: a [`GetItem::Value`] whose key comes from the `k`
///   return flag (empty without it; as sent, so base64 under `b`), client flags from `f` (0
///   without it), unique from `c`, in any order; other flags are ignored.
/// - `HD <flags>*` (a hit for an `mg` that did not ask for the value): a value of no bytes.
/// - `EN` (a miss; memcached 1.6 may add return flags such as `k`) and `MN` (the end of a
///   quiet pipeline): [`GetItem::End`].
/// - `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`: [`GetItem::Error`].
pub fn parse_meta_get_item(buf: &[u8]) -> Result<Parsed<GetItem<'_>>, ProtocolError> {
    let Some((l, header_len)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    if let Some(e) = error_reply(l) {
        return Ok(Parsed::Done { consumed: header_len, item: GetItem::Error(e) });
    }
    let bad = || ProtocolError::BadValueLine(lossy(l));
    // (data length, return flags, whether a data block follows)
    let (len, flags, block) = match meta_status(l) {
        Some((b"EN", _)) | Some((b"MN", b"")) => {
            return Ok(Parsed::Done { consumed: header_len, item: GetItem::End });
        }
        Some((b"VA", rest)) => {
            let (len, flags) = va_line(rest).ok_or_else(bad)?;
            (len, flags, true)
        }
        Some((b"HD", flags)) => (0, flags, false),
        _ => return Err(ProtocolError::UnexpectedLine(lossy(l))),
    };
    let r = return_flags(flags).ok_or_else(bad)?;
    let mut consumed = header_len;
    if block {
        consumed = header_len.checked_add(len).and_then(|n| n.checked_add(2)).ok_or_else(bad)?;
        if buf.len() < consumed {
            return Ok(Parsed::Incomplete { need: Some(consumed) });
        }
        if &buf[consumed - 2..consumed] != b"\r\n" {
            return Err(ProtocolError::BadDataTerminator);
        }
    }
    Ok(Parsed::Done {
        consumed,
        item: GetItem::Value { key: r.key, flags: r.flags, data: &buf[header_len..header_len + len], cas: r.cas },
    })
}

/// Parses the reply to `ms`: `HD` stored, `NS` not stored, `EX` the unique (`C`) did not match,
/// `NF` not found (for a `C` on a missing key), each possibly followed by return flags; or an
/// error line.
pub fn parse_meta_store_reply(buf: &[u8]) -> Result<Parsed<StoreReply>, ProtocolError> {
    let Some((l, consumed)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    let item = match meta_status(l).map(|(status, _)| status) {
        Some(b"HD") => StoreReply::Stored,
        Some(b"NS") => StoreReply::NotStored,
        Some(b"EX") => StoreReply::Exists,
        Some(b"NF") => StoreReply::NotFound,
        _ => match error_reply(l) {
            Some(e) => StoreReply::Error(e),
            None => return Err(ProtocolError::UnexpectedLine(lossy(l))),
        },
    };
    Ok(Parsed::Done { consumed, item })
}

/// Parses the reply to `md`: `HD` deleted, `NF` not found, or an error line. `EX` (a `C`
/// unique that did not match: nothing was deleted) also counts as not found.
pub fn parse_meta_delete_reply(buf: &[u8]) -> Result<Parsed<DeleteReply>, ProtocolError> {
    let Some((l, consumed)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    let item = match meta_status(l).map(|(status, _)| status) {
        Some(b"HD") => DeleteReply::Deleted,
        Some(b"NF" | b"EX") => DeleteReply::NotFound,
        _ => match error_reply(l) {
            Some(e) => DeleteReply::Error(e),
            None => return Err(ProtocolError::UnexpectedLine(lossy(l))),
        },
    };
    Ok(Parsed::Done { consumed, item })
}

/// Parses the reply to `ma`: `HD` (the value was not asked for: [`IncrReply::Value`]`(0)`),
/// `VA <len> <flags>*` followed by the new value as a `len`-byte decimal line, `NF` not found,
/// or an error line (memcached answers `CLIENT_ERROR` for a non-numeric value).
pub fn parse_meta_incr_reply(buf: &[u8]) -> Result<Parsed<IncrReply>, ProtocolError> {
    let Some((l, header_len)) = line(buf)? else {
        return Ok(Parsed::Incomplete { need: None });
    };
    let (item, consumed) = match meta_status(l) {
        Some((b"HD", _)) => (IncrReply::Value(0), header_len),
        Some((b"NF", _)) => (IncrReply::NotFound, header_len),
        Some((b"VA", rest)) => {
            let bad = || ProtocolError::BadValueLine(lossy(l));
            let (len, _) = va_line(rest).ok_or_else(bad)?;
            let total = header_len.checked_add(len).and_then(|n| n.checked_add(2)).ok_or_else(bad)?;
            if buf.len() < total {
                return Ok(Parsed::Incomplete { need: Some(total) });
            }
            if &buf[total - 2..total] != b"\r\n" {
                return Err(ProtocolError::BadDataTerminator);
            }
            let number = &buf[header_len..total - 2];
            match parse_u64(number) {
                Some(v) => (IncrReply::Value(v), total),
                None => return Err(ProtocolError::UnexpectedLine(lossy(number))),
            }
        }
        _ => match error_reply(l) {
            Some(e) => (IncrReply::Error(e), header_len),
            None => return Err(ProtocolError::UnexpectedLine(lossy(l))),
        },
    };
    Ok(Parsed::Done { consumed, item })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        begin_get(&mut out);
        push_get_key(&mut out, b"a");
        push_get_key(&mut out, b"bb");
        end_line(&mut out);
        set_header(&mut out, b"k", 0, 3600, 5);
        out.extend_from_slice(b"hello");
        end_line(&mut out);
        assert_eq!(out, b"get a bb\r\nset k 0 3600 5\r\nhello\r\n");
        let mut n = Vec::new();
        push_u64(&mut n, 0);
        push_u64(&mut n, u64::MAX);
        assert_eq!(n, b"018446744073709551615");
    }

    /// (key, flags, data) of one VALUE block.
    type OwnedValue = (Vec<u8>, u32, Vec<u8>);

    /// Walks a full GET reply the way the worker does, returning the values and the terminator.
    fn walk(buf: &[u8]) -> (Vec<OwnedValue>, GetItemOwned, usize) {
        let mut at = 0;
        let mut values = Vec::new();
        loop {
            match parse_get_item(&buf[at..]).unwrap() {
                Parsed::Incomplete { .. } => panic!("incomplete at {at}"),
                Parsed::Done { consumed, item } => {
                    at += consumed;
                    match item {
                        GetItem::Value { key, flags, data, .. } => values.push((key.to_vec(), flags, data.to_vec())),
                        GetItem::End => return (values, GetItemOwned::End, at),
                        GetItem::Error(e) => return (values, GetItemOwned::Error(e), at),
                    }
                }
            }
        }
    }

    #[derive(Debug, PartialEq)]
    enum GetItemOwned {
        End,
        Error(ErrorReply),
    }

    #[test]
    fn parses_value_blocks_and_end() {
        let reply = b"VALUE k1 5 3\r\nabc\r\nVALUE k2 0 4 99\r\na\r\nb\r\nEND\r\nSTORED\r\n";
        let (values, end, used) = walk(reply);
        assert_eq!(end, GetItemOwned::End);
        assert_eq!(values, vec![(b"k1".to_vec(), 5, b"abc".to_vec()), (b"k2".to_vec(), 0, b"a\r\nb".to_vec()),]);
        assert_eq!(&reply[used..], b"STORED\r\n", "stops at the reply's end");
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_unit_is_whole() {
        let unit = b"VALUE key:000001 0 10\r\n0123456789\r\n";
        for cut in 0..unit.len() {
            match parse_get_item(&unit[..cut]).unwrap() {
                Parsed::Incomplete { need } => {
                    if let Some(n) = need {
                        assert_eq!(n, unit.len());
                    }
                }
                Parsed::Done { .. } => panic!("done with only {cut} bytes"),
            }
        }
        assert!(matches!(
            parse_get_item(unit).unwrap(),
            Parsed::Done { consumed, .. } if consumed == unit.len()
        ));
        assert_eq!(parse_get_item(b"EN").unwrap(), Parsed::Incomplete { need: None });
        assert_eq!(parse_store_reply(b"STOR").unwrap(), Parsed::Incomplete { need: None });
    }

    #[test]
    fn error_lines_end_a_reply() {
        let (v, end, _) = walk(b"VALUE a 0 1\r\nx\r\nSERVER_ERROR out of memory\r\n");
        assert_eq!(v.len(), 1);
        assert_eq!(end, GetItemOwned::Error(ErrorReply::Server));
        assert_eq!(walk(b"ERROR\r\n").1, GetItemOwned::Error(ErrorReply::Error));
        assert_eq!(walk(b"CLIENT_ERROR bad command line format\r\n").1, GetItemOwned::Error(ErrorReply::Client));
        for (line, want) in [
            (&b"STORED\r\n"[..], StoreReply::Stored),
            (b"NOT_STORED\r\n", StoreReply::NotStored),
            (b"EXISTS\r\n", StoreReply::Exists),
            (b"NOT_FOUND\r\n", StoreReply::NotFound),
            (b"SERVER_ERROR object too large for cache\r\n", StoreReply::Error(ErrorReply::Server)),
            (b"CLIENT_ERROR bad data chunk\r\n", StoreReply::Error(ErrorReply::Client)),
            (b"ERROR\r\n", StoreReply::Error(ErrorReply::Error)),
        ] {
            assert_eq!(parse_store_reply(line).unwrap(), Parsed::Done { consumed: line.len(), item: want });
        }
    }

    #[test]
    fn encodes_delete_incr_gets_and_cas() {
        let mut out = Vec::new();
        delete(&mut out, b"key:01");
        incr(&mut out, b"ctr:01", 1);
        begin_gets(&mut out);
        push_get_key(&mut out, b"key:02");
        end_line(&mut out);
        cas_header(&mut out, b"key:02", 0, 0, 3, 12345);
        out.extend_from_slice(b"abc");
        end_line(&mut out);
        assert_eq!(out, b"delete key:01\r\nincr ctr:01 1\r\ngets key:02\r\ncas key:02 0 0 3 12345\r\nabc\r\n");
    }

    #[test]
    fn gets_reply_carries_the_unique() {
        match parse_get_item(b"VALUE k 0 1 987654321\r\nx\r\n").unwrap() {
            Parsed::Done { item: GetItem::Value { cas, data, .. }, .. } => {
                assert_eq!(cas, Some(987_654_321));
                assert_eq!(data, b"x");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_get_item(b"VALUE k 0 1\r\nx\r\n").unwrap(),
            Parsed::Done { item: GetItem::Value { cas: None, .. }, .. }
        ));
    }

    #[test]
    fn parses_delete_incr_and_cas_replies() {
        for (line, want) in [
            (&b"DELETED\r\n"[..], DeleteReply::Deleted),
            (b"NOT_FOUND\r\n", DeleteReply::NotFound),
            (b"SERVER_ERROR busy\r\n", DeleteReply::Error(ErrorReply::Server)),
        ] {
            assert_eq!(parse_delete_reply(line).unwrap(), Parsed::Done { consumed: line.len(), item: want });
        }
        assert!(matches!(parse_delete_reply(b"STORED\r\n"), Err(ProtocolError::UnexpectedLine(_))));
        assert_eq!(parse_delete_reply(b"DELE").unwrap(), Parsed::Incomplete { need: None });
        for (line, want) in [
            (&b"0\r\n"[..], IncrReply::Value(0)),
            (b"42\r\n", IncrReply::Value(42)),
            (b"18446744073709551615\r\n", IncrReply::Value(u64::MAX)),
            (b"7   \r\n", IncrReply::Value(7)),
            (b"NOT_FOUND\r\n", IncrReply::NotFound),
            (b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", IncrReply::Error(ErrorReply::Client)),
            (b"ERROR\r\n", IncrReply::Error(ErrorReply::Error)),
        ] {
            assert_eq!(parse_incr_reply(line).unwrap(), Parsed::Done { consumed: line.len(), item: want });
        }
        for bad in [&b"12a\r\n"[..], b"-1\r\n", b"\r\n", b"DELETED\r\n", b"18446744073709551616\r\n"] {
            assert!(parse_incr_reply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_incr_reply(b"12").unwrap(), Parsed::Incomplete { need: None });
        // cas answers like a storage command: EXISTS is a conflict, NOT_FOUND a vanished key.
        assert_eq!(parse_store_reply(b"EXISTS\r\n").unwrap(), Parsed::Done { consumed: 8, item: StoreReply::Exists });
        assert_eq!(
            parse_store_reply(b"NOT_FOUND\r\n").unwrap(),
            Parsed::Done { consumed: 11, item: StoreReply::NotFound }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse_get_item(b"HELLO\r\n"), Err(ProtocolError::UnexpectedLine(_))));
        assert!(matches!(parse_store_reply(b"END\r\n"), Err(ProtocolError::UnexpectedLine(_))));
        for bad in [
            &b"VALUE k\r\n"[..],
            b"VALUE k x 3\r\n",
            b"VALUE k 0 -3\r\n",
            b"VALUE k 0 3 cas!\r\n",
            b"VALUE k 0 3 1 2\r\n",
            b"VALUE k 99999999999 3\r\n",
        ] {
            assert!(
                matches!(parse_get_item(bad), Err(ProtocolError::BadValueLine(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_get_item(b"VALUE k 0 3\r\nabcXY"), Err(ProtocolError::BadDataTerminator));
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(parse_get_item(&long), Err(ProtocolError::LineTooLong));
    }

    // ---- meta commands ------------------------------------------------------------------

    #[test]
    fn encodes_meta_requests() {
        let mut out = Vec::new();
        meta_get(&mut out, b"key:01", b"v f k");
        meta_get(&mut out, b"key:02", b"v f k q");
        meta_get(&mut out, b"key:03", b"");
        meta_noop(&mut out);
        meta_set_header(&mut out, b"key:04", 3, 0, 60, None);
        out.extend_from_slice(b"abc");
        end_line(&mut out);
        meta_set_header(&mut out, b"key:05", 1, 7, 0, Some(12345));
        out.push(b'x');
        end_line(&mut out);
        meta_delete(&mut out, b"key:06");
        meta_incr(&mut out, b"ctr:07", 1);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "mg key:01 v f k\r\nmg key:02 v f k q\r\nmg key:03\r\nmn\r\nms key:04 3 F0 T60\r\nabc\r\n\
             ms key:05 1 F7 T0 C12345\r\nx\r\nmd key:06\r\nma ctr:07 D1\r\n"
        );
    }

    /// (key, flags, data, cas) of one VA block.
    type OwnedMetaValue = (Vec<u8>, u32, Vec<u8>, Option<u64>);

    /// Walks a meta GET reply (VA blocks up to EN or MN) the way [`walk`] walks a classic one.
    fn walk_meta(buf: &[u8]) -> (Vec<OwnedMetaValue>, GetItemOwned, usize) {
        let mut at = 0;
        let mut values = Vec::new();
        loop {
            match parse_meta_get_item(&buf[at..]).unwrap() {
                Parsed::Incomplete { .. } => panic!("incomplete at {at}"),
                Parsed::Done { consumed, item } => {
                    at += consumed;
                    match item {
                        GetItem::Value { key, flags, data, cas } => {
                            values.push((key.to_vec(), flags, data.to_vec(), cas))
                        }
                        GetItem::End => return (values, GetItemOwned::End, at),
                        GetItem::Error(e) => return (values, GetItemOwned::Error(e), at),
                    }
                }
            }
        }
    }

    #[test]
    fn parses_meta_value_blocks_with_flags_in_any_order() {
        // A quiet multiget: hits as VA blocks (misses suppressed), then MN for the mn.
        let reply = b"VA 3 f5 kk1\r\nabc\r\nVA 4 kk2 t-1 c99 s4 f0 W X Z Oab\r\na\r\nb\r\nMN\r\nHD\r\n";
        let (values, end, used) = walk_meta(reply);
        assert_eq!(end, GetItemOwned::End);
        assert_eq!(
            values,
            vec![(b"k1".to_vec(), 5, b"abc".to_vec(), None), (b"k2".to_vec(), 0, b"a\r\nb".to_vec(), Some(99)),]
        );
        assert_eq!(&reply[used..], b"HD\r\n", "stops at the reply's end");
        // A single mg: one VA block (it is the whole reply), or EN, with or without return flags.
        let (values, end, _) = walk_meta(b"EN\r\n");
        assert!(values.is_empty() && end == GetItemOwned::End);
        assert_eq!(walk_meta(b"EN knope\r\n").1, GetItemOwned::End);
        assert_eq!(
            parse_meta_get_item(b"VA 0 c7 f1 kabc\r\n\r\n").unwrap(),
            Parsed::Done { consumed: 19, item: GetItem::Value { key: b"abc", flags: 1, data: b"", cas: Some(7) } }
        );
        // No flags asked for: no key, flags 0.
        assert_eq!(
            parse_meta_get_item(b"VA 1\r\nx\r\n").unwrap(),
            Parsed::Done { consumed: 9, item: GetItem::Value { key: b"", flags: 0, data: b"x", cas: None } }
        );
        // A hit without the value (no `v`): an empty value.
        assert_eq!(
            parse_meta_get_item(b"HD c5 kkey\r\n").unwrap(),
            Parsed::Done { consumed: 12, item: GetItem::Value { key: b"key", flags: 0, data: b"", cas: Some(5) } }
        );
    }

    #[test]
    fn meta_units_split_across_reads_are_incomplete_until_whole() {
        let unit = b"VA 10 f0 c123 kkey:000001\r\n0123456789\r\n";
        for cut in 0..unit.len() {
            match parse_meta_get_item(&unit[..cut]).unwrap() {
                Parsed::Incomplete { need } => {
                    if let Some(n) = need {
                        assert_eq!(n, unit.len());
                        assert!(cut >= 27, "length known only once the VA line is whole");
                    }
                }
                Parsed::Done { .. } => panic!("done with only {cut} bytes"),
            }
        }
        assert!(matches!(
            parse_meta_get_item(unit).unwrap(),
            Parsed::Done { consumed, item: GetItem::Value { cas: Some(123), .. } } if consumed == unit.len()
        ));
        for partial in [&b"E"[..], b"EN", b"EN\r", b"MN", b"VA 3 f0", b"HD c1"] {
            assert_eq!(parse_meta_get_item(partial).unwrap(), Parsed::Incomplete { need: None });
        }
        assert_eq!(parse_meta_store_reply(b"H").unwrap(), Parsed::Incomplete { need: None });
        assert_eq!(parse_meta_store_reply(b"HD").unwrap(), Parsed::Incomplete { need: None });
        assert_eq!(parse_meta_delete_reply(b"NF\r").unwrap(), Parsed::Incomplete { need: None });
        assert_eq!(parse_meta_incr_reply(b"HD").unwrap(), Parsed::Incomplete { need: None });
        let incr = b"VA 2\r\n42\r\n";
        for cut in 0..incr.len() {
            let want = if cut < 6 { None } else { Some(incr.len()) };
            assert_eq!(parse_meta_incr_reply(&incr[..cut]).unwrap(), Parsed::Incomplete { need: want }, "{cut}");
        }
        assert_eq!(parse_meta_incr_reply(incr).unwrap(), Parsed::Done { consumed: 10, item: IncrReply::Value(42) });
    }

    #[test]
    fn meta_error_lines_end_a_reply() {
        let (v, end, _) = walk_meta(b"VA 1 kq\r\nx\r\nSERVER_ERROR out of memory\r\n");
        assert_eq!(v.len(), 1);
        assert_eq!(end, GetItemOwned::Error(ErrorReply::Server));
        assert_eq!(walk_meta(b"ERROR\r\n").1, GetItemOwned::Error(ErrorReply::Error));
        assert_eq!(walk_meta(b"CLIENT_ERROR bad command line format\r\n").1, GetItemOwned::Error(ErrorReply::Client));
        for (line, want) in [
            (&b"HD\r\n"[..], StoreReply::Stored),
            (b"HD c42 kkey\r\n", StoreReply::Stored),
            (b"NS\r\n", StoreReply::NotStored),
            (b"EX\r\n", StoreReply::Exists),
            (b"NF\r\n", StoreReply::NotFound),
            (b"NF Oxyz\r\n", StoreReply::NotFound),
            (b"SERVER_ERROR object too large for cache\r\n", StoreReply::Error(ErrorReply::Server)),
            (b"CLIENT_ERROR bad data chunk\r\n", StoreReply::Error(ErrorReply::Client)),
            (b"ERROR\r\n", StoreReply::Error(ErrorReply::Error)),
        ] {
            assert_eq!(parse_meta_store_reply(line).unwrap(), Parsed::Done { consumed: line.len(), item: want });
        }
        for (line, want) in [
            (&b"HD\r\n"[..], DeleteReply::Deleted),
            (b"HD kkey\r\n", DeleteReply::Deleted),
            (b"NF\r\n", DeleteReply::NotFound),
            (b"EX\r\n", DeleteReply::NotFound),
            (b"SERVER_ERROR busy\r\n", DeleteReply::Error(ErrorReply::Server)),
            (b"CLIENT_ERROR bad command line format\r\n", DeleteReply::Error(ErrorReply::Client)),
        ] {
            assert_eq!(parse_meta_delete_reply(line).unwrap(), Parsed::Done { consumed: line.len(), item: want });
        }
        for (line, want) in [
            (&b"HD\r\n"[..], IncrReply::Value(0)),
            (b"HD c9\r\n", IncrReply::Value(0)),
            (b"VA 1\r\n0\r\n", IncrReply::Value(0)),
            (b"VA 20 c3\r\n18446744073709551615\r\n", IncrReply::Value(u64::MAX)),
            (b"NF\r\n", IncrReply::NotFound),
            (b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", IncrReply::Error(ErrorReply::Client)),
            (b"ERROR\r\n", IncrReply::Error(ErrorReply::Error)),
        ] {
            assert_eq!(parse_meta_incr_reply(line).unwrap(), Parsed::Done { consumed: line.len(), item: want });
        }
    }

    #[test]
    fn meta_parsers_reject_garbage() {
        // Classic replies are not meta replies, and the reverse.
        for bad in [&b"END\r\n"[..], b"VALUE k 0 1\r\nx\r\n", b"ENX\r\n", b"MN kx\r\n", b"HI\r\n", b"\r\n"] {
            assert!(
                matches!(parse_meta_get_item(bad), Err(ProtocolError::UnexpectedLine(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(parse_get_item(b"EN\r\n"), Err(ProtocolError::UnexpectedLine(_))));
        for bad in [&b"VA\r\n"[..], b"VA x\r\n", b"VA -1\r\n", b"VA 3 fx\r\n", b"VA 3 f99999999999\r\n", b"VA 3 c\r\n"]
        {
            assert!(
                matches!(parse_meta_get_item(bad), Err(ProtocolError::BadValueLine(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_meta_get_item(b"VA 3 f0\r\nabcXY"), Err(ProtocolError::BadDataTerminator));
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(parse_meta_get_item(&long), Err(ProtocolError::LineTooLong));
        for bad in [&b"STORED\r\n"[..], b"HDX\r\n", b"EN\r\n", b"VA 1\r\n"] {
            assert!(matches!(parse_meta_store_reply(bad), Err(ProtocolError::UnexpectedLine(_))));
        }
        for bad in [&b"DELETED\r\n"[..], b"NS\r\n", b"EN\r\n"] {
            assert!(matches!(parse_meta_delete_reply(bad), Err(ProtocolError::UnexpectedLine(_))));
        }
        for bad in [&b"42\r\n"[..], b"NOT_FOUND\r\n", b"EX\r\n", b"VA 2\r\nab\r\n", b"VA 0\r\n\r\n"] {
            assert!(parse_meta_incr_reply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(parse_meta_incr_reply(b"VA x\r\n"), Err(ProtocolError::BadValueLine(_))));
        assert_eq!(parse_meta_incr_reply(b"VA 1\r\n7XY"), Err(ProtocolError::BadDataTerminator));
    }
}
