//! Reply encoding: appends memcached's exact reply bytes to an output buffer. Numbers are
//! written with `itoa`-style formatting on the stack; nothing allocates beyond the
//! buffer's own growth.

use super::ProtocolError;
use crate::numbers::decimal;

/// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n`.
pub fn value(out: &mut Vec<u8>, key: &[u8], flags: u32, data: &[u8], cas: Option<u64>) {
    value_line(out, key, flags, data.len(), cas);
    out.extend_from_slice(data);
    out.extend_from_slice(VALUE_END);
}

/// Appends `VALUE <key> <flags> <bytes>[ <cas>]\r\n`, the line before a value's data
/// (which [`VALUE_END`] follows).
pub fn value_line(out: &mut Vec<u8>, key: &[u8], flags: u32, len: usize, cas: Option<u64>) {
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    out.push(b' ');
    number(out, u64::from(flags));
    out.push(b' ');
    number(out, len as u64);
    if let Some(cas) = cas {
        out.push(b' ');
        number(out, cas);
    }
    out.extend_from_slice(b"\r\n");
}

/// What follows a value's data.
pub const VALUE_END: &[u8] = b"\r\n";

/// Appends a decimal number.
pub fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0u8; 20]));
}

/// Appends a number followed by `\r\n` (the reply to `incr`/`decr`).
pub fn number_line(out: &mut Vec<u8>, n: u64) {
    number(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `STAT <name> <value>\r\n`.
pub fn stat(out: &mut Vec<u8>, name: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    // Stats are rare and not on the request hot path; fmt keeps them readable.
    let _ = write!(out, "STAT {name} {value}\r\n");
}

pub const END: &[u8] = b"END\r\n";
pub const STORED: &[u8] = b"STORED\r\n";
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
pub const EXISTS: &[u8] = b"EXISTS\r\n";
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
pub const DELETED: &[u8] = b"DELETED\r\n";
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
pub const OK: &[u8] = b"OK\r\n";
/// The answer to `mn`.
pub const META_NOOP: &[u8] = b"MN\r\n";
pub const RESET: &[u8] = b"RESET\r\n";
pub const ERROR: &[u8] = b"ERROR\r\n";
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
pub const OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
/// `incr`/`decr` could not store the new number.
pub const ARITH_OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory\r\n";

/// The most bytes of a `VALUE` block beyond its key and data: `VALUE `, three numbers
/// (flags, length, CAS) with their spaces, and two line ends.
pub const VALUE_HEADER_MAX: usize = 6 + 3 * 21 + 4;
/// The most bytes of a meta command's reply beyond an `mg` value: the status, up to 17
/// return flags with numbers, the opaque, the key in base64 and `Z X W`.
pub const META_LINE_MAX: usize = 1024;
/// The most bytes of any reply other than a `VALUE` block or `stats`.
pub const SMALL_REPLY_MAX: usize = 64;
/// A replicated write whose fate this node could not learn (it stopped leading, or the
/// leader's snapshot replaced its store first): it may or may not have been applied.
pub const OUTCOME_UNKNOWN: &[u8] = b"SERVER_ERROR replication: outcome unknown, the leader changed\r\n";
/// No leader of the key's replica group could be found in time.
pub const NO_LEADER: &[u8] = b"SERVER_ERROR replication: no leader for this key\r\n";
pub const NON_NUMERIC: &[u8] = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
pub const FLUSH_DISABLED: &[u8] = b"CLIENT_ERROR flush_all not allowed\r\n";
pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// The reply line for an error the parser found.
pub fn error(e: ProtocolError) -> &'static [u8] {
    match e {
        ProtocolError::UnknownCommand => ERROR,
        ProtocolError::BadFormat => b"CLIENT_ERROR bad command line format\r\n",
        ProtocolError::BadDeleteFormat => b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        ProtocolError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
        ProtocolError::InvalidExptime => b"CLIENT_ERROR invalid exptime argument\r\n",
        ProtocolError::InvalidDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_line_with_and_without_cas() {
        let mut out = Vec::new();
        value(&mut out, b"k", 7, b"abc", None);
        value(&mut out, b"k", 0, b"", Some(18446744073709551615));
        assert_eq!(out, b"VALUE k 7 3\r\nabc\r\nVALUE k 0 0 18446744073709551615\r\n\r\n");
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        number(&mut out, 0);
        out.push(b',');
        number(&mut out, 1234567890);
        assert_eq!(out, b"0,1234567890");
    }
}
