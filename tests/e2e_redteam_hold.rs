//! Red team on replica-wide holders (d9c7684: `Ticket::holders`, `join_hold`, `leave_hold`,
//! `HoldGuard` spanning the whole hold) and on the Redis group commit (05b2470:
//! `RedisStore::commit_queued`, `Group::commit`). The store-level half of the group-commit
//! attack (a change abandoned before its turn) is in crates/jitgate-store/tests/contract.rs
//! (`redis_an_abandoned_change_never_lands_over_a_later_decision`).
//!
//! Every test runs the real `jitgate` binary (two replicas where it matters) against its own
//! `redis-server` and a recording origin. Approve-route requests carry an explicit `Host` so
//! that a request resumed on another replica has the same fingerprint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::holders::*;
use common::*;

// === holders ===

/// Red team, holders (Low, fixed): a replica that dies while holding (SIGKILL, OOM kill,
/// node loss: no `HoldGuard` drop runs) stayed listed in `holders`, and a restarted replica
/// draws a new id, so the last live client going away only left and the ticket stayed
/// PENDING (approvable) until `ticket_ttl`. Now replicas renew a lease every reconciliation
/// tick; a leave drops the holders whose lease ran out, and a client gone while others are
/// listed looks again once their lease could have run out: the ticket is CANCELLED, never
/// forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holders_a_replica_killed_while_holding_does_not_keep_the_ticket_alive() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "30s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_a = spawn_deploy(&a, "/deploy/crash", Who::User("bob"), None);
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    let on_b = spawn_deploy(&b, "/deploy/crash", Who::User("bob"), None);
    wait_holders(&b, &id, 2).await;

    // A dies without running any drop; its client sees the connection close.
    a.signal(Sig::Kill);
    // (the client task panics on the cut connection)
    let _ = tokio::time::timeout(SOON, on_a).await;
    // B's client goes away: B leaves at once; A's lease (5 s here) runs out, and B looks
    // again.
    abort(on_b).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let t = loop {
        let t = ticket(&b, &id).await;
        if t["status"] != "PENDING" || tokio::time::Instant::now() >= deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        t["status"], "CANCELLED",
        "every client went away, yet the dead replica's entry keeps the ticket pending: {t}"
    );
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 0);
}

/// Another requester (named, or anonymous with other credentials) can neither join, resume,
/// keep alive nor cancel bob's ticket: identical requests open tickets of their own, a
/// `Jit-Ticket` of bob's is refused before any hold (no holder written), and their clients
/// going away touch only their own tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holders_another_requester_can_neither_join_nor_cancel_nor_keep_alive() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "30s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let bob = spawn_deploy(&a, "/deploy/iso", Who::User("bob"), None);
    let bob_id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    let before = holders(&ticket(&a, &bob_id).await);
    assert_eq!(before.len(), 1);

    // Identical requests of others: tickets of their own.
    let mallory = spawn_deploy(&b, "/deploy/iso", Who::User("mallory"), None);
    let anon = spawn_deploy(&b, "/deploy/iso", Who::Anonymous("key-X"), None);
    let all = wait_pending_n(&a, 3).await;
    // Bob's ticket, resumed by each of them on either replica: refused at once.
    for gw in [&a, &b] {
        for who in [
            Who::User("mallory"),
            Who::Anonymous("key-X"),
            Who::Anonymous("key-Y"),
        ] {
            let r = deploy(gw.data_url(), "/deploy/iso", who, Some(&bob_id)).await;
            assert_eq!(r.status, 403, "{}", r.text());
            assert!(problem_type(&r).ends_with("mismatch"), "{}", r.text());
        }
    }
    let t = ticket(&a, &bob_id).await;
    assert_eq!(holders(&t), before, "another requester is listed: {t}");
    // Their clients go away: their own tickets are cancelled, bob's is untouched.
    abort(mallory).await;
    abort(anon).await;
    for (id, _) in all.iter().filter(|(id, _)| **id != bob_id) {
        wait_status(&a, id, "CANCELLED", SOON).await;
    }
    let t = ticket(&b, &bob_id).await;
    assert_eq!(t["status"], "PENDING", "{t}");
    assert_eq!(holders(&t), before);
    // And bob's going away cancels his, whatever the others did.
    abort(bob).await;
    wait_status(&b, &bob_id, "CANCELLED", SOON).await;
    assert_eq!(origin.count(), 0);
}

/// A cancelled ticket is never joined or revived: resuming it is refused without writing a
/// holder, an identical request opens a new ticket, and approving the old one is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holders_a_cancelled_ticket_is_never_joined_or_revived() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "30s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_a = spawn_deploy(&a, "/deploy/gone", Who::User("bob"), None);
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    abort(on_a).await;
    wait_status(&b, &id, "CANCELLED", SOON).await;

    let r = deploy(b.data_url(), "/deploy/gone", Who::User("bob"), Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let t = ticket(&b, &id).await;
    assert_eq!(t["status"], "CANCELLED");
    assert!(holders(&t).is_empty(), "{t}");

    let again = spawn_deploy(&b, "/deploy/gone", Who::User("bob"), None);
    let fresh = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    assert_ne!(fresh, id, "joined a cancelled ticket");
    let r = approve(&a, "alice", &id, "late").await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = approve(&a, "alice", &fresh, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answered(again).await.status, 200);
    origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), 1);
}

/// SIGTERM answers the held request 503 with its ticket and leaves the holders without
/// cancelling; the client resumes on the other replica, which joins; one approval releases
/// it once, and the ticket cannot be spent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holders_a_hold_ended_by_shutdown_resumes_elsewhere_and_releases_once() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "30s"], "").await;
    let b = gws.pop().unwrap();
    let mut a = gws.pop().unwrap();

    let on_a = spawn_deploy(&a, "/deploy/term", Who::User("bob"), None);
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    a.signal(Sig::Term);
    let r = answered(on_a).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("jit-ticket"), Some(id.as_str()));
    a.wait_exit(SOON);
    let t = wait_holders(&b, &id, 0).await;
    assert_eq!(t["status"], "PENDING", "shutdown cancelled the ticket: {t}");

    let resumed = spawn_deploy(&b, "/deploy/term", Who::User("bob"), Some(&id));
    wait_holders(&b, &id, 1).await;
    let r = approve(&b, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answered(resumed).await.status, 200);
    let r = deploy(b.data_url(), "/deploy/term", Who::User("bob"), Some(&id)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    origin.wait_for(1, SOON).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), 1);
    wait_status(&b, &id, "EXECUTED", SOON).await;
}

// === group commit ===

/// `token_uses = 2`, five identical requests of bob's coalesced on one ticket across two
/// replicas (three on A, two on B): the approval releases exactly two of them, whatever the
/// group commits batch together; the others are refused (used), none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_token_uses_with_coalesced_holders_release_exactly_that_many() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "30s"], "token_uses = 2").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let mut held = vec![spawn_deploy(&a, "/deploy/two", Who::User("bob"), None)];
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    held.push(spawn_deploy(&a, "/deploy/two", Who::User("bob"), None));
    held.push(spawn_deploy(&a, "/deploy/two", Who::User("bob"), None));
    held.push(spawn_deploy(&b, "/deploy/two", Who::User("bob"), None));
    held.push(spawn_deploy(&b, "/deploy/two", Who::User("bob"), None));
    wait_holders(&a, &id, 2).await;
    assert_eq!(pending(&a).await.len(), 1, "not coalesced");
    // Give every request time to be held on the ticket.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let r = approve(&b, "alice", &id, "two").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ok = 0;
    for h in held {
        let r = answered(h).await;
        match r.status.as_u16() {
            200 => ok += 1,
            403 => assert!(problem_type(&r).ends_with("approval-used"), "{}", r.text()),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!((ok, origin.count()), (2, 2));
    let t = wait_status(&a, &id, "EXECUTED", SOON).await;
    assert_eq!(t["releases"].as_array().map_or(0, Vec::len), 2, "{t}");
}

/// A batch decision on A races single approvals and denials of the same tickets on B while
/// their requests are held on both replicas (some coalesced across them): every ticket has
/// one outcome, every approved request reaches the origin exactly once, no denied one ever,
/// and the store's audit chain verifies (`jitgate audit verify --admin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batch_decision_racing_single_decisions_on_two_replicas() {
    const N: usize = 24;
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["40s", "40s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let mut held = Vec::new();
    for i in 0..N {
        let home = if i % 2 == 0 { &a } else { &b };
        held.push((
            i,
            spawn_deploy(home, &format!("/deploy/g{i}"), Who::User("bob"), None),
        ));
    }
    let tickets = wait_pending_n(&a, N).await;
    // A third coalesced on the other replica too.
    for i in (0..N).filter(|i| i % 3 == 0) {
        let other = if i % 2 == 0 { &b } else { &a };
        held.push((
            i,
            spawn_deploy(other, &format!("/deploy/g{i}"), Who::User("bob"), None),
        ));
    }
    let by_path: BTreeMap<String, String> = tickets
        .iter()
        .map(|(id, t)| {
            (
                t["request"]["path"].as_str().unwrap().to_string(),
                id.clone(),
            )
        })
        .collect();
    for i in (0..N).filter(|i| i % 3 == 0) {
        wait_holders(&a, &by_path[&format!("/deploy/g{i}")], 2).await;
    }
    assert_eq!(pending(&a).await.len(), N, "not coalesced");

    let ids: Vec<String> = by_path.values().cloned().collect();
    let batch = {
        let (url, ids) = (a.admin("/v1/tickets/decide"), ids.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({ "ids": ids, "decision": "approve" }).to_string();
            send(
                "POST",
                &url,
                &[
                    ("authorization", bearer_of("alice").as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
        })
    };
    // Singles on B, at the same time: every fourth ticket denied by carol, the rest approved.
    let mut singles = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let url = b.admin(&format!("/v1/tickets/{id}"));
        let (verb, body) = if k % 4 == 0 {
            ("deny", serde_json::json!({ "reason": "no" }))
        } else {
            ("approve", serde_json::json!({ "comment": "yes" }))
        };
        singles.push(tokio::spawn(async move {
            send(
                "POST",
                &format!("{url}/{verb}"),
                &[
                    ("authorization", bearer_of("carol").as_str()),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
        }));
    }
    let r = tokio::time::timeout(Duration::from_secs(30), batch)
        .await
        .expect("batch answers")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for s in singles {
        let r = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("single answers")
            .unwrap();
        assert!(
            matches!(r.status.as_u16(), 200 | 409),
            "{}: {}",
            r.status,
            r.text()
        );
    }
    let mut released: BTreeMap<String, usize> = BTreeMap::new();
    for (i, h) in held {
        let r = answered(h).await;
        let path = format!("/deploy/g{i}");
        match r.status.as_u16() {
            200 => *released.entry(path).or_default() += 1,
            403 => {}
            s => panic!("{path}: unexpected {s}: {}", r.text()),
        }
    }
    origin
        .assert_no_new_requests(Duration::from_millis(800))
        .await;
    let mut forwarded: BTreeMap<String, usize> = BTreeMap::new();
    for q in origin.requests() {
        *forwarded.entry(q.path().to_string()).or_default() += 1;
    }
    assert_eq!(forwarded, released, "origin vs answers");
    for (path, id) in &by_path {
        let t = ticket(&a, id).await;
        let status = t["status"].as_str().unwrap().to_string();
        let n = forwarded.get(path).copied().unwrap_or(0);
        match status.as_str() {
            "EXECUTED" => assert_eq!(n, 1, "{path}: {t}"),
            "DENIED" => assert_eq!(n, 0, "{path}: {t}"),
            other => panic!("{path} ended {other}: {t}"),
        }
        let kinds = audit_kinds(&a, id).await;
        let decisions = kinds
            .iter()
            .filter(|k| *k == "ticket.approved" || *k == "ticket.denied")
            .count();
        assert_eq!(decisions, 1, "{path}: two outcomes recorded: {kinds:?}");
    }
    let token = token_of("ops");
    let out = tokio::task::spawn_blocking({
        let admin = a.admin_url().to_string();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
                .args(["audit", "verify", "--admin", &admin, "--token", &token])
                .env_remove("JITGATE_ADMIN_URL")
                .env_remove("JITGATE_ADMIN_TOKEN")
                .output()
                .expect("run jitgate")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// === final red team on the leases (three Low findings, fixed) ===

/// Final red team (Low, fixed): a replica whose `join_hold` failed (the store did not
/// answer the write in time) went on holding without being listed, so the listed replica's
/// client going away cancelled the ticket under it. Now a request that cannot be listed is
/// answered 503 with its ticket (to resume), and its join, should it land late, is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_a_request_that_cannot_be_listed_is_answered_rather_than_held_unlisted() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "30s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_a = spawn_deploy(&a, "/deploy/unlisted", Who::User("bob"), None);
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    wait_holders(&a, &id, 1).await;
    // Writes stall past the store's 3 s operation timeout; reads go on. B resumes the ticket
    // (a read), and its join (a write) times out.
    let paused = redis.cli(&["CLIENT", "PAUSE", "4500", "WRITE"]);
    assert_eq!(paused.trim(), "OK", "{paused}");
    let paused_at = tokio::time::Instant::now();
    let on_b = spawn_deploy(&b, "/deploy/unlisted", Who::User("bob"), Some(&id));
    tokio::time::sleep_until(paused_at + Duration::from_millis(5500)).await;
    // The join landed late, and was undone: A alone holds.
    let t = wait_holders(&a, &id, 1).await;
    assert_eq!(t["status"], "PENDING", "{t}");
    // A's client goes: it was the last holder.
    abort(on_a).await;
    let rb = answered(on_b).await;
    assert_eq!(
        rb.status,
        503,
        "B held unlisted, and was answered when A's client went: {}",
        rb.text()
    );
    assert!(
        problem_type(&rb).ends_with("store-unavailable"),
        "{}",
        rb.text()
    );
    assert_eq!(rb.header("jit-ticket"), Some(id.as_str()));
    let t = wait_decided(&a, &id, SOON).await;
    assert_eq!(t["status"], "CANCELLED", "{t}");
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 0);
}

/// Final red team (Low, fixed): the client on A goes while B still holds, so A looks again
/// once B's lease could have run out; B was alive then, and dies later. A looked once only,
/// so the ticket stayed PENDING (approvable) with every client gone until `ticket_ttl`. Now
/// A keeps looking once per lease while the ticket is pending with a client gone as its last
/// word.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_a_holder_dying_after_the_second_look_still_lets_the_ticket_be_cancelled() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["60s", "60s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_b = spawn_deploy(&b, "/deploy/late-death", Who::User("bob"), None);
    let id = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    let on_a = spawn_deploy(&a, "/deploy/late-death", Who::User("bob"), None);
    wait_holders(&a, &id, 2).await;
    abort(on_a).await;
    let t = wait_holders(&a, &id, 1).await;
    assert_eq!(t["gone"], true, "{t}");
    // Past A's first look (5 s lease + a 300 ms tick), B dies holding.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert_eq!(ticket(&a, &id).await["status"], "PENDING");
    b.signal(Sig::Kill);
    let _ = tokio::time::timeout(SOON, on_b).await;
    let t = wait_decided(&a, &id, Duration::from_secs(30)).await;
    assert_eq!(
        t["status"], "CANCELLED",
        "every client went away, yet the ticket stays pending: {t}"
    );
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 0);
}

/// Final red team (Low, fixed): A's client goes while B and C hold; B's request is then
/// answered 202 (its client may resume); C dies. A's second look found C's lease run out and
/// cancelled the ticket, though B's client was told to come back for it. Now only a client
/// gone as the last word (`gone` on the ticket, cleared by a leave after an answer) lets a
/// look cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_a_second_look_never_cancels_what_a_later_answer_left_pending() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["30s", "2s", "30s"], "").await;
    let c = gws.pop().unwrap();
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_c = spawn_deploy(&c, "/deploy/answered", Who::User("bob"), None);
    let id = wait_pending_n(&c, 1).await.into_keys().next().unwrap();
    let on_a = spawn_deploy(&a, "/deploy/answered", Who::User("bob"), None);
    wait_holders(&c, &id, 2).await;
    let b_started = tokio::time::Instant::now();
    let on_b = spawn_deploy(&b, "/deploy/answered", Who::User("bob"), None);
    wait_holders(&c, &id, 3).await;
    // A's client goes half a second before B's 2 s hold ends; C dies as soon as B is answered, so
    // C's lease runs out before A's look.
    tokio::time::sleep_until(b_started + Duration::from_millis(1500)).await;
    abort(on_a).await;
    let rb = answered(on_b).await;
    assert_eq!(rb.status, 202, "{}", rb.text());
    c.signal(Sig::Kill);
    let _ = tokio::time::timeout(SOON, on_c).await;
    // A's look (and any after it) comes and goes.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let t = ticket(&a, &id).await;
    assert_eq!(
        t["status"], "PENDING",
        "cancelled though B's client was told to resume: {t}"
    );
    // B's client comes back for it and is released once.
    let r = approve(&a, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resumed = deploy(
        b.data_url(),
        "/deploy/answered",
        Who::User("bob"),
        Some(&id),
    )
    .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(origin.wait_for(1, SOON).await.len(), 1);
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
}
