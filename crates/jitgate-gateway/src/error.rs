//! Every answer the data plane gives on its own behalf: one typed [`GatewayError`], mapped in
//! one place to an RFC 9457 problem+json body, a route's `[routes.error]` template, or, for
//! gRPC clients, a trailers-only gRPC status (as Envoy gives its local replies), so a gRPC
//! client sees a status it can act on and the ticket to retry with.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use jitgate_rules::config::render_error_body;
use jitgate_rules::route::{ErrorTemplate, Route};
use jitgate_rules::ticket::{TicketId, Timestamp};

use crate::body::{ClientBodyFault, ProxyBody};
use crate::grpc;
use crate::problem::{Fault, Problem};

/// Carries a ticket id (answers, and resumed requests).
pub const JIT_TICKET: HeaderName = HeaderName::from_static("jit-ticket");
/// The requester's view of a ticket: `GET /.well-known/jitgate/tickets/<id>`.
pub const TICKET_VIEW: &str = "/.well-known/jitgate/tickets/";

/// Why the gateway answered a request itself.
#[derive(Debug, Clone)]
pub enum GatewayError {
    /// 400: a target, header or body the gateway refuses to interpret.
    Malformed(String),
    /// 404: no route matches (fail closed).
    NoRoute {
        /// The wire method.
        method: String,
        /// The canonical path.
        path: String,
    },
    /// 403: an enforcing deny route matched.
    Denied,
    /// 401: missing or invalid requester credentials.
    Unauthenticated(String),
    /// 413: a body that had to be read is larger than `max_held_body`.
    BodyTooLarge {
        /// `max_held_body`, bytes.
        limit: u64,
    },
    /// 408: the client stopped sending a body the gateway was reading.
    BodyStalled(Duration),
    /// 408 or 400: forwarding failed because the client's body did (stalled, malformed or cut
    /// short): the client's fault, never reported as the upstream's.
    ClientBody(ClientBodyFault),
    /// 403: a protocol upgrade on an approve route (a tunnel cannot be held).
    UpgradeNotHoldable,
    /// 400: the grant duration asked for (`Jit-Duration`) is not one the route grants.
    DurationRefused(String),
    /// 429: too many pending tickets.
    TooManyPending {
        /// Which limit, for the client.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// 202: the ticket was still pending at `hold_timeout`.
    Pending {
        /// The ticket to resume with.
        ticket: TicketId,
        /// When it can no longer be decided.
        expires_at: Timestamp,
    },
    /// 403: the ticket ended without a release (denied, expired, cancelled, used).
    Refused {
        /// The ticket.
        ticket: TicketId,
        /// `approval-denied`, `approval-expired`, ...
        slug: &'static str,
        /// Human title.
        title: &'static str,
        /// The approver's reason, or why it ended.
        reason: String,
    },
    /// 403: the ticket or token given does not fit this request.
    Mismatch(String),
    /// 403: `Jit-Break-Glass` without a reason, from someone not in the route's break-glass
    /// groups, or on a route without break-glass.
    BreakGlassRefused(String),
    /// 503: the approval store cannot be reached; nothing was forwarded.
    StoreUnavailable {
        /// The ticket, if one is known.
        ticket: Option<TicketId>,
    },
    /// 503: this replica is shutting down; resume the ticket elsewhere.
    ShuttingDown {
        /// The ticket to resume with.
        ticket: TicketId,
    },
    /// 502: the upstream could not be reached or broke the exchange.
    UpstreamUnavailable {
        /// The upstream's name.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// 504: the upstream did not connect or answer in time.
    UpstreamTimeout {
        /// The upstream's name.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// 405 on the gateway's own endpoints.
    MethodNotAllowed {
        /// The methods the resource supports (the `Allow` header).
        allow: &'static str,
        /// The path.
        path: String,
    },
    /// 500: the gateway itself failed.
    Internal(String),
}

impl GatewayError {
    /// The HTTP status of the problem+json answer.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Malformed(_) | GatewayError::DurationRefused(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::Denied
            | GatewayError::UpgradeNotHoldable
            | GatewayError::Refused { .. }
            | GatewayError::Mismatch(_)
            | GatewayError::BreakGlassRefused(_) => StatusCode::FORBIDDEN,
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyStalled(_)
            | GatewayError::ClientBody(ClientBodyFault::Stalled(_)) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::ClientBody(ClientBodyFault::Broken(_)) => StatusCode::BAD_REQUEST,
            GatewayError::TooManyPending { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Pending { .. } => StatusCode::ACCEPTED,
            GatewayError::StoreUnavailable { .. } | GatewayError::ShuttingDown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who failed.
    pub fn fault(&self) -> Fault {
        match self {
            GatewayError::Malformed(_)
            | GatewayError::Unauthenticated(_)
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BodyStalled(_)
            | GatewayError::ClientBody(_)
            | GatewayError::MethodNotAllowed { .. } => Fault::Downstream,
            GatewayError::UpstreamUnavailable { .. } | GatewayError::UpstreamTimeout { .. } => {
                Fault::Upstream
            }
            GatewayError::StoreUnavailable { .. }
            | GatewayError::ShuttingDown { .. }
            | GatewayError::Internal(_) => Fault::Internal,
            _ => Fault::Policy,
        }
    }

    fn grpc_status(&self) -> u8 {
        match self {
            GatewayError::Malformed(_) | GatewayError::DurationRefused(_) => grpc::INVALID_ARGUMENT,
            GatewayError::NoRoute { .. } | GatewayError::MethodNotAllowed { .. } => {
                grpc::UNIMPLEMENTED
            }
            GatewayError::Denied
            | GatewayError::UpgradeNotHoldable
            | GatewayError::Refused { .. }
            | GatewayError::Mismatch(_)
            | GatewayError::BreakGlassRefused(_) => grpc::PERMISSION_DENIED,
            GatewayError::Unauthenticated(_) => grpc::UNAUTHENTICATED,
            GatewayError::BodyTooLarge { .. } | GatewayError::TooManyPending { .. } => {
                grpc::RESOURCE_EXHAUSTED
            }
            GatewayError::BodyStalled(_)
            | GatewayError::ClientBody(ClientBodyFault::Stalled(_)) => grpc::DEADLINE_EXCEEDED,
            GatewayError::ClientBody(ClientBodyFault::Broken(_)) => grpc::INVALID_ARGUMENT,
            // Retrying will not help until an approver decides: the ticket in `jit-ticket`
            // says what to wait for.
            GatewayError::Pending { .. } => grpc::FAILED_PRECONDITION,
            GatewayError::StoreUnavailable { .. }
            | GatewayError::ShuttingDown { .. }
            | GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. } => grpc::UNAVAILABLE,
            GatewayError::Internal(_) => grpc::INTERNAL,
        }
    }

    /// The ticket the answer names, if any.
    pub fn ticket(&self) -> Option<&TicketId> {
        match self {
            GatewayError::Pending { ticket, .. }
            | GatewayError::Refused { ticket, .. }
            | GatewayError::ShuttingDown { ticket } => Some(ticket),
            GatewayError::StoreUnavailable { ticket } => ticket.as_ref(),
            _ => None,
        }
    }

    /// The problem details, `rule` naming `route` when there is one.
    pub fn problem(&self, route: Option<&Route>) -> Problem {
        let rule = route.map_or("?", |r| r.name.as_str());
        let (slug, title, detail): (&'static str, &'static str, String) = match self {
            GatewayError::Malformed(d) => (
                "malformed-request",
                "Malformed or ambiguous request",
                d.clone(),
            ),
            GatewayError::DurationRefused(d) => (
                "duration-not-allowed",
                "Grant duration not allowed",
                format!("route {rule}: {d}"),
            ),
            GatewayError::NoRoute { method, path } => (
                "no-route",
                "No route matches this request",
                format!("no route in the rule table matches {method} {path}"),
            ),
            GatewayError::Denied => (
                "denied",
                "Denied by rule",
                format!(
                    "route {rule} denies this request",
                ),
            ),
            GatewayError::Unauthenticated(d) => {
                ("unauthenticated", "Authentication required", d.clone())
            }
            GatewayError::BodyTooLarge { limit } => (
                "body-too-large",
                "Body too large to hold",
                format!("requests the gateway must read may carry at most {limit} bytes (max_held_body)"),
            ),
            GatewayError::BodyStalled(idle) => (
                "body-timeout",
                "Request body stalled",
                format!("no request body data for {idle:?}"),
            ),
            GatewayError::ClientBody(fault) => {
                let detail = format!("{fault}; the request was not forwarded in full");
                match fault {
                    ClientBodyFault::Stalled(_) => {
                        ("body-timeout", "Request body stalled", detail)
                    }
                    ClientBodyFault::Broken(_) => {
                        ("malformed-request", "Malformed or ambiguous request", detail)
                    }
                }
            }
            GatewayError::UpgradeNotHoldable => (
                "upgrade-not-holdable",
                "Upgrade needs approval",
                format!(
                    "route {rule} requires approval, and protocol upgrades cannot be held",
                ),
            ),
            GatewayError::TooManyPending { detail, .. } => {
                ("too-many-pending", "Too many pending approvals", detail.clone())
            }
            GatewayError::Pending { ticket, .. } => (
                "approval-pending",
                "Approval pending",
                format!(
                    "route {rule} requires approval; ticket {ticket} is still pending. Re-send the same request with Jit-Ticket: {ticket} (or the approval token in Jit-Approval) once approved",
                ),
            ),
            GatewayError::Refused {
                ticket,
                slug,
                title,
                reason,
            } => (
                slug,
                title,
                format!(
                    "ticket {ticket} on route {rule}: {reason}",
                ),
            ),
            GatewayError::Mismatch(d) => (
                "approval-mismatch",
                "No valid approval for this request",
                d.clone(),
            ),
            GatewayError::BreakGlassRefused(d) => (
                "break-glass-refused",
                "Break-glass refused",
                format!("route {rule}: {d}; the attempt was recorded"),
            ),
            GatewayError::StoreUnavailable { .. } => (
                "store-unavailable",
                "Approval store unavailable",
                format!(
                    "route {rule} requires approval and the approval store cannot be reached; nothing was forwarded",
                ),
            ),
            GatewayError::ShuttingDown { ticket } => (
                "shutting-down",
                "Gateway shutting down",
                format!("this replica is shutting down; resume ticket {ticket} with Jit-Ticket on another"),
            ),
            GatewayError::UpstreamUnavailable { detail, .. } => {
                ("upstream-unavailable", "Upstream unavailable", detail.clone())
            }
            GatewayError::UpstreamTimeout { detail, .. } => {
                ("upstream-timeout", "Upstream timed out", detail.clone())
            }
            GatewayError::MethodNotAllowed { allow, path } => (
                "method-not-allowed",
                "Method not allowed",
                format!("only {allow} is supported on {path}"),
            ),
            GatewayError::Internal(_) => (
                "internal",
                "Internal error",
                "the gateway failed to handle this request".to_string(),
            ),
        };
        let mut p = Problem::new(self.status(), slug, title, detail, self.fault());
        if let Some(route) = route {
            p = p.with("rule", route.name.clone());
        }
        if let Some(ticket) = self.ticket() {
            p = p.with("ticket", ticket.to_string());
        }
        match self {
            GatewayError::UpstreamUnavailable { upstream, .. }
            | GatewayError::UpstreamTimeout { upstream, .. } => {
                p = p.with("upstream", upstream.clone());
            }
            GatewayError::Refused { reason, .. } => p = p.with("reason", reason.clone()),
            GatewayError::Pending { expires_at, .. } => {
                p = p.with("expiresAt", expires_at.to_rfc3339())
            }
            _ => {}
        }
        p
    }

    /// The route template this answer uses, if the route has one: enforcing deny routes and
    /// refused approvals answer with `[routes.error]`; everything else with problem+json.
    fn template<'r>(&self, route: Option<&'r Route>) -> Option<&'r ErrorTemplate> {
        match self {
            GatewayError::Denied | GatewayError::Refused { .. } => route?.error.as_ref(),
            _ => None,
        }
    }

    /// The answer: gRPC trailers-only for gRPC clients, else the route's template or
    /// problem+json; with `Jit-Ticket`, `Location`, `Retry-After` and `Allow` where they apply.
    pub fn respond(self, route: Option<&Route>, grpc: bool) -> Response<ProxyBody> {
        if matches!(self, GatewayError::Internal(_)) {
            tracing::error!("internal error: {self:?}");
        }
        let mut resp = if grpc {
            grpc::answer(self.grpc_status(), &self.problem(route).detail)
        } else if let Some(t) = self.template(route) {
            let reason = match &self {
                GatewayError::Refused { reason, .. } => reason.as_str(),
                _ => "",
            };
            let ticket = self.ticket().map_or("", TicketId::as_str);
            let name = route.map_or("", |r| r.name.as_str());
            render_template(t, ticket, reason, name)
        } else {
            self.problem(route).into_response()
        };
        let h = resp.headers_mut();
        if let Some(ticket) = self.ticket() {
            insert(h, JIT_TICKET, ticket.as_str());
            if matches!(
                self,
                GatewayError::Pending { .. } | GatewayError::ShuttingDown { .. }
            ) {
                insert(h, header::LOCATION, &format!("{TICKET_VIEW}{ticket}"));
            }
        }
        match &self {
            GatewayError::TooManyPending { retry_after, .. } => {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            GatewayError::StoreUnavailable { .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            GatewayError::MethodNotAllowed { allow, .. } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

fn insert(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Renders a route's custom error (placeholders escaped for its content type).
fn render_template(
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
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests;
