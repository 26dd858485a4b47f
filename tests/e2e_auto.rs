//! Auto-approval (SPEC 8): `[[routes.approval.auto_approve]]` policies approve a held request
//! at once when every condition holds (path prefix, methods, users, groups, source, headers,
//! a time window in an IANA zone, and on access routes the duration), forwarding it with an
//! approval token and auditing `ticket.auto_approved` with the policy's name. Each condition
//! is shown to admit and to refuse; windows are built around the current time, never waited
//! for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

const BOT: [(&str, &str); 2] = [("x-user", "deploy-bot"), ("x-groups", "bots")];

/// Minutes after midnight now in `zone`, from the system's own zone database (not the
/// gateway's): the test builds windows around it.
fn minutes_now_in(zone: &str) -> u32 {
    let out = Command::new("date")
        .env("TZ", zone)
        .arg("+%H %M")
        .output()
        .expect("date");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .split_whitespace()
        .map(|n| n.parse::<u32>().expect("number"));
    it.next().unwrap() * 60 + it.next().unwrap()
}

fn hhmm(minutes: u32) -> String {
    let m = minutes % (24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// A window of every day from `from` to `to` minutes after now in `zone` (may wrap midnight).
fn window(zone: &str, from: i64, to: i64) -> String {
    let now = i64::from(minutes_now_in(zone));
    let at = |d: i64| hhmm(u32::try_from((now + d).rem_euclid(24 * 60)).unwrap());
    format!("Mon-Sun {}-{}", at(from), at(to))
}

/// `deploy`: POST/PUT under /deploy, approvers group:oncall, auto-approved by `canary-bots`
/// (every condition at once, open now in Kolkata), `closed` (the same, but its window opened
/// an hour ago in Kolkata... and closed), and `named` (one user, one prefix). `console`:
/// access mode, auto-approved for dev up to 1 h with at most 2 uses.
fn config(origin: &str, store: &str) -> String {
    let open = window("Asia/Kolkata", -60, 60);
    let closed = window("Asia/Kolkata", 60, 120);
    let routes = format!(
        r#"[[routes]]
name = "deploy"
methods = ["POST", "PUT"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
[[routes.approval.auto_approve]]
name = "canary-bots"
path_prefix = "/deploy/canary"
methods = ["POST"]
groups = ["bots"]
source = ["127.0.0.0/8", "10.1.0.0/16"]
headers = {{ "x-env" = "staging" }}
window = "{open}"
time_zone = "Asia/Kolkata"
[[routes.approval.auto_approve]]
name = "closed"
path_prefix = "/deploy/night"
groups = ["bots"]
window = "{closed}"
time_zone = "Asia/Kolkata"
[[routes.approval.auto_approve]]
name = "named"
path_prefix = "/deploy/users"
users = ["carol-bot"]

[[routes]]
name = "console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
durations = ["30m", "2h"]
max_duration = "2h"
max_uses = 5
[[routes.approval.auto_approve]]
name = "short-dev"
groups = ["dev"]
duration_below = "1h"
max_uses = 2

"#
    );
    policy_config(origin, store, "hold_timeout = \"300ms\"\n", &routes, "")
}

fn start(origin: &Origin, store: &str) -> Gateway {
    Gateway::builder(&config(&origin.url(), store))
        .file("key.pem", signing_key_pem())
        .start()
}

async fn post(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    send("POST", &gw.url(path), headers, "{}".to_string()).await
}

/// The canary headers plus `extra`.
fn canary(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut h = BOT.to_vec();
    h.push(("x-env", "staging"));
    h.extend_from_slice(extra);
    h
}

async fn every_condition_admits_and_refuses(store: &str) {
    let origin = Origin::start();
    let gw = start(&origin, store);
    wait_store_ok(&gw).await;

    // All conditions hold: forwarded at once, with an approval token, on an EXECUTED ticket.
    let r = post(&gw, "/deploy/canary/web", &canary(&[])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    let token = seen[0]
        .header_str("jit-approval")
        .expect("Jit-Approval upstream");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let r = admin_call(&gw, "ops", "GET", "/v1/tickets?status=EXECUTED", "").await;
    let t = r.json()["tickets"][0].clone();
    assert_eq!(t["policy"], "canary-bots", "{t}");
    assert_eq!(t["approvals"][0]["by"], "policy:canary-bots");
    let id = t["id"].as_str().unwrap().to_string();
    let kinds = wait_audit(
        &gw,
        &id,
        &[
            "ticket.auto_approved",
            "ticket.executed",
            "ticket.forwarded",
        ],
    )
    .await;
    assert!(!kinds.contains(&"ticket.created".to_string()), "{kinds:?}");
    let events = admin_call(&gw, "ops", "GET", &format!("/v1/audit?ticket={id}"), "").await;
    let auto = events.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "ticket.auto_approved")
        .cloned()
        .unwrap();
    assert_eq!(auto["detail"]["policy"], "canary-bots", "{auto}");

    // A source inside the CIDRs (through the trusted proxy) is admitted too.
    let r = post(
        &gw,
        "/deploy/canary/web",
        &canary(&[("x-forwarded-for", "10.1.2.3")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.count(), 2);

    // Each condition failing on its own: held for a person (202).
    let path_sibling = post(&gw, "/deploy/canaryx/web", &canary(&[])).await;
    let put = send(
        "PUT",
        &gw.url("/deploy/canary/web"),
        &canary(&[]),
        "{}".to_string(),
    )
    .await;
    let overridden = post(
        &gw,
        "/deploy/canary/web",
        &canary(&[("x-http-method-override", "PUT")]),
    )
    .await;
    let not_a_bot = post(
        &gw,
        "/deploy/canary/web",
        &[
            ("x-user", "deploy-bot"),
            ("x-groups", "dev"),
            ("x-env", "staging"),
        ],
    )
    .await;
    let anonymous = post(&gw, "/deploy/canary/web", &[("x-env", "staging")]).await;
    let far_away = post(
        &gw,
        "/deploy/canary/web",
        &canary(&[("x-forwarded-for", "10.9.9.9")]),
    )
    .await;
    let prod = post(&gw, "/deploy/canary/web", &BOT).await;
    let two_envs = post(&gw, "/deploy/canary/web", &canary(&[("x-env", "prod")])).await;
    let dotted = post(&gw, "/deploy/canary/../prod/web", &canary(&[])).await;
    let night = post(&gw, "/deploy/night/job", &BOT).await;
    for (what, r) in [
        ("a sibling of the prefix", &path_sibling),
        ("a method not listed", &put),
        ("a method override not listed", &overridden),
        ("a requester in none of the groups", &not_a_bot),
        ("an anonymous requester", &anonymous),
        ("a source outside the CIDRs", &far_away),
        ("without the header", &prod),
        ("a second header value", &two_envs),
        ("a path that leaves the prefix", &dotted),
        ("outside the window", &night),
    ] {
        assert!(
            r.status == 202 || r.status == 400,
            "{what}: {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(origin.count(), 2, "nothing else was forwarded");

    // Users: only the one named.
    let r = post(&gw, "/deploy/users/x", &[("x-user", "carol-bot")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(&gw, "/deploy/users/x", &[("x-user", "carol-bot2")]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn every_auto_approve_condition_admits_and_refuses_memory() {
    every_condition_admits_and_refuses("[store]\nkind = \"memory\"\n").await;
}

#[tokio::test]
async fn every_auto_approve_condition_admits_and_refuses_redis() {
    let redis = RedisServer::start();
    every_condition_admits_and_refuses(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}

/// On an access route a policy approves short grants only, and caps their uses; the grant
/// it creates counts the approved request as its first use.
async fn access_policies_bound_their_grants(store: &str) {
    let origin = Origin::start();
    let gw = start(&origin, store);
    wait_store_ok(&gw).await;
    let bob = [
        ("x-user", "bob"),
        ("x-groups", "dev"),
        ("jit-duration", "30m"),
    ];
    let r = send("GET", &gw.url("/console/a"), &bob, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = admin_call(&gw, "ops", "GET", "/v1/grants?requester=bob", "").await;
    let g = list.json()["grants"][0].clone();
    assert_eq!(g["maxUses"], 2, "the policy's cap: {g}");
    assert_eq!(g["uses"], 1, "{g}");
    // One more use, then the grant is spent and the next is held.
    let plain = [("x-user", "bob"), ("x-groups", "dev")];
    let r = send("GET", &gw.url("/console/b"), &plain, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Without Jit-Duration the route's default (30m) is below the bound: approved again, a
    // second grant, used once more.
    let r = send("GET", &gw.url("/console/c"), &plain, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send("GET", &gw.url("/console/c"), &plain, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(origin.count(), 4);
    let list = admin_call(&gw, "ops", "GET", "/v1/grants?requester=bob&state=all", "").await;
    assert_eq!(
        list.json()["grants"].as_array().map(Vec::len),
        Some(2),
        "{}",
        list.text()
    );
    // Two hours is not below `duration_below`: a person decides.
    let long = [
        ("x-user", "bob"),
        ("x-groups", "dev"),
        ("jit-duration", "2h"),
    ];
    let r = send("GET", &gw.url("/console/d"), &long, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    // Not in the group: a person decides.
    let ops = [
        ("x-user", "dan"),
        ("x-groups", "ops"),
        ("jit-duration", "30m"),
    ];
    let r = send("GET", &gw.url("/console/e"), &ops, "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), 4);
}

#[tokio::test]
async fn access_policies_approve_short_grants_and_cap_their_uses_memory() {
    access_policies_bound_their_grants("[store]\nkind = \"memory\"\n").await;
}

#[tokio::test]
async fn access_policies_approve_short_grants_and_cap_their_uses_redis() {
    let redis = RedisServer::start();
    access_policies_bound_their_grants(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}

/// A policy never forwards when the store cannot record what it approved.
#[tokio::test]
async fn auto_approval_fails_closed_when_the_store_is_down() {
    let origin = Origin::start();
    let mut redis = RedisServer::start();
    let gw = start(
        &origin,
        &format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url()),
    );
    wait_store_ok(&gw).await;
    redis.stop();
    let r = post(&gw, "/deploy/canary/web", &canary(&[])).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(origin.count(), 0);
}

/// `approve_above_rate`: within the rate a named requester's requests pass (audited as
/// `ticket.auto_approved` by `approve_above_rate`); beyond it they are held; each requester
/// has their own rate; anonymous requesters never pass by rate.
async fn rate_switches_at_the_configured_rate(store: &str) {
    let origin = Origin::start();
    let cfg = config(&origin.url(), store).replace(
        "[[routes]]\nname = \"rest\"",
        "[[routes]]\nname = \"reports\"\nmethods = [\"POST\"]\npath = \"/reports/**\"\nupstream = \"origin\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:oncall\"]\napprove_above_rate = \"3/h\"\n\n[[routes]]\nname = \"rest\"",
    );
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let bob = [("x-user", "bob"), ("x-groups", "dev")];
    for i in 0..3 {
        let r = post(&gw, &format!("/reports/{i}"), &bob).await;
        assert_eq!(r.status, 200, "within the rate ({i}): {}", r.text());
    }
    let r = post(&gw, "/reports/3", &bob).await;
    assert_eq!(r.status, 202, "beyond the rate: {}", r.text());
    let r = post(&gw, "/reports/0", &[("x-user", "dan")]).await;
    assert_eq!(r.status, 200, "another requester: {}", r.text());
    let r = post(&gw, "/reports/0", &[]).await;
    assert_eq!(r.status, 202, "anonymous: {}", r.text());
    assert_eq!(origin.count(), 4);
    let r = admin_call(&gw, "ops", "GET", "/v1/audit?kind=ticket.auto_approved", "").await;
    let events = r.json()["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 4, "{}", r.text());
    assert!(events
        .iter()
        .all(|e| e["detail"]["policy"] == "approve_above_rate" && e["detail"]["rate"] == "3/1h"));
}

#[tokio::test]
async fn rate_based_approval_switches_at_the_configured_rate_memory() {
    rate_switches_at_the_configured_rate("[store]\nkind = \"memory\"\n").await;
}

#[tokio::test]
async fn rate_based_approval_switches_at_the_configured_rate_redis() {
    let redis = RedisServer::start();
    rate_switches_at_the_configured_rate(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}

/// `risk_below`: the risk score (`[approvals.risk]`: a new client address for this requester,
/// the method) admits calm requests and holds risky ones, and the held ticket shows the score
/// and each factor.
async fn risk_admits_calm_requests_and_explains_held_ones(store: &str) {
    let origin = Origin::start();
    let cfg = config(&origin.url(), store)
        .replace(
            "[approvals]\n",
            "[approvals.risk]\nnew_source = 40\nmethods = { DELETE = 30 }\n\n[approvals]\n",
        )
        .replace(
            "[[routes]]\nname = \"rest\"",
            "[[routes]]\nname = \"ops\"\nmethods = [\"POST\", \"DELETE\"]\npath = \"/ops/**\"\nupstream = \"origin\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:oncall\"]\nbreak_glass = { groups = [\"dev\"] }\n[[routes.approval.auto_approve]]\nname = \"calm\"\ngroups = [\"dev\"]\nrisk_below = 50\n\n[[routes]]\nname = \"rest\"",
        );
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let from = |ip: &'static str| {
        [
            ("x-user", "bob"),
            ("x-groups", "dev"),
            ("x-forwarded-for", ip),
        ]
    };
    // First time from 10.1.1.1: 40 (new source) < 50.
    let r = send(
        "POST",
        &gw.url("/ops/a"),
        &from("10.1.1.1"),
        "{}".to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A DELETE from the known address: 30 < 50.
    let r = send("DELETE", &gw.url("/ops/a"), &from("10.1.1.1"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A DELETE from a new address: 40 + 30 = 70, held; the ticket says why.
    let r = send("DELETE", &gw.url("/ops/b"), &from("10.2.2.2"), "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("jit-ticket").unwrap().to_string();
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "")
        .await
        .json();
    assert_eq!(t["risk"]["score"], 70, "{t}");
    let factors: Vec<(String, u64, String)> = t["risk"]["factors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["signal"].as_str().unwrap().to_string(),
                f["points"].as_u64().unwrap(),
                f["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        factors,
        vec![
            ("new_source".to_string(), 40, "10.2.2.2".to_string()),
            ("method".to_string(), 30, "DELETE".to_string()),
        ]
    );
    // Being held does not make the address known: the same again is held again.
    let r = send("DELETE", &gw.url("/ops/b"), &from("10.2.2.2"), "").await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.header("jit-ticket"),
        Some(id.as_str()),
        "joins the same ticket"
    );
    // Approved and released, it is known: a DELETE from it now scores 30 and passes.
    assert_eq!(approve(&gw, "alice", &id, "ok").await.status, 200);
    let mut resume = from("10.2.2.2").to_vec();
    resume.push(("jit-ticket", id.as_str()));
    let r = send("DELETE", &gw.url("/ops/b"), &resume, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = send("DELETE", &gw.url("/ops/c"), &from("10.2.2.2"), "").await;
        if r.status == 200 {
            break;
        }
        // Remembering the address is off the request's path: it may land a moment later.
        assert!(tokio::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(origin.count(), 4);
    // Break-glass releases, but nobody approved it: its address stays new.
    let mut glass = from("10.3.3.3").to_vec();
    glass.push(("jit-break-glass", "db down"));
    let r = send("DELETE", &gw.url("/ops/g"), &glass, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = send("DELETE", &gw.url("/ops/g"), &from("10.3.3.3"), "").await;
    assert_eq!(r.status, 202, "still a new address: {}", r.text());
    // Anonymous requesters are never remembered: from an address bob made known, an anonymous
    // request still scores `new_source`.
    let r = send(
        "POST",
        &gw.url("/ops/z"),
        &[("x-forwarded-for", "10.1.1.1")],
        "{}".to_string(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let anon = r.header("jit-ticket").unwrap().to_string();
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{anon}"), "")
        .await
        .json();
    assert_eq!(t["risk"]["factors"][0]["signal"], "new_source", "{t}");
    // The auto-approved tickets carry their score too.
    let r = admin_call(&gw, "ops", "GET", "/v1/tickets?status=EXECUTED", "").await;
    let scores: Vec<u64> = r.json()["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["risk"]["score"].as_u64())
        .collect();
    assert!(scores.len() >= 3, "{}", r.text());
}

#[tokio::test]
async fn risk_below_admits_calm_requests_and_the_ticket_explains_the_score_memory() {
    risk_admits_calm_requests_and_explains_held_ones("[store]\nkind = \"memory\"\n").await;
}

#[tokio::test]
async fn risk_below_admits_calm_requests_and_the_ticket_explains_the_score_redis() {
    let redis = RedisServer::start();
    risk_admits_calm_requests_and_explains_held_ones(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}
