//! Session tokens ended by a logout before they expired.
//!
//! A session token is a signed claim, valid until its expiry wherever it is shown; a logout must
//! make the gateway refuse it from then on. The gateway remembers each logged-out token's id
//! until the token would have expired anyway, so the list only ever holds an hour's worth (the
//! default lifetime). It lives in memory: a restarted gateway, or another gateway of the site,
//! does not know it (SECURITY.md says so); changing the password ends every session everywhere.

use std::collections::HashMap;
use std::sync::Mutex;

/// Logged-out tokens remembered at most. Each logout is one authenticated request, so reaching
/// this takes a user logging out thousands of times within a session's lifetime; past it the
/// entries closest to expiry are forgotten first.
const REMEMBERED: usize = 100_000;

#[derive(Default)]
pub struct Revoked {
    /// Token id → when the token expires (Unix seconds).
    ids: Mutex<HashMap<String, u64>>,
}

impl Revoked {
    /// Remembers `jti` until `exp`.
    pub fn add(&self, jti: String, exp: u64, now: u64) {
        if jti.is_empty() || exp <= now {
            return;
        }
        let mut ids = self.ids.lock().expect("revoked lock");
        ids.retain(|_, e| *e > now);
        if ids.len() >= REMEMBERED
            && let Some(soonest) = ids.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            ids.remove(&soonest);
        }
        ids.insert(jti, exp);
    }

    /// Whether `jti` was logged out (and has not expired since).
    pub fn contains(&self, jti: &str, now: u64) -> bool {
        self.ids
            .lock()
            .expect("revoked lock")
            .get(jti)
            .is_some_and(|exp| *exp > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_out_token_stays_refused_until_it_expires() {
        let revoked = Revoked::default();
        revoked.add("a".into(), 100, 10);
        assert!(revoked.contains("a", 99));
        assert!(!revoked.contains("a", 100));
        assert!(!revoked.contains("b", 50));
        // Nothing to remember for an expired or id-less token.
        revoked.add("c".into(), 5, 10);
        revoked.add(String::new(), 100, 10);
        assert!(!revoked.contains("c", 1));
        assert!(!revoked.contains("", 11));
    }

    #[test]
    fn expired_entries_are_dropped_as_new_ones_come() {
        let revoked = Revoked::default();
        revoked.add("old".into(), 20, 10);
        revoked.add("new".into(), 100, 30);
        assert_eq!(revoked.ids.lock().unwrap().len(), 1);
    }
}
