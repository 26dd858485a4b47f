//! Canonical request targets (SPEC section 5): the one view of a request's host and path
//! that matching, tickets, fingerprints, logs and forwarding all use.

use std::borrow::Cow;

/// Route opt-ins that relax canonicalisation; the gateway passes the union over the table,
/// then refuses a request whose matched route did not opt in to what the request used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CanonOptions {
    /// Some route has `allow_encoded_slash = true`: keep `%2F` opaque instead of refusing it.
    pub allow_encoded_slash: bool,
    /// Some route has `allow_path_params = true`: strip `;` parameters for matching.
    pub allow_path_params: bool,
}

/// Why a request target was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    /// Placeholder until the implementation lands.
    #[error("malformed request target")]
    Malformed,
}

/// The canonical request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonTarget<'a> {
    /// The canonical path: used for matching, tickets, logs and forwarding.
    pub path: Cow<'a, str>,
}
