//! Talking to a node's text port: connect with a read timeout, send one command, and
//! read its reply lines up to `END`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn connect(node: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(node).map_err(|e| format!("{node}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    Ok(s)
}

/// Sends `request` (one command line) to `node` and hands `each` every reply line
/// before `END`; `each` returns false to stop early (the connection is then closed).
/// memcached's error lines (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`) and a
/// connection closed before `END` are errors.
pub fn each_line(node: &str, request: &str, mut each: impl FnMut(&str) -> Result<bool, String>) -> Result<(), String> {
    let mut s = connect(node)?;
    s.write_all(format!("{request}\r\n").as_bytes()).map_err(|e| format!("{node}: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| format!("{node}: {e}"))? == 0 {
            return Err(format!("{node}: closed the connection"));
        }
        let l = line.trim_end();
        if l == "END" {
            return Ok(());
        }
        if l == "ERROR" || l.starts_with("CLIENT_ERROR") || l.starts_with("SERVER_ERROR") {
            return Err(format!("{node}: {l}"));
        }
        if !each(l)? {
            return Ok(());
        }
    }
}

/// Sends `request` and returns its reply lines before `END`.
pub fn ask(node: &str, request: &str) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    each_line(node, request, |l| {
        lines.push(l.to_string());
        Ok(true)
    })?;
    Ok(lines)
}
