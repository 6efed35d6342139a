//! Who may use the console: the login page trades the token for a session cookie
//! (HttpOnly, SameSite=Strict, Path=/) whose id maps to a server-side session (bounded,
//! expiring) holding a CSRF token; state-changing requests must send that token in
//! `X-CSRF-Token`. The API also takes `Authorization: Bearer <token>` (no CSRF: a header
//! a browser never adds by itself). Wrong tokens count per client address, at each door
//! on its own: after [`MAX_FAILURES`] wrong tokens at the login form within [`WINDOW`],
//! that address gets 429 with `Retry-After` at the form until the window ends; wrong
//! bearer tokens count apart, to the higher [`MAX_BEARER_FAILURES`], and limit only bearer
//! requests. So a script with a stale token cannot lock people out of the login page, and
//! guessing stays bounded at both doors. Tokens are compared in constant time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;

/// Name of the session cookie.
pub const COOKIE: &str = "hookgate_session";
/// Name of the login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "hookgate_login_csrf";
/// How long a session lives.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most (the oldest goes first).
pub const MAX_SESSIONS: usize = 64;
/// Wrong tokens an address may send to the login form within [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// Wrong bearer tokens an address may send within [`WINDOW`] (scripts retry; a person at
/// the form does not need that many).
pub const MAX_BEARER_FAILURES: u32 = 50;
/// The failed-attempt window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses tracked at most.
pub const MAX_TRACKED: usize = 4096;

struct Session {
    csrf: String,
    expires: Instant,
}

/// Where a token was presented; each door has its own failure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The login form.
    Form,
    /// `Authorization: Bearer` on the API.
    Bearer,
}

/// Wrong-token counts per client address, for one door.
struct Limiter {
    max: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Limiter {
    fn new(max: u32) -> Limiter {
        Limiter {
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// Sessions and failed-attempt counts.
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    form: Limiter,
    bearer: Limiter,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            sessions: Mutex::new(HashMap::new()),
            form: Limiter::new(MAX_FAILURES),
            bearer: Limiter::new(MAX_BEARER_FAILURES),
        }
    }
}

/// A valid session's CSRF token.
pub struct SessionInfo {
    /// The token state-changing requests must carry.
    pub csrf: String,
}

/// 32 random bytes as hex (session ids, CSRF tokens).
pub fn random_token() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 32];
    // SystemRandom fails only without an OS RNG; then no session can be made safely.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return String::new();
    }
    hex::encode(b)
}

/// Whether `presented` is `token`, in time that does not depend on where they differ
/// (both are hashed first, so their lengths do not show either).
pub fn token_eq(presented: &[u8], token: &[u8]) -> bool {
    let a = ring::digest::digest(&ring::digest::SHA256, presented);
    let b = ring::digest::digest(&ring::digest::SHA256, token);
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && !token.is_empty()
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The bearer token of `Authorization: Bearer …`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

impl Auth {
    fn door(&self, door: Door) -> &Limiter {
        match door {
            Door::Form => &self.form,
            Door::Bearer => &self.bearer,
        }
    }

    /// Seconds `client` must wait before trying `door` again, if it is over its failures
    /// there.
    pub fn limited(&self, door: Door, client: IpAddr) -> Option<u32> {
        let l = self.door(door);
        let m = l.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (n, since) = m.get(&client)?;
        let left = WINDOW.saturating_sub(since.elapsed());
        (*n >= l.max && !left.is_zero()).then_some(left.as_secs().max(1) as u32)
    }

    /// Counts a wrong token from `client` at `door`.
    pub fn failed(&self, door: Door, client: IpAddr) {
        let mut m = self
            .door(door)
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_TRACKED && !m.contains_key(&client) {
            m.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if m.len() >= MAX_TRACKED {
                // Still full: forget the oldest window.
                if let Some(oldest) = m.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                    m.remove(&oldest);
                }
            }
        }
        let e = m.entry(client).or_insert((0, Instant::now()));
        if e.1.elapsed() >= WINDOW {
            *e = (0, Instant::now());
        }
        e.0 = e.0.saturating_add(1);
    }

    /// Forgets `client`'s failures at `door` (after a good token there).
    pub fn succeeded(&self, door: Door, client: IpAddr) {
        self.door(door)
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client);
    }

    /// Starts a session; returns its id (the cookie value).
    pub fn start_session(&self) -> Option<String> {
        let id = random_token();
        let csrf = random_token();
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, s| s.expires > Instant::now());
        while m.len() >= MAX_SESSIONS {
            let Some(oldest) = m
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(
            id.clone(),
            Session {
                csrf,
                expires: Instant::now() + SESSION_TTL,
            },
        );
        Some(id)
    }

    /// The session of the request's cookie, if valid.
    pub fn session(&self, headers: &HeaderMap) -> Option<SessionInfo> {
        let id = cookie(headers, COOKIE)?;
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.get(id)?;
        if s.expires <= Instant::now() {
            m.remove(id);
            return None;
        }
        Some(SessionInfo {
            csrf: s.csrf.clone(),
        })
    }

    /// Ends the session of the request's cookie.
    pub fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }

    /// Ends every session (the token changed).
    pub fn end_all_sessions(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// How many sessions are held (tests).
    pub fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_empty_never_matches() {
        assert!(token_eq(b"abcdefabcdefabcdef", b"abcdefabcdefabcdef"));
        assert!(!token_eq(b"abcdefabcdefabcdeX", b"abcdefabcdefabcdef"));
        assert!(!token_eq(b"abcdef", b"abcdefabcdefabcdef"));
        assert!(!token_eq(b"", b""));
    }

    #[test]
    fn failures_limit_then_window_resets_and_sessions_are_bounded() {
        let a = Auth::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            a.failed(Door::Form, ip);
        }
        assert!(a.limited(Door::Form, ip).is_none());
        a.failed(Door::Form, ip);
        let wait = a.limited(Door::Form, ip).unwrap();
        assert!(wait >= 1 && wait as u64 <= WINDOW.as_secs());
        // The other door counts on its own, to its own limit.
        assert!(a.limited(Door::Bearer, ip).is_none());
        for _ in 0..MAX_BEARER_FAILURES - 1 {
            a.failed(Door::Bearer, ip);
        }
        assert!(a.limited(Door::Bearer, ip).is_none());
        a.failed(Door::Bearer, ip);
        assert!(a.limited(Door::Bearer, ip).is_some());
        a.succeeded(Door::Form, ip);
        assert!(a.limited(Door::Form, ip).is_none());
        assert!(a.limited(Door::Bearer, ip).is_some());
        for _ in 0..MAX_SESSIONS * 2 {
            a.start_session().unwrap();
        }
        assert_eq!(a.session_count(), MAX_SESSIONS);
    }

    #[test]
    fn cookies_and_bearer_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; hookgate_session=xyz".parse().unwrap(),
        );
        h.insert(http::header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(bearer(&h), Some("tok"));
    }
}
