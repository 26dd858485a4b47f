//! Red team on the data plane's event loops (4e085ca): one current-thread runtime per core,
//! each accepting on a dup of the data listener, one shared `max_connections` budget, an
//! idle-connection stack per loop in `H1Pool`, and a shutdown that stops every loop's accept,
//! answers held requests 503, drains each loop, flushes the audit, then ends the loops.
//!
//! The machine these run on has 2 cores, so 2 loops: which loop accepts a connection is the
//! kernel's choice, so every test that wants both loops uses several connections.
//!
//! Every test runs the real `jitgate` binary (but the last, which drives the library's
//! `Gateway::run` in-process to drop it) against a recording origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::metrics::scrape_until;
use common::redteam::{
    closed_by, config, pending_id, problem, raw_open, spawn_send, wait_held, ALLOW_REST, BOB, WAIT,
};
use common::*;

const AUDIT_FILE: &str = "audit.jsonl";

/// `POST /deploy/**` needs approval by group oncall; everything else is allowed.
const ROUTES: &str = r#"[[routes]]
name = "prod-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"
"#;

/// `[approvals]` holding for a minute, the `[audit] file`, and `store` (empty: memory).
fn sections(store: &str) -> String {
    format!("{store}\n[approvals]\nhold_timeout = \"60s\"\n\n[audit]\nfile = \"{AUDIT_FILE}\"\n")
}

/// The events of the gateway's `[audit] file`, as written so far.
fn audit_file(gw: &Gateway) -> Vec<Value> {
    let text = std::fs::read_to_string(gw.dir().join(AUDIT_FILE)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// The kinds the `[audit] file` records for ticket `id`, in order.
fn file_kinds(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["ticket"] == id)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `POST {path}` as bob over `client`, in the background.
fn deploy_over(client: Client, url: String, body: String) -> tokio::task::JoinHandle<Response> {
    tokio::spawn(async move {
        client
            .with_timeout(Duration::from_secs(60))
            .send(
                "POST",
                &url,
                &[BOB[0], BOB[1], ("content-type", "application/json")],
                body,
            )
            .await
    })
}

/// The current value of `jitgate_held_requests` is `n`.
async fn wait_held_requests(gw: &Gateway, n: f64) {
    scrape_until(gw, &format!("jitgate_held_requests == {n}"), |s| {
        s.value("jitgate_held_requests", &[]) == n
    })
    .await;
}

/// One HTTP/1.1 connection of its own to `addr`, driven in the background.
async fn connection(
    addr: std::net::SocketAddr,
) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

/// `GET path` on one connection; status and body.
async fn get_on(tx: &mut SendRequest<Full<Bytes>>, path: &str) -> Result<(u16, Bytes), String> {
    tx.ready().await.map_err(|e| e.to_string())?;
    let req = http::Request::get(path)
        .header("host", "loops.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

// === shutdown ===

/// SPEC 11.6 and `shutdown_grace` ("how long SIGTERM waits for in-flight requests"): a
/// connection that is still busy when the grace runs out is closed and the process exits.
/// Here the busy connection is a client that asked for a large response and never reads it.
///
/// FAILS on main (719079a), passes on 4e085ca^ and with the fix in `server/workers.rs`
/// (1d32642): each event loop waits for its connections to drain with no way out
/// (`Loop::run` awaits `graceful.shutdown()` before it ever looks for `Phase::Exit`);
/// `Workers::exit` gives up joining after 2 s but leaves its `spawn_blocking` join running,
/// and dropping the main runtime at the end of `serve` waits for that join for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_after_shutdown_grace_when_a_client_never_reads_its_response() {
    let origin = Origin::start();
    let cfg = config(&origin.url(), "shutdown_grace = \"1s\"", "", "", ALLOW_REST);
    let mut gw = Gateway::start(&cfg);

    // Far more than every socket buffer on the way: the gateway's write blocks for good.
    let mut stuck = raw_open(
        gw.data_addr(),
        b"GET /large/4294967296 HTTP/1.1\r\nHost: loops.example\r\n\r\n",
    )
    .await;
    let mut head = [0u8; 256];
    let n = tokio::time::timeout(WAIT, stuck.read(&mut head))
        .await
        .expect("no response head")
        .expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );

    gw.signal(Sig::Term);
    assert!(
        gw.wait_for_stderr("shutting down", WAIT).await,
        "{}",
        gw.stderr_text()
    );
    let status = gw.wait_exit(Duration::from_secs(20));
    let stderr = gw.stderr_text();
    drop(stuck);
    let status = status.unwrap_or_else(|| {
        panic!("still running 20 s after SIGTERM with shutdown_grace = 1s\n{stderr}")
    });
    assert!(status.success(), "exit {status:?}\n{stderr}");
}

/// The same with a response the client does read but the upstream keeps streaming (a long
/// poll, server-sent events): it may not hold the process past `shutdown_grace` either.
///
/// FAILS on main (719079a), passes on 4e085ca^ and with 1d32642 (same cause as above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_after_shutdown_grace_while_an_upstream_keeps_streaming() {
    let origin = Origin::start();
    let cfg = config(
        &origin.url(),
        "shutdown_grace = \"1s\"",
        "",
        "idle_timeout = \"10m\"",
        ALLOW_REST,
    );
    let mut gw = Gateway::start(&cfg);

    // 200, `partial-` at once, the rest in 10 minutes.
    let mut streaming = raw_open(
        gw.data_addr(),
        b"GET /slow-body/600000 HTTP/1.1\r\nHost: loops.example\r\n\r\n",
    )
    .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("partial-") {
        let n = tokio::time::timeout(WAIT, streaming.read(&mut buf))
            .await
            .expect("no partial body")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = streaming.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });

    gw.signal(Sig::Term);
    let status = gw.wait_exit(Duration::from_secs(20));
    let stderr = gw.stderr_text();
    reader.abort();
    let status = status.unwrap_or_else(|| {
        panic!("still running 20 s after SIGTERM with shutdown_grace = 1s\n{stderr}")
    });
    assert!(status.success(), "exit {status:?}\n{stderr}");
}

/// SPEC 11.6: at SIGTERM every held request, whichever loop and protocol holds it, answers
/// 503 with its own ticket; none is forwarded, none is cancelled, the audit file has every
/// ticket's creation and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_held_requests_on_every_loop_503_with_their_own_ticket() {
    let origin = Origin::start();
    let mut gw = Gateway::start(&config(&origin.url(), "", &sections(""), "", ROUTES));

    let mut held = Vec::new();
    for i in 0..8 {
        // A client (and so a connection) of its own each: spread over the loops.
        let client = if i % 2 == 0 {
            Client::http1()
        } else {
            Client::h2c()
        };
        held.push((
            format!("/deploy/w{i}"),
            deploy_over(
                client,
                gw.url(&format!("/deploy/w{i}")),
                format!("{{\"n\":{i}}}"),
            ),
        ));
    }
    wait_held(&gw, 8).await;
    wait_held_requests(&gw, 8.0).await;

    gw.signal(Sig::Term);
    let mut tickets = BTreeSet::new();
    for (path, h) in held {
        let r = tokio::time::timeout(WAIT, h)
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within {WAIT:?} of SIGTERM"))
            .expect("task");
        let p = problem(&r, 503, &path);
        let id = r.header("jit-ticket").expect("Jit-Ticket").to_string();
        assert_eq!(p["ticket"], id.as_str(), "{path}: {p}");
        assert!(tickets.insert(id), "{path}: a ticket answered twice");
    }
    let status = gw.wait_exit(Duration::from_secs(20)).expect("did not exit");
    assert!(status.success(), "{status:?}\n{}", gw.stderr_text());
    assert_eq!(origin.count(), 0, "forwarded without approval");

    let events = audit_file(&gw);
    for id in &tickets {
        assert_eq!(
            file_kinds(&events, id),
            ["ticket.created"],
            "{id} in the audit file"
        );
    }
}

/// SPEC 6 and 10: a hold whose client went away is cancelled, and its `ticket.cancelled`
/// reaches the `[audit] file`, even when the cancellation (a task on the loop that held the
/// request) is still waiting for the store when SIGTERM comes. The store's answer to the
/// cancellation is delayed 2 s by a relay; the loops are otherwise idle, so they drain at
/// once, and only `close_audit` waiting for the detached task keeps the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_in_flight_at_sigterm_reaches_the_audit_file() {
    let redis = RedisServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let origin = Origin::start();
    let store = format!(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
        relay.port
    );
    let mut gw = Gateway::start(&config(&origin.url(), "", &sections(&store), "", ROUTES));
    wait_store_ok(&gw).await;

    let held = spawn_send(
        "POST",
        gw.url("/deploy/gone"),
        &[BOB[0], BOB[1]],
        "{\"gone\":true}",
    );
    let id = pending_id(&gw, "prod-deploy").await;
    wait_held_requests(&gw, 1.0).await;
    relay.delay_answer_to(b"ticket.cancelled", Duration::from_secs(2));
    held.abort();
    let _ = held.await;
    // The hold is gone: its cancellation task has been spawned (and counted).
    wait_held_requests(&gw, 0.0).await;
    gw.signal(Sig::Term);

    let status = gw.wait_exit(Duration::from_secs(30)).expect("did not exit");
    assert!(status.success(), "{status:?}\n{}", gw.stderr_text());
    assert_eq!(
        relay.sprung(),
        1,
        "the cancellation's answer was not held back: the test proved nothing"
    );
    let events = audit_file(&gw);
    assert_eq!(
        file_kinds(&events, &id),
        ["ticket.created", "ticket.cancelled"],
        "{}",
        gw.stderr_text()
    );
    assert_eq!(origin.count(), 0);
}

/// An open WebSocket (its splice is a task on a loop that hyper's graceful shutdown does not
/// track) does not keep SIGTERM from ending the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_does_not_keep_sigterm_from_ending_the_process() {
    let origin = Origin::start();
    let mut gw = Gateway::start(&config(
        &origin.url(),
        "shutdown_grace = \"5s\"",
        "",
        "",
        ALLOW_REST,
    ));
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut ws = WsClient::connect(gw.data_addr(), "/ws", &[]).await;
        ws.send(&ws::Frame::text("hello")).await;
        let echoed = ws.recv().await.expect("echo");
        assert_eq!(echoed.payload, b"hello");
        sockets.push(ws);
    }
    gw.signal(Sig::Term);
    let status = gw.wait_exit(Duration::from_secs(20));
    let stderr = gw.stderr_text();
    drop(sockets);
    let status = status.unwrap_or_else(|| panic!("still running after SIGTERM\n{stderr}"));
    assert!(status.success(), "{status:?}\n{stderr}");
}

// === holds, releases and the pool across loops ===

/// SPEC 6: coalesced holders of one ticket, on connections spread over the loops; the ticket
/// is cancelled only when the last one goes. Three of four go: the ticket stays pending, an
/// approval releases the fourth, once. Both of another ticket's two go: it is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_holders_on_several_loops_cancel_only_when_the_last_goes() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", &sections(""), "", ROUTES));
    let body = r#"{"image":"web:7"}"#;

    let holders: Vec<_> = (0..4)
        .map(|_| deploy_over(Client::http1(), gw.url("/deploy/same"), body.to_string()))
        .collect();
    wait_held_requests(&gw, 4.0).await;
    let id = pending_id(&gw, "prod-deploy").await;
    let pending = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(
        pending.json()["tickets"].as_array().unwrap().len(),
        1,
        "identical requests coalesce: {}",
        pending.text()
    );
    let mut holders = holders.into_iter();
    for h in holders.by_ref().take(3) {
        h.abort();
        let _ = h.await;
    }
    wait_held_requests(&gw, 1.0).await;
    let r = approve(&gw, "alice", &id, "one left").await;
    assert_eq!(
        r.status,
        200,
        "the ticket must still be pending: {}",
        r.text()
    );
    let last = holders.next().unwrap();
    let released = tokio::time::timeout(WAIT, last)
        .await
        .expect("released")
        .unwrap();
    assert_eq!(released.status, 200, "{}", released.text());
    origin.wait_for(1, WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 1);

    let both: Vec<_> = (0..2)
        .map(|_| deploy_over(Client::http1(), gw.url("/deploy/other"), body.to_string()))
        .collect();
    wait_held_requests(&gw, 2.0).await;
    let other = pending_id(&gw, "prod-deploy").await;
    for h in both {
        h.abort();
        let _ = h.await;
    }
    wait_status(&gw, &other, "CANCELLED", WAIT).await;
    assert_eq!(
        audit_kinds(&gw, &other).await,
        ["ticket.created", "ticket.cancelled"]
    );
    assert_eq!(origin.count(), 1);
}

/// SPEC 11.2 and 11.7 across loops: approvals decided on the main runtime wake requests held
/// on both loops; each is forwarded exactly once and answered with its own upstream response,
/// through a pool of one idle connection per loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_release_each_held_request_once_with_its_own_response() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "",
        &sections(""),
        "pool_max_idle = 1",
        ROUTES,
    ));
    const N: usize = 10;
    let held: Vec<_> = (0..N)
        .map(|i| {
            let client = if i % 3 == 0 {
                Client::h2c()
            } else {
                Client::http1()
            };
            deploy_over(
                client,
                gw.url(&format!("/deploy/r{i}")),
                format!("{{\"r\":{i}}}"),
            )
        })
        .collect();
    wait_held_requests(&gw, N as f64).await;
    let pending = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    let ids: Vec<String> = pending.json()["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), N, "{}", pending.text());
    let approvals: Vec<_> = ids
        .iter()
        .map(|id| {
            let (admin, id) = (gw.admin(""), id.clone());
            tokio::spawn(async move {
                let body = serde_json::json!({ "comment": "go" }).to_string();
                send(
                    "POST",
                    &format!("{admin}/v1/tickets/{id}/approve"),
                    &[
                        ("authorization", bearer_of("alice").as_str()),
                        ("content-type", "application/json"),
                    ],
                    body,
                )
                .await
            })
        })
        .collect();
    for a in approvals {
        let r = a.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for (i, h) in held.into_iter().enumerate() {
        let r = tokio::time::timeout(WAIT, h)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(r.status, 200, "r{i}: {}", r.text());
        assert_eq!(
            r.json()["pathAndQuery"],
            format!("/deploy/r{i}"),
            "r{i} was answered with another request's response"
        );
    }
    origin.wait_for(N, WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in origin.requests() {
        assert!(r.header("jit-approval").is_some(), "{r:#?}");
        *seen.entry(r.path().to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), N, "{seen:?}");
    assert!(
        seen.values().all(|n| *n == 1),
        "forwarded more than once: {seen:?}"
    );
    for id in &ids {
        wait_status(&gw, id, "EXECUTED", WAIT).await;
    }
}

/// One client's request never gets another client's response, and never rides a pooled
/// upstream connection another client's exchange left unfinished: clients on both loops mix
/// ordinary requests with half-read responses, bodies the upstream stalls past
/// `idle_timeout`, WebSocket upgrades, errors and HEADs, over a pool of `pool_max_idle`.
async fn pool_keeps_clients_apart(pool_max_idle: usize) {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "",
        "",
        &format!("pool_max_idle = {pool_max_idle}\nidle_timeout = \"300ms\""),
        ALLOW_REST,
    ));
    let addr = gw.data_addr();
    let base = gw.data_url().to_string();
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::http1().with_timeout(Duration::from_secs(20));
            let mut wrong = Vec::new();
            for i in 0..18usize {
                match (t + i) % 6 {
                    0 => {
                        let path = format!("/who/{t}/{i}");
                        let r = client
                            .try_send("GET", &format!("{base}{path}"), &[], "")
                            .await;
                        match r {
                            Ok(r) if r.status == 200 && r.json()["pathAndQuery"] == path => {}
                            other => wrong.push(format!("GET {path}: {other:?}")),
                        }
                    }
                    1 => {
                        let payload = format!("echo-{t}-{i}-").repeat(200);
                        let r = client
                            .try_send("POST", &format!("{base}/echo"), &[], payload.clone())
                            .await;
                        match r {
                            Ok(r) if r.status == 200 && r.body == payload.as_bytes() => {}
                            other => wrong.push(format!(
                                "POST /echo {t}/{i}: {:?}",
                                other.map(|r| (r.status, r.body.len()))
                            )),
                        }
                    }
                    2 => {
                        // Half-read: a few bytes of a large body, then hang up.
                        let mut s = raw_open(
                            addr,
                            b"GET /large/8000000 HTTP/1.1\r\nHost: loops.example\r\n\r\n",
                        )
                        .await;
                        let mut buf = [0u8; 4096];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                        drop(s);
                    }
                    3 => {
                        // The upstream sends `partial-` and then stalls past idle_timeout.
                        let _ = client
                            .try_send("GET", &format!("{base}/slow-body/2000"), &[], "")
                            .await;
                    }
                    4 => {
                        let mut ws = WsClient::connect(addr, "/ws", &[]).await;
                        let text = format!("ws-{t}-{i}");
                        ws.send(&ws::Frame::text(&text)).await;
                        match ws.recv().await {
                            Some(f) if f.payload == text.as_bytes() => {}
                            other => wrong.push(format!("ws {text}: {other:?}")),
                        }
                        drop(ws);
                    }
                    _ => {
                        let r = client
                            .try_send("GET", &format!("{base}/status/500"), &[], "")
                            .await;
                        if !matches!(&r, Ok(r) if r.status == 500) {
                            wrong.push(format!("/status/500 {t}/{i}: {r:?}"));
                        }
                        let r = client
                            .try_send("HEAD", &format!("{base}/large/1000"), &[], "")
                            .await;
                        if !matches!(&r, Ok(r) if r.status == 200 && r.body.is_empty()) {
                            wrong.push(format!("HEAD {t}/{i}: {r:?}"));
                        }
                        let path = format!("/after-head/{t}/{i}");
                        let r = client
                            .try_send("GET", &format!("{base}{path}"), &[], "")
                            .await;
                        match r {
                            Ok(r) if r.status == 200 && r.json()["pathAndQuery"] == path => {}
                            other => wrong.push(format!("GET {path}: {other:?}")),
                        }
                    }
                }
            }
            wrong
        }));
    }
    let mut wrong = Vec::new();
    for t in tasks {
        wrong.extend(t.await.unwrap());
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Every ordinary request reached the origin once, as itself.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in origin.requests() {
        if r.path().starts_with("/who/") || r.path().starts_with("/after-head/") {
            *seen.entry(r.path().to_string()).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_of_one_idle_connection_per_loop_keeps_clients_apart() {
    pool_keeps_clients_apart(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_of_no_idle_connection_keeps_clients_apart() {
    pool_keeps_clients_apart(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_pool_keeps_clients_apart() {
    pool_keeps_clients_apart(64).await;
}

// === connections ===

/// `max_connections` is one budget for every loop: with 2, a third connection is not served
/// (it waits in the backlog) until one of the first two closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_connections_is_one_budget_shared_by_every_loop() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "max_connections = 2\nheader_read_timeout = \"60s\"",
        "",
        "",
        ALLOW_REST,
    ));
    let addr = gw.data_addr();
    let (mut a, a_task) = connection(addr).await;
    let (mut b, _b_task) = connection(addr).await;
    assert_eq!(get_on(&mut a, "/a").await.unwrap().0, 200);
    assert_eq!(get_on(&mut b, "/b").await.unwrap().0, 200);

    let (mut c, _c_task) = connection(addr).await;
    let third = tokio::spawn(async move { get_on(&mut c, "/c").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served with max_connections = 2: {:?}",
        third.await
    );
    assert_eq!(origin.count(), 2);

    // One of the two goes: the third is accepted and served.
    drop(a);
    a_task.abort();
    let (status, _) = tokio::time::timeout(WAIT, third)
        .await
        .expect("the third connection was never served")
        .unwrap()
        .expect("third request");
    assert_eq!(status, 200);
    assert_eq!(get_on(&mut b, "/b2").await.unwrap().0, 200);
}

/// Connections that trickle a request head (slowloris) tie up no loop: requests on other
/// connections are served meanwhile, and the trickling ones are closed at
/// `header_read_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_connections_stall_no_loop_and_are_closed_at_header_read_timeout() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "header_read_timeout = \"2s\"",
        "",
        "",
        ALLOW_REST,
    ));
    let addr = gw.data_addr();
    let mut slow = Vec::new();
    for _ in 0..16 {
        slow.push(raw_open(addr, b"GET /slow HTTP/1.1\r\nHost: loops.example\r\n").await);
    }
    let trickle = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut open = slow;
        let mut closed = 0usize;
        while !open.is_empty() && tokio::time::Instant::now() < deadline {
            let mut still = Vec::new();
            for mut s in open {
                if s.write_all(b"X-Slow: 1\r\n").await.is_ok()
                    && !closed_by(
                        &mut s,
                        tokio::time::Instant::now() + Duration::from_millis(5),
                    )
                    .await
                {
                    still.push(s);
                } else {
                    closed += 1;
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (closed, open.len())
    });
    for i in 0..24 {
        let r = Client::http1()
            .with_timeout(WAIT)
            .send("GET", &gw.url(&format!("/fast/{i}")), &[], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (closed, open) = trickle.await.unwrap();
    assert_eq!(
        open, 0,
        "{open} trickling connections still open after {WAIT:?}"
    );
    assert_eq!(closed, 16);
    assert!(origin.requests().iter().all(|r| r.path() != "/slow"));
}

/// SPEC 11.5: a reload that points the upstream elsewhere is seen by keep-alive connections
/// on every loop: their next request goes to the new upstream, none to the old pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_reaches_keep_alive_connections_on_every_loop() {
    let old = Origin::start();
    let new = Origin::start();
    let gw = Gateway::start(&config(&old.url(), "", "", "", ALLOW_REST));
    let addr = gw.data_addr();
    let mut conns = Vec::new();
    for i in 0..8 {
        let (mut tx, task) = connection(addr).await;
        assert_eq!(
            get_on(&mut tx, &format!("/before/{i}")).await.unwrap().0,
            200
        );
        conns.push((tx, task));
    }
    assert_eq!(old.count(), 8);

    gw.rewrite_config(&config(&new.url(), "", "", "", ALLOW_REST));
    let r = admin_call(&gw, "ops", "POST", "/v1/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (i, (tx, _)) in conns.iter_mut().enumerate() {
        let (status, _) = get_on(tx, &format!("/after/{i}")).await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(
        new.count(),
        8,
        "{:?}",
        new.requests()
            .iter()
            .map(|r| r.path().to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        old.count(),
        8,
        "a request after the reload reached the old upstream"
    );
}

// === the loops' life in-process ===

/// The threads named `jitgate-data-*` of this process.
fn data_loop_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("jitgate-data-"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// `Gateway::run` dropped without its shutdown (an embedder's task aborted, the serving
/// future raced and lost): the data listener closes and the event loops end, whatever their
/// connections are doing. Here one client never reads a large response.
///
/// FAILS on main (719079a), passes with 1d32642: `Workers::drop` sends `Phase::Exit`, but a
/// loop only looks for it once its connections drained, so the loop threads (and the connection) live on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_run_future_ends_the_event_loops() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(&origin.url(), "", "", "", ALLOW_REST)).unwrap();
    let gateway = jitgate_gateway::Gateway::bind(&path).await.expect("bind");
    let addr = gateway.data_addr();
    let run = tokio::spawn(gateway.run(std::future::pending()));

    let mut stuck = raw_open(
        addr,
        b"GET /large/4294967296 HTTP/1.1\r\nHost: loops.example\r\n\r\n",
    )
    .await;
    let mut head = [0u8; 256];
    let n = tokio::time::timeout(WAIT, stuck.read(&mut head))
        .await
        .expect("no response head")
        .expect("read");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    assert!(data_loop_threads() > 0, "no data-plane thread found");

    run.abort();
    let _ = run.await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the data listener outlived its gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while data_loop_threads() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} data-plane event loop(s) still running {WAIT:?} after the gateway was dropped",
            data_loop_threads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stuck);
}

// === more holds across loops ===

/// SPEC 11.2: four coalesced holders of one action ticket, all still waiting (h1 and h2c,
/// spread over the loops), are woken by one approval: the upstream receives the request once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_holders_alive_at_approval_reach_the_upstream_once() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", &sections(""), "", ROUTES));
    let body = r#"{"image":"web:8"}"#;
    let holders: Vec<_> = (0..4)
        .map(|i| {
            let client = if i % 2 == 0 {
                Client::http1()
            } else {
                Client::h2c()
            };
            deploy_over(client, gw.url("/deploy/once"), body.to_string())
        })
        .collect();
    wait_held_requests(&gw, 4.0).await;
    let id = pending_id(&gw, "prod-deploy").await;
    let r = approve(&gw, "alice", &id, "go").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut answers = Vec::new();
    for h in holders {
        let r = tokio::time::timeout(WAIT, h)
            .await
            .expect("answered")
            .unwrap();
        answers.push((
            r.status.as_u16(),
            r.header("jit-ticket").map(str::to_string),
        ));
    }
    origin.wait_for(1, WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), 1, "answers {answers:?}");
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "exactly one holder is released: {answers:?}"
    );
    wait_status(&gw, &id, "EXECUTED", WAIT).await;
}

/// SPEC 11.6 over TLS: held requests on TLS connections (ALPN h2 and http/1.1, spread over
/// the loops) answer 503 with their ticket at SIGTERM, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_held_requests_on_every_loop_answer_503_at_sigterm() {
    let pki = TestPki::new();
    let cert = pki.issue_server(&["localhost", "127.0.0.1"]);
    let origin = Origin::start();
    let cfg = config(
        &origin.url(),
        "tls = { cert = \"gw.pem\", key = \"gw.key\" }",
        &sections(""),
        "",
        ROUTES,
    );
    let mut gw = Gateway::builder(&cfg)
        .file("gw.pem", cert.cert_pem)
        .file("gw.key", cert.key_pem)
        .start();
    assert!(gw.data_url().starts_with("https://"));
    let ca = pki.ca_pem();
    let held: Vec<_> = (0..6)
        .map(|i| {
            let client = if i % 2 == 0 {
                Client::https(&ca)
            } else {
                Client::https_http1(&ca)
            };
            deploy_over(
                client,
                gw.url(&format!("/deploy/t{i}")),
                format!("{{\"t\":{i}}}"),
            )
        })
        .collect();
    wait_held_requests(&gw, 6.0).await;
    for i in 0..4 {
        let r = Client::https(&ca)
            .with_timeout(WAIT)
            .send("GET", &gw.url(&format!("/allowed/{i}")), &[], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    gw.signal(Sig::Term);
    let mut tickets = BTreeSet::new();
    for (i, h) in held.into_iter().enumerate() {
        let r = tokio::time::timeout(WAIT, h)
            .await
            .expect("answered")
            .unwrap();
        let p = problem(&r, 503, &format!("t{i}"));
        let id = r.header("jit-ticket").expect("Jit-Ticket").to_string();
        assert_eq!(p["ticket"], id.as_str());
        assert!(tickets.insert(id));
    }
    let status = gw.wait_exit(Duration::from_secs(20)).expect("did not exit");
    assert!(status.success(), "{status:?}\n{}", gw.stderr_text());
    assert_eq!(
        origin.count(),
        4,
        "only the allowed requests reached the origin"
    );
}

/// SPEC 6 over h2: two requests held on one h2c connection (two streams of one loop); the
/// client resets one stream: its ticket is cancelled, the other stream stays held and is
/// released by its approval, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_h2_stream_cancels_its_ticket_and_spares_its_neighbour() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", &sections(""), "", ROUTES));
    let client = std::sync::Arc::new(Client::h2c().with_timeout(Duration::from_secs(60)));
    let spawn = |path: &str| {
        let (client, url) = (client.clone(), gw.url(path));
        tokio::spawn(async move {
            client
                .send("POST", &url, &[BOB[0], BOB[1]], "{\"h2\":1}".to_string())
                .await
        })
    };
    let kept = spawn("/deploy/kept");
    let reset = spawn("/deploy/reset");
    wait_held_requests(&gw, 2.0).await;
    let tickets = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    let id_of = |path: &str| {
        tickets.json()["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["request"]["path"] == path)
            .unwrap_or_else(|| panic!("no ticket for {path}: {}", tickets.text()))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (kept_id, reset_id) = (id_of("/deploy/kept"), id_of("/deploy/reset"));
    reset.abort();
    let _ = reset.await;
    wait_status(&gw, &reset_id, "CANCELLED", WAIT).await;
    wait_held_requests(&gw, 1.0).await;
    let r = approve(&gw, "alice", &kept_id, "go").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let released = tokio::time::timeout(WAIT, kept)
        .await
        .expect("released")
        .unwrap();
    assert_eq!(released.status, 200, "{}", released.text());
    assert_eq!(released.json()["pathAndQuery"], "/deploy/kept");
    origin.wait_for(1, WAIT).await;
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 1);
}
