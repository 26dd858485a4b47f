//! Red team of the grants API (SPEC 8, README "Admin plane" grants rows, "Web page",
//! "Access mode"): `GET /v1/grants`, `POST /v1/grants/{id}/revoke`, `/ui/grants` and its
//! revoke form, the grant-use path, and the `grant.*` events of `GET /v1/events`.
//!
//! Tests are named for what must hold; the ones marked **FINDING** in their doc comment failed
//! when written (against b85ffd0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use common::notify::{read_until, sse_events};
use common::*;

const WAIT: Duration = Duration::from_secs(20);
const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];

/// (token name, user, groups) of the admin plane: the usual five, plus users whose names
/// look like another principal.
const ADMINS: [(&str, &str, &str); 9] = [
    ("ops-token", "ops", "platform"),
    ("alice-token", "alice", "oncall"),
    ("carol-token", "carol", "oncall"),
    ("bob-token", "bob", "dev"),
    ("mallory-token", "mallory", ""),
    // A user named like the approver group, in no group.
    ("oncall-token", "oncall", ""),
    // A user spelled like an approver entry.
    ("groupy-token", "group:oncall", ""),
    // bob, differently cased.
    ("bigbob-token", "Bob", ""),
    // The name anonymous requesters are recorded under.
    ("anon-token", "anonymous", ""),
];

fn token(user: &str) -> String {
    format!("{user}-api-token-for-tests")
}

fn admin_toml() -> String {
    let tokens: Vec<String> = ADMINS
        .iter()
        .map(|(name, user, group)| {
            let groups = if group.is_empty() {
                String::new()
            } else {
                format!("\"{group}\"")
            };
            format!(
                "{{ name = \"{name}\", user = \"{user}\", sha256 = \"{}\", groups = [{groups}] }}",
                sha256_hex(token(user).as_bytes())
            )
        })
        .collect();
    format!(
        "[identity.headers]\nuser = \"X-User\"\ngroups = \"X-Groups\"\n\n\
         [admin]\noperators = [\"group:platform\"]\napi_tokens = [\n  {}\n]\n",
        tokens.join(",\n  ")
    )
}

async fn call(gw: &Gateway, user: &str, method: &str, path: &str, body: &str) -> Response {
    let auth = format!("Bearer {}", token(user));
    send(
        method,
        &gw.admin(path),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

const DB_CONSOLE: &str = r#"[[routes]]
name = "db-console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"
"#;

const OTHERS: &str = r#"[[routes]]
name = "ops-only"
path = "/ops/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:platform"]
mode = "access"
max_duration = "1h"

[[routes]]
name = "db-once"
path = "/once/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"
max_uses = 1

[[routes]]
name = "db-brief"
path = "/brief/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "2s"
"#;

const REST: &str = r#"[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"
"#;

/// The config with `db_console` as the first route(s).
fn config(origin: &str, store: &str, db_console: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
watch = false

{store}

[approvals]
hold_timeout = "1s"
reconcile_interval = "300ms"
signing_key = "key.pem"

[[upstreams]]
name = "origin"
url = "{origin}"

{db_console}
{OTHERS}
{REST}
{}"#,
        admin_toml()
    )
}

const MEMORY: &str = "[store]\nkind = \"memory\"\n";

fn start(origin: &Origin, store: &str, key: &str) -> Gateway {
    Gateway::builder(&config(&origin.url(), store, DB_CONSOLE))
        .file("key.pem", key)
        .start()
}

async fn reload(gw: &Gateway, db_console: &str, origin: &Origin) {
    gw.rewrite_config(&config(&origin.url(), MEMORY, db_console));
    let r = call(gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `who` asks for `path` (held, answered 202), `approver` approves: the grant's id.
async fn grant_for(gw: &Gateway, who: &[(&str, &str)], path: &str, approver: &str) -> String {
    let r = send("GET", &gw.url(path), who, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let ticket = r.header("jit-ticket").expect("Jit-Ticket").to_string();
    let body = serde_json::json!({ "comment": "ok" }).to_string();
    let r = call(
        gw,
        approver,
        "POST",
        &format!("/v1/tickets/{ticket}/approve"),
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    format!("grt_{}", ticket.strip_prefix("jit_").unwrap())
}

async fn grant_ids(gw: &Gateway, user: &str, query: &str) -> Vec<String> {
    let r = call(gw, user, "GET", &format!("/v1/grants{query}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect()
}

async fn revoke(gw: &Gateway, user: &str, id: &str, body: &str) -> Response {
    call(gw, user, "POST", &format!("/v1/grants/{id}/revoke"), body).await
}

async fn audit_of(gw: &Gateway, kind: &str) -> Vec<Value> {
    let r = call(gw, "ops", "GET", &format!("/v1/audit?kind={kind}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"].as_array().unwrap().clone()
}

/// What a 404 says, to compare two of them.
fn shape(r: &Response) -> (u16, Value, Value, Value) {
    let j = r.json();
    (
        r.status.as_u16(),
        j["type"].clone(),
        j["title"].clone(),
        j["detail"].clone(),
    )
}

// === (1) who may see and revoke ===

/// Held: strangers, approvers of another route, users named like the approver group or like
/// an approver entry, bob spelled `Bob`, and the admin user `anonymous` see none of bob's
/// grants and cannot revoke them; each gets the same 404 as for a grant that does not exist.
#[tokio::test]
async fn only_operators_the_requester_and_the_routes_approvers_see_or_revoke_a_grant() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    let ops_grant = grant_for(&gw, &BOB, "/ops/a", "ops").await;

    assert_eq!(grant_ids(&gw, "ops", "").await.len(), 2);
    assert_eq!(grant_ids(&gw, "bob", "").await.len(), 2);
    assert_eq!(grant_ids(&gw, "carol", "").await, vec![id.clone()]);
    let missing = revoke(&gw, "ops", "grt_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B", "{}").await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    for user in ["mallory", "oncall", "group:oncall", "Bob", "anonymous"] {
        assert!(
            grant_ids(&gw, user, "").await.is_empty(),
            "{user} sees a grant"
        );
        assert!(grant_ids(&gw, user, "?requester=bob").await.is_empty());
        for g in [&id, &ops_grant] {
            let r = revoke(&gw, user, g, r#"{"reason":"x"}"#).await;
            assert_eq!(shape(&r), shape(&missing), "{user} on {g}: {}", r.text());
        }
    }
    // carol approves db-console, not ops-only.
    let r = revoke(&gw, "carol", &ops_grant, "{}").await;
    assert_eq!(shape(&r), shape(&missing));
    // Both grants still work.
    assert_eq!(
        send("GET", &gw.url("/console/b"), &BOB, "").await.status,
        200
    );
    assert_eq!(send("GET", &gw.url("/ops/b"), &BOB, "").await.status, 200);
    assert!(audit_of(&gw, "grant.revoked").await.is_empty());
}

/// Held: anonymous requesters get no grant at all (access routes require an identity), so
/// no grant has `requester.user` = None for anyone to match.
#[tokio::test]
async fn anonymous_requesters_cannot_obtain_a_grant() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let r = send("GET", &gw.url("/console/a"), &[], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("jit-ticket").is_none());
    assert!(grant_ids(&gw, "ops", "").await.is_empty());
    assert_eq!(origin.count(), 0);
}

/// **FINDING** (a route name reused by another definition hands its approvers the old
/// route's grants). `may_manage_grant` finds the grant's route in the table in force by name
/// only, ignoring `route_hash`. After a reload renames `db-console` and gives the name to a
/// new route approved by mallory, mallory (who never could have granted bob anything) lists
/// bob's old grant as active and may revoke it; the grant itself no longer applies (its
/// route hash differs), so the listing also shows a grant that lets nothing through.
#[tokio::test]
async fn approvers_of_a_new_route_reusing_a_name_do_not_get_the_old_routes_grants() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    let renamed = DB_CONSOLE.replace("name = \"db-console\"", "name = \"db-console-legacy\"");
    let reused = format!(
        "{renamed}\n[[routes]]\nname = \"db-console\"\npath = \"/newconsole/**\"\nupstream = \"origin\"\n\
         action = \"approve\"\n[routes.approval]\napprovers = [\"user:mallory\"]\nmode = \"access\"\nmax_duration = \"1h\"\n"
    );
    reload(&gw, &reused, &origin).await;
    // The old grant no longer applies anywhere.
    let r = send("GET", &gw.url("/console/b"), &BOB, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let seen = grant_ids(&gw, "mallory", "").await;
    let r = revoke(&gw, "mallory", &id, "{}").await;
    assert!(
        !seen.contains(&id),
        "mallory, approver of an unrelated route that reuses the name, lists bob's grant: {seen:?}"
    );
    assert_eq!(r.status, 404, "mallory revoked bob's grant: {}", r.text());
}

/// Held: an approver removed by a reload can no longer list or revoke the route's grants.
#[tokio::test]
async fn an_approver_removed_by_a_reload_can_no_longer_list_or_revoke() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    assert_eq!(grant_ids(&gw, "carol", "").await, vec![id.clone()]);
    reload(
        &gw,
        &DB_CONSOLE.replace("[\"group:oncall\"]", "[\"user:alice\"]"),
        &origin,
    )
    .await;
    assert!(grant_ids(&gw, "carol", "").await.is_empty());
    assert_eq!(revoke(&gw, "carol", &id, "{}").await.status, 404);
    // The approvers are part of the route's definition: the grant lapsed with the change
    // (it lets nothing through), and only operators and its requester still manage it.
    assert!(grant_ids(&gw, "alice", "").await.is_empty());
    assert_eq!(grant_ids(&gw, "ops", "").await, vec![id.clone()]);
    assert_eq!(grant_ids(&gw, "bob", "").await, vec![id.clone()]);
}

// === (2) a revoked grant lets nothing through ===

/// Held: the approved ticket whose grant was revoked cannot be resumed with `Jit-Ticket`
/// (the held request's first use is refused too), on this replica or another one.
#[tokio::test]
async fn a_revoked_grant_does_not_release_its_approved_ticket_on_resume() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let key = signing_key_pem();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let a = start(&origin, &store, &key);
    let b = start(&origin, &store, &key);
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    let r = send("GET", &a.url("/console/a"), &BOB, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let ticket = r.header("jit-ticket").unwrap().to_string();
    assert_eq!(approve(&a, "alice", &ticket, "ok").await.status, 200);
    let id = format!("grt_{}", ticket.strip_prefix("jit_").unwrap());
    let r = revoke(&b, "carol", &id, r#"{"reason":"changed my mind"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for gw in [&a, &b] {
        let mut h = BOB.to_vec();
        h.push(("jit-ticket", ticket.as_str()));
        let r = send("GET", &gw.url("/console/a"), &h, "").await;
        assert_ne!(r.status, 200, "{}", r.text());
        let r = send("GET", &gw.url("/console/other"), &BOB, "").await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert_eq!(origin.count(), 0);
    assert!(audit_of(&a, "grant.used").await.is_empty());
}

async fn race(gws: Vec<Arc<Gateway>>, origin: &Origin) {
    let id = grant_for(&gws[0], &BOB, "/console/first", "alice").await;
    let revoked = Arc::new(AtomicBool::new(false));
    let passed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let gw = gws[i % gws.len()].clone();
        let revoked = revoked.clone();
        let passed = passed.clone();
        tasks.push(tokio::spawn(async move {
            let client = if i % 2 == 0 {
                Client::http1()
            } else {
                Client::h2c()
            };
            let mut n = 0;
            loop {
                let after = revoked.load(Ordering::SeqCst);
                let r = client
                    .send("GET", &gw.url(&format!("/console/{i}/{n}")), &BOB, "")
                    .await;
                n += 1;
                if r.status == 200 {
                    passed.fetch_add(1, Ordering::SeqCst);
                    assert!(!after, "a request sent after the revocation passed");
                } else {
                    // Held again (202), refused mid-race (403), or a store/limit answer.
                    assert!(
                        [202, 403, 429, 503].contains(&r.status.as_u16()),
                        "{} {}",
                        r.status,
                        r.text()
                    );
                }
                if after {
                    return;
                }
            }
        }));
    }
    // Let some uses through, then revoke on the last replica.
    let deadline = tokio::time::Instant::now() + WAIT;
    while passed.load(Ordering::SeqCst) < 20 {
        assert!(tokio::time::Instant::now() < deadline, "no uses passed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = gws.last().unwrap();
    let r = revoke(last, "ops", &id, r#"{"reason":"race"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    revoked.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    // Every use is on record before the revocation, and nothing else reached the origin.
    let used = audit_of(&gws[0], "grant.used").await;
    let rev = audit_of(&gws[0], "grant.revoked").await;
    assert_eq!(rev.len(), 1);
    let rev_seq = rev[0]["seq"].as_u64().unwrap();
    assert!(used.iter().all(|e| e["seq"].as_u64().unwrap() < rev_seq));
    let passed = passed.load(Ordering::SeqCst);
    assert_eq!(used.len(), passed, "uses recorded vs requests passed");
    assert_eq!(origin.count(), passed);
    assert_eq!(r.json()["uses"].as_u64().unwrap() as usize, passed);
}

/// Held: requests of bob racing a revocation over HTTP/1.1 and HTTP/2 on two replicas sharing
/// Redis: none sent after the revocation answered passes, and every use that passed is in
/// the audit trail before `grant.revoked`.
#[tokio::test]
async fn uses_racing_a_revocation_on_two_replicas_never_pass_after_it() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let key = signing_key_pem();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let a = Arc::new(start(&origin, &store, &key));
    let b = Arc::new(start(&origin, &store, &key));
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    race(vec![a, b], &origin).await;
}

/// Held: the same race on the memory store.
#[tokio::test]
async fn uses_racing_a_revocation_on_the_memory_store_never_pass_after_it() {
    let origin = Origin::start();
    let gw = Arc::new(start(&origin, MEMORY, &signing_key_pem()));
    race(vec![gw], &origin).await;
}

// === (3) ids and bodies ===

/// Held: odd ids are the same 404 as unknown ones; a wrong method is 405; bodies that are
/// not `{"reason": string}` are 400 and revoke nothing; an oversized body is refused; a
/// long reason is cut to 2000 bytes on a UTF-8 boundary, a blank one recorded as absent.
#[tokio::test]
async fn odd_ids_and_bodies_are_refused_and_reasons_are_clipped() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    let ticket = id.replace("grt_", "jit_");
    let missing = revoke(&gw, "ops", "grt_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B", "{}").await;
    let long = "grt_".to_string() + &"A".repeat(5000);
    for odd in [
        "grt_",
        ticket.as_str(),
        &id.to_lowercase(),
        &id.replace("grt_", "GRT_"),
        &format!("{id}%00"),
        &format!("{id}%20"),
        "%2e%2e",
        long.as_str(),
    ] {
        let r = revoke(&gw, "ops", odd, "{}").await;
        if r.status == 404 && r.json()["type"] == "urn:jitgate:problem:unknown-grant" {
            assert_eq!(shape(&r), shape(&missing), "{odd}");
        } else {
            assert!(
                r.status.is_client_error(),
                "{odd}: {} {}",
                r.status,
                r.text()
            );
            assert_ne!(r.status, 200);
        }
    }
    let r = call(&gw, "ops", "GET", &format!("/v1/grants/{id}/revoke"), "").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert!(r.header("allow").unwrap_or("").contains("POST"));
    for body in [
        "null",
        "\"x\"",
        r#"{"reason":1}"#,
        r#"{"reason":"a","extra":1}"#,
        "{",
    ] {
        let r = revoke(&gw, "ops", &id, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    let huge = format!(r#"{{"reason":"{}"}}"#, "x".repeat(2 << 20));
    let r = revoke(&gw, "ops", &id, &huge).await;
    assert!(
        r.status == 413 || r.status == 400,
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(grant_ids(&gw, "ops", "").await, vec![id.clone()]);
    assert!(audit_of(&gw, "grant.revoked").await.is_empty());

    let reason = "é".repeat(1500); // 3000 bytes
    let body = serde_json::json!({ "reason": format!("  {reason}  ") }).to_string();
    let r = revoke(&gw, "carol", &id, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = audit_of(&gw, "grant.revoked").await;
    let got = ev[0]["detail"]["reason"].as_str().unwrap();
    assert!(
        got.len() <= 2000 && !got.is_empty() && got.chars().all(|c| c == 'é'),
        "{got}"
    );
    assert_eq!(ev[0]["actor"], "carol");
    assert_eq!(ev[0]["requester"], "bob");
    assert_eq!(ev[0]["route"], "db-console");

    let id2 = grant_for(&gw, &BOB, "/console/b", "alice").await;
    let r = revoke(&gw, "bob", &id2, r#"{"reason":"   "}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = audit_of(&gw, "grant.revoked").await;
    let e = ev
        .iter()
        .find(|e| e["detail"]["grant"] == id2.as_str())
        .unwrap();
    assert!(e["detail"]["reason"].is_null(), "{e}");
    assert_eq!(e["actor"], "bob");
}

/// **FINDING** (a JSON array is accepted as the revoke body). `RevokeRequest` is
/// `deny_unknown_fields` and documented as an object, but serde's derived struct visitor also
/// takes a sequence: `[]` revokes with no reason and `["why"]` with reason "why". (The same
/// `parse_body` reads every admin body, so approve/deny bodies take arrays too.)
#[tokio::test]
async fn a_revoke_body_that_is_not_an_object_is_400() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    let r = revoke(&gw, "ops", &id, r#"["as an array"]"#).await;
    assert_eq!(
        r.status,
        400,
        "an array body revoked the grant: {}",
        r.text()
    );
    assert_eq!(grant_ids(&gw, "ops", "").await, vec![id]);
}

/// **FINDING** (revoking a used-up grant is 200 and audited). README: 409 `grant-not-active`
/// "when already revoked, expired or used up". `ticket::revoke` only refuses a grant that is
/// already revoked, so a grant whose `max_uses` are spent is "revoked" again: 200, a
/// `grant.revoked` event (and notification) for a grant that was already over, and its
/// record's retention restarts from the revocation.
#[tokio::test]
async fn revoking_a_used_up_grant_is_409_and_not_audited() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/once/a", "alice").await;
    assert_eq!(send("GET", &gw.url("/once/b"), &BOB, "").await.status, 200);
    // Used up: the next request is held again, and the grant is no longer listed.
    assert_eq!(send("GET", &gw.url("/once/c"), &BOB, "").await.status, 202);
    assert!(!grant_ids(&gw, "ops", "").await.contains(&id));
    let r = revoke(&gw, "ops", &id, r#"{"reason":"too late"}"#).await;
    let audited = audit_of(&gw, "grant.revoked").await.len();
    assert_eq!(r.status, 409, "a used-up grant was revoked: {}", r.text());
    assert_eq!(r.json()["type"], "urn:jitgate:problem:grant-not-active");
    assert_eq!(audited, 0);
}

/// **FINDING** (revoking an expired grant is 200 and audited). Same cause as above: a grant
/// past `expiresAt` (still in the store for `retention`) is revoked with 200 and a
/// `grant.revoked` event, where the README promises 409 `grant-not-active`.
#[tokio::test]
async fn revoking_an_expired_grant_is_409_and_not_audited() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/brief/a", "alice").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while grant_ids(&gw, "ops", "").await.contains(&id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(send("GET", &gw.url("/brief/b"), &BOB, "").await.status, 202);
    let r = revoke(&gw, "ops", &id, "{}").await;
    let audited = audit_of(&gw, "grant.revoked").await.len();
    assert_eq!(r.status, 409, "an expired grant was revoked: {}", r.text());
    assert_eq!(audited, 0);
}

// === (4) the web page ===

fn set_cookie_value(r: &Response, name: &str) -> Option<String> {
    r.headers.get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let first = v.split(';').next()?;
        let (k, val) = first.split_once('=')?;
        (k.trim() == name && !val.is_empty()).then(|| val.to_string())
    })
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A signed-in web session of `user`: (cookie header, the session's CSRF token, origin).
async fn web_session(gw: &Gateway, user: &str) -> (String, String, String) {
    let origin = format!("http://{}", gw.admin_addr());
    let r = send("GET", &gw.admin("/ui/signin"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let nonce = set_cookie_value(&r, "jitgate_signin").expect("signin cookie");
    let csrf = csrf_of(&r.text());
    let cookie = format!("jitgate_signin={nonce}");
    let body = format!(
        "csrf={}&token={}",
        form_encode(&csrf),
        form_encode(&token(user))
    );
    let r = send(
        "POST",
        &gw.admin("/ui/signin"),
        &[
            ("cookie", cookie.as_str()),
            ("origin", origin.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let session = set_cookie_value(&r, "jitgate_session").expect("session cookie");
    let cookie = format!("jitgate_session={session}");
    let r = send(
        "GET",
        &gw.admin("/ui/grants"),
        &[("cookie", cookie.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    (cookie, csrf_of(&r.text()), origin)
}

async fn web_revoke(
    gw: &Gateway,
    cookie: &str,
    extra: &[(&str, &str)],
    id: &str,
    body: String,
) -> Response {
    let mut h = vec![
        ("cookie", cookie),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    h.extend_from_slice(extra);
    send(
        "POST",
        &gw.admin(&format!("/ui/grants/{id}/revoke")),
        &h,
        body,
    )
    .await
}

/// Held: the revoke form needs the session's CSRF token and a same-origin post; it follows
/// the API's rules (mallory's session gets 404 for bob's grant); a revocation from the page
/// is audited as the signed-in user with the form's reason.
#[tokio::test]
async fn the_web_revoke_form_needs_csrf_and_same_origin_and_follows_the_api_rules() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    let (carol, carol_csrf, site) = web_session(&gw, "carol").await;
    let (mallory, mallory_csrf, _) = web_session(&gw, "mallory").await;
    let same = [("origin", site.as_str())];
    let good = format!("csrf={}&reason=web", form_encode(&carol_csrf));

    // The page offers a form for exactly this grant.
    let page = send(
        "GET",
        &gw.admin("/ui/grants"),
        &[("cookie", carol.as_str())],
        "",
    )
    .await;
    assert!(
        page.text()
            .contains(&format!("action=\"/ui/grants/{id}/revoke\"")),
        "{}",
        page.text()
    );
    // Cross-site, no CSRF, another session's CSRF, GET.
    let r = web_revoke(
        &gw,
        &carol,
        &[("origin", "http://evil.example")],
        &id,
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = web_revoke(
        &gw,
        &carol,
        &[("sec-fetch-site", "cross-site"), ("origin", site.as_str())],
        &id,
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = web_revoke(&gw, &carol, &[], &id, good.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = web_revoke(&gw, &carol, &same, &id, "reason=web".into()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = web_revoke(
        &gw,
        &carol,
        &same,
        &id,
        format!("csrf={}&reason=web", form_encode(&mallory_csrf)),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send(
        "GET",
        &gw.admin(&format!("/ui/grants/{id}/revoke")),
        &[("cookie", carol.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.text());
    // Mallory, signed in, with her own token: as unknown as via the API.
    let r = web_revoke(
        &gw,
        &mallory,
        &same,
        &id,
        format!("csrf={}", form_encode(&mallory_csrf)),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(grant_ids(&gw, "ops", "").await, vec![id.clone()]);
    assert!(audit_of(&gw, "grant.revoked").await.is_empty());

    // Carol, properly.
    let r = web_revoke(&gw, &carol, &same, &id, good).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/ui/grants"));
    let ev = audit_of(&gw, "grant.revoked").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["actor"], "carol");
    assert_eq!(ev[0]["detail"]["grant"], id.as_str());
    assert_eq!(ev[0]["detail"]["reason"], "web");
    assert_eq!(
        send("GET", &gw.url("/console/b"), &BOB, "").await.status,
        202
    );
}

/// Held: a requester name full of markup is escaped on the grants page.
#[tokio::test]
async fn the_grants_page_escapes_what_requesters_choose() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let evil = r#"eve"><script>alert(1)</script><form action="/ui/grants/x/revoke">"#;
    let who = [("x-user", evil), ("x-groups", "dev")];
    let id = grant_for(&gw, &who, "/console/a", "alice").await;
    let (ops, _, _) = web_session(&gw, "ops").await;
    let page = send(
        "GET",
        &gw.admin("/ui/grants"),
        &[("cookie", ops.as_str())],
        "",
    )
    .await;
    let text = page.text();
    assert!(text.contains(&id));
    assert!(!text.contains("<script>alert(1)"), "{text}");
    assert!(!text.contains("action=\"/ui/grants/x/revoke\""), "{text}");
    assert!(text.contains("&lt;script&gt;"), "{text}");
}

// === (5) events ===

fn grant_events(seen: &str, id: &str) -> Vec<String> {
    sse_events(seen)
        .into_iter()
        .filter(|(_, name, data)| name.starts_with("grant.") && data["data"]["id"] == id)
        .map(|(_, name, _)| name)
        .collect()
}

/// Held: on `GET /v1/events` the grant's events reach the requester and the route's
/// approvers, never a stranger (replayed from the start of the trail, up to the stranger's own
/// ticket, opened last).
#[tokio::test]
async fn grant_events_reach_only_callers_who_may_see_the_grant() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    assert_eq!(revoke(&gw, "ops", &id, "{}").await.status, 200);
    let mal = [("x-user", "mallory")];
    let r = send("GET", &gw.url("/ops/mine"), &mal, "").await;
    assert_eq!(r.status, 202);
    let marker = r.header("jit-ticket").unwrap().to_string();

    let mut s = open_stream_as(&gw, "mallory").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, &marker, 1).await;
    assert!(grant_events(&seen, &id).is_empty(), "{seen}");
    for user in ["bob", "carol", "ops"] {
        let mut s = open_stream_as(&gw, user).await;
        let mut seen = String::new();
        read_until(&mut s, &mut seen, "event: grant.revoked", 1).await;
        assert_eq!(
            grant_events(&seen, &id),
            vec!["grant.created", "grant.revoked"]
        );
    }
}

async fn open_stream_as(gw: &Gateway, user: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(gw.admin_addr())
        .await
        .unwrap();
    let req = format!(
        "GET /v1/events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\nLast-Event-ID: 0\r\n\r\n",
        token(user)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// **FINDING, fixed** (grant events followed the ticket's approver snapshot, not who may see
/// the grant). `/v1/events` shows a `grant.*` event to whoever may see its *ticket*, which is
/// judged on the approvers recorded on the ticket; `GET /v1/grants` and revoke judge on the
/// approvers in the table in force. Carol, removed from the route's approvers by a reload,
/// cannot list or revoke bob's grant (404) but is still streamed its `grant.revoked` (and
/// `grant.created`) with the whole grant, and the approver who replaced her is not.
#[tokio::test]
async fn a_removed_approver_is_not_streamed_grant_events_they_may_no_longer_see() {
    let origin = Origin::start();
    let gw = start(&origin, MEMORY, &signing_key_pem());
    let id = grant_for(&gw, &BOB, "/console/a", "alice").await;
    reload(
        &gw,
        &DB_CONSOLE.replace("[\"group:oncall\"]", "[\"user:alice\", \"user:mallory\"]"),
        &origin,
    )
    .await;
    assert!(grant_ids(&gw, "carol", "").await.is_empty());
    assert_eq!(revoke(&gw, "carol", &id, "{}").await.status, 404);
    // The approvers changed, so the grant lapsed: the new approvers do not manage it either.
    assert!(grant_ids(&gw, "mallory", "").await.is_empty());
    let r = revoke(&gw, "ops", &id, r#"{"reason":"off"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A ticket of carol's own, opened last, marks the end of what she is replayed.
    let r = send("GET", &gw.url("/ops/mine"), &[("x-user", "carol")], "").await;
    assert_eq!(r.status, 202);
    let marker = r.header("jit-ticket").unwrap().to_string();
    let mut s = open_stream_as(&gw, "carol").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, &marker, 1).await;
    let carol_sees = grant_events(&seen, &id);
    // And the operator who revoked it is told of it.
    let r = send("GET", &gw.url("/ops/mine"), &[("x-user", "ops")], "").await;
    let marker = r.header("jit-ticket").unwrap().to_string();
    let mut s = open_stream_as(&gw, "ops").await;
    let mut seen = String::new();
    read_until(&mut s, &mut seen, &marker, 1).await;
    let ops_sees = grant_events(&seen, &id);
    assert!(
        carol_sees.is_empty(),
        "carol, no longer an approver, is streamed {carol_sees:?} of a grant she gets 404 for"
    );
    assert!(
        ops_sees.contains(&"grant.revoked".to_string()),
        "the operator who revoked it sees {ops_sees:?}"
    );
}
