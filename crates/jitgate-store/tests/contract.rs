//! The store contract, run against the memory store and against a real `redis-server` on a
//! free loopback port (never the machine's own 6379).
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jitgate_rules::ticket::{
    self, Approver, AuditDraft, AuditKind, Grant, Mode, RequestSnapshot, Requester, Status, Ticket,
    TicketDraft, Timestamp, TransitionError,
};
use jitgate_store::{
    new_grant_id, new_ticket_id, now, AuditFilter, MemoryStore, RedisOptions, RedisStore, Store,
    StoreError,
};

// === fixtures ===

fn draft(path: &str, user: &str) -> TicketDraft {
    TicketDraft {
        route: "prod-deploy".into(),
        route_hash: [3; 32],
        mode: Mode::Action,
        requester: Requester {
            user: Some(user.into()),
            groups: vec!["dev".into()],
            anonymous: None,
        },
        source: Some("192.0.2.7".into()),
        reason: Some("hotfix".into()),
        request: RequestSnapshot {
            method: "POST".into(),
            host: "api.example.com".into(),
            path: path.into(),
            query: String::new(),
            target: path.into(),
            headers: vec![],
            headers_sha256: ticket::headers_digest([]),
            body_sha256: ticket::sha256_hex(b""),
            body_preview: String::new(),
        },
        ticket_ttl: Duration::from_secs(900),
        token_ttl: Duration::from_secs(300),
        quorum: 1,
        approvers: vec!["group:oncall".into()],
        self_approval: false,
        token_uses: 1,
        grant_terms: None,
    }
}

fn new_ticket(path: &str, user: &str) -> Ticket {
    let at = now();
    Ticket::open(new_ticket_id(at), draft(path, user), at)
}

fn oncall(user: &str) -> Approver {
    Approver {
        user: user.into(),
        groups: vec!["oncall".into()],
    }
}

fn later(t: Timestamp, secs: u64) -> Timestamp {
    t.plus(Duration::from_secs(secs))
}

async fn create(s: &dyn Store, t: Ticket) -> Ticket {
    let key = t.fingerprint.clone();
    let (t, created) = s.create_or_join(t, &key).await.unwrap();
    assert!(created);
    t
}

/// Two handles on the same data: for Redis two separate instances (two "replicas").
struct Pair {
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    _server: Option<RedisServer>,
}

fn memory() -> Pair {
    let m = MemoryStore::default();
    Pair {
        a: Arc::new(m.clone()),
        b: Arc::new(m),
        _server: None,
    }
}

async fn redis() -> Pair {
    let server = RedisServer::start();
    let a = server.store().await;
    let b = server.store().await;
    Pair {
        a: Arc::new(a),
        b: Arc::new(b),
        _server: Some(server),
    }
}

// === redis-server harness ===

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert_ne!(port, 6379);
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = RedisServer { child, port };
        for _ in 0..500 {
            if server.command("PING").starts_with("+PONG") {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {port} never answered PING");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn store(&self) -> RedisStore {
        let mut o = RedisOptions::new(self.url());
        o.op_timeout = Duration::from_secs(2);
        RedisStore::connect(o).await.unwrap()
    }

    /// One inline command over a fresh socket; the raw reply (or "" if unreachable).
    fn command(&self, cmd: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if s.write_all(format!("{cmd}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn numsub(&self) -> u64 {
        // *2\r\n$13\r\njit:decisions\r\n:N\r\n
        let r = self.command("PUBSUB NUMSUB jit:decisions");
        r.rsplit(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// === the contract ===

async fn create_then_get(p: Pair) {
    let t = create(&*p.a, new_ticket("/v1/a", "bob")).await;
    let got = p.b.get(&t.id).await.unwrap().unwrap();
    assert_eq!(got, t);
    let missing = new_ticket_id(now());
    assert_eq!(p.a.get(&missing).await.unwrap(), None);
    let listed = p.b.list(Some(Status::Pending), 10).await.unwrap();
    assert_eq!(listed, vec![t.clone()]);
    assert_eq!(p.b.list(None, 10).await.unwrap(), vec![t.clone()]);
    assert!(p.b.list(Some(Status::Denied), 10).await.unwrap().is_empty());
    assert_eq!(p.a.pending_count("prod-deploy", "bob").await.unwrap(), 1);
    assert_eq!(p.a.pending_count("prod-deploy", "alice").await.unwrap(), 0);
    p.a.ping().await.unwrap();
    assert_eq!(
        p.a.transition(&missing, &|t| ticket::cancel(t, now()))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn coalescing_joins_pending_and_stops_after_decision(p: Pair) {
    let first = create(&*p.a, new_ticket("/v1/a", "bob")).await;
    let again = new_ticket("/v1/a", "bob");
    assert_eq!(again.fingerprint, first.fingerprint);
    let (joined, created) = p.b.create_or_join(again, &first.fingerprint).await.unwrap();
    assert!(!created);
    assert_eq!(joined.id, first.id);
    // A different requester or request is a different ticket.
    let other = new_ticket("/v1/a", "carol");
    let (o, created) =
        p.b.create_or_join(other.clone(), &other.fingerprint)
            .await
            .unwrap();
    assert!(created && o.id != first.id);
    assert_eq!(p.a.pending_count("prod-deploy", "bob").await.unwrap(), 1);

    let denied =
        p.b.transition(&first.id, &|t| {
            ticket::deny(t, &oncall("alice"), Some("no".into()), now())
        })
        .await
        .unwrap();
    assert_eq!(denied.status, Status::Denied);
    assert_eq!(p.a.pending_count("prod-deploy", "bob").await.unwrap(), 0);
    let third = new_ticket("/v1/a", "bob");
    let (t3, created) = p.a.create_or_join(third, &first.fingerprint).await.unwrap();
    assert!(created);
    assert_ne!(t3.id, first.id);
    assert_eq!(
        p.a.list(Some(Status::Denied), 10).await.unwrap()[0].id,
        first.id
    );
}

/// The pending index lists exactly the pending ids with their expiry, soonest first, and
/// drops a ticket once it is decided.
async fn pending_index_tracks_pending_tickets(p: Pair) {
    let mut late = new_ticket("/v1/late", "bob");
    late.expires_at = later(late.created_at, 2000);
    let late = create(&*p.a, late).await;
    let soon = create(&*p.a, new_ticket("/v1/soon", "bob")).await;
    let index = p.b.pending_index().await.unwrap();
    assert_eq!(
        index,
        vec![
            (soon.id.clone(), soon.expires_at),
            (late.id.clone(), late.expires_at)
        ]
    );
    p.b.transition(&soon.id, &|t| ticket::cancel(t, now()))
        .await
        .unwrap();
    assert_eq!(
        p.a.pending_index().await.unwrap(),
        vec![(late.id.clone(), late.expires_at)]
    );
}

async fn coalescing_skips_a_due_ticket(p: Pair) {
    let mut first = new_ticket("/v1/a", "bob");
    first.expires_at = first.created_at; // due at once
    let first = create(&*p.a, first).await;
    let (second, created) =
        p.b.create_or_join(new_ticket("/v1/a", "bob"), &first.fingerprint)
            .await
            .unwrap();
    assert!(created && second.id != first.id);
}

/// approve, approve, deny, expire and cancel race on one ticket from both handles: exactly
/// one of them wins, and the stored ticket is what the winner wrote.
async fn racing_decisions_have_one_outcome(p: Pair) {
    for round in 0..200 {
        let t = create(&*p.a, new_ticket(&format!("/v1/race/{round}"), "bob")).await;
        let (created, expires) = (t.created_at, t.expires_at);
        let mut tasks = Vec::new();
        for (i, store) in [p.a.clone(), p.b.clone()].into_iter().enumerate() {
            for op in 0..5 {
                let store = store.clone();
                let id = t.id.clone();
                tasks.push(tokio::spawn(async move {
                    let who = oncall(&format!("u{i}{op}"));
                    let f = move |t: &Ticket| match op {
                        0 | 1 => ticket::approve(t, &who, None, later(created, 1)),
                        2 => ticket::deny(t, &who, None, later(created, 1)),
                        3 => ticket::expire(t, expires),
                        _ => ticket::cancel(t, later(created, 1)),
                    };
                    store.transition(&id, &f).await
                }));
            }
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(t) => winners.push(t),
                Err(StoreError::Transition(TransitionError::NotPending { .. })) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = p.b.get(&t.id).await.unwrap().unwrap();
        assert_eq!(stored, winners[0]);
        assert_ne!(stored.status, Status::Pending);
    }
}

async fn execute_happens_at_most_once(p: Pair) {
    for round in 0..20 {
        let t = create(&*p.a, new_ticket(&format!("/v1/x/{round}"), "bob")).await;
        p.a.transition(&t.id, &|t| {
            ticket::approve(t, &oncall("alice"), None, now())
        })
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .transition(&id, &|t| ticket::execute(t, now(), &format!("r{i}")))
                    .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(t) => {
                    assert_eq!(t.status, Status::Executed);
                    ok += 1;
                }
                Err(StoreError::Transition(TransitionError::NotApproved { .. })) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(ok, 1);
    }
}

async fn decisions_are_published(p: Pair) {
    let mut rx = p.b.subscribe();
    let t = create(&*p.a, new_ticket("/v1/pub", "bob")).await;
    wait_subscribed(&p).await;
    // An approval short of quorum is not a decision; the cancel is.
    p.a.transition(&t.id, &|t| ticket::cancel(t, now()))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("decision published")
        .unwrap();
    assert_eq!(got, t.id);
}

async fn wait_subscribed(p: &Pair) {
    if let Some(server) = &p._server {
        while server.numsub() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn audit_chain_holds_under_concurrent_appends(p: Pair) {
    let mut tasks = Vec::new();
    for (i, store) in [p.a.clone(), p.b.clone()].into_iter().enumerate() {
        for j in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..15 {
                    store
                        .append_audit(AuditDraft {
                            at: now(),
                            kind: AuditKind::TicketCreated,
                            ticket: None,
                            actor: Some(format!("a{i}{j}")),
                            requester: Some("bob".into()),
                            detail: serde_json::json!({ "k": k }),
                        })
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = p.b.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 120);
    ticket::verify(&all).unwrap();
    let mine =
        p.a.audit(&AuditFilter {
            requester: Some("a13".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 15);
    let limited =
        p.a.audit(&AuditFilter {
            limit: 5,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, all[..5].to_vec());
}

async fn grants_are_used_and_revoked_atomically(p: Pair) {
    let at = now();
    let g = Grant {
        id: new_grant_id(at),
        route: "db-admin".into(),
        route_hash: "00".into(),
        requester: Requester {
            user: Some("bob".into()),
            groups: vec![],
            anonymous: None,
        },
        created_at: at,
        expires_at: later(at, 3600),
        max_uses: Some(5),
        uses: 0,
        revoked_at: None,
        ticket: None,
    };
    p.a.create_grant(g.clone()).await.unwrap();
    assert_eq!(p.b.get_grant(&g.id).await.unwrap(), Some(g.clone()));
    assert_eq!(
        p.b.grants_for("db-admin", "bob", at).await.unwrap().len(),
        1
    );
    assert!(p
        .b
        .grants_for("db-admin", "eve", at)
        .await
        .unwrap()
        .is_empty());
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
        let id = g.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .transition_grant(&id, &|g| ticket::use_grant(g, now()))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
    assert!(p.a.active_grants(now()).await.unwrap().is_empty());
    let revoked =
        p.b.transition_grant(&g.id, &|g| ticket::revoke(g, now()))
            .await
            .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        p.a.transition_grant(&g.id, &|g| ticket::revoke(g, now()))
            .await
            .unwrap_err(),
        StoreError::Transition(TransitionError::GrantRevoked)
    );
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::memory()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::redis().await).await;
                }
            )*
        }
    };
}

contract!(
    create_then_get,
    coalescing_joins_pending_and_stops_after_decision,
    coalescing_skips_a_due_ticket,
    pending_index_tracks_pending_tickets,
    racing_decisions_have_one_outcome,
    execute_happens_at_most_once,
    decisions_are_published,
    audit_chain_holds_under_concurrent_appends,
    grants_are_used_and_revoked_atomically,
);

// === Redis only ===

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_subscriber_reconnects_after_client_kill() {
    let server = RedisServer::start();
    let a = server.store().await;
    let b = server.store().await;
    let mut rx = b.subscribe();
    while server.numsub() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.command("CLIENT KILL TYPE pubsub").starts_with(':'));
    // Both listeners come back on their own.
    while server.numsub() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = create(&a, new_ticket("/v1/kill", "bob")).await;
    a.transition(&t.id, &|t| ticket::cancel(t, now()))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("decision after reconnect")
        .unwrap();
    assert_eq!(got, t.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_tickets_survive_a_new_store_instance() {
    let server = RedisServer::start();
    let first = server.store().await;
    let t = create(&first, new_ticket("/v1/restart", "bob")).await;
    first
        .append_audit(AuditDraft {
            at: now(),
            kind: AuditKind::TicketCreated,
            ticket: Some(t.id.clone()),
            actor: None,
            requester: Some("bob".into()),
            detail: serde_json::Value::Null,
        })
        .await
        .unwrap();
    drop(first);
    let second = server.store().await;
    assert_eq!(second.get(&t.id).await.unwrap(), Some(t.clone()));
    let (joined, created) = second
        .create_or_join(new_ticket("/v1/restart", "bob"), &t.fingerprint)
        .await
        .unwrap();
    assert!(!created && joined.id == t.id);
    let ev = second
        .audit(&AuditFilter {
            ticket: Some(t.id.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    ticket::verify(&ev).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_is_unavailable_not_a_hang() {
    let mut server = RedisServer::start();
    let store = server.store().await;
    let t = create(&store, new_ticket("/v1/outage", "bob")).await;
    server.kill();
    // The outer timeout only turns a hang into a failure; the store's own bound is 2 s.
    let r = tokio::time::timeout(Duration::from_secs(60), store.get(&t.id))
        .await
        .expect("the store answers instead of hanging");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        store.transition(&t.id, &|t| ticket::cancel(t, now())),
    )
    .await
    .expect("no hang");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = tokio::time::timeout(Duration::from_secs(60), store.ping())
        .await
        .expect("no hang");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn redis_unreachable_at_connect_is_unavailable() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut o = RedisOptions::new(format!("redis://127.0.0.1:{port}/0"));
    o.connect_timeout = Duration::from_millis(500);
    let r = tokio::time::timeout(Duration::from_secs(60), RedisStore::connect(o))
        .await
        .expect("no hang");
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
    let bad = RedisStore::connect(RedisOptions::new("http://nope")).await;
    assert!(matches!(bad, Err(StoreError::Unavailable(_))));
}
