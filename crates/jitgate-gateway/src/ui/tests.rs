//! The web page's handlers, called in process with the memory store: escaping of everything a
//! requester controls, the cookie's flags, CSRF and cross-site refusals, and decisions judged
//! by the same code as the API. The browser test (`tests/e2e_webui.rs`) drives the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};

use jitgate_rules::ticket::{
    sha256_hex, AuditDraft, AuditKind, Grant, GrantId, Mode, RequestSnapshot, Requester, Status,
    Ticket, TicketDraft, Timestamp,
};
use jitgate_rules::RuleTable;

use super::session::{self, Sessions};
use super::{handle, CSP};
use crate::engine::{Clock, Engine};
use crate::state::{build_snapshot, Shared, Trigger};

const HOST: &str = "admin.test";
const ORIGIN: &str = "http://admin.test";
const EVIL: &str = "<script>alert(\"x\")</script>'\"><img src=x onerror=alert(1)>";

fn token(user: &str) -> String {
    format!("{user}-web-token")
}

/// A table with one approve route (`deploy`, approvers group:oncall) and a self-approval
/// route (`self-ok`), and API tokens for `ops` (operator), `alice` and `carol` (oncall),
/// `bob` (dev) — minus `without`.
fn config(without: &str) -> String {
    let users = [
        ("ops", "platform"),
        ("alice", "oncall"),
        ("carol", "oncall"),
        ("bob", "dev"),
    ];
    let tokens: Vec<String> = users
        .iter()
        .filter(|(u, _)| *u != without)
        .map(|(u, g)| {
            format!(
                "{{ name = \"{u}\", user = \"{u}\", sha256 = \"{}\", groups = [\"{g}\"] }}",
                sha256_hex(token(u).as_bytes())
            )
        })
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[upstreams]]
name = "u"
url = "http://127.0.0.1:9"

[[routes]]
name = "deploy"
path = "/deploy/**"
upstream = "u"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
quorum = 1

[[routes]]
name = "self-ok"
path = "/self/**"
upstream = "u"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
self_approval = true

[admin]
operators = ["group:platform"]
api_tokens = [
  {}
]
"#,
        tokens.join(",\n  ")
    )
}

/// A config file of its own for each test (reload reads it).
fn config_file(contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "jitgate-ui-test-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

fn shared() -> Arc<Shared> {
    let path = config_file(&config(""));
    let table = RuleTable::parse(&config(""), &path).unwrap();
    let engine = Engine::start_with_clock(table.config(), Clock::tokio()).unwrap();
    let snapshot = build_snapshot(table, None).unwrap();
    Arc::new(Shared::new(snapshot, engine, path, None))
}

/// What a ticket on `route` asked for by `user` is opened from.
fn draft(
    route: &str,
    user: &str,
    ttl: Duration,
    request: RequestSnapshot,
    reason: Option<&str>,
) -> TicketDraft {
    TicketDraft {
        route: route.into(),
        route_hash: [7; 32],
        mode: Mode::Action,
        requester: Requester {
            user: Some(user.into()),
            groups: vec!["dev".into()],
            anonymous: None,
        },
        source: Some("192.0.2.7".into()),
        reason: reason.map(str::to_string),
        request,
        ticket_ttl: ttl,
        token_ttl: Duration::from_secs(300),
        quorum: 1,
        approvers: vec!["group:oncall".into()],
        self_approval: route == "self-ok",
        token_uses: 1,
        grant_terms: None,
        also_limit: None,
        escalation: None,
        remind_before: None,
        risk: None,
    }
}

/// Stores `draft` as a pending ticket.
async fn open_draft(shared: &Shared, draft: TicketDraft) -> Ticket {
    let engine = shared.engine();
    let now = engine.now();
    let t = Ticket::open(jitgate_store::new_ticket_id(now), draft, now);
    let key = t.id.to_string();
    let store = engine.store().unwrap();
    store
        .create_or_join(t, &key, &jitgate_store::PendingLimits::default(), &|_| {
            Vec::new()
        })
        .await
        .unwrap()
        .0
}

/// Opens a pending ticket on `route` asked for by `user`.
async fn open(
    shared: &Shared,
    route: &str,
    user: &str,
    ttl: Duration,
    request: RequestSnapshot,
    reason: Option<&str>,
) -> Ticket {
    open_draft(shared, draft(route, user, ttl, request, reason)).await
}

fn plain_request(path: &str) -> RequestSnapshot {
    RequestSnapshot {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: path.into(),
        ..RequestSnapshot::default()
    }
}

async fn status_of(shared: &Shared, t: &Ticket) -> Status {
    let store = shared.engine().store().unwrap();
    store.get(&t.id).await.unwrap().unwrap().status
}

/// What came back.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value of the first `name="csrf"` field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

async fn call(shared: &Arc<Shared>, req: Request<Full<Bytes>>, tls: bool) -> Answer {
    let resp = handle(shared, req, tls).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// A browser: the cookies it holds, and what it sends with a POST.
#[derive(Clone, Default)]
struct Browser {
    cookies: Vec<(String, String)>,
    csrf: String,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, a: &Answer) {
        for c in a.set_cookies() {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !c.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    fn get(&self, path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header("host", HOST)
            .header("cookie", self.cookie_header())
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// A same-origin form POST as a browser sends it.
    fn post(&self, path: &str, form: &str) -> Request<Full<Bytes>> {
        self.post_with(
            path,
            form,
            &[("origin", ORIGIN), ("sec-fetch-site", "same-origin")],
        )
    }

    fn post_with(&self, path: &str, form: &str, extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
        let mut b = Request::post(path)
            .header("host", HOST)
            .header("cookie", self.cookie_header());
        if !extra.iter().any(|(k, _)| *k == "content-type") {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::from(form.to_string()))).unwrap()
    }
}

/// Signs `user` in through the form, as a browser would.
async fn sign_in(shared: &Arc<Shared>, user: &str) -> Browser {
    let mut b = Browser::default();
    let form = call(shared, b.get("/ui/signin"), false).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    b.keep(&form);
    let body = format!("csrf={}&token={}", form.csrf(), token(user));
    let signed = call(shared, b.post("/ui/signin", &body), false).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    assert_eq!(signed.header("location"), Some("/ui/"));
    b.keep(&signed);
    let list = call(shared, b.get("/ui/"), false).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    b.csrf = list.csrf();
    b
}

fn decide_form(b: &Browser, decision: &str, comment: &str) -> String {
    format!("csrf={}&decision={decision}&comment={comment}", b.csrf)
}

// === escaping ===

/// Every value a requester controls — path, query, headers, reason, body, user and group
/// names — and audit details are escaped on the list and on the ticket page.
#[tokio::test(start_paused = true)]
async fn client_controlled_values_are_escaped() {
    let shared = shared();
    let request = RequestSnapshot {
        method: "POST".into(),
        host: "api.example.com".into(),
        path: format!("/deploy/{EVIL}"),
        query: format!("q={EVIL}"),
        target: format!("/deploy/{EVIL}"),
        headers: vec![
            ("x-evil".into(), EVIL.into()),
            (format!("x-{EVIL}"), "v".into()),
        ],
        headers_sha256: String::new(),
        body_sha256: EVIL.into(),
        body_preview: format!("{{\"image\":\"{EVIL}\"}}"),
    };
    let t = open(
        &shared,
        "deploy",
        EVIL,
        Duration::from_secs(600),
        request,
        Some(EVIL),
    )
    .await;
    let store = shared.engine().store().unwrap();
    let now = shared.engine().now();
    store
        .append_audit(AuditDraft::about(
            AuditKind::TicketCreated,
            &t,
            Some(EVIL),
            serde_json::json!({ "note": EVIL }),
            now,
        ))
        .await
        .unwrap();
    let ops = sign_in(&shared, "ops").await;
    for path in ["/ui/".to_string(), format!("/ui/tickets/{}", t.id)] {
        let page = call(&shared, ops.get(&path), false).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains(&t.id.to_string()), "{path}");
        assert!(
            !page.body.contains("<script>alert") && !page.body.contains("<img"),
            "{path} lets markup through: {}",
            page.body
        );
        assert!(
            page.body
                .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'&quot;&gt;&lt;img"),
            "{path} does not show the value escaped: {}",
            page.body
        );
        // The one script element is the page's own, from this origin.
        assert_eq!(page.body.matches("<script").count(), 1, "{path}");
        assert!(page
            .body
            .contains(r#"<script src="/ui/assets/ui.js" defer></script>"#));
    }
}

// === sign-in, cookies, headers ===

/// The session cookie is HttpOnly, SameSite=Strict and scoped to /ui/; Secure exactly when
/// the admin plane spoke TLS; its value is 256 random bits and appears in no URL or page.
#[tokio::test(start_paused = true)]
async fn the_session_cookie_is_hardened() {
    for tls in [false, true] {
        let shared = shared();
        let mut b = Browser::default();
        let form = call(&shared, b.get("/ui/signin"), tls).await;
        b.keep(&form);
        let signin_cookie = &form.set_cookies()[0];
        assert!(signin_cookie.starts_with("jitgate_signin="));
        let origin = if tls { "https://admin.test" } else { ORIGIN };
        let body = format!("csrf={}&token={}", form.csrf(), token("alice"));
        let signed = call(
            &shared,
            b.post_with("/ui/signin", &body, &[("origin", origin)]),
            tls,
        )
        .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
        let cookies = signed.set_cookies();
        let session = cookies
            .iter()
            .find(|c| c.starts_with("jitgate_session="))
            .expect("a session cookie");
        let attrs: Vec<&str> = session.split("; ").collect();
        let id = attrs[0].trim_start_matches("jitgate_session=");
        assert!(session::well_formed(id), "{session}");
        for want in ["HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age=28800"] {
            assert!(attrs.contains(&want), "{want} missing: {session}");
        }
        assert_eq!(attrs.contains(&"Secure"), tls, "{session}");
        // The sign-in cookie is spent.
        assert!(cookies
            .iter()
            .any(|c| c.starts_with("jitgate_signin=;") && c.contains("Max-Age=0")));
        b.keep(&signed);
        let list = call(&shared, b.get("/ui/"), tls).await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(!list.body.contains(id), "the session id is on the page");
        assert_eq!(list.header("location"), None);
    }
}

/// Every answer under /ui/ — pages, assets, redirects, refusals — carries the strict CSP,
/// nosniff, no-referrer and no-store.
#[tokio::test(start_paused = true)]
async fn every_answer_carries_the_security_headers() {
    let shared = shared();
    let alice = sign_in(&shared, "alice").await;
    let anonymous = Browser::default();
    let answers = [
        call(&shared, alice.get("/ui/"), false).await,
        call(&shared, alice.get("/ui/grants"), false).await,
        call(&shared, alice.get("/ui/assets/ui.css"), false).await,
        call(&shared, alice.get("/ui/assets/ui.js"), false).await,
        call(&shared, alice.get("/ui/nowhere"), false).await,
        call(&shared, anonymous.get("/ui/"), false).await,
        call(&shared, anonymous.get("/ui/signin"), false).await,
        call(&shared, anonymous.get("/ui"), false).await,
        call(&shared, alice.post("/ui/decide", "decision=approve"), false).await,
    ];
    for a in &answers {
        assert_eq!(a.header("content-security-policy"), Some(CSP));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(a.header("cache-control"), Some("no-store"));
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
    }
    assert!(CSP.contains("default-src 'none'") && CSP.contains("frame-ancestors 'none'"));
    // Pages are HTML with a viewport for phones; refusals are pages too.
    for a in [&answers[0], &answers[4], &answers[8]] {
        assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(a
            .body
            .contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#));
    }
    assert_eq!(answers[4].status, StatusCode::NOT_FOUND);
    assert_eq!(answers[5].status, StatusCode::SEE_OTHER);
    assert_eq!(answers[5].header("location"), Some("/ui/signin"));
    assert_eq!(answers[7].status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(answers[8].status, StatusCode::FORBIDDEN);
    assert_eq!(
        answers[2].header("content-type"),
        Some("text/css; charset=utf-8")
    );
}

/// A credential the admin plane does not accept opens no session.
#[tokio::test(start_paused = true)]
async fn a_wrong_credential_signs_nobody_in() {
    let shared = shared();
    for credential in ["not-a-token", "", "alice-web-token%0AX-Evil:%201"] {
        let mut b = Browser::default();
        let form = call(&shared, b.get("/ui/signin"), false).await;
        b.keep(&form);
        let body = format!("csrf={}&token={credential}", form.csrf());
        let answer = call(&shared, b.post("/ui/signin", &body), false).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{credential}");
        assert!(!answer
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("jitgate_session=")));
    }
    assert!(shared.ui_sessions().is_empty());
}

/// The sign-in form's token must match its cookie (login CSRF).
#[tokio::test(start_paused = true)]
async fn sign_in_needs_the_form_s_own_token() {
    let shared = shared();
    let mut b = Browser::default();
    let form = call(&shared, b.get("/ui/signin"), false).await;
    let token_alone = format!("csrf={}&token={}", form.csrf(), token("alice"));
    // Without the cookie the token belongs to.
    let a = call(&shared, b.post("/ui/signin", &token_alone), false).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    // With a cookie but another form's token.
    b.keep(&form);
    let other = call(&shared, Browser::default().get("/ui/signin"), false).await;
    let mismatched = format!("csrf={}&token={}", other.csrf(), token("alice"));
    let a = call(&shared, b.post("/ui/signin", &mismatched), false).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Without any token.
    let a = call(
        &shared,
        b.post("/ui/signin", &format!("token={}", token("alice"))),
        false,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(shared.ui_sessions().is_empty());
}

// === CSRF and cross-site ===

/// A decision, a batch or a sign-out without the session's CSRF token (or with another one)
/// is refused and changes nothing.
#[tokio::test(start_paused = true)]
async fn posts_without_the_csrf_token_are_refused() {
    let shared = shared();
    let t = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/x"),
        None,
    )
    .await;
    let alice = sign_in(&shared, "alice").await;
    let carol = sign_in(&shared, "carol").await;
    let decide = format!("/ui/tickets/{}/decide", t.id);
    let forms = [
        (decide.as_str(), "decision=approve".to_string()),
        (decide.as_str(), "csrf=&decision=approve".to_string()),
        (
            decide.as_str(),
            format!("csrf={}&decision=approve", carol.csrf),
        ),
        (
            decide.as_str(),
            format!("csrf={}x&decision=approve", alice.csrf),
        ),
        (
            decide.as_str(),
            format!("csrf={0}&csrf={0}&decision=approve", alice.csrf),
        ),
        ("/ui/decide", format!("id={}&decision=approve", t.id)),
        ("/ui/signout", String::new()),
    ];
    for (path, form) in &forms {
        let a = call(&shared, alice.post(path, form), false).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path} {form}: {}", a.body);
        assert!(a.body.contains("CSRF token"), "{}", a.body);
    }
    assert_eq!(status_of(&shared, &t).await, Status::Pending);
    // Still signed in.
    assert_eq!(
        call(&shared, alice.get("/ui/"), false).await.status,
        StatusCode::OK
    );
}

/// A POST with the right token is still refused when the browser says it came from another
/// origin or another site, or says nothing about where it came from.
#[tokio::test(start_paused = true)]
async fn cross_site_posts_are_refused() {
    let shared = shared();
    let t = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/x"),
        None,
    )
    .await;
    let alice = sign_in(&shared, "alice").await;
    let form = decide_form(&alice, "approve", "");
    let path = format!("/ui/tickets/{}/decide", t.id);
    let cases: [&[(&str, &str)]; 11] = [
        &[("origin", "http://evil.test")],
        &[("origin", "http://admin.test.evil.test")],
        &[("origin", "null")],
        &[("origin", ORIGIN), ("sec-fetch-site", "cross-site")],
        &[("origin", ORIGIN), ("sec-fetch-site", "same-site")],
        &[("origin", "null"), ("sec-fetch-site", "same-site")],
        &[
            ("origin", "http://evil.test"),
            ("sec-fetch-site", "same-origin"),
        ],
        &[("sec-fetch-site", "none")],
        &[
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "same-origin"),
        ],
        &[("origin", ORIGIN), ("origin", ORIGIN)],
        &[],
    ];
    for headers in cases {
        let a = call(&shared, alice.post_with(&path, &form, headers), false).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{headers:?}: {}", a.body);
        assert!(a.body.contains("Cross-site request refused"), "{}", a.body);
    }
    // Over TLS an http: origin is another origin.
    let a = call(
        &shared,
        alice.post_with(&path, &form, &[("origin", ORIGIN)]),
        true,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(&shared, &t).await, Status::Pending);
    // The same form from this origin goes through, as Chromium sends it under
    // `Referrer-Policy: no-referrer` (`Origin: null`, `Sec-Fetch-Site: same-origin`).
    let a = call(
        &shared,
        alice.post_with(
            &path,
            &form,
            &[("origin", "null"), ("sec-fetch-site", "same-origin")],
        ),
        false,
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(status_of(&shared, &t).await, Status::Approved);
}

// === decisions ===

/// Approve and deny from the ticket page record the decision through the API's code: the
/// comment lands on the vote, a second decision is 409, a non-approver gets 403.
#[tokio::test(start_paused = true)]
async fn the_ticket_page_decides_through_the_api() {
    let shared = shared();
    let a = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/a"),
        Some("hotfix 4411"),
    )
    .await;
    let d = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/d"),
        None,
    )
    .await;
    let alice = sign_in(&shared, "alice").await;
    let page = call(&shared, alice.get(&format!("/ui/tickets/{}", a.id)), false).await;
    assert_eq!(page.status, StatusCode::OK);
    for want in [
        "POST api.example.com/deploy/a",
        "hotfix 4411",
        "0 of 1",
        "value=\"approve\"",
        "The audit trail is shown to operators.",
    ] {
        assert!(page.body.contains(want), "{want}: {}", page.body);
    }

    let ok = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", a.id),
            &decide_form(&alice, "approve", "looks+good"),
        ),
        false,
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(
        ok.header("location"),
        Some(format!("/ui/tickets/{}", a.id).as_str())
    );
    let store = shared.engine().store().unwrap();
    let approved = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.approvals[0].by, "alice");
    assert_eq!(approved.approvals[0].comment.as_deref(), Some("looks good"));
    let after = call(&shared, alice.get(&format!("/ui/tickets/{}", a.id)), false).await;
    assert!(
        after.body.contains(&format!("{}: approved", a.id)),
        "{}",
        after.body
    );
    assert!(
        !after.body.contains("value=\"approve\""),
        "no form once decided"
    );

    // Deciding again: 409, as the API answers.
    let again = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", a.id),
            &decide_form(&alice, "deny", ""),
        ),
        false,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.body.contains("not PENDING"), "{}", again.body);

    // Deny with a reason.
    let denied = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", d.id),
            &decide_form(&alice, "deny", "not+now"),
        ),
        false,
    )
    .await;
    assert_eq!(denied.status, StatusCode::SEE_OTHER);
    let t = store.get(&d.id).await.unwrap().unwrap();
    assert_eq!(t.status, Status::Denied);
    assert_eq!(t.deny_reason.as_deref(), Some("not now"));

    // A decision that is neither approve nor deny.
    let odd = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", d.id),
            &decide_form(&alice, "maybe", ""),
        ),
        false,
    )
    .await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST);
}

/// Visibility and the rules: the requester sees their ticket but may not approve it (403,
/// unless the route allows self-approval); a user who may neither decide nor asked gets 404
/// whether or not the ticket exists; a decision after expiry is 409.
#[tokio::test(start_paused = true)]
async fn decisions_follow_the_api_s_rules() {
    let shared = shared();
    let t = open(
        &shared,
        "deploy",
        "alice",
        Duration::from_secs(60),
        plain_request("/deploy/own"),
        None,
    )
    .await;
    let other = open(
        &shared,
        "deploy",
        "carol",
        Duration::from_secs(600),
        plain_request("/deploy/other"),
        None,
    )
    .await;
    let alice = sign_in(&shared, "alice").await;
    let bob = sign_in(&shared, "bob").await;

    // Self-approval refused on `deploy`.
    let own = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", t.id),
            &decide_form(&alice, "approve", ""),
        ),
        false,
    )
    .await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    assert!(own.body.contains("their own tickets"), "{}", own.body);

    // bob (dev) neither asked for nor may decide carol's ticket: it does not exist for him,
    // exactly like an id that was never issued.
    let unknown = "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B";
    for id in [other.id.as_str(), unknown, "not-an-id"] {
        let page = call(&shared, bob.get(&format!("/ui/tickets/{id}")), false).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{id}");
        let post = call(
            &shared,
            bob.post(
                &format!("/ui/tickets/{id}/decide"),
                &decide_form(&bob, "deny", ""),
            ),
            false,
        )
        .await;
        assert_eq!(post.status, StatusCode::NOT_FOUND, "{id}");
    }
    let list = call(&shared, bob.get("/ui/"), false).await;
    assert!(!list.body.contains(other.id.as_str()));
    assert_eq!(status_of(&shared, &other).await, Status::Pending);

    // On `self-ok`, the requester may approve their own ticket.
    let mine = open(
        &shared,
        "self-ok",
        "alice",
        Duration::from_secs(600),
        plain_request("/self/x"),
        None,
    )
    .await;
    let ok = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", mine.id),
            &decide_form(&alice, "approve", ""),
        ),
        false,
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);

    // After expiry: 409, and the ticket is recorded as expired.
    let carol = sign_in(&shared, "carol").await;
    tokio::time::advance(Duration::from_secs(61)).await;
    let late = call(
        &shared,
        carol.post(
            &format!("/ui/tickets/{}/decide", t.id),
            &decide_form(&carol, "approve", ""),
        ),
        false,
    )
    .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.body.contains("expired"), "{}", late.body);
    assert_eq!(status_of(&shared, &t).await, Status::Expired);
}

/// Several tickets at once: each is decided through the API's code, and refusals are
/// reported per ticket without stopping the others.
#[tokio::test(start_paused = true)]
async fn several_tickets_are_decided_at_once() {
    let shared = shared();
    let one = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/1"),
        None,
    )
    .await;
    let two = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(900),
        plain_request("/deploy/2"),
        None,
    )
    .await;
    let own = open(
        &shared,
        "deploy",
        "carol",
        Duration::from_secs(300),
        plain_request("/deploy/3"),
        None,
    )
    .await;
    let carol = sign_in(&shared, "carol").await;
    // Soonest to expire first.
    let list = call(&shared, carol.get("/ui/"), false).await;
    let at = |id: &str| list.body.find(&format!("data-ticket=\"{id}\"")).unwrap();
    assert!(at(own.id.as_str()) < at(one.id.as_str()));
    assert!(at(one.id.as_str()) < at(two.id.as_str()));

    let form = format!(
        "csrf={}&id={}&id={}&id={}&decision=approve&comment=batch",
        carol.csrf, one.id, two.id, own.id
    );
    let a = call(&shared, carol.post("/ui/decide", &form), false).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.header("location"), Some("/ui/"));
    assert_eq!(status_of(&shared, &one).await, Status::Approved);
    assert_eq!(status_of(&shared, &two).await, Status::Approved);
    assert_eq!(status_of(&shared, &own).await, Status::Pending);
    let after = call(&shared, carol.get("/ui/"), false).await;
    assert!(after.body.contains(&format!("{}: approved", one.id)));
    assert!(after
        .body
        .contains(&format!("{}: refused: requesters may not decide", own.id)));
    // The notice is shown once.
    let again = call(&shared, carol.get("/ui/"), false).await;
    assert!(!again.body.contains("refused"));

    // Nothing selected.
    let none = format!("csrf={}&decision=deny", carol.csrf);
    let a = call(&shared, carol.post("/ui/decide", &none), false).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let after = call(&shared, carol.get("/ui/"), false).await;
    assert!(after.body.contains("Select at least one ticket."));
}

/// The audit trail on the ticket page follows the API: operators see it, approvers do not.
#[tokio::test(start_paused = true)]
async fn the_audit_trail_is_for_operators() {
    let shared = shared();
    let t = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/x"),
        None,
    )
    .await;
    let alice = sign_in(&shared, "alice").await;
    let decided = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", t.id),
            &decide_form(&alice, "approve", "fine"),
        ),
        false,
    )
    .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER);
    let page = call(&shared, alice.get(&format!("/ui/tickets/{}", t.id)), false).await;
    assert!(!page.body.contains("ticket.approved"));
    assert!(page.body.contains("shown to operators"));
    let ops = sign_in(&shared, "ops").await;
    let page = call(&shared, ops.get(&format!("/ui/tickets/{}", t.id)), false).await;
    assert!(page.body.contains("ticket.approved"), "{}", page.body);
    assert!(page.body.contains("operator"));
}

/// Grants are listed to whom they concern (operators: all; requesters: their own; a route's
/// approvers: the grants on it), and revoked from the list through the API's rules.
#[tokio::test(start_paused = true)]
async fn grants_are_listed_and_revoked_by_whom_they_concern() {
    let shared = shared();
    let store = shared.engine().store().unwrap();
    let now = shared.engine().now();
    // Given on the route as it is in force (its approvers manage it).
    let snap = shared.snapshot();
    let deploy = snap
        .table
        .routes()
        .iter()
        .find(|r| r.name == "deploy")
        .unwrap();
    let route_hash = jitgate_rules::ticket::hex(&deploy.definition_hash);
    for (n, user) in [(1u128, "bob"), (2, "carol")] {
        store
            .create_grant(Grant {
                id: GrantId::new(now.as_millis(), n),
                route: "deploy".into(),
                route_hash: route_hash.clone(),
                requester: Requester {
                    user: Some(user.into()),
                    groups: vec![],
                    anonymous: None,
                },
                created_at: now,
                expires_at: Timestamp(now.as_millis() + 3_600_000),
                max_uses: Some(5),
                uses: 1,
                revoked_at: None,
                ticket: None,
                method: None,
            })
            .await
            .unwrap();
    }
    let bob = sign_in(&shared, "bob").await;
    let page = call(&shared, bob.get("/ui/grants"), false).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Active grants <span class=\"count\">(1)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("1 of 5"));
    let ops = sign_in(&shared, "ops").await;
    let page = call(&shared, ops.get("/ui/grants"), false).await;
    assert!(
        page.body
            .contains("Active grants <span class=\"count\">(2)"),
        "{}",
        page.body
    );
    // Alice approves the route: she sees both, and may revoke bob's.
    let alice = sign_in(&shared, "alice").await;
    let page = call(&shared, alice.get("/ui/grants"), false).await;
    assert!(
        page.body
            .contains("Active grants <span class=\"count\">(2)"),
        "{}",
        page.body
    );
    let bobs = GrantId::new(now.as_millis(), 1);
    let action = format!("/ui/grants/{bobs}/revoke");
    assert!(
        page.body.contains(&format!("action=\"{action}\"")),
        "{}",
        page.body
    );
    // Without the form's token nothing happens.
    let refused = call(&shared, alice.post(&action, "reason=x"), false).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(store
        .get_grant(&bobs)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    let done = call(
        &shared,
        alice.post(&action, &format!("csrf={}&reason=done", alice.csrf)),
        false,
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.header("location"), Some("/ui/grants"));
    assert!(store
        .get_grant(&bobs)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    // Bob cannot revoke carol's: it is not his, and he approves nothing.
    let carols = GrantId::new(now.as_millis(), 2);
    let page = call(
        &shared,
        bob.post(
            &format!("/ui/grants/{carols}/revoke"),
            &format!("csrf={}", bob.csrf),
        ),
        false,
    )
    .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(store
        .get_grant(&carols)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}

// === session lifetime ===

/// Signing out ends the session on the gateway, not only in the browser.
#[tokio::test(start_paused = true)]
async fn signing_out_ends_the_session() {
    let shared = shared();
    let mut alice = sign_in(&shared, "alice").await;
    let copy = alice.clone();
    let out = call(
        &shared,
        alice.post("/ui/signout", &format!("csrf={}", alice.csrf)),
        false,
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert_eq!(out.header("location"), Some("/ui/signin"));
    assert!(out
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("jitgate_session=;") && c.contains("Max-Age=0")));
    alice.keep(&out);
    // The old cookie, replayed, no longer works.
    let replay = call(&shared, copy.get("/ui/"), false).await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER);
    assert_eq!(replay.header("location"), Some("/ui/signin"));
    let post = call(
        &shared,
        copy.post(
            "/ui/decide",
            &format!("csrf={}&decision=approve&id=x", copy.csrf),
        ),
        false,
    )
    .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert!(shared.ui_sessions().is_empty());
}

/// Signing in again replaces the browser's session: a fresh id, the old one ended.
#[tokio::test(start_paused = true)]
async fn signing_in_again_replaces_the_session() {
    let shared = shared();
    let mut alice = sign_in(&shared, "alice").await;
    let before = alice.clone();
    let form = call(&shared, alice.get("/ui/signin"), false).await;
    // Already signed in: sent to the list.
    assert_eq!(form.status, StatusCode::SEE_OTHER);
    let form = call(&shared, Browser::default().get("/ui/signin"), false).await;
    alice.keep(&form);
    let body = format!("csrf={}&token={}", form.csrf(), token("alice"));
    let again = call(&shared, alice.post("/ui/signin", &body), false).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    alice.keep(&again);
    assert_ne!(alice.cookie_header(), before.cookie_header());
    assert_eq!(
        call(&shared, before.get("/ui/"), false).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        call(&shared, alice.get("/ui/"), false).await.status,
        StatusCode::OK
    );
    assert_eq!(shared.ui_sessions().len(), 1);
}

/// A session lasts eight hours at most.
#[tokio::test(start_paused = true)]
async fn sessions_expire() {
    let shared = shared();
    let alice = sign_in(&shared, "alice").await;
    tokio::time::advance(session::SESSION_TTL - Duration::from_secs(1)).await;
    assert_eq!(
        call(&shared, alice.get("/ui/"), false).await.status,
        StatusCode::OK
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        call(&shared, alice.get("/ui/"), false).await.status,
        StatusCode::SEE_OTHER
    );
}

/// A session is as good as its credential: once a reload drops the API token it was opened
/// with, the next request finds it signed out.
#[tokio::test(start_paused = true)]
async fn a_session_ends_when_its_credential_is_dropped() {
    let shared = shared();
    let alice = sign_in(&shared, "alice").await;
    let carol = sign_in(&shared, "carol").await;
    std::fs::write(shared.config_path(), config("alice")).unwrap();
    shared.reload(Trigger::Admin, None).await.unwrap();
    let a = call(&shared, alice.get("/ui/"), false).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header("location"), Some("/ui/signin"));
    assert_eq!(
        call(&shared, carol.get("/ui/"), false).await.status,
        StatusCode::OK
    );
    assert_eq!(shared.ui_sessions().len(), 1);
    let _ = std::fs::remove_file(shared.config_path());
}

/// The table is bounded: a user's sessions past the cap end oldest first, and a full table
/// refuses new ones.
#[tokio::test(start_paused = true)]
async fn the_session_table_is_bounded() {
    let sessions = Sessions::with_limits(3, 2);
    let first = sessions.open("t", "alice").unwrap();
    tokio::time::advance(Duration::from_millis(1)).await;
    let second = sessions.open("t", "alice").unwrap();
    tokio::time::advance(Duration::from_millis(1)).await;
    let third = sessions.open("t", "alice").unwrap();
    assert!(sessions.get(&first).is_none(), "oldest signed out");
    assert!(sessions.get(&second).is_some() && sessions.get(&third).is_some());
    sessions.open("t", "bob").unwrap();
    assert_eq!(
        sessions.open("t", "carol").unwrap_err(),
        session::OpenError::Full
    );
    // Expired sessions make room.
    tokio::time::advance(session::SESSION_TTL).await;
    assert!(sessions.open("t", "carol").is_ok());
    assert_eq!(sessions.len(), 1);
}

/// Unknown pages and wrong methods are HTML pages, not panics or JSON.
#[tokio::test(start_paused = true)]
async fn unknown_pages_and_methods_are_pages() {
    let shared = shared();
    let alice = sign_in(&shared, "alice").await;
    let a = call(
        &shared,
        Request::delete("/ui/")
            .header("host", HOST)
            .body(Full::new(Bytes::new()))
            .unwrap(),
        false,
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.header("allow"), Some("GET, HEAD"));
    assert!(a.body.starts_with("<!DOCTYPE html>"));
    let a = call(&shared, alice.get("/ui/tickets/x/decide"), false).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.header("allow"), Some("POST"));
    let a = call(&shared, alice.get("/ui/tickets/a/b/c"), false).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A form that is not a form.
    let a = call(
        &shared,
        alice.post_with(
            "/ui/decide",
            "{}",
            &[("origin", ORIGIN), ("content-type", "application/json")],
        ),
        false,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
}

/// A break-glass ticket in REVIEW shows its reason and score, and an approver acknowledges it
/// from the page (through the API's rules: the requester may not).
#[tokio::test]
async fn a_break_glass_ticket_is_acknowledged_from_its_page() {
    let shared = shared();
    let engine = shared.engine();
    let now = engine.now();
    let mut draft = draft(
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/now"),
        None,
    );
    draft.risk = Some(jitgate_rules::ticket::Risk {
        score: 40,
        factors: vec![jitgate_rules::ticket::RiskFactor {
            signal: "new_source".into(),
            points: 40,
            detail: "203.0.113.9".into(),
        }],
    });
    let opened = Ticket::open(jitgate_store::new_ticket_id(now), draft, now);
    let t = jitgate_rules::ticket::break_glass(&opened, "db on fire", "rel_1", now).unwrap();
    let store = engine.store().unwrap();
    store
        .record(t.clone(), None, &|_| Vec::new())
        .await
        .unwrap();

    let bob = sign_in(&shared, "bob").await;
    let alice = sign_in(&shared, "alice").await;
    let page = call(&shared, alice.get(&format!("/ui/tickets/{}", t.id)), false).await;
    for want in [
        "db on fire",
        "REVIEW",
        "new_source",
        "203.0.113.9",
        "value=\"acknowledge\"",
    ] {
        assert!(page.body.contains(want), "{want}: {}", page.body);
    }
    let refused = call(
        &shared,
        bob.post(
            &format!("/ui/tickets/{}/decide", t.id),
            &decide_form(&bob, "acknowledge", "mine"),
        ),
        false,
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let ok = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", t.id),
            &decide_form(&alice, "acknowledge", "postmortem+88"),
        ),
        false,
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let after = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Executed);
    assert_eq!(after.acknowledged.map(|v| v.by), Some("alice".to_string()));
}

/// The decision form offers "approve this and the next N" where the ticket allows it, and
/// the page's answer follows the API's rules.
#[tokio::test]
async fn the_ticket_page_approves_this_and_the_next_n() {
    let shared = shared();
    let mut d = draft(
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/a"),
        None,
    );
    d.also_limit = Some(jitgate_rules::ticket::AlsoTerms {
        uses: 3,
        within_ms: 3_600_000,
    });
    let t = open_draft(&shared, d).await;
    let alice = sign_in(&shared, "alice").await;
    let page = call(&shared, alice.get(&format!("/ui/tickets/{}", t.id)), false).await;
    assert!(page.body.contains("name=\"also_uses\""), "{}", page.body);
    let form = |extra: &str| format!("{}&{extra}", decide_form(&alice, "approve", "ok"));
    for bad in [
        "also_uses=9&also_within=10m",
        "also_uses=2",
        "also_uses=x&also_within=1m",
    ] {
        let r = call(
            &shared,
            alice.post(&format!("/ui/tickets/{}/decide", t.id), &form(bad)),
            false,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    let ok = call(
        &shared,
        alice.post(
            &format!("/ui/tickets/{}/decide", t.id),
            &form("also_uses=2&also_within=10m"),
        ),
        false,
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let store = shared.engine().store().unwrap();
    let after = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Approved);
    assert_eq!(after.approvals[0].also.map(|a| a.uses), Some(2));
    // A ticket that allows no `also` shows no such fields.
    let plain = open(
        &shared,
        "deploy",
        "bob",
        Duration::from_secs(600),
        plain_request("/deploy/b"),
        None,
    )
    .await;
    let page = call(
        &shared,
        alice.get(&format!("/ui/tickets/{}", plain.id)),
        false,
    )
    .await;
    assert!(!page.body.contains("also_uses"), "{}", page.body);
}
