//! Simple tokens (etcd's `simple_token.go`): `<16 letters>.<raft index>`,
//! registered on every member when the `Authenticate` entry applies, valid
//! for `--auth-token-ttl` after their last use, dropped when their user is
//! deleted or changes password and all at once when auth is disabled.
//! In memory only: a restart forgets them (as etcd does).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;

/// Most tokens one member keeps (each `Authenticate` went through Raft,
/// so reaching this takes a flood of logins; the oldest go first).
const MAX_TOKENS: usize = 1_000_000;

/// The simple tokens a member knows.
pub struct SimpleTokens {
    ttl: Duration,
    tokens: Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    by_token: HashMap<String, (String, Instant)>,
    last_sweep: Option<Instant>,
}

impl Tokens {
    /// Drops expired tokens, at most once a second (etcd's sweeper period).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        self.by_token.retain(|_, (_, expires)| *expires > now);
    }
}

/// A new token prefix: 16 random ASCII letters.
pub fn new_prefix() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..16)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect()
}

/// The Raft index a token names, if it has etcd's shape.
pub fn index_of(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.is_empty() || index.contains('.') {
        return None;
    }
    index.parse().ok()
}

impl SimpleTokens {
    /// Tokens living `ttl` after their last use.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: Mutex::new(Tokens::default()),
        }
    }

    /// Registers `token` for `user` (applying `Authenticate`).
    pub fn assign(&self, token: String, user: String) {
        let now = Instant::now();
        if let Ok(mut t) = self.tokens.lock() {
            t.sweep(now);
            if t.by_token.len() >= MAX_TOKENS {
                let oldest = t
                    .by_token
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    t.by_token.remove(&k);
                }
            }
            t.by_token.insert(token, (user, now + self.ttl));
        }
    }

    /// The user of a live token, whose life starts over.
    pub fn lookup(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut t = self.tokens.lock().ok()?;
        t.sweep(now);
        let ttl = self.ttl;
        let (user, expires) = t.by_token.get_mut(token)?;
        if *expires <= now {
            t.by_token.remove(token);
            return None;
        }
        *expires = now + ttl;
        Some(user.clone())
    }

    /// Forgets `user`'s tokens (deleted, or a new password).
    pub fn drop_user(&self, user: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.by_token.retain(|_, (u, _)| u != user);
        }
    }

    /// Forgets every token (auth disabled).
    pub fn clear(&self) {
        if let Ok(mut t) = self.tokens.lock() {
            t.by_token.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_etcds_shape_and_slide() {
        let prefix = new_prefix();
        assert_eq!(prefix.len(), 16);
        assert!(prefix.chars().all(|c| c.is_ascii_alphabetic()));
        assert_eq!(index_of(&format!("{prefix}.42")), Some(42));
        assert_eq!(index_of("abc"), None);
        assert_eq!(index_of("a.b.c"), None);
        assert_eq!(index_of(".4"), None);

        let tokens = SimpleTokens::new(Duration::from_millis(300));
        tokens.assign("t.1".into(), "alice".into());
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(tokens.lookup("t.1").as_deref(), Some("alice"));
        }
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(tokens.lookup("t.1"), None);
        tokens.assign("t.2".into(), "bob".into());
        tokens.drop_user("bob");
        assert_eq!(tokens.lookup("t.2"), None);
    }
}
