//! The embedded store: one process, everything behind one mutex.
//!
//! The mutex is a `std` one and is never held across an `.await`, so each operation is one
//! short critical section; that is also what makes transitions atomic here.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jitgate_rules::ticket::{
    self, AuditDraft, AuditEvent, Grant, GrantId, Status, Ticket, TicketId, Timestamp,
    TransitionError, GENESIS,
};
use tokio::sync::broadcast;

use crate::{
    grant_keep_until, now, ticket_keep_until, AuditFilter, GrantTransition, Store, StoreError,
    StoreFuture, TicketTransition,
};

/// The in-memory [`Store`]. Cloning shares the same data (like a second handle in the same
/// process); tickets do not survive the process.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    decisions: broadcast::Sender<TicketId>,
    retention: Duration,
}

#[derive(Default)]
struct State {
    tickets: HashMap<TicketId, (Ticket, Timestamp)>,
    coalesce: HashMap<String, TicketId>,
    grants: HashMap<GrantId, (Grant, Timestamp)>,
    audit: Vec<AuditEvent>,
    last_purge: Timestamp,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store that keeps finished tickets and grants for `retention`.
    pub fn new(retention: Duration) -> Self {
        let (decisions, _) = broadcast::channel(1024);
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                decisions,
                retention,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, never a half-applied
        // transition (each is computed before it is written), so the poison can be ignored.
        let mut st = self
            .inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.purge(now());
        st
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Duration::from_secs(7 * 24 * 3600))
    }
}

impl State {
    /// Drops what is past retention; at most once a second, so operations stay O(1)
    /// amortised rather than scanning every ticket each time.
    fn purge(&mut self, now: Timestamp) {
        if now.as_millis() < self.last_purge.as_millis().saturating_add(1000) {
            return;
        }
        self.last_purge = now;
        self.tickets.retain(|_, (_, keep)| *keep > now);
        self.grants.retain(|_, (_, keep)| *keep > now);
        let tickets = &self.tickets;
        self.coalesce.retain(|_, id| tickets.contains_key(id));
    }
}

/// Applies a pure transition to the record `id` and stores the result, kept until `keep_until`
/// of it; returns the record as it was and as it is now. The caller holds the lock throughout,
/// which is what makes the transition atomic.
fn apply<K: Eq + Hash + Clone, V: Clone>(
    records: &mut HashMap<K, (V, Timestamp)>,
    id: &K,
    f: impl FnOnce(&V) -> Result<V, TransitionError>,
    keep_until: impl FnOnce(&V) -> Timestamp,
) -> Result<(V, V), StoreError> {
    let (current, _) = records.get(id).ok_or(StoreError::NotFound)?;
    let next = f(current)?;
    let keep = keep_until(&next);
    let (current, _) = records
        .insert(id.clone(), (next.clone(), keep))
        .ok_or(StoreError::NotFound)?;
    Ok((current, next))
}

impl Store for MemoryStore {
    fn create_or_join<'a>(
        &'a self,
        ticket: Ticket,
        coalesce_key: &'a str,
    ) -> StoreFuture<'a, (Ticket, bool)> {
        Box::pin(async move {
            let mut st = self.lock();
            if let Some(existing) = st
                .coalesce
                .get(coalesce_key)
                .and_then(|id| st.tickets.get(id))
                .map(|(t, _)| t)
                .filter(|t| t.status == Status::Pending && ticket.created_at < t.expires_at)
            {
                return Ok((existing.clone(), false));
            }
            let keep = ticket_keep_until(&ticket, now(), self.inner.retention);
            st.coalesce
                .insert(coalesce_key.to_string(), ticket.id.clone());
            st.tickets.insert(ticket.id.clone(), (ticket.clone(), keep));
            Ok((ticket, true))
        })
    }

    fn get<'a>(&'a self, id: &'a TicketId) -> StoreFuture<'a, Option<Ticket>> {
        Box::pin(async move { Ok(self.lock().tickets.get(id).map(|(t, _)| t.clone())) })
    }

    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Ticket>> {
        Box::pin(async move {
            let st = self.lock();
            let mut out: Vec<Ticket> = st
                .tickets
                .values()
                .map(|(t, _)| t)
                .filter(|t| status.is_none_or(|s| t.status == s))
                .cloned()
                .collect();
            if status == Some(Status::Pending) {
                out.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
            } else {
                out.sort_by(|a, b| b.id.cmp(&a.id));
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    fn transition<'a>(
        &'a self,
        id: &'a TicketId,
        f: TicketTransition<'a>,
    ) -> StoreFuture<'a, Ticket> {
        Box::pin(async move {
            let mut st = self.lock();
            let (current, next) = apply(&mut st.tickets, id, f, |t| {
                ticket_keep_until(t, now(), self.inner.retention)
            })?;
            let left_pending = current.status == Status::Pending && next.status != Status::Pending;
            if left_pending && st.coalesce.get(&next.fingerprint) == Some(id) {
                st.coalesce.remove(&next.fingerprint);
            }
            drop(st);
            if left_pending {
                // No receivers is fine: nobody is holding this request here.
                let _ = self.inner.decisions.send(id.clone());
            }
            Ok(next)
        })
    }

    fn pending_index(&self) -> StoreFuture<'_, Vec<(TicketId, Timestamp)>> {
        Box::pin(async move {
            let st = self.lock();
            let mut out: Vec<(TicketId, Timestamp)> = st
                .tickets
                .values()
                .filter(|(t, _)| t.status == Status::Pending)
                .map(|(t, _)| (t.id.clone(), t.expires_at))
                .collect();
            out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            Ok(out)
        })
    }

    fn pending_count<'a>(&'a self, route: &'a str, requester: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let st = self.lock();
            let n = st
                .tickets
                .values()
                .filter(|(t, _)| {
                    t.status == Status::Pending
                        && t.route == route
                        && t.requester.key() == requester
                })
                .count();
            Ok(n as u64)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<TicketId> {
        self.inner.decisions.subscribe()
    }

    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent> {
        Box::pin(async move {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let (prev, seq) = st
                .audit
                .last()
                .map_or((GENESIS.to_string(), 0), |e| (e.hash.clone(), e.seq));
            let e = ticket::chain(&prev, seq + 1, draft);
            st.audit.push(e.clone());
            Ok(e)
        })
    }

    fn audit<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, Vec<AuditEvent>> {
        Box::pin(async move {
            let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let it = st.audit.iter().filter(|e| filter.matches(e)).cloned();
            Ok(if filter.limit == 0 {
                it.collect()
            } else {
                it.take(filter.limit).collect()
            })
        })
    }

    fn create_grant(&self, grant: Grant) -> StoreFuture<'_, Grant> {
        Box::pin(async move {
            let mut st = self.lock();
            let keep = grant_keep_until(&grant, now(), self.inner.retention);
            st.grants.insert(grant.id.clone(), (grant.clone(), keep));
            Ok(grant)
        })
    }

    fn get_grant<'a>(&'a self, id: &'a GrantId) -> StoreFuture<'a, Option<Grant>> {
        Box::pin(async move { Ok(self.lock().grants.get(id).map(|(g, _)| g.clone())) })
    }

    fn active_grants(&self, at: Timestamp) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(async move {
            let st = self.lock();
            let mut out: Vec<Grant> = st
                .grants
                .values()
                .map(|(g, _)| g)
                .filter(|g| g.is_active(at))
                .cloned()
                .collect();
            out.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
            Ok(out)
        })
    }

    fn grants_for<'a>(
        &'a self,
        route: &'a str,
        requester: &'a str,
        at: Timestamp,
    ) -> StoreFuture<'a, Vec<Grant>> {
        Box::pin(async move {
            let mut all = self.active_grants(at).await?;
            all.retain(|g| g.belongs_to(route, requester));
            Ok(all)
        })
    }

    fn transition_grant<'a>(
        &'a self,
        id: &'a GrantId,
        f: GrantTransition<'a>,
    ) -> StoreFuture<'a, Grant> {
        Box::pin(async move {
            let mut st = self.lock();
            let (_, next) = apply(&mut st.grants, id, f, |g| {
                grant_keep_until(g, now(), self.inner.retention)
            })?;
            Ok(next)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
