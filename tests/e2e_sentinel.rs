//! The Redis store behind Sentinel (`redis+sentinel://`, issue 11, SPEC 11): two gateway
//! replicas find the primary through three sentinels, and follow it through a failover.
//! Requests held before `SENTINEL FAILOVER` are released exactly once after it, and decisions
//! taken while it happens are not lost: an approval the API accepted stays accepted.
//!
//! Everything is real: a primary, a replica and three sentinels (`redis-server`), the
//! `jitgate` binary twice, a recording origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const ROUTE: &str = "prod-deploy";
const SOON: Duration = Duration::from_secs(15);

fn config(store_url: &str, origin: &Origin) -> String {
    approve_route_config(
        &format!("kind = \"redis\"\nurl = \"{store_url}\""),
        "hold_timeout = \"60s\"\nreconcile_interval = \"300ms\"\nsigning_key = \"key.pem\"",
        &origin.url(),
    )
}

/// Holds `POST /deploy/<name>` on `gw` in the background.
fn hold(gw: &Gateway, name: &str) -> tokio::task::JoinHandle<Response> {
    let url = gw.url(&format!("/deploy/{name}"));
    tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(90))
            .send(
                "POST",
                &url,
                &[
                    ("host", "api.example.com"),
                    ("x-user", "bob"),
                    ("x-groups", "dev"),
                    ("content-type", "application/json"),
                ],
                "{}".to_string(),
            )
            .await
    })
}

/// Waits until `n` tickets of the route are pending; their ids by request path.
async fn pending(gw: &Gateway, n: usize) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let r = admin_call(gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
        if r.status == 200 {
            let found: BTreeMap<String, String> = r.json()["tickets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["route"] == ROUTE)
                .map(|t| {
                    (
                        t["request"]["path"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        t["id"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            if found.len() == n {
                return found;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} pending tickets not seen: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Approves `id` through `gw`, asking again while the store is failing over (503); an
/// answer that the ticket is already approved (an earlier attempt landed but its answer was
/// lost) counts as done.
async fn approve_through_failover(gw: &Gateway, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let r = approve(gw, "alice", id, "during the failover").await;
        match r.status.as_u16() {
            200 => return,
            409 => {
                let t = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
                let status = t.json()["status"].as_str().unwrap_or_default().to_string();
                assert!(
                    status == "APPROVED" || status == "EXECUTED",
                    "approve {id}: 409 {} while the ticket is {status}",
                    r.text()
                );
                return;
            }
            502..=504 => {}
            s => panic!("approve {id}: {s} {}", r.text()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "approve {id} never went through: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_requests_survive_a_sentinel_failover_and_are_released_once() {
    let set = SentinelSet::start(1);
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&set.url(), &origin);
    let a = Gateway::builder(&cfg).file("key.pem", pem.clone()).start();
    let b = Gateway::builder(&cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;

    // Three requests held on A before the failover, their tickets on the replica too.
    let names = ["one", "two", "three"];
    let held: Vec<_> = names.iter().map(|n| hold(&a, n)).collect();
    let ids = pending(&b, names.len()).await;
    set.wait_synced();
    assert_eq!(origin.count(), 0, "forwarded before approval");
    let old = set.primary_port();

    // Two decisions taken through B while the sentinels fail over, one after.
    let before = set.start_failover();
    approve_through_failover(&b, &ids["/deploy/one"]).await;
    approve_through_failover(&b, &ids["/deploy/two"]).await;
    let new = set.wait_failover(before);
    assert_ne!(new, old, "the primary did not move");
    approve_through_failover(&b, &ids["/deploy/three"]).await;

    // Each held request is answered by the origin, exactly once.
    for (name, h) in names.iter().zip(held) {
        let resp = tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .unwrap_or_else(|_| panic!("{name} was not released\n{}", a.stderr_text()))
            .expect("task");
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
    let reqs = origin.wait_for(names.len(), SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(800))
        .await;
    let mut paths: Vec<String> = reqs.iter().map(|r| r.path().to_string()).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/deploy/one", "/deploy/three", "/deploy/two"],
        "{reqs:#?}"
    );
    // The new primary has every decision and execution: nothing accepted was lost.
    for id in ids.values() {
        wait_status(&a, id, "EXECUTED", SOON).await;
        wait_status(&b, id, "EXECUTED", SOON).await;
    }
    let stderr = a.stderr_text();
    assert!(
        stderr.contains("the redis primary moved"),
        "A did not follow the primary:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_is_replaced_and_held_requests_are_released() {
    // Two replicas: one is promoted, and the new primary still has one to confirm writes
    // (replica_acks = 1, the default behind Sentinel).
    let mut set = SentinelSet::start(2);
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&set.url(), &origin);
    let a = Gateway::builder(&cfg).file("key.pem", pem.clone()).start();
    let b = Gateway::builder(&cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;

    let held = hold(&a, "web");
    let ids = pending(&b, 1).await;
    set.wait_synced();
    let old = set.primary_port();

    // The primary dies: the sentinels see it down (1 s) and promote the replica.
    set.nodes[0].stop();
    let new = set.wait_failover(old);
    assert_ne!(new, old);
    approve_through_failover(&b, &ids["/deploy/web"]).await;

    let resp = tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .unwrap_or_else(|_| panic!("not released\n{}", a.stderr_text()))
        .expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(800))
        .await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    wait_status(&a, &ids["/deploy/web"], "EXECUTED", SOON).await;
}
