//! A tiny deterministic RNG, a checksum, and a minimal text-protocol client that panics
//! with a descriptive message instead of hanging (all reads have timeouts).

use crate::process::Server;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One `VALUE` block of a retrieval reply: key, flags, cas (for `gets`), data.
pub type Block = (String, u32, Option<u64>, Vec<u8>);

/// splitmix64: tiny, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
    }
    h
}

/// A protocol connection: buffered reads, direct writes on a clone of the socket.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
    pub name: String,
}

impl Conn {
    pub fn open(server: &Server, name: impl Into<String>) -> Conn {
        let stream = server.connect();
        stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            writer: stream.try_clone().expect("clone socket"),
            reader: BufReader::with_capacity(64 * 1024, stream),
            name: name.into(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.writer.write_all(bytes) {
            panic!("{}: sending {} bytes: {e}", self.name, bytes.len());
        }
    }

    /// One reply line without its "\r\n".
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => panic!("{}: connection closed while waiting for a reply", self.name),
            Ok(_) => {}
            Err(e) => {
                panic!("{}: reading a reply line: {e}; partial line {:?}", self.name, String::from_utf8_lossy(&line))
            }
        }
        assert!(
            line.ends_with(b"\r\n"),
            "{}: reply line not terminated by \\r\\n: {:?}",
            self.name,
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        line
    }

    pub fn expect_line(&mut self, want: &str, context: &str) {
        let got = self.line();
        assert_eq!(String::from_utf8_lossy(&got), want, "{}: reply to {context}", self.name);
    }

    /// Reads `VALUE` blocks up to `END`: (key, flags, cas, data) per block.
    pub fn value_blocks(&mut self, context: &str) -> Vec<Block> {
        let mut blocks = Vec::new();
        loop {
            let line = self.line();
            if line == b"END" {
                return blocks;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let fields: Vec<&str> = text.split(' ').collect();
            assert!(
                fields[0] == "VALUE" && (fields.len() == 4 || fields.len() == 5),
                "{}: expected VALUE or END in reply to {context}, got {text:?}",
                self.name
            );
            let flags: u32 = fields[2].parse().unwrap_or_else(|_| panic!("{}: bad flags in {text:?}", self.name));
            let len: usize = fields[3].parse().unwrap_or_else(|_| panic!("{}: bad length in {text:?}", self.name));
            let cas = fields
                .get(4)
                .map(|c| c.parse::<u64>().unwrap_or_else(|_| panic!("{}: bad cas in {text:?}", self.name)));
            let mut data = vec![0u8; len + 2];
            if let Err(e) = self.reader.read_exact(&mut data) {
                panic!("{}: reading {len}-byte data block after {text:?} ({context}): {e}", self.name);
            }
            assert_eq!(
                &data[len..],
                b"\r\n",
                "{}: data block of {text:?} not followed by \\r\\n (value longer than declared?)",
                self.name
            );
            data.truncate(len);
            blocks.push((fields[1].to_string(), flags, cas, data));
        }
    }
}
