//! Request header rules a forwarding proxy applies before anything reads the headers: hop-by-hop
//! removal (RFC 9110 section 7.6.1), headers the upstream must never trust from a client, the
//! gateway's own `Jit-*` headers, and who the client is behind `trusted_proxies`.
//!
//! [`scrub_request`] runs once at the edge (from [`crate::Canonical::build`]), so the matcher,
//! the approval binding and the upstream all see one header map.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Version};
use ipnet::IpNet;

use crate::canon::PATH_OVERRIDE_HEADERS;

#[cfg(test)]
mod tests;

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

/// Client-address (and proxy-identity) headers an upstream might believe; only a trusted
/// proxy may send them.
const CLIENT_ADDRESS: [&str; 7] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
    "x-forwarded-server",
];

/// What only a trusted proxy may say about the request's way here: the client-address headers,
/// `Forwarded` and every `X-Forwarded-*` (Rack reads `X-Forwarded-Ssl`, `-Scheme` and `-Port`
/// for the scheme and port), and IIS's `Front-End-Https`. The gateway sets `X-Forwarded-For`,
/// `-Proto` and `-Host` itself.
fn is_forwarding(n: &str) -> bool {
    CLIENT_ADDRESS.contains(&n)
        || n == "forwarded"
        || n.starts_with("x-forwarded-")
        || n == "front-end-https"
        || n == "x-url-scheme"
}

/// Headers some frameworks take as the request's host instead of `Host` (Symfony's and Zend's
/// `X-Host`-style overrides, the 403-bypass lists' host spellings), so an upstream could serve
/// a virtual host the rules never matched; and `Proxy`, which CGI servers turn into the
/// `HTTP_PROXY` environment variable ("httpoxy", CVE-2016-5385). Never forwarded; the host the
/// upstream sees is the canonical one (`Host`, `X-Forwarded-Host`).
pub const HOST_OVERRIDE_HEADERS: [&str; 5] = [
    "x-host",
    "x-http-host-override",
    "x-original-host",
    "proxy-host",
    "proxy",
];

/// The gateway's own header namespace: a request's `Jit-*` headers are read by the gateway
/// (`Jit-Ticket`, `Jit-Approval`, `Jit-Reason`...) and never forwarded or bound; the only
/// `Jit-*` header an upstream sees is the `Jit-Approval` the gateway sets itself.
pub const GATEWAY_PREFIX: &str = "jit-";

/// `X-Forwarded-For`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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

/// What [`scrub_request`] took out of the request that the gateway still needs, and what it
/// saw on its one pass over the headers (so later steps skip lookups of absent headers).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scrubbed {
    /// `Proxy-Authorization` (hop-by-hop, so never forwarded): a credential that tells
    /// anonymous requesters apart.
    pub proxy_authorization: Option<HeaderValue>,
    /// The request's `Jit-*` headers, in order (empty, without allocating, when none).
    pub gateway: Vec<(HeaderName, HeaderValue)>,
    /// How many `Cookie` fields are left (HTTP/2 may split it).
    pub cookie_fields: usize,
    /// Whether a `Destination` header is left.
    pub destination: bool,
    /// Whether a method-override header is left.
    pub method_override: bool,
}

/// `Destination` (WebDAV MOVE/COPY).
pub const DESTINATION: HeaderName = HeaderName::from_static("destination");

/// Makes the request's headers what both the matcher and the upstream will see, before
/// matching: hop-by-hop headers and those `Connection` names (so `Connection: x-env` cannot
/// hide a header from the upstream after the matcher saw it), names with `_` (CGI-style
/// servers read `X_Original_URL` as `X-Original-URL`; nginx drops them too), path- and
/// host-override headers, the gateway's `Jit-*` headers (returned, not forwarded), and, from an untrusted
/// peer, every client-address header and the `identity` headers (which only a trusted proxy
/// may set). Values keep no leading or trailing whitespace (RFC 9110 section 5.5: it is not
/// part of the value; HTTP/1 parsers drop it, HTTP/2 carries it), so a header condition and
/// the upstream read the same value.
pub fn scrub_request(
    headers: &mut HeaderMap,
    upgrade: bool,
    trusted_peer: bool,
    identity: &[HeaderName],
) -> Result<Scrubbed, HeaderError> {
    let mut out = Scrubbed::default();
    // One pass over the headers classifies them; the map is only changed when something has to
    // go (most requests have nothing to remove).
    let mut hop = false;
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut padded = false;
    for (name, value) in headers.iter() {
        if *name == header::TE || HOP_BY_HOP.contains(name) {
            hop = true;
            if *name == header::PROXY_AUTHORIZATION && out.proxy_authorization.is_none() {
                out.proxy_authorization = Some(value.clone());
            }
            continue;
        }
        let n = name.as_str();
        let gateway = n.starts_with(GATEWAY_PREFIX);
        if gateway
            || n.contains('_')
            || always_dropped(name)
            || (!trusted_peer && (is_forwarding(n) || identity.contains(name)))
        {
            if doomed.last() != Some(name) {
                doomed.push(name.clone());
            }
            if gateway {
                out.gateway.push((name.clone(), value.clone()));
            }
            continue;
        }
        padded |= is_padded(value.as_bytes());
        if *name == header::COOKIE {
            out.cookie_fields += 1;
        } else if *name == DESTINATION {
            out.destination = true;
        } else if crate::canon::METHOD_OVERRIDE_HEADERS.contains(name) {
            out.method_override = true;
        }
    }
    if hop {
        // Connection may name any header: what it named is gone from the tallies too.
        strip_hop_by_hop(headers, upgrade)?;
        out.cookie_fields = headers.get_all(header::COOKIE).iter().count();
        out.destination = headers.contains_key(DESTINATION);
        out.method_override = crate::canon::METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|n| headers.contains_key(n));
    }
    for name in &doomed {
        headers.remove(name);
    }
    if padded {
        trim_values(headers);
    }
    Ok(out)
}

/// Whether `name` is a path- or host-override header, dropped from every request. A hash set:
/// this runs for every header of every request, and the lists hold about fifty names.
fn always_dropped(name: &HeaderName) -> bool {
    use std::collections::HashSet;
    static SET: std::sync::LazyLock<HashSet<HeaderName, crate::matcher::FxBuild>> =
        std::sync::LazyLock::new(|| {
            PATH_OVERRIDE_HEADERS
                .iter()
                .chain(HOST_OVERRIDE_HEADERS.iter())
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        });
    SET.contains(name)
}

fn is_padded(v: &[u8]) -> bool {
    matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t'))
}

/// Rewrites values with leading or trailing spaces or tabs without them.
fn trim_values(headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        if is_padded(value.as_bytes()) {
            let trimmed = value.as_bytes().trim_ascii();
            if let Ok(v) = HeaderValue::from_bytes(trimmed) {
                *value = v;
            }
        }
    }
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
    let values: Vec<&HeaderValue> = headers.get_all(X_FORWARDED_FOR).iter().collect();
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

/// HTTP/2 clients may split `Cookie` into several fields (RFC 9113 section 8.2.3); HTTP/1.1
/// upstreams expect one, and the approval binding must not depend on how a client split it,
/// so they are joined with "; " as that section says.
pub fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}
