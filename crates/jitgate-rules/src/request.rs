//! The one canonical request (SPEC sections 3 and 5): built once at the edge from what the
//! client sent, and the only view of the request that matching, `explain`, tickets,
//! fingerprints, logs and forwarding read. Nothing downstream re-canonicalises or re-parses.
//!
//! Building it (see [`Canonical::build`]):
//! 1. the method must be an upper-case token; exactly one `Host` (or `:authority`), and one
//!    is required;
//! 2. the target is canonicalised ([`crate::canon`]) into the path readings and the exact
//!    target that will be forwarded;
//! 3. the headers are scrubbed ([`crate::headers::scrub_request`]) into the set the upstream
//!    will receive: hop-by-hop, `_` names, path overrides, forgeable client-address and
//!    identity headers (untrusted peers) removed, the gateway's `Jit-*` headers taken aside,
//!    values without surrounding whitespace, cookie crumbs joined;
//! 4. method overrides (headers and `_method` in the query) become extra method readings;
//! 5. the client address is resolved behind `trusted_proxies`.
//!
//! Performance: on the common path (a canonical target, no overrides, no `Jit-*` header) this
//! allocates nothing beyond what the request already holds; the target is a reference-counted
//! clone of the one hyper parsed.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Version};
use ipnet::IpNet;

use crate::canon::{self, CanonError, CanonOptions};
use crate::headers::{self, HeaderError};
use crate::route::RequestView;

#[cfg(test)]
mod tests;

/// Why a request was refused at the edge (answered 400: the client's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// The request target or host is malformed or ambiguous.
    #[error(transparent)]
    Canon(#[from] CanonError),
    /// The headers cannot be interpreted.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A method with lower-case letters: methods are case-sensitive (RFC 9110 section 9.1)
    /// and frameworks that fold them would read `delete` as `DELETE`.
    #[error("method names are upper case")]
    LowerCaseMethod,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    DuplicateHost,
    /// No `Host` (or `:authority`): host conditions cannot be judged and an upstream would
    /// pick a virtual host the rules never saw.
    #[error("request without Host")]
    MissingHost,
    /// A gateway header (`Jit-Ticket`, `Jit-Approval`, ...) sent twice or not as text.
    #[error("{0} must be sent once, as text")]
    GatewayHeader(HeaderName),
    /// The canonical target cannot be carried in a request line (should not happen).
    #[error("the canonical target is not a valid request target")]
    Target,
    /// A WebDAV `Destination` (the second path a MOVE or COPY acts on) that is malformed,
    /// sent twice, or names another host.
    #[error("Destination header: {0}")]
    Destination(String),
}

/// Headers left out of an approval's binding on every route: they identify a trace or a hop,
/// not what the request asks for, and change on every retry (a route adds more with
/// `volatile_headers`). `content-length` is covered by the body hash and `host` by the
/// canonical host; the forwarding headers are set or vetted by the gateway itself.
pub const DEFAULT_VOLATILE_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "expect",
    "x-request-id",
    "x-correlation-id",
    // The time a gRPC call has left: it shrinks with every retry.
    "grpc-timeout",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "uber-trace-id",
    "sentry-trace",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "x-datadog-origin",
    // Set or rewritten by the gateway itself on the way out (the client address it resolved,
    // the canonical host, its own hop); what a trusted proxy sends beside them is bound.
    "x-forwarded-for",
    "x-forwarded-host",
    "via",
];

/// The most path readings a request has ([`Canonical::path_readings`]).
pub const READINGS: usize = 5;

/// The readings of a WebDAV `Destination` header: the canonical path (and its `%2F`-decoded
/// reading) of an absolute URI on this request's host, or of an absolute path. Sent twice,
/// malformed, or naming another host: refused.
fn destination_readings(
    headers: &HeaderMap,
    host: &[u8],
    edge: &Edge<'_>,
) -> Result<[Option<Box<str>>; 2], EdgeError> {
    let mut values = headers.get_all(headers::DESTINATION).iter();
    let Some(value) = values.next() else {
        return Ok([None, None]);
    };
    let bad = |why: &str| EdgeError::Destination(why.to_string());
    if values.next().is_some() {
        return Err(bad("sent more than once"));
    }
    let uri: http::Uri = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("not a URI"))?;
    if let Some(authority) = uri.authority() {
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let theirs = canon::canonical_host(authority.as_str(), default_port)
            .map_err(|e| EdgeError::Destination(e.to_string()))?;
        if theirs.as_bytes() != host {
            return Err(bad("names another host"));
        }
    }
    let path = canon::canonicalize_path(uri.path(), edge.canon)
        .map_err(|e| EdgeError::Destination(e.to_string()))?;
    Ok([
        Some(Box::from(&*path.path)),
        path.decoded_slash.as_deref().map(Box::from),
    ])
}

/// The headers an approval is bound to, and their digest (see [`Canonical::bound_headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundHeaders {
    /// Name (lowercase) and value, by name, values of one name in the order received.
    pub fields: Vec<(HeaderName, HeaderValue)>,
    /// [`crate::ticket::headers_digest`] of `fields`.
    pub digest: String,
}

/// What the edge knows about the connection, and the table-derived settings that shape the
/// canonical view (computed once per rule table, not per request; see
/// [`crate::RuleTable::edge`]).
#[derive(Debug, Clone, Copy)]
pub struct Edge<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the client spoke TLS (the default port is then 443).
    pub tls: bool,
    /// `[server] trusted_proxies`.
    pub trusted_proxies: &'a [IpNet],
    /// `[identity.headers]` names: only a trusted proxy may send them.
    pub identity_headers: &'a [HeaderName],
    /// The routes' canonicalisation opt-ins ([`crate::RuleTable::canon_options`]).
    pub canon: CanonOptions,
}

/// The canonical request. See the module documentation.
#[derive(Debug, Clone)]
pub struct Canonical {
    method: Method,
    /// `[wire method, overrides...]` when there are overrides; empty otherwise.
    methods: Vec<Method>,
    host: HeaderValue,
    target: PathAndQuery,
    /// The canonical path used for matching when it differs from `target`'s path (`;`
    /// parameters stripped).
    matched: Option<Box<str>>,
    /// The reading with `%2F` decoded, when a route allowed `%2F` and the path had one.
    decoded_slash: Option<Box<str>>,
    /// The canonical path of a `Destination` header (WebDAV MOVE/COPY write there), and its
    /// `%2F`-decoded reading: more paths the request acts on.
    destination: [Option<Box<str>>; 2],
    encoded_slash: bool,
    path_params: bool,
    headers: HeaderMap,
    gateway: Vec<(HeaderName, HeaderValue)>,
    proxy_authorization: Option<HeaderValue>,
    source: IpAddr,
    trusted_peer: bool,
    version: Version,
    upgrade: bool,
}

impl Canonical {
    /// Builds the canonical view of a request. Takes the headers out of `parts` (they become
    /// the forwarded set); the method and URI stay, for logging a refusal.
    pub fn build(
        parts: &mut http::request::Parts,
        edge: &Edge<'_>,
    ) -> Result<Canonical, EdgeError> {
        if parts
            .method
            .as_str()
            .bytes()
            .any(|b| b.is_ascii_lowercase())
        {
            return Err(EdgeError::LowerCaseMethod);
        }
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(EdgeError::DuplicateHost);
        }
        let target = canon::canonicalize_target(
            &parts.method,
            &parts.uri,
            host_header,
            edge.tls,
            edge.canon,
        )?;
        if target.host.is_empty() {
            return Err(EdgeError::MissingHost);
        }
        let host = match host_header {
            Some(raw) if raw.as_bytes() == target.host.as_bytes() => raw.clone(),
            _ => HeaderValue::from_str(&target.host).map_err(|_| EdgeError::Target)?,
        };
        let forward_path = target.path.forward_path();
        let unchanged = parts.uri.path() == forward_path && parts.uri.query() == target.query;
        let forwarded = match (unchanged, parts.uri.path_and_query()) {
            (true, Some(pq)) => pq.clone(),
            _ => {
                let pq = match target.query {
                    Some(q) => format!("{forward_path}?{q}"),
                    None => forward_path.to_string(),
                };
                PathAndQuery::try_from(pq).map_err(|_| EdgeError::Target)?
            }
        };
        let matched = (target.path.path != forward_path).then(|| Box::from(&*target.path.path));
        let decoded_slash = target.path.decoded_slash.as_deref().map(Box::from);
        let (encoded_slash, path_params) = (target.path.encoded_slash, target.path.path_params);
        drop(target);

        let trusted_peer = headers::is_trusted(edge.trusted_proxies, edge.peer);
        let upgrade = headers::wants_upgrade(parts.version, &parts.headers);
        let mut headers = std::mem::take(&mut parts.headers);
        let scrubbed =
            headers::scrub_request(&mut headers, upgrade, trusted_peer, edge.identity_headers)?;
        if scrubbed.cookie_fields > 1 {
            headers::join_cookie_crumbs(&mut headers);
        }
        for (name, _) in &scrubbed.gateway {
            let mut values = scrubbed.gateway.iter().filter(|(n, _)| n == name);
            let once = values.next().is_some_and(|(_, v)| v.to_str().is_ok());
            if !once || values.next().is_some() {
                return Err(EdgeError::GatewayHeader(name.clone()));
            }
        }
        let destination = if scrubbed.destination {
            destination_readings(&headers, host.as_bytes(), edge)?
        } else {
            [None, None]
        };
        let overrides = canon::method_overrides(
            scrubbed.method_override.then_some(&headers),
            forwarded.query(),
        )?;
        let methods = if overrides.is_empty() {
            Vec::new()
        } else {
            std::iter::once(parts.method.clone())
                .chain(overrides.into_iter().filter(|m| *m != parts.method))
                .collect()
        };
        let source = headers::client_ip(edge.trusted_proxies, edge.peer, &headers);
        Ok(Canonical {
            method: parts.method.clone(),
            methods,
            host,
            target: forwarded,
            matched,
            decoded_slash,
            destination,
            encoded_slash,
            path_params,
            headers,
            gateway: scrubbed.gateway,
            proxy_authorization: scrubbed.proxy_authorization,
            source,
            trusted_peer,
            version: parts.version,
            upgrade,
        })
    }

    /// The method on the wire (what is forwarded).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Every method reading: the wire method first, then each override spelling.
    pub fn methods(&self) -> &[Method] {
        if self.methods.is_empty() {
            std::slice::from_ref(&self.method)
        } else {
            &self.methods
        }
    }

    /// The methods as a ticket records them: every distinct spelling joined by `+`
    /// (`POST+DELETE`), so an approval for one reading never fits the other.
    pub fn method_label(&self) -> String {
        let names: Vec<&str> = self.methods().iter().map(Method::as_str).collect();
        names.join("+")
    }

    /// Adds method readings found in the body (`_method` in a form): see
    /// [`crate::form::body_method_overrides`]. Readings already present are not repeated.
    pub fn add_method_readings(&mut self, found: impl IntoIterator<Item = Method>) {
        for m in found {
            if !self.methods().contains(&m) {
                if self.methods.is_empty() {
                    self.methods.push(self.method.clone());
                }
                self.methods.push(m);
            }
        }
    }

    /// The canonical host (lowercase, no trailing dot, no default port).
    pub fn host(&self) -> &str {
        self.host.to_str().unwrap_or("")
    }

    /// The canonical host as the `Host` value to forward.
    pub fn host_value(&self) -> &HeaderValue {
        &self.host
    }

    /// The canonical path that routes match (without `;` parameters a route keeps).
    pub fn path(&self) -> &str {
        self.matched.as_deref().unwrap_or(self.target.path())
    }

    /// The raw query (without `?`), validated, not rewritten.
    pub fn query(&self) -> Option<&str> {
        self.target.query()
    }

    /// The exact target forwarded upstream: the canonical path (with kept `;` parameters) and
    /// the query.
    pub fn target(&self) -> &PathAndQuery {
        &self.target
    }

    /// Every path reading an upstream may act on, canonical first (then the `%2F`-decoded
    /// reading, the forwarded path with its `;` parameters, and a WebDAV `Destination`); a
    /// restricting route matches if any does, an allow route only if all do. Filled into
    /// `buf` (no allocation).
    pub fn path_readings<'a>(&'a self, buf: &'a mut [&'a str; READINGS]) -> &'a [&'a str] {
        buf[0] = self.path();
        let mut n = 1;
        let [d0, d1] = &self.destination;
        for extra in [
            self.decoded_slash.as_deref(),
            Some(self.target.path()),
            d0.as_deref(),
            d1.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if buf[..n].iter().all(|have| *have != extra) {
                buf[n] = extra;
                n += 1;
            }
        }
        let buf: &'a [&'a str; READINGS] = buf;
        &buf[..n]
    }

    /// Whether the path kept an opaque `%2F` (a route must opt in to it).
    pub fn has_encoded_slash(&self) -> bool {
        self.encoded_slash
    }

    /// Whether the path carried `;` parameters (a route must opt in to them).
    pub fn has_path_params(&self) -> bool {
        self.path_params
    }

    /// The headers the upstream will receive (before the gateway's forwarding headers).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Takes the forwarded headers (when the request is sent).
    pub fn take_headers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.headers)
    }

    /// The value of the gateway header `name` (`jit-ticket`, `jit-approval`, `jit-reason`...),
    /// trimmed; sent at most once (checked when built).
    pub fn gateway_header(&self, name: &str) -> Option<&str> {
        self.gateway
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
            .map(str::trim)
    }

    /// Whether the request carried the gateway header `name` at all (readable or not).
    pub fn gateway_headers_named(&self, name: &str) -> bool {
        self.gateway.iter().any(|(n, _)| n.as_str() == name)
    }

    /// `Proxy-Authorization` as sent (never forwarded; a credential for anonymous requesters).
    pub fn proxy_authorization(&self) -> Option<&HeaderValue> {
        self.proxy_authorization.as_ref()
    }

    /// The client address (behind `trusted_proxies`).
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Whether the peer is a trusted proxy.
    pub fn trusted_peer(&self) -> bool {
        self.trusted_peer
    }

    /// The client's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Copies what still points into the connection's read buffer (hyper parses a request
    /// head without copying: the target and header values share the buffer), so a request
    /// kept for long, held for approval, lets its connection reuse that buffer for the next
    /// read instead of allocating another beside it.
    pub fn detach(&mut self) {
        fn own(v: &HeaderValue) -> HeaderValue {
            let mut copy = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
            copy.set_sensitive(v.is_sensitive());
            copy
        }
        self.host = own(&self.host);
        if let Ok(target) = PathAndQuery::try_from(self.target.as_str()) {
            self.target = target;
        }
        for v in self.headers.values_mut() {
            *v = own(v);
        }
        for (_, v) in &mut self.gateway {
            *v = own(v);
        }
        if let Some(v) = &mut self.proxy_authorization {
            *v = own(v);
        }
    }

    /// Whether this is a WebSocket upgrade (the only upgrade passed through).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// The headers an approval of this request binds: every header the upstream will receive
    /// (as the edge left them) but [`DEFAULT_VOLATILE_HEADERS`] and those `unbound` names
    /// (a route's `volatile_headers`, and the credential that identified the requester, whose
    /// identity is bound instead).
    pub fn bound_headers(&self, unbound: impl Fn(&HeaderName) -> bool) -> BoundHeaders {
        let mut fields: Vec<(HeaderName, HeaderValue)> = self
            .headers
            .iter()
            .filter(|(n, _)| !DEFAULT_VOLATILE_HEADERS.contains(&n.as_str()) && !unbound(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        fields.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let digest =
            crate::ticket::headers_digest(fields.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
        BoundHeaders { fields, digest }
    }

    /// Calls `f` with the matcher's view of this request.
    pub fn with_view<R>(&self, f: impl FnOnce(&RequestView<'_>) -> R) -> R {
        let mut buf = [""; READINGS];
        let paths = self.path_readings(&mut buf);
        f(&RequestView {
            methods: self.methods(),
            host: self.host(),
            paths,
            headers: &self.headers,
            source: self.source,
        })
    }
}
