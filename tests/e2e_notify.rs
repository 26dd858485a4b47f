//! Notifications and the event stream, end to end: the real binary, a real redis-server, a
//! webhook receiver that checks Standard Webhooks signatures, Slack callbacks signed as Slack
//! signs them, and `GET /v1/events` read as a client reads a stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use common::notify::{
    config as notify_config, open_stream, read_until, slack_callback, slack_sign, sse_events,
    unix_now, MEMORY, ROUTE, SLACK_SECRET,
};
use common::{
    admin_call, approve, send, wait_pending, wait_status, wait_store_ok, Client, Gateway, Hook,
    HookReceiver, Origin, RedisServer, Response,
};

const SOON: Duration = Duration::from_secs(30);
/// The Standard Webhooks secret of the tests' webhook channel (24 bytes once decoded).
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn redis_store(redis: &RedisServer) -> String {
    format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url())
}

fn webhook(url: &str) -> String {
    format!(
        "[[notify]]\nname = \"ops-hook\"\nkind = \"webhook\"\nurl = \"{url}/hook\"\nsecret_env = \"HOOK_SECRET\"\ntimeout = \"2s\"\nevents = [\"ticket.opened\", \"ticket.decided\"]\n"
    )
}

/// `POST /deploy/<what>` as bob (group dev) on a spawned task.
fn deploy(gw: &Gateway, path: &str) -> tokio::task::JoinHandle<Response> {
    let url = format!("{}{path}", gw.data_url());
    tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(60))
            .send(
                "POST",
                &url,
                &[
                    ("x-user", "bob"),
                    ("x-groups", "dev"),
                    ("content-type", "application/json"),
                ],
                r#"{"image":"web:1.4.2"}"#.to_string(),
            )
            .await
    })
}

/// Checks a delivery the way a Standard Webhooks receiver does.
fn verify_standard_webhook(h: &Hook) {
    let id = h.header("webhook-id").expect("webhook-id");
    let ts = h.header("webhook-timestamp").expect("webhook-timestamp");
    let sig = h.header("webhook-signature").expect("webhook-signature");
    let key = base64::engine::general_purpose::STANDARD
        .decode(HOOK_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&h.body);
    let tag = ring::hmac::sign(&key, &signed);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    assert!(
        sig.split(' ').any(|s| s == want),
        "bad signature {sig} on {h:?}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts: u64 = ts.parse().expect("numeric timestamp");
    assert!(ts.abs_diff(now) < 300, "timestamp {ts} far from {now}");
    assert_eq!(h.header("content-type"), Some("application/json"));
}

fn successes<'a>(hooks: &'a [Hook], kind: &str) -> Vec<&'a Hook> {
    hooks
        .iter()
        .filter(|h| h.status == 200 && h.json()["type"] == kind)
        .collect()
}

/// `(id, data)` of each event named `kind` in what was read.
fn events_named(seen: &str, kind: &str) -> Vec<(u64, Value)> {
    sse_events(seen)
        .into_iter()
        .filter(|(_, name, _)| name == kind)
        .map(|(id, _, data)| (id, data))
        .collect()
}

async fn audit(gw: &Gateway, id: &str) -> Vec<Value> {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/audit?ticket={id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_gets_each_event_once_through_failures_and_a_killed_gateway() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    // The first two attempts fail.
    let hooks = HookReceiver::start(2);
    let cfg = notify_config(
        &redis_store(&redis),
        "",
        "200ms",
        &webhook(&hooks.url()),
        "",
        &origin.url(),
    );
    let mut gw = Gateway::builder(&cfg)
        .env("HOOK_SECRET", HOOK_SECRET)
        .start();
    wait_store_ok(&gw).await;

    let held = deploy(&gw, "/deploy/web");
    let first = tokio::time::timeout(SOON, held).await.unwrap().unwrap();
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("jit-ticket").to_string();

    // The first attempt failed; kill the gateway (no graceful anything) and start it again:
    // the delivery is in Redis, not in the dead process.
    hooks
        .wait_until("a first attempt", SOON, |h| !h.is_empty())
        .await;
    gw.restart();
    wait_store_ok(&gw).await;
    let got = hooks
        .wait_until("ticket.opened delivered", SOON, |h| {
            !successes(h, "ticket.opened").is_empty()
        })
        .await;
    let opened = successes(&got, "ticket.opened");
    assert_eq!(opened.len(), 1);
    let body = opened[0].json();
    assert_eq!(body["data"]["id"], id.as_str(), "{body}");
    assert_eq!(body["data"]["status"], "PENDING");
    assert_eq!(body["data"]["route"], ROUTE);
    assert!(
        body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    // Every attempt of the event carried the same webhook-id.
    let msg = opened[0].header("webhook-id").unwrap().to_string();
    assert!(msg.starts_with("msg_"), "{msg}");
    let attempts: Vec<&Hook> = got
        .iter()
        .filter(|h| h.json()["type"] == "ticket.opened")
        .collect();
    assert!(attempts.len() >= 3, "{attempts:#?}");
    assert!(attempts
        .iter()
        .all(|h| h.header("webhook-id") == Some(msg.as_str())));

    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = hooks
        .wait_until("ticket.decided delivered", SOON, |h| {
            !successes(h, "ticket.decided").is_empty()
        })
        .await;
    let decided = successes(&got, "ticket.decided");
    assert_eq!(decided[0].json()["data"]["status"], "APPROVED");
    assert_ne!(decided[0].header("webhook-id"), Some(msg.as_str()));
    for h in &got {
        verify_standard_webhook(h);
        assert_eq!(h.path, "/hook");
    }

    // Each attempt is audited; delivered once per event.
    let deadline = tokio::time::Instant::now() + SOON;
    let notified = loop {
        let n: Vec<Value> = audit(&gw, &id)
            .await
            .into_iter()
            .filter(|e| e["kind"] == "ticket.notified")
            .collect();
        if n.iter()
            .filter(|e| e["detail"]["outcome"] == "delivered")
            .count()
            == 2
        {
            break n;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failed: Vec<&Value> = notified
        .iter()
        .filter(|e| e["detail"]["outcome"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "{notified:#?}");
    assert!(failed.iter().all(|e| e["detail"]["channel"] == "ops-hook"));
    let delivered_ids: HashSet<&str> = notified
        .iter()
        .filter(|e| e["detail"]["outcome"] == "delivered")
        .filter_map(|e| e["detail"]["webhookId"].as_str())
        .collect();
    assert_eq!(delivered_ids.len(), 2, "{notified:#?}");

    // Nothing more arrives for events already delivered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = hooks.hooks();
    assert_eq!(successes(&after, "ticket.opened").len(), 1);
    assert_eq!(successes(&after, "ticket.decided").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_deliver_every_event_exactly_once() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let hooks = HookReceiver::start(0);
    let cfg = notify_config(
        &redis_store(&redis),
        "",
        "200ms",
        &webhook(&hooks.url()),
        "",
        &origin.url(),
    );
    let a = Gateway::builder(&cfg)
        .env("HOOK_SECRET", HOOK_SECRET)
        .start();
    let b = Gateway::builder(&cfg)
        .env("HOOK_SECRET", HOOK_SECRET)
        .start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;

    let mut ids = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = tokio::time::timeout(SOON, deploy(gw, &format!("/deploy/app{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.header("jit-ticket").unwrap().to_string());
    }
    // A route that tells nobody.
    let quiet = tokio::time::timeout(SOON, async {
        Client::http1()
            .send(
                "POST",
                &format!("{}/quiet/x", a.data_url()),
                &[("x-user", "bob"), ("x-groups", "dev")],
                String::new(),
            )
            .await
    })
    .await
    .unwrap();
    assert_eq!(quiet.status, 202);
    for (i, id) in ids.iter().enumerate() {
        let gw = if i % 2 == 0 { &b } else { &a };
        let r = approve(gw, "alice", id, "ok").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let got = hooks
        .wait_until("12 deliveries", SOON, |h| h.len() >= 12)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_after = hooks.hooks();
    assert_eq!(
        got_after.len(),
        got.len(),
        "no late duplicates: {got_after:#?}"
    );
    let mut per_ticket: HashMap<String, Vec<String>> = HashMap::new();
    let mut msg_ids = HashSet::new();
    for h in &got_after {
        verify_standard_webhook(h);
        assert!(
            msg_ids.insert(h.header("webhook-id").unwrap().to_string()),
            "duplicate {h:?}"
        );
        let v = h.json();
        per_ticket
            .entry(v["data"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(v["type"].as_str().unwrap().to_string());
    }
    assert_eq!(per_ticket.len(), 6, "{per_ticket:#?}");
    for id in &ids {
        let mut kinds = per_ticket[id].clone();
        kinds.sort();
        assert_eq!(kinds, ["ticket.decided", "ticket.opened"], "{id}");
    }
}

async fn post_slack(gw: &Gateway, body: &str, ts: u64, sig: &str) -> Response {
    let ts = ts.to_string();
    send(
        "POST",
        &gw.admin("/v1/notify/slack/actions"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", sig),
        ],
        body.to_string(),
    )
    .await
}

fn has_button(msg: &Value, action: &str) -> bool {
    msg["blocks"]
        .to_string()
        .contains(&format!("\"action_id\":\"{action}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_buttons_decide_only_with_a_valid_signature_and_a_mapped_approver() {
    let origin = Origin::start();
    let slack = HookReceiver::start(0);
    let teams = HookReceiver::start(0);
    let notify = format!(
        "[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}/slack\"\nsigning_secret_env = \"SLACK_SIGNING\"\nusers = {{ \"U_ALICE\" = \"alice\", \"U_MAL\" = \"mallory\" }}\nevents = [\"ticket.opened\"]\n\n\
         [[notify]]\nname = \"team\"\nkind = \"teams\"\nurl = \"{}/teams\"\nevents = [\"ticket.opened\"]\n",
        slack.url(),
        teams.url()
    );
    let cfg_with = |extra: &str| {
        notify_config(MEMORY, "", "60s", &notify, extra, &origin.url()).replace(
            "[admin]\noperators",
            "[admin]\npublic_url = \"https://jit.example.com\"\noperators",
        )
    };
    let cfg = cfg_with("");
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .start();

    let held = deploy(&gw, "/deploy/web");
    let t = wait_pending(&gw, ROUTE, SOON).await;
    let id = t["id"].as_str().unwrap().to_string();
    let got = slack
        .wait_until("the Slack message", SOON, |h| !h.is_empty())
        .await;
    let msg = got[0].json();
    assert!(
        has_button(&msg, "approve") && has_button(&msg, "deny"),
        "{msg}"
    );
    let link = format!("https://jit.example.com/ui/tickets/{id}");
    assert!(msg.to_string().contains(&link), "{msg}");
    assert!(msg["text"].as_str().unwrap().contains("POST"), "{msg}");
    let card = teams
        .wait_until("the Teams card", SOON, |h| !h.is_empty())
        .await[0]
        .json();
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(
        card["attachments"][0]["content"]["actions"][0]["url"],
        link.as_str()
    );

    let respond = format!("{}/respond", slack.url());
    let body = slack_callback("U_ALICE", "approve", &id, &respond);
    let now = unix_now();
    // Refused: no signature, a wrong one, a stale timestamp (validly signed), an unmapped
    // user, a mapped user who is not an approver. The ticket stays pending throughout.
    let r = post_slack(&gw, &body, now, "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_slack(
        &gw,
        &body,
        now,
        &slack_sign("another-secret-of-32-characters!", now, &body),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.json()["type"]
            .as_str()
            .map(|t| t.ends_with("bad-signature")),
        Some(true),
        "{}",
        r.text()
    );
    let stale = now - 600;
    let r = post_slack(&gw, &body, stale, &slack_sign(SLACK_SECRET, stale, &body)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let eve = slack_callback("U_EVE", "approve", &id, &respond);
    let r = post_slack(&gw, &eve, now, &slack_sign(SLACK_SECRET, now, &eve)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A signature over another body does not carry over.
    let r = post_slack(&gw, &eve, now, &slack_sign(SLACK_SECRET, now, &body)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let mal = slack_callback("U_MAL", "approve", &id, &respond);
    let r = post_slack(&gw, &mal, now, &slack_sign(SLACK_SECRET, now, &mal)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refusals = slack
        .wait_until("two ephemeral refusals", SOON, |h| {
            h.iter().filter(|h| h.path == "/respond").count() >= 2
        })
        .await;
    assert!(
        refusals
            .iter()
            .filter(|h| h.path == "/respond")
            .all(|h| h.json()["response_type"] == "ephemeral"
                && h.json()["replace_original"] == false)
    );
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "")
        .await
        .json();
    assert_eq!(t["status"], "PENDING", "{t}");
    assert!(t["approvals"].as_array().unwrap().is_empty(), "{t}");

    // Alice, properly signed: approved, the held request released, the message updated.
    let r = post_slack(&gw, &body, now, &slack_sign(SLACK_SECRET, now, &body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = wait_status(&gw, &id, "EXECUTED", SOON).await;
    assert_eq!(t["approvals"][0]["by"], "alice", "{t}");
    let released = tokio::time::timeout(SOON, held).await.unwrap().unwrap();
    assert_eq!(released.status, 200, "{}", released.text());
    let updated = slack
        .wait_until("the message update", SOON, |h| {
            h.iter()
                .any(|h| h.path == "/respond" && h.json()["replace_original"] == true)
        })
        .await;
    let update = updated
        .iter()
        .find(|h| h.path == "/respond" && h.json()["replace_original"] == true)
        .unwrap()
        .json();
    assert!(!has_button(&update, "approve"), "{update}");
    assert!(update.to_string().contains("Approved by alice"), "{update}");

    // A route with chat_approval = false gets a link and no buttons.
    gw.rewrite_config(&cfg_with("chat_approval = false"));
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let _held2 = deploy(&gw, "/deploy/db");
    let got = slack
        .wait_until("a second message", SOON, |h| {
            h.iter().filter(|h| h.path == "/slack").count() >= 2
        })
        .await;
    let second = got
        .iter()
        .filter(|h| h.path == "/slack")
        .nth(1)
        .unwrap()
        .json();
    assert!(
        !has_button(&second, "approve") && !has_button(&second, "deny"),
        "{second}"
    );
    assert!(second.to_string().contains("/ui/tickets/"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_stream_shows_callers_what_they_may_see_and_resumes_by_id() {
    let origin = Origin::start();
    let cfg = notify_config(MEMORY, "", "200ms", "", "", &origin.url());
    let gw = Gateway::start(&cfg);

    let mut alice = open_stream(&gw, "alice", None).await;
    let mut mallory = open_stream(&gw, "mallory", None).await;
    let mut none = String::new();
    let (mut a_seen, mut m_seen) = (String::new(), String::new());
    read_until(&mut alice, &mut a_seen, ": jitgate events", 1).await;
    read_until(&mut mallory, &mut m_seen, ": jitgate events", 1).await;
    assert!(a_seen.starts_with("HTTP/1.1 200"), "{a_seen}");
    assert!(
        a_seen
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{a_seen}"
    );
    // Unauthenticated: no stream.
    let r = send("GET", &gw.admin("/v1/events"), &[], "").await;
    assert_eq!(r.status, 401);

    let first = tokio::time::timeout(SOON, deploy(&gw, "/deploy/web"))
        .await
        .unwrap()
        .unwrap();
    let id = first.header("jit-ticket").unwrap().to_string();
    read_until(&mut alice, &mut a_seen, "event: ticket.opened", 1).await;
    let r = approve(&gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    read_until(&mut alice, &mut a_seen, "event: ticket.decided", 1).await;
    let opened = events_named(&a_seen, "ticket.opened");
    let decided = events_named(&a_seen, "ticket.decided");
    assert_eq!(opened.len(), 1, "{a_seen}");
    assert_eq!(opened[0].1["type"], "ticket.opened");
    assert_eq!(opened[0].1["data"]["id"], id.as_str());
    assert_eq!(decided[0].1["data"]["status"], "APPROVED");
    assert!(decided[0].0 > opened[0].0);

    // mallory may see none of it: a second ticket by mallory herself is all she gets.
    let own = tokio::time::timeout(SOON, async {
        Client::http1()
            .send(
                "POST",
                &format!("{}/deploy/mine", gw.data_url()),
                &[("x-user", "mallory")],
                String::new(),
            )
            .await
    })
    .await
    .unwrap();
    let own_id = own.header("jit-ticket").unwrap().to_string();
    read_until(&mut mallory, &mut m_seen, "event: ticket.opened", 1).await;
    let m_opened = events_named(&m_seen, "ticket.opened");
    assert_eq!(m_opened.len(), 1, "{m_seen}");
    assert_eq!(m_opened[0].1["data"]["id"], own_id.as_str());
    assert!(
        !m_seen.contains(&id),
        "mallory saw another's ticket:\n{m_seen}"
    );

    // Reconnecting with Last-Event-ID replays what came after it.
    let mut again = open_stream(&gw, "alice", Some(opened[0].0)).await;
    read_until(&mut again, &mut none, "event: ticket.decided", 1).await;
    assert!(
        events_named(&none, "ticket.opened")
            .iter()
            .all(|(_, v)| v["data"]["id"] != id.as_str()),
        "{none}"
    );
    assert_eq!(events_named(&none, "ticket.decided")[0].0, decided[0].0);
    let bad = send(
        "GET",
        &gw.admin("/v1/events"),
        &[
            ("authorization", &common::bearer_of("alice")),
            ("last-event-id", "x"),
        ],
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
}
