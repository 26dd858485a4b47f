//! The data plane: each request walks one way through edge (the one [`Canonical`] view),
//! resolve (the route and its upstream), act (allow, deny, approve) and forward. Approve routes
//! hand the request to [`crate::approval`]; nothing after the edge re-parses the request.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use serde_json::json;

use jitgate_rules::form;
use jitgate_rules::route::{Action, Route};
use jitgate_rules::ticket::{AuditDraft, AuditKind};
use jitgate_rules::{Canonical, Unresolved};

use crate::approval;
use crate::body::{ProxyBody, RequestBody};
pub use crate::context::ConnInfo;
use crate::context::Exchange;
use crate::error::GatewayError;
use crate::forward::{forward, Outbound};
use crate::grpc;
use crate::state::Shared;

/// Serves one data-plane request. Never fails: every error is an HTTP answer.
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
    };
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<OnUpgrade>();
    let canonical = match Canonical::build(&mut parts, &x.edge()) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(method = %parts.method, target = %parts.uri, "refused: {e}");
            return x.answer(GatewayError::Malformed(e.to_string()), None);
        }
    };
    // Only a WebSocket upgrade is passed through; any other `Upgrade` was stripped at the edge
    // and the request goes on as a plain one.
    let upgrade = upgrade.filter(|_| canonical.is_upgrade());
    if canonical.path().starts_with(approval::WELL_KNOWN) {
        if let Some(resp) = approval::well_known(&x, &canonical).await {
            return resp;
        }
    }
    serve(&x, canonical, RequestBody::Stream(body), upgrade).await
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
    };
    match forward(upstream, out).await {
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
