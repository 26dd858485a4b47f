//! The crate's three error types: config load, per-request authentication, approval tokens.

use std::path::PathBuf;

use http::StatusCode;

/// A key, secret or token list in the config cannot be used. Raised at load or reload time.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A key file could not be read or holds no usable key.
    #[error("{}: {reason}", path.display())]
    KeyFile {
        /// The file named in the config.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The environment variable named by `hs256_secret_env` is unset or not UTF-8.
    #[error("environment variable `{var}` (hs256_secret_env) is not set")]
    MissingSecret {
        /// The variable's name.
        var: String,
    },
    /// The HS256 secret is shorter than the 256 bits RFC 7518 section 3.2 requires.
    #[error("environment variable `{var}` (hs256_secret_env) holds {len} bytes; HS256 needs at least 32")]
    WeakSecret {
        /// The variable's name.
        var: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A `jwt` section whose key settings name no key (`public_keys = []`).
    #[error("JWT validation is configured without any key")]
    NoKeys,
    /// An `[identity.headers]` value that is not a header name.
    #[error("`{name}` is not a header name")]
    HeaderName {
        /// The configured value.
        name: String,
    },
    /// An `[admin] api_tokens` entry whose `sha256` is not 64 hex digits.
    #[error("api token `{name}`: `sha256` must be 64 hex digits")]
    ApiTokenHash {
        /// The token's name.
        name: String,
    },
    /// The approval signing key could not be generated.
    #[error("could not generate an approval signing key")]
    KeyGeneration,
}

/// Why a request's credentials were refused. Every variant answers 401; the detail is for
/// logs, not for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials where they are required (the admin plane).
    #[error("no credentials")]
    Missing,
    /// An `Authorization` header that is not one `Bearer <token>`.
    #[error("malformed Authorization header")]
    MalformedAuthorization,
    /// A bearer token that is present but does not validate.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A bearer token past its `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// A trusted identity header whose value is not usable text.
    #[error("malformed identity header `{0}`")]
    MalformedIdentityHeader(String),
}

impl AuthError {
    /// The status the gateway answers with: always 401.
    pub fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }
}

/// Why an approval token was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this gateway signed: bad encoding, wrong algorithm or key, bad signature.
    #[error("invalid approval token: {0}")]
    Invalid(String),
    /// Past its `exp`.
    #[error("approval token expired")]
    Expired,
    /// Signed by us, but for a different request.
    #[error("approval token was issued for a different request")]
    FingerprintMismatch,
    /// Signing failed (only for keys that passed loading; not expected).
    #[error("could not sign token: {0}")]
    Sign(String),
}
