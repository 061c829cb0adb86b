//! memcached's ASCII authentication (`-Y FILE`), sans I/O: the password file's format,
//! and what a connection that has not authenticated yet may send. Until it has, every
//! command line is answered `CLIENT_ERROR unauthenticated` except a `set` whose data
//! block is `username password`, which answers `STORED` (authenticated) or `CLIENT_ERROR
//! authentication failure`; the key, flags, expiry and `noreply` of that `set` mean
//! nothing. The replies and their order are memcached 1.6's (`proto_text.c`,
//! `try_read_command_asciiauth`; `authfile.c`).

use subtle::ConstantTimeEq;

/// A command line this long without its newline is junk: the connection is closed
/// (memcached: 2048 bytes).
pub const MAX_LINE: usize = 2048;

/// The largest `username password` data block taken (its length as the `set` line
/// says, without its `\r\n`): a larger one closes the connection, as in memcached,
/// whose 16 KiB read buffer cannot hold it.
pub const MAX_DATA: usize = 16382;

pub const UNAUTHENTICATED: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
pub const BAD_TERMINATION: &[u8] = b"CLIENT_ERROR bad command line termination\r\n";
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad authentication token format\r\n";
pub const FAILURE: &[u8] = b"CLIENT_ERROR authentication failure\r\n";
pub const STORED: &[u8] = b"STORED\r\n";

/// The users of a password file: `user:password` lines (the password runs to the end
/// of the line and may hold `:`).
#[derive(Clone, Default)]
pub struct Users {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.entries.len())
    }
}

/// A password file line without `:` (memcached refuses the whole file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl Users {
    /// Parses a password file. An empty file holds no user (nobody can authenticate);
    /// any line without `:`, an empty one included, is malformed, as in memcached.
    /// (memcached keeps only the first 8 entries, silently; every entry counts here.)
    pub fn parse(text: &[u8]) -> Result<Users, Malformed> {
        let mut entries = Vec::new();
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        if body.is_empty() {
            return Ok(Users { entries });
        }
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':').ok_or(Malformed)?;
            let pass = &line[colon + 1..];
            let pass = &pass[..pass.iter().position(|&b| b == b'\r' || b == 0).unwrap_or(pass.len())];
            entries.push((line[..colon].to_vec(), pass.to_vec()));
        }
        Ok(Users { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `user` with `pass` is an entry (compared in constant time per entry).
    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        self.entries.iter().fold(false, |found, (u, p)| {
            let same = u.len() == user.len() && p.len() == pass.len() && bool::from(u.ct_eq(user) & p.ct_eq(pass));
            found | same
        })
    }
}

/// What the bytes a not-yet-authenticated connection sent amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Not enough bytes yet.
    Incomplete,
    /// Junk, or a data block too large to hold: close the connection.
    Close,
    /// Answer this and consume `consumed` bytes.
    Reply { reply: &'static [u8], consumed: usize },
    /// The client offers these credentials (check them, answer, consume).
    Credentials { user: &'a [u8], pass: &'a [u8], consumed: usize },
}

/// Splits on spaces, as memcached's tokenizer does (runs of spaces are one).
fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// memcached's `safe_strtoul` on a `set` line's length: digits, then the end or
/// whitespace (the line's `\r` is left in).
fn length(token: &[u8]) -> Option<usize> {
    let digits = token.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = &token[digits..];
    if digits == 0 || !(rest.is_empty() || rest[0].is_ascii_whitespace()) {
        return None;
    }
    std::str::from_utf8(&token[..digits]).ok()?.parse().ok()
}

/// The next step for `input`, the bytes a connection that has not authenticated sent.
pub fn step(input: &[u8]) -> Step<'_> {
    if input.len() < 2 {
        // memcached waits for two bytes: a lone `\n` is not answered (yet).
        return Step::Incomplete;
    }
    let Some(newline) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() > MAX_LINE { Step::Close } else { Step::Incomplete };
    };
    let line = &input[..newline];
    let mut words = tokens(line);
    let command = words.next();
    let size = words.nth(3).and_then(length);
    let Some(size) = size.filter(|_| command == Some(b"set".as_slice())) else {
        return Step::Reply { reply: UNAUTHENTICATED, consumed: newline + 1 };
    };
    if size > MAX_DATA {
        return Step::Close;
    }
    let start = newline + 1;
    let end = start + size + 2;
    if input.len() < end {
        return Step::Incomplete;
    }
    let data = &input[start..end];
    if !data.ends_with(b"\r\n") {
        return Step::Reply { reply: BAD_TERMINATION, consumed: end };
    }
    let mut words = tokens(&data[..size]);
    match (words.next(), words.next()) {
        (Some(user), Some(pass)) => Step::Credentials { user, pass, consumed: end },
        _ => Step::Reply { reply: BAD_FORMAT, consumed: end },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_is_user_colon_password_lines() {
        let users = Users::parse(b"alice:s3cret\nbob:pa:ss\r\n").expect("parses");
        assert_eq!(users.len(), 2);
        assert!(users.check(b"alice", b"s3cret"));
        assert!(users.check(b"bob", b"pa:ss"), "the password runs to the end of the line");
        assert!(!users.check(b"alice", b"s3cre"));
        assert!(!users.check(b"alice", b"s3crett"));
        assert!(!users.check(b"bob", b"s3cret"));
        assert!(!users.check(b"", b""));
        assert!(Users::parse(b"").expect("empty").is_empty());
        assert_eq!(Users::parse(b"alice:x\n\nbob:y\n").map(|u| u.len()), Err(Malformed), "an empty line");
        assert_eq!(Users::parse(b"alice\n").map(|u| u.len()), Err(Malformed));
        assert!(Users::parse(b":\n").expect("empty user and password").check(b"", b""));
    }

    #[test]
    fn only_a_set_carrying_credentials_is_taken() {
        assert_eq!(step(b"get foo"), Step::Incomplete);
        assert_eq!(step(b"get foo\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 9 });
        assert_eq!(step(b"\n"), Step::Incomplete, "memcached waits for a second byte");
        assert_eq!(step(b"\nx"), Step::Reply { reply: UNAUTHENTICATED, consumed: 1 });
        assert_eq!(step(b"\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 2 });
        assert_eq!(step(b"quit\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 6 }, "not even quit");
        assert_eq!(step(b"SET k 0 0 1\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 13 });
        assert_eq!(step(b"set foo 0 0\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 13 });
        assert_eq!(step(b"set foo 0 0 x\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 15 });
        assert_eq!(step(b"set foo 0 0 -1\r\n"), Step::Reply { reply: UNAUTHENTICATED, consumed: 16 });
        assert_eq!(step(b"set foo 0 0 10\r\nalice"), Step::Incomplete);
        assert_eq!(
            step(b"set  k 1 2 10 noreply\r\nalice pass\r\nget"),
            Step::Credentials { user: b"alice", pass: b"pass", consumed: 35 }
        );
        assert_eq!(step(b"set k 0 0 5\r\nalice\r\n"), Step::Reply { reply: BAD_FORMAT, consumed: 20 });
        assert_eq!(step(b"set k 0 0 4\r\nalice\r\n"), Step::Reply { reply: BAD_TERMINATION, consumed: 19 });
        assert_eq!(step(&[b'x'; MAX_LINE + 1]), Step::Close, "a line that never ends");
        assert_eq!(step(&[b'x'; MAX_LINE]), Step::Incomplete);
        assert_eq!(step(b"set k 0 0 16383\r\n"), Step::Close, "a data block too large to hold");
        assert_eq!(step(b"set k 0 0 16382\r\n"), Step::Incomplete);
        assert_eq!(
            step(b"set k 0 0 12\nalice secret\r\n"),
            Step::Credentials { user: b"alice", pass: b"secret", consumed: 27 }
        );
        assert_eq!(
            step(b"set k 0 0 12\r\nalice\tsecret\r\n"),
            Step::Reply { reply: BAD_FORMAT, consumed: 28 },
            "a tab is no separator"
        );
    }
}
