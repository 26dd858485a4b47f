//! The ticket, grant and audit store of jitgate: one trait, an in-memory and a Redis backend.
//!
//! The store holds no decision logic. Every change to a ticket or grant is one of the pure
//! transitions of [`jitgate_rules::ticket`], applied by [`Store::transition`] to the version
//! that was read and written only if nothing changed in between (optimistic concurrency),
//! so two replicas, two approvers, or a decision racing an expiry never produce two outcomes.
//!
//! The trait returns boxed futures ([`StoreFuture`]) rather than using `async fn` so that it
//! stays object-safe (`Arc<dyn Store>`) without the `async-trait` macro.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jitgate_rules::ticket::{
    AuditDraft, AuditEvent, Grant, GrantId, Status, Ticket, TicketId, Timestamp, TransitionError,
};
use tokio::sync::broadcast;

pub mod memory;
pub mod redis_store;

pub use memory::MemoryStore;
pub use redis_store::{RedisOptions, RedisStore};

/// What every [`Store`] method returns: a boxed, `Send` future, so the trait is object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A pure ticket transition, e.g. `&|t| ticket::approve(t, &who, None, now)`.
pub type TicketTransition<'a> =
    &'a (dyn Fn(&Ticket) -> Result<Ticket, TransitionError> + Send + Sync);

/// A pure grant transition, e.g. `&|g| ticket::use_grant(g, now)`.
pub type GrantTransition<'a> = &'a (dyn Fn(&Grant) -> Result<Grant, TransitionError> + Send + Sync);

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
}

/// Which audit events to return, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events about this ticket.
    pub ticket: Option<TicketId>,
    /// Events whose requester *or* actor is this user.
    pub requester: Option<String>,
    /// Events at or after this instant.
    pub since: Option<Timestamp>,
    /// At most this many events (the oldest that match); `0` means no limit.
    pub limit: usize,
}

impl AuditFilter {
    /// Whether an event passes the filter (limit aside).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.ticket
            .as_ref()
            .is_none_or(|t| e.ticket.as_ref() == Some(t))
            && self
                .requester
                .as_deref()
                .is_none_or(|r| e.requester.as_deref() == Some(r) || e.actor.as_deref() == Some(r))
            && self.since.is_none_or(|s| e.at >= s)
    }
}

/// The store contract. Both backends pass `tests/contract.rs`.
pub trait Store: Send + Sync + 'static {
    /// Stores `ticket` unless a `PENDING`, not yet due ticket with the same coalesce key
    /// exists, which is returned instead. Returns the ticket and whether it was created.
    /// "Not yet due" is judged at `ticket.created_at`, the caller's clock.
    fn create_or_join<'a>(
        &'a self,
        ticket: Ticket,
        coalesce_key: &'a str,
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
    fn transition<'a>(
        &'a self,
        id: &'a TicketId,
        f: TicketTransition<'a>,
    ) -> StoreFuture<'a, Ticket>;

    /// Every `PENDING` ticket id with its `expiresAt`, soonest-expiring first: what a replica
    /// reconciles its held requests against (a held id missing here was decided) and what the
    /// expiry sweeper reads (entries past their expiry are due). Ids only, so it stays cheap
    /// with many thousands of tickets pending.
    fn pending_index(&self) -> StoreFuture<'_, Vec<(TicketId, Timestamp)>>;

    /// How many `PENDING` tickets `requester` (see [`jitgate_rules::Requester::key`]) has on
    /// `route`, including overdue ones not yet expired.
    fn pending_count<'a>(&'a self, route: &'a str, requester: &'a str) -> StoreFuture<'a, u64>;

    /// Ids of tickets that left `PENDING`, on any replica. Lossy (a lagging or reconnecting
    /// subscriber may miss some): holders also poll.
    fn subscribe(&self) -> broadcast::Receiver<TicketId>;

    /// Numbers, chains and appends an audit event, atomically with respect to every other
    /// appender (also on other replicas).
    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent>;

    /// Audit events matching `filter`, oldest first.
    fn audit<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<AuditEvent>>;

    /// Stores a new grant.
    fn create_grant(&self, grant: Grant) -> StoreFuture<'_, Grant>;

    /// The grant, if it exists and is within retention.
    fn get_grant<'a>(&'a self, id: &'a GrantId) -> StoreFuture<'a, Option<Grant>>;

    /// Grants active at `now` (not revoked, not expired, uses left), soonest-ending first.
    fn active_grants(&self, now: Timestamp) -> StoreFuture<'_, Vec<Grant>>;

    /// Grants of `requester` on `route` active at `now`, soonest-ending first.
    fn grants_for<'a>(
        &'a self,
        route: &'a str,
        requester: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, Vec<Grant>>;

    /// [`Store::transition`] for grants (use, revoke).
    fn transition_grant<'a>(
        &'a self,
        id: &'a GrantId,
        f: GrantTransition<'a>,
    ) -> StoreFuture<'a, Grant>;

    /// Readiness: the backend answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
}

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

/// Like [`ticket_keep_until`] for grants.
pub(crate) fn grant_keep_until(g: &Grant, now: Timestamp, retention: Duration) -> Timestamp {
    let end = match g.revoked_at {
        Some(r) => r.min(g.expires_at),
        None => g.expires_at,
    };
    end.max(now).plus(retention)
}

/// Bounded optimistic retries before [`StoreError::Conflict`].
pub(crate) const MAX_ATTEMPTS: usize = 64;
