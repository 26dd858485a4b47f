//! Inline approval end to end with the embedded store (SPEC 6, 7, 8, 11): a request on an
//! approve route is held as a ticket, released exactly once when approved, rejected with the
//! approver's reason when denied; tokens and tickets fit only the exact request they were
//! issued for; the admin plane refuses anonymous and unlisted callers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];

/// A gateway config: loopback trusted (identity headers believed), an approve route
/// `prod-deploy` on POST/DELETE `/deploy/**` (approvers group oncall + user bob), a
/// second approve route `db-drop` with a custom error, an allow catch-all.
fn config(origin: &str, approvals: &str, policy_extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[approvals]
{approvals}

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "prod-deploy"
methods = ["POST", "DELETE"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall", "user:bob"]
{policy_extra}

[[routes]]
name = "db-drop"
methods = ["POST"]
path = "/db/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
[routes.error]
status = 403
content_type = "text/plain; charset=utf-8"
body = "{{rule}}: {{ticket}} refused: {{reason}}"

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{admin}"#,
        admin = identity_and_admin_toml()
    )
}

fn start(origin: &Origin, approvals: &str, policy_extra: &str) -> Gateway {
    Gateway::start(&config(&origin.url(), approvals, policy_extra))
}

/// Sends `POST path` as bob in the background; the handle yields the answer.
fn post_as_bob(
    gw: &Gateway,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> tokio::task::JoinHandle<Response> {
    let url = gw.url(path);
    let body = body.to_string();
    let headers: Vec<(String, String)> = BOB
        .iter()
        .chain(extra.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::spawn(async move {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Client::http1()
            .with_timeout(Duration::from_secs(60))
            .send("POST", &url, &h, body)
            .await
    })
}

/// The id of the pending ticket on `route`, once there is one.
async fn pending_id(gw: &Gateway, route: &str) -> String {
    wait_pending(gw, route, WAIT).await["id"]
        .as_str()
        .expect("ticket id")
        .to_string()
}

fn problem(resp: &Response, status: u16, what: &str) -> Value {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "{what}: {}",
        resp.text()
    );
    resp.json()
}

/// The claims of a JWT (unverified; the gateway verified it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64url(payload);
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn base64url(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// === release and rejection ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_releases_the_held_request_exactly_once() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let body = r#"{"image":"web:1.4.2","password":"hunter2"}"#;
    let held = post_as_bob(
        &gw,
        "/deploy/prod/web",
        body,
        &[("jit-reason", "hotfix 4411")],
    );

    let t = wait_pending(&gw, "prod-deploy", WAIT).await;
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("jit_"), "{t}");
    assert_eq!(t["requester"]["user"], "bob");
    assert_eq!(t["reason"], "hotfix 4411");
    assert_eq!(t["request"]["method"], "POST");
    assert_eq!(t["request"]["path"], "/deploy/prod/web");
    assert_eq!(t["request"]["bodySha256"], sha256_hex(body.as_bytes()));
    let preview = t["request"]["bodyPreview"].as_str().unwrap();
    assert!(
        preview.contains("web:1.4.2") && !preview.contains("hunter2"),
        "preview shows the body with secrets redacted: {preview}"
    );
    assert_eq!(t["quorum"], 1);
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;

    let r = approve(&gw, "alice", &id, "looks fine").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        ["APPROVED", "EXECUTED"].contains(&r.json()["status"].as_str().unwrap()),
        "{}",
        r.text()
    );

    let resp = held.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, "/deploy/prod/web");
    assert_eq!(reqs[0].body_sha256, sha256_hex(body.as_bytes()));
    let token = reqs[0]
        .header_str("jit-approval")
        .expect("Jit-Approval sent upstream");
    let c = claims(&token);
    assert_eq!(c["jti"], id.as_str());
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["route"], "prod-deploy");
    assert_eq!(c["approvers"], serde_json::json!(["alice"]));
    // The gateway's own headers are consumed, never forwarded; the rest pass.
    assert!(
        reqs[0].header("jit-reason").is_none(),
        "Jit-Reason is the gateway's"
    );
    assert!(reqs[0].header("x-user").is_some(), "other headers pass");

    // The same request again, resuming the ticket: the approval is spent.
    let again = post_as_bob(
        &gw,
        "/deploy/prod/web",
        body,
        &[("jit-ticket", id.as_str())],
    )
    .await
    .unwrap();
    let v = problem(&again, 403, "second resume");
    assert_eq!(v["ticket"], id.as_str());
    // ... and with the token itself.
    let with_token = post_as_bob(
        &gw,
        "/deploy/prod/web",
        body,
        &[("jit-approval", token.as_str())],
    )
    .await
    .unwrap();
    problem(&with_token, 403, "second use of the token");
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(origin.count(), 1);

    let t = wait_status(&gw, &id, "EXECUTED", WAIT).await;
    assert_eq!(t["approvals"][0]["by"], "alice");
    assert_eq!(t["approvals"][0]["comment"], "looks fine");
    let want = [
        "ticket.created",
        "ticket.approved",
        "ticket.executed",
        "ticket.forwarded",
    ];
    let kinds = wait_audit(&gw, &id, &want).await;
    assert_eq!(kinds, want, "audit of {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_events_form_a_hash_chain() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let held = post_as_bob(&gw, "/deploy/a", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    deny(&gw, "carol", &id, "no").await;
    held.await.unwrap();
    let r = admin_call(&gw, "ops", "GET", "/v1/audit", "").await;
    let events = r.json()["events"].as_array().unwrap().clone();
    assert!(events.len() >= 2, "{events:?}");
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"], "chained: {pair:?}");
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1
        );
    }
    assert_eq!(events[1]["actor"], "carol");
    assert_eq!(events[1]["detail"]["reason"], "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denial_answers_403_with_the_reason_and_forwards_nothing() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let held = post_as_bob(&gw, "/deploy/prod/web", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    let r = deny(&gw, "carol", &id, "freeze until Monday").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "DENIED");
    let resp = held.await.unwrap();
    let v = problem(&resp, 403, "denied");
    assert_eq!(v["reason"], "freeze until Monday");
    assert_eq!(v["ticket"], id.as_str());
    assert_eq!(v["rule"], "prod-deploy");
    assert_eq!(resp.header("jit-ticket"), Some(id.as_str()));

    // The route's custom error carries the same facts.
    let held = post_as_bob(&gw, "/db/users/drop", "", &[]);
    let id = pending_id(&gw, "db-drop").await;
    deny(&gw, "alice", &id, "not in prod").await;
    let resp = held.await.unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.text(),
        format!("db-drop: {id} refused: not in prod"),
        "custom error template"
    );
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(origin.count(), 0);
    // A decision on a decided ticket is a conflict.
    assert_eq!(approve(&gw, "alice", &id, "").await.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_approval_and_unlisted_approvers_are_refused() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let held = post_as_bob(&gw, "/deploy/x", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    // bob is a listed approver, but it is his own request and self_approval is off.
    let r = approve(&gw, "bob", &id, "mine").await;
    let v = problem(&r, 403, "self approval");
    assert!(v["detail"].as_str().unwrap().contains("own"), "{v}");
    // mallory is not listed and did not ask: the ticket is not even visible.
    problem(&approve(&gw, "mallory", &id, "").await, 404, "unlisted");
    problem(&deny(&gw, "mallory", &id, "").await, 404, "unlisted deny");
    // ops sees every ticket but is not an approver of this route.
    problem(&approve(&gw, "ops", &id, "").await, 403, "operator");
    // Nothing of that changed the ticket or released anything.
    wait_status(&gw, &id, "PENDING", WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(approve(&gw, "alice", &id, "ok").await.status, 200);
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_approval_when_the_route_allows_it() {
    let origin = Origin::start();
    let gw = start(&origin, "", "self_approval = true");
    let held = post_as_bob(&gw, "/deploy/x", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    assert_eq!(approve(&gw, "bob", &id, "mine").await.status, 200);
    assert_eq!(held.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_two_needs_two_distinct_approvers() {
    let origin = Origin::start();
    let gw = start(&origin, "", "quorum = 2");
    let held = post_as_bob(&gw, "/deploy/q", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    let r = approve(&gw, "alice", &id, "one").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "PENDING", "one of two");
    // The same approver twice does not count twice.
    problem(
        &approve(&gw, "alice", &id, "again").await,
        409,
        "double vote",
    );
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert!(!held.is_finished(), "still held after one approval");
    let r = approve(&gw, "carol", &id, "two").await;
    assert_eq!(r.status, 200);
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(origin.count(), 1);
}

// === 202, resume, tokens ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn still_pending_at_hold_timeout_gives_202_then_resumes_once() {
    let origin = Origin::start();
    let gw = start(&origin, "hold_timeout = \"200ms\"", "");
    let body = r#"{"n":1}"#;
    let resp = post_as_bob(&gw, "/deploy/r", body, &[]).await.unwrap();
    let v = problem(&resp, 202, "pending");
    let id = resp.header("jit-ticket").expect("Jit-Ticket").to_string();
    assert_eq!(v["ticket"], id.as_str());
    let location = resp.header("location").expect("Location").to_string();
    assert_eq!(location, format!("/.well-known/jitgate/tickets/{id}"));

    // The requester's own view; nobody else's.
    let view = send("GET", &gw.url(&location), &BOB, "").await;
    assert_eq!(view.status, 200, "{}", view.text());
    assert_eq!(view.json()["status"], "PENDING");
    assert!(view.json()["approvalToken"].is_null());
    let other = send("GET", &gw.url(&location), &[("x-user", "carol")], "").await;
    assert_eq!(other.status, 404);

    assert_eq!(approve(&gw, "alice", &id, "").await.status, 200);
    let view = send("GET", &gw.url(&location), &BOB, "").await;
    assert_eq!(view.json()["status"], "APPROVED");
    assert!(view.json()["approvalToken"].is_string());

    let resumed = post_as_bob(&gw, "/deploy/r", body, &[("jit-ticket", id.as_str())])
        .await
        .unwrap();
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let twice = post_as_bob(&gw, "/deploy/r", body, &[("jit-ticket", id.as_str())])
        .await
        .unwrap();
    problem(&twice, 403, "second resume");
    assert_eq!(origin.count(), 1);
    assert_eq!(
        origin.requests()[0].body_sha256,
        sha256_hex(body.as_bytes())
    );
    assert!(origin.requests()[0].header("jit-ticket").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_token_fits_only_its_own_request() {
    let origin = Origin::start();
    let gw = start(&origin, "hold_timeout = \"100ms\"", "");
    let body = r#"{"image":"web:2"}"#;
    let resp = post_as_bob(&gw, "/deploy/t", body, &[]).await.unwrap();
    assert_eq!(resp.status, 202);
    let id = resp.header("jit-ticket").unwrap().to_string();
    assert_eq!(approve(&gw, "alice", &id, "").await.status, 200);
    let view = send(
        "GET",
        &gw.url(&format!("/.well-known/jitgate/tickets/{id}")),
        &BOB,
        "",
    )
    .await;
    let token = view.json()["approvalToken"].as_str().unwrap().to_string();

    // Each attempt differs from the approved request in one thing only.
    let post = |path: &'static str,
                user: &'static str,
                groups: &'static str,
                body: &'static str,
                header: &str| {
        let url = gw.url(path);
        let value = header.to_string();
        async move {
            Client::http1()
                .send(
                    "POST",
                    &url,
                    &[
                        ("x-user", user),
                        ("x-groups", groups),
                        ("jit-approval", value.as_str()),
                    ],
                    body,
                )
                .await
        }
    };
    let cases = [
        (
            "another body",
            post("/deploy/t", "bob", "dev", r#"{"image":"web:3"}"#, &token).await,
        ),
        (
            "another path",
            post("/deploy/u", "bob", "dev", r#"{"image":"web:2"}"#, &token).await,
        ),
        (
            "another requester",
            post("/deploy/t", "carol", "dev", r#"{"image":"web:2"}"#, &token).await,
        ),
        (
            "other groups",
            post("/deploy/t", "bob", "ops", r#"{"image":"web:2"}"#, &token).await,
        ),
        (
            "a forged token",
            post(
                "/deploy/t",
                "bob",
                "dev",
                r#"{"image":"web:2"}"#,
                "e30.e30.e30",
            )
            .await,
        ),
    ];
    for (what, resp) in &cases {
        problem(resp, 403, what);
    }
    // Another ticket id does not fit this request either.
    let other = Client::http1()
        .send(
            "POST",
            &gw.url("/deploy/t"),
            &[
                ("x-user", "bob"),
                ("jit-ticket", "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B"),
            ],
            body,
        )
        .await;
    problem(&other, 403, "unknown ticket");
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(origin.count(), 0);

    // Editing the rule the approval was granted under voids it.
    let edited = config(
        &origin.url(),
        "hold_timeout = \"100ms\"",
        "quorum = 1\nself_approval = false\ntoken_uses = 1\nmax_pending_per_requester = 50",
    );
    gw.rewrite_config(&edited);
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], true);
    let after = post_as_bob(&gw, "/deploy/t", body, &[("jit-approval", token.as_str())])
        .await
        .unwrap();
    problem(&after, 403, "edited route");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_token_redeems_once() {
    let origin = Origin::start();
    let gw = start(&origin, "hold_timeout = \"100ms\"", "");
    let resp = post_as_bob(&gw, "/deploy/once", "x", &[]).await.unwrap();
    let id = resp.header("jit-ticket").unwrap().to_string();
    approve(&gw, "alice", &id, "").await;
    let view = send(
        "GET",
        &gw.url(&format!("/.well-known/jitgate/tickets/{id}")),
        &BOB,
        "",
    )
    .await;
    let token = view.json()["approvalToken"].as_str().unwrap().to_string();
    let headers = [BOB[0], BOB[1], ("jit-approval", token.as_str())];
    let first = Client::http1()
        .send("POST", &gw.url("/deploy/once"), &headers, "x")
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = Client::http1()
        .send("POST", &gw.url("/deploy/once"), &headers, "x")
        .await;
    problem(&second, 403, "token reuse");
    assert_eq!(origin.count(), 1);
    // Upstreams can verify the token with the published key.
    for url in [
        gw.url("/.well-known/jwks.json"),
        gw.admin("/.well-known/jwks.json"),
    ] {
        let jwks = send("GET", &url, &[], "").await;
        assert_eq!(jwks.status, 200);
        let key = &jwks.json()["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        let header: Value =
            serde_json::from_slice(&base64url(token.split('.').next().unwrap())).unwrap();
        assert_eq!(header["kid"], key["kid"]);
        assert_eq!(header["alg"], "EdDSA");
    }
}

// === the client, the body, the requester ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_disconnect_cancels_the_ticket() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let held = post_as_bob(&gw, "/deploy/gone", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    held.abort();
    let _ = held.await;
    let t = wait_status(&gw, &id, "CANCELLED", WAIT).await;
    assert!(t["decidedAt"].is_string());
    assert_eq!(
        audit_kinds(&gw, &id).await,
        ["ticket.created", "ticket.cancelled"]
    );
    // A late approval finds nothing to approve, and nothing is released.
    problem(
        &approve(&gw, "alice", &id, "").await,
        409,
        "approve after cancel",
    );
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_requests_share_one_ticket() {
    let origin = Origin::start();
    let gw = start(&origin, "", "token_uses = 2");
    let first = post_as_bob(&gw, "/deploy/same", "{}", &[]);
    let id = pending_id(&gw, "prod-deploy").await;
    let second = post_as_bob(&gw, "/deploy/same", "{}", &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(
        r.json()["tickets"].as_array().unwrap().len(),
        1,
        "coalesced"
    );
    approve(&gw, "alice", &id, "").await;
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(origin.count(), 2, "token_uses = 2 releases both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn body_over_max_held_body_is_413() {
    let origin = Origin::start();
    let gw = start(&origin, "max_held_body = \"1KiB\"", "");
    let big = "x".repeat(2048);
    let resp = post_as_bob(&gw, "/deploy/big", &big, &[]).await.unwrap();
    problem(&resp, 413, "over max_held_body");
    let r = admin_call(&gw, "ops", "GET", "/v1/tickets", "").await;
    assert_eq!(r.json()["tickets"], serde_json::json!([]), "no ticket");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_many_pending_tickets_is_429_with_retry_after() {
    let origin = Origin::start();
    let gw = start(
        &origin,
        "hold_timeout = \"50ms\"",
        "max_pending_per_requester = 2",
    );
    for n in 0..2 {
        let resp = post_as_bob(&gw, &format!("/deploy/p{n}"), "", &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 202);
    }
    let resp = post_as_bob(&gw, "/deploy/p3", "", &[]).await.unwrap();
    problem(&resp, 429, "third pending");
    assert!(resp.header("retry-after").is_some());
    // Another requester has their own allowance.
    let carol = Client::http1()
        .send("POST", &gw.url("/deploy/p3"), &[("x-user", "carol")], "")
        .await;
    assert_eq!(carol.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_is_required_where_the_route_says_so() {
    let origin = Origin::start();
    let gw = start(
        &origin,
        "hold_timeout = \"50ms\"",
        "require_identity = true",
    );
    let anon = send("POST", &gw.url("/deploy/anon"), &[], "").await;
    let v = problem(&anon, 401, "anonymous");
    assert_eq!(v["rule"], "prod-deploy");
    assert_eq!(anon.header("www-authenticate"), Some("Bearer"));
    // Anonymous requesters are fine on action routes that do not require identity.
    let anon_db = send("POST", &gw.url("/db/anon"), &[], "").await;
    assert_eq!(anon_db.status, 202);
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_headers_from_untrusted_peers_are_ignored_and_stripped() {
    let origin = Origin::start();
    // The test client (127.0.0.1) is not a trusted proxy: X-User is not believed, and not
    // passed upstream either. (With no trusted proxy at all, `check` refuses the table: the
    // headers could identify nobody.)
    let cfg = config(
        &origin.url(),
        "hold_timeout = \"50ms\"",
        "require_identity = true",
    )
    .replace(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "trusted_proxies = [\"192.0.2.1/32\"]",
    );
    let gw = Gateway::start(&cfg);
    let resp = send("POST", &gw.url("/deploy/x"), &BOB, "").await;
    problem(&resp, 401, "untrusted identity header");
    let passed = send("GET", &gw.url("/other"), &BOB, "").await;
    assert_eq!(passed.status, 200);
    let reqs = origin.wait_for(1, WAIT).await;
    assert!(
        reqs[0].header("x-user").is_none(),
        "identity header stripped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_requesters_and_invalid_tokens() {
    let origin = Origin::start();
    let secret = "an-hs256-secret-that-is-long-enough-0123456789";
    let cfg = config(&origin.url(), "hold_timeout = \"50ms\"", "").replace(
        "[identity.headers]",
        "[identity.jwt]\nhs256_secret_env = \"TEST_JWT_SECRET\"\n\n[identity.headers]",
    );
    let gw = Gateway::builder(&cfg)
        .env("TEST_JWT_SECRET", secret)
        .start();
    // A present but invalid token is 401, never anonymous.
    let bad = send(
        "POST",
        &gw.url("/deploy/j"),
        &[("authorization", "Bearer not.a.jwt")],
        "",
    )
    .await;
    problem(&bad, 401, "invalid token");
    // A valid one names the requester.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["token", "--config"])
        .arg(gw.config_path())
        .args(["--user", "dave", "--group", "dev"])
        .env("TEST_JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let auth = format!("Bearer {jwt}");
    let ok = send(
        "POST",
        &gw.url("/deploy/j"),
        &[("authorization", auth.as_str())],
        "",
    )
    .await;
    assert_eq!(ok.status, 202, "{}", ok.text());
    let id = ok.header("jit-ticket").unwrap();
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    assert_eq!(t.json()["requester"]["user"], "dave");
    assert!(
        !t.json()["request"]["headers"].to_string().contains(&jwt),
        "Authorization redacted"
    );
}

// === admin plane ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_plane_refuses_unauthenticated_calls_except_health() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json"] {
        assert_eq!(
            send("GET", &gw.admin(path), &[], "").await.status,
            200,
            "{path}"
        );
    }
    let calls = [
        ("GET", "/v1/tickets"),
        ("GET", "/v1/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B"),
        ("POST", "/v1/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B/approve"),
        ("POST", "/v1/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B/deny"),
        ("POST", "/v1/tickets/decide"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/admin/rules"),
        ("POST", "/v1/admin/reload"),
        ("GET", "/v1/openapi.json"),
    ];
    for (method, path) in calls {
        let none = send(method, &gw.admin(path), &[], "").await;
        problem(&none, 401, path);
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        let wrong = send(
            method,
            &gw.admin(path),
            &[("authorization", "Bearer nope")],
            "",
        )
        .await;
        problem(&wrong, 401, path);
    }
    // Operators only: audit, rules, reload.
    for (method, path) in [
        ("GET", "/v1/audit"),
        ("GET", "/v1/admin/rules"),
        ("POST", "/v1/admin/reload"),
    ] {
        problem(&admin_call(&gw, "alice", method, path, "").await, 403, path);
        assert_eq!(
            admin_call(&gw, "ops", method, path, "").await.status,
            200,
            "{path}"
        );
    }
    let doc = admin_call(&gw, "alice", "GET", "/v1/openapi.json", "").await;
    assert_eq!(doc.status, 200);
    assert!(doc.json()["openapi"].as_str().unwrap().starts_with("3."));
    // Bad input is a 400 problem, not a crash.
    let bad = admin_call(&gw, "alice", "POST", "/v1/tickets/decide", "{\"ids\": 5}").await;
    problem(&bad, 400, "bad batch body");
    let bad = admin_call(&gw, "alice", "GET", "/v1/tickets?status=maybe", "").await;
    problem(&bad, 400, "bad status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_405_answers_say_which_methods_the_endpoint_allows() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let id = "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B";
    let cases = [
        ("DELETE", "/healthz".to_string(), "GET, HEAD"),
        ("POST", "/readyz".to_string(), "GET, HEAD"),
        ("PUT", "/.well-known/jwks.json".to_string(), "GET, HEAD"),
        ("POST", "/v1/openapi.json".to_string(), "GET, HEAD"),
        ("DELETE", "/v1/tickets".to_string(), "GET, HEAD"),
        ("DELETE", format!("/v1/tickets/{id}"), "GET, HEAD"),
        ("GET", format!("/v1/tickets/{id}/approve"), "POST"),
        ("PUT", format!("/v1/tickets/{id}/deny"), "POST"),
        ("PUT", "/v1/tickets/decide".to_string(), "POST"),
        ("POST", "/v1/audit".to_string(), "GET, HEAD"),
        ("DELETE", "/v1/admin/rules".to_string(), "GET, HEAD"),
        ("GET", "/v1/admin/reload".to_string(), "POST"),
    ];
    for (method, path, allow) in cases {
        let resp = admin_call(&gw, "ops", method, &path, "").await;
        problem(&resp, 405, &format!("{method} {path}"));
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
    }
    // HEAD is served wherever GET is.
    let head = admin_call(&gw, "ops", "HEAD", "/v1/tickets", "").await;
    assert_eq!(head.status, 200, "HEAD /v1/tickets");
    // A path no endpoint has is 404, whatever the method.
    let unknown = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}/x"), "").await;
    problem(&unknown, 404, "unknown ticket sub-resource");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_decision_bodies_are_capped_at_1_mib() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let path = "/v1/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B/approve";
    // 100 KiB is read (the ticket is unknown: 404, not 413).
    let body = format!("{{\"comment\": \"{}\"}}", "x".repeat(100 * 1024));
    let read = admin_call(&gw, "alice", "POST", path, &body).await;
    problem(&read, 404, "100 KiB decision body");
    // Past 1 MiB it is refused.
    let body = format!("{{\"comment\": \"{}\"}}", "x".repeat(1024 * 1024));
    let refused = admin_call(&gw, "alice", "POST", path, &body).await;
    problem(&refused, 413, "decision body over 1 MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_decision_releases_every_listed_ticket() {
    let origin = Origin::start();
    let gw = start(&origin, "", "");
    let held: Vec<_> = (0..5)
        .map(|n| post_as_bob(&gw, &format!("/deploy/batch/{n}"), "{}", &[]))
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    let ids: Vec<String> = loop {
        let r = admin_call(&gw, "alice", "GET", "/v1/tickets?status=PENDING", "").await;
        let ids: Vec<String> = r.json()["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() == 5 {
            break ids;
        }
        assert!(tokio::time::Instant::now() < deadline, "5 pending tickets");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut with_unknown = ids.clone();
    with_unknown.push("jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B".into());
    let body =
        serde_json::json!({ "ids": with_unknown, "decision": "approve", "comment": "batch" });
    let r = admin_call(
        &gw,
        "alice",
        "POST",
        "/v1/tickets/decide",
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 6);
    assert!(
        results[..5].iter().all(|x| x["status"] == 200),
        "{results:?}"
    );
    assert_eq!(results[5]["status"], 404);
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(origin.count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_ticket_refuses_decisions_with_409() {
    let origin = Origin::start();
    let gw = start(&origin, "hold_timeout = \"5s\"\nticket_ttl = \"300ms\"", "");
    let resp = post_as_bob(&gw, "/deploy/late", "", &[]).await.unwrap();
    // The ticket expired while held: 403 expired.
    let v = problem(&resp, 403, "expired while held");
    let id = v["ticket"].as_str().unwrap().to_string();
    problem(
        &approve(&gw, "alice", &id, "").await,
        409,
        "approve after expiry",
    );
    wait_status(&gw, &id, "EXPIRED", WAIT).await;
    assert_eq!(
        audit_kinds(&gw, &id).await,
        ["ticket.created", "ticket.expired"]
    );
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_approval_releases_the_request_and_grants_a_window() {
    let origin = Origin::start();
    let access_route = r#"[[routes]]
name = "db-console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"
max_uses = 2

[[routes]]
name = "rest""#;
    let cfg = config(&origin.url(), "hold_timeout = \"5s\"", "").replacen(
        "[[routes]]\nname = \"rest\"",
        access_route,
        1,
    );
    let gw = Gateway::start(&cfg);
    // Access routes need an identity.
    problem(
        &send("GET", &gw.url("/console/tables"), &[], "").await,
        401,
        "anonymous access request",
    );
    let held = {
        let url = gw.url("/console/tables");
        tokio::spawn(async move { send("GET", &url, &BOB, "").await })
    };
    let t = wait_pending(&gw, "db-console", WAIT).await;
    assert_eq!(t["mode"], "access");
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(approve(&gw, "alice", &id, "1h").await.status, 200);
    // The request that asked is released as the grant's first use ...
    assert_eq!(held.await.unwrap().status, 200);
    // ... a different request of bob's on the route passes at once (second use) ...
    let next = send("GET", &gw.url("/console/users"), &BOB, "").await;
    assert_eq!(next.status, 200, "{}", next.text());
    // ... and with max_uses = 2 spent, the next one is held again.
    let url = gw.url("/console/logs");
    let third = tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(20))
            .send("GET", &url, &BOB, "")
            .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!third.is_finished(), "third request was not held");
    third.abort();
    // Someone else gets nothing from bob's grant.
    let carol = Client::http1()
        .send("GET", &gw.url("/console/users"), &[("x-user", "carol")], "")
        .await;
    assert_eq!(carol.status, 202, "{}", carol.text());
    assert_eq!(origin.count(), 2);
    let kinds = audit_kinds(&gw, &id).await;
    assert!(
        kinds.contains(&"grant.created".to_string()) && kinds.contains(&"grant.used".to_string()),
        "{kinds:?}"
    );
}

/// A WebSocket upgrade on an approve route is refused (a tunnel cannot be held); any other
/// `Upgrade` (h2c) was stripped at the edge, so that request is held like a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_websocket_upgrades_are_refused_on_approve_routes() {
    let origin = Origin::start();
    let gw = start(&origin, "hold_timeout = \"1s\"", "");
    let ws = b"POST /deploy/ws HTTP/1.1\r\nHost: test\r\nX-User: bob\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Content-Length: 0\r\n\r\n";
    let resp = RawResponse::parse(&raw_request(gw.data_addr(), ws).await);
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(
        resp.text().contains("upgrade-not-holdable"),
        "{}",
        resp.text()
    );
    let h2c = b"POST /deploy/h2c HTTP/1.1\r\nHost: test\r\nX-User: bob\r\n\
Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\
Content-Length: 0\r\n\r\n";
    let resp = RawResponse::parse(&raw_request(gw.data_addr(), h2c).await);
    assert_eq!(
        resp.status,
        202,
        "held like a plain request: {}",
        resp.text()
    );
    assert_eq!(origin.count(), 0);
}

/// A held POST whose body carries `_method` shows it to the approver: the ticket's method is
/// `POST+DELETE`, as the upstream framework will read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_method_override_is_on_the_ticket() {
    let origin = Origin::start();
    let gw = start(&origin, "hold_timeout = \"1s\"", "");
    let held = post_as_bob(
        &gw,
        "/deploy/web",
        "_method=DELETE&x=1",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    let t = wait_pending(&gw, "prod-deploy", WAIT).await;
    assert_eq!(t["request"]["method"], "POST+DELETE", "{t}");
    let resp = held.await.unwrap();
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert_eq!(origin.count(), 0);
}
