//! The data plane: one request through canonicalise → identify → match → act → forward.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use jitgate_rules::canon::{self, PATH_OVERRIDE_HEADERS};
use jitgate_rules::route::{Action, ErrorTemplate, Route};
use jitgate_rules::RequestView;

use crate::body::ProxyBody;
use crate::headers::{self, Forwarding};
use crate::problem::{Fault, Problem};
use crate::state::{Shared, Snapshot};
use crate::upstream::{self, Failure, UpstreamClient};

/// What we know about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it spoke TLS to us.
    pub tls: bool,
}

/// What matching decided, owned, so the request can be taken apart afterwards.
struct Decision {
    route: usize,
    /// Set when the forwarded target differs from what the client sent.
    rewrite: Option<PathAndQuery>,
    /// The Host to forward (canonical).
    host: Option<HeaderValue>,
    /// Canonical host as text, for `X-Forwarded-Host`.
    host_text: String,
    trusted_peer: bool,
}

/// Serves one data-plane request. Never fails: every error is an HTTP answer.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let snap = shared.snapshot();
    let decision = match decide(&snap, conn, &req) {
        Ok(d) => d,
        Err(problem) => {
            log_refusal(&req, &problem);
            return problem.into_response();
        }
    };
    let Some(route) = snap.table.routes().get(decision.route) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "matched route vanished",
            Fault::Internal,
        )
        .into_response();
    };
    match (route.action, route.enforce) {
        (Action::Allow, _) => {}
        (Action::Deny, true) => {
            tracing::info!(route = %route.name, method = %req.method(), path = req.uri().path(), "denied");
            return deny_response(route);
        }
        (Action::Approve, true) => {
            // Fail closed: until the hold engine exists, nothing on an approve route is forwarded.
            tracing::warn!(route = %route.name, method = %req.method(), path = req.uri().path(), "approval required; holding is not available, refused");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "approval-unavailable",
                "Approval required",
                format!(
                    "route {} requires approval, and this gateway cannot hold requests for approval yet",
                    route.name
                ),
                Fault::Policy,
            )
            .with("rule", route.name.clone())
            .into_response();
        }
        (action, false) => {
            tracing::warn!(route = %route.name, action = action.as_str(), method = %req.method(), path = req.uri().path(), "shadow mode: would {}, forwarding", if action == Action::Deny { "deny" } else { "hold for approval" });
        }
    }
    let Some(upstream) = snap.route_upstreams.get(decision.route).cloned().flatten() else {
        return Problem::bad_gateway("", format!("route {} has no upstream", route.name))
            .into_response();
    };
    forward(upstream, conn, decision, req).await
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

/// Canonicalises and matches. Borrows the request; returns only owned results.
fn decide(snap: &Snapshot, conn: ConnInfo, req: &Request<Incoming>) -> Result<Decision, Problem> {
    let table = &snap.table;
    let server = &table.config().server;
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Problem::bad_request("more than one Host header"));
    }
    if req.version() == Version::HTTP_11 && host_header.is_none() && req.uri().authority().is_none()
    {
        return Err(Problem::bad_request("HTTP/1.1 request without Host"));
    }
    let target = canon::canonicalize_target(
        req.method(),
        req.uri(),
        host_header,
        conn.tls,
        table.canon_options(),
    )
    .map_err(|e| Problem::bad_request(e.to_string()))?;
    let overrides = canon::method_overrides(req.headers(), target.query)
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let with_overrides: Vec<Method>;
    let methods: &[Method] = if overrides.is_empty() {
        std::slice::from_ref(req.method())
    } else {
        with_overrides = std::iter::once(req.method().clone())
            .chain(overrides)
            .collect();
        &with_overrides
    };
    let trusted_peer = headers::is_trusted(&server.trusted_proxies, conn.peer.ip());
    let source = headers::client_ip(&server.trusted_proxies, conn.peer.ip(), req.headers());
    let mut buf = [""; 3];
    let paths = target.path.readings(&mut buf);
    let view = RequestView {
        methods,
        host: &target.host,
        paths,
        headers: req.headers(),
        source,
    };
    let Some(route) = table.match_request(&view) else {
        return Err(Problem::no_route(req.method().as_str(), &target.path.path));
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

    let forward_path = target.path.forward_path();
    let rewrite = if req.uri().path() == forward_path && req.uri().query() == target.query {
        None
    } else {
        let pq = match target.query {
            Some(q) => format!("{forward_path}?{q}"),
            None => forward_path.to_string(),
        };
        Some(PathAndQuery::try_from(pq).map_err(|e| Problem::bad_request(e.to_string()))?)
    };
    let host = match host_header {
        Some(raw) if raw.as_bytes() == target.host.as_bytes() => Some(raw.clone()),
        _ if target.host.is_empty() => None,
        _ => Some(
            HeaderValue::from_str(&target.host).map_err(|e| Problem::bad_request(e.to_string()))?,
        ),
    };
    Ok(Decision {
        route: route.index,
        rewrite,
        host,
        host_text: target.host.into_owned(),
        trusted_peer,
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

/// Renders a route's custom error. Values are JSON-escaped when the body is JSON.
pub fn render_error(
    t: &ErrorTemplate,
    ticket: &str,
    reason: &str,
    rule: &str,
) -> Response<ProxyBody> {
    let json = t.content_type.contains("json");
    let esc = |s: &str| -> String {
        if json {
            let quoted = serde_json::Value::String(s.to_string()).to_string();
            quoted[1..quoted.len() - 1].to_string()
        } else {
            s.to_string()
        }
    };
    let body = t
        .body
        .replace("{ticket}", &esc(ticket))
        .replace("{reason}", &esc(reason))
        .replace("{rule}", &esc(rule));
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = t.status;
    if let Ok(ct) = HeaderValue::from_str(&t.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// Sends the canonical request upstream and relays the answer, streaming both bodies.
async fn forward(
    upstream: Arc<UpstreamClient>,
    conn: ConnInfo,
    decision: Decision,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let def = &upstream.def;
    let upgrade = headers::wants_upgrade(req.version(), req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;

    let pq = match decision.rewrite {
        Some(pq) => pq,
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let mut uri = def.url.clone().into_parts();
    uri.path_and_query = Some(pq);
    parts.uri = match Uri::from_parts(uri) {
        Ok(u) => u,
        Err(e) => return Problem::bad_request(e.to_string()).into_response(),
    };
    parts.version = Version::HTTP_11;

    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    for name in PATH_OVERRIDE_HEADERS {
        parts.headers.remove(*name);
    }
    headers::set_forwarding(
        &mut parts.headers,
        &Forwarding {
            peer: conn.peer.ip(),
            trusted_peer: decision.trusted_peer,
            tls: conn.tls,
            host: &decision.host_text,
            version: client_version,
        },
    );
    let host = if def.preserve_host {
        decision.host
    } else {
        def.url
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    };
    match host {
        Some(h) => {
            parts.headers.insert(header::HOST, h);
        }
        None => {
            parts.headers.remove(header::HOST);
        }
    }

    let body = ProxyBody::relay(body, def.idle_timeout);
    let request = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(def.response_timeout, upstream.client.request(request)).await;
    let mut resp = match sent {
        Err(_) => {
            return Problem::gateway_timeout(
                &def.name,
                format!(
                    "no response from upstream {} within {:?}",
                    def.name, def.response_timeout
                ),
            )
            .into_response()
        }
        Ok(Err(e)) => {
            let what = upstream::describe(&e);
            tracing::warn!(upstream = %def.name, "upstream error: {what}");
            return match upstream::classify(&e) {
                Failure::ConnectTimeout => Problem::gateway_timeout(
                    &def.name,
                    format!(
                        "connecting to upstream {} timed out after {:?}",
                        def.name, def.connect_timeout
                    ),
                ),
                Failure::Connect => Problem::bad_gateway(
                    &def.name,
                    format!("cannot connect to upstream {}: {what}", def.name),
                ),
                Failure::Exchange => {
                    Problem::bad_gateway(&def.name, format!("upstream {} failed: {what}", def.name))
                }
            }
            .into_response();
        }
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Problem::bad_gateway(&def.name, "upstream switched protocols unasked")
                .into_response();
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let name = def.name.clone();
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
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
        headers::strip_hop_by_hop(&mut parts.headers, true);
        headers::append_via(&mut parts.headers, Version::HTTP_11);
        return Response::from_parts(parts, ProxyBody::Empty);
    }

    let (mut parts, body) = resp.into_parts();
    let upstream_version = parts.version;
    headers::strip_hop_by_hop(&mut parts.headers, false);
    headers::append_via(&mut parts.headers, upstream_version);
    parts.version = client_version;
    Response::from_parts(parts, ProxyBody::relay(body, def.idle_timeout))
}
