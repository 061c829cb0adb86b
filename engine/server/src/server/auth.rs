//! `-Y`: the password file's users, shared by every shard, and rereading it on SIGHUP
//! (as memcached: a file that cannot be read or parsed then keeps the users there
//! were). What a connection may send before it logs in is `protocol::auth`'s.

use std::path::PathBuf;
use std::sync::RwLock;

use ringcache_core::protocol::auth::Users;

pub struct Auth {
    path: PathBuf,
    users: RwLock<Users>,
}

impl Auth {
    pub fn new(path: PathBuf, users: Users) -> Auth {
        Auth { path, users: RwLock::new(users) }
    }

    /// The file as given (for `stats settings`).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether `user` logs in with `pass`. (Taken once per login, never on the data
    /// path: the lock is not contended.)
    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        self.users.read().unwrap_or_else(|e| e.into_inner()).check(user, pass)
    }

    /// Rereads the file; on failure the users stay as they were.
    pub fn reload(&self) {
        match crate::config::load_auth_file(&self.path) {
            Ok(users) => {
                tracing::info!("{}: {} users", self.path.display(), users.len());
                *self.users.write().unwrap_or_else(|e| e.into_inner()) = users;
            }
            Err(e) => tracing::error!("{e}; the users stay as they were"),
        }
    }
}
