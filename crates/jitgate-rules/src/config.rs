//! The whole `proxy.toml` model: server, store, approvals, identity, admin, upstreams, routes.
//!
//! Parsing keeps spans so every error points at `file:line:column`; see [`crate::RuleTable::parse`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::route::{Principal, Route};

mod approval;
mod approvals;
mod identity;
mod notify;
mod raw;
mod routes;
mod sentinel;
mod server;
mod upstreams;
pub use notify::{Notify, NotifyKind, NOTIFY_EVENTS};
pub use sentinel::{ClusterUrl, SentinelUrl, SENTINEL_PORT};

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
    /// `[audit]`
    pub audit: Audit,
    /// `[log]`
    pub log: Log,
    /// `[[upstreams]]`, in file order.
    pub upstreams: Vec<Upstream>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<Route>,
    /// `[[notify]]` channels, in file order.
    pub notify: Vec<Notify>,
    /// Every file the config names (certificates, keys, CA bundles, JWKS), resolved, with
    /// where it is named, in file order.
    pub files: Vec<FileRef>,
}

/// A file named in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// The path, resolved against the config file's folder.
    pub path: PathBuf,
    /// Where the config names it.
    pub location: Location,
}

/// `[audit]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// `file`: a JSON-lines file that every audit event this replica appends to the store is
    /// also written to, as a hash chain of its own; resolved against the config file's folder.
    pub file: Option<PathBuf>,
}

/// `[log]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    /// `access`: one line per data-plane request on standard output.
    pub access: AccessLog,
}

/// `[log] access`: how each data-plane request is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLog {
    /// `"text"`: `key=value` pairs (the default).
    #[default]
    Text,
    /// `"json"`: one JSON object per line.
    Json,
    /// `"off"`: no access log.
    Off,
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
    /// `shutdown_grace` (default 30s): how long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// `watch = true` (default): reload when the file changes.
    pub watch: bool,
    /// `max_connections` (at least 1): data-plane client connections served at once; `None`
    /// lets the gateway derive it from the process's open-file limit at start.
    pub max_connections: Option<usize>,
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
    Memory {
        /// `retention` (default 24h): how long finished tickets and grants are kept.
        retention: Duration,
    },
    /// `kind = "redis"`, `url = "redis://..."` (also rediss://).
    Redis {
        /// The connection URL.
        url: String,
        /// `retention` (default 24h): how long finished tickets are kept.
        retention: Duration,
        /// `ca_file`: the PEM roots a `rediss://` server certificate must chain to, instead
        /// of the system roots.
        ca_file: Option<PathBuf>,
        /// `tls = { cert, key }`: a client certificate for mutual TLS.
        client_tls: Option<TlsFiles>,
        /// `sentinel_username` (with a `redis+sentinel://` URL): the sentinels' ACL user.
        sentinel_username: Option<String>,
        /// `sentinel_password` (with a `redis+sentinel://` URL): the sentinels' password; the
        /// URL's user info is for the data nodes.
        sentinel_password: Option<String>,
        /// `replica_acks`: replicas that must have each write before it counts (default 1
        /// with `redis+sentinel://`, else 0).
        replica_acks: Option<u32>,
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
    /// `reconcile_interval` (default 1s): how often a replica re-reads the store for
    /// decisions it may have missed on pub/sub, and expires overdue tickets.
    pub reconcile_interval: Duration,
    /// `max_pending` (default 10000): pending tickets overall; beyond it new ones get 429.
    pub max_pending: u64,
    /// `max_pending_per_source` (default 20): pending tickets anonymous requesters may open
    /// from one client address; beyond it 429.
    pub max_pending_per_source: u32,
    /// `max_pending_per_user` (default 50): pending tickets one named requester may have
    /// across every route; beyond it 429.
    pub max_pending_per_user: u32,
    /// `[approvals.risk]`: the risk score's weights.
    pub risk: Option<crate::policy::RiskModel>,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `[identity.jwt]`
    pub jwt: Option<JwtConfig>,
    /// `[identity.headers]`: `user = "X-Auth-User"`, `groups = "X-Auth-Groups"`, believed
    /// only from `trusted_proxies`.
    pub headers: Option<IdentityHeaders>,
    /// `credential_headers`: the headers whose values tell anonymous requesters apart
    /// (default [`DEFAULT_CREDENTIAL_HEADERS`]), sorted by name: the order the requester
    /// digest reads them in.
    pub credential_headers: Vec<HeaderName>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            jwt: None,
            headers: None,
            credential_headers: DEFAULT_CREDENTIAL_HEADERS
                .map(HeaderName::from_static)
                .into_iter()
                .collect(),
        }
    }
}

impl Identity {
    /// The `[identity.headers]` names (user, then groups): only a trusted proxy may send them.
    pub fn header_names(&self) -> Vec<http::HeaderName> {
        self.headers
            .iter()
            .flat_map(|h| std::iter::once(h.user.as_str()).chain(h.groups.as_deref()))
            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect()
    }
}

/// The credential-bearing headers that tell anonymous requesters apart by default (sorted).
pub const DEFAULT_CREDENTIAL_HEADERS: [&str; 6] = [
    "api-key",
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "x-auth-token",
];

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
    /// `public_url`: how approvers reach the admin plane (links in notifications); `None`:
    /// `http://<admin_listen>`.
    pub public_url: Option<Uri>,
}

/// A static admin API token, stored as the hex SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// `name`, the token's label (unique; audit logs say which token was used).
    pub name: String,
    /// `user`, the person the token acts as: quorum, self-approval and visibility are judged
    /// on this user, whichever token or JWT they use.
    pub user: String,
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

// === parsing ===
//
// The file is parsed with `toml::de::DeTable` (syntax errors, recoverably), then read into
// the serde-derived `RawConfig` (one struct per section, in the modules below, fields keeping
// spans and type errors: see `raw.rs`), then each section's validation pass builds the
// compiled model. Every problem is reported, not just the first, and unknown keys are caught
// with their location and a suggestion. Nothing is read from disk: relative paths are only
// joined to the config file's folder.
//
// Choices where SPEC is silent (also for the README):
// - every section is optional; `[server]` defaults to listen 0.0.0.0:8080, admin 127.0.0.1:9090;
// - `[routes.error]`: `status` defaults to 403; with `body` and no `content_type` the type is
//   text/plain; without `body` the gateway's problem+json body is used (`content_type` alone is
//   an error). A placeholder is `{` identifier `}`; any other `{` is literal (JSON needs no
//   escaping); unknown identifiers are errors;
// - `break_glass = { groups = ["sre"] }` (a table, so options can be added later);
// - `durations`, `default_duration`, `max_duration`, `max_uses` are errors outside
//   mode = "access"; access needs `max_duration`; `default_duration` defaults to the smallest
//   preset, else `max_duration`;
// - an `auto_approve` entry with no condition is an error (it would approve everything);
// - lowercase methods are read as uppercase with a warning; CIDRs with host bits are
//   truncated with a warning.

use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use http::{HeaderName, Method, StatusCode};
use serde::Deserialize;
use toml::de::DeTable;

use crate::diag::{Diagnostic, Location, Severity};
use crate::route::{ApprovalMode, ErrorTemplate, HostPattern, PathPattern, Segment};
use crate::units;

use raw::{span_of, Field, Strings, Table, Tables};

/// The top level of `proxy.toml`: one field per section.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    server: Option<Field<Table<server::RawServer>>>,
    store: Option<Field<Table<server::RawStore>>>,
    approvals: Option<Field<Table<approvals::RawApprovals>>>,
    identity: Option<Field<Table<identity::RawIdentity>>>,
    admin: Option<Field<Table<identity::RawAdmin>>>,
    audit: Option<Field<Table<server::RawAudit>>>,
    log: Option<Field<Table<server::RawLog>>>,
    upstreams: Option<Field<Tables<upstreams::RawUpstream>>>,
    routes: Option<Field<Tables<routes::RawRoute>>>,
    notify: Option<Field<Tables<notify::RawNotify>>>,
}

/// Default `listen` when `[server]` does not set it.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default `admin_listen` when `[server]` does not set it.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default `content_type` of a `[routes.error]` that sets `body`.
pub const DEFAULT_ERROR_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// `content_type` of a `[routes.error]` without `body` (the gateway's problem+json body).
pub const PROBLEM_JSON: &str = "application/problem+json";
/// The placeholders a `[routes.error]` body may use.
pub const ERROR_PLACEHOLDERS: [&str; 3] = ["ticket", "reason", "rule"];

/// Parses and validates `src`; `None` when any error was found. Diagnostics are sorted by
/// position in the file.
pub(crate) fn parse_config(src: &str, file: &Path) -> (Option<Config>, Vec<Diagnostic>) {
    let mut cx = Cx {
        src,
        file: file.display().to_string(),
        base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        diags: Vec::new(),
        files: Vec::new(),
        broken_upstreams: Vec::new(),
        channels: Vec::new(),
        line_starts: std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            cx.error(span, e.message().trim_end().to_string());
        }
        cx.diags.dedup();
        return (None, cx.finish());
    }
    let config = match raw::read::<RawConfig>(doc) {
        Ok(Field { value: Ok(t), .. }) => cx.config(&t),
        Ok(Field {
            value: Err(_),
            span,
        }) => {
            cx.error(span, "the file must be a TOML table of sections");
            None
        }
        Err(e) => {
            cx.error(
                e.span().unwrap_or(0..0),
                format!("could not read the file: {}", e.message()),
            );
            None
        }
    };
    let has_errors = cx.diags.iter().any(|d| d.severity == Severity::Error);
    (config.filter(|_| !has_errors), cx.finish())
}

struct Cx<'s> {
    src: &'s str,
    file: String,
    base: PathBuf,
    diags: Vec<Diagnostic>,
    /// The files named so far.
    files: Vec<FileRef>,
    /// Upstreams that were declared but had errors: routes naming them are not reported again.
    broken_upstreams: Vec<String>,
    /// Byte offset of the start of each line, so locating a span is a binary search
    /// (scanning from the top each time made 10,000-route files quadratic).
    line_starts: Vec<usize>,
    /// Names of the `[[notify]]` channels (those with errors too), for routes' `notify`.
    channels: Vec<String>,
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `known` to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses `user:NAME` or `group:NAME`.
pub fn parse_principal(s: &str) -> Result<Principal, String> {
    let bad = || format!("invalid principal `{s}`; expected `user:NAME` or `group:NAME`");
    let (kind, name) = s.split_once(':').ok_or_else(bad)?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    match kind {
        "user" => Ok(Principal::User(name.to_string())),
        "group" => Ok(Principal::Group(name.to_string())),
        _ => Err(bad()),
    }
}

/// Parses a CIDR (`10.0.0.0/8`) or a bare address (meaning /32 or /128). The flag says
/// whether host bits were set (and dropped), which is worth a warning.
pub fn parse_cidr(s: &str) -> Result<(IpNet, bool), String> {
    let t = s.trim();
    if let Ok(ip) = std::net::IpAddr::from_str(t) {
        return Ok((IpNet::from(ip), false));
    }
    let net = IpNet::from_str(t)
        .map_err(|_| format!("invalid CIDR `{s}`; expected e.g. \"10.0.0.0/8\" or \"::1/128\""))?;
    Ok((net.trunc(), net.trunc() != net))
}

/// Parses a route `path` pattern (see [`PathPattern`]).
pub fn parse_path_pattern(s: &str) -> Result<PathPattern, String> {
    if s == "*" {
        return Err(
            "path `*` is not a pattern; `/**` matches every path including `OPTIONS *`".into(),
        );
    }
    let Some(body) = s.strip_prefix('/') else {
        return Err(format!("path pattern `{s}` must start with `/`"));
    };
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '%' | ';' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("path pattern `{s}` contains `{}`; patterns match canonical paths, which never contain `%`, `;`, `?`, `#`, `\\` or whitespace", c.escape_default()));
    }
    let body = body.strip_suffix('/').unwrap_or(body);
    let mut segments = Vec::new();
    let mut rest = false;
    let mut names: Vec<&str> = Vec::new();
    if body.is_empty() {
        return Ok(PathPattern {
            source: s.to_string(),
            segments,
            rest,
        });
    }
    let parts: Vec<&str> = body.split('/').collect();
    for part in &parts {
        if rest {
            return Err(format!(
                "`**` must be the last segment of path pattern `{s}`"
            ));
        }
        match *part {
            "" => return Err(format!("path pattern `{s}` has an empty segment (`//`)")),
            "." | ".." => return Err(format!("path pattern `{s}` has a `{part}` segment")),
            "**" => rest = true,
            "*" => segments.push(Segment::Any),
            p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                let name = &p[1..p.len() - 1];
                if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("invalid segment name `{p}` in path pattern `{s}`; use letters, digits and `_`"));
                }
                if names.contains(&name) {
                    return Err(format!(
                        "segment name `{name}` is used twice in path pattern `{s}`"
                    ));
                }
                names.push(name);
                segments.push(Segment::Named(name.to_string()));
            }
            p if p.contains('*') => {
                return Err(format!(
                    "`*` must be a whole segment in path pattern `{s}` (found `{p}`)"
                ));
            }
            p if p.contains('{') || p.contains('}') => {
                return Err(format!(
                    "`{{name}}` must be a whole segment in path pattern `{s}` (found `{p}`)"
                ));
            }
            p => segments.push(Segment::Literal(p.to_string())),
        }
    }
    Ok(PathPattern {
        source: s.to_string(),
        segments,
        rest,
    })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok_and(|n| n > 0)
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses `host = "api.example.com"`, `"api.example.com:8443"`, `"[::1]:8443"` or
/// `"*.example.com"`. Stored lowercase without a trailing dot.
pub fn parse_host_pattern(s: &str) -> Result<HostPattern, String> {
    let lower = s.trim().to_ascii_lowercase();
    let bad = |why: &str| format!("invalid host `{s}`: {why}");
    if let Some(rest) = lower.strip_prefix("*.") {
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.contains(':') {
            return Err(bad("a wildcard host cannot have a port"));
        }
        if !valid_hostname(rest) || rest.contains('*') {
            return Err(bad("expected `*.example.com`"));
        }
        return Ok(HostPattern::Suffix(format!(".{rest}")));
    }
    if lower.contains('*') {
        return Err(bad(
            "`*` is only allowed as the whole first label, as in `*.example.com`",
        ));
    }
    if let Some(v6) = lower.strip_prefix('[') {
        let (addr, port) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        if std::net::Ipv6Addr::from_str(addr).is_err() {
            return Err(bad("not an IPv6 address"));
        }
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(valid_port)) {
            return Err(bad("invalid port"));
        }
        return Ok(HostPattern::Exact(lower));
    }
    let (name, port) = match lower.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (lower.as_str(), None),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if !valid_hostname(name) {
        return Err(bad("expected a host name such as `api.example.com`"));
    }
    match port {
        Some(p) if !valid_port(p) => Err(bad("invalid port")),
        Some(p) => Ok(HostPattern::Exact(format!("{name}:{p}"))),
        None => Ok(HostPattern::Exact(name.to_string())),
    }
}

/// The placeholders used by an error body: `{` + identifier + `}`. Any other `{` is literal
/// text, so JSON bodies need no escaping.
pub fn placeholders(body: &str) -> impl Iterator<Item = (usize, &str)> + '_ {
    body.match_indices('{').filter_map(move |(i, _)| {
        let after = body.get(i + 1..)?;
        let end = after.find('}')?;
        let name = &after[..end];
        let ident = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        ident.then_some((i, name))
    })
}

/// How placeholder values are escaped in a `[routes.error]` body, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// `text/plain`: values as they are.
    Plain,
    /// JSON (`application/json`, `*+json`): inside a JSON string.
    Json,
    /// HTML and XML (`text/html`, `application/xhtml+xml`, `*/xml`, `*+xml`): character
    /// references for `& < > " '`.
    Markup,
}

impl Escaping {
    /// The escaping for a content type; `None` when jitgate cannot escape for it (a template
    /// of that type may not use placeholders).
    pub fn for_content_type(content_type: &str) -> Option<Escaping> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (kind, sub) = media.split_once('/')?;
        match (kind, sub) {
            ("text", "plain") => Some(Escaping::Plain),
            (_, "json") => Some(Escaping::Json),
            (_, s) if s.ends_with("+json") => Some(Escaping::Json),
            ("text", "html") | ("application", "xhtml+xml") | (_, "xml") => Some(Escaping::Markup),
            (_, s) if s.ends_with("+xml") => Some(Escaping::Markup),
            _ => None,
        }
    }

    /// Escapes `v` for this content type.
    pub fn escape(self, v: &str) -> String {
        let mut o = String::with_capacity(v.len());
        for c in v.chars() {
            match (self, c) {
                (Escaping::Json, '"') => o.push_str("\\\""),
                (Escaping::Json, '\\') => o.push_str("\\\\"),
                (Escaping::Json, c) if (c as u32) < 0x20 => {
                    o.push_str(&format!("\\u{:04x}", c as u32))
                }
                (Escaping::Markup, '&') => o.push_str("&amp;"),
                (Escaping::Markup, '<') => o.push_str("&lt;"),
                (Escaping::Markup, '>') => o.push_str("&gt;"),
                (Escaping::Markup, '"') => o.push_str("&quot;"),
                (Escaping::Markup, '\'') => o.push_str("&#39;"),
                (_, c) => o.push(c),
            }
        }
        o
    }
}

/// Fills a `[routes.error]` body: `{ticket}`, `{reason}` and `{rule}` are replaced (other
/// `{...}` text is kept as written), each value escaped for the template's content type (see
/// [`Escaping`]), so a requester's or approver's text cannot break out of a JSON string or
/// inject markup. `check` refuses placeholders in a content type it cannot escape for; such
/// a body is rendered without substituting anything.
pub fn render_error_body(t: &ErrorTemplate, ticket: &str, reason: &str, rule: &str) -> String {
    let Some(escaping) = Escaping::for_content_type(&t.content_type) else {
        return t.body.clone();
    };
    let mut out = String::with_capacity(t.body.len() + reason.len());
    let mut last = 0;
    for (i, name) in placeholders(&t.body) {
        let value = match name {
            "ticket" => ticket,
            "reason" => reason,
            "rule" => rule,
            _ => continue,
        };
        out.push_str(&t.body[last..i]);
        out.push_str(&escaping.escape(value));
        last = i + name.len() + 2;
    }
    out.push_str(&t.body[last..]);
    out
}

/// The keys of an auto-approve policy that are conditions (the rest name it or bound what it
/// grants).
const AUTO_CONDITIONS: &[&str] = &[
    "path_prefix",
    "methods",
    "users",
    "groups",
    "source",
    "headers",
    "duration_below",
    "window",
    "risk_below",
];

/// `max_also_within` when a route allowing `also` does not set it.
const DEFAULT_ALSO_WITHIN: Duration = Duration::from_secs(3600);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// === impl Cx ===

impl<'s> Cx<'s> {
    /// Same result as [`Location::from_offset`], without scanning from the top.
    fn loc(&self, span: &Range<usize>) -> Location {
        let offset = span.start.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self.src.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    fn push(&mut self, severity: Severity, span: Range<usize>, message: String) {
        let location = self.loc(&span);
        self.diags.push(Diagnostic {
            severity,
            location,
            message,
        });
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Severity::Error, span, message.into());
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.push(Severity::Warning, span, message.into());
    }

    fn finish(mut self) -> Vec<Diagnostic> {
        self.diags
            .sort_by_key(|d| (d.location.line, d.location.column));
        self.diags
    }

    /// `p` resolved against the config's folder, recorded as a file the config names.
    fn path(&mut self, p: &str, span: &Range<usize>) -> PathBuf {
        let p = Path::new(p);
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        let location = self.loc(span);
        self.files.push(FileRef {
            path: path.clone(),
            location,
        });
        path
    }

    fn u32_(
        &mut self,
        f: &Option<Field<i64>>,
        key: &str,
        section: &str,
        min: u32,
    ) -> Option<(u32, Range<usize>)> {
        self.u32_at(f.as_ref()?, key, section, min)
    }

    fn u32_at(
        &mut self,
        f: &Field<i64>,
        key: &str,
        section: &str,
        min: u32,
    ) -> Option<(u32, Range<usize>)> {
        let (n, span) = self.value(f, key, section).map(|(n, sp)| (*n, sp))?;
        match u32::try_from(n) {
            Ok(n) if n >= min => Some((n, span)),
            _ => {
                self.error(
                    span,
                    format!(
                        "`{key}` in {section} must be an integer from {min} to {}",
                        u32::MAX
                    ),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        f: &Option<Field<String>>,
        key: &str,
        section: &str,
    ) -> Option<(Duration, Range<usize>)> {
        let (s, span) = self.string(f, key, section)?;
        match units::parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.error(
                    span,
                    format!("`{key}` in {section} must be longer than zero"),
                );
                None
            }
            Ok(d) => Some((d, span)),
            Err(e) => {
                self.error(span, format!("`{key}` in {section}: {e}"));
                None
            }
        }
    }

    fn principals(
        &mut self,
        f: &Option<Field<Strings>>,
        key: &str,
        section: &str,
    ) -> Option<(Vec<Principal>, Range<usize>)> {
        let (items, span) = self.strings(f, key, section)?;
        let mut out = Vec::new();
        for (s, sp) in items {
            match parse_principal(s) {
                Ok(p) if out.contains(&p) => {
                    self.warn(sp, format!("`{s}` is listed twice in `{key}`"))
                }
                Ok(p) => out.push(p),
                Err(e) => self.error(sp, e),
            }
        }
        Some((out, span))
    }

    /// A list of header names (lowercase; one listed twice is warned about and kept once);
    /// `None` when `key` is absent.
    fn header_names(
        &mut self,
        f: &Option<Field<Strings>>,
        key: &str,
        section: &str,
    ) -> Option<Vec<HeaderName>> {
        let (items, _) = self.strings(f, key, section)?;
        let mut out: Vec<HeaderName> = Vec::new();
        for (h, sp) in items {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if out.contains(&n) => {
                    self.warn(sp, format!("`{h}` is listed twice in `{key}`"))
                }
                Ok(n) => out.push(n),
                Err(_) => self.error(
                    sp,
                    format!("`{key}` in {section}: `{h}` is not a header name"),
                ),
            }
        }
        Some(out)
    }

    fn cidrs(&mut self, f: &Option<Field<Strings>>, key: &str, section: &str) -> Vec<IpNet> {
        let Some((items, _)) = self.strings(f, key, section) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (s, sp) in items {
            match parse_cidr(s) {
                Ok((net, truncated)) => {
                    if truncated {
                        self.warn(sp, format!("`{s}` has host bits set; it means {net}"));
                    }
                    out.push(net);
                }
                Err(e) => self.error(sp, e),
            }
        }
        out
    }

    fn methods(
        &mut self,
        f: &Option<Field<Strings>>,
        key: &str,
        section: &str,
    ) -> Option<Vec<Method>> {
        let (items, span) = self.strings(f, key, section)?;
        if items.is_empty() {
            self.error(span, format!("`{key}` in {section} is empty, so nothing would match; leave it out to match any method"));
        }
        let mut out: Vec<Method> = Vec::new();
        for (s, sp) in items {
            let upper = s.to_ascii_uppercase();
            if upper != s {
                self.warn(
                    sp.clone(),
                    format!("method `{s}` should be written in uppercase; read as `{upper}`"),
                );
            }
            match Method::from_bytes(upper.as_bytes()) {
                Ok(m) if !upper.is_empty() => {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
                _ => self.error(sp, format!("invalid method `{s}`")),
            }
        }
        Some(out)
    }

    fn path_value(
        &mut self,
        f: &Option<Field<String>>,
        key: &str,
        section: &str,
    ) -> Option<PathBuf> {
        let (s, span) = self.string(f, key, section)?;
        if s.is_empty() {
            self.error(span, format!("`{key}` in {section} is empty"));
            return None;
        }
        Some(self.path(s, &span))
    }

    /// A nested table: its keys checked as `section`.
    fn table<'a, R: serde::de::DeserializeOwned>(
        &mut self,
        f: &'a Option<Field<Table<R>>>,
        key: &str,
        parent: &str,
        section: &str,
    ) -> Option<(&'a Table<R>, Range<usize>)> {
        let (t, span) = self.get(f, key, parent)?;
        self.keys(t, section);
        Some((t, span))
    }

    // === sections ===

    fn config(&mut self, doc: &Table<RawConfig>) -> Option<Config> {
        self.keys(doc, "the top level");
        let server = self.table(&doc.server, "server", "the top level", "[server]");
        let server = self.server(server.map_or(&Table::empty(), |t| t.0));
        let store = self.table(&doc.store, "store", "the top level", "[store]");
        let store = self.store(store.map_or(&Table::empty(), |t| t.0));
        let approvals = self.table(&doc.approvals, "approvals", "the top level", "[approvals]");
        let approvals = self.approvals(approvals.map_or(&Table::empty(), |t| t.0));
        let identity = match self.table(&doc.identity, "identity", "the top level", "[identity]") {
            Some((t, _)) => self.identity(t),
            None => Some(Identity::default()),
        };
        let admin = match self.table(&doc.admin, "admin", "the top level", "[admin]") {
            Some((t, _)) => self.admin(t),
            None => Some(Admin::default()),
        };
        let audit = self.table(&doc.audit, "audit", "the top level", "[audit]");
        let audit = self.audit(audit.map_or(&Table::empty(), |t| t.0));
        let log = self.table(&doc.log, "log", "the top level", "[log]");
        let log = self.log(log.map_or(&Table::empty(), |t| t.0));
        let upstreams = self.upstreams(doc);
        let notify = self.notify(doc);
        self.channels = doc
            .notify
            .iter()
            .filter_map(|f| f.value.as_ref().ok())
            .flatten()
            .filter_map(|c| c.value.as_ref().ok()?.name.as_ref()?.value.as_ref().ok())
            .cloned()
            .collect();
        let routes = self.routes(doc, &upstreams, approvals.as_ref());
        if let (Some(id), Some(srv)) = (&identity, &server) {
            self.check_identifiable(doc, &routes, id, !srv.trusted_proxies.is_empty());
        }
        // Shadowing is judged on every route that compiled, even when other parts of the
        // file have errors, so one `check` reports everything there is to fix.
        self.diags.extend(crate::shadow::analyse(&routes));
        Some(Config {
            server: server?,
            store: store?,
            approvals: approvals?,
            identity: identity?,
            admin: admin?,
            audit: audit?,
            log: log?,
            upstreams,
            routes,
            notify: notify?,
            files: {
                let mut files = std::mem::take(&mut self.files);
                files.sort_by_key(|f| (f.location.line, f.location.column));
                files
            },
        })
    }

    /// Routes whose policies name requesters the table has no way to know:
    /// - one that refuses anonymous requesters (`mode = "access"`, `require_identity`) with
    ///   no way to identify one ([identity.jwt], or [identity.headers] believed from
    ///   `trusted_proxies`) would refuse every request: an error at its `[routes.approval]`;
    /// - `break_glass` groups with no way for a requester to carry a group (the JWT groups
    ///   claim, or the trusted `groups` identity header) overlap nobody: every emergency
    ///   would be refused 403, found out during the emergency. An error at `break_glass`.
    fn check_identifiable(
        &mut self,
        doc: &Table<RawConfig>,
        routes: &[Route],
        id: &Identity,
        trusted_proxies: bool,
    ) {
        // Identity headers are believed only from `trusted_proxies`: without any, nobody is
        // identified by them.
        let trusted_headers = id.headers.as_ref().filter(|_| trusted_proxies);
        let identified = id.jwt.is_some() || trusted_headers.is_some();
        let grouped = id.jwt.is_some() || trusted_headers.is_some_and(|h| h.groups.is_some());
        if identified && grouped {
            return;
        }
        let approval_of = |name: &str| -> Option<&Field<Table<approval::RawApproval>>> {
            doc.routes
                .iter()
                .filter_map(|f| f.value.as_ref().ok())
                .flatten()
                .filter_map(|t| t.value.as_ref().ok())
                .find(|t| matches!(&t.name, Some(Field { value: Ok(n), .. }) if n == name))?
                .approval
                .as_ref()
        };
        for r in routes {
            let Some(p) = &r.approval else { continue };
            let raw = approval_of(&r.name);
            if !identified && (p.require_identity || p.mode == ApprovalMode::Access) {
                let what = if p.mode == ApprovalMode::Access {
                    "mode = \"access\""
                } else {
                    "`require_identity`"
                };
                self.error(
                    raw.map_or(0..0, |f| f.span.clone()),
                    format!("route {}: {what} needs identified requesters, but neither [identity.jwt] nor [identity.headers] with [server] trusted_proxies is configured: every request would be refused 401", r.name),
                );
            }
            if !grouped && !p.break_glass_groups.is_empty() {
                let span = raw
                    .and_then(|f| f.value.as_ref().ok())
                    .and_then(|t| span_of(&t.break_glass))
                    .unwrap_or(0..0);
                self.error(
                    span,
                    format!("route {}: `break_glass` groups overlap nobody: no requester can carry a group without [identity.jwt] (its `groups_claim`) or [identity.headers] `groups` with [server] trusted_proxies, so every emergency would be refused 403", r.name),
                );
            }
        }
    }

    fn error_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// The default problem+json body of a `[routes.error]` that sets only `status`.
fn default_problem_body(status: StatusCode) -> String {
    let title = status.canonical_reason().unwrap_or("Error");
    format!(
        "{{\"type\":\"about:blank\",\"title\":\"{title}\",\"status\":{},\"detail\":\"{{reason}}\",\"rule\":\"{{rule}}\",\"ticket\":\"{{ticket}}\"}}",
        status.as_u16()
    )
}

#[cfg(test)]
mod tests;
