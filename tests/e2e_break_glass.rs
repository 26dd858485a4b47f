//! Break-glass (SPEC 8): a member of a route's `break_glass` groups sends
//! `Jit-Break-Glass: <reason>` and the request passes at once, with its approval token; it is
//! audited at high severity (`break_glass.used`), told to the channels, and leaves a ticket in
//! `REVIEW` that an approver acknowledges afterwards. Without a reason, from anyone else, or
//! on a route without break-glass the request is refused and the attempt audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::*;

const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(origin: &str, store: &str, hook: &str) -> String {
    let routes = r#"[[routes]]
name = "prod-db"
methods = ["POST"]
path = "/db/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
break_glass = { groups = ["dev"] }

[[routes]]
name = "plain"
methods = ["POST"]
path = "/plain/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

"#;
    let extra = format!(
        r#"[[notify]]
name = "ops-hook"
kind = "webhook"
url = "{hook}/hook"
secret_env = "HOOK_SECRET"
timeout = "2s"
events = ["break_glass.used"]

"#
    );
    policy_config(origin, store, "hold_timeout = \"300ms\"\n", routes, &extra)
}

async fn kinds_of(gw: &Gateway, query: &str) -> Vec<Value> {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/audit?{query}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"].as_array().cloned().unwrap_or_default()
}

async fn break_glass_passes_loudly(store: &str) {
    let origin = Origin::start();
    let hooks = HookReceiver::start(0);
    let gw = Gateway::builder(&config(&origin.url(), store, &hooks.url()))
        .file("key.pem", signing_key_pem())
        .env("HOOK_SECRET", HOOK_SECRET)
        .start();
    wait_store_ok(&gw).await;

    let mut h = BOB.to_vec();
    h.push(("jit-break-glass", "primary is down, failing over"));
    let r = send("POST", &gw.url("/db/failover"), &h, "{}".to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].header_str("jit-break-glass").is_none(),
        "never forwarded"
    );
    assert!(
        seen[0].header_str("jit-approval").is_some(),
        "forwarded with a token"
    );

    let r = admin_call(&gw, "ops", "GET", "/v1/tickets?status=REVIEW", "").await;
    let t = r.json()["tickets"][0].clone();
    assert_eq!(t["breakGlass"], "primary is down, failing over", "{t}");
    assert_eq!(t["requester"]["user"], "bob");
    let id = t["id"].as_str().unwrap().to_string();
    let events = kinds_of(&gw, &format!("ticket={id}")).await;
    let used = events
        .iter()
        .find(|e| e["kind"] == "break_glass.used")
        .expect("break_glass.used");
    assert_eq!(used["detail"]["severity"], "high");
    assert_eq!(used["actor"], "bob");
    hooks
        .wait_until("break_glass.used told", Duration::from_secs(10), |hs| {
            hs.iter().any(|h| h.json()["type"] == "break_glass.used")
        })
        .await;

    // Refused, and each attempt audited: no reason, not in the groups, anonymous, a route
    // without break-glass.
    let mut blank = BOB.to_vec();
    blank.push(("jit-break-glass", "   "));
    let mut dan = vec![("x-user", "dan"), ("x-groups", "ops")];
    dan.push(("jit-break-glass", "i am sure"));
    let anonymous = [("jit-break-glass", "let me in")];
    let mut elsewhere = BOB.to_vec();
    elsewhere.push(("jit-break-glass", "urgent"));
    for (what, path, headers) in [
        ("no reason", "/db/x", &blank[..]),
        ("not in the groups", "/db/x", &dan[..]),
        ("anonymous", "/db/x", &anonymous[..]),
        ("a route without break-glass", "/plain/x", &elsewhere[..]),
    ] {
        let r = send("POST", &gw.url(path), headers, "{}".to_string()).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert_eq!(
            r.json()["type"],
            "urn:jitgate:problem:break-glass-refused",
            "{what}"
        );
    }
    assert_eq!(origin.count(), 1, "nothing refused was forwarded");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = kinds_of(&gw, "kind=break_glass.refused").await;
        if refused.len() == 4 {
            assert!(refused.iter().all(|e| e["detail"]["severity"] == "high"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{refused:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Acknowledgement: not by someone who cannot see it, nor by the requester (no
    // self-approval), nor by approving; by an approver, once.
    let ack = |user: &'static str| {
        let id = id.clone();
        let gw = &gw;
        async move {
            admin_call(
                gw,
                user,
                "POST",
                &format!("/v1/tickets/{id}/acknowledge"),
                r#"{"comment":"seen, postmortem 88"}"#,
            )
            .await
        }
    };
    assert_eq!(ack("mallory").await.status, 404);
    assert_eq!(ack("bob").await.status, 403);
    assert_eq!(approve(&gw, "alice", &id, "ok").await.status, 409);
    // Alice acknowledges from the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args([
            "tickets",
            "--admin",
            gw.admin_url(),
            "--token",
            &token_of("alice"),
        ])
        .args(["acknowledge", &id, "-m", "seen, postmortem 88"])
        .output()
        .expect("jitgate tickets acknowledge");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("{id}: EXECUTED"));
    let r = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    assert_eq!(r.json()["status"], "EXECUTED");
    assert_eq!(r.json()["acknowledged"]["by"], "alice");
    assert_eq!(r.json()["acknowledged"]["comment"], "seen, postmortem 88");
    assert_eq!(ack("carol").await.status, 409);
    wait_audit(&gw, &id, &["break_glass.used", "ticket.acknowledged"]).await;
}

#[tokio::test]
async fn break_glass_passes_is_audited_and_awaits_acknowledgement_memory() {
    break_glass_passes_loudly("[store]\nkind = \"memory\"\n").await;
}

#[tokio::test]
async fn break_glass_passes_is_audited_and_awaits_acknowledgement_redis() {
    let redis = RedisServer::start();
    break_glass_passes_loudly(&format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
    .await;
}
