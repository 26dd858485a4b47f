//! Red-team regressions on how routes act (SPEC 4, 5, 5a, 6): shadow routes only observe, a
//! `_method` in a form body counts as the method, error templates escape what they carry,
//! and every release, cancellation and pending ticket is accounted for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::redteam::{
    config, pending_id, problem, raw_open, spawn_send, ticket, ALLOW_REST, BOB, WAIT,
};
use common::*;

// === finding 4: a shadow route observes only ===

/// `/a`: shadow deny (no upstream) before an enforcing approve; `/b`: shadow approve before an
/// enforcing deny; `/c`: shadow deny before the allow catch-all.
fn shadow_config(origin: &Origin) -> String {
    let routes = format!(
        r#"[[routes]]
name = "shadow-deny-a"
path = "/a/**"
action = "deny"
enforce = false

[[routes]]
name = "approve-a"
methods = ["POST"]
path = "/a/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "shadow-approve-b"
path = "/b/**"
upstream = "origin"
action = "approve"
enforce = false
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "deny-b"
path = "/b/**"
action = "deny"

[[routes]]
name = "shadow-deny-c"
path = "/c/**"
action = "deny"
enforce = false

{ALLOW_REST}"#
    );
    config(
        &origin.url(),
        "",
        "[approvals]\nhold_timeout = \"300ms\"",
        "",
        &routes,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_deny_in_front_of_an_approve_route_leaves_the_request_held() {
    let origin = Origin::start();
    let gw = Gateway::start(&shadow_config(&origin));
    let resp = send("POST", &gw.url("/a/restart"), &BOB, "{}").await;
    problem(&resp, 202, "POST behind a shadow deny route");
    let id = resp.header("jit-ticket").expect("Jit-Ticket").to_string();
    assert_eq!(pending_id(&gw, "approve-a").await, id);
    origin
        .assert_no_new_requests(Duration::from_millis(100))
        .await;
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_approve_in_front_of_a_deny_route_leaves_the_request_denied() {
    let origin = Origin::start();
    let gw = Gateway::start(&shadow_config(&origin));
    let resp = send("POST", &gw.url("/b/drop"), &BOB, "{}").await;
    let v = problem(&resp, 403, "POST behind a shadow approve route");
    assert_eq!(v["rule"], "deny-b", "{v}");
    origin
        .assert_no_new_requests(Duration::from_millis(100))
        .await;
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_route_in_front_of_an_allow_route_leaves_the_request_forwarded() {
    let origin = Origin::start();
    let gw = Gateway::start(&shadow_config(&origin));
    let resp = send("POST", &gw.url("/c/ping"), &BOB, "{}").await;
    assert_eq!(
        resp.status,
        200,
        "POST behind a shadow deny route: {}",
        resp.text()
    );
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].target, "/c/ping");
}

// === finding 6: `_method` in a form body ===

/// DELETE on `/items/**` needs approval; everything else is allowed.
fn items_config(origin: &Origin) -> String {
    let routes = format!(
        r#"[[routes]]
name = "items-delete"
methods = ["DELETE"]
path = "/items/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

{ALLOW_REST}"#
    );
    config(
        &origin.url(),
        "",
        "[approvals]\nhold_timeout = \"300ms\"",
        "",
        &routes,
    )
}

/// Sends `POST /items/1` with `content_type` and `body`; asserts it was held (202, a pending
/// ticket whose method mentions DELETE) and not forwarded.
async fn assert_held_as_delete(gw: &Gateway, origin: &Origin, content_type: &str, body: &str) {
    let before = origin.count();
    let headers = [BOB[0], BOB[1], ("content-type", content_type)];
    let resp = send("POST", &gw.url("/items/1"), &headers, body.to_string()).await;
    problem(
        &resp,
        202,
        &format!("{content_type} body with _method=DELETE"),
    );
    let id = resp.header("jit-ticket").expect("Jit-Ticket");
    let t = ticket(gw, id).await.json();
    assert_eq!(t["status"], "PENDING", "{t}");
    assert_eq!(t["route"], "items-delete", "{t}");
    assert!(
        t["request"]["method"]
            .as_str()
            .is_some_and(|m| m.contains("DELETE")),
        "the ticket does not say DELETE: {t}"
    );
    origin
        .assert_no_new_requests(Duration::from_millis(100))
        .await;
    assert_eq!(origin.count(), before, "forwarded without approval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn form_body_method_override_is_held_like_the_method() {
    let origin = Origin::start();
    let gw = Gateway::start(&items_config(&origin));
    let form = "application/x-www-form-urlencoded";
    // A form without `_method` is an ordinary POST, forwarded byte for byte.
    let plain = "name=widget&x=1";
    let resp = send(
        "POST",
        &gw.url("/items/1"),
        &[BOB[0], BOB[1], ("content-type", form)],
        plain,
    )
    .await;
    assert_eq!(resp.status, 200, "plain form POST: {}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].body_sha256, sha256_hex(plain.as_bytes()));

    assert_held_as_delete(&gw, &origin, form, "_method=DELETE&x=1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multipart_body_method_override_is_held_like_the_method() {
    let origin = Origin::start();
    let gw = Gateway::start(&items_config(&origin));
    let boundary = "jitgate-boundary-7d1";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    assert_held_as_delete(&gw, &origin, &ct, &body).await;
}

// === finding 9: error templates are escaped for their content type ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn html_error_template_escapes_the_deny_reason() {
    let origin = Origin::start();
    let routes = format!(
        r#"[[routes]]
name = "html-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
[routes.error]
status = 403
content_type = "text/html; charset=utf-8"
body = "<p>{{reason}}</p>"

{ALLOW_REST}"#
    );
    let gw = Gateway::start(&config(&origin.url(), "", "", "", &routes));
    let held = spawn_send("POST", gw.url("/deploy/web"), &BOB, "{}");
    let id = pending_id(&gw, "html-deploy").await;
    let r = deny(&gw, "alice", &id, "<script>alert(1)</script>").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = held.await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let body = resp.text();
    assert!(
        !body.contains("<script>"),
        "the reason reached an HTML body unescaped: {body}"
    );
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the reason is not in the body, HTML-escaped: {body}"
    );
    assert_eq!(origin.count(), 0);
}

// === finding 10: release accounting ===

fn deploy_config(origin: &Origin, sections: &str) -> String {
    let routes = format!(
        r#"[[routes]]
name = "prod-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

{ALLOW_REST}"#
    );
    config(&origin.url(), "", sections, "", &routes)
}

/// An approved request reached the upstream: that is `ticket.executed`, whether or not the
/// client stayed for the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_is_audited_when_the_client_leaves_before_the_upstream_answers() {
    let origin = Origin::start();
    let gw = Gateway::start(&deploy_config(&origin, ""));
    let req = format!(
        "POST /deploy/slow HTTP/1.1\r\nHost: {}\r\nX-User: bob\r\n\
         X-Origin-Behavior: slow-headers/1500\r\nContent-Length: 2\r\n\r\n{{}}",
        gw.data_addr()
    );
    let client = raw_open(gw.data_addr(), req.as_bytes()).await;
    let id = pending_id(&gw, "prod-deploy").await;
    assert_eq!(approve(&gw, "alice", &id, "").await.status, 200);
    // The origin has the request and is still composing its answer: the client leaves.
    let deadline = tokio::time::Instant::now() + WAIT;
    while origin.count() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    wait_status(&gw, &id, "EXECUTED", WAIT).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let kinds = audit_kinds(&gw, &id).await;
        if kinds.iter().any(|k| k == "ticket.executed") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the released request reached the upstream but no ticket.executed was recorded: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.count(), 1);
}

/// `[approvals] max_pending_per_source`: anonymous requesters from one address get at most
/// that many pending tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anonymous_pending_tickets_are_capped_per_source() {
    let origin = Origin::start();
    let gw = Gateway::start(&deploy_config(
        &origin,
        "[approvals]\nhold_timeout = \"200ms\"\nmax_pending_per_source = 2",
    ));
    for n in 0..2 {
        let resp = send("POST", &gw.url(&format!("/deploy/anon-{n}")), &[], "").await;
        problem(&resp, 202, &format!("anonymous request {n}"));
    }
    let third = send("POST", &gw.url("/deploy/anon-2"), &[], "").await;
    problem(&third, 429, "third anonymous pending ticket from 127.0.0.1");
    assert!(third.header("retry-after").is_some(), "no Retry-After");
    assert_eq!(origin.count(), 0);
}

/// `[approvals] max_pending`: pending tickets overall, whoever asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_tickets_are_capped_overall() {
    let origin = Origin::start();
    let gw = Gateway::start(&deploy_config(
        &origin,
        "[approvals]\nhold_timeout = \"200ms\"\nmax_pending = 2",
    ));
    for user in ["bob", "carol"] {
        let resp = send(
            "POST",
            &gw.url(&format!("/deploy/{user}")),
            &[("x-user", user)],
            "",
        )
        .await;
        problem(&resp, 202, user);
    }
    let third = send("POST", &gw.url("/deploy/dave"), &[("x-user", "dave")], "").await;
    problem(&third, 429, "third pending ticket overall");
    assert!(third.header("retry-after").is_some(), "no Retry-After");
    assert_eq!(origin.count(), 0);
}

/// `[store] retention` applies to the memory store too: finished tickets are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_drops_finished_tickets_after_retention() {
    let origin = Origin::start();
    let gw = Gateway::start(&deploy_config(
        &origin,
        "[store]\nkind = \"memory\"\nretention = \"1s\"",
    ));
    let held = spawn_send("POST", gw.url("/deploy/gone"), &BOB, "{}");
    let id = pending_id(&gw, "prod-deploy").await;
    held.abort();
    let _ = held.await;
    wait_status(&gw, &id, "CANCELLED", WAIT).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let r = ticket(&gw, &id).await;
        if r.status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancelled ticket still kept 6s after its 1s retention: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
