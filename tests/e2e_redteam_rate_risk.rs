//! Red team on issue 9's risk score and rate-based approval (SPEC 8, 11.1): requests forwarded
//! although nobody approved them and no policy meant to.
//!
//! Each test asserts the behaviour the contract asks for; a failing test is a finding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// A gateway with `risk` as `[approvals.risk]` and `routes` before a catch-all allow route.
fn gateway(origin: &Origin, store: &str, risk: &str, routes: &str) -> Gateway {
    // `[approvals.risk]` may come before `[approvals]`: it rides with the store section.
    let cfg = policy_config(
        &origin.url(),
        &format!("{store}\n{risk}\n"),
        "hold_timeout = \"300ms\"\n",
        routes,
        "",
    );
    Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start()
}

const MEMORY: &str = "[store]\nkind = \"memory\"\n";

/// `jitgate check` on a table with `risk` and `routes`: (passed, everything it printed).
fn check(risk: &str, routes: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[store]\nkind = \"memory\"\n\n{risk}\n\n[approvals]\nsigning_key = \"key.pem\"\n\n[[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:9\"\n\n{routes}\n{}",
        identity_and_admin_toml()
    );
    std::fs::write(dir.path().join("p.toml"), cfg).unwrap();
    std::fs::write(dir.path().join("key.pem"), signing_key_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["check", "p.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `ops`: POST/DELETE, approvers oncall, auto-approved for dev when the risk is below 50.
/// A DELETE (30) from a new address (40) scores 70: it must wait for a person.
const OPS: &str = r#"[[routes]]
name = "ops"
methods = ["POST", "DELETE"]
path = "/ops/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
[[routes.approval.auto_approve]]
name = "calm"
groups = ["dev"]
risk_below = 50
"#;

const RISK: &str = "[approvals.risk]\nnew_source = 40\nmethods = { DELETE = 30 }\n";

fn bob_from(ip: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("x-user", "bob"),
        ("x-groups", "dev"),
        ("x-forwarded-for", ip),
    ]
}

/// FINDING: the requester's address is remembered as "known" as soon as a request from it is
/// scored, even when that request is held (and never approved). Re-sending the very same
/// risky request then scores without `new_source` and the policy forwards it, while its
/// ticket (score 70) still waits for a person.
#[tokio::test]
async fn redteam_held_request_makes_its_source_known_and_its_retry_passes_risk_below() {
    let origin = Origin::start();
    let gw = gateway(&origin, MEMORY, RISK, OPS);
    wait_store_ok(&gw).await;
    let r = send(
        "DELETE",
        &gw.url("/ops/db/prod"),
        &bob_from("10.66.6.6"),
        "",
    )
    .await;
    assert_eq!(r.status, 202, "70 >= 50: held: {}", r.text());
    let id = r.header("jit-ticket").unwrap().to_string();
    // The very same request again, nobody having decided anything.
    let r = send(
        "DELETE",
        &gw.url("/ops/db/prod"),
        &bob_from("10.66.6.6"),
        "",
    )
    .await;
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "")
        .await
        .json();
    assert_eq!(t["status"], "PENDING", "{t}");
    assert_eq!(
        origin.count(),
        0,
        "the retry of a held DELETE from a new address was forwarded without approval (status {}, {})",
        r.status,
        r.text()
    );
}

/// FINDING: the same, with a sacrificial request that is refused (400, an access route's
/// `Jit-Duration` it does not offer) before any ticket exists: it leaves no ticket and no
/// audit event, yet makes the new address known, so the next request from it passes the
/// `risk_below` policy that would have held it.
#[tokio::test]
async fn redteam_refused_request_leaves_no_trace_but_makes_the_source_known() {
    let origin = Origin::start();
    let console = r#"[[routes]]
name = "console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
durations = ["30m"]
max_duration = "30m"
[[routes.approval.auto_approve]]
name = "calm-dev"
groups = ["dev"]
risk_below = 30
"#;
    let gw = gateway(
        &origin,
        MEMORY,
        "[approvals.risk]\nnew_source = 40\n",
        console,
    );
    wait_store_ok(&gw).await;
    let mut h = bob_from("10.77.7.7").to_vec();
    h.push(("jit-duration", "5m"));
    let r = send("GET", &gw.url("/console/x"), &h, "").await;
    assert_eq!(
        r.status,
        400,
        "a duration the route does not offer: {}",
        r.text()
    );
    let audit = admin_call(&gw, "ops", "GET", "/v1/audit?route=console", "").await;
    let n = audit.json()["events"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 0, "the refusal left nothing: {}", audit.text());
    // Now from the same, never-approved address: 40 >= 30 must be held.
    let r = send("GET", &gw.url("/console/x"), &bob_from("10.77.7.7"), "").await;
    assert_eq!(
        origin.count(),
        0,
        "a request from a new address was granted access by `risk_below` (status {}, {})",
        r.status,
        r.text()
    );
}

/// FINDING: the same across routes: a request held on any approve route (here `other`, which
/// no policy auto-approves) makes the address known for `ops`.
#[tokio::test]
async fn redteam_held_request_on_another_route_makes_the_source_known() {
    let origin = Origin::start();
    let routes = format!(
        "{OPS}\n[[routes]]\nname = \"other\"\npath = \"/other/**\"\nupstream = \"origin\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:oncall\"]\n"
    );
    let gw = gateway(&origin, MEMORY, RISK, &routes);
    wait_store_ok(&gw).await;
    let r = send("POST", &gw.url("/other/noop"), &bob_from("10.88.8.8"), "{}").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = send(
        "DELETE",
        &gw.url("/ops/db/prod"),
        &bob_from("10.88.8.8"),
        "",
    )
    .await;
    assert_eq!(
        origin.count(),
        0,
        "a DELETE from an address nobody approved passed (status {}, {})",
        r.status,
        r.text()
    );
}

/// FINDING: `rate_above` is counted per requester key; an anonymous client mints a new key per
/// request (a fresh Cookie), so it is never above the rate and a `risk_below` policy open to
/// anonymous clients keeps forwarding. The control shows the same client with one cookie
/// is held past the rate.
#[tokio::test]
async fn redteam_anonymous_client_evades_the_risk_rate_by_rotating_a_cookie() {
    let origin = Origin::start();
    let routes = r#"[[routes]]
name = "reports"
methods = ["POST"]
path = "/reports/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
[[routes.approval.auto_approve]]
name = "calm-internal"
source = ["10.0.0.0/8"]
risk_below = 50
"#;
    let gw = gateway(
        &origin,
        MEMORY,
        "[approvals.risk]\nrate_above = \"2/h\"\nrate = 60\n",
        routes,
    );
    wait_store_ok(&gw).await;
    let from = [("x-forwarded-for", "10.5.5.5"), ("cookie", "s=same")];
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(
            send("POST", &gw.url(&format!("/reports/{i}")), &from, "{}")
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 202],
        "control: one identity is held past the rate"
    );
    let before = origin.count();
    for i in 0..10 {
        let cookie = format!("s=fresh-{i}");
        let h = [("x-forwarded-for", "10.5.5.5"), ("cookie", cookie.as_str())];
        send("POST", &gw.url(&format!("/reports/r{i}")), &h, "{}").await;
    }
    assert!(
        origin.count() - before <= 2,
        "10 requests from one client address in an hour passed a rate of 2/h: {}",
        origin.count() - before
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// FINDING (low): `large_body` counts the bytes on the wire; a `Content-Encoding: gzip` body
/// of 1 MiB is forwarded as a few hundred bytes and scores nothing.
#[tokio::test]
async fn redteam_gzip_request_body_evades_large_body() {
    let origin = Origin::start();
    let gw = gateway(
        &origin,
        MEMORY,
        "[approvals.risk]\nbody_above = \"64KiB\"\nlarge_body = 60\n",
        OPS,
    );
    wait_store_ok(&gw).await;
    let big = vec![b'A'; 512 * 1024];
    let r = send(
        "POST",
        &gw.url("/ops/import"),
        &bob_from("10.1.1.1"),
        big.clone(),
    )
    .await;
    assert_eq!(
        r.status,
        202,
        "control: 512 KiB plain is held: {}",
        r.text()
    );
    let packed = gzip(&big);
    let mut h = bob_from("10.1.1.1").to_vec();
    h.push(("content-encoding", "gzip"));
    h.push(("content-type", "application/json"));
    let r = send("POST", &gw.url("/ops/import"), &h, packed.clone()).await;
    assert_eq!(
        origin.count(),
        0,
        "512 KiB sent gzip-encoded ({} bytes) scored no large_body and was forwarded (status {})",
        packed.len(),
        r.status
    );
}

/// FINDING: `approve_above_rate = "1/h"` on an access route: the one request within the rate
/// creates a grant of the longest duration the requester asks for, with no use cap, so every
/// further request passes without a person: nothing "beyond the rate" is ever held.
#[tokio::test]
async fn redteam_approve_above_rate_on_an_access_route_admits_everything() {
    // Fixed: refused by `check` (and so at start and reload).
    let routes = r#"[[routes]]
name = "console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
durations = ["30m", "8h"]
max_duration = "8h"
approve_above_rate = "1/h"
"#;
    let (ok, out) = check("", routes);
    assert!(!ok, "{out}");
    assert!(
        out.contains("`approve_above_rate` is only for mode = \"action\""),
        "{out}"
    );
}

/// FINDING (design): `approve_above_rate` ignores the risk score: on a route whose policy
/// holds risky requests (`risk_below`), a DELETE from a never-seen address (70) still passes
/// because it is within the rate.
#[tokio::test]
async fn redteam_approve_above_rate_ignores_the_risk_score() {
    // By design (README: rate passes are not judged by the score); `check` says so.
    let routes = OPS.replace(
        "approvers = [\"group:oncall\"]\n",
        "approvers = [\"group:oncall\"]\napprove_above_rate = \"5/h\"\n",
    );
    let (ok, out) = check(RISK, &routes);
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.contains("warning")
            && l.contains("approve_above_rate")
            && l.contains("risk")),
        "{out}"
    );
}

/// FINDING (config): `check` accepts `methods = { delete = 60 }` in `[approvals.risk]`; the
/// gateway refuses lower-case methods on the wire, so the weight can never apply and a
/// DELETE scores 0: the `risk_below = 50` policy forwards what the operator weighted at 60.
#[tokio::test]
async fn redteam_lowercase_risk_method_weight_is_accepted_and_never_applies() {
    // Fixed: refused by `check`.
    let (ok, out) = check("[approvals.risk]\nmethods = { delete = 60 }\n", OPS);
    assert!(!ok, "{out}");
    assert!(out.contains("write `DELETE`"), "{out}");
}

/// FINDING (config, low): `risk_below` above the highest score the model can give is always
/// true, yet `check` says nothing (it warns about always-true windows and prefixes).
#[test]
fn redteam_check_is_silent_about_an_always_true_risk_below() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[store]\nkind = \"memory\"\n\n\
         [approvals.risk]\nnew_source = 40\nmethods = {{ DELETE = 30 }}\n\n[approvals]\nsigning_key = \"key.pem\"\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"http://127.0.0.1:9\"\n\n{}\n{}",
        OPS.replace("risk_below = 50", "risk_below = 1000"),
        identity_and_admin_toml()
    );
    std::fs::write(dir.path().join("p.toml"), cfg).unwrap();
    std::fs::write(dir.path().join("key.pem"), signing_key_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["check", "p.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.contains("warning") && l.contains("risk_below")),
        "no warning that risk_below = 1000 exceeds the highest possible score (70): {text}"
    );
}

/// FINDING: the first test on Redis (the store records the address with SADD before any
/// decision, so the bypass holds across replicas too).
#[tokio::test]
async fn redteam_held_request_makes_its_source_known_redis() {
    let origin = Origin::start();
    let redis = RedisServer::start();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let gw = gateway(&origin, &store, RISK, OPS);
    wait_store_ok(&gw).await;
    let r = send(
        "DELETE",
        &gw.url("/ops/db/prod"),
        &bob_from("10.66.6.7"),
        "",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = send(
        "DELETE",
        &gw.url("/ops/db/prod"),
        &bob_from("10.66.6.7"),
        "",
    )
    .await;
    assert_eq!(
        origin.count(),
        0,
        "retry forwarded: {} {}",
        r.status,
        r.text()
    );
}

/// HOLDS (expected to pass): with Redis down, a request within `approve_above_rate` and a
/// calm request under `risk_below` are both refused 503, never forwarded.
#[tokio::test]
async fn holds_rate_and_risk_fail_closed_when_redis_is_down() {
    let origin = Origin::start();
    let mut redis = RedisServer::start();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let routes = format!(
        "{OPS}\n[[routes]]\nname = \"reports\"\nmethods = [\"POST\"]\npath = \"/reports/**\"\nupstream = \"origin\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:oncall\"]\napprove_above_rate = \"5/h\"\n"
    );
    let gw = gateway(&origin, &store, RISK, &routes);
    wait_store_ok(&gw).await;
    // Make 10.1.1.1 known while the store is up.
    let r = send("POST", &gw.url("/ops/a"), &bob_from("10.1.1.1"), "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    redis.stop();
    let r = send("POST", &gw.url("/ops/b"), &bob_from("10.1.1.1"), "{}").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = send("POST", &gw.url("/reports/a"), &bob_from("10.1.1.1"), "{}").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(origin.count(), 1);
}
