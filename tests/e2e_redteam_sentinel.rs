//! Red team on the Redis store behind Sentinel and over TLS (commits 8eced6e, a86a07e,
//! dda54ba): `WAIT replica_acks` durability, the held request's retry of an unconfirmed
//! release, `Store::durable`, and the Sentinel follower.
//!
//! Everything is real: `redis-server` primaries, replicas and sentinels on loopback, the
//! `jitgate` binary, a recording origin. Faults are injected the way a network or an operator
//! would: a replica stopped (SIGSTOP) so it acknowledges nothing, the gateway's connection
//! killed (`CLIENT KILL`, as Sentinel itself does to clients of a node it reconfigures), a
//! primary killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::*;

const ROUTE: &str = "prod-deploy";
const SOON: Duration = Duration::from_secs(20);

fn config(store_url: &str, origin: &Origin, hold: &str, store_extra: &str) -> String {
    approve_route_config(
        &format!("kind = \"redis\"\nurl = \"{store_url}\"\n{store_extra}"),
        &format!(
            "hold_timeout = \"{hold}\"\nreconcile_interval = \"300ms\"\nsigning_key = \"key.pem\""
        ),
        &origin.url(),
    )
}

/// `POST /deploy/<name>` as bob, with `extra` headers (`Jit-Ticket`, say).
async fn deploy(gw: &Gateway, name: &str, extra: &[(&str, &str)]) -> Response {
    post_deploy(gw.url(&format!("/deploy/{name}")), extra).await
}

/// `POST <url>` as bob with the deploy body, with `extra` headers.
async fn post_deploy(url: String, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![
        ("host", "api.example.com"),
        ("x-user", "bob"),
        ("x-groups", "dev"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    Client::http1()
        .with_timeout(Duration::from_secs(90))
        .send(
            "POST",
            &url,
            &headers,
            r#"{"image":"web:1.4.2"}"#.to_string(),
        )
        .await
}

/// The process id of a redis-server (`INFO server`).
fn pid_of(node: &RedisServer) -> u32 {
    let info = node.cli(&["INFO", "server"]);
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in INFO server: {info}"))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}

/// Continues stopped processes when dropped (a failed assertion must not leave them stopped).
struct Stopped(Vec<u32>);

impl Stopped {
    fn stop(pids: Vec<u32>) -> Stopped {
        for &p in &pids {
            signal(p, "STOP");
        }
        Stopped(pids)
    }

    fn resume(&mut self) {
        for p in self.0.drain(..) {
            signal(p, "CONT");
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", &p.to_string()])
                .status();
        }
    }
}

/// Writes `mb` MiB of filler to the primary on `port` so that, with its replicas stopped,
/// the kernel socket buffers towards them are full: whatever the primary writes next stays
/// in its own memory (a replica's `omem`) and dies with it.
fn fill_replication_links(port: u16, mb: usize) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect primary");
    let value = vec![b'x'; 1 << 20];
    let mut reply = [0u8; 64];
    for i in 0..mb {
        let key = format!("filler:{i}");
        let mut cmd = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
            key.len(),
            value.len()
        )
        .into_bytes();
        cmd.extend_from_slice(&value);
        cmd.extend_from_slice(b"\r\n");
        s.write_all(&cmd).expect("write filler");
        let n = s.read(&mut reply).expect("read reply");
        assert!(reply[..n].starts_with(b"+OK"), "SET filler");
    }
}

/// Output buffered by the primary for each replica connection (`CLIENT LIST TYPE replica`).
fn replica_omem(primary: &RedisServer) -> Vec<u64> {
    primary
        .cli(&["CLIENT", "LIST", "TYPE", "replica"])
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("omem="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Waits until the release of ticket `id` is on `primary` and a client is blocked in `WAIT`
/// (its confirmation: the connection runs commands in order, so nothing before the release
/// still blocks it), then kills that connection (what Sentinel does to the clients of a node
/// it reconfigures, or any network reset).
async fn kill_wait_after_release(primary: &RedisServer, id: &str) -> String {
    let key = format!("jit:{{{id}}}:t");
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let landed = primary.cli(&["GET", &key]).contains("rel_");
        let list = primary.cli(&["CLIENT", "LIST", "TYPE", "normal"]);
        if let (true, Some(line)) = (landed, list.lines().find(|l| l.contains(" cmd=wait "))) {
            let id = line
                .split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .expect("client id")
                .to_string();
            let killed = primary.cli(&["CLIENT", "KILL", "ID", &id]);
            assert_eq!(killed.trim(), "1", "CLIENT KILL ID {id}: {killed}");
            return line.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the release never landed and waited (landed: {landed}):\n{list}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SPEC 6 / 11.2: "An approved action request reaches the upstream at most once"; README
/// `replica_acks`: a release is only forwarded once the store confirms a replica has it.
///
/// The release is written to the primary, its `WAIT 1` cannot confirm (both replicas are
/// stopped, the links to them backed up), and the gateway's connection is reset while it
/// waits. The read-back (`get`, then `Store::durable`, a bare `WAIT`) runs on the reconnected
/// connection, which has written nothing. Redis 7.0 sets a client's WAIT offset after every
/// command, the `GET` included, so the WAIT still covers the release and fails: nothing is
/// forwarded, and after the failover the request is released once. WITHSTOOD here; the
/// documented WAIT contract ("writes sent by this client"; newer servers track only
/// propagated commands) would make this WAIT vacuous and the request go out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_read_back_on_a_reset_connection_is_not_confirmed_vacuously() {
    let mut set = SentinelSet::start(2);
    let origin = Origin::start();
    let cfg = config(&set.url(), &origin, "1s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;

    // Held for the 1 s hold, answered 202 with its ticket; then approved (durably).
    let first = deploy(&gw, "web", &[]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("Jit-Ticket").to_string();
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    set.wait_synced();
    assert_eq!(origin.count(), 0);
    // Let the approval's own follow-ups (notification fan-out) finish while replicas answer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    set.wait_synced();

    // Both replicas stop acknowledging, and the links to them are backed up: a write the
    // primary takes now reaches no replica.
    let primary_port = set.primary_port();
    let primary = set.primary();
    assert!(primary
        .cli(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "replica 0 0 0"
        ])
        .contains("OK"));
    let replicas: Vec<u32> = set
        .nodes
        .iter()
        .filter(|n| n.port != primary_port)
        .map(pid_of)
        .collect();
    let mut stopped = Stopped::stop(replicas);
    fill_replication_links(primary_port, 64);
    let omem = replica_omem(primary);
    assert!(
        omem.len() == 2 && omem.iter().all(|&m| m > 0),
        "the replication links are not backed up: {omem:?}"
    );

    // The client resumes; its release lands on the primary only, and the gateway's
    // connection is reset while it waits for a replica.
    let url_gw = &gw;
    let resumed = async { deploy(url_gw, "web", &[("jit-ticket", id.as_str())]).await };
    let killer = async { kill_wait_after_release(primary, &id).await };
    let (resumed, killed) = tokio::join!(resumed, killer);
    eprintln!(
        "killed: {killed}\nresume answered {} {}",
        resumed.status,
        resumed.text()
    );
    let forwarded_unconfirmed = origin.count();
    // The spent use is on no replica (they are stopped, the links backed up).
    let on_primary = primary.cli(&["GET", &format!("jit:{{{id}}}:t")]);
    assert!(
        on_primary.contains("rel_"),
        "the release is not on the primary: {on_primary}"
    );

    // The primary dies with the release; a replica that never had it is promoted.
    set.nodes
        .iter_mut()
        .find(|n| n.port == primary_port)
        .expect("primary")
        .stop();
    stopped.resume();
    let new = set.wait_failover(primary_port);
    assert_ne!(new, primary_port);

    // The same client resumes again, as a 503 invites it to.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    let again = loop {
        let r = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
        if !(502..=504).contains(&r.status.as_u16()) {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never came back: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "resume after failover answered {} {}",
        again.status,
        again.text()
    );
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert!(
        origin.count() <= 1,
        "an approved action request (token_uses = 1) reached the upstream {} times: \
         {forwarded_unconfirmed} time(s) while no replica had its spent use (resume answered {}), \
         then again after the failover ({}). Paths: {:?}",
        origin.count(),
        resumed.status,
        again.status,
        origin
            .requests()
            .iter()
            .map(|r| r.path().to_string())
            .collect::<Vec<_>>()
    );
}

/// The sentinels' ports, from [`SentinelSet::url`].
fn sentinel_ports(set: &SentinelSet) -> Vec<u16> {
    let url = set.url();
    let hosts = url
        .strip_prefix("redis+sentinel://")
        .and_then(|r| r.split('/').next())
        .expect("sentinel url");
    hosts
        .split(',')
        .map(|h| h.rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Sets `replica-priority` on the replica on `port` and waits until every sentinel has read
/// it (they refresh a replica's INFO every 10 s).
async fn set_priority(set: &SentinelSet, port: u16, priority: u32) {
    let node = set.nodes.iter().find(|n| n.port == port).expect("node");
    let p = priority.to_string();
    assert!(node
        .cli(&["CONFIG", "SET", "replica-priority", &p])
        .contains("OK"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for s in sentinel_ports(set) {
        loop {
            let out = redis_cli(s, &["SENTINEL", "REPLICAS", common::sentinel::MASTER]);
            let lines: Vec<&str> = out.lines().collect();
            // Flat key/value lines per replica: find this replica's port, then its priority.
            let mut seen = false;
            let mut i = 0;
            while i + 1 < lines.len() {
                if lines[i] == "port" && lines[i + 1] == port.to_string() {
                    let rest = &lines[i..];
                    if let Some(j) = rest.iter().position(|l| *l == "slave-priority") {
                        seen = rest.get(j + 1) == Some(&p.as_str());
                    }
                    break;
                }
                i += 1;
            }
            if seen {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sentinel {s} never saw priority {p} on {port}:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// README `replica_acks`: Sentinel promotes by `replica-priority` first and replication offset
/// second, so a replica that never had a write can be the one promoted. With two replicas
/// and `replica_acks = 2` (every replica, the strict setting), a release one replica lacks
/// (the preferred one, priority 1, is cut off: stopped, its link backed up) is never
/// confirmed and nothing is forwarded; after the primary dies and the preferred replica is
/// promoted, the resumed request reaches the upstream at most once. (The red team's finding:
/// with `WAIT 1` the DR replica confirmed the release, the preferred one was promoted
/// without it, and the request was forwarded twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_a_replica_lacks_is_not_forwarded_with_every_replica_required() {
    let mut set = SentinelSet::start(2);
    let origin = Origin::start();
    let old = set.primary_port();
    let (preferred, dr) = (set.nodes[1].port, set.nodes[2].port);
    set_priority(&set, preferred, 1).await;
    set_priority(&set, dr, 100).await;
    let cfg = config(&set.url(), &origin, "1s", "replica_acks = 2");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;

    let first = deploy(&gw, "web", &[]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("Jit-Ticket").to_string();
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(1)).await;
    set.wait_synced();

    // The preferred replica is cut off: stopped, and its link backed up so nothing more
    // reaches it. The DR replica keeps up and acknowledges.
    let primary = set.primary();
    assert!(primary
        .cli(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "replica 0 0 0"
        ])
        .contains("OK"));
    let pid = pid_of(set.nodes.iter().find(|n| n.port == preferred).unwrap());
    let mut stopped = Stopped::stop(vec![pid]);
    fill_replication_links(old, 32);
    let list = primary.cli(&["CLIENT", "LIST", "TYPE", "replica"]);
    assert!(
        replica_omem(primary).iter().any(|&m| m > 0),
        "the preferred replica's link is not backed up:\n{list}"
    );

    // The client resumes: the release is written and reaches the DR replica only, so it is
    // not confirmed and nothing is forwarded.
    let resumed = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    assert_eq!(resumed.status, 503, "{}", resumed.text());
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert_eq!(origin.count(), 0, "an unconfirmed release was forwarded");
    let key = format!("jit:{{{id}}}:t");
    let _ = dr;

    // The primary dies; the preferred replica comes back and is promoted.
    set.nodes[0].stop();
    stopped.resume();
    let new = set.wait_failover(old);
    assert_eq!(
        new, preferred,
        "sentinel promoted the DR replica; the scenario needs the preferred one"
    );
    let on_new = redis_cli(new, &["GET", &key]);
    eprintln!("ticket on the new primary: {on_new}");

    // The same client resumes again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let again = loop {
        let r = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
        if !(502..=504).contains(&r.status.as_u16()) {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never came back: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    // Forwarded once now, or (when the unconfirmed release reached the promoted replica
    // after all, through what was still in flight) refused as used: never twice.
    let expected = match again.status.as_u16() {
        200 => 1,
        403 => 0,
        s => panic!(
            "the resume after the failover answered {s} {}",
            again.text()
        ),
    };
    assert_eq!(
        origin.count(),
        expected,
        "an approved action request (token_uses = 1) reached the upstream {} times (ticket on \
         the new primary: {on_new}); the resume after the failover answered {} {}",
        origin.count(),
        again.status,
        again.text()
    );
}

/// A sentinel that answers `SENTINEL MASTERS` with `names` (name, ip, port) flagged master,
/// and `+OK` to anything else: one that is stale (it missed a failover in a partition, or
/// was restarted with its old config) or misconfigured.
async fn lying_sentinel(port_named: u16) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    // One command: *N then N bulk strings.
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let n: usize = line.trim().trim_start_matches('*').parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        let mut len = String::new();
                        if r.read_line(&mut len).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let len: usize = len.trim().trim_start_matches('$').parse().unwrap_or(0);
                        let mut buf = vec![0u8; len + 2];
                        if tokio::io::AsyncReadExt::read_exact(&mut r, &mut buf)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        buf.truncate(len);
                        args.push(String::from_utf8_lossy(&buf).to_uppercase());
                    }
                    let reply = if args.first().map(String::as_str) == Some("SENTINEL")
                        && args.get(1).map(String::as_str) == Some("MASTERS")
                    {
                        let fields = [
                            "name",
                            common::sentinel::MASTER,
                            "ip",
                            "127.0.0.1",
                            "port",
                            &port_named.to_string(),
                            "flags",
                            "master",
                        ]
                        .iter()
                        .map(|f| format!("${}\r\n{f}\r\n", f.len()))
                        .collect::<String>();
                        format!("*1\r\n*8\r\n{fields}")
                    } else {
                        "+OK\r\n".to_string()
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// README `url`: "the primary is found through the sentinels ..., checked with `ROLE`".
/// One sentinel of four (listed first) names a node that is a replica. The ROLE check
/// rightly refuses it, but the client then gives up instead of asking the next sentinel:
/// the three healthy sentinels, which agree on the real primary, are never consulted, and
/// the gateway never reaches its store (approve routes 503 for as long as that one sentinel
/// stays stale; a running gateway likewise never follows a failover).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_stale_sentinel_listed_first_keeps_the_store_unreachable() {
    let set = SentinelSet::start(1);
    let origin = Origin::start();
    let replica = set.nodes[1].port;
    let liar = lying_sentinel(replica).await;
    let url = set.url().replacen(
        "redis+sentinel://",
        &format!("redis+sentinel://127.0.0.1:{liar},"),
        1,
    );
    let cfg = config(&url, &origin, "30s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        let r = send("GET", &gw.admin("/readyz"), &[], "").await;
        let status = r.json()["store"]["status"].clone();
        if status == "ok" || tokio::time::Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status,
        "ok",
        "three of four sentinels name the primary, yet the store is unreachable:\n{}",
        gw.stderr_text()
            .lines()
            .filter(|l| l.contains("redis"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A standalone primary with one replica, in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", &format!("127.0.0.1 {}", primary.port)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while primary.cli(&["WAIT", "1", "500"]).trim() != "1" {
        assert!(std::time::Instant::now() < deadline, "replica never synced");
    }
    (primary, replica)
}

/// Holds `POST /deploy/<name>` in the background.
fn hold(gw: &Gateway, name: &'static str) -> tokio::task::JoinHandle<Response> {
    tokio::spawn(post_deploy(gw.url(&format!("/deploy/{name}")), &[]))
}

/// README `replica_acks`: "a held request whose release could not be confirmed is not
/// forwarded but keeps waiting ... while its hold lasts". The replica stops acknowledging
/// while the request is held; the approval and the release land on the primary only. While
/// the replica is away nothing is forwarded, a resume of the same request is refused (the use
/// is spent), and once it is back the held request is forwarded exactly once. WITHSTOOD.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unconfirmed_release_is_forwarded_once_when_the_replica_returns() {
    let (primary, replica) = primary_and_replica();
    let origin = Origin::start();
    let cfg = config(&primary.url(), &origin, "30s", "replica_acks = 1");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;

    let held = hold(&gw, "web");
    let t = wait_pending(&gw, ROUTE, SOON).await;
    let id = t["id"].as_str().unwrap().to_string();
    let mut stopped = Stopped::stop(vec![pid_of(&replica)]);

    // The approval lands on the primary but is not confirmed: the approver is told 503.
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        gw.wait_for_stderr("the store could not confirm the release; holding on", SOON)
            .await,
        "the held request never tried its release:\n{}",
        gw.stderr_text()
    );
    origin.assert_no_new_requests(Duration::from_secs(2)).await;
    assert_eq!(origin.count(), 0, "forwarded before a replica had the use");
    // The same request resumed meanwhile: its use is spent (by the holder), so it is refused.
    let resumed = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    assert_eq!(resumed.status, 403, "{}", resumed.text());
    assert_eq!(origin.count(), 0);

    stopped.resume();
    let resp = tokio::time::timeout(Duration::from_secs(40), held)
        .await
        .expect("held request answered")
        .expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    origin.assert_no_new_requests(Duration::from_secs(1)).await;
    assert_eq!(origin.count(), 1);
    wait_status(&gw, &id, "EXECUTED", SOON).await;
}

/// A release still unconfirmed when the hold ends (the only replica stopped): the client is
/// answered 503 with its ticket and nothing is forwarded; once the replica is back the
/// release the primary took lands, so the approval is used up without a forward (a known
/// limit, README "Known limits"), and the request never reaches the upstream twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_unconfirmed_at_the_end_of_the_hold_is_never_forwarded_twice() {
    let (primary, replica) = primary_and_replica();
    let origin = Origin::start();
    let cfg = config(&primary.url(), &origin, "6s", "replica_acks = 1");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;

    let started = tokio::time::Instant::now();
    let held = hold(&gw, "web");
    let t = wait_pending(&gw, ROUTE, SOON).await;
    let id = t["id"].as_str().unwrap().to_string();
    let mut stopped = Stopped::stop(vec![pid_of(&replica)]);
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 503, "{}", r.text());

    // The replica stays away past the hold: the client is told to come back.
    let resp = tokio::time::timeout(Duration::from_secs(40), held)
        .await
        .expect("held request answered")
        .expect("task");
    eprintln!(
        "hold of 6s answered after {:?}: {} {}",
        started.elapsed(),
        resp.status,
        resp.text()
    );
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.json()["ticket"], id.as_str());
    assert_eq!(origin.count(), 0);

    // The replica is back; the client resumes as the 503 invites it to.
    stopped.resume();
    let deadline = tokio::time::Instant::now() + SOON;
    let resumed = loop {
        let r = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
        if r.status != 503 || tokio::time::Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert!(
        origin.count() <= 1,
        "the approved request reached the upstream {} times; the resume answered {} {}",
        origin.count(),
        resumed.status,
        resumed.text()
    );
}

/// The store stays unreachable for `gw`: `/readyz` never says ok, and the approve route
/// answers 503 without forwarding.
async fn store_refused(gw: &Gateway, origin: &Origin) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let r = send("GET", &gw.admin("/readyz"), &[], "").await;
        assert_ne!(r.json()["store"]["status"], "ok", "the store was reached");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = deploy(gw, "web", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(origin.count(), 0);
}

/// TLS: the server's certificate names 127.0.0.1; the URL says `localhost` (which resolves
/// there). The name is checked, not only the chain: refused. WITHSTOOD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_store_certificate_for_another_name_is_refused() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, false);
    let origin = Origin::start();
    let url = redis.url().replace("127.0.0.1", "localhost");
    let cfg = config(&url, &origin, "30s", r#"ca_file = "redis-ca.pem""#);
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .file("redis-ca.pem", pki.ca_pem())
        .start();
    store_refused(&gw, &origin).await;
}

/// Runs `jitgate serve` on `cfg` (in a temp folder with `files`) and returns its exit status
/// if it exits within `within`, killing it otherwise.
fn serve_exits(
    cfg: &str,
    files: &[(&str, &str)],
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("proxy.toml"), cfg).expect("write config");
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).expect("write file");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config"])
        .arg(dir.path().join("proxy.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run jitgate");
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// README `ca_file`: "Read at start: an unreadable or unparsable file stops the start" (the
/// commit: "a bad one stops the start rather than leaving approve routes at 503 while the
/// store is retried"). A `ca_file` with no certificate in it (a key, an empty file, a DER
/// file, a typo'd path to the wrong PEM) parses as zero roots: the gateway starts, trusts
/// nothing, and approve routes answer 503 for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_without_a_certificate_stops_the_start() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, false);
    let origin = Origin::start();
    let cfg = config(&redis.url(), &origin, "30s", r#"ca_file = "redis-ca.pem""#)
        .replace("signing_key = \"key.pem\"\n", "");
    for ca in ["", "not a certificate\n", &pki.issue_client("x").key_pem] {
        let exited = serve_exits(&cfg, &[("redis-ca.pem", ca)], Duration::from_secs(4));
        assert!(
            exited.is_some_and(|s| !s.success()),
            "a ca_file with no certificate ({:?}...) did not stop the start: {exited:?}",
            ca.chars().take(20).collect::<String>()
        );
    }
}

/// `jitgate check` is what operators (and `PUT /v1/admin/rules/source`) rely on to tell a
/// config that will run. These `[store] url`s pass `check` and every reload, and then
/// `jitgate serve` refuses to start on them ("bad redis url"): a rollout that restarts pods
/// takes the gateway down with a file `check` called OK.
#[test]
fn check_refuses_store_urls_that_serve_refuses() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                [[upstreams]]\nname = \"o\"\nurl = \"http://127.0.0.1:9\"\n\
                [[routes]]\nname = \"r\"\npath = \"/**\"\nupstream = \"o\"\naction = \"allow\"\n";
    let mut passed = Vec::new();
    for url in [
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0?protocol=resp9",
    ] {
        let cfg = format!("{base}[store]\nkind = \"redis\"\nurl = \"{url}\"\n");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, &cfg).expect("write");
        let check = Command::new(env!("CARGO_BIN_EXE_jitgate"))
            .arg("check")
            .arg(&file)
            .output()
            .expect("run check");
        let served = serve_exits(&cfg, &[], Duration::from_secs(4));
        if check.status.success() && served.is_some_and(|s| !s.success()) {
            passed.push(url);
        }
    }
    assert!(
        passed.is_empty(),
        "`jitgate check` said OK, `jitgate serve` refused to start: {passed:?}"
    );
}

/// Credentials in the store URL (data nodes) and `sentinel_password` never reach the log,
/// `/readyz` or a problem+json body when they are wrong. WITHSTOOD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_store_credentials_do_not_leak() {
    let redis = RedisServer::start();
    assert!(redis
        .cli(&["CONFIG", "SET", "requirepass", "the-right-one"])
        .contains("OK"));
    let origin = Origin::start();
    let url = format!("redis://app:hunter2-data@127.0.0.1:{}/0", redis.port);
    let set = SentinelSet::start(1);
    let sentinel_url = set
        .url()
        .replace("redis+sentinel://", "redis+sentinel://app:hunter2-node@");
    for (url, extra) in [
        (url.as_str(), ""),
        (
            sentinel_url.as_str(),
            "sentinel_password = \"hunter2-sentinel\"",
        ),
    ] {
        let cfg = config(url, &origin, "30s", extra);
        let gw = Gateway::builder(&cfg)
            .file("key.pem", signing_key_pem())
            .start();
        store_refused(&gw, &origin).await;
        let ready = send("GET", &gw.admin("/readyz"), &[], "").await.text();
        let answer = deploy(&gw, "web", &[]).await.text();
        let logs = format!("{}{}", gw.stderr_text(), gw.stdout_text());
        for (what, text) in [("/readyz", &ready), ("503 body", &answer), ("log", &logs)] {
            assert!(
                !text.contains("hunter2"),
                "{what} shows a password: {}",
                text.lines()
                    .filter(|l| l.contains("hunter2"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        eprintln!("readyz: {ready}");
    }
}

/// Every sentinel goes away (stopped: connections hang) while the primary is fine: the
/// follower keeps the primary it has, and requests are still held and released. WITHSTOOD.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_is_kept_while_no_sentinel_answers() {
    let set = SentinelSet::start(1);
    let origin = Origin::start();
    let cfg = config(&set.url(), &origin, "30s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let pids: Vec<u32> = sentinel_ports(&set)
        .into_iter()
        .map(|p| {
            let info = redis_cli(p, &["INFO", "server"]);
            info.lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("sentinel pid")
        })
        .collect();
    let _stopped = Stopped::stop(pids);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let held = hold(&gw, "web");
    let t = wait_pending(&gw, ROUTE, SOON).await;
    let r = approve(&gw, "alice", t["id"].as_str().unwrap(), "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let resp = tokio::time::timeout(SOON, held)
        .await
        .expect("released")
        .expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(origin.wait_for(1, SOON).await.len(), 1);
}

/// Two identical requests from one requester share one ticket (coalescing, SPEC 6); its
/// release cannot be confirmed (the replica is stopped). One holder's use lands unconfirmed,
/// the other is refused at once ("already redeemed"); when the replica returns the first is
/// forwarded; the upstream sees the request once. WITHSTOOD.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_holders_with_an_unconfirmed_release_reach_the_upstream_once() {
    let (primary, replica) = primary_and_replica();
    let origin = Origin::start();
    let cfg = config(&primary.url(), &origin, "30s", "replica_acks = 1");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let a = hold(&gw, "web");
    let t = wait_pending(&gw, ROUTE, SOON).await;
    let id = t["id"].as_str().unwrap().to_string();
    let b = hold(&gw, "web");
    // The second joins the first's ticket (still one pending ticket).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    assert_eq!(list.json()["tickets"].as_array().unwrap().len(), 1);
    let mut stopped = Stopped::stop(vec![pid_of(&replica)]);
    let r = approve(&gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 503, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(origin.count(), 0);
    stopped.resume();
    let (a, b) = tokio::join!(a, b);
    let mut statuses = vec![a.unwrap().status.as_u16(), b.unwrap().status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 403]);
    origin.assert_no_new_requests(Duration::from_secs(1)).await;
    assert_eq!(origin.count(), 1);
}
