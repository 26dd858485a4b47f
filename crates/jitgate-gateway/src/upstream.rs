//! Pooled clients for the configured upstreams, one per `[[upstreams]]` entry.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use jitgate_rules::config::{Upstream, UpstreamProtocol};

use crate::body::{ClientBody, ProxyBody};
use crate::error::GatewayError;
use crate::tls::{self, TlsError};

/// A pooled client for one upstream, kept across reloads while its definition is unchanged.
pub struct UpstreamClient {
    /// The definition it was built from.
    pub def: Upstream,
    /// The pooled client for `https://` and HTTP/2 upstreams.
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    /// The lean HTTP/1.1 pool for plain `http://` upstreams that do not ask for h2.
    h1: Option<Arc<H1Pool>>,
    /// `jitgate_upstream_duration_seconds{upstream}`, resolved on first use.
    duration: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
}

impl UpstreamClient {
    /// Builds the connector and pool for `def`.
    pub fn build(def: &Upstream) -> Result<Arc<UpstreamClient>, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(def.connect_timeout));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));

        let tls = tls::client_config(def.ca_file.as_deref())?;
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = match def.protocol {
            UpstreamProtocol::Auto => builder.enable_http1().enable_http2().wrap_connector(http),
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
            UpstreamProtocol::H2 => builder.enable_http2().wrap_connector(http),
        };

        let mut client = Client::builder(TokioExecutor::new());
        client
            .pool_idle_timeout(def.pool_idle_timeout)
            .pool_max_idle_per_host(def.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // The request head is written as the canonical view; we set Host ourselves.
            .set_host(false)
            .http2_only(def.protocol == UpstreamProtocol::H2);
        Ok(Arc::new(UpstreamClient {
            def: def.clone(),
            client: client.build(connector),
            h1: H1Pool::for_upstream(def).map(Arc::new),
            duration: std::sync::OnceLock::new(),
        }))
    }

    /// Its `jitgate_upstream_duration_seconds` series in `metrics`.
    pub fn duration(
        &self,
        metrics: &crate::metrics::Metrics,
    ) -> &prometheus_client::metrics::histogram::Histogram {
        self.duration
            .get_or_init(|| metrics.upstream(&self.def.name))
    }

    /// Whether requests go through the HTTP/1.1 pool, which writes the origin-form target
    /// (the legacy client takes the absolute URI and writes its path itself).
    pub fn origin_form(&self) -> bool {
        self.h1.is_some()
    }

    /// Sends one request. With the HTTP/1.1 pool, the returned [`Checkin`] gives the
    /// connection back once the response body has been read to its end.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendError> {
        match &self.h1 {
            Some(pool) => pool.send(req).await,
            None => match self.client.request(req).await {
                Ok(resp) => Ok((resp, None)),
                Err(e) => Err(SendError::Legacy(e)),
            },
        }
    }
}

/// A pool of HTTP/1.1 connections to one `http://` upstream: each connection is driven by its
/// own task, spawned once, and an idle connection is just its `SendRequest` in a short
/// mutex-guarded stack (most recently used first). No per-request task, channel hop or
/// background "on idle" future: the connection comes back when the relayed response body
/// ends.
///
/// Each data-plane event loop has a stack of its own (`pool_max_idle` is split between
/// them): a connection's task runs on the loop that opened it, and only that loop's
/// requests use it, so an exchange never wakes another thread.
pub struct H1Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Per stack.
    max_idle: usize,
    /// Stack 0 serves threads that are not data-plane event loops.
    idle: Box<[Mutex<Vec<IdleConn>>]>,
    reaper: AtomicBool,
}

struct IdleConn {
    tx: SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection lent to one exchange; give it back with [`Checkin::done`] once the response
/// body has ended. Dropping it instead closes the connection after the exchange.
pub struct Checkin {
    pool: Arc<H1Pool>,
    tx: SendRequest<ProxyBody>,
}

impl Checkin {
    /// The response body ended cleanly: the connection may serve another request.
    pub fn done(self) {
        self.pool.checkin(self.tx);
    }
}

impl H1Pool {
    fn for_upstream(def: &Upstream) -> Option<H1Pool> {
        if def.url.scheme_str() != Some("http") || def.protocol == UpstreamProtocol::H2 {
            return None;
        }
        let host = def.url.host()?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let loops = crate::server::data_loops();
        Some(H1Pool {
            host: host.to_owned(),
            port: def.url.port_u16().unwrap_or(80),
            connect_timeout: def.connect_timeout,
            idle_timeout: def.pool_idle_timeout,
            max_idle: def.pool_max_idle.div_ceil(loops),
            idle: (0..=loops).map(|_| Mutex::new(Vec::new())).collect(),
            reaper: AtomicBool::new(false),
        })
    }

    /// The calling thread's idle stack.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        let slot = crate::server::data_loop_slot() % self.idle.len();
        self.idle[slot].lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendError> {
        let mut retried = false;
        loop {
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let checkin = Checkin {
                        pool: self.clone(),
                        tx,
                    };
                    return Ok((resp, Some(checkin)));
                }
                Err(mut e) => match e.take_message() {
                    // The pooled connection was closed before the request was written:
                    // retry once, as the legacy client's `retry_canceled_requests` does.
                    Some(again) if reused && !retried => {
                        retried = true;
                        req = again;
                    }
                    _ => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is ready for a request. Closed and expired
    /// ones are dropped; one still finishing its previous exchange stays for later.
    fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        let now = Instant::now();
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.idle();
            let mut found = None;
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                let conn = &idle[i];
                if conn.tx.is_closed() || now.duration_since(conn.since) > self.idle_timeout {
                    dead.push(idle.swap_remove(i));
                } else if conn.tx.is_ready() {
                    found = Some(idle.swap_remove(i).tx);
                    break;
                }
            }
            found
        };
        drop(dead);
        found
    }

    fn checkin(self: &Arc<Self>, tx: SendRequest<ProxyBody>) {
        if tx.is_closed() {
            return;
        }
        let rejected = {
            let mut idle = self.idle();
            if idle.len() < self.max_idle {
                idle.push(IdleConn {
                    tx,
                    since: Instant::now(),
                });
                None
            } else {
                Some(tx)
            }
        };
        drop(rejected);
        if !self.reaper.load(Ordering::Relaxed) && !self.reaper.swap(true, Ordering::Relaxed) {
            self.spawn_reaper();
        }
    }

    /// Closes connections idle for longer than `pool_idle_timeout`, even without traffic.
    fn spawn_reaper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaper.store(false, Ordering::Relaxed);
            return;
        };
        let pool: Weak<H1Pool> = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(100));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                for stack in &pool.idle {
                    let dead: Vec<IdleConn> = {
                        let mut idle = stack.lock().unwrap_or_else(|p| p.into_inner());
                        let (keep, dead) = std::mem::take(&mut *idle).into_iter().partition(|c| {
                            !c.tx.is_closed() && now.duration_since(c.since) <= pool.idle_timeout
                        });
                        *idle = keep;
                        dead
                    };
                    drop(dead);
                }
            }
        });
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, SendError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(SendError::ConnectTimeout(self.connect_timeout)),
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            // Driven with upgrades, so a 101 hands the stream to `hyper::upgrade::on`.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(tx)
    }
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// From the legacy client (`https://` and HTTP/2 upstreams).
    Legacy(hyper_util::client::legacy::Error),
    /// TCP connect failed.
    Connect(io::Error),
    /// TCP connect took longer than this.
    ConnectTimeout(Duration),
    /// The HTTP/1.1 handshake failed.
    Handshake(hyper::Error),
    /// The exchange failed after connecting.
    Exchange(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Legacy(e) => fmt::Display::fmt(e, f),
            SendError::Connect(_) => f.write_str("client error (Connect)"),
            SendError::ConnectTimeout(t) => write!(f, "connect timed out after {t:?}"),
            SendError::Handshake(_) => f.write_str("client error (Connect)"),
            SendError::Exchange(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::Legacy(e) => e.source(),
            SendError::Connect(e) => Some(e),
            SendError::ConnectTimeout(_) => None,
            SendError::Handshake(e) => Some(e),
            SendError::Exchange(e) => e.source(),
        }
    }
}

impl SendError {
    /// 502 or 504.
    pub fn failure(&self) -> Failure {
        match self {
            SendError::Legacy(e) => classify(e),
            SendError::Connect(_) | SendError::Handshake(_) => Failure::Connect,
            SendError::ConnectTimeout(_) => Failure::ConnectTimeout,
            SendError::Exchange(_) => Failure::Exchange,
        }
    }
}

/// The answer when an exchange with `def` failed (`timed_out`: no response head within
/// `response_timeout`) because the client's request body did: 408 when it stalled, 400 when
/// it was malformed or cut short, logged as a client fault. `None` when the client is not to
/// blame, and the failure is the upstream's (502 or 504).
pub fn client_fault(
    body: Option<&ClientBody>,
    def: &Upstream,
    timed_out: bool,
) -> Option<GatewayError> {
    let fault = body?.fault(timed_out, def.response_timeout)?;
    tracing::info!(upstream = %def.name, "client fault: {fault}; not an upstream failure");
    Some(GatewayError::ClientBody(fault))
}

/// How an upstream exchange failed, for choosing 502 or 504.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect (refused, unreachable, TLS failure): 502.
    Connect,
    /// Connecting took longer than `connect_timeout`: 504.
    ConnectTimeout,
    /// The connection broke during the exchange: 502.
    Exchange,
}

/// Classifies a client error.
pub fn classify(err: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    let mut timed_out = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                timed_out = true;
            }
        }
        if e.to_string().contains("timed out") {
            timed_out = true;
        }
        source = e.source();
    }
    if err.is_connect() {
        if timed_out {
            Failure::ConnectTimeout
        } else {
            Failure::Connect
        }
    } else {
        Failure::Exchange
    }
}

/// The full error chain in one line, for logs and problem details.
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
