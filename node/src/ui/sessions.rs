//! Server-side web sessions: a random id in an HttpOnly cookie names an entry in a bounded
//! in-memory table that holds the signed-in key; idle entries expire.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::UiConfig;

/// The cookie that carries a session id.
pub const SESSION_COOKIE: &str = "niso_session";

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// The API key the session signed in with. Kept (in memory only) so that every page
    /// authenticates it afresh: a revoked or expired key ends the session on its next request.
    pub key: String,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

/// Every live session, plus the secret CSRF tokens are derived from.
#[derive(Debug)]
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: usize,
    secret: [u8; 32],
}

impl Sessions {
    pub fn new(config: &UiConfig) -> Self {
        Self {
            table: Mutex::default(),
            idle: Duration::from_secs(config.session_idle_secs),
            max: config.max_sessions.max(1),
            secret: random_bytes(),
        }
    }

    /// Starts a session for `key` and returns its id.
    pub fn create(&self, key: String) -> String {
        let id = niso_protocol::hex::encode(&random_bytes());
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= self.max {
            table.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        }
        // Still full of live sessions: the least recently used one gives way, so the table
        // never grows past its bound however many sign-ins arrive.
        while table.len() >= self.max {
            let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            table.remove(&oldest);
        }
        table.insert(
            id.clone(),
            Session {
                key,
                last_seen: now,
            },
        );
        id
    }

    /// The live session `id`, marked as used now; an expired one is removed.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let session = table.get_mut(id)?;
        if now.duration_since(session.last_seen) >= self.idle {
            table.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Whether session `id` is live, without counting this as a use.
    pub fn is_live(&self, id: &str) -> bool {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(id)
            .is_some_and(|s| s.last_seen.elapsed() < self.idle)
    }

    pub fn remove(&self, id: &str) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(id);
    }

    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CSRF token of forms in session `id`. Derived, not stored: only this process can
    /// compute it, and it is worthless without the session cookie it is bound to.
    pub fn csrf_token(&self, purpose: &str, id: &str) -> String {
        self.mac(purpose, id).to_hex().to_string()
    }

    /// Whether `token` is the CSRF token for `purpose` and `id` (compared in constant time).
    pub fn csrf_valid(&self, purpose: &str, id: &str, token: &str) -> bool {
        blake3::Hash::from_hex(token).is_ok_and(|t| t == self.mac(purpose, id))
    }

    fn mac(&self, purpose: &str, id: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(purpose.as_bytes());
        h.update(&[0]);
        h.update(id.as_bytes());
        h.finalize()
    }
}

/// 32 bytes from the operating system's generator.
pub fn random_bytes() -> [u8; 32] {
    let mut buf = [0u8; 32];
    // Sessions without unpredictable ids would be forgeable; `getrandom` does not fail on
    // supported Linux systems once the pool is initialised, so failing is unrecoverable.
    if let Err(e) = getrandom::fill(&mut buf) {
        tracing::error!(error = %e, "operating system random number generator failed");
        std::process::abort();
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(max: usize, idle_secs: u64) -> Sessions {
        Sessions::new(&UiConfig {
            max_sessions: max,
            session_idle_secs: idle_secs,
            ..UiConfig::default()
        })
    }

    #[test]
    fn the_table_is_bounded_and_the_least_recently_used_goes_first() {
        let s = sessions(2, 3600);
        let a = s.create("a".into());
        let b = s.create("b".into());
        assert!(s.get(&a).is_some(), "touching a makes b the oldest");
        let c = s.create("c".into());
        assert_eq!(s.len(), 2);
        assert!(s.get(&b).is_none());
        assert_eq!(s.get(&a).map(|x| x.key), Some("a".to_owned()));
        assert_eq!(s.get(&c).map(|x| x.key), Some("c".to_owned()));
    }

    #[test]
    fn idle_sessions_expire() {
        let s = sessions(10, 0);
        let a = s.create("a".into());
        assert!(s.get(&a).is_none());
        assert!(s.is_empty(), "an expired session is dropped when seen");
    }

    #[test]
    fn csrf_tokens_are_bound_to_purpose_and_session() {
        let s = sessions(10, 3600);
        let t = s.csrf_token("form", "id1");
        assert!(s.csrf_valid("form", "id1", &t));
        assert!(!s.csrf_valid("form", "id2", &t));
        assert!(!s.csrf_valid("login", "id1", &t));
        assert!(!s.csrf_valid("form", "id1", "not-hex"));
        let other = sessions(10, 3600);
        assert!(
            !other.csrf_valid("form", "id1", &t),
            "a new process has a new secret"
        );
    }
}
