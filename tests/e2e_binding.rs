//! Red-team regressions on what an approval is bound to (SPEC 6, 7, 8, 11.7): the forwarded
//! target and headers, the anonymous client that asked, the rule table in force at release,
//! the route definition a ticket was opened under, and the person behind an admin credential.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use proptest::prelude::*;

use common::redteam::{
    audit_events, config, pending_id, problem, raw_open, spawn_send, ticket, tickets_in, wait_held,
    ALLOW_REST, BOB, WAIT,
};
use common::*;

// === finding 1: the approval binds the forwarded request ===

/// `spring-deploy`: approve route that keeps `;` path parameters (Spring strips them for
/// matching), a token good for two uses.
fn spring_config(origin: &Origin) -> String {
    let routes = format!(
        r#"[[routes]]
name = "spring-deploy"
methods = ["POST"]
path = "/spring/deploy/**"
upstream = "origin"
action = "approve"
allow_path_params = true
[routes.approval]
approvers = ["group:oncall"]
token_uses = 2

{ALLOW_REST}"#
    );
    config(&origin.url(), "", "", "", &routes)
}

/// Holds bob's `POST /spring/deploy/web` with `headers`, approves it, and returns the ticket id
/// and the approval token the origin received with the released request.
async fn approved_spring_token(
    gw: &Gateway,
    origin: &Origin,
    headers: &[(&str, &str)],
    body: &str,
) -> (String, String) {
    let mut h: Vec<(&str, &str)> = BOB.to_vec();
    h.extend_from_slice(headers);
    let held = spawn_send("POST", gw.url("/spring/deploy/web"), &h, body);
    let id = pending_id(gw, "spring-deploy").await;
    origin
        .assert_no_new_requests(Duration::from_millis(100))
        .await;
    let r = approve(gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());
    let resp = held.await.unwrap();
    assert_eq!(resp.status, 200, "released: {}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].target, "/spring/deploy/web");
    let token = reqs[0]
        .header_str("jit-approval")
        .expect("Jit-Approval sent upstream");
    (id, token)
}

/// SPEC 6: the fingerprint covers the forwarded target byte for byte, `;` parameters kept by
/// the route included. A token approved for `/spring/deploy/web` must not carry
/// `/spring/deploy/web;version=evil` to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_does_not_fit_a_target_with_other_path_parameters() {
    let origin = Origin::start();
    let gw = Gateway::start(&spring_config(&origin));
    let ct = [("content-type", "application/json")];
    let body = r#"{"image":"web:7"}"#;
    let (_id, token) = approved_spring_token(&gw, &origin, &ct, body).await;

    let mut h: Vec<(&str, &str)> = BOB.to_vec();
    h.extend_from_slice(&ct);
    h.push(("jit-approval", token.as_str()));
    let evil = Client::http1()
        .send("POST", &gw.url("/spring/deploy/web;version=evil"), &h, body)
        .await;
    problem(
        &evil,
        403,
        "token re-sent to a target with other path parameters",
    );
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    let seen: Vec<String> = origin.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        seen.iter().all(|t| !t.contains(";version=evil")),
        "the origin received an unapproved target: {seen:?}"
    );
}

/// SPEC 6: the fingerprint covers a digest of the end-to-end headers the upstream receives,
/// and approvers see those bound headers. A token approved with `X-Tenant: acct_A` must not
/// release a request for `acct_B`, nor one with another `Content-Type`, although the route's
/// `token_uses = 2` leaves a use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_is_bound_to_the_forwarded_headers() {
    let origin = Origin::start();
    let gw = Gateway::start(&spring_config(&origin));
    let body = r#"{"image":"web:8"}"#;
    let approved = [("x-tenant", "acct_A"), ("content-type", "application/json")];
    let (id, token) = approved_spring_token(&gw, &origin, &approved, body).await;

    // Approvers saw the headers the approval binds.
    let t = ticket(&gw, &id).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let shown = t.json()["request"]["headers"].to_string();
    assert!(
        shown.contains("x-tenant") && shown.contains("acct_A"),
        "bound header x-tenant not shown to approvers: {}",
        t.text()
    );

    let variants: [(&str, [(&str, &str); 2]); 2] = [
        (
            "another X-Tenant",
            [("x-tenant", "acct_B"), ("content-type", "application/json")],
        ),
        (
            "another Content-Type",
            [("x-tenant", "acct_A"), ("content-type", "text/plain")],
        ),
    ];
    for (what, headers) in variants {
        let mut h: Vec<(&str, &str)> = BOB.to_vec();
        h.extend_from_slice(&headers);
        h.push(("jit-approval", token.as_str()));
        let resp = Client::http1()
            .send("POST", &gw.url("/spring/deploy/web"), &h, body)
            .await;
        problem(&resp, 403, &format!("token re-sent with {what}"));
    }
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(origin.count(), 1, "only the approved request was forwarded");
}

// === finding 2: anonymous requesters are told apart ===

/// Credential-bearing headers that tell two anonymous clients apart (SPEC 6): name, client
/// A's value, client B's value.
const CREDENTIALS: [(&str, &str, &str); 3] = [
    ("x-api-key", "key-A", "key-B"),
    ("authorization", "Basic YTpwYXNzLUE=", "Basic YjpwYXNzLUI="),
    ("cookie", "s=session-A", "s=session-B"),
];

/// No identity required on `anon-deploy`: anonymous requesters may ask.
fn anon_config(origin: &Origin, hold_timeout: &str) -> String {
    let routes = format!(
        r#"[[routes]]
name = "anon-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

{ALLOW_REST}"#
    );
    let approvals = format!("[approvals]\nhold_timeout = \"{hold_timeout}\"");
    config(&origin.url(), "", &approvals, "", &routes)
}

/// An anonymous `POST path` with one credential header, answered 202 at `hold_timeout`;
/// returns the ticket id.
async fn anon_pending(gw: &Gateway, path: &str, cred: (&str, &str)) -> String {
    let resp = Client::http1()
        .send("POST", &gw.url(path), &[cred], "{}")
        .await;
    assert_eq!(resp.status, 202, "{} {path}: {}", cred.0, resp.text());
    resp.header("jit-ticket").expect("Jit-Ticket").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_clients_with_other_credentials_get_their_own_tickets() {
    let origin = Origin::start();
    let gw = Gateway::start(&anon_config(&origin, "300ms"));
    for (i, (name, a, b)) in CREDENTIALS.iter().enumerate() {
        let path = format!("/deploy/distinct-{i}");
        let id_a = anon_pending(&gw, &path, (name, a)).await;
        let id_b = anon_pending(&gw, &path, (name, b)).await;
        assert_ne!(
            id_a, id_b,
            "{name}: client B's identical request joined client A's ticket"
        );
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_anonymous_client_cannot_read_a_ticket_or_its_token() {
    let origin = Origin::start();
    let gw = Gateway::start(&anon_config(&origin, "300ms"));
    for (i, (name, a, b)) in CREDENTIALS.iter().enumerate() {
        let path = format!("/deploy/read-{i}");
        let id = anon_pending(&gw, &path, (name, a)).await;
        let view = gw.url(&format!("/.well-known/jitgate/tickets/{id}"));
        let own = send("GET", &view, &[(name, a)], "").await;
        assert_eq!(
            own.status,
            200,
            "{name}: A reads its own ticket: {}",
            own.text()
        );
        let other = send("GET", &view, &[(name, b)], "").await;
        assert_eq!(
            other.status,
            404,
            "{name}: B read A's pending ticket: {}",
            other.text()
        );
        assert_eq!(approve(&gw, "alice", &id, "").await.status, 200);
        let other = send("GET", &view, &[(name, b)], "").await;
        assert_eq!(
            other.status,
            404,
            "{name}: B read A's approved ticket: {}",
            other.text()
        );
        assert!(
            !other.text().contains("approvalToken") || other.json()["approvalToken"].is_null(),
            "{name}: B got A's approval token: {}",
            other.text()
        );
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_anonymous_client_cannot_resume_a_ticket() {
    let origin = Origin::start();
    let gw = Gateway::start(&anon_config(&origin, "300ms"));
    for (i, (name, a, b)) in CREDENTIALS.iter().enumerate() {
        let path = format!("/deploy/resume-{i}");
        let id = anon_pending(&gw, &path, (name, a)).await;
        assert_eq!(approve(&gw, "alice", &id, "").await.status, 200);
        let by_b = Client::http1()
            .send(
                "POST",
                &gw.url(&path),
                &[(name, b), ("jit-ticket", id.as_str())],
                "{}",
            )
            .await;
        problem(&by_b, 403, &format!("{name}: B resumes A's ticket"));
        origin
            .assert_no_new_requests(Duration::from_millis(100))
            .await;
        assert_eq!(origin.count(), i, "{name}: B's resume was forwarded");
        // A's own resume still works, once.
        let by_a = Client::http1()
            .send(
                "POST",
                &gw.url(&path),
                &[(name, a), ("jit-ticket", id.as_str())],
                "{}",
            )
            .await;
        assert_eq!(by_a.status, 200, "{name}: A resumes: {}", by_a.text());
        assert_eq!(origin.count(), i + 1);
    }
}

/// Client A's request is answered 202 (A will resume it later); client B sends the identical
/// request with its own credential, is held, and hangs up. Only B's hold is withdrawn: A's
/// ticket stays PENDING and A can still resume it once approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_anonymous_clients_hang_up_does_not_cancel_a_ticket() {
    let origin = Origin::start();
    let gw = Gateway::start(&anon_config(&origin, "1s"));
    for (i, (name, a, b)) in CREDENTIALS.iter().enumerate() {
        let path = format!("/deploy/hangup-{i}");
        let id = anon_pending(&gw, &path, (name, a)).await;
        let cancelled_before = tickets_in(&gw, "CANCELLED").await.len();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{name}: {b}\r\ncontent-length: 2\r\n\r\n{{}}",
            gw.data_addr()
        );
        let b_conn = raw_open(gw.data_addr(), req.as_bytes()).await;
        wait_held(&gw, 1).await;
        drop(b_conn);
        // B's hold is withdrawn: some ticket (B's own, after the fix) is cancelled.
        let deadline = tokio::time::Instant::now() + WAIT;
        while tickets_in(&gw, "CANCELLED").await.len() == cancelled_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: no ticket was cancelled after B hung up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = ticket(&gw, &id).await;
        assert_eq!(
            t.json()["status"],
            "PENDING",
            "{name}: B hanging up changed A's ticket: {}",
            t.text()
        );
        assert_eq!(approve(&gw, "alice", &id, "").await.status, 200);
        let by_a = Client::http1()
            .send(
                "POST",
                &gw.url(&path),
                &[(name, a), ("jit-ticket", id.as_str())],
                "{}",
            )
            .await;
        assert_eq!(by_a.status, 200, "{name}: A resumes: {}", by_a.text());
    }
}

// === finding 3: access mode is re-checked at release, with the ticket's own route ===

fn console_route(max_uses: u32) -> String {
    format!(
        r#"[[routes]]
name = "console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"
max_uses = {max_uses}"#
    )
}

fn access_config(origin: &Origin, front: &str, max_uses: u32) -> String {
    let routes = format!("{front}\n\n{}\n\n{ALLOW_REST}", console_route(max_uses));
    config(
        &origin.url(),
        "",
        "[approvals]\nhold_timeout = \"30s\"",
        "",
        &routes,
    )
}

async fn reload_as_ops(gw: &Gateway, new: &str) {
    gw.rewrite_config(new);
    let r = admin_call(gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "reload: {}", r.text());
    assert_eq!(r.json()["changed"], true, "reload: {}", r.text());
}

/// SPEC 5a/6: every release path re-checks the request against the table in force. An
/// operator freezes `/console/**` with a deny route while bob's access request is held; the
/// approval that follows must not release it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_access_request_is_rechecked_against_the_table_at_release() {
    let origin = Origin::start();
    let gw = Gateway::start(&access_config(&origin, "", 2));
    let held = spawn_send("GET", gw.url("/console/tables"), &BOB, "");
    let id = pending_id(&gw, "console").await;

    let freeze = r#"[[routes]]
name = "console-freeze"
path = "/console/**"
action = "deny""#;
    reload_as_ops(&gw, &access_config(&origin, freeze, 2)).await;
    let r = approve(&gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());

    let resp = held.await.unwrap();
    problem(
        &resp,
        403,
        "held access request after a deny route was put in front",
    );
    assert_eq!(resp.json()["rule"], "console-freeze", "{}", resp.text());
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(
        origin.count(),
        0,
        "the frozen route's request reached the upstream"
    );
}

/// The grant an approval creates takes its limits from the route definition the ticket was
/// opened (and approvers decided) under, not from a later edit of the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_limits_come_from_the_route_the_ticket_was_opened_under() {
    let origin = Origin::start();
    let gw = Gateway::start(&access_config(&origin, "", 1));
    let held = spawn_send("GET", gw.url("/console/tables"), &BOB, "");
    let id = pending_id(&gw, "console").await;
    reload_as_ops(&gw, &access_config(&origin, "", 5)).await;
    let r = approve(&gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());

    let deadline = tokio::time::Instant::now() + WAIT;
    let created = loop {
        let events = audit_events(&gw, &id).await;
        if let Some(e) = events.iter().find(|e| e["kind"] == "grant.created") {
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no grant.created for {id}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        created["detail"]["maxUses"], 1,
        "grant limits taken from the edited route: {created}"
    );
    held.abort();
}

// === finding 8: one approver is counted once, whichever credential they use ===

/// Admin tokens naming the person behind them (`user`), as SPEC 7 shows.
fn person_tokens_config(origin: &Origin, approval_extra: &str) -> String {
    let token = |name: &str, user: &str, group: &str| {
        format!(
            "{{ name = \"{name}\", user = \"{user}\", sha256 = \"{}\", groups = [\"{group}\"] }}",
            sha256_hex(token_of(name).as_bytes())
        )
    };
    let tokens = [
        token("ops", "ops", "platform"),
        token("alice-laptop", "alice", "oncall"),
        token("alice-ci", "alice", "oncall"),
        token("carol", "carol", "oncall"),
        token("ci-bot", "bob", "oncall"),
    ];
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
watch = false

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "prod-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
{approval_extra}

{ALLOW_REST}

[identity.headers]
user = "X-User"
groups = "X-Groups"

[admin]
operators = ["group:platform"]
api_tokens = [
  {}
]
"#,
        tokens.join(",\n  "),
        origin = origin.url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tokens_of_one_person_count_once_towards_quorum() {
    let origin = Origin::start();
    let gw = Gateway::start(&person_tokens_config(&origin, "quorum = 2"));
    let held = spawn_send("POST", gw.url("/deploy/web"), &BOB, "{}");
    let id = pending_id(&gw, "prod-deploy").await;
    let first = approve(&gw, "alice-laptop", &id, "one").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["status"], "PENDING");
    let second = approve(&gw, "alice-ci", &id, "two").await;
    problem(&second, 409, "alice's second credential");
    wait_status(&gw, &id, "PENDING", WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert!(!held.is_finished(), "released on one person's two votes");
    // Another person completes the quorum.
    assert_eq!(approve(&gw, "carol", &id, "").await.status, 200);
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_acting_as_the_requester_cannot_self_approve() {
    let origin = Origin::start();
    let gw = Gateway::start(&person_tokens_config(&origin, ""));
    let held = spawn_send("POST", gw.url("/deploy/web"), &BOB, "{}");
    let id = pending_id(&gw, "prod-deploy").await;
    let r = approve(&gw, "ci-bot", &id, "mine").await;
    problem(&r, 403, "bob's own ticket approved with bob's bot token");
    wait_status(&gw, &id, "PENDING", WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    held.abort();
}

// === property: what is released under an approval is what was approved ===

/// The approved request of [`released_requests_equal_the_approved_one`].
const BIND_PATH: &str = "/spring/deploy/web?x=1";
const BIND_BODY: &str = r#"{"image":"web:7"}"#;
const BIND_HEADERS: [(&str, &str); 4] = [
    ("x-tenant", "acct_A"),
    ("content-type", "application/json"),
    ("accept", "application/json"),
    ("x-user", "bob"),
];

/// One change an attacker (or a sloppy client) makes to the approved request before sending it
/// with the approval token.
#[derive(Debug, Clone)]
enum Mutation {
    SetHeader(&'static str, &'static str),
    DropHeader(&'static str),
    RepeatHeader(&'static str, &'static str),
    Target(&'static str),
    Method(&'static str),
    Body(&'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use proptest::sample::select;
    prop_oneof![
        select(vec![
            ("x-tenant", "acct_B"),
            ("x-tenant", "ACCT_A"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "*/*"),
            ("x-extra", "1"),
            ("x-user", "mallory"),
            ("x-groups", "oncall"),
            ("x-http-method-override", "DELETE"),
            ("authorization", "Basic eDp5"),
            ("cookie", "s=1"),
            // Volatile: they may change without voiding the approval.
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            ),
            ("x-request-id", "r-42"),
        ])
        .prop_map(|(n, v)| Mutation::SetHeader(n, v)),
        select(vec!["x-tenant", "content-type", "accept"]).prop_map(Mutation::DropHeader),
        select(vec![("x-tenant", "acct_B"), ("accept", "text/html")])
            .prop_map(|(n, v)| Mutation::RepeatHeader(n, v)),
        select(vec![
            "/spring/deploy/web;version=evil?x=1",
            "/spring/deploy/web?x=2",
            "/spring/deploy/web",
            "/spring/deploy/web?x=1&_method=DELETE",
            "/spring/deploy/%77eb?x=1",
            "/spring/deploy/./web?x=1",
            "/spring/deploy//web?x=1",
            "/spring/deploy/WEB?x=1",
            "/spring/deploy/web/?x=1",
            "/spring/deploy/web;?x=1",
        ])
        .prop_map(Mutation::Target),
        select(vec!["PUT", "PATCH"]).prop_map(Mutation::Method),
        select(vec![r#"{"image":"web:8"}"#, r#"{"image": "web:7"}"#, ""]).prop_map(Mutation::Body),
    ]
}

/// The request after `mutations`: (method, target, headers, body).
fn mutated(mutations: &[Mutation]) -> (String, String, Vec<(String, String)>, String) {
    let mut method = "POST".to_string();
    let mut target = BIND_PATH.to_string();
    let mut headers: Vec<(String, String)> = BIND_HEADERS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let mut body = BIND_BODY.to_string();
    for m in mutations {
        match m {
            Mutation::SetHeader(n, v) => {
                headers.retain(|(k, _)| k != n);
                headers.push((n.to_string(), v.to_string()));
            }
            Mutation::DropHeader(n) => headers.retain(|(k, _)| k != n),
            Mutation::RepeatHeader(n, v) => headers.push((n.to_string(), v.to_string())),
            Mutation::Target(t) => target = t.to_string(),
            Mutation::Method(x) => method = x.to_string(),
            Mutation::Body(b) => body = b.to_string(),
        }
    }
    (method, target, headers, body)
}

/// What of a forwarded request the approval binds, as the origin received it: method, target,
/// the headers but those the gateway sets or that are volatile, and the body.
fn bound_view(r: &Recorded) -> (String, String, Vec<(String, Vec<u8>)>, String) {
    const NOT_BOUND: [&str; 10] = [
        "host",
        "content-length",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "jit-approval",
        "traceparent",
        "x-request-id",
        "x-groups",
    ];
    let mut headers: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .filter(|(n, _)| !NOT_BOUND.contains(&n.as_str()))
        .cloned()
        .collect();
    headers.sort();
    (
        r.method.clone(),
        r.path_and_query.clone().unwrap_or_default(),
        headers,
        r.body_sha256.clone(),
    )
}

/// SPEC 11.7 as a property: a request re-sent with an approval token in any variation (other
/// headers, targets, methods, bodies, requesters) is either refused and forwards nothing, or is
/// forwarded equal to the approved request in method, target, bound headers and body.
#[test]
fn released_requests_equal_the_approved_one() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = Origin::start();
    let routes = r#"[[routes]]
name = "spring-deploy"
methods = ["POST"]
path = "/spring/deploy/**"
upstream = "origin"
action = "approve"
allow_path_params = true
[routes.approval]
approvers = ["group:oncall"]
token_uses = 1000
"#;
    // Only the approve route: anything forwarded was released under the approval.
    let gw = Gateway::start(&config(&origin.url(), "", "", "", routes));
    let (approved, token) = rt.block_on(async {
        let held = spawn_send("POST", gw.url(BIND_PATH), &BIND_HEADERS, BIND_BODY);
        let id = pending_id(&gw, "spring-deploy").await;
        let r = approve(&gw, "alice", &id, "ok").await;
        assert_eq!(r.status, 200, "approve: {}", r.text());
        let resp = held.await.unwrap();
        assert_eq!(resp.status, 200, "released: {}", resp.text());
        let reqs = origin.wait_for(1, WAIT).await;
        let token = reqs[0].header_str("jit-approval").expect("token upstream");
        (bound_view(&reqs[0]), token)
    });
    let strategy = proptest::collection::vec(mutation(), 0..4);
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 200,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    let released = std::cell::Cell::new(0usize);
    let result = runner.run(&strategy, |mutations| {
        let (method, target, headers, body) = mutated(&mutations);
        let before = origin.count();
        let mut h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        h.push(("jit-approval", &token));
        let resp = rt.block_on(send(&method, &gw.url(&target), &h, body));
        let new = origin.requests()[before..].to_vec();
        if resp.status == 200 {
            released.set(released.get() + 1);
            prop_assert_eq!(new.len(), 1, "{:?}", mutations);
            prop_assert_eq!(bound_view(&new[0]), approved.clone(), "{:?}", mutations);
        } else {
            prop_assert!(
                new.is_empty(),
                "{:?} answered {} but was forwarded",
                mutations,
                resp.status
            );
            prop_assert!(
                matches!(resp.status.as_u16(), 400 | 403 | 404),
                "{:?}: unexpected {} {}",
                mutations,
                resp.status,
                resp.text()
            );
        }
        Ok(())
    });
    println!("property: {} of 200 variations released", released.get());
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        released.get() > 0,
        "no variation was released: the property tested nothing"
    );
}
