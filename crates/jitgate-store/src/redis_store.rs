//! The Redis store, for several gateway replicas sharing tickets.
//!
//! Commands go through one [`ConnectionManager`] (multiplexed, reconnects on its own). Every
//! change is optimistic compare-and-set: read the JSON (and the audit head, in the same
//! `MGET`), apply the pure Rust transition and its audit hook, chain the events after the
//! head, then run one Lua script that writes the new JSON, its index updates, the grant an
//! approval creates and the events only if the stored JSON is still exactly what was read
//! *and* the audit head has not moved. A changed record means read and apply again (at most
//! `MAX_ATTEMPTS` scripts); a moved head alone means only re-chaining after the head the
//! script returns (the record, and so the transition's result, is unchanged). Lua rather
//! than WATCH/MULTI because WATCH is per connection and the multiplexed connection is shared
//! by concurrent tasks; the scripts hold no decision logic, so the rules exist once, in
//! jitgate-rules.
//!
//! The audit head is one key every event-recording write checks, so on one replica such
//! writes take turns (a FIFO async mutex, holding the head this replica last wrote): only one
//! per replica is in flight, and a moved head means another replica's progress. Without
//! turns, N concurrent writers retrying optimistically let one through per round, O(N²)
//! scripts: 2,000 concurrent creates landed 10 within the operation timeout; with turns,
//! 10,000 concurrent creates, approvals or executes across two replicas each land in about
//! 1-2 s (release build, loopback).
//!
//! Keys (`{...}` is a Cluster hash tag):
//! - `jit:{<ticket id>}:t` ticket JSON, expiring `retention` after it can no longer change
//! - `jit:coalesce:{<fingerprint>}` → id of the pending ticket with that fingerprint
//! - `jit:pending` sorted set of pending ticket ids by expiry (lists, reconciliation, the
//!   global cap)
//! - `jit:tickets` sorted set of all ticket ids by creation (lists)
//! - `jit:pr:<len>:<route>:<requester>` pending ids of one requester on one route by expiry
//!   (the per-requester cap), expiring with its longest-kept member
//! - `jit:ps:<quota key>` pending ids of one user (`user:<name>`, across routes) or opened from
//!   one client address by anonymous requesters, by expiry (the per-source
//!   cap), likewise
//! - `jit:{<grant id>}:g` grant JSON; `jit:grants` and `jit:gr:<len>:<route>:<requester>`
//!   grant ids by expiry
//! - `jit:audit` stream with ids `<seq>-0`, `jit:audit:head` = `<seq> <hash>`
//! - channel `jit:decisions` carries ids of tickets that left `PENDING`
//!
//! Records expire on their own; the sorted sets are cleaned when a ticket leaves `PENDING`
//! and by [`Store::prune`], which removes entries whose record is gone, a bounded batch at a
//! time.
//!
//! On Redis Cluster (`redis+cluster://`) every key above starts with the hash tag `{jit}`
//! (see [`Keys`]): a script writes a record, its indexes and the audit chain atomically, and
//! Cluster runs a script only over keys of one slot. So the store lives in one slot, on one
//! primary at a time; the cluster moves it (resharding, failover) and the client follows
//! MOVED/ASK/TRYAGAIN. Cluster gives the store failover and shares the nodes with other
//! data, not write throughput beyond one primary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use jitgate_rules::config::{ClusterUrl, SentinelUrl};
use jitgate_rules::ticket::{
    AuditDraft, AuditEvent, Grant, GrantId, Status, Ticket, TicketId, Timestamp, GENESIS,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult, Script};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::{
    chain_all, grant_keep_until, new_claim_token, now, route_requester, ticket_keep_until,
    AuditFilter, AuditPage, AuditTap, Claimed, CreateAudit, Delivery, Effects, GrantAudit,
    GrantTransition, LimitScope, PendingLimits, Store, StoreError, StoreFuture, Tap, TicketAudit,
    TicketTransition, Timer, MAX_ATTEMPTS, PRUNE_BATCH,
};

/// The pub/sub channel decisions are published on.
pub const DECISIONS: &str = "jit:decisions";
const PENDING: &str = "jit:pending";
const TICKETS: &str = "jit:tickets";
const GRANTS: &str = "jit:grants";
/// The client addresses a requester's released requests came from (the risk score's
/// `new_source`).
fn sources_key(requester: &str) -> String {
    format!("jit:src:{requester}")
}

/// Timers of pending tickets (`e:<id>` escalation, `r:<id>` reminder), scored by when due.
const TIMERS: &str = "jit:timers";
const AUDIT: &str = "jit:audit";
const AUDIT_HEAD: &str = "jit:audit:head";
/// The pub/sub channel every audit append announces its newest seq on.
const AUDIT_NEW: &str = "jit:audit:new";
/// The notification outbox: fan-out cursor, due time per delivery id, delivery JSON, attempts
/// and claim tokens per id.
const OUTBOX_CURSOR: &str = "jit:{outbox}:cursor";
/// The channels with queued deliveries; each has its own due set, so a channel that hangs
/// only delays itself.
const OUTBOX_CHANNELS: &str = "jit:{outbox}:channels";
fn outbox_due(channel: &str) -> String {
    format!("jit:{{outbox}}:due:{channel}")
}
const OUTBOX_DATA: &str = "jit:{outbox}:data";
const OUTBOX_TRIES: &str = "jit:{outbox}:tries";
const OUTBOX_CLAIMS: &str = "jit:{outbox}:claims";
/// Audit events read per XRANGE.
const AUDIT_READ: usize = 500;
/// The per-requester and per-source sets, for [`Store::prune`]'s SCAN.
const PER_KEY_SETS: &str = "jit:[gp][rs]:*";

fn ticket_key(id: &TicketId) -> String {
    format!("jit:{{{id}}}:t")
}
fn grant_key(id: &GrantId) -> String {
    format!("jit:{{{id}}}:g")
}
fn coalesce_key(k: &str) -> String {
    format!("jit:coalesce:{{{k}}}")
}
fn per_requester(kind: &str, route: &str, requester: &str) -> String {
    format!("jit:{kind}:{}", route_requester(route, requester))
}
/// `None`: a key no script writes (tickets without a source are not indexed by address).
fn per_source(source: Option<&str>) -> String {
    format!("jit:ps:{}", source.unwrap_or_default())
}

/// The hash tag every key carries on Redis Cluster (see [`Keys`]).
const CLUSTER_TAG: &str = "{jit}";

/// The slot of [`CLUSTER_TAG`]: CRC16 (XMODEM) of the tag's inside, modulo 16384.
fn cluster_slot() -> u16 {
    let inside = CLUSTER_TAG.trim_start_matches('{').trim_end_matches('}');
    crc16::State::<crc16::XMODEM>::calculate(inside.as_bytes()) % 16384
}

/// The store's key names. Standalone and behind Sentinel they are the names above. On Redis
/// Cluster every name starts with the hash tag [`CLUSTER_TAG`], so that every key is in one
/// slot: each script writes a record, its indexes and the audit chain atomically, and a
/// script may only touch keys of one slot. The slot moves between primaries like any other
/// (resharding, failover); the client follows it.
#[derive(Clone, Copy)]
struct Keys {
    tag: &'static str,
}

impl Keys {
    fn of(self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }
    fn pending(self) -> String {
        self.of(PENDING)
    }
    fn tickets(self) -> String {
        self.of(TICKETS)
    }
    fn grants(self) -> String {
        self.of(GRANTS)
    }
    fn timers(self) -> String {
        self.of(TIMERS)
    }
    fn audit(self) -> String {
        self.of(AUDIT)
    }
    fn audit_head(self) -> String {
        self.of(AUDIT_HEAD)
    }
    fn outbox_cursor(self) -> String {
        self.of(OUTBOX_CURSOR)
    }
    fn outbox_channels(self) -> String {
        self.of(OUTBOX_CHANNELS)
    }
    fn outbox_data(self) -> String {
        self.of(OUTBOX_DATA)
    }
    fn outbox_tries(self) -> String {
        self.of(OUTBOX_TRIES)
    }
    fn outbox_claims(self) -> String {
        self.of(OUTBOX_CLAIMS)
    }
    fn outbox_due(self, channel: &str) -> String {
        self.of(&outbox_due(channel))
    }
    fn per_key_sets(self) -> String {
        self.of(PER_KEY_SETS)
    }
    fn ticket(self, id: &TicketId) -> String {
        self.of(&ticket_key(id))
    }
    fn grant(self, id: &GrantId) -> String {
        self.of(&grant_key(id))
    }
    fn coalesce(self, k: &str) -> String {
        self.of(&coalesce_key(k))
    }
    fn per_requester(self, kind: &str, route: &str, requester: &str) -> String {
        self.of(&per_requester(kind, route, requester))
    }
    fn per_source(self, source: Option<&str>) -> String {
        self.of(&per_source(source))
    }
    fn sources(self, requester: &str) -> String {
        self.of(&sources_key(requester))
    }
    /// A gateway replica's lease ([`Store::renew_replica`]).
    fn replica(self, id: &str) -> String {
        self.of(&format!("jit:replica:{id}"))
    }
    /// A key no script writes, in the slot of the others (a script's unused key slot).
    fn unused(self) -> String {
        self.of("")
    }
    /// `key` without the tag.
    fn untagged(self, key: &str) -> &str {
        key.strip_prefix(self.tag).unwrap_or(key)
    }
}

/// How to reach Redis and how long to wait for it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:pass@]host:port/db` or `rediss://...` (TLS, system roots unless `tls`
    /// gives a CA).
    pub url: String,
    /// For `rediss://`: the roots to trust instead of the system's, and a client certificate.
    pub tls: Option<StoreTls>,
    /// With `redis+sentinel://`: the sentinels' own user and password (the URL's are the
    /// data nodes').
    pub sentinel_username: Option<String>,
    /// As `sentinel_username`.
    pub sentinel_password: Option<String>,
    /// How many replicas must have each write (`WAIT`, up to half of `op_timeout`) before it
    /// counts; fewer, and the operation fails as `Unavailable`. `None`: behind Sentinel, every
    /// replica an answering sentinel sees up (1 while none has said), else 0.
    pub replica_acks: Option<u32>,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for every store operation, retries included; past it, `Unavailable`.
    pub op_timeout: Duration,
    /// How long finished tickets and grants are kept.
    pub retention: Duration,
}

/// PEM material for a `rediss://` connection.
#[derive(Clone, Default)]
pub struct StoreTls {
    /// PEM certificates the server's chain must end at (instead of the system roots).
    pub ca: Option<Vec<u8>>,
    /// PEM certificate chain and private key presented to the server (mutual TLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for StoreTls {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisOptions {
    /// Defaults: 2 s to connect, 3 s per operation, 7 days of retention.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            tls: None,
            sentinel_username: None,
            sentinel_password: None,
            replica_acks: None,
            connect_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(3),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A connection to the primary (standalone, Sentinel) or to the cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    /// Routes each command by its keys' slot and follows MOVED/ASK redirections.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Runs `cmd`, which names no key, where the store's keys are: on the cluster, the
    /// primary of [`CLUSTER_TAG`]'s slot (`SCAN`, `WAIT`, `PING`, `CLUSTER MYID` are about that node,
    /// not a random one); elsewhere, on the primary.
    async fn at_keys<T: redis::FromRedisValue>(&mut self, cmd: redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::new(cluster_slot(), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let v = c.route_command(cmd, routing).await?;
                Ok(redis::from_redis_value(v)?)
            }
        }
    }
}

/// The Redis [`Store`].
pub struct RedisStore {
    /// To the primary (replaced when the sentinels name another one), or to the cluster.
    conn: Arc<std::sync::RwLock<Conn>>,
    keys: Keys,
    opts: RedisOptions,
    decisions: broadcast::Sender<TicketId>,
    audit_seq: watch::Sender<u64>,
    listener: JoinHandle<()>,
    /// With Sentinel: follows the primary through failovers. With Cluster: counts the
    /// replicas of the store's slot.
    follower: Option<JoinHandle<()>>,
    /// With Sentinel: how many replicas the sentinels could promote now; with Cluster: how
    /// many replicas the primary of the store's slot has connected (kept by the follower).
    /// The default number of replicas a write must reach.
    promotable: Arc<std::sync::atomic::AtomicU32>,
    scripts: Arc<Scripts>,
    prune: Mutex<PruneCursor>,
    /// This replica's turn at the audit head, and the head as this replica last wrote or saw
    /// it. Writes that record events take turns, so at most one per replica races for the
    /// head: conflicts are bounded by the number of replicas instead of growing with every
    /// concurrent writer (where, retrying optimistically, each round lets one through).
    audit_head: Arc<tokio::sync::Mutex<Option<String>>>,
    /// Ticket changes with events waiting for this replica's turn at the audit head: whoever
    /// takes the turn commits those queued (up to [`BATCH`]) in one script (group commit), so
    /// thousands of concurrent releases cost tens of round trips, not thousands.
    queue: Arc<std::sync::Mutex<Vec<Queued>>>,
    /// Sent to while this replica's turn at the audit head is held, so in chain order.
    tap: Arc<Tap>,
    /// Operations that failed with [`StoreError::Unavailable`] (see [`Store::errors`]).
    errors: std::sync::atomic::AtomicU64,
}

struct Scripts {
    create: Script,
    cas_tickets: Script,
    cas_grant: Script,
    create_grant: Script,
    record: Script,
    unindex_gone: Script,
    outbox_cursor: Script,
    outbox_enqueue: Script,
    outbox_claim: Script,
    outbox_settle: Script,
    renew_lease: Script,
}

/// Where the next [`Store::prune`] resumes, so work bounded per call still covers every
/// index over several calls (per replica; prunes on several replicas are idempotent).
#[derive(Default)]
struct PruneCursor {
    /// Offsets into the pruned ranges of `jit:pending`, `jit:tickets`, `jit:grants`.
    offsets: [usize; 3],
    /// The SCAN cursor over per-requester and per-source sets.
    scan: u64,
}

/// The compare-and-set attempts of one operation: how many scripts ran, and once it has
/// events to record, its turn at the audit head (kept across re-reads, so a record that
/// changed is read again without queueing anew).
struct Attempts<'s> {
    count: usize,
    turn: Option<tokio::sync::MutexGuard<'s, Option<String>>>,
}

impl Attempts<'_> {
    fn new() -> Self {
        Attempts {
            count: 0,
            turn: None,
        }
    }

    fn left(&self) -> bool {
        self.count < MAX_ATTEMPTS
    }
}

/// Of two audit heads, the later one (the one read wins when either is unreadable).
fn later_head(cached: Option<String>, read: Option<String>) -> Option<String> {
    let seq = |h: &Option<String>| parse_head(h.as_deref()).ok().map(|(s, _)| s);
    match (seq(&cached), seq(&read)) {
        (Some(c), Some(r)) if c > r => cached,
        _ => read,
    }
}

/// What an index holds ids of.
#[derive(Clone, Copy)]
enum Record {
    Ticket,
    Grant,
}

impl Record {
    /// The record key of an index member; `None` for a member that is not an id.
    fn key(self, keys: Keys, member: &str) -> Option<String> {
        match self {
            Record::Ticket => TicketId::parse(member).ok().map(|id| keys.ticket(&id)),
            Record::Grant => GrantId::parse(member).ok().map(|id| keys.grant(&id)),
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(f) = &self.follower {
            f.abort();
        }
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn px(until: Timestamp, now: Timestamp) -> u64 {
    until.as_millis().saturating_sub(now.as_millis()).max(1000)
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects (within `connect_timeout`) and starts the decision listener.
    pub async fn connect(opts: RedisOptions) -> Result<Self, StoreError> {
        let target = Target::new(&opts)?;
        let (client, conn) = tokio::time::timeout(opts.connect_timeout + opts.op_timeout, async {
            if let Target::Cluster { client, seeds } = &target {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(opts.connect_timeout)
                    .set_response_timeout(opts.op_timeout);
                let conn = client.get_async_connection_with_config(config).await?;
                return Ok::<_, RedisError>((seeds[0].clone(), Conn::Cluster(conn)));
            }
            let client = target.primary().await?;
            let conn = manager(client.clone(), &opts).await?;
            Ok((client, Conn::Single(conn)))
        })
        .await
        .map_err(|_| StoreError::Unavailable("timed out connecting to redis".into()))?
        .map_err(unavailable)?;
        let conn = Arc::new(std::sync::RwLock::new(conn));
        let (primary, primary_rx) = watch::channel(client);
        let (decisions, _) = broadcast::channel(1024);
        let (audit_seq, _) = watch::channel(0);
        // Cluster: every node hears every PUBLISH, so the listener may use any; it moves to
        // the next seed node whenever one fails.
        let seeds = match &target {
            Target::Cluster { seeds, .. } => seeds.clone(),
            _ => Vec::new(),
        };
        let listener = tokio::spawn(listen(
            primary_rx,
            seeds,
            decisions.clone(),
            audit_seq.clone(),
            opts.connect_timeout,
        ));
        let keys = Keys {
            tag: if matches!(target, Target::Cluster { .. }) {
                CLUSTER_TAG
            } else {
                ""
            },
        };
        // What the sentinels say at connect time; the follower keeps it current.
        let promotable = match &target {
            Target::Cluster { .. } => {
                let mut c = current(&conn);
                tokio::time::timeout(opts.op_timeout, slot_replicas(&mut c))
                    .await
                    .ok()
                    .flatten()
            }
            _ => tokio::time::timeout(opts.op_timeout, target.promotable())
                .await
                .ok()
                .flatten(),
        };
        // Unknown (no sentinel would say: an ACL without `sentinel|replicas`, say): one.
        if promotable.is_none() && matches!(target, Target::Sentinel { .. }) {
            tracing::warn!(
                "no sentinel listed the replicas; every write waits for one replica until one does"
            );
        }
        let promotable = Arc::new(std::sync::atomic::AtomicU32::new(promotable.unwrap_or(1)));
        let follower = match target {
            Target::Direct(_) => None,
            Target::Cluster { .. } => Some(tokio::spawn(count_slot_replicas(
                conn.clone(),
                promotable.clone(),
                opts.op_timeout,
            ))),
            Target::Sentinel { .. } => Some(tokio::spawn(follow(
                target,
                primary,
                conn.clone(),
                promotable.clone(),
                opts.clone(),
            ))),
        };
        Ok(RedisStore {
            conn,
            keys,
            opts,
            decisions,
            audit_seq,
            listener,
            follower,
            promotable,
            scripts: Arc::new(Scripts {
                create: Script::new(&format!("{AUDIT_LUA}{CREATE_TICKET}")),
                cas_tickets: Script::new(&format!("{AUDIT_LUA}{CAS_TICKETS}")),
                cas_grant: Script::new(&format!("{AUDIT_LUA}{CAS_GRANT}")),
                create_grant: Script::new(&format!("{AUDIT_LUA}{CREATE_GRANT}")),
                record: Script::new(&format!("{AUDIT_LUA}{RECORD_TICKET}")),
                unindex_gone: Script::new(UNINDEX_GONE),
                outbox_cursor: Script::new(OUTBOX_CURSOR_LUA),
                outbox_enqueue: Script::new(OUTBOX_ENQUEUE_LUA),
                outbox_claim: Script::new(OUTBOX_CLAIM_LUA),
                outbox_settle: Script::new(OUTBOX_SETTLE_LUA),
                renew_lease: Script::new(RENEW_LEASE),
            }),
            prune: Mutex::new(PruneCursor::default()),
            audit_head: Arc::new(tokio::sync::Mutex::new(None)),
            queue: Arc::default(),
            tap: Arc::default(),
            errors: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether `opts` describe a store one can try to reach (a good URL, certificates that
    /// parse), without connecting.
    pub fn check(opts: &RedisOptions) -> Result<(), StoreError> {
        Target::new(opts).map(drop)
    }

    /// Waits until [`RedisOptions::replica_acks`] replicas have every write sent on `c` so
    /// far. A write only the primary has can vanish in a failover (the demoted primary is
    /// resynchronised from the promoted replica); with Sentinel, a write that reached a
    /// primary the sentinels had just replaced is never acknowledged, so it fails here
    /// instead of being answered as done and then lost.
    async fn acked(&self, c: &mut Conn) -> Result<(), StoreError> {
        Self::wait_acks(c, self.acks_wanted(), self.opts.op_timeout).await
    }

    /// How many replicas each write must reach now (see [`RedisOptions::replica_acks`]).
    fn acks_wanted(&self) -> u32 {
        self.opts.replica_acks.unwrap_or_else(|| {
            if self.follower.is_some() {
                self.promotable.load(std::sync::atomic::Ordering::Relaxed)
            } else {
                0
            }
        })
    }

    /// Queues `write` (read with audit head `read_head`) for the next group commit and waits
    /// for its outcome: `Some(ticket)` written, `None` changed since it was read.
    async fn commit_queued(
        &self,
        write: TicketWrite,
        read_head: Option<String>,
    ) -> Result<Option<Ticket>, StoreError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.enqueue(Queued::Write {
            write: Box::new(write),
            read_head,
            done,
        });
        outcome.await.unwrap_or_else(|_| Err(Self::no_answer()))
    }

    /// Queues an audit event with no record change for the next group commit and waits for
    /// it to be appended: thousands of releases each recording `ticket.forwarded` take a few
    /// turns at the audit head, not one each.
    async fn append_queued(&self, draft: AuditDraft) -> Result<AuditEvent, StoreError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.enqueue(Queued::Append { draft, done });
        outcome.await.unwrap_or_else(|_| Err(Self::no_answer()))
    }

    fn no_answer() -> StoreError {
        StoreError::Unavailable(
            "the group commit carrying this change ended without an answer".into(),
        )
    }

    /// Queues `change` and takes a turn at the audit head for it, in a task of its own from
    /// the queueing on: every queued change is followed by one turn, which commits at least
    /// one queued change, so none is left behind; and a caller that goes away (its future
    /// dropped) neither leaves its change queued without a turn nor ends a commit that
    /// others' changes ride on.
    fn enqueue(&self, change: Queued) {
        let queue = self.queue.clone();
        let audit_head = self.audit_head.clone();
        let group = self.group();
        tokio::spawn(async move {
            lock(&queue).push(change);
            let turn = audit_head.lock_owned().await;
            let batch = {
                let mut queue = lock(&queue);
                let mut seen = std::collections::HashSet::new();
                let mut batch = Vec::new();
                let mut i = 0;
                // One change per ticket per script (both would be checked against the same
                // record); a second one waits for the next turn.
                while i < queue.len() && batch.len() < BATCH {
                    let first = match &queue[i] {
                        Queued::Write { write, .. } => seen.insert(write.id.clone()),
                        // An append whose caller gave up before its turn is withdrawn, as
                        // it was when the caller waited for the turn itself: a caller that
                        // retries it (`append_reliably`) must not see it recorded twice.
                        Queued::Append { done, .. } if done.is_closed() => {
                            queue.remove(i);
                            continue;
                        }
                        Queued::Append { .. } => true,
                    };
                    if first {
                        batch.push(queue.remove(i));
                    } else {
                        i += 1;
                    }
                }
                batch
            };
            if !batch.is_empty() {
                group.commit(turn, batch).await;
            }
        });
    }

    /// What a [`CAS_TICKETS`] script over several tickets needs, owned.
    fn group(&self) -> Group {
        Group {
            conn: self.conn.clone(),
            scripts: self.scripts.clone(),
            keys: self.keys,
            tap: self.tap.clone(),
            acks: self.acks_wanted(),
            op_timeout: self.opts.op_timeout,
        }
    }

    /// Waits until `want` replicas have every write sent on `c` so far (see
    /// [`RedisStore::acked`]).
    async fn wait_acks(c: &mut Conn, want: u32, op_timeout: Duration) -> Result<(), StoreError> {
        if want == 0 {
            return Ok(());
        }
        // Half the operation's time, so a missing replica is reported as such rather than as
        // the whole operation timing out.
        let timeout = u64::try_from((op_timeout / 2).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(want).arg(timeout);
        let got: u32 = c.at_keys(wait).await.map_err(unavailable)?;
        if got < want {
            return Err(StoreError::Unavailable(format!(
                "the write reached {got} of the {want} replica(s) it needs"
            )));
        }
        Ok(())
    }

    /// The connection to the primary, or to the cluster.
    fn conn(&self) -> Conn {
        current(&self.conn)
    }

    /// Up to `count` audit events from seq `from` on: `(seq, event JSON)`.
    async fn audit_range(&self, from: u64, count: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut c = self.conn();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(self.keys.audit())
            .arg(format!("{from}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        entries
            .into_iter()
            .map(|(id, fields)| {
                let seq = id
                    .split_once('-')
                    .and_then(|(s, _)| s.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("audit stream id {id}")))?;
                let json = fields
                    .into_iter()
                    .find(|(k, _)| k == "e")
                    .map(|(_, v)| v)
                    .ok_or_else(|| StoreError::Corrupt(format!("audit entry {id} has no event")))?;
                Ok((seq, json))
            })
            .collect()
    }

    /// Bounds `fut` by `op_timeout`.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let r = match tokio::time::timeout(self.opts.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(
                "redis did not answer in time".into(),
            )),
        };
        if let Err(StoreError::Unavailable(_)) = r {
            self.errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    async fn get_string(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    /// The JSON stored at `key` as read (what a compare-and-set must find unchanged) and decoded.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<(String, T)>, StoreError> {
        match self.get_string(key).await? {
            Some(raw) => {
                let v = decode(what, &raw)?;
                Ok(Some((raw, v)))
            }
            None => Ok(None),
        }
    }

    async fn read_ticket(&self, id: &TicketId) -> Result<Option<(String, Ticket)>, StoreError> {
        self.read_json(&self.keys.ticket(id), "ticket").await
    }

    async fn read_grant(&self, id: &GrantId) -> Result<Option<(String, Grant)>, StoreError> {
        self.read_json(&self.keys.grant(id), "grant").await
    }

    /// [`Store::transition_many`] for up to [`BATCH`] tickets: one read of them all with the
    /// audit head, then one [`CAS_TICKETS`] script writing every change and all their
    /// events. A ticket another writer changed meanwhile is left to a transition of its own
    /// (`None`), and the rest of the chunk is read and applied again, so one busy ticket never
    /// holds back the others.
    async fn transition_chunk(
        &self,
        ids: &[TicketId],
        f: TicketTransition<'_>,
        audit: TicketAudit<'_>,
    ) -> Result<Vec<Option<Result<Ticket, StoreError>>>, StoreError> {
        let mut out: Vec<Option<Result<Ticket, StoreError>>> = ids.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..ids.len()).collect();
        // Tickets left to a transition of their own (`None` in the result).
        let mut alone: Vec<usize> = Vec::new();
        let mut rounds = 0;
        while !todo.is_empty() && rounds < MAX_ATTEMPTS {
            rounds += 1;
            let mut read = redis::cmd("MGET");
            for &i in &todo {
                read.arg(self.keys.ticket(&ids[i]));
            }
            read.arg(self.keys.audit_head());
            let mut c = self.conn();
            let mut values: Vec<Option<String>> =
                read.query_async(&mut c).await.map_err(unavailable)?;
            let read_head = values.pop().flatten();
            let at = now();
            let mut ops = Vec::with_capacity(todo.len());
            for (&i, value) in todo.iter().zip(values) {
                let Some(raw) = value else {
                    out[i] = Some(Err(StoreError::NotFound));
                    continue;
                };
                let current: Ticket = match decode("ticket", &raw) {
                    Ok(t) => t,
                    Err(e) => {
                        out[i] = Some(Err(e));
                        continue;
                    }
                };
                match f(&current) {
                    Ok(next) => {
                        ops.push(TicketWrite::new(i, raw, &current, next, audit, at, self)?)
                    }
                    Err(e) => out[i] = Some(Err(StoreError::Transition(e))),
                }
            }
            if ops.is_empty() {
                break;
            }
            let group = self.group();
            let mut turn = self.audit_head.lock().await;
            let mut head = later_head(turn.take(), read_head);
            let mut moved = 0;
            todo = loop {
                let attempt = {
                    let writes: Vec<&TicketWrite> = ops.iter().collect();
                    group.attempt(&writes, &[], head.as_deref()).await?
                };
                match attempt {
                    Attempt::Changed(changed) => {
                        *turn = head;
                        let changed: Vec<usize> = changed
                            .iter()
                            .filter_map(|&i| ops.get(i).map(|o| o.at))
                            .collect();
                        alone.extend(&changed);
                        break ops
                            .iter()
                            .map(|o| o.at)
                            .filter(|at| !changed.contains(at))
                            .collect();
                    }
                    Attempt::Written(written, events) => {
                        *turn = written;
                        self.tap.send(&events);
                        for op in ops {
                            out[op.at] = Some(Ok(op.next));
                        }
                        break Vec::new();
                    }
                    Attempt::Moved(now_head) => {
                        head = now_head;
                        *turn = head.clone();
                        // Another replica keeps appending: a big script loses every race
                        // for the head to its small ones, so the chunk goes one ticket at
                        // a time, on equal terms.
                        moved += 1;
                        if moved >= HEAD_RACES {
                            alone.extend(ops.iter().map(|o| o.at));
                            break Vec::new();
                        }
                    }
                }
            };
        }
        // Whatever is left after `MAX_ATTEMPTS` rounds (and the changed ones) goes alone.
        debug_assert!(alone.iter().all(|&i| out[i].is_none()));
        Ok(out)
    }

    /// Up to `limit` members of sorted set `index` scored at or before `now`, lowest first.
    async fn due_members(
        &self,
        index: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        redis::cmd("ZRANGE")
            .arg(index)
            .arg("-inf")
            .arg(now.as_millis())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    /// The values of `keys`, in order (`None` where a key is absent): one MGET per 500.
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut c = self.conn();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            out.extend(values);
        }
        Ok(out)
    }

    /// `key` and the audit head, in one round trip.
    async fn read_with_head(
        &self,
        key: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let mut c = self.conn();
        let mut both: Vec<Option<String>> = redis::cmd("MGET")
            .arg(key)
            .arg(self.keys.audit_head())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let head = both.pop().flatten();
        let value = both.pop().flatten();
        Ok((value, head))
    }

    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Reply, StoreError> {
        let mut c = self.conn();
        let v: Vec<String> = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        self.acked(&mut c).await?;
        reply(v)
    }

    /// Runs a compare-and-set script with the audit events it records. `build` adds the
    /// script's keys and arguments before the audit ones; `read_head` is the audit head read
    /// with the record. `Ok(true)`: written; `Ok(false)`: the record changed since it was
    /// read (read and apply again). A moved head only re-chains the events after the head the
    /// script returns: the record, and so the change, is still the one read.
    async fn commit<'s>(
        &'s self,
        script: &Script,
        build: &(dyn Fn(&mut redis::ScriptInvocation<'_>) + Sync),
        read_head: Option<String>,
        drafts: &[AuditDraft],
        at: &mut Attempts<'s>,
    ) -> Result<bool, StoreError> {
        if drafts.is_empty() {
            // Nothing to record: the script neither checks nor moves the head.
            at.count += 1;
            let mut inv = script.prepare_invoke();
            build(&mut inv);
            audit_args(&mut inv, None, drafts)?;
            return self.outcome(self.run(&inv).await?).await;
        }
        let turn = match &mut at.turn {
            Some(turn) => turn,
            None => at.turn.insert(self.audit_head.lock().await),
        };
        let mut head = later_head(turn.take(), read_head);
        at.count += 1;
        // A moved head is another replica's progress, not a conflict on this record: retried
        // until it lands or `op_timeout` passes (the other replica's backlog drains).
        loop {
            let mut inv = script.prepare_invoke();
            build(&mut inv);
            let (written, events) = audit_args(&mut inv, head.as_deref(), drafts)?;
            match self.run(&inv).await? {
                Reply::Ok => {
                    **turn = written;
                    self.tap.send(&events);
                    return Ok(true);
                }
                Reply::HeadMoved(now_head) => {
                    head = now_head;
                    **turn = head.clone();
                }
                other => {
                    **turn = head;
                    return self.outcome(other).await;
                }
            }
        }
    }

    /// What a script's reply other than a moved head means for [`RedisStore::commit`].
    async fn outcome(&self, r: Reply) -> Result<bool, StoreError> {
        match r {
            Reply::Ok => Ok(true),
            Reply::Gone => Err(StoreError::NotFound),
            Reply::Exists => Err(StoreError::Conflict),
            Reply::Limit(refused) => Err(refused),
            Reply::Changed => {
                // Let the winner finish before reading again.
                tokio::task::yield_now().await;
                Ok(false)
            }
            Reply::HeadMoved(_) => Err(StoreError::Corrupt(
                "audit head checked for a write without events".into(),
            )),
        }
    }

    /// Removes from `index` those of `members` whose record is gone (members that are not
    /// ids at all too); returns how many.
    async fn unindex_gone(
        &self,
        index: &str,
        members: &[String],
        record: Record,
    ) -> Result<usize, StoreError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts.unindex_gone.prepare_invoke();
        inv.key(index);
        let mut garbage = Vec::new();
        for m in members {
            match record.key(self.keys, m) {
                Some(key) => {
                    inv.key(key).arg(m);
                }
                None => garbage.push(m),
            }
        }
        let mut c = self.conn();
        let n: usize = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        let mut removed = n;
        if !garbage.is_empty() {
            let g: usize = redis::cmd("ZREM")
                .arg(index)
                .arg(&garbage)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            removed += g;
        }
        Ok(removed)
    }

    /// Prunes the next batch of `index` entries scored at most `max` (all when `None`),
    /// resuming at offset `slot` of the cursor.
    async fn prune_range(
        &self,
        index: &str,
        max: Option<u64>,
        record: Record,
        slot: usize,
        budget: &mut usize,
    ) -> Result<usize, StoreError> {
        if *budget == 0 {
            return Ok(0);
        }
        let offset = self.cursor(|c| c.offsets[slot]);
        let members = self
            .ids_in(
                redis::cmd("ZRANGE")
                    .arg(index)
                    .arg("-inf")
                    .arg(max.map_or_else(|| "+inf".to_string(), |m| m.to_string()))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(*budget),
            )
            .await?;
        let removed = self.unindex_gone(index, &members, record).await?;
        // A short batch reached the end of the range: start over next time.
        let next = if members.len() < *budget {
            0
        } else {
            offset + members.len() - removed
        };
        self.cursor(|c| c.offsets[slot] = next);
        *budget -= members.len();
        Ok(removed)
    }

    /// Prunes per-requester and per-source sets, found by SCAN, until the budget is spent
    /// or a full pass over the keyspace ends.
    async fn prune_sets(&self, budget: &mut usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut cursor = self.cursor(|c| c.scan);
        while *budget > 0 {
            let mut c = self.conn();
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(self.keys.per_key_sets())
                .arg("COUNT")
                .arg(100);
            let (next, keys): (u64, Vec<String>) = c.at_keys(scan).await.map_err(unavailable)?;
            // A SCAN step is work too, even when it finds nothing.
            *budget = budget.saturating_sub(keys.len() + 1);
            for key in keys {
                if *budget == 0 {
                    break;
                }
                let record = if self.keys.untagged(&key).starts_with("jit:gr:") {
                    Record::Grant
                } else {
                    Record::Ticket
                };
                let members = self
                    .ids_in(redis::cmd("ZRANGE").arg(&key).arg(0).arg(*budget - 1))
                    .await?;
                *budget = budget.saturating_sub(members.len());
                removed += self.unindex_gone(&key, &members, record).await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        self.cursor(|c| c.scan = cursor);
        Ok(removed)
    }

    fn cursor<T>(&self, f: impl FnOnce(&mut PruneCursor) -> T) -> T {
        f(&mut lock(&self.prune))
    }

    async fn ids_in(&self, cmd: &mut redis::Cmd) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn();
        cmd.query_async(&mut c).await.map_err(unavailable)
    }

    /// Reads the tickets with these ids (one MGET per 500), dropping (and unindexing) those
    /// past retention.
    async fn tickets_by_ids(
        &self,
        ids: Vec<String>,
        index: &str,
    ) -> Result<Vec<Ticket>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        let ids: Vec<TicketId> = ids
            .iter()
            .filter_map(|raw| TicketId::parse(raw).ok())
            .collect();
        let keys: Vec<String> = ids.iter().map(|id| self.keys.ticket(id)).collect();
        for (id, value) in ids.iter().zip(self.mget(&keys).await?) {
            match value {
                Some(raw) => out.push(decode("ticket", &raw)?),
                None => {
                    let mut c = self.conn();
                    let _: i64 = redis::cmd("ZREM")
                        .arg(index)
                        .arg(id.as_str())
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
        Ok(out)
    }

    /// Reads the grants with these ids (one MGET per 500), in order, skipping those past
    /// retention (the pruner unindexes them).
    async fn grants_by_ids(&self, ids: Vec<String>) -> Result<Vec<Grant>, StoreError> {
        let ids: Vec<GrantId> = ids
            .iter()
            .filter_map(|raw| GrantId::parse(raw).ok())
            .collect();
        let keys: Vec<String> = ids.iter().map(|id| self.keys.grant(id)).collect();
        self.mget(&keys)
            .await?
            .into_iter()
            .flatten()
            .map(|raw| decode("grant", &raw))
            .collect()
    }

    async fn grants_in(&self, index: &str, at: Timestamp) -> Result<Vec<Grant>, StoreError> {
        // Scored by expiry: only those ending after `at` can be active.
        let ids = self
            .ids_in(
                redis::cmd("ZRANGE")
                    .arg(index)
                    .arg(format!("({}", at.as_millis()))
                    .arg("+inf")
                    .arg("BYSCORE"),
            )
            .await?;
        let mut grants = self.grants_by_ids(ids).await?;
        grants.retain(|g| g.is_active(at));
        Ok(grants)
    }
}

/// Receives decisions on a dedicated pub/sub connection to the primary and fans them out;
/// reconnects with backoff (up to 5 s) whenever the connection fails or is killed, and
/// subscribes again on the new primary when the sentinels name one. With `seeds` (a
/// cluster's nodes, any of which hears every PUBLISH), each reconnection tries the next one.
async fn listen(
    mut primary: watch::Receiver<Client>,
    seeds: Vec<Client>,
    tx: broadcast::Sender<TicketId>,
    audit_seq: watch::Sender<u64>,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut turn = 0usize;
    loop {
        let client = match seeds.get(turn % seeds.len().max(1)) {
            Some(seed) => seed.clone(),
            None => primary.borrow_and_update().clone(),
        };
        turn = turn.wrapping_add(1);
        let attempt = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&[DECISIONS, AUDIT_NEW]).await?;
            Ok::<_, RedisError>(ps)
        };
        match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(Ok(ps)) => {
                backoff = Duration::from_millis(50);
                tracing::debug!("subscribed to {DECISIONS}");
                let (mut sink, mut messages) = ps.split();
                // A node that hangs (stopped, partitioned) closes nothing: a PING unanswered
                // within `connect_timeout` counts as a lost connection.
                let mut alive = tokio::time::interval(LISTENER_PING);
                alive.tick().await;
                let moved = loop {
                    let msg = tokio::select! {
                        msg = messages.next() => msg,
                        () = moved(&mut primary) => {
                            tracing::info!("redis primary moved; subscribing there");
                            break true;
                        }
                        _ = alive.tick() => {
                            let ping = tokio::time::timeout(connect_timeout, sink.ping::<redis::Value>());
                            if matches!(ping.await, Ok(Ok(_))) {
                                continue;
                            }
                            tracing::warn!("redis pub/sub connection stopped answering; reconnecting");
                            break false;
                        }
                    };
                    let Some(msg) = msg else {
                        tracing::warn!("redis pub/sub connection lost; reconnecting");
                        break false;
                    };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if msg.get_channel_name() == AUDIT_NEW {
                        if let Ok(seq) = payload.parse::<u64>() {
                            audit_seq.send_if_modified(|s| {
                                let newer = seq > *s;
                                *s = (*s).max(seq);
                                newer
                            });
                        }
                    } else if let Ok(id) = TicketId::parse(&payload) {
                        let _ = tx.send(id);
                    }
                };
                if moved {
                    continue;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "redis pub/sub connect failed"),
            Err(_) => tracing::warn!("redis pub/sub connect timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = moved(&mut primary) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How often the decision listener checks that its connection still answers.
const LISTENER_PING: Duration = Duration::from_secs(2);

/// Resolves when the primary moves; never without a follower (a standalone primary).
async fn moved(primary: &mut watch::Receiver<Client>) {
    if primary.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The longest one sentinel is waited for when asked about the replicas.
const SENTINEL_ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the sentinels are asked which node is the primary.
const SENTINEL_POLL: Duration = Duration::from_millis(250);

/// Where the primary is: one address, or whatever the sentinels say.
enum Target {
    Direct(Client),
    /// One client per sentinel, each asking its own sentinel first (the client asks only the
    /// first that answers): a stale or lying sentinel cannot hide the primary the others name.
    Sentinel {
        clients: Vec<SentinelNode>,
        master: String,
    },
    /// A Redis Cluster, and a client per seed node for the decision listener.
    Cluster {
        client: redis::cluster::ClusterClient,
        seeds: Vec<Client>,
    },
}

impl Target {
    fn new(opts: &RedisOptions) -> Result<Target, StoreError> {
        let bad =
            |e: RedisError| StoreError::Unavailable(format!("bad redis url or TLS files: {e}"));
        let certs = opts.tls.as_ref().map(|tls| redis::TlsCertificates {
            client_tls: tls
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: tls.ca.clone(),
        });
        let open = |url: &str| match &certs {
            None => Client::open(url),
            Some(certs) => Client::build_with_tls(url, certs.clone()),
        };
        if let Some(cluster) = ClusterUrl::parse(&opts.url) {
            let u =
                cluster.map_err(|why| StoreError::Unavailable(format!("bad redis url: {why}")))?;
            let urls = u.node_urls();
            let mut b = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.op_timeout);
            if let Some(certs) = &certs {
                b = b.certs(certs.clone());
            }
            let seeds = urls.iter().map(|url| open(url)).collect::<Result<_, _>>();
            return Ok(Target::Cluster {
                client: b.build().map_err(bad)?,
                seeds: seeds.map_err(bad)?,
            });
        }
        let Some(sentinel) = SentinelUrl::parse(&opts.url) else {
            return open(&opts.url).map(Target::Direct).map_err(bad);
        };
        let u = sentinel.map_err(|why| StoreError::Unavailable(format!("bad redis url: {why}")))?;
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        use redis::{ConnectionAddr, TlsMode};
        let addr = |(host, port): &(String, u16)| {
            if u.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        };
        let mut clients = Vec::with_capacity(u.sentinels.len());
        for first in 0..u.sentinels.len() {
            let mut order = u.sentinels.clone();
            order.rotate_left(first);
            let mut b = SentinelClientBuilder::new(
                order.iter().map(addr),
                &u.master,
                SentinelServerType::Master,
            )
            .map_err(bad)?
            .set_client_to_redis_db(u.db);
            if let Some(user) = &u.username {
                b = b.set_client_to_redis_username(user);
            }
            if let Some(pass) = &u.password {
                b = b.set_client_to_redis_password(pass);
            }
            if let Some(user) = &opts.sentinel_username {
                b = b.set_client_to_sentinel_username(user);
            }
            if let Some(pass) = &opts.sentinel_password {
                b = b.set_client_to_sentinel_password(pass);
            }
            if u.tls {
                b = b
                    .set_client_to_redis_tls_mode(TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                if let Some(certs) = &certs {
                    b = b
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs.clone());
                }
            }
            clients.push(SentinelNode {
                client: tokio::sync::Mutex::new(b.build().map_err(bad)?),
                asked: tokio::sync::Mutex::new(None),
            });
        }
        Ok(Target::Sentinel {
            clients,
            master: u.master,
        })
    }

    /// A client for the primary: the sentinels are asked, and the node they name is checked
    /// to be a primary (`ROLE`).
    async fn primary(&self) -> Result<Client, RedisError> {
        match self {
            Target::Direct(client) => Ok(client.clone()),
            Target::Cluster { .. } => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster has no single primary",
            ))),
            Target::Sentinel { clients, .. } => {
                let mut last = None;
                for c in clients {
                    match c.client.lock().await.async_get_client().await {
                        Ok(client) => return Ok(client),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    RedisError::from((redis::ErrorKind::InvalidClientConfig, "no sentinel"))
                }))
            }
        }
    }

    /// How many replicas the sentinels could promote now: those they list for the primary
    /// and do not flag as down or disconnected (the most any sentinel answering reports).
    async fn promotable(&self) -> Option<u32> {
        let Target::Sentinel { clients, master } = self else {
            return None;
        };
        // The replicas any answering sentinel sees up: sentinels judge `s_down` each on its
        // own, and the one leading a failover may promote a replica the others see down.
        // All are asked at once, so one that hangs costs its own timeout, not the others'.
        let answers =
            futures_util::future::join_all(clients.iter().map(|c| c.replicas_up(master))).await;
        let mut up: Option<std::collections::HashSet<String>> = None;
        for seen in answers.into_iter().flatten() {
            up.get_or_insert_with(Default::default).extend(seen);
        }
        up.map(|up| u32::try_from(up.len()).unwrap_or(u32::MAX))
    }
}

/// One sentinel's view: a client asking it first, and the connection `SENTINEL REPLICAS` is
/// asked on.
struct SentinelNode {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    asked: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl SentinelNode {
    /// The replicas of `master` this sentinel lists and does not flag as down or
    /// disconnected, as `ip:port`; `None` when it does not answer.
    async fn replicas_up(&self, master: &str) -> Option<Vec<String>> {
        // The connection is kept between polls and opened again only after a failure.
        let mut asked = self.asked.lock().await;
        if asked.is_none() {
            let sentinel = self
                .client
                .lock()
                .await
                .async_get_sentinel_client()
                .await
                .ok()?;
            // Bounded, so a sentinel that stops answering cannot wedge the kept connection.
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(SENTINEL_ASK_TIMEOUT))
                .set_response_timeout(Some(SENTINEL_ASK_TIMEOUT));
            let conn = sentinel
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .ok()?;
            *asked = Some(conn);
        }
        let conn = asked.as_mut()?;
        let listed: Result<Vec<Vec<String>>, _> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(master)
            .query_async(conn)
            .await;
        let Ok(listed) = listed else {
            *asked = None;
            return None;
        };
        let field = |fields: &[String], name: &str| {
            fields
                .chunks(2)
                .find(|kv| kv[0] == name)
                .and_then(|kv| kv.get(1))
                .cloned()
                .unwrap_or_default()
        };
        Some(
            listed
                .iter()
                .filter(|fields| {
                    !field(fields, "flags")
                        .split(',')
                        .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
                })
                .map(|fields| format!("{}:{}", field(fields, "ip"), field(fields, "port")))
                .collect(),
        )
    }
}

/// How many replicas of the store's slot a cluster failover could promote: every replica the
/// cluster lists for the slot's primary (`CLUSTER REPLICAS`, the cluster's own view) but those
/// it flags `fail` or `noaddr`. A replica whose link is down or that is resynchronising still
/// counts (it is a failover candidate for `cluster-node-timeout` × the validity factor), so
/// writes wait for it and fail while it lags, rather than being confirmed and then undone by
/// its promotion. `None` when the primary does not answer.
async fn slot_replicas(c: &mut Conn) -> Option<u32> {
    let mut myid = redis::cmd("CLUSTER");
    myid.arg("MYID");
    let id: String = c.at_keys(myid).await.ok()?;
    let mut replicas = redis::cmd("CLUSTER");
    replicas.arg("REPLICAS").arg(id);
    let lines: Vec<String> = c.at_keys(replicas).await.ok()?;
    let candidates = lines
        .iter()
        .filter(|line| {
            let flags = line.split_whitespace().nth(2).unwrap_or_default();
            !flags.split(',').any(|f| f == "fail" || f == "noaddr")
        })
        .count();
    u32::try_from(candidates).ok()
}

/// Keeps `promotable` at the number of replicas of the store's slot a failover could
/// promote, so every write waits for them (see [`RedisStore::acked`]). Asked every
/// [`SENTINEL_POLL`].
async fn count_slot_replicas(
    conn: Arc<std::sync::RwLock<Conn>>,
    promotable: Arc<std::sync::atomic::AtomicU32>,
    op_timeout: Duration,
) {
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        let mut c = current(&conn);
        if let Ok(Some(n)) = tokio::time::timeout(op_timeout, slot_replicas(&mut c)).await {
            promotable.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A connection manager for `client` with the store's timeouts.
async fn manager(client: Client, opts: &RedisOptions) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(opts.op_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}

/// Follows the primary the sentinels name: when it moves (a failover), commands and the
/// pub/sub listener go to the new one. Until then, commands sent to a demoted primary fail
/// (`READONLY`) or time out, and approve routes answer 503: nothing is written to a replica.
async fn follow(
    target: Target,
    primary: watch::Sender<Client>,
    conn: Arc<std::sync::RwLock<Conn>>,
    promotable: Arc<std::sync::atomic::AtomicU32>,
    opts: RedisOptions,
) {
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        if let Ok(Some(n)) = tokio::time::timeout(opts.op_timeout, target.promotable()).await {
            promotable.store(n, std::sync::atomic::Ordering::Relaxed);
        }
        let found = match tokio::time::timeout(opts.op_timeout, target.primary()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the sentinels name no reachable primary");
                continue;
            }
            Err(_) => {
                tracing::warn!("the sentinels did not answer in time");
                continue;
            }
        };
        let addr = found.get_connection_info().addr().to_string();
        if primary.borrow().get_connection_info().addr().to_string() == addr {
            continue;
        }
        match tokio::time::timeout(opts.connect_timeout, manager(found.clone(), &opts)).await {
            Ok(Ok(manager)) => {
                *conn.write().unwrap_or_else(|p| p.into_inner()) = Conn::Single(manager);
                primary.send_replace(found);
                tracing::warn!(primary = %addr, "the redis primary moved (failover); following it");
            }
            Ok(Err(e)) => {
                tracing::warn!(primary = %addr, error = %e, "cannot reach the new redis primary")
            }
            Err(_) => {
                tracing::warn!(primary = %addr, "timed out connecting to the new redis primary")
            }
        }
    }
}

// === scripts ===

/// Shared by the scripts that record audit events. Audit arguments start at `ARGV[a]`: the
/// audit head as read (`""` = none), the new head, the number `n` of events, then `n` pairs
/// of stream id and event JSON. With `n = 0` the head is neither checked nor moved, so a
/// change that records nothing never conflicts with appenders.
const AUDIT_LUA: &str = r#"
local function audit_moved(head, a)
  if tonumber(ARGV[a + 2]) == 0 then return nil end
  local cur = redis.call('GET', head) or ''
  if cur ~= ARGV[a] then return cur end
  return nil
end
local function audit_append(head, stream, a)
  local n = tonumber(ARGV[a + 2])
  if n == 0 then return end
  for i = 0, n - 1 do
    redis.call('XADD', stream, ARGV[a + 3 + 2 * i], 'e', ARGV[a + 4 + 2 * i])
  end
  redis.call('SET', head, ARGV[a + 1])
  redis.call('PUBLISH', 'jit:audit:new', string.match(ARGV[a + 1], '^%d+'))
end
local function extend(key, px)
  if redis.call('PTTL', key) < tonumber(px) then redis.call('PEXPIRE', key, px) end
end
"#;

// Every script checks everything first and writes only once nothing can refuse any more;
// the events are appended before the record (an XADD refused by the stream leaves nothing
// written). Replies: {'ok'}, {'changed'} (the record changed since it was read), {'gone'},
// {'head', <current head>} (the audit head moved: re-chain and retry), {'limit', scope, n}.

/// KEYS: coalesce, ticket, pending, per-requester, tickets, per-source, audit head, stream,
/// timers.
/// ARGV: expected coalesce value ("" = absent), id, json, px, expires ms, created ms,
/// max pending, per-requester cap, per-source cap ("" = none), has source ("1"/"0"),
/// escalate-at ms ("" = none), remind-at ms ("" = none), audit from 13.
const CREATE_TICKET: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return {'changed'} end
local function over(key, cap)
  return cap ~= '' and redis.call('ZCARD', key) >= tonumber(cap)
end
if over(KEYS[4], ARGV[8]) then return {'limit', 'requester', ARGV[8]} end
if ARGV[10] == '1' and over(KEYS[6], ARGV[9]) then return {'limit', 'source', ARGV[9]} end
if over(KEYS[3], ARGV[7]) then return {'limit', 'global', ARGV[7]} end
local moved = audit_moved(KEYS[7], 13)
if moved then return {'head', moved} end
audit_append(KEYS[7], KEYS[8], 13)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if ARGV[11] ~= '' then redis.call('ZADD', KEYS[9], ARGV[11], 'e:' .. ARGV[2]) end
if ARGV[12] ~= '' then redis.call('ZADD', KEYS[9], ARGV[12], 'r:' .. ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
extend(KEYS[4], ARGV[4])
if ARGV[10] == '1' then
  redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])
  extend(KEYS[6], ARGV[4])
end
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
return {'ok'}
"#;

/// Compare-and-set of `n` tickets (a single transition is `n` = 1), all or nothing, with
/// the events of all of them. KEYS: audit head, stream, then for each ticket: ticket,
/// pending, per-requester pending, coalesce, per-source pending, grant ("" = none), grants,
/// grants per-requester. ARGV: n, then for each ticket: expected json, new json, px, id,
/// leaves pending ("1"/"0"), decisions channel, has source ("1"/"0"), grant json ("" =
/// none), grant id, grant px, grant expires ms; then the audit from 2 + 11n.
/// `{'changed', i...}` (0-based) when tickets changed since they were read (nothing written).
const CAS_TICKETS: &str = r#"
local n = tonumber(ARGV[1])
local a = 2 + 11 * n
local changed = {'changed'}
for i = 0, n - 1 do
  local cur = redis.call('GET', KEYS[3 + 8 * i])
  if cur ~= ARGV[2 + 11 * i] then changed[#changed + 1] = tostring(i) end
end
if #changed > 1 then return changed end
local moved = audit_moved(KEYS[1], a)
if moved then return {'head', moved} end
audit_append(KEYS[1], KEYS[2], a)
for i = 0, n - 1 do
  local k = 2 + 8 * i
  local v = 1 + 11 * i
  redis.call('SET', KEYS[k + 1], ARGV[v + 2], 'PX', ARGV[v + 3])
  if ARGV[v + 8] ~= '' and redis.call('EXISTS', KEYS[k + 6]) == 0 then
    redis.call('SET', KEYS[k + 6], ARGV[v + 8], 'PX', ARGV[v + 10])
    redis.call('ZADD', KEYS[k + 7], ARGV[v + 11], ARGV[v + 9])
    redis.call('ZADD', KEYS[k + 8], ARGV[v + 11], ARGV[v + 9])
    extend(KEYS[k + 8], ARGV[v + 10])
  end
  if ARGV[v + 5] == '1' then
    redis.call('ZREM', KEYS[k + 2], ARGV[v + 4])
    redis.call('ZREM', KEYS[k + 3], ARGV[v + 4])
    if ARGV[v + 7] == '1' then redis.call('ZREM', KEYS[k + 5], ARGV[v + 4]) end
    if redis.call('GET', KEYS[k + 4]) == ARGV[v + 4] then redis.call('DEL', KEYS[k + 4]) end
    redis.call('PUBLISH', ARGV[v + 6], ARGV[v + 4])
  end
end
return {'ok'}
"#;

/// KEYS: ticket, tickets, grant ("" = none), grants, grants per-requester, audit head,
/// stream. ARGV: id, json, px, created ms, grant json ("" = none), grant id, grant px,
/// grant expires ms, audit from 9.
const RECORD_TICKET: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local moved = audit_moved(KEYS[6], 9)
if moved then return {'head', moved} end
audit_append(KEYS[6], KEYS[7], 9)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[7])
  redis.call('ZADD', KEYS[4], ARGV[8], ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[6])
  extend(KEYS[5], ARGV[7])
end
return {'ok'}
"#;

/// KEYS: grant, grants, per-requester. ARGV: id, json, px, expires ms.
const CREATE_GRANT: &str = r#"
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
extend(KEYS[3], ARGV[3])
return {'ok'}
"#;

/// KEYS: grant, audit head, stream. ARGV: expected json, new json, px, audit from 4.
const CAS_GRANT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return {'gone'} end
if cur ~= ARGV[1] then return {'changed'} end
local moved = audit_moved(KEYS[2], 4)
if moved then return {'head', moved} end
audit_append(KEYS[2], KEYS[3], 4)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {'ok'}
"#;

/// KEYS: a replica's lease. ARGV: this renewal's number, px. The lease keeps the number of
/// the renewal that began it; returns that number.
const RENEW_LEASE: &str = r#"
local began = redis.call('GET', KEYS[1]) or ARGV[1]
redis.call('SET', KEYS[1], began, 'PX', ARGV[2])
return began
"#;

/// KEYS: an index, then the record key of each member. ARGV: the members. Removes from
/// the index the members whose record is gone; returns how many.
const UNINDEX_GONE: &str = r#"
local n = 0
for i, m in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    n = n + redis.call('ZREM', KEYS[1], m)
  end
end
return n
"#;

/// KEYS: outbox cursor, audit head. Returns the cursor, set to the head's seq when absent.
const OUTBOX_CURSOR_LUA: &str = r#"
local c = redis.call('GET', KEYS[1])
if c then return c end
local head = redis.call('GET', KEYS[2])
local seq = '0'
if head then seq = string.match(head, '^%d+') or '0' end
redis.call('SET', KEYS[1], seq)
return seq
"#;

/// KEYS: cursor, audit head, channels, data, tries, then the due set of each delivery's
/// channel. ARGV: expected cursor, new cursor, due ms, then triples of id, channel and
/// delivery JSON. Returns 1 when written, 0 when the cursor moved.
const OUTBOX_ENQUEUE_LUA: &str = r#"
local c = redis.call('GET', KEYS[1])
if not c then
  local head = redis.call('GET', KEYS[2])
  c = '0'
  if head then c = string.match(head, '^%d+') or '0' end
end
if c ~= ARGV[1] then return 0 end
local k = 6
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[k], ARGV[3], ARGV[i])
    redis.call('SADD', KEYS[3], ARGV[i + 1])
    redis.call('HSET', KEYS[5], ARGV[i], 0)
  end
  k = k + 1
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

/// KEYS: due, data, tries, claims. ARGV: now ms, lease end ms, limit, token. Returns triples
/// of id, delivery JSON and attempts.
const OUTBOX_CLAIM_LUA: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local json = redis.call('HGET', KEYS[2], id)
  if json then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', KEYS[4], id, ARGV[4])
    table.insert(out, id)
    table.insert(out, json)
    table.insert(out, redis.call('HGET', KEYS[3], id) or '0')
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"#;

/// KEYS: due, data, tries, claims, channels. ARGV: id, token, retry at ms ("" = done),
/// channel. Returns 1 when settled, 0 when the claim was lost.
const OUTBOX_SETTLE_LUA: &str = r#"
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[5], ARGV[4]) end
else
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"#;

/// What a script answered.
/// Tickets per [`CAS_TICKETS`] script: large enough that a batch decision over 10,000
/// tickets is a few dozen round trips, small enough that one script stays well under a
/// millisecond of Redis's time.
const BATCH: usize = 250;

/// How many times another replica's appends may move the audit head under one
/// [`CAS_TICKETS`] chunk before its tickets are decided one at a time instead.
const HEAD_RACES: usize = 3;

/// A change waiting for a group commit ([`RedisStore::enqueue`]).
enum Queued {
    /// A ticket's ([`RedisStore::commit_queued`]).
    Write {
        write: Box<TicketWrite>,
        /// The audit head read with the record.
        read_head: Option<String>,
        /// `Some(ticket)` written; `None` changed since it was read.
        done: tokio::sync::oneshot::Sender<Result<Option<Ticket>, StoreError>>,
    },
    /// An audit event alone ([`RedisStore::append_queued`]).
    Append {
        draft: AuditDraft,
        done: tokio::sync::oneshot::Sender<Result<AuditEvent, StoreError>>,
    },
}

/// A ticket change in a group commit.
type QueuedWrite = (
    Box<TicketWrite>,
    tokio::sync::oneshot::Sender<Result<Option<Ticket>, StoreError>>,
);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The connection `conn` holds now (the follower replaces it when the primary moves).
fn current(conn: &std::sync::RwLock<Conn>) -> Conn {
    conn.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// What a group commit needs of the store, owned, so that it runs in a task of its own.
struct Group {
    conn: Arc<std::sync::RwLock<Conn>>,
    scripts: Arc<Scripts>,
    keys: Keys,
    tap: Arc<Tap>,
    acks: u32,
    op_timeout: Duration,
}

/// What one group commit script did.
enum Attempt {
    /// Everything landed: the new head and the events.
    Written(Option<String>, Vec<AuditEvent>),
    /// Nothing landed: these (indexes into the batch) changed since they were read.
    Changed(std::collections::HashSet<usize>),
    /// Nothing landed: another replica moved the audit head to this.
    Moved(Option<String>),
}

impl Group {
    /// Commits `batch` holding `turn`: one [`CAS_TICKETS`] script for all of them with all
    /// their events (the ticket changes', then the bare appends'). A change whose record
    /// changed since it was read is answered `None` (its owner reads again) and the rest go
    /// again; a moved head re-chains them. Bounded by `op_timeout`; every change gets an
    /// answer.
    async fn commit(
        self,
        mut turn: tokio::sync::OwnedMutexGuard<Option<String>>,
        batch: Vec<Queued>,
    ) {
        let mut read = None;
        let mut writes: Vec<QueuedWrite> = Vec::new();
        let mut appends = Vec::new();
        for q in batch {
            match q {
                Queued::Write {
                    write,
                    read_head,
                    done,
                } => {
                    read = later_head(read, read_head);
                    writes.push((write, done));
                }
                Queued::Append { draft, done } => appends.push((draft, done)),
            }
        }
        let drafts: Vec<AuditDraft> = appends.iter().map(|(d, _)| d.clone()).collect();
        let mut head = later_head(turn.take(), read);
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        let failed = loop {
            if writes.is_empty() && appends.is_empty() {
                *turn = head;
                return;
            }
            let attempt = {
                let w: Vec<&TicketWrite> = writes.iter().map(|(w, _)| &**w).collect();
                tokio::time::timeout_at(deadline, self.attempt(&w, &drafts, head.as_deref())).await
            };
            match attempt {
                Err(_) => break StoreError::Unavailable("redis did not answer in time".into()),
                Ok(Err(e)) => break e,
                Ok(Ok(Attempt::Written(written, events))) => {
                    *turn = written;
                    self.tap.send(&events);
                    // The bare appends' events come after every ticket change's.
                    let first = events.len().saturating_sub(appends.len());
                    for (w, done) in writes {
                        let _ = done.send(Ok(Some(w.next)));
                    }
                    for ((_, done), e) in appends.into_iter().zip(events.into_iter().skip(first)) {
                        let _ = done.send(Ok(e));
                    }
                    return;
                }
                Ok(Ok(Attempt::Changed(changed))) => {
                    let mut kept = Vec::with_capacity(writes.len());
                    for (i, (w, done)) in writes.into_iter().enumerate() {
                        if changed.contains(&i) {
                            let _ = done.send(Ok(None));
                        } else {
                            kept.push((w, done));
                        }
                    }
                    writes = kept;
                }
                Ok(Ok(Attempt::Moved(now_head))) => head = now_head,
            }
        };
        // The head is unknown now (the script may have landed): the next turn reads it.
        for (_, done) in writes {
            let _ = done.send(Err(failed.clone()));
        }
        for (_, done) in appends {
            let _ = done.send(Err(failed.clone()));
        }
    }

    /// One [`CAS_TICKETS`] script over `writes` with all their events, then the events
    /// `appends` (recorded without a ticket change), chained after `head` (the group
    /// commit's, and a batch decision's chunks).
    async fn attempt(
        &self,
        writes: &[&TicketWrite],
        appends: &[AuditDraft],
        head: Option<&str>,
    ) -> Result<Attempt, StoreError> {
        let drafts: Vec<AuditDraft> = writes
            .iter()
            .flat_map(|w| w.drafts.iter().cloned())
            .chain(appends.iter().cloned())
            .collect();
        let mut inv = self.scripts.cas_tickets.prepare_invoke();
        inv.key(self.keys.audit_head())
            .key(self.keys.audit())
            .arg(writes.len());
        for w in writes {
            w.add(&mut inv);
        }
        let (written, events) = audit_args(&mut inv, head, &drafts)?;
        let mut c = current(&self.conn);
        let v: Vec<String> = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        RedisStore::wait_acks(&mut c, self.acks, self.op_timeout).await?;
        if v.first().map(String::as_str) == Some("changed") {
            return Ok(Attempt::Changed(
                v[1..].iter().filter_map(|i| i.parse().ok()).collect(),
            ));
        }
        match reply(v)? {
            Reply::Ok => Ok(Attempt::Written(written, events)),
            Reply::HeadMoved(now_head) => Ok(Attempt::Moved(now_head)),
            _ => Err(StoreError::Corrupt("unexpected group commit reply".into())),
        }
    }
}

/// One ticket's change as [`CAS_TICKETS`] writes it: its keys, the record it was read as,
/// what replaces it (with any grant the change creates) and the events recorded with it.
struct TicketWrite {
    /// Index in the chunk.
    at: usize,
    keys: [String; 8],
    raw: String,
    json: String,
    ttl: u64,
    id: String,
    left_pending: bool,
    quota: bool,
    /// Grant JSON, id, px and expiry ms.
    grant: Option<(String, String, u64, u64)>,
    drafts: Vec<AuditDraft>,
    next: Ticket,
}

impl TicketWrite {
    fn new(
        at: usize,
        raw: String,
        current: &Ticket,
        next: Ticket,
        audit: TicketAudit<'_>,
        now_: Timestamp,
        store: &RedisStore,
    ) -> Result<TicketWrite, StoreError> {
        let (opts, keys) = (&store.opts, store.keys);
        let drafts = audit(current, &next);
        let effects = Effects::of(current, &next);
        let json = encode(&next)?;
        let ttl = px(ticket_keep_until(&next, now_, opts.retention), now_);
        let requester = current.requester.key();
        let quota = current.quota_key();
        let grant = match &effects.grant {
            Some(g) => Some((
                encode(g)?,
                g.id.as_str().to_string(),
                px(grant_keep_until(g, now_, opts.retention), now_),
                g.expires_at.as_millis(),
            )),
            None => None,
        };
        let keys = [
            keys.ticket(&current.id),
            keys.pending(),
            keys.per_requester("pr", &current.route, &requester),
            keys.coalesce(&current.fingerprint),
            keys.per_source(quota.as_deref()),
            effects
                .grant
                .as_ref()
                .map_or_else(|| keys.unused(), |g| keys.grant(&g.id)),
            keys.grants(),
            keys.per_requester("gr", &current.route, &requester),
        ];
        Ok(TicketWrite {
            at,
            keys,
            raw,
            json,
            ttl,
            id: current.id.as_str().to_string(),
            left_pending: effects.left_pending,
            quota: quota.is_some(),
            grant,
            drafts,
            next,
        })
    }

    /// Its eight keys and eleven arguments, in [`CAS_TICKETS`]' order.
    fn add(&self, inv: &mut redis::ScriptInvocation<'_>) {
        for k in &self.keys {
            inv.key(k);
        }
        inv.arg(&self.raw)
            .arg(&self.json)
            .arg(self.ttl)
            .arg(&self.id)
            .arg(if self.left_pending { "1" } else { "0" })
            .arg(DECISIONS)
            .arg(if self.quota { "1" } else { "0" });
        match &self.grant {
            Some((json, id, ttl, expires)) => inv.arg(json).arg(id).arg(*ttl).arg(*expires),
            None => inv.arg("").arg("").arg(0).arg(0),
        };
    }
}

enum Reply {
    Ok,
    Changed,
    Gone,
    /// A record with that id exists.
    Exists,
    HeadMoved(Option<String>),
    Limit(StoreError),
}

fn reply(v: Vec<String>) -> Result<Reply, StoreError> {
    let bad = || StoreError::Corrupt(format!("unexpected script reply {v:?}"));
    Ok(match v.first().map(String::as_str) {
        Some("ok") => Reply::Ok,
        Some("changed") => Reply::Changed,
        Some("gone") => Reply::Gone,
        Some("exists") => Reply::Exists,
        Some("head") => Reply::HeadMoved(v.get(1).filter(|h| !h.is_empty()).cloned()),
        Some("limit") => {
            let scope = v
                .get(1)
                .and_then(|s| LimitScope::parse(s))
                .ok_or_else(bad)?;
            let limit = v.get(2).and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            Reply::Limit(StoreError::Limit { scope, limit })
        }
        _ => return Err(bad()),
    })
}

/// `<seq> <hash>` as stored in [`AUDIT_HEAD`].
fn parse_head(head: Option<&str>) -> Result<(u64, &str), StoreError> {
    match head {
        None => Ok((0, GENESIS)),
        Some(h) => {
            let (s, p) = h
                .split_once(' ')
                .ok_or_else(|| StoreError::Corrupt("audit head".into()))?;
            let s = s
                .parse()
                .map_err(|_| StoreError::Corrupt("audit head seq".into()))?;
            Ok((s, p))
        }
    }
}

/// Chains `drafts` after `head` and adds the audit arguments [`AUDIT_LUA`] reads; returns
/// the head once they are written, and the events.
fn audit_args(
    inv: &mut redis::ScriptInvocation<'_>,
    head: Option<&str>,
    drafts: &[AuditDraft],
) -> Result<(Option<String>, Vec<AuditEvent>), StoreError> {
    let events = chain_all(parse_head(head)?, drafts);
    let new_head = match events.last() {
        Some(e) => Some(format!("{} {}", e.seq, e.hash)),
        None => head.map(str::to_string),
    };
    inv.arg(head.unwrap_or_default())
        .arg(new_head.as_deref().unwrap_or_default())
        .arg(events.len());
    for e in &events {
        inv.arg(format!("{}-0", e.seq)).arg(encode(e)?);
    }
    Ok((new_head, events))
}

fn opt_arg<T: ToString>(v: Option<T>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

// === impl Store for RedisStore ===

impl Store for RedisStore {
    fn create_or_join<'a>(
        &'a self,
        ticket: Ticket,
        coalesce: &'a str,
        limits: &'a PendingLimits,
        on_create: CreateAudit<'a>,
    ) -> StoreFuture<'a, (Ticket, bool)> {
        Box::pin(self.bounded(async move {
            let ckey = self.keys.coalesce(coalesce);
            let json = encode(&ticket)?;
            let quota = ticket.quota_key();
            let source = quota.as_deref();
            let mut drafts = None;
            let mut attempts = Attempts::new();
            while attempts.left() {
                let (existing, head) = self.read_with_head(&ckey).await?;
                if let Some(id) = existing.as_deref().and_then(|s| TicketId::parse(s).ok()) {
                    if let Some((_, t)) = self.read_ticket(&id).await? {
                        if t.status == Status::Pending && ticket.created_at < t.expires_at {
                            return Ok((t, false));
                        }
                    }
                }
                let drafts = drafts.get_or_insert_with(|| on_create(&ticket));
                let at = now();
                let ttl = px(ticket_keep_until(&ticket, at, self.opts.retention), at);
                let build = |inv: &mut redis::ScriptInvocation<'_>| {
                    inv.key(&ckey)
                        .key(self.keys.ticket(&ticket.id))
                        .key(self.keys.pending())
                        .key(self.keys.per_requester(
                            "pr",
                            &ticket.route,
                            ticket.requester.key().as_ref(),
                        ))
                        .key(self.keys.tickets())
                        .key(self.keys.per_source(source))
                        .key(self.keys.audit_head())
                        .key(self.keys.audit())
                        .key(self.keys.timers())
                        .arg(existing.as_deref().unwrap_or_default())
                        .arg(ticket.id.as_str())
                        .arg(&json)
                        .arg(ttl)
                        .arg(ticket.expires_at.as_millis())
                        .arg(ticket.created_at.as_millis())
                        .arg(opt_arg(limits.max_pending))
                        .arg(opt_arg(limits.per_requester))
                        .arg(opt_arg(limits.per_source))
                        .arg(if source.is_some() { "1" } else { "0" })
                        .arg(opt_arg(ticket.escalate_at.map(Timestamp::as_millis)))
                        .arg(opt_arg(ticket.remind_at.map(Timestamp::as_millis)));
                };
                let script = &self.scripts.create;
                if self
                    .commit(script, &build, head, drafts, &mut attempts)
                    .await?
                {
                    return Ok((ticket, true));
                }
            }
            Err(StoreError::Conflict)
        }))
    }

    fn record<'a>(
        &'a self,
        ticket: Ticket,
        grant: Option<Grant>,
        audit: CreateAudit<'a>,
    ) -> StoreFuture<'a, Ticket> {
        Box::pin(self.bounded(async move {
            if ticket.status == Status::Pending {
                return Err(StoreError::Corrupt("record() takes decided tickets".into()));
            }
            let json = encode(&ticket)?;
            let drafts = audit(&ticket);
            let at = now();
            let ttl = px(ticket_keep_until(&ticket, at, self.opts.retention), at);
            let grant = match &grant {
                Some(g) => Some((
                    g,
                    encode(g)?,
                    px(grant_keep_until(g, at, self.opts.retention), at),
                )),
                None => None,
            };
            let requester = ticket.requester.key();
            let build = |inv: &mut redis::ScriptInvocation<'_>| {
                inv.key(self.keys.ticket(&ticket.id))
                    .key(self.keys.tickets());
                match &grant {
                    Some((g, _, _)) => inv
                        .key(self.keys.grant(&g.id))
                        .key(self.keys.grants())
                        .key(self.keys.per_requester("gr", &g.route, &requester)),
                    None => inv
                        .key(self.keys.unused())
                        .key(self.keys.grants())
                        .key(self.keys.unused()),
                };
                inv.key(self.keys.audit_head())
                    .key(self.keys.audit())
                    .arg(ticket.id.as_str())
                    .arg(&json)
                    .arg(ttl)
                    .arg(ticket.created_at.as_millis());
                match &grant {
                    Some((g, gjson, gttl)) => inv
                        .arg(gjson)
                        .arg(g.id.as_str())
                        .arg(*gttl)
                        .arg(g.expires_at.as_millis()),
                    None => inv.arg("").arg("").arg(0).arg(0),
                };
            };
            let mut attempts = Attempts::new();
            // One round trip: the audit head this replica last wrote stands in for a read
            // (a head another replica moved since is returned by the script, and re-chained).
            let script = &self.scripts.record;
            if self
                .commit(script, &build, None, &drafts, &mut attempts)
                .await?
            {
                return Ok(ticket);
            }
            Err(StoreError::Conflict)
        }))
    }

    fn get<'a>(&'a self, id: &'a TicketId) -> StoreFuture<'a, Option<Ticket>> {
        Box::pin(self.bounded(async move { Ok(self.read_ticket(id).await?.map(|(_, t)| t)) }))
    }

    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Ticket>> {
        Box::pin(self.bounded(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            if status == Some(Status::Pending) {
                let ids = self
                    .ids_in(
                        redis::cmd("ZRANGE")
                            .arg(self.keys.pending())
                            .arg(0)
                            .arg(limit - 1),
                    )
                    .await?;
                let mut out = self.tickets_by_ids(ids, &self.keys.pending()).await?;
                out.retain(|t| t.status == Status::Pending);
                return Ok(out);
            }
            // Newest first, in pages, until `limit` match.
            let mut out = Vec::new();
            let mut start = 0usize;
            let page = limit.clamp(50, 500);
            loop {
                let ids = self
                    .ids_in(
                        redis::cmd("ZRANGE")
                            .arg(self.keys.tickets())
                            .arg(start)
                            .arg(start + page - 1)
                            .arg("REV"),
                    )
                    .await?;
                let n = ids.len();
                let found = self.tickets_by_ids(ids, &self.keys.tickets()).await?;
                // Ids past retention were removed from the index, shifting later ranks down.
                start += found.len();
                for t in found {
                    if status.is_none_or(|s| t.status == s) {
                        out.push(t);
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                }
                if n < page {
                    return Ok(out);
                }
            }
        }))
    }

    fn transition<'a>(
        &'a self,
        id: &'a TicketId,
        f: TicketTransition<'a>,
        audit: TicketAudit<'a>,
    ) -> StoreFuture<'a, Ticket> {
        Box::pin(self.bounded(async move {
            let key = self.keys.ticket(id);
            let mut attempts = Attempts::new();
            while attempts.left() {
                let (raw, head) = self.read_with_head(&key).await?;
                let raw = raw.ok_or(StoreError::NotFound)?;
                let current: Ticket = decode("ticket", &raw)?;
                let next = f(&current)?;
                let write = TicketWrite::new(0, raw, &current, next, audit, now(), self)?;
                if !write.drafts.is_empty() {
                    // With events: committed with whatever else waits for the audit head.
                    attempts.count += 1;
                    match self.commit_queued(write, head).await? {
                        Some(next) => return Ok(next),
                        None => {
                            // Let the winner finish before reading again.
                            tokio::task::yield_now().await;
                            continue;
                        }
                    }
                }
                // Nothing to record: CAS_TICKETS over this one ticket, without the turn.
                let build = |inv: &mut redis::ScriptInvocation<'_>| {
                    inv.key(self.keys.audit_head())
                        .key(self.keys.audit())
                        .arg(1);
                    write.add(inv);
                };
                let script = &self.scripts.cas_tickets;
                if self
                    .commit(script, &build, head, &write.drafts, &mut attempts)
                    .await?
                {
                    return Ok(write.next);
                }
            }
            Err(StoreError::Conflict)
        }))
    }

    fn transition_many<'a>(
        &'a self,
        ids: &'a [TicketId],
        f: TicketTransition<'a>,
        audit: TicketAudit<'a>,
    ) -> StoreFuture<'a, Vec<Result<Ticket, StoreError>>> {
        Box::pin(async move {
            // A ticket named twice is changed twice, in turn, as two calls would: the second
            // sees the first's result (one script must not apply two changes read from the
            // same record).
            let mut seen = std::collections::HashSet::new();
            let (once, again): (Vec<usize>, Vec<usize>) =
                (0..ids.len()).partition(|&i| seen.insert(&ids[i]));
            let firsts: Vec<TicketId> = once.iter().map(|&i| ids[i].clone()).collect();
            let mut out: Vec<Option<Result<Ticket, StoreError>>> =
                ids.iter().map(|_| None).collect();
            let mut slots = once.iter();
            let mut alone = Vec::new();
            for chunk in firsts.chunks(BATCH) {
                let done = match self.bounded(self.transition_chunk(chunk, f, audit)).await {
                    Ok(done) => done,
                    // Some of the chunk may have landed before the answer was lost; the caller
                    // sees the store as unavailable for each, as for a single transition.
                    Err(e) => chunk.iter().map(|_| Some(Err(e.clone()))).collect(),
                };
                // `done` first: zip stops at its end without taking another slot.
                for (r, slot) in done.into_iter().zip(slots.by_ref()) {
                    match r {
                        Some(r) => out[*slot] = Some(r),
                        None => alone.push(*slot),
                    }
                }
            }
            // Tickets that kept changing under the batch, then repeated ids: one at a time.
            for i in alone.into_iter().chain(again) {
                out[i] = Some(self.transition(&ids[i], f, audit).await);
            }
            Ok(out
                .into_iter()
                .map(|r| r.unwrap_or(Err(StoreError::Conflict)))
                .collect())
        })
    }

    fn get_many<'a>(
        &'a self,
        ids: &'a [TicketId],
    ) -> StoreFuture<'a, Vec<Result<Option<Ticket>, StoreError>>> {
        Box::pin(self.bounded(async move {
            let keys: Vec<String> = ids.iter().map(|id| self.keys.ticket(id)).collect();
            // A record that cannot be read is that ticket's error, not the whole call's.
            Ok(self
                .mget(&keys)
                .await?
                .into_iter()
                .map(|v| match v {
                    Some(raw) => decode("ticket", &raw).map(Some),
                    None => Ok(None),
                })
                .collect())
        }))
    }

    fn source_known<'a>(&'a self, requester: &'a str, source: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let known: i64 = redis::cmd("SISMEMBER")
                .arg(self.keys.sources(requester))
                .arg(source)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(known == 1)
        }))
    }

    fn remember_source<'a>(&'a self, requester: &'a str, source: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let key = self.keys.sources(requester);
            let ttl = u64::try_from(self.opts.retention.as_millis()).unwrap_or(u64::MAX);
            let _: (i64, i64) = redis::pipe()
                .cmd("SADD")
                .arg(&key)
                .arg(source)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl.max(1))
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn due_timers(&self, now: Timestamp, limit: usize) -> StoreFuture<'_, Vec<(TicketId, Timer)>> {
        Box::pin(self.bounded(async move {
            let members = self.due_members(&self.keys.timers(), now, limit).await?;
            let mut c = self.conn();
            let mut out = Vec::with_capacity(members.len());
            for m in members {
                let parsed = m
                    .split_once(':')
                    .and_then(|(tag, id)| Some((TicketId::parse(id).ok()?, Timer::from_tag(tag)?)));
                match parsed {
                    Some(p) => out.push(p),
                    None => {
                        // Not ours to interpret: drop it so it does not block the queue.
                        let _: Result<i64, _> = redis::cmd("ZREM")
                            .arg(self.keys.timers())
                            .arg(&m)
                            .query_async(&mut c)
                            .await;
                    }
                }
            }
            Ok(out)
        }))
    }

    fn clear_timer<'a>(&'a self, id: &'a TicketId, timer: Timer) -> StoreFuture<'a, ()> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let _: i64 = redis::cmd("ZREM")
                .arg(self.keys.timers())
                .arg(format!("{}:{}", timer.tag(), id.as_str()))
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn pending_index(&self) -> StoreFuture<'_, Vec<(TicketId, Timestamp)>> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.keys.pending())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(raw
                .into_iter()
                .filter_map(|(id, score)| {
                    let id = TicketId::parse(&id).ok()?;
                    // Scores are whole milliseconds, exactly representable in an f64.
                    Some((id, Timestamp::from_millis(score.max(0.0) as u64)))
                })
                .collect())
        }))
    }

    fn still_pending<'a>(&'a self, ids: &'a [TicketId]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(self.bounded(async move {
            let mut out = Vec::with_capacity(ids.len());
            // ZSCORE per id, pipelined: one round trip per 1,000 (ZMSCORE needs Redis 6.2).
            for chunk in ids.chunks(1000) {
                let mut pipe = redis::pipe();
                for id in chunk {
                    pipe.cmd("ZSCORE").arg(self.keys.pending()).arg(id.as_str());
                }
                let mut c = self.conn();
                let scores: Vec<Option<f64>> =
                    pipe.query_async(&mut c).await.map_err(unavailable)?;
                out.extend(scores.into_iter().map(|s| s.is_some()));
            }
            Ok(out)
        }))
    }

    fn renew_replica<'a>(
        &'a self,
        replica: &'a str,
        lease: Duration,
        renewal: u64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let px = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
            let began: String = self
                .scripts
                .renew_lease
                .key(self.keys.replica(replica))
                .arg(renewal)
                .arg(px)
                .invoke_async(&mut c)
                .await
                .map_err(unavailable)?;
            // Not acknowledged by replicas (WAIT holds up the shared connection while one
            // lags, and this runs every tick): a failover may lose a lease until the next.
            began
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("replica lease {began:?}")))
        }))
    }

    fn replicas_alive<'a>(&'a self, replicas: &'a [String]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(self.bounded(async move {
            if replicas.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = replicas.iter().map(|r| self.keys.replica(r)).collect();
            Ok(self
                .mget(&keys)
                .await?
                .iter()
                .map(Option::is_some)
                .collect())
        }))
    }

    fn due_pending(&self, now: Timestamp, limit: usize) -> StoreFuture<'_, Vec<TicketId>> {
        Box::pin(self.bounded(async move {
            let raw = self.due_members(&self.keys.pending(), now, limit).await?;
            Ok(raw
                .iter()
                .filter_map(|id| TicketId::parse(id).ok())
                .collect())
        }))
    }

    fn subscribe(&self) -> broadcast::Receiver<TicketId> {
        self.decisions.subscribe()
    }

    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent> {
        // Not cut short here: a caller that waits goes on waiting through a backlog at the
        // audit head (each turn is bounded by `op_timeout`), so its event is not withdrawn
        // for having queued long; one that gives up itself (`append_reliably`) withdraws it.
        Box::pin(self.append_queued(draft))
    }

    fn audit_page<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, AuditPage> {
        Box::pin(self.bounded(async move {
            // Stream ids are `<seq>-0`, so a position in the chain is a range start.
            let budget = filter.scan_budget();
            let mut page = AuditPage::default();
            let mut from = filter.after.saturating_add(1);
            let mut examined = 0;
            let mut last = None;
            let more = loop {
                let count = AUDIT_READ.min(budget - examined);
                let entries = self.audit_range(from, count).await?;
                let n = entries.len();
                for (seq, json) in entries {
                    examined += 1;
                    last = Some(seq);
                    let e: AuditEvent = decode("audit event", &json)?;
                    if filter.matches(&e) {
                        page.events.push(e);
                        if filter.limit != 0 && page.events.len() == filter.limit {
                            break;
                        }
                    }
                }
                let full = filter.limit != 0 && page.events.len() == filter.limit;
                if n < count && !full {
                    break false; // the end of the chain
                }
                let Some(l) = last else { break false };
                if full || examined >= budget {
                    // Stopped early: is there more beyond?
                    break !self.audit_range(l.saturating_add(1), 1).await?.is_empty();
                }
                from = l.saturating_add(1);
            };
            page.next = if more { last } else { None };
            Ok(page)
        }))
    }

    fn audit_after(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<AuditEvent>> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            // Stream ids are `<seq>-0`: exclusive of `after`.
            let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(self.keys.audit())
                .arg(format!("({after}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(limit.max(1))
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            page.iter()
                .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k == "e"))
                .map(|(_, json)| decode("audit event", json))
                .collect()
        }))
    }

    fn audit_head(&self) -> StoreFuture<'_, (u64, String)> {
        Box::pin(self.bounded(async move {
            let head = self.get_string(&self.keys.audit_head()).await?;
            let (seq, hash) = parse_head(head.as_deref())?;
            Ok((seq, hash.to_string()))
        }))
    }

    fn audit_seq(&self) -> watch::Receiver<u64> {
        self.audit_seq.subscribe()
    }

    fn outbox_cursor(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let mut inv = self.scripts.outbox_cursor.prepare_invoke();
            inv.key(self.keys.outbox_cursor())
                .key(self.keys.audit_head());
            let v: String = inv.invoke_async(&mut c).await.map_err(unavailable)?;
            v.parse()
                .map_err(|_| StoreError::Corrupt(format!("outbox cursor `{v}` is not a number")))
        }))
    }

    fn outbox_enqueue<'a>(
        &'a self,
        from: u64,
        to: u64,
        deliveries: &'a [Delivery],
        due: Timestamp,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let mut inv = self.scripts.outbox_enqueue.prepare_invoke();
            inv.key(self.keys.outbox_cursor())
                .key(self.keys.audit_head())
                .key(self.keys.outbox_channels())
                .key(self.keys.outbox_data())
                .key(self.keys.outbox_tries())
                .arg(from)
                .arg(to)
                .arg(due.as_millis());
            for d in deliveries {
                inv.key(self.keys.outbox_due(&d.channel))
                    .arg(&d.id)
                    .arg(&d.channel)
                    .arg(encode(d)?);
            }
            let written: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
            self.acked(&mut c).await?;
            Ok(written == 1)
        }))
    }

    fn outbox_channels(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            redis::cmd("SMEMBERS")
                .arg(self.keys.outbox_channels())
                .query_async(&mut c)
                .await
                .map_err(unavailable)
        }))
    }

    fn outbox_claim<'a>(
        &'a self,
        channel: &'a str,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let token = new_claim_token();
            let due_key = self.keys.outbox_due(channel);
            let mut inv = self.scripts.outbox_claim.prepare_invoke();
            inv.key(&due_key)
                .key(self.keys.outbox_data())
                .key(self.keys.outbox_tries())
                .key(self.keys.outbox_claims())
                .arg(now.as_millis())
                .arg(now.plus(lease).as_millis())
                .arg(limit.max(1))
                .arg(&token);
            let flat: Vec<String> = inv.invoke_async(&mut c).await.map_err(unavailable)?;
            let mut claimed = Vec::with_capacity(flat.len() / 3);
            for t in flat.chunks(3) {
                let [id, json, tries] = t else {
                    return Err(StoreError::Corrupt("short outbox claim reply".into()));
                };
                let decoded = decode::<Delivery>("outbox delivery", json).and_then(|mut d| {
                    d.attempts = tries.parse().map_err(|_| {
                        StoreError::Corrupt(format!("outbox attempts `{tries}`"))
                    })?;
                    Ok(d)
                });
                match decoded {
                    Ok(delivery) => claimed.push(Claimed {
                        delivery,
                        token: token.clone(),
                    }),
                    // It can never be sent: dropped (under this claim), so that it does not
                    // fail every later claim of the deliveries leased with it.
                    Err(e) => {
                        tracing::error!(delivery = %id, error = %e, "undecodable notification dropped from the outbox");
                        let mut drop = self.scripts.outbox_settle.prepare_invoke();
                        drop.key(&due_key)
                            .key(self.keys.outbox_data())
                            .key(self.keys.outbox_tries())
                            .key(self.keys.outbox_claims())
                            .key(self.keys.outbox_channels())
                            .arg(id)
                            .arg(&token)
                            .arg("")
                            .arg(channel);
                        let _: i64 = drop.invoke_async(&mut c).await.map_err(unavailable)?;
                    }
                }
            }
            Ok(claimed)
        }))
    }

    fn outbox_settle<'a>(
        &'a self,
        claimed: &'a Claimed,
        retry_at: Option<Timestamp>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let mut inv = self.scripts.outbox_settle.prepare_invoke();
            inv.key(self.keys.outbox_due(&claimed.delivery.channel))
                .key(self.keys.outbox_data())
                .key(self.keys.outbox_tries())
                .key(self.keys.outbox_claims())
                .key(self.keys.outbox_channels())
                .arg(&claimed.delivery.id)
                .arg(&claimed.token)
                .arg(opt_arg(retry_at.map(Timestamp::as_millis)))
                .arg(&claimed.delivery.channel);
            let settled: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
            self.acked(&mut c).await?;
            Ok(settled == 1)
        }))
    }

    fn tap_audit(&self, tap: Option<AuditTap>) {
        self.tap.set(tap);
    }

    fn create_grant(&self, grant: Grant) -> StoreFuture<'_, Grant> {
        Box::pin(self.bounded(async move {
            let at = now();
            let ttl = px(grant_keep_until(&grant, at, self.opts.retention), at);
            let mut inv = self.scripts.create_grant.prepare_invoke();
            inv.key(self.keys.grant(&grant.id))
                .key(self.keys.grants())
                .key(
                    self.keys
                        .per_requester("gr", &grant.route, grant.requester.key().as_ref()),
                )
                .arg(grant.id.as_str())
                .arg(encode(&grant)?)
                .arg(ttl)
                .arg(grant.expires_at.as_millis());
            match self.run(&inv).await? {
                Reply::Ok => Ok(grant),
                _ => Err(StoreError::Corrupt("unexpected create grant reply".into())),
            }
        }))
    }

    fn get_grant<'a>(&'a self, id: &'a GrantId) -> StoreFuture<'a, Option<Grant>> {
        Box::pin(self.bounded(async move { Ok(self.read_grant(id).await?.map(|(_, g)| g)) }))
    }

    fn active_grants(&self, at: Timestamp) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(self.bounded(async move { self.grants_in(&self.keys.grants(), at).await }))
    }

    fn recent_grants(&self, limit: usize) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(self.bounded(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            // Scored by expiry: the latest-ending first.
            let ids = self
                .ids_in(
                    redis::cmd("ZRANGE")
                        .arg(self.keys.grants())
                        .arg(0)
                        .arg(limit - 1)
                        .arg("REV"),
                )
                .await?;
            self.grants_by_ids(ids).await
        }))
    }

    fn grants_for<'a>(
        &'a self,
        route: &'a str,
        requester: &'a str,
        at: Timestamp,
    ) -> StoreFuture<'a, Vec<Grant>> {
        Box::pin(self.bounded(async move {
            let mut gs = self
                .grants_in(&self.keys.per_requester("gr", route, requester), at)
                .await?;
            gs.retain(|g| g.belongs_to(route, requester));
            Ok(gs)
        }))
    }

    fn transition_grant<'a>(
        &'a self,
        id: &'a GrantId,
        f: GrantTransition<'a>,
        audit: GrantAudit<'a>,
    ) -> StoreFuture<'a, Grant> {
        Box::pin(self.bounded(async move {
            let key = self.keys.grant(id);
            let mut attempts = Attempts::new();
            while attempts.left() {
                let (raw, head) = self.read_with_head(&key).await?;
                let raw = raw.ok_or(StoreError::NotFound)?;
                let current: Grant = decode("grant", &raw)?;
                let next = f(&current)?;
                let drafts = audit(&current, &next);
                let json = encode(&next)?;
                let at = now();
                let ttl = px(grant_keep_until(&next, at, self.opts.retention), at);
                let build = |inv: &mut redis::ScriptInvocation<'_>| {
                    inv.key(&key)
                        .key(self.keys.audit_head())
                        .key(self.keys.audit())
                        .arg(&raw)
                        .arg(&json)
                        .arg(ttl);
                };
                let script = &self.scripts.cas_grant;
                if self
                    .commit(script, &build, head, &drafts, &mut attempts)
                    .await?
                {
                    return Ok(next);
                }
            }
            Err(StoreError::Conflict)
        }))
    }

    fn prune(&self, at: Timestamp) -> StoreFuture<'_, usize> {
        Box::pin(self.bounded(async move {
            let mut budget = PRUNE_BATCH;
            let retention = u64::try_from(self.opts.retention.as_millis()).unwrap_or(u64::MAX);
            let mut removed = 0;
            // Where records can be gone: pending tickets past their expiry (kept until
            // expiry + retention, or evicted), tickets created more than `retention` ago
            // (none is kept for less), and any grant (revoked or used up ones end early).
            let ranges = [
                (self.keys.pending(), Some(at.as_millis()), Record::Ticket),
                (
                    self.keys.tickets(),
                    Some(at.as_millis().saturating_sub(retention)),
                    Record::Ticket,
                ),
                (self.keys.grants(), None, Record::Grant),
            ];
            for (slot, (index, max, record)) in ranges.into_iter().enumerate() {
                removed += self
                    .prune_range(&index, max, record, slot, &mut budget)
                    .await?;
            }
            removed += self.prune_sets(&mut budget).await?;
            Ok(removed)
        }))
    }

    fn durable(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            self.acked(&mut c).await
        }))
    }

    fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn();
            let pong: String = c.at_keys(redis::cmd("PING")).await.map_err(unavailable)?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(StoreError::Unavailable(format!(
                    "unexpected PING reply {pong:?}"
                )))
            }
        }))
    }
}
