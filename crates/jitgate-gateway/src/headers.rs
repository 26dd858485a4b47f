//! Header rules of a forwarding proxy: hop-by-hop removal (RFC 9110 section 7.6.1),
//! `X-Forwarded-*` and `Via`, and who the client is behind `trusted_proxies`.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Version};
use ipnet::IpNet;
use jitgate_rules::canon::PATH_OVERRIDE_HEADERS;

/// Always hop-by-hop, whatever `Connection` says. `Trailer` is not here: it is end-to-end
/// (RFC 9110 section 6.6.2) and hyper only sends trailer fields it declares.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Client-address headers an upstream might believe; only a trusted proxy may send them.
const CLIENT_ADDRESS: [&str; 6] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
];

/// Approval headers the gateway itself sets upstream; never believed from a client.
const GATEWAY_OWNED: [&str; 1] = ["jit-approval"];

/// More `Connection` tokens than this is an attack, not a client.
const MAX_CONNECTION_TOKENS: usize = 32;

/// A request whose headers we refuse to interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `Connection` lists too many tokens.
    #[error("Connection header lists more than {MAX_CONNECTION_TOKENS} tokens")]
    TooManyConnectionTokens,
}

/// Removes hop-by-hop headers and every header named in `Connection`. `TE: trailers` is kept
/// (gRPC needs it end to end); an upgrade keeps `Connection: upgrade` and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) -> Result<(), HeaderError> {
    // Names listed in Connection are hop-by-hop too; collect before removing it.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(value) = value.to_str() {
            for token in value.split(',') {
                let token = token.trim();
                if token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
                    continue;
                }
                if named.len() == MAX_CONNECTION_TOKENS {
                    return Err(HeaderError::TooManyConnectionTokens);
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in &named {
        if name != header::TE {
            headers.remove(name);
        }
    }
    let trailers_only = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !trailers_only {
        headers.remove(header::TE);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    Ok(())
}

/// Makes the request's headers what both the matcher and the upstream will see, before
/// matching: hop-by-hop headers and those `Connection` names (so `Connection: x-env` cannot
/// hide a header from the upstream after the matcher saw it), names with `_` (CGI-style
/// servers read `X_Original_URL` as `X-Original-URL`; nginx drops them too), path-override
/// headers, the approval header the gateway owns, and, from an untrusted peer, every
/// client-address header.
pub fn scrub_request(
    headers: &mut HeaderMap,
    upgrade: bool,
    trusted_peer: bool,
) -> Result<(), HeaderError> {
    strip_hop_by_hop(headers, upgrade)?;
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if n.contains('_')
            || PATH_OVERRIDE_HEADERS.contains(&n)
            || GATEWAY_OWNED.contains(&n)
            || (!trusted_peer && CLIENT_ADDRESS.contains(&n))
        {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
    Ok(())
}

/// Whether a request asks for a WebSocket upgrade, the only upgrade passed through. Any other
/// `Upgrade` (notably `h2c`, which would turn the connection into an unmatched HTTP/2
/// tunnel: "h2c smuggling") is stripped as hop-by-hop and the request forwarded plainly.
pub fn wants_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.get_all(header::UPGRADE).iter().count() == 1
        && headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// Whether `ip` is one of the `trusted_proxies`.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. An unparsable entry stops the
/// walk there (we never believe anything left of garbage).
pub fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !is_trusted(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for value in values.iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(trusted, client) {
                return client;
            }
        }
    }
    client
}

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
