//! Red-team probes of auto-approval, `also` grants, break-glass and access requests that
//! held up: each spelling or trick below is refused or held, nothing reaches the upstream.
//! Kept as regressions next to `e2e_redteam_policies.rs` (the ones that did not hold).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// What a spelling probe sends: a label, method, target, headers and body.
type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, String);

use serde_json::json;

use common::*;

const BOTS: [(&str, &str); 3] = [
    ("x-user", "deploy-bot"),
    ("x-groups", "bots"),
    ("x-env", "staging"),
];
const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];
const SAM: [(&str, &str); 2] = [("x-user", "sam"), ("x-groups", "sre")];

fn config(origin: &str, store: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
watch = false

{store}

[approvals]
hold_timeout = "300ms"
signing_key = "key.pem"

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "deploy"
methods = ["POST", "PUT", "DELETE"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
allow_path_params = true
[routes.approval]
approvers = ["group:oncall"]
[[routes.approval.auto_approve]]
name = "canary"
path_prefix = "/deploy/canary"
methods = ["POST"]
groups = ["bots"]
headers = {{ "x-env" = "staging" }}

[[routes]]
name = "agent"
methods = ["POST", "DELETE"]
path = "/agent/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
max_also_uses = 5

[[routes]]
name = "db"
methods = ["POST"]
path = "/db/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
break_glass = {{ groups = ["sre"] }}

[[routes]]
name = "console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{}"#,
        identity_and_admin_toml()
    )
}

fn start(origin: &Origin, store: &str) -> Gateway {
    Gateway::builder(&config(&origin.url(), store))
        .file("key.pem", signing_key_pem())
        .start()
}

const MEMORY: &str = "[store]\nkind = \"memory\"\n";

fn with(
    base: &[(&'static str, &'static str)],
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut h = base.to_vec();
    h.extend_from_slice(extra);
    h
}

/// Spellings of a path, a method or a header that must not pass the `canary` policy.
#[tokio::test]
async fn auto_approve_conditions_are_not_bypassed_by_spellings() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY);
    wait_store_ok(&gw).await;
    // The control: admitted.
    let r = send(
        "POST",
        &gw.url("/deploy/canary/web"),
        &BOTS,
        "{}".to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let cases: Vec<Case> = vec![
        (
            "tomcat ..;",
            "POST",
            "/deploy/canary/..;/prod/web".into(),
            BOTS.to_vec(),
            "{}".into(),
        ),
        (
            "params on the prefix segment",
            "POST",
            "/deploy/canary;x=1/../prod".into(),
            BOTS.to_vec(),
            "{}".into(),
        ),
        (
            "encoded dots",
            "POST",
            "/deploy/canary/%2e%2e/prod".into(),
            BOTS.to_vec(),
            "{}".into(),
        ),
        (
            "double slash",
            "POST",
            "/deploy//canary/../prod".into(),
            BOTS.to_vec(),
            "{}".into(),
        ),
        (
            "case",
            "POST",
            "/deploy/CANARY/web".into(),
            BOTS.to_vec(),
            "{}".into(),
        ),
        (
            "query _method",
            "POST",
            "/deploy/canary/web?_method=DELETE".into(),
            BOTS.to_vec(),
            "{}".into(),
        ),
        (
            "X-HTTP-Method",
            "POST",
            "/deploy/canary/web".into(),
            with(&BOTS, &[("x-http-method", "DELETE")]),
            "{}".into(),
        ),
        (
            "X-Method-Override lower case",
            "POST",
            "/deploy/canary/web".into(),
            with(&BOTS, &[("x-method-override", "delete")]),
            "{}".into(),
        ),
        (
            "form body _method",
            "POST",
            "/deploy/canary/web".into(),
            with(&BOTS, &form),
            "_method=DELETE&a=1".into(),
        ),
        (
            "comma-joined header",
            "POST",
            "/deploy/canary/web".into(),
            vec![
                ("x-user", "deploy-bot"),
                ("x-groups", "bots"),
                ("x-env", "staging, prod"),
            ],
            "{}".into(),
        ),
        (
            "header with a trailing comma",
            "POST",
            "/deploy/canary/web".into(),
            vec![
                ("x-user", "deploy-bot"),
                ("x-groups", "bots"),
                ("x-env", "staging,"),
            ],
            "{}".into(),
        ),
        (
            "header case",
            "POST",
            "/deploy/canary/web".into(),
            vec![
                ("x-user", "deploy-bot"),
                ("x-groups", "bots"),
                ("x-env", "Staging"),
            ],
            "{}".into(),
        ),
    ];
    for (what, method, path, headers, body) in cases {
        let r = send(method, &gw.url(&path), &headers, body).await;
        assert!(
            r.status == 202 || r.status == 400,
            "{what}: {method} {path} answered {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(origin.count(), 1, "only the control passed");
}

/// An `also` grant for POST does not carry another method reading, nor another requester.
#[tokio::test]
async fn an_also_grant_is_not_spent_by_other_method_spellings() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY);
    wait_store_ok(&gw).await;
    let r = send("POST", &gw.url("/agent/run"), &BOB, "{}".to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("jit-ticket").unwrap().to_string();
    let body = json!({"also": {"uses": 5, "within": "10m"}}).to_string();
    let r = admin_call(
        &gw,
        "alice",
        "POST",
        &format!("/v1/tickets/{id}/approve"),
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for (what, path, headers, body) in [
        (
            "override header",
            "/agent/x",
            with(&BOB, &[("x-http-method-override", "DELETE")]),
            "{}",
        ),
        (
            "query _method",
            "/agent/x?_method=DELETE",
            BOB.to_vec(),
            "{}",
        ),
        (
            "form _method",
            "/agent/x",
            with(&BOB, &form),
            "_method=DELETE",
        ),
        (
            "another user",
            "/agent/x",
            vec![("x-user", "bobby"), ("x-groups", "dev")],
            "{}",
        ),
        ("anonymous", "/agent/x", vec![], "{}"),
    ] {
        let r = send("POST", &gw.url(path), &headers, body.to_string()).await;
        assert_eq!(r.status, 202, "{what}: {}", r.text());
    }
    assert_eq!(origin.count(), 0);
    // The grant is intact: a plain POST of bob's passes.
    let r = send("POST", &gw.url("/agent/y"), &BOB, "{}".to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Break-glass header spellings: twice, not text, empty, from someone outside the groups.
#[tokio::test]
async fn break_glass_spellings_are_refused() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY);
    wait_store_ok(&gw).await;
    let addr = gw.data_addr();
    let twice = b"POST /db/failover HTTP/1.1\r\nHost: x\r\nX-User: sam\r\nX-Groups: sre\r\nJit-Break-Glass: down\r\njit-break-glass: again\r\nContent-Length: 0\r\n\r\n";
    let r = RawResponse::parse(&raw_request(addr, twice).await);
    assert_eq!(r.status, 400, "twice: {}", r.text());
    let mut not_text = b"POST /db/failover HTTP/1.1\r\nHost: x\r\nX-User: sam\r\nX-Groups: sre\r\nJit-Break-Glass: ".to_vec();
    not_text.extend_from_slice(b"\xff\xfe down\r\nContent-Length: 0\r\n\r\n");
    let r = RawResponse::parse(&raw_request(addr, &not_text).await);
    assert_eq!(r.status, 400, "not text: {}", r.text());
    let r = send(
        "POST",
        &gw.url("/db/failover"),
        &with(&SAM, &[("jit-break-glass", "   ")]),
        "",
    )
    .await;
    assert_eq!(r.status, 403, "blank reason: {}", r.text());
    let r = send(
        "POST",
        &gw.url("/db/failover"),
        &with(&BOB, &[("jit-break-glass", "urgent")]),
        "",
    )
    .await;
    assert_eq!(r.status, 403, "not sre: {}", r.text());
    // A member passes once; the token it was forwarded with cannot be replayed.
    let r = send(
        "POST",
        &gw.url("/db/failover"),
        &with(&SAM, &[("jit-break-glass", "primary down")]),
        "{}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = origin.requests()[0].header_str("jit-approval").unwrap();
    let mut replay: Vec<(&str, &str)> = SAM.to_vec();
    replay.push(("jit-approval", token.as_str()));
    let r = send("POST", &gw.url("/db/failover"), &replay, "{}").await;
    assert_eq!(r.status, 403, "token replay: {}", r.text());
    assert_eq!(origin.count(), 1);
}

/// `POST /v1/access-requests` is for the caller only: naming someone else is refused, and
/// the grant does not serve another user.
#[tokio::test]
async fn access_requests_cannot_be_asked_for_someone_else() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY);
    wait_store_ok(&gw).await;
    for body in [
        json!({"route": "console", "duration": "30m", "requester": {"user": "dave"}}),
        json!({"route": "console", "duration": "30m", "user": "dave"}),
        json!({"route": "deploy", "duration": "30m"}),
    ] {
        let r = admin_call(
            &gw,
            "mallory",
            "POST",
            "/v1/access-requests",
            &body.to_string(),
        )
        .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let r = admin_call(
        &gw,
        "mallory",
        "POST",
        "/v1/access-requests",
        &json!({"route": "console", "duration": "30m"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["requester"]["user"], "mallory");
    let r = approve(&gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Someone else on the data plane: held; mallory: through.
    let r = send("GET", &gw.url("/console/a"), &BOB, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = send("GET", &gw.url("/console/a"), &[("x-user", "mallory")], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.count(), 1);
}
