//! The outbox's two loops: fan-out (audit events to deliveries) and delivery (claim, post,
//! settle, audit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::Full;
use serde_json::json;
use tokio::sync::Notify;

use jitgate_rules::config::NotifyKind;
use jitgate_rules::ticket::{AuditDraft, AuditKind, Timestamp};
use jitgate_store::{Claimed, Delivery, Store};

use super::{Channel, Channels, Told};
use crate::state::Shared;

/// Audit events read per fan-out step.
const FAN_OUT_BATCH: usize = 256;
/// Deliveries claimed per round.
const CLAIM_BATCH: usize = 32;
/// How often the loops look without a wake-up (lost pub/sub messages, retries coming due).
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts both loops; they end when the gateway shuts down.
pub fn start(shared: Arc<Shared>) {
    let wake = Arc::new(Notify::new());
    tokio::spawn(fan_out(shared.clone(), wake.clone()));
    tokio::spawn(deliver(shared, wake));
}

/// The store, once the engine has one (Redis connects in the background); `None` at shutdown.
pub(crate) async fn store_of(shared: &Shared) -> Option<Arc<dyn Store>> {
    let mut down = shared.engine().shutdown_signal();
    loop {
        if *down.borrow() {
            return None;
        }
        if let Ok(s) = shared.engine().store() {
            return Some(s.clone());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = down.changed() => {}
        }
    }
}

async fn fan_out(shared: Arc<Shared>, wake: Arc<Notify>) {
    let Some(store) = store_of(&shared).await else {
        return;
    };
    let mut down = shared.engine().shutdown_signal();
    let mut seq = store.audit_seq();
    loop {
        let more = match fan_out_step(&shared, &*store).await {
            Ok((more, queued)) => {
                if queued {
                    wake.notify_waiters();
                }
                more
            }
            Err(e) => {
                tracing::warn!(error = %e, "notification fan-out failed; retrying");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = seq.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = down.changed() => {}
        }
        if *down.borrow() {
            return;
        }
    }
}

/// Turns the events after the cursor into deliveries. Returns whether there may be more, and
/// whether anything was queued.
async fn fan_out_step(
    shared: &Shared,
    store: &dyn Store,
) -> Result<(bool, bool), jitgate_store::StoreError> {
    let cursor = store.outbox_cursor().await?;
    let events = store.audit_after(cursor, FAN_OUT_BATCH).await?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok((false, false));
    };
    let snap = shared.snapshot();
    let channels = &snap.notify;
    let now = shared.engine().now();
    let mut deliveries = Vec::new();
    if !channels.is_empty() {
        for e in &events {
            let Some(told) = Told::load(store, e).await else {
                continue;
            };
            let route = told
                .ticket
                .as_ref()
                .and_then(|t| snap.table.route(&t.route));
            for ch in channels.for_event(route, told.kind) {
                deliveries.push(Delivery {
                    id: format!("{}.{}", told.msg_id, ch.cfg.name),
                    channel: ch.cfg.name.clone(),
                    seq: told.seq,
                    ticket: e.ticket.clone(),
                    route: e.route.clone(),
                    payload: told.payload(ch, route, channels),
                    queued_at: now,
                    attempts: 0,
                });
            }
        }
    }
    // Lost to another replica: it queued the same events; read on from its cursor.
    let won = store.outbox_enqueue(cursor, last, &deliveries, now).await?;
    Ok((true, won && !deliveries.is_empty()))
}

/// Runs one worker per channel (configured, or with deliveries still queued): a channel that
/// hangs delays only its own deliveries.
async fn deliver(shared: Arc<Shared>, wake: Arc<Notify>) {
    let Some(store) = store_of(&shared).await else {
        return;
    };
    let mut down = shared.engine().shutdown_signal();
    let mut workers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let mut names: Vec<String> = shared
            .snapshot()
            .notify
            .names()
            .map(str::to_string)
            .collect();
        match store.outbox_channels().await {
            Ok(queued) => names.extend(queued),
            Err(e) => tracing::warn!(error = %e, "notification channels not listed; retrying"),
        }
        workers.retain(|_, w| !w.is_finished());
        for name in names {
            if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(name) {
                let name = slot.key().clone();
                slot.insert(tokio::spawn(channel_worker(
                    shared.clone(),
                    store.clone(),
                    wake.clone(),
                    name,
                )));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL * 4) => {}
            _ = down.changed() => {}
        }
        if *down.borrow() {
            return;
        }
    }
}

/// Claims, posts and settles `channel`'s due deliveries until the channel is neither
/// configured nor has anything queued.
async fn channel_worker(
    shared: Arc<Shared>,
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    channel: String,
) {
    let mut down = shared.engine().shutdown_signal();
    loop {
        let channels = shared.snapshot().notify.clone();
        let lease = channels
            .get(&channel)
            .map_or(Duration::from_secs(10), |c| c.cfg.timeout)
            + Duration::from_secs(5);
        let now = shared.engine().now();
        let claimed = match store.outbox_claim(&channel, now, lease, CLAIM_BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "notification claim failed; retrying");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            if channels.get(&channel).is_none() {
                // Removed from the config: its leftovers (dropped as they come due) keep it
                // listed, and the supervisor starts it again then.
                return;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = down.changed() => {}
            }
            if *down.borrow() {
                return;
            }
            continue;
        }
        let mut attempts = tokio::task::JoinSet::new();
        for c in claimed {
            let (shared, store, channels) = (shared.clone(), store.clone(), channels.clone());
            attempts.spawn(async move { attempt(&shared, &*store, &channels, c).await });
        }
        while attempts.join_next().await.is_some() {}
    }
}

/// The wait before attempt `n + 1` after `n` failed ones: 1 s, doubling, at most 5 min.
pub fn backoff(failed: u32) -> Duration {
    let secs = 1u64 << failed.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// One attempt at one delivery, settled and audited.
async fn attempt(shared: &Shared, store: &dyn Store, channels: &Channels, c: Claimed) {
    let d = &c.delivery;
    let number = d.attempts + 1;
    let (outcome, detail, retry_at) = match channels.get(&d.channel) {
        None => (
            "dropped",
            json!({ "error": "the channel is no longer configured" }),
            None,
        ),
        Some(ch) => match post(channels, ch, d).await {
            Ok(status) => ("delivered", json!({ "status": status }), None),
            Err(why) => {
                let now = shared.engine().now();
                let next = now.plus(backoff(number));
                if next >= d.queued_at.plus(ch.cfg.retry_for) {
                    ("gave_up", json!({ "error": why }), None)
                } else {
                    (
                        "failed",
                        json!({ "error": why, "retryAt": next }),
                        Some(next),
                    )
                }
            }
        },
    };
    shared.engine().metrics().notification(&d.channel, outcome);
    match store.outbox_settle(&c, retry_at).await {
        Ok(true) => {}
        Ok(false) => {
            // The lease ran out mid-attempt and another replica has it now; it records its
            // own attempt.
            tracing::warn!(delivery = %d.id, "notification claim lost before it was settled");
            return;
        }
        Err(e) => {
            // Unsettled: the lease ends and the delivery is claimed again.
            tracing::warn!(delivery = %d.id, error = %e, "notification not settled; it will be retried");
        }
    }
    match outcome {
        "delivered" => {
            tracing::debug!(delivery = %d.id, attempt = number, "notification delivered")
        }
        "failed" => {
            tracing::info!(delivery = %d.id, attempt = number, %detail, "notification failed; will retry")
        }
        _ => {
            tracing::warn!(delivery = %d.id, attempt = number, outcome, %detail, "notification not delivered")
        }
    }
    let mut detail = detail;
    detail["channel"] = json!(d.channel);
    detail["attempt"] = json!(number);
    detail["outcome"] = json!(outcome);
    detail["event"] = json!(d.seq);
    detail["webhookId"] = json!(webhook_id(d));
    let draft = AuditDraft {
        at: shared.engine().now(),
        kind: AuditKind::TicketNotified,
        ticket: d.ticket.clone(),
        route: d.route.clone(),
        actor: None,
        requester: None,
        detail,
    };
    if let Err(e) = store.append_audit(draft).await {
        tracing::warn!(delivery = %d.id, error = %e, "notification attempt not audited");
    }
}

/// The `webhook-id` of a delivery: the event's message id, the same on every channel.
fn webhook_id(d: &Delivery) -> &str {
    d.id.split_once('.').map_or(d.id.as_str(), |(m, _)| m)
}

/// Standard Webhooks: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let signed = format!("{id}.{timestamp}.{body}");
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// Posts one delivery; `Ok(status)` on a 2xx answer.
async fn post(channels: &Channels, ch: &Channel, d: &Delivery) -> Result<u16, String> {
    let mut req = Request::post(ch.cfg.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("jitgate/", env!("CARGO_PKG_VERSION")),
        );
    if ch.cfg.kind == NotifyKind::Webhook {
        let key = ch.webhook_key.as_deref().ok_or("no webhook secret")?;
        let id = webhook_id(d);
        let ts = Timestamp(wall_ms()).as_millis() / 1000;
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(key, id, ts, &d.payload));
    }
    let req = req
        .body(Full::new(Bytes::from(d.payload.clone())))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ch.cfg.timeout, channels.client.request(req)).await {
        Err(_) => Err(format!("no answer within {:?}", ch.cfg.timeout)),
        Ok(Err(e)) => Err(crate::upstream::describe(&e)),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(resp.status().as_u16()),
        Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
    }
}

/// Wall-clock milliseconds (signatures carry real time whatever clock approvals use).
fn wall_ms() -> u64 {
    jitgate_store::now().as_millis()
}
