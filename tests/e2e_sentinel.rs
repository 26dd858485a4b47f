//! The Redis store behind Sentinel (`redis+sentinel://`, issue 11, SPEC 11): two gateway
//! replicas find the primary through three sentinels, and follow it through a failover.
//! Requests held before `SENTINEL FAILOVER` are released exactly once after it, and decisions
//! taken while it happens are not lost: an approval the API accepted stays accepted.
//!
//! Everything is real: a primary, a replica and three sentinels (`redis-server`), the
//! `jitgate` binary twice, a recording origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const SOON: Duration = Duration::from_secs(15);

fn config(store_url: &str, origin: &Origin) -> String {
    approve_route_config(
        &format!("kind = \"redis\"\nurl = \"{store_url}\""),
        "hold_timeout = \"60s\"\nreconcile_interval = \"300ms\"\nsigning_key = \"key.pem\"",
        &origin.url(),
    )
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
    let held: Vec<_> = names.iter().map(|n| hold_deploy(&a, n)).collect();
    let ids = pending_deploys(&b, names.len()).await;
    set.wait_synced();
    assert_eq!(origin.count(), 0, "forwarded before approval");
    let old = set.primary_port();

    // Two decisions taken through B while the sentinels fail over, one after.
    let before = set.start_failover();
    approve_retrying(&b, &ids["/deploy/one"]).await;
    approve_retrying(&b, &ids["/deploy/two"]).await;
    let new = set.wait_failover(before);
    assert_ne!(new, old, "the primary did not move");
    approve_retrying(&b, &ids["/deploy/three"]).await;

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

    let held = hold_deploy(&a, "web");
    let ids = pending_deploys(&b, 1).await;
    set.wait_synced();
    let old = set.primary_port();

    // The primary dies: the sentinels see it down (1 s) and promote the replica.
    set.nodes[0].stop();
    let new = set.wait_failover(old);
    assert_ne!(new, old);
    approve_retrying(&b, &ids["/deploy/web"]).await;

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
