//! Red team on batch decisions in bulk (`POST /v1/tickets/decide` through
//! `Api::decide_many`: one `Store::get_many`, then `Store::transition_many`).
//!
//! Every test runs the real `jitgate` binary (Redis store on its own `redis-server`) and a
//! recording origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::redteam::{config, spawn_send, BOB, WAIT};
use common::*;

/// A gateway on `redis` with one approve route `prod-deploy` (`POST /deploy/**`, decided by
/// `group:oncall`).
fn start(origin: &Origin, redis: &RedisServer) -> Gateway {
    let sections = format!(
        "[store]\nkind = \"redis\"\nurl = \"{}\"\n\n[approvals]\nhold_timeout = \"30s\"\n",
        redis.url()
    );
    let routes = r#"[[routes]]
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
    Gateway::start(&config(&origin.url(), "", &sections, "", routes))
}

/// The ids of the pending tickets once there are `n` of them.
async fn pending_ids(gw: &Gateway, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = admin_call(gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
        let ids: Vec<String> = r.json()["tickets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= n {
            return ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} pending tickets: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One ticket record the gateway cannot read (written by another version, or damaged) must
/// cost only its own decision. One at a time, the other ticket is approved and its request
/// released while the unreadable one is refused 503; in bulk, `get_many` fails as a whole,
/// so the whole batch is refused 503 and nothing is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_survives_an_unreadable_ticket_record() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let gw = start(&origin, &redis);
    wait_store_ok(&gw).await;
    let good = spawn_send("POST", gw.url("/deploy/good"), &BOB, "{}");
    let _bad = spawn_send("POST", gw.url("/deploy/bad"), &BOB, "{}");
    let ids = pending_ids(&gw, 2).await;
    let good_id = {
        let mut found = None;
        for id in &ids {
            let t = common::redteam::ticket(&gw, id).await.json();
            if t["request"]["path"] == "/deploy/good" {
                found = Some(id.clone());
            }
        }
        found.expect("the good ticket")
    };
    let bad_id = ids.iter().find(|id| **id != good_id).unwrap().clone();
    let key = format!("jit:{{{bad_id}}}:t");
    assert_eq!(
        redis.cli(&["SET", &key, "{\"not\":\"a ticket\"}"]).trim(),
        "OK"
    );

    let body = serde_json::json!({ "ids": [good_id, bad_id], "decision": "approve" });
    let r = admin_call(
        &gw,
        "alice",
        "POST",
        "/v1/tickets/decide",
        &body.to_string(),
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "one unreadable ticket refused the whole batch: {}",
        r.text()
    );
    let results = r.json()["results"].as_array().cloned().unwrap();
    assert_eq!(results[0]["status"], 200, "{results:?}");
    let released = tokio::time::timeout(WAIT, good).await.unwrap().unwrap();
    assert_eq!(released.status, 200, "{}", released.text());
    assert_eq!(origin.count(), 1);
}

/// Red team 3 (`decide_many` with a peekable iterator): every id of a mixed batch gets its
/// own outcome, in order: garbage 404, a pending ticket 200, an unknown well-formed id 404,
/// the same ticket again 409 (decided once, not twice), an unreadable record its own error,
/// another pending ticket 200, and the first again 409. Each released request goes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_batch_gives_each_id_its_own_outcome() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let gw = start(&origin, &redis);
    wait_store_ok(&gw).await;
    let a = spawn_send("POST", gw.url("/deploy/a"), &BOB, "{}");
    let b = spawn_send("POST", gw.url("/deploy/b"), &BOB, "{}");
    let _u = spawn_send("POST", gw.url("/deploy/u"), &BOB, "{}");
    let ids = pending_ids(&gw, 3).await;
    let mut by_path = std::collections::HashMap::new();
    for id in &ids {
        let t = common::redteam::ticket(&gw, id).await.json();
        by_path.insert(
            t["request"]["path"].as_str().unwrap().to_string(),
            id.clone(),
        );
    }
    let (a_id, b_id, u_id) = (
        by_path["/deploy/a"].clone(),
        by_path["/deploy/b"].clone(),
        by_path["/deploy/u"].clone(),
    );
    let key = format!("jit:{{{u_id}}}:t");
    assert_eq!(
        redis.cli(&["SET", &key, "{\"not\":\"a ticket\"}"]).trim(),
        "OK"
    );
    let last = a_id.chars().last().unwrap();
    let unknown = format!(
        "{}{}",
        &a_id[..a_id.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let batch = [
        "garbage".to_string(),
        a_id.clone(),
        unknown.clone(),
        a_id.clone(),
        u_id.clone(),
        b_id.clone(),
        a_id.clone(),
    ];
    let body = serde_json::json!({ "ids": batch, "decision": "approve" });
    let r = admin_call(
        &gw,
        "alice",
        "POST",
        "/v1/tickets/decide",
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().cloned().unwrap();
    assert_eq!(results.len(), batch.len(), "{results:?}");
    let statuses: Vec<u64> = results
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    for (i, x) in results.iter().enumerate() {
        assert_eq!(
            x["id"], batch[i],
            "result {i} names its own id: {results:?}"
        );
    }
    assert_eq!(statuses[0], 404, "garbage: {results:?}");
    assert_eq!(statuses[1], 200, "first a: {results:?}");
    assert_eq!(statuses[2], 404, "unknown: {results:?}");
    assert_eq!(statuses[3], 409, "a again: {results:?}");
    assert!(statuses[4] >= 500, "unreadable: {results:?}");
    assert_eq!(statuses[5], 200, "b: {results:?}");
    assert_eq!(statuses[6], 409, "a a third time: {results:?}");
    let ra = tokio::time::timeout(WAIT, a).await.unwrap().unwrap();
    let rb = tokio::time::timeout(WAIT, b).await.unwrap().unwrap();
    assert_eq!((ra.status.as_u16(), rb.status.as_u16()), (200, 200));
    assert_eq!(origin.count(), 2);
    let ev = admin_call(&gw, "ops", "GET", &format!("/v1/audit?ticket={a_id}"), "").await;
    let approved = ev.json()["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["kind"] == "ticket.approved")
        .count();
    assert_eq!(approved, 1, "one approval recorded for a: {}", ev.text());
}
