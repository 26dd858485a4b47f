//! Two or three replicas on one Redis holding identical requests of one requester: what the
//! red-team tests on replica-wide holders (`Ticket::holders`, leases, `Ticket::gone`) share.
//! Approve-route requests carry an explicit `Host` so that a request resumed on another
//! replica has the same fingerprint.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::*;

pub const HOST: &str = "api.example.com";
pub const ROUTE: &str = "prod-deploy";
pub const SOON: Duration = Duration::from_secs(10);

/// One replica's config: `prod-deploy` (`POST /deploy/**`, group oncall, `route_extra` under
/// `[routes.approval]`), an allow catch-all, a shared signing key.
pub fn config(redis: &str, origin: &str, hold: &str, route_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[store]
kind = "redis"
url = "{redis}"

[approvals]
hold_timeout = "{hold}"
reconcile_interval = "300ms"
signing_key = "key.pem"

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
quorum = 1
{route_extra}

[[routes]]
name = "everything-else"
path = "/**"
upstream = "origin"
action = "allow"

{identity}"#,
        identity = identity_and_admin_toml(),
    )
}

pub async fn replicas(
    redis: &RedisServer,
    origin: &Origin,
    holds: &[&str],
    route_extra: &str,
) -> Vec<Gateway> {
    let pem = signing_key_pem();
    let mut out = Vec::new();
    for hold in holds {
        let cfg = config(&redis.url(), &origin.url(), hold, route_extra);
        out.push(Gateway::builder(&cfg).file("key.pem", pem.clone()).start());
    }
    for gw in &out {
        wait_store_ok(gw).await;
    }
    out
}

/// Who sends a request: a named user (trusted headers), or an anonymous client with an API key.
#[derive(Clone, Copy)]
pub enum Who {
    User(&'static str),
    Anonymous(&'static str),
}

/// `POST <path>` on `gw` as `who`, optionally resuming `ticket`.
pub async fn deploy(gw_url: &str, path: &str, who: Who, ticket: Option<&str>) -> Response {
    let url = format!("{gw_url}{path}");
    let mut headers: Vec<(&str, &str)> = vec![("host", HOST), ("content-type", "application/json")];
    match who {
        Who::User(u) => {
            headers.push(("x-user", u));
            headers.push(("x-groups", "dev"));
        }
        Who::Anonymous(key) => headers.push(("x-api-key", key)),
    }
    if let Some(id) = ticket {
        headers.push(("jit-ticket", id));
    }
    Client::http1()
        .with_timeout(Duration::from_secs(60))
        .send("POST", &url, &headers, "{}".to_string())
        .await
}

pub fn spawn_deploy(
    gw: &Gateway,
    path: &str,
    who: Who,
    ticket: Option<&str>,
) -> tokio::task::JoinHandle<Response> {
    let (url, path, ticket) = (
        gw.data_url().to_string(),
        path.to_string(),
        ticket.map(str::to_string),
    );
    tokio::spawn(async move { deploy(&url, &path, who, ticket.as_deref()).await })
}

pub async fn ticket(gw: &Gateway, id: &str) -> Value {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub fn holders(t: &Value) -> Vec<String> {
    t["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect()
}

/// Waits until ticket `id` lists `n` holders.
pub async fn wait_holders(gw: &Gateway, id: &str, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let t = ticket(gw, id).await;
        if holders(&t).len() == n {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ticket {id} never had {n} holders: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pending tickets on `prod-deploy`: id -> (path, requester JSON).
pub async fn pending(gw: &Gateway) -> BTreeMap<String, Value> {
    let r = admin_call(gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["tickets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["route"] == ROUTE)
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

pub async fn wait_pending_n(gw: &Gateway, n: usize) -> BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = pending(gw).await;
        if p.len() == n {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} pending tickets never seen: {} ({:?})",
            p.len(),
            p.keys()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn problem_type(r: &Response) -> String {
    r.json()["type"].as_str().unwrap_or_default().to_string()
}

pub async fn answered(h: tokio::task::JoinHandle<Response>) -> Response {
    tokio::time::timeout(Duration::from_secs(30), h)
        .await
        .expect("the held request answers")
        .expect("request task")
}

pub async fn abort(h: tokio::task::JoinHandle<Response>) {
    h.abort();
    let _ = h.await;
}

/// Waits until ticket `id` is no longer PENDING (or `within` passes); its JSON.
pub async fn wait_decided(gw: &Gateway, id: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let t = ticket(gw, id).await;
        if t["status"] != "PENDING" || tokio::time::Instant::now() >= deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Calls of Redis command `cmd` so far (`INFO commandstats`).
pub fn calls(redis: &RedisServer, cmd: &str) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// bob's client comes back to `gw` for ticket `id` (`Jit-Ticket`), is held until `joined`
/// says the holders list its replica, then goes away; a second later, for its leave to land.
pub async fn come_back_and_go(
    gw: &Gateway,
    path: &str,
    id: &str,
    joined: impl Fn(&[String]) -> bool,
) {
    let resumed = spawn_deploy(gw, path, Who::User("bob"), Some(id));
    let deadline = tokio::time::Instant::now() + SOON;
    while !joined(&holders(&ticket(gw, id).await)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client coming back never joined"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    abort(resumed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}
