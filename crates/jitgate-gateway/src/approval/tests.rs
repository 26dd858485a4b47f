//! Holding, with tokio's clock paused: time jumps to the next timer, so hold timeouts and
//! ticket expiry are exercised without sleeping (and without timing assertions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jitgate_rules::ticket::{self, Approver, Mode, RequestSnapshot, Requester, Status};
use jitgate_rules::RuleTable;

use super::hold;
use super::*;
use crate::context::ConnInfo;
use crate::engine::{Clock, Engine};
use crate::state::{build_snapshot, Shared};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[upstreams]]
name = "u"
url = "http://127.0.0.1:9"

[[routes]]
name = "deploy"
path = "/deploy/**"
upstream = "u"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
"#;

fn shared() -> Arc<Shared> {
    let table = RuleTable::parse(CONFIG, Path::new("/tmp/proxy.toml")).unwrap();
    let engine = Engine::start_with_clock(table.config(), Clock::tokio()).unwrap();
    let snapshot = build_snapshot(table, None).unwrap();
    Arc::new(Shared::new(
        snapshot,
        engine,
        "/tmp/proxy.toml".into(),
        None,
    ))
}

/// Opens a pending ticket that expires after `ttl`.
async fn open(shared: &Shared, ttl: Duration) -> Ticket {
    let engine = shared.engine();
    let now = engine.now();
    let draft = TicketDraft {
        route: "deploy".into(),
        route_hash: [1; 32],
        mode: Mode::Action,
        requester: Requester {
            user: Some("bob".into()),
            groups: vec![],
            anonymous: None,
        },
        reason: None,
        request: RequestSnapshot::default(),
        ticket_ttl: ttl,
        token_ttl: Duration::from_secs(300),
        quorum: 1,
        approvers: vec!["group:oncall".into()],
        self_approval: false,
        token_uses: 1,
        grant_terms: None,
        also_limit: None,
        escalation: None,
        remind_before: None,
        risk: None,
        source: None,
    };
    let t = Ticket::open(jitgate_store::new_ticket_id(now), draft, now);
    let store = engine.store().unwrap();
    let limits = jitgate_store::PendingLimits::default();
    store
        .create_or_join(t, "key", &limits, &|_| Vec::new())
        .await
        .unwrap()
        .0
}

fn exchange<'a>(shared: &'a Arc<Shared>, conn: &'a ConnInfo) -> Exchange<'a> {
    Exchange {
        shared,
        snap: shared.snapshot(),
        conn,
        grpc: false,
        note: Default::default(),
    }
}

fn conn() -> ConnInfo {
    ConnInfo::new("127.0.0.1:4000".parse().unwrap(), false)
}

#[tokio::test(start_paused = true)]
async fn still_pending_at_hold_timeout() {
    let shared = shared();
    let conn = conn();
    let x = exchange(&shared, &conn);
    let t = open(&shared, Duration::from_secs(900)).await;
    let started = tokio::time::Instant::now();
    let mut guard = shared.engine().hold(&t.id);
    guard.disarm();
    let held = hold::wait(&x, t.id, t.expires_at, Duration::from_secs(50), &guard)
        .await
        .unwrap();
    assert_eq!(held.status, Status::Pending);
    assert!(started.elapsed() >= Duration::from_secs(50));
    // Answered 202, not cancelled.
    let store = shared.engine().store().unwrap();
    assert_eq!(
        store.get(&held.id).await.unwrap().unwrap().status,
        Status::Pending
    );
}

#[tokio::test(start_paused = true)]
async fn a_ticket_that_expires_while_held_ends_the_hold() {
    let shared = shared();
    let conn = conn();
    let x = exchange(&shared, &conn);
    let t = open(&shared, Duration::from_secs(10)).await;
    let mut guard = shared.engine().hold(&t.id);
    guard.disarm();
    let held = hold::wait(&x, t.id, t.expires_at, Duration::from_secs(50), &guard)
        .await
        .unwrap();
    assert_eq!(held.status, Status::Expired);
}

#[tokio::test(start_paused = true)]
async fn a_decision_releases_the_hold() {
    let shared = shared();
    let conn = conn();
    let x = exchange(&shared, &conn);
    let t = open(&shared, Duration::from_secs(900)).await;
    let id = t.id.clone();
    let engine = shared.engine().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let alice = Approver {
            user: "alice".into(),
            groups: vec!["oncall".into()],
        };
        let now = engine.now();
        let store = engine.store().unwrap();
        store
            .transition(&id, &|t| ticket::approve(t, &alice, None, now), &|_, _| {
                Vec::new()
            })
            .await
            .unwrap();
    });
    let started = tokio::time::Instant::now();
    let mut guard = shared.engine().hold(&t.id);
    guard.disarm();
    let held = hold::wait(&x, t.id, t.expires_at, Duration::from_secs(50), &guard)
        .await
        .unwrap();
    assert_eq!(held.status, Status::Approved);
    assert!(started.elapsed() < Duration::from_secs(50));
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_held_requests_with_their_ticket() {
    let shared = shared();
    let conn = conn();
    let x = exchange(&shared, &conn);
    let t = open(&shared, Duration::from_secs(900)).await;
    let id = t.id.clone();
    let engine = shared.engine().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        engine.begin_shutdown();
    });
    let mut guard = shared.engine().hold(&t.id);
    guard.disarm();
    match hold::wait(&x, t.id, t.expires_at, Duration::from_secs(50), &guard).await {
        Err(GatewayError::ShuttingDown { ticket }) => assert_eq!(ticket, id),
        other => panic!("expected ShuttingDown, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_cancels_its_ticket() {
    let shared = shared();
    let t = open(&shared, Duration::from_secs(900)).await;
    let id = t.id.clone();
    let waiting = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = conn();
            let x = exchange(&shared, &conn);
            // Armed: the client going away (this task aborted) drops it.
            let guard = shared.engine().hold(&t.id);
            let _ = hold::wait(&x, t.id, t.expires_at, Duration::from_secs(50), &guard).await;
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    waiting.abort();
    let store = shared.engine().store().unwrap().clone();
    let mut status = Status::Pending;
    for _ in 0..100 {
        status = store.get(&id).await.unwrap().unwrap().status;
        if status != Status::Pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, Status::Cancelled);
}
