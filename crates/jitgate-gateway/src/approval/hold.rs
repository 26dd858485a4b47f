//! Holding a request while its ticket is pending.

use std::time::Duration;

use jitgate_rules::ticket::{Status, Ticket, TicketId, Timestamp};
use jitgate_store::StoreError;

use crate::context::Exchange;
use crate::engine::HoldGuard;
use crate::error::GatewayError;

/// Waits for a decision on pending ticket `id` (expiring at `expires_at`) until `hold_for`
/// passes; returns the ticket as decided, or still pending at the deadline. Only the id and
/// expiry are kept while waiting (thousands of requests may be held at once, so no ticket is
/// alive across a wait: it is read again when woken). `guard` is the caller's hold on the
/// ticket: its wake-up is what a decision signals, and it decides what a client going away
/// means (see [`crate::engine::HoldGuard`]).
pub(super) async fn wait(
    x: &Exchange<'_>,
    id: TicketId,
    mut expires_at: Timestamp,
    hold_for: Duration,
    guard: &HoldGuard,
) -> Result<Ticket, GatewayError> {
    let engine = x.engine();
    let store = engine
        .store()
        .map_err(|_| GatewayError::StoreUnavailable {
            ticket: Some(id.clone()),
        })?
        .clone();
    let deadline = tokio::time::Instant::now() + hold_for;
    let notify = guard.notify();
    let mut shutdown = engine.shutdown_signal();
    let unavailable = |e: StoreError, id| {
        tracing::warn!(ticket = %id, "store unavailable while holding: {e}");
        GatewayError::StoreUnavailable { ticket: Some(id) }
    };
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before reading, so a decision between the read and the wait wakes us.
        notified.as_mut().enable();
        let now = engine.now();
        if now >= expires_at {
            if let Some(expired) = engine.expire(&id, now).await {
                return Ok(expired);
            }
        }
        let until_expiry = Duration::from_millis(expires_at.0.saturating_sub(now.0));
        let wake = deadline.min(tokio::time::Instant::now() + until_expiry);
        let stopping = tokio::select! {
            () = &mut notified => false,
            () = tokio::time::sleep_until(wake) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stopping {
            return Err(GatewayError::ShuttingDown { ticket: id });
        }
        let read = store.get(&id).await;
        let past = tokio::time::Instant::now() >= deadline;
        match read {
            Ok(Some(t)) if past || t.status != Status::Pending => {
                return Ok(t);
            }
            Ok(Some(t)) => expires_at = t.expires_at,
            Ok(None) => {
                return Err(unavailable(StoreError::NotFound, id));
            }
            Err(e) => {
                return Err(unavailable(e, id));
            }
        }
    }
}
