//! Peer authentication, sans-IO: before a single Raft byte is parsed, both ends of a
//! peer connection prove they hold the cluster secret (challenge-response with
//! HMAC-SHA256, `hmac`/`sha2` crates) and learn each other's node id and shard count.
//!
//! ```text
//! dialer   -> Hello     magic | node | shards | nonce_d
//! acceptor -> Challenge magic | node | shards | nonce_a | mac("acceptor", nonce_d, nonce_a, ids)
//! dialer   -> Proof     mac("dialer", nonce_a, nonce_d, ids)
//! ```
//!
//! Each side's MAC covers both nonces (fresh randomness the caller supplies) and both
//! identities, so a recorded exchange cannot be replayed and the identities cannot be
//! altered. A node whose shard count differs from ours is refused after authentication
//! ([`HandshakeError::ShardCount`]): shard *i* of every node forms group *i*.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 8] = b"RCPEER01";
const NONCE: usize = 32;
const MAC: usize = 32;
const IDENTITY: usize = 8 + 8 + 4;
pub const HELLO_LEN: usize = IDENTITY + NONCE;
pub const CHALLENGE_LEN: usize = IDENTITY + NONCE + MAC;
pub const PROOF_LEN: usize = MAC;

/// A node as the handshake names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub node: u64,
    pub shards: u32,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not a ringcache peer (or another version of the peer protocol).
    NotAPeer,
    /// The other end does not hold our cluster secret.
    WrongSecret,
    /// Authenticated, but it runs another number of shards.
    ShardCount { ours: u32, theirs: u32 },
    /// Authenticated, but it claims our own node id.
    SameNode(u64),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::NotAPeer => write!(f, "not a ringcache peer (bad greeting)"),
            HandshakeError::WrongSecret => write!(f, "the peer does not hold this cluster's secret"),
            HandshakeError::ShardCount { ours, theirs } => write!(
                f,
                "the peer runs {theirs} shards and this node {ours}: every node of a group must run the same count"
            ),
            HandshakeError::SameNode(id) => write!(f, "the peer claims this node's own id {id}"),
        }
    }
}

fn identity(out: &mut Vec<u8>, id: Identity) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&id.node.to_le_bytes());
    out.extend_from_slice(&id.shards.to_le_bytes());
}

fn read_identity(bytes: &[u8]) -> Result<Identity, HandshakeError> {
    if bytes.len() < IDENTITY || &bytes[..8] != MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    let node = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| HandshakeError::NotAPeer)?);
    let shards = u32::from_le_bytes(bytes[16..20].try_into().map_err(|_| HandshakeError::NotAPeer)?);
    Ok(Identity { node, shards })
}

fn mac(secret: &[u8], role: &[u8], first: &[u8], second: &[u8], dialer: Identity, acceptor: Identity) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(role);
    m.update(first);
    m.update(second);
    for id in [dialer, acceptor] {
        m.update(&id.node.to_le_bytes());
        m.update(&id.shards.to_le_bytes());
    }
    m
}

fn check(us: Identity, them: Identity) -> Result<(), HandshakeError> {
    if them.shards != us.shards {
        return Err(HandshakeError::ShardCount { ours: us.shards, theirs: them.shards });
    }
    if them.node == us.node {
        return Err(HandshakeError::SameNode(us.node));
    }
    Ok(())
}

/// The side that opened the connection.
pub struct Dialer<'s> {
    secret: &'s [u8],
    me: Identity,
    nonce: [u8; NONCE],
}

impl<'s> Dialer<'s> {
    /// `nonce`: fresh random bytes for this connection.
    pub fn new(secret: &'s [u8], me: Identity, nonce: [u8; NONCE]) -> Self {
        Dialer { secret, me, nonce }
    }

    /// The first message.
    pub fn hello(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_LEN);
        identity(&mut out, self.me);
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Checks the acceptor's challenge: who it is, and the proof to send it.
    pub fn on_challenge(&self, challenge: &[u8]) -> Result<(Identity, Vec<u8>), HandshakeError> {
        if challenge.len() != CHALLENGE_LEN {
            return Err(HandshakeError::NotAPeer);
        }
        let them = read_identity(challenge)?;
        let their_nonce = &challenge[IDENTITY..IDENTITY + NONCE];
        mac(self.secret, b"acceptor", &self.nonce, their_nonce, self.me, them)
            .verify_slice(&challenge[IDENTITY + NONCE..])
            .map_err(|_| HandshakeError::WrongSecret)?;
        check(self.me, them)?;
        let proof = mac(self.secret, b"dialer", their_nonce, &self.nonce, self.me, them).finalize().into_bytes();
        Ok((them, proof.to_vec()))
    }
}

/// The side that accepted the connection.
pub struct Acceptor<'s> {
    secret: &'s [u8],
    me: Identity,
    nonce: [u8; NONCE],
    dialer: Option<(Identity, [u8; NONCE])>,
}

impl<'s> Acceptor<'s> {
    pub fn new(secret: &'s [u8], me: Identity, nonce: [u8; NONCE]) -> Self {
        Acceptor { secret, me, nonce, dialer: None }
    }

    /// Answers a hello with a challenge.
    pub fn on_hello(&mut self, hello: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if hello.len() != HELLO_LEN {
            return Err(HandshakeError::NotAPeer);
        }
        let them = read_identity(hello)?;
        let mut their_nonce = [0; NONCE];
        their_nonce.copy_from_slice(&hello[IDENTITY..]);
        self.dialer = Some((them, their_nonce));
        let mut out = Vec::with_capacity(CHALLENGE_LEN);
        identity(&mut out, self.me);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(
            &mac(self.secret, b"acceptor", &their_nonce, &self.nonce, them, self.me).finalize().into_bytes(),
        );
        Ok(out)
    }

    /// Checks the dialer's proof: who it is, authenticated.
    pub fn on_proof(&self, proof: &[u8]) -> Result<Identity, HandshakeError> {
        let (them, their_nonce) = self.dialer.ok_or(HandshakeError::NotAPeer)?;
        mac(self.secret, b"dialer", &self.nonce, &their_nonce, them, self.me)
            .verify_slice(proof)
            .map_err(|_| HandshakeError::WrongSecret)?;
        check(self.me, them)?;
        Ok(them)
    }
}

/// The token that authorises an administrative command (`cluster ...` on the client
/// port): hex of HMAC-SHA256 over the command's words, keyed with the cluster secret.
pub fn admin_token(secret: &[u8], command: &str) -> String {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(b"admin ");
    m.update(command.as_bytes());
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` authorises `command` (compared in constant time).
pub fn admin_allowed(secret: &[u8], command: &str, token: &str) -> bool {
    let Some(bytes) = (0..token.len() / 2)
        .map(|i| token.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .filter(|b| b.len() * 2 == token.len())
    else {
        return false;
    };
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(b"admin ");
    m.update(command.as_bytes());
    m.verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        dialer_secret: &[u8],
        acceptor_secret: &[u8],
        shards: (u32, u32),
    ) -> (Result<Identity, HandshakeError>, Result<Identity, HandshakeError>) {
        let d = Dialer::new(dialer_secret, Identity { node: 1, shards: shards.0 }, [1; NONCE]);
        let mut a = Acceptor::new(acceptor_secret, Identity { node: 2, shards: shards.1 }, [2; NONCE]);
        let challenge = match a.on_hello(&d.hello()) {
            Ok(c) => c,
            Err(e) => return (Err(e.clone()), Err(e)),
        };
        match d.on_challenge(&challenge) {
            Ok((them, proof)) => (Ok(them), a.on_proof(&proof)),
            Err(e) => {
                // A dialer that fails sends nothing; the acceptor sees no proof.
                let forged = [0u8; PROOF_LEN];
                (Err(e), a.on_proof(&forged))
            }
        }
    }

    #[test]
    fn both_ends_authenticate_with_the_same_secret() {
        let (d, a) = run(b"s3cret", b"s3cret", (4, 4));
        assert_eq!(d, Ok(Identity { node: 2, shards: 4 }));
        assert_eq!(a, Ok(Identity { node: 1, shards: 4 }));
    }

    #[test]
    fn a_wrong_secret_is_refused_on_both_sides() {
        let (d, a) = run(b"s3cret", b"other", (4, 4));
        assert_eq!(d, Err(HandshakeError::WrongSecret));
        assert_eq!(a, Err(HandshakeError::WrongSecret));
    }

    #[test]
    fn another_shard_count_is_refused_after_authentication() {
        let (d, a) = run(b"s3cret", b"s3cret", (4, 2));
        assert_eq!(d, Err(HandshakeError::ShardCount { ours: 4, theirs: 2 }));
        assert!(a.is_err());
        assert!(d.err().map(|e| e.to_string()).unwrap_or_default().contains("same count"));
    }

    #[test]
    fn admin_tokens_authorise_exactly_their_command() {
        let token = admin_token(b"s3cret", "add 4 127.0.0.1:7400");
        assert!(admin_allowed(b"s3cret", "add 4 127.0.0.1:7400", &token));
        assert!(!admin_allowed(b"s3cret", "add 5 127.0.0.1:7400", &token));
        assert!(!admin_allowed(b"other", "add 4 127.0.0.1:7400", &token));
        assert!(!admin_allowed(b"s3cret", "add 4 127.0.0.1:7400", "zz"));
        assert!(!admin_allowed(b"s3cret", "add 4 127.0.0.1:7400", &token[..10]));
    }

    #[test]
    fn garbage_and_tampering_are_refused() {
        let mut a = Acceptor::new(b"k", Identity { node: 2, shards: 1 }, [2; NONCE]);
        assert_eq!(a.on_hello(b"GET / HTTP/1.1\r\n"), Err(HandshakeError::NotAPeer));
        let d = Dialer::new(b"k", Identity { node: 1, shards: 1 }, [1; NONCE]);
        let mut challenge = a.on_hello(&d.hello()).unwrap_or_default();
        // Someone in the middle claims another node id: the MAC no longer matches.
        challenge[8] ^= 1;
        assert_eq!(d.on_challenge(&challenge).map(|_| ()), Err(HandshakeError::WrongSecret));
    }
}
