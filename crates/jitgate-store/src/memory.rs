//! The embedded store: one process, everything behind one mutex.
//!
//! The mutex is a `std` one and is never held across an `.await`, so each operation is one
//! short critical section; that is also what makes a transition, the grant it creates, the
//! limits it checks and the audit events it records atomic here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jitgate_rules::ticket::{
    AuditDraft, AuditEvent, Grant, GrantId, Status, Ticket, TicketId, Timestamp, GENESIS,
};
use tokio::sync::{broadcast, watch};

use crate::{
    chain_all, grant_keep_until, new_claim_token, now, route_requester, ticket_keep_until,
    AuditFilter, AuditPage, AuditTap, Claimed, CreateAudit, Delivery, Effects, GrantAudit,
    GrantTransition, LimitScope, PendingLimits, Store, StoreError, StoreFuture, Tap, TicketAudit,
    TicketTransition, Timer,
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
    /// Taken while the state lock is held, so events reach it in chain order.
    tap: Tap,
}

/// Records with the instant they may be dropped, and the indexes of pending tickets (kept
/// in step with the records, so limits and the pending index cost no scan).
#[derive(Default)]
struct State {
    tickets: HashMap<TicketId, (Ticket, Timestamp)>,
    coalesce: HashMap<String, TicketId>,
    /// Pending tickets and their expiry.
    pending: HashMap<TicketId, Timestamp>,
    /// Pending tickets per [`route_requester`] key.
    by_requester: HashMap<String, HashSet<TicketId>>,
    /// Pending tickets per quota key ([`Ticket::quota_key`]: a user, or an anonymous address).
    by_source: HashMap<String, HashSet<TicketId>>,
    grants: HashMap<GrantId, (Grant, Timestamp)>,
    /// The client addresses each requester was seen from (`first_seen`).
    sources: HashMap<String, HashSet<String>>,
    /// Timers of pending tickets, soonest first.
    timers: std::collections::BTreeSet<(Timestamp, TicketId, Timer)>,
    audit: Vec<AuditEvent>,
    /// Told the newest audit seq on every append.
    audit_seq: Option<watch::Sender<u64>>,
    outbox: Outbox,
    last_purge: Timestamp,
    /// Gateway replicas' leases ([`Store::renew_replica`]): until when each is alive, and the
    /// renewal that began it.
    leases: HashMap<String, (Timestamp, u64)>,
}

/// The notification outbox: the fan-out cursor and the queued deliveries.
#[derive(Default)]
struct Outbox {
    cursor: Option<u64>,
    queued: HashMap<String, Queued>,
}

struct Queued {
    delivery: Delivery,
    due: Timestamp,
    claim: Option<String>,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store that keeps finished tickets and grants for `retention`.
    pub fn new(retention: Duration) -> Self {
        let (decisions, _) = broadcast::channel(1024);
        let state = State {
            audit_seq: Some(watch::channel(0).0),
            ..State::default()
        };
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                decisions,
                retention,
                tap: Tap::default(),
            }),
        }
    }

    fn lock_raw(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, never a half-applied
        // transition (each is computed before anything is written), so the poison can be
        // ignored.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock_raw();
        let at = now();
        // At most once a second, so operations stay O(1) amortised rather than scanning
        // every record each time.
        if at.as_millis() >= st.last_purge.as_millis().saturating_add(1000) {
            st.purge(at);
        }
        st
    }

    /// Appends `drafts` to the chain and sends them to the tap, under the state lock.
    fn record(&self, st: &mut State, drafts: &[AuditDraft]) -> Vec<AuditEvent> {
        let events = st.append(drafts);
        self.inner.tap.send(&events);
        events
    }

    fn keep_ticket(&self, t: &Ticket) -> Timestamp {
        ticket_keep_until(t, now(), self.inner.retention)
    }

    fn keep_grant(&self, g: &Grant) -> Timestamp {
        grant_keep_until(g, now(), self.inner.retention)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Duration::from_secs(7 * 24 * 3600))
    }
}

// === impl State ===

impl State {
    /// Drops records past retention (and their index entries); returns how many.
    fn purge(&mut self, at: Timestamp) -> usize {
        self.last_purge = at;
        let gone: Vec<Ticket> = self
            .tickets
            .values()
            .filter(|(_, keep)| *keep <= at)
            .map(|(t, _)| t.clone())
            .collect();
        for t in &gone {
            self.tickets.remove(&t.id);
            self.unindex_pending(t);
        }
        let before = self.grants.len();
        self.grants.retain(|_, (_, keep)| *keep > at);
        gone.len() + (before - self.grants.len())
    }

    fn index_pending(&mut self, t: &Ticket, coalesce_key: &str) {
        self.coalesce.insert(coalesce_key.to_string(), t.id.clone());
        self.pending.insert(t.id.clone(), t.expires_at);
        self.by_requester
            .entry(route_requester(&t.route, &t.requester.key()))
            .or_default()
            .insert(t.id.clone());
        if let Some(quota) = t.quota_key() {
            self.by_source
                .entry(quota)
                .or_default()
                .insert(t.id.clone());
        }
    }

    fn unindex_pending(&mut self, t: &Ticket) {
        if self.coalesce.get(&t.fingerprint) == Some(&t.id) {
            self.coalesce.remove(&t.fingerprint);
        }
        self.pending.remove(&t.id);
        remove_from(
            &mut self.by_requester,
            &route_requester(&t.route, &t.requester.key()),
            &t.id,
        );
        if let Some(quota) = t.quota_key() {
            remove_from(&mut self.by_source, &quota, &t.id);
        }
    }

    /// The cap `t` would exceed, most specific first.
    fn refusal(&self, t: &Ticket, limits: &PendingLimits) -> Option<StoreError> {
        let over = |n: usize, cap: u64| n as u64 >= cap;
        let count = |index: &HashMap<String, HashSet<TicketId>>, key: &str| {
            index.get(key).map_or(0, HashSet::len)
        };
        let mine = count(
            &self.by_requester,
            &route_requester(&t.route, &t.requester.key()),
        );
        if let Some(cap) = limits.per_requester.map(u64::from) {
            if over(mine, cap) {
                return Some(limit(LimitScope::Requester, cap));
            }
        }
        if let (Some(cap), Some(quota)) = (limits.per_source.map(u64::from), t.quota_key()) {
            if over(count(&self.by_source, &quota), cap) {
                return Some(limit(LimitScope::Source, cap));
            }
        }
        if let Some(cap) = limits.max_pending {
            if over(self.pending.len(), cap) {
                return Some(limit(LimitScope::Global, cap));
            }
        }
        None
    }

    /// Numbers, chains and appends `drafts`.
    fn append(&mut self, drafts: &[AuditDraft]) -> Vec<AuditEvent> {
        let head = self
            .audit
            .last()
            .map_or((0, GENESIS), |e| (e.seq, e.hash.as_str()));
        let events = chain_all(head, drafts);
        self.audit.extend(events.iter().cloned());
        if let (Some(tx), Some(last)) = (&self.audit_seq, events.last()) {
            tx.send_replace(last.seq);
        }
        events
    }

    fn live_ticket(&self, id: &TicketId, at: Timestamp) -> Option<&Ticket> {
        self.tickets
            .get(id)
            .filter(|(_, keep)| *keep > at)
            .map(|(t, _)| t)
    }
}

fn limit(scope: LimitScope, limit: u64) -> StoreError {
    StoreError::Limit { scope, limit }
}

fn remove_from(index: &mut HashMap<String, HashSet<TicketId>>, key: &str, id: &TicketId) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The most client addresses remembered per requester in memory.
const MAX_SOURCES_PER_REQUESTER: usize = 10_000;

// === impl Store for MemoryStore ===

impl Store for MemoryStore {
    fn create_or_join<'a>(
        &'a self,
        ticket: Ticket,
        coalesce_key: &'a str,
        limits: &'a PendingLimits,
        on_create: CreateAudit<'a>,
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
            if let Some(refused) = st.refusal(&ticket, limits) {
                return Err(refused);
            }
            let drafts = on_create(&ticket);
            let keep = self.keep_ticket(&ticket);
            st.tickets.insert(ticket.id.clone(), (ticket.clone(), keep));
            if ticket.status == Status::Pending {
                st.index_pending(&ticket, coalesce_key);
                for timer in [Timer::Escalate, Timer::Remind] {
                    if let Some(at) = timer.due(&ticket) {
                        st.timers.insert((at, ticket.id.clone(), timer));
                    }
                }
            }
            self.record(&mut st, &drafts);
            Ok((ticket, true))
        })
    }

    fn record<'a>(
        &'a self,
        ticket: Ticket,
        grant: Option<Grant>,
        audit: CreateAudit<'a>,
    ) -> StoreFuture<'a, Ticket> {
        Box::pin(async move {
            if ticket.status == Status::Pending {
                return Err(StoreError::Corrupt("record() takes decided tickets".into()));
            }
            let mut st = self.lock();
            if st.tickets.contains_key(&ticket.id) {
                return Err(StoreError::Conflict);
            }
            let drafts = audit(&ticket);
            let keep = self.keep_ticket(&ticket);
            st.tickets.insert(ticket.id.clone(), (ticket.clone(), keep));
            if let Some(g) = grant {
                let keep = self.keep_grant(&g);
                st.grants.insert(g.id.clone(), (g, keep));
            }
            self.record(&mut st, &drafts);
            Ok(ticket)
        })
    }

    fn get<'a>(&'a self, id: &'a TicketId) -> StoreFuture<'a, Option<Ticket>> {
        Box::pin(async move { Ok(self.lock().live_ticket(id, now()).cloned()) })
    }

    fn list(&self, status: Option<Status>, limit: usize) -> StoreFuture<'_, Vec<Ticket>> {
        Box::pin(async move {
            let st = self.lock();
            let at = now();
            let mut out: Vec<Ticket> = st
                .tickets
                .values()
                .filter(|(t, keep)| *keep > at && status.is_none_or(|s| t.status == s))
                .map(|(t, _)| t.clone())
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
        audit: TicketAudit<'a>,
    ) -> StoreFuture<'a, Ticket> {
        Box::pin(async move {
            let mut st = self.lock();
            let current = st.live_ticket(id, now()).ok_or(StoreError::NotFound)?;
            let next = f(current)?;
            let drafts = audit(current, &next);
            let effects = Effects::of(current, &next);
            // Everything is computed; now write it all.
            let keep = self.keep_ticket(&next);
            st.tickets.insert(id.clone(), (next.clone(), keep));
            if effects.left_pending {
                st.unindex_pending(&next);
            }
            if let Some(g) = effects.grant {
                let keep = self.keep_grant(&g);
                st.grants.entry(g.id.clone()).or_insert((g, keep));
            }
            self.record(&mut st, &drafts);
            drop(st);
            if effects.left_pending {
                // No receivers is fine: nobody is holding this request here.
                let _ = self.inner.decisions.send(id.clone());
            }
            Ok(next)
        })
    }

    fn source_known<'a>(&'a self, requester: &'a str, source: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .sources
                .get(requester)
                .is_some_and(|s| s.contains(source)))
        })
    }

    fn remember_source<'a>(&'a self, requester: &'a str, source: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            let seen = st.sources.entry(requester.to_string()).or_default();
            if seen.len() >= MAX_SOURCES_PER_REQUESTER && !seen.contains(source) {
                // Bounded: a requester past this many addresses starts over.
                seen.clear();
            }
            seen.insert(source.to_string());
            Ok(())
        })
    }

    fn due_timers(&self, now: Timestamp, limit: usize) -> StoreFuture<'_, Vec<(TicketId, Timer)>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st
                .timers
                .iter()
                .take_while(|(at, _, _)| *at <= now)
                .take(limit)
                .map(|(_, id, timer)| (id.clone(), *timer))
                .collect())
        })
    }

    fn clear_timer<'a>(&'a self, id: &'a TicketId, timer: Timer) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            st.timers.retain(|(_, i, k)| !(i == id && *k == timer));
            Ok(())
        })
    }

    fn pending_index(&self) -> StoreFuture<'_, Vec<(TicketId, Timestamp)>> {
        Box::pin(async move {
            let st = self.lock();
            let mut out: Vec<(TicketId, Timestamp)> = st
                .pending
                .iter()
                .map(|(id, exp)| (id.clone(), *exp))
                .collect();
            out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            Ok(out)
        })
    }

    fn still_pending<'a>(&'a self, ids: &'a [TicketId]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(ids.iter().map(|id| st.pending.contains_key(id)).collect())
        })
    }

    fn renew_replica<'a>(
        &'a self,
        replica: &'a str,
        lease: Duration,
        renewal: u64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut st = self.lock();
            let at = now();
            // Expired leases go as they are renewed: the map stays as small as the replicas.
            st.leases.retain(|_, (until, _)| *until > at);
            let entry = st
                .leases
                .entry(replica.to_string())
                .or_insert((at, renewal));
            entry.0 = at.plus(lease);
            Ok(entry.1)
        })
    }

    fn replicas_alive<'a>(&'a self, replicas: &'a [String]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            let st = self.lock();
            let at = now();
            Ok(replicas
                .iter()
                .map(|r| st.leases.get(r).is_some_and(|(until, _)| *until > at))
                .collect())
        })
    }

    fn due_pending(&self, now: Timestamp, limit: usize) -> StoreFuture<'_, Vec<TicketId>> {
        Box::pin(async move {
            let st = self.lock();
            let mut due: Vec<(Timestamp, &TicketId)> = st
                .pending
                .iter()
                .filter(|(_, exp)| **exp <= now)
                .map(|(id, exp)| (*exp, id))
                .collect();
            due.sort();
            Ok(due
                .into_iter()
                .take(limit)
                .map(|(_, id)| id.clone())
                .collect())
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<TicketId> {
        self.inner.decisions.subscribe()
    }

    fn append_audit(&self, draft: AuditDraft) -> StoreFuture<'_, AuditEvent> {
        Box::pin(async move {
            let mut st = self.lock();
            self.record(&mut st, std::slice::from_ref(&draft))
                .pop()
                .ok_or_else(|| StoreError::Corrupt("audit append produced no event".into()))
        })
    }

    fn audit_page<'a>(&'a self, filter: &'a AuditFilter) -> StoreFuture<'a, AuditPage> {
        Box::pin(async move {
            let st = self.lock();
            let start = st.audit.partition_point(|e| e.seq <= filter.after);
            let budget = filter.scan_budget();
            let mut page = AuditPage::default();
            let mut last = None;
            for e in st.audit.iter().skip(start).take(budget) {
                last = Some(e.seq);
                if filter.matches(e) {
                    page.events.push(e.clone());
                    if filter.limit != 0 && page.events.len() == filter.limit {
                        break;
                    }
                }
            }
            let end = st.audit.last().map_or(0, |e| e.seq);
            page.next = last.filter(|&l| l < end);
            Ok(page)
        })
    }

    fn audit_after(&self, after: u64, limit: usize) -> StoreFuture<'_, Vec<AuditEvent>> {
        Box::pin(async move {
            let st = self.lock();
            // Numbers run from 1 without gaps, so event `seq` sits at index `seq - 1`.
            let from = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(st.audit.len());
            Ok(st.audit[from..].iter().take(limit).cloned().collect())
        })
    }

    fn audit_head(&self) -> StoreFuture<'_, (u64, String)> {
        Box::pin(async move {
            Ok(self
                .lock()
                .audit
                .last()
                .map_or((0, GENESIS.to_string()), |e| (e.seq, e.hash.clone())))
        })
    }

    fn audit_seq(&self) -> watch::Receiver<u64> {
        match &self.lock_raw().audit_seq {
            Some(tx) => tx.subscribe(),
            None => watch::channel(0).1,
        }
    }

    fn outbox_cursor(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut st = self.lock();
            let head = st.audit.last().map_or(0, |e| e.seq);
            Ok(*st.outbox.cursor.get_or_insert(head))
        })
    }

    fn outbox_enqueue<'a>(
        &'a self,
        from: u64,
        to: u64,
        deliveries: &'a [Delivery],
        due: Timestamp,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut st = self.lock();
            let head = st.audit.last().map_or(0, |e| e.seq);
            if *st.outbox.cursor.get_or_insert(head) != from {
                return Ok(false);
            }
            for d in deliveries {
                st.outbox
                    .queued
                    .entry(d.id.clone())
                    .or_insert_with(|| Queued {
                        delivery: d.clone(),
                        due,
                        claim: None,
                    });
            }
            st.outbox.cursor = Some(to);
            Ok(true)
        })
    }

    fn outbox_channels(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let st = self.lock();
            let mut names: Vec<String> = st
                .outbox
                .queued
                .values()
                .map(|q| q.delivery.channel.clone())
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
    }

    fn outbox_claim<'a>(
        &'a self,
        channel: &'a str,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(async move {
            let mut st = self.lock();
            let token = new_claim_token();
            let mut due: Vec<(&String, &mut Queued)> = st
                .outbox
                .queued
                .iter_mut()
                .filter(|(_, q)| q.due <= now && q.delivery.channel == channel)
                .collect();
            due.sort_by(|(a_id, a), (b_id, b)| {
                (a.due, a.delivery.seq, a_id).cmp(&(b.due, b.delivery.seq, b_id))
            });
            Ok(due
                .into_iter()
                .take(limit)
                .map(|(_, q)| {
                    q.due = now.plus(lease);
                    q.claim = Some(token.clone());
                    Claimed {
                        delivery: q.delivery.clone(),
                        token: token.clone(),
                    }
                })
                .collect())
        })
    }

    fn outbox_settle<'a>(
        &'a self,
        claimed: &'a Claimed,
        retry_at: Option<Timestamp>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut st = self.lock();
            let id = &claimed.delivery.id;
            let Some(q) = st.outbox.queued.get_mut(id) else {
                return Ok(false);
            };
            if q.claim.as_deref() != Some(claimed.token.as_str()) {
                return Ok(false);
            }
            match retry_at {
                Some(at) => {
                    q.due = at;
                    q.claim = None;
                    q.delivery.attempts += 1;
                }
                None => {
                    st.outbox.queued.remove(id);
                }
            }
            Ok(true)
        })
    }

    fn tap_audit(&self, tap: Option<AuditTap>) {
        // Under the state lock, so no append is half-way between the chain and the tap.
        let _st = self.lock_raw();
        self.inner.tap.set(tap);
    }

    fn create_grant(&self, grant: Grant) -> StoreFuture<'_, Grant> {
        Box::pin(async move {
            let mut st = self.lock();
            let keep = self.keep_grant(&grant);
            st.grants.insert(grant.id.clone(), (grant.clone(), keep));
            Ok(grant)
        })
    }

    fn get_grant<'a>(&'a self, id: &'a GrantId) -> StoreFuture<'a, Option<Grant>> {
        Box::pin(async move {
            let at = now();
            Ok(self
                .lock()
                .grants
                .get(id)
                .filter(|(_, keep)| *keep > at)
                .map(|(g, _)| g.clone()))
        })
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

    fn recent_grants(&self, limit: usize) -> StoreFuture<'_, Vec<Grant>> {
        Box::pin(async move {
            let st = self.lock();
            let mut out: Vec<Grant> = st.grants.values().map(|(g, _)| g.clone()).collect();
            out.sort_by(|a, b| (b.expires_at, &b.id).cmp(&(a.expires_at, &a.id)));
            out.truncate(limit);
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
        audit: GrantAudit<'a>,
    ) -> StoreFuture<'a, Grant> {
        Box::pin(async move {
            let mut st = self.lock();
            let at = now();
            let (current, _) = st
                .grants
                .get(id)
                .filter(|(_, keep)| *keep > at)
                .ok_or(StoreError::NotFound)?;
            let next = f(current)?;
            let drafts = audit(current, &next);
            let keep = self.keep_grant(&next);
            st.grants.insert(id.clone(), (next.clone(), keep));
            self.record(&mut st, &drafts);
            Ok(next)
        })
    }

    fn prune(&self, at: Timestamp) -> StoreFuture<'_, usize> {
        // Indexes here are kept in step with the records, so pruning is purging.
        Box::pin(async move { Ok(self.lock_raw().purge(at)) })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
