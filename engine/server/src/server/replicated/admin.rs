//! `cluster ...`: the replica group's administration on the client port, for
//! `ringcache-ctl`. Every command carries a token, the HMAC of its words under the
//! cluster secret, so only someone holding the secret can change the group:
//!
//! ```text
//! cluster add ID IP:PORT TOKEN       add node ID (its peer port base) as a learner
//! cluster promote ID TOKEN           make learner ID a voter
//! cluster remove ID TOKEN            remove node ID
//! cluster transfer SHARD ID TOKEN    hand shard SHARD's leadership to node ID
//! ```
//!
//! Each shard of the node that receives the command acts for its own group where this
//! node leads it, and answers one line: `SHARD i OK`, `SHARD i NOT_LEADER L` (ask node
//! L), or `SHARD i ERROR why`; then `END`. A node alone answers `ERROR`.

use std::net::SocketAddr;

use ringcache_replication::handshake::admin_allowed;

use super::AdminAnswer;
use crate::server::shard_cell::ShardCell;

/// A parsed, authorised command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    Add { node: u64, addr: SocketAddr },
    Promote { node: u64 },
    Remove { node: u64 },
    Transfer { shard: usize, to: u64 },
}

/// Parses and authorises `args` (what follows `cluster`).
pub fn parse(args: &[u8], secret: &[u8]) -> Result<Admin, &'static str> {
    let text = std::str::from_utf8(args).map_err(|_| "not text")?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let (token, command) = words.split_last().ok_or("usage: cluster add|promote|remove|transfer ... TOKEN")?;
    if !admin_allowed(secret, &command.join(" "), token) {
        return Err("not authorised (the token does not match the cluster secret)");
    }
    let id = |s: &str| s.parse::<u64>().ok().filter(|&n| n > 0).ok_or("bad node id");
    match command {
        // An IP address, not a name: resolving would block the shard's executor.
        ["add", node, addr] => {
            Ok(Admin::Add { node: id(node)?, addr: addr.parse().map_err(|_| "bad address (IP:PORT)")? })
        }
        ["promote", node] => Ok(Admin::Promote { node: id(node)? }),
        ["remove", node] => Ok(Admin::Remove { node: id(node)? }),
        ["transfer", shard, to] => Ok(Admin::Transfer { shard: shard.parse().map_err(|_| "bad shard")?, to: id(to)? }),
        _ => Err("usage: cluster add ID HOST:PORT | promote ID | remove ID | transfer SHARD ID, then TOKEN"),
    }
}

/// This shard's answer line to `cmd` (empty when the command is not for it), once the
/// change it proposed has applied (or not).
pub async fn answer(shard: &ShardCell, cmd: &Admin) -> String {
    let Some(replicated) = shard.replicated() else { return String::new() };
    let index = replicated.shard;
    let answer = replicated.admin(cmd);
    let text = match answer {
        AdminAnswer::Now(text) => text,
        AdminAnswer::Later(rx) => match rx.await {
            Ok(Ok(())) => "OK".into(),
            Ok(Err(why)) => format!("ERROR {why}"),
            Err(_) => "ERROR the shard stopped".into(),
        },
    };
    if text.is_empty() {
        return text;
    }
    format!("SHARD {index} {text}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcache_replication::handshake::admin_token;

    #[test]
    fn commands_need_a_token_made_with_the_secret() {
        let secret = b"0123456789abcdef";
        let line = |cmd: &str| format!("{cmd} {}", admin_token(secret, cmd));
        let add = line("add 4 127.0.0.1:7400");
        assert_eq!(
            parse(add.as_bytes(), secret),
            Ok(Admin::Add { node: 4, addr: "127.0.0.1:7400".parse().unwrap_or_else(|_| unreachable!()) })
        );
        assert_eq!(parse(line("promote 4").as_bytes(), secret), Ok(Admin::Promote { node: 4 }));
        assert_eq!(parse(line("remove 2").as_bytes(), secret), Ok(Admin::Remove { node: 2 }));
        assert_eq!(parse(line("transfer 1 3").as_bytes(), secret), Ok(Admin::Transfer { shard: 1, to: 3 }));
        assert!(parse(add.as_bytes(), b"another secret").is_err());
        assert!(parse(b"remove 2 00", secret).is_err());
        assert!(parse(line("remove 0").as_bytes(), secret).is_err());
        assert!(parse(line("explode").as_bytes(), secret).is_err());
    }
}
