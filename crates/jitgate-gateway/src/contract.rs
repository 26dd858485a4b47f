//! The admin plane's wire contract: the request and response bodies that the admin handlers
//! answer with and parse, that the `jitgate tickets` / `jitgate audit` CLI and the demo read
//! through one typed client, and that the OpenAPI document ([`crate::openapi`]) is generated
//! from. Tickets, grants and audit events are [`jitgate_rules::ticket`]'s own types.
//!
//! A module of the gateway rather than a crate of its own: the binary (the only client)
//! already links the gateway, so a separate crate would keep nothing out of it.
//!
//! Answers are serialized with their members in alphabetical order, as they always were
//! (see [`crate::problem::json_body`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use jitgate_rules::ticket::{Grant, Ticket, TicketId, Timestamp, TransitionError};

/// `GET /v1/tickets`: the tickets the caller may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TicketList {
    /// Up to `limit` tickets, `PENDING` ones soonest-expiring first.
    pub tickets: Vec<Ticket>,
}

/// `POST /v1/tickets/{id}/approve`. An empty body is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Recorded with the vote. Trimmed and cut to at most 2000 bytes (on a UTF-8 boundary); a
    /// blank value is treated as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// "Approve this and the next N like it": also let the same requester send up to `uses`
    /// more requests with the same method on this route within `within` of the approval (an
    /// action route whose `max_also_uses` allows that many; with a quorum, every approval must
    /// ask for it and the smallest terms apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<AlsoRequest>,
}

/// The `also` of an [`ApproveRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlsoRequest {
    /// How many more requests (1 to the route's `max_also_uses`).
    pub uses: u32,
    /// For how long after the approval, as a duration such as `"1h"` or `"15m"` (at most the
    /// route's `max_also_within`).
    pub within: String,
}

/// `POST /v1/tickets/{id}/deny`. An empty body is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    /// Recorded with the vote and as `denyReason`; reaches the requester. Trimmed and cut to
    /// at most 2000 bytes (on a UTF-8 boundary); a blank value is treated as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/grants`: the active grants the caller may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    /// With `state=active` (the default) the active grants, soonest-ending first; with any
    /// other `state`, up to 10,000 kept grants in it, latest-ending first.
    pub grants: Vec<Grant>,
}

/// `POST /v1/access-requests`: ask for access ahead, without a held request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The name of an enforcing `access` route in the table in force.
    pub route: String,
    /// The grant's duration, such as `"2h"`: one of the route's `durations` presets (when it
    /// has any), never above its `max_duration`. Absent: the route's default duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Why; shown to approvers (trimmed, at most 500 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/grants/{id}/revoke`. An empty body is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Recorded with the `grant.revoked` event. Trimmed and cut to at most 2000 bytes (on a
    /// UTF-8 boundary); a blank value is treated as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The decision of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Approve every ticket (with `comment`).
    Approve,
    /// Deny every ticket (with `reason`).
    Deny,
}

/// `POST /v1/tickets/decide`: one decision on many tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "ids": ["jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T", "jit_01JDAE8A1B2C3D4E5F6G7H8J9K"], "decision": "approve", "comment": "INC-1234 cleanup, reviewed" }))]
pub struct DecideRequest {
    /// Ticket ids, decided in this order (1 to 10,000). A malformed or invisible id gets a
    /// per-item 404.
    #[schema(min_items = 1, max_items = 10000)]
    pub ids: Vec<String>,
    /// Approve or deny them all.
    pub decision: Decision,
    /// Used when approving. Trimmed and cut to at most 2000 bytes (on a UTF-8 boundary); a
    /// blank value is treated as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Used when denying. Trimmed and cut to at most 2000 bytes (on a UTF-8 boundary); a blank
    /// value is treated as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcome for one id of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DecideItem {
    /// Decided: `status` is 200.
    Decided {
        /// The id as requested.
        id: String,
        /// 200.
        status: u16,
        /// The ticket after the decision.
        ticket: Box<Ticket>,
    },
    /// Refused: `status` is the problem's (403, 404, 409 or 503).
    Refused {
        /// The id as requested.
        id: String,
        /// The problem's status.
        status: u16,
        /// Why this ticket was not decided.
        problem: Problem,
    },
}

/// `POST /v1/tickets/decide`: one item per requested id, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecideResult {
    /// One per requested id, in request order.
    pub results: Vec<DecideItem>,
}

/// `GET /v1/audit`: one page of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// The matching events, in chain order.
    pub events: Vec<jitgate_rules::ticket::AuditEvent>,
    /// Present while the chain goes on past what this page examined: pass it as `cursor` for
    /// the next page (which may hold no match). Absent at the end of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// `GET /healthz`: the process is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// The approval store, as `GET /readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreHealth {
    /// `memory`, `redis` or `custom`.
    #[schema(example = "redis")]
    pub kind: String,
    /// `ok`, or why the store is not healthy.
    pub status: String,
}

/// `GET /readyz`: ready to serve. Readiness follows the data plane, which serves allow routes
/// without the store, so a store outage is reported here rather than turned into "not ready".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    pub status: String,
    /// SHA-256 (lowercase hex) of the rule file in force.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub version: String,
    /// The approval store.
    pub store: StoreHealth,
    /// Requests currently held on this replica awaiting a decision.
    pub held: u64,
}

/// One reload of the rule table, whatever triggered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReloadAttempt {
    /// RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub at: String,
    /// `watch` (file change), `signal` (SIGHUP), `admin` (`POST /v1/admin/reload`) or `put`
    /// (`PUT /v1/admin/rules/source`).
    #[schema(example = "admin")]
    pub trigger: String,
    /// SHA-256 of the file read, if any.
    pub version: Option<String>,
    /// Whether the table was applied.
    pub ok: bool,
    /// Every error, as `file:line:column: error: message`.
    pub errors: Vec<String>,
}

/// An upstream of the rule table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamInfo {
    /// Its name.
    pub name: String,
    /// Its base URL.
    pub url: String,
}

/// A route of the rule table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteInfo {
    /// Position in the file, from 0.
    pub index: usize,
    /// The route's name.
    pub name: String,
    /// `allow`, `deny` or `approve`.
    pub action: String,
    /// `null` means any method.
    pub methods: Option<Vec<String>>,
    /// Exact host, or `*.suffix`; `null` means any host.
    pub host: Option<String>,
    /// The path pattern as written.
    pub path: String,
    /// The upstream's name, if the route has one.
    pub upstream: Option<String>,
    /// `false`: shadow mode.
    pub enforce: bool,
    /// Where the route's `[[routes]]` table starts, as `file:line:column`.
    pub location: String,
}

/// `GET /v1/admin/rules`: the rule table in force and recent reload outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    /// Path of the configuration file.
    pub file: String,
    /// SHA-256 (lowercase hex) of the file in force.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub version: String,
    /// RFC 3339, whole seconds.
    #[schema(format = DateTime)]
    pub loaded_at: String,
    /// Warnings about the table in force.
    pub warnings: Vec<String>,
    /// The upstreams.
    pub upstreams: Vec<UpstreamInfo>,
    /// In file order; the first match wins.
    pub routes: Vec<RouteInfo>,
    /// The latest reload attempt, applied or not (`null` before the first).
    pub last_reload: Option<ReloadAttempt>,
    /// The latest refused reload (`null` if none was refused).
    pub last_reload_error: Option<ReloadAttempt>,
}

/// `POST /v1/admin/reload` and `PUT /v1/admin/rules/source`: the table now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "version": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "changed": true, "warnings": [] }))]
pub struct ReloadResult {
    /// SHA-256 of the file now in force.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub version: String,
    /// Whether a new table was swapped in.
    pub changed: bool,
    /// Warnings about the new table, and settings that need a restart.
    pub warnings: Vec<String>,
}

/// The approval-token signing key (RFC 8037 OKP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// Key id, as in the approval tokens' `kid` header.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// `GET /.well-known/jwks.json`: the keys approval tokens are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    /// The signing key.
    pub keys: Vec<Jwk>,
}

/// RFC 9457 problem details, plus extension members. Every error of the admin plane is one
/// (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({ "type": "urn:jitgate:problem:unknown-ticket", "title": "Unknown ticket", "status": 404, "detail": "no such ticket" }))]
pub struct Problem {
    /// `urn:jitgate:problem:<slug>`, e.g. `urn:jitgate:problem:unknown-ticket`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:jitgate:problem:[a-z0-9-]+$")]
    pub type_: String,
    /// Human summary of the problem type.
    pub title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What happened to this request.
    pub detail: String,
    /// Extension on `conflict` and `not-permitted` decision problems: why the ticket state
    /// machine refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<TransitionError>,
    /// Extension on `invalid-config`: every error, as `file:line:column: error: message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<String>>,
    /// Extension on `stale-version` and `config-changed-on-disk`: the version in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub current_version: Option<String>,
    /// Extension on `config-changed-on-disk`: the version of the file on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub disk_version: Option<String>,
    /// Any other extension member.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
}

/// What an event is about: the ticket or grant as the API shows it, or only the ticket's id
/// when it can no longer be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventData {
    /// A grant (`grant.created`, `grant.revoked`).
    Grant(Box<Grant>),
    /// A ticket.
    Ticket(Box<Ticket>),
    /// Only the ticket's id.
    TicketRef {
        /// The ticket's id.
        ticket: Option<TicketId>,
    },
}

/// `{type, timestamp, data}`: the Standard Webhooks body of a notification, and the `data` of
/// an event of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({ "type": "ticket.opened", "timestamp": "2026-11-22T10:30:00Z", "data": { "ticket": "jit_01JDAE7Y8Z3K4M5N6P7Q8R9S0T" } }))]
pub struct EventBody {
    /// `ticket.opened`, `ticket.escalated`, `ticket.reminder`, `ticket.decided`,
    /// `ticket.expired`, `break_glass.used`, `grant.created` or `grant.revoked`.
    #[serde(rename = "type")]
    pub type_: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// What it is about.
    pub data: EventData,
}
