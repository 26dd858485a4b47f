//! The audit trail end to end (SPEC 10): real gateways write their `[audit] file`, the real
//! `jitgate audit verify` checks it (and names the first broken event's seq when an event
//! is edited, removed or reordered), a restarted gateway continues the file's chain, the
//! store's chain is verified and exported through the admin API (memory store, and two
//! replicas on a real redis-server), and `GET /v1/audit` filters and pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::*;

const JITGATE: &str = env!("CARGO_BIN_EXE_jitgate");
const WAIT: Duration = Duration::from_secs(20);
const AUDIT_FILE: &str = "audit.jsonl";

/// Two approve routes for group oncall, a shadow route that records what it would deny, an
/// allow catch-all, the `[audit] file`, and `store` (empty: the memory store).
fn config(origin: &str, store: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[approvals]
hold_timeout = "100ms"

{store}

[audit]
file = "{AUDIT_FILE}"

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
name = "db-console"
methods = ["POST"]
path = "/db/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "shadow-watch"
path = "/watched/**"
upstream = "origin"
action = "deny"
enforce = false

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"

{}"#,
        identity_and_admin_toml()
    )
}

fn redis_store(redis: &RedisServer) -> String {
    format!("[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url())
}

// === the CLI ===

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

    fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "{}", self.all());
    }

    /// Exit `code` with exactly one `jitgate: ` line on stderr; returns it.
    fn assert_fails(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{}", self.all());
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {}", self.all());
        assert!(lines[0].starts_with("jitgate: "), "{}", self.all());
        lines[0]
    }
}

/// Runs `jitgate ARGS` in `dir`, without the admin variables of the environment.
async fn cli(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(JITGATE);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("JITGATE_ADMIN_URL")
        .env_remove("JITGATE_ADMIN_TOKEN")
        .stdin(Stdio::null());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || cmd.output().expect("run jitgate")),
    )
    .await
    .expect("jitgate finished within 60s")
    .expect("join");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `jitgate audit ARGS --admin <gw> --token <user's>`.
async fn audit_admin(gw: &Gateway, user: &str, args: &[&str]) -> Run {
    let token = token_of(user);
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin", gw.admin_url(), "--token", &token]);
    cli(gw.dir(), &all).await
}

// === a real trail ===

const BODY: &str = r#"{"image":"web:1.4.2"}"#;

fn as_user(user: &str, extra: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut h = vec![
        ("x-user".to_string(), user.to_string()),
        ("x-groups".to_string(), "dev".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    h
}

async fn post(gw: &Gateway, path: &str, headers: &[(String, String)]) -> Response {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    send("POST", &gw.url(path), &h, BODY).await
}

/// Holds `POST path` as `user` until the hold times out; returns the ticket id.
async fn open_ticket(gw: &Gateway, path: &str, user: &str) -> String {
    let resp = post(gw, path, &as_user(user, &[])).await;
    assert_eq!(resp.status, 202, "{}", resp.text());
    resp.header("jit-ticket").expect("Jit-Ticket").to_string()
}

/// A real trail (7 events, plus one per shadow request): on prod-deploy a ticket approved by
/// alice and released (created, approved, executed, forwarded) and one left pending
/// (created); on db-console one denied by carol (created, denied); and `shadow` requests the
/// shadow route records. `tag` keeps the requests of several calls apart.
async fn trail(gw: &Gateway, tag: &str, shadow: usize) {
    let web = format!("/deploy/{tag}/web");
    let released = open_ticket(gw, &web, "bob").await;
    let r = approve(gw, "alice", &released, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resumed = post(
        gw,
        &web,
        &as_user("bob", &[("jit-ticket", released.clone())]),
    )
    .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let denied = open_ticket(gw, &format!("/db/{tag}/drop"), "erin").await;
    let r = deny(gw, "carol", &denied, "not today").await;
    assert_eq!(r.status, 200, "{}", r.text());
    open_ticket(gw, &format!("/deploy/{tag}/api"), "bob").await;
    let client = Client::http1();
    for i in 0..shadow {
        let r = client
            .send("GET", &gw.url(&format!("/watched/{tag}/{i}")), &[], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Every event of the store's chain, through `GET /v1/audit` pages of `limit`.
async fn store_events(gw: &Gateway, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = format!("/v1/audit?limit={limit}");
        if !query.is_empty() {
            q.push('&');
            q.push_str(query);
        }
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let r = admin_call(gw, "ops", "GET", &q, "").await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        let v = r.json();
        let page = v["events"].as_array().expect("events");
        assert!(page.len() <= limit, "{q}");
        events.extend(page.iter().cloned());
        pages += 1;
        match v.get("nextCursor") {
            None => return (events, pages),
            Some(c) => cursor = Some(c.as_str().expect("a string cursor").to_string()),
        }
    }
}

/// Waits until the store's chain has at least `n` events; returns them all.
async fn wait_store_events(gw: &Gateway, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (events, _) = store_events(gw, "", 10_000).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store has {} of {n} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

/// Waits until the file has at least `n` lines; returns them.
async fn wait_file_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = file_lines(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {} of {n} lines",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn seqs(events: &[Value], key: &str) -> Vec<u64> {
    events.iter().map(|e| e[key].as_u64().expect(key)).collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect()
}

/// `lines` written to `name` in `dir` (one per line).
fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

// === the file ===

/// The file holds this replica's events in store order, each re-chained in the file's own
/// chain with its store seq and hash; `audit verify FILE` passes on it, and on a copy with
/// an edited, a removed, or a reordered event fails naming the first broken seq (and line).
#[tokio::test]
async fn a_gateway_s_audit_file_verifies_and_tampering_is_named() {
    let origin = Origin::start();
    let mut gw = Gateway::start(&config(&origin.url(), ""));
    trail(&gw, "a", 3).await;
    let events = wait_store_events(&gw, 10).await;
    assert_eq!(events.len(), 10, "{events:?}");
    let path = gw.dir().join(AUDIT_FILE);
    let lines = wait_file_lines(&path, 10).await;
    assert_eq!(lines.len(), 10);
    for (i, (line, e)) in lines.iter().zip(&events).enumerate() {
        assert_eq!(line["seq"], i as u64 + 1, "{line}");
        assert_eq!(line["storeSeq"], e["seq"], "{line}");
        assert_eq!(line["storeHash"], e["hash"], "{line}");
        for k in [
            "at",
            "kind",
            "ticket",
            "actor",
            "requester",
            "route",
            "detail",
        ] {
            assert_eq!(line[k], e[k], "{k} of line {}", i + 1);
        }
    }
    assert_eq!(lines[0]["route"], "prod-deploy");
    assert_eq!(lines[0]["kind"], "ticket.created");
    assert!(lines.iter().any(|l| l["route"] == "shadow-watch"));
    let status = gw.stop(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");

    let dir = gw.dir();
    let r = cli(dir, &["audit", "verify", AUDIT_FILE]).await;
    r.assert_ok();
    assert!(
        r.stdout.contains("10 event(s), chain intact up to seq 10"),
        "{}",
        r.all()
    );
    let last_hash = lines[9]["hash"].as_str().unwrap();
    assert!(r.stdout.contains(last_hash), "{}", r.all());

    let text = std::fs::read_to_string(&path).unwrap();
    let original: Vec<String> = text.lines().map(str::to_string).collect();

    // An edited event: who approved is changed.
    let mut edited = original.clone();
    let mut third: Value = serde_json::from_str(&edited[2]).unwrap();
    third["actor"] = "mallory".into();
    edited[2] = third.to_string();
    write_lines(dir, "edited.jsonl", &edited);
    let r = cli(dir, &["audit", "verify", "edited.jsonl"]).await;
    let line = r.assert_fails(1);
    assert!(
        line.starts_with("jitgate: edited.jsonl:3: broken at seq 3: hash does not match"),
        "{line}"
    );

    // An edited event whose hash was recomputed, without rewriting the rest of the chain.
    let mut forged = original.clone();
    let mut fourth: Value = serde_json::from_str(&forged[3]).unwrap();
    fourth["detail"] = serde_json::json!({ "upstreamStatus": 200 });
    let prev = fourth["prev"].as_str().unwrap().to_string();
    fourth["hash"] = jitgate_rules::ticket::value_hash(&prev, &fourth).into();
    forged[3] = fourth.to_string();
    write_lines(dir, "forged.jsonl", &forged);
    let r = cli(dir, &["audit", "verify", "forged.jsonl"]).await;
    let line = r.assert_fails(1);
    assert!(
        line.starts_with("jitgate: forged.jsonl:5: broken at seq 5: prev does not match"),
        "{line}"
    );

    // A removed event.
    let mut removed = original.clone();
    removed.remove(3);
    write_lines(dir, "removed.jsonl", &removed);
    let r = cli(dir, &["audit", "verify", "removed.jsonl"]).await;
    let line = r.assert_fails(1);
    assert!(
        line.starts_with("jitgate: removed.jsonl:4: broken at seq 4: expected seq 4, found 5"),
        "{line}"
    );

    // Two events swapped.
    let mut reordered = original.clone();
    reordered.swap(1, 2);
    write_lines(dir, "reordered.jsonl", &reordered);
    let r = cli(dir, &["audit", "verify", "reordered.jsonl"]).await;
    let line = r.assert_fails(1);
    assert!(
        line.starts_with("jitgate: reordered.jsonl:2: broken at seq 2: expected seq 2, found 3"),
        "{line}"
    );

    // The first event removed: the chain must start at its beginning.
    write_lines(dir, "headless.jsonl", &original[1..]);
    let r = cli(dir, &["audit", "verify", "headless.jsonl"]).await;
    assert!(
        r.assert_fails(1)
            .contains("headless.jsonl:1: broken at seq 1"),
        "{}",
        r.all()
    );

    // A line that is not an event at all.
    let mut garbage = original.clone();
    garbage.push("this is not JSON".to_string());
    write_lines(dir, "garbage.jsonl", &garbage);
    let r = cli(dir, &["audit", "verify", "garbage.jsonl"]).await;
    assert!(
        r.assert_fails(1)
            .contains("garbage.jsonl:11: broken at seq 11: not JSON"),
        "{}",
        r.all()
    );

    // The file itself was not touched by any of this.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    let r = cli(dir, &["audit", "verify", "missing.jsonl"]).await;
    assert!(
        r.assert_fails(1).contains("cannot read missing.jsonl"),
        "{}",
        r.all()
    );
}

/// An orderly restart continues the file's chain (the new memory store numbers from 1; the
/// file goes on), and the whole file still verifies. A file whose last line is broken
/// refuses the start with one line naming file:line, and is left as it was.
#[tokio::test]
async fn a_restarted_gateway_continues_the_file_s_chain() {
    let origin = Origin::start();
    let mut gw = Gateway::start(&config(&origin.url(), ""));
    let path = gw.dir().join(AUDIT_FILE);
    trail(&gw, "first", 0).await;
    wait_store_events(&gw, 7).await;
    wait_file_lines(&path, 7).await;
    let status = gw.restart_graceful(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        gw.stderr_text().contains("its chain continues after seq 7"),
        "{}",
        gw.stderr_text()
    );

    trail(&gw, "second", 0).await;
    let second = wait_store_events(&gw, 7).await;
    assert_eq!(seqs(&second, "seq"), (1..=7).collect::<Vec<_>>());
    let lines = wait_file_lines(&path, 14).await;
    assert_eq!(seqs(&lines, "seq"), (1..=14).collect::<Vec<_>>());
    let store_seqs = seqs(&lines, "storeSeq");
    assert_eq!(store_seqs[..7], store_seqs[7..]);
    assert_eq!(lines[7]["prev"], lines[6]["hash"]);
    gw.stop(WAIT).expect("exits on SIGTERM");
    let r = cli(gw.dir(), &["audit", "verify", AUDIT_FILE]).await;
    r.assert_ok();
    assert!(r.stdout.contains("14 event(s)"), "{}", r.all());

    // A write cut short by a crash leaves a broken last line: the gateway does not start a
    // second chain after it.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(r#"{"seq":15,"at":"2026-"#);
    std::fs::write(&path, &text).unwrap();
    let config_path = gw.config_path().display().to_string();
    let r = cli(gw.dir(), &["serve", "--config", &config_path]).await;
    assert_eq!(r.code, Some(1), "{}", r.all());
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "jitgate: {}:15: the last audit event is broken (not JSON",
            path.display()
        )),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("plane on"), "{}", r.all());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// SIGTERM while requests are recording events: what they recorded reaches the file before
/// the process exits. The Redis store outlives the gateway, so it says what the file must
/// hold: every event of the chain (this replica is the only one), 1 to its end.
#[tokio::test]
async fn a_graceful_shutdown_writes_out_every_event() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let mut gw = Gateway::start(&config(&origin.url(), &redis_store(&redis)));
    wait_store_ok(&gw).await;
    trail(&gw, "s", 0).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (stop, answered, url) = (stop.clone(), answered.clone(), gw.url(""));
        clients.push(tokio::spawn(async move {
            let client = Client::http1();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let target = format!("{url}/watched/burst/{c}/{i}");
                match client.try_send("GET", &target, &[], "").await {
                    Ok(r) if r.status == 200 => {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Refused or cut off once the gateway stops.
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Requests are in flight: stop now.
    let status = gw.stop(WAIT).expect("exits on SIGTERM");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(status.success(), "{status:?}\n{}", gw.stderr_text());
    let in_store: u64 = redis.cli(&["XLEN", "jit:audit"]).trim().parse().unwrap();
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed) as u64;
    assert!(
        in_store >= 7 + answered,
        "{in_store} events for {answered} answers"
    );
    let lines = file_lines(&gw.dir().join(AUDIT_FILE));
    assert_eq!(seqs(&lines, "storeSeq"), (1..=in_store).collect::<Vec<_>>());
    assert!(
        gw.stderr_text().contains(&format!(
            "audit file written and closed ({in_store} event(s) this run)"
        )),
        "{}",
        gw.stderr_text()
    );
    cli(gw.dir(), &["audit", "verify", AUDIT_FILE])
        .await
        .assert_ok();
}

// === the store's chain ===

/// `audit verify --admin` pages through the store's chain (more than one page of the CLI's
/// 1,000) and passes; `audit export` writes the same events as JSON lines, which verify as a
/// file; `--since` starts at the first event at or after a time and runs to the end. Only
/// operators can read it; the exit codes say why it failed.
#[tokio::test]
async fn the_store_s_chain_is_verified_and_exported_through_the_admin_api() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), ""));
    trail(&gw, "m", 1100).await;
    let events = wait_store_events(&gw, 1107).await;

    let r = audit_admin(&gw, "ops", &["verify"]).await;
    r.assert_ok();
    assert!(
        r.stdout
            .contains(&format!("{} event(s), chain intact", events.len())),
        "{}",
        r.all()
    );

    let r = audit_admin(&gw, "ops", &["export"]).await;
    r.assert_ok();
    let exported: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(exported.len() >= events.len());
    assert_eq!(exported[..events.len()], events[..]);
    std::fs::write(gw.dir().join("export.jsonl"), &r.stdout).unwrap();
    let r = cli(gw.dir(), &["audit", "verify", "export.jsonl"]).await;
    r.assert_ok();

    // From a point in time: the first event at or after it, and every one after it.
    let t = events[600]["at"].as_str().unwrap().to_string();
    let t_ms = |e: &Value| e["at"].as_str().unwrap().to_string();
    let start = events
        .iter()
        .position(|e| {
            jitgate_rules::Timestamp::parse_rfc3339(&t_ms(e)).unwrap()
                >= jitgate_rules::Timestamp::parse_rfc3339(&t).unwrap()
        })
        .unwrap();
    let r = audit_admin(&gw, "ops", &["export", "--since", &t]).await;
    r.assert_ok();
    let since: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(since[0], events[start]);
    assert_eq!(since[..events.len() - start], events[start..]);
    let r = audit_admin(&gw, "ops", &["verify", "--since", &t]).await;
    r.assert_ok();
    assert!(r.stdout.contains("chain intact up to seq"), "{}", r.all());
    let r = audit_admin(&gw, "ops", &["verify", "--since", "2999-01-01T00:00:00Z"]).await;
    r.assert_ok();
    assert!(
        r.stdout.contains("no events at or after 2999"),
        "{}",
        r.all()
    );

    // Operators only, and the reason is one line.
    let r = audit_admin(&gw, "alice", &["verify"]).await;
    assert!(r.assert_fails(1).contains("403"), "{}", r.all());
    let r = audit_admin(&gw, "alice", &["export"]).await;
    assert!(r.assert_fails(1).contains("403"), "{}", r.all());
    assert!(r.stdout.is_empty(), "{}", r.all());
    let r = cli(gw.dir(), &["audit", "verify", "--admin", gw.admin_url()]).await;
    assert!(r.assert_fails(1).contains("no token given"), "{}", r.all());

    // Usage errors exit 2; an admin plane that is not there exits 3.
    let r = audit_admin(&gw, "ops", &["verify", "export.jsonl"]).await;
    r.assert_fails(2);
    let r = cli(
        gw.dir(),
        &["audit", "verify", "--since", "1h", "export.jsonl"],
    )
    .await;
    r.assert_fails(2);
    let r = cli(gw.dir(), &["audit", "export", "--since", "last tuesday"]).await;
    assert_eq!(r.code, Some(2), "{}", r.all());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let token = token_of("ops");
    let url = format!("http://127.0.0.1:{closed}");
    let r = cli(
        gw.dir(),
        &["audit", "verify", "--admin", &url, "--token", &token],
    )
    .await;
    assert!(r.assert_fails(3).contains("cannot reach"), "{}", r.all());
}

/// Two replicas on one Redis, each with its own file: the store's chain verifies through
/// either admin plane; each file verifies on its own; together the files hold every event of
/// the chain exactly once. An event removed from the store is named by `verify --admin`.
#[tokio::test]
async fn replicas_on_redis_each_keep_a_file_that_verifies() {
    let redis = RedisServer::start();
    let origin = Origin::start();
    let one = Gateway::start(&config(&origin.url(), &redis_store(&redis)));
    let two = Gateway::start(&config(&origin.url(), &redis_store(&redis)));
    for gw in [&one, &two] {
        wait_store_ok(gw).await;
    }
    // Interleaved, so neither replica's events are consecutive in the store's chain.
    for round in 0..3 {
        trail(&one, &format!("one{round}"), 2).await;
        trail(&two, &format!("two{round}"), 2).await;
    }
    let total = 2 * 3 * 9;
    let events = wait_store_events(&one, total).await;
    assert_eq!(events.len(), total);

    for gw in [&one, &two] {
        let r = audit_admin(gw, "ops", &["verify"]).await;
        r.assert_ok();
        assert!(
            r.stdout.contains(&format!("{total} event(s)")),
            "{}",
            r.all()
        );
    }
    let a = wait_file_lines(&one.dir().join(AUDIT_FILE), total / 2).await;
    let b = wait_file_lines(&two.dir().join(AUDIT_FILE), total / 2).await;
    let mut all = BTreeSet::new();
    for (gw, lines) in [(&one, &a), (&two, &b)] {
        assert_eq!(lines.len(), total / 2);
        let mine = seqs(lines, "storeSeq");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        assert!(
            mine.windows(2).any(|w| w[1] > w[0] + 1),
            "the other replica's events fall in between: {mine:?}"
        );
        all.extend(mine);
        let r = cli(gw.dir(), &["audit", "verify", AUDIT_FILE]).await;
        r.assert_ok();
        assert!(
            r.stdout.contains(&format!("{} event(s)", total / 2)),
            "{}",
            r.all()
        );
    }
    assert_eq!(all, (1..=total as u64).collect::<BTreeSet<_>>());
    for line in a.iter().chain(&b) {
        let seq = line["storeSeq"].as_u64().unwrap() as usize;
        assert_eq!(line["storeHash"], events[seq - 1]["hash"], "{line}");
    }

    // Someone with access to Redis deletes an event: the store's chain no longer verifies.
    let deleted = redis.cli(&["XDEL", "jit:audit", "5-0"]);
    assert_eq!(deleted.trim(), "1", "XDEL: {deleted}");
    let r = audit_admin(&two, "ops", &["verify"]).await;
    let line = r.assert_fails(1);
    assert!(
        line.contains("is broken at seq 5: expected seq 5, found 6"),
        "{}",
        r.all()
    );
}

// === GET /v1/audit ===

/// Every filter of `GET /v1/audit` alone and together, cursor pages that add up to the
/// chain (and to a filter's matches), and refusals: a garbage cursor is a 400 problem, as
/// are an unknown kind and a repeated parameter; approvers get 403 and strangers 401.
#[tokio::test]
async fn the_audit_api_filters_and_pages() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), ""));
    trail(&gw, "f", 3).await;
    let all = wait_store_events(&gw, 10).await;
    let released = all[0]["ticket"].as_str().unwrap().to_string();

    let query = |q: String| {
        let gw = &gw;
        async move { store_events(gw, &q, 1000).await.0 }
    };
    let filtered = |pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        all.iter().filter(|e| pred(e)).cloned().collect()
    };
    let ticket = query(format!("ticket={released}")).await;
    assert_eq!(
        kinds(&ticket),
        [
            "ticket.created",
            "ticket.approved",
            "ticket.executed",
            "ticket.forwarded"
        ]
    );
    // The requester, or the actor: carol decided erin's ticket.
    assert_eq!(
        kinds(&query("requester=carol".into()).await),
        ["ticket.denied"]
    );
    assert_eq!(
        kinds(&query("requester=erin".into()).await),
        ["ticket.created", "ticket.denied"]
    );
    assert_eq!(
        query("route=db-console".into()).await,
        filtered(&|e| e["route"] == "db-console")
    );
    assert_eq!(query("route=shadow-watch".into()).await.len(), 3);
    assert_eq!(query("route=nope".into()).await.len(), 0);
    assert_eq!(
        query("kind=ticket.created".into()).await,
        filtered(&|e| e["kind"] == "ticket.created")
    );
    assert_eq!(query("kind=ticket.created".into()).await.len(), 3);
    assert_eq!(
        kinds(&query("route=prod-deploy&kind=ticket.created&requester=bob".into()).await),
        ["ticket.created", "ticket.created"]
    );
    let at =
        |e: &Value| jitgate_rules::Timestamp::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let pivot = all[4]["at"].as_str().unwrap().to_string();
    let t = at(&all[4]);
    assert_eq!(
        query(format!("since={pivot}")).await,
        filtered(&|e| at(e) >= t)
    );
    assert_eq!(
        query(format!("until={pivot}")).await,
        filtered(&|e| at(e) < t)
    );

    // Pages of 3 follow each other to the end; the last has no nextCursor.
    let (paged, pages) = store_events(&gw, "", 3).await;
    assert_eq!(paged, all);
    assert_eq!(pages, 4);
    let first = admin_call(&gw, "ops", "GET", "/v1/audit?limit=3", "").await;
    let cursor = first.json()["nextCursor"].as_str().unwrap().to_string();
    let second = admin_call(
        &gw,
        "ops",
        "GET",
        &format!("/v1/audit?limit=3&cursor={cursor}"),
        "",
    )
    .await;
    assert_eq!(second.json()["events"][0], all[3]);
    let (paged, _) = store_events(&gw, "route=prod-deploy", 2).await;
    assert_eq!(paged, filtered(&|e| e["route"] == "prod-deploy"));

    // Refusals are problems.
    for (q, needle) in [
        ("cursor=garbage", "cursor"),
        ("cursor=c1.abc", "cursor"),
        ("cursor=%00%ff", "malformed"),
        ("kind=ticket.exploded", "kind must be one of"),
        ("kind=ticket.created&kind=ticket.denied", "more than once"),
        ("since=yesterday", "RFC 3339"),
        ("limit=0", "limit"),
        ("page=2", "unknown query parameter"),
    ] {
        let r = admin_call(&gw, "ops", "GET", &format!("/v1/audit?{q}"), "").await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{q}"
        );
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains(needle), "{q}: {detail}");
    }
    let r = admin_call(&gw, "alice", "GET", "/v1/audit?route=prod-deploy", "").await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send("GET", &gw.admin("/v1/audit"), &[], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
}
