//! The whole `proxy.toml` model: server, store, approvals, identity, admin, upstreams, routes.
//!
//! Parsing keeps spans so every error points at `file:line:column`; see [`crate::RuleTable::parse`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::route::{Principal, Route};

/// A parsed and validated `proxy.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: Server,
    /// `[store]`
    pub store: Store,
    /// `[approvals]`
    pub approvals: Approvals,
    /// `[identity]`
    pub identity: Identity,
    /// `[admin]`
    pub admin: Admin,
    /// `[[upstreams]]`, in file order.
    pub upstreams: Vec<Upstream>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<Route>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct Server {
    /// `listen` (data plane). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// `admin_listen` (decision API, health, metrics). Never the data port.
    pub admin_listen: SocketAddr,
    /// `admin_allow_remote = true` allows a non-loopback `admin_listen` (default false).
    pub admin_allow_remote: bool,
    /// `tls = { cert = "...", key = "..." }`, paths resolved against the config file's folder.
    pub tls: Option<TlsFiles>,
    /// `trusted_proxies`: whose `X-Forwarded-For` and identity headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `header_read_timeout` (default 10s): a client must send its request head within this.
    pub header_read_timeout: Duration,
    /// `client_idle_timeout` (default 60s): idle keep-alive client connections are closed.
    pub client_idle_timeout: Duration,
    /// `shutdown_grace` (default 30s): how long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// `watch = true` (default): reload when the file changes.
    pub watch: bool,
}

/// A PEM certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// `kind = "memory"`
    Memory,
    /// `kind = "redis"`, `url = "redis://..."` (also rediss://).
    Redis {
        /// The connection URL.
        url: String,
        /// `retention` (default 24h): how long finished tickets are kept.
        retention: Duration,
    },
}

/// `[approvals]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// `hold_timeout` (default 50s).
    pub hold_timeout: Duration,
    /// `ticket_ttl` (default 15m).
    pub ticket_ttl: Duration,
    /// `token_ttl` (default 5m).
    pub token_ttl: Duration,
    /// `max_held_body` (default 1MiB), bytes.
    pub max_held_body: u64,
    /// `signing_key`: Ed25519 PEM for approval tokens.
    pub signing_key: Option<PathBuf>,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `[identity.jwt]`
    pub jwt: Option<JwtConfig>,
    /// `[identity.headers]`: `user = "X-Auth-User"`, `groups = "X-Auth-Groups"`, believed
    /// only from `trusted_proxies`.
    pub headers: Option<IdentityHeaders>,
}

/// Trusted identity headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// Header carrying the user name.
    pub user: String,
    /// Header carrying comma-separated groups.
    pub groups: Option<String>,
}

/// `[identity.jwt]` and `[admin.jwt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// `issuer`, checked when set.
    pub issuer: Option<String>,
    /// `audience`, checked when set.
    pub audience: Option<String>,
    /// `hs256_secret_env`: name of the environment variable holding the HS256 secret.
    pub hs256_secret_env: Option<String>,
    /// `public_keys`: PEM files (RS256, ES256, EdDSA).
    pub public_keys: Vec<PathBuf>,
    /// `jwks_file`.
    pub jwks_file: Option<PathBuf>,
    /// `groups_claim` (default "groups").
    pub groups_claim: String,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Admin {
    /// `operators`: who may reload, revoke and read the audit log.
    pub operators: Vec<Principal>,
    /// `[admin.jwt]`; when absent the admin plane uses `[identity.jwt]`.
    pub jwt: Option<JwtConfig>,
    /// `api_tokens`.
    pub api_tokens: Vec<ApiToken>,
}

/// A static admin API token, stored as the hex SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// `name`, the principal's user name.
    pub name: String,
    /// `sha256`, 64 lowercase hex digits.
    pub sha256: String,
    /// `groups`.
    pub groups: Vec<String>,
}

/// How to speak to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `auto` (default): HTTP/1.1 for `http://`, ALPN (h2, http/1.1) for `https://`.
    Auto,
    /// `http1`: HTTP/1.1 only.
    Http1,
    /// `h2`: HTTP/2 only (prior knowledge over `http://`, i.e. h2c; ALPN h2 over `https://`).
    H2,
}

/// `[[upstreams]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `name`, unique.
    pub name: String,
    /// `url`: `http://host:port` or `https://host:port`, no path, query or user info.
    pub url: Uri,
    /// `protocol`.
    pub protocol: UpstreamProtocol,
    /// `ca_file`: extra PEM roots for `https://`, added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// `preserve_host` (default true): forward the client's Host; false sends the upstream's.
    pub preserve_host: bool,
    /// `connect_timeout` (default 5s): 504 when exceeded, 502 when refused.
    pub connect_timeout: Duration,
    /// `response_timeout` (default 60s): time to the response head; 504 when exceeded.
    pub response_timeout: Duration,
    /// `idle_timeout` (default 60s): longest silence while streaming a body either way.
    pub idle_timeout: Duration,
    /// `pool_idle_timeout` (default 90s): idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// `pool_max_idle` (default 256): idle connections kept per upstream.
    pub pool_max_idle: usize,
}
