//! The one body type the gateway answers with: nothing, a buffer, or a stream relayed from
//! the other side with an idle timeout.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use jitgate_rules::{form, Canonical};
use tokio::time::{Instant, Sleep};

use crate::error::GatewayError;
use crate::upstream::Checkin;

/// Errors a relayed body can end with.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The stream went silent for longer than the upstream's `idle_timeout`.
#[derive(Debug)]
pub struct IdleTimeout(pub Duration);

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body idle for more than {:?}", self.0)
    }
}

impl StdError for IdleTimeout {}

/// How a client's request body failed while it was being relayed upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// No byte arrived for this long (the upstream's `idle_timeout`), or the body was still
    /// incomplete, with the gateway waiting for the client, when `response_timeout` ran out.
    Stalled(Duration),
    /// The client's framing was invalid (a chunk size that overflows, a bad chunk line), the
    /// body ended before its `Content-Length`, or the client reset its stream.
    Broken(String),
}

impl fmt::Display for ClientBodyFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientBodyFault::Stalled(t) => write!(f, "the request body stalled for {t:?}"),
            ClientBodyFault::Broken(why) => {
                write!(f, "the request body is malformed or cut short: {why}")
            }
        }
    }
}

/// What the relay of a client's request body observed, shared with the forwarder: when the
/// upstream exchange fails, this says whether the client's body is why, so a client cannot
/// make the gateway report an upstream failure at will.
#[derive(Debug, Default)]
pub struct ClientBody {
    fault: OnceLock<ClientBodyFault>,
    /// The relay is waiting for the client to send more (its last poll was pending).
    waiting: AtomicBool,
}

/// `hyper::Error`'s own text is generic ("error reading a body from connection"); the cause
/// is in its sources.
fn error_chain(err: &hyper::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

impl ClientBody {
    /// Why the exchange failed if the client is to blame: the fault the relay recorded, or,
    /// when the response timeout ran out (`timed_out`) while the relay was still waiting for
    /// the client's body, a stall. `None` when the client is not to blame.
    pub fn fault(&self, timed_out: bool, waited: Duration) -> Option<ClientBodyFault> {
        if let Some(fault) = self.fault.get() {
            return Some(fault.clone());
        }
        (timed_out && self.waiting.load(Ordering::Acquire))
            .then_some(ClientBodyFault::Stalled(waited))
    }

    fn record(&self, fault: ClientBodyFault) {
        let _ = self.fault.set(fault);
    }
}

/// A body the gateway sends, either way.
pub enum ProxyBody {
    /// No body.
    Empty,
    /// A whole buffer (errors, admin answers); `None` once sent.
    Full(Option<Bytes>),
    /// Relayed from the peer, frame by frame, never buffered whole.
    Stream(Relay),
    /// Written by a task as it goes (server-sent events); ends when the task drops its end.
    /// The guard, if any, lives as long as the body (it keeps its connection counted busy).
    Channel(
        tokio::sync::mpsc::Receiver<Bytes>,
        Option<Box<dyn std::any::Any + Send + Sync>>,
    ),
}

impl ProxyBody {
    /// A buffered body.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        let bytes = bytes.into();
        if bytes.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(bytes))
        }
    }

    /// Relays a client's request body `inner`, failing when no frame arrives for `idle`. A
    /// body with content records how it fails (see [`ProxyBody::client_body`]).
    pub fn relay(inner: Incoming, idle: Duration) -> ProxyBody {
        // Only bodies that can fail need the shared record: most requests have none.
        let client = (!inner.is_end_stream()).then(Arc::default);
        ProxyBody::Stream(Relay {
            inner,
            idle,
            last: None,
            sleep: None,
            checkin: None,
            client,
        })
    }

    /// Relays an upstream response body; `checkin` gives the pooled connection back once the
    /// body has ended (and closes it if the body is dropped before its end).
    pub fn relay_pooled(inner: Incoming, idle: Duration, checkin: Option<Checkin>) -> ProxyBody {
        ProxyBody::Stream(Relay {
            inner,
            idle,
            last: None,
            sleep: None,
            checkin,
            client: None,
        })
    }

    /// Keeps `guard` alive while a body written as it goes is being sent; other bodies give
    /// it back.
    pub fn keep_while_streaming<G: std::any::Any + Send + Sync>(&mut self, guard: G) -> Option<G> {
        match self {
            ProxyBody::Channel(_, slot) => {
                *slot = Some(Box::new(guard));
                None
            }
            _ => Some(guard),
        }
    }

    /// What the relay of a client's request body observes, for the forwarder to read when
    /// the upstream exchange fails; `None` for other bodies.
    pub fn client_body(&self) -> Option<Arc<ClientBody>> {
        match self {
            ProxyBody::Stream(relay) => relay.client.clone(),
            ProxyBody::Empty | ProxyBody::Full(_) | ProxyBody::Channel(..) => None,
        }
    }
}

/// A relayed body with an idle timeout. The timer is created lazily, on the first poll that
/// has to wait, so short bodies (nearly all) never touch the timer wheel; on every frame only
/// the activity instant is updated and the timer is re-armed when it fires early.
pub struct Relay {
    inner: Incoming,
    idle: Duration,
    last: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    checkin: Option<Checkin>,
    /// Set on a client's request body: where its failures are recorded.
    client: Option<Arc<ClientBody>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A body that was empty from the start is never polled; it ended all the same.
        if self.inner.is_end_stream() {
            if let Some(checkin) = self.checkin.take() {
                checkin.done();
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(relay) => relay.poll_frame(cx),
            ProxyBody::Channel(rx, _) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Stream(relay) => relay.inner.is_end_stream(),
            ProxyBody::Channel(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Stream(relay) => relay.inner.size_hint(),
            ProxyBody::Channel(..) => SizeHint::default(),
        }
    }
}

impl Relay {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if self.sleep.is_some() {
                    self.last = Some(Instant::now());
                }
                if let Some(client) = &self.client {
                    client.waiting.store(false, Ordering::Release);
                    if let Some(Err(e)) = &frame {
                        client.record(ClientBodyFault::Broken(error_chain(e)));
                    }
                }
                if frame.is_none() {
                    if let Some(checkin) = self.checkin.take() {
                        checkin.done();
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                if let Some(client) = &self.client {
                    client.waiting.store(true, Ordering::Release);
                }
                let idle = self.idle;
                let now = Instant::now();
                let last = *self.last.get_or_insert(now);
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last + idle)));
                loop {
                    match sleep.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let deadline = self.last.unwrap_or(now) + idle;
                            if deadline <= Instant::now() {
                                if let Some(client) = &self.client {
                                    client.record(ClientBodyFault::Stalled(idle));
                                }
                                return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
                            }
                            sleep.as_mut().reset(deadline);
                        }
                    }
                }
            }
        }
    }
}

// === request bodies the gateway reads ===

/// A request body: still streaming from the client, or read whole (a held request, or a form
/// whose `_method` had to be looked at).
pub enum RequestBody {
    /// Not read yet.
    Stream(Incoming),
    /// Read whole.
    Buffered(Bytes),
}

impl RequestBody {
    /// The whole body, reading it if needed: at most `limit` bytes (413 beyond), failing when
    /// the client sends nothing for `idle` (408). Reading it is when a POST's `_method` fields
    /// ([`form::body_method_overrides`]) join `canonical`'s method readings (400 when they
    /// cannot be read): a body is read once, so its readings are added once.
    pub async fn read(
        self,
        canonical: &mut Canonical,
        limit: u64,
        idle: Duration,
    ) -> Result<Bytes, GatewayError> {
        let body = match self {
            RequestBody::Buffered(b) => return Ok(b),
            RequestBody::Stream(body) => {
                read_to_limit(canonical.headers(), body, limit, idle).await?
            }
        };
        if form::may_carry_override(canonical.method()) {
            let found = form::body_method_overrides(&body)
                .map_err(|e| GatewayError::Malformed(e.to_string()))?;
            canonical.add_method_readings(found);
        }
        Ok(body)
    }

    /// The body to forward: relayed with the upstream's idle timeout, or replayed.
    pub fn into_proxy(self, idle: Duration) -> ProxyBody {
        match self {
            RequestBody::Stream(body) => ProxyBody::relay(body, idle),
            RequestBody::Buffered(b) => ProxyBody::full(b),
        }
    }
}

/// Reads a request body whole, refusing more than `limit` bytes (413) and a body that stalls
/// for `idle` (408).
async fn read_to_limit(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
    use http_body_util::BodyExt as _;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(GatewayError::BodyStalled(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(GatewayError::Malformed(format!(
                    "the request body could not be read: {e}"
                )))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(GatewayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}
