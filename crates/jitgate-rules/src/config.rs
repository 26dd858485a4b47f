//! The whole `proxy.toml` model: server, store, approvals, identity, admin, upstreams, routes.
//!
//! Parsing keeps spans so every error points at `file:line:column`; see [`crate::RuleTable::parse`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::route::{Principal, Route};

mod notify;
pub use notify::{Notify, NotifyKind, NOTIFY_EVENTS};

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
// The file is parsed with `toml::de::DeTable`, which keeps the span of every key and value,
// and walked by hand so that every problem is reported (not just the first) and unknown keys
// are caught with their location. Nothing is read from disk: relative paths are only joined
// to the config file's folder.
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

use http::{HeaderName, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diag::{Diagnostic, Location, Severity};
use crate::route::{
    Action, ApprovalMode, ApprovalPolicy, AutoApprove, ErrorTemplate, HeaderRule, HostPattern,
    MethodSet, PathPattern, Segment,
};
use crate::units;

type Val<'i> = Spanned<DeValue<'i>>;
type SpannedStr<'a> = (&'a str, Range<usize>);

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
    let config = cx.config(doc.get_ref());
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

const TOP_KEYS: &[&str] = &[
    "server",
    "store",
    "approvals",
    "identity",
    "admin",
    "audit",
    "log",
    "upstreams",
    "routes",
    "notify",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "admin_allow_remote",
    "tls",
    "trusted_proxies",
    "header_read_timeout",
    "shutdown_grace",
    "watch",
    "max_connections",
];
const STORE_KEYS: &[&str] = &["kind", "url", "retention"];
const AUDIT_KEYS: &[&str] = &["file"];
const LOG_KEYS: &[&str] = &["access"];
const APPROVALS_KEYS: &[&str] = &[
    "hold_timeout",
    "ticket_ttl",
    "token_ttl",
    "max_held_body",
    "signing_key",
    "reconcile_interval",
    "max_pending",
    "max_pending_per_source",
    "max_pending_per_user",
    "risk",
];
const RISK_KEYS: &[&str] = &[
    "business_hours",
    "time_zone",
    "off_hours",
    "new_source",
    "rate_above",
    "rate",
    "methods",
    "body_above",
    "large_body",
];
const IDENTITY_KEYS: &[&str] = &["jwt", "headers", "credential_headers"];
const JWT_KEYS: &[&str] = &[
    "issuer",
    "audience",
    "hs256_secret_env",
    "public_keys",
    "jwks_file",
    "groups_claim",
];
const ADMIN_KEYS: &[&str] = &["operators", "jwt", "api_tokens", "public_url"];
const TOKEN_KEYS: &[&str] = &["name", "user", "sha256", "groups"];
const UPSTREAM_KEYS: &[&str] = &[
    "name",
    "url",
    "protocol",
    "ca_file",
    "preserve_host",
    "connect_timeout",
    "response_timeout",
    "idle_timeout",
    "pool_idle_timeout",
    "pool_max_idle",
];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "methods",
    "host",
    "path",
    "headers",
    "source",
    "upstream",
    "action",
    "case_insensitive",
    "allow_encoded_slash",
    "allow_path_params",
    "enforce",
    "error",
    "approval",
];
const ERROR_KEYS: &[&str] = &["status", "content_type", "body"];
const APPROVAL_KEYS: &[&str] = &[
    "approvers",
    "quorum",
    "self_approval",
    "mode",
    "require_identity",
    "hold_timeout",
    "ticket_ttl",
    "token_ttl",
    "token_uses",
    "durations",
    "default_duration",
    "max_duration",
    "max_uses",
    "max_pending_per_requester",
    "max_also_uses",
    "max_also_within",
    "break_glass",
    "escalate_after",
    "escalate_to",
    "remind_before",
    "auto_approve",
    "approve_above_rate",
    "volatile_headers",
    "notify",
    "chat_approval",
];
const AUTO_KEYS: &[&str] = &[
    "name",
    "path_prefix",
    "methods",
    "users",
    "groups",
    "source",
    "headers",
    "duration_below",
    "window",
    "time_zone",
    "max_duration",
    "max_uses",
    "risk_below",
];
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

    fn check_keys(&mut self, t: &DeTable<'_>, section: &str, allowed: &[&str]) {
        for (k, _) in t.iter() {
            let key: &str = k.get_ref();
            if !allowed.contains(&key) {
                let hint = suggest(key, allowed)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.error(k.span(), format!("unknown key `{key}` in {section}{hint}"));
            }
        }
    }

    fn type_error(&mut self, v: &Val<'_>, key: &str, section: &str, want: &str) {
        let found = v.get_ref().type_str();
        self.error(
            v.span(),
            format!("`{key}` in {section} must be {want}, not {found}"),
        );
    }

    fn str_<'a>(
        &mut self,
        t: &'a DeTable<'_>,
        key: &str,
        section: &str,
    ) -> Option<(&'a str, Range<usize>)> {
        let v = t.get(key)?;
        match v.get_ref().as_str() {
            Some(s) => Some((s, v.span())),
            None => {
                self.type_error(v, key, section, "a string");
                None
            }
        }
    }

    fn bool_(&mut self, t: &DeTable<'_>, key: &str, section: &str) -> Option<(bool, Range<usize>)> {
        let v = t.get(key)?;
        match v.get_ref().as_bool() {
            Some(b) => Some((b, v.span())),
            None => {
                self.type_error(v, key, section, "true or false");
                None
            }
        }
    }

    fn int_(&mut self, t: &DeTable<'_>, key: &str, section: &str) -> Option<(i64, Range<usize>)> {
        let v = t.get(key)?;
        let parsed = v
            .get_ref()
            .as_integer()
            .map(|i| i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()));
        match parsed {
            Some(Ok(n)) => Some((n, v.span())),
            Some(Err(_)) => {
                self.error(v.span(), format!("`{key}` in {section} is out of range"));
                None
            }
            None => {
                self.type_error(v, key, section, "an integer");
                None
            }
        }
    }

    fn u32_(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        section: &str,
        min: u32,
    ) -> Option<(u32, Range<usize>)> {
        let (n, span) = self.int_(t, key, section)?;
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
        t: &DeTable<'_>,
        key: &str,
        section: &str,
    ) -> Option<(Duration, Range<usize>)> {
        let (s, span) = self.str_(t, key, section)?;
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

    fn list<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        key: &str,
        section: &str,
    ) -> Option<(&'a [Val<'i>], Range<usize>)> {
        let v = t.get(key)?;
        match v.get_ref().as_array() {
            Some(a) => Some((a.as_ref(), v.span())),
            None => {
                self.type_error(v, key, section, "an array");
                None
            }
        }
    }

    fn str_list<'a>(
        &mut self,
        t: &'a DeTable<'_>,
        key: &str,
        section: &str,
    ) -> Option<(Vec<SpannedStr<'a>>, Range<usize>)> {
        let (items, span) = self.list(t, key, section)?;
        let mut out = Vec::new();
        for v in items {
            match v.get_ref().as_str() {
                Some(s) => out.push((s, v.span())),
                None => self.type_error(v, &format!("{key}[..]"), section, "a string"),
            }
        }
        Some((out, span))
    }

    fn table<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        key: &str,
        section: &str,
    ) -> Option<(&'a DeTable<'i>, Range<usize>)> {
        let v = t.get(key)?;
        match v.get_ref().as_table() {
            Some(t) => Some((t, v.span())),
            None => {
                self.type_error(v, key, section, "a table");
                None
            }
        }
    }

    fn tables<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        key: &str,
        section: &str,
    ) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
        let Some((items, _)) = self.list(t, key, section) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for v in items {
            match v.get_ref().as_table() {
                Some(t) => out.push((t, v.span())),
                None => self.type_error(v, key, section, "an array of tables"),
            }
        }
        out
    }

    fn principals(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        section: &str,
    ) -> Option<(Vec<Principal>, Range<usize>)> {
        let (items, span) = self.str_list(t, key, section)?;
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
        t: &DeTable<'_>,
        key: &str,
        section: &str,
    ) -> Option<Vec<HeaderName>> {
        let (items, _) = self.str_list(t, key, section)?;
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

    fn cidrs(&mut self, t: &DeTable<'_>, key: &str, section: &str) -> Vec<IpNet> {
        let Some((items, _)) = self.str_list(t, key, section) else {
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

    fn methods(&mut self, t: &DeTable<'_>, key: &str, section: &str) -> Option<Vec<Method>> {
        let (items, span) = self.str_list(t, key, section)?;
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

    fn path_value(&mut self, t: &DeTable<'_>, key: &str, section: &str) -> Option<PathBuf> {
        let (s, span) = self.str_(t, key, section)?;
        if s.is_empty() {
            self.error(span, format!("`{key}` in {section} is empty"));
            return None;
        }
        Some(self.path(s, &span))
    }

    // === sections ===

    fn config(&mut self, doc: &DeTable<'_>) -> Option<Config> {
        self.check_keys(doc, "the top level", TOP_KEYS);
        let server = self.server(doc);
        let store = self.store(doc);
        let approvals = self.approvals(doc);
        let identity = self.identity(doc);
        let admin = self.admin(doc);
        let audit = self.audit(doc);
        let log = self.log(doc);
        let upstreams = self.upstreams(doc);
        let notify = self.notify(doc);
        self.channels = doc
            .get("notify")
            .and_then(|v| v.get_ref().as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get_ref().as_table()?.get("name")?.get_ref().as_str())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
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

    /// A route that refuses anonymous requesters (`mode = "access"`, `require_identity`) in a
    /// table with no way to identify one ([identity.jwt], or [identity.headers] believed from
    /// `trusted_proxies`) would refuse every request: an error at its `[routes.approval]`.
    fn check_identifiable(
        &mut self,
        doc: &DeTable<'_>,
        routes: &[Route],
        id: &Identity,
        trusted_proxies: bool,
    ) {
        // Identity headers are believed only from `trusted_proxies`: without any, nobody is
        // identified by them.
        if id.jwt.is_some() || (id.headers.is_some() && trusted_proxies) {
            return;
        }
        let Some(tables) = doc.get("routes").and_then(|v| v.get_ref().as_array()) else {
            return;
        };
        for r in routes {
            let Some(p) = &r.approval else { continue };
            if !(p.require_identity || p.mode == ApprovalMode::Access) {
                continue;
            }
            let span = tables.iter().find_map(|t| {
                let t = t.get_ref().as_table()?;
                (t.get("name")?.get_ref().as_str()? == r.name)
                    .then(|| t.get("approval").map(|a| a.span()))?
            });
            let what = if p.mode == ApprovalMode::Access {
                "mode = \"access\""
            } else {
                "`require_identity`"
            };
            self.error(
                span.unwrap_or(0..0),
                format!("route {}: {what} needs identified requesters, but neither [identity.jwt] nor [identity.headers] with [server] trusted_proxies is configured: every request would be refused 401", r.name),
            );
        }
    }

    fn section<'a, 'i>(
        &mut self,
        doc: &'a DeTable<'i>,
        key: &str,
        keys: &[&str],
    ) -> Option<&'a DeTable<'i>> {
        let (t, _) = self.table(doc, key, "the top level")?;
        self.check_keys(t, &format!("[{key}]"), keys);
        Some(t)
    }

    fn server(&mut self, doc: &DeTable<'_>) -> Option<Server> {
        let empty = DeTable::new();
        let t = self.section(doc, "server", SERVER_KEYS).unwrap_or(&empty);
        let sec = "[server]";
        let mut ok = true;
        let addr = |cx: &mut Self,
                    key: &str,
                    default: &str|
         -> Option<(SocketAddr, Option<Range<usize>>)> {
            match cx.str_(t, key, sec) {
                None => SocketAddr::from_str(default).ok().map(|a| (a, None)),
                Some((s, span)) => match SocketAddr::from_str(s) {
                    Ok(a) => Some((a, Some(span))),
                    Err(_) => {
                        cx.error(span, format!("`{key}` in [server] must be IP:PORT (e.g. \"{default}\"), not `{s}`"));
                        None
                    }
                },
            }
        };
        let listen = addr(self, "listen", DEFAULT_LISTEN);
        let admin_listen = addr(self, "admin_listen", DEFAULT_ADMIN_LISTEN);
        let admin_allow_remote = self
            .bool_(t, "admin_allow_remote", sec)
            .is_some_and(|b| b.0);
        if let (Some((l, _)), Some((a, aspan))) = (&listen, &admin_listen) {
            let span = aspan.clone().unwrap_or(0..0);
            if l.port() == a.port()
                && l.port() != 0
                && (l.ip() == a.ip() || l.ip().is_unspecified() || a.ip().is_unspecified())
            {
                self.error(span.clone(), format!("`admin_listen` ({a}) must differ from `listen` ({l}): the admin plane never shares the data port"));
                ok = false;
            }
            if !a.ip().is_loopback() && !admin_allow_remote {
                self.error(span, format!("`admin_listen` ({a}) is not a loopback address; set `admin_allow_remote = true` to expose the admin plane"));
                ok = false;
            }
        }
        let tls = match self.table(t, "tls", sec) {
            None => None,
            Some((tt, span)) => {
                self.check_keys(tt, "[server.tls]", &["cert", "key"]);
                let cert = self.path_value(tt, "cert", "[server.tls]");
                let key = self.path_value(tt, "key", "[server.tls]");
                if !tt.contains_key("cert") || !tt.contains_key("key") {
                    self.error(span, "`tls` in [server] needs both `cert` and `key`");
                    ok = false;
                }
                match (cert, key) {
                    (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
        };
        let trusted_proxies = self.cidrs(t, "trusted_proxies", sec);
        let header_read_timeout = self
            .duration(t, "header_read_timeout", sec)
            .map_or(secs(10), |d| d.0);
        let shutdown_grace = self
            .duration(t, "shutdown_grace", sec)
            .map_or(secs(30), |d| d.0);
        let watch = self.bool_(t, "watch", sec).is_none_or(|b| b.0);
        let max_connections = self
            .u32_(t, "max_connections", sec, 1)
            .map(|n| n.0 as usize);
        let (listen, admin_listen) = (listen?.0, admin_listen?.0);
        ok.then_some(Server {
            listen,
            admin_listen,
            admin_allow_remote,
            tls,
            trusted_proxies,
            header_read_timeout,
            shutdown_grace,
            watch,
            max_connections,
        })
    }

    fn store(&mut self, doc: &DeTable<'_>) -> Option<Store> {
        let empty = DeTable::new();
        let t = self.section(doc, "store", STORE_KEYS).unwrap_or(&empty);
        let sec = "[store]";
        let kind = self.str_(t, "kind", sec);
        let url = self.str_(t, "url", sec);
        let retention = self.duration(t, "retention", sec);
        match kind.as_ref().map(|k| k.0) {
            None | Some("memory") => {
                if let Some((_, span)) = url {
                    self.warn(span, "`url` in [store] is ignored with kind = \"memory\"");
                }
                Some(Store::Memory {
                    retention: retention.map_or(secs(86_400), |d| d.0),
                })
            }
            Some("redis") => {
                let Some((u, span)) = url else {
                    let span = kind.map_or(0..0, |k| k.1);
                    self.error(
                        span,
                        "[store] kind = \"redis\" needs `url` (redis:// or rediss://)",
                    );
                    return None;
                };
                const SCHEMES: [&str; 6] = [
                    "redis://",
                    "rediss://",
                    "redis+sentinel://",
                    "rediss+sentinel://",
                    "redis+cluster://",
                    "rediss+cluster://",
                ];
                if !SCHEMES.iter().any(|s| u.starts_with(s)) || SCHEMES.contains(&u) {
                    self.error(span, format!("`url` in [store] must be a redis:// or rediss:// URL (or +sentinel / +cluster), not `{u}`"));
                    return None;
                }
                Some(Store::Redis {
                    url: u.to_string(),
                    retention: retention.map_or(secs(86_400), |d| d.0),
                })
            }
            Some(other) => {
                let span = kind.map_or(0..0, |k| k.1);
                self.error(
                    span,
                    format!("`kind` in [store] must be \"memory\" or \"redis\", not `{other}`"),
                );
                None
            }
        }
    }

    fn audit(&mut self, doc: &DeTable<'_>) -> Option<Audit> {
        let empty = DeTable::new();
        let t = self.section(doc, "audit", AUDIT_KEYS).unwrap_or(&empty);
        let file = match t.get("file") {
            None => None,
            Some(_) => Some(self.path_value(t, "file", "[audit]")?),
        };
        Some(Audit { file })
    }

    fn log(&mut self, doc: &DeTable<'_>) -> Option<Log> {
        let empty = DeTable::new();
        let t = self.section(doc, "log", LOG_KEYS).unwrap_or(&empty);
        let access = match self.str_(t, "access", "[log]") {
            None if t.contains_key("access") => return None,
            None | Some(("text", _)) => AccessLog::Text,
            Some(("json", _)) => AccessLog::Json,
            Some(("off", _)) => AccessLog::Off,
            Some((other, span)) => {
                self.error(
                    span,
                    format!(
                        "`access` in [log] must be \"text\", \"json\" or \"off\", not `{other}`"
                    ),
                );
                return None;
            }
        };
        Some(Log { access })
    }

    fn approvals(&mut self, doc: &DeTable<'_>) -> Option<Approvals> {
        let empty = DeTable::new();
        let t = self
            .section(doc, "approvals", APPROVALS_KEYS)
            .unwrap_or(&empty);
        let sec = "[approvals]";
        let hold_timeout = self.duration(t, "hold_timeout", sec);
        let ticket_ttl = self.duration(t, "ticket_ttl", sec);
        let token_ttl = self
            .duration(t, "token_ttl", sec)
            .map_or(secs(300), |d| d.0);
        let max_held_body = match self.str_or_int_size(t, "max_held_body", sec) {
            Some(n) => n,
            None if t.contains_key("max_held_body") => return None,
            None => 1 << 20,
        };
        let signing_key = self.path_value(t, "signing_key", sec);
        let reconcile_interval = match self.duration(t, "reconcile_interval", sec) {
            Some((d, span)) if d < Duration::from_millis(50) => {
                self.error(
                    span,
                    "`reconcile_interval` in [approvals] must be at least 50ms",
                );
                return None;
            }
            Some((d, _)) => d,
            None => secs(1),
        };
        let max_pending = self
            .u32_(t, "max_pending", sec, 1)
            .map_or(10_000, |n| u64::from(n.0));
        let max_pending_per_source = self
            .u32_(t, "max_pending_per_source", sec, 1)
            .map_or(20, |n| n.0);
        let max_pending_per_user = match self.u32_(t, "max_pending_per_user", sec, 1) {
            Some((n, span)) => {
                if u64::from(n) >= max_pending {
                    self.warn(span, "`max_pending_per_user` is not below `max_pending`: one requester can take every pending slot");
                }
                n
            }
            None => 50,
        };
        let ticket = ticket_ttl.clone().map_or(secs(900), |d| d.0);
        if let Some((h, span)) = &hold_timeout {
            if *h > ticket {
                self.warn(span.clone(), "`hold_timeout` in [approvals] is longer than `ticket_ttl`; tickets expire while clients still wait");
            }
        }
        let risk = match self.table(t, "risk", sec) {
            Some((rt, span)) => Some(self.risk(rt, span)?),
            None if t.contains_key("risk") => return None,
            None => None,
        };
        Some(Approvals {
            risk,
            hold_timeout: hold_timeout.map_or(secs(50), |d| d.0),
            ticket_ttl: ticket,
            token_ttl,
            max_held_body,
            signing_key,
            reconcile_interval,
            max_pending,
            max_pending_per_source,
            max_pending_per_user,
        })
    }

    /// `[approvals.risk]`: every weight a whole number of points, each signal with what it
    /// needs (`off_hours` with `business_hours`, `rate` with `rate_above`, `large_body` with
    /// `body_above`), and at least one weight.
    fn risk(&mut self, t: &DeTable<'_>, span: Range<usize>) -> Option<crate::policy::RiskModel> {
        let sec = "[approvals.risk]";
        self.check_keys(t, sec, RISK_KEYS);
        let before = self.error_count();
        let mut m = crate::policy::RiskModel::default();
        let points = |cx: &mut Self, key: &str| cx.u32_(t, key, sec, 0).map_or(0, |n| n.0);
        m.off_hours = points(self, "off_hours");
        m.new_source = points(self, "new_source");
        m.rate = points(self, "rate");
        m.large_body = points(self, "large_body");
        if let Some((w, sp)) = self.str_(t, "business_hours", sec) {
            match crate::policy::Window::parse(w) {
                Ok(w) => m.business_hours = Some(w),
                Err(e) => self.error(sp, e.replace("`window`", "`business_hours`")),
            }
        }
        if let Some((z, sp)) = self.str_(t, "time_zone", sec) {
            match crate::policy::Zone::get(z) {
                Ok(zone) => m.time_zone = Some(zone),
                Err(e) => self.error(sp, e),
            }
        }
        if let Some((r, sp)) = self.str_(t, "rate_above", sec) {
            match units::parse_rate(r) {
                Ok(r) => m.rate_above = Some(r),
                Err(e) => self.error(sp, e),
            }
        }
        if t.contains_key("body_above") {
            m.body_above = self.str_or_int_size(t, "body_above", sec);
        }
        if let Some((mt, _)) = self.table(t, "methods", sec) {
            for (k, _) in mt.iter() {
                let name: &str = k.get_ref();
                let Ok(method) = Method::from_bytes(name.as_bytes()) else {
                    self.error(k.span(), format!("`{name}` is not an HTTP method"));
                    continue;
                };
                if name.bytes().any(|b| b.is_ascii_lowercase()) {
                    self.error(
                        k.span(),
                        format!("`{name}`: methods are case-sensitive and upper case on the wire; write `{}`", name.to_ascii_uppercase()),
                    );
                    continue;
                }
                if let Some((n, _)) = self.u32_(mt, name, sec, 0) {
                    m.methods.push((method, n));
                }
            }
        }
        let needs = [
            (
                "off_hours",
                m.off_hours,
                "business_hours",
                m.business_hours.is_some(),
            ),
            ("rate", m.rate, "rate_above", m.rate_above.is_some()),
            (
                "large_body",
                m.large_body,
                "body_above",
                m.body_above.is_some(),
            ),
        ];
        for (weight, points, needed, present) in needs {
            if points > 0 && !present && !t.contains_key(needed) {
                if let Some(v) = t.get(weight) {
                    self.error(v.span(), format!("`{weight}` needs `{needed}`"));
                }
            }
        }
        let any = m.off_hours + m.new_source + m.rate + m.large_body > 0
            || m.methods.iter().any(|(_, p)| *p > 0);
        if !any {
            self.error(
                span,
                "[approvals.risk] gives no signal any weight: every score would be 0",
            );
        }
        (self.error_count() == before).then_some(m)
    }

    fn str_or_int_size(&mut self, t: &DeTable<'_>, key: &str, sec: &str) -> Option<u64> {
        let v = t.get(key)?;
        if v.get_ref().is_integer() {
            let (n, span) = self.int_(t, key, sec)?;
            return match u64::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(span, format!("`{key}` in {sec} must not be negative"));
                    None
                }
            };
        }
        let (s, span) = self.str_(t, key, sec)?;
        match units::parse_size(s) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(span, format!("`{key}` in {sec}: {e}"));
                None
            }
        }
    }

    fn jwt(&mut self, t: &DeTable<'_>, span: Range<usize>, sec: &str) -> Option<JwtConfig> {
        self.check_keys(t, sec, JWT_KEYS);
        let issuer = self.str_(t, "issuer", sec).map(|s| s.0.to_string());
        let audience = self.str_(t, "audience", sec).map(|s| s.0.to_string());
        let hs256_secret_env = self.str_(t, "hs256_secret_env", sec).and_then(|(s, sp)| {
            let valid = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !s.as_bytes()[0].is_ascii_digit();
            if !valid {
                self.error(sp, format!("`hs256_secret_env` in {sec} must be an environment variable name, not `{s}`"));
            }
            valid.then(|| s.to_string())
        });
        let public_keys = self
            .str_list(t, "public_keys", sec)
            .map(|(ks, _)| {
                ks.into_iter()
                    .map(|(k, sp)| self.path(k, &sp))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let jwks_file = self.path_value(t, "jwks_file", sec);
        let groups_claim = self
            .str_(t, "groups_claim", sec)
            .map_or_else(|| "groups".to_string(), |s| s.0.to_string());
        if !["hs256_secret_env", "public_keys", "jwks_file"]
            .iter()
            .any(|k| t.contains_key(*k))
        {
            self.error(
                span,
                format!("{sec} needs a key: `hs256_secret_env`, `public_keys` or `jwks_file`"),
            );
            return None;
        }
        Some(JwtConfig {
            issuer,
            audience,
            hs256_secret_env,
            public_keys,
            jwks_file,
            groups_claim,
        })
    }

    fn identity(&mut self, doc: &DeTable<'_>) -> Option<Identity> {
        let Some(t) = self.section(doc, "identity", IDENTITY_KEYS) else {
            return Some(Identity::default());
        };
        let mut ok = true;
        let mut credential_headers = self
            .header_names(t, "credential_headers", "[identity]")
            .unwrap_or_else(|| Identity::default().credential_headers);
        credential_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let jwt = match self.table(t, "jwt", "[identity]") {
            Some((jt, span)) => {
                let j = self.jwt(jt, span, "[identity.jwt]");
                ok &= j.is_some();
                j
            }
            None => None,
        };
        let headers = match self.table(t, "headers", "[identity]") {
            Some((ht, span)) => {
                let sec = "[identity.headers]";
                self.check_keys(ht, sec, &["user", "groups"]);
                let header = |cx: &mut Self, key: &str| {
                    cx.str_(ht, key, sec).and_then(|(s, sp)| {
                        match HeaderName::from_bytes(s.as_bytes()) {
                            Ok(h) => Some(h.as_str().to_string()),
                            Err(_) => {
                                cx.error(
                                    sp,
                                    format!("`{key}` in {sec} must be a header name, not `{s}`"),
                                );
                                None
                            }
                        }
                    })
                };
                let user = header(self, "user");
                let groups = header(self, "groups");
                if user.is_none() {
                    if !ht.contains_key("user") {
                        self.error(span, "[identity.headers] needs `user`");
                    }
                    ok = false;
                }
                user.map(|user| IdentityHeaders { user, groups })
            }
            None => None,
        };
        ok.then_some(Identity {
            jwt,
            headers,
            credential_headers,
        })
    }

    fn admin(&mut self, doc: &DeTable<'_>) -> Option<Admin> {
        let Some(t) = self.section(doc, "admin", ADMIN_KEYS) else {
            return Some(Admin::default());
        };
        let sec = "[admin]";
        let mut ok = true;
        let operators = self
            .principals(t, "operators", sec)
            .map(|p| p.0)
            .unwrap_or_default();
        let jwt = match self.table(t, "jwt", sec) {
            Some((jt, span)) => {
                let j = self.jwt(jt, span, "[admin.jwt]");
                ok &= j.is_some();
                j
            }
            None => None,
        };
        let mut api_tokens: Vec<ApiToken> = Vec::new();
        for (tt, span) in self.tables(t, "api_tokens", sec) {
            let tsec = "[[admin.api_tokens]]";
            self.check_keys(tt, tsec, TOKEN_KEYS);
            let name = self.str_(tt, "name", tsec);
            let user = self.str_(tt, "user", tsec);
            let sha = self.str_(tt, "sha256", tsec);
            let groups = self
                .str_list(tt, "groups", tsec)
                .map(|g| g.0.into_iter().map(|(s, _)| s.to_string()).collect())
                .unwrap_or_default();
            match &name {
                None => {
                    self.error(span.clone(), "an api token needs `name`");
                    ok = false;
                }
                Some((n, sp)) if !is_name(n) => {
                    self.error(
                        sp.clone(),
                        format!(
                            "api token name `{n}` may only use letters, digits, `-`, `_` and `.`"
                        ),
                    );
                    ok = false;
                }
                Some((n, sp)) if api_tokens.iter().any(|t| t.name == *n) => {
                    self.error(sp.clone(), format!("api token name `{n}` is used twice"));
                    ok = false;
                }
                _ => {}
            }
            let user = match user {
                None => {
                    if !tt.contains_key("user") {
                        self.error(span.clone(), "an api token needs `user`, the person it acts as (two tokens of one person name the same user, so they count as one approver)");
                    }
                    None
                }
                Some((u, sp))
                    if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    self.error(
                        sp,
                        format!("api token user `{u}` must be a non-empty name without spaces"),
                    );
                    None
                }
                Some((u, _)) => Some(u.to_string()),
            };
            let sha = match sha {
                None => {
                    self.error(
                        span,
                        "an api token needs `sha256` (the hex SHA-256 of the token)",
                    );
                    None
                }
                Some((s, sp)) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    self.error(sp, "`sha256` of an api token must be 64 hex digits (the SHA-256 of the token, never the token itself)");
                    None
                }
                Some((s, _)) => Some(s.to_ascii_lowercase()),
            };
            match (name, user, sha) {
                (Some((n, _)), Some(user), Some(sha256)) => api_tokens.push(ApiToken {
                    name: n.to_string(),
                    user,
                    sha256,
                    groups,
                }),
                _ => ok = false,
            }
        }
        let public_url = match self.str_(t, "public_url", sec) {
            None => {
                ok &= !t.contains_key("public_url");
                None
            }
            Some((u, sp)) => match u.parse::<Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some_and(|h| !h.is_empty())
                        && uri.query().is_none() =>
                {
                    Some(uri)
                }
                _ => {
                    self.error(sp, format!("`public_url` in [admin] must be an http(s) URL such as https://jitgate-admin.example.com, not `{u}`"));
                    ok = false;
                    None
                }
            },
        };
        ok.then_some(Admin {
            operators,
            jwt,
            api_tokens,
            public_url,
        })
    }

    fn upstreams(&mut self, doc: &DeTable<'_>) -> Vec<Upstream> {
        let mut out: Vec<Upstream> = Vec::new();
        for (t, span) in self.tables(doc, "upstreams", "the top level") {
            let sec = "[[upstreams]]";
            self.check_keys(t, sec, UPSTREAM_KEYS);
            let name = match self.str_(t, "name", sec) {
                None => {
                    if !t.contains_key("name") {
                        self.error(span.clone(), "an upstream needs `name`");
                    }
                    None
                }
                Some((n, sp)) if !is_name(n) => {
                    self.error(
                        sp,
                        format!(
                            "upstream name `{n}` may only use letters, digits, `-`, `_` and `.`"
                        ),
                    );
                    None
                }
                Some((n, sp)) if out.iter().any(|u| u.name == n) => {
                    self.error(sp, format!("upstream name `{n}` is used twice"));
                    None
                }
                Some((n, _)) => Some(n.to_string()),
            };
            let url = match self.str_(t, "url", sec) {
                None => {
                    if !t.contains_key("url") {
                        self.error(span.clone(), "an upstream needs `url`");
                    }
                    None
                }
                Some((u, sp)) => match check_upstream_url(u) {
                    Ok(uri) => Some(uri),
                    Err(e) => {
                        self.error(sp, e);
                        None
                    }
                },
            };
            let protocol = match self.str_(t, "protocol", sec) {
                None => Some(UpstreamProtocol::Auto),
                Some(("auto", _)) => Some(UpstreamProtocol::Auto),
                Some(("http1", _)) => Some(UpstreamProtocol::Http1),
                Some(("h2", _)) => Some(UpstreamProtocol::H2),
                Some((p, sp)) => {
                    self.error(sp, format!("`protocol` in [[upstreams]] must be \"auto\", \"http1\" or \"h2\", not `{p}`"));
                    None
                }
            };
            let ca_file = self.path_value(t, "ca_file", sec);
            if let (Some(_), Some(u)) = (&ca_file, &url) {
                if u.scheme_str() != Some("https") {
                    if let Some(v) = t.get("ca_file") {
                        self.warn(v.span(), "`ca_file` is only used with an https:// upstream");
                    }
                }
            }
            let preserve_host = self.bool_(t, "preserve_host", sec).is_none_or(|b| b.0);
            let connect_timeout = self
                .duration(t, "connect_timeout", sec)
                .map_or(secs(5), |d| d.0);
            let response_timeout = self
                .duration(t, "response_timeout", sec)
                .map_or(secs(60), |d| d.0);
            let idle_timeout = self
                .duration(t, "idle_timeout", sec)
                .map_or(secs(60), |d| d.0);
            let pool_idle_timeout = self
                .duration(t, "pool_idle_timeout", sec)
                .map_or(secs(90), |d| d.0);
            let pool_max_idle = self
                .u32_(t, "pool_max_idle", sec, 0)
                .map_or(256, |n| n.0 as usize);
            if let (Some(name), Some(url), Some(protocol)) = (name, url, protocol) {
                out.push(Upstream {
                    name,
                    url,
                    protocol,
                    ca_file,
                    preserve_host,
                    connect_timeout,
                    response_timeout,
                    idle_timeout,
                    pool_idle_timeout,
                    pool_max_idle,
                });
            } else {
                // Keep the name known so routes naming it are not reported as well.
                if let Some(n) = t.get("name").and_then(|v| v.get_ref().as_str()) {
                    self.broken_upstreams.push(n.to_string());
                }
            }
        }
        out
    }
}

fn check_upstream_url(u: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("upstream `url` `{u}` {why}");
    let uri = Uri::from_str(u).map_err(|_| bad("is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    let auth = uri.authority().ok_or_else(|| bad("has no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad(
            "must not contain user info; credentials do not belong in the config",
        ));
    }
    if auth.host().is_empty() {
        return Err(bad("has no host"));
    }
    if let Some(pq) = uri.path_and_query() {
        if pq.query().is_some() {
            return Err(bad("must not have a query"));
        }
        if !matches!(pq.path(), "" | "/") {
            return Err(bad(
                "must not have a path; requests are forwarded with their own path",
            ));
        }
    }
    Ok(uri)
}

/// SHA-256 over a normalised rendering of everything that decides what a route matches and
/// does (not its position or location), so an approval lapses when its rule is edited.
fn definition_hash(r: &Route) -> [u8; 32] {
    // Who is told about a ticket is not what was approved: changing the channels must not
    // invalidate pending approvals.
    let approval = r.approval.clone().map(|mut a| {
        a.notify = None;
        a.chat_approval = true;
        a
    });
    let def = format!(
        "name={:?}\naction={}\nupstream={:?}\nmethods={:?}\nhost={:?}\npath={:?}\nheaders={:?}\nsource={:?}\nci={}\nslash={}\nparams={}\nenforce={}\nerror={:?}\napproval={:?}\n",
        r.name,
        r.action.as_str(),
        r.upstream,
        r.methods,
        r.host,
        r.path,
        r.headers,
        r.source,
        r.case_insensitive,
        r.allow_encoded_slash,
        r.allow_path_params,
        r.enforce,
        r.error,
        approval,
    );
    Sha256::digest(def.as_bytes()).into()
}

// === routes ===

impl<'s> Cx<'s> {
    fn routes(
        &mut self,
        doc: &DeTable<'_>,
        upstreams: &[Upstream],
        approvals: Option<&Approvals>,
    ) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (i, (t, span)) in self
            .tables(doc, "routes", "the top level")
            .into_iter()
            .enumerate()
        {
            if let Some(mut r) = self.route(t, span, i, upstreams, approvals, &names) {
                names.insert(r.name.clone());
                r.index = out.len();
                r.definition_hash = definition_hash(&r);
                out.push(r);
            } else if let Some(n) = t.get("name").and_then(|v| v.get_ref().as_str()) {
                names.insert(n.to_string());
            }
        }
        if !doc.contains_key("routes") {
            self.warn(0..0, "no [[routes]]: every request will be answered 404");
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        t: &DeTable<'_>,
        span: Range<usize>,
        index: usize,
        upstreams: &[Upstream],
        approvals: Option<&Approvals>,
        names: &std::collections::HashSet<String>,
    ) -> Option<Route> {
        let sec = "[[routes]]";
        self.check_keys(t, sec, ROUTE_KEYS);
        let mut ok = true;
        let name = match self.str_(t, "name", sec) {
            None => {
                if !t.contains_key("name") {
                    self.error(span.clone(), "a route needs `name`");
                }
                None
            }
            Some((n, sp)) if !is_name(n) => {
                self.error(
                    sp,
                    format!("route name `{n}` may only use letters, digits, `-`, `_` and `.`"),
                );
                None
            }
            Some((n, sp)) if names.contains(n) => {
                self.error(sp, format!("route name `{n}` is used twice"));
                None
            }
            Some((n, _)) => Some(n.to_string()),
        };
        let action = match self.str_(t, "action", sec) {
            None => {
                if !t.contains_key("action") {
                    self.error(
                        span.clone(),
                        "a route needs `action` (allow, deny or approve)",
                    );
                }
                None
            }
            Some(("allow", _)) => Some(Action::Allow),
            Some(("deny", _)) => Some(Action::Deny),
            Some(("approve", _)) => Some(Action::Approve),
            Some((a, sp)) => {
                let hint = suggest(a, &["allow", "deny", "approve"])
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.error(
                    sp,
                    format!("`action` must be \"allow\", \"deny\" or \"approve\", not `{a}`{hint}"),
                );
                None
            }
        };
        let upstream = match self.str_(t, "upstream", sec) {
            Some((u, sp)) => {
                if !upstreams.iter().any(|x| x.name == u)
                    && !self.broken_upstreams.iter().any(|x| x == u)
                {
                    let known: Vec<&str> = upstreams.iter().map(|x| x.name.as_str()).collect();
                    let hint = suggest(u, &known)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    self.error(
                        sp,
                        format!("route upstream `{u}` is not declared in [[upstreams]]{hint}"),
                    );
                    ok = false;
                }
                Some(u.to_string())
            }
            None => {
                if t.contains_key("upstream") {
                    ok = false;
                } else if matches!(action, Some(Action::Allow | Action::Approve)) {
                    self.error(span.clone(), "an allow or approve route needs `upstream`");
                    ok = false;
                }
                None
            }
        };
        let methods = match t.get("methods") {
            None => Some(MethodSet::Any),
            Some(_) => self.methods(t, "methods", sec).map(MethodSet::Only),
        };
        let host = match self.str_(t, "host", sec) {
            None => {
                ok &= !t.contains_key("host");
                None
            }
            Some((h, sp)) => match parse_host_pattern(h) {
                Ok(h) => Some(h),
                Err(e) => {
                    self.error(sp, e);
                    ok = false;
                    None
                }
            },
        };
        let path = match self.str_(t, "path", sec) {
            None if t.contains_key("path") => None,
            None => Some(PathPattern {
                source: "/**".to_string(),
                segments: Vec::new(),
                rest: true,
            }),
            Some((p, sp)) => match parse_path_pattern(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error(sp, e);
                    None
                }
            },
        };
        let headers = match self.header_rules(t, sec) {
            Some(h) => h,
            None => {
                ok = false;
                Vec::new()
            }
        };
        let source = self.cidrs(t, "source", sec);
        let flag = |cx: &mut Self, key: &str, default: bool| {
            cx.bool_(t, key, sec).map_or(default, |b| b.0)
        };
        let case_insensitive = flag(self, "case_insensitive", false);
        let allow_encoded_slash = flag(self, "allow_encoded_slash", false);
        let allow_path_params = flag(self, "allow_path_params", false);
        let enforce = flag(self, "enforce", true);
        if !enforce && action == Some(Action::Allow) {
            if let Some(v) = t.get("enforce") {
                self.warn(
                    v.span(),
                    "`enforce = false` has no effect on an allow route",
                );
            }
        }
        let error = match self.table(t, "error", sec) {
            None => {
                ok &= !t.contains_key("error");
                None
            }
            Some((et, _)) => {
                if action == Some(Action::Allow) {
                    if let Some(v) = t.get("error") {
                        self.warn(v.span(), "[routes.error] is never used by an allow route");
                    }
                }
                let e = self.error_template(et);
                ok &= e.is_some();
                e
            }
        };
        let approval = match (self.table(t, "approval", sec), action) {
            (Some((at, asp)), Some(Action::Approve)) => {
                let a = self.approval(at, asp, approvals);
                ok &= a.is_some();
                a
            }
            (Some((_, sp)), Some(a)) => {
                self.error(
                    sp,
                    format!(
                        "[routes.approval] is only for action = \"approve\", not \"{}\"",
                        a.as_str()
                    ),
                );
                ok = false;
                None
            }
            (None, Some(Action::Approve)) => {
                if !t.contains_key("approval") {
                    self.error(
                        span.clone(),
                        "an approve route needs [routes.approval] (at least `approvers`)",
                    );
                }
                ok = false;
                None
            }
            _ => None,
        };
        let location = self.loc(&span);
        if !ok {
            return None;
        }
        Some(Route {
            index,
            name: name?,
            action: action?,
            upstream,
            methods: methods?,
            host,
            path: path?,
            headers,
            source,
            case_insensitive,
            allow_encoded_slash,
            allow_path_params,
            enforce,
            error,
            approval,
            definition_hash: [0; 32],
            location,
        })
    }

    fn error_template(&mut self, t: &DeTable<'_>) -> Option<ErrorTemplate> {
        let sec = "[routes.error]";
        self.check_keys(t, sec, ERROR_KEYS);
        let status = match self.int_(t, "status", sec) {
            None if t.contains_key("status") => return None,
            None => StatusCode::FORBIDDEN,
            Some((n, sp)) => match u16::try_from(n)
                .ok()
                .filter(|n| (400..=599).contains(n))
                .and_then(|n| StatusCode::from_u16(n).ok())
            {
                Some(s) => s,
                None => {
                    self.error(
                        sp,
                        format!("`status` in [routes.error] must be from 400 to 599, not {n}"),
                    );
                    return None;
                }
            },
        };
        let content_type = self.str_(t, "content_type", sec);
        if let Some((ct, sp)) = &content_type {
            if HeaderValue::from_str(ct).is_err() || !ct.contains('/') {
                self.error(
                    sp.clone(),
                    format!("`content_type` in [routes.error] is not a media type: `{ct}`"),
                );
                return None;
            }
        }
        match self.str_(t, "body", sec) {
            Some((body, sp)) => {
                let mut ok = true;
                for (_, name) in placeholders(body) {
                    if !ERROR_PLACEHOLDERS.contains(&name) {
                        let hint = suggest(name, &ERROR_PLACEHOLDERS)
                            .map(|s| format!("; did you mean `{{{s}}}`?"))
                            .unwrap_or_default();
                        self.error(sp.clone(), format!("unknown placeholder `{{{name}}}` in [routes.error] body; use {{ticket}}, {{reason}} or {{rule}}{hint}"));
                        ok = false;
                    }
                }
                let content_type = content_type
                    .map_or(DEFAULT_ERROR_CONTENT_TYPE.to_string(), |c| c.0.to_string());
                if placeholders(body).next().is_some()
                    && Escaping::for_content_type(&content_type).is_none()
                {
                    self.error(sp.clone(), format!("[routes.error] body uses placeholders, but jitgate cannot escape values for content type `{content_type}`; use text/plain, text/html, JSON or XML, or a body without placeholders"));
                    ok = false;
                }
                ok.then(|| ErrorTemplate {
                    status,
                    content_type,
                    body: body.to_string(),
                })
            }
            None if t.contains_key("body") => None,
            None => {
                if let Some((_, sp)) = content_type {
                    self.error(sp, "`content_type` in [routes.error] needs a `body`");
                    return None;
                }
                Some(ErrorTemplate {
                    status,
                    content_type: PROBLEM_JSON.to_string(),
                    body: default_problem_body(status),
                })
            }
        }
    }

    fn approval(
        &mut self,
        t: &DeTable<'_>,
        span: Range<usize>,
        global: Option<&Approvals>,
    ) -> Option<ApprovalPolicy> {
        let sec = "[routes.approval]";
        self.check_keys(t, sec, APPROVAL_KEYS);
        let mut ok = true;
        let approvers = match self.principals(t, "approvers", sec) {
            None => {
                ok = false;
                Vec::new()
            }
            Some((p, sp)) => {
                if t.get("approvers")
                    .and_then(|v| v.get_ref().as_array())
                    .is_some_and(|a| a.is_empty())
                {
                    self.error(sp, "`approvers` is empty: nobody could approve");
                    ok = false;
                }
                p
            }
        };
        if !t.contains_key("approvers") {
            self.error(span.clone(), "[routes.approval] needs `approvers`");
        }
        let quorum = match self.int_(t, "quorum", sec) {
            None => {
                ok &= !t.contains_key("quorum");
                1
            }
            Some((n, sp)) => {
                if n < 1 {
                    self.error(sp, format!("`quorum` must be at least 1, not {n}: a ticket would pass with no approval"));
                    ok = false;
                    1
                } else {
                    let q = u32::try_from(n).unwrap_or(u32::MAX);
                    let users_only = !approvers.is_empty()
                        && approvers.iter().all(|p| matches!(p, Principal::User(_)));
                    if users_only && q as usize > approvers.len() {
                        self.error(sp, format!("`quorum` = {q} needs more distinct approvers than the {} listed users", approvers.len()));
                        ok = false;
                    }
                    q
                }
            }
        };
        let self_approval = self.bool_(t, "self_approval", sec).is_some_and(|b| b.0);
        let mode = match self.str_(t, "mode", sec) {
            None => {
                ok &= !t.contains_key("mode");
                ApprovalMode::Action
            }
            Some(("action", _)) => ApprovalMode::Action,
            Some(("access", _)) => ApprovalMode::Access,
            Some((m, sp)) => {
                self.error(
                    sp,
                    format!("`mode` must be \"action\" or \"access\", not `{m}`"),
                );
                ok = false;
                ApprovalMode::Action
            }
        };
        let require_identity = match (self.bool_(t, "require_identity", sec), mode) {
            (Some((false, sp)), ApprovalMode::Access) => {
                self.error(sp, "`require_identity = false` is not possible with mode = \"access\": a grant belongs to a requester");
                ok = false;
                true
            }
            (_, ApprovalMode::Access) => true,
            (b, ApprovalMode::Action) => b.is_some_and(|b| b.0),
        };
        let mut dur = |cx: &mut Self, key: &str| -> Option<(Duration, Range<usize>)> {
            let d = cx.duration(t, key, sec);
            if d.is_none() && t.contains_key(key) {
                ok = false;
            }
            d
        };
        let hold_timeout = dur(self, "hold_timeout");
        let ticket_ttl = dur(self, "ticket_ttl");
        let token_ttl = dur(self, "token_ttl");
        let default_duration = dur(self, "default_duration");
        let max_duration = dur(self, "max_duration");
        let escalate_after = dur(self, "escalate_after");
        let max_also_within = dur(self, "max_also_within");
        let remind_before = dur(self, "remind_before");
        let mut count = |cx: &mut Self, key: &str| -> Option<(u32, Range<usize>)> {
            let n = cx.u32_(t, key, sec, 1);
            if n.is_none() && t.contains_key(key) {
                ok = false;
            }
            n
        };
        let token_uses = count(self, "token_uses").map_or(1, |n| n.0);
        let max_uses = count(self, "max_uses");
        let max_pending_per_requester = count(self, "max_pending_per_requester").map(|n| n.0);
        let max_also_uses = match self.u32_(t, "max_also_uses", sec, 0) {
            Some((n, _)) => n,
            None => {
                ok &= !t.contains_key("max_also_uses");
                0
            }
        };
        if mode == ApprovalMode::Access {
            for key in ["max_also_uses", "max_also_within"] {
                if let Some(v) = t.get(key) {
                    self.error(v.span(), format!("`{key}` is only for mode = \"action\" (an access approval is a grant already)"));
                    ok = false;
                }
            }
        } else if max_also_uses == 0 {
            if let Some((_, sp)) = &max_also_within {
                self.error(
                    sp.clone(),
                    "`max_also_within` needs `max_also_uses` above 0",
                );
                ok = false;
            }
        }
        let mut durations = Vec::new();
        if let Some((items, _)) = self.str_list(t, "durations", sec) {
            for (s, sp) in items {
                match units::parse_duration(s) {
                    Ok(d) if !d.is_zero() => durations.push((d, sp)),
                    Ok(_) => {
                        self.error(sp, "a grant duration must be longer than zero");
                        ok = false;
                    }
                    Err(e) => {
                        self.error(sp, format!("`durations` in {sec}: {e}"));
                        ok = false;
                    }
                }
            }
        }
        // Grant durations only mean something in access mode.
        if mode == ApprovalMode::Action {
            for key in ["durations", "default_duration", "max_duration", "max_uses"] {
                if let Some(v) = t.get(key) {
                    self.error(v.span(), format!("`{key}` is only for mode = \"access\""));
                    ok = false;
                }
            }
        } else {
            let max = match &max_duration {
                Some((m, _)) => Some(*m),
                None => {
                    if !t.contains_key("max_duration") {
                        let span = t.get("mode").map_or(span.clone(), |v| v.span());
                        self.error(
                            span,
                            "mode = \"access\" needs `max_duration` (the longest grant)",
                        );
                    }
                    ok = false;
                    None
                }
            };
            if let Some(max) = max {
                for (d, sp) in &durations {
                    if *d > max {
                        self.error(
                            sp.clone(),
                            format!(
                                "grant duration {} is longer than `max_duration` ({})",
                                units::format_duration(*d),
                                units::format_duration(max)
                            ),
                        );
                        ok = false;
                    }
                }
                if let Some((d, sp)) = &default_duration {
                    if *d > max {
                        self.error(
                            sp.clone(),
                            format!(
                                "`default_duration` ({}) is longer than `max_duration` ({})",
                                units::format_duration(*d),
                                units::format_duration(max)
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        let default_duration = default_duration.map(|d| d.0).or_else(|| {
            if mode == ApprovalMode::Access {
                durations
                    .iter()
                    .map(|d| d.0)
                    .min()
                    .or(max_duration.as_ref().map(|m| m.0))
            } else {
                None
            }
        });
        let break_glass_groups = match self.table(t, "break_glass", sec) {
            None => {
                ok &= !t.contains_key("break_glass");
                Vec::new()
            }
            Some((bt, sp)) => {
                self.check_keys(bt, "[routes.approval.break_glass]", &["groups"]);
                let groups: Vec<String> = self
                    .str_list(bt, "groups", "[routes.approval.break_glass]")
                    .map(|g| g.0.into_iter().map(|(s, _)| s.to_string()).collect())
                    .unwrap_or_default();
                if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
                    self.error(sp, "`break_glass` needs a non-empty `groups` list");
                    ok = false;
                }
                groups
            }
        };
        let escalate_to = match self.principals(t, "escalate_to", sec) {
            None => {
                ok &= !t.contains_key("escalate_to");
                Vec::new()
            }
            Some((p, sp)) => {
                if escalate_after.is_none() && !t.contains_key("escalate_after") {
                    self.error(sp, "`escalate_to` needs `escalate_after`");
                    ok = false;
                }
                p
            }
        };
        if let Some((after, sp)) = &escalate_after {
            if escalate_to.is_empty() && !t.contains_key("escalate_to") {
                self.error(sp.clone(), "`escalate_after` needs `escalate_to`");
                ok = false;
            }
            let ttl = ticket_ttl
                .as_ref()
                .map(|d| d.0)
                .or(global.map(|g| g.ticket_ttl))
                .unwrap_or(secs(900));
            if *after >= ttl {
                self.warn(sp.clone(), "`escalate_after` is not shorter than the ticket's `ticket_ttl`; the ticket expires first");
            }
        }
        if let Some((before, sp)) = &remind_before {
            let ttl = ticket_ttl
                .as_ref()
                .map(|d| d.0)
                .or(global.map(|g| g.ticket_ttl))
                .unwrap_or(secs(900));
            if *before >= ttl {
                self.error(
                    sp.clone(),
                    format!(
                        "`remind_before` ({}) must be shorter than the ticket's `ticket_ttl` ({}): the reminder would come before the ticket exists",
                        units::format_duration(*before),
                        units::format_duration(ttl)
                    ),
                );
                ok = false;
            }
        }
        let mut auto_approve = Vec::new();
        for (at, sp) in self.tables(t, "auto_approve", sec) {
            let risk = global.and_then(|g| g.risk.as_ref());
            match self.auto_approve(at, sp.clone(), mode, risk) {
                Some(a) if auto_approve.iter().any(|b: &AutoApprove| b.name == a.name) => {
                    let sp = at.get("name").map_or(sp, |v| v.span());
                    self.error(sp, format!("a second auto_approve policy is named `{}` on this route; names identify what a policy approved", a.name));
                    ok = false;
                }
                Some(a) => auto_approve.push(a),
                None => ok = false,
            }
        }
        let approve_above_rate = match self.str_(t, "approve_above_rate", sec) {
            None => {
                ok &= !t.contains_key("approve_above_rate");
                None
            }
            Some((_, sp)) if mode == ApprovalMode::Access => {
                self.error(sp, "`approve_above_rate` is only for mode = \"action\": on an access route the one request within the rate would open a grant that lets every later one through");
                ok = false;
                None
            }
            Some((r, sp)) => match units::parse_rate(r) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.error(sp, e);
                    ok = false;
                    None
                }
            },
        };
        crate::policy::link_shared(&mut auto_approve);
        if approve_above_rate.is_some() && auto_approve.iter().any(|a| a.risk_below.is_some()) {
            if let Some(v) = t.get("approve_above_rate") {
                self.warn(v.span(), "requests within `approve_above_rate` pass whatever their risk score: the `risk_below` of this route's policies does not bound them");
            }
        }
        let volatile_headers = self
            .header_names(t, "volatile_headers", sec)
            .unwrap_or_default();
        let notify = match self.str_list(t, "notify", sec) {
            None => {
                ok &= !t.contains_key("notify");
                None
            }
            Some((names, _)) => {
                let mut picked: Vec<String> = Vec::new();
                for (n, sp) in names {
                    if !self.channels.iter().any(|c| c == n) {
                        let known: Vec<&str> = self.channels.iter().map(String::as_str).collect();
                        let hint = suggest(n, &known)
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        self.error(
                            sp,
                            format!(
                                "`notify` names `{n}`, which no [[notify]] channel is called{hint}"
                            ),
                        );
                        ok = false;
                    } else if !picked.iter().any(|p| p == n) {
                        picked.push(n.to_string());
                    }
                }
                Some(picked)
            }
        };
        let chat_approval = match self.bool_(t, "chat_approval", sec) {
            None => {
                ok &= !t.contains_key("chat_approval");
                true
            }
            Some((b, _)) => b,
        };
        ok.then(|| ApprovalPolicy {
            approvers,
            quorum,
            self_approval,
            mode,
            require_identity,
            hold_timeout: hold_timeout.map(|d| d.0),
            ticket_ttl: ticket_ttl.map(|d| d.0),
            token_ttl: token_ttl.map(|d| d.0),
            token_uses,
            durations: durations.into_iter().map(|d| d.0).collect(),
            default_duration,
            max_duration: max_duration.map(|d| d.0),
            max_uses: max_uses.map(|n| n.0),
            max_pending_per_requester,
            max_also_uses,
            max_also_within: max_also_within.map_or(DEFAULT_ALSO_WITHIN, |d| d.0),
            break_glass_groups,
            escalate_after: escalate_after.map(|d| d.0),
            escalate_to,
            remind_before: remind_before.map(|d| d.0),
            auto_approve,
            approve_above_rate,
            volatile_headers,
            notify,
            chat_approval,
        })
    }

    fn auto_approve(
        &mut self,
        t: &DeTable<'_>,
        span: Range<usize>,
        mode: ApprovalMode,
        risk: Option<&crate::policy::RiskModel>,
    ) -> Option<AutoApprove> {
        let sec = "[[routes.approval.auto_approve]]";
        self.check_keys(t, sec, AUTO_KEYS);
        let errors_before = self.error_count();
        let mut a = AutoApprove::default();
        match self.str_(t, "name", sec) {
            Some((n, sp)) if n.trim().is_empty() => self.error(sp, "`name` must not be empty"),
            Some((n, _)) => a.name = n.to_string(),
            None if !t.contains_key("name") => self.error(
                span.clone(),
                "an auto_approve policy needs a `name` (recorded on what it approves)",
            ),
            None => {}
        }
        if let Some((p, sp)) = self.str_(t, "path_prefix", sec) {
            match parse_path_pattern(p) {
                Ok(pat)
                    if pat.rest
                        || pat
                            .segments
                            .iter()
                            .any(|s| !matches!(s, Segment::Literal(_))) =>
                {
                    self.error(sp, format!("`path_prefix` `{p}` must be a plain path without `*`, `**` or `{{name}}`"));
                }
                Ok(_) => {
                    a.path_prefix = Some(
                        p.strip_suffix('/')
                            .filter(|s| !s.is_empty())
                            .unwrap_or(p)
                            .to_string(),
                    )
                }
                Err(e) => self.error(sp, e.replace("path pattern", "`path_prefix`")),
            }
        }
        if t.contains_key("methods") {
            a.methods = self.methods(t, "methods", sec).unwrap_or_default();
        }
        if let Some((u, _)) = self.str_list(t, "users", sec) {
            a.users = u.into_iter().map(|(s, _)| s.to_string()).collect();
        }
        if let Some((g, _)) = self.str_list(t, "groups", sec) {
            a.groups = g.into_iter().map(|(s, _)| s.to_string()).collect();
        }
        a.source = self.cidrs(t, "source", sec);
        if t.contains_key("headers") {
            a.headers = self.header_rules(t, sec).unwrap_or_default();
            if let Some(v) = t.get("headers") {
                if v.get_ref().as_table().is_some_and(|h| h.is_empty()) {
                    self.error(v.span(), "`headers` is empty: it would hold for every request; remove it or name a header");
                }
            }
            for h in &a.headers {
                if h.name.as_str().starts_with(crate::headers::GATEWAY_PREFIX) {
                    if let Some(v) = t.get("headers") {
                        self.warn(v.span(), format!("`{}` is a gateway header, never seen by conditions: this policy never applies", h.name));
                    }
                }
            }
        }
        a.duration_below = self.duration(t, "duration_below", sec).map(|d| d.0);
        a.max_duration = self.duration(t, "max_duration", sec).map(|d| d.0);
        a.max_uses = self.u32_(t, "max_uses", sec, 1).map(|n| n.0);
        if let Some((n, sp)) = self.u32_(t, "risk_below", sec, 1) {
            match risk {
                None => self.error(sp, "`risk_below` needs [approvals.risk] (the weights of the score)"),
                Some(m) if n > m.max_score() => self.warn(
                    sp,
                    format!("`risk_below = {n}` is above the highest score [approvals.risk] can give ({}): it restricts nothing", m.max_score()),
                ),
                Some(_) => {}
            }
            a.risk_below = Some(n);
        }
        if mode == ApprovalMode::Access {
            // An access grant covers the whole route, like one a person gives: a condition on
            // what one request looks like would be judged on the first request only.
            for key in ["path_prefix", "methods", "headers"] {
                if let Some(v) = t.get(key) {
                    self.error(
                        v.span(),
                        format!("`{key}` in {sec} is only for mode = \"action\": an access grant covers the whole route, so it would be judged on the first request only; narrow the route instead"),
                    );
                }
            }
        }
        if mode == ApprovalMode::Action {
            for key in ["duration_below", "max_duration", "max_uses"] {
                if let Some(v) = t.get(key) {
                    self.error(
                        v.span(),
                        format!(
                            "`{key}` in {sec} is only for mode = \"access\" (it bounds a grant)"
                        ),
                    );
                }
            }
        }
        if let Some((w, sp)) = self.str_(t, "window", sec) {
            match crate::policy::Window::parse(w) {
                Ok(w) if w.days.iter().all(|d| *d) && w.from == 0 && w.to == 24 * 60 => {
                    self.warn(sp, "`window` covers all of every day: it restricts nothing");
                    a.window = Some(w);
                }
                Ok(w) => a.window = Some(w),
                Err(e) => self.error(sp, e),
            }
        }
        if a.path_prefix.as_deref() == Some("/") {
            if let Some(v) = t.get("path_prefix") {
                self.warn(
                    v.span(),
                    "`path_prefix = \"/\"` holds for every path: it restricts nothing",
                );
            }
        }
        if let Some((z, sp)) = self.str_(t, "time_zone", sec) {
            match crate::policy::Zone::get(z) {
                Ok(zone) => a.time_zone = Some(zone),
                Err(e) => self.error(sp.clone(), e),
            }
            if !t.contains_key("window") {
                self.error(
                    sp,
                    "`time_zone` is only used with `window`; add a `window` or remove it",
                );
            }
        }
        for key in ["users", "groups", "source", "methods"] {
            if let Some(v) = t.get(key) {
                if v.get_ref().as_array().is_some_and(|a| a.is_empty()) {
                    self.error(v.span(), format!("`{key}` is empty: the condition could never hold; remove it or list something"));
                }
            }
        }
        if !AUTO_CONDITIONS.iter().any(|k| t.contains_key(*k)) {
            self.error(span, "an auto_approve policy with no condition would approve every request; give at least one condition");
        }
        (self.error_count() == errors_before).then_some(a)
    }

    /// A `headers = { name = "value" | "*" }` table of header conditions; `None` (errors
    /// reported) when any entry is invalid.
    fn header_rules(&mut self, t: &DeTable<'_>, sec: &str) -> Option<Vec<HeaderRule>> {
        let mut ok = true;
        let mut headers: Vec<HeaderRule> = Vec::new();
        if let Some((ht, _)) = self.table(t, "headers", sec) {
            for (k, v) in ht.iter() {
                let key: &str = k.get_ref();
                let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
                    self.error(k.span(), format!("`{key}` is not a valid header name"));
                    ok = false;
                    continue;
                };
                let Some(val) = v.get_ref().as_str() else {
                    self.error(
                        v.span(),
                        format!(
                            "header condition `{key}` must be a string (`\"*\"` means present)"
                        ),
                    );
                    ok = false;
                    continue;
                };
                if val != "*" && HeaderValue::from_str(val).is_err() {
                    self.error(
                        v.span(),
                        format!("header condition `{key}` has a value no header can carry"),
                    );
                    ok = false;
                    continue;
                }
                headers.push(HeaderRule {
                    name,
                    value: (val != "*").then(|| val.to_string()),
                });
            }
        } else {
            ok &= !t.contains_key("headers");
        }
        ok.then_some(headers)
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
