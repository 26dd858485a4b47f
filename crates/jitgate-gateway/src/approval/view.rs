//! The gateway's own data-plane endpoints: the requester's view of a ticket at
//! `/.well-known/jitgate/tickets/<id>` and the approval-token keys at `/.well-known/jwks.json`.

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use jitgate_rules::ticket::{Mode, Status, Ticket, TicketId};
use jitgate_rules::Canonical;

use super::binding;
use crate::body::ProxyBody;
use crate::context::Exchange;
use crate::engine::Engine;
use crate::error::{GatewayError, TICKET_VIEW};
use crate::problem::{json_response, Fault, Problem};

/// The prefix of the gateway's own data-plane endpoints.
pub const WELL_KNOWN: &str = "/.well-known/j";
/// The approval-token public keys.
pub const JWKS: &str = "/.well-known/jwks.json";

/// Serves `GET /.well-known/jitgate/tickets/<id>` and `GET /.well-known/jwks.json`; `None` for
/// any other path (which is routed like every request).
pub async fn well_known(x: &Exchange<'_>, c: &Canonical) -> Option<Response<ProxyBody>> {
    let path = c.path();
    let is_get = matches!(*c.method(), Method::GET | Method::HEAD);
    let not_allowed = || {
        x.answer(
            GatewayError::MethodNotAllowed {
                allow: "GET, HEAD",
                path: path.to_string(),
            },
            None,
        )
    };
    if path == JWKS {
        if !is_get {
            return Some(not_allowed());
        }
        return Some(json_response(StatusCode::OK, &x.engine().signer().jwks()));
    }
    let raw = path.strip_prefix(TICKET_VIEW)?;
    if !is_get {
        return Some(not_allowed());
    }
    Some(ticket_view(x, c, raw).await)
}

async fn ticket_view(x: &Exchange<'_>, c: &Canonical, raw: &str) -> Response<ProxyBody> {
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-ticket",
            "Unknown ticket",
            "no ticket of yours has this id",
            Fault::Downstream,
        )
        .into_response()
    };
    let identity = match x.snap.auth.authenticate(c.headers(), c.trusted_peer()) {
        Ok(id) => id,
        Err(_) => {
            let e = GatewayError::Unauthenticated("the bearer token is not valid".into());
            return x.answer(e, None);
        }
    };
    let Ok(id) = TicketId::parse(raw) else {
        return not_found();
    };
    let engine = x.engine();
    let store_down = || x.answer(GatewayError::StoreUnavailable { ticket: None }, None);
    let Ok(store) = engine.store() else {
        return store_down();
    };
    let t = match store.get(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found(),
        Err(_) => return store_down(),
    };
    // Only the requester sees it: the same user, or the same anonymous client (the same
    // credentials); everyone else learns nothing, not even that it exists.
    let requester = binding::requester(x, &identity, c);
    if !t.requester.same_principal(&requester) {
        return not_found();
    }
    let t = engine.expire_if_due(&t).await.unwrap_or(t);
    json_response(StatusCode::OK, &requester_view(engine, &t))
}

/// What the requester may see of their ticket: no approver comments, no other headers.
fn requester_view(engine: &Engine, t: &Ticket) -> Value {
    let token = (t.status == Status::Approved && t.mode == Mode::Action)
        .then(|| engine.approval_token(t))
        .flatten();
    json!({
        "id": t.id,
        "status": t.status,
        "route": t.route,
        "request": {
            "method": t.request.method,
            "host": t.request.host,
            "path": t.request.path,
            "query": t.request.query,
            "target": t.request.target,
            "bodySha256": t.request.body_sha256,
        },
        "reason": t.reason,
        "createdAt": t.created_at,
        "expiresAt": t.expires_at,
        "decidedAt": t.decided_at,
        "redeemBy": t.redeem_by,
        "denyReason": t.deny_reason,
        "approvedBy": t.approvals.iter().map(|v| v.by.clone()).collect::<Vec<_>>(),
        "approvalToken": token,
    })
}
