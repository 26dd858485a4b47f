//! Releasing a held request: every path (a resumed or decided ticket, an approval token, an
//! access grant) re-checks the request against the rule table in force, spends one use in the
//! store, forwards exactly what was approved, and records what the upstream answered.

use std::sync::Arc;

use http::{HeaderValue, Response};
use serde_json::json;

use jitgate_rules::route::{Action, ApprovalMode, Route};
use jitgate_rules::ticket::{self, AuditDraft, AuditKind, Grant, Ticket, TicketId};
use jitgate_rules::Unresolved;
use jitgate_store::StoreError;

use super::{store_error, HeldRequest};
use crate::body::ProxyBody;
use crate::context::Exchange;
use crate::engine::Engine;
use crate::error::GatewayError;
use crate::forward::{forward, Outbound};
use crate::state::Snapshot;

/// The table in force now and the position of the route the held request resolves to under
/// it, when that still lets it be released on an approval given under `route`: the same
/// approve route, unedited, or an allow route. A route that now denies it answers its deny.
fn recheck(
    x: &Exchange<'_>,
    held: &HeldRequest,
    route: &Route,
) -> Result<(Arc<Snapshot>, usize), Box<Response<ProxyBody>>> {
    let current = x.shared.snapshot();
    let now = match current.table.resolve(&held.canonical) {
        Ok(r) => r,
        Err(Unresolved::NoRoute) => {
            let e = GatewayError::NoRoute {
                method: held.canonical.method().to_string(),
                path: held.canonical.path().to_string(),
            };
            return Err(Box::new(x.answer(e, None)));
        }
        Err(e) => {
            let e = GatewayError::Malformed(e.to_string());
            return Err(Box::new(x.answer(e, None)));
        }
    };
    let same = now.name == route.name && now.definition_hash == route.definition_hash;
    match now.action {
        Action::Deny => {
            tracing::info!(route = %now.name, approved_under = %route.name, "approved, but the rules now deny this request");
            Err(Box::new(x.answer(GatewayError::Denied, Some(now))))
        }
        Action::Approve if !same => {
            let e = GatewayError::Mismatch(format!(
                "route {} was changed after this request was approved; ask again",
                route.name
            ));
            Err(Box::new(x.answer(e, Some(route))))
        }
        Action::Allow | Action::Approve => {
            let index = now.index;
            Ok((current, index))
        }
    }
}

/// `Jit-Approval`: a token we signed for exactly this request redeems one use.
pub(super) async fn by_token(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    token: &str,
) -> Response<ProxyBody> {
    let now_secs = x.engine().now().as_millis() / 1000;
    let claims = match x
        .engine()
        .signer()
        .verify(token, &held.fingerprint, now_secs)
    {
        Ok(c) => c,
        Err(e) => return x.answer(GatewayError::Mismatch(e.to_string()), Some(route)),
    };
    if claims.route != route.name || claims.sub != held.requester.key() {
        let e = GatewayError::Mismatch(
            "the approval token was issued for another route or requester".into(),
        );
        return x.answer(e, Some(route));
    }
    let Ok(id) = TicketId::parse(&claims.jti) else {
        let e = GatewayError::Mismatch("the approval token names no ticket".into());
        return x.answer(e, Some(route));
    };
    redeem(x, route, held, id).await
}

/// Releases an approved `action` ticket's request once: re-checks the rules in force, spends
/// one use in the store (a write whose answer was lost is settled by reading it back), and
/// forwards with the approval token.
pub(super) async fn redeem(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    id: TicketId,
) -> Response<ProxyBody> {
    match redeem_held(x, route, held, id, &mut Vec::new()).await {
        Ok(resp) => resp,
        Err(u) => x.answer(u.error, Some(route)),
    }
}

/// A use the store could not confirm, so nothing was forwarded: the request, to release
/// later or answer with `error`.
pub(super) struct Unredeemed {
    pub held: HeldRequest,
    pub error: GatewayError,
    /// The ticket is pending again: its approval was lost with a replaced primary (the
    /// request may wait for the decision to be taken again).
    pub pending: bool,
}

impl Unredeemed {
    /// The store could not confirm the use: `error` if the request is answered now.
    pub fn store_down(held: HeldRequest, error: GatewayError) -> Unredeemed {
        Unredeemed {
            held,
            error,
            pending: false,
        }
    }
}

/// [`redeem`], but a use the store cannot confirm gives the request back (`Err`) instead of
/// answering 503, with the release id of a write that may yet land added to `unconfirmed`
/// (see [`forward_spent`]).
pub(super) async fn redeem_held(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    id: TicketId,
    unconfirmed: &mut Vec<String>,
) -> Result<Response<ProxyBody>, Unredeemed> {
    x.about(&id);
    let checked = match recheck(x, &held, route) {
        Ok(r) => r,
        Err(resp) => return Ok(*resp),
    };
    let engine = x.engine();
    let Ok(store) = engine.store() else {
        let error = GatewayError::StoreUnavailable { ticket: Some(id) };
        return Err(Unredeemed::store_down(held, error));
    };
    let now = engine.now();
    let release = jitgate_store::new_release_id(now);
    // The use and its `ticket.executed` event are one store operation: whatever happens to
    // the client or the upstream next, the spent use is on record.
    let executed = |_: &Ticket, t: &Ticket| {
        vec![AuditDraft::about(
            AuditKind::TicketExecuted,
            t,
            None,
            json!({ "release": release, "use": t.redeemed }),
            now,
        )]
    };
    let spent = match store
        .transition(
            &id,
            &|t| ticket::execute(t, now, &release, &held.fingerprint),
            &executed,
        )
        .await
    {
        Ok(t) => t,
        Err(StoreError::Transition(ticket::TransitionError::OtherRequest)) => {
            tracing::warn!(ticket = %id, "a release for another request was refused");
            let e = GatewayError::Mismatch("the ticket was opened for a different request".into());
            return Ok(x.answer(e, Some(route)));
        }
        Err(StoreError::Transition(e)) => {
            let pending = matches!(
                e,
                ticket::TransitionError::NotApproved {
                    status: ticket::Status::Pending
                }
            );
            if pending {
                tracing::warn!(ticket = %id, "the approval was lost (a store failover); the ticket is pending again");
            }
            let detail = match e {
                ticket::TransitionError::NotApproved {
                    status: ticket::Status::Executed,
                } => "this approval has already been redeemed".to_string(),
                other => other.to_string(),
            };
            let e = GatewayError::Refused {
                ticket: id,
                slug: "approval-used",
                title: "No valid approval for this request",
                reason: detail,
            };
            if pending {
                return Err(Unredeemed {
                    held,
                    error: e,
                    pending: true,
                });
            }
            return Ok(x.answer(e, Some(route)));
        }
        Err(StoreError::Unavailable(why)) => {
            // The write may have landed and only its answer been lost: read it back. It
            // counts only if it will survive a failover (a write a replaced primary took
            // would be undone when that node resynchronises, and the use with it).
            let read = match store.get(&id).await {
                Ok(t) => store.durable().await.map(|()| t),
                Err(e) => Err(e),
            };
            match read {
                Ok(Some(t)) if t.releases.contains(&release) => {
                    tracing::warn!(ticket = %id, "release settled by reading back after: {why}");
                    t
                }
                _ => {
                    unconfirmed.push(release);
                    let e = StoreError::Unavailable(why);
                    let error = store_error(&e, route, Some(&id));
                    return Err(Unredeemed::store_down(held, error));
                }
            }
        }
        Err(e) => return Ok(x.answer(store_error(&e, route, Some(&id)), Some(route))),
    };
    Ok(forward_spent(x, route, held, &spent, Some(checked)).await)
}

/// Forwards the request whose use `spent` records (a use this request made) with the
/// approval token, after re-checking the rules in force unless `checked` already did.
pub(super) async fn forward_spent(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    spent: &Ticket,
    checked: Option<(Arc<Snapshot>, usize)>,
) -> Response<ProxyBody> {
    let (current, index) = match checked.map_or_else(|| recheck(x, &held, route), Ok) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let engine = x.engine();
    let token = engine
        .approval_token(spent)
        .and_then(|tok| HeaderValue::from_str(&tok).ok());
    tracing::info!(ticket = %spent.id, route = %route.name, "approved request released");
    let record = Outcome::new(engine, Some(spent), None);
    send(x, &current, index, held, token, record, true).await
}

/// An approved `access` ticket: its approval created the grant in the same store operation;
/// the held request is its first use.
pub(super) async fn on_approved_access(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    t: &Ticket,
) -> Response<ProxyBody> {
    let Ok(store) = x.engine().store() else {
        return x.answer(
            GatewayError::StoreUnavailable {
                ticket: Some(t.id.clone()),
            },
            Some(route),
        );
    };
    let id = ticket::GrantId::for_ticket(&t.id);
    match store.get_grant(&id).await {
        Ok(Some(g)) => on_grant(x, route, held, g).await,
        Ok(None) => {
            let e = GatewayError::Mismatch(format!(
                "ticket {} was approved but its grant is gone",
                t.id
            ));
            x.answer(e, Some(route))
        }
        Err(e) => x.answer(store_error(&e, route, Some(&t.id)), Some(route)),
    }
}

/// One of this requester's active grants on the route as it is now: on `access` routes a
/// grant of the route, on `action` routes one an `also` approval made for `method` (the
/// method as the ticket records it, override spellings included).
pub(super) async fn find_grant(
    x: &Exchange<'_>,
    route: &Route,
    held: &HeldRequest,
    method: &str,
) -> Result<Option<Grant>, GatewayError> {
    let access = route
        .approval
        .as_ref()
        .is_some_and(|p| p.mode == ApprovalMode::Access);
    let store = x
        .engine()
        .store()
        .map_err(|_| GatewayError::StoreUnavailable { ticket: None })?;
    let now = x.engine().now();
    let grants = store
        .grants_for(&route.name, &held.requester.key(), now)
        .await
        .map_err(|e| store_error(&e, route, None))?;
    let route_hash = ticket::hex(&route.definition_hash);
    Ok(grants.into_iter().find(|g| {
        g.route_hash == route_hash
            && g.requester.same_principal(&held.requester)
            && g.is_active(now)
            && if access {
                g.method.is_none()
            } else {
                g.method.as_deref() == Some(method)
            }
    }))
}

/// Releases a request on `grant`: re-checks the rules in force, spends one use of the grant,
/// forwards. The grant keeps the limits it was created with.
pub(super) async fn on_grant(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    grant: Grant,
) -> Response<ProxyBody> {
    if !grant.requester.same_principal(&held.requester)
        || grant.route != route.name
        || grant.route_hash != ticket::hex(&route.definition_hash)
    {
        let e = GatewayError::Mismatch("the grant is for another requester or route".into());
        return x.answer(e, Some(route));
    }
    let (current, index) = match recheck(x, &held, route) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let engine = x.engine();
    let Ok(store) = engine.store() else {
        return x.answer(GatewayError::StoreUnavailable { ticket: None }, Some(route));
    };
    let now = engine.now();
    let used_event = |_: &Grant, g: &Grant| {
        vec![AuditDraft {
            at: now,
            kind: AuditKind::GrantUsed,
            ticket: g.ticket.clone(),
            actor: None,
            requester: Some(g.requester.key().to_string()),
            route: Some(g.route.clone()),
            detail: json!({ "grant": g.id.to_string(), "uses": g.uses }),
        }]
    };
    let used = match store
        .transition_grant(&grant.id, &|g| ticket::use_grant(g, now), &used_event)
        .await
    {
        Ok(g) => g,
        Err(StoreError::Transition(e)) => {
            return x.answer(GatewayError::Mismatch(e.to_string()), Some(route))
        }
        Err(e) => return x.answer(store_error(&e, route, None), Some(route)),
    };
    tracing::info!(grant = %used.id, route = %route.name, "request passed on an access grant");
    let record = Outcome::new(engine, None, Some(&used));
    send(x, &current, index, held, None, record, true).await
}

/// What approved a request without a person: an auto-approve policy, or the route's
/// `approve_above_rate`.
pub(super) struct ByPolicy<'a> {
    /// The policy's name (`approve_above_rate` for the rate).
    pub name: &'a str,
    /// Access routes: the most uses of the grant it creates.
    pub max_uses: Option<u32>,
    /// The rate, when the rate approved it.
    pub rate: Option<String>,
}

/// Releases a request an auto-approve policy approved: re-checks the rules in force, writes
/// the ticket already decided (an action ticket executed by this release, or an access
/// ticket with its grant, this request its first use) and its events in one store
/// operation, and forwards like any other approved request (action: with its approval
/// token). The store being down fails closed.
pub(super) async fn auto_approved(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    ask: super::Ask,
    policy: ByPolicy<'_>,
) -> Response<ProxyBody> {
    let (current, index) = match recheck(x, &held, route) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let engine = x.engine();
    let Ok(store) = engine.store() else {
        return x.answer(GatewayError::StoreUnavailable { ticket: None }, Some(route));
    };
    let cfg = &x.snap.table.config().approvals;
    let opened = match super::new_ticket(engine, cfg, route, ask) {
        Ok(t) => t,
        Err(e) => return x.answer(e, Some(route)),
    };
    let now = opened.created_at;
    let approved = match ticket::auto_approve(&opened, policy.name, now) {
        // What a policy approved is this one request: no use is left over for a later
        // `Jit-Ticket` or token, where the policy would not be judged again.
        Ok(t) => ticket::Ticket { token_uses: 1, ..t },
        Err(e) => return x.answer(GatewayError::Internal(e.to_string()), Some(route)),
    };
    let release = jitgate_store::new_release_id(now);
    // Action: this request is the one use. Access: the grant (capped by the policy's
    // `max_uses`) is created with this request as its first use.
    let (decided, grant) = match ticket::grant_of(&opened, &approved) {
        Some(mut g) => {
            if let Some(cap) = policy.max_uses {
                g.max_uses = Some(g.max_uses.map_or(cap, |m| m.min(cap)));
            }
            g.uses = 1;
            (approved, Some(g))
        }
        None => match ticket::execute(&approved, now, &release, &held.fingerprint) {
            Ok(t) => (t, None),
            Err(e) => return x.answer(GatewayError::Internal(e.to_string()), Some(route)),
        },
    };
    let name = policy.name;
    let rate = policy.rate.as_deref();
    let events = |t: &Ticket| {
        let mut detail = json!({ "policy": name, "method": t.request.method, "host": t.request.host, "path": t.request.path, "target": t.request.target });
        if let (Some(r), Some(d)) = (rate, detail.as_object_mut()) {
            d.insert("rate".into(), json!(r));
        }
        let mut out = vec![AuditDraft::about(
            AuditKind::AutoApproved,
            t,
            None,
            detail,
            now,
        )];
        match &grant {
            Some(g) => {
                out.push(AuditDraft::about(
                    AuditKind::GrantCreated,
                    t,
                    None,
                    json!({ "grant": g.id.to_string(), "expiresAt": g.expires_at, "maxUses": g.max_uses, "policy": name }),
                    now,
                ));
                out.push(AuditDraft::about(
                    AuditKind::GrantUsed,
                    t,
                    None,
                    json!({ "grant": g.id.to_string(), "uses": g.uses }),
                    now,
                ));
            }
            None => out.push(AuditDraft::about(
                AuditKind::TicketExecuted,
                t,
                None,
                json!({ "release": release, "use": t.redeemed }),
                now,
            )),
        }
        out
    };
    let stored = match store.record(decided, grant.clone(), &events).await {
        Ok(t) => t,
        Err(e) => return x.answer(store_error(&e, route, None), Some(route)),
    };
    x.about(&stored.id);
    engine
        .metrics()
        .ticket_by_policy(&route.name, "auto_approved");
    tracing::info!(ticket = %stored.id, route = %route.name, policy = %name, "auto-approved request released");
    let token = grant
        .is_none()
        .then(|| engine.approval_token(&stored))
        .flatten()
        .and_then(|tok| HeaderValue::from_str(&tok).ok());
    let record = Outcome::new(engine, Some(&stored), grant.as_ref());
    send(x, &current, index, held, token, record, true).await
}

/// The longest break-glass reason kept.
const MAX_BREAK_GLASS_REASON: usize = 500;

/// `Jit-Break-Glass: <reason>`: a member of the route's `break_glass` groups passes at once.
/// The request is re-checked against the rules in force, recorded in one store write as a
/// ticket in `REVIEW` (released once, by this request) with `break_glass.used` at high
/// severity, which notifies, and forwarded with its approval token. An approver acknowledges
/// it afterwards. Without a reason, from anyone else, or on a route without break-glass the
/// request is refused (403) and the attempt audited (`break_glass.refused`). The store being
/// down fails closed.
pub(super) async fn break_glass(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    request: ticket::RequestSnapshot,
    reason: String,
) -> Response<ProxyBody> {
    let engine = x.engine();
    let groups = route
        .approval
        .as_ref()
        .map_or(&[][..], |p| p.break_glass_groups.as_slice());
    let reason = ticket::clip(reason.trim(), MAX_BREAK_GLASS_REASON).to_string();
    let refusal = if groups.is_empty() {
        Some(format!("route {} allows no break-glass", route.name))
    } else if reason.is_empty() {
        Some("Jit-Break-Glass needs a reason".to_string())
    } else if held.requester.user.is_none()
        || !held.requester.groups.iter().any(|g| groups.contains(g))
    {
        Some(format!(
            "{} is not in a break-glass group of route {}",
            held.requester.key(),
            route.name
        ))
    } else {
        None
    };
    if let Some(why) = refusal {
        tracing::warn!(route = %route.name, requester = %held.requester.key(), "break-glass refused: {why}");
        // Logged with the event itself if the store cannot take it, and retried.
        engine.append_reliably(AuditDraft {
            at: engine.now(),
            kind: AuditKind::BreakGlassRefused,
            ticket: None,
            actor: None,
            requester: Some(held.requester.key().into_owned()),
            route: Some(route.name.clone()),
            detail: json!({ "severity": "high", "why": why, "reason": reason, "method": request.method, "host": request.host, "path": request.path, "target": request.target }),
        })
        .await;
        return x.answer(GatewayError::BreakGlassRefused(why), Some(route));
    }
    let (current, index) = match recheck(x, &held, route) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Ok(store) = engine.store() else {
        return x.answer(GatewayError::StoreUnavailable { ticket: None }, Some(route));
    };
    let cfg = &x.snap.table.config().approvals;
    let mut ask = super::Ask::held(&held, request, None, None);
    // The ticket's reason is `Jit-Reason` if sent, else the break-glass reason.
    if ask.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        ask.reason = Some(reason.clone());
    }
    let opened = match super::new_ticket(engine, cfg, route, ask) {
        Ok(t) => t,
        Err(e) => return x.answer(e, Some(route)),
    };
    let now = opened.created_at;
    let release = jitgate_store::new_release_id(now);
    let passed = match ticket::break_glass(&opened, &reason, &release, now) {
        Ok(t) => t,
        Err(e) => return x.answer(GatewayError::Internal(e.to_string()), Some(route)),
    };
    let events = |t: &Ticket| {
        vec![AuditDraft::about(
            AuditKind::BreakGlass,
            t,
            t.requester.user.as_deref(),
            json!({ "severity": "high", "reason": reason, "release": release, "method": t.request.method, "host": t.request.host, "path": t.request.path, "target": t.request.target }),
            now,
        )]
    };
    let stored = match store.record(passed, None, &events).await {
        Ok(t) => t,
        Err(e) => return x.answer(store_error(&e, route, None), Some(route)),
    };
    x.about(&stored.id);
    engine
        .metrics()
        .ticket_by_policy(&route.name, "break_glass");
    tracing::warn!(ticket = %stored.id, route = %route.name, requester = %stored.requester.key(), "break-glass request released; awaiting acknowledgement");
    let token = engine
        .approval_token(&stored)
        .and_then(|tok| HeaderValue::from_str(&tok).ok());
    let record = Outcome::new(engine, Some(&stored), None);
    send(x, &current, index, held, token, record, false).await
}

/// Forwards the held request through the current table's upstream for route `index`;
/// `remember_source`: the release makes its client address known to the risk score.
async fn send(
    x: &Exchange<'_>,
    current: &Snapshot,
    index: usize,
    held: HeldRequest,
    approval: Option<HeaderValue>,
    record: Outcome,
    remember_source: bool,
) -> Response<ProxyBody> {
    let route = current.table.routes().get(index);
    let Some(upstream) = current.upstream_of(index) else {
        let e = GatewayError::Internal("released route has no upstream client".into());
        return x.answer(e, route);
    };
    // The risk score's `new_source`: the address is known from now on, since a request from
    // it was released (not when one was merely held or refused, nor by break-glass, which
    // nobody approved). Off the request's path.
    if remember_source
        && held.requester.user.is_some()
        && current
            .table
            .config()
            .approvals
            .risk
            .as_ref()
            .is_some_and(|r| r.wants_source())
    {
        if let Ok(store) = x.engine().store() {
            let store = store.clone();
            let requester = held.requester.key().into_owned();
            let source = held.canonical.source().to_string();
            tokio::spawn(async move {
                if let Err(e) = store.remember_source(&requester, &source).await {
                    tracing::debug!("client address not remembered: {e}");
                }
            });
        }
    }
    let out = Outbound {
        conn: x.conn,
        canonical: held.canonical,
        body: ProxyBody::full(held.body),
        upgrade: None,
        approval,
        request_id: x.request_id(),
        metrics: x.engine().metrics(),
    };
    match forward(upstream, out).await {
        Ok(resp) => {
            if let Some(decided_at) = record.decided_at {
                let engine = x.engine();
                engine.metrics().released(decided_at, engine.now());
            }
            record.finish(json!({ "upstreamStatus": resp.status().as_u16() }));
            resp
        }
        Err(e) => {
            record
                .finish(json!({ "error": e.problem(route).detail, "status": e.status().as_u16() }));
            x.answer(e, route)
        }
    }
}

/// Records what became of a released request (`ticket.forwarded`): the upstream's status,
/// the gateway's error, or, when the client went away before the answer (the request future
/// was dropped), that.
struct Outcome {
    engine: Arc<Engine>,
    draft: Option<AuditDraft>,
    /// When the ticket released here was approved (`jitgate_release_seconds`).
    decided_at: Option<ticket::Timestamp>,
}

impl Outcome {
    fn new(engine: &Arc<Engine>, t: Option<&Ticket>, g: Option<&Grant>) -> Outcome {
        let requester = t
            .map(|t| t.requester.key().to_string())
            .or_else(|| g.map(|g| g.requester.key().to_string()));
        Outcome {
            engine: engine.clone(),
            decided_at: t.and_then(|t| t.decided_at),
            draft: Some(AuditDraft {
                at: engine.now(),
                kind: AuditKind::TicketForwarded,
                ticket: t
                    .map(|t| t.id.clone())
                    .or_else(|| g.and_then(|g| g.ticket.clone())),
                actor: None,
                requester,
                route: t
                    .map(|t| t.route.clone())
                    .or_else(|| g.map(|g| g.route.clone())),
                detail: json!({ "grant": g.map(|g| g.id.to_string()) }),
            }),
        }
    }

    fn finish(mut self, outcome: serde_json::Value) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: serde_json::Value) {
        let Some(mut draft) = self.draft.take() else {
            return;
        };
        draft.at = self.engine.now();
        if let (Some(d), Some(o)) = (draft.detail.as_object_mut(), outcome.as_object()) {
            d.extend(o.clone());
        }
        self.engine.append_detached(draft);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.draft.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            self.record(json!({ "error": "the client went away before the upstream answered" }));
        }
    }
}
