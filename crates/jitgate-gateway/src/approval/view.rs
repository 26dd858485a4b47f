//! The gateway's own data-plane endpoints: the requester's view of a ticket at
//! `/.well-known/jitgate/tickets/<id>`, of their grants at `/.well-known/jitgate/grants`, and
//! the approval-token keys at `/.well-known/jwks.json`.

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
/// The requester's active grants.
pub const GRANTS_VIEW: &str = "/.well-known/jitgate/grants";

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
    if path == GRANTS_VIEW {
        if !is_get {
            return Some(not_allowed());
        }
        return Some(grants_view(x, c).await);
    }
    let raw = path.strip_prefix(TICKET_VIEW)?;
    if !is_get {
        return Some(not_allowed());
    }
    Some(ticket_view(x, c, raw).await)
}

/// The requester's usable grants (active, on a route still defined as when granted): route,
/// time left, uses. Only a named requester has grants (access routes require identity); an
/// anonymous one is asked to authenticate.
async fn grants_view(x: &Exchange<'_>, c: &Canonical) -> Response<ProxyBody> {
    let identity = match x.snap.auth.authenticate(c.headers(), c.trusted_peer()) {
        Ok(id) if !id.is_anonymous() => id,
        Ok(_) => {
            let e =
                GatewayError::Unauthenticated("grants belong to authenticated requesters".into());
            return x.answer(e, None);
        }
        Err(_) => {
            let e = GatewayError::Unauthenticated("the bearer token is not valid".into());
            return x.answer(e, None);
        }
    };
    let requester = binding::requester(x, &identity, c);
    let engine = x.engine();
    let store_down = || x.answer(GatewayError::StoreUnavailable { ticket: None }, None);
    let Ok(store) = engine.store() else {
        return store_down();
    };
    let now = engine.now();
    let Ok(grants) = store.active_grants(now).await else {
        return store_down();
    };
    let mine: Vec<Value> = grants
        .iter()
        .filter(|g| g.requester.same_principal(&requester))
        // A grant whose route changed since has lapsed: it lets nothing through.
        .filter(|g| x.snap.route_of_grant(g).is_some())
        .map(|g| {
            json!({
                "id": g.id,
                "route": g.route,
                "createdAt": g.created_at,
                "expiresAt": g.expires_at,
                "secondsLeft": g.expires_at.as_millis().saturating_sub(now.as_millis()) / 1000,
                "uses": g.uses,
                "maxUses": g.max_uses,
                "usesLeft": g.max_uses.map(|m| m.saturating_sub(g.uses)),
                "ticket": g.ticket,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "grants": mine }))
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
