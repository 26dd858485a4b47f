//! What `GET /metrics` exposes (SPEC 10a), in the OpenMetrics text format through the
//! Prometheus project's client crate. One [`Metrics`] per process, owned by the engine, so
//! every plane and task that can reach the engine records into the same registry.
//!
//! Labels are bounded: routes, upstreams and channels come from the rule table, actions,
//! outcomes and results are fixed words, and statuses are HTTP status codes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use jitgate_rules::ticket::{Status, Ticket, Timestamp};

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `jitgate_requests_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    action: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecidedLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    channel: String,
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Everything the gateway counts.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<ActionLabel>,
    held: Gauge,
    tickets_opened: Family<RouteLabel, Counter>,
    tickets_decided: Family<DecidedLabels, Counter>,
    decision: Histogram,
    release: Histogram,
    upstream_duration: Histograms<UpstreamLabel>,
    reloads: Family<ResultLabel, Counter>,
    store_errors: Arc<StoreErrors>,
    notifications: Family<NotifyLabels, Counter>,
    access_log_dropped: Counter,
    /// Requests no route decided.
    unrouted: RouteMeter,
}

/// How many statuses a route remembers handles for; others are looked up in the family.
const STATUS_SLOTS: usize = 8;

/// The series one route's requests land in, resolved once per route and table generation
/// ([`Metrics::route`]) so that counting a request takes no lock and no label hashing.
#[derive(Debug)]
pub struct RouteMeter {
    route: String,
    served: Served,
    duration: Histogram,
    /// `jitgate_requests_total` by status, filled on first use.
    statuses: [OnceLock<(u16, Counter)>; STATUS_SLOTS],
}

impl RouteMeter {
    fn requests(&self, family: &Family<RequestLabels, Counter>, status: u16) -> Counter {
        for slot in &self.statuses {
            let (s, counter) = slot.get_or_init(|| (status, self.counter(family, status)));
            if *s == status {
                return counter.clone();
            }
        }
        self.counter(family, status)
    }

    fn counter(&self, family: &Family<RequestLabels, Counter>, status: u16) -> Counter {
        family
            .get_or_create(&RequestLabels {
                route: self.route.clone(),
                action: self.served.as_str(),
                status,
            })
            .clone()
    }
}

/// Time to the response head, from 0.5 ms to about 16 s (held requests land at the top).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Human decisions: 1 s to about 4.5 h.
fn decision_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// How a data-plane request was served: the action of its route, `none` when no route
/// decided (no route matched, the request was refused before matching, or it asked for a
/// gateway page under `/.well-known/jitgate/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Forwarded by an allow route.
    Allow,
    /// Refused by a deny route.
    Deny,
    /// An approve route: held, released, refused or answered pending.
    Approve,
    /// No route: malformed, no match, or a gateway page (`/.well-known/jitgate/`).
    None,
}

impl From<Option<jitgate_rules::route::Action>> for Served {
    /// The action of the route that decided, if any.
    fn from(action: Option<jitgate_rules::route::Action>) -> Served {
        use jitgate_rules::route::Action;
        match action {
            Some(Action::Allow) => Served::Allow,
            Some(Action::Deny) => Served::Deny,
            Some(Action::Approve) => Served::Approve,
            None => Served::None,
        }
    }
}

impl Served {
    /// The `action` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Allow => "allow",
            Served::Deny => "deny",
            Served::Approve => "approve",
            Served::None => "none",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "jitgate_requests",
            "Data-plane requests answered, by route, action and status",
            requests.clone(),
        );
        let request_duration = Histograms::<ActionLabel>::new_with_constructor(request_buckets);
        registry.register(
            "jitgate_request_duration_seconds",
            "Time from a data-plane request's arrival to its response head, by action",
            request_duration.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "jitgate_held_requests",
            "Requests this replica holds for a decision now",
            held.clone(),
        );
        let tickets_opened = Family::<RouteLabel, Counter>::default();
        registry.register(
            "jitgate_tickets_opened",
            "Tickets opened by this replica, by route",
            tickets_opened.clone(),
        );
        let tickets_decided = Family::<DecidedLabels, Counter>::default();
        registry.register(
            "jitgate_tickets_decided",
            "Tickets that left PENDING through this replica, by route and outcome (approved, denied, expired, cancelled, auto_approved, break_glass)",
            tickets_decided.clone(),
        );
        let decision = decision_buckets();
        registry.register(
            "jitgate_decision_seconds",
            "Time from a ticket's opening to its decision",
            decision.clone(),
        );
        let release = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "jitgate_release_seconds",
            "Time from an approval to the upstream's answer to the released request",
            release.clone(),
        );
        let upstream_duration = Histograms::<UpstreamLabel>::new_with_constructor(request_buckets);
        registry.register(
            "jitgate_upstream_duration_seconds",
            "Time from sending a request upstream to the upstream's response head, by upstream",
            upstream_duration.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        // Both results exist from the start, so a first rejection is an increase, not a new
        // series (alerts on `increase()` see it).
        for result in ["applied", "rejected"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "jitgate_reloads",
            "Rule table reloads that swapped a new table in (applied) or were refused (rejected)",
            reloads.clone(),
        );
        let store_errors = Arc::new(StoreErrors::default());
        registry.register_collector(Box::new(StoreErrorsCollector(store_errors.clone())));
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "jitgate_notifications",
            "Notification delivery attempts, by channel and result (delivered, failed, gave_up, dropped)",
            notifications.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "jitgate_access_log_dropped",
            "Access-log lines dropped because standard output did not keep up",
            access_log_dropped.clone(),
        );
        let unrouted = RouteMeter {
            route: String::new(),
            served: Served::None,
            duration: request_duration
                .get_or_create(&ActionLabel {
                    action: Served::None.as_str(),
                })
                .clone(),
            statuses: Default::default(),
        };
        Metrics {
            access_log_dropped,
            unrouted,
            registry,
            requests,
            request_duration,
            held,
            tickets_opened,
            tickets_decided,
            decision,
            release,
            upstream_duration,
            reloads,
            store_errors,
            notifications,
        }
    }

    /// The exposition, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail; a metric that failed to encode would be a bug in
        // the label types, and the scrape then shows what was written up to it.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding /metrics failed: {e}");
        }
        out
    }

    /// The series of requests decided by `route` (`""` when no route decided), served as
    /// `served`. Resolve it once (a table generation keeps it per route) and pass it to
    /// [`Metrics::request`].
    pub fn route(&self, route: &str, served: Served) -> RouteMeter {
        RouteMeter {
            route: route.to_string(),
            served,
            duration: self
                .request_duration
                .get_or_create(&ActionLabel {
                    action: served.as_str(),
                })
                .clone(),
            statuses: Default::default(),
        }
    }

    /// The series of requests no route decided.
    pub fn unrouted(&self) -> &RouteMeter {
        &self.unrouted
    }

    /// One data-plane request of `meter` answered with `status` after `elapsed`.
    pub fn request(&self, meter: &RouteMeter, status: u16, elapsed: Duration) {
        meter.requests(&self.requests, status).inc();
        meter.duration.observe(elapsed.as_secs_f64());
    }

    /// One more request held; the returned guard counts it until dropped.
    pub fn held(&self) -> HeldGauge {
        self.held.inc();
        HeldGauge(self.held.clone())
    }

    /// A ticket this replica opened (not one an identical request joined).
    pub fn ticket_opened(&self, route: &str) {
        self.tickets_opened
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .inc();
    }

    /// `after` is what a successful transition of a PENDING ticket stored: counts it when it
    /// left PENDING (a first approval of a quorum of two does not).
    pub fn ticket_transition(&self, after: &Ticket, now: Timestamp) {
        let outcome = match after.status {
            Status::Pending | Status::Executed | Status::Review => return,
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        };
        self.tickets_decided
            .get_or_create(&DecidedLabels {
                route: after.route.clone(),
                outcome,
            })
            .inc();
        let decided = after.decided_at.unwrap_or(now);
        self.decision
            .observe(seconds_between(after.created_at, decided));
    }

    /// A ticket opened decided by a policy (`auto_approved`); counted as opened and decided.
    pub fn ticket_by_policy(&self, route: &str, outcome: &'static str) {
        self.ticket_opened(route);
        self.tickets_decided
            .get_or_create(&DecidedLabels {
                route: route.to_string(),
                outcome,
            })
            .inc();
    }

    /// The upstream answered a released request `now`; `decided_at` is the approval.
    pub fn released(&self, decided_at: Timestamp, now: Timestamp) {
        self.release.observe(seconds_between(decided_at, now));
    }

    /// `jitgate_upstream_duration_seconds` of upstream `name`: resolve it once per upstream
    /// client and observe it per exchange.
    pub fn upstream(&self, name: &str) -> Histogram {
        self.upstream_duration
            .get_or_create(&UpstreamLabel {
                upstream: name.to_string(),
            })
            .clone()
    }

    /// A reload: `applied` (a new table in force) or `rejected`.
    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// An access-log line was dropped: stdout is not keeping up.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// The store failed an operation, or a connection attempt.
    pub fn store_error(&self) {
        self.store_errors.gateway.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the store's own error count at each scrape (see [`jitgate_store::Store::errors`]).
    pub fn count_store_errors_of(&self, store: Arc<dyn jitgate_store::Store>) {
        if let Ok(mut slot) = self.store_errors.store.lock() {
            *slot = Some(store);
        }
    }

    /// One notification attempt on `channel`: `delivered`, `failed` (to be retried),
    /// `gave_up` (past `retry_for`) or `dropped` (the channel is no longer configured).
    pub fn notification(&self, channel: &str, result: &'static str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                channel: channel.to_string(),
                result,
            })
            .inc();
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    Duration::from_millis(to.0.saturating_sub(from.0)).as_secs_f64()
}

/// Decrements `jitgate_held_requests` when dropped.
#[derive(Debug)]
pub struct HeldGauge(Gauge);

impl Drop for HeldGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Failed connection attempts (counted by the engine) plus the operations the store counts as
/// failed itself (see [`jitgate_store::Store::errors`]).
#[derive(Default)]
struct StoreErrors {
    gateway: AtomicU64,
    store: std::sync::Mutex<Option<Arc<dyn jitgate_store::Store>>>,
}

impl std::fmt::Debug for StoreErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreErrors")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct StoreErrorsCollector(Arc<StoreErrors>);

impl Collector for StoreErrorsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let of_store = self
            .0
            .store
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.errors()))
            .unwrap_or(0);
        let total = self.0.gateway.load(Ordering::Relaxed) + of_store;
        let counter = ConstCounter::new(total);
        let metric = encoder.encode_descriptor(
            "jitgate_store_errors",
            "Store operations and connection attempts that failed (unreachable, or slower than op_timeout)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests;
