//! Pooled clients for the configured upstreams, one per `[[upstreams]]` entry.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use jitgate_rules::config::{Upstream, UpstreamProtocol};

use crate::body::ProxyBody;
use crate::tls::{self, TlsError};

/// A pooled client for one upstream, kept across reloads while its definition is unchanged.
pub struct UpstreamClient {
    /// The definition it was built from.
    pub def: Upstream,
    /// The pooled client.
    pub client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
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
        }))
    }
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
