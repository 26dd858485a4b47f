//! The approval engine: the store, the approval-token signer, and the registry of requests
//! this replica is holding.
//!
//! A held request waits on a per-ticket [`Notify`]. One dispatcher task turns the store's
//! decision notifications (Redis pub/sub on every replica) into wake-ups, so a batch decision
//! over thousands of tickets wakes each holder once instead of every holder per decision. A
//! reconciler asks the store every `reconcile_interval` which of the tickets this replica holds
//! are still pending (one that is not was decided: its notification may have been lost while
//! the pub/sub connection was down) and which pending tickets are past their expiry (they are
//! expired), so its cost grows with what this replica holds and what is due, not with every
//! pending ticket. A lost message delays a release by at most one interval, and never loses
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jitgate_identity::{ApprovalClaims, ApprovalSigner};
use jitgate_rules::config;
use jitgate_rules::ticket::{
    self, AuditDraft, AuditKind, Ticket, TicketId, Timestamp, TransitionError,
};
use jitgate_store::{MemoryStore, RedisOptions, RedisStore, Store, StoreError, StoreTls, Timer};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Notify};

use crate::audit_sink::{AuditFile, AuditSink};
use crate::metrics::{HeldGauge, Metrics};

/// The clock approvals are judged by (ticket expiry, redemption windows, audit times).
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The wall clock (what replicas agree on).
    Wall,
    /// Tokio's clock, counted from `start` at `at`: it stands still and jumps with tokio's
    /// paused time, so tests of holding and expiry run without sleeping.
    Tokio {
        /// The wall time at `at`.
        start: Timestamp,
        /// When it was `start`.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A tokio clock starting now.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            start: jitgate_store::now(),
            at: tokio::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Wall => jitgate_store::now(),
            Clock::Tokio { start, at } => start.plus(at.elapsed()),
        }
    }
}

/// The store, the signer, and the requests held on this replica.
pub struct Engine {
    clock: Clock,
    store: OnceLock<Arc<dyn Store>>,
    store_kind: &'static str,
    signer: ApprovalSigner,
    held: Mutex<HashMap<TicketId, Held>>,
    /// Tickets whose holders this replica still has to write to or look at after its last
    /// request on them ended: one task each ([`Engine::leave`]).
    tending: Mutex<HashMap<TicketId, Tending>>,
    /// Renewals of this replica's lease so far ([`Engine::renew`]).
    renewals: std::sync::atomic::AtomicU64,
    /// The renewal that began this replica's current lease, as last seen (0: none yet).
    lease_began: std::sync::atomic::AtomicU64,
    shutdown: watch::Sender<bool>,
    reconcile_interval: Duration,
    /// The `[audit] file` writer, until [`Engine::close_audit`].
    audit_file: Mutex<Option<AuditSink>>,
    /// Audit appends running in tasks of their own ([`Engine::append_detached`], the
    /// cancellation of an abandoned hold), which shutdown lets land before the process exits.
    detached: watch::Sender<usize>,
    /// What `GET /metrics` exposes.
    metrics: Metrics,
    /// This run's id among the replicas ([`Ticket::holders`]).
    replica: String,
}

/// Counts a detached task until dropped.
struct Detached(watch::Sender<usize>);

impl Detached {
    fn new(count: &watch::Sender<usize>) -> Detached {
        count.send_modify(|n| *n += 1);
        Detached(count.clone())
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How long [`Engine::append_reliably`] waits for the store before answering its caller.
pub const AUDIT_TRY: Duration = Duration::from_secs(2);
/// The longest pause between two retries of an audit append.
pub const AUDIT_BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How long an audit append is retried before the event is logged as lost.
pub const AUDIT_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// What the one task tending a ticket's holders ([`Engine::leave`]) still has to do.
struct Tending {
    /// A leave to write: `Some(gone)`, the latest replacing any not yet written.
    leave: Option<bool>,
    /// Wakes the task for a new leave.
    wake: Arc<Notify>,
}

/// What a leave of a ticket's holders came to ([`Engine::leave_once`]).
enum Left {
    /// Written: the ticket as it now is.
    Written(Box<Ticket>),
    /// Nothing to write (not listed, no longer pending, held here again).
    Nothing,
    /// The store could not write it: to be tried again.
    Failed,
}

struct Held {
    notify: Arc<Notify>,
    waiters: usize,
    /// This replica is known to be listed in the ticket's [`Ticket::holders`] (it opened the
    /// ticket, or joined it since these requests began holding it).
    listed: bool,
}

/// The engine could not be built (a bad signing key).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

impl Engine {
    /// Builds the engine from the config read at start. The Redis store connects in the
    /// background, so the gateway serves allow routes while Redis is down; approve routes
    /// answer 503 until it is reachable (fail closed).
    pub fn start(cfg: &config::Config) -> Result<Arc<Engine>, EngineError> {
        Engine::start_with_clock(cfg, Clock::Wall)
    }

    /// [`Engine::start`] with another clock (tests pause tokio's).
    pub fn start_with_clock(
        cfg: &config::Config,
        clock: Clock,
    ) -> Result<Arc<Engine>, EngineError> {
        let (signer, ephemeral_key) =
            ApprovalSigner::from_config(cfg.approvals.signing_key.as_deref())
                .map_err(|e| EngineError(format!("[approvals] signing_key: {e}")))?;
        if ephemeral_key {
            tracing::warn!(
                "no [approvals] signing_key: approval tokens are signed with an ephemeral key that \
                 dies with this process (replicas cannot verify each other's tokens)"
            );
        }
        let audit_file = match &cfg.audit.file {
            Some(path) => {
                let file = AuditFile::open(path).map_err(|e| EngineError(e.to_string()))?;
                tracing::info!(
                    file = %path.display(),
                    "audit events also go to {} (its chain continues after seq {})",
                    path.display(),
                    file.head().0
                );
                Some(file.start())
            }
            None => None,
        };
        let (shutdown, _) = watch::channel(false);
        let (detached, _) = watch::channel(0);
        let engine = Arc::new(Engine {
            clock,
            store: OnceLock::new(),
            store_kind: match cfg.store {
                config::Store::Memory { .. } => "memory",
                config::Store::Redis { .. } => "redis",
            },
            signer,
            held: Mutex::new(HashMap::new()),
            tending: Mutex::new(HashMap::new()),
            renewals: std::sync::atomic::AtomicU64::new(0),
            lease_began: std::sync::atomic::AtomicU64::new(0),
            shutdown,
            reconcile_interval: cfg.approvals.reconcile_interval,
            audit_file: Mutex::new(audit_file),
            detached,
            metrics: Metrics::new(),
            replica: jitgate_store::new_replica_id(),
        });
        match &cfg.store {
            config::Store::Memory { retention } => {
                engine.install(Arc::new(MemoryStore::new(*retention)));
            }
            config::Store::Redis {
                ca_file,
                client_tls,
                ..
            } => {
                if let Some(mut opts) = redis_options(&cfg.store) {
                    opts.tls = store_tls(ca_file.as_deref(), client_tls.as_ref())?;
                    // A certificate that does not parse stops the start, as a bad URL does.
                    RedisStore::check(&opts).map_err(|e| EngineError(format!("[store]: {e}")))?;
                    tokio::spawn(connect(engine.clone(), opts));
                }
            }
        }
        Ok(engine)
    }

    fn install(self: &Arc<Self>, store: Arc<dyn Store>) {
        let rx = store.subscribe();
        // Tapped before anyone can append through it.
        if let Some(sink) = self.lock_audit_file().as_ref() {
            store.tap_audit(Some(sink.tap()));
        }
        self.metrics.count_store_errors_of(store.clone());
        if self.store.set(store).is_ok() {
            tokio::spawn(dispatch(Arc::downgrade(self), rx));
            tokio::spawn(renew_lease(Arc::downgrade(self)));
            tokio::spawn(reconcile(Arc::downgrade(self)));
        }
    }

    /// The store, or `Unavailable` while it has never been reached.
    pub fn store(&self) -> Result<&Arc<dyn Store>, StoreError> {
        self.store.get().ok_or_else(|| {
            StoreError::Unavailable(format!("the {} store is not connected", self.store_kind))
        })
    }

    /// What `GET /metrics` exposes.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `memory` or `redis`.
    pub fn store_kind(&self) -> &'static str {
        self.store_kind
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The approval-token signer.
    pub fn signer(&self) -> &ApprovalSigner {
        &self.signer
    }

    /// Tells held requests the gateway is shutting down: they answer 503 with their ticket.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` at shutdown.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Number of tickets with at least one request held on this replica.
    pub fn held_count(&self) -> usize {
        self.lock_held().len()
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<TicketId, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This run's id among the replicas: what [`Ticket::holders`] lists while it holds a
    /// request on a ticket.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Registers a request held on `id` (see [`HoldGuard`]); [`Engine::list_holder`] then
    /// makes sure the ticket lists this replica among its holders.
    pub fn hold(self: &Arc<Self>, id: &TicketId) -> HoldGuard {
        let notify = {
            let mut held = self.lock_held();
            let entry = held.entry(id.clone()).or_insert_with(|| Held {
                notify: Arc::new(Notify::new()),
                waiters: 0,
                listed: false,
            });
            entry.waiters += 1;
            entry.notify.clone()
        };
        HoldGuard {
            engine: self.clone(),
            id: id.clone(),
            notify,
            armed: true,
            pending: false,
            _counted: self.metrics.held(),
        }
    }

    /// Makes sure pending ticket `id`, on which a request of this replica now holds, lists
    /// this replica among its holders: at once when the request `opened` it (listed at
    /// creation) or another request here joined it already, else by [`Engine::join_hold`].
    /// `false` when that could not be written: the request must not hold unlisted (the last
    /// client of the ticket going away on another replica would cancel it under this one),
    /// so it is answered 503 with its ticket instead.
    pub async fn list_holder(&self, id: &TicketId, opened: bool) -> bool {
        if opened || self.lock_held().get(id).is_some_and(|h| h.listed) {
            self.set_listed(id, true);
            return true;
        }
        self.join_hold(id).await
    }

    /// Records whether this replica is listed in the holders of ticket `id`, if a request
    /// here still holds it.
    fn set_listed(&self, id: &TicketId, listed: bool) {
        if let Some(h) = self.lock_held().get_mut(id) {
            h.listed = listed;
        }
    }

    /// Lists this replica among the holders of pending ticket `id` ([`ticket::join_hold`]),
    /// and records the outcome in the held entry ([`Engine::set_listed`]): `true` too when
    /// it is listed already or the ticket is no longer pending (there is nothing to hold:
    /// the waiting request reads the decision), `false` when the store could not write it.
    async fn join_hold(&self, id: &TicketId) -> bool {
        let Ok(store) = self.store() else {
            return false;
        };
        let me = self.replica.as_str();
        // Only while a request here still holds it (checked as the write is made), so a join
        // racing the last request's leave does not list a replica that holds nothing.
        let join = |t: &Ticket| {
            if !self.lock_held().contains_key(id) {
                return Err(TransitionError::AlreadyDone);
            }
            ticket::join_hold(t, me)
        };
        let listed = match store.transition(id, &join, &|_, _| Vec::new()).await {
            Ok(_)
            | Err(StoreError::Transition(
                TransitionError::AlreadyDone | TransitionError::NotPending { .. },
            )) => true,
            Err(e) => {
                tracing::debug!(ticket = %id, "not listed as a holder: {e}");
                false
            }
        };
        self.set_listed(id, listed);
        listed
    }

    /// Takes every ticket held here for unlisted, to be joined again by the next
    /// [`Engine::relist_held`].
    fn unlist_held(&self) {
        let mut held = self.lock_held();
        if !held.is_empty() {
            tracing::warn!(
                tickets = held.len(),
                "this replica's lease ran out; joining the tickets it holds again"
            );
        }
        for h in held.values_mut() {
            h.listed = false;
        }
    }

    /// Joins again the tickets held here that may not list this replica: a join that failed
    /// after a leave of this replica landed under a request that began holding, or a lease
    /// that ran out ([`Engine::unlist_held`]).
    async fn relist_held(&self) {
        let unlisted: Vec<TicketId> = self
            .lock_held()
            .iter()
            .filter(|(_, h)| !h.listed)
            .map(|(id, _)| id.clone())
            .take(TIMERS_PER_TICK)
            .collect();
        for id in unlisted {
            self.join_hold(&id).await;
        }
    }

    fn wake(&self, id: &TicketId) {
        if let Some(h) = self.lock_held().get(id) {
            h.notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for h in self.lock_held().values() {
            h.notify.notify_waiters();
        }
    }

    /// [`Engine::append`] in a task of its own, so the request that records the event (a
    /// client that goes away drops it) cannot lose it.
    pub fn append_detached(self: &Arc<Self>, draft: AuditDraft) {
        let engine = self.clone();
        let running = Detached::new(&self.detached);
        tokio::spawn(async move {
            engine.append(draft).await;
            drop(running);
        });
    }

    fn lock_audit_file(&self) -> std::sync::MutexGuard<'_, Option<AuditSink>> {
        self.audit_file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At shutdown, once requests have drained: lets detached audit appends land in the
    /// store (the runtime ends with the process, and with it any task still appending), then
    /// writes out the `[audit] file`'s queue and stops writing it, all within `timeout`.
    /// Events appended afterwards are in the store only.
    pub async fn close_audit(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut running = self.detached.subscribe();
        if tokio::time::timeout_at(deadline, running.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::error!(
                "{} audit append(s) still running {timeout:?} into shutdown; they may be lost",
                *running.borrow()
            );
        }
        let Some(sink) = self.lock_audit_file().take() else {
            return;
        };
        if let Some(store) = self.store.get() {
            store.tap_audit(None);
        }
        let path = sink.path().display().to_string();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Some(report) = sink.close(left.max(Duration::from_secs(1))).await {
            if report.unwritten == 0 {
                tracing::info!(file = %path, "audit file written and closed ({} event(s) this run)", report.written);
            } else {
                tracing::error!(
                    file = %path,
                    "audit file closed with {} event(s) not written to it (the store has them)",
                    report.unwritten
                );
            }
        }
    }

    /// Appends an audit event that records no state change (state changes carry theirs,
    /// through the store's transition hooks); a failure is logged.
    pub async fn append(&self, draft: AuditDraft) -> Option<ticket::AuditEvent> {
        let store = self.store().ok()?;
        let (kind, ticket) = (draft.kind, draft.ticket.clone());
        match store.append_audit(draft).await {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(ticket = ?ticket.as_ref().map(TicketId::as_str), ?kind, "audit append failed: {e}");
                None
            }
        }
    }

    /// Appends an event about a change that applies whether or not the store is up (a new
    /// rule table: allow routes must keep flowing through a store outage), so the change
    /// cannot wait for its event. One attempt is made now, for at most [`AUDIT_TRY`]; if it
    /// fails the event is logged whole at error level (so it is never only in memory) and a
    /// task retries with backoff (up to [`AUDIT_BACKOFF_CAP`] apart) for [`AUDIT_RETRY_FOR`],
    /// then logs it as lost. Delivery is at least once: an attempt that timed out may still
    /// have been written, and its retry then records the event twice.
    pub async fn append_reliably(self: &Arc<Self>, draft: AuditDraft) {
        let err = match self.try_append(draft.clone()).await {
            Ok(_) => return,
            Err(e) => e,
        };
        let event = serde_json::to_string(&draft).unwrap_or_default();
        tracing::error!(kind = ?draft.kind, %event, "audit append failed ({err}); retrying in the background");
        let engine = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + AUDIT_RETRY_FOR;
            let mut backoff = Duration::from_millis(250);
            loop {
                tokio::time::sleep(backoff).await;
                match engine.try_append(draft.clone()).await {
                    Ok(e) => {
                        tracing::info!(kind = ?draft.kind, seq = e.seq, "audit append succeeded on retry");
                        return;
                    }
                    Err(err) if tokio::time::Instant::now() >= deadline => {
                        tracing::error!(kind = ?draft.kind, %event, "audit event LOST: the store refused it for {AUDIT_RETRY_FOR:?} ({err})");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(kind = ?draft.kind, "audit append retry failed: {err}")
                    }
                }
                backoff = (backoff * 2).min(AUDIT_BACKOFF_CAP);
            }
        });
    }

    async fn try_append(&self, draft: AuditDraft) -> Result<ticket::AuditEvent, String> {
        let store = self.store().map_err(|e| e.to_string())?;
        match tokio::time::timeout(AUDIT_TRY, store.append_audit(draft)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the store did not answer within {AUDIT_TRY:?}")),
        }
    }

    /// Expires `t` if it is due; returns the stored ticket when this call expired it.
    pub async fn expire_if_due(&self, t: &Ticket) -> Option<Ticket> {
        let now = self.now();
        if t.status != ticket::Status::Pending || now < t.expires_at {
            return None;
        }
        self.expire(&t.id, now).await
    }

    /// Expires ticket `id` as of `now`, with its audit event; `None` unless this call expired
    /// it. The store publishes the change, which wakes its holders.
    pub(crate) async fn expire(&self, id: &TicketId, now: Timestamp) -> Option<Ticket> {
        let store = self.store().ok()?;
        let expired = store
            .transition(id, &|t| ticket::expire(t, now), &|_, t| {
                vec![AuditDraft::about(
                    AuditKind::TicketExpired,
                    t,
                    None,
                    Value::Null,
                    now,
                )]
            })
            .await
            .ok()?;
        self.metrics.ticket_transition(&expired, now);
        tracing::info!(ticket = %id, route = %expired.route, "ticket expired undecided");
        Some(expired)
    }

    /// Applies the escalations and reminders due at `now` (each a transition with its event,
    /// so of several replicas one records it), then clears their timers: also those the
    /// transition refused because the ticket was decided, gone, or already done. A timer that
    /// is not yet due by this replica's clock is left for a later tick.
    pub async fn run_timers(&self, now: Timestamp) {
        let Ok(store) = self.store() else { return };
        let due = match store.due_timers(now, TIMERS_PER_TICK).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("timers skipped: {e}");
                return;
            }
        };
        for (id, timer) in due {
            let (kind, step): (AuditKind, fn(&Ticket, Timestamp) -> _) = match timer {
                Timer::Escalate => (AuditKind::TicketEscalated, ticket::escalate),
                Timer::Remind => (AuditKind::TicketReminder, ticket::remind),
            };
            let audit = |_: &Ticket, t: &Ticket| {
                let detail = match timer {
                    Timer::Escalate => {
                        json!({ "escalateTo": t.escalate_to, "approvers": t.approvers })
                    }
                    Timer::Remind => json!({ "expiresAt": t.expires_at }),
                };
                vec![AuditDraft::about(kind, t, None, detail, now)]
            };
            match store.transition(&id, &|t| step(t, now), &audit).await {
                Ok(t) => {
                    tracing::info!(ticket = %id, route = %t.route, step = kind.as_str(), "ticket {}", if timer == Timer::Escalate { "escalated" } else { "reminder sent" });
                }
                Err(StoreError::Transition(TransitionError::NotDue)) => continue,
                Err(StoreError::Transition(_)) | Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::debug!(ticket = %id, "timer left for later: {e}");
                    continue;
                }
            }
            if let Err(e) = store.clear_timer(&id, timer).await {
                tracing::debug!(ticket = %id, "timer not cleared: {e}");
            }
        }
    }

    /// The approval token of an approved (or executed) action ticket.
    pub fn approval_token(&self, t: &Ticket) -> Option<String> {
        let decided = t.decided_at?;
        let redeem_by = t.redeem_by?;
        let claims = ApprovalClaims {
            iss: jitgate_identity::APPROVAL_ISSUER.to_string(),
            jti: t.id.to_string(),
            sub: t.requester.key().to_string(),
            route: t.route.clone(),
            approvers: t.approvals.iter().map(|v| v.by.clone()).collect(),
            fingerprint: t.fingerprint.clone(),
            iat: decided.as_millis() / 1000,
            exp: redeem_by.as_millis() / 1000,
            uses: t.token_uses,
        };
        match self.signer.sign(&claims) {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::error!(ticket = %t.id, "cannot sign approval token: {e}");
                None
            }
        }
    }
}

/// A request held on a ticket ([`Engine::hold`]). When the last one on this replica ends,
/// the replica leaves the ticket's [`Ticket::holders`] ([`ticket::leave_hold`]): dropped while
/// still armed (the client went away), that cancels the ticket when no replica holds a
/// request on it any more; after [`HoldGuard::answered_pending`] (the client was answered
/// while the ticket is still pending), it only leaves. After [`HoldGuard::disarm`] (the
/// ticket was decided) nothing is written.
pub struct HoldGuard {
    engine: Arc<Engine>,
    id: TicketId,
    notify: Arc<Notify>,
    armed: bool,
    /// Answered while the ticket may still be pending: leave the holders on drop.
    pending: bool,
    _counted: HeldGauge,
}

impl HoldGuard {
    /// The wake-up for this ticket.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// The hold ended with an answer to the client on a decided ticket: write nothing on drop.
    pub fn disarm(&mut self) {
        self.armed = false;
        self.pending = false;
    }

    /// The hold ended with an answer to the client while the ticket may still be pending (a
    /// 202 at the hold's end, a 503 at shutdown or with the store down): leave its holders on
    /// drop, without cancelling it.
    pub fn answered_pending(&mut self) {
        self.armed = false;
        self.pending = true;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let last = {
            let mut held = self.engine.lock_held();
            match held.get_mut(&self.id) {
                Some(h) if h.waiters > 1 => {
                    h.waiters -= 1;
                    false
                }
                Some(_) => {
                    held.remove(&self.id);
                    true
                }
                None => false,
            }
        };
        let gone = self.armed;
        if !last || !(gone || self.pending) {
            return;
        }
        // This replica's last request on the ticket ended: leave its holders, and withdraw
        // the ticket if the client went away and no replica holds a request on it any more.
        self.engine.leave(&self.id, gone);
    }
}

impl Engine {
    /// How long a replica's lease lasts ([`Store::renew_replica`], renewed every
    /// reconciliation tick): five ticks, at least 5 s.
    fn lease(&self) -> Duration {
        (self.reconcile_interval * 5).max(Duration::from_secs(5))
    }

    /// Renews this replica's lease ([`Store::renew_replica`]). When the renewal that began
    /// it is not the one seen before, the lease ran out in between (a stall, a partition, a
    /// failover that lost it; even if the renewal that began the new one was answered too
    /// late to be seen): the others may have dropped this replica from the tickets it holds,
    /// so it joins them again ([`Engine::unlist_held`]).
    async fn renew(&self, store: &dyn Store) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let renewal = self.renewals.fetch_add(1, Ordering::Relaxed) + 1;
        let began = store
            .renew_replica(&self.replica, self.lease(), renewal)
            .await?;
        // Also the first answer seen: a lease may have run out before it (the renewal at
        // connect failing, or answered too late), with requests already held.
        let seen = self.lease_began.swap(began, Ordering::Relaxed);
        if seen != began {
            self.unlist_held();
        }
        Ok(())
    }

    /// This replica leaves the holders of pending ticket `id` ([`ticket::leave_hold`]; with
    /// `gone`, its last client went away), in the one task that tends the ticket's holders
    /// for this replica: a leave asked while another is under way is written after it (the
    /// latest wins), so clients connecting and going away make one task per ticket, not one
    /// each.
    ///
    /// The task writes the leave, again with backoff while the store refuses it. When the
    /// client went away while other replicas still hold the ticket, it then looks again once
    /// per lease, for as long as the ticket stays pending with a client gone as its last word
    /// ([`Ticket::gone`]), so a replica that dies holding, now or later, does not keep the
    /// ticket alive until its expiry; a look the store cannot answer is made again.
    fn leave(self: &Arc<Self>, id: &TicketId, gone: bool) {
        let wake = {
            let mut tending = self.lock_tending();
            if let Some(t) = tending.get_mut(id) {
                t.leave = Some(gone);
                t.wake.notify_one();
                return;
            }
            let wake = Arc::new(Notify::new());
            tending.insert(
                id.clone(),
                Tending {
                    leave: Some(gone),
                    wake: wake.clone(),
                },
            );
            wake
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.lock_tending().remove(id);
            return;
        };
        let running = Detached::new(&self.detached);
        let engine = self.clone();
        let id = id.clone();
        handle.spawn(async move {
            let _running = running;
            engine.tend(&id, &wake).await;
        });
    }

    fn lock_tending(&self) -> std::sync::MutexGuard<'_, HashMap<TicketId, Tending>> {
        self.tending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task of [`Engine::leave`] for ticket `id`. It removes its entry itself, under the
    /// lock, when it finds nothing left to do: a leave asked after that starts a new task
    /// with an entry of its own, which nothing else may remove.
    async fn tend(self: &Arc<Self>, id: &TicketId, wake: &Notify) {
        let mut shutdown = self.shutdown_signal();
        let look_every = self.lease() + self.reconcile_interval;
        let mut backoff = self.reconcile_interval;
        // A leave the store keeps refusing is given up after this (the ticket then stays
        // pending until its expiry, listing this replica): an outage does not pile up
        // retrying tasks for longer.
        let mut retry_until: Option<tokio::time::Instant> = None;
        // Looking at the holders' leases, until the ticket's expiry (then the reconciler
        // expires it).
        let mut looking: Option<Timestamp> = None;
        // At shutdown the leaves asked are still written, once; nothing more is looked at.
        let mut stopping = false;
        loop {
            let leave = self.lock_tending().get_mut(id).and_then(|t| t.leave.take());
            let mut retry = false;
            if let Some(gone) = leave {
                match self.leave_once(id, gone).await {
                    Left::Written(t) => {
                        retry_until = None;
                        looking =
                            (gone && t.status == ticket::Status::Pending && !t.holders.is_empty())
                                .then_some(t.expires_at);
                        if looking.is_some() {
                            tracing::info!(ticket = %id, "client went away; another replica still holds the ticket");
                        }
                    }
                    Left::Nothing => {}
                    Left::Failed if stopping => {}
                    Left::Failed => {
                        let until = *retry_until
                            .get_or_insert_with(|| tokio::time::Instant::now() + LEAVE_RETRY_FOR);
                        if tokio::time::Instant::now() < until {
                            // Tried again, unless a later leave replaced it meanwhile.
                            if let Some(t) = self.lock_tending().get_mut(id) {
                                t.leave.get_or_insert(gone);
                            }
                            retry = true;
                        } else {
                            tracing::warn!(ticket = %id, "the store kept refusing this replica's leave of the ticket's holders; it stays pending until it expires");
                        }
                    }
                }
            } else if let Some(until) = looking.filter(|_| !stopping) {
                if self.now() >= until {
                    looking = None;
                } else {
                    match self.look_again(id).await {
                        Ok(Some(t))
                            if t.status == ticket::Status::Pending
                                && t.gone
                                && !t.holders.is_empty() =>
                        {
                            looking = Some(t.expires_at);
                        }
                        Ok(_) => looking = None,
                        // The store did not answer: look again after another lease.
                        Err(()) => {}
                    }
                }
            }
            {
                // Done: nothing to write, nothing to look at. Checked under the lock, so a
                // leave asked from here on starts a task of its own.
                let mut tending = self.lock_tending();
                let queued = tending.get(id).is_some_and(|t| t.leave.is_some());
                if !queued && looking.is_none() {
                    tending.remove(id);
                    return;
                }
                if queued && !retry {
                    continue;
                }
            }
            let pause = if retry {
                let pause = backoff;
                backoff = (backoff * 2).min(self.lease());
                pause
            } else {
                backoff = self.reconcile_interval;
                look_every
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = wake.notified() => {}
                _ = shutdown.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    looking = None;
                }
            }
        }
    }

    /// One [`ticket::leave_hold`] of ticket `id` by this replica. A request of this replica
    /// that began holding the ticket meanwhile keeps it listed: the leave is not made, or,
    /// when it landed first, the replica joins again.
    async fn leave_once(self: &Arc<Self>, id: &TicketId, gone: bool) -> Left {
        let Ok(store) = self.store() else {
            return Left::Failed;
        };
        let Ok((_, expired)) = self.expired_holders(store, id).await else {
            return Left::Failed;
        };
        let now = self.now();
        let me = self.replica.as_str();
        let leave = |t: &Ticket| {
            if self.lock_held().contains_key(id) {
                return Err(TransitionError::AlreadyDone);
            }
            ticket::leave_hold(t, me, &expired, gone, now)
        };
        let left = self.write_holders(store, id, &leave, now).await;
        if let Left::Written(t) = &left {
            if t.status == ticket::Status::Pending && self.lock_held().contains_key(id) {
                // A request of ours began holding it while the leave was landing.
                self.join_hold(id).await;
            }
        }
        left
    }

    /// A look at pending ticket `id` after a client of it went away here while other
    /// replicas held it: the holders whose lease ran out are dropped, which cancels it when
    /// none is left and the last to leave was a client gone ([`ticket::drop_expired_holders`]).
    /// The ticket as it now is (`None`: gone from the store); `Err` when the store did not
    /// answer.
    async fn look_again(self: &Arc<Self>, id: &TicketId) -> Result<Option<Ticket>, ()> {
        let store = self.store().map_err(|_| ())?;
        let (read, expired) = self.expired_holders(store, id).await?;
        if expired.is_empty() {
            return Ok(read);
        }
        let now = self.now();
        let drop = |t: &Ticket| {
            // A request here holds it again: its own leave decides, not this look.
            if self.lock_held().contains_key(id) {
                return Err(TransitionError::AlreadyDone);
            }
            ticket::drop_expired_holders(t, &expired, now)
        };
        match self.write_holders(store, id, &drop, now).await {
            Left::Written(t) => Ok(Some(*t)),
            Left::Failed => Err(()),
            Left::Nothing => store.get(id).await.map_err(|_| ()),
        }
    }

    /// Writes a change of ticket `id`'s holders, with `ticket.cancelled` when it cancels the
    /// ticket.
    async fn write_holders(
        &self,
        store: &Arc<dyn Store>,
        id: &TicketId,
        change: jitgate_store::TicketTransition<'_>,
        now: Timestamp,
    ) -> Left {
        let audit = |_: &Ticket, t: &Ticket| {
            if t.status != ticket::Status::Cancelled {
                return Vec::new();
            }
            vec![AuditDraft::about(
                AuditKind::TicketCancelled,
                t,
                None,
                serde_json::json!({ "why": "client disconnected" }),
                now,
            )]
        };
        match store.transition(id, change, &audit).await {
            Ok(t) => {
                if t.status == ticket::Status::Cancelled {
                    self.metrics.ticket_transition(&t, now);
                    tracing::info!(ticket = %id, route = %t.route, "client went away; ticket cancelled");
                }
                Left::Written(Box::new(t))
            }
            Err(StoreError::Transition(_) | StoreError::NotFound) => Left::Nothing,
            Err(e) => {
                tracing::debug!(ticket = %id, "holders not updated: {e}");
                Left::Failed
            }
        }
    }

    /// Ticket `id` as read, and its holders other than this replica whose lease ran out;
    /// `Err` when the store did not answer.
    async fn expired_holders(
        &self,
        store: &Arc<dyn Store>,
        id: &TicketId,
    ) -> Result<(Option<Ticket>, Vec<String>), ()> {
        let Some(t) = store.get(id).await.map_err(|_| ())? else {
            return Ok((None, Vec::new()));
        };
        let others: Vec<String> = t
            .holders
            .iter()
            .filter(|h| **h != self.replica)
            .cloned()
            .collect();
        if others.is_empty() {
            return Ok((Some(t), others));
        }
        let alive = store.replicas_alive(&others).await.map_err(|_| ())?;
        let expired = others
            .into_iter()
            .zip(alive)
            .filter(|(_, alive)| !alive)
            .map(|(h, _)| h)
            .collect();
        Ok((Some(t), expired))
    }
}

/// Whether the store client accepts `[store]`'s URL and options (without reading the TLS
/// files, which are read at start); the reason, never the URL (it may hold a password).
pub fn check_store_url(cfg: &config::Config) -> Result<(), String> {
    match redis_options(&cfg.store) {
        Some(opts) => RedisStore::check(&opts).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// What `[store]` says of reaching Redis, but its TLS files (read at start); `None` for the
/// memory store.
fn redis_options(store: &config::Store) -> Option<RedisOptions> {
    let config::Store::Redis {
        url,
        retention,
        sentinel_username,
        sentinel_password,
        replica_acks,
        ..
    } = store
    else {
        return None;
    };
    let mut opts = RedisOptions::new(url.clone());
    opts.retention = *retention;
    opts.sentinel_username.clone_from(sentinel_username);
    opts.sentinel_password.clone_from(sentinel_password);
    opts.replica_acks = *replica_acks;
    Some(opts)
}

/// The `[store]` TLS files, read at start: one that cannot be read stops the start rather
/// than leaving approve routes answering 503 while the store is retried for ever.
fn store_tls(
    ca_file: Option<&std::path::Path>,
    client: Option<&config::TlsFiles>,
) -> Result<Option<StoreTls>, EngineError> {
    if ca_file.is_none() && client.is_none() {
        return Ok(None);
    }
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| EngineError(format!("[store] {key} {}: {e}", path.display())))
    };
    let ca = ca_file.map(|p| read("ca_file", p)).transpose()?;
    // No certificate at all would be no root at all: every server refused, for ever.
    if let (Some(pem), Some(p)) = (&ca, ca_file) {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        if CertificateDer::pem_slice_iter(pem).next().is_none() {
            let e = format!("[store] ca_file {}: no PEM certificate in it", p.display());
            return Err(EngineError(e));
        }
    }
    Ok(Some(StoreTls {
        ca,
        client: match client {
            Some(f) => Some((read("tls.cert", &f.cert)?, read("tls.key", &f.key)?)),
            None => None,
        },
    }))
}

/// Connects to Redis, retrying with backoff until it answers.
async fn connect(engine: Arc<Engine>, opts: RedisOptions) {
    let mut backoff = Duration::from_millis(200);
    let mut stop = engine.shutdown_signal();
    loop {
        match RedisStore::connect(opts.clone()).await {
            Ok(store) => {
                tracing::info!("connected to the redis store");
                // The lease first: no request is held before the others can see this
                // replica alive (the renewal timer keeps it from here on).
                if let Err(e) = engine.renew(&store).await {
                    tracing::debug!("replica lease not renewed: {e}");
                }
                engine.install(Arc::new(store));
                return;
            }
            Err(e) => {
                engine.metrics.store_error();
                tracing::warn!("redis store unavailable ({e}); approve routes answer 503; retrying in {backoff:?}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Turns decision notifications into wake-ups of the requests held on them.
async fn dispatch(engine: std::sync::Weak<Engine>, mut rx: broadcast::Receiver<TicketId>) {
    loop {
        let got = rx.recv().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        match got {
            Ok(id) => engine.wake(&id),
            // Missed some: let every holder re-read its ticket.
            Err(broadcast::error::RecvError::Lagged(_)) => engine.wake_all(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How often the reconciler asks the store to prune index entries of records past retention
/// (each call does a bounded amount of work).
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Every `reconcile_interval`, on a timer of its own (a reconciliation tick busy with a
/// backlog must not let it run out): renews this replica's lease, so that the tickets it
/// holds are not taken for abandoned by the others ([`Engine::leave`]).
async fn renew_lease(engine: std::sync::Weak<Engine>) {
    let Some(interval) = engine.upgrade().map(|e| e.reconcile_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let Ok(store) = engine.store() else { continue };
        let renewing = engine.renew(&**store);
        if let Err(e) = tokio::time::timeout(interval.max(Duration::from_secs(1)), renewing)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("timed out".into())))
        {
            tracing::debug!("replica lease not renewed: {e}");
        }
    }
}

/// Every `reconcile_interval`: wake holders whose ticket left the pending index (a decision
/// whose notification was lost) and expire overdue tickets; every [`PRUNE_INTERVAL`], prune
/// the store.
async fn reconcile(engine: std::sync::Weak<Engine>) {
    let Some(interval) = engine.upgrade().map(|e| e.reconcile_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_prune = tokio::time::Instant::now() + PRUNE_INTERVAL;
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let Ok(store) = engine.store() else { continue };
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + PRUNE_INTERVAL;
            match store.prune(engine.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!("pruned {n} store entries past retention"),
                Err(e) => tracing::debug!("prune skipped: {e}"),
            }
        }
        // What this replica holds and what is due: the tick's cost grows with those, not
        // with every pending ticket of every replica.
        let held: Vec<TicketId> = engine.lock_held().keys().cloned().collect();
        if !held.is_empty() {
            match store.still_pending(&held).await {
                Ok(pending) => {
                    for (id, _) in held.iter().zip(pending).filter(|(_, p)| !p) {
                        engine.wake(id);
                    }
                }
                Err(e) => {
                    tracing::debug!("reconciliation skipped: {e}");
                    continue;
                }
            }
        }
        let now = engine.now();
        match store.due_pending(now, EXPIRIES_PER_TICK).await {
            Ok(due) => {
                for id in due {
                    engine.expire(&id, now).await;
                }
            }
            Err(e) => tracing::debug!("expiry sweep skipped: {e}"),
        }
        engine.run_timers(now).await;
        engine.relist_held().await;
    }
}

/// How long a leave of a ticket's holders the store refuses is tried again ([`Engine::leave`]).
const LEAVE_RETRY_FOR: Duration = Duration::from_secs(60);

/// The most overdue tickets one reconciliation tick expires (the rest wait a tick).
const EXPIRIES_PER_TICK: usize = 500;

/// The most timers one reconciliation tick applies.
const TIMERS_PER_TICK: usize = 500;
