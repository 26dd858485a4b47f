//! The ticket, grant and audit store of jitgate: one trait, an in-memory and a Redis backend.
//!
//! The store holds no decision logic. Every change to a ticket or grant is one of the pure
//! transitions of [`jitgate_rules::ticket`], applied by [`Store::transition`] to the version
//! that was read and written only if nothing changed in between (optimistic concurrency),
//! so two replicas, two approvers, or a decision racing an expiry never produce two outcomes.
//!
//! A change and the audit events that record it are one atomic operation: the caller passes a
//! pure hook computing the events from the record before and after, and the store numbers,
//! chains and appends them in the same write (or not at all). What the approve transition of
//! an `access` ticket grants ([`ticket::grant_of`]) is written with it too, and pending-ticket
//! limits are checked in the same operation that creates a ticket.
//!
//! The trait returns boxed futures ([`StoreFuture`]) rather than using `async fn` so that it
//! stays object-safe (`Arc<dyn Store>`) without the `async-trait` macro.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jitgate_rules::ticket::{
    self, AuditDraft, AuditEvent, AuditKind, Grant, GrantId, Status, Ticket, TicketId, Timestamp,
    TransitionError,
};
use tokio::sync::{broadcast, watch};

pub mod memory;
pub mod redis_store;

pub use memory::MemoryStore;
pub use redis_store::{RedisOptions, RedisStore, StoreTls};

/// What every [`Store`] method returns: a boxed, `Send` future, so the trait is object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A pure ticket transition, e.g. `&|t| ticket::approve(t, &who, None, now)`.
pub type TicketTransition<'a> =
    &'a (dyn Fn(&Ticket) -> Result<Ticket, TransitionError> + Send + Sync);

/// A pure grant transition, e.g. `&|g| ticket::use_grant(g, now)`.
pub type GrantTransition<'a> = &'a (dyn Fn(&Grant) -> Result<Grant, TransitionError> + Send + Sync);

/// The audit events a ticket change records, from the ticket before and after it (called
/// once per attempt, so it must be pure); `&|_, _| Vec::new()` records nothing.
pub type TicketAudit<'a> = &'a (dyn Fn(&Ticket, &Ticket) -> Vec<AuditDraft> + Send + Sync);

/// [`TicketAudit`] for grants.
pub type GrantAudit<'a> = &'a (dyn Fn(&Grant, &Grant) -> Vec<AuditDraft> + Send + Sync);

/// The audit events a ticket's creation records (`ticket.created`); not called when the
/// request joins a pending ticket.
pub type CreateAudit<'a> = &'a (dyn Fn(&Ticket) -> Vec<AuditDraft> + Send + Sync);

/// Caps on pending tickets, checked atomically with the creation of a ticket (never when a
/// request joins one). Pending tickets past their expiry that no one has expired yet count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingLimits {
    /// All pending tickets in the store (`[approvals] max_pending`).
    pub max_pending: Option<u64>,
    /// Pending tickets of this ticket's requester on its route (`max_pending_per_requester`).
    pub per_requester: Option<u32>,
    /// Pending tickets with this ticket's [`Ticket::quota_key`], on any route: of its user,
    /// or, for an anonymous requester, opened from its client address. Anonymous tickets
    /// without an address are not counted.
    pub per_source: Option<u32>,
}

/// A timed step of a pending ticket ([`Store::due_timers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// `escalateAt`: widen the approvers ([`jitgate_rules::ticket::escalate`]).
    Escalate,
    /// `remindAt`: remind the approvers ([`jitgate_rules::ticket::remind`]).
    Remind,
}

impl Timer {
    /// The ticket's instant for this timer, if it has one.
    pub fn due(self, t: &Ticket) -> Option<Timestamp> {
        match self {
            Timer::Escalate => t.escalate_at,
            Timer::Remind => t.remind_at,
        }
    }

    pub(crate) fn tag(self) -> &'static str {
        match self {
            Timer::Escalate => "e",
            Timer::Remind => "r",
        }
    }

    pub(crate) fn from_tag(s: &str) -> Option<Timer> {
        match s {
            "e" => Some(Timer::Escalate),
            "r" => Some(Timer::Remind),
            _ => None,
        }
    }
}

/// Which [`PendingLimits`] cap refused a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// `max_pending`.
    Global,
    /// `per_requester`.
    Requester,
    /// `per_source`.
    Source,
}

impl LimitScope {
    /// `global`, `requester` or `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Global => "global",
            LimitScope::Requester => "requester",
            LimitScope::Source => "source",
        }
    }

    fn parse(s: &str) -> Option<LimitScope> {
        [
            LimitScope::Global,
            LimitScope::Requester,
            LimitScope::Source,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for LimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time. Approve routes answer 503
    /// (fail closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Optimistic retries were exhausted under contention.
    #[error("store conflict: too many concurrent changes")]
    Conflict,
    /// No ticket or grant with that id (never existed, or past retention).
    #[error("not found")]
    NotFound,
    /// The transition refused the change (the gateway maps it with [`TransitionError::status`]).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Stored data could not be read back (or the audit chain is broken).
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// Creating the ticket would exceed a [`PendingLimits`] cap (the gateway answers 429 with
    /// `Retry-After`). Nothing was written.
    #[error("too many pending tickets ({scope} limit {limit})")]
    Limit {
        /// Which cap.
        scope: LimitScope,
        /// Its value.
        limit: u64,
    },
}

/// Which audit events to return, in chain order (oldest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events about this ticket.
    pub ticket: Option<TicketId>,
    /// Events whose requester *or* actor is this user.
    pub requester: Option<String>,
    /// Events about this route.
    pub route: Option<String>,
    /// Events of this kind.
    pub kind: Option<AuditKind>,
    /// Events at or after this instant.
    pub since: Option<Timestamp>,
    /// Events before this instant.
    pub until: Option<Timestamp>,
    /// Only events after this `seq` (a page's [`AuditPage::next`]); `0` is the chain's start.
    pub after: u64,
    /// At most this many events (the oldest that match); `0` means no limit.
    pub limit: usize,
    /// [`Store::audit_page`] examines at most this many events (`0`: [`AUDIT_SCAN`]), so a
    /// filter that matches little never reads a whole long chain in one call.
    pub max_scan: usize,
}

/// The most events one [`Store::audit_page`] call examines by default.
pub const AUDIT_SCAN: usize = 10_000;

impl AuditFilter {
    /// Whether an event passes the filter (position and limit aside).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.ticket
            .as_ref()
            .is_none_or(|t| e.ticket.as_ref() == Some(t))
            && self
                .requester
                .as_deref()
                .is_none_or(|r| e.requester.as_deref() == Some(r) || e.actor.as_deref() == Some(r))
            && self
                .route
                .as_deref()
                .is_none_or(|r| e.route.as_deref() == Some(r))
            && self.kind.is_none_or(|k| e.kind == k)
            && self.since.is_none_or(|s| e.at >= s)
            && self.until.is_none_or(|u| e.at < u)
    }

    /// How many events one page may examine.
    pub fn scan_budget(&self) -> usize {
        if self.max_scan == 0 {
            AUDIT_SCAN
        } else {
            self.max_scan
        }
    }
}

/// One page of audit events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The matching events, in chain order.
    pub events: Vec<AuditEvent>,
    /// When the chain goes on past what this page examined: the `seq` to continue after
    /// ([`AuditFilter::after`]). The next page may hold no match (the scan budget ran out
    /// first); `None` once the end of the chain was reached.
    pub next: Option<u64>,
}

/// Where a store sends every audit event it appended (see [`Store::tap_audit`]).
pub type AuditTap = tokio::sync::mpsc::UnboundedSender<AuditEvent>;

/// The tap of one store: events are sent, in chain order, only once their write landed.
#[derive(Default)]
pub(crate) struct Tap(std::sync::Mutex<Option<AuditTap>>);

impl Tap {
    pub(crate) fn set(&self, tx: Option<AuditTap>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tx;
    }

    pub(crate) fn send(&self, events: &[AuditEvent]) {
        if events.is_empty() {
            return;
        }
        let mut tap = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = tap.as_ref() {
            for e in events {
                if tx.send(e.clone()).is_err() {
                    // The receiver is gone: stop sending.
                    *tap = None;
                    return;
                }
            }
        }
    }
}

/// The store contract. Both backends pass `tests/contract.rs`.
pub trait Store: Send + Sync + 'static {
    /// Stores `ticket` unless a `PENDING`, not yet due ticket with the same coalesce key
    /// exists, which is returned instead. Returns the ticket and whether it was created.
    /// "Not yet due" is judged at `ticket.created_at`, the caller's clock.
    ///
    /// Creation is refused with [`StoreError::Limit`] when it would exceed one of `limits`
    /// (joining never is), and records the events of `on_create`, atomically with the write.
    fn create_or_join<'a>(
        &'a self,
        ticket: Ticket,
        coalesce_key: &'a str,
        limits: &'a PendingLimits,
        on_create: CreateAudit<'a>,
    ) -> StoreFuture<'a, (Ticket, bool)>;

    /// The ticket, if it exists and is within retention.
    fn get<'a>(&'a self, id: &'a TicketId) -> StoreFuture<'a, Option<Ticket>>;

    /// Tickets, newest first, optionally only those in one status; at most `limit`
    /// (`PENDING` ones come from the pending index, soonest-expiring first).
    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Ticket>>;

    /// Atomically applies a pure transition to the current version of the ticket: read,
    /// apply `f`, write only if unchanged since the read, retrying on conflict (a bounded
    /// number of times, then [`StoreError::Conflict`]). A ticket leaving `PENDING` is
    /// published to [`Store::subscribe`]rs on every replica.
    ///
    /// The events `audit` computes from the ticket before and after are appended to the
    /// audit chain in the same atomic operation: both land or neither does. When the change
    /// approves an `access` ticket, the grant [`ticket::grant_of`] derives is written with it
    /// (unless a grant with that id exists, which is never overwritten).
    fn transition<'a>(
        &'a self,
        id: &'a TicketId,
        f: TicketTransition<'a>,
        audit: TicketAudit<'a>,
    ) -> StoreFuture<'a, Ticket>;

    /// [`Store::transition`] of each of `ids` with one transition and one audit, in as few
    /// round trips as the store allows (a batch decision over thousands of tickets). Each
    /// ticket's change lands atomically with its events, as with `transition`; the outcomes
    /// are in the order of `ids`. The `Err` of the whole call is reserved for the store
    /// failing before any outcome is known.
    fn transition_many<'a>(
        &'a self,
        ids: &'a [TicketId],
        f: TicketTransition<'a>,
        audit: TicketAudit<'a>,
    ) -> StoreFuture<'a, Vec<Result<Ticket, StoreError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(self.transition(id, f, audit).await);
            }
            Ok(out)
        })
    }

    /// The tickets with these ids, in order; `Ok(None)` for one that does not exist or is
    /// past retention, `Err` for one that cannot be read (the whole call fails only when the
    /// store does).
    fn get_many<'a>(
        &'a self,
        ids: &'a [TicketId],
    ) -> StoreFuture<'a, Vec<Result<Option<Ticket>, StoreError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(match self.get(id).await {
                    Err(StoreError::Unavailable(e)) => return Err(StoreError::Unavailable(e)),
                    r => r,
                });
            }
            Ok(out)
        })
    }

    /// Stores a ticket that was decided as it was opened (auto-approved, break-glass: never
    /// `PENDING`, so never coalesced, capped or indexed as pending) with the grant it created,
    /// if any, and the events of `audit`, atomically: all land or none does. Refused with
    /// [`StoreError::Conflict`] if a ticket with its id exists.
    fn record<'a>(
        &'a self,
        ticket: Ticket,
        grant: Option<Grant>,
        audit: CreateAudit<'a>,
    ) -> StoreFuture<'a, Ticket>;

    /// Whether a request of `requester` from client address `source` was released before
    /// (within `retention`): the risk score's `new_source` signal. Reads only.
    fn source_known<'a>(&'a self, requester: &'a str, source: &'a str) -> StoreFuture<'a, bool>;

    /// Remembers that a request of `requester` from `source` was released (for `retention`).
    fn remember_source<'a>(&'a self, requester: &'a str, source: &'a str) -> StoreFuture<'a, ()>;

    /// Timed steps of pending tickets (escalation, reminder) due at `now`, soonest first, at
    /// most `limit`. A pending ticket's timers are set when it is created (from its
    /// `escalateAt` and `remindAt`) and stay until [`Store::clear_timer`]: the reconciler
    /// applies the step as a transition (which refuses it once done, or once the ticket is
    /// decided) and then clears it.
    fn due_timers(&self, now: Timestamp, limit: usize) -> StoreFuture<'_, Vec<(TicketId, Timer)>>;

    /// Removes one timer (a no-op when it is not set).
    fn clear_timer<'a>(&'a self, id: &'a TicketId, timer: Timer) -> StoreFuture<'a, ()>;

    /// Every `PENDING` ticket id with its `expiresAt`, soonest-expiring first: what a replica
    /// reconciles its held requests against (a held id missing here was decided) and what the
    /// expiry sweeper reads (entries past their expiry are due). Ids only, so it stays cheap
    /// with many thousands of tickets pending.
    fn pending_index(&self) -> StoreFuture<'_, Vec<(TicketId, Timestamp)>>;

    /// For each of `ids`, whether it is still in the pending index: what a replica checks the
    /// requests it holds against (one that is not was decided), at a cost that grows with
    /// what it holds, not with every pending ticket.
    fn still_pending<'a>(&'a self, ids: &'a [TicketId]) -> StoreFuture<'a, Vec<bool>>;

    /// Marks gateway replica `replica` (its run's id) alive for `lease`; every reconciliation
    /// tick renews it. A replica that died stops renewing, and [`Store::replicas_alive`] then
    /// says so: what tells the holders of a ticket that are gone from those still holding.
    /// The lease records the renewal that began it (`renewal`, a number the replica never
    /// uses twice, when the lease was not current); the answer is that number. A replica
    /// that sees it change between two answers knows its lease ran out in between, even when
    /// the renewal that began the new one was answered too late to be seen: the others may
    /// have taken it for dead meanwhile (and dropped it from the tickets it holds).
    fn renew_replica<'a>(
        &'a self,
        replica: &'a str,
        lease: Duration,
        renewal: u64,
    ) -> StoreFuture<'a, u64>;

    /// For each of `replicas`, whether its lease ([`Store::renew_replica`]) is current.
    fn replicas_alive<'a>(&'a self, replicas: &'a [String]) -> StoreFuture<'a, Vec<bool>>;

    /// Up to `limit` pending tickets whose `expiresAt` is not after `now`, soonest first: what
    /// the expiry sweeper expires, at a cost that grows with what is due.
    fn due_pending(&self, now: Timestamp, limit: usize) -> StoreFuture<'_, Vec<TicketId>>;

    /// Ids of tickets that left `PENDING`, on any replica. Lossy (a lagging or reconnecting
    /// subscriber may miss some): holders also poll.
    fn subscribe(&self) -> broadcast::Receiver<TicketId>;

    /// Numbers, chains and appends an audit event, atomically with respect to every other
    /// appender (also on other replicas). For events that record no state change (shadow
    /// matches, what became of a forwarded request); changes carry theirs.
    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent>;

    /// One page of the audit events matching `filter`, in chain order: those after
    /// `filter.after`, up to `filter.limit` of them, examining at most
    /// [`AuditFilter::scan_budget`] events.
    fn audit_page<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, AuditPage>;

    /// Every audit event matching `filter` (up to `filter.limit`), oldest first: the pages
    /// of [`Store::audit_page`] until the limit or the end of the chain.
    fn audit<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<AuditEvent>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut page_filter = filter.clone();
            loop {
                if filter.limit != 0 {
                    page_filter.limit = filter.limit - out.len();
                }
                let page = self.audit_page(&page_filter).await?;
                out.extend(page.events);
                match page.next {
                    Some(after) if filter.limit == 0 || out.len() < filter.limit => {
                        page_filter.after = after;
                    }
                    _ => return Ok(out),
                }
            }
        })
    }

    /// Sends every audit event this handle appends from now on to `tap` (replacing an earlier
    /// tap; `None` removes it): in chain order, each once its write landed, whether it
    /// records a change or was appended on its own. Events other replicas append are not
    /// sent. What an `[audit] file` is written from.
    fn tap_audit(&self, tap: Option<AuditTap>);

    /// Audit events numbered after `after`, oldest first, at most `limit`: what tails the
    /// trail (the event stream, the notification outbox).
    fn audit_after(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<AuditEvent>>;

    /// The number and hash of the newest audit event (0 and [`ticket::GENESIS`] for an empty
    /// trail).
    fn audit_head(&self) -> StoreFuture<'_, (u64, String)>;

    /// The number of the newest audit event this store has seen appended, on any replica: it
    /// changes as events land, so tailers wake instead of polling. A lost wake-up (a pub/sub
    /// reconnect) only delays them until they next look.
    fn audit_seq(&self) -> watch::Receiver<u64>;

    /// The notification outbox's fan-out cursor: the last audit event already turned into
    /// deliveries. Set to the audit head the first time it is read, so an outbox that starts
    /// on an existing trail does not notify its history.
    fn outbox_cursor(&self) -> StoreFuture<'_, u64>;

    /// Adds `deliveries` (due at `due`; an id already queued is kept as it is) and moves the
    /// cursor from `from` to `to`, atomically. `Ok(false)`, and nothing written, when the
    /// cursor is no longer `from` (another replica fanned those events out).
    fn outbox_enqueue<'a>(
        &'a self,
        from: u64,
        to: u64,
        deliveries: &'a [Delivery],
        due: Timestamp,
    ) -> StoreFuture<'a, bool>;

    /// Claims up to `limit` of `channel`'s deliveries due at `now` for `lease` (per channel, so
    /// a channel that hangs delays only its own): nobody else claims them until the lease
    /// ends, so a replica that dies mid-attempt delays a delivery, never loses it.
    fn outbox_claim<'a>(
        &'a self,
        channel: &'a str,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Claimed>>;

    /// The channels that have queued deliveries (due or not).
    fn outbox_channels(&self) -> StoreFuture<'_, Vec<String>>;

    /// Settles a claimed delivery: done (`retry_at = None`, removed) or due again at
    /// `retry_at` with one more attempt counted. `Ok(false)` when the claim was lost (its
    /// lease ran out and another replica claimed it).
    fn outbox_settle<'a>(
        &'a self,
        claimed: &'a Claimed,
        retry_at: Option<Timestamp>,
    ) -> StoreFuture<'a, bool>;

    /// Stores a grant made outside a ticket transition (records no event). Grants that
    /// approvals create are written by [`Store::transition`].
    fn create_grant(&self, grant: Grant) -> StoreFuture<'_, Grant>;

    /// The grant, if it exists and is within retention.
    fn get_grant<'a>(&'a self, id: &'a GrantId) -> StoreFuture<'a, Option<Grant>>;

    /// Grants active at `now` (not revoked, not expired, uses left), soonest-ending first.
    fn active_grants(&self, now: Timestamp) -> StoreFuture<'_, Vec<Grant>>;

    /// Up to `limit` grants still kept (any state: active, revoked, expired, used up),
    /// latest-ending first.
    fn recent_grants(&self, limit: usize) -> StoreFuture<'_, Vec<Grant>>;

    /// Grants of `requester` on `route` active at `now`, soonest-ending first.
    fn grants_for<'a>(
        &'a self,
        route: &'a str,
        requester: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, Vec<Grant>>;

    /// [`Store::transition`] for grants (use, revoke), with their events.
    fn transition_grant<'a>(
        &'a self,
        id: &'a GrantId,
        f: GrantTransition<'a>,
        audit: GrantAudit<'a>,
    ) -> StoreFuture<'a, Grant>;

    /// Maintenance, called periodically: removes index entries whose records are past
    /// retention (and, in memory, the records themselves), doing at most about
    /// [`PRUNE_BATCH`] entries of work per call. Returns how many entries were removed; a
    /// busy store may need several calls.
    fn prune(&self, now: Timestamp) -> StoreFuture<'_, usize>;

    /// Readiness: the backend answers.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// How many operations failed because the backend was unreachable or too slow, since
    /// this store was built (`jitgate_store_errors_total`). A store in memory never fails so.
    fn errors(&self) -> u64 {
        0
    }

    /// Resolves once every write this handle made so far will survive a failover of the
    /// backend (Redis: as many replicas as `replica_acks` have it); `Unavailable` when that
    /// cannot be confirmed. A write read back after its answer was lost counts only then: it
    /// may sit on a primary that was just replaced, to vanish when that node resynchronises.
    fn durable(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// The most entries one [`Store::prune`] call examines.
pub const PRUNE_BATCH: usize = 1000;

// === ids and clock ===

/// The wall clock as a [`Timestamp`].
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

fn random80() -> u128 {
    let mut b = [0u8; 16];
    // The OS generator failing is not recoverable; a predictable id would only weaken
    // unguessability, which ids do not provide authorisation for anyway (requesters are
    // checked), so fall back to the clock mixed in rather than refusing to serve.
    if getrandom::getrandom(&mut b).is_err() {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = n.to_le_bytes();
    }
    u128::from_le_bytes(b)
}

/// One notification in the outbox: an audit event rendered for one channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Stable across retries (what receivers deduplicate on, e.g. `webhook-id`).
    pub id: String,
    /// The `[[notify]]` channel's name.
    pub channel: String,
    /// The audit event it announces.
    pub seq: u64,
    /// The ticket it is about, if any.
    #[serde(default)]
    pub ticket: Option<TicketId>,
    /// That ticket's route, if any.
    #[serde(default)]
    pub route: Option<String>,
    /// What is sent, fixed when the event was fanned out so every retry sends the same.
    pub payload: String,
    /// When it was queued (retries end a channel's `retry_for` after it).
    pub queued_at: Timestamp,
    /// Attempts made so far (0 when first claimed).
    #[serde(default)]
    pub attempts: u32,
}

/// A delivery claimed by [`Store::outbox_claim`]; `token` settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The delivery.
    pub delivery: Delivery,
    /// Proves the claim to [`Store::outbox_settle`].
    pub token: String,
}

/// A fresh random claim token.
pub(crate) fn new_claim_token() -> String {
    format!("{:032x}", random80())
}

/// A fresh id for one run of a gateway replica (`gw_` + 80 random bits in hex): what
/// [`jitgate_rules::ticket::Ticket::holders`] lists.
pub fn new_replica_id() -> String {
    format!("gw_{:020x}", random80())
}

/// A fresh ticket id at `at`.
pub fn new_ticket_id(at: Timestamp) -> TicketId {
    TicketId::new(at.as_millis(), random80())
}

/// A fresh id for one release of an approved request (`rel_` + ULID), recorded on the ticket
/// by [`jitgate_rules::ticket::execute`].
pub fn new_release_id(at: Timestamp) -> String {
    format!(
        "rel_{}",
        TicketId::new(at.as_millis(), random80())
            .as_str()
            .trim_start_matches(TicketId::PREFIX)
    )
}

/// A fresh grant id at `at`.
pub fn new_grant_id(at: Timestamp) -> GrantId {
    GrantId::new(at.as_millis(), random80())
}

/// How long after `now` a ticket must still be kept: until it can no longer change
/// (expiry while pending, the redemption window while approved) plus `retention`.
pub(crate) fn ticket_keep_until(t: &Ticket, now: Timestamp, retention: Duration) -> Timestamp {
    let settled = match t.status {
        Status::Pending => t.expires_at,
        Status::Approved => t.redeem_by.unwrap_or(t.expires_at).max(now),
        _ => now,
    };
    settled.plus(retention)
}

/// Like [`ticket_keep_until`] for grants: until the grant ends (expiry, revocation, or its
/// last use) plus `retention`.
pub(crate) fn grant_keep_until(g: &Grant, now: Timestamp, retention: Duration) -> Timestamp {
    let mut end = match g.revoked_at {
        Some(r) => r.min(g.expires_at),
        None => g.expires_at,
    };
    if g.max_uses.is_some_and(|m| g.uses >= m) {
        end = end.min(now);
    }
    end.max(now).plus(retention)
}

/// What a ticket change writes besides the ticket: whether it left `PENDING` (unindex,
/// publish) and the grant an approval created.
pub(crate) struct Effects {
    left_pending: bool,
    grant: Option<Grant>,
}

impl Effects {
    pub(crate) fn of(before: &Ticket, after: &Ticket) -> Effects {
        Effects {
            left_pending: before.status == Status::Pending && after.status != Status::Pending,
            grant: ticket::grant_of(before, after),
        }
    }
}

/// Chains `drafts` after the audit head `(seq, hash)`.
pub(crate) fn chain_all(head: (u64, &str), drafts: &[AuditDraft]) -> Vec<AuditEvent> {
    let (mut seq, mut prev) = (head.0, head.1.to_string());
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        seq += 1;
        let e = ticket::chain(&prev, seq, d.clone());
        prev.clone_from(&e.hash);
        out.push(e);
    }
    out
}

/// The key of the per-requester index of `route`: length-prefixed so that route `a:b` +
/// user `c` and route `a` + user `b:c` differ.
pub(crate) fn route_requester(route: &str, requester: &str) -> String {
    format!("{}:{route}:{requester}", route.len())
}

/// Bounded optimistic retries before [`StoreError::Conflict`].
pub(crate) const MAX_ATTEMPTS: usize = 64;
