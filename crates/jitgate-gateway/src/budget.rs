//! Connection budgets: how many client connections each plane serves at once, so clients of
//! the data plane can never take the file descriptors the admin plane (approvers, health
//! checks) needs.
//!
//! Each plane's accept loop takes a permit before accepting; at the budget it stops accepting
//! and new connections wait in the kernel's listen backlog, as with nginx's
//! `worker_connections` and HAProxy's `maxconn`. The permit travels with the socket (see
//! [`Budgeted`]), so a connection handed to a WebSocket relay still counts until it closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Admin-plane connections served at once: approvers' browsers and CLIs, health checks and
/// metrics scrapers need a few each.
pub const ADMIN_CONNECTIONS: usize = 64;

/// Descriptors kept for everything but client connections and their upstream sockets:
/// standard streams, the runtime's epoll and wake-up descriptors, the config watcher, the
/// store's connections, the audit file, certificate and key reads.
pub const RESERVED_FDS: u64 = 64;

/// The data-plane budget when the open-file limit is unlimited.
const UNLIMITED_DEFAULT: usize = 65_536;

/// The process's soft open-file limit; `None` when unlimited.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The default `max_connections` for a soft open-file limit of `nofile`: what is left after
/// the reserve and the admin plane, halved because each proxied connection may hold an
/// upstream socket too. At least 1.
pub fn derived_max_connections(nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else {
        return UNLIMITED_DEFAULT;
    };
    let spare = nofile.saturating_sub(RESERVED_FDS + ADMIN_CONNECTIONS as u64) / 2;
    usize::try_from(spare).unwrap_or(usize::MAX).max(1)
}

/// The data plane's budget: `configured` (`[server] max_connections`) or the derived default,
/// logged with where it came from; a configured budget the open-file limit cannot carry is
/// warned about.
pub fn data_plane_budget(configured: Option<usize>) -> usize {
    let nofile = open_file_limit();
    let derived = derived_max_connections(nofile);
    let limit = nofile.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    match configured {
        Some(n) => {
            if n > derived {
                tracing::warn!(
                    "max_connections = {n}, but the open-file limit ({limit}) leaves room for about {derived} \
                     data-plane connections (each may hold an upstream socket too); raise it (ulimit -n, \
                     systemd LimitNOFILE=) or accepts will fail with EMFILE"
                );
            }
            tracing::info!(
                "data plane: at most {n} connections (max_connections); admin plane: {ADMIN_CONNECTIONS}"
            );
            n
        }
        None => {
            tracing::info!(
                "data plane: at most {derived} connections (derived from the open-file limit {limit}); \
                 admin plane: {ADMIN_CONNECTIONS}"
            );
            derived
        }
    }
}

/// A client socket holding its plane's connection permit until it is closed, wherever it
/// goes: hyper's connection, or the task relaying an upgraded (WebSocket) stream.
pub struct Budgeted<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
}

impl<S> Budgeted<S> {
    /// Binds `permit` to `io`.
    pub fn new(io: S, permit: OwnedSemaphorePermit) -> Budgeted<S> {
        Budgeted {
            io,
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
