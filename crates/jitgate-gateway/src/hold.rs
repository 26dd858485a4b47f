//! Approve routes on the data plane (SPEC section 6): identify the requester, buffer the body,
//! open or join a ticket, hold the connection until a decision or `hold_timeout`, and release
//! the request exactly once, re-checked against the rule table in force at release.
//!
//! Also the gateway's own data-plane endpoints: the requester's view of a ticket at
//! `/.well-known/jitgate/tickets/<id>` and the approval-token keys at `/.well-known/jwks.json`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{json, Value};

use jitgate_rules::route::{Action, ApprovalMode, ApprovalPolicy, Route};
use jitgate_rules::ticket::{
    self, AuditKind, Mode, RequestSnapshot, Requester, Status, Ticket, TicketDraft, TicketId,
    TransitionError,
};
use jitgate_store::{PendingLimits, Store, StoreError};

use crate::body::ProxyBody;
use crate::engine::Engine;
use crate::problem::{json_response, Fault, Problem};
use crate::proxy::{self, ConnInfo, Decision, Facts, Hop};
use crate::state::{Shared, Snapshot};

/// The prefix of the gateway's own data-plane endpoints.
pub const WELL_KNOWN: &str = "/.well-known/j";
/// The requester's view of a ticket: `GET /.well-known/jitgate/tickets/<id>`.
pub const TICKET_VIEW: &str = "/.well-known/jitgate/tickets/";
/// The approval-token public keys.
pub const JWKS: &str = "/.well-known/jwks.json";

/// Carries the approval token upstream, and a client's token back in.
pub const JIT_APPROVAL: HeaderName = HeaderName::from_static("jit-approval");
/// Carries a ticket id (answers, and resumed requests).
pub const JIT_TICKET: HeaderName = HeaderName::from_static("jit-ticket");
/// The requester's reason for a held request.
pub const JIT_REASON: HeaderName = HeaderName::from_static("jit-reason");

/// How much of a held body approvers see.
const PREVIEW_CAP: usize = 2048;
/// How many request headers a ticket records.
const MAX_TICKET_HEADERS: usize = 64;
/// The longest `Jit-Reason` kept.
const MAX_REASON: usize = 500;

/// What a client sent to resume: a ticket id or an approval token.
#[derive(Debug, Default)]
pub struct Resume {
    ticket: Option<String>,
    approval: Option<String>,
}

impl Resume {
    /// Removes `Jit-Ticket` and `Jit-Approval` from the request (they are never forwarded)
    /// and keeps their values. Either header twice is ambiguous: 400.
    pub fn take(headers: &mut http::HeaderMap) -> Result<Resume, Problem> {
        if !headers.contains_key(&JIT_TICKET) && !headers.contains_key(&JIT_APPROVAL) {
            return Ok(Resume::default());
        }
        let mut one = |name: &HeaderName| -> Result<Option<String>, Problem> {
            let values: Vec<HeaderValue> = match headers.entry(name) {
                http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
                http::header::Entry::Vacant(_) => return Ok(None),
            };
            match values.as_slice() {
                [v] => v
                    .to_str()
                    .map(|s| Some(s.trim().to_string()))
                    .map_err(|_| Problem::bad_request(format!("{name} is not text"))),
                _ => Err(Problem::bad_request(format!("more than one {name} header"))),
            }
        };
        Ok(Resume {
            ticket: one(&JIT_TICKET)?,
            approval: one(&JIT_APPROVAL)?,
        })
    }
}

/// One request on an enforcing approve route.
pub(crate) struct Held<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) snap: &'a Arc<Snapshot>,
    pub(crate) conn: &'a ConnInfo,
    pub(crate) trusted_peer: bool,
}

/// How a hold ended.
enum HoldEnd {
    Decided(Ticket),
    StillPending(Ticket),
    ShuttingDown(TicketId),
    Store(StoreError, TicketId),
}

/// The held request, taken apart.
struct Pending<'a> {
    /// What matching decided on the request's own snapshot of the table.
    decision: Decision,
    route: &'a Route,
    policy: &'a ApprovalPolicy,
    parts: http::request::Parts,
    body: Bytes,
    requester: Requester,
    fingerprint: String,
}

impl Held<'_> {
    /// Serves a request that matched an enforcing approve route.
    pub(crate) async fn approve(
        &self,
        decision: Decision,
        resume: Resume,
        upgrade: bool,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let Some(route) = self.snap.table.routes().get(decision.route) else {
            return proxy::internal_error("matched route vanished");
        };
        let Some(policy) = route.approval.as_ref() else {
            return proxy::internal_error("approve route without an approval policy");
        };
        if upgrade {
            return policy_problem(
                StatusCode::FORBIDDEN,
                "upgrade-not-holdable",
                "Upgrade needs approval",
                format!(
                    "route {} requires approval, and protocol upgrades cannot be held",
                    route.name
                ),
                route,
            );
        }
        let identity = match self
            .snap
            .auth
            .authenticate(req.headers(), self.trusted_peer)
        {
            Ok(id) => id,
            Err(e) => {
                tracing::info!(route = %route.name, "requester authentication failed: {e}");
                return unauthorized("the bearer token is not valid", route);
            }
        };
        if identity.is_anonymous()
            && (policy.require_identity || policy.mode == ApprovalMode::Access)
        {
            return unauthorized(
                &format!("route {} requires an authenticated requester", route.name),
                route,
            );
        }
        let engine = self.shared.engine();
        let store = match engine.store() {
            Ok(s) => s.clone(),
            Err(e) => return store_unavailable(&e, route, None),
        };

        // The facts a ticket records, from the same canonicalisation that matched.
        let mut facts = Facts::default();
        if let Err(p) = proxy::decide(
            self.snap,
            self.conn,
            req.method(),
            req.uri(),
            req.headers(),
            Some(&mut facts),
        ) {
            return p.into_response();
        }
        let limit = self.snap.table.config().approvals.max_held_body;
        let idle = self
            .snap
            .route_upstreams
            .get(decision.route)
            .and_then(Option::as_ref)
            .map_or(Duration::from_secs(30), |u| u.def.idle_timeout);
        let (parts, body) = req.into_parts();
        let body = match read_body(&parts.headers, body, limit, idle).await {
            Ok(b) => b,
            Err(p) => return p.with("rule", route.name.clone()).into_response(),
        };
        let requester = Requester {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            anonymous: None,
        };
        let snapshot = request_snapshot(facts, &parts.headers, &body);
        let route_hash = ticket::hex(&route.definition_hash);
        let fingerprint = ticket::fingerprint(&snapshot, &requester, &route_hash);
        let pending = Pending {
            decision,
            route,
            policy,
            parts,
            body,
            requester,
            fingerprint,
        };

        if let Some(token) = &resume.approval {
            return self.redeem_token(&store, token, pending).await;
        }
        if let Some(raw) = &resume.ticket {
            let Ok(id) = TicketId::parse(raw) else {
                return mismatch(route, "Jit-Ticket is not a ticket id");
            };
            let t = match store.get(&id).await {
                Ok(Some(t)) => t,
                Ok(None) => return mismatch(route, "unknown ticket"),
                Err(e) => return store_unavailable(&e, route, Some(&id)),
            };
            if t.fingerprint != pending.fingerprint
                || !t.belongs_to(&route.name, &pending.requester)
            {
                return mismatch(route, "the ticket was opened for a different request");
            }
            return self.settle(&store, t, pending).await;
        }
        if policy.mode == ApprovalMode::Access {
            match self.use_grant(&store, &pending).await {
                Ok(Some(grant)) => return self.forward_granted(&grant, pending).await,
                Ok(None) => {}
                Err(resp) => return resp,
            }
        }

        // A new ticket, or the pending one an identical request already opened.
        let now = jitgate_store::now();
        let cfg = &self.snap.table.config().approvals;
        let reason = pending
            .parts
            .headers
            .get(&JIT_REASON)
            .and_then(|v| v.to_str().ok())
            .map(|r| ticket::clip(r.trim(), MAX_REASON).to_string())
            .filter(|r| !r.is_empty());
        let source = crate::headers::client_ip(
            &self.snap.table.config().server.trusted_proxies,
            self.conn.peer.ip(),
            &pending.parts.headers,
        );
        let draft = TicketDraft {
            route: route.name.clone(),
            route_hash: route.definition_hash,
            mode: Mode::from(policy.mode),
            requester: pending.requester.clone(),
            source: Some(source.to_string()),
            reason,
            request: snapshot,
            ticket_ttl: policy.ticket_ttl.unwrap_or(cfg.ticket_ttl),
            token_ttl: policy.token_ttl.unwrap_or(cfg.token_ttl),
            quorum: policy.quorum,
            approvers: policy.approvers.iter().map(ToString::to_string).collect(),
            self_approval: policy.self_approval,
            token_uses: policy.token_uses,
            grant_terms: policy.grant_terms(),
        };
        let fresh = Ticket::open(jitgate_store::new_ticket_id(now), draft, now);
        let limits = PendingLimits {
            max_pending: None,
            per_requester: policy.max_pending_per_requester,
            per_source: None,
        };
        let on_create = |t: &Ticket| {
            vec![ticket::AuditDraft::about(
                AuditKind::TicketCreated,
                t,
                None,
                json!({ "method": t.request.method, "path": t.request.path, "host": t.request.host }),
                now,
            )]
        };
        let created = store
            .create_or_join(fresh, &pending.fingerprint, &limits, &on_create)
            .await;
        let (t, created) = match created {
            Ok(r) => r,
            Err(StoreError::Limit { scope, limit }) => {
                let ttl = policy.ticket_ttl.unwrap_or(cfg.ticket_ttl);
                let mut resp = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-pending",
                    "Too many pending approvals",
                    format!(
                        "too many pending tickets for {} on route {} ({scope} limit {limit})",
                        pending.requester.key(),
                        route.name
                    ),
                    Fault::Policy,
                )
                .with("rule", route.name.clone())
                .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(ttl.as_secs().max(1)));
                return resp;
            }
            Err(e) => return store_unavailable(&e, route, None),
        };
        if created {
            tracing::info!(ticket = %t.id, route = %route.name, requester = %t.requester.key(), method = %t.request.method, path = %t.request.path, "held for approval");
        } else {
            tracing::info!(ticket = %t.id, route = %route.name, "identical request joined a pending ticket");
        }
        self.settle(&store, t, pending).await
    }

    /// Answers for a ticket in any state, holding while it is pending.
    async fn settle(
        &self,
        store: &Arc<dyn Store>,
        t: Ticket,
        pending: Pending<'_>,
    ) -> Response<ProxyBody> {
        let route = pending.route;
        let t = if t.status == Status::Pending {
            let cfg = &self.snap.table.config().approvals;
            let hold_for = pending.policy.hold_timeout.unwrap_or(cfg.hold_timeout);
            match self.hold(store, t, hold_for).await {
                HoldEnd::Decided(t) => t,
                HoldEnd::StillPending(t) => return still_pending(&t, route),
                HoldEnd::ShuttingDown(id) => {
                    let resp = Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting-down",
                        "Gateway shutting down",
                        format!("this replica is shutting down; resume ticket {id} with Jit-Ticket on another"),
                        Fault::Internal,
                    )
                    .with("ticket", id.to_string())
                    .with("rule", route.name.clone())
                    .into_response();
                    return with_location(with_ticket(resp, &id), &id);
                }
                HoldEnd::Store(e, id) => return store_unavailable(&e, route, Some(&id)),
            }
        } else {
            t
        };
        match t.status {
            Status::Approved if t.mode == Mode::Access => {
                self.release_on_grant(store, &t, pending).await
            }
            Status::Approved => self.redeem(store, t.id, pending).await,
            Status::Pending => still_pending(&t, route),
            _ => refusal(&t, route),
        }
    }

    /// Waits for a decision on `t` until `hold_for` passes. Only the id and expiry are kept
    /// while waiting (thousands of requests may be held at once); the ticket is re-read when
    /// woken.
    async fn hold(&self, store: &Arc<dyn Store>, t: Ticket, hold_for: Duration) -> HoldEnd {
        let engine = self.shared.engine();
        let deadline = tokio::time::Instant::now() + hold_for;
        let mut guard = engine.hold(&t.id);
        let notify = guard.notify();
        let mut shutdown = engine.shutdown_signal();
        let (id, mut expires_at) = (t.id.clone(), t.expires_at);
        let mut current = Some(t);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before reading, so a decision between the read and the wait wakes us.
            notified.as_mut().enable();
            if let Some(t) = current.take() {
                if t.status != Status::Pending {
                    guard.disarm();
                    return HoldEnd::Decided(t);
                }
                expires_at = t.expires_at;
                let now = jitgate_store::now();
                if now >= expires_at {
                    if let Some(expired) = engine.expire_if_due(&t).await {
                        guard.disarm();
                        return HoldEnd::Decided(expired);
                    }
                }
            }
            let now = jitgate_store::now();
            let until_expiry = Duration::from_millis(expires_at.0.saturating_sub(now.0));
            let wake = deadline.min(tokio::time::Instant::now() + until_expiry);
            let stopping = tokio::select! {
                () = &mut notified => false,
                () = tokio::time::sleep_until(wake) => false,
                _ = shutdown.wait_for(|s| *s) => true,
            };
            if stopping {
                guard.disarm();
                return HoldEnd::ShuttingDown(id);
            }
            if tokio::time::Instant::now() >= deadline {
                guard.disarm();
                return match store.get(&id).await {
                    Ok(Some(t)) if t.status != Status::Pending => HoldEnd::Decided(t),
                    Ok(Some(t)) => HoldEnd::StillPending(t),
                    Ok(None) => HoldEnd::Store(StoreError::NotFound, id),
                    Err(e) => HoldEnd::Store(e, id),
                };
            }
            current = match store.get(&id).await {
                Ok(Some(t)) => Some(t),
                Ok(None) => {
                    guard.disarm();
                    return HoldEnd::Store(StoreError::NotFound, id);
                }
                Err(e) => {
                    guard.disarm();
                    return HoldEnd::Store(e, id);
                }
            };
        }
    }

    /// `Jit-Approval`: a token we signed for exactly this request redeems one use.
    async fn redeem_token(
        &self,
        store: &Arc<dyn Store>,
        token: &str,
        pending: Pending<'_>,
    ) -> Response<ProxyBody> {
        let route = pending.route;
        let engine = self.shared.engine();
        let now_secs = jitgate_store::now().as_millis() / 1000;
        let claims = match engine
            .signer()
            .verify(token, &pending.fingerprint, now_secs)
        {
            Ok(c) => c,
            Err(e) => return mismatch(route, &e.to_string()),
        };
        if claims.route != route.name || claims.sub != pending.requester.key() {
            return mismatch(
                route,
                "the approval token was issued for another route or requester",
            );
        }
        let Ok(id) = TicketId::parse(&claims.jti) else {
            return mismatch(route, "the approval token names no ticket");
        };
        self.redeem(store, id, pending).await
    }

    /// Releases an approved request once: re-checks the rules in force now, redeems one use
    /// atomically in the store, and forwards with the approval token.
    async fn redeem(
        &self,
        store: &Arc<dyn Store>,
        id: TicketId,
        pending: Pending<'_>,
    ) -> Response<ProxyBody> {
        let Pending {
            decision,
            route,
            parts,
            body,
            requester,
            fingerprint,
            ..
        } = pending;
        let engine = self.shared.engine();
        // Re-checked against the table in force now, unless it is still the request's own.
        let current = self.shared.snapshot();
        let decision = if Arc::ptr_eq(&current, self.snap) {
            decision
        } else {
            match proxy::decide(
                &current,
                self.conn,
                &parts.method,
                &parts.uri,
                &parts.headers,
                None,
            ) {
                Ok(d) => d,
                Err(p) => return p.into_response(),
            }
        };
        let Some(now_route) = current.table.routes().get(decision.route) else {
            return proxy::internal_error("matched route vanished");
        };
        if now_route.action == Action::Deny && now_route.enforce {
            tracing::info!(ticket = %id, route = %now_route.name, "approved, but the rules now deny this request");
            return proxy::deny_response(now_route);
        }
        let approve_now = now_route.action == Action::Approve && now_route.enforce;
        if approve_now
            && (now_route.name != route.name || now_route.definition_hash != route.definition_hash)
        {
            return mismatch(
                route,
                &format!(
                    "route {} was changed after this request was approved; ask again",
                    route.name
                ),
            );
        }
        let now = jitgate_store::now();
        let release = jitgate_store::new_release_id(now);
        // Spending the use and recording `ticket.executed` are one store operation.
        let executed = |_: &Ticket, t: &Ticket| {
            vec![ticket::AuditDraft::about(
                AuditKind::TicketExecuted,
                t,
                None,
                json!({ "release": release, "use": t.redeemed }),
                now,
            )]
        };
        let t = match store
            .transition(&id, &|t| ticket::execute(t, now, &release), &executed)
            .await
        {
            Ok(t) => t,
            Err(StoreError::Transition(e)) => return redeem_refused(&e, route, &id),
            Err(StoreError::NotFound) => return mismatch(route, "unknown ticket"),
            Err(e) => return store_unavailable(&e, route, Some(&id)),
        };
        if !t.belongs_to(&route.name, &requester) || t.fingerprint != fingerprint {
            // Only reachable with a token of ours for a ticket it does not describe.
            tracing::error!(ticket = %id, "redeemed ticket does not match the request");
            return mismatch(route, "the ticket was opened for a different request");
        }
        let token = engine
            .approval_token(&t)
            .and_then(|tok| HeaderValue::from_str(&tok).ok());
        let Some(upstream) = current
            .route_upstreams
            .get(decision.route)
            .and_then(Option::as_ref)
        else {
            return proxy::internal_error("route has no upstream");
        };
        tracing::info!(ticket = %id, route = %route.name, "approved request released");
        let hop = Hop {
            conn: self.conn,
            trusted_peer: self.trusted_peer,
            decision,
            client_upgrade: None,
            approval: token,
        };
        proxy::forward(upstream, hop, parts, ProxyBody::full(body)).await
    }

    /// An approved `access` ticket: the store wrote its grant with the approval (one atomic
    /// operation, so it exists once the ticket says `APPROVED`); the held request is its
    /// first use.
    async fn release_on_grant(
        &self,
        store: &Arc<dyn Store>,
        t: &Ticket,
        pending: Pending<'_>,
    ) -> Response<ProxyBody> {
        for _ in 0..50 {
            match self.use_grant(store, &pending).await {
                Ok(Some(grant)) => return self.forward_granted(&grant, pending).await,
                Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(resp) => return resp,
            }
        }
        mismatch(
            pending.route,
            &format!("ticket {} was approved but no usable grant was found", t.id),
        )
    }

    /// `access` routes: uses one of this requester's active grants on the route, if any.
    async fn use_grant(
        &self,
        store: &Arc<dyn Store>,
        pending: &Pending<'_>,
    ) -> Result<Option<ticket::Grant>, Response<ProxyBody>> {
        let route = pending.route;
        let now = jitgate_store::now();
        let grants = store
            .grants_for(&route.name, &pending.requester.key(), now)
            .await
            .map_err(|e| store_unavailable(&e, route, None))?;
        let route_hash = ticket::hex(&route.definition_hash);
        let used = |_: &ticket::Grant, g: &ticket::Grant| {
            vec![ticket::AuditDraft {
                at: now,
                kind: AuditKind::GrantUsed,
                ticket: g.ticket.clone(),
                actor: None,
                requester: Some(g.requester.key().to_string()),
                detail: json!({ "grant": g.id.to_string(), "uses": g.uses }),
            }]
        };
        for g in grants.iter().filter(|g| g.route_hash == route_hash) {
            if let Ok(used) = store
                .transition_grant(&g.id, &|g| ticket::use_grant(g, now), &used)
                .await
            {
                return Ok(Some(used));
            }
        }
        Ok(None)
    }

    /// Forwards a request that passed on `grant`.
    async fn forward_granted(
        &self,
        grant: &ticket::Grant,
        pending: Pending<'_>,
    ) -> Response<ProxyBody> {
        tracing::info!(grant = %grant.id, route = %pending.route.name, "request passed on an access grant");
        let Some(upstream) = self
            .snap
            .route_upstreams
            .get(pending.decision.route)
            .and_then(Option::as_ref)
        else {
            return proxy::internal_error("route has no upstream");
        };
        let hop = Hop {
            conn: self.conn,
            trusted_peer: self.trusted_peer,
            decision: pending.decision,
            client_upgrade: None,
            approval: None,
        };
        proxy::forward(upstream, hop, pending.parts, ProxyBody::full(pending.body)).await
    }
}

/// What approvers see: canonical request line, redacted headers, body hash and preview.
fn request_snapshot(facts: Facts, headers: &http::HeaderMap, body: &[u8]) -> RequestSnapshot {
    let shown = headers
        .iter()
        .filter(|(n, _)| *n != header::HOST && *n != JIT_REASON)
        .take(MAX_TICKET_HEADERS)
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("[binary]")));
    let target = if facts.query.is_empty() {
        facts.path.clone()
    } else {
        format!("{}?{}", facts.path, facts.query)
    };
    RequestSnapshot {
        method: facts.method,
        host: facts.host,
        path: facts.path,
        query: facts.query,
        target,
        headers: ticket::redact_headers(shown, &[]),
        headers_sha256: ticket::headers_digest([]),
        body_sha256: ticket::sha256_hex(body),
        body_preview: ticket::body_preview(body, PREVIEW_CAP),
    }
}

/// Buffers a held body, refusing more than `limit` bytes (413) and a body that stalls.
async fn read_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large to hold",
            format!("requests held for approval may carry at most {limit} bytes (max_held_body)"),
            Fault::Downstream,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-timeout",
                    "Request body stalled",
                    format!("no request body data for {idle:?}"),
                    Fault::Downstream,
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Problem::bad_request(format!(
                    "the request body could not be read: {e}"
                )))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

// === answers ===

fn policy_problem(
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    route: &Route,
) -> Response<ProxyBody> {
    Problem::new(status, slug, title, detail, Fault::Policy)
        .with("rule", route.name.clone())
        .into_response()
}

fn unauthorized(detail: &str, route: &Route) -> Response<ProxyBody> {
    Problem::unauthenticated(detail)
        .with("rule", route.name.clone())
        .into_response()
}

fn mismatch(route: &Route, detail: &str) -> Response<ProxyBody> {
    tracing::info!(route = %route.name, "approval refused: {detail}");
    policy_problem(
        StatusCode::FORBIDDEN,
        "approval-mismatch",
        "No valid approval for this request",
        detail.to_string(),
        route,
    )
}

fn store_unavailable(e: &StoreError, route: &Route, id: Option<&TicketId>) -> Response<ProxyBody> {
    tracing::warn!(route = %route.name, "approve route refused, store unavailable: {e}");
    let mut p = Problem::store_unavailable(format!(
        "route {} requires approval and the approval store cannot be reached; nothing was forwarded",
        route.name
    ))
    .with("rule", route.name.clone());
    if let Some(id) = id {
        p = p.with("ticket", id.to_string());
    }
    let mut resp = p.into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// Adds `Jit-Ticket: <id>`.
fn with_ticket(mut resp: Response<ProxyBody>, id: &TicketId) -> Response<ProxyBody> {
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(JIT_TICKET, v);
    }
    resp
}

/// Adds `Location` of the requester's view of the ticket.
fn with_location(mut resp: Response<ProxyBody>, id: &TicketId) -> Response<ProxyBody> {
    if let Ok(v) = HeaderValue::from_str(&format!("{TICKET_VIEW}{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// 202: still pending at `hold_timeout`.
fn still_pending(t: &Ticket, route: &Route) -> Response<ProxyBody> {
    let resp = Problem::new(
        StatusCode::ACCEPTED,
        "approval-pending",
        "Approval pending",
        format!(
            "route {} requires approval; ticket {} is still pending. Re-send the same request with Jit-Ticket: {} (or the approval token in Jit-Approval) once approved",
            route.name, t.id, t.id
        ),
        Fault::Policy,
    )
    .with("ticket", t.id.to_string())
    .with("rule", route.name.clone())
    .with("expiresAt", t.expires_at.to_rfc3339())
    .into_response();
    with_location(with_ticket(resp, &t.id), &t.id)
}

/// The answer for a ticket that ended without release: denied, expired, cancelled, used.
fn refusal(t: &Ticket, route: &Route) -> Response<ProxyBody> {
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
    let resp = match &route.error {
        Some(template) => proxy::render_error(template, t.id.as_str(), &reason, &route.name),
        None => Problem::new(
            StatusCode::FORBIDDEN,
            slug,
            title,
            format!("ticket {} on route {}: {reason}", t.id, route.name),
            Fault::Policy,
        )
        .with("ticket", t.id.to_string())
        .with("rule", route.name.clone())
        .with("reason", reason)
        .into_response(),
    };
    with_ticket(resp, &t.id)
}

fn redeem_refused(e: &TransitionError, route: &Route, id: &TicketId) -> Response<ProxyBody> {
    let detail = match e {
        TransitionError::NotApproved {
            status: Status::Executed,
        } => "this approval has already been redeemed".to_string(),
        other => other.to_string(),
    };
    let resp = Problem::new(
        StatusCode::FORBIDDEN,
        "approval-used",
        "No valid approval for this request",
        format!("ticket {id}: {detail}"),
        Fault::Policy,
    )
    .with("ticket", id.to_string())
    .with("rule", route.name.clone())
    .into_response();
    with_ticket(resp, id)
}

// === the gateway's own data-plane endpoints ===

/// `GET /.well-known/jitgate/tickets/<id>` and `GET /.well-known/jwks.json`; `None` for any
/// other path (which is routed like every request).
pub async fn well_known(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    trusted_peer: bool,
    req: &Request<Incoming>,
) -> Option<Response<ProxyBody>> {
    let path = req.uri().path();
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    if path == JWKS {
        if !is_get {
            return Some(method_not_allowed(path));
        }
        return Some(json_response(
            StatusCode::OK,
            &shared.engine().signer().jwks(),
        ));
    }
    let raw = path.strip_prefix(TICKET_VIEW)?;
    if !is_get {
        return Some(method_not_allowed(path));
    }
    Some(ticket_view(shared, snap, trusted_peer, req, raw).await)
}

fn method_not_allowed(path: &str) -> Response<ProxyBody> {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("only GET is supported on {path}"),
        Fault::Downstream,
    )
    .into_response()
}

async fn ticket_view(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    trusted_peer: bool,
    req: &Request<Incoming>,
    raw: &str,
) -> Response<ProxyBody> {
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
    let identity = match snap.auth.authenticate(req.headers(), trusted_peer) {
        Ok(id) => id,
        Err(_) => return Problem::unauthenticated("the bearer token is not valid").into_response(),
    };
    let store_down = |e: &StoreError| Problem::store_unavailable(e.to_string()).into_response();
    let Ok(id) = TicketId::parse(raw) else {
        return not_found();
    };
    let engine = shared.engine();
    let store = match engine.store() {
        Ok(s) => s,
        Err(e) => return store_down(&e),
    };
    let t = match store.get(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found(),
        Err(e) => return store_down(&e),
    };
    // Only the requester sees it (anonymous tickets: whoever holds the unguessable id).
    if t.requester.key() != identity.subject() {
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
