//! The Redis store, for several gateway replicas sharing tickets.
//!
//! Commands go through one [`ConnectionManager`] (multiplexed, reconnects on its own). Every
//! change is optimistic compare-and-set: read the JSON, apply the pure Rust transition, then
//! run a short Lua script that writes the new JSON (and the index updates) only if the stored
//! JSON is still exactly what was read; otherwise read again. Lua rather than WATCH/MULTI
//! because WATCH is per connection and the multiplexed connection is shared by concurrent
//! tasks; the script holds no decision logic, so the rules exist once, in jitgate-rules.
//!
//! Keys (`{...}` is a Cluster hash tag):
//! - `jit:{<ticket id>}:t` ticket JSON, expiring `retention` after it can no longer change
//! - `jit:coalesce:{<fingerprint>}` → id of the pending ticket with that fingerprint
//! - `jit:pending` sorted set of pending ticket ids by expiry (lists, reconciliation)
//! - `jit:tickets` sorted set of all ticket ids by creation (lists; pruned lazily)
//! - `jit:pr:<len>:<route>:<requester>` pending ids of one requester on one route
//! - `jit:{<grant id>}:g`, `jit:grants`, `jit:gr:<len>:<route>:<requester>` likewise for grants
//! - `jit:audit` stream with ids `<seq>-0`, `jit:audit:head` = `<seq> <hash>`
//! - channel `jit:decisions` carries ids of tickets that left `PENDING`
//!
//! The scripts touch index keys in other slots, so Redis Cluster is not supported yet
//! (standalone, or a primary behind Sentinel, is).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use jitgate_rules::ticket::{
    self, AuditDraft, AuditEvent, Grant, GrantId, Status, Ticket, TicketId, Timestamp, GENESIS,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::{
    grant_keep_until, now, ticket_keep_until, AuditFilter, GrantTransition, Store, StoreError,
    StoreFuture, TicketTransition, MAX_ATTEMPTS,
};

/// The pub/sub channel decisions are published on.
pub const DECISIONS: &str = "jit:decisions";
const PENDING: &str = "jit:pending";
const TICKETS: &str = "jit:tickets";
const GRANTS: &str = "jit:grants";
const AUDIT: &str = "jit:audit";
const AUDIT_HEAD: &str = "jit:audit:head";

fn ticket_key(id: &TicketId) -> String {
    format!("jit:{{{id}}}:t")
}
fn grant_key(id: &GrantId) -> String {
    format!("jit:{{{id}}}:g")
}
fn coalesce_key(k: &str) -> String {
    format!("jit:coalesce:{{{k}}}")
}
/// Length-prefixed so that route `a:b` + user `c` and route `a` + user `b:c` differ.
fn per_requester(kind: &str, route: &str, requester: &str) -> String {
    format!("jit:{kind}:{}:{route}:{requester}", route.len())
}

/// How to reach Redis and how long to wait for it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:pass@]host:port/db` or `rediss://...` (TLS, system roots).
    pub url: String,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for every store operation, retries included; past it, `Unavailable`.
    pub op_timeout: Duration,
    /// How long finished tickets and grants are kept.
    pub retention: Duration,
}

impl RedisOptions {
    /// Defaults: 2 s to connect, 3 s per operation, 7 days of retention.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            connect_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(3),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The Redis [`Store`].
pub struct RedisStore {
    conn: ConnectionManager,
    opts: RedisOptions,
    decisions: broadcast::Sender<TicketId>,
    listener: JoinHandle<()>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    create: Script,
    cas_ticket: Script,
    cas_grant: Script,
    create_grant: Script,
    append_audit: Script,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
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
        let client = Client::open(opts.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("bad redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_response_timeout(Some(opts.op_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            opts.connect_timeout + opts.op_timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| StoreError::Unavailable("timed out connecting to redis".into()))?
        .map_err(unavailable)?;
        let (decisions, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(client, decisions.clone(), opts.connect_timeout));
        Ok(RedisStore {
            conn,
            opts,
            decisions,
            listener,
            scripts: Arc::new(Scripts {
                create: Script::new(CREATE_TICKET),
                cas_ticket: Script::new(CAS_TICKET),
                cas_grant: Script::new(CAS_GRANT),
                create_grant: Script::new(CREATE_GRANT),
                append_audit: Script::new(APPEND_AUDIT),
            }),
        })
    }

    /// Bounds `fut` by `op_timeout`.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.opts.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(
                "redis did not answer in time".into(),
            )),
        }
    }

    async fn get_string(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
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
        self.read_json(&ticket_key(id), "ticket").await
    }

    async fn read_grant(&self, id: &GrantId) -> Result<Option<(String, Grant)>, StoreError> {
        self.read_json(&grant_key(id), "grant").await
    }

    /// Runs a compare-and-set script ([`CAS_TICKET`], [`CAS_GRANT`]: `1` written, `0` the
    /// record changed since it was read, `-1` it is gone). `Ok(false)` means the read lost a
    /// race and must be repeated; it yields first so the winner can finish.
    async fn compare_and_set(&self, cas: &redis::ScriptInvocation<'_>) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let done: i64 = cas.invoke_async(&mut c).await.map_err(unavailable)?;
        match done {
            1 => Ok(true),
            -1 => Err(StoreError::NotFound),
            _ => {
                tokio::task::yield_now().await;
                Ok(false)
            }
        }
    }

    async fn ids_in(&self, cmd: &mut redis::Cmd) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
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
        for chunk in ids.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(ticket_key).collect();
            let mut c = self.conn.clone();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            for (id, value) in chunk.iter().zip(values) {
                match value {
                    Some(raw) => out.push(decode("ticket", &raw)?),
                    None => {
                        let mut c = self.conn.clone();
                        let _: i64 = redis::cmd("ZREM")
                            .arg(index)
                            .arg(id.as_str())
                            .query_async(&mut c)
                            .await
                            .map_err(unavailable)?;
                    }
                }
            }
        }
        Ok(out)
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
        let mut out = Vec::new();
        for raw_id in ids {
            let Ok(id) = GrantId::parse(&raw_id) else {
                continue;
            };
            if let Some((_, g)) = self.read_grant(&id).await? {
                if g.is_active(at) {
                    out.push(g);
                }
            }
        }
        Ok(out)
    }
}

/// Receives decisions on a dedicated pub/sub connection and fans them out; reconnects with
/// backoff (up to 5 s) whenever the connection fails or is killed.
async fn listen(client: Client, tx: broadcast::Sender<TicketId>, connect_timeout: Duration) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(DECISIONS).await?;
            Ok::<_, RedisError>(ps)
        };
        match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(Ok(mut ps)) => {
                backoff = Duration::from_millis(50);
                tracing::debug!("subscribed to {DECISIONS}");
                let mut messages = ps.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Ok(id) = TicketId::parse(&payload) {
                        let _ = tx.send(id);
                    }
                }
                tracing::warn!("redis pub/sub connection lost; reconnecting");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "redis pub/sub connect failed"),
            Err(_) => tracing::warn!("redis pub/sub connect timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

// === scripts ===

/// KEYS: coalesce, ticket, pending, per-requester, tickets.
/// ARGV: expected coalesce value ("" = absent), id, json, px, expires ms, created ms.
const CREATE_TICKET: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[4], ARGV[4]) end
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
return 1
"#;

/// KEYS: ticket, pending, per-requester, coalesce.
/// ARGV: expected json, new json, px, id, left pending ("1"/"0"), channel.
const CAS_TICKET: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
  if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
  redis.call('PUBLISH', ARGV[6], ARGV[4])
end
return 1
"#;

/// KEYS: grant, grants, per-requester. ARGV: id, json, px, expires ms.
const CREATE_GRANT: &str = r#"
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"#;

/// KEYS: grant. ARGV: expected json, new json, px.
const CAS_GRANT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// KEYS: head, stream. ARGV: expected head ("" = none), new head, stream id, event json.
const APPEND_AUDIT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], ARGV[3], 'e', ARGV[4])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

// === impl Store for RedisStore ===

impl Store for RedisStore {
    fn create_or_join<'a>(
        &'a self,
        ticket: Ticket,
        coalesce: &'a str,
    ) -> StoreFuture<'a, (Ticket, bool)> {
        Box::pin(self.bounded(async move {
            let ckey = coalesce_key(coalesce);
            let json = encode(&ticket)?;
            for _ in 0..MAX_ATTEMPTS {
                let existing = self.get_string(&ckey).await?;
                if let Some(id) = existing.as_deref().and_then(|s| TicketId::parse(s).ok()) {
                    if let Some((_, t)) = self.read_ticket(&id).await? {
                        if t.status == Status::Pending && ticket.created_at < t.expires_at {
                            return Ok((t, false));
                        }
                    }
                }
                let at = now();
                let ttl = px(ticket_keep_until(&ticket, at, self.opts.retention), at);
                let mut c = self.conn.clone();
                let done: i64 = self
                    .scripts
                    .create
                    .key(&ckey)
                    .key(ticket_key(&ticket.id))
                    .key(PENDING)
                    .key(per_requester(
                        "pr",
                        &ticket.route,
                        ticket.requester.key().as_ref(),
                    ))
                    .key(TICKETS)
                    .arg(existing.unwrap_or_default())
                    .arg(ticket.id.as_str())
                    .arg(&json)
                    .arg(ttl)
                    .arg(ticket.expires_at.as_millis())
                    .arg(ticket.created_at.as_millis())
                    .invoke_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                if done == 1 {
                    return Ok((ticket, true));
                }
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
                    .ids_in(redis::cmd("ZRANGE").arg(PENDING).arg(0).arg(limit - 1))
                    .await?;
                let mut out = self.tickets_by_ids(ids, PENDING).await?;
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
                            .arg(TICKETS)
                            .arg(start)
                            .arg(start + page - 1)
                            .arg("REV"),
                    )
                    .await?;
                let n = ids.len();
                let found = self.tickets_by_ids(ids, TICKETS).await?;
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
    ) -> StoreFuture<'a, Ticket> {
        Box::pin(self.bounded(async move {
            for _ in 0..MAX_ATTEMPTS {
                let (raw, current) = self.read_ticket(id).await?.ok_or(StoreError::NotFound)?;
                let next = f(&current)?;
                let left = current.status == Status::Pending && next.status != Status::Pending;
                let at = now();
                let ttl = px(ticket_keep_until(&next, at, self.opts.retention), at);
                let written = self
                    .compare_and_set(
                        self.scripts
                            .cas_ticket
                            .key(ticket_key(id))
                            .key(PENDING)
                            .key(per_requester(
                                "pr",
                                &current.route,
                                current.requester.key().as_ref(),
                            ))
                            .key(coalesce_key(&current.fingerprint))
                            .arg(&raw)
                            .arg(encode(&next)?)
                            .arg(ttl)
                            .arg(id.as_str())
                            .arg(if left { "1" } else { "0" })
                            .arg(DECISIONS),
                    )
                    .await?;
                if written {
                    return Ok(next);
                }
            }
            Err(StoreError::Conflict)
        }))
    }

    fn pending_index(&self) -> StoreFuture<'_, Vec<(TicketId, Timestamp)>> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn.clone();
            let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(PENDING)
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

    fn pending_count<'a>(&'a self, route: &'a str, requester: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn.clone();
            redis::cmd("ZCARD")
                .arg(per_requester("pr", route, requester))
                .query_async(&mut c)
                .await
                .map_err(unavailable)
        }))
    }

    fn subscribe(&self) -> broadcast::Receiver<TicketId> {
        self.decisions.subscribe()
    }

    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent> {
        Box::pin(self.bounded(async move {
            for _ in 0..MAX_ATTEMPTS {
                let head = self.get_string(AUDIT_HEAD).await?;
                let (seq, prev) = match head.as_deref() {
                    None => (0, GENESIS.to_string()),
                    Some(h) => {
                        let (s, p) = h
                            .split_once(' ')
                            .ok_or_else(|| StoreError::Corrupt("audit head".into()))?;
                        let s: u64 = s
                            .parse()
                            .map_err(|_| StoreError::Corrupt("audit head seq".into()))?;
                        (s, p.to_string())
                    }
                };
                let e = ticket::chain(&prev, seq + 1, draft.clone());
                let mut c = self.conn.clone();
                let done: i64 = self
                    .scripts
                    .append_audit
                    .key(AUDIT_HEAD)
                    .key(AUDIT)
                    .arg(head.unwrap_or_default())
                    .arg(format!("{} {}", e.seq, e.hash))
                    .arg(format!("{}-0", e.seq))
                    .arg(encode(&e)?)
                    .invoke_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                if done == 1 {
                    return Ok(e);
                }
                tokio::task::yield_now().await;
            }
            Err(StoreError::Conflict)
        }))
    }

    fn audit<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<AuditEvent>> {
        Box::pin(self.bounded(async move {
            let mut out = Vec::new();
            let mut start = "-".to_string();
            loop {
                let mut c = self.conn.clone();
                let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(AUDIT)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                let n = page.len();
                let mut last = None;
                for (sid, fields) in page {
                    if let Some((_, json)) = fields.iter().find(|(k, _)| k == "e") {
                        let e: AuditEvent = decode("audit event", json)?;
                        if filter.matches(&e) {
                            out.push(e);
                            if filter.limit != 0 && out.len() == filter.limit {
                                return Ok(out);
                            }
                        }
                    }
                    last = Some(sid);
                }
                match last {
                    Some(sid) if n == 500 => start = format!("({sid}"),
                    _ => return Ok(out),
                }
            }
        }))
    }

    fn create_grant(&self, grant: Grant) -> StoreFuture<'_, Grant> {
        Box::pin(self.bounded(async move {
            let at = now();
            let ttl = px(grant_keep_until(&grant, at, self.opts.retention), at);
            let mut c = self.conn.clone();
            let _: i64 = self
                .scripts
                .create_grant
                .key(grant_key(&grant.id))
                .key(GRANTS)
                .key(per_requester(
                    "gr",
                    &grant.route,
                    grant.requester.key().as_ref(),
                ))
                .arg(grant.id.as_str())
                .arg(encode(&grant)?)
                .arg(ttl)
                .arg(grant.expires_at.as_millis())
                .invoke_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(grant)
        }))
    }

    fn get_grant<'a>(&'a self, id: &'a GrantId) -> StoreFuture<'a, Option<Grant>> {
        Box::pin(self.bounded(async move { Ok(self.read_grant(id).await?.map(|(_, g)| g)) }))
    }

    fn active_grants(&self, at: Timestamp) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(self.bounded(async move { self.grants_in(GRANTS, at).await }))
    }

    fn grants_for<'a>(
        &'a self,
        route: &'a str,
        requester: &'a str,
        at: Timestamp,
    ) -> StoreFuture<'a, Vec<Grant>> {
        Box::pin(self.bounded(async move {
            let mut gs = self
                .grants_in(&per_requester("gr", route, requester), at)
                .await?;
            gs.retain(|g| g.belongs_to(route, requester));
            Ok(gs)
        }))
    }

    fn transition_grant<'a>(
        &'a self,
        id: &'a GrantId,
        f: GrantTransition<'a>,
    ) -> StoreFuture<'a, Grant> {
        Box::pin(self.bounded(async move {
            for _ in 0..MAX_ATTEMPTS {
                let (raw, current) = self.read_grant(id).await?.ok_or(StoreError::NotFound)?;
                let next = f(&current)?;
                let at = now();
                let ttl = px(grant_keep_until(&next, at, self.opts.retention), at);
                let written = self
                    .compare_and_set(
                        self.scripts
                            .cas_grant
                            .key(grant_key(id))
                            .arg(&raw)
                            .arg(encode(&next)?)
                            .arg(ttl),
                    )
                    .await?;
                if written {
                    return Ok(next);
                }
            }
            Err(StoreError::Conflict)
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.bounded(async move {
            let mut c = self.conn.clone();
            let pong: String = redis::cmd("PING")
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
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
