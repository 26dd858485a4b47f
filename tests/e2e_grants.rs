//! Access grants through the admin API (SPEC 8): `GET /v1/grants` shows each caller the active
//! grants they may see (operators all, requesters their own, a route's approvers the grants
//! on it), and `POST /v1/grants/{id}/revoke` ends a grant at once: its next request is held
//! for approval again, on this replica and on another one sharing the Redis store. Every
//! revocation is audited with who revoked it and why. The requester sees their own grants,
//! time left and uses at `/.well-known/jitgate/grants` on the data plane.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

use common::*;

const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];

/// `db-console` (access mode, approvers group:oncall, up to 1 h), `ops-only` (access mode,
/// approvers group:platform), the rest allowed; requests are held for 1 s, then answered 202.
fn config(origin: &str, store: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

{store}

[approvals]
hold_timeout = "1s"
reconcile_interval = "300ms"
signing_key = "key.pem"

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "db-console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"

[[routes]]
name = "ops-only"
path = "/ops/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:platform"]
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

fn start(origin: &Origin, store: &str, key: &str) -> Gateway {
    Gateway::builder(&config(&origin.url(), store))
        .file("key.pem", key)
        .start()
}

/// Bob asks for `path` on `gw` (held, then answered 202), alice approves: returns the grant
/// the approval created, as bob's grant listing shows it.
async fn grant_for_bob(gw: &Gateway, path: &str) -> Value {
    let r = send("GET", &gw.url(path), &BOB, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let ticket = r.header("jit-ticket").expect("Jit-Ticket").to_string();
    assert_eq!(approve(gw, "alice", &ticket, "1h").await.status, 200);
    let list = grants(gw, "bob", "").await;
    let gs = list["grants"].as_array().expect("grants").clone();
    assert_eq!(gs.len(), 1, "{list}");
    assert_eq!(gs[0]["ticket"], ticket.as_str());
    gs[0].clone()
}

async fn grants(gw: &Gateway, user: &str, query: &str) -> Value {
    let r = admin_call(gw, user, "GET", &format!("/v1/grants{query}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn revoke(gw: &Gateway, user: &str, id: &str, body: &str) -> Response {
    admin_call(gw, user, "POST", &format!("/v1/grants/{id}/revoke"), body).await
}

#[tokio::test]
async fn each_caller_sees_the_grants_they_may_manage_and_a_revocation_ends_one_at_once() {
    let origin = Origin::start();
    let gw = start(&origin, "[store]\nkind = \"memory\"\n", &signing_key_pem());
    let grant = grant_for_bob(&gw, "/console/tables").await;
    let id = grant["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("grt_"), "{grant}");
    assert_eq!(grant["route"], "db-console");
    assert_eq!(grant["requester"]["user"], "bob");

    // The grant lets bob through.
    let r = send("GET", &gw.url("/console/users"), &BOB, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.count(), 1);

    // Who sees it: the operator, bob, and the route's approvers; not mallory.
    let count = |v: &Value| v["grants"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&grants(&gw, "ops", "").await), 1);
    assert_eq!(count(&grants(&gw, "carol", "").await), 1);
    assert_eq!(count(&grants(&gw, "mallory", "").await), 0);
    assert_eq!(
        count(&grants(&gw, "ops", "?route=db-console&requester=bob").await),
        1
    );
    assert_eq!(count(&grants(&gw, "ops", "?route=ops-only").await), 0);
    assert_eq!(count(&grants(&gw, "ops", "?requester=carol").await), 0);
    let r = admin_call(&gw, "ops", "GET", "/v1/grants?state=gone", "").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin_call(&gw, "ops", "GET", "/v1/grants?colour=red", "").await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Mallory can neither see nor revoke it; malformed ids and bodies are refused.
    let r = revoke(&gw, "mallory", &id, "{}").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:jitgate:problem:unknown-grant");
    assert_eq!(revoke(&gw, "ops", "grt_nope", "{}").await.status, 404);
    assert_eq!(revoke(&gw, "ops", &id, r#"{"why":"x"}"#).await.status, 400);
    assert_eq!(
        send("GET", &gw.url("/console/more"), &BOB, "").await.status,
        200,
        "the grant still works"
    );

    // Carol, an approver of the route, revokes it.
    let r = revoke(&gw, "carol", &id, r#"{"reason":"done with the migration"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["revokedAt"].is_string(), "{}", r.text());
    // Bob's next request is held for approval again and reaches nothing.
    let r = send("GET", &gw.url("/console/after"), &BOB, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), 2);
    assert_eq!(count(&grants(&gw, "ops", "").await), 0);
    // Still listed by state, to whom it concerns.
    let revoked = grants(&gw, "ops", "?state=revoked").await;
    assert_eq!(count(&revoked), 1, "{revoked}");
    assert_eq!(revoked["grants"][0]["id"], id.as_str());
    assert_eq!(count(&grants(&gw, "carol", "?state=all").await), 1);
    assert_eq!(count(&grants(&gw, "bob", "?state=revoked").await), 1);
    assert_eq!(count(&grants(&gw, "mallory", "?state=all").await), 0);
    assert_eq!(count(&grants(&gw, "ops", "?state=expired").await), 0);
    assert_eq!(count(&grants(&gw, "ops", "?state=used_up").await), 0);
    let again = revoke(&gw, "ops", &id, "{}").await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["type"], "urn:jitgate:problem:grant-not-active");

    // Audited with who and why.
    let r = admin_call(&gw, "ops", "GET", "/v1/audit?kind=grant.revoked", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "carol");
    assert_eq!(events[0]["detail"]["grant"], id.as_str());
    assert_eq!(events[0]["detail"]["reason"], "done with the migration");
}

#[tokio::test]
async fn a_requester_may_give_up_their_own_grant_but_not_revoke_on_routes_they_do_not_approve() {
    let origin = Origin::start();
    let gw = start(&origin, "[store]\nkind = \"memory\"\n", &signing_key_pem());
    let grant = grant_for_bob(&gw, "/console/x").await;
    let id = grant["id"].as_str().unwrap();
    // Carol approves db-console, not ops-only; an operator's view of an ops-only grant is
    // not hers.
    let r = send("GET", &gw.url("/ops/x"), &BOB, "").await;
    assert_eq!(r.status, 202);
    let ops_ticket = r.header("jit-ticket").unwrap().to_string();
    assert_eq!(approve(&gw, "ops", &ops_ticket, "ok").await.status, 200);
    let all = grants(&gw, "ops", "?route=ops-only").await;
    let ops_grant = all["grants"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(revoke(&gw, "carol", &ops_grant, "{}").await.status, 404);
    // Bob gives up his own.
    let r = revoke(&gw, "bob", id, "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        send("GET", &gw.url("/console/y"), &BOB, "").await.status,
        202
    );
}

#[tokio::test]
async fn a_revocation_through_one_replica_stops_use_on_another_at_once() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let key = signing_key_pem();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let a = start(&origin, &store, &key);
    let b = start(&origin, &store, &key);
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    let grant = grant_for_bob(&a, "/console/a").await;
    let id = grant["id"].as_str().unwrap();
    // The grant works on the other replica too.
    let r = send("GET", &b.url("/console/b"), &BOB, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = origin.count();

    let r = revoke(&a, "ops", id, r#"{"reason":"incident over"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Replica B refuses the very next use: held again, nothing forwarded.
    let r = send("GET", &b.url("/console/c"), &BOB, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), before);
    assert_eq!(
        grants(&b, "ops", "").await["grants"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_requester_sees_their_own_usable_grants_on_the_data_plane() {
    let origin = Origin::start();
    let gw = start(&origin, "[store]\nkind = \"memory\"\n", &signing_key_pem());
    let view = |user: &'static str| {
        let url = gw.url("/.well-known/jitgate/grants");
        async move { send("GET", &url, &[("x-user", user)], "").await }
    };
    assert_eq!(view("bob").await.json()["grants"], serde_json::json!([]));
    let grant = grant_for_bob(&gw, "/console/a").await;
    let id = grant["id"].as_str().unwrap().to_string();
    assert_eq!(
        send("GET", &gw.url("/console/b"), &BOB, "").await.status,
        200
    );

    let r = view("bob").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let mine = r.json()["grants"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], id.as_str());
    assert_eq!(mine[0]["route"], "db-console");
    assert_eq!(mine[0]["uses"], 1);
    let left = mine[0]["secondsLeft"].as_u64().unwrap();
    assert!(left > 3000 && left <= 3600, "{left}");
    // Nobody else sees bob's grant; an anonymous client is asked to authenticate.
    assert_eq!(view("carol").await.json()["grants"], serde_json::json!([]));
    assert_eq!(
        send("GET", &gw.url("/.well-known/jitgate/grants"), &[], "")
            .await
            .status,
        401
    );
    assert_eq!(
        send("POST", &gw.url("/.well-known/jitgate/grants"), &BOB, "")
            .await
            .status,
        405
    );
    // Revoked: gone from the view.
    assert_eq!(revoke(&gw, "bob", &id, "{}").await.status, 200);
    assert_eq!(view("bob").await.json()["grants"], serde_json::json!([]));
    // The view is the gateway's own: nothing reached the origin for it.
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_requested_duration_is_granted_exactly_or_refused_with_400() {
    let origin = Origin::start();
    let gw = start(&origin, "[store]\nkind = \"memory\"\n", &signing_key_pem());
    let ask = |duration: &'static str| {
        let url = gw.url("/console/d");
        async move {
            send(
                "GET",
                &url,
                &[BOB[0], BOB[1], ("jit-duration", duration)],
                "",
            )
            .await
        }
    };
    // Longer than max_duration (1h), or not a duration: refused, nothing opened or sent.
    for bad in ["2h", "soon", "0s", "90"] {
        let r = ask(bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(
            r.json()["type"],
            "urn:jitgate:problem:duration-not-allowed",
            "{bad}"
        );
        assert!(r.header("jit-ticket").is_none());
    }
    let pending = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(pending.json()["tickets"], serde_json::json!([]));
    assert_eq!(origin.count(), 0);

    // 30 minutes: the ticket shows it to the approver, and the grant lasts exactly that.
    let r = ask("30m").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("jit-ticket").unwrap().to_string();
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "")
        .await
        .json();
    assert_eq!(t["grantTerms"]["durationMs"], 1_800_000, "{t}");
    assert_eq!(approve(&gw, "alice", &id, "30 minutes").await.status, 200);
    let g = &grants(&gw, "bob", "").await["grants"][0];
    let (from, to) = (
        g["createdAt"].as_str().unwrap().to_string(),
        g["expiresAt"].as_str().unwrap().to_string(),
    );
    let ms = |s: &str| {
        jitgate_rules::ticket::Timestamp::parse_rfc3339(s)
            .unwrap()
            .as_millis()
    };
    assert_eq!(ms(&to) - ms(&from), 1_800_000, "{g}");
}

/// `POST /v1/access-requests` as `user`.
async fn ask_ahead(gw: &Gateway, user: &str, body: &str) -> Response {
    admin_call(gw, user, "POST", "/v1/access-requests", body).await
}

/// Access asked for ahead: the ticket is opened without a held request, under the route's
/// duration rules, and its approval lets exactly its requester through for the duration.
async fn asked_ahead(store: &str) {
    let origin = Origin::start();
    let gw = start(&origin, store, &signing_key_pem());
    wait_store_ok(&gw).await;
    let r = ask_ahead(
        &gw,
        "bob",
        r#"{"route":"db-console","duration":"30m","reason":"  migration 7  "}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.json();
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/tickets/{id}").as_str())
    );
    assert_eq!(t["status"], "PENDING");
    assert_eq!(t["mode"], "access");
    assert_eq!(t["requester"]["user"], "bob");
    assert_eq!(t["reason"], "migration 7");
    assert_eq!(t["grantTerms"]["durationMs"], 1_800_000);
    assert_eq!(t["request"]["path"], "");

    // The same again joins it; other terms while it is pending, or terms the route does not
    // grant, are refused before anything is written.
    let again = ask_ahead(&gw, "bob", r#"{"route":"db-console","duration":"30m"}"#).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["id"], id.as_str());
    for (body, status, slug) in [
        (
            r#"{"route":"db-console","duration":"20m"}"#,
            400,
            "duration-not-allowed",
        ),
        (
            r#"{"route":"db-console","duration":"2h"}"#,
            400,
            "duration-not-allowed",
        ),
        (
            r#"{"route":"db-console","duration":"soon"}"#,
            400,
            "duration-not-allowed",
        ),
        (r#"{"route":"rest"}"#, 400, "not-an-access-route"),
        (r#"{"route":"db-consol"}"#, 404, "unknown-route"),
        (
            r#"{"route":"db-console","for":"carol"}"#,
            400,
            "malformed-request",
        ),
        (r#"["db-console"]"#, 400, "malformed-request"),
    ] {
        let r = ask_ahead(&gw, "bob", body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(
            r.json()["type"],
            format!("urn:jitgate:problem:{slug}").as_str(),
            "{body}"
        );
    }
    let r = send(
        "POST",
        &gw.admin("/v1/access-requests"),
        &[],
        "{}".to_string(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let pending = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(
        pending.json()["tickets"].as_array().map(Vec::len),
        Some(1),
        "refusals opened nothing: {}",
        pending.text()
    );

    // Bob may not approve his own ticket; alice may. The grant lasts 30 minutes.
    assert_eq!(approve(&gw, "bob", &id, "me").await.status, 403);
    assert_eq!(approve(&gw, "alice", &id, "ok").await.status, 200);
    let list = grants(&gw, "bob", "").await;
    let g = &list["grants"][0];
    assert_eq!(g["ticket"], id.as_str());
    let decided = wait_status(&gw, &id, "APPROVED", std::time::Duration::from_secs(5)).await;
    let from = decided["decidedAt"].as_str().unwrap().to_string();
    let until = g["expiresAt"].as_str().unwrap().to_string();
    assert_ne!(from, until);
    let (from, until) = (rfc3339_ms(&from), rfc3339_ms(&until));
    assert_eq!(until - from, 1_800_000, "{g}");

    // Bob's requests pass at once; mallory's are held.
    let r = send("GET", &gw.url("/console/tables"), &BOB, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        "GET",
        &gw.url("/console/tables"),
        &[("x-user", "mallory")],
        "",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), 1);
    let kinds = wait_audit(
        &gw,
        &id,
        &["ticket.created", "ticket.approved", "grant.created"],
    )
    .await;
    assert!(kinds.contains(&"grant.used".to_string()), "{kinds:?}");
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp as the API writes them.
fn rfc3339_ms(s: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s%3N"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ms")
}

#[tokio::test]
async fn access_asked_ahead_opens_a_ticket_whose_approval_grants_exactly_what_was_asked_memory() {
    asked_ahead("[store]\nkind = \"memory\"\n").await;
}

#[tokio::test]
async fn access_asked_ahead_opens_a_ticket_whose_approval_grants_exactly_what_was_asked_redis() {
    let redis = RedisServer::start();
    asked_ahead(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}
