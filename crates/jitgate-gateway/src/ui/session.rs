//! Signed-in sessions of the web page: a random id in an `HttpOnly`, `SameSite=Strict` cookie
//! scoped to `/ui/`, and a table in this replica's memory (so a restart, or a request that
//! reaches another replica, signs the approver out).
//!
//! A session keeps the bearer credential it was opened with, and every request authenticates
//! it again exactly as the admin API authenticates a bearer: a token removed from the config
//! or a JWT past its `exp` ends the session at once, and operator rights follow the table in
//! force. The table is keyed by the SHA-256 of the id, so looking an id up reveals nothing
//! through timing, and bounded: [`MAX_SESSIONS`] in all, [`MAX_PER_USER`] per user (their
//! oldest is signed out).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::HeaderMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use jitgate_rules::ticket::{hex, sha256_hex};

/// The session cookie.
pub const COOKIE: &str = "jitgate_session";
/// The sign-in form's cookie (its CSRF token is an HMAC of this cookie's value).
pub const SIGNIN_COOKIE: &str = "jitgate_signin";
/// How long a session lasts from sign-in, whatever happens in between.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a sign-in form can be submitted.
pub const SIGNIN_TTL: Duration = Duration::from_secs(600);
/// Sessions held at once; sign-in is refused (503) while the table is full of live ones.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions one user holds at once; a further sign-in ends their oldest.
pub const MAX_PER_USER: usize = 16;
/// Random bytes in a session id, CSRF token or sign-in nonce.
const RANDOM_BYTES: usize = 32;

/// A notice shown once on the next page (the outcome of a decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Whether everything asked for was done.
    pub ok: bool,
    /// One line per outcome.
    pub lines: Vec<String>,
}

/// One signed-in approver.
#[derive(Clone)]
pub struct Session {
    /// The bearer credential pasted at sign-in, authenticated again on every request.
    pub credential: String,
    /// Whom it authenticated at sign-in.
    pub user: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
    created: Instant,
    flash: Option<Flash>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why no session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// [`MAX_SESSIONS`] live sessions exist.
    #[error("too many people are signed in on this replica; try again later")]
    Full,
    /// The system's random generator failed (no predictable id is ever handed out).
    #[error("no randomness for a session id")]
    NoRandom,
}

/// The session table and the sign-in form's key.
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
    rng: SystemRandom,
    /// Keys the sign-in form's CSRF token; random per process.
    signin_key: Option<hmac::Key>,
    max_sessions: usize,
    max_per_user: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// An empty table bounded by [`MAX_SESSIONS`] and [`MAX_PER_USER`].
    pub fn new() -> Sessions {
        Sessions::with_limits(MAX_SESSIONS, MAX_PER_USER)
    }

    /// An empty table with other bounds.
    pub fn with_limits(max_sessions: usize, max_per_user: usize) -> Sessions {
        let rng = SystemRandom::new();
        let signin_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).ok();
        Sessions {
            table: Mutex::new(HashMap::new()),
            rng,
            signin_key,
            max_sessions,
            max_per_user: max_per_user.max(1),
        }
    }

    fn random(&self) -> Result<String, OpenError> {
        let mut b = [0u8; RANDOM_BYTES];
        self.rng.fill(&mut b).map_err(|_| OpenError::NoRandom)?;
        Ok(hex(&b))
    }

    /// Opens a session for `user`, authenticated by `credential`; returns its id (the cookie
    /// value). Expired sessions are dropped first; a user past [`MAX_PER_USER`] loses their
    /// oldest session.
    pub fn open(&self, credential: &str, user: &str) -> Result<String, OpenError> {
        let id = self.random()?;
        let csrf = self.random()?;
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|_, s| s.expires > now);
        let mut theirs: Vec<(Instant, String)> = table
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (s.created, k.clone()))
            .collect();
        if theirs.len() >= self.max_per_user {
            theirs.sort();
            for (_, key) in theirs.iter().take(theirs.len() + 1 - self.max_per_user) {
                table.remove(key);
            }
        }
        if table.len() >= self.max_sessions {
            return Err(OpenError::Full);
        }
        table.insert(
            sha256_hex(id.as_bytes()),
            Session {
                credential: credential.to_string(),
                user: user.to_string(),
                csrf,
                expires: now + SESSION_TTL,
                created: now,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = sha256_hex(id.as_bytes());
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                table.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session (sign-out, or a credential no longer accepted).
    pub fn remove(&self, id: &str) {
        let key = sha256_hex(id.as_bytes());
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    /// Leaves a notice for the session's next page.
    pub fn set_flash(&self, id: &str, flash: Flash) {
        let key = sha256_hex(id.as_bytes());
        if let Some(s) = self
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&key)
        {
            s.flash = Some(flash);
        }
    }

    /// Takes the session's notice, if any.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        let key = sha256_hex(id.as_bytes());
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&key)
            .and_then(|s| s.flash.take())
    }

    /// How many sessions the table holds (live or not yet dropped).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A fresh nonce for the sign-in cookie and the form token that goes with it.
    pub fn signin_pair(&self) -> Result<(String, String), OpenError> {
        let nonce = self.random()?;
        let token = self.signin_token(&nonce).ok_or(OpenError::NoRandom)?;
        Ok((nonce, token))
    }

    fn signin_token(&self, nonce: &str) -> Option<String> {
        let key = self.signin_key.as_ref()?;
        Some(hex(hmac::sign(key, nonce.as_bytes()).as_ref()))
    }

    /// Whether `token` is the sign-in form token of the cookie `nonce`.
    pub fn signin_matches(&self, nonce: &str, token: &str) -> bool {
        self.signin_token(nonce)
            .is_some_and(|want| tokens_match(&want, token))
    }
}

/// Constant-time comparison of two tokens.
pub fn tokens_match(want: &str, got: &str) -> bool {
    want.len() == got.len() && bool::from(want.as_bytes().ct_eq(got.as_bytes()))
}

/// The values of cookie `name` in the request's `Cookie` headers, in order (a name can be
/// sent more than once when another site on the domain set one too).
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// Whether `value` has the shape of an id this module hands out (so nothing else is hashed
/// or looked up).
pub fn well_formed(value: &str) -> bool {
    value.len() == RANDOM_BYTES * 2 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `Set-Cookie` value for a cookie scoped to the web page.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/ui/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}
