//! Helpers for the notification and event-stream tests: a config with an approve route that
//! tells the channels and one that tells nobody, Slack callbacks signed as Slack signs them,
//! and `GET /v1/events` read as a client reads a stream.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::approval::{bearer_of, identity_and_admin_toml};
use super::gateway::Gateway;

const SOON: Duration = Duration::from_secs(30);
/// The approve route that tells the channels.
pub const ROUTE: &str = "prod-deploy";
/// `[store]` for the memory store.
pub const MEMORY: &str = "[store]\nkind = \"memory\"\n";
/// The Slack signing secret of the tests' Slack channels (`SLACK_SIGNING`): Slack's own
/// documented example.
pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A config: `prod-deploy` (POST /deploy/**, one approval from group oncall, `approval_extra`
/// added to its `[routes.approval]`), `quiet` (POST /quiet/**, same approvers, tells nobody),
/// then `notify`, then the tests' identity and admin tokens. `server_extra` lands in
/// `[server]`; `hold` is `[approvals] hold_timeout`.
pub fn config(
    store: &str,
    server_extra: &str,
    hold: &str,
    notify: &str,
    approval_extra: &str,
    origin: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
watch = false
{server_extra}

{store}

[approvals]
hold_timeout = "{hold}"
reconcile_interval = "300ms"

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "{ROUTE}"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
{approval_extra}

[[routes]]
name = "quiet"
methods = ["POST"]
path = "/quiet/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
notify = []

{notify}

{identity}"#,
        identity = identity_and_admin_toml(),
    )
}

/// A Slack interactive callback, form-encoded as Slack sends it.
pub fn slack_callback(user: &str, action: &str, ticket: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "someone" },
        "actions": [{ "action_id": action, "block_id": "jitgate", "value": ticket, "type": "button" }],
        "response_url": response_url,
    })
    .to_string();
    let encoded: String = payload
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("payload={encoded}")
}

/// `X-Slack-Signature` of `body` at `ts` under `secret`.
pub fn slack_sign(secret: &str, ts: impl std::fmt::Display, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Opens `GET /v1/events` as `user` (resuming after `last_id`) and returns the connection.
pub async fn open_stream(gw: &Gateway, user: &str, last_id: Option<u64>) -> TcpStream {
    let mut s = TcpStream::connect(gw.admin_addr()).await.unwrap();
    let last = last_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /v1/events HTTP/1.1\r\nHost: admin\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n{last}\r\n",
        bearer_of(user)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Reads from a stream until `needle` has appeared `n` times (and its event ended).
pub async fn read_until(s: &mut TcpStream, seen: &mut String, needle: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + SOON;
    let mut buf = [0u8; 8192];
    let complete = |seen: &str| {
        seen.match_indices(needle)
            .nth(n - 1)
            .is_some_and(|(i, _)| seen[i..].contains("\n\n"))
    };
    while !complete(seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "`{needle}` x{n} not seen in:\n{seen}");
        if let Ok(Ok(k)) = tokio::time::timeout(left, s.read(&mut buf)).await {
            assert!(k > 0, "stream closed; read:\n{seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..k]));
        }
    }
}

/// Reads whatever arrives within `d`; whether the stream ended (the connection closed, or
/// the chunked body's last chunk arrived).
pub async fn read_for(s: &mut TcpStream, seen: &mut String, d: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(k)) => {
                seen.push_str(&String::from_utf8_lossy(&buf[..k]));
                if seen.ends_with("\r\n0\r\n\r\n") {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

/// `(id, event, data)` of every SSE event in what was read.
pub fn sse_events(seen: &str) -> Vec<(u64, String, Value)> {
    seen.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str::<Value>(v).ok();
                }
            }
            Some((id?, name?, data?))
        })
        .collect()
}
