//! Red team on 2d4c623 / 2acd492 (third round on the replica leases): the one task per
//! ticket tending this replica's holders (`Engine::leave`, `Engine::tend`), a lapsed lease
//! re-joining (`Store::renew_replica` -> `Engine::unlist_held` / `relist_held`), the hold
//! taken before a ticket is created, and bare audit appends riding the group commit.
//!
//! Every test runs the real `jitgate` binary against its own `redis-server` and a recording
//! origin. Approve-route requests carry an explicit `Host` so that a request resumed on
//! another replica has the same fingerprint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::holders::*;
use common::*;

// === a lapsed lease re-joins ===

/// Red team (Low, fixed: a renewal seen to land more than a lease after the last one counts as a lapse): a lapse is learnt only from the answer of the one renewal that finds the
/// lease gone (`SET .. PX .. GET` answering nil). When that answer is lost (it comes after the
/// renewal's own timeout, `max(reconcile_interval, 1 s)`: a slow store, a partition healing,
/// a replica that ran again after a stall and whose first round trip is slow), the renewal
/// is logged at debug level and forgotten (`renew_lease`, `Err(e) => tracing::debug!`), yet
/// the `SET` landed: the next renewal finds the lease current (`Ok(true)`), `unlist_held`
/// never runs and nothing re-joins. A was dropped from the ticket while it was stopped (B's
/// hold ended and B's leave dropped A's expired lease); A runs again with its client still
/// held, but is never listed again, so B's next client going away cancels the ticket under
/// A's live client (the very scenario `leases2_a_replica_dropped_while_stalled_...` fixed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases3_a_lapse_whose_renewal_answer_was_lost_is_never_rejoined() {
    let redis = RedisServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let origin = Origin::start();
    let pem = signing_key_pem();
    // A reaches the store through the relay, B directly.
    let a_cfg = config(
        &format!("redis://127.0.0.1:{}/0", relay.port),
        &origin.url(),
        "60s",
        "",
    );
    let a = Gateway::builder(&a_cfg)
        .file("key.pem", pem.clone())
        .start();
    let b_cfg = config(&redis.url(), &origin.url(), "8s", "");
    let b = Gateway::builder(&b_cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;

    let b_started = tokio::time::Instant::now();
    let on_b = spawn_deploy(&b, "/deploy/lost-renewal", Who::User("bob"), None);
    let id = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    let b_id = holders(&wait_holders(&b, &id, 1).await)[0].clone();
    let on_a = spawn_deploy(&a, "/deploy/lost-renewal", Who::User("bob"), None);
    let t = wait_holders(&b, &id, 2).await;
    let a_id = holders(&t).into_iter().find(|h| *h != b_id).unwrap();
    // A freezes (its client's connection stays open); its lease runs out after 5 s.
    a.signal(Sig::Stop);
    // B's 8 s hold ends: 202; B leaves and drops A, whose lease ran out.
    let rb = answered(on_b).await;
    assert_eq!(rb.status, 202, "{}", rb.text());
    assert!(b_started.elapsed() > Duration::from_secs(6));
    let t = wait_holders(&b, &id, 0).await;
    assert_eq!(t["status"], "PENDING", "{t}");
    // A runs again. Its first renewal lands (and finds the lease gone), but its answer comes
    // 2.5 s late, past the renewal's 1 s timeout.
    relay.delay_answer_to(
        format!("replica:{a_id}").as_bytes(),
        Duration::from_millis(2500),
    );
    a.signal(Sig::Cont);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(relay.sprung(), 1, "A's renewal answer was not delayed");
    assert!(!on_a.is_finished(), "A's client was answered");
    let listed = holders(&ticket(&b, &id).await);
    // B's client comes back for the ticket, and then goes away.
    come_back_and_go(&b, "/deploy/lost-renewal", &id, |h| h.contains(&b_id)).await;
    let t = ticket(&b, &id).await;
    assert_eq!(
        t["status"], "PENDING",
        "A's client is held and A renews its lease again, but the renewal that found the \
         lease gone timed out, so A never re-joined (holders once A ran again: {listed:?}, A \
         is {a_id}); B's client going away cancelled the ticket under A's live client: {t}"
    );
    let r = approve(&b, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answered(on_a).await.status, 200);
    assert_eq!(origin.wait_for(1, SOON).await.len(), 1);
}

// === bare audit appends in the group commit ===

/// `POST <path>` on `gw` with `Jit-Break-Glass` on a route that allows none: refused (403)
/// and audited with `Engine::append_reliably` (`break_glass.refused`).
async fn refused_break_glass(gw_url: String, path: &'static str) -> Response {
    Client::http1()
        .with_timeout(Duration::from_secs(30))
        .send(
            "POST",
            &format!("{gw_url}{path}"),
            &[
                ("host", HOST),
                ("content-type", "application/json"),
                ("x-user", "mallory"),
                ("x-groups", "dev"),
                ("jit-break-glass", "let me in"),
            ],
            "{}".to_string(),
        )
        .await
}

/// The `break_glass.refused` events in the store's audit stream for `path`.
fn refusals_of(redis: &RedisServer, path: &str) -> usize {
    redis
        .cli(&["XRANGE", "jit:audit", "-", "+"])
        .lines()
        .filter(|l| l.contains("break_glass.refused") && l.contains(path))
        .count()
}

/// Red team (Low, fixed: an append whose caller gave up before its turn is withdrawn): an event recorded with `Engine::append_reliably` (a refused break-glass,
/// a rule-table change) is tried once for `AUDIT_TRY` (2 s), then retried in the background;
/// a bare append now rides the group commit in a task of its own (`RedisStore::enqueue`),
/// so one that is still queued for the replica's turn at the audit head when the caller's
/// 2 s run out is written anyway, and its retry writes it a second time. Before 2d4c623 the
/// caller's timeout dropped the queued `APPEND_AUDIT` (nothing sent, nothing written) and
/// the retry wrote it once. Here the turn ahead of it (another refusal's append) gets its
/// answer 2.5 s late: the second refusal, never sent before then, is recorded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases3_an_append_queued_behind_a_slow_turn_is_recorded_twice() {
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
    // Warm-up: the group commit's script is loaded.
    let r = refused_break_glass(a.data_url().to_string(), "/deploy/warm-up").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(refusals_of(&redis, "/deploy/warm-up"), 1);

    relay.delay_answer_to(b"/deploy/first-refusal", Duration::from_millis(2500));
    let first = tokio::spawn(refused_break_glass(
        a.data_url().to_string(),
        "/deploy/first-refusal",
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(refused_break_glass(
        a.data_url().to_string(),
        "/deploy/second-refusal",
    ));
    assert_eq!(first.await.unwrap().status, 403);
    assert_eq!(second.await.unwrap().status, 403);
    assert_eq!(
        relay.sprung(),
        1,
        "the first append's answer was not delayed"
    );
    // Retries come 250 ms after a failed try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        refusals_of(&redis, "/deploy/second-refusal"),
        1,
        "one refused break-glass, queued behind a slow turn at the audit head when its \
         caller's 2 s try ran out, was written by the group commit anyway and again by the \
         retry"
    );
}

// === one task per ticket: what it costs ===

/// Red team (Medium, fixed: a store error on creation lets go of the hold; refused leaves are retried for 60 s at most): the hold is now taken before the creation is sent, and a guard
/// dropped armed asks `Engine::leave`, whose task retries a leave the store refuses with
/// backoff (up to a lease apart) for as long as the store refuses it, with no end but
/// shutdown (`Engine::tend`, `Left::Failed`). So while the store is down (or timing out),
/// every request that reaches an approve route (any requester, anonymous ones too: no cap is
/// checked without the store) is answered 503 yet leaves behind a task and a `tending`
/// entry for a fresh ticket id that was never written, each trying its leave against the
/// store again every few seconds until the store is back. Nothing bounds them but the length
/// of the outage times the request rate; when the store returns, all of them hit it at
/// once before finding nothing to leave. Here 150 requests answered 503 during a 4 s outage
/// come back as ~170 reads of tickets that never existed in the first lease after recovery,
/// from a replica that holds nothing (none without the requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases3_requests_refused_during_an_outage_each_leave_a_retrying_task() {
    const N: usize = 150;
    let mut redis = RedisServer::start();
    let origin = Origin::start();
    let mut gws = replicas(&redis, &origin, &["60s"], "").await;
    let a = gws.pop().unwrap();
    // What an idle replica reads in the window measured below (lease renewals, the outbox):
    // Redis counts the GETs its scripts make too.
    let g0 = calls(&redis, "get");
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let idle = calls(&redis, "get") - g0;

    redis.stop();
    let mut sent = Vec::new();
    for i in 0..N {
        let url = a.data_url().to_string();
        sent.push(tokio::spawn(async move {
            deploy(&url, &format!("/deploy/outage-{i}"), Who::User("bob"), None).await
        }));
    }
    for s in sent {
        let r = tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
    }
    // The outage goes on a few seconds; then the store comes back (empty, its counters
    // from zero: none of those tickets was ever written).
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let gets = calls(&redis, "get");
    assert_eq!(a.stderr_text().matches("held for approval").count(), 0);
    assert!(
        gets < idle + 30,
        "{gets} GETs in the first lease after the store came back ({idle} idle), from a \
         replica that holds nothing: each of the {N} requests answered 503 during the outage \
         left a task retrying the leave of a ticket that was never created"
    );
    origin
        .assert_no_new_requests(Duration::from_millis(100))
        .await;
}
