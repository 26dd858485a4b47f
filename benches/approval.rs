//! Approval benchmarks (run by hand: `benches/approval.sh`, or `cargo bench --bench approval`).
//!
//! 1. Decision-to-release latency across two replicas sharing a real `redis-server` on
//!    loopback: a request is held on replica A, an approver approves it through replica B's
//!    admin API, and we time from sending the approval to the held client receiving the
//!    upstream's answer. Reported as p50 / p90 / p99 / max over `ROUNDS` requests.
//! 2. `HELD` concurrently held requests with 1 KiB bodies on one replica: the gateway's RSS
//!    growth per held request, then the time from one batch approval of all of them to the
//!    last client receiving its answer. Run with the memory store and with Redis.
//!
//! Nothing here asserts a time; it prints figures. Environment: `ROUNDS` [300], `HELD`
//! [10000], `STORES` [memory,redis].

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The tests' Redis Cluster harness (std only): `TOPOLOGY=cluster`.
#[path = "../tests/common/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ALICE: &str = "bench-alice-token";

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let origin = start_origin().await;
        let rounds = env_usize("ROUNDS", 300);
        let held = env_usize("HELD", 10_000);
        let stores = std::env::var("STORES").unwrap_or_else(|_| "memory,redis".into());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let ok = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success(), "openssl genpkey");

        if rounds > 0 {
            let topology = std::env::var("TOPOLOGY").unwrap_or_else(|_| "standalone".into());
            // Kept alive for the whole part: dropping them kills the processes.
            let mut _cluster = None;
            let (url, _redis, _sentinels) = match topology.as_str() {
                "cluster" => {
                    // Three primaries with a replica each: every write waits for the
                    // store's slot's replica.
                    let c = cluster::RedisCluster::start(3, 1);
                    let url = c.url();
                    _cluster = Some(c);
                    (url, Vec::new(), Vec::new())
                }
                "sentinel" => {
                    let (url, nodes, sentinels) = sentinel_set(dir.path());
                    (url, nodes, sentinels)
                }
                _ => {
                    let redis = Redis::start(&[]);
                    (redis.url(), vec![redis], Vec::new())
                }
            };
            println!("store topology: {topology} ({url})");
            let a = Gw::start(dir.path(), "a", &config(origin, &url, &key));
            let b = Gw::start(dir.path(), "b", &config(origin, &url, &key));
            decision_to_release(&a, &b, rounds).await;
        }
        for store in stores.split(',').filter(|s| !s.is_empty()) {
            if held == 0 {
                break;
            }
            let redis = (store == "redis").then(|| Redis::start(&[]));
            let url = redis.as_ref().map(Redis::url).unwrap_or_default();
            let gw = Gw::start(dir.path(), store, &config(origin, &url, &key));
            many_held(&gw, held, store).await;
        }
    });
}

// === 1. decision to release, two replicas ===

async fn decision_to_release(a: &Gw, b: &Gw, rounds: usize) {
    let client = http_client();
    let body = vec![b'x'; 1024];
    let mut lat = Vec::with_capacity(rounds);
    let mut api = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let path = format!("/deploy/lat/{i}");
        let held = tokio::spawn(held_request(a.data, path, body.clone()));
        let id = loop {
            let list = admin(&client, b.admin, "GET", "/v1/tickets?status=PENDING", "").await;
            if let Some(id) = list["tickets"][0]["id"].as_str() {
                break id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let t0 = Instant::now();
        admin(
            &client,
            b.admin,
            "POST",
            &format!("/v1/tickets/{id}/approve"),
            "{}",
        )
        .await;
        let api_done = t0.elapsed();
        let (status, released_at) = held.await.unwrap();
        assert_eq!(status, 200, "round {i}");
        lat.push(released_at.duration_since(t0));
        api.push(api_done);
    }
    println!("decision-to-release across two replicas (redis on loopback), {rounds} rounds:");
    println!(
        "  approve sent on B -> held client on A answered: {}",
        summary(&mut lat)
    );
    println!(
        "  approve API call on B alone:                    {}",
        summary(&mut api)
    );
}

fn summary(v: &mut [Duration]) -> String {
    v.sort();
    let q = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    )
}

// === 2. many held requests ===

async fn many_held(gw: &Gw, n: usize, store: &str) {
    let client = http_client();
    // Warm up: one held request approved and released, so pools and allocator are in use.
    let warm = tokio::spawn(held_request(
        gw.data,
        "/deploy/warm".into(),
        vec![b'w'; 1024],
    ));
    let id = loop {
        let list = admin(&client, gw.admin, "GET", "/v1/tickets?status=PENDING", "").await;
        if let Some(id) = list["tickets"][0]["id"].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    admin(
        &client,
        gw.admin,
        "POST",
        &format!("/v1/tickets/{id}/approve"),
        "{}",
    )
    .await;
    warm.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(gw.pid());

    let t_open = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(1000)).into_bytes();
        tasks.push(tokio::spawn(held_request(
            gw.data,
            format!("/deploy/many/{i}"),
            body,
        )));
        // Paced, so the listen backlog never overflows.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Wait until all are held, or the count stops growing for 5 s (then report how many).
    let (mut last_len, mut stalled_since) = (0usize, Instant::now());
    let ids: Vec<String> = loop {
        let list = admin(
            &client,
            gw.admin,
            "GET",
            "/v1/tickets?status=PENDING&limit=10000",
            "",
        )
        .await;
        let ids: Vec<String> = list["tickets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() >= n
            || (ids.len() == last_len && stalled_since.elapsed() > Duration::from_secs(5))
        {
            break ids;
        }
        if ids.len() != last_len {
            (last_len, stalled_since) = (ids.len(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let n_held = ids.len();
    let held_after = t_open.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(gw.pid());

    let body =
        serde_json::json!({ "ids": ids, "decision": "approve", "comment": "batch" }).to_string();
    let t0 = Instant::now();
    let r = admin(&client, gw.admin, "POST", "/v1/tickets/decide", &body).await;
    let api_done = t0.elapsed();
    let decided = r["results"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|x| x["status"] == 200).count());
    let mut last = t0;
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(60), t).await {
            Ok(Ok((status, at))) => {
                ok += usize::from(status == 200);
                last = last.max(at);
            }
            _ => failed += 1,
        }
    }
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n_held as f64;
    println!("{n_held} of {n} requests held at once, 1 KiB bodies ({store} store):");
    if failed > 0 {
        println!("  ({failed} client tasks failed or did not complete)");
    }
    println!(
        "  all held (tickets pending) {:.2} s after the first was sent",
        held_after.as_secs_f64()
    );
    println!(
        "  gateway RSS {} KiB before, {} KiB while holding: {:.1} KiB per held request",
        before,
        after,
        per / 1024.0
    );
    println!(
        "  batch approval of {decided} tickets answered in {:.2} s; last of {ok} clients released {:.2} s after it was sent",
        api_done.as_secs_f64(),
        last.duration_since(t0).as_secs_f64()
    );
}

// === plumbing ===

fn config(origin: SocketAddr, redis_url: &str, key: &Path) -> String {
    let store = if redis_url.is_empty() {
        "kind = \"memory\"".to_string()
    } else {
        format!("kind = \"redis\"\nurl = \"{redis_url}\"")
    };
    let alice = sha256_hex(ALICE.as_bytes());
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
watch = false

[store]
{store}

[approvals]
hold_timeout = "10m"
ticket_ttl = "30m"
signing_key = "{key}"
# Every held request comes from 127.0.0.1 without credentials: lift the per-source and
# per-user caps (defaults 20 and 50) so HELD requests can be pending at once.
max_pending = 100000
max_pending_per_source = 50000
max_pending_per_user = 50000

[admin]
api_tokens = [{{ name = "alice-bench", user = "alice", sha256 = "{alice}", groups = ["oncall"] }}]

[[upstreams]]
name = "origin"
url = "http://{origin}"

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
"#,
        key = key.display()
    )
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Sends one HTTP/1.1 POST on its own connection and waits for the whole answer; returns
/// the status and when the answer was complete.
async fn held_request(addr: SocketAddr, path: String, body: Vec<u8>) -> (u16, Instant) {
    let mut s = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: api.bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|l| buf.len() >= end + 4 + l) {
                break;
            }
        }
    }
    let at = Instant::now();
    let status = String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, at)
}

fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn admin(
    c: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Gw {
    child: Child,
    data: SocketAddr,
    admin: SocketAddr,
}

impl Gw {
    fn start(dir: &Path, name: &str, config: &str) -> Gw {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        // JITGATE_BIN: another build (an earlier commit's, say) for before/after figures.
        let bin =
            std::env::var_os("JITGATE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_jitgate").into());
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut data, mut admin) = (None, None);
        let mut line = String::new();
        while data.is_none() || admin.is_none() {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
                panic!("gateway {name} exited before listening");
            }
            let addr = |l: &str| l.trim().rsplit("//").next().and_then(|a| a.parse().ok());
            if line.contains("data plane on") {
                data = addr(&line);
            } else if line.contains("admin plane on") {
                admin = addr(&line);
            }
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::BufRead::read_line(&mut out, &mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Gw {
            child,
            data: data.unwrap(),
            admin: admin.unwrap(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Redis {
    child: Child,
    port: u16,
    /// Its working folder (replication writes RDB files there).
    _dir: tempfile::TempDir,
}

/// A primary with two replicas and three sentinels on loopback (`TOPOLOGY=sentinel`): the
/// store URL, the data nodes and the sentinels (killed on drop).
fn sentinel_set(dir: &Path) -> (String, Vec<Redis>, Vec<Redis>) {
    let primary = Redis::start(&[]);
    let replicaof = format!("127.0.0.1 {}", primary.port);
    let nodes = vec![
        primary,
        Redis::start(&["--replicaof", &replicaof]),
        Redis::start(&["--replicaof", &replicaof]),
    ];
    let mut sentinels = Vec::new();
    for i in 0..3 {
        let conf = dir.join(format!("sentinel-{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor bench 127.0.0.1 {} 2\nsentinel down-after-milliseconds bench 1000\n",
                nodes[0].port
            ),
        )
        .unwrap();
        sentinels.push(Redis::start(&[conf.to_str().unwrap(), "--sentinel"]));
    }
    // Until every sentinel knows both replicas.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &sentinels {
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &s.port.to_string(), "SENTINEL", "REPLICAS", "bench"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            if nodes[1..]
                .iter()
                .all(|n| text.contains(&n.port.to_string()))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the replicas"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Until both replicas finished their first sync (WAIT counts only synced replicas).
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &nodes[0].port.to_string(), "WAIT", "2", "1000"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "2" {
            break;
        }
        assert!(Instant::now() < deadline, "the replicas never synced");
    }
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/bench", hosts.join(","));
    (url, nodes, sentinels)
}

impl Redis {
    /// A `redis-server` on a free port, with `extra` arguments (a sentinel's config file
    /// first, say).
    fn start(extra: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(extra.iter().take_while(|a| !a.starts_with("--")))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra.iter().skip_while(|a| !a.starts_with("--")))
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
