//! A recording origin server for end-to-end tests.
//!
//! It speaks HTTP/1.1 and h2c (prior knowledge) on one port, optionally TLS with ALPN h2 and
//! http/1.1, records every request it receives (bodies are hashed while streaming, never held),
//! and behaves according to the request so tests can exercise the gateway.
//!
//! Behaviour is chosen by the `x-origin-behavior` request header if present, otherwise by the
//! path prefix. Both use the same grammar (the header without the leading slash):
//!
//! | path / header value   | answer |
//! |-----------------------|--------|
//! | `/echo`               | 200, the request body streamed back (content-type copied) |
//! | `/status/{code}`      | `{code}` with a short text body (none for 204/304) |
//! | `/slow-headers/{ms}`  | waits `ms` after reading the body, then 200 |
//! | `/slow-body/{ms}`     | 200 head and `partial-` at once, then `rest` after `ms` |
//! | `/large/{bytes}`      | 200 with `bytes` bytes of [`large_body_chunk`] pattern, Content-Length set |
//! | `/ws`                 | WebSocket upgrade (HTTP/1.1), then frame echo (see [`super::ws::echo`]) |
//! | `/grpc`               | `application/grpc`, request body echoed, trailers `grpc-status: 0`, `grpc-message: ok` |
//! | anything else         | 200 JSON describing what was received (see [`Recorded::to_json`]) |
//!
//! Every response carries `x-origin-seq: <n>` (index into [`Origin::requests`]). Each
//! `x-origin-set-header: name: value` request header adds that header to the response.
//!
//! The server runs on its own thread and runtime, so it keeps serving while a test blocks or
//! while the test's own runtime is busy; dropping the [`Origin`] stops it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::tls::TestPki;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request header that selects a behaviour regardless of the path.
pub const BEHAVIOR_HEADER: &str = "x-origin-behavior";

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival order, from 0.
    pub seq: usize,
    /// Connection number, from 0: equal values mean the requests shared a connection.
    pub conn: usize,
    pub peer: SocketAddr,
    pub tls: bool,
    /// Negotiated ALPN protocol on TLS connections.
    pub alpn: Option<String>,
    pub method: String,
    /// `req.uri().to_string()`: for HTTP/1.1 the request-target as received (origin-form,
    /// unnormalised); for HTTP/2 the URI rebuilt from `:scheme`, `:authority` and `:path`.
    pub target: String,
    /// The URI's path and query (what `:path` carried for HTTP/2).
    pub path_and_query: Option<String>,
    pub version: Version,
    /// Header names (lowercase, as hyper normalises them) and raw values, in `HeaderMap` order:
    /// first-appearance order of names, repeated values of one name grouped. For byte-exact
    /// heads use [`super::raw_origin::RawOrigin`].
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes received so far; final once `body_done`.
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the body; set once `body_done`.
    pub body_sha256: String,
    pub body_done: bool,
    /// Why the body ended early (client reset, connection closed, not read to the end).
    pub body_error: Option<String>,
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl Recorded {
    /// First value of header `name` (case-insensitive), as bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// First value of header `name` as UTF-8 (lossy).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// All values of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Path component of the URI.
    pub fn path(&self) -> &str {
        let pq = self.path_and_query.as_deref().unwrap_or("");
        pq.split_once('?').map_or(pq, |(p, _)| p)
    }

    /// The JSON the default behaviour answers with.
    pub fn to_json(&self) -> serde_json::Value {
        let pairs = |v: &[(String, Vec<u8>)]| {
            v.iter()
                .map(|(k, v)| serde_json::json!([k, String::from_utf8_lossy(v)]))
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "seq": self.seq,
            "method": self.method,
            "target": self.target,
            "pathAndQuery": self.path_and_query,
            "version": format!("{:?}", self.version),
            "headers": pairs(&self.headers),
            "bodyLen": self.body_len,
            "bodySha256": self.body_sha256,
            "trailers": pairs(&self.trailers),
            "tls": self.tls,
        })
    }
}

/// Lowercase hex SHA-256 of `data`, to compare with [`Recorded::body_sha256`].
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `/large/{n}` sends at `offset..offset+len`: `(i % 251)` so a reordering or a
/// dropped chunk changes the hash.
pub fn large_body_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

/// SHA-256 hex of the `/large/{n}` body, computed in chunks.
pub fn large_body_sha256(n: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(64 * 1024);
        h.update(large_body_chunk(off, len as usize));
        off += len;
    }
    hex(&h.finalize())
}

fn header_pairs(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

// === impl State ===

struct State {
    requests: Mutex<Vec<Recorded>>,
    /// Bumped on every change so waiters re-check.
    changed: watch::Sender<u64>,
    conns: AtomicUsize,
}

impl State {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn update(&self, seq: usize, f: impl FnOnce(&mut Recorded)) {
        {
            let mut reqs = self.requests.lock().expect("origin state lock");
            if let Some(r) = reqs.get_mut(seq) {
                f(r);
            }
        }
        self.notify();
    }
}

#[derive(Clone)]
struct ConnCtx {
    state: Arc<State>,
    conn: usize,
    peer: SocketAddr,
    tls: bool,
    alpn: Option<String>,
}

// === impl Origin ===

/// A running recording origin.
pub struct Origin {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Origin {
    /// Plain TCP: HTTP/1.1 and h2c (prior knowledge) on 127.0.0.1:0.
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// TLS with ALPN h2 and http/1.1, certificate for `localhost` and `127.0.0.1` issued by `pki`.
    pub fn start_tls(pki: &TestPki) -> Self {
        let cert = pki.issue_server(&["localhost", "127.0.0.1"]);
        let config = pki.server_config(&cert, &[b"h2", b"http/1.1"]);
        Self::spawn(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn spawn(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("origin addr");
        let (changed, _) = watch::channel(0);
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            changed,
            conns: AtomicUsize::new(0),
        });
        let (tx, rx) = oneshot::channel();
        let is_tls = tls.is_some();
        let st = state.clone();
        std::thread::Builder::new()
            .name(format!("origin-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("origin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, tls, st) => {}
                        _ = rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .expect("spawn origin thread");
        Self {
            addr,
            tls: is_tls,
            state,
            shutdown: Some(tx),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`: the shape of an `[[upstreams]] url`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Snapshot of everything recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .expect("origin state lock")
            .clone()
    }

    /// Number of request heads received (bodies may still be streaming).
    pub fn count(&self) -> usize {
        self.state.requests.lock().expect("origin state lock").len()
    }

    /// Number of connections accepted.
    pub fn connections(&self) -> usize {
        self.state.conns.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived and the first `n` have finished their
    /// bodies; returns the snapshot. Panics after `timeout` with what was recorded.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut rx = self.state.changed.subscribe();
        let done = |reqs: &[Recorded]| reqs.len() >= n && reqs.iter().take(n).all(|r| r.body_done);
        let wait = async {
            loop {
                let snapshot = self.requests();
                if done(&snapshot) {
                    return snapshot;
                }
                if rx.changed().await.is_err() {
                    return self.requests();
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(reqs) => reqs,
            Err(_) => panic!(
                "origin: waited {timeout:?} for {n} complete requests, have {:#?}",
                self.requests()
            ),
        }
    }

    /// Asserts that no further request arrives within `window` (count stays at its current
    /// value). For "the upstream never saw it" checks after the gateway has answered.
    pub async fn assert_no_new_requests(&self, window: Duration) {
        let before = self.count();
        let mut rx = self.state.changed.subscribe();
        let _ = tokio::time::timeout(window, async {
            while rx.changed().await.is_ok() {
                if self.count() != before {
                    return;
                }
            }
        })
        .await;
        let after = self.requests();
        assert_eq!(
            after.len(),
            before,
            "origin received unexpected requests: {:#?}",
            &after[before..]
        );
    }

    /// Forgets everything recorded (sequence numbers restart at 0).
    pub fn clear(&self) {
        self.state
            .requests
            .lock()
            .expect("origin state lock")
            .clear();
        self.state.notify();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = state.conns.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut ctx = ConnCtx {
                state,
                conn,
                peer,
                tls: tls.is_some(),
                alpn: None,
            };
            match tls {
                None => serve(TokioIo::new(stream), ctx).await,
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    ctx.alpn = stream
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    serve(TokioIo::new(stream), ctx).await
                }
            }
        });
    }
}

async fn serve<I>(io: I, ctx: ConnCtx)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, ctx.clone()));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}

// === behaviours ===

enum Behavior {
    Echo,
    Status(u16),
    SlowHeaders(u64),
    SlowBody(u64),
    Large(u64),
    Ws,
    Grpc,
    Describe,
}

impl Behavior {
    fn select(req: &Request<Incoming>) -> Self {
        let spec = match req.headers().get(BEHAVIOR_HEADER) {
            Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            None => req.uri().path().trim_start_matches('/').to_string(),
        };
        let mut parts = spec.splitn(3, '/');
        let name = parts.next().unwrap_or("");
        let arg = parts.next().and_then(|a| a.parse::<u64>().ok());
        match (name, arg) {
            ("echo", _) => Self::Echo,
            ("status", Some(code)) => Self::Status(u16::try_from(code).unwrap_or(0)),
            ("slow-headers", Some(ms)) => Self::SlowHeaders(ms),
            ("slow-body", Some(ms)) => Self::SlowBody(ms),
            ("large", Some(n)) => Self::Large(n),
            ("ws", _) => Self::Ws,
            ("grpc", _) => Self::Grpc,
            _ => Self::Describe,
        }
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

async fn handle(
    mut req: Request<Incoming>,
    ctx: ConnCtx,
) -> Result<Response<RespBody>, Infallible> {
    let behavior = Behavior::select(&req);
    let seq = {
        let mut reqs = ctx.state.requests.lock().expect("origin state lock");
        let seq = reqs.len();
        reqs.push(Recorded {
            seq,
            conn: ctx.conn,
            peer: ctx.peer,
            tls: ctx.tls,
            alpn: ctx.alpn.clone(),
            method: req.method().to_string(),
            target: req.uri().to_string(),
            path_and_query: req.uri().path_and_query().map(|pq| pq.to_string()),
            version: req.version(),
            headers: header_pairs(req.headers()),
            body_len: 0,
            body_sha256: String::new(),
            body_done: false,
            body_error: None,
            trailers: Vec::new(),
        });
        seq
    };
    ctx.state.notify();
    let extra_headers: Vec<(String, String)> = req
        .headers()
        .get_all("x-origin-set-header")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let on_upgrade = matches!(behavior, Behavior::Ws).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut tap = Tap::new(body, ctx.state.clone(), seq);

    let mut resp = match behavior {
        Behavior::Echo => {
            let mut resp = Response::new(tap.map_err(BoxError::from).boxed_unsync());
            if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
                resp.headers_mut()
                    .insert(http::header::CONTENT_TYPE, ct.clone());
            }
            resp
        }
        Behavior::Grpc => {
            let (tx, body) = ChannelBody::new();
            tokio::spawn(async move {
                while let Some(frame) = tap.frame().await {
                    let Ok(frame) = frame else { return };
                    if let Ok(data) = frame.into_data() {
                        if tx.send(Ok(Frame::data(data))).await.is_err() {
                            return;
                        }
                    }
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            });
            let mut resp = Response::new(body.boxed_unsync());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Behavior::Ws => {
            tap.drain().await;
            websocket(&parts, on_upgrade)
        }
        other => {
            tap.drain().await;
            respond(other, &ctx.state, seq).await
        }
    };
    if let Ok(v) = HeaderValue::from_str(&seq.to_string()) {
        resp.headers_mut().insert("x-origin-seq", v);
    }
    for (k, v) in extra_headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    Ok(resp)
}

async fn respond(behavior: Behavior, state: &Arc<State>, seq: usize) -> Response<RespBody> {
    match behavior {
        Behavior::Status(code) => match StatusCode::from_u16(code) {
            Ok(status) if !status.is_informational() => {
                let body = if matches!(code, 204 | 304) {
                    full(Bytes::new())
                } else {
                    full(format!("status {code}\n"))
                };
                let mut resp = Response::new(body);
                *resp.status_mut() = status;
                resp
            }
            _ => {
                let mut resp = Response::new(full("bad status code\n"));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                resp
            }
        },
        Behavior::SlowHeaders(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow headers\n"))
        }
        Behavior::SlowBody(ms) => {
            let (tx, body) = ChannelBody::new();
            tokio::spawn(async move {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"partial-"))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"rest")))).await;
            });
            Response::new(body.boxed_unsync())
        }
        Behavior::Large(n) => Response::new(LargeBody { sent: 0, total: n }.boxed_unsync()),
        _ => {
            let recorded = state
                .requests
                .lock()
                .expect("origin state lock")
                .get(seq)
                .cloned();
            let json = recorded.map(|r| r.to_json()).unwrap_or_default();
            let mut resp = Response::new(full(json.to_string()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
    }
}

fn websocket(
    parts: &http::request::Parts,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let upgrade_ok = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = parts
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok());
    let (Some(key), true, Some(on_upgrade)) = (key, upgrade_ok, on_upgrade) else {
        let mut resp = Response::new(full("websocket upgrade required\n"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = super::ws::accept_key(key);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let _ = super::ws::echo(TokioIo::new(upgraded)).await;
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

// === impl Tap ===

/// Wraps the request body: hashes and counts data, keeps trailers, and records the outcome in
/// the origin state when the body ends, fails, or is dropped unfinished.
struct Tap {
    inner: Incoming,
    hasher: Option<Sha256>,
    len: u64,
    trailers: Vec<(String, Vec<u8>)>,
    state: Arc<State>,
    seq: usize,
}

impl Tap {
    fn new(inner: Incoming, state: Arc<State>, seq: usize) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            len: 0,
            trailers: Vec::new(),
            state,
            seq,
        }
    }

    async fn drain(&mut self) {
        while let Some(frame) = self.frame().await {
            if frame.is_err() {
                break;
            }
        }
    }

    fn finish(&mut self, error: Option<String>) {
        let Some(hasher) = self.hasher.take() else {
            return;
        };
        let sha = hex(&hasher.finalize());
        let len = self.len;
        let trailers = std::mem::take(&mut self.trailers);
        self.state.update(self.seq, |r| {
            r.body_len = len;
            r.body_sha256 = sha;
            r.body_done = true;
            r.body_error = error;
            r.trailers = trailers;
        });
    }
}

impl Body for Tap {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.len += data.len() as u64;
                    if let Some(h) = this.hasher.as_mut() {
                        h.update(data);
                    }
                    let len = this.len;
                    let seq = this.seq;
                    this.state.update(seq, |r| r.body_len = len);
                } else if let Some(t) = frame.trailers_ref() {
                    this.trailers.extend(header_pairs(t));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    // Never claim the end early: the final `None` is what records the body as done.
    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if self.hasher.is_some() {
            let err = if self.inner.is_end_stream() {
                None
            } else {
                Some("body dropped before its end".to_string())
            };
            self.finish(err);
        }
    }
}

// === bodies ===

/// A body fed from a channel, for responses produced over time.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl ChannelBody {
    fn new() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// `/large/{n}`: generated in 64 KiB chunks, never held whole.
struct LargeBody {
    sent: u64,
    total: u64,
}

impl Body for LargeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let len = (self.total - self.sent).min(64 * 1024);
        let chunk = large_body_chunk(self.sent, len as usize);
        self.sent += len;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}
