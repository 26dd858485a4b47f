//! Red team on 3933638 (fourth round on the replica leases and the group commit): a renewal
//! gap counted as a lapse (`renew_lease`), `join_hold` / `look_again` checking the holds of
//! this replica inside the transition, leaves retried for `LEAVE_RETRY_FOR` at most, the
//! hold let go on a store error at creation, and bare audit appends whose caller is gone
//! withdrawn when a batch is taken (`RedisStore::enqueue`).
//!
//! Every test runs the real `jitgate` binary against its own `redis-server` and a recording
//! origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::holders::*;
use common::*;

/// The audit stream's lines (`XRANGE jit:audit - +`) containing `what`.
fn audit_lines(redis: &RedisServer, what: &str) -> usize {
    redis
        .cli(&["XRANGE", "jit:audit", "-", "+"])
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// A shadow route: every `GET /ping/**` records `shadow.matched` (`Engine::append_detached`,
/// as `ticket.forwarded` is) and is forwarded by the allow catch-all.
const SHADOW: &str = "[[routes]]\nname = \"watch\"\nmethods = [\"GET\"]\npath = \"/ping/**\"\naction = \"deny\"\nenforce = false\n\n[[routes]]\nname = \"everything-else\"";

async fn ping(url: String) -> Response {
    Client::http1()
        .with_timeout(Duration::from_secs(30))
        .send("GET", &url, &[("host", HOST)], String::new())
        .await
}

// === bare audit appends withdrawn when their caller is gone ===

/// Red team (Medium, fixed: `append_audit` no longer cuts a waiting caller short, so only a caller that gave up itself withdraws its append): `RedisStore::enqueue` now withdraws a queued bare append whose
/// receiver is gone when a batch is taken. That was aimed at `append_reliably` (which
/// retries), but every bare append's caller is `append_audit`, bounded by `op_timeout` (3 s)
/// (`RedisStore::bounded`), and `Engine::append_detached` — what records `ticket.forwarded`
/// for every released request (`release::Outcome`), and `shadow.matched` — never retries:
/// an append that waits more than `op_timeout` for its turn (more than `BATCH` = 250 changes
/// queued ahead of it while a turn is slow: a busy replica during a slow store) is dropped
/// from the queue and never written; only "audit append failed" (kind and ticket, not the
/// event) is logged. Before 3933638 it was written when its turn came. Here a released
/// request is forwarded (the origin answers 2.5 s later) while a slow turn at the audit head
/// holds 350 shadow appends queued: the request reached the origin, its `ticket.forwarded`
/// is in no audit stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases4_a_forwarded_request_whose_append_waited_behind_a_backlog_is_never_audited() {
    const N: usize = 350;
    let redis = RedisServer::start();
    let relay = Relay::start(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let origin = Origin::start();
    let cfg = config(
        &format!("redis://127.0.0.1:{}/0", relay.port),
        &origin.url(),
        "60s",
        "",
    )
    .replacen("[[routes]]\nname = \"everything-else\"", SHADOW, 1);
    let a = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&a).await;
    // Warm-up: the group commit's script is loaded.
    assert_eq!(ping(a.url("/ping/warm-up")).await.status, 200);
    let deadline = tokio::time::Instant::now() + SOON;
    while audit_lines(&redis, "/ping/warm-up") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "warm-up not audited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // bob's request, held, approved; the origin takes 2.5 s to answer it.
    let url = a.url("/deploy/audited");
    let held = tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(60))
            .send(
                "POST",
                &url,
                &[
                    ("host", HOST),
                    ("content-type", "application/json"),
                    ("x-user", "bob"),
                    ("x-groups", "dev"),
                    ("x-origin-behavior", "slow-headers/1500"),
                ],
                "{}".to_string(),
            )
            .await
    });
    let id = wait_pending_n(&a, 1).await.into_keys().next().unwrap();
    wait_holders(&a, &id, 1).await;
    let r = approve(&a, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The warm-up ping was the origin's first request; the release is its second.
    let deploy = origin.wait_for(2, SOON).await;
    assert!(
        deploy[1].path().starts_with("/deploy/"),
        "{}",
        deploy[1].path()
    );
    // A turn at the audit head is slow (its answer comes 5.2 s late: it times out at 3 s,
    // and the next turn, 250 changes, lands when the store answers again, within its 3 s) ...
    relay.delay_answer_to(b"/ping/slow-turn", Duration::from_millis(5200));
    let slow = tokio::spawn(ping(a.url("/ping/slow-turn")));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ... while the replica is busy: 350 shadow appends queue behind it.
    let mut pings = Vec::new();
    for i in 0..N {
        pings.push(tokio::spawn(ping(a.url(&format!("/ping/busy-{i}")))));
    }
    let r = answered(held).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(slow.await.unwrap().status, 200);
    for p in pings {
        assert_eq!(p.await.unwrap().status, 200);
    }
    assert_eq!(relay.sprung(), 1, "the slow turn's answer was not delayed");
    // Everything has had its turn by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let shadows = audit_lines(&redis, "shadow.matched");
    let forwarded = audit_lines(&redis, "ticket.forwarded");
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r.path().starts_with("/deploy/"))
            .count(),
        1
    );
    assert_eq!(
        forwarded,
        1,
        "bob's approved request reached the origin, but its ticket.forwarded, queued for the \
         audit head behind {N} shadow appends and a slow turn, waited more than op_timeout: \
         its caller (append_detached, which never retries) gave up and the queue withdrew it, \
         though the store answered again before its turn ({shadows} of the {} shadow.matched \
         events were written: the rest were withdrawn the same way)",
        N + 2
    );
}

// === a lapse learnt from a renewal gap ===

/// A TCP relay to Redis whose client-to-server direction can be held: what a partition
/// between one replica and the store looks like (its commands arrive late, or all at once
/// when it heals), while the store serves the other replicas. It records when each chunk
/// holding `pattern` arrived from the client.
struct Partition {
    port: u16,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Hold the client-to-server direction right after the next chunk holding the pattern.
    arm: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
    pattern: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Partition {
    async fn start(redis_port: u16) -> Partition {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let arm = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let pattern = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let p = Partition {
            port,
            held: held.clone(),
            arm: arm.clone(),
            seen: seen.clone(),
            pattern: pattern.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, bool)>();
                let (seen, pattern, arm) = (seen.clone(), pattern.clone(), arm.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = buf[..n].to_vec();
                        let pat = pattern.lock().unwrap().clone();
                        let hit = !pat.is_empty() && chunk.windows(pat.len()).any(|w| w == pat);
                        let mut then_hold = false;
                        if hit {
                            seen.lock().unwrap().push(tokio::time::Instant::now());
                            then_hold = arm.swap(false, Ordering::SeqCst);
                        }
                        if tx.send((chunk, then_hold)).is_err() {
                            return;
                        }
                    }
                });
                let held = held.clone();
                tokio::spawn(async move {
                    while let Some((chunk, then_hold)) = rx.recv().await {
                        while held.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        if sw.write_all(&chunk).await.is_err() {
                            return;
                        }
                        if then_hold {
                            held.store(true, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        p
    }
}

/// Red team (Low, fixed: the lease records the renewal that began it, and a change of that number is a lapse): a lapse is now also inferred when a renewal seen to land was *sent* at
/// least a lease after the last one seen to land (`renew_lease`: `sent - confirmed >=
/// lease`). But the lease runs from when a renewal *lands*, and renewals that time out
/// locally (`max(reconcile_interval, 1 s)`) stay in the connection and land later. With a
/// partition between A and the store (A's commands held, the store serving the others),
/// A's lease runs out a lease after its last renewal landed; when the partition heals, the
/// held renewals land at once, the first finds the lease gone (its answer is past its
/// timeout, forgotten) and recreates it, and the renewal then in flight, sent less than a
/// lease after the last confirmed one, is answered in time with the lease current: no gap
/// and no `false`, so no lapse is seen and nothing re-joins. The window is up to a timeout
/// wide (here `reconcile_interval` 950 ms: renewals go every ~1 s while the store is
/// silent, the last before the lapse at ~4.75 s, answered in time up to ~5.75 s). Meanwhile
/// B's hold ended (202) and B's leave dropped A, whose lease had run out: A runs with its
/// client held but unlisted, and B's client coming back and going away cancels the ticket
/// under A's live client (what `unlist_held`/`relist_held` exist to prevent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases4_a_lapse_healed_by_a_late_renewal_within_a_lease_of_sends_is_never_rejoined() {
    use std::sync::atomic::Ordering;
    let redis = RedisServer::start();
    let part = Partition::start(redis.port).await;
    let origin = Origin::start();
    let pem = signing_key_pem();
    let a_cfg = config(
        &format!("redis://127.0.0.1:{}/0", part.port),
        &origin.url(),
        "60s",
        "",
    )
    .replace(
        "reconcile_interval = \"300ms\"",
        "reconcile_interval = \"950ms\"",
    );
    let a = Gateway::builder(&a_cfg)
        .file("key.pem", pem.clone())
        .start();
    let b_cfg = config(&redis.url(), &origin.url(), "1s", "");
    let b = Gateway::builder(&b_cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;

    // bob's request, held on A (which opened the ticket: listed).
    let on_a = spawn_deploy(&a, "/deploy/partition", Who::User("bob"), None);
    let id = wait_pending_n(&b, 1).await.into_keys().next().unwrap();
    let a_id = holders(&wait_holders(&b, &id, 1).await)[0].clone();
    *part.pattern.lock().unwrap() = format!("replica:{a_id}").into_bytes();
    // A's next renewal lands; then A's commands are held (a partition).
    part.arm.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + SOON;
    while !part.held.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "no renewal from A");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let s0 = *part.seen.lock().unwrap().last().unwrap();
    // bob's request resumed on B 4.1 s later: B's 1 s hold ends just after A's lease (5 s)
    // ran out, and B's leave drops A.
    tokio::time::sleep_until(s0 + Duration::from_millis(4100)).await;
    let on_b = spawn_deploy(&b, "/deploy/partition", Who::User("bob"), Some(&id));
    let rb = answered(on_b).await;
    assert_eq!(rb.status, 202, "{}", rb.text());
    let deadline = s0 + Duration::from_millis(5700);
    loop {
        let t = ticket(&b, &id).await;
        if !holders(&t).contains(&a_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never dropped A: {t}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dropped = s0.elapsed();
    // The partition heals while A's last renewal sent before the lapse is still awaited.
    let last = *part.seen.lock().unwrap().last().unwrap();
    part.held.store(false, Ordering::SeqCst);
    let healed = s0.elapsed();
    let sent = last - s0;
    assert!(
        sent < Duration::from_secs(5)
            && healed + Duration::from_millis(50) < sent + Duration::from_secs(1),
        "timing: A's last renewal sent {sent:?} after the last one landed, healed at {healed:?} \
         (B dropped A at {dropped:?}): not within the window this test needs; run it again"
    );
    // A runs on for a few of its ticks: a lapse it noticed would re-join the ticket.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!on_a.is_finished(), "A's client was answered");
    let listed = holders(&ticket(&b, &id).await);
    // B's client comes back for the ticket, and then goes away.
    come_back_and_go(&b, "/deploy/partition", &id, |h| h.len() > listed.len()).await;
    let t = ticket(&b, &id).await;
    assert_eq!(
        t["status"], "PENDING",
        "A's client is held and A renews its lease, but its lease ran out during a partition \
         (last renewal seen landed at 0, the next in flight sent at {sent:?}, healed at \
         {healed:?}, B dropped A at {dropped:?}); the healed renewals recreated the lease with \
         no gap of sends >= a lease and no renewal answered false in time, so A never \
         re-joined (holders 4 s later: {listed:?}, A is {a_id}); B's client going away \
         cancelled the ticket under A's live client: {t}"
    );
    let r = approve(&b, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answered(on_a).await.status, 200);
}
