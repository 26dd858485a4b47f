//! Red team of the notification and event-stream code (`[[notify]]`, the Slack callback
//! `POST /v1/notify/slack/actions`, `GET /v1/events`): the real binary, a webhook receiver,
//! callbacks signed as Slack signs them.
//!
//! Tests named for what must hold; the ones marked **FINDING** in their doc comment failed
//! when written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::notify::{
    config, open_stream, read_for, read_until, slack_callback, slack_sign, sse_events, unix_now,
    MEMORY, SLACK_SECRET,
};
use common::{
    admin_call, bearer_of, send, wait_status, Client, Gateway, HookReceiver, Origin, RedisServer,
    Response,
};

const SOON: Duration = Duration::from_secs(30);

fn slack_channel(url: &str) -> String {
    format!(
        "[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{url}/slack\"\n\
         signing_secret_env = \"SLACK_SIGNING\"\n\
         users = {{ \"U_ALICE\" = \"alice\", \"U_CAROL\" = \"carol\", \"U_MAL\" = \"mallory\" }}\n\
         events = [\"ticket.opened\"]\n"
    )
}

/// `POST <path>` as `user` (group `groups`) with `body` and extra headers; the answer.
async fn request_as(
    gw: &Gateway,
    path: &str,
    user: &str,
    groups: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Response {
    let url = format!("{}{path}", gw.data_url());
    let mut h: Vec<(&str, &str)> = vec![
        ("x-user", user),
        ("x-groups", groups),
        ("content-type", "application/json"),
    ];
    h.extend_from_slice(extra);
    tokio::time::timeout(
        SOON,
        Client::http1().with_timeout(Duration::from_secs(60)).send(
            "POST",
            &url,
            &h,
            body.to_string(),
        ),
    )
    .await
    .expect("held request answered")
}

/// Opens a ticket on `path` as bob (group dev); its id.
async fn open_ticket(gw: &Gateway, path: &str) -> String {
    let r = request_as(gw, path, "bob", "dev", &[], r#"{"image":"web:1.4.2"}"#).await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.header("jit-ticket").expect("jit-ticket").to_string()
}

// === Slack callbacks ===

async fn post_slack_raw(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
    h.extend_from_slice(headers);
    send(
        "POST",
        &gw.admin("/v1/notify/slack/actions"),
        &h,
        body.to_string(),
    )
    .await
}

/// A callback signed now with the tests' secret.
async fn post_slack(gw: &Gateway, body: &str) -> Response {
    let ts = unix_now().to_string();
    let sig = slack_sign(SLACK_SECRET, &ts, body);
    post_slack_raw(
        gw,
        body,
        &[
            ("x-slack-request-timestamp", ts.as_str()),
            ("x-slack-signature", sig.as_str()),
        ],
    )
    .await
}

async fn ticket(gw: &Gateway, id: &str) -> Value {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// **FINDING** (a route's `chat_approval = false` is not enforced on the callback). The
/// README says such a route's chat messages carry no Approve / Deny buttons, which reads as
/// "this route is not decided from chat". But the callback decides any ticket a mapped user
/// may decide, whatever its route says: buttons of a message posted before the route was
/// switched to `chat_approval = false` still work, and so does any Slack interaction carrying
/// the ticket's id. Likewise a route with `notify = []` (its tickets told to no chat) is
/// decided through the Slack channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_callback_cannot_decide_tickets_of_routes_that_keep_chat_out() {
    let origin = Origin::start();
    let slack = HookReceiver::start(0);
    let cfg = config(
        MEMORY,
        "",
        "200ms",
        &slack_channel(&slack.url()),
        "chat_approval = false",
        &origin.url(),
    );
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .start();
    let respond = format!("{}/respond", slack.url());

    // chat_approval = false: the message has no buttons...
    let id = open_ticket(&gw, "/deploy/web").await;
    let msg = slack
        .wait_until("the Slack message", SOON, |h| !h.is_empty())
        .await[0]
        .json();
    assert!(
        !msg["blocks"]
            .to_string()
            .contains("\"action_id\":\"approve\""),
        "{msg}"
    );
    // ... but a signed callback from a mapped approver still approves the ticket.
    let r = post_slack(&gw, &slack_callback("U_ALICE", "approve", &id, &respond)).await;
    let t = ticket(&gw, &id).await;
    assert_eq!(
        t["status"], "PENDING",
        "a route with chat_approval = false was decided from Slack (callback answered {}): {t}",
        r.status
    );

    // notify = []: nothing is told to Slack, yet Slack decides it.
    let quiet = open_ticket(&gw, "/quiet/x").await;
    let r = post_slack(&gw, &slack_callback("U_ALICE", "deny", &quiet, &respond)).await;
    let t = ticket(&gw, &quiet).await;
    assert_eq!(
        t["status"], "PENDING",
        "a route that tells no chat channel was decided through Slack channel `chat` \
         (callback answered {}): {t}",
        r.status
    );
}

/// What held: a mapped Slack user decides only by the decision API's rules, and the
/// signature check has no gaps found: self-approval, a user who is not a listed approver,
/// an expired ticket, a replay of a valid callback, a timestamp more than 5 minutes ahead,
/// a second `X-Slack-Signature` after a bad first one, a channel without
/// `signing_secret_env`, and GET on the callback path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_callbacks_decide_only_by_the_api_rules_with_a_valid_signature() {
    let origin = Origin::start();
    let slack = HookReceiver::start(0);
    let notify = format!(
        "{}\n[[notify]]\nname = \"nosign\"\nkind = \"slack\"\nurl = \"{}/nosign\"\n\
         users = {{ \"U_ALICE\" = \"alice\" }}\nevents = [\"ticket.opened\"]\n",
        slack_channel(&slack.url()),
        slack.url()
    );
    let cfg = config(
        MEMORY,
        "",
        "200ms",
        &notify,
        "ticket_ttl = \"3s\"",
        &origin.url(),
    );
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .start();
    let respond = format!("{}/respond", slack.url());

    // alice asks; alice (an approver) cannot approve her own request from Slack either.
    let r = request_as(&gw, "/deploy/own", "alice", "oncall", &[], "{}").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let own = r.header("jit-ticket").unwrap().to_string();
    let r = post_slack(&gw, &slack_callback("U_ALICE", "approve", &own, &respond)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ticket(&gw, &own).await["status"], "PENDING");

    let id = open_ticket(&gw, "/deploy/web").await;
    // mallory is mapped but not an approver: refused.
    let r = post_slack(&gw, &slack_callback("U_MAL", "approve", &id, &respond)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ticket(&gw, &id).await["status"], "PENDING");

    // Signature gaps.
    let body = slack_callback("U_ALICE", "approve", &id, &respond);
    let future = (unix_now() + 400).to_string();
    let r = post_slack_raw(
        &gw,
        &body,
        &[
            ("x-slack-request-timestamp", future.as_str()),
            (
                "x-slack-signature",
                &slack_sign(SLACK_SECRET, &future, &body),
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let now = unix_now().to_string();
    let good = slack_sign(SLACK_SECRET, &now, &body);
    let raw = format!(
        "POST /v1/notify/slack/actions HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Slack-Request-Timestamp: {now}\r\nX-Slack-Signature: v0=00\r\nX-Slack-Signature: {good}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = common::raw_request(gw.admin_addr(), raw.as_bytes()).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let r = send("GET", &gw.admin("/v1/notify/slack/actions"), &[], "").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(ticket(&gw, &id).await["status"], "PENDING");

    // carol approves; a replay of her callback is refused by the ticket's state.
    let carol = slack_callback("U_CAROL", "approve", &id, &respond);
    let ts = unix_now().to_string();
    let sig = slack_sign(SLACK_SECRET, &ts, &carol);
    let headers = [
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", sig.as_str()),
    ];
    let r = post_slack_raw(&gw, &carol, &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = wait_status(&gw, &id, "APPROVED", SOON).await;
    assert_eq!(t["approvals"].as_array().unwrap().len(), 1, "{t}");
    let r = post_slack_raw(&gw, &carol, &headers).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = ticket(&gw, &id).await;
    assert_eq!(t["approvals"].as_array().unwrap().len(), 1, "{t}");

    // Expired: refused.
    let late = open_ticket(&gw, "/deploy/late").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let r = post_slack(&gw, &slack_callback("U_CAROL", "approve", &late, &respond)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = ticket(&gw, &late).await;
    assert!(t["approvals"].as_array().unwrap().is_empty(), "{t}");
    assert_ne!(t["status"], "APPROVED");
}

// === the admin plane's connections ===

/// Holds one admin connection by sending Slack callbacks whose bodies trickle in, one after
/// another, until `stop`: no credential, no signature.
async fn trickle_slack(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let body = b"payload=";
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let head = format!(
            "POST /v1/notify/slack/actions HTTP/1.1\r\nHost: admin\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for b in body {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
        }
        // Read the whole answer (head and Content-Length body).
        let mut got = Vec::new();
        loop {
            let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await
            else {
                return;
            };
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
    }
}

/// **FINDING** (anyone can hold every admin connection through the Slack callback). The
/// admin plane serves at most 64 connections, and closes one that has served no
/// authenticated call for `header_read_timeout` *unless a request is in flight*. The Slack
/// callback reads its body (up to 10 s) before it checks anything, so an unauthenticated
/// client that sends callbacks whose bodies trickle in, back to back, always has one in
/// flight: 64 such connections (a byte every 400 ms each) take every admin slot, and an
/// approver's call waits in the listen backlog until it times out. Held requests then
/// expire undecided.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_unsigned_slack_callbacks_do_not_lock_approvers_out() {
    let origin = Origin::start();
    let slack = HookReceiver::start(0);
    let cfg = config(
        MEMORY,
        "header_read_timeout = \"1s\"",
        "200ms",
        &slack_channel(&slack.url()),
        "",
        &origin.url(),
    );
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let squatters: Vec<_> = (0..64)
        .map(|_| tokio::spawn(trickle_slack(gw.admin_addr(), stop.clone())))
        .collect();
    // Well past header_read_timeout: every connection has been checked for idleness.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list = Client::http1()
        .with_timeout(Duration::from_secs(5))
        .try_send(
            "GET",
            &gw.admin("/v1/tickets?status=PENDING"),
            &[("authorization", bearer_of("alice").as_str())],
            "",
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    for s in squatters {
        s.abort();
    }
    assert!(
        list.as_ref().is_ok_and(|r| r.status == 200),
        "an approver could not reach the decision API while 64 unauthenticated connections \
         trickled Slack callback bodies: {list:?}"
    );
}

// === the event stream ===

/// What held: a stream shows only what its caller may see, also when it replays history
/// from `Last-Event-ID: 0` (other requesters' tickets, anonymous ones, routes the caller
/// does not approve); client-controlled text (body preview, reason) cannot add SSE lines;
/// chat messages carry it as plain text (Slack) or escaped Markdown (Teams).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_and_messages_carry_only_visible_and_inert_data() {
    let origin = Origin::start();
    let hooks = HookReceiver::start(0);
    let notify = format!(
        "{}\n[[notify]]\nname = \"team\"\nkind = \"teams\"\nurl = \"{}/teams\"\nevents = [\"ticket.opened\"]\n",
        slack_channel(&hooks.url()),
        hooks.url()
    );
    let cfg = config(MEMORY, "", "200ms", &notify, "", &origin.url());
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .start();

    let mut mal = open_stream(&gw, "mallory", None).await;
    let mut m_seen = String::new();
    read_until(&mut mal, &mut m_seen, ": jitgate events", 1).await;

    // Real line breaks: were they copied into a `data:` line, they would start new fields.
    let evil_body = "a\n\nid: 999999\nevent: ticket.decided\ndata: {}\n\r\r\n\n";
    let reason =
        "<!channel> <https://evil.example|Approve here> *now* [click](https://evil.example)";
    let r = request_as(
        &gw,
        "/deploy/a*b*_c_~d~?next=https://evil.example/x|y",
        "bob",
        "dev",
        &[("jit-reason", reason)],
        evil_body,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("jit-ticket").unwrap().to_string();
    // An anonymous ticket (no user at all) on the same route.
    let anon = tokio::time::timeout(
        SOON,
        Client::http1().with_timeout(Duration::from_secs(60)).send(
            "POST",
            &format!("{}/deploy/anon", gw.data_url()),
            &[],
            String::new(),
        ),
    )
    .await
    .unwrap();

    let mut alice = open_stream(&gw, "alice", Some(0)).await;
    let mut a_seen = String::new();
    read_until(&mut alice, &mut a_seen, "event: ticket.opened", 1).await;
    let events = sse_events(&a_seen);
    assert!(
        events.iter().all(|(_, name, _)| name == "ticket.opened"),
        "{a_seen}"
    );
    assert_eq!(events[0].2["data"]["id"], id.as_str());
    assert!(
        events[0].2["data"]["request"]["bodyPreview"]
            .as_str()
            .is_some_and(|p| p.contains("\nid: 999999\n")),
        "{a_seen}"
    );
    assert!(events.iter().all(|(n, _, _)| *n != 999_999), "{a_seen}");
    assert_eq!(
        a_seen.matches("\nevent: ").count(),
        events.len(),
        "{a_seen}"
    );

    // mallory (no group, asked nothing) saw nothing, live or replayed from 0.
    let mut again = open_stream(&gw, "mallory", Some(0)).await;
    let mut again_seen = String::new();
    read_for(&mut again, &mut again_seen, Duration::from_secs(1)).await;
    read_for(&mut mal, &mut m_seen, Duration::from_millis(200)).await;
    for seen in [&m_seen, &again_seen] {
        assert!(sse_events(seen).is_empty(), "mallory saw: {seen}");
        assert!(!seen.contains(&id), "{seen}");
        if let Some(anon_id) = anon.header("jit-ticket") {
            assert!(!seen.contains(anon_id), "{seen}");
        }
    }

    // Slack: every client-controlled string sits in a plain_text element.
    let got = hooks
        .wait_until("Slack and Teams", SOON, |h| {
            h.iter().any(|h| h.path == "/slack") && h.iter().any(|h| h.path == "/teams")
        })
        .await;
    let slack = got.iter().find(|h| h.path == "/slack").unwrap().json();
    fn texts(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                if m.get("text").is_some_and(Value::is_string) {
                    out.push(v.clone());
                }
                m.values().for_each(|x| texts(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| texts(x, out)),
            _ => {}
        }
    }
    let mut els = Vec::new();
    texts(&slack["blocks"], &mut els);
    for el in &els {
        assert_eq!(el["type"], "plain_text", "{el}");
    }
    assert!(!slack["text"].as_str().unwrap().contains('<'), "{slack}");
    let teams = got.iter().find(|h| h.path == "/teams").unwrap().json();
    let card = teams["attachments"][0]["content"].to_string();
    assert!(
        !card.contains("<!channel>") && !card.contains("[click]"),
        "{card}"
    );
}

/// **FINDING** (a stream outlives its credential). A stream authenticates once; a reload
/// that removes the caller's API token (or takes the caller off a route's approvers, or a
/// JWT that expires) does not end it: the removed caller keeps receiving every event,
/// tickets with their body previews included, until they hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_stream_ends_when_its_token_is_withdrawn() {
    let origin = Origin::start();
    let cfg = config(MEMORY, "", "200ms", "", "", &origin.url());
    let gw = Gateway::start(&cfg);
    let mut alice = open_stream(&gw, "alice", None).await;
    let mut seen = String::new();
    read_until(&mut alice, &mut seen, ": jitgate events", 1).await;

    // alice's token is withdrawn.
    let alice_line = cfg
        .lines()
        .find(|l| l.contains("name = \"alice-token\""))
        .unwrap()
        .to_string();
    gw.rewrite_config(&cfg.replace(&format!("{alice_line}\n"), ""));
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin_call(&gw, "alice", "GET", "/v1/tickets", "").await;
    assert_eq!(r.status, 401, "{}", r.text());

    let id = open_ticket(&gw, "/deploy/after").await;
    let closed = read_for(&mut alice, &mut seen, Duration::from_secs(3)).await;
    assert!(
        !seen.contains(&id),
        "a stream opened with a since-withdrawn token still streams tickets (closed: {closed}):\n{seen}"
    );
}

/// **FINDING** (a reconnect that missed more than 1000 audit events loses events). A stream
/// resumed with `Last-Event-ID` replays at most 1000 audit events after it (of any kind,
/// most of them ones the caller does not see), then goes live from the newest one replayed:
/// visible events between the end of that page and the first live event are never sent,
/// and the ids the client then holds are past them, so no later reconnect gets them either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumed_stream_sends_every_visible_event_after_last_event_id() {
    let origin = Origin::start();
    // A shadow route: every GET /ping/x records a `shadow.matched` event nobody is shown.
    let shadow = "[[routes]]\nname = \"watch\"\nmethods = [\"GET\"]\npath = \"/ping/**\"\naction = \"deny\"\nenforce = false\n";
    let cfg = config(MEMORY, "", "200ms", shadow, "", &origin.url());
    let gw = Gateway::start(&cfg);
    let mut alice = open_stream(&gw, "alice", None).await;
    let mut seen = String::new();
    // Subscribed before anything happens: the stream has begun.
    read_until(&mut alice, &mut seen, ": jitgate events", 1).await;
    let first = open_ticket(&gw, "/deploy/one").await;
    read_until(&mut alice, &mut seen, "event: ticket.opened", 1).await;
    let last = sse_events(&seen)[0].0;
    drop(alice);

    // While alice is away: 1100 events she does not see, then a ticket she does.
    let client = Client::http1();
    let ping = format!("{}/ping/x", gw.data_url());
    for _ in 0..1100 {
        client.send("GET", &ping, &[], String::new()).await;
    }
    let missed = open_ticket(&gw, "/deploy/two").await;

    // Resume as an EventSource does: when the stream closes, reconnect with the last id it
    // sent.
    let mut last_id = last;
    let mut resumed = String::new();
    let mut live = false;
    for _ in 0..5 {
        let mut s = open_stream(&gw, "alice", Some(last_id)).await;
        let mut part = String::new();
        let closed = read_for(&mut s, &mut part, Duration::from_secs(2)).await;
        if let Some(id) = part
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .next_back()
        {
            last_id = id;
        }
        resumed.push_str(&part);
        if !closed {
            let third = open_ticket(&gw, "/deploy/three").await;
            read_until(&mut s, &mut resumed, &third, 1).await;
            live = true;
            break;
        }
    }
    assert!(live, "never got a live stream:\n{resumed}");
    assert!(!resumed.contains(&first), "{resumed}");
    assert!(
        resumed.contains(&missed),
        "the ticket opened while alice was away (after 1100 other events) was never sent on \
         her resumed stream:\n{resumed}"
    );
}

/// **FINDING** (event streams go silent after the Redis audit trail goes back). When Redis
/// loses data (a restart without persistence, a failover to a replica that lagged, a
/// FLUSHALL) the trail starts again from a lower number. The stream hub keeps reading after
/// the highest number it saw, and each stream drops events numbered at or below the last
/// it sent: no stream shows anything until the new trail passes the old height (and then
/// skips events it numbers again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_streams_keep_flowing_after_the_redis_trail_restarts() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url());
    let cfg = config(&store, "", "200ms", "", "", &origin.url());
    let gw = Gateway::start(&cfg);
    let deadline = tokio::time::Instant::now() + SOON;
    while send("GET", &gw.admin("/readyz"), &[], "").await.json()["store"]["status"] != "ok" {
        assert!(tokio::time::Instant::now() < deadline, "store not ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut alice = open_stream(&gw, "alice", None).await;
    let mut seen = String::new();
    // Subscribed before anything happens: the stream has begun.
    read_until(&mut alice, &mut seen, ": jitgate events", 1).await;
    let before = open_ticket(&gw, "/deploy/before").await;
    read_until(&mut alice, &mut seen, &before, 1).await;
    for _ in 0..30 {
        let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(redis.cli(&["FLUSHALL"]).contains("OK"));
    let after = open_ticket(&gw, "/deploy/after").await;
    // Either the stream shows the new ticket, or it ends (so the client reconnects) and a new
    // stream works; silence is the failure.
    let deadline = tokio::time::Instant::now() + SOON;
    let closed = loop {
        if seen.contains(&after) {
            break false;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "after the Redis trail restarted, alice's stream stayed silent about a new ticket:\n{seen}"
        );
        if read_for(&mut alice, &mut seen, left.min(Duration::from_secs(1))).await {
            break true;
        }
    };
    if closed {
        let mut again = open_stream(&gw, "alice", None).await;
        let mut fresh = String::new();
        // Subscribed before anything happens: the stream has begun.
        read_until(&mut again, &mut fresh, ": jitgate events", 1).await;
        let later = open_ticket(&gw, "/deploy/later").await;
        read_until(&mut again, &mut fresh, &later, 1).await;
    }
}

/// What held: an Approve from Slack answers within Slack's 3 s even when `response_url`
/// accepts the connection and never answers (the update is posted in the background).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_callback_answers_promptly_whatever_response_url_does() {
    let origin = Origin::start();
    let slack = HookReceiver::start(0);
    let cfg = config(
        MEMORY,
        "",
        "200ms",
        &slack_channel(&slack.url()),
        "",
        &origin.url(),
    );
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .start();
    // A response_url that accepts and never answers.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let respond = format!("http://{}/hang", sink.local_addr().unwrap());
    let id = open_ticket(&gw, "/deploy/web").await;
    let r = post_slack(&gw, &slack_callback("U_ALICE", "approve", &id, &respond)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The update reached response_url and is still waiting for an answer that never comes:
    // the callback was answered without waiting for it (Slack wants its answer in 3 s; the
    // update's own limit is 10 s, after which the gateway would have closed this connection).
    let (mut conn, _) = tokio::time::timeout(SOON, sink.accept())
        .await
        .unwrap()
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(SOON, conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "response_url connection closed before its request arrived"
        );
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"POST /hang "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Still open: had the callback waited for this answer, the gateway would have given up on
    // it (and closed it) before answering Slack.
    let still_open = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
    assert!(
        still_open.is_err() || still_open.is_ok_and(|r| r.is_ok_and(|n| n > 0)),
        "the gateway had already closed response_url when it answered the callback"
    );
    wait_status(&gw, &id, "APPROVED", SOON).await;
}

// === the outbox ===

/// **FINDING** (one unresponsive channel delays every channel). The delivery loop claims up
/// to 32 due deliveries, posts them all, and claims again only once every one of them has
/// answered or timed out. A channel that accepts connections and never answers (a hung
/// receiver) makes each round last its `timeout`: during a burst, the approvers' Slack
/// messages queue behind it, 16 or so per round, minutes late for a few hundred tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_webhook_does_not_hold_back_other_channels() {
    let origin = Origin::start();
    let slack = HookReceiver::start(0);
    // Accepts (the kernel does) and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let notify = format!(
        "{}\n[[notify]]\nname = \"audit-sink\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\n\
         secret_env = \"HOOK_SECRET\"\ntimeout = \"60s\"\nevents = [\"ticket.opened\"]\n",
        slack_channel(&slack.url()),
        hung.local_addr().unwrap()
    );
    let cfg = config(MEMORY, "", "200ms", &notify, "", &origin.url());
    let gw = Gateway::builder(&cfg)
        .env("SLACK_SIGNING", SLACK_SECRET)
        .env("HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .start();
    let gw = Arc::new(gw);
    let opened: Vec<_> = (0..45)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { open_ticket(&gw, &format!("/deploy/app{i}")).await })
        })
        .collect();
    for o in opened {
        o.await.unwrap();
    }
    // No attempt on the hung channel can end within its 60 s timeout, so Slack being told
    // about every ticket before then shows that its deliveries were not waiting behind them.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let n = slack.hooks().iter().filter(|h| h.path == "/slack").count();
        if n >= 45 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "while the hung webhook channel's attempts were still open, Slack had been told \
             about {n} of 45 tickets: its deliveries wait behind the hung channel's"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
