//! The Redis store on Redis Cluster (`redis+cluster://`, issue 11, SPEC 11): two gateway
//! replicas share tickets through a three-primary cluster. A request held on A is approved
//! through B and released once on A; the same while the store's slot moves to another
//! primary (live resharding: `CLUSTER SETSLOT ... IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT
//! NODE`), with the audit chain whole afterwards.
//!
//! Everything is real: `redis-server --cluster-enabled yes` nodes joined by `redis-cli
//! --cluster create`, the `jitgate` binary twice, a recording origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
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

/// Two gateways on `cluster`, both ready.
async fn two_gateways(cluster: &RedisCluster, origin: &Origin) -> (Gateway, Gateway) {
    let pem = signing_key_pem();
    let cfg = config(&cluster.url(), origin);
    let a = Gateway::builder(&cfg).file("key.pem", pem.clone()).start();
    let b = Gateway::builder(&cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    (a, b)
}

/// Waits for every held request: each answered 200 by the origin.
async fn released(a: &Gateway, held: Vec<(&str, tokio::task::JoinHandle<Response>)>) {
    for (name, h) in held {
        let resp = tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .unwrap_or_else(|_| panic!("{name} was not released\n{}", a.stderr_text()))
            .expect("task");
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    }
}

/// `jitgate audit verify --admin <gw>` exits 0: the store's chain is whole.
async fn audit_verifies(gw: &Gateway) {
    let out = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["audit", "verify", "--admin", gw.admin_url()])
        .args(["--token", &token_of("ops")])
        .env_remove("JITGATE_ADMIN_URL")
        .env_remove("JITGATE_ADMIN_TOKEN")
        .stdin(Stdio::null())
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

/// The origin saw exactly these request paths, each once.
async fn origin_saw_once(origin: &Origin, names: &[&str]) {
    let reqs = origin.wait_for(names.len(), SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(800))
        .await;
    let mut paths: Vec<String> = reqs.iter().map(|r| r.path().to_string()).collect();
    paths.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("/deploy/{n}")).collect();
    want.sort();
    assert_eq!(paths, want, "{reqs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_on_one_replica_approved_through_the_other_released_once_on_a_cluster() {
    // Three primaries with a replica each: writes also wait for the slot's replica.
    let cluster = RedisCluster::start(3, 1);
    let origin = Origin::start();
    let (a, b) = two_gateways(&cluster, &origin).await;

    let names = ["one", "two", "three"];
    let held: Vec<_> = names.iter().map(|n| (*n, hold_deploy(&a, n))).collect();
    let ids = pending_deploys(&b, names.len()).await;
    assert_eq!(origin.count(), 0, "forwarded before approval");
    for id in ids.values() {
        let r = approve(&b, "alice", id, "ship it").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    released(&a, held).await;
    origin_saw_once(&origin, &names).await;
    for id in ids.values() {
        wait_status(&a, id, "EXECUTED", SOON).await;
        wait_status(&b, id, "EXECUTED", SOON).await;
    }

    // Every key is in the store's one slot, on the primary that serves it (and its replica
    // has them too): nothing was written elsewhere.
    let slot = cluster.slot_of("{jit}");
    assert_eq!(slot, 4875, "the slot the README names");
    let owner = cluster.owner_of(slot);
    let in_slot: u64 = cluster
        .node_cli(
            owner,
            false,
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
        )
        .trim()
        .parse()
        .unwrap();
    assert!(in_slot > 0, "no key in the store's slot {slot}");
    for port in cluster.primaries() {
        let keys: u64 = cluster
            .node_cli(port, false, &["DBSIZE"])
            .trim()
            .parse()
            .unwrap();
        let want = if port == owner { in_slot } else { 0 };
        assert_eq!(
            keys, want,
            "primary {port} holds keys outside the store's slot"
        );
    }
    audit_verifies(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_requests_are_released_once_while_the_stores_slot_moves_to_another_primary() {
    let cluster = RedisCluster::start(3, 0);
    let origin = Origin::start();
    let (a, b) = two_gateways(&cluster, &origin).await;

    let names = ["one", "two", "three", "four"];
    let held: Vec<_> = names.iter().map(|n| (*n, hold_deploy(&a, n))).collect();
    let ids = pending_deploys(&b, names.len()).await;
    // One approved before the move.
    approve_retrying(&b, &ids["/deploy/one"]).await;

    // The slot starts moving; part of its keys are on the new primary while another
    // approval is asked for through B (the cluster answers TRYAGAIN/ASK until it is done).
    let slot = cluster.slot_of("{jit}");
    let from = cluster.owner_of(slot);
    let to = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != from)
        .expect("another primary");
    let m = cluster.begin_migration(slot, to);
    cluster.migrate_keys(&m, 5);
    let during = {
        let id = ids["/deploy/two"].clone();
        let b = &b;
        async move { approve_retrying(b, &id).await }
    };
    let moving = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        tokio::task::block_in_place(|| {
            cluster.migrate_keys(&m, 10);
            std::thread::sleep(Duration::from_millis(300));
            cluster.finish_migration(&m);
        });
    };
    tokio::join!(during, moving);
    assert_eq!(cluster.owner_of(slot), to, "the slot did not move");

    // After the move: the rest are approved through A and B.
    approve_retrying(&a, &ids["/deploy/three"]).await;
    approve_retrying(&b, &ids["/deploy/four"]).await;

    released(&a, held).await;
    origin_saw_once(&origin, &names).await;
    for id in ids.values() {
        wait_status(&a, id, "EXECUTED", SOON).await;
        wait_status(&b, id, "EXECUTED", SOON).await;
    }
    // The old primary kept nothing; the chain moved whole.
    let left: u64 = cluster
        .node_cli(from, false, &["DBSIZE"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(left, 0, "keys left behind on {from}");
    audit_verifies(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_primary_of_the_stores_slot_is_replaced_and_held_requests_are_released_once() {
    let mut cluster = RedisCluster::start(3, 1);
    let origin = Origin::start();
    let (a, b) = two_gateways(&cluster, &origin).await;

    let names = ["before", "after"];
    let held: Vec<_> = names.iter().map(|n| (*n, hold_deploy(&a, n))).collect();
    let ids = pending_deploys(&b, names.len()).await;
    // Approved before the primary dies: the write waited for the slot's replica, so the
    // replica promoted in its place has it.
    approve_retrying(&b, &ids["/deploy/before"]).await;

    let slot = cluster.slot_of("{jit}");
    let old = cluster.owner_of(slot);
    cluster.kill(old);
    // The cluster sees it fail (node timeout 5 s) and promotes its replica.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now_owner = std::panic::catch_unwind(|| cluster.owner_of(slot)).ok();
        if now_owner.is_some_and(|p| p != old) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replica took slot {slot}:\n{}",
            cluster.cli(&["CLUSTER", "NODES"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    approve_retrying(&b, &ids["/deploy/after"]).await;

    released(&a, held).await;
    origin_saw_once(&origin, &names).await;
    for id in ids.values() {
        wait_status(&a, id, "EXECUTED", SOON).await;
        wait_status(&b, id, "EXECUTED", SOON).await;
    }
    audit_verifies(&a).await;
}
