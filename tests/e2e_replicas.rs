//! Replicas sharing one Redis store (SPEC sections 6, 8 and 11.2–11.4, 11.6): a decision made
//! on any replica releases the request held on another, a lost pub/sub message only delays a
//! release by the reconciliation interval, tickets survive a gateway restart, a store outage
//! fails approve routes closed while allow routes keep flowing, racing decisions and expiry
//! have exactly one outcome, and SIGTERM answers held requests 503 with their ticket so the
//! client can resume on another replica.
//!
//! Every test runs the real `jitgate` binary against its own `redis-server` and a recording
//! origin. All replicas of a test share one Ed25519 signing key, as a deployment would.
//!
//! Requests on the approve route carry an explicit `Host` header: the ticket fingerprint covers
//! the canonical host (port included), and a client resuming on another replica (or on a
//! restarted one, whose port changed) reaches it under the same name through a load balancer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::*;

/// The `Host` every approve-route request carries (see the module doc).
const HOST: &str = "api.example.com";
/// The approve route's name in [`config`].
const ROUTE: &str = "prod-deploy";
/// Generous bound for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);

/// The per-test knobs of [`config`].
struct Knobs<'a> {
    redis_url: &'a str,
    origin_url: &'a str,
    hold_timeout: &'a str,
    /// Extra lines under `[routes.approval]` of the approve route.
    approval_extra: &'a str,
}

/// One replica's config: a redis store, a shared signing key (`key.pem`), an approve route
/// `prod-deploy` on `POST /deploy/**` decided by `group:oncall`, and an allow catch-all.
fn config(k: &Knobs<'_>) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[store]
kind = "redis"
url = "{redis}"

[approvals]
hold_timeout = "{hold}"
reconcile_interval = "300ms"
signing_key = "key.pem"

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "{ROUTE}"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
quorum = 1
{extra}

[[routes]]
name = "everything-else"
path = "/**"
upstream = "origin"
action = "allow"

{identity}"#,
        redis = k.redis_url,
        hold = k.hold_timeout,
        origin = k.origin_url,
        extra = k.approval_extra,
        identity = identity_and_admin_toml(),
    )
}

/// Starts a replica with `key.pem` written next to its config.
fn replica(cfg: &str, pem: &str) -> Gateway {
    Gateway::builder(cfg).file("key.pem", pem).start()
}

/// `POST <path>` on the approve route as bob (group dev), optionally resuming a ticket.
async fn deploy(data_url: &str, path: &str, body: &str, ticket: Option<&str>) -> Response {
    let url = format!("{data_url}{path}");
    let mut headers = vec![
        ("host", HOST),
        ("x-user", "bob"),
        ("x-groups", "dev"),
        ("content-type", "application/json"),
    ];
    if let Some(id) = ticket {
        headers.push(("jit-ticket", id));
    }
    Client::http1()
        .with_timeout(Duration::from_secs(60))
        .send("POST", &url, &headers, body.to_string())
        .await
}

/// [`deploy`] on a spawned task, for a request that will be held.
fn deploy_in_background(gw: &Gateway, path: &str, body: &str) -> tokio::task::JoinHandle<Response> {
    let (url, path, body) = (
        gw.data_url().to_string(),
        path.to_string(),
        body.to_string(),
    );
    tokio::spawn(async move { deploy(&url, &path, &body, None).await })
}

/// A held request's answer, within `timeout`.
async fn answer_within(held: tokio::task::JoinHandle<Response>, timeout: Duration) -> Response {
    tokio::time::timeout(timeout, held)
        .await
        .unwrap_or_else(|_| panic!("the held request did not answer within {timeout:?}"))
        .expect("request task")
}

/// The id of a ticket as the admin API returns it.
fn id_of(ticket: &Value) -> String {
    ticket["id"].as_str().expect("ticket id").to_string()
}

/// Asserts a problem+json answer whose `type` ends with `slug`; returns the body.
fn assert_problem(r: &Response, status: u16, slug: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text()
    );
    let p = r.json();
    assert!(
        p["type"].as_str().is_some_and(|t| t.ends_with(slug)),
        "problem type is not {slug}: {p}"
    );
    p
}

/// How many subscribers the decisions channel has.
fn decision_subscribers(redis: &RedisServer) -> u32 {
    // `PUBSUB NUMSUB jit:decisions` prints the channel name, then the count.
    redis
        .cli(&["PUBSUB", "NUMSUB", "jit:decisions"])
        .lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `n` replicas listen for decisions.
async fn wait_subscribers(redis: &RedisServer, n: u32) {
    let deadline = tokio::time::Instant::now() + SOON;
    while decision_subscribers(redis) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} decision subscribers within {SOON:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas on one Redis, holding for `hold_timeout`.
async fn two_replicas(
    redis: &RedisServer,
    origin: &Origin,
    hold_timeout: &str,
    approval_extra: &str,
) -> (Gateway, Gateway) {
    two_replicas_holding(redis, origin, [hold_timeout, hold_timeout], approval_extra).await
}

/// Two replicas on one Redis, A holding for `holds[0]` and B for `holds[1]`.
async fn two_replicas_holding(
    redis: &RedisServer,
    origin: &Origin,
    holds: [&str; 2],
    approval_extra: &str,
) -> (Gateway, Gateway) {
    let pem = signing_key_pem();
    let cfg = |hold_timeout: &str| {
        config(&Knobs {
            redis_url: &redis.url(),
            origin_url: &origin.url(),
            hold_timeout,
            approval_extra,
        })
    };
    let a = replica(&cfg(holds[0]), &pem);
    let b = replica(&cfg(holds[1]), &pem);
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_on_a_approved_through_b_released_on_a() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas(&redis, &origin, "30s", "").await;

    let body = r#"{"image":"web:1.4.2"}"#;
    let held = deploy_in_background(&a, "/deploy/web", body);
    let ticket = wait_pending(&b, ROUTE, SOON).await;
    let id = id_of(&ticket);
    assert_eq!(ticket["request"]["path"], "/deploy/web", "{ticket}");
    assert_eq!(ticket["requester"]["user"], "bob", "{ticket}");
    assert_eq!(origin.count(), 0, "forwarded before approval");

    let r = approve(&b, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());

    let resp = answer_within(held, SOON).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.header("x-origin-seq").is_some(),
        "not the origin's answer: {:?}",
        resp.headers
    );

    let reqs = origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let got = &reqs[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path(), "/deploy/web");
    assert_eq!(got.body_sha256, sha256_hex(body.as_bytes()));
    assert!(
        got.header("jit-approval").is_some_and(|t| !t.is_empty()),
        "no jit-approval header upstream: {got:#?}"
    );

    let kinds = wait_audit(
        &a,
        &id,
        &[
            "ticket.created",
            "ticket.approved",
            "ticket.executed",
            "ticket.forwarded",
        ],
    )
    .await;
    assert_eq!(
        kinds,
        [
            "ticket.created",
            "ticket.approved",
            "ticket.executed",
            "ticket.forwarded"
        ],
        "audit of {id}"
    );
    assert_eq!(
        audit_kinds(&b, &id).await,
        kinds,
        "replicas disagree on audit"
    );
    wait_status(&b, &id, "EXECUTED", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decision_during_pubsub_kill_still_releases() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas(&redis, &origin, "30s", "").await;
    wait_subscribers(&redis, 2).await;

    let body = r#"{"image":"api:7"}"#;
    let held = deploy_in_background(&a, "/deploy/api", body);
    let id = id_of(&wait_pending(&b, ROUTE, SOON).await);

    // Both replicas lose their subscription; the decision is published while they reconnect.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "2", "CLIENT KILL TYPE pubsub: {killed:?}");
    let r = approve(&b, "alice", &id, "during the outage").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());

    let resp = answer_within(held, SOON).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(800))
        .await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].body_sha256, sha256_hex(body.as_bytes()));
    wait_status(&a, &id, "EXECUTED", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_tickets() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&Knobs {
        redis_url: &redis.url(),
        origin_url: &origin.url(),
        hold_timeout: "200ms",
        approval_extra: "",
    });
    let mut a = replica(&cfg, &pem);
    wait_store_ok(&a).await;

    let body = r#"{"image":"db:3"}"#;
    let first = deploy(a.data_url(), "/deploy/db", body, None).await;
    let p = assert_problem(&first, 202, "approval-pending");
    let id = first.header("jit-ticket").expect("jit-ticket").to_string();
    assert_eq!(p["ticket"], id.as_str(), "{p}");
    assert_eq!(
        first.header("location"),
        Some(format!("/.well-known/jitgate/tickets/{id}").as_str())
    );

    a.restart();
    wait_store_ok(&a).await;
    let listed = wait_pending(&a, ROUTE, SOON).await;
    assert_eq!(id_of(&listed), id, "{listed}");
    assert_eq!(listed["status"], "PENDING");

    let r = approve(&a, "alice", &id, "after restart").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());

    let resumed = deploy(a.data_url(), "/deploy/db", body, Some(&id)).await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let again = deploy(a.data_url(), "/deploy/db", body, Some(&id)).await;
    assert_problem(&again, 403, "approval-used");

    let reqs = origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].body_sha256, sha256_hex(body.as_bytes()));
    wait_status(&a, &id, "EXECUTED", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_closed_for_approve_allow_keeps_flowing() {
    let mut redis = RedisServer::start();
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&Knobs {
        redis_url: &redis.url(),
        origin_url: &origin.url(),
        hold_timeout: "30s",
        approval_extra: "",
    });
    let gw = replica(&cfg, &pem);
    wait_store_ok(&gw).await;

    let r = send("GET", &gw.url("/healthy"), &[], "").await;
    assert_eq!(r.status, 200, "allow route before the outage: {}", r.text());
    origin.wait_for(1, SOON).await;

    redis.stop();
    let before = origin.count();
    let r = deploy(gw.data_url(), "/deploy/web", r#"{"image":"x"}"#, None).await;
    assert_problem(&r, 503, "store-unavailable");
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), before);

    let r = send("GET", &gw.url("/during-outage"), &[], "").await;
    assert_eq!(r.status, 200, "allow route during the outage: {}", r.text());
    let reqs = origin.wait_for(before + 1, SOON).await;
    assert_eq!(reqs[before].path(), "/during-outage");

    // A replica started while Redis is already down serves allow routes and fails closed.
    let late = replica(&cfg, &pem);
    let r = send("GET", &late.url("/from-late"), &[], "").await;
    assert_eq!(r.status, 200, "allow route on a late replica: {}", r.text());
    origin.wait_for(before + 2, SOON).await;
    let count = origin.count();
    let r = deploy(late.data_url(), "/deploy/web", r#"{"image":"y"}"#, None).await;
    assert_problem(&r, 503, "store-unavailable");
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), count);
    assert!(
        origin
            .requests()
            .iter()
            .all(|q| !q.path().starts_with("/deploy")),
        "an approve-route request reached the origin: {:#?}",
        origin.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_approve_deny_expiry_have_one_outcome() {
    const ROUNDS: u64 = 20;
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas(&redis, &origin, "100ms", r#"ticket_ttl = "400ms""#).await;

    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let path = format!("/deploy/race-{round}");
        let started = tokio::time::Instant::now();
        let r = deploy(a.data_url(), &path, "{}", None).await;
        assert_problem(&r, 202, "approval-pending");
        let id = r.header("jit-ticket").expect("jit-ticket").to_string();

        // Decide around the expiry (400 ms after the ticket opened): 300–500 ms in.
        let delay = Duration::from_millis(300 + (round * 53) % 201);
        tokio::time::sleep_until(started + delay).await;
        let (approved, denied) = tokio::join!(
            approve(&a, "alice", &id, "race"),
            deny(&b, "carol", &id, "race")
        );
        for (what, r) in [("approve", &approved), ("deny", &denied)] {
            assert!(
                r.status == 200 || r.status == 409,
                "round {round}: {what} answered {}: {}",
                r.status,
                r.text()
            );
        }
        let expected = match (approved.status == 200, denied.status == 200) {
            (true, true) => panic!(
                "round {round}: both decisions succeeded on {id}: {} / {}",
                approved.text(),
                denied.text()
            ),
            (true, false) => "APPROVED",
            (false, true) => "DENIED",
            (false, false) => "EXPIRED",
        };
        wait_status(&b, &id, expected, SOON).await;
        outcomes.push((id, expected));
    }

    // Let reconcilers run a few times, then check that nothing changed and each ticket has
    // exactly one outcome in its audit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (id, expected) in &outcomes {
        let r = admin_call(&a, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], *expected, "{id}: {}", r.text());
        let kinds = audit_kinds(&a, id).await;
        let decided: Vec<&String> = kinds
            .iter()
            .filter(|k| {
                ["ticket.approved", "ticket.denied", "ticket.expired"].contains(&k.as_str())
            })
            .collect();
        let want = match *expected {
            "APPROVED" => "ticket.approved",
            "DENIED" => "ticket.denied",
            _ => "ticket.expired",
        };
        assert_eq!(decided, [want], "{id} ({expected}): audit {kinds:?}");
    }
    let tally = |s: &str| outcomes.iter().filter(|(_, e)| *e == s).count();
    eprintln!(
        "race outcomes over {ROUNDS} rounds: approved {}, denied {}, expired {}",
        tally("APPROVED"),
        tally("DENIED"),
        tally("EXPIRED")
    );
    assert_eq!(
        origin.count(),
        0,
        "nothing was resumed, nothing may reach the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_answers_held_requests_503_with_ticket() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (mut a, b) = two_replicas(&redis, &origin, "30s", "").await;

    let body = r#"{"image":"web:2"}"#;
    let held = deploy_in_background(&a, "/deploy/web", body);
    let id = id_of(&wait_pending(&b, ROUTE, SOON).await);

    a.signal(Sig::Term);
    let resp = answer_within(held, SOON).await;
    let p = assert_problem(&resp, 503, "shutting-down");
    assert_eq!(resp.header("jit-ticket"), Some(id.as_str()), "{p}");
    assert_eq!(p["ticket"], id.as_str(), "{p}");
    assert_eq!(origin.count(), 0, "forwarded without approval");
    let status = a
        .wait_exit(Duration::from_secs(30))
        .expect("A did not exit");
    assert!(
        status.success(),
        "A exited with {status:?}\n{}",
        a.stderr_text()
    );

    // The ticket is still pending: approve on B and resume there.
    let listed = wait_status(&b, &id, "PENDING", SOON).await;
    assert_eq!(listed["status"], "PENDING");
    let r = approve(&b, "alice", &id, "after failover").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());
    let resumed = deploy(b.data_url(), "/deploy/web", body, Some(&id)).await;
    assert_eq!(resumed.status, 200, "resume on B: {}", resumed.text());

    let reqs = origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].body_sha256, sha256_hex(body.as_bytes()));
    assert!(reqs[0].header("jit-approval").is_some(), "{:#?}", reqs[0]);
}

/// A release whose store write landed but whose answer was lost (late past the store's
/// operation timeout) is settled by reading the ticket back: the request is forwarded once,
/// not refused with 503 while its use is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_whose_store_answer_is_lost_is_settled_by_reading_back() {
    let redis = RedisServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&Knobs {
        redis_url: &format!("redis://127.0.0.1:{}/0", relay.port),
        origin_url: &origin.url(),
        hold_timeout: "30s",
        approval_extra: "",
    });
    let gw = replica(&cfg, &pem);
    wait_store_ok(&gw).await;

    let body = r#"{"image":"web:1.4.2"}"#;
    let held = deploy_in_background(&gw, "/deploy/web", body);
    let id = id_of(&wait_pending(&gw, ROUTE, SOON).await);
    // The write that spends the use records its release id; its answer comes 4 s late, past
    // the store's 3 s operation timeout, while the write itself lands at once.
    relay.delay_answer_to(b"\"releases\":[\"rel_", Duration::from_secs(4));
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());

    let resp = answer_within(held, Duration::from_secs(20)).await;
    assert_eq!(relay.sprung(), 1, "the release's answer was not delayed");
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), gw.stderr_text());
    let reqs = origin.wait_for(1, SOON).await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert!(
        gw.stderr_text().contains("settled by reading back"),
        "{}",
        gw.stderr_text()
    );
    wait_status(&gw, &id, "EXECUTED", SOON).await;
}

/// Waits until ticket `id` lists `n` holders on `gw`; its JSON.
async fn wait_holders(gw: &Gateway, id: &str, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let t = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
        let holders = t.json()["holders"].as_array().map_or(0, Vec::len);
        if holders == n {
            return t.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ticket {id} never had {n} holders: {}",
            t.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SPEC 6 across replicas: identical requests of one requester held on two replicas share one
/// ticket; the client on A going away does not withdraw it while B still holds its request,
/// and the approval releases B's request once (A's, gone, is never sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gone_from_one_replica_leaves_the_ticket_to_the_other() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas(&redis, &origin, "30s", "").await;

    let on_a = deploy_in_background(&a, "/deploy/shared", "{}");
    let ticket = wait_pending(&a, ROUTE, SOON).await;
    let id = id_of(&ticket);
    let on_b = deploy_in_background(&b, "/deploy/shared", "{}");
    let t = wait_holders(&a, &id, 2).await;
    assert_eq!(t["status"], "PENDING");
    let r = admin_call(&b, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(
        r.json()["tickets"].as_array().map_or(0, Vec::len),
        1,
        "coalesced across replicas: {}",
        r.text()
    );

    // A's client goes away: A leaves the holders; the ticket stays pending for B's.
    on_a.abort();
    let _ = on_a.await;
    let t = wait_holders(&b, &id, 1).await;
    assert_eq!(t["status"], "PENDING", "withdrawn while B still holds: {t}");
    assert!(!on_b.is_finished(), "B's request was answered");

    let r = approve(&b, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = answer_within(on_b, SOON).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    wait_status(&a, &id, "EXECUTED", SOON).await;
    assert_eq!(
        audit_kinds(&a, &id).await,
        [
            "ticket.created",
            "ticket.approved",
            "ticket.executed",
            "ticket.forwarded"
        ],
        "no cancellation recorded"
    );
}

/// ... and when the last holder anywhere goes, the ticket is cancelled, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_client_gone_on_any_replica_cancels_the_ticket() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas(&redis, &origin, "30s", "").await;

    let on_a = deploy_in_background(&a, "/deploy/both-gone", "{}");
    let id = id_of(&wait_pending(&a, ROUTE, SOON).await);
    let on_b = deploy_in_background(&b, "/deploy/both-gone", "{}");
    wait_holders(&a, &id, 2).await;

    on_b.abort();
    let _ = on_b.await;
    wait_holders(&a, &id, 1).await;
    on_a.abort();
    let _ = on_a.await;
    let t = wait_status(&b, &id, "CANCELLED", SOON).await;
    assert!(t["decidedAt"].is_string());
    assert_eq!(
        audit_kinds(&b, &id).await,
        ["ticket.created", "ticket.cancelled"]
    );
    let r = approve(&b, "alice", &id, "too late").await;
    assert_eq!(r.status, 409, "{}", r.text());
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 0);
}

/// A request answered 202 at its hold's end leaves the holders without cancelling: the
/// other replica's client going away afterwards, as the last holder, cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_that_times_out_leaves_without_cancelling() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas_holding(&redis, &origin, ["1s", "30s"], "").await;

    let on_b = deploy_in_background(&b, "/deploy/short", "{}");
    let id = id_of(&wait_pending(&b, ROUTE, SOON).await);
    let r = deploy(a.data_url(), "/deploy/short", "{}", None).await;
    assert_eq!(r.status, 202, "A's hold ends pending: {}", r.text());
    let t = wait_holders(&b, &id, 1).await;
    assert_eq!(t["status"], "PENDING");
    on_b.abort();
    let _ = on_b.await;
    wait_status(&a, &id, "CANCELLED", SOON).await;
}

/// A client gone on B while A's request is still held schedules B's look at the holders'
/// leases; A's request then ends with 202 (its client told to resume). That look must not
/// cancel the ticket: no lease ran out, and A's client was answered, not gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_look_after_a_client_gone_cancels_nothing_when_no_holder_died() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let (a, b) = two_replicas_holding(&redis, &origin, ["2s", "30s"], "").await;

    let on_b = deploy_in_background(&b, "/deploy/look", "{}");
    let id = id_of(&wait_pending(&b, ROUTE, SOON).await);
    let on_a = deploy_in_background(&a, "/deploy/look", "{}");
    wait_holders(&b, &id, 2).await;
    // B's client goes: A still holds, so B only leaves (and will look again later).
    on_b.abort();
    let _ = on_b.await;
    wait_holders(&b, &id, 1).await;
    // A's request ends pending (202): A leaves without cancelling.
    let r = answer_within(on_a, SOON).await;
    assert_eq!(r.status, 202, "{}", r.text());
    // B's second look (5 s lease + a tick after its client went) finds no lease run out.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let t = admin_call(&b, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    assert_eq!(t.json()["status"], "PENDING", "{}", t.text());
    // A's client resumes and is released once approved.
    let resumed = {
        let url = a.data_url().to_string();
        let id = id.clone();
        tokio::spawn(async move { deploy(&url, "/deploy/look", "{}", Some(&id)).await })
    };
    wait_holders(&b, &id, 1).await;
    let r = approve(&b, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answer_within(resumed, SOON).await.status, 200);
    assert_eq!(origin.wait_for(1, SOON).await.len(), 1);
}
