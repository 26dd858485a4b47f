//! Listeners and the gateway's life: bind once, serve, reload on triggers, drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin;
use crate::proxy::{self, ConnInfo};
use crate::state::{build_snapshot, load_table, Shared, Trigger};
use crate::tls::{self, load_certified_key, CertSlot};

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
}

/// A bound, not yet serving, gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    data: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
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
        let shared = Arc::new(Shared::new(snapshot, config_path, cert));
        Ok(Gateway {
            shared,
            data,
            admin,
            tls,
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
        } = self;
        let server = shared.snapshot().table.config().server.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let builder = Arc::new(builder);

        let data_task = tokio::spawn(accept_loop(
            data,
            tls,
            Plane::Data,
            shared.clone(),
            builder.clone(),
            graceful.clone(),
            stop_rx.clone(),
            server.header_read_timeout,
        ));
        let admin_task = tokio::spawn(accept_loop(
            admin,
            None,
            Plane::Admin,
            shared.clone(),
            builder,
            graceful.clone(),
            stop_rx.clone(),
            server.header_read_timeout,
        ));
        spawn_sighup(shared.clone(), stop_rx.clone());
        let _watcher = if server.watch {
            watch_file(shared.clone(), stop_rx.clone())
        } else {
            None
        };

        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = stop_tx.send(true);
        let _ = data_task.await;
        let _ = admin_task.await;
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(server.shutdown_grace) => {
                tracing::warn!("shutdown grace of {:?} elapsed; closing remaining connections", server.shutdown_grace);
            }
        }
        Ok(())
    }
}

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

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    plane: Plane,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
    handshake_timeout: Duration,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let graceful = graceful.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(stream, peer, false, plane, shared, &builder, &graceful).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve(tls_stream, peer, true, plane, shared, &builder, &graceful).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    plane: Plane,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = ConnInfo { peer, tls };
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move {
            Ok::<_, Infallible>(match plane {
                Plane::Data => proxy::handle(shared, conn, req).await,
                Plane::Admin => admin::handle(shared, req).await,
            })
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = graceful.watch(connection.into_owned()).await {
        tracing::debug!(%peer, "connection ended: {e}");
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
                    let _ = shared.reload(Trigger::Signal).await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}

/// Quiet period after the last file event before reloading: editors write in bursts.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the config file's folder (so atomic rename-into-place and symlink swaps are seen)
/// and reloads after a quiet period. Reload skips files whose content did not change.
fn watch_file(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = shared.config_path().parent()?.to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !event.kind.is_access() {
                    let _ = tx.send(());
                }
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
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = stop.changed() => return,
            }
            // Debounce: wait until events stop for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let _ = shared.reload(Trigger::Watch).await;
        }
    });
    Some(watcher)
}
