//! "Approve this and the next N like it" (SPEC 8): `POST /v1/tickets/{id}/approve` with
//! `{"also": {"uses": N, "within": "1h"}}` releases this request and lets exactly N more of
//! the same requester, route and method through within the window, then holds again. Nobody
//! else, no other method and no other route rides on it; the route's `max_also_uses` and
//! `max_also_within` bound what an approver may give; with a quorum every approver must agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{json, Value};

use common::*;

const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];
const DAVE: [(&str, &str); 2] = [("x-user", "dave"), ("x-groups", "dev")];

/// `agent-writes`: POST/DELETE under /agent, approvers group:oncall, `also` up to 3 uses
/// within 1 h. `two-keys`: the same with quorum 2. `plain`: no `also`. The rest allowed.
fn config(origin: &str, store: &str) -> String {
    let routes = r#"[[routes]]
name = "agent-writes"
methods = ["POST", "DELETE"]
path = "/agent/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
max_also_uses = 3
max_also_within = "1h"

[[routes]]
name = "two-keys"
methods = ["POST"]
path = "/vault/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
quorum = 2
max_also_uses = 3

[[routes]]
name = "plain"
methods = ["POST"]
path = "/plain/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

"#;
    policy_config(
        origin,
        store,
        "hold_timeout = \"500ms\"\nreconcile_interval = \"300ms\"\n",
        routes,
        "",
    )
}

fn start(origin: &Origin, store: &str) -> Gateway {
    Gateway::builder(&config(&origin.url(), store))
        .file("key.pem", signing_key_pem())
        .start()
}

/// Sends `method path` as `who` with `body`; expects it held and answered 202: its ticket id.
async fn held(gw: &Gateway, method: &str, path: &str, who: &[(&str, &str)], body: &str) -> String {
    let r = send(method, &gw.url(path), who, body.to_string()).await;
    assert_eq!(r.status, 202, "{method} {path}: {}", r.text());
    r.header("jit-ticket").expect("Jit-Ticket").to_string()
}

async fn approve_also(gw: &Gateway, user: &str, id: &str, also: Value) -> Response {
    let body = json!({ "comment": "ok", "also": also }).to_string();
    admin_call(
        gw,
        user,
        "POST",
        &format!("/v1/tickets/{id}/approve"),
        &body,
    )
    .await
}

/// Re-sends the approved request with its ticket: released.
async fn resume(
    gw: &Gateway,
    method: &str,
    path: &str,
    who: &[(&str, &str)],
    body: &str,
    id: &str,
) {
    let mut h: Vec<(&str, &str)> = who.to_vec();
    h.push(("jit-ticket", id));
    let r = send(method, &gw.url(path), &h, body.to_string()).await;
    assert_eq!(r.status, 200, "resume {id}: {}", r.text());
}

async fn releases_exactly_n_more(store: &str, _redis: Option<RedisServer>) {
    let origin = Origin::start();
    let gw = start(&origin, store);
    wait_store_ok(&gw).await;
    let id = held(&gw, "POST", "/agent/run", &BOB, "{\"n\":0}").await;
    let r = approve_also(&gw, "alice", &id, json!({ "uses": 2, "within": "10m" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["status"], "APPROVED");
    assert_eq!(t["approvals"][0]["also"]["uses"], 2, "{t}");
    resume(&gw, "POST", "/agent/run", &BOB, "{\"n\":0}", &id).await;
    assert_eq!(origin.count(), 1);

    // The grant the approval made: bob's, on this route, for POST only, 2 uses.
    let r = admin_call(&gw, "ops", "GET", "/v1/grants?route=agent-writes", "").await;
    let gs = r.json()["grants"].as_array().cloned().unwrap_or_default();
    assert_eq!(gs.len(), 1, "{}", r.text());
    assert_eq!(gs[0]["method"], "POST");
    assert_eq!(gs[0]["maxUses"], 2);
    assert_eq!(gs[0]["ticket"], id.as_str());

    // Another user, another method, another route: held, not released on bob's grant.
    held(&gw, "POST", "/agent/run", &DAVE, "{\"n\":1}").await;
    held(&gw, "DELETE", "/agent/run", &BOB, "").await;
    held(&gw, "POST", "/plain/run", &BOB, "{\"n\":1}").await;
    assert_eq!(origin.count(), 1, "nothing else passed");

    // Two more of bob's POSTs, different bodies and paths: through at once.
    for (i, path) in ["/agent/run", "/agent/other"].iter().enumerate() {
        let r = send("POST", &gw.url(path), &BOB, format!("{{\"n\":{}}}", i + 10)).await;
        assert_eq!(r.status, 200, "use {i}: {}", r.text());
    }
    assert_eq!(origin.count(), 3);
    // The third is held again: exactly N more.
    held(&gw, "POST", "/agent/run", &BOB, "{\"n\":99}").await;
    assert_eq!(origin.count(), 3);

    let kinds = wait_audit(&gw, &id, &["grant.created", "grant.used"]).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "grant.used").count(),
        2,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn also_releases_exactly_n_more_of_the_same_requester_route_and_method_memory() {
    releases_exactly_n_more("[store]\nkind = \"memory\"\n", None).await;
}

#[tokio::test]
async fn also_releases_exactly_n_more_of_the_same_requester_route_and_method_redis() {
    let redis = RedisServer::start();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    releases_exactly_n_more(&store, Some(redis)).await;
}

#[tokio::test]
async fn also_is_bounded_by_the_route_and_refused_where_it_is_not_allowed() {
    let origin = Origin::start();
    let gw = start(&origin, "[store]\nkind = \"memory\"\n");
    let id = held(&gw, "POST", "/agent/run", &BOB, "{}").await;
    for (also, why) in [
        (
            json!({ "uses": 4, "within": "10m" }),
            "more than max_also_uses",
        ),
        (json!({ "uses": 0, "within": "10m" }), "zero uses"),
        (
            json!({ "uses": 1, "within": "2h" }),
            "longer than max_also_within",
        ),
        (json!({ "uses": 1, "within": "soon" }), "not a duration"),
        (json!({ "uses": 1 }), "no window"),
        (json!({ "uses": -1, "within": "1m" }), "negative"),
        (
            json!({ "uses": 1, "within": "1m", "forever": true }),
            "unknown field",
        ),
    ] {
        let r = approve_also(&gw, "alice", &id, also).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text());
    }
    // Nothing was recorded by the refusals: a plain approval still works.
    let t = wait_status(&gw, &id, "PENDING", std::time::Duration::from_secs(5)).await;
    assert_eq!(t["approvals"].as_array().map(Vec::len), Some(0), "{t}");

    // A route without max_also_uses refuses `also`.
    let plain = held(&gw, "POST", "/plain/run", &BOB, "{}").await;
    let r = approve_also(&gw, "alice", &plain, json!({ "uses": 1, "within": "1m" })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max_also_uses"), "{}", r.text());

    // An anonymous requester cannot be given more requests.
    let anon = held(&gw, "POST", "/agent/anon", &[], "{}").await;
    let r = approve_also(&gw, "alice", &anon, json!({ "uses": 1, "within": "1m" })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn with_a_quorum_every_approver_must_agree_to_also_and_the_smallest_terms_apply() {
    let origin = Origin::start();
    let gw = start(&origin, "[store]\nkind = \"memory\"\n");

    // Alice approves plainly; carol's `also` cannot add uses alice did not agree to.
    let id = held(&gw, "POST", "/vault/a", &BOB, "{}").await;
    assert_eq!(approve(&gw, "alice", &id, "plain").await.status, 200);
    let r = approve_also(&gw, "carol", &id, json!({ "uses": 3, "within": "1h" })).await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Both agree: the smaller number of uses applies.
    let id = held(&gw, "POST", "/vault/b", &BOB, "{}").await;
    let r = approve_also(&gw, "alice", &id, json!({ "uses": 3, "within": "1h" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = approve_also(&gw, "carol", &id, json!({ "uses": 1, "within": "30m" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    resume(&gw, "POST", "/vault/b", &BOB, "{}", &id).await;
    let r = send("POST", &gw.url("/vault/c"), &BOB, "{}".to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    held(&gw, "POST", "/vault/d", &BOB, "{}").await;
    assert_eq!(origin.count(), 2);
}
