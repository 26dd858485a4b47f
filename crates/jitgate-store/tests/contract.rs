//! The store contract, run against the memory store, against a real `redis-server` on a
//! free loopback port (never the machine's own 6379), and against a real three-primary Redis
//! Cluster on loopback.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/common/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jitgate_rules::ticket::{
    self, Approver, AuditDraft, AuditEvent, AuditKind, Grant, GrantId, GrantTerms, Mode,
    RequestSnapshot, Requester, Status, Ticket, TicketDraft, TicketId, Timestamp, TransitionError,
};
use jitgate_store::{
    new_grant_id, new_ticket_id, now, AuditFilter, Delivery, LimitScope, MemoryStore,
    PendingLimits, RedisOptions, RedisStore, Store, StoreError, Timer,
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
        also_limit: None,
        escalation: None,
        remind_before: None,
        risk: None,
    }
}

fn new_ticket(path: &str, user: &str) -> Ticket {
    let at = now();
    Ticket::open(new_ticket_id(at), draft(path, user), at)
}

fn ticket_from(path: &str, user: &str, source: &str) -> Ticket {
    let at = now();
    let mut d = draft(path, user);
    d.source = Some(source.into());
    Ticket::open(new_ticket_id(at), d, at)
}

/// An anonymous requester's ticket (credential digest `who`) opened from `source`.
fn anonymous_from(path: &str, who: &str, source: &str) -> Ticket {
    let at = now();
    let mut d = draft(path, "nobody");
    d.requester = Requester {
        user: None,
        groups: Vec::new(),
        anonymous: Some(who.into()),
    };
    d.source = Some(source.into());
    Ticket::open(new_ticket_id(at), d, at)
}

/// An `access` ticket: approving it grants bob an hour with at most 5 uses.
fn access_ticket(path: &str, user: &str) -> Ticket {
    let at = now();
    let mut d = draft(path, user);
    d.route = "db-console".into();
    d.mode = Mode::Access;
    d.grant_terms = Some(GrantTerms {
        duration_ms: 3_600_000,
        max_uses: Some(5),
    });
    Ticket::open(new_ticket_id(at), d, at)
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

const NO_LIMITS: PendingLimits = PendingLimits {
    max_pending: None,
    per_requester: None,
    per_source: None,
};

/// The events a ticket change records, as the gateway records them: one per outcome, and
/// `grant.created` when the change created a grant.
fn events(before: &Ticket, after: &Ticket) -> Vec<AuditDraft> {
    let kind = match (before.status, after.status) {
        (Status::Pending, Status::Pending | Status::Approved) => AuditKind::TicketApproved,
        (_, Status::Denied) => AuditKind::TicketDenied,
        (_, Status::Expired) => AuditKind::TicketExpired,
        (_, Status::Cancelled) => AuditKind::TicketCancelled,
        _ => AuditKind::TicketExecuted,
    };
    let at = now();
    let mut out = vec![AuditDraft::about(
        kind,
        after,
        None,
        serde_json::json!({ "redeemed": after.redeemed }),
        at,
    )];
    if let Some(g) = ticket::grant_of(before, after) {
        out.push(AuditDraft::about(
            AuditKind::GrantCreated,
            after,
            None,
            serde_json::json!({ "grant": g.id }),
            at,
        ));
    }
    out
}

fn created_event(t: &Ticket) -> Vec<AuditDraft> {
    vec![AuditDraft::about(
        AuditKind::TicketCreated,
        t,
        None,
        serde_json::Value::Null,
        now(),
    )]
}

fn no_events(_: &Ticket, _: &Ticket) -> Vec<AuditDraft> {
    Vec::new()
}

async fn create(s: &dyn Store, t: Ticket) -> Ticket {
    let key = t.fingerprint.clone();
    let (t, created) = s
        .create_or_join(t, &key, &NO_LIMITS, &created_event)
        .await
        .unwrap();
    assert!(created);
    t
}

async fn create_or_join(
    s: &dyn Store,
    t: Ticket,
    limits: &PendingLimits,
) -> Result<(Ticket, bool), StoreError> {
    let key = t.fingerprint.clone();
    s.create_or_join(t, &key, limits, &created_event).await
}

async fn events_of(s: &dyn Store, id: &TicketId) -> Vec<AuditEvent> {
    s.audit(&AuditFilter {
        ticket: Some(id.clone()),
        ..AuditFilter::default()
    })
    .await
    .unwrap()
}

fn count(events: &[AuditEvent], kinds: &[AuditKind]) -> usize {
    events.iter().filter(|e| kinds.contains(&e.kind)).count()
}

async fn whole_chain_verifies(s: &dyn Store) -> usize {
    let all = s.audit(&AuditFilter::default()).await.unwrap();
    ticket::verify(&all).unwrap();
    all.len()
}

/// Two handles on the same data: for Redis two separate instances (two "replicas").
struct Pair {
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    _server: Option<Server>,
}

/// The Redis behind a [`Pair`]: one server, or a cluster (whose keys carry the `{jit}` tag).
enum Server {
    Single(RedisServer),
    Cluster(cluster::RedisCluster),
}

impl Server {
    /// Whether `member` is in the sorted set `key` (named as on a standalone server).
    fn indexed(&self, key: &str, member: &str) -> bool {
        match self {
            Server::Single(s) => s.indexed(key, member),
            Server::Cluster(c) => {
                let r = c.cli(&["ZSCORE", &format!("{{jit}}{key}"), member]);
                !r.trim().is_empty()
            }
        }
    }

    /// Subscribers to the decisions channel (on a cluster, over every node).
    fn numsub(&self) -> u64 {
        match self {
            Server::Single(s) => s.numsub(),
            Server::Cluster(c) => c
                .nodes
                .iter()
                .map(|n| {
                    let r = c.node_cli(n.port, false, &["PUBSUB", "NUMSUB", "jit:decisions"]);
                    r.lines()
                        .nth(1)
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                })
                .sum(),
        }
    }
}

/// How long finished records are kept in most cases: longer than any test.
const DAYS: Duration = Duration::from_secs(7 * 24 * 3600);
/// ... and in the retention cases.
const ONE_SECOND: Duration = Duration::from_secs(1);

fn memory(retention: Duration) -> Pair {
    let m = MemoryStore::new(retention);
    Pair {
        a: Arc::new(m.clone()),
        b: Arc::new(m),
        _server: None,
    }
}

async fn redis(retention: Duration) -> Pair {
    let server = RedisServer::start();
    let a = server.store_with(retention).await;
    let b = server.store_with(retention).await;
    Pair {
        a: Arc::new(a),
        b: Arc::new(b),
        _server: Some(Server::Single(server)),
    }
}

/// Two handles on a three-primary Redis Cluster.
async fn cluster(retention: Duration) -> Pair {
    let c = cluster::RedisCluster::start(3, 0);
    let connect = || async {
        let mut o = RedisOptions::new(c.url());
        o.op_timeout = Duration::from_secs(2);
        o.retention = retention;
        RedisStore::connect(o).await.unwrap()
    };
    let a = connect().await;
    let b = connect().await;
    Pair {
        a: Arc::new(a),
        b: Arc::new(b),
        _server: Some(Server::Cluster(c)),
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
        self.store_with(DAYS).await
    }

    async fn store_with(&self, retention: Duration) -> RedisStore {
        let mut o = RedisOptions::new(self.url());
        o.op_timeout = Duration::from_secs(2);
        o.retention = retention;
        RedisStore::connect(o).await.unwrap()
    }

    /// Whether `member` is in the sorted set `key`.
    fn indexed(&self, key: &str, member: &str) -> bool {
        // ZSCORE answers a bulk string ($n) when present, a null ($-1 / _) when not.
        let r = self.command(&format!("ZSCORE {key} {member}"));
        assert!(r.starts_with('$') || r.starts_with('_'), "ZSCORE: {r:?}");
        !(r.starts_with("$-1") || r.starts_with('_'))
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
    assert_eq!(
        p.a.pending_index().await.unwrap(),
        vec![(t.id.clone(), t.expires_at)]
    );
    p.a.ping().await.unwrap();
    assert_eq!(
        p.a.transition(&missing, &|t| ticket::cancel(t, now()), &events)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // The creation was recorded with the ticket; the refused transition recorded nothing.
    let ev = events_of(&*p.b, &t.id).await;
    assert_eq!(count(&ev, &[AuditKind::TicketCreated]), 1);
    assert_eq!(whole_chain_verifies(&*p.a).await, 1);
}

async fn coalescing_joins_pending_and_stops_after_decision(p: Pair) {
    let first = create(&*p.a, new_ticket("/v1/a", "bob")).await;
    let again = new_ticket("/v1/a", "bob");
    assert_eq!(again.fingerprint, first.fingerprint);
    let (joined, created) = create_or_join(&*p.b, again, &NO_LIMITS).await.unwrap();
    assert!(!created);
    assert_eq!(joined.id, first.id);
    // A different requester or request is a different ticket.
    let other = new_ticket("/v1/a", "carol");
    let (o, created) = create_or_join(&*p.b, other, &NO_LIMITS).await.unwrap();
    assert!(created && o.id != first.id);
    // Joining records nothing: one ticket.created each.
    assert_eq!(whole_chain_verifies(&*p.a).await, 2);

    let denied =
        p.b.transition(
            &first.id,
            &|t| ticket::deny(t, &oncall("alice"), Some("no".into()), now()),
            &events,
        )
        .await
        .unwrap();
    assert_eq!(denied.status, Status::Denied);
    // Bob has nothing pending on the route any more: a limit of one lets the next one in.
    let one_each = PendingLimits {
        per_requester: Some(1),
        ..NO_LIMITS
    };
    let third = new_ticket("/v1/a", "bob");
    let (t3, created) = create_or_join(&*p.a, third, &one_each).await.unwrap();
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
    p.b.transition(&soon.id, &|t| ticket::cancel(t, now()), &events)
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
    let (second, created) = create_or_join(&*p.b, new_ticket("/v1/a", "bob"), &NO_LIMITS)
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
                    store.transition(&id, &f, &no_events).await
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

/// 16 concurrent executes across both handles: exactly one spends the use, and exactly one
/// `ticket.executed` is recorded with it.
async fn execute_and_its_event_happen_exactly_once(p: Pair) {
    for round in 0..20 {
        let t = create(&*p.a, new_ticket(&format!("/v1/x/{round}"), "bob")).await;
        p.a.transition(
            &t.id,
            &|t| ticket::approve(t, &oncall("alice"), None, now()),
            &events,
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .transition(
                        &id,
                        &|t| ticket::execute(t, now(), &format!("r{i}"), &t.fingerprint),
                        &events,
                    )
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
        let ev = events_of(&*p.b, &t.id).await;
        assert_eq!(count(&ev, &[AuditKind::TicketExecuted]), 1, "{ev:?}");
    }
    whole_chain_verifies(&*p.a).await;
}

/// `transition_many` over more tickets than one Redis script takes: every ticket changed
/// once, with its events, outcomes in the order asked; an unknown id is `NotFound`, a
/// repeated one is applied again in turn (so refused as already decided), an access approval
/// creates its one grant, and the chain holds.
async fn batch_transitions_apply_each_once_in_order(p: Pair) {
    let mut ids = Vec::new();
    for i in 0..600 {
        ids.push(
            create(&*p.a, new_ticket(&format!("/v1/batch/{i}"), "bob"))
                .await
                .id,
        );
    }
    let access = create(&*p.a, access_ticket("/v1/batch/access", "carol")).await;
    ids.push(access.id.clone());
    let unknown = ticket::TicketId::parse("jit_01M8FWTY7Z5P31QV0Y5AXNJY6J").unwrap();
    ids.push(unknown);
    ids.push(ids[3].clone());
    let who = oncall("alice");
    let out =
        p.b.transition_many(&ids, &|t| ticket::approve(t, &who, None, now()), &events)
            .await
            .unwrap();
    assert_eq!(out.len(), ids.len());
    for (i, (id, r)) in ids.iter().zip(&out).enumerate().take(601) {
        let t = r.as_ref().unwrap_or_else(|e| panic!("ticket {i}: {e:?}"));
        assert_eq!(&t.id, id);
        assert_eq!(t.status, Status::Approved);
        assert_eq!(p.a.get(id).await.unwrap().unwrap(), *t);
    }
    assert!(
        matches!(out[601], Err(StoreError::NotFound)),
        "{:?}",
        out[601]
    );
    assert!(
        matches!(
            out[602],
            Err(StoreError::Transition(TransitionError::NotPending { .. }))
        ),
        "{:?}",
        out[602]
    );
    assert!(p.a.pending_index().await.unwrap().is_empty());
    for id in &ids[..601] {
        let ev = events_of(&*p.a, id).await;
        assert_eq!(count(&ev, &[AuditKind::TicketApproved]), 1, "{ev:?}");
    }
    let ev = events_of(&*p.a, &access.id).await;
    assert_eq!(count(&ev, &[AuditKind::GrantCreated]), 1, "{ev:?}");
    assert_eq!(p.a.recent_grants(10).await.unwrap().len(), 1);
    // 601 created, 601 approved, one grant.
    assert_eq!(whole_chain_verifies(&*p.a).await, 601 * 2 + 1);
}

/// A batch approval on one handle racing single denials of the same tickets on the other:
/// every ticket ends with exactly one decision and one event for it, whichever won.
async fn batch_transitions_race_single_decisions_with_one_outcome_each(p: Pair) {
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            create(&*p.a, new_ticket(&format!("/v1/race-batch/{i}"), "bob"))
                .await
                .id,
        );
    }
    let deny = {
        let store = p.b.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let who = oncall("dave");
            let mut denied = 0;
            for id in ids.iter().rev() {
                match store
                    .transition(id, &|t| ticket::deny(t, &who, None, now()), &events)
                    .await
                {
                    Ok(_) => denied += 1,
                    Err(StoreError::Transition(TransitionError::NotPending { .. })) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            denied
        })
    };
    let who = oncall("alice");
    let out =
        p.a.transition_many(&ids, &|t| ticket::approve(t, &who, None, now()), &events)
            .await
            .unwrap();
    let denied = deny.await.unwrap();
    let mut approved = 0;
    for r in &out {
        match r {
            Ok(t) => {
                assert_eq!(t.status, Status::Approved);
                approved += 1;
            }
            Err(StoreError::Transition(TransitionError::NotPending { .. })) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(approved + denied, ids.len());
    for id in &ids {
        let t = p.a.get(id).await.unwrap().unwrap();
        let ev = events_of(&*p.a, id).await;
        let decided = count(&ev, &[AuditKind::TicketApproved, AuditKind::TicketDenied]);
        assert_eq!(decided, 1, "{ev:?}");
        assert_ne!(t.status, Status::Pending);
    }
    whole_chain_verifies(&*p.a).await;
}

/// `still_pending` answers for exactly the ids asked (decided and unknown ones are not
/// pending); `due_pending` lists only pending tickets at or past their expiry, soonest first,
/// at most `limit`.
async fn reconciling_reads_only_what_is_held_and_what_is_due(p: Pair) {
    let a = create(&*p.a, new_ticket("/v1/due/a", "bob")).await;
    let b = create(&*p.a, new_ticket("/v1/due/b", "bob")).await;
    let c = create(&*p.a, new_ticket("/v1/due/c", "bob")).await;
    p.a.transition(&c.id, &|t| ticket::cancel(t, now()), &events)
        .await
        .unwrap();
    let unknown = ticket::TicketId::parse("jit_01M8FWTY7Z5P31QV0Y5AXNJY6J").unwrap();
    let asked = [a.id.clone(), c.id.clone(), unknown, b.id.clone()];
    assert_eq!(
        p.b.still_pending(&asked).await.unwrap(),
        vec![true, false, false, true]
    );
    assert!(p.b.still_pending(&[]).await.unwrap().is_empty());
    // Nothing is due before the first expiry; at the last one both are, soonest first.
    let first = a.expires_at.min(b.expires_at);
    let before_first = Timestamp::from_millis(first.as_millis() - 1);
    assert!(p.b.due_pending(before_first, 10).await.unwrap().is_empty());
    let last = a.expires_at.max(b.expires_at);
    let due = p.b.due_pending(last, 10).await.unwrap();
    let mut expected = [(a.expires_at, a.id.clone()), (b.expires_at, b.id.clone())];
    expected.sort();
    assert_eq!(
        due,
        expected
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        p.b.due_pending(last, 1).await.unwrap(),
        vec![expected[0].1.clone()]
    );
    assert!(p.b.due_pending(last, 0).await.unwrap().is_empty());
}

/// Red team: one ticket of a batch chunk that other approvers keep voting on (a large quorum)
/// must not starve the rest of the chunk. One at a time, every other ticket would be decided
/// at once (nothing else touches it); the batch retries the whole chunk of 250 whenever any
/// one of them changed, so it never lands: every ticket of the chunk is refused (observed:
/// `Unavailable("redis did not answer in time")` after `op_timeout`, i.e. a 503 that blames
/// the store; `Conflict` after `MAX_ATTEMPTS` rounds when rounds are quicker).
async fn batch_transitions_are_not_starved_by_one_busy_ticket(p: Pair) {
    let mut ids = Vec::new();
    let hot = {
        let at = now();
        let mut d = draft("/v1/hot", "bob");
        d.quorum = 1_000_000;
        create(&*p.a, Ticket::open(new_ticket_id(at), d, at)).await
    };
    ids.push(hot.id.clone());
    for i in 0..199 {
        ids.push(
            create(&*p.a, new_ticket(&format!("/v1/starve/{i}"), "bob"))
                .await
                .id,
        );
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let votes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut hammers = Vec::new();
    for h in 0..3 {
        let store = p.b.clone();
        let id = hot.id.clone();
        let stop = stop.clone();
        let votes = votes.clone();
        hammers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let who = oncall(&format!("voter-{h}-{n}"));
                if store
                    .transition(&id, &|t| ticket::approve(t, &who, None, now()), &events)
                    .await
                    .is_ok()
                {
                    votes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the voters get going.
    while votes.load(std::sync::atomic::Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let who = oncall("alice");
    let out =
        p.a.transition_many(&ids, &|t| ticket::approve(t, &who, None, now()), &events)
            .await
            .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hammers {
        h.await.unwrap();
    }
    let starved: Vec<String> = ids[1..]
        .iter()
        .zip(&out[1..])
        .filter(|(_, r)| !matches!(r, Ok(t) if t.status == Status::Approved))
        .map(|(id, r)| format!("{id}: {r:?}"))
        .take(3)
        .collect();
    assert!(
        starved.is_empty(),
        "tickets nobody else touched were refused because another ticket of their chunk \
         kept changing: {starved:?}"
    );
    whole_chain_verifies(&*p.a).await;
}

async fn decisions_are_published(p: Pair) {
    let mut rx = p.b.subscribe();
    let t = create(&*p.a, new_ticket("/v1/pub", "bob")).await;
    wait_subscribed(&p).await;
    // An approval short of quorum is not a decision; the cancel is.
    p.a.transition(&t.id, &|t| ticket::cancel(t, now()), &events)
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
                            route: None,
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

/// A draft at `at` (ms after T0) of `kind`, about `ticket`, by `actor`, for `requester` on
/// `route`.
fn audit_draft(
    at: u64,
    kind: AuditKind,
    ticket: Option<&TicketId>,
    actor: Option<&str>,
    requester: &str,
    route: Option<&str>,
) -> AuditDraft {
    AuditDraft {
        at: Timestamp::from_millis(1_795_343_400_000 + at),
        kind,
        ticket: ticket.cloned(),
        actor: actor.map(str::to_string),
        requester: Some(requester.into()),
        route: route.map(str::to_string),
        detail: serde_json::json!({ "at": at }),
    }
}

fn seqs(events: &[AuditEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Every page of `filter` from the start, following `next`.
async fn all_pages(s: &dyn Store, filter: &AuditFilter) -> (Vec<AuditEvent>, usize) {
    let mut f = filter.clone();
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = s.audit_page(&f).await.unwrap();
        pages += 1;
        assert!(pages < 1000, "pagination does not end");
        if f.limit != 0 {
            assert!(page.events.len() <= f.limit);
        }
        assert!(page.events.iter().all(|e| e.seq > f.after));
        out.extend(page.events);
        match page.next {
            Some(after) => {
                assert!(after > f.after, "a page moves forward");
                f.after = after;
            }
            None => return (out, pages),
        }
    }
}

/// `GET /v1/audit`'s filters and cursor: ticket, requester (or actor), route, kind, since
/// (inclusive), until (exclusive), all together; pages of `limit` that follow `next` add up to
/// the same events in chain order, a scan budget that runs out yields short (even empty)
/// pages that still go on, and past the end there is nothing and no `next`.
async fn audit_filters_and_pages(p: Pair) {
    let t1 = new_ticket_id(now());
    let t2 = new_ticket_id(now());
    let drafts = [
        audit_draft(
            0,
            AuditKind::TicketCreated,
            Some(&t1),
            None,
            "bob",
            Some("prod-deploy"),
        ),
        audit_draft(
            10,
            AuditKind::ShadowMatched,
            None,
            None,
            "anonymous",
            Some("shadow"),
        ),
        audit_draft(
            20,
            AuditKind::TicketCreated,
            Some(&t2),
            None,
            "carol",
            Some("db-console"),
        ),
        audit_draft(
            30,
            AuditKind::TicketApproved,
            Some(&t1),
            Some("alice"),
            "bob",
            Some("prod-deploy"),
        ),
        audit_draft(
            40,
            AuditKind::TicketDenied,
            Some(&t2),
            Some("bob"),
            "carol",
            Some("db-console"),
        ),
        audit_draft(
            50,
            AuditKind::TicketExecuted,
            Some(&t1),
            None,
            "bob",
            Some("prod-deploy"),
        ),
        audit_draft(60, AuditKind::RulesReloaded, None, Some("ops"), "ops", None),
        audit_draft(
            70,
            AuditKind::TicketForwarded,
            Some(&t1),
            None,
            "bob",
            Some("prod-deploy"),
        ),
    ];
    for (i, d) in drafts.iter().enumerate() {
        // Both handles append (two replicas for Redis): one chain either way.
        let s = if i % 2 == 0 { &p.a } else { &p.b };
        s.append_audit(d.clone()).await.unwrap();
    }
    let all = p.a.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(seqs(&all), (1..=8).collect::<Vec<_>>());
    ticket::verify(&all).unwrap();
    assert_eq!(all[0].route.as_deref(), Some("prod-deploy"));
    assert_eq!(all[6].route, None);

    let t = |f: AuditFilter| {
        let s = p.b.clone();
        async move { seqs(&s.audit(&f).await.unwrap()) }
    };
    let at = |ms: u64| Some(Timestamp::from_millis(1_795_343_400_000 + ms));
    let base = AuditFilter::default;
    assert_eq!(
        t(AuditFilter {
            ticket: Some(t1.clone()),
            ..base()
        })
        .await,
        [1, 4, 6, 8]
    );
    // The requester, or the actor.
    assert_eq!(
        t(AuditFilter {
            requester: Some("bob".into()),
            ..base()
        })
        .await,
        [1, 4, 5, 6, 8]
    );
    assert_eq!(
        t(AuditFilter {
            route: Some("db-console".into()),
            ..base()
        })
        .await,
        [3, 5]
    );
    assert_eq!(
        t(AuditFilter {
            route: Some("nope".into()),
            ..base()
        })
        .await,
        Vec::<u64>::new()
    );
    assert_eq!(
        t(AuditFilter {
            kind: Some(AuditKind::TicketCreated),
            ..base()
        })
        .await,
        [1, 3]
    );
    assert_eq!(
        t(AuditFilter {
            since: at(30),
            ..base()
        })
        .await,
        [4, 5, 6, 7, 8]
    );
    assert_eq!(
        t(AuditFilter {
            until: at(30),
            ..base()
        })
        .await,
        [1, 2, 3]
    );
    assert_eq!(
        t(AuditFilter {
            since: at(20),
            until: at(60),
            ..base()
        })
        .await,
        [3, 4, 5, 6]
    );
    assert_eq!(
        t(AuditFilter {
            ticket: Some(t1.clone()),
            kind: Some(AuditKind::TicketExecuted),
            route: Some("prod-deploy".into()),
            requester: Some("bob".into()),
            since: at(50),
            until: at(51),
            ..base()
        })
        .await,
        [6]
    );

    // Pages of two follow each other.
    let first =
        p.a.audit_page(&AuditFilter { limit: 2, ..base() })
            .await
            .unwrap();
    assert_eq!(seqs(&first.events), [1, 2]);
    assert_eq!(first.next, Some(2));
    let second =
        p.b.audit_page(&AuditFilter {
            limit: 2,
            after: 2,
            ..base()
        })
        .await
        .unwrap();
    assert_eq!(seqs(&second.events), [3, 4]);
    assert_eq!(second.next, Some(4));
    let (paged, pages) = all_pages(&*p.a, &AuditFilter { limit: 3, ..base() }).await;
    assert_eq!(paged, all);
    assert_eq!(pages, 3);
    // A page that ends exactly at the end of the chain has no next.
    let (_, pages) = all_pages(&*p.a, &AuditFilter { limit: 4, ..base() }).await;
    assert_eq!(pages, 2);
    let last =
        p.a.audit_page(&AuditFilter {
            limit: 4,
            after: 4,
            ..base()
        })
        .await
        .unwrap();
    assert_eq!((seqs(&last.events), last.next), (vec![5, 6, 7, 8], None));
    // Filtered pages skip what does not match and keep the cursor moving.
    let (bob, _) = all_pages(
        &*p.b,
        &AuditFilter {
            requester: Some("bob".into()),
            limit: 2,
            ..base()
        },
    )
    .await;
    assert_eq!(seqs(&bob), [1, 4, 5, 6, 8]);
    // A scan budget of 3: pages stop after examining 3 events, even with none matching.
    let budget = AuditFilter {
        kind: Some(AuditKind::TicketForwarded),
        max_scan: 3,
        ..base()
    };
    let empty = p.a.audit_page(&budget).await.unwrap();
    assert_eq!((empty.events.len(), empty.next), (0, Some(3)));
    let (found, pages) = all_pages(&*p.a, &budget).await;
    assert_eq!((seqs(&found), pages), (vec![8], 3));
    // The convenience reader follows budgeted pages to the end.
    assert_eq!(seqs(&p.a.audit(&budget).await.unwrap()), [8]);
    // Past the end, or at it: nothing, and no next.
    for after in [8, 9, u64::MAX] {
        let page =
            p.b.audit_page(&AuditFilter { after, ..base() })
                .await
                .unwrap();
        assert_eq!((page.events.len(), page.next), (0, None), "after {after}");
    }
}

/// A tap gets every event its handle appended (with changes or on their own), in chain
/// order, exactly as stored, each once it landed; removing the tap ends the stream.
async fn audit_tap_sends_what_landed_in_order(p: Pair) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    p.a.tap_audit(Some(tx));
    let mut tasks = Vec::new();
    for j in 0..4 {
        let store = p.a.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..10 {
                let t = create(&*store, new_ticket(&format!("/v1/tap/{j}/{k}"), "bob")).await;
                store
                    .transition(
                        &t.id,
                        &|t| ticket::approve(t, &oncall("alice"), None, now()),
                        &events,
                    )
                    .await
                    .unwrap();
                store
                    .append_audit(audit_draft(
                        k,
                        AuditKind::ShadowMatched,
                        None,
                        None,
                        "bob",
                        None,
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A refused change records nothing, so sends nothing.
    let refused = create(&*p.a, new_ticket("/v1/tap/refused", "bob")).await;
    p.a.transition(
        &refused.id,
        &|t| ticket::deny(t, &oncall("alice"), None, now()),
        &events,
    )
    .await
    .unwrap();
    let r =
        p.a.transition(
            &refused.id,
            &|t| ticket::approve(t, &oncall("alice"), None, now()),
            &events,
        )
        .await;
    assert!(r.is_err());
    p.a.tap_audit(None);
    let mut tapped = Vec::new();
    while let Some(e) = rx.recv().await {
        tapped.push(e);
    }
    let stored = p.a.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(stored.len(), 4 * 10 * 3 + 2);
    assert_eq!(tapped, stored, "every event, in chain order, as stored");
    // Without a tap nothing is sent (and nothing breaks).
    p.a.append_audit(audit_draft(
        1,
        AuditKind::ShadowMatched,
        None,
        None,
        "bob",
        None,
    ))
    .await
    .unwrap();
}

/// A pending ticket's escalation and reminder timers are set with it and listed once due,
/// soonest first, on every handle, until cleared; decided-at-birth tickets set none.
async fn timers_come_due_in_order_and_clear(p: Pair) {
    let at = now();
    let mut d = draft("/v1/timers", "bob");
    d.escalation = Some((Duration::from_secs(60), vec!["user:boss".into()]));
    d.remind_before = Some(Duration::from_secs(870));
    let t = Ticket::open(new_ticket_id(at), d, at);
    let (escalate_at, remind_at) = (t.escalate_at.unwrap(), t.remind_at.unwrap());
    assert!(remind_at < escalate_at);
    create(&*p.a, t.clone()).await;
    let mine = |v: Vec<(TicketId, Timer)>| -> Vec<Timer> {
        v.into_iter()
            .filter(|(id, _)| *id == t.id)
            .map(|(_, k)| k)
            .collect()
    };
    assert!(mine(p.b.due_timers(at, 100).await.unwrap()).is_empty());
    assert_eq!(
        mine(p.b.due_timers(remind_at, 100).await.unwrap()),
        vec![Timer::Remind]
    );
    assert_eq!(
        mine(p.b.due_timers(escalate_at, 100).await.unwrap()),
        vec![Timer::Remind, Timer::Escalate]
    );
    p.a.clear_timer(&t.id, Timer::Remind).await.unwrap();
    p.a.clear_timer(&t.id, Timer::Remind).await.unwrap();
    assert_eq!(
        mine(p.b.due_timers(escalate_at, 100).await.unwrap()),
        vec![Timer::Escalate]
    );
    let e =
        p.b.transition(&t.id, &|t| ticket::escalate(t, escalate_at), &events)
            .await
            .unwrap();
    assert_eq!(
        e.approvers,
        vec!["group:oncall".to_string(), "user:boss".to_string()]
    );
    p.b.clear_timer(&t.id, Timer::Escalate).await.unwrap();
    assert!(mine(p.a.due_timers(later(escalate_at, 3600), 100).await.unwrap()).is_empty());
}

/// A ticket decided as it was opened (auto-approval) is written with its grant and events in
/// one operation, never indexed as pending, and never over an existing ticket.
async fn decided_tickets_are_recorded_whole_or_not_at_all(p: Pair) {
    let at = now();
    let mut d = draft("/v1/auto", "bot");
    d.mode = Mode::Access;
    d.grant_terms = Some(ticket::GrantTerms {
        duration_ms: 600_000,
        max_uses: Some(3),
    });
    let opened = Ticket::open(new_ticket_id(at), d, at);
    let approved = ticket::auto_approve(&opened, "bots", at).unwrap();
    assert_eq!(approved.policy.as_deref(), Some("bots"));
    let mut grant = ticket::grant_of(&opened, &approved).expect("grant");
    grant.uses = 1;
    let audit = |t: &Ticket| {
        vec![AuditDraft::about(
            AuditKind::AutoApproved,
            t,
            None,
            serde_json::json!({ "policy": "bots" }),
            now(),
        )]
    };
    let (seq, _) = p.a.audit_head().await.unwrap();
    let stored =
        p.a.record(approved.clone(), Some(grant.clone()), &audit)
            .await
            .unwrap();
    assert_eq!(stored, approved);
    assert_eq!(p.b.get(&approved.id).await.unwrap(), Some(approved.clone()));
    assert_eq!(p.b.get_grant(&grant.id).await.unwrap(), Some(grant.clone()));
    let gs = p.b.grants_for("prod-deploy", "bot", now()).await.unwrap();
    assert_eq!(gs, vec![grant.clone()]);
    assert!(p
        .b
        .pending_index()
        .await
        .unwrap()
        .iter()
        .all(|(id, _)| *id != approved.id));
    let events = p.b.audit_after(seq, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, AuditKind::AutoApproved);
    assert_eq!(events[0].ticket.as_ref(), Some(&approved.id));
    // Not over an existing ticket, and never a pending one.
    assert!(matches!(
        p.b.record(approved.clone(), None, &audit).await,
        Err(StoreError::Conflict)
    ));
    assert!(p
        .b
        .record(new_ticket("/v1/x", "bob"), None, &audit)
        .await
        .is_err());
    assert_eq!(
        p.b.audit_after(seq, 10).await.unwrap().len(),
        1,
        "refusals record nothing"
    );
}

/// Every kept grant is listed, whatever its state, latest-ending first, up to the limit.
async fn recent_grants_lists_every_kept_grant(p: Pair) {
    let at = now();
    let grant = |n: u64, max_uses: Option<u32>| Grant {
        id: new_grant_id(at),
        route: "db-admin".into(),
        route_hash: "00".into(),
        requester: Requester {
            user: Some("bob".into()),
            groups: vec![],
            anonymous: None,
        },
        created_at: at,
        expires_at: later(at, 600 * n),
        max_uses,
        uses: 0,
        revoked_at: None,
        ticket: None,
        method: None,
    };
    let (a, b, c) = (grant(1, None), grant(3, Some(1)), grant(2, None));
    for g in [&a, &b, &c] {
        p.a.create_grant(g.clone()).await.unwrap();
    }
    p.b.transition_grant(&c.id, &|g| ticket::revoke(g, now()), &|_, _| Vec::new())
        .await
        .unwrap();
    p.a.transition_grant(&b.id, &|g| ticket::use_grant(g, now()), &|_, _| Vec::new())
        .await
        .unwrap();
    let all = p.b.recent_grants(10).await.unwrap();
    let ids: Vec<_> = all.iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids, [b.id.clone(), c.id.clone(), a.id.clone()]);
    let states: Vec<_> = all.iter().map(|g| g.state(now())).collect();
    assert_eq!(
        states,
        [
            ticket::GrantState::UsedUp,
            ticket::GrantState::Revoked,
            ticket::GrantState::Active
        ]
    );
    assert_eq!(p.a.recent_grants(2).await.unwrap().len(), 2);
    assert!(p.a.recent_grants(0).await.unwrap().is_empty());
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
        method: None,
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
                .transition_grant(&id, &|g| ticket::use_grant(g, now()), &grant_used)
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
    // A used-up grant is not revoked (nothing is left to stop).
    assert_eq!(
        p.a.transition_grant(&g.id, &|g| ticket::revoke(g, now()), &grant_used)
            .await
            .unwrap_err(),
        StoreError::Transition(TransitionError::GrantExhausted)
    );
    // Two replicas revoke another grant at once: one revocation.
    let open = Grant {
        id: new_grant_id(at),
        max_uses: None,
        ..g.clone()
    };
    p.a.create_grant(open.clone()).await.unwrap();
    let revoke = |store: Arc<dyn Store>, id: jitgate_rules::ticket::GrantId| async move {
        store
            .transition_grant(&id, &|g| ticket::revoke(g, now()), &grant_used)
            .await
    };
    let (one, two) = tokio::join!(
        revoke(p.a.clone(), open.id.clone()),
        revoke(p.b.clone(), open.id.clone())
    );
    let mut outcomes = [one, two];
    outcomes.sort_by_key(Result::is_err);
    assert!(outcomes[0].as_ref().unwrap().revoked_at.is_some());
    assert_eq!(
        outcomes[1].clone().unwrap_err(),
        StoreError::Transition(TransitionError::GrantRevoked)
    );
    // Five uses and one revocation, each recorded with its change.
    let all = p.a.audit(&AuditFilter::default()).await.unwrap();
    ticket::verify(&all).unwrap();
    assert_eq!(count(&all, &[AuditKind::GrantUsed]), 5);
    assert_eq!(count(&all, &[AuditKind::GrantRevoked]), 1);
}

fn grant_used(before: &Grant, after: &Grant) -> Vec<AuditDraft> {
    let kind = if after.revoked_at.is_some() && before.revoked_at.is_none() {
        AuditKind::GrantRevoked
    } else {
        AuditKind::GrantUsed
    };
    vec![AuditDraft {
        at: now(),
        kind,
        ticket: after.ticket.clone(),
        actor: None,
        requester: Some(after.requester.key().into_owned()),
        route: Some(after.route.clone()),
        detail: serde_json::json!({ "grant": after.id, "uses": after.uses }),
    }]
}

/// approve, deny, expire, cancel and execute race on one ticket from both handles while
/// unrelated events are appended: every change that lands lands with its events, so each
/// ticket has exactly one outcome event, one `ticket.executed` per spent use, and the whole
/// chain verifies.
async fn transitions_and_their_events_land_together(p: Pair) {
    let mut noise = Vec::new();
    for (i, store) in [p.a.clone(), p.b.clone()].into_iter().enumerate() {
        noise.push(tokio::spawn(async move {
            for k in 0..150 {
                store
                    .append_audit(AuditDraft {
                        at: now(),
                        kind: AuditKind::ShadowMatched,
                        ticket: None,
                        actor: None,
                        requester: Some(format!("noise{i}")),
                        route: None,
                        detail: serde_json::json!({ "k": k }),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for round in 0..120 {
        let t = create(&*p.a, new_ticket(&format!("/v1/together/{round}"), "bob")).await;
        let (created, expires) = (t.created_at, t.expires_at);
        let mut tasks = Vec::new();
        for (i, store) in [p.a.clone(), p.b.clone()].into_iter().enumerate() {
            for op in 0..6 {
                let store = store.clone();
                let id = t.id.clone();
                tasks.push(tokio::spawn(async move {
                    let who = oncall(&format!("u{i}{op}"));
                    let f = move |t: &Ticket| match op {
                        0 | 1 => ticket::approve(t, &who, None, later(created, 1)),
                        2 => ticket::deny(t, &who, None, later(created, 1)),
                        3 => ticket::expire(t, expires),
                        4 => ticket::cancel(t, later(created, 1)),
                        _ => {
                            ticket::execute(t, later(created, 2), &format!("r{i}"), &t.fingerprint)
                        }
                    };
                    (op, store.transition(&id, &f, &events).await)
                }));
            }
        }
        let (mut decided, mut executed) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                (5, Ok(_)) => executed += 1,
                (_, Ok(_)) => decided += 1,
                (
                    _,
                    Err(StoreError::Transition(
                        TransitionError::NotPending { .. } | TransitionError::NotApproved { .. },
                    )),
                ) => {}
                (_, Err(e)) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(decided, 1, "round {round}");
        let stored = p.b.get(&t.id).await.unwrap().unwrap();
        assert_eq!(executed, usize::from(stored.status == Status::Executed));
        let ev = events_of(&*p.b, &t.id).await;
        let outcomes = [
            AuditKind::TicketApproved,
            AuditKind::TicketDenied,
            AuditKind::TicketExpired,
            AuditKind::TicketCancelled,
        ];
        assert_eq!(count(&ev, &[AuditKind::TicketCreated]), 1, "{ev:?}");
        assert_eq!(count(&ev, &outcomes), 1, "round {round}: {ev:?}");
        assert_eq!(count(&ev, &[AuditKind::TicketExecuted]), executed);
        assert_eq!(ev.len(), 1 + decided + executed);
    }
    for n in noise {
        n.await.unwrap();
    }
    let all = p.a.audit(&AuditFilter::default()).await.unwrap();
    ticket::verify(&all).unwrap();
    assert_eq!(count(&all, &[AuditKind::ShadowMatched]), 300);
}

/// Two approvers on two replicas approve an `access` ticket (quorum 1) at once: one wins,
/// the winner's write creates exactly one grant, and `grant.created` is recorded once.
async fn access_approval_creates_exactly_one_grant(p: Pair) {
    for round in 0..30 {
        let t = create(&*p.a, access_ticket(&format!("/console/{round}"), "bob")).await;
        let mut tasks = Vec::new();
        for (store, who) in [(p.a.clone(), "alice"), (p.b.clone(), "carol")] {
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                let at = now();
                store
                    .transition(
                        &id,
                        &|t| ticket::approve(t, &oncall(who), None, at),
                        &events,
                    )
                    .await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(t) => winners.push(t),
                Err(StoreError::Transition(TransitionError::NotPending { .. })) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let approved = &winners[0];
        let g = p.b.get_grant(&GrantId::for_ticket(&t.id)).await.unwrap();
        let g = g.expect("the approval created the grant");
        assert_eq!(Some(g.clone()), ticket::grant_of(&t, approved));
        let mine = p.a.grants_for("db-console", "bob", now()).await.unwrap();
        assert_eq!(mine.iter().filter(|x| x.id == g.id).count(), 1);
        assert_eq!(mine.len(), round + 1);
        let ev = events_of(&*p.a, &t.id).await;
        assert_eq!(count(&ev, &[AuditKind::GrantCreated]), 1, "{ev:?}");
        assert_eq!(count(&ev, &[AuditKind::TicketApproved]), 1, "{ev:?}");
    }
    // Derived grant ids are never overwritten: a grant already stored under the id (here a
    // revoked one) stays as it is when the ticket is approved.
    let t = create(&*p.a, access_ticket("/console/again", "bob")).await;
    let at = now();
    let mut before = t.clone();
    let approved = ticket::approve(&t, &oncall("alice"), None, at).unwrap();
    before.status = Status::Pending;
    let mut existing = ticket::grant_of(&before, &approved).unwrap();
    existing.revoked_at = Some(at);
    p.a.create_grant(existing.clone()).await.unwrap();
    p.b.transition(
        &t.id,
        &|t| ticket::approve(t, &oncall("alice"), None, at),
        &events,
    )
    .await
    .unwrap();
    assert_eq!(p.a.get_grant(&existing.id).await.unwrap(), Some(existing));
    assert_eq!(whole_chain_verifies(&*p.b).await, 31 * 3);
    // An action ticket's approval creates no grant.
    let action = create(&*p.a, new_ticket("/v1/action", "bob")).await;
    p.a.transition(
        &action.id,
        &|t| ticket::approve(t, &oncall("alice"), None, now()),
        &events,
    )
    .await
    .unwrap();
    assert_eq!(
        p.a.get_grant(&GrantId::for_ticket(&action.id))
            .await
            .unwrap(),
        None
    );
}

/// A burst of writers that all record events, on both handles at once (400 creates, then
/// 400 approvals and 400 executes): every change lands with its event, none gives up on a
/// conflict, and the chain is whole.
async fn a_burst_of_writes_with_events_all_lands(p: Pair) {
    let n = 400;
    let (created, refused) = race_creates(&p, NO_LIMITS, n, |i| {
        ticket_from(&format!("/v1/burst/{i}"), &format!("u{i}"), "192.0.2.9")
    })
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    for step in 0..2 {
        let mut tasks = Vec::new();
        for (i, t) in created.iter().enumerate() {
            let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                let f = move |t: &Ticket| {
                    if step == 0 {
                        ticket::approve(t, &oncall("alice"), None, now())
                    } else {
                        ticket::execute(t, now(), "r", &t.fingerprint)
                    }
                };
                store.transition(&id, &f, &events).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }
    assert_eq!(whole_chain_verifies(&*p.b).await, 3 * n);
}

/// Changes with events are committed together (a group commit on Redis): a caller that goes
/// away mid-way (its future dropped, as when a client hangs up) strands none of the others,
/// and what it changed either landed whole with its events or not at all.
async fn dropped_transitions_strand_no_other(p: Pair) {
    let n = 300;
    let (created, refused) = race_creates(&p, NO_LIMITS, n, |i| {
        ticket_from(&format!("/v1/dropped/{i}"), &format!("d{i}"), "192.0.2.10")
    })
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (i, t) in created.iter().enumerate() {
        let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
        let id = t.id.clone();
        let task = tokio::spawn(async move {
            let f = |t: &Ticket| ticket::approve(t, &oncall("alice"), None, now());
            store.transition(&id, &f, &events).await
        });
        if i % 3 == 0 {
            dropped.push((t.id.clone(), task));
        } else {
            kept.push(task);
        }
    }
    // A third go away, spread over the time the commits take.
    for (_, task) in &dropped {
        tokio::time::sleep(Duration::from_micros(200)).await;
        task.abort();
    }
    for task in kept {
        let t = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("no change is stranded")
            .unwrap()
            .unwrap();
        assert_eq!(t.status, Status::Approved);
    }
    let mut approved = n - dropped.len();
    for (id, task) in dropped {
        let _ = task.await;
        match p.a.get(&id).await.unwrap().unwrap().status {
            Status::Approved => approved += 1,
            Status::Pending => {}
            other => panic!("{id} is {other}"),
        }
    }
    // One creation event per ticket, one approval event per approval that landed.
    assert_eq!(whole_chain_verifies(&*p.b).await, n + approved);
}

/// Replica leases: alive while renewed, on every handle; gone once the lease runs out.
async fn replica_leases_run_out_unless_renewed(p: Pair) {
    let ids = ["gw_a".to_string(), "gw_b".to_string()];
    assert_eq!(p.a.replicas_alive(&ids).await.unwrap(), [false, false]);
    // A lease keeps the number of the renewal that began it.
    let renew = |h: &std::sync::Arc<dyn Store>, r: &'static str, ms: u64, n: u64| {
        let h = h.clone();
        async move {
            h.renew_replica(r, Duration::from_millis(ms), n)
                .await
                .unwrap()
        }
    };
    assert_eq!(renew(&p.a, "gw_a", 800, 1).await, 1);
    assert_eq!(renew(&p.b, "gw_b", 60_000, 1).await, 1);
    assert_eq!(renew(&p.b, "gw_b", 60_000, 2).await, 1);
    assert_eq!(p.b.replicas_alive(&ids).await.unwrap(), [true, true]);
    assert!(p.a.replicas_alive(&[]).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(p.b.replicas_alive(&ids).await.unwrap(), [false, true]);
    // Renewed after it ran out: a new lease, begun by this renewal.
    assert_eq!(renew(&p.a, "gw_a", 60_000, 2).await, 2);
    assert_eq!(renew(&p.a, "gw_a", 60_000, 3).await, 2);
    assert_eq!(p.a.replicas_alive(&ids).await.unwrap(), [true, true]);
}

/// Creates `n` distinct tickets at once from both handles under `limits`.
async fn race_creates(
    p: &Pair,
    limits: PendingLimits,
    n: usize,
    make: impl Fn(usize) -> Ticket,
) -> (Vec<Ticket>, Vec<StoreError>) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
        let t = make(i);
        tasks.push(tokio::spawn(async move {
            create_or_join(&*store, t, &limits).await
        }));
    }
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            Ok((t, true)) => created.push(t),
            Ok((t, false)) => panic!("distinct tickets joined {}", t.id),
            Err(e) => refused.push(e),
        }
    }
    (created, refused)
}

/// `max_pending = 5`: of 32 concurrent distinct creates exactly 5 land; joining one of them
/// still works at the cap, and a ticket leaving `PENDING` frees a place.
async fn global_pending_cap_is_atomic(p: Pair) {
    let limits = PendingLimits {
        max_pending: Some(5),
        ..NO_LIMITS
    };
    let (created, refused) = race_creates(&p, limits, 32, |i| {
        ticket_from(
            &format!("/v1/cap/{i}"),
            &format!("user{i}"),
            &format!("192.0.2.{i}"),
        )
    })
    .await;
    assert_eq!(created.len(), 5);
    assert_eq!(refused.len(), 27);
    for e in &refused {
        assert_eq!(
            *e,
            StoreError::Limit {
                scope: LimitScope::Global,
                limit: 5
            }
        );
    }
    let first = &created[0];
    let again = ticket_from(
        &first.request.path,
        first.requester.key().as_ref(),
        "192.0.2.1",
    );
    let (joined, fresh) = create_or_join(&*p.b, again, &limits).await.unwrap();
    assert!(!fresh && joined.id == first.id);
    // Refused creates wrote nothing, not even an event.
    assert_eq!(p.a.pending_index().await.unwrap().len(), 5);
    assert_eq!(whole_chain_verifies(&*p.a).await, 5);
    p.a.transition(&first.id, &|t| ticket::cancel(t, now()), &events)
        .await
        .unwrap();
    let (_, fresh) = create_or_join(
        &*p.a,
        ticket_from("/v1/cap/next", "zed", "192.0.2.99"),
        &limits,
    )
    .await
    .unwrap();
    assert!(fresh);
}

/// `per_source = 3`: 32 anonymous requesters behind one address open 3 tickets; other
/// addresses are not affected, and joining works at the cap. A named requester counts as one
/// user across routes and addresses.
async fn per_source_cap_is_atomic(p: Pair) {
    let limits = PendingLimits {
        per_source: Some(3),
        ..NO_LIMITS
    };
    // Anonymous requesters are capped by client address, whatever credentials they show.
    let (created, refused) = race_creates(&p, limits, 32, |i| {
        anonymous_from(&format!("/v1/src/{i}"), &format!("anon{i}"), "198.51.100.9")
    })
    .await;
    assert_eq!(created.len(), 3);
    assert_eq!(refused.len(), 29);
    for e in &refused {
        assert_eq!(
            *e,
            StoreError::Limit {
                scope: LimitScope::Source,
                limit: 3
            }
        );
    }
    let first = &created[0];
    let again = anonymous_from(
        &first.request.path,
        first.requester.anonymous.as_deref().unwrap_or_default(),
        "198.51.100.9",
    );
    let (joined, fresh) = create_or_join(&*p.a, again, &limits).await.unwrap();
    assert!(!fresh && joined.id == first.id);
    let elsewhere = anonymous_from("/v1/src/x", "anon0", "198.51.100.10");
    assert!(create_or_join(&*p.b, elsewhere, &limits).await.unwrap().1);
    // An anonymous ticket without a source is not counted by address.
    let mut unknown = anonymous_from("/v1/src/unknown", "anon1", "198.51.100.9");
    unknown.source = None;
    assert!(create_or_join(&*p.b, unknown, &limits).await.unwrap().1);
    // A named requester is capped as one user across routes and addresses.
    let (created, refused) = race_creates(&p, limits, 16, |i| {
        let mut t = ticket_from(&format!("/v1/usr/{i}"), "carol", &format!("203.0.113.{i}"));
        t.route = format!("route-{i}");
        t
    })
    .await;
    assert_eq!((created.len(), refused.len()), (3, 13));
}

/// `per_requester = 2`: one requester racing 32 creates on one route from 32 addresses opens
/// 2; the same requester on another route, and another requester, are not affected. An
/// overdue ticket not yet expired still counts.
async fn per_requester_cap_is_atomic(p: Pair) {
    let limits = PendingLimits {
        per_requester: Some(2),
        ..NO_LIMITS
    };
    let (created, refused) = race_creates(&p, limits, 32, |i| {
        ticket_from(&format!("/v1/req/{i}"), "bob", &format!("203.0.113.{i}"))
    })
    .await;
    assert_eq!(created.len(), 2);
    assert_eq!(refused.len(), 30);
    for e in &refused {
        assert_eq!(
            *e,
            StoreError::Limit {
                scope: LimitScope::Requester,
                limit: 2
            }
        );
    }
    let (joined, fresh) = create_or_join(
        &*p.b,
        ticket_from(&created[1].request.path, "bob", "203.0.113.200"),
        &limits,
    )
    .await
    .unwrap();
    assert!(!fresh && joined.id == created[1].id);
    assert!(
        create_or_join(&*p.a, new_ticket("/v1/req/x", "carol"), &limits)
            .await
            .unwrap()
            .1
    );
    let mut other_route = new_ticket("/v1/req/x", "bob");
    other_route.route = "other-route".into();
    assert!(create_or_join(&*p.a, other_route, &limits).await.unwrap().1);

    let mut overdue = new_ticket("/v1/req/overdue", "dave");
    overdue.expires_at = overdue.created_at;
    create(&*p.a, overdue).await;
    let one = PendingLimits {
        per_requester: Some(1),
        ..NO_LIMITS
    };
    assert_eq!(
        create_or_join(&*p.b, new_ticket("/v1/req/next", "dave"), &one).await,
        Err(StoreError::Limit {
            scope: LimitScope::Requester,
            limit: 1
        })
    );
}

/// With one second of retention, a cancelled ticket, an ended grant and a ticket whose record
/// lapsed while still pending are gone a few seconds later, and `prune` clears what still
/// pointed at them; a live ticket stays.
async fn finished_records_leave_within_retention(p: Pair) {
    let cancelled = create(&*p.a, ticket_from("/v1/ret/c", "bob", "192.0.2.50")).await;
    p.a.transition(&cancelled.id, &|t| ticket::cancel(t, now()), &events)
        .await
        .unwrap();
    // An approved access ticket is settled by its grant, so it stays (its grant does not).
    let access = create(&*p.a, access_ticket("/console/ret", "bob")).await;
    let access =
        p.b.transition(
            &access.id,
            &|t| ticket::approve(t, &oncall("alice"), None, now()),
            &events,
        )
        .await
        .unwrap();
    let gid = GrantId::for_ticket(&access.id);
    p.a.transition_grant(&gid, &|g| ticket::revoke(g, now()), &|_, _| Vec::new())
        .await
        .unwrap();
    let mut lapsed = ticket_from("/v1/ret/lapsed", "erin", "192.0.2.51");
    lapsed.expires_at = lapsed.created_at;
    let lapsed = create(&*p.a, lapsed).await;
    // A live ticket of the same requester and address keeps their index sets alive.
    let live = create(&*p.a, ticket_from("/v1/ret/live", "erin", "192.0.2.51")).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.a.get(&cancelled.id).await.unwrap().is_some()
        || p.a.get(&lapsed.id).await.unwrap().is_some()
        || p.a.get_grant(&gid).await.unwrap().is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "records outlived their retention"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(p.b.get(&access.id).await.unwrap(), Some(access.clone()));
    let pr = |route: &str, user: &str| format!("jit:pr:{}:{route}:{user}", route.len());
    if let Some(server) = &p._server {
        // The records expired on their own; the indexes still point at them.
        assert!(server.indexed("jit:tickets", cancelled.id.as_str()));
        assert!(server.indexed("jit:grants", gid.as_str()));
        assert!(server.indexed("jit:pending", lapsed.id.as_str()));
        assert!(server.indexed(&pr("prod-deploy", "erin"), lapsed.id.as_str()));
        assert!(server.indexed("jit:ps:user:erin", lapsed.id.as_str()));
    }
    let removed = p.b.prune(now()).await.unwrap();
    if let Some(server) = &p._server {
        assert_eq!(removed, 7);
        for id in [&cancelled.id, &lapsed.id] {
            assert!(!server.indexed("jit:tickets", id.as_str()));
        }
        assert!(server.indexed("jit:tickets", access.id.as_str()));
        assert!(!server.indexed("jit:grants", gid.as_str()));
        assert!(!server.indexed(&pr("db-console", "bob"), gid.as_str()));
        assert!(!server.indexed("jit:pending", lapsed.id.as_str()));
        assert!(!server.indexed(&pr("prod-deploy", "erin"), lapsed.id.as_str()));
        assert!(!server.indexed("jit:ps:user:erin", lapsed.id.as_str()));
        assert!(server.indexed("jit:tickets", live.id.as_str()));
        assert!(server.indexed("jit:pending", live.id.as_str()));
        assert!(server.indexed(&pr("prod-deploy", "erin"), live.id.as_str()));
        assert!(server.indexed("jit:ps:user:erin", live.id.as_str()));
    }
    // (Both may share a millisecond, so "newest first" is compared as a set.)
    let mut listed = p.a.list(None, 100).await.unwrap();
    listed.sort_by(|x, y| x.id.cmp(&y.id));
    let mut expected = vec![live.clone(), access.clone()];
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(listed, expected);
    assert_eq!(
        p.a.pending_index().await.unwrap(),
        vec![(live.id.clone(), live.expires_at)]
    );
    // The lapsed ticket no longer counts against its requester or address; the live one does.
    let two = PendingLimits {
        max_pending: Some(2),
        per_requester: Some(2),
        per_source: Some(2),
    };
    let next = ticket_from("/v1/ret/next", "erin", "192.0.2.51");
    assert!(create_or_join(&*p.b, next, &two).await.unwrap().1);
    assert_eq!(p.a.prune(now()).await.unwrap(), 0);
}

fn rules_event(n: u64) -> AuditDraft {
    AuditDraft {
        at: now(),
        kind: AuditKind::RulesReloaded,
        ticket: None,
        route: None,
        actor: None,
        requester: None,
        detail: serde_json::json!({ "n": n }),
    }
}

fn delivery(id: &str, seq: u64) -> Delivery {
    Delivery {
        id: id.into(),
        channel: "hook".into(),
        seq,
        ticket: None,
        route: None,
        payload: format!("{{\"seq\":{seq}}}"),
        queued_at: now(),
        attempts: 0,
    }
}

async fn audit_tail_reads_after_a_number(p: Pair) {
    let mut seqs = Vec::new();
    for n in 0..5 {
        seqs.push(p.a.append_audit(rules_event(n)).await.unwrap().seq);
    }
    let after = p.b.audit_after(seqs[1], 2).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), &seqs[2..4]);
    let rest = p.b.audit_after(seqs[3], 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), &seqs[4..]);
    assert_eq!(rest[0].detail["n"], 4);
    assert!(p.b.audit_after(seqs[4], 100).await.unwrap().is_empty());
    let last = p.b.audit_after(seqs[3], 1).await.unwrap().remove(0);
    assert_eq!(p.b.audit_head().await.unwrap(), (seqs[4], last.hash));
}

async fn audit_appends_wake_tailers_on_every_handle(p: Pair) {
    let mut rx = p.b.audit_seq();
    wait_subscribed(&p).await;
    let e = p.a.append_audit(rules_event(1)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| *s >= e.seq))
        .await
        .expect("audit append announced")
        .unwrap();
}

async fn outbox_fans_out_once_and_delivers_once(p: Pair) {
    // History before the outbox first looks is not notified.
    p.a.append_audit(rules_event(0)).await.unwrap();
    let cursor = p.a.outbox_cursor().await.unwrap();
    assert_eq!(p.b.outbox_cursor().await.unwrap(), cursor);
    assert!(p.a.audit_after(cursor, 10).await.unwrap().is_empty());
    let e = p.a.append_audit(rules_event(1)).await.unwrap();
    // Two replicas fan out the same events: only one wins the cursor.
    let batch = [delivery("msg_1", e.seq), delivery("msg_2", e.seq)];
    let at = now();
    assert!(p.a.outbox_enqueue(cursor, e.seq, &batch, at).await.unwrap());
    assert!(!p.b.outbox_enqueue(cursor, e.seq, &batch, at).await.unwrap());
    assert_eq!(p.b.outbox_cursor().await.unwrap(), e.seq);
    // Nothing is due before its time; then each delivery goes to one claimer.
    assert!(p
        .a
        .outbox_claim(
            "hook",
            Timestamp(at.as_millis() - 1),
            Duration::from_secs(60),
            10
        )
        .await
        .unwrap()
        .is_empty());
    let mine =
        p.a.outbox_claim("hook", at, Duration::from_secs(60), 10)
            .await
            .unwrap();
    assert_eq!(mine.len(), 2);
    assert!(p
        .b
        .outbox_claim("hook", at, Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
    let (one, two) = (&mine[0], &mine[1]);
    assert_eq!(one.delivery.attempts, 0);
    let ids: Vec<&str> = mine.iter().map(|c| c.delivery.id.as_str()).collect();
    assert!(ids.contains(&"msg_1") && ids.contains(&"msg_2"));
    assert_eq!(one.delivery.payload, format!("{{\"seq\":{}}}", e.seq));
    // Done once; a second settle of the same claim finds nothing.
    assert!(p.a.outbox_settle(one, None).await.unwrap());
    assert!(!p.a.outbox_settle(one, None).await.unwrap());
    // A failed attempt is due again with one more attempt counted.
    let retry = later(at, 5);
    assert!(p.a.outbox_settle(two, Some(retry)).await.unwrap());
    assert!(p
        .b
        .outbox_claim("hook", later(at, 4), Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
    let again =
        p.b.outbox_claim("hook", retry, Duration::from_secs(60), 10)
            .await
            .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, two.delivery.id);
    assert_eq!(again[0].delivery.attempts, 1);
    // The first claimer's token no longer settles it.
    assert!(!p.a.outbox_settle(two, None).await.unwrap());
    // A claimer that dies holds it only until its lease ends; then another replica takes
    // it, and the dead one's late settle is refused.
    let lease_end = later(retry, 60);
    let taken =
        p.a.outbox_claim("hook", lease_end, Duration::from_secs(60), 10)
            .await
            .unwrap();
    assert_eq!(taken.len(), 1);
    assert!(!p.b.outbox_settle(&again[0], None).await.unwrap());
    assert!(p.a.outbox_settle(&taken[0], None).await.unwrap());
    assert!(p
        .b
        .outbox_claim("hook", later(lease_end, 3600), Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
    // An id fanned out again (a replica that lost the race after writing) is not duplicated.
    let cursor = p.a.outbox_cursor().await.unwrap();
    let dup = [delivery("msg_3", e.seq), delivery("msg_3", e.seq)];
    assert!(p.b.outbox_enqueue(cursor, cursor, &dup, at).await.unwrap());
    assert_eq!(
        p.a.outbox_claim("hook", at, Duration::from_secs(60), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Claims are per channel: another channel's deliveries are not behind these, and the
    // channels with queued deliveries are listed until their last one is done.
    let mut chat = delivery("msg_4", e.seq);
    chat.channel = "chat".into();
    let cursor = p.a.outbox_cursor().await.unwrap();
    assert!(p
        .a
        .outbox_enqueue(cursor, cursor, &[chat], at)
        .await
        .unwrap());
    let mut channels = p.b.outbox_channels().await.unwrap();
    channels.sort();
    assert_eq!(channels, ["chat", "hook"]);
    assert!(p
        .b
        .outbox_claim("hook", at, Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
    let chat =
        p.b.outbox_claim("chat", at, Duration::from_secs(60), 10)
            .await
            .unwrap();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].delivery.id, "msg_4");
    assert!(p.b.outbox_settle(&chat[0], None).await.unwrap());
    assert_eq!(p.a.outbox_channels().await.unwrap(), ["hook"]);
}

macro_rules! contract {
    ($($retention:expr => $($case:ident),+ $(,)?);+ $(;)?) => {
        mod memory_store {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::memory($retention)).await;
                }
            )+)+
        }
        mod redis_store {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::redis($retention).await).await;
                }
            )+)+
        }
        mod redis_cluster {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::cluster($retention).await).await;
                }
            )+)+
        }
    };
}

contract!(
    super::DAYS =>
        create_then_get,
        coalescing_joins_pending_and_stops_after_decision,
        coalescing_skips_a_due_ticket,
        pending_index_tracks_pending_tickets,
        racing_decisions_have_one_outcome,
        transitions_and_their_events_land_together,
        execute_and_its_event_happen_exactly_once,
        access_approval_creates_exactly_one_grant,
        a_burst_of_writes_with_events_all_lands,
        dropped_transitions_strand_no_other,
        replica_leases_run_out_unless_renewed,
        global_pending_cap_is_atomic,
        per_source_cap_is_atomic,
        per_requester_cap_is_atomic,
        decisions_are_published,
        audit_chain_holds_under_concurrent_appends,
        audit_filters_and_pages,
        audit_tap_sends_what_landed_in_order,
        grants_are_used_and_revoked_atomically,
        decided_tickets_are_recorded_whole_or_not_at_all,
        timers_come_due_in_order_and_clear,
        recent_grants_lists_every_kept_grant,
        audit_tail_reads_after_a_number,
        audit_appends_wake_tailers_on_every_handle,
        outbox_fans_out_once_and_delivers_once,
        batch_transitions_apply_each_once_in_order,
        batch_transitions_race_single_decisions_with_one_outcome_each,
        reconciling_reads_only_what_is_held_and_what_is_due,
        batch_transitions_are_not_starved_by_one_busy_ticket;
    super::ONE_SECOND =>
        finished_records_leave_within_retention;
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
    a.transition(&t.id, &|t| ticket::cancel(t, now()), &events)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("decision after reconnect")
        .unwrap();
    assert_eq!(got, t.id);
}

/// With two replicas on one Redis, each replica's tap gets exactly the events it appended:
/// together they are the whole chain, each in chain order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_each_replica_taps_its_own_events() {
    let server = RedisServer::start();
    let a = Arc::new(server.store().await);
    let b = Arc::new(server.store().await);
    let (ta, mut ra) = tokio::sync::mpsc::unbounded_channel();
    let (tb, mut rb) = tokio::sync::mpsc::unbounded_channel();
    a.tap_audit(Some(ta));
    b.tap_audit(Some(tb));
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for j in 0..3 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..20 {
                    let t = create(&*store, new_ticket(&format!("/v1/r/{i}/{j}/{k}"), "bob")).await;
                    store
                        .transition(&t.id, &|t| ticket::cancel(t, now()), &events)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.tap_audit(None);
    b.tap_audit(None);
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while let Some(e) = ra.recv().await {
        from_a.push(e);
    }
    while let Some(e) = rb.recv().await {
        from_b.push(e);
    }
    assert_eq!((from_a.len(), from_b.len()), (120, 120));
    for mine in [&from_a, &from_b] {
        assert!(
            mine.windows(2).all(|w| w[0].seq < w[1].seq),
            "in chain order"
        );
    }
    let stored = a.audit(&AuditFilter::default()).await.unwrap();
    ticket::verify(&stored).unwrap();
    let mut both: Vec<AuditEvent> = from_a.into_iter().chain(from_b).collect();
    both.sort_by_key(|e| e.seq);
    assert_eq!(
        both, stored,
        "each event from exactly one replica, as stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_tickets_survive_a_new_store_instance() {
    let server = RedisServer::start();
    let first = server.store().await;
    let t = create(&first, new_ticket("/v1/restart", "bob")).await;
    drop(first);
    let second = server.store().await;
    assert_eq!(second.get(&t.id).await.unwrap(), Some(t.clone()));
    let (joined, created) = create_or_join(&second, new_ticket("/v1/restart", "bob"), &NO_LIMITS)
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
        store.transition(&t.id, &|t| ticket::cancel(t, now()), &events),
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

/// `prune` does at most about a thousand entries of work per call, and repeated calls finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_prune_does_bounded_work() {
    let server = RedisServer::start();
    let store = server.store_with(ONE_SECOND).await;
    let mut last = None;
    for i in 0..600 {
        let mut t = ticket_from(
            &format!("/v1/bulk/{i}"),
            &format!("u{}", i % 7),
            "192.0.2.77",
        );
        t.expires_at = t.created_at;
        last = Some(create(&store, t).await);
    }
    let last = last.unwrap();
    while store.get(&last.id).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 600 tickets, each in jit:tickets, jit:pending, its requester's and its address's set.
    let mut total = 0;
    let mut calls = 0;
    loop {
        let n = store.prune(now()).await.unwrap();
        assert!(n <= 1000, "one call removed {n}");
        calls += 1;
        total += n;
        if n == 0 {
            break;
        }
        assert!(calls < 20, "prune does not finish");
    }
    // Each in jit:tickets and jit:pending at least (the per-requester and per-address sets
    // may have expired with their last member).
    assert!(total >= 1200, "{total}");
    assert!(calls >= 3, "{calls} calls");
    assert!(store.pending_index().await.unwrap().is_empty());
    assert!(server.command("ZCARD jit:tickets").starts_with(":0"));
    assert!(!server.indexed("jit:ps:192.0.2.77", last.id.as_str()));
}

/// **FINDING** (red team: one undecodable delivery holds its whole claim batch for ever).
/// `outbox_claim` leases every due delivery in one script, then decodes them all: one entry
/// that does not decode (a delivery written by another version, a hand edit, a truncated
/// write) fails the whole call, after the script already leased the batch. Every lease
/// ends together, the same batch is due again together, and it fails again: the good
/// deliveries claimed with the bad one are never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outbox_claim_survives_an_undecodable_delivery() {
    let server = RedisServer::start();
    let store = server.store().await;
    let e = store.append_audit(rules_event(1)).await.unwrap();
    let cursor = store.outbox_cursor().await.unwrap();
    let at = now();
    let batch = [delivery("msg_a", e.seq), delivery("msg_b", e.seq)];
    assert!(store
        .outbox_enqueue(cursor, cursor, &batch, at)
        .await
        .unwrap());
    // A third entry that is not a delivery, due with them.
    assert!(server
        .command("HSET jit:{outbox}:data msg_bad not-json")
        .starts_with(':'));
    assert!(server
        .command(&format!(
            "ZADD jit:{{outbox}}:due:hook {} msg_bad",
            at.as_millis()
        ))
        .starts_with(':'));
    let lease = Duration::from_secs(10);
    let mut got = Vec::new();
    // Each round comes after the previous round's lease.
    for round in 0..3u64 {
        let when = later(at, round * 60);
        if let Ok(claimed) = store.outbox_claim("hook", when, lease, 10).await {
            for c in claimed {
                got.push(c.delivery.id.clone());
                assert!(store.outbox_settle(&c, None).await.unwrap());
            }
        }
    }
    got.sort();
    assert_eq!(
        got,
        ["msg_a", "msg_b"],
        "the deliveries claimed with an undecodable one were never handed out"
    );
}

// === red team 3: single transitions through CAS_TICKETS (n = 1) ===

/// The keys matching `pattern` (KEYS over the harness's raw socket).
fn keys_like(server: &RedisServer, pattern: &str) -> Vec<String> {
    let r = server.command(&format!("KEYS {pattern}"));
    r.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// SET `key` `value` as a RESP array (the value is JSON: no inline command).
fn raw_set(server: &RedisServer, key: &str, value: &str) {
    let cmd = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}",
        key.len(),
        value.len()
    );
    let r = server.command(&cmd);
    assert!(r.starts_with("+OK"), "SET: {r:?}");
}

/// A single approval (now CAS_TICKETS with n = 1) leaves every index as CAS_TICKET did:
/// out of the pending set, the per-requester and per-source sets, its coalescing key gone,
/// the grant stored with its two indexes, the decision published, one event each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_single_transition_writes_every_index() {
    let server = RedisServer::start();
    let a = server.store().await;
    let mut d = draft("/console/rt3", "bob");
    d.route = "db-console".into();
    d.mode = Mode::Access;
    d.source = Some("198.51.100.9".into());
    d.grant_terms = Some(GrantTerms {
        duration_ms: 3_600_000,
        max_uses: Some(5),
    });
    let at = now();
    let t = create(&a, Ticket::open(new_ticket_id(at), d, at)).await;
    let id = t.id.as_str().to_string();
    let pr = keys_like(&server, "jit:pr:*");
    let ps = keys_like(&server, "jit:ps:*");
    let co = keys_like(&server, "jit:coalesce:*");
    assert_eq!(
        (pr.len(), ps.len(), co.len()),
        (1, 1, 1),
        "{pr:?} {ps:?} {co:?}"
    );
    assert!(server.indexed("jit:pending", &id));
    assert!(server.indexed(&pr[0], &id));
    assert!(server.indexed(&ps[0], &id));

    let mut sub = a.subscribe();
    while server.numsub() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let approved = a
        .transition(
            &t.id,
            &|t| ticket::approve(t, &oncall("alice"), None, now()),
            &events,
        )
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert!(!server.indexed("jit:pending", &id), "left the pending set");
    assert!(!server.indexed(&pr[0], &id), "left the per-requester set");
    assert!(!server.indexed(&ps[0], &id), "left the per-source set");
    assert!(
        keys_like(&server, "jit:coalesce:*").is_empty(),
        "coalescing key gone"
    );
    let gid = GrantId::for_ticket(&t.id);
    let g = a.get_grant(&gid).await.unwrap().expect("grant stored");
    assert_eq!(Some(g.clone()), ticket::grant_of(&t, &approved));
    assert!(server.indexed("jit:grants", gid.as_str()));
    let gr = keys_like(&server, "jit:gr:*");
    assert_eq!(gr.len(), 1, "{gr:?}");
    assert!(server.indexed(&gr[0], gid.as_str()));
    let ttl = server.command(&format!("PTTL jit:{{{}}}:g", gid.as_str()));
    assert!(!ttl.starts_with(":-"), "grant has a TTL: {ttl:?}");
    let published = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await;
    assert!(
        matches!(published, Ok(Ok(ref p)) if *p == t.id),
        "published: {:?}",
        published.is_ok()
    );
    let ev = events_of(&a, &t.id).await;
    assert_eq!(count(&ev, &[AuditKind::TicketApproved]), 1);
    assert_eq!(count(&ev, &[AuditKind::GrantCreated]), 1);
    whole_chain_verifies(&a).await;
}

/// A record deleted between the read and the script answers 'changed' (no more 'gone'): the
/// re-read finds nothing, the caller sees NotFound, nothing is written or recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_ticket_deleted_under_a_transition_is_not_found() {
    let server = RedisServer::start();
    let a = server.store().await;
    let t = create(&a, new_ticket("/v1/rt3-gone", "bob")).await;
    let key = format!("jit:{{{}}}:t", t.id.as_str());
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let r = a
        .transition(
            &t.id,
            &|cur| {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    let r = server.command(&format!("DEL {key}"));
                    assert!(r.starts_with(":1"), "DEL: {r:?}");
                }
                ticket::approve(cur, &oncall("alice"), None, now())
            },
            &events,
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    assert_eq!(
        a.get(&t.id).await.unwrap(),
        None,
        "the script did not resurrect it"
    );
    let ev = events_of(&a, &t.id).await;
    assert_eq!(count(&ev, &[AuditKind::TicketApproved]), 0, "{ev:?}");
    whole_chain_verifies(&a).await;
}

/// A record another writer changed between the read and the script answers 'changed': the
/// transition is judged again on what is there now, and one decision only is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_ticket_changed_under_a_transition_is_judged_again() {
    let server = RedisServer::start();
    let a = server.store().await;
    let t = create(&a, new_ticket("/v1/rt3-changed", "bob")).await;
    let key = format!("jit:{{{}}}:t", t.id.as_str());
    let denied = ticket::deny(&t, &oncall("carol"), Some("no".into()), now()).unwrap();
    let denied_json = serde_json::to_string(&denied).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let r = a
        .transition(
            &t.id,
            &|cur| {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    raw_set(&server, &key, &denied_json);
                }
                ticket::approve(cur, &oncall("alice"), None, now())
            },
            &events,
        )
        .await;
    assert!(
        matches!(
            r,
            Err(StoreError::Transition(TransitionError::NotPending { .. }))
        ),
        "{r:?}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(a.get(&t.id).await.unwrap(), Some(denied));
    let ev = events_of(&a, &t.id).await;
    assert_eq!(count(&ev, &[AuditKind::TicketApproved]), 0, "{ev:?}");
    whole_chain_verifies(&a).await;
}

/// One-use execution across two handles, many rounds: exactly one executes, one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_execute_once_across_handles() {
    let p = redis(DAYS).await;
    for round in 0..40 {
        let t = create(&*p.a, new_ticket(&format!("/v1/rt3-exec/{round}"), "bob")).await;
        p.a.transition(
            &t.id,
            &|t| ticket::approve(t, &oncall("alice"), None, now()),
            &events,
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for s in [p.a.clone(), p.b.clone(), p.a.clone(), p.b.clone()] {
            let id = t.id.clone();
            tasks.push(tokio::spawn(async move {
                s.transition(
                    &id,
                    &|t| ticket::execute(t, now(), "r", &t.fingerprint),
                    &events,
                )
                .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Transition(_)) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(ok, 1, "round {round}");
        let ev = events_of(&*p.b, &t.id).await;
        assert_eq!(
            count(&ev, &[AuditKind::TicketExecuted]),
            1,
            "round {round}: {ev:?}"
        );
    }
    whole_chain_verifies(&*p.a).await;
}

// === red team: group commit (tests/e2e_redteam_hold.rs has the gateway side) ===

/// Red team, group commit (fixed): a caller that went away while its change waited for the
/// turn at the audit head left the change queued with no turn to come. Nothing committed it
/// until some later caller took the turn, which then committed the stale change first: an
/// approval its approver abandoned landed over a deny read and sent later, and the deny's
/// own change was left queued without a turn (503 after `op_timeout`). Now queueing and the
/// turn run in a task of their own: the abandoned change is committed in its turn (as any
/// write already sent when its caller hangs up), and the later deny is answered: denied if
/// the approval had not landed, refused as no longer pending if it had. Never a stranded
/// change, never an answer that disagrees with the ticket.
///
/// Deterministic here: writes are paused (`CLIENT PAUSE WRITE`, reads go on) so the first
/// change's commit holds the turn while the abandoned one is computed and queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_an_abandoned_change_never_lands_over_a_later_decision() {
    let server = RedisServer::start();
    let store = Arc::new(server.store().await);
    let approve = |t: &Ticket| ticket::approve(t, &oncall("alice"), None, now());
    // Warm the scripts up (a paused EVALSHA must not turn into NOSCRIPT + SCRIPT LOAD).
    let warm = create(&*store, new_ticket("/v1/group/warm", "bob")).await;
    store.transition(&warm.id, &approve, &events).await.unwrap();
    let u = create(&*store, new_ticket("/v1/group/u", "bob")).await;
    let d = create(&*store, new_ticket("/v1/group/d", "bob")).await;

    assert!(
        server.command("CLIENT PAUSE 1200 WRITE").starts_with("+OK"),
        "CLIENT PAUSE"
    );
    // The approval of `d` is read at once but computed slowly, so that it is queued while
    // the approval of `u` (read just after) holds the turn, paused in Redis.
    let abandoned = {
        let store = store.clone();
        let id = d.id.clone();
        tokio::spawn(async move {
            let slow = |t: &Ticket| {
                std::thread::sleep(Duration::from_millis(300));
                ticket::approve(t, &oncall("alice"), None, now())
            };
            store.transition(&id, &slow, &events).await
        })
    };
    let first = {
        let store = store.clone();
        let id = u.id.clone();
        tokio::spawn(async move {
            let slowish = |t: &Ticket| {
                std::thread::sleep(Duration::from_millis(50));
                ticket::approve(t, &oncall("alice"), None, now())
            };
            store.transition(&id, &slowish, &events).await
        })
    };
    // The approver of `d` gives up (its request is cancelled) before any answer.
    tokio::time::sleep(Duration::from_millis(700)).await;
    abandoned.abort();
    assert!(
        abandoned.await.unwrap_err().is_cancelled(),
        "answered early"
    );
    let t = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first change answers")
        .unwrap()
        .unwrap();
    assert_eq!(t.status, Status::Approved);

    // Later, the ticket is denied.
    let deny = |t: &Ticket| ticket::deny(t, &oncall("carol"), Some("no".into()), now());
    let denied = tokio::time::timeout(
        Duration::from_secs(20),
        store.transition(&d.id, &deny, &events),
    )
    .await
    .expect("the deny answers");
    let status = store.get(&d.id).await.unwrap().unwrap().status;
    let consistent = match &denied {
        Ok(t) => t.status == Status::Denied && status == Status::Denied,
        Err(StoreError::Transition(TransitionError::NotPending {
            status: Status::Approved,
        })) => status == Status::Approved,
        Err(_) => false,
    };
    assert!(
        consistent,
        "a deny after the approval was abandoned: answered {denied:?}, ticket {status}"
    );
    whole_chain_verifies(&*store).await;
}
