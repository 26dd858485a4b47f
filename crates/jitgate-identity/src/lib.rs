//! Who is asking: requester and admin-plane authentication, and jitgate's approval tokens.
//!
//! Everything that reads a file or an environment variable does so at construction
//! (`from_config`), so a bad key surfaces when the config is loaded or reloaded, naming the
//! file, and never on the request path. Per-request calls are pure functions of the headers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod error;
mod identity;
mod keys;
mod requester;

pub use admin::AdminAuthenticator;
pub use error::{AuthError, IdentityError, TokenError};
pub use identity::{Identity, Via};
pub use requester::Authenticator;
