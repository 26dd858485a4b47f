//! The admin plane's OpenAPI 3.1 document, generated from the contract types
//! ([`crate::contract`]) and the operations documented below, served at `/v1/openapi.json`.
//!
//! Each operation is a thin documented function (the handlers live in [`crate::admin`]);
//! `admin::tests` checks that the document and [`crate::admin::ENDPOINTS`] list the same
//! operations. Dump it with `jitgate openapi`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use jitgate_rules::ticket::{AuditKind, Grant, Status, Ticket, Timestamp};

use crate::contract::{
    AccessRequest, ApproveRequest, AuditPage, DecideRequest, DecideResult, DenyRequest, EventBody,
    GrantList, Health, Jwks, Problem, Ready, ReloadResult, RevokeRequest, Rules, TicketList,
};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jitgate admin API",
        description = r#"The admin plane of jitgate, a reverse-proxy gateway with inline just-in-time approval. It is served only on the admin listener (`server.admin_listen`), never on the data port.

## Authentication

Every call except `GET /healthz`, `GET /readyz`, `GET /metrics` and `GET /.well-known/jwks.json` needs `Authorization: Bearer <credential>`, where the credential is either a static API token configured for the admin plane (checked first, in constant time) or a JWT accepted by the configured JWT validator. A missing, malformed or invalid credential is answered with `401` problem `unauthenticated` and `WWW-Authenticate: Bearer`.

## Operators

`GET /v1/admin/rules`, `GET` and `PUT /v1/admin/rules/source`, `POST /v1/admin/reload` and `GET /v1/audit` need an operator: a caller matched by an entry of `[admin] operators` (`user:NAME` or `group:NAME`). Other callers get `403` problem `not-an-operator`.

## Ticket visibility

Operators see every ticket. Any other caller sees only tickets whose `approvers` list names them (`user:NAME`, or `group:NAME` for one of their groups) and tickets they requested themselves. A ticket the caller may not see is indistinguishable from one that does not exist (`404` problem `unknown-ticket`). Being able to see a ticket does not mean being able to decide it: deciding needs to be a listed approver, and deciding one's own ticket needs the route's `self_approval`.

## Errors

Errors are RFC 9457 problem details (`application/problem+json`) whose `type` is `urn:jitgate:problem:<slug>`. JSON answers carry `Cache-Control: no-store`.

## Methods

`HEAD` is also accepted on `/healthz`, `/readyz`, `/metrics`, `/.well-known/jwks.json` and `/v1/openapi.json`. Any other method on a served path answers `405` problem `method-not-allowed` (after authentication, for the paths that need it); an unknown path answers `404` problem `not-found` to authenticated callers."#,
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(ops::health, ops::ready, ops::metrics, ops::jwks, ops::openapi, ops::list_tickets, ops::get_ticket, ops::approve_ticket, ops::deny_ticket, ops::acknowledge_ticket, ops::decide_tickets, ops::read_audit, ops::get_rules, ops::get_rules_source, ops::put_rules_source, ops::reload_rules, ops::create_access_request, ops::list_grants, ops::revoke_grant, ops::stream_events, ops::slack_actions),
    components(schemas(EventBody)),
    tags((name = "health", description = r#"Liveness, readiness, metrics and published keys; no authentication."#), (name = "tickets", description = r#"Approval tickets and decisions."#), (name = "grants", description = r#"Access grants: listing and revocation."#), (name = "audit", description = r#"The hash-chained audit log (operators only)."#), (name = "admin", description = r#"The rule table (operators only)."#), (name = "meta", description = r#"This document."#), (name = "notifications", description = r#"Callbacks from chat tools."#)),
    security(("bearer" = [])),
    modifiers(&Bearer)
)]
pub struct AdminApi;

/// The document as JSON.
pub fn document() -> String {
    AdminApi::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The `bearer` security scheme every authenticated operation names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description =
            Some("A static admin API token or a JWT accepted by the configured validator.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The form Slack posts to `POST /v1/notify/slack/actions`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct SlackForm {
    /// Slack's `block_actions` payload, JSON.
    payload: String,
}

/// The operations: documentation only.
#[allow(dead_code)]
mod ops {
    use super::*;

    #[utoipa::path(
        get,
        path = "/healthz",
        operation_id = "health",
        tag = "health",
        summary = r#"Liveness"#,
        description = r#"Always `200` while the process serves the admin plane. No authentication."#,
        responses(
            (status = 200, description = r#"The gateway is alive."#, body = Health, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"status": "ok"}))
        ),
        security(())
    )]
    fn health() {}

    #[utoipa::path(
        get,
        path = "/metrics",
        operation_id = "metrics",
        tag = "health",
        summary = r#"Metrics"#,
        description = r#"Counters, gauges and histograms of this replica in the OpenMetrics text format, which Prometheus scrapes: `jitgate_requests_total{route,action,status}`, `jitgate_request_duration_seconds{action}`, `jitgate_held_requests`, `jitgate_tickets_opened_total{route}`, `jitgate_tickets_decided_total{route,outcome}`, `jitgate_decision_seconds`, `jitgate_release_seconds`, `jitgate_upstream_duration_seconds{upstream}`, `jitgate_reloads_total{result}`, `jitgate_store_errors_total`, `jitgate_notifications_total{channel,result}`. No authentication: like the health checks, it is for the platform's scraper on the internal admin plane."#,
        responses(
            (status = 200, description = r#"The exposition."#, body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")
        ),
        security(())
    )]
    fn metrics() {}

    #[utoipa::path(
        get,
        path = "/readyz",
        operation_id = "ready",
        tag = "health",
        summary = r#"Readiness"#,
        description = r#"Always `200` once serving. Readiness follows the data plane, which serves allow routes without the approval store, so a store outage is reported in `store.status` rather than turned into "not ready" (approve routes fail closed on their own). The store is pinged with a 2 second timeout. No authentication."#,
        responses(
            (status = 200, description = r#"Ready; the store's health is reported, not judged."#, body = Ready, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"status": "ready", "version": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b", "store": {"kind": "redis", "status": "ok"}, "held": 2}))
        ),
        security(())
    )]
    fn ready() {}

    #[utoipa::path(
        get,
        path = "/.well-known/jwks.json",
        operation_id = "jwks",
        tag = "health",
        summary = r#"Approval-token signing key"#,
        description = r#"The JWKS (RFC 7517, OKP key per RFC 8037) whose Ed25519 key verifies the approval tokens the gateway forwards upstream in `Jit-Approval`. No authentication."#,
        responses(
            (status = 200, description = r#"The signing key set."#, body = Jwks, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)))
        ),
        security(())
    )]
    fn jwks() {}

    #[utoipa::path(
        get,
        path = "/v1/openapi.json",
        operation_id = "openapi",
        tag = "meta",
        summary = r#"This OpenAPI document"#,
        description = r#"Any authenticated caller may read it."#,
        responses(
            (status = 200, description = r#"The OpenAPI 3.1 document describing this plane."#, body = Object, content_type = "application/json"),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"}))
        )
    )]
    fn openapi() {}

    #[utoipa::path(
        get,
        path = "/v1/tickets",
        operation_id = "listTickets",
        tag = "tickets",
        summary = r#"List visible tickets"#,
        description = r#"Tickets the caller may see (all for operators), newest first; with `status=PENDING` they come from the pending index, soonest-expiring first. For non-operators the store is read for up to four times `limit` tickets and filtered by visibility, so a page may hold fewer than `limit` tickets even when more exist. Unknown query parameters are refused with `400`."#,
        params(
            ("status" = Option<Status>, Query, description = r#"Only tickets in this status (case-sensitive)."#),
            ("limit" = Option<usize>, Query, description = r#"Most tickets returned."#)
        ),
        responses(
            (status = 200, description = r#"The visible tickets."#, body = TicketList, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:store-unavailable", "title": "Approval store unavailable", "status": 503, "detail": "store unavailable: connection refused"}))
        )
    )]
    fn list_tickets() {}

    #[utoipa::path(
        get,
        path = "/v1/tickets/{id}",
        operation_id = "getTicket",
        tag = "tickets",
        summary = r#"One ticket"#,
        description = r#"The ticket, if the caller may see it. A `PENDING` ticket past its `expiresAt` is expired (and audited) on read, so it is returned as `EXPIRED`."#,
        params(
            ("id" = String, Path, description = r#"Ticket id (`jit_` + 26-character ULID). A malformed id, an id that does not exist (or is past retention) and a ticket the caller may not see all answer 404 `unknown-ticket`, so ids cannot be probed."#, example = json!("jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T"))
        ),
        responses(
            (status = 200, description = r#"The ticket."#, body = Ticket, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"id": "jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T", "status": "PENDING", "route": "delete-customer", "routeHash": "9f2c000000000000000000000000000000000000000000000000000000000000", "mode": "action", "requester": {"user": "alice", "groups": ["dev"]}, "reason": "INC-1234 cleanup", "request": {"method": "DELETE", "host": "api.internal", "path": "/customers/42", "query": "", "headers": [["content-type", "application/json"], ["authorization", "[redacted]"]], "bodySha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "bodyPreview": ""}, "fingerprint": "5d41000000000000000000000000000000000000000000000000000000000000", "createdAt": "2026-11-22T10:30:00Z", "expiresAt": "2026-11-22T10:45:00Z", "decidedAt": null, "executedAt": null, "approvals": [], "denials": [], "quorum": 1, "approvers": ["group:oncall"], "selfApproval": false, "denyReason": null, "tokenUses": 1, "redeemed": 0, "tokenTtlMs": 300000, "redeemBy": null})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 404, description = r#"No ticket with this id is visible to the caller (problem `unknown-ticket`): malformed id, no such ticket (or past retention), or a ticket the caller may not see."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:unknown-ticket", "title": "Unknown ticket", "status": 404, "detail": "no ticket with this id is visible to you"})),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:store-unavailable", "title": "Approval store unavailable", "status": 503, "detail": "store unavailable: connection refused"}))
        )
    )]
    fn get_ticket() {}

    #[utoipa::path(
        post,
        path = "/v1/tickets/{id}/approve",
        operation_id = "approveTicket",
        tag = "tickets",
        summary = r#"Approve a ticket"#,
        description = r#"Records the caller's approval. The ticket becomes `APPROVED` (with `decidedAt` and `redeemBy` set) once `quorum` distinct approvers have approved; until then it stays `PENDING`. Approving an `access` ticket to quorum also creates a time-bound grant for the requester (audited as `grant.created`). The caller must be able to see the ticket (else `404`), be on its approver list and, for their own ticket, the route must allow self approval (else `403` `not-permitted`); the ticket must be `PENDING`, not past `expiresAt`, and not yet voted on by the caller (else `409`). A decision that runs into expiry records the expiry first. Audited as `ticket.approved`."#,
        params(
            ("id" = String, Path, description = r#"Ticket id (`jit_` + 26-character ULID). A malformed id, an id that does not exist (or is past retention) and a ticket the caller may not see all answer 404 `unknown-ticket`, so ids cannot be probed."#, example = json!("jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T"))
        ),
        request_body(content = ApproveRequest, content_type = "application/json", description = r#"Optional; an empty body is `{}`. Unknown members are refused (`400`). `comment`: Trimmed and cut to at most 2000 bytes (on a UTF-8 boundary); a blank value is treated as absent. At most 64 KiB."#),
        responses(
            (status = 200, description = r#"The ticket after the decision."#, body = Ticket, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller may see the ticket but not decide it (problem `not-permitted`): not on its approver list (`notAnApprover`), or the requester deciding their own ticket on a route without self approval (`selfApproval`). The `error` member says which."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-permitted", "title": "Decision not permitted", "status": 403, "detail": "not an approver for this route", "error": {"error": "notAnApprover"}})),
            (status = 404, description = r#"No ticket with this id is visible to the caller (problem `unknown-ticket`): malformed id, no such ticket (or past retention), or a ticket the caller may not see."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:unknown-ticket", "title": "Unknown ticket", "status": 404, "detail": "no ticket with this id is visible to you"})),
            (status = 409, description = r#"The decision is not possible (problem `conflict`): the ticket is no longer `PENDING` (`notPending`, with its `status`), it expired before the decision (`expired`; the expiry is recorded), or the caller already voted (`alreadyVoted`); the `error` member says which. Also answered, without `error`, when the ticket changed too often concurrently (retry)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:conflict", "title": "Ticket not in a decidable state", "status": 409, "detail": "the ticket is APPROVED, not PENDING", "error": {"error": "notPending", "status": "APPROVED"}})),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:body-too-large", "title": "Body too large", "status": 413, "detail": "admin request bodies are at most 1048576 bytes (length limit exceeded)"})),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:store-unavailable", "title": "Approval store unavailable", "status": 503, "detail": "store unavailable: connection refused"}))
        )
    )]
    fn approve_ticket() {}

    #[utoipa::path(
        post,
        path = "/v1/tickets/{id}/deny",
        operation_id = "denyTicket",
        tag = "tickets",
        summary = r#"Deny a ticket"#,
        description = r#"Denies the ticket: one denial ends it (`DENIED`, `decidedAt` and `denyReason` set; the reason reaches the requester's error body). The same checks as approval apply (`404` invisible, `403` `not-permitted`, `409` not decidable). Audited as `ticket.denied`."#,
        params(
            ("id" = String, Path, description = r#"Ticket id (`jit_` + 26-character ULID). A malformed id, an id that does not exist (or is past retention) and a ticket the caller may not see all answer 404 `unknown-ticket`, so ids cannot be probed."#, example = json!("jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T"))
        ),
        request_body(content = DenyRequest, content_type = "application/json", description = r#"Optional; an empty body is `{}`. Unknown members are refused (`400`). `reason`: Trimmed and cut to at most 2000 bytes (on a UTF-8 boundary); a blank value is treated as absent. At most 64 KiB."#),
        responses(
            (status = 200, description = r#"The ticket after the decision."#, body = Ticket, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller may see the ticket but not decide it (problem `not-permitted`): not on its approver list (`notAnApprover`), or the requester deciding their own ticket on a route without self approval (`selfApproval`). The `error` member says which."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-permitted", "title": "Decision not permitted", "status": 403, "detail": "not an approver for this route", "error": {"error": "notAnApprover"}})),
            (status = 404, description = r#"No ticket with this id is visible to the caller (problem `unknown-ticket`): malformed id, no such ticket (or past retention), or a ticket the caller may not see."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:unknown-ticket", "title": "Unknown ticket", "status": 404, "detail": "no ticket with this id is visible to you"})),
            (status = 409, description = r#"The decision is not possible (problem `conflict`): the ticket is no longer `PENDING` (`notPending`, with its `status`), it expired before the decision (`expired`; the expiry is recorded), or the caller already voted (`alreadyVoted`); the `error` member says which. Also answered, without `error`, when the ticket changed too often concurrently (retry)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:conflict", "title": "Ticket not in a decidable state", "status": 409, "detail": "the ticket is APPROVED, not PENDING", "error": {"error": "notPending", "status": "APPROVED"}})),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:body-too-large", "title": "Body too large", "status": 413, "detail": "admin request bodies are at most 1048576 bytes (length limit exceeded)"})),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:store-unavailable", "title": "Approval store unavailable", "status": 503, "detail": "store unavailable: connection refused"}))
        )
    )]
    fn deny_ticket() {}

    #[utoipa::path(
        post,
        path = "/v1/access-requests",
        operation_id = "createAccessRequest",
        tag = "grants",
        summary = r#"Ask for access ahead"#,
        description = r#"Asks for a grant on an `access` route for the caller (as the user the data plane identifies requesters by), without a held request. Opens a ticket like the one a held request opens: the same pending caps (`429` with `Retry-After`), the same duration rules (one of the route's `durations`, never above `max_duration`, else `400` `duration-not-allowed`), an empty `request`, `reason` shown to approvers, and `ticket.created` audited with `askedAhead`. Approving it to quorum creates the grant, which lets the caller's requests on the route through for its duration and uses. While the caller has an identical request pending (same route, same duration) that ticket is answered (`200`) instead of a new one."#,
        request_body(content = AccessRequest, content_type = "application/json", description = r#"Unknown members are refused (`400`). At most 1 MiB."#),
        responses(
            (status = 201, description = r#"The new ticket, `PENDING`; `Location` names it."#, body = Ticket, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 200, description = r#"The caller's identical pending ticket."#, body = Ticket, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"A body that is not JSON or has unknown members (problem `malformed-request`), a route that is not an enforcing access route (`not-an-access-route`), or a duration the route does not grant (`duration-not-allowed`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#))),
            (status = 404, description = r#"No route with this name in the table in force (problem `unknown-route`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 429, description = r#"Too many pending tickets (problem `too-many-pending`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("Retry-After" = String, description = r#"Seconds until a pending ticket expires."#))),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)))
        )
    )]
    fn create_access_request() {}

    #[utoipa::path(
        post,
        path = "/v1/tickets/{id}/acknowledge",
        operation_id = "acknowledgeTicket",
        tag = "tickets",
        summary = r#"Acknowledge a break-glass ticket"#,
        description = r#"A request that passed by break-glass (`Jit-Break-Glass: <reason>` from a member of the route's break-glass groups) left a ticket in `REVIEW`, with `breakGlass` the reason. One of its approvers acknowledges it afterwards: it becomes `EXECUTED`, with `acknowledged` the approver's vote; audited as `ticket.acknowledged`. The requester may acknowledge their own only where the route allows self approval."#,
        params(
            ("id" = String, Path, description = r#"Ticket id (`jit_` + 26-character ULID). A malformed id, an id that does not exist (or is past retention) and a ticket the caller may not see all answer 404 `unknown-ticket`."#, example = json!("jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T"))
        ),
        request_body(content = ApproveRequest, content_type = "application/json", description = r#"Optional; an empty body is `{}`. `comment` is recorded; `also` is refused (`400`)."#),
        responses(
            (status = 200, description = r#"The ticket, `EXECUTED`."#, body = Ticket, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#))),
            (status = 403, description = r#"Not one of the ticket's approvers, or its requester on a route without self approval (problem `not-permitted`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 404, description = r#"No ticket with this id is visible to the caller (problem `unknown-ticket`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 409, description = r#"The ticket is not in `REVIEW` (problem `conflict`, `error` `notInReview`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)))
        )
    )]
    fn acknowledge_ticket() {}

    #[utoipa::path(
        get,
        path = "/v1/grants",
        operation_id = "listGrants",
        tag = "grants",
        summary = r#"List visible grants"#,
        description = r#"Grants the caller may see: operators all, a requester their own, and the approvers of a route (in the table in force, while it is the route the grant was given on) the grants on it. By default the active ones (not revoked, not expired, uses left), soonest-ending first; with another `state`, up to 10,000 grants the store still keeps (within `retention`) in that state, latest-ending first. Unknown query parameters are refused with `400`."#,
        params(
            ("requester" = Option<String>, Query, description = r#"Only grants of this user."#),
            ("route" = Option<String>, Query, description = r#"Only grants on this route."#),
            ("state" = Option<String>, Query, description = r#"`active` (default), `revoked`, `expired`, `used_up` or `all`."#)
        ),
        responses(
            (status = 200, description = r#"The visible grants."#, body = GrantList, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable or unknown query parameter."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#))),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)))
        )
    )]
    fn list_grants() {}

    #[utoipa::path(
        post,
        path = "/v1/grants/{id}/revoke",
        operation_id = "revokeGrant",
        tag = "grants",
        summary = r#"Revoke a grant"#,
        description = r#"Revokes the grant at once, on every replica: each use of a grant is a compare-and-set on it in the store, which a revoked grant fails, so its next request is held for approval again. Operators, the grant's requester and the approvers of its route (in the table in force) may revoke it. Audited as `grant.revoked` with the caller and the reason, which notifies the channels that want `grant.revoked`."#,
        params(
            ("id" = String, Path, description = r#"Grant id (`grt_` + 26-character ULID). A malformed id, an id that does not exist (or is past retention) and a grant the caller may not see all answer 404 `unknown-grant`."#, example = json!("grt_01JDAE7Y8Z3K4M5N6P7Q8R9S0T"))
        ),
        request_body(content = RevokeRequest, content_type = "application/json", description = r#"Optional; an empty body is `{}`. Unknown members are refused (`400`)."#),
        responses(
            (status = 200, description = r#"The grant, revoked."#, body = Grant, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): a body that is not JSON or has unknown members."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#))),
            (status = 404, description = r#"No grant with this id is visible to the caller (problem `unknown-grant`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 409, description = r#"The grant is already revoked, expired or used up (problem `grant-not-active`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)))
        )
    )]
    fn revoke_grant() {}

    #[utoipa::path(
        post,
        path = "/v1/tickets/decide",
        operation_id = "decideTickets",
        tag = "tickets",
        summary = r#"Decide many tickets"#,
        description = r#"Approves or denies up to 10000 tickets in one call, in the order given, each exactly as `POST /v1/tickets/{id}/approve` or `/deny` would. The call answers `200` whenever the body is acceptable; each id gets its own result with the HTTP status its single decision would have had, and either the ticket (`200`) or the problem (`403`, `404`, `409`, `503`). `comment` is used for `approve` and `reason` for `deny`; the other is ignored."#,
        request_body(content = DecideRequest, content_type = "application/json", description = r#"At most 64 KiB. Unknown members are refused (`400`)."#, example = json!({"ids": ["jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T"], "decision": "approve", "comment": "ok for INC-1234"})),
        responses(
            (status = 200, description = r#"One result per id, in request order."#, body = DecideResult, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:body-too-large", "title": "Body too large", "status": 413, "detail": "admin request bodies are at most 1048576 bytes (length limit exceeded)"}))
        )
    )]
    fn decide_tickets() {}

    #[utoipa::path(
        get,
        path = "/v1/audit",
        operation_id = "readAudit",
        tag = "audit",
        summary = r#"Read the audit log, a page at a time"#,
        description = r#"Audit events matching every given filter, in chain order (oldest first), a page at a time. Each event carries `seq`, `prev` and `hash`, so a client can verify the chain (`jitgate audit verify --admin URL` does). A page examines at most 10,000 events of the chain, so a page of a narrow filter may hold fewer than `limit` events, even none: keep following `nextCursor` until it is absent. Operators only. Unknown query parameters, a parameter given twice, and a `cursor` this API did not return are refused with `400`."#,
        params(
            ("ticket" = Option<String>, Query, description = r#"Only events about this ticket."#),
            ("requester" = Option<String>, Query, description = r#"Only events whose requester or actor is this user (`anonymous` for anonymous requesters)."#),
            ("route" = Option<String>, Query, description = r#"Only events about this route (events recorded before events named their route have none, and match no `route`)."#),
            ("kind" = Option<AuditKind>, Query, description = r#"Only events of this kind."#),
            ("since" = Option<Timestamp>, Query, description = r#"Only events at or after this instant (RFC 3339; `Z` or a numeric offset)."#),
            ("until" = Option<Timestamp>, Query, description = r#"Only events before this instant (RFC 3339); must be after `since`."#),
            ("cursor" = Option<String>, Query, description = r#"The `nextCursor` of the previous page, as is: the listing continues after the last event that page examined. Opaque; it is a position in the chain, so pass the same filters again."#),
            ("limit" = Option<usize>, Query, description = r#"Most events in one page."#)
        ),
        responses(
            (status = 200, description = r#"One page of matching events."#, body = AuditPage, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller is not an operator (problem `not-an-operator`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-an-operator", "title": "Operators only", "status": 403, "detail": "bob is not in [admin] operators"})),
            (status = 503, description = r#"The approval store is unreachable, timed out, or returned data it could not read (problem `store-unavailable`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:store-unavailable", "title": "Approval store unavailable", "status": 503, "detail": "store unavailable: connection refused"}))
        )
    )]
    fn read_audit() {}

    #[utoipa::path(
        get,
        path = "/v1/admin/rules",
        operation_id = "getRules",
        tag = "admin",
        summary = r#"The rule table in force"#,
        description = r#"The loaded configuration file, its routes and upstreams, and the outcome of the last reload attempts. Operators only."#,
        responses(
            (status = 200, description = r#"The rule table."#, body = Rules, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller is not an operator (problem `not-an-operator`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-an-operator", "title": "Operators only", "status": 403, "detail": "bob is not in [admin] operators"}))
        )
    )]
    fn get_rules() {}

    #[utoipa::path(
        get,
        path = "/v1/admin/rules/source",
        operation_id = "getRulesSource",
        tag = "admin",
        summary = r#"The rule table's source"#,
        description = r#"The exact bytes of the configuration file the table in force was built from (not the file on disk, which may hold an edit not applied yet or rejected), with its version as `ETag`. Edit it and send it back with `PUT` and `If-Match`. `If-None-Match` naming the version in force (weak comparison; `*` matches) answers `304` without a body. Operators only."#,
        params(
            ("If-None-Match" = Option<String>, Header, description = r#"Entity tags seen before; `304` when one is the version in force."#)
        ),
        responses(
            (status = 200, description = r#"The source of the table in force."#, body = String, content_type = "application/toml", headers(("ETag" = String, description = r#"The version of the rule table's source, quoted: `"<SHA-256 hex of the file>"` (a strong entity tag)."#), ("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = r#"[server]
    listen = "0.0.0.0:8080"
    ..."#),
            (status = 304, description = r#"`If-None-Match` names the version in force."#, headers(("ETag" = String, description = r#"The version of the rule table's source, quoted: `"<SHA-256 hex of the file>"` (a strong entity tag)."#), ("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#))),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller is not an operator (problem `not-an-operator`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-an-operator", "title": "Operators only", "status": 403, "detail": "bob is not in [admin] operators"}))
        )
    )]
    fn get_rules_source() {}

    #[utoipa::path(
        put,
        path = "/v1/admin/rules/source",
        operation_id = "putRulesSource",
        tag = "admin",
        summary = r#"Replace the rule table"#,
        description = r#"Replaces the configuration file and reloads it (trigger `put`). `If-Match` must name the version in force (the `ETag` of `GET`); it is checked under the reload lock, so of two writers naming the same version one wins and the other gets `412`. The whole body is validated exactly as a reload validates the file (relative paths against the file's folder, certificate and key files read, upstreams and identity keys built); an invalid table is `422` with every error as `file:line:column: error: message`. Before anything is written the file must still hold the version in force (an edit on disk not applied yet, or rejected, is `409` `config-changed-on-disk`, so it is not lost) and be replaceable: a symbolic link (a Kubernetes ConfigMap mount, configuration management), a file without write permission bits, one the gateway may not open for writing or on a read-only file system is `409` `config-not-writable`. Then the new file is written next to the old one, fsynced, renamed over it (keeping its mode, and its owner where the gateway may set it) and the directory fsynced; the validated table is swapped in. Whenever the answer is not `200`, neither the file nor the table in force has changed. Applied and refused attempts are audited as `rules.reloaded` / `rules.rejected` with the caller as `actor`; the body is never logged. A body identical to the table in force changes nothing (`changed: false`). Operators only."#,
        params(
            ("If-Match" = String, Header, description = r#"The `ETag` of the version edited, `"<version>"` (a bare version is accepted too). Weak tags never match; `*` is refused."#)
        ),
        request_body(content = String, content_type = "application/toml", description = r#"The new configuration file, UTF-8 TOML, at most 1 MiB."#),
        responses(
            (status = 200, description = r#"Written and in force."#, body = ReloadResult, content_type = "application/json", headers(("ETag" = String, description = r#"The version of the rule table's source, quoted: `"<SHA-256 hex of the file>"` (a strong entity tag)."#), ("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"version": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "changed": true, "warnings": []})),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller is not an operator (problem `not-an-operator`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-an-operator", "title": "Operators only", "status": 403, "detail": "bob is not in [admin] operators"})),
            (status = 409, description = r#"The file cannot be replaced (problem `config-not-writable`: a symbolic link, read-only, missing) or holds an edit that is not in force (problem `config-changed-on-disk`, with `currentVersion` and `diskVersion`). Nothing was changed."#, body = Problem, content_type = "application/problem+json", headers(("ETag" = String, description = r#"The version of the rule table's source, quoted: `"<SHA-256 hex of the file>"` (a strong entity tag)."#), ("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:config-not-writable", "title": "Config file not writable", "status": 409, "detail": "/etc/jitgate/proxy.toml is a symbolic link (to ..data/proxy.toml); the gateway does not replace linked config files, which are usually managed elsewhere (a Kubernetes ConfigMap, configuration management): change the file at its source; nothing was changed"})),
            (status = 412, description = r#"`If-Match` does not name the version in force (problem `stale-version`, with `currentVersion`; `ETag` is the version in force). Nothing was changed."#, body = Problem, content_type = "application/problem+json", headers(("ETag" = String, description = r#"The version of the rule table's source, quoted: `"<SHA-256 hex of the file>"` (a strong entity tag)."#), ("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:stale-version", "title": "Rule table changed", "status": 412, "detail": "If-Match does not name the version in force, 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b: get the source again, redo the edit on it, and send it with its ETag", "currentVersion": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b"})),
            (status = 413, description = r#"The request body exceeds 1 MiB (problem `body-too-large`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:body-too-large", "title": "Body too large", "status": 413, "detail": "admin request bodies are at most 1048576 bytes (length limit exceeded)"})),
            (status = 422, description = r#"The configuration file was rejected; the running table is unchanged (problem `invalid-config`). `errors` lists every error as `file:line:column: error: message`."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:invalid-config", "title": "Rule table rejected", "status": 422, "detail": "1 error(s) in /etc/jitgate/proxy.toml; the running table is unchanged", "errors": ["/etc/jitgate/proxy.toml:12:1: error: unknown upstream `billing`"]})),
            (status = 428, description = r#"No `If-Match`, or `If-Match: *` (problem `precondition-required`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:precondition-required", "title": "If-Match required", "status": 428, "detail": "no If-Match header: send `If-Match` with the ETag of GET /v1/admin/rules/source (the version you edited), so a change made meanwhile is not overwritten"})),
            (status = 500, description = r#"Writing the file failed (problem `config-write-failed`, e.g. the disk is full). Nothing was changed."#, body = Problem, content_type = "application/problem+json", headers(("ETag" = String, description = r#"The version of the rule table's source, quoted: `"<SHA-256 hex of the file>"` (a strong entity tag)."#), ("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:config-write-failed", "title": "Config file not written", "status": 500, "detail": "/etc/jitgate/proxy.toml: cannot write the new file: No space left on device (os error 28); the file and the running table are unchanged"}))
        )
    )]
    fn put_rules_source() {}

    #[utoipa::path(
        post,
        path = "/v1/admin/reload",
        operation_id = "reloadRules",
        tag = "admin",
        summary = r#"Reload the rule table"#,
        description = r#"Re-reads and validates the configuration file and, if it is valid, swaps the new table in atomically (trigger `admin`). An invalid file is refused with `422` and the running table stays in force. Settings read only at start (listeners, TLS, ...) are reported in `warnings`, not applied. Applied and refused reloads are audited as `rules.reloaded` / `rules.rejected` with the caller as `actor`. No request body is read. Operators only."#,
        responses(
            (status = 200, description = r#"The table now in force."#, body = ReloadResult, content_type = "application/json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"version": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b", "changed": true, "warnings": []})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"})),
            (status = 403, description = r#"The caller is not an operator (problem `not-an-operator`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:not-an-operator", "title": "Operators only", "status": 403, "detail": "bob is not in [admin] operators"})),
            (status = 422, description = r#"The configuration file was rejected; the running table is unchanged (problem `invalid-config`). `errors` lists every error as `file:line:column: error: message`."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:invalid-config", "title": "Rule table rejected", "status": 422, "detail": "1 error(s) in /etc/jitgate/proxy.toml; the running table is unchanged", "errors": ["/etc/jitgate/proxy.toml:12:1: error: unknown upstream `billing`"]}))
        )
    )]
    fn reload_rules() {}

    #[utoipa::path(
        get,
        path = "/v1/events",
        operation_id = "streamEvents",
        tag = "tickets",
        summary = r#"Server-sent events of the tickets the caller may see"#,
        description = r#"A `text/event-stream` of the events channels are told about (`ticket.opened`, `ticket.escalated`, `ticket.reminder`, `ticket.decided`, `ticket.expired`, `break_glass.used`, `grant.created`, `grant.revoked`), from every replica, filtered to the tickets the caller may see (operators: all; others: tickets they may decide or asked for). Each event's `id` is its audit `seq`, `event` its type and `data` the Standard Webhooks body `{type, timestamp, data}` with the ticket (or grant) as the API shows it. A comment line every 15 s keeps the stream open. Reconnecting with `Last-Event-ID` first replays (up to 1,000) events after that id. A client too slow to keep up is disconnected and resumes by id."#,
        params(
            ("Last-Event-ID" = Option<u64>, Header, description = r#"Resume after this event."#)
        ),
        responses(
            (status = 200, description = r#"The stream."#, body = String, content_type = "text/event-stream", example = r#"id: 42
    event: ticket.opened
    data: {"type":"ticket.opened","timestamp":"2026-11-22T10:30:00Z","data":{"id":"jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B","status":"PENDING"}}

    "#),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"No `Authorization: Bearer` credential, or one that is neither a known API token nor a valid JWT (problem `unauthenticated`)."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#), ("WWW-Authenticate" = String, description = r#"The bearer challenge."#)), example = json!({"type": "urn:jitgate:problem:unauthenticated", "title": "Authentication required", "status": 401, "detail": "the admin API needs `Authorization: Bearer <API token or JWT>`"}))
        )
    )]
    fn stream_events() {}

    #[utoipa::path(
        post,
        path = "/v1/notify/slack/actions",
        operation_id = "slackActions",
        tag = "notifications",
        summary = r#"Slack interactive callback (Approve / Deny buttons)"#,
        description = r#"Called by Slack, not by people: set it as the Slack app's Interactivity Request URL. Takes no bearer credential; the request is believed only when `X-Slack-Signature` (v0 HMAC-SHA256 of `v0:<timestamp>:<body>`) verifies under the `signing_secret_env` of a `[[notify]]` Slack channel and `X-Slack-Request-Timestamp` is within 5 minutes. The Slack user must be mapped by that channel's `users`; the decision then follows exactly the rules of `POST /v1/tickets/{id}/approve` and `/deny`, as the mapped user with the groups of their `[admin] api_tokens`. The message is updated through the callback's `response_url`; refusals are answered there as an ephemeral message."#,
        params(
            ("X-Slack-Request-Timestamp" = u64, Header),
            ("X-Slack-Signature" = String, Header, example = json!("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"))
        ),
        request_body(content = SlackForm, content_type = "application/x-www-form-urlencoded"),
        responses(
            (status = 200, description = r#"Handled: decided, or refused by the decision rules (the reason goes to Slack through `response_url`)."#),
            (status = 400, description = r#"Malformed request (problem `malformed-request`): an undecodable, unknown or out-of-range query parameter, a body that is not JSON, stalls for 10 s, has unknown members or wrongly typed values, or a batch whose `ids` is empty or longer than 10000."#, body = Problem, content_type = "application/problem+json", headers(("Cache-Control" = String, description = r#"JSON and problem answers are never cached."#)), example = json!({"type": "urn:jitgate:problem:malformed-request", "title": "Malformed or ambiguous request", "status": 400, "detail": "limit must be between 1 and 10000"})),
            (status = 401, description = r#"Missing or invalid signature, or a stale timestamp."#, body = Problem, content_type = "application/problem+json"),
            (status = 403, description = r#"The Slack user is not mapped by the channel's `users`."#, body = Problem, content_type = "application/problem+json")
        ),
        security(())
    )]
    fn slack_actions() {}
}
