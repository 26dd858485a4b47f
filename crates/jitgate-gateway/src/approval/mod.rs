//! Approve routes on the data plane (SPEC section 6): identify the requester, buffer and bind
//! the request, open or join its ticket, hold the connection until a decision or
//! `hold_timeout`, and release the request at most once, re-checked against the rule table in
//! force at that moment.
//!
//! Dependencies run one way: the data plane ([`crate::proxy`]) calls [`serve`], and this
//! module forwards through [`crate::forward`]; it re-checks a release with the rules crate's
//! [`jitgate_rules::RuleTable::resolve`], never by calling back into the data plane.
//!
//! Also the gateway's own data-plane endpoints ([`well_known`]): the requester's view of a
//! ticket and the approval-token keys.

mod binding;
mod hold;
mod release;
mod view;

use bytes::Bytes;
use http::Response;
use serde_json::json;

use jitgate_rules::route::{ApprovalMode, Route};
use jitgate_rules::ticket::{
    self, AuditDraft, AuditKind, Mode, Requester, Status, Ticket, TicketDraft, TicketId,
};
use jitgate_rules::Canonical;
use jitgate_store::{LimitScope, PendingLimits, StoreError};

use crate::body::{ProxyBody, RequestBody};
use crate::context::Exchange;
use crate::engine::{Engine, HoldGuard};
use crate::error::GatewayError;

pub use view::{well_known, WELL_KNOWN};

/// Paths of the gateway's own endpoints (the admin plane serves the keys too).
pub mod view_paths {
    pub use super::view::JWKS;
}

/// The longest `Jit-Reason` kept.
const MAX_REASON: usize = 500;

/// A request on an approve route, read whole and bound: what its ticket describes, and the
/// one copy that is released. Held requests keep only this and their ticket id.
pub struct HeldRequest {
    /// The canonical request (what is forwarded).
    pub canonical: Canonical,
    /// The body, replayed on release.
    pub body: Bytes,
    /// Who sent it.
    pub requester: Requester,
    /// See [`ticket::fingerprint`]: what a ticket or token must have been issued for.
    pub fingerprint: String,
}

/// Serves a request that resolved to an enforcing approve route (`route`, of the request's
/// own table generation).
pub async fn serve(
    x: &Exchange<'_>,
    route: &Route,
    canonical: Canonical,
    body: RequestBody,
) -> Response<ProxyBody> {
    // Two steps, so a held request keeps only the second's future: the first (reading,
    // binding, policies, the ticket) is done and dropped before holding begins.
    match Box::pin(admit(x, route, canonical, body)).await {
        Ok(holding) => Box::pin(hold_then_finish(x, route, holding)).await,
        Err(answered) => answered,
    }
}

/// A request that waits for its ticket's decision.
struct Holding {
    id: TicketId,
    expires_at: ticket::Timestamp,
    hold_for: std::time::Duration,
    held: HeldRequest,
    /// The hold this request took on the ticket it opened (which lists this replica among
    /// its holders); `None` when it joined or resumed one.
    opened: Option<HoldGuard>,
}

/// Everything before holding: `Ok` to hold, `Err` with the answer when none is needed.
async fn admit(
    x: &Exchange<'_>,
    route: &Route,
    mut canonical: Canonical,
    body: RequestBody,
) -> Result<Holding, Response<ProxyBody>> {
    let Some(policy) = route.approval.as_ref() else {
        let e = GatewayError::Internal("approve route without an approval policy".into());
        return Err(x.answer(e, Some(route)));
    };
    if canonical.is_upgrade() {
        return Err(x.answer(GatewayError::UpgradeNotHoldable, Some(route)));
    }
    let identity = match x
        .snap
        .auth
        .authenticate(canonical.headers(), canonical.trusted_peer())
    {
        Ok(id) => id,
        Err(e) => {
            tracing::info!(route = %route.name, "requester authentication failed: {e}");
            let e = GatewayError::Unauthenticated("the bearer token is not valid".into());
            return Err(x.answer(e, Some(route)));
        }
    };
    if identity.is_anonymous() && (policy.require_identity || policy.mode == ApprovalMode::Access) {
        let e = GatewayError::Unauthenticated(format!(
            "route {} requires an authenticated requester",
            route.name
        ));
        return Err(x.answer(e, Some(route)));
    }
    if let Err(e) = x.engine().store() {
        tracing::warn!(route = %route.name, "approve route refused, store unavailable: {e}");
        return Err(x.answer(GatewayError::StoreUnavailable { ticket: None }, Some(route)));
    }
    let limit = x.snap.table.config().approvals.max_held_body;
    let idle = x.snap.body_idle(route.index);
    // Read whole, a body's `_method` joins the method readings even where it could not change
    // the route: it is part of what the approver must see (the ticket's method reads
    // `POST+DELETE`).
    let body = match Box::pin(body.read(&mut canonical, limit, idle)).await {
        Ok(b) => b,
        Err(e) => return Err(x.answer(e, Some(route))),
    };
    x.read_as(&canonical);
    let requester = binding::requester(x, &identity, &canonical);
    let bound = binding::bound_headers(x, &identity, policy, &canonical);
    let request = binding::snapshot(&canonical, &bound, &body);
    let route_hash = ticket::hex(&route.definition_hash);
    let fingerprint = ticket::fingerprint(&request, &requester, &route_hash);
    let held = HeldRequest {
        canonical,
        body,
        requester,
        fingerprint,
    };

    // Break-glass comes first: the emergency passes (or is refused) loudly, whatever else the
    // request carries.
    if held.canonical.gateway_headers_named("jit-break-glass") {
        let reason = held
            .canonical
            .gateway_header("jit-break-glass")
            .unwrap_or_default()
            .to_string();
        return Err(Box::pin(release::break_glass(x, route, held, request, reason)).await);
    }
    if let Some(token) = held.canonical.gateway_header("jit-approval") {
        let token = token.to_string();
        return Err(Box::pin(release::by_token(x, route, held, &token)).await);
    }
    if let Some(raw) = held.canonical.gateway_header("jit-ticket") {
        let Ok(id) = TicketId::parse(raw) else {
            return Err(x.answer(
                GatewayError::Mismatch("Jit-Ticket is not a ticket id".into()),
                Some(route),
            ));
        };
        return Box::pin(resume(x, route, held, id)).await;
    }
    // Access routes, and action routes whose approvals may let the next requests like one
    // through (`also`): a grant of this requester's may release this request.
    if policy.mode == ApprovalMode::Access || policy.max_also_uses > 0 {
        match Box::pin(release::find_grant(x, route, &held, &request.method)).await {
            Ok(Some(grant)) => return Err(Box::pin(release::on_grant(x, route, held, grant)).await),
            Ok(None) => {}
            Err(e) => return Err(x.answer(e, Some(route))),
        }
    }
    // `Jit-Duration` (access routes), read once for the policies and the ticket: exactly one
    // of the durations the route grants, or a refusal; never a silently shortened grant.
    let requested = match held.requested_duration(route) {
        Ok(d) => d,
        Err(e) => return Err(x.answer(e, Some(route))),
    };
    let risk = Box::pin(risk_of(x, route, &held)).await;
    // After the grants (a grant in hand is used before a policy makes another).
    if let Some(auto) = auto_policy(x, route, &held, requested, risk.as_ref().map(|r| r.score)) {
        let by = release::ByPolicy {
            name: &auto.name,
            max_uses: auto.max_uses,
            rate: None,
        };
        return {
            let ask = Ask::held(&held, request, requested, risk);
            Err(Box::pin(release::auto_approved(x, route, held, ask, by)).await)
        };
    }
    // `approve_above_rate`: a named requester's requests within the rate pass (anonymous
    // requesters can mint identities, so each would have a rate of its own: never).
    if let (Some(rate), Some(_)) = (
        x.snap.route_rates.get(route.index).and_then(Option::as_ref),
        held.requester.user.as_ref(),
    ) {
        if rate.admit(&held.requester.key()) {
            let by = release::ByPolicy {
                name: "approve_above_rate",
                max_uses: None,
                rate: Some(rate.text()),
            };
            return {
                let ask = Ask::held(&held, request, requested, risk);
                Err(Box::pin(release::auto_approved(x, route, held, ask, by)).await)
            };
        }
    }
    match Box::pin(open(x, route, Ask::held(&held, request, requested, risk))).await {
        Ok((t, guard)) => settle(x, route, t, guard, held).await,
        Err(e) => Err(x.answer(e, Some(route))),
    }
}

/// `Jit-Ticket`: the ticket must have been opened for exactly this request by this requester.
async fn resume(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    id: TicketId,
) -> Result<Holding, Response<ProxyBody>> {
    let Ok(store) = x.engine().store() else {
        return Err(x.answer(
            GatewayError::StoreUnavailable { ticket: Some(id) },
            Some(route),
        ));
    };
    let t = match store.get(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(x.answer(GatewayError::Mismatch("unknown ticket".into()), Some(route)))
        }
        Err(e) => {
            tracing::warn!(ticket = %id, "store unavailable: {e}");
            return Err(x.answer(
                GatewayError::StoreUnavailable { ticket: Some(id) },
                Some(route),
            ));
        }
    };
    if t.fingerprint != held.fingerprint || !t.belongs_to(&route.name, &held.requester) {
        tracing::info!(ticket = %id, route = %route.name, "Jit-Ticket for another request or requester");
        return Err(x.answer(
            GatewayError::Mismatch("the ticket was opened for a different request".into()),
            Some(route),
        ));
    }
    settle(x, route, t, None, held).await
}

/// A new ticket (with the hold on it, see [`open_ticket`]), or the pending one an identical
/// request of the same requester opened.
async fn open(
    x: &Exchange<'_>,
    route: &Route,
    ask: Ask,
) -> Result<(Ticket, Option<HoldGuard>), GatewayError> {
    let cfg = &x.snap.table.config().approvals;
    let (t, _, guard) = open_ticket(x.engine(), cfg, route, ask).await?;
    Ok((t, guard))
}

/// What a ticket is opened for: a held request, or access asked for ahead
/// (`POST /v1/access-requests`, whose request snapshot is empty).
pub(crate) struct Ask {
    /// Who asks.
    pub requester: Requester,
    /// Anonymous requesters: the client address (per-source caps count by it).
    pub source: Option<String>,
    /// `Jit-Reason`, or the access request's `reason` (clipped here).
    pub reason: Option<String>,
    /// What approvers see of the request.
    pub request: ticket::RequestSnapshot,
    /// The grant duration asked for (`access` routes).
    pub requested: Option<std::time::Duration>,
    /// Asked ahead through the admin plane, without a held request.
    pub ahead: bool,
    /// The request's risk score (`[approvals.risk]`).
    pub risk: Option<ticket::Risk>,
}

impl Ask {
    /// What a held request asks for: its requester (anonymous ones with their client
    /// address, which per-source caps count by), `Jit-Reason`, the grant duration read by
    /// [`HeldRequest::requested_duration`] and its risk score.
    pub(crate) fn held(
        held: &HeldRequest,
        request: ticket::RequestSnapshot,
        requested: Option<std::time::Duration>,
        risk: Option<ticket::Risk>,
    ) -> Ask {
        let anonymous = held.requester.user.is_none();
        Ask {
            requester: held.requester.clone(),
            source: anonymous.then(|| held.canonical.source().to_string()),
            reason: held
                .canonical
                .gateway_header("jit-reason")
                .map(str::to_string),
            request,
            requested,
            ahead: false,
            risk,
        }
    }
}

impl HeldRequest {
    /// `Jit-Duration` on an access route, parsed (400 `duration-not-allowed` when it is not a
    /// duration); on `action` routes the header means nothing and is not read.
    fn requested_duration(
        &self,
        route: &Route,
    ) -> Result<Option<std::time::Duration>, GatewayError> {
        let access = route
            .approval
            .as_ref()
            .is_some_and(|p| p.mode == ApprovalMode::Access);
        match self.canonical.gateway_header("jit-duration") {
            Some(raw) if access => jitgate_rules::units::parse_duration(raw)
                .map(Some)
                .map_err(|e| GatewayError::DurationRefused(format!("Jit-Duration: {e}"))),
            _ => Ok(None),
        }
    }
}

/// Opens a ticket for `ask` on `route` (an approve route) or joins the pending one of the same
/// requester with the same fingerprint, under the pending caps, recording `ticket.created`
/// with the write. Returns the ticket, whether it was created, and for one created for a held
/// request the hold on it, taken before the creation was sent (so a client gone before its
/// request begins to wait still leaves the holders it was listed in). A duration that the
/// route does not grant, or that differs from the pending ticket's, is refused (400).
pub(crate) async fn open_ticket(
    engine: &std::sync::Arc<Engine>,
    cfg: &jitgate_rules::config::Approvals,
    route: &Route,
    ask: Ask,
) -> Result<(Ticket, bool, Option<HoldGuard>), GatewayError> {
    let store = engine
        .store()
        .map_err(|_| GatewayError::StoreUnavailable { ticket: None })?;
    let Some(policy) = route.approval.as_ref() else {
        return Err(GatewayError::Internal(
            "approve route without a policy".into(),
        ));
    };
    let ticket_ttl = policy.ticket_ttl.unwrap_or(cfg.ticket_ttl);
    let anonymous = ask.requester.user.is_none();
    let requested = ask.requested;
    let ahead = ask.ahead;
    let mut fresh = new_ticket(engine, cfg, route, ask)?;
    // A held request's replica holds it from the start (asked ahead, no one does).
    let mut guard = None;
    if !ahead {
        fresh.holders.push(engine.replica().to_string());
        guard = Some(engine.hold(&fresh.id));
    }
    let grant_terms = fresh.grant_terms;
    let requester_key = fresh.requester.key().into_owned();
    let now = fresh.created_at;
    // Caps are checked by the store atomically with creation: overall, this requester on
    // this route, and this requester across routes: a named user, or, for anonymous
    // requesters (who can mint identities at will), what one client address has open.
    let limits = PendingLimits {
        max_pending: Some(cfg.max_pending),
        per_requester: policy.max_pending_per_requester,
        per_source: Some(if anonymous {
            cfg.max_pending_per_source
        } else {
            cfg.max_pending_per_user
        }),
    };
    let fingerprint = fresh.fingerprint.clone();
    let on_create = |t: &Ticket| {
        let detail = if ahead {
            json!({ "askedAhead": true, "grantTerms": t.grant_terms })
        } else {
            json!({ "method": t.request.method, "host": t.request.host, "path": t.request.path, "target": t.request.target })
        };
        vec![AuditDraft::about(
            AuditKind::TicketCreated,
            t,
            None,
            detail,
            now,
        )]
    };
    let (t, created) = match store
        .create_or_join(fresh, &fingerprint, &limits, &on_create)
        .await
    {
        Ok(r) => r,
        Err(StoreError::Limit { scope, limit }) => {
            release_hold(guard);
            return Err(GatewayError::TooManyPending {
                detail: format!(
                    "too many pending tickets ({} limit {limit}) for {requester_key} on route {}",
                    match scope {
                        LimitScope::Source if anonymous => "per-source",
                        LimitScope::Source => "per-user",
                        LimitScope::Requester => "per-requester on this route",
                        LimitScope::Global => "global",
                    },
                    route.name
                ),
                retry_after: ticket_ttl,
            });
        }
        // Let go without a leave: with the store down (the usual cause) a leave could only
        // be retried for a ticket that was most likely never written, one task per refused
        // request. A creation that landed unseen stays pending, unheld, until `ticket_ttl`;
        // an identical request joins it.
        Err(e) => {
            release_hold(guard);
            tracing::warn!(route = %route.name, "store unavailable: {e}");
            return Err(GatewayError::StoreUnavailable { ticket: None });
        }
    };
    if !created {
        // Joined another: the fresh ticket was never written.
        release_hold(guard.take());
    }
    if created {
        engine.metrics().ticket_opened(&route.name);
        tracing::info!(ticket = %t.id, route = %route.name, requester = %t.requester.key(), method = %t.request.method, path = %t.request.path, ahead, "held for approval");
    } else {
        // A request that asked for a duration gets exactly that or nothing: joining a
        // pending ticket with other terms would silently grant something else.
        if requested.is_some() && t.grant_terms != grant_terms {
            let pending = t.grant_terms.map_or_else(
                || "none".to_string(),
                |g| {
                    jitgate_rules::units::format_duration(std::time::Duration::from_millis(
                        g.duration_ms,
                    ))
                },
            );
            return Err(GatewayError::DurationRefused(format!(
                "an identical request of yours is pending as ticket {} with a grant of {pending}; ask for the same duration, or wait for that ticket",
                t.id
            )));
        }
        tracing::info!(ticket = %t.id, route = %route.name, "identical request joined a pending ticket");
    }
    Ok((t, created, guard))
}

/// Lets go of a hold without writing anything.
fn release_hold(guard: Option<HoldGuard>) {
    if let Some(mut g) = guard {
        g.disarm();
    }
}

/// The `PENDING` ticket `ask` opens on `route` (an approve route) at the engine's clock, not
/// yet stored. A duration the route does not grant is refused (400).
pub(crate) fn new_ticket(
    engine: &Engine,
    cfg: &jitgate_rules::config::Approvals,
    route: &Route,
    ask: Ask,
) -> Result<Ticket, GatewayError> {
    let Some(policy) = route.approval.as_ref() else {
        return Err(GatewayError::Internal(
            "approve route without a policy".into(),
        ));
    };
    let now = engine.now();
    let reason = ask
        .reason
        .as_deref()
        .map(|r| ticket::clip(r.trim(), MAX_REASON).to_string())
        .filter(|r| !r.is_empty());
    let grant_terms = policy
        .grant_terms_for(ask.requested)
        .map_err(GatewayError::DurationRefused)?;
    let draft = TicketDraft {
        route: route.name.clone(),
        route_hash: route.definition_hash,
        mode: Mode::from(policy.mode),
        requester: ask.requester,
        reason,
        request: ask.request,
        ticket_ttl: policy.ticket_ttl.unwrap_or(cfg.ticket_ttl),
        token_ttl: policy.token_ttl.unwrap_or(cfg.token_ttl),
        quorum: policy.quorum,
        approvers: policy.approvers.iter().map(ToString::to_string).collect(),
        self_approval: policy.self_approval,
        token_uses: policy.token_uses,
        grant_terms,
        also_limit: policy.also_limit(),
        escalation: policy.escalate_after.map(|after| {
            (
                after,
                policy.escalate_to.iter().map(ToString::to_string).collect(),
            )
        }),
        remind_before: policy.remind_before,
        risk: ask.risk,
        source: ask.source,
    };
    Ok(Ticket::open(jitgate_store::new_ticket_id(now), draft, now))
}

/// The risk score of `held` under `[approvals.risk]`, if configured: the signals are the
/// time, whether this requester used this client address before (remembered in the store;
/// an unreachable store counts it as new), their request rate on the route (per replica),
/// the method readings and the body size.
async fn risk_of(x: &Exchange<'_>, route: &Route, held: &HeldRequest) -> Option<ticket::Risk> {
    let model = x.snap.table.config().approvals.risk.as_ref()?;
    let engine = x.engine();
    let requester = held.requester.key();
    let source = held.canonical.source();
    // Known only once a request from it was released (see `release::send`): a held or
    // refused request does not make its address known.
    // Anonymous requesters are not remembered (each new credential would be a new set to
    // keep): their address always counts as new.
    let new_source = if model.wants_source() {
        let known = held.requester.user.is_some()
            && match engine.store() {
                Ok(store) => store
                    .source_known(&requester, &source.to_string())
                    .await
                    .unwrap_or(false),
                Err(_) => false,
            };
        (!known).then_some(source)
    } else {
        None
    };
    // Anonymous requesters are counted by address: a new credential is a new requester key.
    let rate_key = match held.requester.user {
        Some(_) => requester.into_owned(),
        None => format!("address:{source}"),
    };
    let over_rate = x
        .snap
        .risk_rate
        .as_ref()
        .is_some_and(|r| r.over(&route.name, &rate_key));
    let encoding = held
        .canonical
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| !e.eq_ignore_ascii_case("identity"));
    let input = jitgate_rules::policy::RiskInput {
        methods: held.canonical.methods(),
        body_len: held.body.len() as u64,
        body_encoding: encoding,
        new_source,
        over_rate,
        now: engine.now(),
    };
    Some(model.score(&input))
}

/// The auto-approve policy of `route` that approves `held`, if any: evaluated on the
/// canonical request's readings, the requester, and (access routes) the grant it would get.
fn auto_policy<'r>(
    x: &Exchange<'_>,
    route: &'r Route,
    held: &HeldRequest,
    requested: Option<std::time::Duration>,
    risk: Option<u32>,
) -> Option<&'r jitgate_rules::route::AutoApprove> {
    let policy = route.approval.as_ref()?;
    if policy.auto_approve.is_empty() {
        return None;
    }
    let duration = if policy.mode == ApprovalMode::Access {
        // A duration the route does not grant is refused when the ticket is opened.
        let terms = policy.grant_terms_for(requested).ok()??;
        Some(std::time::Duration::from_millis(terms.duration_ms))
    } else {
        None
    };
    let now = x.engine().now();
    held.canonical.with_view(|v| {
        let input = jitgate_rules::policy::PolicyInput {
            methods: v.methods,
            paths: v.paths,
            user: held.requester.user.as_deref(),
            groups: &held.requester.groups,
            source: v.source,
            headers: v.headers,
            duration,
            risk,
            now,
        };
        jitgate_rules::policy::first_match(&policy.auto_approve, &input)
    })
}

/// Answers for a ticket that is decided; one that is pending (`opened` by this request, with
/// its hold, or joined) is to be held.
async fn settle(
    x: &Exchange<'_>,
    route: &Route,
    t: Ticket,
    opened: Option<HoldGuard>,
    held: HeldRequest,
) -> Result<Holding, Response<ProxyBody>> {
    x.about(&t.id);
    if t.status != Status::Pending {
        release_hold(opened);
        return Err(Box::pin(finish(x, route, t, held)).await);
    }
    let cfg = &x.snap.table.config().approvals;
    let mut hold_for = route
        .approval
        .as_ref()
        .and_then(|p| p.hold_timeout)
        .unwrap_or(cfg.hold_timeout);
    // A gRPC client gives up at its deadline (and its going away would cancel the ticket):
    // answer "pending, here is your ticket" while it still listens.
    if let Some(deadline) = x
        .grpc
        .then(|| crate::grpc::timeout(held.canonical.headers()))
        .flatten()
    {
        let margin = (deadline / 10).max(std::time::Duration::from_millis(100));
        hold_for = hold_for.min(deadline.saturating_sub(margin));
    }
    Ok(Holding {
        id: t.id,
        expires_at: t.expires_at,
        hold_for,
        held,
        opened,
    })
}

/// Holds the request until its ticket is decided (or the hold times out), then answers.
/// While waiting, this future is the `Holding` and the wait: nothing is kept twice.
async fn hold_then_finish(
    x: &Exchange<'_>,
    route: &Route,
    mut holding: Holding,
) -> Response<ProxyBody> {
    // Kept while held: nothing of it may pin the connection's read buffer.
    holding.held.canonical.detach();
    holding.held.body = Bytes::copy_from_slice(&holding.held.body);
    let Holding {
        id,
        expires_at,
        hold_for,
        mut held,
        opened,
    } = holding;
    let deadline = tokio::time::Instant::now() + hold_for;
    // Held from here until answered, through releases and their retries: a client that goes
    // away at any point leaves the ticket's holders (and cancels it if it was the last).
    let listed = opened.is_some();
    let mut guard = opened.unwrap_or_else(|| x.engine().hold(&id));
    if !x.engine().list_holder(&id, listed).await {
        // Held unlisted, it could be cancelled under it by another replica's client going
        // away: answered 503 with its ticket instead, to resume when the store answers.
        guard.answered_pending();
        let e = GatewayError::StoreUnavailable {
            ticket: Some(id.clone()),
        };
        return Box::pin(conclude(x, route, Err(e), held)).await;
    }
    // Releases this request tried whose write the store could not confirm (a failover, say):
    // each may yet turn out to have landed, or to have vanished with a replaced primary.
    let mut unconfirmed: Vec<String> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let waited = hold::wait(x, id.clone(), expires_at, left, &guard).await;
        let retry = match waited {
            // A use this request made earlier landed: it is ours, once it will last.
            Ok(t) if t.releases.iter().any(|r| unconfirmed.contains(r)) => {
                // Boxed, with the ticket: nothing of this rare path sizes the hold.
                match Box::pin(forward_if_durable(x, route, held, t)).await {
                    Ok(resp) => {
                        guard.disarm();
                        return resp;
                    }
                    Err(u) => {
                        held = u.held;
                        u.error
                    }
                }
            }
            Ok(t) if t.status == Status::Approved && t.mode != Mode::Access => {
                let ticket = t.id.clone();
                // Only the id is kept across the release.
                drop(t);
                let redeemed = Box::pin(release::redeem_held(
                    x,
                    route,
                    held,
                    ticket,
                    &mut unconfirmed,
                ))
                .await;
                match redeemed {
                    Ok(resp) => {
                        guard.disarm();
                        return resp;
                    }
                    // Pending again (its approval lost in a failover): hold on for the
                    // decision, answered 202 with the ticket if the hold ends first.
                    Err(u) if u.pending => {
                        held = u.held;
                        GatewayError::Pending {
                            ticket: id.clone(),
                            expires_at,
                        }
                    }
                    Err(u) => {
                        held = u.held;
                        u.error
                    }
                }
            }
            // While a release of ours is unsettled, a store that cannot be read is waited out
            // too: the release may yet turn out to have landed.
            Err(e @ GatewayError::StoreUnavailable { .. }) if !unconfirmed.is_empty() => e,
            waited => {
                match &waited {
                    Ok(t) if t.status != Status::Pending => guard.disarm(),
                    _ => guard.answered_pending(),
                }
                return Box::pin(conclude(x, route, waited, held)).await;
            }
        };
        // The store could not confirm the release: nothing was forwarded. Hold on and look
        // again (a failover ends; a decision the old primary took and lost is taken again),
        // while the hold lasts.
        if tokio::time::Instant::now() + RELEASE_RETRY >= deadline {
            guard.answered_pending();
            return x.answer(retry, Some(route));
        }
        tracing::warn!(ticket = %id, "the store could not confirm the release; holding on");
        tokio::time::sleep(RELEASE_RETRY).await;
    }
}

/// Forwards `held` on its own earlier use recorded in `spent`, once the store confirms that
/// use will last; gives the request back when it cannot.
async fn forward_if_durable(
    x: &Exchange<'_>,
    route: &Route,
    held: HeldRequest,
    spent: Ticket,
) -> Result<Response<ProxyBody>, release::Unredeemed> {
    let durable = match x.engine().store() {
        Ok(store) => store.durable().await,
        Err(e) => Err(e),
    };
    match durable {
        Ok(()) => {
            tracing::warn!(ticket = %spent.id, "release confirmed after the store recovered");
            Ok(release::forward_spent(x, route, held, &spent, None).await)
        }
        Err(e) => Err(release::Unredeemed::store_down(
            held,
            store_error(&e, route, Some(&spent.id)),
        )),
    }
}

/// How long a held request waits before looking again at a ticket whose release the store
/// could not confirm.
const RELEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// The answer once a hold ended: released, refused, or the hold's own error.
async fn conclude(
    x: &Exchange<'_>,
    route: &Route,
    waited: Result<Ticket, GatewayError>,
    held: HeldRequest,
) -> Response<ProxyBody> {
    match waited {
        Ok(t) => finish(x, route, t, held).await,
        Err(e) => x.answer(e, Some(route)),
    }
}

/// Releases or answers for a ticket as it stands.
async fn finish(
    x: &Exchange<'_>,
    route: &Route,
    t: Ticket,
    held: HeldRequest,
) -> Response<ProxyBody> {
    match t.status {
        Status::Approved if t.mode == Mode::Access => {
            release::on_approved_access(x, route, held, &t).await
        }
        Status::Approved => release::redeem(x, route, held, t.id).await,
        Status::Pending => x.answer(
            GatewayError::Pending {
                ticket: t.id.clone(),
                expires_at: t.expires_at,
            },
            Some(route),
        ),
        _ => x.answer(refusal(&t), Some(route)),
    }
}

/// The answer for a ticket that ended without a release: denied, expired, cancelled, used.
fn refusal(t: &Ticket) -> GatewayError {
    let (slug, title, reason) = match t.status {
        Status::Denied => (
            "approval-denied",
            "Denied by approver",
            t.deny_reason
                .clone()
                .unwrap_or_else(|| "denied without a reason".into()),
        ),
        Status::Expired => (
            "approval-expired",
            "Approval expired",
            "nobody decided before the ticket expired".to_string(),
        ),
        Status::Cancelled => (
            "approval-cancelled",
            "Ticket cancelled",
            "the ticket was cancelled before a decision".to_string(),
        ),
        _ => (
            "approval-used",
            "Approval already used",
            "this approval has already been redeemed".to_string(),
        ),
    };
    GatewayError::Refused {
        ticket: t.id.clone(),
        slug,
        title,
        reason,
    }
}

/// A store failure on the approval path: unavailable, or the transition's own refusal.
fn store_error(e: &StoreError, route: &Route, id: Option<&TicketId>) -> GatewayError {
    tracing::warn!(route = %route.name, ticket = ?id.map(TicketId::as_str), "store: {e}");
    match e {
        StoreError::NotFound => GatewayError::Mismatch("unknown ticket".into()),
        _ => GatewayError::StoreUnavailable {
            ticket: id.cloned(),
        },
    }
}

#[cfg(test)]
mod tests;
