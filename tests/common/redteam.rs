//! Helpers for the red-team regression tests (`e2e_binding`, `e2e_policy`, `e2e_edge`): a
//! config skeleton, requests sent in the background, raw sockets that can hang up on cue, and
//! gRPC framing.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::approval::{admin_call, identity_and_admin_toml};
use super::client::{send, Client, Response};
use super::gateway::Gateway;
use super::origin::Origin;

/// Deadline for anything the gateway should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// bob of group dev, as trusted identity headers (loopback is a trusted proxy).
pub const BOB: [(&str, &str); 2] = [("x-user", "bob"), ("x-groups", "dev")];

/// A config: loopback data and admin listeners on free ports, loopback trusted, file watch
/// off (tests reload through the admin API), one upstream `origin`, then `routes`, then the
/// identity headers and admin tokens of [`identity_and_admin_toml`].
///
/// `server_extra` lands inside `[server]`; `sections` after it (e.g. `[approvals]`, `[store]`);
/// `upstream_extra` inside `[[upstreams]]`.
pub fn config(
    origin: &str,
    server_extra: &str,
    sections: &str,
    upstream_extra: &str,
    routes: &str,
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
watch = false
{server_extra}

{sections}

[[upstreams]]
name = "origin"
url = "{origin}"
{upstream_extra}

{routes}

{admin}"#,
        admin = identity_and_admin_toml()
    )
}

/// Sends a request over HTTP/1.1 in the background (60 s timeout); the handle yields the
/// answer. Abort the handle to hang up.
pub fn spawn_send(
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: impl Into<String>,
) -> JoinHandle<Response> {
    let method = method.to_string();
    let body = body.into();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::spawn(async move {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Client::http1()
            .with_timeout(Duration::from_secs(60))
            .send(&method, &url, &h, body)
            .await
    })
}

/// The id of the pending ticket on `route`, once there is one.
pub async fn pending_id(gw: &Gateway, route: &str) -> String {
    super::approval::wait_pending(gw, route, WAIT).await["id"]
        .as_str()
        .expect("ticket id")
        .to_string()
}

/// A ticket as the admin API shows it to `ops`.
pub async fn ticket(gw: &Gateway, id: &str) -> Response {
    admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await
}

/// The tickets in `status` (as `ops`).
pub async fn tickets_in(gw: &Gateway, status: &str) -> Vec<Value> {
    let r = admin_call(
        gw,
        "ops",
        "GET",
        &format!("/v1/tickets?status={status}"),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "list {status}: {}", r.text());
    r.json()["tickets"].as_array().cloned().unwrap_or_default()
}

/// The audit events of a ticket (as `ops`), whole.
pub async fn audit_events(gw: &Gateway, id: &str) -> Vec<Value> {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/audit?ticket={id}"), "").await;
    assert_eq!(r.status, 200, "audit: {}", r.text());
    r.json()["events"].as_array().cloned().unwrap_or_default()
}

/// Polls `GET /readyz` until the gateway holds requests on at least `n` tickets.
pub async fn wait_held(gw: &Gateway, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = super::client::send("GET", &gw.admin("/readyz"), &[], "").await;
        if r.json()["held"].as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} held tickets within {WAIT:?}: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts an RFC 9457 answer with `status`; returns its JSON.
pub fn problem(resp: &Response, status: u16, what: &str) -> Value {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "{what}: {}",
        resp.text()
    );
    resp.json()
}

/// Opens a connection and writes `bytes`; the caller keeps it open (idle or held) and hangs
/// up by dropping it.
pub async fn raw_open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(bytes).await.expect("write");
    s
}

/// Reads (discarding) until the peer closes or resets the connection; `false` if it is still
/// open at `deadline`.
pub async fn closed_by(stream: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One gRPC length-prefixed message (uncompressed).
pub fn grpc_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An allow catch-all to end a table with.
pub const ALLOW_REST: &str = r#"[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow""#;

/// DELETE on `/items/**` is denied; everything else is allowed.
pub fn items_deny_config(origin: &Origin) -> String {
    let routes = format!(
        r#"[[routes]]
name = "items-delete"
methods = ["DELETE"]
path = "/items/**"
action = "deny"

{ALLOW_REST}"#
    );
    config(&origin.url(), "", "", "", &routes)
}

/// Sends `POST {path}` with `headers` and `body`; `Some(what happened)` when the gateway
/// forwarded it. A request a framework upstream reads as DELETE must never reach the upstream
/// through a route that denies DELETE.
pub async fn leak(
    gw: &Gateway,
    origin: &Origin,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    what: &str,
) -> Option<String> {
    let before = origin.count();
    let resp = send("POST", &gw.url(path), headers, body.to_string()).await;
    origin
        .assert_no_new_requests(Duration::from_millis(150))
        .await;
    let after = origin.requests();
    if after.len() == before {
        assert!(
            resp.status.is_client_error(),
            "{what}: expected a refusal, got {}: {}",
            resp.status,
            resp.text()
        );
        return None;
    }
    let r = after.last().expect("a request");
    Some(format!(
        "{what}: gateway answered {}, origin received {} {} with {:?}",
        resp.status,
        r.method,
        r.target,
        r.headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect::<Vec<_>>()
    ))
}
