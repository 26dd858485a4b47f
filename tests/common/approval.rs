//! Helpers for approval tests: admin credentials, requester identity, a real `redis-server`
//! on a free loopback port, and admin-API shortcuts.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::client::{send, Client, Response};
use super::gateway::Gateway;
use super::origin::sha256_hex;

/// The admin users every approval test config knows: `ops` (operator, group platform),
/// `alice` and `carol` (group oncall), `bob` (group dev), `mallory` (no group).
pub const ADMIN_USERS: [(&str, &str); 5] = [
    ("ops", "platform"),
    ("alice", "oncall"),
    ("carol", "oncall"),
    ("bob", "dev"),
    ("mallory", ""),
];

/// The static API token of an admin user.
pub fn token_of(user: &str) -> String {
    format!("{user}-api-token-for-tests")
}

/// `Authorization: Bearer <token>` value of an admin user.
pub fn bearer_of(user: &str) -> String {
    format!("Bearer {}", token_of(user))
}

/// `[admin]` with the operators group and a hashed API token per [`ADMIN_USERS`], plus
/// `[identity.headers]` (X-User / X-Groups, believed from loopback, the tests' peer).
pub fn identity_and_admin_toml() -> String {
    let tokens: Vec<String> = ADMIN_USERS
        .iter()
        .map(|(user, group)| {
            let groups = if group.is_empty() {
                String::new()
            } else {
                format!("\"{group}\"")
            };
            format!(
                "{{ name = \"{user}-token\", user = \"{user}\", sha256 = \"{}\", groups = [{groups}] }}",
                sha256_hex(token_of(user).as_bytes())
            )
        })
        .collect();
    format!(
        "[identity.headers]\nuser = \"X-User\"\ngroups = \"X-Groups\"\n\n\
         [admin]\noperators = [\"group:platform\"]\napi_tokens = [\n  {}\n]\n",
        tokens.join(",\n  ")
    )
}

/// A policy test's gateway config: loopback listeners trusting loopback as a proxy, `store`,
/// `[approvals]` with `approvals` (its own lines) and `signing_key = "key.pem"`, the one
/// upstream `origin` at `origin_url`, `routes`, a catch-all `rest` allow route, `extra` (e.g.
/// `[[notify]]`), and [`identity_and_admin_toml`].
pub fn policy_config(
    origin_url: &str,
    store: &str,
    approvals: &str,
    routes: &str,
    extra: &str,
) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
         {store}\n\
         [approvals]\n{approvals}signing_key = \"key.pem\"\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n\n\
         {routes}\n\
         [[routes]]\nname = \"rest\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n\n\
         {extra}\n{}",
        identity_and_admin_toml()
    )
}

/// An admin-API call as `user`.
pub async fn admin_call(
    gw: &Gateway,
    user: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Response {
    let auth = bearer_of(user);
    send(
        method,
        &gw.admin(path),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// Polls the pending list (as `ops`) until a ticket on `route` appears; returns it.
pub async fn wait_pending(gw: &Gateway, route: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = admin_call(gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
        assert_eq!(r.status, 200, "list: {}", r.text());
        if let Some(t) = r.json()["tickets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["route"] == route).cloned())
        {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pending ticket on {route} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a ticket (as `ops`) until its status is `status`.
pub async fn wait_status(gw: &Gateway, id: &str, status: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
        if r.status == 200 && r.json()["status"] == status {
            return r.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ticket {id} not {status} within {timeout:?}: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /v1/tickets/{id}/approve` as `user`.
pub async fn approve(gw: &Gateway, user: &str, id: &str, comment: &str) -> Response {
    let body = serde_json::json!({ "comment": comment }).to_string();
    admin_call(
        gw,
        user,
        "POST",
        &format!("/v1/tickets/{id}/approve"),
        &body,
    )
    .await
}

/// `POST /v1/tickets/{id}/deny` as `user`.
pub async fn deny(gw: &Gateway, user: &str, id: &str, reason: &str) -> Response {
    let body = serde_json::json!({ "reason": reason }).to_string();
    admin_call(gw, user, "POST", &format!("/v1/tickets/{id}/deny"), &body).await
}

/// The kinds of a ticket's audit events (as `ops`), in chain order, following `nextCursor`
/// through every page.
pub async fn audit_kinds(gw: &Gateway, id: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = admin_call(
            gw,
            "ops",
            "GET",
            &format!("/v1/audit?ticket={id}{cursor}"),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "audit: {}", r.text());
        let page = r.json();
        kinds.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["kind"].as_str().unwrap_or_default().to_string()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return kinds,
        }
    }
}

/// Polls a ticket's audit events (as `ops`) until every kind in `want` is there; returns them.
pub async fn wait_audit(gw: &Gateway, id: &str, want: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kinds = audit_kinds(gw, id).await;
        if want.iter().all(|w| kinds.iter().any(|k| k == w)) {
            return kinds;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit of {id} lacks some of {want:?}: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 20 s) until the gateway reports its store reachable (the Redis store
/// connects in the background).
pub async fn wait_store_ok(gw: &Gateway) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = send("GET", &gw.admin("/readyz"), &[], "").await;
        if r.status == 200 && r.json()["store"]["status"] == "ok" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "store not reachable: {}\n{}",
            r.text(),
            gw.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh Ed25519 PKCS#8 PEM (what `[approvals] signing_key` expects), for replicas that
/// must verify each other's tokens; made with `openssl` (scripts/test installs it).
pub fn signing_key_pem() -> String {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519"])
        .output()
        .expect("run openssl genpkey");
    assert!(
        out.status.success(),
        "openssl genpkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}

/// A throwaway `redis-server` on a free loopback port (never the machine's 6379), killed on
/// drop. Persistence off: "restart" tests restart the gateway, not Redis.
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Started with [`RedisServer::start_tls`]: its server arguments.
    tls: Option<RedisTls>,
    /// More server arguments ([`RedisServer::start_with`]).
    extra: Vec<String>,
}

/// A TLS-only redis-server's files (in its folder) and whether it asks for client certificates.
struct RedisTls {
    /// `--tls-*` arguments of the server.
    server_args: Vec<String>,
    /// `--tls ...` arguments of redis-cli (it presents a client certificate).
    cli_args: Vec<String>,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments (`--replicaof`, say).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        assert_ne!(port, 6379);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            tls: None,
            extra: args.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Starts one that speaks only TLS, with a server certificate for 127.0.0.1 issued by
    /// `pki`; with `require_client_cert`, clients must present a certificate `pki` issued.
    pub fn start_tls(pki: &super::tls::TestPki, require_client_cert: bool) -> RedisServer {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        assert_ne!(port, 6379);
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem()).expect("write ca");
        let (cert, key) = pki
            .issue_server(&["127.0.0.1"])
            .write_to(dir.path(), "server");
        let (cli_cert, cli_key) = pki.issue_client("redis-cli").write_to(dir.path(), "cli");
        let s = |p: &std::path::Path| p.display().to_string();
        let server_args = vec![
            "--tls-port".into(),
            port.to_string(),
            "--port".into(),
            "0".into(),
            "--tls-cert-file".into(),
            s(&cert),
            "--tls-key-file".into(),
            s(&key),
            "--tls-ca-cert-file".into(),
            s(&ca),
            "--tls-auth-clients".into(),
            (if require_client_cert { "yes" } else { "no" }).into(),
        ];
        let cli_args = vec![
            "--tls".into(),
            "--cacert".into(),
            s(&ca),
            "--cert".into(),
            s(&cli_cert),
            "--key".into(),
            s(&cli_key),
        ];
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            tls: Some(RedisTls {
                server_args,
                cli_args,
            }),
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new(redis_server());
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command.args(&tls.server_args),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/0`, or `rediss://` when it speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Its folder (the TLS files of [`RedisServer::start_tls`] are there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `redis-cli` against it and returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let tls: &[String] = self.tls.as_ref().map_or(&[], |t| &t.cli_args);
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(tls)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Starts it again on the same port (empty: persistence is off) after [`Self::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops it (SIGKILL): the store becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_server() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// A gateway on loopback with `store` as its `[store]` lines and `approvals` as its
/// `[approvals]` lines: an approve route `prod-deploy` on `POST /deploy/**` decided by
/// `group:oncall` (quorum 1), an allow catch-all, both to `origin_url`, and the identity and
/// admin sections of [`identity_and_admin_toml`].
pub fn approve_route_config(store: &str, approvals: &str, origin_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[store]
{store}

[approvals]
{approvals}

[[upstreams]]
name = "origin"
url = "{origin_url}"

[[routes]]
name = "prod-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
quorum = 1

[[routes]]
name = "everything-else"
path = "/**"
upstream = "origin"
action = "allow"

{identity}"#,
        identity = identity_and_admin_toml(),
    )
}

/// Holds `POST /deploy/<name>` on `gw` in the background, as bob (`prod-deploy` of
/// [`approve_route_config`]).
pub fn hold_deploy(gw: &Gateway, name: &str) -> tokio::task::JoinHandle<Response> {
    let url = gw.url(&format!("/deploy/{name}"));
    tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(90))
            .send(
                "POST",
                &url,
                &[
                    ("host", "api.example.com"),
                    ("x-user", "bob"),
                    ("x-groups", "dev"),
                    ("content-type", "application/json"),
                ],
                "{}".to_string(),
            )
            .await
    })
}

/// Waits until `n` tickets of route `prod-deploy` ([`approve_route_config`]) are pending on
/// `gw`; their ids by request path.
pub async fn pending_deploys(gw: &Gateway, n: usize) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = admin_call(gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
        if r.status == 200 {
            let found: BTreeMap<String, String> = r.json()["tickets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["route"] == "prod-deploy")
                .map(|t| {
                    (
                        t["request"]["path"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        t["id"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            if found.len() == n {
                return found;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} pending tickets not seen: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Approves `id` through `gw` as alice, asking again while the store is failing over or
/// moving (502-504); an answer that the ticket is already approved (an earlier attempt
/// landed but its answer was lost) counts as done.
pub async fn approve_retrying(gw: &Gateway, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let r = approve(gw, "alice", id, "while the store moves").await;
        match r.status.as_u16() {
            200 => return,
            409 => {
                let t = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
                let status = t.json()["status"].as_str().unwrap_or_default().to_string();
                assert!(
                    status == "APPROVED" || status == "EXECUTED",
                    "approve {id}: 409 {} while the ticket is {status}",
                    r.text()
                );
                return;
            }
            502..=504 => {}
            s => panic!("approve {id}: {s} {}", r.text()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "approve {id} never went through: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
