//! `GET /v1/events`: the ticket and grant events a caller may see, as server-sent events.
//!
//! One task per replica tails the audit trail (woken by the store's append announcements,
//! so events from every replica arrive) and publishes what channels would be told to the
//! connected streams; each stream keeps what its caller may see. An event's SSE `id` is its
//! audit `seq`: a client that reconnects with `Last-Event-ID` is sent what it missed from
//! the store before the live events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::{broadcast, mpsc, watch};

use jitgate_store::Store;

use crate::body::ProxyBody;
use crate::contract::EventData;
use crate::notify::Told;
use crate::state::{Shared, Snapshot};

/// Events kept for slow streams before they lag (and are closed, to resume by id).
const BACKLOG: usize = 1024;
/// The most events replayed for a `Last-Event-ID`.
const MAX_REPLAY: usize = 1000;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a stream's credential is checked again even when the rule table has not
/// changed (a JWT's expiry); at the latest at the next event or keep-alive after that.
const RECHECK: Duration = Duration::from_secs(5);

/// The replica's event fan-out to streams.
pub struct Hub {
    tx: broadcast::Sender<Arc<Told>>,
    /// Bumped when the trail was found to have restarted lower (a store that lost its data):
    /// open streams end, so clients reconnect onto the new numbering.
    restarted: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
            restarted: watch::channel(0).0,
        }
    }
}

impl Hub {
    /// Starts tailing the trail for `shared`'s hub; ends at shutdown.
    pub fn start(shared: Arc<Shared>) {
        tokio::spawn(tail(shared));
    }
}

async fn tail(shared: Arc<Shared>) {
    let Some(store) = crate::notify::deliver::store_of(&shared).await else {
        return;
    };
    let mut down = shared.engine().shutdown_signal();
    let mut seq = store.audit_seq();
    // The newest event read, by number and hash: a trail that restarted (a store that lost
    // its data: a restart without persistence, a failover to a lagging replica) shows as a
    // head below it or beside it, or as events that do not chain onto it.
    let (mut last, mut last_hash) = loop {
        match store.audit_head().await {
            Ok(h) => break h,
            Err(_) => tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = down.changed() => return,
            },
        }
    };
    let hub = &shared.hub;
    loop {
        match store.audit_after(last, 256).await {
            Ok(events) if !events.is_empty() => {
                if events[0].seq == last + 1 && events[0].prev != last_hash {
                    restart(hub, &mut last, &mut last_hash);
                    continue;
                }
                for e in &events {
                    last = e.seq;
                    last_hash.clone_from(&e.hash);
                    // Nobody listening: skip loading what nobody reads.
                    if hub.tx.receiver_count() == 0 {
                        continue;
                    }
                    if let Some(told) = Told::load(&*store, e).await {
                        let _ = hub.tx.send(Arc::new(told));
                    }
                }
                continue;
            }
            Ok(_) => {
                if let Ok((head, hash)) = store.audit_head().await {
                    if head < last || (head == last && hash != last_hash) {
                        restart(hub, &mut last, &mut last_hash);
                        continue;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "event stream tail failed; retrying"),
        }
        tokio::select! {
            _ = seq.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = down.changed() => {}
        }
        if *down.borrow() {
            return;
        }
    }
}

/// The trail restarted: read it from its start, and end the open streams so their clients
/// reconnect onto the new numbering.
fn restart(hub: &Hub, last: &mut u64, last_hash: &mut String) {
    tracing::warn!(
        last = *last,
        "the audit trail restarted (the store lost its data); event streams start over"
    );
    *last = 0;
    *last_hash = jitgate_rules::ticket::GENESIS.to_string();
    hub.restarted.send_modify(|n| *n += 1);
}

/// One `text/event-stream` frame.
fn frame(told: &Told) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        told.seq,
        told.kind,
        told.body_json()
    ))
}

/// What a stream's caller may see, judged again when the rule table changes and at least
/// every [`RECHECK`]: a stream ends once its credential no longer authenticates.
struct Viewer {
    credential: HeaderMap,
    snap: Arc<Snapshot>,
    checked: Instant,
    sees: crate::admin::Sight,
}

impl Viewer {
    fn new(shared: &Shared, credential: HeaderMap) -> Option<Viewer> {
        let snap = shared.snapshot();
        let sees = crate::admin::viewer(&snap, &credential)?;
        Some(Viewer {
            credential,
            snap,
            checked: Instant::now(),
            sees,
        })
    }

    /// Whether the credential still authenticates (judged again if due).
    fn current(&mut self, shared: &Shared) -> bool {
        let snap = shared.snapshot();
        if Arc::ptr_eq(&snap, &self.snap) && self.checked.elapsed() < RECHECK {
            return true;
        }
        match crate::admin::viewer(&snap, &self.credential) {
            Some(sees) => {
                self.sees = sees;
                self.snap = snap;
                self.checked = Instant::now();
                true
            }
            None => false,
        }
    }

    /// A grant event by the grant (its route's approvers now), any other by its ticket.
    fn shows(&self, t: &Told) -> bool {
        match &t.body.data {
            EventData::Grant(g) => self.sees.grant(g),
            _ => t.ticket.as_ref().is_some_and(|t| self.sees.ticket(t)),
        }
    }
}

/// Serves a stream of the events the holder of `credential` may see, resuming after
/// `last_id`.
pub fn stream(
    shared: &Arc<Shared>,
    last_id: Option<u64>,
    credential: HeaderMap,
) -> Response<ProxyBody> {
    let mut rx = shared.hub.tx.subscribe();
    let mut restarted = shared.hub.restarted.subscribe();
    let (out, body) = mpsc::channel::<Bytes>(16);
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut down = shared.engine().shutdown_signal();
        let Some(mut viewer) = Viewer::new(&shared, credential) else {
            return;
        };
        // Subscribed first, then replayed: nothing falls between the two; live events the
        // replay already sent are skipped by number.
        let mut sent = last_id.unwrap_or(0);
        if out
            .send(Bytes::from_static(b": jitgate events\n\n"))
            .await
            .is_err()
        {
            return;
        }
        if let Some(mut after) = last_id {
            // What the client missed cannot be read: it reconnects and asks again rather
            // than go on without it.
            let Ok(store) = shared.engine().store() else {
                return;
            };
            let store: Arc<dyn Store> = store.clone();
            // An id past the head is from a trail that is gone: all of this one is new.
            let Ok((head, _)) = store.audit_head().await else {
                return;
            };
            if after > head {
                after = 0;
                sent = 0;
            }
            let Ok(events) = store.audit_after(after, MAX_REPLAY).await else {
                return;
            };
            for e in &events {
                if let Some(told) = Told::load(&*store, e).await {
                    if !viewer.current(&shared) {
                        return;
                    }
                    if viewer.shows(&told) && out.send(frame(&told)).await.is_err() {
                        return;
                    }
                }
                sent = e.seq;
            }
            // More behind than one replay: the client is told how far this one got (an `id`
            // alone moves its Last-Event-ID) and resumes from there, so nothing between the
            // replay and the live events is skipped.
            if events.len() >= MAX_REPLAY {
                let _ = out.send(Bytes::from(format!("id: {sent}\n\n"))).await;
                return;
            }
        }
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(told) => {
                        if !viewer.current(&shared) {
                            return;
                        }
                        if told.seq <= sent || !viewer.shows(&told) {
                            continue;
                        }
                        sent = told.seq;
                        if out.send(frame(&told)).await.is_err() {
                            return;
                        }
                    }
                    // Too slow: end the stream; the client resumes with Last-Event-ID.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep(KEEPALIVE) => {
                    if !viewer.current(&shared) {
                        return;
                    }
                    if out.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        return;
                    }
                }
                _ = down.changed() => return,
                _ = restarted.changed() => return,
            }
        }
    });
    let mut resp = Response::new(ProxyBody::Channel(body, None));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
