//! `jitgate tickets list|show|approve|deny` (SPEC 9) run as the real binary against a real
//! gateway's admin plane: tickets are opened by holding requests on an approve route, then
//! listed, shown and decided through the CLI, and the decisions checked through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const JITGATE: &str = env!("CARGO_BIN_EXE_jitgate");
const WAIT: Duration = Duration::from_secs(10);

/// Trusted loopback identity headers, a short hold, an approve route for group oncall, and
/// an allow catch-all.
fn config(origin: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[approvals]
hold_timeout = "100ms"

[[upstreams]]
name = "origin"
url = "{origin}"

[[routes]]
name = "prod-deploy"
methods = ["POST"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{}"#,
        identity_and_admin_toml()
    )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Exit 1 with exactly one `jitgate: ` line on stderr.
    fn assert_refused(&self) {
        assert_eq!(self.code, Some(1), "{}", self.all());
        assert_one_line(self);
    }
}

fn assert_one_line(r: &Run) {
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", r.all());
    assert!(lines[0].starts_with("jitgate: "), "{}", r.all());
}

/// Runs `jitgate ARGS` in `dir` with `env` (and neither admin variable inherited).
async fn cli_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = Command::new(JITGATE);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("JITGATE_ADMIN_URL")
        .env_remove("JITGATE_ADMIN_TOKEN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || cmd.output().expect("run jitgate")),
    )
    .await
    .expect("jitgate finished within 30s")
    .expect("join");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `jitgate tickets --admin <gw> --token <user's token> ARGS`, run in the gateway's dir.
async fn tickets(gw: &Gateway, user: &str, args: &[&str]) -> Run {
    let token = token_of(user);
    let mut all = vec!["tickets", "--admin", gw.admin_url(), "--token", &token];
    all.extend_from_slice(args);
    cli_env(gw.dir(), &[], &all).await
}

/// Holds `POST <path>` as bob until the hold times out; returns the ticket id.
async fn open_ticket(gw: &Gateway, path: &str) -> String {
    let resp = send(
        "POST",
        &gw.url(path),
        &[
            ("x-user", "bob"),
            ("x-groups", "dev"),
            ("jit-reason", "hotfix 4411"),
            ("content-type", "application/json"),
        ],
        r#"{"image":"web:1.4.2"}"#,
    )
    .await;
    assert_eq!(resp.status, 202, "{}", resp.text());
    let id = resp.header("jit-ticket").expect("Jit-Ticket").to_string();
    assert!(id.starts_with("jit_"), "{id}");
    id
}

async fn status_of(gw: &Gateway, id: &str) -> String {
    let r = admin_call(gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["status"].as_str().unwrap_or_default().to_string()
}

fn start() -> (Origin, Gateway) {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url()));
    (origin, gw)
}

#[tokio::test]
async fn tickets_list_show_approve_and_deny() {
    let (origin, gw) = start();
    let web = open_ticket(&gw, "/deploy/web").await;
    let api = open_ticket(&gw, "/deploy/api").await;

    // list: the pending tickets as a table.
    let r = tickets(&gw, "alice", &["list"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    let header = r.stdout.lines().next().unwrap_or_default();
    for col in ["ID", "STATUS", "ROUTE", "REQUESTER", "REQUEST", "APPROVALS"] {
        assert!(header.contains(col), "{col}: {}", r.all());
    }
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&web))
        .unwrap_or_else(|| panic!("{web} listed: {}", r.all()));
    for cell in [
        "PENDING",
        "prod-deploy",
        "bob",
        "POST",
        "/deploy/web",
        "0/1",
    ] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
    assert!(r.stdout.contains(&api), "{}", r.all());

    // list --json: the API's document.
    let r = tickets(&gw, "alice", &["list", "--json"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    let listed = v["tickets"].as_array().expect("tickets");
    assert!(listed.iter().any(|t| t["id"] == web.as_str()), "{v}");

    // The server's own bounds are reported as its refusal.
    let r = tickets(&gw, "alice", &["list", "--limit", "100000"]).await;
    r.assert_refused();
    assert!(r.stderr.contains("400"), "{}", r.all());

    // show: the request, requester, reason and body preview.
    let r = tickets(&gw, "alice", &["show", &web]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    for needle in [
        web.as_str(),
        "PENDING",
        "POST /deploy/web",
        "bob (groups: dev)",
        "hotfix 4411",
        "web:1.4.2",
        "group:oncall",
        "0/1",
    ] {
        assert!(r.stdout.contains(needle), "{needle}: {}", r.all());
    }
    let r = tickets(&gw, "alice", &["show", &web, "--json"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    let t: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(t["request"]["path"], "/deploy/web", "{t}");

    // approve: one line, exit 0, and the ticket is approved.
    let r = tickets(&gw, "alice", &["approve", &web, "--comment", "ok"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_eq!(
        r.stdout.trim(),
        format!("{web}: APPROVED (1/1)"),
        "{}",
        r.all()
    );
    let t = wait_status(&gw, &web, "APPROVED", WAIT).await;
    assert_eq!(t["approvals"][0]["by"], "alice", "{t}");
    assert_eq!(t["approvals"][0]["comment"], "ok", "{t}");
    let r = tickets(&gw, "alice", &["show", &web]).await;
    assert!(r.stdout.contains("alice (oncall)"), "{}", r.all());
    assert!(r.stdout.contains("\"ok\""), "{}", r.all());

    // approving it again is refused: exit 1 with one line saying why.
    let r = tickets(&gw, "alice", &["approve", &web]).await;
    r.assert_refused();
    assert!(r.stderr.contains(&web), "{}", r.all());
    assert!(r.stderr.contains("409"), "{}", r.all());
    assert!(
        r.stdout.starts_with(&format!("{web}: refused: 409 ")),
        "{}",
        r.all()
    );

    // deny the other one with a reason.
    let r = tickets(&gw, "alice", &["deny", &api, "--reason", "no"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_eq!(r.stdout.trim(), format!("{api}: DENIED"), "{}", r.all());
    let t = wait_status(&gw, &api, "DENIED", WAIT).await;
    assert_eq!(t["denyReason"], "no", "{t}");

    // Nothing pending any more; the decided ones show up under their status or `all`.
    let r = tickets(&gw, "alice", &["list"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(!r.stdout.contains(&web), "{}", r.all());
    let r = tickets(&gw, "alice", &["list", "--status", "denied"]).await;
    assert!(
        r.stdout.contains(&api) && !r.stdout.contains(&web),
        "{}",
        r.all()
    );
    let r = tickets(&gw, "alice", &["list", "--status", "all"]).await;
    assert!(
        r.stdout.contains(&api) && r.stdout.contains(&web),
        "{}",
        r.all()
    );

    // The deploy itself never reached the origin (only the approval would release it).
    assert!(
        origin
            .requests()
            .iter()
            .all(|q| !q.path().starts_with("/deploy/")),
        "held requests were forwarded"
    );
}

#[tokio::test]
async fn tickets_batch_decisions_report_each_ticket() {
    let (_origin, gw) = start();
    let a = open_ticket(&gw, "/deploy/a").await;
    let b = open_ticket(&gw, "/deploy/b").await;
    let c = open_ticket(&gw, "/deploy/c").await;

    let r = tickets(&gw, "alice", &["approve", &a, &b, "-m", "batch"]).await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{a}: APPROVED (1/1)").as_str(),
            format!("{b}: APPROVED (1/1)").as_str()
        ],
        "{}",
        r.all()
    );
    assert_eq!(status_of(&gw, &a).await, "APPROVED");
    assert_eq!(status_of(&gw, &b).await, "APPROVED");

    // A batch where one ticket cannot be decided: the others are, and the exit is 1.
    let r = tickets(&gw, "carol", &["deny", &a, &c, "--reason", "later"]).await;
    r.assert_refused();
    assert!(
        r.stdout.contains(&format!("{a}: refused: 409")),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains(&format!("{c}: DENIED")), "{}", r.all());
    assert!(r.stderr.contains(&a), "{}", r.all());
    assert_eq!(status_of(&gw, &a).await, "APPROVED");
    assert_eq!(status_of(&gw, &c).await, "DENIED");

    // Someone who is not an approver sees none of them: unknown, exit 1.
    let d = open_ticket(&gw, "/deploy/d").await;
    let r = tickets(&gw, "mallory", &["approve", &d]).await;
    r.assert_refused();
    assert!(r.stderr.contains("404"), "{}", r.all());
    assert_eq!(status_of(&gw, &d).await, "PENDING");
}

#[tokio::test]
async fn tickets_refused_without_valid_credentials() {
    let (_origin, gw) = start();
    let id = open_ticket(&gw, "/deploy/web").await;
    let admin = gw.admin_url().to_string();

    // A wrong token: 401, one line.
    let r = cli_env(
        gw.dir(),
        &[],
        &["tickets", "--admin", &admin, "--token", "wrong", "list"],
    )
    .await;
    r.assert_refused();
    assert!(r.stderr.contains("401"), "{}", r.all());
    assert!(r.stdout.is_empty(), "{}", r.all());

    // No token at all: the request is still made, and the 401 says how to give one.
    let r = cli_env(
        gw.dir(),
        &[],
        &["tickets", "--admin", &admin, "approve", &id],
    )
    .await;
    r.assert_refused();
    assert!(r.stderr.contains("401"), "{}", r.all());
    assert!(r.stderr.contains("JITGATE_ADMIN_TOKEN"), "{}", r.all());
    assert_eq!(status_of(&gw, &id).await, "PENDING");

    // A wrong token for a batch.
    let other = open_ticket(&gw, "/deploy/api").await;
    let r = cli_env(
        gw.dir(),
        &[],
        &[
            "tickets", "--admin", &admin, "--token", "wrong", "deny", &id, &other,
        ],
    )
    .await;
    r.assert_refused();
    assert!(r.stderr.contains("401"), "{}", r.all());
    assert_eq!(status_of(&gw, &id).await, "PENDING");
    assert_eq!(status_of(&gw, &other).await, "PENDING");
}

#[tokio::test]
async fn tickets_take_the_admin_url_and_token_from_env_or_config() {
    let (_origin, gw) = start();
    let id = open_ticket(&gw, "/deploy/web").await;
    let token = token_of("alice");

    // JITGATE_ADMIN_URL and JITGATE_ADMIN_TOKEN.
    let r = cli_env(
        gw.dir(),
        &[
            ("JITGATE_ADMIN_URL", gw.admin_url()),
            ("JITGATE_ADMIN_TOKEN", &token),
        ],
        &["tickets", "list"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains(&id), "{}", r.all());

    // admin_listen of a config (here the gateway's, with its bound admin address filled in).
    let dir = tempfile::tempdir().expect("tempdir");
    let table = std::fs::read_to_string(gw.config_path())
        .expect("gateway config")
        .replacen(
            "admin_listen = \"127.0.0.1:0\"",
            &format!("admin_listen = \"{}\"", gw.admin_addr()),
            1,
        );
    std::fs::write(dir.path().join("proxy.toml"), &table).expect("write config");
    // ./proxy.toml by default ...
    let r = cli_env(
        dir.path(),
        &[("JITGATE_ADMIN_TOKEN", &token)],
        &["tickets", "show", &id],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains("/deploy/web"), "{}", r.all());
    // ... or --config.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    let r = cli_env(
        elsewhere.path(),
        &[("JITGATE_ADMIN_TOKEN", &token)],
        &[
            "tickets",
            "--config",
            config.to_str().expect("utf-8 path"),
            "approve",
            &id,
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert_eq!(status_of(&gw, &id).await, "APPROVED");

    // --admin wins over the variable.
    let r = cli_env(
        gw.dir(),
        &[
            ("JITGATE_ADMIN_URL", "http://127.0.0.1:1"),
            ("JITGATE_ADMIN_TOKEN", &token),
        ],
        &[
            "tickets",
            "--admin",
            gw.admin_url(),
            "list",
            "--status",
            "all",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stdout.contains(&id), "{}", r.all());
}

#[tokio::test]
async fn tickets_report_an_unreachable_admin_api_in_one_line() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["tickets", "--admin", &url, "list"],
        vec![
            "tickets",
            "--admin",
            &url,
            "show",
            "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B",
        ],
        vec![
            "tickets",
            "--admin",
            &url,
            "approve",
            "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B",
        ],
    ] {
        let r = cli_env(dir.path(), &[("JITGATE_ADMIN_TOKEN", "t")], &args).await;
        // 3: distinct from "refused" (1) and usage errors (2), so scripts can retry.
        assert_eq!(r.code, Some(3), "{}", r.all());
        assert_one_line(&r);
        assert!(
            r.stderr
                .contains(&format!("cannot reach the admin API at {url}")),
            "{}",
            r.all()
        );
    }
}

#[tokio::test]
async fn tickets_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["tickets"],
        vec!["tickets", "approve"],
        vec!["tickets", "approve", "jit_../../v1/admin/reload"],
        vec!["tickets", "show", "not-a-ticket"],
        vec!["tickets", "list", "--status", "SOMETIMES"],
        vec!["tickets", "list", "--limit", "0"],
        vec!["tickets", "--admin", "https://127.0.0.1:9090", "list"],
    ] {
        let r = cli_env(dir.path(), &[], &args).await;
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.all());
    }
    // An invalid JITGATE_ADMIN_URL is a one-line failure too.
    let r = cli_env(
        dir.path(),
        &[("JITGATE_ADMIN_URL", "ftp://nowhere")],
        &["tickets", "list"],
    )
    .await;
    assert_eq!(r.code, Some(1), "{}", r.all());
    assert_one_line(&r);
    assert!(r.stderr.contains("JITGATE_ADMIN_URL"), "{}", r.all());
}
