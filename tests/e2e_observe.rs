//! Metrics and logs end to end (SPEC 10a): a real gateway's `GET /metrics` parses with the
//! Prometheus project's own parsers (OpenMetrics and the classic text format) and moves as
//! traffic flows: requests by route, action and status, held requests, tickets opened and
//! decided, decision and release times, upstream times, reloads, notification attempts and
//! store errors. Every request gets one access-log line (text, then JSON after a hot reload)
//! under an `X-Request-Id` taken from the client or set, forwarded upstream and answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::metrics::{access_line, scrape, scrape_until};
use common::*;

const WAIT: Duration = Duration::from_secs(20);
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `deploy` (approve, POST /deploy/**), `blocked` (deny), `rest` (allow), a webhook channel
/// at `hook`, the access log as `access`, and `store`.
fn config(origin: &str, hook: &str, access: &str, store: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

{store}

[approvals]
hold_timeout = "30s"
reconcile_interval = "300ms"

[log]
access = "{access}"

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "blocked"
path = "/blocked/**"
action = "deny"

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

[[notify]]
name = "ops-hook"
kind = "webhook"
url = "{hook}/hook"
secret_env = "HOOK_SECRET"
timeout = "2s"
events = ["ticket.opened"]

{}"#,
        identity_and_admin_toml()
    )
}

fn start(origin: &Origin, hook: &HookReceiver, access: &str) -> Gateway {
    Gateway::builder(&config(&origin.url(), &hook.url(), access, ""))
        .env("HOOK_SECRET", HOOK_SECRET)
        .start()
}

#[tokio::test]
async fn requests_get_an_id_that_is_forwarded_answered_and_logged() {
    let origin = Origin::start();
    let hook = HookReceiver::start(0);
    let gw = start(&origin, &hook, "text");

    // A client's well-formed id is kept, forwarded and answered.
    let r = send(
        "GET",
        &gw.url("/a?token=secret"),
        &[("x-request-id", "client-id-1")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));
    let seen = origin.wait_for(1, WAIT).await;
    assert_eq!(seen[0].header_all("x-request-id"), [b"client-id-1"]);

    // No id, or one that could not be trusted into a log line: a new one, forwarded alone.
    for sent in [None, Some("two words\"")] {
        origin.clear();
        let headers: Vec<(&str, &str)> = sent.map(|v| ("x-request-id", v)).into_iter().collect();
        let r = send("GET", &gw.url("/b"), &headers, "").await;
        assert_eq!(r.status, 200);
        let id = r.header("x-request-id").expect("an id").to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let seen = origin.wait_for(1, WAIT).await;
        assert_eq!(seen[0].header_all("x-request-id"), [id.as_bytes()]);
        access_line(&gw, &[&format!("request_id=\"{id}\""), "path=\"/b\""]).await;
    }

    // The gateway's own answers carry the id too, and are logged with their route.
    let r = send(
        "GET",
        &gw.url("/blocked/x"),
        &[("x-request-id", "deny-1")],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-request-id"), Some("deny-1"));

    let line = access_line(&gw, &["request_id=\"client-id-1\""]).await;
    for field in [
        "peer=127.0.0.1",
        "method=\"GET\"",
        "path=\"/a\"",
        "version=HTTP/1.1",
        "status=200",
        "route=\"rest\"",
        "action=allow",
        "ticket=-",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // Query strings carry credentials too often to be logged.
    assert!(!gw.stdout_text().contains("secret"), "{}", gw.stdout_text());
    let line = access_line(&gw, &["request_id=\"deny-1\""]).await;
    assert!(
        line.contains("status=403")
            && line.contains("route=\"blocked\"")
            && line.contains("action=deny"),
        "{line}"
    );
    // A method override is logged as every reading of the method, as the rules matched it.
    let r = send(
        "GET",
        &gw.url("/m"),
        &[
            ("x-request-id", "override-1"),
            ("x-http-method-override", "DELETE"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let line = access_line(&gw, &["request_id=\"override-1\""]).await;
    assert!(line.contains("method=\"GET+DELETE\""), "{line}");
    // Access lines go to stdout; diagnostics stay on stderr.
    assert!(!gw.stderr_text().contains("request_id="));
}

#[tokio::test]
async fn metrics_parse_and_move_as_traffic_flows() {
    let origin = Origin::start();
    // The first notification attempt fails, the retry is delivered.
    let hook = HookReceiver::start(1);
    let gw = start(&origin, &hook, "text");

    let before = scrape(&gw).await;
    assert_eq!(before.get("jitgate_held_requests", &[]), Some(0.0));
    assert_eq!(before.get("jitgate_store_errors_total", &[]), Some(0.0));
    assert_eq!(
        before.get("jitgate_reloads_total", &[("result", "applied")]),
        Some(0.0)
    );
    let allowed = [("route", "rest"), ("action", "allow"), ("status", "200")];
    assert_eq!(before.value("jitgate_requests_total", &allowed), 0.0);

    for _ in 0..3 {
        assert_eq!(send("GET", &gw.url("/a"), &[], "").await.status, 200);
    }
    assert_eq!(
        send("GET", &gw.url("/blocked/x"), &[], "").await.status,
        403
    );
    let after = scrape(&gw).await;
    assert_eq!(after.value("jitgate_requests_total", &allowed), 3.0);
    let denied = [("route", "blocked"), ("action", "deny"), ("status", "403")];
    assert_eq!(after.value("jitgate_requests_total", &denied), 1.0);
    assert_eq!(
        after.value(
            "jitgate_request_duration_seconds_count",
            &[("action", "allow")]
        ),
        3.0
    );
    let upstream = [("upstream", "origin")];
    assert_eq!(
        after.value("jitgate_upstream_duration_seconds_count", &upstream),
        3.0
    );

    // A held request shows while it waits; its approval counts the ticket, the decision
    // time and the release time.
    let held = tokio::spawn({
        let url = gw.url("/deploy/web");
        async move {
            send(
                "POST",
                &url,
                &[("x-user", "bob"), ("x-groups", "dev")],
                "{\"image\":\"web:1.4.2\"}",
            )
            .await
        }
    });
    let ticket = wait_pending(&gw, "deploy", WAIT).await;
    let id = ticket["id"].as_str().unwrap().to_string();
    let during = scrape_until(&gw, "one held request", |s| {
        s.get("jitgate_held_requests", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        during.value("jitgate_tickets_opened_total", &[("route", "deploy")]),
        1.0
    );
    assert_eq!(approve(&gw, "alice", &id, "ok").await.status, 200);
    let released = held.await.unwrap();
    assert_eq!(released.status, 200, "{}", released.text());

    let done = scrape_until(&gw, "the release recorded", |s| {
        s.get("jitgate_held_requests", &[]) == Some(0.0)
            && s.value("jitgate_release_seconds_count", &[]) == 1.0
    })
    .await;
    assert_eq!(
        done.value(
            "jitgate_tickets_decided_total",
            &[("route", "deploy"), ("outcome", "approved")]
        ),
        1.0
    );
    assert_eq!(done.value("jitgate_decision_seconds_count", &[]), 1.0);
    let approved = [
        ("route", "deploy"),
        ("action", "approve"),
        ("status", "200"),
    ];
    assert_eq!(done.value("jitgate_requests_total", &approved), 1.0);
    assert_eq!(
        done.value("jitgate_upstream_duration_seconds_count", &upstream),
        4.0
    );
    let line = access_line(&gw, &["route=\"deploy\"", "status=200"]).await;
    assert!(line.contains(&format!("ticket=\"{id}\"")), "{line}");
    assert!(line.contains("action=approve"), "{line}");

    // The ticket.opened notification: one failed attempt, then delivered.
    let channel = |result| [("channel", "ops-hook"), ("result", result)];
    scrape_until(&gw, "a failed and a delivered notification", |s| {
        s.value("jitgate_notifications_total", &channel("failed")) == 1.0
            && s.value("jitgate_notifications_total", &channel("delivered")) == 1.0
    })
    .await;

    // A reload that applies (the access log turns JSON), then one that is refused.
    let json_config = config(&origin.url(), &hook.url(), "json", "");
    gw.rewrite_config(&json_config);
    scrape_until(&gw, "an applied reload", |s| {
        s.value("jitgate_reloads_total", &[("result", "applied")]) == 1.0
    })
    .await;
    let r = send("GET", &gw.url("/c"), &[("x-request-id", "json-1")], "").await;
    assert_eq!(r.status, 200);
    let line = access_line(&gw, &["\"requestId\":\"json-1\""]).await;
    let entry: Value = serde_json::from_str(&line).expect("a JSON access line");
    assert_eq!(entry["path"], "/c");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "rest");
    assert_eq!(entry["action"], "allow");
    assert!(entry["durationMs"].as_f64().is_some(), "{entry}");

    gw.rewrite_config(&json_config.replace("[log]", "[log]\nsurprise = 1"));
    scrape_until(&gw, "a rejected reload", |s| {
        s.value("jitgate_reloads_total", &[("result", "rejected")]) == 1.0
    })
    .await;
    assert_eq!(hook.hooks().len(), 2);
}

#[tokio::test]
async fn store_errors_are_counted_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let origin = Origin::start();
    let hook = HookReceiver::start(0);
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let gw = Gateway::builder(&config(&origin.url(), &hook.url(), "off", &store))
        .env("HOOK_SECRET", HOOK_SECRET)
        .start();
    let deadline = tokio::time::Instant::now() + WAIT;
    while send("GET", &gw.admin("/readyz"), &[], "").await.json()["store"]["status"] != "ok" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis never reachable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = scrape(&gw).await.value("jitgate_store_errors_total", &[]);

    redis.stop();
    let r = send(
        "POST",
        &gw.url("/deploy/web"),
        &[("x-user", "bob"), ("x-groups", "dev")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    // Allow routes keep flowing, and are counted as ever.
    assert_eq!(send("GET", &gw.url("/a"), &[], "").await.status, 200);
    let during = scrape(&gw).await;
    assert!(
        during.value("jitgate_store_errors_total", &[]) > before,
        "{}",
        during.text
    );
    let unavailable = [
        ("route", "deploy"),
        ("action", "approve"),
        ("status", "503"),
    ];
    assert_eq!(during.value("jitgate_requests_total", &unavailable), 1.0);
    // `off` writes no access line.
    assert!(!gw.stdout_text().contains("route="), "{}", gw.stdout_text());
}
