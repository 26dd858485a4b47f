//! The data plane: each request walks one way through edge (the one [`Canonical`] view),
//! resolve (the route and its upstream), act (allow, deny, approve) and forward. Approve routes
//! hand the request to [`crate::approval`]; nothing after the edge re-parses the request.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use serde_json::json;

use jitgate_rules::config::AccessLog;
use jitgate_rules::form;
use jitgate_rules::route::{Action, Route};
use jitgate_rules::ticket::{AuditDraft, AuditKind};
use jitgate_rules::{Canonical, Unresolved};

use crate::access_log;
use crate::approval;
use crate::body::{ProxyBody, RequestBody};
pub use crate::context::ConnInfo;
use crate::context::{Exchange, Note};
use crate::error::GatewayError;
use crate::forward::{forward, Outbound};
use crate::grpc;
use crate::headers;
use crate::metrics::Served;
use crate::state::Shared;

/// Serves one data-plane request. Never fails: every error is an HTTP answer. Every request
/// is counted (`jitgate_requests_total`, `jitgate_request_duration_seconds`) and logged
/// (`[log] access`) once, under its `X-Request-Id`: when its response head is ready, or, when
/// the client goes away first, as `499` when the request is dropped.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // The request keeps this generation of the table until it is answered.
    let x = Exchange {
        snap: shared.snapshot(),
        shared: &shared,
        conn: &conn,
        grpc: grpc::is_call(req.headers()),
        note: Note::default(),
    };
    let (parts, body) = req.into_parts();
    let mut account = Account {
        x: &x,
        started: Instant::now(),
        format: x.snap.table.config().log.access,
        method: parts.method.clone(),
        version: parts.version,
        path: String::new(),
        recorded: false,
    };
    let mut resp = edge(&x, parts, body, &mut account).await;
    account.record(resp.status().as_u16());
    // The client can quote the id the gateway logged and forwarded; an upstream's own
    // `X-Request-Id` answer is left as it is.
    if let http::header::Entry::Vacant(v) = resp.headers_mut().entry(headers::X_REQUEST_ID) {
        v.insert(x.request_id());
    }
    resp
}

/// nginx's "client closed request": what a request the client abandoned before its answer is
/// counted and logged as.
const CLIENT_CLOSED: u16 = 499;

/// Counts and logs one request exactly once: when it is answered, or when it is dropped
/// unanswered (the client went away; the upstream may have acted on it all the same).
struct Account<'x, 'a> {
    x: &'x Exchange<'a>,
    started: Instant,
    format: AccessLog,
    method: http::Method,
    version: http::Version,
    /// The canonical path, or the raw one (clipped) when there is none; filled only when
    /// the access log is on.
    path: String,
    recorded: bool,
}

impl Account<'_, '_> {
    fn logs(&self) -> bool {
        self.format != AccessLog::Off
    }

    fn record(&mut self, status: u16) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let x = self.x;
        let elapsed = self.started.elapsed();
        let route = x
            .note
            .route
            .get()
            .and_then(|&i| x.snap.table.routes().get(i));
        let served = Served::from(route.map(|r| r.action));
        let metrics = x.engine().metrics();
        let meter = route
            .and_then(|r| {
                let slot = x.snap.route_meters.get(r.index)?;
                Some(slot.get_or_init(|| metrics.route(&r.name, served)))
            })
            .unwrap_or_else(|| metrics.unrouted());
        metrics.request(meter, status, elapsed);
        if !self.logs() {
            return;
        }
        let ticket = x.note.ticket.get().map(ToString::to_string);
        let request_id = x.request_id();
        let logged = x.shared.access_log().log(
            self.format,
            &access_log::Entry {
                at: SystemTime::now() - elapsed,
                request_id: request_id.to_str().unwrap_or_default(),
                peer: x.conn.peer.ip(),
                method: x
                    .note
                    .methods
                    .get()
                    .map_or(self.method.as_str(), String::as_str),
                path: &self.path,
                version: self.version,
                status,
                route: route.map(|r| r.name.as_str()),
                action: served.as_str(),
                ticket: ticket.as_deref(),
                duration: elapsed,
            },
        );
        if !logged {
            metrics.access_log_dropped();
        }
    }
}

impl Drop for Account<'_, '_> {
    fn drop(&mut self) {
        self.record(CLIENT_CLOSED);
    }
}

/// Builds the one canonical view of the request and serves it.
async fn edge(
    x: &Exchange<'_>,
    mut parts: http::request::Parts,
    body: Incoming,
    account: &mut Account<'_, '_>,
) -> Response<ProxyBody> {
    let upgrade = parts.extensions.remove::<OnUpgrade>();
    let canonical = match Canonical::build(&mut parts, &x.edge()) {
        Ok(c) => {
            // The rest of `parts` (the URI) still points into the connection's read buffer;
            // a held request must not pin it.
            drop(parts);
            c
        }
        Err(e) => {
            x.identify(headers::request_id(&parts.headers));
            // Neither the query nor `;` parameters: they carry credentials too often.
            let path = access_log::clip_raw(parts.uri.path());
            tracing::info!(method = %parts.method, path, "refused: {e}");
            if account.logs() {
                account.path = path.to_string();
            }
            return x.answer(GatewayError::Malformed(e.to_string()), None);
        }
    };
    // Read from the canonical headers: what the client's own `Connection` header nominated
    // is gone, as from what is forwarded.
    x.identify(headers::request_id(canonical.headers()));
    if account.logs() {
        account.path = canonical.path().to_string();
    }
    // Only a WebSocket upgrade is passed through; any other `Upgrade` was stripped at the edge
    // and the request goes on as a plain one.
    let upgrade = upgrade.filter(|_| canonical.is_upgrade());
    if canonical.path().starts_with(approval::WELL_KNOWN) {
        if let Some(resp) = approval::well_known(x, &canonical).await {
            return resp;
        }
    }
    serve(x, canonical, RequestBody::Stream(body), upgrade).await
}

/// Resolves the canonical request and acts on its route.
async fn serve(
    x: &Exchange<'_>,
    mut canonical: Canonical,
    mut body: RequestBody,
    upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let snap = &x.snap;
    let table = &snap.table;
    let mut resolved = table.resolve(&canonical);
    // `_method` in a POST body: read only when an override could change the route.
    if form::may_carry_override(canonical.method()) {
        let at = resolved.ok();
        if table.may_override_method(&canonical, at) {
            let limit = table.config().approvals.max_held_body;
            let idle = snap.body_idle(at.map_or(usize::MAX, |r| r.index));
            let readings = canonical.methods().len();
            let bytes = match body.read(&mut canonical, limit, idle).await {
                Ok(b) => b,
                Err(e) => return x.answer(e, at),
            };
            if canonical.methods().len() != readings {
                resolved = table.resolve(&canonical);
            }
            body = RequestBody::Buffered(bytes);
        }
    }
    if table.has_shadows() {
        let before = resolved.ok();
        record_shadows(x, &canonical, before);
    }
    let route = match resolved {
        Ok(r) => r,
        Err(Unresolved::NoRoute) => {
            let e = GatewayError::NoRoute {
                method: canonical.method().to_string(),
                path: canonical.path().to_string(),
            };
            tracing::info!(method = %canonical.method(), path = canonical.path(), "no route");
            return x.answer(e, None);
        }
        Err(e) => return x.answer(GatewayError::Malformed(e.to_string()), None),
    };
    x.decided_by(route);
    // An approve route reads the whole body first, which may add a `_method` reading.
    if route.action != Action::Approve {
        x.read_as(&canonical);
    }
    match route.action {
        Action::Allow => {}
        Action::Deny => {
            tracing::info!(route = %route.name, method = %canonical.method(), path = canonical.path(), "denied");
            return x.answer(GatewayError::Denied, Some(route));
        }
        // Boxed: the hold path is large and rare; keeping it out of this future keeps every
        // connection's in-flight slot small.
        Action::Approve => return Box::pin(approval::serve(x, route, canonical, body)).await,
    }
    let Some(upstream) = snap.upstream_of(route.index) else {
        return x.answer(
            GatewayError::Internal(format!("route {} has no upstream client", route.name)),
            Some(route),
        );
    };
    let out = Outbound {
        conn: x.conn,
        canonical,
        body: body.into_proxy(upstream.def.idle_timeout),
        upgrade,
        approval: None,
        request_id: x.request_id(),
        metrics: x.engine().metrics(),
    };
    // Boxed: forwarding is most of this future's size, and hyper keeps a slot of that size
    // for every connection, held ones and idle keep-alive ones too; one allocation per
    // forwarded request buys back half of it.
    match Box::pin(forward(upstream, out)).await {
        Ok(resp) => resp,
        Err(e) => x.answer(e, Some(route)),
    }
}

/// Records what the shadow routes before `route` (every one when no route decided) would have
/// done: they decide nothing.
fn record_shadows(x: &Exchange<'_>, canonical: &Canonical, route: Option<&Route>) {
    let decided_by = route.map_or("(no route)", |r| r.name.as_str());
    for shadow in x.snap.table.shadows(canonical, route.map(|r| r.index)) {
        let would = match shadow.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Approve => "hold for approval",
        };
        tracing::info!(
            shadow = %shadow.name,
            route = decided_by,
            method = %canonical.method(),
            path = canonical.path(),
            "shadow route would {would}"
        );
        let draft = AuditDraft {
            at: x.engine().now(),
            kind: AuditKind::ShadowMatched,
            ticket: None,
            actor: None,
            requester: None,
            route: Some(shadow.name.to_string()),
            detail: json!({
                "route": shadow.name,
                "wouldDo": shadow.action.as_str(),
                "decidedBy": decided_by,
                "method": canonical.method_label(),
                "host": canonical.host(),
                "path": canonical.path(),
                "source": canonical.source().to_string(),
            }),
        };
        x.engine().append_detached(draft);
    }
}
