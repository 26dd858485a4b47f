//! Red team on the Redis Cluster store (commits 2eb3d0a, 36652f4, b99a628): the `{jit}` hash
//! tag, `Conn::at_keys` (WAIT/ROLE/PING/SCAN on the slot's primary), the replica count that
//! writes wait for (`slot_replicas`/`count_slot_replicas`), the decision listener on a seed
//! node, and `redis+cluster://` URLs.
//!
//! Everything is real: `redis-server --cluster-enabled yes` nodes on loopback, the `jitgate`
//! binary, a recording origin. Faults are injected the way a network or an operator would: a
//! replica whose link to its primary is cut (it cannot authenticate to it any more, so it
//! stays cut while it remains a failover candidate), a node stopped (SIGSTOP), a primary
//! killed, the gateway's connection reset while it waits for a replica.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SOON: Duration = Duration::from_secs(20);
/// The store's slot on Cluster (README).
const SLOT: u16 = 4875;

fn config(store_url: &str, origin: &Origin, hold: &str, store_extra: &str) -> String {
    approve_route_config(
        &format!("kind = \"redis\"\nurl = \"{store_url}\"\n{store_extra}"),
        &format!(
            "hold_timeout = \"{hold}\"\nreconcile_interval = \"300ms\"\nsigning_key = \"key.pem\""
        ),
        &origin.url(),
    )
}

/// `POST /deploy/<name>` as `user`, with `extra` headers (`Jit-Ticket`, say).
async fn deploy_as(gw: &Gateway, user: &str, name: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![
        ("host", "api.example.com"),
        ("x-user", user),
        ("x-groups", "dev"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    Client::http1()
        .with_timeout(Duration::from_secs(90))
        .send(
            "POST",
            &gw.url(&format!("/deploy/{name}")),
            &headers,
            r#"{"image":"web:1.4.2"}"#.to_string(),
        )
        .await
}

async fn deploy(gw: &Gateway, name: &str, extra: &[(&str, &str)]) -> Response {
    deploy_as(gw, "bob", name, extra).await
}

/// Re-sends until the store answers something other than 502-504 (a failover ending).
async fn deploy_until_store_answers(gw: &Gateway, name: &str, extra: &[(&str, &str)]) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let r = deploy(gw, name, extra).await;
        if !(502..=504).contains(&r.status.as_u16()) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never came back: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The process id of the node on `port`.
fn pid_of(cluster: &RedisCluster, port: u16) -> u32 {
    let info = cluster.node_cli(port, false, &["INFO", "server"]);
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in INFO server of {port}: {info}"))
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

/// The ports of the replicas of the primary on `primary`.
fn replicas_of(cluster: &RedisCluster, primary: u16) -> Vec<u16> {
    let id = cluster.id_of(primary);
    cluster
        .node_cli(primary, false, &["CLUSTER", "NODES"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 3 && f[2].contains("slave") && f[3] == id {
                f[1].split('@').next()?.rsplit(':').next()?.parse().ok()
            } else {
                None
            }
        })
        .collect()
}

/// The port of a replica of `primary` that is linked and in sync (`redis-cli --cluster
/// create` attaches replicas after the harness already sees the cluster ok).
async fn replica_of(cluster: &RedisCluster, primary: u16) -> u16 {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        if let Some(&r) = replicas_of(cluster, primary).first() {
            if repl_field(cluster, r, "master_link_status") == "up" {
                return r;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the primary {primary} never got a replica:\n{}",
            cluster.node_cli(primary, false, &["CLUSTER", "NODES"])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `field` of `INFO replication` on `port`.
fn repl_field(cluster: &RedisCluster, port: u16, field: &str) -> String {
    let info = cluster.node_cli(port, false, &["INFO", "replication"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until the replica on `replica` has everything its primary `primary` wrote.
async fn wait_replica_caught_up(cluster: &RedisCluster, primary: u16, replica: u16) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let p = repl_field(cluster, primary, "master_repl_offset");
        let r = repl_field(cluster, replica, "slave_repl_offset");
        if !p.is_empty() && p == r && repl_field(cluster, replica, "master_link_status") == "up" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica {replica} never caught up with {primary}: {p} vs {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a node other than `old` serves `slot`.
async fn wait_slot_moves_off(cluster: &RedisCluster, slot: u16, old: u16) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now_owner = std::panic::catch_unwind(|| cluster.owner_of(slot)).ok();
        if let Some(p) = now_owner.filter(|p| *p != old) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no replica took slot {slot}:\n{}",
            cluster.cli(&["CLUSTER", "NODES"])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ticket's record as the node on `port` holds it (`READONLY` first: it may be a
/// replica).
fn record_on(port: u16, id: &str) -> String {
    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    let key = format!("{{jit}}jit:{{{id}}}:t");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("READONLY\nGET {key}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("redis-cli output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Failover with a replica that is cut off but still a failover candidate.
// ---------------------------------------------------------------------------------------------

/// SPEC 6 / 11.2 / 11.3 / 11.8: "An approved action request reaches the upstream at most
/// once", "a decision is never lost", with a Redis Cluster during a failover.
///
/// The store makes writes wait (`WAIT n`) for the replicas the slot's primary has
/// *connected* (`ROLE`, polled every 250 ms). A replica whose replication link is down is
/// not counted, yet Cluster still promotes it when the primary dies (it is a failover
/// candidate for `cluster-node-timeout * cluster-replica-validity-factor +
/// repl-ping-replica-period`, about a minute here, 3 min with defaults). Here the replica's link is cut
/// (it can no longer authenticate to its primary: `masterauth` set wrong, link reset), so the
/// gateway's writes stop waiting for anything: the release (spent use) lands on the primary
/// only and is forwarded; the primary dies, the replica that never had the release is
/// promoted, the ticket is APPROVED again there, and the same client's resume is forwarded a
/// second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_on_a_primary_whose_replica_is_cut_off_is_not_forwarded_twice_after_failover() {
    let mut cluster = RedisCluster::start(3, 1);
    let origin = Origin::start();
    let cfg = config(&cluster.url(), &origin, "1s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;

    let primary = cluster.owner_of(SLOT);
    let replica = replica_of(&cluster, primary).await;

    // Held for the 1 s hold, answered 202 with its ticket; approved while the replica is in
    // sync (the approval waited for it).
    let first = deploy(&gw, "web", &[]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("Jit-Ticket").to_string();
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_replica_caught_up(&cluster, primary, replica).await;
    assert!(record_on(replica, &id).contains("APPROVED"));
    assert_eq!(origin.count(), 0);

    // The replica's link is cut: it cannot authenticate to its primary any more. It stays a
    // cluster node, a replica of that primary, and a failover candidate.
    assert!(cluster
        .node_cli(
            replica,
            false,
            &["CONFIG", "SET", "masterauth", "not-the-primary-password"]
        )
        .contains("OK"));
    cluster.node_cli(replica, false, &["CLIENT", "KILL", "TYPE", "master"]);
    let deadline = tokio::time::Instant::now() + SOON;
    while repl_field(&cluster, primary, "connected_slaves") != "0" {
        assert!(tokio::time::Instant::now() < deadline, "the link stayed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gateway's replica count is refreshed every 250 ms.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(repl_field(&cluster, replica, "master_link_status"), "down");

    // The client resumes: the release lands on the primary only.
    let resumed = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    eprintln!("resume answered {} {}", resumed.status, resumed.text());
    let forwarded_unreplicated = origin.count();
    assert!(
        !record_on(replica, &id).contains("EXECUTED"),
        "the replica got the release after all"
    );

    // The primary dies; the replica that lacks the release is promoted.
    cluster.kill(primary);
    let new = wait_slot_moves_off(&cluster, SLOT, primary).await;
    assert_eq!(new, replica);
    let on_new = record_on(new, &id);
    eprintln!("ticket on the new primary: {on_new}");

    // The same client resumes again.
    let again = deploy_until_store_answers(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert!(
        origin.count() <= 1,
        "an approved action request (token_uses = 1) reached the upstream {} times: {} time(s) \
         while the slot's only replica (cut off, still a failover candidate) lacked the spent \
         use (resume answered {}), then again after that replica was promoted ({} {}); the \
         ticket there: {on_new}",
        origin.count(),
        forwarded_unreplicated,
        resumed.status,
        again.status,
        if again.status == 200 { "forwarded" } else { "" }
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The gateway's connection reset while it waits for the replica.
// ---------------------------------------------------------------------------------------------

/// Writes `mb` MiB of filler into the store's slot on the primary `port`, so that with its
/// replica stopped the socket buffers towards it are full and whatever it writes next stays
/// in the primary's own memory (and dies with it).
fn fill_replication_links(port: u16, mb: usize) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect primary");
    let value = vec![b'x'; 1 << 20];
    let mut reply = [0u8; 256];
    for i in 0..mb {
        let key = format!("{{jit}}redteam:filler:{i}");
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
        assert!(
            reply[..n].starts_with(b"+OK"),
            "SET filler: {}",
            String::from_utf8_lossy(&reply[..n])
        );
    }
}

/// Output buffered by the primary for each replica connection.
fn replica_omem(cluster: &RedisCluster, port: u16) -> Vec<u64> {
    cluster
        .node_cli(port, false, &["CLIENT", "LIST", "TYPE", "replica"])
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("omem="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// SPEC 11.2 on Cluster. The cluster client (redis-rs `cluster_async`) retries a command by
/// itself when its connection drops: a `WAIT` that confirms a release would be sent again
/// on a fresh connection, where (on servers that count only propagated writes per client)
/// it has nothing to wait for. The release is written to the slot's primary, its replica is
/// stopped with the link backed up, and the gateway's connection is reset while it waits.
/// The request must not be forwarded unconfirmed, and after the failover it reaches the
/// upstream at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_retried_by_the_cluster_client_on_a_fresh_connection_does_not_confirm_a_release() {
    let mut cluster = RedisCluster::start(3, 1);
    let origin = Origin::start();
    let cfg = config(&cluster.url(), &origin, "1s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let primary = cluster.owner_of(SLOT);
    let replica = replica_of(&cluster, primary).await;

    let first = deploy(&gw, "web", &[]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("Jit-Ticket").to_string();
    let r = approve(&gw, "alice", &id, "ship it").await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_replica_caught_up(&cluster, primary, replica).await;

    // The replica stops acknowledging and its link backs up.
    assert!(cluster
        .node_cli(
            primary,
            false,
            &[
                "CONFIG",
                "SET",
                "client-output-buffer-limit",
                "replica 0 0 0"
            ]
        )
        .contains("OK"));
    let mut stopped = Stopped::stop(vec![pid_of(&cluster, replica)]);
    fill_replication_links(primary, 64);
    assert!(
        replica_omem(&cluster, primary).iter().all(|&m| m > 0),
        "the replication link is not backed up"
    );

    // The client resumes; once the release is on the primary and the gateway blocks in WAIT,
    // its connection is reset.
    let resumed = async { deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await };
    let killer = async {
        let key = format!("{{jit}}jit:{{{id}}}:t");
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let landed = cluster
                .node_cli(primary, false, &["GET", &key])
                .contains("rel_");
            let list = cluster.node_cli(primary, false, &["CLIENT", "LIST", "TYPE", "normal"]);
            if let (true, Some(line)) = (landed, list.lines().find(|l| l.contains(" cmd=wait "))) {
                let cid = line
                    .split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .expect("client id")
                    .to_string();
                let killed = cluster.node_cli(primary, false, &["CLIENT", "KILL", "ID", &cid]);
                return format!("{line} -> {killed}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the release never landed and waited:\n{list}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (resumed, killed) = tokio::join!(resumed, killer);
    eprintln!(
        "killed: {killed}\nresume answered {} {}",
        resumed.status,
        resumed.text()
    );
    let forwarded_unconfirmed = origin.count();

    // The primary dies with the release in its memory; the replica that never had it is
    // promoted.
    cluster.kill(primary);
    stopped.resume();
    let new = wait_slot_moves_off(&cluster, SLOT, primary).await;
    eprintln!("ticket on the new primary: {}", record_on(new, &id));

    let again = deploy_until_store_answers(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert!(
        origin.count() <= 1,
        "forwarded {} times: {forwarded_unconfirmed} while unconfirmed (resume answered {}), \
         then after the failover ({})",
        origin.count(),
        resumed.status,
        again.status
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Keys: client-chosen names with braces, a password with URL-special characters.
// ---------------------------------------------------------------------------------------------

/// Every key on `port` (`--scan`).
fn scan_keys(cluster: &RedisCluster, port: u16) -> Vec<String> {
    cluster
        .node_cli(port, false, &["--scan"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Keys embed the requester (`jit:pr:<len>:<route>:<requester>`, `jit:src:<requester>`) and
/// the fingerprint; a requester, reason or header with `{`/`}` must not move a key out of
/// the store's slot (CROSSSLOT) nor break a script. Run on a cluster that requires a password
/// full of URL-special characters (`@ : / , %`), percent-encoded in the URL as `check` wants:
/// the store (commands and the decision listener on a seed) authenticates with the same
/// password. Every key on every node is in slot 4875; held requests are released once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn braces_in_requesters_and_headers_keep_every_key_in_the_stores_slot() {
    let pass = "p@ss:w/rd,x%y{jit}";
    let server_args: Vec<String> = ["--requirepass", pass, "--masterauth", pass]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cli_args: Vec<String> = ["-a", pass, "--no-auth-warning"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cluster = RedisCluster::start_with(3, 0, &server_args, &cli_args);
    let enc = "p%40ss%3Aw%2Frd%2Cx%25y%7Bjit%7D";
    let url = cluster
        .url()
        .replace("redis+cluster://", &format!("redis+cluster://:{enc}@"));
    let origin = Origin::start();
    let pem = signing_key_pem();
    let cfg = config(&url, &origin, "60s", "");
    let a = Gateway::builder(&cfg).file("key.pem", pem.clone()).start();
    let b = Gateway::builder(&cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;

    let users = ["b}o{b", "{x}", "}{", "{", "a{b}c", "{jit}"];
    let mut held = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let url = a.url(&format!("/deploy/n{i}"));
        let u = u.to_string();
        held.push(tokio::spawn(async move {
            Client::http1()
                .with_timeout(Duration::from_secs(90))
                .send(
                    "POST",
                    &url,
                    &[
                        ("host", "api.example.com"),
                        ("x-user", &u),
                        ("x-groups", "dev"),
                        ("jit-reason", "{jit} } { reason"),
                        ("x-extra", "{a}{b}"),
                        ("content-type", "application/json"),
                    ],
                    r#"{"k":"{jit}"}"#.to_string(),
                )
                .await
        }));
    }
    // An anonymous requester (identified by a digest of its credential) with braces too.
    let anon_url = a.url("/deploy/anon");
    held.push(tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(90))
            .send(
                "POST",
                &anon_url,
                &[
                    ("host", "api.example.com"),
                    ("authorization", "Bearer {jit}}{"),
                    ("content-type", "application/json"),
                ],
                "{}".to_string(),
            )
            .await
    }));
    let deadline = tokio::time::Instant::now() + SOON;
    let ids: Vec<String> = loop {
        let r = admin_call(&b, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
        let ids: Vec<String> = r.json()["tickets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["id"].as_str().unwrap_or_default().to_string())
            .collect();
        if ids.len() == users.len() + 1 {
            break ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every request opened a ticket: {}\n{}",
            r.text(),
            a.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(origin.count(), 0);
    for id in &ids {
        approve_retrying(&b, id).await;
    }
    for h in held {
        let resp = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("released")
            .expect("task");
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), users.len() + 1);

    let owner = cluster.owner_of(SLOT);
    for n in &cluster.nodes {
        for key in scan_keys(&cluster, n.port) {
            assert!(
                n.port == owner && key.starts_with("{jit}"),
                "key `{key}` on {} (the slot's owner is {owner})",
                n.port
            );
            assert_eq!(cluster.slot_of(&key), SLOT, "key `{key}`");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A cluster URL naming something that is not a cluster.
// ---------------------------------------------------------------------------------------------

/// SPEC 6 / 11.4: a standalone (non-cluster) Redis given as the only cluster seed is a store
/// the gateway cannot use: approve routes answer 503 and forward nothing; allow routes flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standalone_redis_given_as_a_cluster_seed_fails_closed() {
    let standalone = RedisServer::start();
    let origin = Origin::start();
    let url = format!("redis+cluster://127.0.0.1:{}", standalone.port);
    let cfg = config(&url, &origin, "2s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // It keeps trying; meanwhile the approve route is closed and the allow route open.
    loop {
        let r = deploy(&gw, "web", &[]).await;
        assert_eq!(r.status, 503, "{}", r.text());
        let ok = Client::http1()
            .send(
                "GET",
                &gw.url("/status"),
                &[("host", "api.example.com")],
                String::new(),
            )
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready = send("GET", &gw.admin("/readyz"), &[], "").await;
    assert_ne!(ready.json()["store"]["status"], "ok", "{}", ready.text());
    assert!(origin.requests().iter().all(|r| r.path() == "/status"));
    // Nothing was written to the standalone server.
    assert_eq!(standalone.cli(&["DBSIZE"]).trim(), "0");
}

// ---------------------------------------------------------------------------------------------
// 5. The decision listener's seed node hangs.
// ---------------------------------------------------------------------------------------------

/// SPEC 6 / 11.3: "a lost pub/sub message delays release at most by the reconciliation
/// interval". The listener subscribes on the first seed node only; here that node hangs
/// (SIGSTOP: its TCP connections stay open, so the listener sees no error and never moves
/// to the next seed). A request held on A and approved through B is still released (by
/// reconciliation), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_seed_node_under_the_listener_does_not_lose_a_decision() {
    let cluster = RedisCluster::start(3, 1);
    let origin = Origin::start();
    // A seed that is not the store's primary first (the listener's), then the rest.
    let owner = cluster.owner_of(SLOT);
    let other = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != owner)
        .expect("another primary");
    let mut seeds = vec![format!("127.0.0.1:{other}")];
    seeds.extend(
        cluster
            .nodes
            .iter()
            .filter(|n| n.port != other)
            .map(|n| format!("127.0.0.1:{}", n.port)),
    );
    let url = format!("redis+cluster://{}", seeds.join(","));
    let pem = signing_key_pem();
    let cfg = config(&url, &origin, "60s", "");
    let a = Gateway::builder(&cfg).file("key.pem", pem.clone()).start();
    let b = Gateway::builder(&cfg).file("key.pem", pem).start();
    wait_store_ok(&a).await;
    wait_store_ok(&b).await;
    // A is subscribed on `other`.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let subs = cluster.node_cli(other, false, &["PUBSUB", "NUMSUB", "jit:decisions"]);
        if subs.lines().nth(1).map(str::trim) == Some("2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no listener on {other}: {subs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let held = hold_deploy(&a, "web");
    let ids = pending_deploys(&b, 1).await;
    let _stopped = Stopped::stop(vec![pid_of(&cluster, other)]);
    approve_retrying(&b, &ids["/deploy/web"]).await;
    let resp = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .unwrap_or_else(|_| panic!("not released\n{}", a.stderr_text()))
        .expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 6. A migration of the store's slot abandoned half-way.
// ---------------------------------------------------------------------------------------------

/// SPEC 11.1 / 11.2 / 11.8 during a slot migration an operator abandons half-way: the
/// pending ticket's record has been moved to the target (`MIGRATE`) and then both nodes are
/// told `CLUSTER SETSLOT <slot> STABLE`, so the source serves the slot again without that
/// record (it sits on the target, in a slot the target does not serve). Nothing may be
/// forwarded unapproved, an approval the store cannot apply must not be answered 200, and
/// once the migration is completed the ticket is approved and the request released once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_migration_abandoned_half_way_forwards_nothing_unapproved_and_releases_once() {
    let cluster = RedisCluster::start(3, 0);
    let origin = Origin::start();
    let cfg = config(&cluster.url(), &origin, "1s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;

    let first = deploy(&gw, "web", &[]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("Jit-Ticket").to_string();

    let from = cluster.owner_of(SLOT);
    let to = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != from)
        .expect("another primary");
    let m = cluster.begin_migration(SLOT, to);
    let key = format!("{{jit}}jit:{{{id}}}:t");
    let out = cluster.node_cli(
        from,
        false,
        &[
            "MIGRATE",
            "127.0.0.1",
            &to.to_string(),
            "",
            "0",
            "5000",
            "KEYS",
            &key,
        ],
    );
    assert!(out.contains("OK"), "MIGRATE {key}: {out}");
    for port in [to, from] {
        let r = cluster.node_cli(
            port,
            false,
            &["CLUSTER", "SETSLOT", &SLOT.to_string(), "STABLE"],
        );
        assert!(r.contains("OK"), "STABLE on {port}: {r}");
    }

    // The approval cannot find the record: not a 200.
    let r = approve(&gw, "alice", &id, "half-moved").await;
    eprintln!(
        "approve during the abandoned migration: {} {}",
        r.status,
        r.text()
    );
    assert_ne!(
        r.status, 200,
        "an approval the store could not apply was answered 200"
    );
    // The client resumes; nothing reaches the upstream.
    let resumed = deploy(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    eprintln!("resume: {} {}", resumed.status, resumed.text());
    assert_ne!(resumed.status, 200);
    // A fresh identical request (coalescing looks for the old ticket) is held, not forwarded.
    let fresh = deploy(&gw, "web", &[]).await;
    eprintln!("fresh: {} {}", fresh.status, fresh.text());
    assert_ne!(fresh.status, 200);
    assert_eq!(origin.count(), 0, "forwarded without an approval");

    // The operator completes the migration; the original ticket is approved and the client's
    // resume is forwarded once.
    let m2 = cluster.begin_migration(SLOT, m.to);
    tokio::task::block_in_place(|| cluster.finish_migration(&m2));
    approve_retrying(&gw, &id).await;
    let again = deploy_until_store_answers(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    let twice = deploy_until_store_answers(&gw, "web", &[("jit-ticket", id.as_str())]).await;
    assert_ne!(twice.status, 200, "{}", twice.text());
    origin
        .assert_no_new_requests(Duration::from_millis(500))
        .await;
    assert_eq!(origin.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// 7. `replica_acks` on a cluster whose slot has no replica.
// ---------------------------------------------------------------------------------------------

/// README `replica_acks` with Cluster: a write that must reach a replica the slot's primary
/// does not have is never confirmed. Approve routes answer 503 (no ticket is confirmed, none
/// forwarded); allow routes keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_acks_the_slot_cannot_give_fail_closed_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let origin = Origin::start();
    let cfg = config(&cluster.url(), &origin, "2s", "replica_acks = 1");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let r = deploy(&gw, "web", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let ok = Client::http1()
        .send(
            "GET",
            &gw.url("/status"),
            &[("host", "api.example.com")],
            String::new(),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // Whatever landed on the primary unconfirmed, no approval can release it.
    let list = admin_call(&gw, "ops", "GET", "/v1/tickets?status=PENDING", "").await;
    for t in list.json()["tickets"].as_array().into_iter().flatten() {
        let id = t["id"].as_str().unwrap_or_default();
        let a = approve(&gw, "alice", id, "x").await;
        assert_ne!(
            a.status,
            200,
            "approval confirmed without the replica: {}",
            a.text()
        );
    }
    origin
        .assert_no_new_requests(Duration::from_millis(300))
        .await;
    assert!(origin.requests().iter().all(|r| r.path() == "/status"));
}

/// SPEC 11.3 "A decision is never lost" on Cluster, same cause as
/// [`a_release_on_a_primary_whose_replica_is_cut_off_is_not_forwarded_twice_after_failover`]:
/// with the slot's only replica cut off (not connected, still a failover candidate) the
/// approval is answered 200 without reaching any replica; the primary dies, that replica is
/// promoted, and the approved ticket is PENDING again (the approval and its audit events
/// gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_answered_200_survives_the_failover_of_the_slots_primary() {
    let mut cluster = RedisCluster::start(3, 1);
    let origin = Origin::start();
    let cfg = config(&cluster.url(), &origin, "1s", "");
    let gw = Gateway::builder(&cfg)
        .file("key.pem", signing_key_pem())
        .start();
    wait_store_ok(&gw).await;
    let primary = cluster.owner_of(SLOT);
    let replica = replica_of(&cluster, primary).await;

    let first = deploy(&gw, "web", &[]).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.header("jit-ticket").expect("Jit-Ticket").to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_replica_caught_up(&cluster, primary, replica).await;

    // The replica's link is cut (as above).
    assert!(cluster
        .node_cli(
            replica,
            false,
            &["CONFIG", "SET", "masterauth", "not-the-primary-password"]
        )
        .contains("OK"));
    cluster.node_cli(replica, false, &["CLIENT", "KILL", "TYPE", "master"]);
    let deadline = tokio::time::Instant::now() + SOON;
    while repl_field(&cluster, primary, "connected_slaves") != "0" {
        assert!(tokio::time::Instant::now() < deadline, "the link stayed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let r = approve(&gw, "alice", &id, "ship it").await;
    eprintln!("approve answered {} {}", r.status, r.text());
    if r.status != 200 {
        // Refused as unconfirmed: nothing was promised.
        return;
    }
    cluster.kill(primary);
    let new = wait_slot_moves_off(&cluster, SLOT, primary).await;
    assert_eq!(new, replica);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{id}"), "").await;
        if t.status == 200 {
            break t.json()["status"].as_str().unwrap_or_default().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", t.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status == "APPROVED" || status == "EXECUTED",
        "the approval answered 200 was lost in the failover: the ticket is {status} on the \
         promoted replica"
    );
}
