//! What an approval is bound to: the requester (an anonymous one by a keyed digest of their
//! credentials), the headers the upstream will receive, and the ticket's record of the request.

use http::header::{self, HeaderName};
use jitgate_identity::{Identity, Via};
use jitgate_rules::request::BoundHeaders;
use jitgate_rules::route::ApprovalPolicy;
use jitgate_rules::ticket::{self, RequestSnapshot, Requester};
use jitgate_rules::Canonical;

use crate::context::Exchange;

/// How much of a held body approvers see.
const PREVIEW_CAP: usize = 2048;

/// The requester of `c`: the authenticated user, or an anonymous client told apart from every
/// other by a digest of the credential-bearing headers it sent (its address when it sent none).
pub(super) fn requester(x: &Exchange<'_>, identity: &Identity, c: &Canonical) -> Requester {
    match &identity.user {
        Some(user) => Requester {
            user: Some(user.clone()),
            groups: identity.groups.clone(),
            anonymous: None,
        },
        None => Requester {
            user: None,
            groups: Vec::new(),
            anonymous: Some(anonymous_digest(x, c)),
        },
    }
}

/// Keyed digest over the configured credential headers (`[identity] credential_headers`,
/// sorted by name), values in order; over the client address when none was sent.
fn anonymous_digest(x: &Exchange<'_>, c: &Canonical) -> String {
    let names = &x.snap.table.config().identity.credential_headers;
    let mut material: Vec<u8> = Vec::new();
    let mut field = |name: &HeaderName, value: &[u8]| {
        material.extend_from_slice(name.as_str().as_bytes());
        material.push(0);
        material.extend_from_slice(&(value.len() as u64).to_be_bytes());
        material.extend_from_slice(value);
    };
    for name in names {
        if *name == header::PROXY_AUTHORIZATION {
            if let Some(v) = c.proxy_authorization() {
                field(name, v.as_bytes());
            }
            continue;
        }
        for v in c.headers().get_all(name) {
            field(name, v.as_bytes());
        }
    }
    if material.is_empty() {
        material.extend_from_slice(b"source\0");
        material.extend_from_slice(c.source().to_string().as_bytes());
    }
    x.engine().signer().requester_digest(&material)
}

/// The headers an approval of `c` binds: all but the volatile ones, the route's
/// `volatile_headers`, and the credential that identified the requester (the identity is
/// bound instead): the bearer token of a JWT requester, the identity headers a trusted proxy
/// stated.
pub(super) fn bound_headers(
    x: &Exchange<'_>,
    identity: &Identity,
    policy: &ApprovalPolicy,
    c: &Canonical,
) -> BoundHeaders {
    c.bound_headers(|n| {
        policy.volatile_headers.contains(n)
            || (identity.via == Via::Jwt && n == header::AUTHORIZATION)
            || (identity.via == Via::TrustedHeaders && x.snap.table.identity_headers().contains(n))
    })
}

/// What the ticket records and approvers see: the canonical request line, the forwarded
/// target, the bound headers (secrets redacted) and their digest, the body hash and a redacted
/// preview.
pub(super) fn snapshot(c: &Canonical, bound: &BoundHeaders, body: &[u8]) -> RequestSnapshot {
    // Every bound header is shown: an approver sees all the upstream will receive.
    let shown = bound
        .fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("[binary]")));
    RequestSnapshot {
        method: c.method_label(),
        host: c.host().to_string(),
        path: c.path().to_string(),
        query: c.query().unwrap_or("").to_string(),
        target: c.target().as_str().to_string(),
        headers: ticket::redact_headers(shown, &[]),
        headers_sha256: bound.digest.clone(),
        body_sha256: ticket::sha256_hex(body),
        body_preview: ticket::body_preview(body, PREVIEW_CAP),
    }
}
