//! Red-team regression tests for auto-approval, `also` grants and break-glass (SPEC 6, 8,
//! invariant 11.1: nothing on an approve route reaches the upstream without a valid approval,
//! grant, auto-approval *whose conditions truly hold*, or audited break-glass).
//!
//! Each test states what the contract requires; a failing assertion is a finding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];

fn header(store: &str) -> String {
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
url = "{{origin}}"
"#
    )
}

fn start(origin: &Origin, config: &str) -> Gateway {
    Gateway::builder(&config.replace("{origin}", &origin.url()))
        .file("key.pem", signing_key_pem())
        .start()
}

const MEMORY: &str = "[store]\nkind = \"memory\"\n";

// ---------------------------------------------------------------------------------------
// Fixed by refusing request conditions on access routes. Finding: on an access route, a policy's *request* conditions (path_prefix, methods,
// headers, source, window) are judged on the first request only; the grant it creates covers
// the whole route, every method, any header, any source, after the window.
// ---------------------------------------------------------------------------------------

fn access_config(store: &str) -> String {
    format!(
        r#"{}
[[routes]]
name = "console"
path = "/console/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
mode = "access"
max_duration = "1h"
[[routes.approval.auto_approve]]
name = "dev-read-only"
path_prefix = "/console/readonly"
methods = ["GET"]
groups = ["dev"]
source = ["10.1.0.0/16"]
headers = {{ "x-env" = "staging" }}

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{}"#,
        header(store),
        identity_and_admin_toml()
    )
}

/// Fixed: `check` refuses request-shaped conditions (`path_prefix`, `methods`, `headers`) in
/// an access route's policies, since the grant covers the whole route.
#[test]
fn check_refuses_request_conditions_in_an_access_route_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = access_config(MEMORY).replace("{origin}", "http://127.0.0.1:9");
    std::fs::write(dir.path().join("proxy.toml"), cfg).unwrap();
    std::fs::write(dir.path().join("key.pem"), signing_key_pem()).unwrap();
    let (ok, out) = jitgate_check(dir.path(), "proxy.toml");
    assert!(
        !ok,
        "check accepted request conditions on an access route:\n{out}"
    );
    for key in ["path_prefix", "methods", "headers"] {
        assert!(
            out.contains(&format!(
                "`{key}` in [[routes.approval.auto_approve]] is only for mode = \"action\""
            )),
            "{key}: {out}"
        );
    }
}

/// What an access policy may judge (the requester, where and when the grant is asked for)
/// approves the grant; the grant then covers the route for its duration, like one a person
/// gives: the README says so.
#[tokio::test]
async fn an_access_policy_grants_the_route_for_its_requester_only() {
    let origin = Origin::start();
    let cfg = access_config(MEMORY)
        .replace("path_prefix = \"/console/readonly\"\n", "")
        .replace("methods = [\"GET\"]\n", "")
        .replace("headers = {{ \"x-env\" = \"staging\" }}\n", "")
        .replace("headers = { \"x-env\" = \"staging\" }\n", "");
    let gw = start(&origin, &cfg);
    wait_store_ok(&gw).await;
    let mut office = BOB.to_vec();
    office.push(("x-forwarded-for", "10.1.2.3"));
    let r = send("GET", &gw.url("/console/readonly/report"), &office, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Another requester from the office without a grant of their own: only if the policy
    // admits them (dan is not in dev).
    let r = send(
        "GET",
        &gw.url("/console/readonly/report"),
        &[
            ("x-user", "dan"),
            ("x-groups", "ops"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // From elsewhere, without a grant, the policy does not admit (mallory, dev).
    let r = send(
        "GET",
        &gw.url("/console/readonly/report"),
        &[
            ("x-user", "mallory"),
            ("x-groups", "dev"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), 1);
}

// ---------------------------------------------------------------------------------------
// Fixed: `check` (and so the gateway at start and reload) refuses it. Finding: `headers = {}` counts as "a condition" for `check`, but holds for every request:
// a policy that approves everything (anonymous requesters included) is accepted.
// README: "A policy with no condition, an empty list, ... is refused by `check`."
// ---------------------------------------------------------------------------------------

fn empty_headers_config(store: &str) -> String {
    format!(
        r#"{}
[[routes]]
name = "deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
[[routes.approval.auto_approve]]
name = "looks-restricted"
headers = {{}}

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{}"#,
        header(store),
        identity_and_admin_toml()
    )
}

fn jitgate_check(dir: &Path, file: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["check", file])
        .current_dir(dir)
        .output()
        .expect("run jitgate check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_refuses_an_auto_approve_policy_whose_only_condition_is_an_empty_headers_table() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = empty_headers_config(MEMORY).replace("{origin}", "http://127.0.0.1:9");
    std::fs::write(dir.path().join("proxy.toml"), cfg).unwrap();
    std::fs::write(dir.path().join("key.pem"), signing_key_pem()).unwrap();
    let (ok, out) = jitgate_check(dir.path(), "proxy.toml");
    assert!(
        !ok,
        "check accepted a policy with `headers = {{}}` (no real condition):\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Fixed: auto-approvals are one use. Finding (low): an auto-approved action ticket on a route with `token_uses` > 1 stays
// APPROVED with uses left; its requester redeems them later with `Jit-Ticket` where the
// policy's conditions no longer hold (another source; the same would hold after `window`).
// ---------------------------------------------------------------------------------------

fn token_uses_config(store: &str) -> String {
    format!(
        r#"{}
[[routes]]
name = "deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
token_uses = 3
[[routes.approval.auto_approve]]
name = "office-only"
groups = ["dev"]
source = ["10.1.0.0/16"]

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{}"#,
        header(store),
        identity_and_admin_toml()
    )
}

#[tokio::test]
async fn an_auto_approval_is_not_redeemed_again_where_its_policy_does_not_hold() {
    let origin = Origin::start();
    let gw = start(&origin, &token_uses_config(MEMORY));
    wait_store_ok(&gw).await;
    let mut office = BOB.to_vec();
    office.push(("x-forwarded-for", "10.1.2.3"));
    let r = send(
        "POST",
        &gw.url("/deploy/prod/web"),
        &office,
        "{}".to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // From outside the office the policy does not approve: held.
    let mut away = BOB.to_vec();
    away.push(("x-forwarded-for", "203.0.113.9"));
    let r = send("POST", &gw.url("/deploy/prod/web"), &away, "{}".to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(origin.count(), 1);
    // bob finds his auto-approved ticket (he may see his own tickets on the admin plane)...
    let r = admin_call(&gw, "bob", "GET", "/v1/tickets?status=EXECUTED", "").await;
    let auto = r.json()["tickets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|t| t["policy"] == "office-only")
        .unwrap_or_else(|| panic!("no EXECUTED auto ticket: {}", r.text()));
    let id = auto["id"].as_str().unwrap().to_string();
    // ...and redeems it from outside the office.
    let mut replay = away.clone();
    replay.push(("jit-ticket", id.as_str()));
    let r = send(
        "POST",
        &gw.url("/deploy/prod/web"),
        &replay,
        "{}".to_string(),
    )
    .await;
    assert_ne!(
        r.status, 200,
        "ticket {id}, auto-approved for 10.1.0.0/16 only, released a request from 203.0.113.9"
    );
    assert_eq!(origin.count(), 1);
}
