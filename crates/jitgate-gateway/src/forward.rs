//! Forwarding: the canonical request sent upstream, the answer relayed back, bodies streamed
//! both ways (a held body replayed from its buffer), upgrades spliced.

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use jitgate_rules::config::UpstreamProtocol;
use jitgate_rules::Canonical;

use crate::body::ProxyBody;
use crate::error::GatewayError;
use crate::headers::{self, Forwarding};
use crate::metrics::Metrics;
use crate::proxy::ConnInfo;
use crate::upstream::{self, Failure, UpstreamClient};

/// Carries the approval token upstream.
pub const JIT_APPROVAL: HeaderName = HeaderName::from_static("jit-approval");

/// One request on its way upstream.
pub struct Outbound<'a> {
    /// The client connection.
    pub conn: &'a ConnInfo,
    /// The canonical request: its method, target, host and headers are what is sent.
    pub canonical: Canonical,
    /// The body: streamed from the client, or the buffer of a held request.
    pub body: ProxyBody,
    /// The client side of a WebSocket upgrade.
    pub upgrade: Option<OnUpgrade>,
    /// The approval token, sent in `Jit-Approval`.
    pub approval: Option<HeaderValue>,
    /// `X-Request-Id`: sent as the request's one id, whatever the client sent.
    pub request_id: HeaderValue,
    /// Where the upstream's time is recorded.
    pub metrics: &'a Metrics,
}

/// Sends the canonical request upstream and relays the answer, streaming both bodies.
pub async fn forward(
    upstream: &UpstreamClient,
    out: Outbound<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let def = &upstream.def;
    let Outbound {
        conn,
        mut canonical,
        body,
        upgrade: client_upgrade,
        approval,
        request_id,
        metrics,
    } = out;
    let client_version = canonical.version();
    let pq: PathAndQuery = canonical.target().clone();
    let uri = if upstream.origin_form() {
        Uri::from(pq)
    } else {
        let mut uri = def.url.clone().into_parts();
        uri.path_and_query = Some(pq);
        Uri::from_parts(uri)
            .map_err(|e| GatewayError::Internal(format!("cannot build the upstream URI: {e}")))?
    };
    let host = canonical.host_value().clone();
    let mut headers = canonical.take_headers();
    headers::set_forwarding(
        &mut headers,
        &Forwarding {
            peer: conn.peer.ip(),
            peer_value: conn.peer_value.as_ref(),
            trusted_peer: canonical.trusted_peer(),
            tls: conn.tls,
            host: &host,
            version: client_version,
        },
    );
    // Over HTTP/2 the authority travels in `:authority`, taken from the upstream URL; a second,
    // different `host` would be a malformed request (RFC 9113 8.3.1), so h2 upstreams get
    // the upstream's authority and the client's host only in X-Forwarded-Host.
    if def.preserve_host && def.protocol != UpstreamProtocol::H2 {
        headers.insert(header::HOST, host);
    } else if def.protocol == UpstreamProtocol::H2 {
        headers.remove(header::HOST);
    } else if let Some(authority) = def
        .url
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, authority);
    }
    if let Some(token) = approval {
        headers.insert(JIT_APPROVAL, token);
    }
    headers.insert(headers::X_REQUEST_ID, request_id);
    if let ProxyBody::Full(_) | ProxyBody::Empty = body {
        // A buffered body is replayed: its length is known.
        headers.remove(header::TRANSFER_ENCODING);
        let len = body.size_hint().exact().unwrap_or(0);
        if len > 0 || headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    // hyper's HTTP/1 client sends GET, HEAD and CONNECT with an empty body unless told
    // otherwise; a body of unknown length (chunked, or HTTP/2 without content-length) would be
    // dropped silently. Say chunked explicitly so it is forwarded as received.
    if upstream.origin_form()
        && !body.is_end_stream()
        && body.size_hint().exact().is_none()
        && !headers.contains_key(header::CONTENT_LENGTH)
    {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    // Read when the exchange fails: a failure caused by the client's body is the client's.
    let client_body = body.client_body();
    let mut request = Request::new(body);
    *request.method_mut() = canonical.method().clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;

    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(def.response_timeout, upstream.send(request)).await;
    upstream
        .duration(metrics)
        .observe(started.elapsed().as_secs_f64());
    let (mut resp, checkin) = match sent {
        Err(_) => {
            if let Some(e) = upstream::client_fault(client_body.as_deref(), def, true) {
                return Err(e);
            }
            return Err(GatewayError::UpstreamTimeout {
                upstream: def.name.clone(),
                detail: format!(
                    "no response from upstream {} within {:?}",
                    def.name, def.response_timeout
                ),
            });
        }
        Ok(Err(e)) => {
            if let Some(e) = upstream::client_fault(client_body.as_deref(), def, false) {
                return Err(e);
            }
            tracing::warn!(upstream = %def.name, "upstream error: {}", upstream::describe(&e));
            let upstream = def.name.clone();
            return Err(match e.failure() {
                Failure::ConnectTimeout => GatewayError::UpstreamTimeout {
                    detail: format!(
                        "connecting to upstream {} timed out after {:?}",
                        def.name, def.connect_timeout
                    ),
                    upstream,
                },
                Failure::Connect => GatewayError::UpstreamUnavailable {
                    detail: format!("cannot connect to upstream {}", def.name),
                    upstream,
                },
                Failure::Exchange => GatewayError::UpstreamUnavailable {
                    detail: format!("upstream {} closed or broke the exchange", def.name),
                    upstream,
                },
            });
        }
        Ok(Ok(sent)) => sent,
    };
    let broken = |detail: &str| GatewayError::UpstreamUnavailable {
        upstream: def.name.clone(),
        detail: detail.to_string(),
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(broken("upstream switched protocols unasked"));
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
            return Err(broken("upstream sent an invalid Connection header"));
        }
        headers::append_via(&mut parts.headers, Version::HTTP_11);
        return Ok(Response::from_parts(parts, ProxyBody::Empty));
    }

    let (mut parts, body) = resp.into_parts();
    let upstream_version = parts.version;
    if headers::strip_hop_by_hop(&mut parts.headers, false).is_err() {
        return Err(broken("upstream sent an invalid Connection header"));
    }
    headers::append_via(&mut parts.headers, upstream_version);
    parts.version = client_version;
    Ok(Response::from_parts(
        parts,
        ProxyBody::relay_pooled(body, def.idle_timeout, checkin),
    ))
}
