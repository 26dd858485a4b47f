//! The approvers' web page at `/ui/` on the admin plane (SPEC section 9): server-rendered
//! HTML, a little JavaScript served from the binary, no front-end build.
//!
//! - Sign-in exchanges a pasted bearer credential (admin API token or admin JWT, authenticated
//!   by `[admin]` exactly as the API authenticates one) for a session cookie ([`session`]).
//! - Every decision goes through [`Api`], the code the JSON API runs: approver lists, quorum,
//!   self-approval, expiry and visibility are judged there and nowhere else.
//! - Every POST must come from this origin (`Origin`, `Sec-Fetch-Site`) and carry the
//!   session's CSRF token; every answer carries a strict Content-Security-Policy and is never
//!   cached. Inline scripts and styles are refused by that policy, so there are none.
//!
//! The pending list reloads itself every few seconds while the approver is not busy with it
//! (`ui.js`). That poll is the seam for an event stream: when one exists, `ui.js` can listen
//! to it instead and reload only when a ticket changes.

pub mod pages;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt as _;
use maud::Markup;

use jitgate_identity::Identity;
use jitgate_rules::ticket::{Status, TicketId};
use jitgate_store::AuditFilter;

use crate::admin::{query_pairs, Api, Authenticated};
use crate::body::ProxyBody;
use crate::problem::Problem;
use crate::state::Shared;

use pages::{Chrome, Trail};
pub use session::Sessions;
use session::{Flash, Session};

/// The stylesheet, served at `/ui/assets/ui.css`.
const CSS: &str = include_str!("ui/assets/ui.css");
/// The script, served at `/ui/assets/ui.js`.
const JS: &str = include_str!("ui/assets/ui.js");

/// The Content-Security-Policy of every answer under `/ui/`.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form read (a batch decision of thousands of ticket ids).
const MAX_FORM: usize = 512 * 1024;
/// Largest sign-in form read.
const MAX_SIGNIN_FORM: usize = 16 * 1024;
/// Longest credential accepted at sign-in.
const MAX_CREDENTIAL: usize = 8 * 1024;
/// The most tickets the pending list shows.
const LIST_LIMIT: usize = 500;
/// The most audit events a ticket page shows.
const TRAIL_LIMIT: usize = 500;
/// How long a form body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the admin plane serves `path` from the web page.
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Serves one request under `/ui`. `tls`: whether the connection spoke TLS (the session
/// cookie is then `Secure`).
pub async fn handle<B>(shared: &Arc<Shared>, req: Request<B>, tls: bool) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let ui = Ui {
        shared,
        parts: &parts,
        tls,
    };
    let mut resp = ui.route(body).await;
    harden(resp.headers_mut());
    resp
}

/// The headers every answer under `/ui/` carries.
fn harden(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    set(h, "x-frame-options", "DENY");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
}

/// A page the request cannot be served past (refusals, errors), shown as HTML.
struct Refusal {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Refusal {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            title,
            detail: detail.into(),
        }
    }

    fn from_problem(p: &Problem) -> Refusal {
        Refusal::new(p.status, p.title, p.detail.clone())
    }
}

/// One signed-in approver's request.
struct Signed<'a> {
    /// The cookie value.
    id: String,
    session: Session,
    api: Api<'a>,
}

impl Signed<'_> {
    fn chrome(&self, flash: Option<Flash>) -> Chrome<'_> {
        Chrome {
            user: Some(&self.session.user),
            operator: self.api.is_operator(),
            csrf: Some(&self.session.csrf),
            flash,
        }
    }
}

/// One request under `/ui`.
struct Ui<'a> {
    shared: &'a Arc<Shared>,
    parts: &'a Parts,
    tls: bool,
}

impl<'a> Ui<'a> {
    async fn route<B>(&self, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = self.parts.uri.path();
        let method = &self.parts.method;
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let rest = path.strip_prefix("/ui/");
        let segments: Vec<&str> = rest.map(|r| r.split('/').collect()).unwrap_or_default();
        match (path, segments.as_slice()) {
            ("/ui", _) if get => redirect("/ui/", StatusCode::PERMANENT_REDIRECT),
            (_, ["assets", "ui.css"]) if get => asset(CSS, "text/css; charset=utf-8"),
            (_, ["assets", "ui.js"]) if get => asset(JS, "text/javascript; charset=utf-8"),
            (_, ["signin"]) if get => self.signin_form(),
            (_, ["signin"]) if post => self.signin(body).await,
            (_, ["signout"]) if post => self.signout(body).await,
            (_, [""]) if get => self.pending().await,
            (_, ["decide"]) if post => self.decide_batch(body).await,
            (_, ["grants"]) if get => self.grants().await,
            (_, ["grants", id, "revoke"]) if post => self.revoke(id, body).await,
            (_, ["tickets", id]) if get => self.ticket(id).await,
            (_, ["tickets", id, "decide"]) if post => self.decide_one(id, body).await,
            _ => match allowed(path, &segments) {
                Some(allow) => {
                    let mut resp = self.refusal(&Refusal::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "Method not allowed",
                        format!("{method} is not served at {path}; {allow} is"),
                    ));
                    if let Ok(v) = HeaderValue::from_str(allow) {
                        resp.headers_mut().insert(header::ALLOW, v);
                    }
                    resp
                }
                None => self.refusal(&Refusal::new(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "There is no page here.",
                )),
            },
        }
    }

    // === sessions ===

    /// The signed-in approver, if the request carries a live session whose credential the
    /// table in force still accepts (a session whose credential it refuses is ended).
    fn signed_in(&self) -> Option<Signed<'a>> {
        let sessions = self.shared.ui_sessions();
        let snap = self.shared.snapshot();
        for value in session::cookies(&self.parts.headers, session::COOKIE) {
            if !session::well_formed(value) {
                continue;
            }
            let Some(s) = sessions.get(value) else {
                continue;
            };
            match authenticate(self.shared, &s.credential) {
                Some(identity) if identity.subject() == s.user => {
                    return Some(Signed {
                        id: value.to_string(),
                        api: Api::new(self.shared, &snap, &identity),
                        session: s,
                    });
                }
                _ => {
                    tracing::info!(user = %s.user, "web session ended: its credential is no longer accepted");
                    sessions.remove(value);
                }
            }
        }
        None
    }

    /// The checks every POST but sign-in passes, in order: same origin, a session, a form
    /// within `MAX_FORM`, and the session's CSRF token in it.
    async fn post_as<B>(&self, body: B) -> Result<(Signed<'a>, Form), Response<ProxyBody>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.same_origin().map_err(|r| self.refusal(&r))?;
        let Some(signed) = self.signed_in() else {
            return Err(self.refusal(&Refusal::new(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Your session has ended or was never opened; sign in again.",
            )));
        };
        let form = read_form(&self.parts.headers, body, MAX_FORM)
            .await
            .map_err(|r| self.refusal_as(&signed, &r))?;
        let token_ok = form
            .one("csrf")
            .is_some_and(|t| session::tokens_match(&signed.session.csrf, t));
        if !token_ok {
            tracing::info!(user = %signed.session.user, path = %self.parts.uri.path(), "web form refused: CSRF token missing or wrong");
            return Err(self.refusal_as(&signed, &csrf_refusal()));
        }
        Ok((signed, form))
    }

    /// Refuses a POST that a browser says came from another origin. A browser that sends
    /// `Sec-Fetch-Site` (which no page can forge) must say `same-origin`; one that does not
    /// must send an `Origin` naming this host. An `Origin` that names another host is refused
    /// either way; `Origin: null` is what browsers send for a same-origin form under
    /// `Referrer-Policy: no-referrer`, so it counts only beside `Sec-Fetch-Site: same-origin`.
    /// A request with neither header (no browser sends a POST like that) is refused. Only the
    /// authority is compared, so the page also works behind a proxy that terminates TLS, but
    /// over TLS an `http:` origin is refused.
    fn same_origin(&self) -> Result<(), Refusal> {
        let h = &self.parts.headers;
        let refuse = |why: &str| {
            tracing::info!(path = %self.parts.uri.path(), "web form refused: {why}");
            Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "Cross-site request refused",
                format!("This form was not sent from this page ({why})."),
            ))
        };
        let fetch_site: Vec<&HeaderValue> = h.get_all("sec-fetch-site").iter().collect();
        let vouched = match fetch_site.as_slice() {
            [] => false,
            [v] if v.as_bytes() == b"same-origin" => true,
            _ => return refuse("Sec-Fetch-Site is not same-origin"),
        };
        let origins: Vec<&HeaderValue> = h.get_all(header::ORIGIN).iter().collect();
        let host = self
            .parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| h.get(header::HOST).and_then(|v| v.to_str().ok()));
        match origins.as_slice() {
            [] if vouched => Ok(()),
            [] => refuse("neither Origin nor Sec-Fetch-Site was sent"),
            [origin] if origin.as_bytes() == b"null" => {
                if vouched {
                    Ok(())
                } else {
                    refuse("Origin is null")
                }
            }
            [origin] => {
                let origin = origin.to_str().unwrap_or("");
                let (scheme, authority) = origin.split_once("://").unwrap_or(("", ""));
                let scheme_ok = scheme == "https" || (scheme == "http" && !self.tls);
                match host {
                    Some(host) if scheme_ok && authority.eq_ignore_ascii_case(host) => Ok(()),
                    _ => refuse("Origin is another site"),
                }
            }
            _ => refuse("more than one Origin"),
        }
    }

    // === pages ===

    fn signin_form(&self) -> Response<ProxyBody> {
        if self.signed_in().is_some() {
            return redirect("/ui/", StatusCode::SEE_OTHER);
        }
        self.signin_page(StatusCode::OK, None)
    }

    /// The sign-in form with a fresh token (and its cookie).
    fn signin_page(&self, status: StatusCode, error: Option<&str>) -> Response<ProxyBody> {
        let Ok((nonce, token)) = self.shared.ui_sessions().signin_pair() else {
            return self.refusal(&no_random());
        };
        let mut resp = html(status, pages::signin(&token, error));
        set_cookie(
            &mut resp,
            &session::set_cookie(
                session::SIGNIN_COOKIE,
                &nonce,
                session::SIGNIN_TTL,
                self.tls,
            ),
        );
        resp
    }

    async fn signin<B>(&self, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Err(r) = self.same_origin() {
            return self.refusal(&r);
        }
        let form = match read_form(&self.parts.headers, body, MAX_SIGNIN_FORM).await {
            Ok(f) => f,
            Err(r) => return self.refusal(&r),
        };
        let sessions = self.shared.ui_sessions();
        let token_ok = form.one("csrf").is_some_and(|token| {
            session::cookies(&self.parts.headers, session::SIGNIN_COOKIE)
                .filter(|n| session::well_formed(n))
                .any(|nonce| sessions.signin_matches(nonce, token))
        });
        if !token_ok {
            return self.signin_page(
                StatusCode::FORBIDDEN,
                Some("The sign-in form was out of date or did not come from this page; try again."),
            );
        }
        let credential = form.one("token").map(str::trim).unwrap_or("");
        if credential.is_empty() || credential.len() > MAX_CREDENTIAL {
            return self.signin_page(
                StatusCode::UNAUTHORIZED,
                Some("Paste an admin API token or an admin JWT."),
            );
        }
        let Some(identity) = authenticate(self.shared, credential) else {
            tracing::info!("web sign-in refused: credential not accepted");
            return self.signin_page(
                StatusCode::UNAUTHORIZED,
                Some("This credential is not accepted by the admin plane."),
            );
        };
        let user = identity.subject().to_string();
        // A session this browser already had is replaced, not left behind.
        for old in session::cookies(&self.parts.headers, session::COOKIE) {
            if session::well_formed(old) {
                sessions.remove(old);
            }
        }
        let id = match sessions.open(credential, &user) {
            Ok(id) => id,
            Err(e) => {
                return self.refusal(&Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Cannot sign in now",
                    e.to_string(),
                ))
            }
        };
        tracing::info!(%user, "web sign-in");
        let mut resp = redirect("/ui/", StatusCode::SEE_OTHER);
        set_cookie(
            &mut resp,
            &session::set_cookie(session::COOKIE, &id, session::SESSION_TTL, self.tls),
        );
        set_cookie(
            &mut resp,
            &session::set_cookie(session::SIGNIN_COOKIE, "", Duration::ZERO, self.tls),
        );
        resp
    }

    async fn signout<B>(&self, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signed, _) = match self.post_as(body).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        self.shared.ui_sessions().remove(&signed.id);
        tracing::info!(user = %signed.session.user, "web sign-out");
        let mut resp = redirect("/ui/signin", StatusCode::SEE_OTHER);
        set_cookie(
            &mut resp,
            &session::set_cookie(session::COOKIE, "", Duration::ZERO, self.tls),
        );
        resp
    }

    async fn pending(&self) -> Response<ProxyBody> {
        let Some(signed) = self.signed_in() else {
            return to_signin();
        };
        let now = signed.api.now();
        match signed
            .api
            .visible_tickets(Some(Status::Pending), LIST_LIMIT)
            .await
        {
            Ok(mut tickets) => {
                // Past their expiry but not yet swept: no longer decidable.
                tickets.retain(|t| t.expires_at > now);
                tickets.sort_by_key(|t| (t.expires_at, t.id.clone()));
                let flash = self.shared.ui_sessions().take_flash(&signed.id);
                authenticated(html(
                    StatusCode::OK,
                    pages::pending(&signed.chrome(flash), &tickets, now),
                ))
            }
            Err(p) => self.refusal_as(&signed, &Refusal::from_problem(&p)),
        }
    }

    async fn ticket(&self, raw: &str) -> Response<ProxyBody> {
        let Some(signed) = self.signed_in() else {
            return to_signin();
        };
        let t = match signed.api.ticket(raw).await {
            Ok(t) => t,
            Err(p) => return self.refusal_as(&signed, &Refusal::from_problem(&p)),
        };
        // The audit log follows the API's rule: operators read it, others do not.
        let events;
        let why;
        let trail = if signed.api.is_operator() {
            let filter = AuditFilter {
                ticket: Some(t.id.clone()),
                limit: TRAIL_LIMIT,
                ..AuditFilter::default()
            };
            match signed.api.audit_events(&filter).await {
                Ok(e) => {
                    events = e;
                    Trail::Events(&events)
                }
                Err(p) => {
                    why = p.detail;
                    Trail::Unavailable(&why)
                }
            }
        } else {
            Trail::OperatorsOnly
        };
        let flash = self.shared.ui_sessions().take_flash(&signed.id);
        let now = signed.api.now();
        authenticated(html(
            StatusCode::OK,
            pages::ticket(&signed.chrome(flash), &t, now, &trail),
        ))
    }

    async fn grants(&self) -> Response<ProxyBody> {
        let Some(signed) = self.signed_in() else {
            return to_signin();
        };
        match signed.api.visible_grants().await {
            Ok(grants) => {
                let flash = self.shared.ui_sessions().take_flash(&signed.id);
                let now = signed.api.now();
                authenticated(html(
                    StatusCode::OK,
                    pages::grants(&signed.chrome(flash), &grants, now),
                ))
            }
            Err(p) => self.refusal_as(&signed, &Refusal::from_problem(&p)),
        }
    }

    /// Revokes a grant (the same rules as `POST /v1/grants/{id}/revoke`), back to the list.
    async fn revoke<B>(&self, raw: &str, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signed, form) = match self.post_as(body).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let reason = form.one("reason").map(str::to_string);
        match signed.api.revoke(raw, reason).await {
            Ok(g) => {
                self.shared.ui_sessions().set_flash(
                    &signed.id,
                    Flash {
                        ok: true,
                        lines: vec![format!("Grant {} revoked.", g.id)],
                    },
                );
                authenticated(redirect("/ui/grants", StatusCode::SEE_OTHER))
            }
            Err(p) => authenticated(html(
                p.status,
                pages::error(
                    &signed.chrome(None),
                    p.status.as_u16(),
                    p.title,
                    &p.detail,
                    Some("/ui/grants"),
                ),
            )),
        }
    }

    // === decisions ===

    async fn decide_one<B>(&self, raw: &str, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signed, form) = match self.post_as(body).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let comment = form.one("comment").map(str::to_string);
        let outcome = if form.one("decision") == Some("acknowledge") {
            signed
                .api
                .acknowledge(raw, comment)
                .await
                .map(|t| (format!("{}: acknowledged", t.id), t))
        } else {
            let approve = match verdict(&form) {
                Ok(a) => a,
                Err(r) => return self.refusal_as(&signed, &r),
            };
            // "Approve this and the next N": both fields, or neither.
            let uses = form
                .one("also_uses")
                .map(str::trim)
                .filter(|v| !v.is_empty());
            let within = form
                .one("also_within")
                .map(str::trim)
                .filter(|v| !v.is_empty());
            let also = match (approve, uses, within) {
                (_, None, None) => Ok(None),
                (true, Some(u), Some(w)) => match u.parse::<u32>() {
                    Ok(uses) => crate::admin::also_terms(Some(crate::contract::AlsoRequest {
                        uses,
                        within: w.to_string(),
                    })),
                    Err(_) => Err(Problem::bad_request(
                        "the number of more requests is not a number",
                    )),
                },
                (true, _, _) => Err(Problem::bad_request(
                    "give both how many more requests and within how long, or neither",
                )),
                (false, _, _) => Ok(None),
            };
            match also {
                Ok(also) => signed
                    .api
                    .decide(raw, approve, comment, also)
                    .await
                    .map(|t| (outcome_line(&t, approve), t)),
                Err(p) => Err(p),
            }
        };
        match outcome {
            Ok((line, t)) => {
                self.shared.ui_sessions().set_flash(
                    &signed.id,
                    Flash {
                        ok: true,
                        lines: vec![line],
                    },
                );
                authenticated(redirect(
                    &format!("/ui/tickets/{}", t.id),
                    StatusCode::SEE_OTHER,
                ))
            }
            Err(p) => {
                let back = TicketId::parse(raw)
                    .ok()
                    .map(|id| format!("/ui/tickets/{id}"));
                authenticated(html(
                    p.status,
                    pages::error(
                        &signed.chrome(None),
                        p.status.as_u16(),
                        p.title,
                        &p.detail,
                        back.as_deref(),
                    ),
                ))
            }
        }
    }

    async fn decide_batch<B>(&self, body: B) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signed, form) = match self.post_as(body).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let approve = match verdict(&form) {
            Ok(a) => a,
            Err(r) => return self.refusal_as(&signed, &r),
        };
        let ids: Vec<String> = form.all("id").map(str::to_string).collect();
        let comment = form.one("comment").map(str::to_string);
        let flash = match signed.api.decide_many(&ids, approve, comment).await {
            Ok(outcomes) => {
                let ok = outcomes.iter().all(Result::is_ok);
                let lines = ids
                    .iter()
                    .zip(outcomes)
                    .map(|(id, outcome)| match outcome {
                        Ok(t) => outcome_line(&t, approve),
                        Err(p) => format!("{id}: refused: {}", p.detail),
                    })
                    .collect();
                Flash { ok, lines }
            }
            Err(_) if ids.is_empty() => Flash {
                ok: false,
                lines: vec!["Select at least one ticket.".into()],
            },
            Err(p) => Flash {
                ok: false,
                lines: vec![p.detail],
            },
        };
        self.shared.ui_sessions().set_flash(&signed.id, flash);
        authenticated(redirect("/ui/", StatusCode::SEE_OTHER))
    }

    // === answers ===

    /// A refusal page for whoever is asking (signed in or not).
    fn refusal(&self, r: &Refusal) -> Response<ProxyBody> {
        match self.signed_in() {
            Some(signed) => self.refusal_as(&signed, r),
            None => html(
                r.status,
                pages::error(
                    &Chrome::anonymous(),
                    r.status.as_u16(),
                    r.title,
                    &r.detail,
                    None,
                ),
            ),
        }
    }

    fn refusal_as(&self, signed: &Signed<'_>, r: &Refusal) -> Response<ProxyBody> {
        authenticated(html(
            r.status,
            pages::error(
                &signed.chrome(None),
                r.status.as_u16(),
                r.title,
                &r.detail,
                None,
            ),
        ))
    }
}

/// Where a page sends someone who is not signed in.
fn to_signin() -> Response<ProxyBody> {
    redirect("/ui/signin", StatusCode::SEE_OTHER)
}

/// Authenticates a pasted or stored bearer credential exactly as the admin API does.
fn authenticate(shared: &Shared, credential: &str) -> Option<Identity> {
    let value = HeaderValue::from_str(&format!("Bearer {credential}")).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    shared
        .snapshot()
        .admin_auth
        .authenticate(&headers)
        .ok()
        .filter(|id| !id.is_anonymous())
}

/// What the flash says about a decision that was recorded.
fn outcome_line(t: &jitgate_rules::ticket::Ticket, approve: bool) -> String {
    match (approve, t.status) {
        (true, Status::Pending) => format!(
            "{}: approval recorded ({} of {}); more approvers are needed",
            t.id,
            t.approvals.len(),
            t.quorum
        ),
        (true, _) => format!("{}: approved", t.id),
        (false, _) => format!("{}: denied", t.id),
    }
}

fn verdict(form: &Form) -> Result<bool, Refusal> {
    match form.one("decision") {
        Some("approve") => Ok(true),
        Some("deny") => Ok(false),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Malformed form",
            "decision must be approve or deny",
        )),
    }
}

fn csrf_refusal() -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form was out of date or did not come from this page (its CSRF token is missing or \
         wrong). Reload the page and try again.",
    )
}

fn no_random() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Cannot sign in now",
        "The gateway could not draw random bytes for a session.",
    )
}

/// The methods served at a known path, for 405.
fn allowed(path: &str, segments: &[&str]) -> Option<&'static str> {
    match (path, segments) {
        ("/ui", _) | (_, [""] | ["grants"] | ["tickets", _] | ["assets", "ui.css" | "ui.js"]) => {
            Some("GET, HEAD")
        }
        (_, ["signin"]) => Some("GET, HEAD, POST"),
        (_, ["signout"] | ["decide"] | ["tickets", _, "decide"] | ["grants", _, "revoke"]) => {
            Some("POST")
        }
        _ => None,
    }
}

/// A decoded `application/x-www-form-urlencoded` body.
struct Form(Vec<(String, String)>);

impl Form {
    /// The value of a field sent exactly once.
    fn one<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        let mut values = self.all(name);
        match (values.next(), values.next()) {
            (Some(v), None) => Some(v),
            _ => None,
        }
    }

    /// Every value of a field, in order.
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_form<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Form, Refusal>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Not a form",
            "Forms are sent as application/x-www-form-urlencoded.",
        ));
    }
    let limited = http_body_util::Limited::new(body, limit);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) => {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                format!("Forms are at most {limit} bytes."),
            ))
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "Form incomplete",
                "The form did not arrive in time.",
            ))
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
    query_pairs(Some(text)).map(Form).map_err(|_| malformed())
}

fn malformed() -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "Malformed form",
        "The form could not be read.",
    )
}

fn html(status: StatusCode, markup: Markup) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(markup.into_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn asset(text: &'static str, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(text.as_bytes())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn redirect(location: &str, status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn set_cookie(resp: &mut Response<ProxyBody>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Marks an answer to a signed-in approver (the admin plane keeps such connections).
fn authenticated(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    resp.extensions_mut().insert(Authenticated);
    resp
}

#[cfg(test)]
mod tests;
