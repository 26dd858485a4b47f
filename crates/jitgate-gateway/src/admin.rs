//! The admin plane: health, the decision API, audit, the rule table, and the approvers' web
//! page under `/ui/` ([`crate::ui`]). Never served on the data port. Every call but
//! `/healthz`, `/readyz`, `/.well-known/jwks.json` and the web page (which has its own session)
//! needs a bearer credential (a JWT or a static API token); rules, reload and audit need an
//! operator.
//!
//! [`Api`] is the one place the decision rules are applied to a caller: the JSON API and the
//! web page both go through it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::{json, Value};

use jitgate_identity::Identity;
use jitgate_rules::route::{Action, ApprovalMode};
use jitgate_rules::ticket::{
    self, AlsoTerms, Approver, AuditDraft, AuditEvent, AuditKind, Grant, GrantId, GrantState, Mode,
    Requester, Status, Ticket, TicketId, Timestamp, TransitionError,
};
use jitgate_store::{AuditFilter, StoreError};

use crate::approval::view_paths::JWKS;
use crate::body::ProxyBody;
use crate::contract::{
    AccessRequest, AlsoRequest, ApproveRequest, AuditPage, DecideItem, DecideRequest, DecideResult,
    Decision, DenyRequest, GrantList, Health, Jwk, Jwks, Ready, ReloadResult, RevokeRequest,
    StoreHealth, TicketList,
};
use crate::engine::Engine;
use crate::error::GatewayError;
use crate::problem::{json_body, Fault, Problem};
use crate::state::{Applied, Rejected, Shared, Snapshot, SourceRefused, Trigger};
use crate::ui;

/// The OpenAPI 3.1 document of this plane, served at `/v1/openapi.json`: generated from the
/// contract types once ([`crate::openapi`]).
pub static OPENAPI: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(crate::openapi::document);

/// Every (method, path template) the admin plane serves; `tests` check the OpenAPI document
/// against it.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/tickets"),
    ("GET", "/v1/tickets/{id}"),
    ("POST", "/v1/tickets/{id}/approve"),
    ("POST", "/v1/tickets/{id}/deny"),
    ("POST", "/v1/tickets/{id}/acknowledge"),
    ("POST", "/v1/tickets/decide"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/admin/rules"),
    ("GET", "/v1/admin/rules/source"),
    ("PUT", "/v1/admin/rules/source"),
    ("POST", "/v1/admin/reload"),
    ("POST", "/v1/access-requests"),
    ("GET", "/v1/grants"),
    ("POST", "/v1/grants/{id}/revoke"),
    ("GET", "/v1/events"),
    ("POST", "/v1/notify/slack/actions"),
];

/// Largest JSON body the decision API reads (a batch of 10,000 ids is about 350 KB).
const MAX_BODY: usize = 1024 * 1024;
/// Largest rule table `PUT /v1/admin/rules/source` takes (a table of a thousand routes is
/// about 200 KB).
const MAX_SOURCE: usize = 1024 * 1024;
/// The media type of the rule table (registered with IANA in 2024).
const TOML: &str = "application/toml";
/// Longest comment or reason kept.
const MAX_TEXT: usize = 2000;
/// The most tickets one listing reads from the store.
const MAX_LIST: usize = 10_000;
/// Most ids in one batch decision.
const MAX_BATCH: usize = 10_000;

/// Serves one admin request; `tls` says whether the connection spoke TLS (the web page's
/// session cookie is then `Secure`).
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, tls: bool) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    if ui::is_ui_path(&path) {
        return ui::handle(&shared, req, tls).await;
    }
    let method = req.method().clone();
    // HEAD is served wherever GET is (hyper sends the head without the body).
    let routed = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let get = routed == Method::GET;
    match path.as_str() {
        "/healthz" if get => {
            let health = Health {
                status: "ok".into(),
            };
            return json_body(StatusCode::OK, &health);
        }
        "/readyz" if get => return readyz(&shared).await,
        "/metrics" if get => return metrics(&shared),
        JWKS if get => return json_body(StatusCode::OK, &jwks(&shared)),
        "/healthz" | "/readyz" | "/metrics" | JWKS => return not_allowed(&method, &path),
        // Slack cannot send a bearer token: its callbacks are authenticated by their
        // signature instead.
        "/v1/notify/slack/actions" if method == Method::POST => {
            return crate::notify::slack::actions(&shared, req).await
        }
        "/v1/notify/slack/actions" => return not_allowed(&method, &path),
        _ => {}
    }
    let snap = shared.snapshot();
    let caller = match snap.admin_auth.authenticate(req.headers()) {
        Ok(id) => id,
        Err(e) => {
            tracing::info!(%path, "admin call refused: {e}");
            return Problem::unauthenticated(
                "the admin API needs `Authorization: Bearer <API token or JWT>`",
            )
            .into_response();
        }
    };
    AuthMark::of(req.extensions());
    let api = Api::new(&shared, &snap, &caller);
    let mut resp = api.route(&routed, &method, &path, req).await;
    resp.extensions_mut().insert(Authenticated);
    resp
}

/// `GET /metrics`: this replica's metrics for the platform's scraper.
fn metrics(shared: &Shared) -> Response<ProxyBody> {
    let body = shared.engine().metrics().encode();
    let mut resp = Response::new(ProxyBody::full(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What the holder of `credential` (an `Authorization` header) may see of tickets and grants
/// under `snap`, as the API judges it; `None` when it no longer authenticates.
pub(crate) fn viewer(snap: &Arc<Snapshot>, credential: &http::HeaderMap) -> Option<Sight> {
    let id = snap.admin_auth.authenticate(credential).ok()?;
    Some(Sight {
        operator: snap.admin_auth.is_operator(&id),
        caller: approver_of(&id),
        snap: snap.clone(),
    })
}

/// What one caller may see, under one table generation (see [`viewer`]).
pub(crate) struct Sight {
    snap: Arc<Snapshot>,
    caller: Approver,
    operator: bool,
}

impl Sight {
    /// Operators, the ticket's approvers and its requester see a ticket.
    pub(crate) fn ticket(&self, t: &Ticket) -> bool {
        self.operator
            || self.caller.is_listed(&t.approvers)
            || t.requester.user.as_deref() == Some(self.caller.user.as_str())
    }

    /// See [`manages_grant`].
    pub(crate) fn grant(&self, g: &Grant) -> bool {
        manages_grant(&self.snap, &self.caller, self.operator, g)
    }
}

/// Whether `caller` may see and revoke grant `g` under `snap`: operators, its requester, and
/// the approvers of its route in `snap`, as long as that route is still the one the grant was
/// given on (same definition hash: a route that took the name over grants nothing of the
/// old one's).
pub(crate) fn manages_grant(snap: &Snapshot, caller: &Approver, operator: bool, g: &Grant) -> bool {
    if operator || g.requester.user.as_deref() == Some(caller.user.as_str()) {
        return true;
    }
    snap.route_of_grant(g)
        .and_then(|r| r.approval.as_ref())
        .is_some_and(|p| {
            let approvers: Vec<String> = p.approvers.iter().map(ToString::to_string).collect();
            caller.is_listed(&approvers)
        })
}

/// Put on each admin request by the server: marked once the caller is authenticated (a bearer
/// credential, a Slack signature), from when the request keeps its connection busy. An
/// unauthenticated request in flight (a body trickled before its signature can be checked)
/// does not keep a connection from its idle close.
#[derive(Clone)]
pub struct AuthMark(Arc<dyn Fn() + Send + Sync>);

impl AuthMark {
    /// A mark that calls `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> AuthMark {
        AuthMark(Arc::new(f))
    }

    /// Marks the request `extensions` belong to as authenticated, if the server asked to know.
    pub fn of(extensions: &http::Extensions) {
        if let Some(m) = extensions.get::<AuthMark>() {
            (m.0)();
        }
    }
}

/// Marks an answer to an authenticated call: the connection serves an approver or operator
/// (the server keeps such connections; others it closes once idle).
#[derive(Debug, Clone, Copy)]
pub struct Authenticated;

impl Api<'_> {
    /// Serves an authenticated call.
    async fn route(
        &self,
        routed: &Method,
        method: &Method,
        path: &str,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let (api, shared) = (self, self.shared);
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (routed, segments.as_slice()) {
            (&Method::GET, ["v1", "openapi.json"]) => {
                let mut resp =
                    Response::new(ProxyBody::full(Bytes::from(OPENAPI.as_str().to_owned())));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            (&Method::GET, ["v1", "admin", "rules"]) => api
                .operator_only()
                .unwrap_or_else(|| json_body(StatusCode::OK, &shared.rules())),
            (&Method::GET, ["v1", "admin", "rules", "source"]) => api
                .operator_only()
                .unwrap_or_else(|| rules_source(shared, req.headers())),
            (&Method::PUT, ["v1", "admin", "rules", "source"]) => match api.operator_only() {
                Some(refused) => refused,
                None => api.put_source(req).await,
            },
            (&Method::POST, ["v1", "admin", "reload"]) => match api.operator_only() {
                Some(refused) => refused,
                None => reload(shared, &api.caller.user).await,
            },
            (&Method::GET, ["v1", "tickets"]) => api.list(req.uri().query()).await,
            (&Method::POST, ["v1", "tickets", "decide"]) => match read_json(req).await {
                Ok(body) => api.decide_batch(body).await,
                Err(p) => p.into_response(),
            },
            (&Method::GET, ["v1", "tickets", id]) => match api.ticket(id).await {
                Ok(t) => json_body(StatusCode::OK, &t),
                Err(p) => p.into_response(),
            },
            (&Method::POST, ["v1", "tickets", id, verb @ ("approve" | "deny")]) => {
                let id = id.to_string();
                let approve = *verb == "approve";
                match read_json(req).await {
                    Ok(body) => api.decide_one(&id, approve, body).await,
                    Err(p) => p.into_response(),
                }
            }
            (&Method::POST, ["v1", "access-requests"]) => match read_json(req).await {
                Ok(body) => api.access_request(body).await,
                Err(p) => p.into_response(),
            },
            (&Method::POST, ["v1", "tickets", id, "acknowledge"]) => {
                let id = id.to_string();
                match read_json(req).await {
                    Ok(body) => match parse_body::<ApproveRequest>(body) {
                        Ok(b) if b.also.is_some() => {
                            Problem::bad_request("`also` is for approvals").into_response()
                        }
                        Ok(b) => match api.acknowledge(&id, b.comment).await {
                            Ok(t) => json_body(StatusCode::OK, &t),
                            Err(p) => p.into_response(),
                        },
                        Err(p) => p.into_response(),
                    },
                    Err(p) => p.into_response(),
                }
            }
            (&Method::GET, ["v1", "grants"]) => api.grants(req.uri().query()).await,
            (&Method::POST, ["v1", "grants", id, "revoke"]) => {
                let id = id.to_string();
                match read_json(req).await {
                    Ok(body) => api.revoke_one(&id, body).await,
                    Err(p) => p.into_response(),
                }
            }
            (&Method::GET, ["v1", "events"]) => api.events(&req),
            (&Method::GET, ["v1", "audit"]) => api.audit(req.uri().query()).await,
            _ if allowed_methods(path).is_some() => not_allowed(method, path),
            _ => Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("no admin endpoint at {path}"),
                Fault::Downstream,
            )
            .into_response(),
        }
    }
}

/// 405 with `Allow` listing what [`ENDPOINTS`] serves at `path`.
fn not_allowed(method: &Method, path: &str) -> Response<ProxyBody> {
    let allow = allowed_methods(path).unwrap_or_else(|| "GET, HEAD".to_string());
    Problem::method_not_allowed(method.as_str(), path, &allow).into_response()
}

/// The `Allow` value for `path`: the methods [`ENDPOINTS`] lists for it (a literal template
/// before one with `{id}`, so `/v1/tickets/decide` is the batch endpoint), with HEAD wherever
/// GET is. `None` when no endpoint has this path.
fn allowed_methods(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let fits = |template: &str, literal_only: bool| {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (!literal_only && t.starts_with('{') && !s.is_empty()))
    };
    let methods = |literal_only: bool| -> Vec<&'static str> {
        ENDPOINTS
            .iter()
            .filter(|(_, template)| fits(template, literal_only))
            .map(|(m, _)| *m)
            .collect()
    };
    let mut found = methods(true);
    if found.is_empty() {
        found = methods(false);
    }
    if found.contains(&"GET") {
        found.push("HEAD");
    }
    let allow: Vec<&str> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .filter(|m| found.contains(m))
        .collect();
    (!allow.is_empty()).then(|| allow.join(", "))
}

async fn readyz(shared: &Shared) -> Response<ProxyBody> {
    let snap = shared.snapshot();
    let engine = shared.engine();
    // Readiness follows the data plane, which serves allow routes without the store, so a
    // store outage is reported, not turned into "not ready" (that would take every replica
    // out of rotation at once); approve routes fail closed on their own.
    let store = match engine.store() {
        Ok(s) => match tokio::time::timeout(Duration::from_secs(2), s.ping()).await {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "store did not answer within 2s".to_string(),
        },
        Err(e) => e.to_string(),
    };
    let ready = Ready {
        status: "ready".into(),
        version: snap.table.version().to_string(),
        store: StoreHealth {
            kind: engine.store_kind().to_string(),
            status: store,
        },
        held: u64::try_from(engine.held_count()).unwrap_or(u64::MAX),
    };
    json_body(StatusCode::OK, &ready)
}

/// `GET /.well-known/jwks.json`: the approval-token signing key (RFC 8037 OKP).
fn jwks(shared: &Shared) -> Jwks {
    let engine = shared.engine();
    let signer = engine.signer();
    Jwks {
        keys: vec![Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: signer.public_key_b64url(),
            kid: signer.kid().to_string(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }],
    }
}

async fn reload(shared: &Shared, by: &str) -> Response<ProxyBody> {
    match shared.reload(Trigger::Admin, Some(by)).await {
        Ok(applied) => applied_response(&applied),
        Err(rejected) => invalid_config(shared, rejected, "the running table is unchanged"),
    }
}

fn applied_response(applied: &Applied) -> Response<ProxyBody> {
    let result = ReloadResult {
        version: applied.version.clone(),
        changed: applied.changed,
        warnings: applied.warnings.clone(),
    };
    json_body(StatusCode::OK, &result)
}

fn invalid_config(shared: &Shared, rejected: Rejected, unchanged: &str) -> Response<ProxyBody> {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-config",
        "Rule table rejected",
        format!(
            "{} error(s) in {}; {unchanged}",
            rejected.errors.len(),
            shared.config_path().display()
        ),
        Fault::Downstream,
    )
    .with("errors", rejected.errors)
    .into_response()
}

/// `"<version>"`, the entity tag of the rule table's source.
fn etag(version: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{version}\"")).ok()
}

/// `GET /v1/admin/rules/source`: the exact text the table in force was built from (not the
/// file on disk, which may hold an edit not applied yet), tagged with its version.
fn rules_source(shared: &Shared, headers: &HeaderMap) -> Response<ProxyBody> {
    let snap = shared.snapshot();
    let version = snap.table.version();
    // Weak comparison (RFC 9110 section 13.1.2): `W/` is ignored, `*` matches.
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| {
            let t = t.trim();
            t.strip_prefix("W/").unwrap_or(t)
        })
        .any(|t| t == "*" || unquote(t) == version);
    let mut resp = if unchanged {
        let mut r = Response::new(ProxyBody::Empty);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(ProxyBody::full(Bytes::copy_from_slice(
            snap.table.source().as_bytes(),
        )));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(TOML));
        r
    };
    if let Some(tag) = etag(version) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn unquote(tag: &str) -> &str {
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag)
}

/// The versions `If-Match` names: strong entity tags (`"<version>"`; a bare version is taken
/// too). Weak tags never match (RFC 9110 section 13.1.1 compares strongly), so naming only
/// weak ones is stale. Missing, or `*` (which would overwrite whatever is in force), is 428.
fn if_match_versions(headers: &HeaderMap) -> Result<Vec<String>, Problem> {
    let required = |detail: &str| {
        Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            "If-Match required",
            format!(
                "{detail}: send `If-Match` with the ETag of GET /v1/admin/rules/source (the \
                 version you edited), so a change made meanwhile is not overwritten"
            ),
            Fault::Downstream,
        )
    };
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Err(required("no If-Match header"));
    }
    let mut versions = Vec::new();
    for v in values {
        let v = v
            .to_str()
            .map_err(|_| Problem::bad_request("If-Match is not visible ASCII"))?;
        for tag in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Err(required("`If-Match: *` is not accepted"));
            }
            if !tag.starts_with("W/") {
                versions.push(unquote(tag).to_string());
            }
        }
    }
    Ok(versions)
}

/// Reads a body of at most `limit` bytes.
async fn read_body(req: Request<Incoming>, limit: usize, what: &str) -> Result<Bytes, Problem> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Body too large",
            format!("{what} are at most {limit} bytes ({e})"),
            Fault::Downstream,
        )),
        Err(_) => Err(Problem::bad_request("the request body stalled")),
    }
}

fn approver_of(id: &Identity) -> Approver {
    Approver {
        user: id.subject().to_string(),
        groups: id.groups.clone(),
    }
}

/// Reads a small JSON body; an empty body is `{}`.
async fn read_json(req: Request<Incoming>) -> Result<Value, Problem> {
    let bytes = read_body(req, MAX_BODY, "admin request bodies").await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| Problem::bad_request(format!("invalid JSON: {e}")))
}

/// The contract type `v` is (request bodies refuse unknown members).
fn parse_body<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Problem> {
    // serde's derived structs also take a JSON array of the members in order.
    if !v.is_object() {
        return Err(Problem::bad_request(
            "invalid request: the body must be a JSON object",
        ));
    }
    serde_json::from_value(v).map_err(|e| Problem::bad_request(format!("invalid request: {e}")))
}

/// The `also` of an approval as terms: `within` must be a duration of whole milliseconds
/// (the route's limits are the transition's to judge).
pub(crate) fn also_terms(also: Option<AlsoRequest>) -> Result<Option<AlsoTerms>, Problem> {
    let Some(a) = also else { return Ok(None) };
    let within = jitgate_rules::units::parse_duration(&a.within)
        .map_err(|e| Problem::bad_request(format!("`also.within`: {e}")))?;
    let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
    if within.subsec_nanos() % 1_000_000 != 0 || within_ms == 0 {
        return Err(Problem::bad_request(
            "`also.within` must be a whole number of milliseconds, at least 1ms",
        ));
    }
    Ok(Some(AlsoTerms {
        uses: a.uses,
        within_ms,
    }))
}

/// The events a decision records with its transition: `ticket.approved` or `ticket.denied`,
/// and `grant.created` when the approval creates a grant.
fn decision_events(
    approve: bool,
    text: &Option<String>,
    also: Option<AlsoTerms>,
    who: &Approver,
    now: Timestamp,
    before: &Ticket,
    t: &Ticket,
) -> Vec<AuditDraft> {
    let (kind, mut detail) = if approve {
        (
            AuditKind::TicketApproved,
            json!({ "comment": text, "approvals": t.approvals.len(), "quorum": t.quorum, "quorumReached": t.status == Status::Approved }),
        )
    } else {
        (AuditKind::TicketDenied, json!({ "reason": text }))
    };
    if let (Some(a), Some(d)) = (also, detail.as_object_mut()) {
        d.insert("also".into(), json!(a));
    }
    let mut events = vec![AuditDraft::about(kind, t, Some(&who.user), detail, now)];
    if let Some(g) = ticket::grant_of(before, t) {
        events.push(AuditDraft::about(
            AuditKind::GrantCreated,
            t,
            Some(&who.user),
            json!({ "grant": g.id.to_string(), "expiresAt": g.expires_at, "maxUses": g.max_uses, "method": g.method }),
            now,
        ));
    }
    events
}

fn clip(text: Option<String>) -> Option<String> {
    text.map(|t| ticket::clip(t.trim(), MAX_TEXT).to_string())
        .filter(|t| !t.is_empty())
}

/// Query string pairs, percent-decoded (`+` is a space).
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Problem> {
    fn decode(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(Problem::bad_request(format!(
                    "malformed query parameter `{p}`"
                ))),
            }
        })
        .collect()
}

fn store_problem(e: &StoreError) -> Problem {
    match e {
        StoreError::NotFound => not_found(),
        StoreError::Transition(t) => transition_problem(t),
        StoreError::Conflict => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Concurrent change",
            "the ticket changed too often concurrently; try again",
            Fault::Internal,
        ),
        other => Problem::store_unavailable(other.to_string()),
    }
}

fn transition_problem(e: &TransitionError) -> Problem {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT);
    let (slug, title) = if status == StatusCode::FORBIDDEN {
        ("not-permitted", "Decision not permitted")
    } else if status == StatusCode::BAD_REQUEST {
        ("also-not-allowed", "Approval not possible as asked")
    } else {
        ("conflict", "Ticket not in a decidable state")
    };
    Problem::new(status, slug, title, e.to_string(), Fault::Downstream)
        .with("error", serde_json::to_value(e).unwrap_or(Value::Null))
}

fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-ticket",
        "Unknown ticket",
        "no ticket with this id is visible to you",
        Fault::Downstream,
    )
}

/// Decides ticket `raw` as `caller` by exactly the API's rules, from chat channel `chat`
/// (chat callbacks): only tickets whose route tells that channel and allows chat approval.
pub(crate) async fn decide_as(
    shared: &Arc<Shared>,
    caller: Approver,
    raw: &str,
    approve: bool,
    text: Option<String>,
    chat: &str,
) -> Result<Ticket, Problem> {
    let api = Api {
        shared,
        caller,
        operator: false,
    };
    api.chat_may_decide(raw, chat).await?;
    api.decide(raw, approve, text, None).await
}

/// One authenticated caller of the admin plane (the JSON API or the web page): the decision
/// rules and what the caller may see, applied in one place.
pub(crate) struct Api<'a> {
    shared: &'a Arc<Shared>,
    caller: Approver,
    operator: bool,
}

impl<'a> Api<'a> {
    /// The caller `identity` (authenticated by `snap.admin_auth`), judged by `snap`.
    pub(crate) fn new(shared: &'a Arc<Shared>, snap: &Snapshot, identity: &Identity) -> Api<'a> {
        Api {
            shared,
            caller: approver_of(identity),
            operator: snap.admin_auth.is_operator(identity),
        }
    }

    /// Whether the caller is in `[admin] operators`.
    pub(crate) fn is_operator(&self) -> bool {
        self.operator
    }

    /// The engine's clock.
    pub(crate) fn now(&self) -> Timestamp {
        self.engine().now()
    }

    fn engine(&self) -> &Arc<Engine> {
        self.shared.engine()
    }

    fn not_an_operator(&self) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "not-an-operator",
            "Operators only",
            format!("{} is not in [admin] operators", self.caller.user),
            Fault::Downstream,
        )
    }

    fn operator_only(&self) -> Option<Response<ProxyBody>> {
        (!self.operator).then(|| self.not_an_operator().into_response())
    }

    /// Operators see every ticket; others those they may decide or asked for themselves.
    fn can_see(&self, t: &Ticket) -> bool {
        self.operator
            || self.caller.is_listed(&t.approvers)
            || t.requester.user.as_deref() == Some(self.caller.user.as_str())
    }

    /// Refuses a decision from chat channel `channel` on a ticket whose route does not tell
    /// that channel or says `chat_approval = false`. Tickets the caller cannot see are left
    /// to [`Api::decide`] (unknown either way); a route no longer configured is not refused.
    async fn chat_may_decide(&self, raw: &str, channel: &str) -> Result<(), Problem> {
        let Ok(id) = TicketId::parse(raw) else {
            return Ok(());
        };
        let store = self.engine().store().map_err(|e| store_problem(&e))?;
        let t = match store.get(&id).await {
            Ok(Some(t)) if self.can_see(&t) => t,
            Ok(_) => return Ok(()),
            Err(e) => return Err(store_problem(&e)),
        };
        let snap = self.shared.snapshot();
        let Some(a) = snap.table.route(&t.route).and_then(|r| r.approval.as_ref()) else {
            return Ok(());
        };
        let told = a
            .notify
            .as_ref()
            .is_none_or(|n| n.iter().any(|c| c == channel));
        if a.chat_approval && told {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "chat-approval-off",
            "Not decided from chat",
            format!(
                "route {} is not decided from chat channel {channel}; decide on the ticket page",
                t.route
            ),
            Fault::Downstream,
        ))
    }

    /// `GET /v1/events`: what this caller may see, as server-sent events.
    fn events(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let last_id = match req.headers().get("last-event-id").map(HeaderValue::to_str) {
            None => None,
            Some(Ok(v)) => match v.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return Problem::bad_request(
                        "Last-Event-ID must be an event id from this stream",
                    )
                    .into_response()
                }
            },
            Some(Err(_)) => {
                return Problem::bad_request("Last-Event-ID must be an event id from this stream")
                    .into_response()
            }
        };
        // The stream checks its credential again as it goes (a reload may withdraw it, a JWT
        // may expire): it keeps only the header that carries it.
        let mut credential = http::HeaderMap::new();
        if let Some(v) = req.headers().get(header::AUTHORIZATION) {
            credential.insert(header::AUTHORIZATION, v.clone());
        }
        crate::events::stream(self.shared, last_id, credential)
    }

    async fn list(&self, query: Option<&str>) -> Response<ProxyBody> {
        let mut status = None;
        let mut limit = 100usize;
        let pairs = match query_pairs(query) {
            Ok(p) => p,
            Err(p) => return p.into_response(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "status" => match Status::parse(&v) {
                    Some(s) => status = Some(s),
                    None => {
                        return Problem::bad_request(format!(
                            "status must be one of PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, EXECUTED, not `{v}`"
                        ))
                        .into_response()
                    }
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=10_000).contains(&n) => limit = n,
                    _ => {
                        return Problem::bad_request("limit must be between 1 and 10000")
                            .into_response()
                    }
                },
                other => {
                    return Problem::bad_request(format!(
                        "unknown query parameter `{other}` (status, limit)"
                    ))
                    .into_response()
                }
            }
        }
        match self.visible_tickets(status, limit).await {
            Ok(tickets) => json_body(StatusCode::OK, &TicketList { tickets }),
            Err(p) => p.into_response(),
        }
    }

    /// Up to `limit` (at most 10,000) tickets the caller may see, as [`Store::list`] orders
    /// them (`PENDING` ones soonest-expiring first).
    ///
    /// [`Store::list`]: jitgate_store::Store::list
    pub(crate) async fn visible_tickets(
        &self,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<Ticket>, Problem> {
        let limit = limit.clamp(1, MAX_LIST);
        let store = self.engine().store().map_err(|e| store_problem(&e))?;
        // Tickets the caller may not see must not crowd out those they may: read ever larger
        // pages until `limit` visible ones are found or the store has no more (up to the
        // store-wide listing cap).
        let mut fetch = if self.operator {
            limit
        } else {
            (limit * 4).min(MAX_LIST)
        };
        loop {
            let tickets = store
                .list(status, fetch)
                .await
                .map_err(|e| store_problem(&e))?;
            let exhausted = tickets.len() < fetch || fetch >= MAX_LIST;
            let visible: Vec<Ticket> = tickets
                .into_iter()
                .filter(|t| self.can_see(t))
                .take(limit)
                .collect();
            if visible.len() == limit || exhausted {
                return Ok(visible);
            }
            fetch = (fetch * 4).min(MAX_LIST);
        }
    }

    /// The ticket `raw` names, if the caller may see it (expired first if it is due); an
    /// invisible ticket is as unknown as a missing one, so ids cannot be probed.
    pub(crate) async fn ticket(&self, raw: &str) -> Result<Ticket, Problem> {
        let t = self.visible(raw).await?;
        Ok(self.engine().expire_if_due(&t).await.unwrap_or(t))
    }

    /// Ticket `raw` as the store has it, if the caller may see it. Invisible tickets are
    /// unknown (404), like malformed and missing ids, so ids cannot be probed.
    async fn visible(&self, raw: &str) -> Result<Ticket, Problem> {
        let id = TicketId::parse(raw).map_err(|_| not_found())?;
        let store = self.engine().store().map_err(|e| store_problem(&e))?;
        match store.get(&id).await {
            Ok(Some(t)) if self.can_see(&t) => Ok(t),
            Ok(_) => Err(not_found()),
            Err(e) => Err(store_problem(&e)),
        }
    }

    /// The audit events `filter` selects: operators only.
    pub(crate) async fn audit_events(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, Problem> {
        if !self.operator {
            return Err(self.not_an_operator());
        }
        let store = self.engine().store().map_err(|e| store_problem(&e))?;
        store.audit(filter).await.map_err(|e| store_problem(&e))
    }

    /// Whether the caller may see and revoke grant `g` (see [`manages_grant`]), under the
    /// table in force.
    pub(crate) fn may_manage_grant(&self, g: &Grant) -> bool {
        manages_grant(&self.shared.snapshot(), &self.caller, self.operator, g)
    }

    /// The active grants the caller may see (see [`Api::may_manage_grant`]), soonest-ending
    /// first.
    pub(crate) async fn visible_grants(&self) -> Result<Vec<Grant>, Problem> {
        let store = self.engine().store().map_err(|e| store_problem(&e))?;
        let grants = store
            .active_grants(self.now())
            .await
            .map_err(|e| store_problem(&e))?;
        Ok(grants
            .into_iter()
            .filter(|g| self.may_manage_grant(g))
            .collect())
    }

    /// `GET /v1/grants?requester=&route=&state=`.
    async fn grants(&self, query: Option<&str>) -> Response<ProxyBody> {
        let (mut requester, mut route) = (None, None);
        // `None`: every state.
        let mut state = Some(GrantState::Active);
        let pairs = match query_pairs(query) {
            Ok(p) => p,
            Err(p) => return p.into_response(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "requester" => requester = Some(v),
                "route" => route = Some(v),
                "state" if v == "all" => state = None,
                "state" => match GrantState::parse(&v) {
                    Some(s) => state = Some(s),
                    None => {
                        return Problem::bad_request(format!(
                            "state must be one of active, revoked, expired, used_up, all, not `{v}`"
                        ))
                        .into_response()
                    }
                },
                other => {
                    return Problem::bad_request(format!(
                        "unknown query parameter `{other}` (requester, route, state)"
                    ))
                    .into_response()
                }
            }
        }
        let listed = match state {
            Some(GrantState::Active) => self.visible_grants().await,
            other => self.kept_grants(other).await,
        };
        match listed {
            Ok(mut grants) => {
                grants.retain(|g| {
                    requester
                        .as_deref()
                        .is_none_or(|r| g.requester.user.as_deref() == Some(r))
                        && route.as_deref().is_none_or(|r| g.route == r)
                });
                json_body(StatusCode::OK, &GrantList { grants })
            }
            Err(p) => p.into_response(),
        }
    }

    /// Up to 10,000 kept grants in `state` (`None`: any) the caller may see, latest-ending
    /// first.
    async fn kept_grants(&self, state: Option<GrantState>) -> Result<Vec<Grant>, Problem> {
        let store = self.engine().store().map_err(|e| store_problem(&e))?;
        let now = self.now();
        let grants = store
            .recent_grants(MAX_LIST)
            .await
            .map_err(|e| store_problem(&e))?;
        Ok(grants
            .into_iter()
            .filter(|g| state.is_none_or(|s| g.state(now) == s))
            .filter(|g| self.may_manage_grant(g))
            .collect())
    }

    /// `POST /v1/access-requests`: the caller asks for access to an `access` route ahead of
    /// time. A ticket like the one a held request opens (caps, coalescing, duration rules,
    /// `ticket.created`), with an empty request snapshot; its approval creates the grant.
    /// 201 with the new ticket, or 200 with the caller's pending identical one.
    async fn access_request(&self, body: Value) -> Response<ProxyBody> {
        let body: AccessRequest = match parse_body(body) {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        };
        let snap = self.shared.snapshot();
        let Some(route) = snap.table.route(&body.route) else {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-route",
                "Unknown route",
                format!("no route {} in the table in force", body.route),
                Fault::Downstream,
            )
            .into_response();
        };
        let access = route
            .approval
            .as_ref()
            .is_some_and(|p| p.mode == ApprovalMode::Access);
        if route.action != Action::Approve || !access || !route.enforce {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "not-an-access-route",
                "Not an access route",
                format!(
                    "route {} does not grant access (only enforcing approve routes with mode = \"access\" do)",
                    route.name
                ),
                Fault::Downstream,
            )
            .into_response();
        }
        let requested = match body
            .duration
            .as_deref()
            .map(jitgate_rules::units::parse_duration)
        {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                let e = GatewayError::DurationRefused(format!("duration: {e}"));
                return e.problem(Some(route)).into_response();
            }
        };
        let ask = crate::approval::Ask {
            requester: Requester {
                user: Some(self.caller.user.clone()),
                groups: self.caller.groups.clone(),
                anonymous: None,
            },
            source: None,
            reason: body.reason,
            request: ticket::RequestSnapshot::default(),
            requested,
            ahead: true,
            risk: None,
        };
        let cfg = &snap.table.config().approvals;
        match crate::approval::open_ticket(self.engine(), cfg, route, ask).await {
            Ok((t, created, _)) => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut resp = json_body(status, &t);
                if let Ok(v) = HeaderValue::from_str(&format!("/v1/tickets/{}", t.id)) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp
            }
            Err(e) => {
                let mut resp = e.problem(Some(route)).into_response();
                if let GatewayError::TooManyPending { retry_after, .. } = &e {
                    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
                    {
                        resp.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                resp
            }
        }
    }

    async fn revoke_one(&self, raw: &str, body: Value) -> Response<ProxyBody> {
        match parse_body::<RevokeRequest>(body) {
            Ok(b) => match self.revoke(raw, b.reason).await {
                Ok(g) => json_body(StatusCode::OK, &g),
                Err(p) => p.into_response(),
            },
            Err(p) => p.into_response(),
        }
    }

    /// Revokes grant `raw` as the caller. Its next use, on any replica, is refused: every use
    /// is a compare-and-set on the grant in the store, which a revoked grant fails.
    pub(crate) async fn revoke(&self, raw: &str, reason: Option<String>) -> Result<Grant, Problem> {
        let reason = clip(reason);
        let unknown = || {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-grant",
                "Unknown grant",
                "no grant with this id is visible to you",
                Fault::Downstream,
            )
        };
        let id = GrantId::parse(raw).map_err(|_| unknown())?;
        let engine = self.engine();
        let store = engine.store().map_err(|e| store_problem(&e))?;
        // Invisible grants are unknown, so ids cannot be probed.
        match store.get_grant(&id).await {
            Ok(Some(g)) if self.may_manage_grant(&g) => {}
            Ok(_) => return Err(unknown()),
            Err(e) => return Err(store_problem(&e)),
        }
        let now = engine.now();
        let who = self.caller.user.clone();
        let audit = |_: &Grant, g: &Grant| {
            vec![AuditDraft {
                at: now,
                kind: AuditKind::GrantRevoked,
                ticket: g.ticket.clone(),
                actor: Some(who.clone()),
                requester: Some(g.requester.key().to_string()),
                route: Some(g.route.clone()),
                detail: json!({ "grant": g.id.to_string(), "reason": reason, "uses": g.uses }),
            }]
        };
        let revoked = store
            .transition_grant(&id, &|g| ticket::revoke(g, now), &audit)
            .await
            .map_err(|e| match e {
                StoreError::Transition(t) => Problem::new(
                    StatusCode::CONFLICT,
                    "grant-not-active",
                    "Grant not active",
                    t.to_string(),
                    Fault::Downstream,
                ),
                other => store_problem(&other),
            })?;
        tracing::info!(grant = %revoked.id, route = %revoked.route, by = %self.caller.user, "grant revoked");
        Ok(revoked)
    }

    async fn decide_one(&self, raw: &str, approve: bool, body: Value) -> Response<ProxyBody> {
        let parsed = if approve {
            parse_body::<ApproveRequest>(body).and_then(|b| Ok((b.comment, also_terms(b.also)?)))
        } else {
            parse_body::<DenyRequest>(body).map(|b| (b.reason, None))
        };
        match parsed {
            Ok((text, also)) => match self.decide(raw, approve, text, also).await {
                Ok(t) => json_body(StatusCode::OK, &t),
                Err(p) => p.into_response(),
            },
            Err(p) => p.into_response(),
        }
    }

    async fn decide_batch(&self, body: Value) -> Response<ProxyBody> {
        let body: DecideRequest = match parse_body(body) {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        };
        let approve = body.decision == Decision::Approve;
        let text = if approve { body.comment } else { body.reason };
        let outcomes = match self.decide_many(&body.ids, approve, text).await {
            Ok(o) => o,
            Err(p) => return p.into_response(),
        };
        let results = body
            .ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| match outcome {
                Ok(t) => DecideItem::Decided {
                    id,
                    status: 200,
                    ticket: Box::new(t),
                },
                Err(p) => DecideItem::Refused {
                    id,
                    status: p.status.as_u16(),
                    problem: p.body(),
                },
            })
            .collect();
        json_body(StatusCode::OK, &DecideResult { results })
    }

    /// Decides each of `ids` as [`Api::decide`] does one, in as few store round trips as the
    /// store allows (one read of them all, then batched transitions); the outcomes are in
    /// the order of `ids`. Refused whole (400) unless `ids` lists 1 to 10,000 tickets.
    pub(crate) async fn decide_many(
        &self,
        ids: &[String],
        approve: bool,
        text: Option<String>,
    ) -> Result<Vec<Result<Ticket, Problem>>, Problem> {
        if ids.is_empty() || ids.len() > MAX_BATCH {
            return Err(Problem::bad_request(format!(
                "ids must list 1 to {MAX_BATCH} tickets"
            )));
        }
        let text = clip(text);
        let engine = self.engine();
        let store = engine.store().map_err(|e| store_problem(&e))?;
        let parsed: Vec<Option<TicketId>> =
            ids.iter().map(|raw| TicketId::parse(raw).ok()).collect();
        let known: Vec<TicketId> = parsed.iter().flatten().cloned().collect();
        let tickets = store
            .get_many(&known)
            .await
            .map_err(|e| store_problem(&e))?;
        // Tickets the caller may not see are unknown to them (404), as one at a time; one that
        // cannot be read is that ticket's problem alone.
        let mut unreadable: HashMap<TicketId, Problem> = HashMap::new();
        let mut visible: Vec<TicketId> = Vec::new();
        for (id, t) in known.iter().zip(tickets) {
            match t {
                Ok(Some(t)) if self.can_see(&t) => visible.push(id.clone()),
                Ok(_) => {}
                Err(e) => {
                    unreadable.insert(id.clone(), store_problem(&e));
                }
            }
        }
        let who = &self.caller;
        // Each ticket is judged, and its events dated, when it is decided: a batch over
        // thousands takes seconds, and a ticket may expire meanwhile.
        let audit = |before: &Ticket, t: &Ticket| {
            decision_events(approve, &text, None, who, engine.now(), before, t)
        };
        let results = if approve {
            store
                .transition_many(
                    &visible,
                    &|t| ticket::approve_also(t, who, text.clone(), None, engine.now()),
                    &audit,
                )
                .await
        } else {
            store
                .transition_many(
                    &visible,
                    &|t| ticket::deny(t, who, text.clone(), engine.now()),
                    &audit,
                )
                .await
        }
        .map_err(|e| store_problem(&e))?;
        // `visible` keeps the order of `ids`: each result is the next one's, if its id is next.
        let mut results = visible.into_iter().zip(results).peekable();
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in &parsed {
            let outcome = match id {
                Some(id) => match results.next_if(|(v, _)| v == id) {
                    Some((id, result)) => self.decided(result.map_err(|e| (e, id)), approve).await,
                    None => Err(unreadable.get(id).cloned().unwrap_or_else(not_found)),
                },
                None => Err(not_found()),
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Approves or denies one ticket as the caller: the comment (approval) or reason (denial)
    /// is trimmed and clipped, invisible tickets are unknown (404), and the pure transition
    /// judges the rest (approver lists, self-approval, quorum, expiry 409).
    pub(crate) async fn decide(
        &self,
        raw: &str,
        approve: bool,
        text: Option<String>,
        also: Option<AlsoTerms>,
    ) -> Result<Ticket, Problem> {
        let text = clip(text);
        let id = self.visible(raw).await?.id;
        let engine = self.engine();
        let store = engine.store().map_err(|e| store_problem(&e))?;
        let who = &self.caller;
        let now = engine.now();
        // The decision, and the grant an approved access ticket gets (the store writes it
        // with the transition), are recorded with the change itself.
        let audit = |before: &Ticket, t: &Ticket| {
            decision_events(approve, &text, also, who, now, before, t)
        };
        let result = if approve {
            store
                .transition(
                    &id,
                    &|t| ticket::approve_also(t, who, text.clone(), also, now),
                    &audit,
                )
                .await
        } else {
            store
                .transition(&id, &|t| ticket::deny(t, who, text.clone(), now), &audit)
                .await
        };
        self.decided(result.map_err(|e| (e, id)), approve).await
    }

    /// What a decision's store outcome means for the caller: the decided ticket (counted and
    /// logged), or the problem. An expiry the decision ran into is recorded, then refused
    /// with 409.
    async fn decided(
        &self,
        result: Result<Ticket, (StoreError, TicketId)>,
        approve: bool,
    ) -> Result<Ticket, Problem> {
        let engine = self.engine();
        let t = match result {
            Ok(t) => t,
            Err((StoreError::Transition(TransitionError::Expired), id)) => {
                if let Ok(store) = engine.store() {
                    if let Ok(Some(t)) = store.get(&id).await {
                        engine.expire_if_due(&t).await;
                    }
                }
                return Err(transition_problem(&TransitionError::Expired));
            }
            Err((e, _)) => return Err(store_problem(&e)),
        };
        engine.metrics().ticket_transition(&t, engine.now());
        tracing::info!(ticket = %t.id, route = %t.route, by = %self.caller.user, status = %t.status, approve, "decision recorded");
        if t.status == Status::Approved && t.mode == Mode::Access && t.grant_terms.is_none() {
            tracing::warn!(ticket = %t.id, route = %t.route, "approved access ticket without grant terms; no grant");
        }
        Ok(t)
    }

    /// Acknowledges a break-glass ticket in `REVIEW` as the caller (one of its approvers; not
    /// its requester unless the route allows self-approval): it becomes `EXECUTED`, audited
    /// as `ticket.acknowledged` with the comment.
    pub(crate) async fn acknowledge(
        &self,
        raw: &str,
        comment: Option<String>,
    ) -> Result<Ticket, Problem> {
        let comment = clip(comment);
        let id = self.visible(raw).await?.id;
        let engine = self.engine();
        let store = engine.store().map_err(|e| store_problem(&e))?;
        let who = &self.caller;
        let now = engine.now();
        let audit = |_: &Ticket, t: &Ticket| {
            vec![AuditDraft::about(
                AuditKind::TicketAcknowledged,
                t,
                Some(&who.user),
                json!({ "comment": comment, "breakGlass": t.break_glass }),
                now,
            )]
        };
        let t = store
            .transition(
                &id,
                &|t| ticket::acknowledge(t, who, comment.clone(), now),
                &audit,
            )
            .await
            .map_err(|e| store_problem(&e))?;
        tracing::info!(ticket = %t.id, route = %t.route, by = %who.user, "break-glass ticket acknowledged");
        Ok(t)
    }

    /// `PUT /v1/admin/rules/source` (see [`Shared::replace_source`]). The body is the new
    /// file; it is never logged.
    async fn put_source(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let shared = self.shared;
        let if_match = match if_match_versions(req.headers()) {
            Ok(v) => v,
            Err(p) => return p.into_response(),
        };
        let source = match read_body(req, MAX_SOURCE, "rule tables").await {
            Ok(b) => b,
            Err(p) => return p.into_response(),
        };
        let refused = match shared
            .replace_source(&if_match, source.to_vec(), &self.caller.user)
            .await
        {
            Ok(applied) => {
                let mut resp = applied_response(&applied);
                if let Some(tag) = etag(&applied.version) {
                    resp.headers_mut().insert(header::ETAG, tag);
                }
                return resp;
            }
            Err(refused) => refused,
        };
        let file = shared.config_path().display().to_string();
        let (problem, current) = match refused {
            SourceRefused::Invalid(rejected) => {
                return invalid_config(
                    shared,
                    rejected,
                    "the file and the running table are unchanged",
                )
            }
            SourceRefused::Stale { current } => (
                Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "stale-version",
                    "Rule table changed",
                    format!(
                        "If-Match does not name the version in force, {current}: get the \
                         source again, redo the edit on it, and send it with its ETag"
                    ),
                    Fault::Downstream,
                )
                .with("currentVersion", current.clone()),
                current,
            ),
            SourceRefused::DiskChanged { current, on_disk } => (
                Problem::new(
                    StatusCode::CONFLICT,
                    "config-changed-on-disk",
                    "Config file changed on disk",
                    format!(
                        "{file} holds version {on_disk}, not the table in force ({current}): an \
                         edit there is not applied yet or was rejected (see lastReloadError in \
                         GET /v1/admin/rules); replacing the file would lose it, so nothing was \
                         changed. Reload or fix the file first"
                    ),
                    Fault::Downstream,
                )
                .with("currentVersion", current.clone())
                .with("diskVersion", on_disk),
                current,
            ),
            SourceRefused::NotWritable(m) => (
                Problem::new(
                    StatusCode::CONFLICT,
                    "config-not-writable",
                    "Config file not writable",
                    format!("{m}; nothing was changed"),
                    Fault::Downstream,
                ),
                shared.snapshot().table.version().to_string(),
            ),
            SourceRefused::Io(m) => (
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "config-write-failed",
                    "Config file not written",
                    format!("{m}; the file and the running table are unchanged"),
                    Fault::Internal,
                ),
                shared.snapshot().table.version().to_string(),
            ),
        };
        let mut resp = problem.into_response();
        if let Some(tag) = etag(&current) {
            resp.headers_mut().insert(header::ETAG, tag);
        }
        resp
    }

    async fn audit(&self, query: Option<&str>) -> Response<ProxyBody> {
        if let Some(refused) = self.operator_only() {
            return refused;
        }
        let filter = match audit_filter(query) {
            Ok(f) => f,
            Err(p) => return p.into_response(),
        };
        let store = match self.engine().store() {
            Ok(s) => s,
            Err(e) => return store_problem(&e).into_response(),
        };
        match store.audit_page(&filter).await {
            Ok(page) => {
                let body = AuditPage {
                    events: page.events,
                    next_cursor: page.next.map(cursor_of),
                };
                json_body(StatusCode::OK, &body)
            }
            Err(e) => store_problem(&e).into_response(),
        }
    }
}

/// The query parameters `GET /v1/audit` takes.
const AUDIT_PARAMS: &str = "ticket, requester, route, kind, since, until, cursor, limit";

/// The filter of a `GET /v1/audit` query. Each parameter may be given once.
fn audit_filter(query: Option<&str>) -> Result<AuditFilter, Problem> {
    let mut filter = AuditFilter {
        limit: 1000,
        ..AuditFilter::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in query_pairs(query)? {
        let bad = |what: String| Problem::bad_request(what);
        if !seen.insert(k.clone()) {
            return Err(bad(format!("`{k}` is given more than once")));
        }
        let time = |v: &str| {
            Timestamp::parse_rfc3339(v)
                .map_err(|_| bad(format!("{k} must be an RFC 3339 timestamp, not `{v}`")))
        };
        match k.as_str() {
            "ticket" => {
                let id = TicketId::parse(&v)
                    .map_err(|_| bad("ticket must be a ticket id (jit_...)".into()))?;
                filter.ticket = Some(id);
            }
            "requester" => filter.requester = Some(v),
            "route" if v.is_empty() => return Err(bad("route must not be empty".into())),
            "route" => filter.route = Some(v),
            "kind" => {
                let kind = AuditKind::parse(&v).ok_or_else(|| {
                    let kinds: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
                    bad(format!(
                        "kind must be one of {}, not `{v}`",
                        kinds.join(", ")
                    ))
                })?;
                filter.kind = Some(kind);
            }
            "since" => filter.since = Some(time(&v)?),
            "until" => filter.until = Some(time(&v)?),
            "cursor" => {
                filter.after = parse_cursor(&v).ok_or_else(|| {
                    bad(
                        "cursor is not one this API returned (pass a page's nextCursor as is)"
                            .into(),
                    )
                })?
            }
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => filter.limit = n,
                _ => return Err(bad("limit must be between 1 and 10000".into())),
            },
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{other}` ({AUDIT_PARAMS})"
                )))
            }
        }
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if since >= until {
            return Err(Problem::bad_request("since must be before until"));
        }
    }
    Ok(filter)
}

/// What a `nextCursor` starts with: a version, so the encoding can change.
const CURSOR_PREFIX: &str = "c1.";

/// The cursor of the position after event `seq`. Clients treat it as opaque.
fn cursor_of(seq: u64) -> String {
    format!("{CURSOR_PREFIX}{seq}")
}

/// The position a cursor stands for; `None` for anything [`cursor_of`] does not make.
fn parse_cursor(s: &str) -> Option<u64> {
    let digits = s.strip_prefix(CURSOR_PREFIX)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = digits.parse().ok()?;
    (cursor_of(seq) == s).then_some(seq)
}

#[cfg(test)]
mod tests;
