//! Who is asking: requester and admin-plane authentication, and jitgate's approval tokens.
//!
//! Everything that reads a file or an environment variable does so at construction
//! (`from_config`), so a bad key surfaces when the config is loaded or reloaded, naming the
//! file, and never on the request path. Per-request calls are pure functions of the headers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod approval;
mod error;
mod identity;
mod keys;
mod mint;
mod requester;

pub use admin::AdminAuthenticator;
pub use approval::{ApprovalClaims, ApprovalSigner, APPROVAL_ISSUER};
pub use error::{AuthError, IdentityError, TokenError};
pub use identity::{Identity, Via};
pub use mint::mint_hs256;
pub use requester::Authenticator;
