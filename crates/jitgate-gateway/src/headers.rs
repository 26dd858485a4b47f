//! Forwarding headers the gateway sets upstream: `X-Forwarded-*` and `Via`. The request-side
//! rules (hop-by-hop removal, scrubbing, the client address) are pure and live in
//! [`jitgate_rules::headers`]; the response side calls its [`strip_hop_by_hop`] too.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Version};

pub use jitgate_rules::headers::strip_hop_by_hop;

/// What the request said about itself before we touched it.
pub struct Forwarding<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// `peer`, canonical, already as a header value (formatted once per connection); `None`
    /// formats it here.
    pub peer_value: Option<&'a HeaderValue>,
    /// Whether the peer is a trusted proxy.
    pub trusted_peer: bool,
    /// Whether the client spoke TLS to us.
    pub tls: bool,
    /// Canonical host of the request.
    pub host: &'a HeaderValue,
    /// HTTP version of the client's request.
    pub version: Version,
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `Via`. From an untrusted peer every inbound
/// `X-Forwarded-*` and `Forwarded` is discarded first, so a client cannot forge them.
pub fn set_forwarding(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let peer = || fwd.peer.to_canonical().to_string();
    let peer_value = || {
        fwd.peer_value
            .cloned()
            .or_else(|| HeaderValue::from_str(&peer()).ok())
    };
    if fwd.trusted_peer {
        let prior: Vec<String> = headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        if prior.is_empty() {
            if let Some(value) = peer_value() {
                headers.insert(xff, value);
            }
        } else {
            let value = format!("{}, {}", prior.join(", "), peer());
            insert_str(headers, xff, &value);
        }
    } else {
        headers.remove(header::FORWARDED);
        if let Some(value) = peer_value() {
            headers.insert(xff, value);
        }
        headers.remove(&xfp);
    }
    if !headers.contains_key(&xfp) {
        let proto = if fwd.tls { "https" } else { "http" };
        headers.insert(xfp, HeaderValue::from_static(proto));
    }
    // Always the host we matched on, even behind a trusted proxy: the upstream must not act
    // on a host the rules never saw.
    headers.insert(xfh, fwd.host.clone());
    append_via(headers, fwd.version);
}

/// Appends our `Via` entry (`1.1 jitgate`, `2 jitgate`).
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    let ours = match version {
        Version::HTTP_09 => "0.9 jitgate",
        Version::HTTP_10 => "1.0 jitgate",
        Version::HTTP_2 => "2 jitgate",
        Version::HTTP_3 => "3 jitgate",
        _ => "1.1 jitgate",
    };
    match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prior) => {
            let value = format!("{prior}, {ours}");
            insert_str(headers, header::VIA, &value);
        }
        None => {
            headers.insert(header::VIA, HeaderValue::from_static(ours));
        }
    }
}

fn insert_str(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests;

/// `X-Request-Id`: taken from the client, or set, and forwarded upstream.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// The request's id: the client's one `X-Request-Id` when it is 1 to 128 characters of
/// `A-Z a-z 0-9 . _ ~ : @ / + = -` (a UUID, a ULID, a W3C trace id, Envoy's and nginx's ids
/// all are), else a new one. Anything else (two ids, spaces, quotes, control characters, an
/// overlong id) is replaced rather than trusted into logs; the forwarder sends exactly this
/// id, whatever the client sent.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (sent.next(), sent.next()) {
        if acceptable_request_id(id.as_bytes()) {
            return id.clone();
        }
    }
    new_request_id()
}

fn acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b".-_~:@/+=".contains(&b))
}

/// 32 hex digits: a random prefix drawn once per process, then a counter. Unique across
/// replicas (with overwhelming probability) and across the process's life, for the price of
/// an atomic increment; an id identifies, it is not a secret.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::LazyLock;
    static PREFIX: LazyLock<u64> = LazyLock::new(|| {
        let mut b = [0u8; 8];
        // SystemRandom fails only without an OS random source; a time-derived prefix still
        // keeps this process's ids apart from another's.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            b = (nanos as u64 ^ u64::from(std::process::id())).to_be_bytes();
        }
        u64::from_be_bytes(b)
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 32];
    let digits = PREFIX.to_be_bytes().into_iter().chain(n.to_be_bytes());
    for (pair, byte) in id.chunks_exact_mut(2).zip(digits) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}
