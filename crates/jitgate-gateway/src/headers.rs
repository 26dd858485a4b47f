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
