//! Faults under load (issue 11, SPEC 11): while clients keep sending allow traffic and
//! approve-route requests, and an approver keeps deciding, Redis is killed and restarted
//! (with its append-only file, as a deployment keeps it) and one gateway replica is
//! SIGKILLed. Afterwards: every decided ticket reached the upstream at most once, and only
//! when approved; every approved request whose client stayed (never lost its connection)
//! reached the upstream exactly once; allow traffic on the surviving replica never failed;
//! the audit chain verifies.
//!
//! Bounded: 24 approve-route requests, a fixed schedule of faults, every wait under a
//! deadline. Clients behave as documented: an answer with a ticket (202 at the hold's end,
//! 503 while the store is away) is resumed with `Jit-Ticket`; a lost connection is sent again
//! to the other replica (an identical request joins the pending ticket).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const REQUESTS: usize = 24;
/// Every client, the approver and the allow traffic stop here at the latest.
const RUN_FOR: Duration = Duration::from_secs(45);
/// How long the approver lets a ticket wait before deciding it.
const DECIDE_AFTER: Duration = Duration::from_millis(1500);

fn config(redis: &RedisServer, origin: &Origin) -> String {
    approve_route_config(
        &format!("kind = \"redis\"\nurl = \"{}\"", redis.url()),
        "hold_timeout = \"3s\"\nreconcile_interval = \"300ms\"\nsigning_key = \"key.pem\"",
        &origin.url(),
    )
}

/// How one approve-route client ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// 200 from the origin, through the gateway.
    Released,
    /// 403: denied (or another refusal that ends the request).
    Refused(u16, String),
    /// Still without a final answer at the deadline.
    Unfinished,
}

/// One client's record.
#[derive(Debug)]
struct Outcome {
    path: String,
    end: End,
    /// It lost a connection (its replica was killed) at some point.
    lost_connection: bool,
    /// 503 answers it got (the store away).
    store_away: usize,
}

/// `POST /deploy/<name>` as bob until a final answer: resumes with the ticket it was given,
/// and moves to the other replica when its connection is lost.
async fn client(urls: [String; 2], first: usize, name: String, deadline: Instant) -> Outcome {
    let path = format!("/deploy/{name}");
    let mut at = first;
    let mut ticket: Option<String> = None;
    let mut lost_connection = false;
    let mut store_away = 0;
    let http = Client::http1().with_timeout(Duration::from_secs(20));
    while Instant::now() < deadline {
        let mut headers = vec![
            ("host", "api.example.com"),
            ("x-user", "bob"),
            ("x-groups", "dev"),
            ("content-type", "application/json"),
        ];
        if let Some(t) = &ticket {
            headers.push(("jit-ticket", t.as_str()));
        }
        let url = format!("{}{path}", urls[at]);
        match http.try_send("POST", &url, &headers, "{}").await {
            Ok(r) if r.status == 200 => {
                return Outcome {
                    path,
                    end: End::Released,
                    lost_connection,
                    store_away,
                }
            }
            Ok(r) if r.status == 202 || r.status == 503 || r.status == 429 => {
                if r.status == 503 {
                    store_away += 1;
                }
                if let Some(t) = r.header("jit-ticket") {
                    ticket = Some(t.to_string());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(r) => {
                return Outcome {
                    path,
                    end: End::Refused(r.status.as_u16(), r.text()),
                    lost_connection,
                    store_away,
                }
            }
            Err(_) => {
                // The replica is gone: the same request to the other one.
                lost_connection = true;
                at = 1 - at;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Outcome {
        path,
        end: End::Unfinished,
        lost_connection,
        store_away,
    }
}

/// Whether the approver denies the request for `path` (every sixth).
fn denied(path: &str) -> bool {
    path.trim_start_matches("/deploy/f")
        .parse::<usize>()
        .is_ok_and(|n| n % 6 == 5)
}

/// The ticket id (`jti`) of a `Jit-Approval` token.
fn jti(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&json).expect("JSON claims");
    claims["jti"].as_str().expect("jti").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_and_a_killed_replica_under_load_keep_every_invariant() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&redis, &origin);
    let a = Gateway::builder(&cfg).file("key.pem", pem.clone()).start();
    let b = Gateway::builder(&cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    let started = Instant::now();
    let deadline = started + RUN_FOR;
    let stop = Arc::new(AtomicBool::new(false));

    // Allow traffic on both replicas, all along; failures on B (which stays) are counted, and
    // the instants B answered, to see it served through the store's outage.
    let b_failures = Arc::new(AtomicUsize::new(0));
    let b_served = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let allow = {
        let (stop, fails, served) = (stop.clone(), b_failures.clone(), b_served.clone());
        let (a_url, b_url) = (a.url("/healthcheck"), b.url("/healthcheck"));
        tokio::spawn(async move {
            let http = Client::http1().with_timeout(Duration::from_secs(5));
            while !stop.load(Ordering::Relaxed) {
                let _ = http.try_send("GET", &a_url, &[], "").await;
                match http.try_send("GET", &b_url, &[], "").await {
                    Ok(r) if r.status == 200 => served.lock().unwrap().push(started.elapsed()),
                    _ => {
                        fails.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The approver, through B: decides each pending ticket once it has seen it for a while
    // (so requests are held across the faults), approving all but every sixth path.
    let approver = async {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let r = admin_call(&b, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
            if r.status == 200 {
                for t in r.json()["tickets"].as_array().into_iter().flatten() {
                    let id = t["id"].as_str().unwrap_or_default();
                    let first = *seen.entry(id.to_string()).or_insert_with(Instant::now);
                    if first.elapsed() < DECIDE_AFTER {
                        continue;
                    }
                    let path = t["request"]["path"].as_str().unwrap_or_default();
                    let _ = if denied(path) {
                        deny(&b, "alice", id, "not this one").await
                    } else {
                        approve(&b, "alice", id, "ok").await
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };

    // The clients: half start on A, half on B, a few at a time, with the faults among them.
    let drive = async {
        let urls = [a.data_url().to_string(), b.data_url().to_string()];
        let mut clients = Vec::new();
        for i in 0..REQUESTS {
            clients.push(tokio::spawn(client(
                urls.clone(),
                i % 2,
                format!("f{i}"),
                deadline,
            )));
            tokio::time::sleep(Duration::from_millis(100)).await;
            match i {
                // Redis dies with requests held and decisions in flight...
                8 => redis.stop(),
                // ... and comes back with its append-only file.
                16 => tokio::task::block_in_place(|| redis.restart()),
                // Replica A dies with its held requests.
                20 => a.signal(Sig::Kill),
                _ => {}
            }
        }
        let mut outcomes = Vec::new();
        for c in clients {
            outcomes.push(
                tokio::time::timeout(RUN_FOR + Duration::from_secs(30), c)
                    .await
                    .expect("client bounded by its deadline")
                    .expect("client task"),
            );
        }
        stop.store(true, Ordering::Relaxed);
        outcomes
    };
    let ((), outcomes) = tokio::join!(approver, drive);
    let _ = allow.await;

    // The faults bit: requests were answered 503 while Redis was away, and requests held on
    // A lost their connection when it was killed.
    assert!(
        outcomes.iter().any(|o| o.store_away > 0),
        "no request met the store outage: {outcomes:#?}"
    );
    assert!(
        outcomes.iter().any(|o| o.lost_connection),
        "no request was held on A when it died: {outcomes:#?}"
    );

    // Every client got a final answer in time.
    let unfinished: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.end == End::Unfinished)
        .collect();
    assert!(
        unfinished.is_empty(),
        "no final answer: {unfinished:#?}\n{}",
        b.stderr_text()
    );

    // What reached the origin: per ticket, at most once, and only approved tickets.
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    let reqs = origin.requests();
    let mut by_ticket: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut paths: HashMap<String, usize> = HashMap::new();
    for r in reqs.iter().filter(|r| r.path().starts_with("/deploy/")) {
        let token = r
            .header_str("jit-approval")
            .expect("a released request carries its approval");
        by_ticket
            .entry(jti(&token))
            .or_default()
            .push(r.path().to_string());
        *paths.entry(r.path().to_string()).or_default() += 1;
    }
    for (ticket, seen) in &by_ticket {
        assert_eq!(seen.len(), 1, "ticket {ticket} reached the origin {seen:?}");
        let t = admin_call(&b, "ops", "GET", &format!("/v1/tickets/{ticket}"), "").await;
        assert_eq!(
            t.json()["status"],
            "EXECUTED",
            "forwarded ticket {ticket}: {}",
            t.text()
        );
        assert!(
            !denied(&seen[0]),
            "a denied path reached the origin: {seen:?}"
        );
    }

    // Every client that was released and never lost its connection: its request reached the
    // origin exactly once. Denied ones never did.
    for o in &outcomes {
        match &o.end {
            End::Released if !o.lost_connection => {
                assert_eq!(paths.get(&o.path), Some(&1), "{o:?}");
            }
            End::Released => assert!(paths.get(&o.path).is_some_and(|n| *n >= 1), "{o:?}"),
            End::Refused(status, text) => {
                assert_eq!(*status, 403, "{o:?}");
                assert!(text.contains("denied"), "{o:?}");
                assert!(denied(&o.path), "refused but approved: {o:?}");
                assert_eq!(paths.get(&o.path), None, "{o:?}");
            }
            End::Unfinished => unreachable!(),
        }
    }
    let released = outcomes.iter().filter(|o| o.end == End::Released).count();
    assert_eq!(released, REQUESTS - REQUESTS / 6, "{outcomes:#?}");

    // Allow traffic on B never failed, also while Redis was down.
    assert_eq!(
        b_failures.load(Ordering::Relaxed),
        0,
        "allow requests failed on B"
    );
    let served = b_served.lock().unwrap().clone();
    let gaps = served
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        gaps < Duration::from_secs(2),
        "allow traffic on B stalled for {gaps:?}"
    );

    // The audit chain is whole after it all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["audit", "verify", "--admin", b.admin_url()])
        .args(["--token", &token_of("ops")])
        .env_remove("JITGATE_ADMIN_URL")
        .env_remove("JITGATE_ADMIN_TOKEN")
        .output()
        .expect("run jitgate audit verify");
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
