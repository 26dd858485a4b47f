//! Listeners and the gateway's life: bind once, serve, reload on triggers, drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::budget::{self, Budgeted};
use crate::engine::Engine;
use crate::proxy::{self, ConnInfo};
use crate::state::{build_snapshot, load_table, Shared, Trigger};
use crate::tls::{self, load_certified_key, CertSlot};

mod workers;

use workers::Workers;
pub(crate) use workers::{count as data_loops, slot as data_loop_slot};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is invalid; one line per error, `file:line:column: error: ...`.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The approval engine could not be built (signing key).
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// A bound, not yet serving, gateway. Its reload triggers (SIGHUP, the file watch) are
/// already live, so an edit or a SIGHUP sent as soon as the listeners are announced is never
/// missed (and SIGHUP's default action, ending the process, never applies).
pub struct Gateway {
    shared: Arc<Shared>,
    data: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
    /// Tells the reload triggers to stop.
    stop: watch::Sender<bool>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Gateway {
    /// Loads and validates `config_path`, then binds the data and admin listeners.
    pub async fn bind(config_path: &Path) -> Result<Gateway, StartError> {
        let config_path = absolute(config_path);
        let table = load_table(&config_path).map_err(StartError::Config)?;
        for w in table.warnings() {
            tracing::warn!("{w}");
        }
        let server = table.config().server.clone();
        let cert = match &server.tls {
            Some(files) => Some(Arc::new(CertSlot::new(load_certified_key(files)?))),
            None => None,
        };
        let tls = cert
            .as_ref()
            .map(|slot| TlsAcceptor::from(Arc::new(tls::server_config(slot.clone()))));
        let engine = Engine::start(table.config())?;
        let snapshot = build_snapshot(table, None).map_err(StartError::Config)?;
        let data = TcpListener::bind(server.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: server.listen,
                source,
            })?;
        let admin = TcpListener::bind(server.admin_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: server.admin_listen,
                source,
            })?;
        let shared = Arc::new(Shared::new(snapshot, engine, config_path, cert));
        crate::notify::deliver::start(shared.clone());
        crate::events::Hub::start(shared.clone());
        let (stop, stop_rx) = watch::channel(false);
        spawn_sighup(shared.clone(), stop_rx.clone());
        let watcher = if server.watch {
            watch_file(shared.clone(), stop_rx)
        } else {
            None
        };
        Ok(Gateway {
            shared,
            data,
            admin,
            tls,
            stop,
            _watcher: watcher,
        })
    }

    /// The bound data-plane address.
    pub fn data_addr(&self) -> SocketAddr {
        self.data
            .local_addr()
            .unwrap_or_else(|_| self.shared.snapshot().table.config().server.listen)
    }

    /// The bound admin-plane address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| self.shared.snapshot().table.config().server.admin_listen)
    }

    /// `https` when the data plane speaks TLS.
    pub fn data_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The shared state (for in-process callers such as the demo).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish for up to `shutdown_grace`. Reloads on file change, SIGHUP and the admin API.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Gateway {
            shared,
            data,
            admin,
            tls,
            stop: stop_tx,
            _watcher,
        } = self;
        let server = shared.snapshot().table.config().server.clone();
        let builders = Arc::new(Builders::new(server.header_read_timeout));
        let plane = |plane, tls| Listener {
            plane,
            tls,
            shared: shared.clone(),
            builders: builders.clone(),
            graceful: GracefulShutdown::new(),
            header_read_timeout: server.header_read_timeout,
        };
        // The data plane runs on its own event loops, one per core; the admin plane and the
        // gateway's background work stay on this runtime. Each plane has its own budget:
        // however many clients the data plane has, the admin plane can still accept
        // (approvers, health checks).
        let data_budget = permits(budget::data_plane_budget(server.max_connections));
        let mut workers = Workers::start(
            data.into_std()?,
            &|| plane(Plane::Data, tls.clone()),
            &data_budget,
        )?;
        let admin_plane = plane(Plane::Admin, None);
        // A data-plane loop that ends on its own (it could not listen, or panicked) takes the
        // gateway down with a failure, for the supervisor to restart it whole.
        let failed = tokio::select! {
            () = shutdown => false,
            () = admin_plane.accept_loop(&admin, permits(budget::ADMIN_CONNECTIONS)) => false,
            () = workers.ended() => {
                tracing::error!("a data-plane event loop ended; shutting down");
                true
            }
        };
        // Close the listeners before saying so: "shutting down" means no new connection
        // can be accepted any more.
        drop(admin);
        workers.stop_accepting().await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = stop_tx.send(true);
        // Held requests answer 503 with their ticket at once, so clients can resume elsewhere.
        shared.engine().begin_shutdown();
        let drained = async {
            tokio::join!(admin_plane.graceful.shutdown(), workers.drained());
        };
        tokio::select! {
            () = drained => tracing::info!("all connections closed"),
            () = tokio::time::sleep(server.shutdown_grace) => {
                tracing::warn!("shutdown grace of {:?} elapsed; closing remaining connections", server.shutdown_grace);
            }
        }
        // What the drained requests recorded reaches the store, and the [audit] file,
        // before the exit.
        shared.engine().close_audit(AUDIT_FLUSH_TIMEOUT).await;
        // What the last requests logged, unless stdout is stuck.
        let flushing = shared.clone();
        let flushed = tokio::task::spawn_blocking(move || flushing.access_log().flush());
        if tokio::time::timeout(AUDIT_FLUSH_TIMEOUT, flushed)
            .await
            .is_err()
        {
            tracing::warn!("the access log could not be written out: stdout does not take it");
        }
        workers.exit().await;
        if failed {
            return Err(std::io::Error::other("a data-plane event loop ended"));
        }
        Ok(())
    }
}

/// How long shutdown waits for the `[audit] file` to be written out once requests drained.
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Plane {
    Data,
    Admin,
}

impl Plane {
    fn name(self) -> &'static str {
        match self {
            Plane::Data => "data",
            Plane::Admin => "admin",
        }
    }
}

/// Connection builders: sniffing for plaintext (HTTP/1.1 or h2c prior knowledge), and one
/// per protocol for TLS, where ALPN already said which.
struct Builders {
    sniff: auto::Builder<TokioExecutor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_read_timeout: Duration) -> Builders {
        let configure = |mut b: auto::Builder<TokioExecutor>| {
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true);
            b.http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20));
            b
        };
        Builders {
            sniff: configure(auto::Builder::new(TokioExecutor::new())),
            http1: configure(auto::Builder::new(TokioExecutor::new()).http1_only()),
            http2: configure(auto::Builder::new(TokioExecutor::new()).http2_only()),
        }
    }
}

/// One plane's listener and what its connections share.
struct Listener {
    plane: Plane,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    /// Signals this listener's connections to finish at shutdown.
    graceful: GracefulShutdown,
    header_read_timeout: Duration,
}

/// A connection budget shared by the accept loops of one plane.
fn permits(budget: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS)))
}

/// The first pause after an accept error such as EMFILE; doubled while errors continue.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause between accept attempts while they keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Listener {
    /// Accepts for ever, at most as many connections at a time as `permits` allows: at the
    /// budget it stops accepting, and new connections wait in the listen backlog until one
    /// closes.
    async fn accept_loop(&self, listener: &TcpListener, permits: Arc<Semaphore>) {
        let mut backoff = Duration::ZERO;
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return; // never closed
            };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    if !backoff.is_zero() {
                        tracing::info!(plane = self.plane.name(), "accepting again");
                        backoff = Duration::ZERO;
                    }
                    accepted
                }
                // The peer gave up before we accepted it: nothing to wait for.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and log once a run.
                    if backoff.is_zero() {
                        tracing::warn!(
                            plane = self.plane.name(),
                            "accept failed: {e}; backing off"
                        );
                    }
                    backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                    drop(permit);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                shared: self.shared.clone(),
                builders: self.builders.clone(),
                watcher: self.graceful.watcher(),
                peer,
                plane: self.plane,
                header_read_timeout: self.header_read_timeout,
            };
            tokio::spawn(conn.serve(Budgeted::new(stream, permit), self.tls.clone()));
        }
    }
}

/// Accept errors about one connection that the peer already abandoned, as opposed to errors
/// about the process (out of descriptors or memory) that retrying at once cannot fix.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// One accepted connection.
struct Conn {
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    watcher: Watcher,
    peer: SocketAddr,
    plane: Plane,
    header_read_timeout: Duration,
}

impl Conn {
    async fn serve(self, stream: Budgeted<TcpStream>, tls: Option<TlsAcceptor>) {
        // Every phase of reading the first request head (TLS handshake, the HTTP/1-or-h2c
        // sniff, the h2 preface, SETTINGS and first HEADERS, an HTTP/1 head) is bounded by
        // one deadline: hyper's own header timer covers only HTTP/1 heads and starts after
        // the sniff, and h2 has none.
        let deadline = Instant::now() + self.header_read_timeout;
        let peer = self.peer;
        match tls {
            None => {
                let builders = self.builders.clone();
                self.run(stream, false, &builders.sniff, deadline).await;
            }
            // Boxed: the TLS handshake and stream would otherwise size every connection's
            // task, plain ones too.
            Some(acceptor) => {
                Box::pin(async move {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let builders = self.builders.clone();
                            let builder = if h2 { &builders.http2 } else { &builders.http1 };
                            self.run(stream, true, builder, deadline).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                })
                .await
            }
        }
    }

    async fn run<S>(
        self,
        stream: S,
        tls: bool,
        builder: &auto::Builder<TokioExecutor>,
        deadline: Instant,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            shared,
            watcher,
            peer,
            plane,
            header_read_timeout,
            ..
        } = self;
        let conn = ConnInfo::new(peer, tls);
        // Set by the first request: from then on hyper's HTTP/1 header timer (which also
        // bounds idle keep-alive) and h2 keep-alive pings govern the connection.
        let started = Arc::new(AtomicBool::new(false));
        let first_request = started.clone();
        // Only the admin plane closes idle connections itself.
        let activity = (plane == Plane::Admin).then(|| Arc::new(Activity::default()));
        let seen = activity.clone();
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            let shared = shared.clone();
            let conn = conn.clone();
            let busy = seen.as_ref().map(|a| Arc::new(Activity::begin(a)));
            if let Some(b) = &busy {
                let b = b.clone();
                req.extensions_mut()
                    .insert(admin::AuthMark::new(move || b.mark()));
            }
            async move {
                let mut resp = match plane {
                    Plane::Data => proxy::handle(shared, conn, req).await,
                    // Boxed: the admin plane's future is twice the data plane's, and hyper
                    // keeps a slot of this future's size for every connection.
                    Plane::Admin => Box::pin(admin::handle(shared, req, conn.tls)).await,
                };
                if let Some(busy) = busy {
                    if resp.extensions().get::<admin::Authenticated>().is_some() {
                        busy.mark();
                    }
                    // An event stream is a call in flight until it ends.
                    drop(resp.body_mut().keep_while_streaming(busy));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(watcher.watch(connection.into_owned()));
        let ended = tokio::select! {
            ended = &mut connection => Some(ended),
            () = tokio::time::sleep_until(deadline) => None,
        };
        let ended = match (ended, &activity) {
            (Some(ended), _) => ended,
            (None, _) if !started.load(Ordering::Relaxed) => {
                // Dropping the connection closes the socket.
                tracing::debug!(%peer, "no request within header_read_timeout; closing");
                return;
            }
            (None, None) => connection.await,
            // The admin plane's few connections are for approvers: one that serves no
            // authenticated call for header_read_timeout (and has none in flight) is closed,
            // also over h2, where answering PINGs would otherwise keep it for ever; polling
            // `/healthz` does not keep a connection.
            (None, Some(activity)) => {
                let idle = activity.close_when_idle(connection, header_read_timeout);
                let Some(ended) = idle.await else {
                    tracing::debug!(%peer, "admin connection idle for header_read_timeout; closing");
                    return;
                };
                ended
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// Requests in flight on one admin connection, and when the last authenticated one ended (or
/// the connection began).
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    idle_since: std::sync::Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
        }
    }
}

/// Marks a request in flight until dropped; an authenticated one refreshes the connection.
struct Busy {
    activity: Arc<Activity>,
    /// Counted in flight since the caller was authenticated: an unauthenticated request (a
    /// body trickled before its signature can be checked, say) never keeps a connection.
    authenticated: std::sync::atomic::AtomicBool,
}

impl Busy {
    fn mark(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        Busy {
            activity: self.clone(),
            authenticated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Drives `connection` to its end, or gives up (`None`, dropping it: the socket closes)
    /// once it has had no request in flight and no authenticated one for `idle`.
    async fn close_when_idle<F: Future>(
        &self,
        mut connection: std::pin::Pin<&mut F>,
        idle: Duration,
    ) -> Option<F::Output> {
        loop {
            let since = self
                .idle_since
                .lock()
                .map_or_else(|_| Instant::now(), |s| *s);
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            if !busy && since.elapsed() >= idle {
                return None;
            }
            let check = if busy {
                Instant::now() + idle
            } else {
                since + idle
            };
            tokio::select! {
                ended = &mut connection => return Some(ended),
                () = tokio::time::sleep_until(check) => {}
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if *self.authenticated.get_mut() {
            self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Ok(mut s) = self.activity.idle_since.lock() {
                *s = Instant::now();
            }
        }
    }
}

fn spawn_sighup(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install SIGHUP handler; reload with the admin API");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() { return; }
                    tracing::info!("SIGHUP: reloading");
                    let _ = shared.reload(Trigger::Signal, None).await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}

/// Quiet period after the last file event before reloading: editors write in bursts.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A folder that never goes quiet still reloads this often.
const DEBOUNCE_CAP: Duration = Duration::from_secs(2);

/// Watches the config file's folder (so atomic rename-into-place and Kubernetes `..data`
/// symlink swaps are seen) for events about the config file, and reloads after a quiet
/// period. Reload skips files whose content did not change.
fn watch_file(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let path = shared.config_path().to_path_buf();
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_os_string();
    // A permit-holding Notify coalesces any number of events into one wake-up.
    let changed = Arc::new(tokio::sync::Notify::new());
    let tx = changed.clone();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()) || p.ends_with("..data"));
            if ours && !event.kind.is_access() {
                tx.notify_one();
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("file watch unavailable ({e}); reload with SIGHUP or the admin API");
                return None;
            }
        };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {} ({e}); reload with SIGHUP or the admin API",
            dir.display()
        );
        return None;
    }
    // One look once the watch is in place: an edit made after the table was first read but
    // before the watch began raised no event. An unchanged file is a no-op.
    changed.notify_one();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = changed.notified() => {}
                _ = stop.changed() => return,
            }
            let started = tokio::time::Instant::now();
            while started.elapsed() < DEBOUNCE_CAP
                && tokio::time::timeout(DEBOUNCE, changed.notified())
                    .await
                    .is_ok()
            {}
            let _ = shared.reload(Trigger::Watch, None).await;
        }
    });
    Some(watcher)
}
