//! Red team on 21b0e47 (replica leases, second round): `Engine::list_holder` and the `listed`
//! flag of a held entry, `relist_held`, the look loop of `Engine::leave_ticket`
//! (`look_again`, `ticket::drop_expired_holders`), `Ticket::gone`, and `leave_once`.
//!
//! Every test runs the real `jitgate` binary (one to three replicas) against its own
//! `redis-server` and a recording origin. Approve-route requests carry an explicit `Host` so
//! that a request resumed on another replica has the same fingerprint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::holders::*;
use common::*;

// === the look loop ===

/// Red team (Medium, fixed: one task per ticket tends its holders, `Engine::leave`): every client of a replica that goes away while another replica holds
/// the ticket spawns a look loop of its own (`Engine::leave_ticket`), which polls the store
/// once per lease (a GET, an MGET of leases, another GET) for as long as the ticket stays
/// pending with `gone` set and a holder listed: up to its expiry (`ticket_ttl`, 15 min by
/// default) while the other replica keeps holding (two staggered requests there never let
/// it leave). Nothing de-duplicates the loops per ticket: any requester (anonymous ones
/// too) who holds one request and then connects and drops an identical one N times on
/// another replica leaves N loops (tasks, and store reads for every gateway) behind. Here
/// 12 connect-and-drop cycles on A, while B holds, leave A looking 12 times per lease
/// instead of once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases2_each_client_gone_spawns_a_look_loop_of_its_own() {
    const CYCLES: usize = 12;
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["60s", "60s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_b = spawn_deploy(&b, "/deploy/loops", Who::User("bob"), None);
    let id = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    wait_holders(&b, &id, 1).await;
    // Baseline: MGETs (lease reads) with nobody looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m0 = calls(&redis, "mget");
    tokio::time::sleep(Duration::from_millis(5300)).await;
    let baseline = calls(&redis, "mget") - m0;

    for _ in 0..CYCLES {
        let on_a = spawn_deploy(&a, "/deploy/loops", Who::User("bob"), None);
        wait_holders(&a, &id, 2).await;
        abort(on_a).await;
        let t = wait_holders(&a, &id, 1).await;
        assert_eq!(t["gone"], true, "{t}");
    }
    // Two leases' worth of looks, untouched by the test's own reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m1 = calls(&redis, "mget");
    tokio::time::sleep(Duration::from_millis(10_600)).await;
    let looks = calls(&redis, "mget") - m1;
    assert_eq!(ticket(&a, &id).await["status"], "PENDING");
    abort(on_b).await;
    // One loop per ticket looks at most once per lease: about 2 in the window (+ baseline).
    assert!(
        looks <= baseline + 4,
        "{looks} lease reads in two leases (baseline {baseline} per lease) after {CYCLES} clients \
         went away on one replica: one look loop per client gone, each until the ticket expires"
    );
}

/// Red team (Low, fixed: a look the store cannot answer is made again): the look loop ends for good the first time `look_again` cannot read the
/// ticket (`Some(t) if ... => continue, _ => return`, engine.rs `leave_ticket`): one store
/// timeout (a failover, a stall of a few seconds) at the moment of a look, and nothing looks
/// again. A's client went away while B held; B then died holding; the store stalls through
/// A's first look. Once it answers again, B's lease has long run out and every client is
/// gone, yet the ticket stays PENDING (approvable) until `ticket_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases2_one_store_timeout_during_a_look_ends_the_looking() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["60s", "60s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let on_b = spawn_deploy(&b, "/deploy/stall", Who::User("bob"), None);
    let id = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    let on_a = spawn_deploy(&a, "/deploy/stall", Who::User("bob"), None);
    wait_holders(&a, &id, 2).await;
    abort(on_a).await;
    let t = wait_holders(&a, &id, 1).await;
    let left_at = tokio::time::Instant::now();
    assert_eq!(t["gone"], true, "{t}");
    // B dies holding.
    b.signal(Sig::Kill);
    let _ = tokio::time::timeout(SOON, on_b).await;
    // The store stalls from before A's first look (5 s lease + a 300 ms tick after the
    // leave) until after both of that look's reads timed out (3 s each).
    tokio::time::sleep_until(left_at + Duration::from_millis(4000)).await;
    let paused = redis.cli(&["CLIENT", "PAUSE", "8500", "ALL"]);
    assert_eq!(paused.trim(), "OK", "{paused}");
    tokio::time::sleep_until(left_at + Duration::from_millis(13_000)).await;
    // The store answers again; B's lease ran out long ago. Two more leases for a look.
    let t = wait_decided(&a, &id, Duration::from_secs(14)).await;
    assert_eq!(
        t["status"], "CANCELLED",
        "every client is gone and the only holder's lease ran out, yet nothing looks again \
         after one store timeout: {t}"
    );
    origin
        .assert_no_new_requests(Duration::from_millis(200))
        .await;
    assert_eq!(origin.count(), 0);
}

// === the `listed` flag ===

/// Red team (Low, fixed: a renewal that finds the lease ran out re-joins every held ticket; the final red team's "held unlisted" finding, back by another road): a
/// replica's held entry remembers `listed = true` for as long as a request of it holds, but
/// the ticket may stop listing it meanwhile: another replica drops it as soon as its lease
/// is seen run out (a stall of the replica, a lease write lost in a failover, a partition).
/// When it runs again it renews its lease, yet nothing re-lists it (`relist_held` only
/// joins entries with `listed == false`), so it holds unlisted: the next client of the
/// ticket going away on another replica cancels it under A's live client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases2_a_replica_dropped_while_stalled_holds_unlisted_after_it_runs_again() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["60s", "8s"], "").await;
    let b = gws.pop().unwrap();
    let a = gws.pop().unwrap();

    let b_started = tokio::time::Instant::now();
    let on_b = spawn_deploy(&b, "/deploy/stalled", Who::User("bob"), None);
    let id = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    let b_id = holders(&wait_holders(&b, &id, 1).await)[0].clone();
    let on_a = spawn_deploy(&a, "/deploy/stalled", Who::User("bob"), None);
    let t = wait_holders(&b, &id, 2).await;
    let a_id = holders(&t).into_iter().find(|h| *h != b_id).unwrap();
    // A freezes (its client's connection stays open); its lease runs out after 5 s.
    a.signal(Sig::Stop);
    // B's 8 s hold ends: its client is answered 202 (to resume); B leaves and drops A,
    // whose lease ran out. Nothing is cancelled.
    let rb = answered(on_b).await;
    assert_eq!(rb.status, 202, "{}", rb.text());
    assert!(b_started.elapsed() > Duration::from_secs(6));
    let t = wait_holders(&b, &id, 0).await;
    assert_eq!(t["status"], "PENDING", "{t}");
    // A runs again: it renews its lease, and its client is still held.
    a.signal(Sig::Cont);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = ticket(&b, &id).await;
    assert!(!on_a.is_finished(), "A's client was answered: {t}");
    let listed = holders(&t);
    // B's client comes back for the ticket, and then goes away.
    come_back_and_go(&b, "/deploy/stalled", &id, |h| h.contains(&b_id)).await;
    let t = ticket(&b, &id).await;
    assert_eq!(
        t["status"], "PENDING",
        "A's client is held and alive (A renewed its lease), yet A was never listed again \
         (holders after A ran again: {listed:?}, A was {a_id}), so B's client going away \
         cancelled the ticket under it: {t}"
    );
    // And A's client is still released once on approval.
    let r = approve(&b, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answered(on_a).await.status, 200);
    assert_eq!(origin.wait_for(1, SOON).await.len(), 1);
}

// === leaves ===

/// Red team (Low, fixed: a refused leave is tried again with backoff): a leave whose write the store refuses (here `NOREPLICAS`, a moment of
/// `min-replicas-to-write` not met; equally a timeout that never lands) is never tried
/// again (`leave_once` returns `None`, `leave_ticket` gives up; `relist_held` retries
/// joins, nothing retries leaves). The replica, alive and renewing its lease, stays listed
/// for good, so the ticket whose only client went away stays PENDING (approvable) until
/// `ticket_ttl`, though the store answers again a second later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases2_a_leave_the_store_refused_once_is_never_tried_again() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["60s"], "").await;
    let a = gws.pop().unwrap();

    let on_a = spawn_deploy(&a, "/deploy/refused", Who::User("bob"), None);
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    wait_holders(&a, &id, 1).await;
    let set = redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "1"]);
    assert_eq!(set.trim(), "OK", "{set}");
    abort(on_a).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let set = redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    assert_eq!(set.trim(), "OK", "{set}");
    let t = wait_decided(&a, &id, Duration::from_secs(12)).await;
    assert_eq!(
        t["status"], "CANCELLED",
        "its only client went away and the store answers again, yet the ticket stays pending, \
         listing a replica that holds nothing on it: {t}"
    );
    assert_eq!(origin.count(), 0);
}

/// Red team (Low, fixed: the hold is taken before the creation is sent): a request lists its replica among the holders as it opens the ticket
/// (`open_ticket` pushes `engine.replica()` into the fresh ticket), but its `HoldGuard` only
/// exists once `hold_then_finish` begins. A client that goes away while the create is in
/// flight (here its answer comes 2 s late, the write itself landing at once; equally a
/// client timeout shorter than a slow store) drops the request before any guard: nothing
/// ever leaves, the replica (alive, renewing its lease) stays listed, and the ticket whose
/// only client went away stays PENDING (approvable) until `ticket_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases2_a_client_gone_while_its_ticket_is_created_leaves_it_listed_for_good() {
    let redis = RedisServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let origin = Origin::start();
    let cfg = config(
        &format!("redis://127.0.0.1:{}/0", relay.port),
        &origin.url(),
        "60s",
        "",
    );
    let a = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&a).await;

    // Warm-up: the create script is loaded (the first EVALSHA would answer NOSCRIPT).
    let warm = spawn_deploy(&a, "/deploy/warm-up", Who::User("carol"), None);
    let warm_id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    abort(warm).await;
    wait_status(&a, &warm_id, "CANCELLED", SOON).await;

    relay.delay_answer_to(b"ticket.created", Duration::from_secs(2));
    let on_a = spawn_deploy(&a, "/deploy/created", Who::User("bob"), None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    abort(on_a).await;
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    assert_eq!(relay.sprung(), 1, "the create's answer was not delayed");
    let t = wait_decided(&a, &id, Duration::from_secs(12)).await;
    assert_eq!(
        t["status"], "CANCELLED",
        "its only client went away before the hold began, yet the ticket lists a replica \
         that holds nothing on it and stays pending: {t}"
    );
    assert_eq!(origin.count(), 0);
}
