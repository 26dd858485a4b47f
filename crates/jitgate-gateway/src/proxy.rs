//! The data plane: one request through scrub → canonicalise → match → act → forward.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use jitgate_rules::canon;
use jitgate_rules::config::{render_error_body, UpstreamProtocol};
use jitgate_rules::route::{Action, ErrorTemplate, Route};
use jitgate_rules::RequestView;

use crate::body::ProxyBody;
use crate::headers::{self, Forwarding};
use crate::hold;
use crate::problem::{Fault, Problem};
use crate::state::{Shared, Snapshot};
use crate::upstream::{self, Failure, UpstreamClient};

/// What we know about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it spoke TLS to us.
    pub tls: bool,
    /// The peer's canonical address as a header value, formatted once per connection for
    /// `X-Forwarded-For`.
    pub peer_value: Option<HeaderValue>,
}

impl ConnInfo {
    /// Describes a client connection.
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let text = peer.ip().to_canonical().to_string();
        ConnInfo {
            peer,
            tls,
            peer_value: HeaderValue::from_str(&text).ok(),
        }
    }
}

/// What matching decided, owned, so the request can be taken apart afterwards.
pub(crate) struct Decision {
    pub(crate) route: usize,
    /// Set when the forwarded target differs from what the client sent.
    pub(crate) rewrite: Option<PathAndQuery>,
    /// The canonical Host, reusing the client's header value when it was already canonical.
    pub(crate) host: HeaderValue,
}

/// The canonical request as a ticket records it (filled only where a ticket may be opened).
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// The method; with overrides, every spelling joined by `+` (`POST+DELETE`), so an
    /// approval for one never fits the other.
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) query: String,
}

/// Serves one data-plane request. Never fails: every error is an HTTP answer.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    // The request keeps this generation of the table until it is answered.
    let snap = shared.snapshot();
    let server = &snap.table.config().server;
    let trusted_peer = headers::is_trusted(&server.trusted_proxies, conn.peer.ip());
    if req.uri().path().starts_with(hold::WELL_KNOWN) {
        if let Some(resp) = hold::well_known(&shared, &snap, trusted_peer, &req).await {
            return resp;
        }
    }
    let upgrade = headers::wants_upgrade(req.version(), req.headers());
    // Read the resume headers before scrubbing drops them: they are the gateway's, never
    // the upstream's.
    let resume = hold::Resume::take(req.headers_mut());
    if !trusted_peer {
        for name in &snap.identity_headers {
            req.headers_mut().remove(name);
        }
    }
    let decision = resume
        .and_then(|resume| {
            headers::scrub_request(req.headers_mut(), upgrade, trusted_peer)
                .map_err(|e| Problem::bad_request(e.to_string()))
                .map(|()| resume)
        })
        .and_then(|resume| {
            decide(&snap, &conn, req.method(), req.uri(), req.headers(), None).map(|d| (d, resume))
        });
    let (decision, resume) = match decision {
        Ok(d) => d,
        Err(problem) => {
            log_refusal(&req, &problem);
            return problem.into_response();
        }
    };
    let Some(route) = snap.table.routes().get(decision.route) else {
        return internal_error("matched route vanished");
    };
    // Logs show the canonical path, the one that was matched and would be forwarded.
    let path = decision
        .rewrite
        .as_ref()
        .map_or_else(|| req.uri().path(), PathAndQuery::path);
    match (route.action, route.enforce) {
        (Action::Allow, _) => {}
        (Action::Deny, true) => {
            tracing::info!(route = %route.name, method = %req.method(), path, "denied");
            return deny_response(route);
        }
        (Action::Approve, true) => {
            let held = hold::Held {
                shared: &shared,
                snap: &snap,
                conn: &conn,
                trusted_peer,
            };
            // Boxed: the hold path is large and rare; keeping it out of this future keeps every
            // connection's in-flight slot small.
            return Box::pin(held.approve(decision, resume, upgrade, req)).await;
        }
        (action, false) => {
            let would = if action == Action::Deny {
                "deny"
            } else {
                "hold for approval"
            };
            tracing::warn!(route = %route.name, method = %req.method(), path, "shadow mode: would {would}; forwarding");
        }
    }
    let Some(upstream) = snap
        .route_upstreams
        .get(decision.route)
        .and_then(Option::as_ref)
    else {
        return internal_error("route has no upstream");
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = ProxyBody::relay(body, upstream.def.idle_timeout);
    let hop = Hop {
        conn: &conn,
        trusted_peer,
        decision,
        client_upgrade,
        approval: None,
    };
    forward(upstream, hop, parts, body).await
}

/// Everything [`forward`] needs besides the request.
pub(crate) struct Hop<'a> {
    pub(crate) conn: &'a ConnInfo,
    pub(crate) trusted_peer: bool,
    pub(crate) decision: Decision,
    pub(crate) client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The approval token, sent upstream in `Jit-Approval`.
    pub(crate) approval: Option<HeaderValue>,
}

pub(crate) fn internal_error(detail: &str) -> Response<ProxyBody> {
    tracing::error!("internal error: {detail}");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the gateway failed to handle this request",
        Fault::Internal,
    )
    .into_response()
}

fn log_refusal(req: &Request<Incoming>, problem: &Problem) {
    tracing::info!(
        status = problem.status.as_u16(),
        method = %req.method(),
        target = %req.uri(),
        "refused: {}",
        problem.detail
    );
}

/// Canonicalises and matches. Borrows the request; returns only owned results, and fills
/// `facts` when asked to.
pub(crate) fn decide(
    snap: &Snapshot,
    conn: &ConnInfo,
    method: &Method,
    uri: &Uri,
    req_headers: &http::HeaderMap,
    facts: Option<&mut Facts>,
) -> Result<Decision, Problem> {
    let table = &snap.table;
    let server = &table.config().server;
    // hyper accepts any token as a method, and `delete` is not DELETE to the matcher while
    // many frameworks treat it as DELETE. Methods are case-sensitive (RFC 9110 9.1): refuse.
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Problem::bad_request("method names are upper case"));
    }
    let mut hosts = req_headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Problem::bad_request("more than one Host header"));
    }
    let target =
        canon::canonicalize_target(method, uri, host_header, conn.tls, table.canon_options())
            .map_err(|e| Problem::bad_request(e.to_string()))?;
    // Without a host, host conditions cannot be judged; an upstream would pick a default
    // virtual host the rules never saw.
    if target.host.is_empty() {
        return Err(Problem::bad_request("request without Host"));
    }
    let overrides = canon::method_overrides(req_headers, target.query)
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let with_overrides: Vec<Method>;
    let methods: &[Method] = if overrides.is_empty() {
        std::slice::from_ref(method)
    } else {
        with_overrides = std::iter::once(method.clone()).chain(overrides).collect();
        &with_overrides
    };
    let source = headers::client_ip(&server.trusted_proxies, conn.peer.ip(), req_headers);
    let mut buf = [""; 3];
    let paths = target.path.readings(&mut buf);
    let view = RequestView {
        methods,
        host: &target.host,
        paths,
        headers: req_headers,
        source,
    };
    let Some(route) = table.match_request(&view) else {
        return Err(Problem::no_route(method.as_str(), &target.path.path));
    };
    if target.path.encoded_slash && !route.allow_encoded_slash {
        return Err(Problem::bad_request(format!(
            "encoded slash (%2F) in path; route {} does not allow it",
            route.name
        )));
    }
    if target.path.path_params && !route.allow_path_params {
        return Err(Problem::bad_request(format!(
            "';' path parameters in path; route {} does not allow them",
            route.name
        )));
    }

    if let Some(facts) = facts {
        let mut spelled: Vec<&str> = Vec::with_capacity(methods.len());
        for m in methods {
            if !spelled.contains(&m.as_str()) {
                spelled.push(m.as_str());
            }
        }
        *facts = Facts {
            method: spelled.join("+"),
            host: target.host.to_string(),
            path: target.path.path.to_string(),
            query: target.query.unwrap_or("").to_string(),
        };
    }
    let forward_path = target.path.forward_path();
    let rewrite = if uri.path() == forward_path && uri.query() == target.query {
        None
    } else {
        let pq = match target.query {
            Some(q) => format!("{forward_path}?{q}"),
            None => forward_path.to_string(),
        };
        Some(PathAndQuery::try_from(pq).map_err(|e| Problem::bad_request(e.to_string()))?)
    };
    let host = match host_header {
        Some(raw) if raw.as_bytes() == target.host.as_bytes() => raw.clone(),
        _ => {
            HeaderValue::from_str(&target.host).map_err(|e| Problem::bad_request(e.to_string()))?
        }
    };
    Ok(Decision {
        route: route.index,
        rewrite,
        host,
    })
}

/// The answer of an enforcing deny route: its `[routes.error]`, or 403 problem+json.
pub fn deny_response(route: &Route) -> Response<ProxyBody> {
    match &route.error {
        Some(template) => render_error(template, "", "", &route.name),
        None => Problem::new(
            StatusCode::FORBIDDEN,
            "denied",
            "Denied by rule",
            format!("route {} denies this request", route.name),
            Fault::Policy,
        )
        .with("rule", route.name.clone())
        .into_response(),
    }
}

/// Renders a route's custom error (placeholders substituted in one pass, JSON-escaped in
/// JSON bodies).
pub fn render_error(
    t: &ErrorTemplate,
    ticket: &str,
    reason: &str,
    rule: &str,
) -> Response<ProxyBody> {
    let body = render_error_body(t, ticket, reason, rule);
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = t.status;
    if let Ok(ct) = HeaderValue::from_str(&t.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// Sends the canonical request upstream and relays the answer, streaming both bodies.
pub(crate) async fn forward(
    upstream: &UpstreamClient,
    hop: Hop<'_>,
    mut parts: http::request::Parts,
    body: ProxyBody,
) -> Response<ProxyBody> {
    let def = &upstream.def;
    let Hop {
        conn,
        trusted_peer,
        decision,
        client_upgrade,
        approval,
    } = hop;
    let client_version = parts.version;

    let pq = match decision.rewrite {
        Some(pq) => pq,
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    parts.uri = if upstream.origin_form() {
        Uri::from(pq)
    } else {
        let mut uri = def.url.clone().into_parts();
        uri.path_and_query = Some(pq);
        match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(e) => return internal_error(&format!("cannot build the upstream URI: {e}")),
        }
    };
    parts.version = Version::HTTP_11;

    headers::set_forwarding(
        &mut parts.headers,
        &Forwarding {
            peer: conn.peer.ip(),
            peer_value: conn.peer_value.as_ref(),
            trusted_peer,
            tls: conn.tls,
            host: &decision.host,
            version: client_version,
        },
    );
    // Over HTTP/2 the authority travels in `:authority`, taken from the upstream URL; a second,
    // different `host` would be a malformed request (RFC 9113 8.3.1), so h2 upstreams get
    // the upstream's authority and the client's host only in X-Forwarded-Host.
    if def.preserve_host && def.protocol != UpstreamProtocol::H2 {
        parts.headers.insert(header::HOST, decision.host);
    } else if def.protocol == UpstreamProtocol::H2 {
        parts.headers.remove(header::HOST);
    } else if let Some(authority) = def
        .url
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, authority);
    }

    join_cookie_crumbs(&mut parts.headers);
    if let Some(token) = approval {
        parts.headers.insert(hold::JIT_APPROVAL, token);
    }
    if let ProxyBody::Full(_) | ProxyBody::Empty = body {
        // A held body is replayed from the buffer: its length is known.
        parts.headers.remove(header::TRANSFER_ENCODING);
        let len = body.size_hint().exact().unwrap_or(0);
        if len > 0 || parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    // hyper's HTTP/1 client sends GET, HEAD and CONNECT with an empty body unless told
    // otherwise; a body of unknown length (chunked, or HTTP/2 without content-length) would be
    // dropped silently. Say chunked explicitly so it is forwarded as received.
    if upstream.origin_form()
        && !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    // Read when the exchange fails: a failure caused by the client's body is the client's.
    let client_body = body.client_body();
    let request = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(def.response_timeout, upstream.send(request)).await;
    let (mut resp, checkin) = match sent {
        Err(_) => {
            if let Some(answer) = upstream::client_fault(client_body.as_deref(), def, true) {
                return answer;
            }
            return Problem::gateway_timeout(
                &def.name,
                format!(
                    "no response from upstream {} within {:?}",
                    def.name, def.response_timeout
                ),
            )
            .into_response();
        }
        Ok(Err(e)) => {
            if let Some(answer) = upstream::client_fault(client_body.as_deref(), def, false) {
                return answer;
            }
            tracing::warn!(upstream = %def.name, "upstream error: {}", upstream::describe(&e));
            return match e.failure() {
                Failure::ConnectTimeout => Problem::gateway_timeout(
                    &def.name,
                    format!(
                        "connecting to upstream {} timed out after {:?}",
                        def.name, def.connect_timeout
                    ),
                ),
                Failure::Connect => Problem::bad_gateway(
                    &def.name,
                    format!("cannot connect to upstream {}", def.name),
                ),
                Failure::Exchange => Problem::bad_gateway(
                    &def.name,
                    format!("upstream {} closed or broke the exchange", def.name),
                ),
            }
            .into_response();
        }
        Ok(Ok(sent)) => sent,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Problem::bad_gateway(&def.name, "upstream switched protocols unasked")
                .into_response();
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let name = def.name.clone();
        tokio::spawn(async move {
            // An upgraded connection never goes back to the pool; keep its handle until the
            // upgrade has resolved, then let it go.
            let upgraded = tokio::try_join!(client_upgrade, upstream_upgrade);
            drop(checkin);
            match upgraded {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(upstream = %name, "upgraded stream ended: {e}");
                    }
                }
                Err(e) => tracing::warn!(upstream = %name, "upgrade failed: {e}"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        if headers::strip_hop_by_hop(&mut parts.headers, true).is_err() {
            return Problem::bad_gateway(&def.name, "upstream sent an invalid Connection header")
                .into_response();
        }
        headers::append_via(&mut parts.headers, Version::HTTP_11);
        return Response::from_parts(parts, ProxyBody::Empty);
    }

    let (mut parts, body) = resp.into_parts();
    let upstream_version = parts.version;
    if headers::strip_hop_by_hop(&mut parts.headers, false).is_err() {
        return Problem::bad_gateway(&def.name, "upstream sent an invalid Connection header")
            .into_response();
    }
    headers::append_via(&mut parts.headers, upstream_version);
    parts.version = client_version;
    Response::from_parts(
        parts,
        ProxyBody::relay_pooled(body, def.idle_timeout, checkin),
    )
}

/// HTTP/2 clients may split `Cookie` into several fields (RFC 9113 section 8.2.3); an
/// HTTP/1.1 upstream expects one, so they are joined with "; " as that section says.
fn join_cookie_crumbs(headers: &mut http::HeaderMap) {
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
