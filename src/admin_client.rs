//! The admin plane's HTTP client, shared by `jitgate tickets` and `jitgate audit`: where the
//! admin plane is (`--admin`, `$JITGATE_ADMIN_URL`, the config's `admin_listen`), the bearer
//! token (`--token`, `$JITGATE_ADMIN_TOKEN`), one call at a time with a timeout, and the
//! one-line reasons and exit codes of failures.
//!
//! Exit codes of the commands built on it: 0 done, 1 refused by the admin API (or an
//! invalid local setup), 2 usage error, 3 the admin API could not be reached or did not
//! answer properly. Every failure is one line on stderr starting with `jitgate: `.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use jitgate_gateway::contract::{
    ApproveRequest, DecideRequest, DecideResult, DenyRequest, Problem, TicketList,
};
use jitgate_gateway::state::load_table;
use jitgate_rules::{Status, Ticket};

use crate::cli::fail;

/// Where the admin plane is when nothing says otherwise (the `admin_listen` default).
const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";
/// The config consulted for `admin_listen` when `--config` is not given, if it exists.
const DEFAULT_CONFIG: &str = "proxy.toml";
/// Environment variable naming the admin plane's URL.
const ENV_URL: &str = "JITGATE_ADMIN_URL";
/// Environment variable holding the bearer token.
const ENV_TOKEN: &str = "JITGATE_ADMIN_TOKEN";
/// Connect, send and read one answer within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (a page of thousands of tickets with body previews fits).
const MAX_ANSWER: usize = 256 * 1024 * 1024;

/// Exit code when the admin API refused something.
const EXIT_REFUSED: u8 = 1;
/// Exit code when the admin API could not be reached or answered garbage.
const EXIT_UNREACHABLE: u8 = 3;

/// Exit code for usage errors (clap's own).
pub(crate) const EXIT_USAGE: u8 = 2;

/// Where the admin plane is and who calls it: `--admin`, `--token`, `--config`.
#[derive(Args)]
pub(crate) struct AdminArgs {
    /// Base URL of the admin plane, e.g. http://127.0.0.1:9090 (plain HTTP only).
    #[arg(long, value_name = "URL", value_parser = parse_admin_url, global = true)]
    pub(crate) admin: Option<AdminUrl>,
    /// Bearer token for the admin API (default: $JITGATE_ADMIN_TOKEN).
    #[arg(long, value_name = "TOKEN", global = true)]
    pub(crate) token: Option<String>,
    /// The rule table whose [server] admin_listen locates the admin plane.
    #[arg(long, short, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
}

impl AdminArgs {
    /// The client these arguments (and the environment) describe; `Err` after saying why
    /// on stderr.
    pub(crate) fn client(self) -> Result<AdminApi, ExitCode> {
        let base = admin_url(self.admin, self.config.as_deref())?;
        let token = self.token.filter(|t| !t.trim().is_empty()).or_else(|| {
            std::env::var(ENV_TOKEN)
                .ok()
                .filter(|t| !t.trim().is_empty())
        });
        let auth = match token {
            Some(t) => match HeaderValue::from_str(&format!("Bearer {}", t.trim())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some(v)
                }
                Err(_) => {
                    return Err(fail(
                        "the token contains characters not allowed in an HTTP header",
                    ))
                }
            },
            None => None,
        };
        Ok(AdminApi::new(base, auth))
    }
}

/// The single-threaded runtime a client command runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&format!("cannot start the async runtime: {e}")))
}

/// A plain-HTTP admin plane base URL: authority plus an optional path prefix.
#[derive(Clone)]
pub(crate) struct AdminUrl {
    authority: String,
    prefix: String,
}

impl AdminUrl {
    pub(crate) fn uri(&self, path_and_query: &str) -> Result<Uri, String> {
        format!("http://{}{}{path_and_query}", self.authority, self.prefix)
            .parse()
            .map_err(|e| format!("cannot build a request URL for {path_and_query}: {e}"))
    }
}

impl std::fmt::Display for AdminUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// `http://host:port[/prefix]`; a bare `host:port` means `http://host:port`.
pub(crate) fn parse_admin_url(s: &str) -> Result<AdminUrl, String> {
    let s = s.trim();
    let full = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let uri: Uri = full.parse().map_err(|e| format!("not a URL: {s:?}: {e}"))?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: the admin plane listens on plain HTTP (loopback by \
                 default); use http://, or reach a remote one through an SSH tunnel"
                    .to_string(),
            )
        }
        _ => return Err(format!("{s:?} is not an http:// URL")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{s:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported; use --token".to_string());
    }
    if authority.host().is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{s:?} must not have a query string"));
    }
    Ok(AdminUrl {
        authority: authority.as_str().to_string(),
        prefix: uri.path().trim_end_matches('/').to_string(),
    })
}

/// `--admin`, else `$JITGATE_ADMIN_URL`, else `admin_listen` of the config, else the default.
fn admin_url(flag: Option<AdminUrl>, config: Option<&Path>) -> Result<AdminUrl, ExitCode> {
    if let Some(url) = flag {
        return Ok(url);
    }
    if let Some(env) = std::env::var(ENV_URL).ok().filter(|v| !v.trim().is_empty()) {
        return parse_admin_url(&env).map_err(|e| fail(&format!("{ENV_URL}: {e}")));
    }
    let config = match config {
        Some(c) => Some(c.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()),
    };
    let Some(config) = config else {
        return parse_admin_url(DEFAULT_ADMIN_URL).map_err(|e| fail(&e));
    };
    let table = match load_table(&config) {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Err(fail(&format!(
                "{} is invalid, so its admin_listen cannot be used; pass --admin URL or set {ENV_URL}",
                config.display()
            )));
        }
    };
    let mut addr = table.config().server.admin_listen;
    // A wildcard listener is reached over loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    parse_admin_url(&format!("http://{addr}")).map_err(|e| fail(&e))
}

// === the HTTP client ===

/// [`jitgate_gateway::contract::AuditPage`] with its events as written (see
/// [`AdminApi::audit_page`]).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawAuditPage {
    /// The events, undecoded.
    pub(crate) events: Vec<Value>,
    /// Where the next page starts; `None` at the end of the chain.
    #[serde(default)]
    pub(crate) next_cursor: Option<String>,
}

/// Why a typed call brought back no answer of its type.
pub(crate) enum ClientError {
    /// The admin API refused: its status and the one-line reason (exit 1).
    Refused(StatusCode, String),
    /// No proper answer: unreachable, timed out, or not the contract's type (exit 3).
    Unreachable(String),
}

impl ClientError {
    /// Says why on stderr and gives the exit code.
    pub(crate) fn exit(self) -> ExitCode {
        match self {
            ClientError::Refused(_, r) => refused(&r),
            ClientError::Unreachable(r) => unreachable(&r),
        }
    }
}

/// An answer from the admin API.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// The admin API at one base URL, with an optional bearer credential.
pub(crate) struct AdminApi {
    pub(crate) base: AdminUrl,
    auth: Option<HeaderValue>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminApi {
    pub(crate) fn new(base: AdminUrl, auth: Option<HeaderValue>) -> AdminApi {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(http);
        AdminApi { base, auth, client }
    }

    /// One call; `Err` is a one-line reason why no proper answer came back.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let uri = self.base.uri(path_and_query)?;
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json, application/problem+json")
            .header(
                header::USER_AGENT,
                concat!("jitgate-cli/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        let payload = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(payload))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    format!("cannot reach the admin API at {}: {}", self.base, root(&e))
                } else {
                    format!(
                        "the admin API at {} did not answer: {}",
                        self.base,
                        chain(&e)
                    )
                }
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("the admin API at {} broke off its answer: {e}", self.base))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "cannot reach the admin API at {}: no answer within {}s",
                self.base,
                REQUEST_TIMEOUT.as_secs()
            )),
        }
    }

    /// One call answered with the contract type `T` (`what` names it in errors): a non-200
    /// answer is [`ClientError::Refused`], anything else that is not a `T` is
    /// [`ClientError::Unreachable`].
    async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, ClientError> {
        let answer = self
            .call(method, path_and_query, body)
            .await
            .map_err(ClientError::Unreachable)?;
        if answer.status != StatusCode::OK {
            return Err(ClientError::Refused(answer.status, self.refusal(&answer)));
        }
        serde_json::from_slice(&answer.body).map_err(|_| {
            ClientError::Unreachable(format!(
                "the admin API at {} answered {path_and_query} with something that is not {what}",
                self.base
            ))
        })
    }

    /// `GET /v1/tickets`.
    pub(crate) async fn list_tickets(
        &self,
        status: Option<Status>,
        limit: Option<u32>,
    ) -> Result<TicketList, ClientError> {
        let mut query = Vec::new();
        if let Some(s) = status {
            query.push(format!("status={}", s.as_str()));
        }
        if let Some(n) = limit {
            query.push(format!("limit={n}"));
        }
        let path = if query.is_empty() {
            "/v1/tickets".to_string()
        } else {
            format!("/v1/tickets?{}", query.join("&"))
        };
        self.typed(Method::GET, &path, None, "a ticket list").await
    }

    /// `GET /v1/tickets/{id}`; `id` must be a well-formed ticket id.
    pub(crate) async fn ticket(&self, id: &str) -> Result<Ticket, ClientError> {
        let path = format!("/v1/tickets/{id}");
        self.typed(Method::GET, &path, None, "a ticket").await
    }

    /// `POST /v1/tickets/{id}/approve`.
    pub(crate) async fn approve(
        &self,
        id: &str,
        body: &ApproveRequest,
    ) -> Result<Ticket, ClientError> {
        let path = format!("/v1/tickets/{id}/approve");
        self.typed(Method::POST, &path, Some(&to_json(body)?), "a ticket")
            .await
    }

    /// `POST /v1/tickets/{id}/deny`.
    pub(crate) async fn deny(&self, id: &str, body: &DenyRequest) -> Result<Ticket, ClientError> {
        let path = format!("/v1/tickets/{id}/deny");
        self.typed(Method::POST, &path, Some(&to_json(body)?), "a ticket")
            .await
    }

    /// `POST /v1/tickets/{id}/acknowledge`.
    pub(crate) async fn acknowledge(
        &self,
        id: &str,
        body: &ApproveRequest,
    ) -> Result<Ticket, ClientError> {
        let path = format!("/v1/tickets/{id}/acknowledge");
        self.typed(Method::POST, &path, Some(&to_json(body)?), "a ticket")
            .await
    }

    /// `POST /v1/tickets/decide`.
    pub(crate) async fn decide(&self, body: &DecideRequest) -> Result<DecideResult, ClientError> {
        let path = "/v1/tickets/decide";
        self.typed(Method::POST, path, Some(&to_json(body)?), "a batch result")
            .await
    }

    /// `GET /v1/audit?{query}`: one page, its events as written. [`AuditPage`]'s envelope,
    /// but the events stay raw JSON: the chain is verified over each event exactly as the
    /// store holds it, so a member that [`jitgate_rules::AuditEvent`] does not know (added by
    /// whoever tampered with the store) still breaks the hash instead of being dropped by
    /// decoding, and an event that does not decode is reported at its `seq`.
    ///
    /// [`AuditPage`]: jitgate_gateway::contract::AuditPage
    pub(crate) async fn audit_page(&self, query: &str) -> Result<RawAuditPage, ClientError> {
        let path = format!("/v1/audit?{query}");
        self.typed(Method::GET, &path, None, "an audit page").await
    }

    /// The one-line reason for a refused call, with a hint when no token was sent.
    pub(crate) fn refusal(&self, answer: &Answer) -> String {
        let line = problem_line(answer.status, &answer.body);
        if answer.status == StatusCode::UNAUTHORIZED && self.auth.is_none() {
            format!("{line} (no token given: pass --token or set {ENV_TOKEN})")
        } else {
            line
        }
    }
}

/// A request body as JSON.
fn to_json<T: Serialize>(body: &T) -> Result<Value, ClientError> {
    serde_json::to_value(body)
        .map_err(|e| ClientError::Unreachable(format!("cannot write the request: {e}")))
}

/// The innermost cause (`Connection refused (os error 111)`), which says the most.
fn root(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    clean(&cause.to_string())
}

/// An error and its sources on one line, without repeating a message a wrapper already says.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    clean(&parts.join(": "))
}

/// `<status> <title>: <detail>` of a problem+json answer; other answers give the status and
/// the start of their body.
fn problem_line(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("title").is_some() || v.get("detail").is_some() => {
            problem_value_line(status.as_u16(), &v)
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            let reason = status.canonical_reason().unwrap_or("");
            match first {
                Some(l) => format!("{} {reason}: {}", status.as_u16(), clip(&clean(l), 200)),
                None => format!("{} {reason}", status.as_u16())
                    .trim_end()
                    .to_string(),
            }
        }
    }
}

/// The same line from a batch result's `problem`.
pub(crate) fn problem_body_line(p: &Problem) -> String {
    let title = Some(clean(&p.title)).filter(|t| !t.is_empty());
    let detail = Some(clean(&p.detail)).filter(|d| !d.is_empty());
    match (title, detail) {
        (Some(t), Some(d)) => format!("{} {t}: {d}", p.status),
        (Some(t), None) => format!("{} {t}", p.status),
        (None, Some(d)) => format!("{}: {d}", p.status),
        (None, None) => format!("{}", p.status),
    }
}

/// The same line from a problem object.
fn problem_value_line(fallback_status: u16, v: &Value) -> String {
    let status = v
        .get("status")
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(fallback_status));
    let title = v.get("title").and_then(Value::as_str).map(clean);
    let detail = v.get("detail").and_then(Value::as_str).map(clean);
    match (title, detail) {
        (Some(t), Some(d)) => format!("{status} {t}: {d}"),
        (Some(t), None) => format!("{status} {t}"),
        (None, Some(d)) => format!("{status}: {d}"),
        (None, None) => format!("{status}"),
    }
}

pub(crate) fn unreachable(reason: &str) -> ExitCode {
    eprintln!("jitgate: {reason}");
    ExitCode::from(EXIT_UNREACHABLE)
}

pub(crate) fn refused(reason: &str) -> ExitCode {
    eprintln!("jitgate: {reason}");
    ExitCode::from(EXIT_REFUSED)
}

/// Pretty JSON on stdout, members in alphabetical order (as the admin API writes them).
pub(crate) fn print_json<T: Serialize>(body: &T) {
    match serde_json::to_value(body).and_then(|v| serde_json::to_string_pretty(&v)) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("jitgate: cannot write the answer as JSON: {e}"),
    }
}

// === text ===

/// Ticket fields come from requesters: control characters and bidirectional overrides are
/// escaped so they cannot rewrite the approver's terminal or disguise what is shown.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        let u = parse_admin_url("127.0.0.1:9090").expect("bare host:port");
        assert_eq!(u.to_string(), "http://127.0.0.1:9090");
        let u = parse_admin_url("http://[::1]:9090/jitgate/").expect("prefix");
        assert_eq!(u.to_string(), "http://[::1]:9090/jitgate");
        assert_eq!(
            u.uri("/v1/tickets?status=PENDING")
                .expect("uri")
                .to_string(),
            "http://[::1]:9090/jitgate/v1/tickets?status=PENDING"
        );
        assert!(parse_admin_url("https://127.0.0.1:9090")
            .err()
            .is_some_and(|e| e.contains("https")));
        assert!(parse_admin_url("ftp://x").is_err());
        assert!(parse_admin_url("http://u:p@127.0.0.1:9090").is_err());
        assert!(parse_admin_url("http://127.0.0.1:9090/?x=1").is_err());
    }

    #[test]
    fn problems_are_one_line() {
        let body = br#"{"type":"urn:jitgate:problem:conflict","title":"Ticket not in a decidable state","status":409,"detail":"ticket is APPROVED"}"#;
        assert_eq!(
            problem_line(StatusCode::CONFLICT, body),
            "409 Ticket not in a decidable state: ticket is APPROVED"
        );
        assert_eq!(
            problem_line(StatusCode::BAD_GATEWAY, b"<html>\nbad gateway\n"),
            "502 Bad Gateway: <html>"
        );
        assert_eq!(problem_line(StatusCode::NOT_FOUND, b""), "404 Not Found");
    }

    /// The store's chain is verified over events as written: a member the event type does
    /// not know must reach the chain check, not be dropped by decoding.
    #[test]
    fn audit_pages_keep_events_as_written() {
        let page: RawAuditPage = serde_json::from_str(
            r#"{"events":[{"seq":1,"added":"by a tamperer"}],"nextCursor":"c1.1"}"#,
        )
        .expect("a page");
        assert_eq!(page.events[0]["added"], "by a tamperer");
        assert_eq!(page.next_cursor.as_deref(), Some("c1.1"));
        let last: RawAuditPage = serde_json::from_str(r#"{"events":[]}"#).expect("a page");
        assert!(last.next_cursor.is_none());
    }

    /// A batch's refused item reads as the one-line problem, as a refused call does.
    #[test]
    fn batch_refusals_are_one_line() {
        let body = r#"{"results":[{"id":"jit_x","status":404,"problem":{"type":"urn:jitgate:problem:unknown-ticket","title":"Unknown ticket","status":404,"detail":"no such\nticket"}}]}"#;
        let result: DecideResult = serde_json::from_str(body).expect("a batch result");
        match &result.results[0] {
            jitgate_gateway::contract::DecideItem::Refused { id, problem, .. } => {
                assert_eq!(id, "jit_x");
                assert_eq!(
                    problem_body_line(problem),
                    "404 Unknown ticket: no such\\u{a}ticket"
                );
            }
            jitgate_gateway::contract::DecideItem::Decided { .. } => panic!("not decided"),
        }
    }

    #[test]
    fn terminal_text_is_defanged() {
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\u{a}c");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
