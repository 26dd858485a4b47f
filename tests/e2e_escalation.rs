//! Escalation and reminders (SPEC 8): a ticket still undecided `escalate_after` its creation
//! is widened to `escalate_to` (audited and told as `ticket.escalated`); before that those
//! approvers can neither see nor decide it. `remind_before` its expiry an undecided ticket is
//! told again as `ticket.reminder`. With two replicas on one store each happens once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::*;

const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(origin: &str, store: &str, hook: &str) -> String {
    let routes = r#"[[routes]]
name = "deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
ticket_ttl = "6s"
escalate_after = "1s"
escalate_to = ["user:mallory"]
remind_before = "4s"

"#;
    let extra = format!(
        r#"[[notify]]
name = "ops-hook"
kind = "webhook"
url = "{hook}/hook"
secret_env = "HOOK_SECRET"
timeout = "2s"
events = ["ticket.escalated", "ticket.reminder"]

"#
    );
    policy_config(
        origin,
        store,
        "hold_timeout = \"300ms\"\nreconcile_interval = \"200ms\"\n",
        routes,
        &extra,
    )
}

fn ms(v: &Value) -> i64 {
    let s = v.as_str().expect("timestamp");
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s%3N"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ms")
}

async fn events_of(gw: &Gateway, id: &str, kind: &str) -> Vec<Value> {
    let r = admin_call(
        gw,
        "ops",
        "GET",
        &format!("/v1/audit?ticket={id}&kind={kind}"),
        "",
    )
    .await;
    r.json()["events"].as_array().cloned().unwrap_or_default()
}

async fn escalates_then_reminds(store: &str, replicas: usize) {
    let origin = Origin::start();
    let hooks = HookReceiver::start(0);
    let cfg = config(&origin.url(), store, &hooks.url());
    let gws: Vec<Gateway> = (0..replicas)
        .map(|_| {
            Gateway::builder(&cfg)
                .file("key.pem", signing_key_pem())
                .env("HOOK_SECRET", HOOK_SECRET)
                .start()
        })
        .collect();
    let gw = &gws[0];
    wait_store_ok(gw).await;

    let r = send("POST", &gw.url("/deploy/a"), &BOB, "{}".to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("jit-ticket").unwrap().to_string();
    // Before the delay the escalation approver cannot see, let alone decide, the ticket.
    let early = approve(gw, "mallory", &id, "me?").await;
    assert_eq!(early.status, 404, "{}", early.text());

    let t = loop {
        let t = wait_status(gw, &id, "PENDING", Duration::from_secs(5)).await;
        if t["escalatedAt"].is_string() {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(ms(&t["escalatedAt"]) - ms(&t["createdAt"]) >= 1000, "{t}");
    assert!(
        t["approvers"]
            .as_array()
            .unwrap()
            .contains(&Value::from("user:mallory")),
        "{t}"
    );
    let r = approve(gw, "mallory", &id, "escalated to me").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "APPROVED");

    // A second ticket nobody decides: reminded once, about 4 s before it expires.
    let r = send("POST", &gw.url("/deploy/b"), &BOB, "{}".to_string()).await;
    let quiet = r.header("jit-ticket").unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let reminded = loop {
        let t = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{quiet}"), "")
            .await
            .json();
        if t["remindedAt"].is_string() {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reminder: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        ms(&reminded["remindedAt"]) >= ms(&reminded["expiresAt"]) - 4000,
        "{reminded}"
    );
    hooks
        .wait_until(
            "escalation and reminder told",
            Duration::from_secs(10),
            |hs| {
                let told = |kind: &str| hs.iter().filter(|h| h.json()["type"] == kind).count();
                told("ticket.escalated") >= 2 && told("ticket.reminder") >= 1
            },
        )
        .await;
    // Each step happened once, whichever replica ran it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events_of(gw, &id, "ticket.escalated").await.len(), 1);
    assert_eq!(events_of(gw, &quiet, "ticket.escalated").await.len(), 1);
    assert_eq!(events_of(gw, &quiet, "ticket.reminder").await.len(), 1);
    assert_eq!(
        events_of(gw, &id, "ticket.reminder").await.len(),
        0,
        "decided first"
    );
}

#[tokio::test]
async fn escalation_admits_its_approvers_only_after_the_delay_and_reminders_come_once_memory() {
    escalates_then_reminds("[store]\nkind = \"memory\"\n", 1).await;
}

#[tokio::test]
async fn escalation_admits_its_approvers_only_after_the_delay_and_reminders_come_once_redis() {
    let redis = RedisServer::start();
    escalates_then_reminds(
        &format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url()),
        2,
    )
    .await;
}
