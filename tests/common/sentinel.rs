//! A Sentinel-managed Redis on loopback: a primary, a replica and three sentinels, each a real
//! `redis-server` on a free port, killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::approval::RedisServer;

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "mymaster";

/// One sentinel process.
struct Sentinel {
    child: Child,
    port: u16,
}

/// A primary, its replicas and three sentinels.
pub struct SentinelSet {
    /// The data nodes: the first starts as the primary.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl SentinelSet {
    /// Starts a primary, `replicas` replicas and three sentinels, and waits until every
    /// sentinel knows the replicas and the other sentinels.
    pub fn start(replicas: usize) -> SentinelSet {
        let primary = RedisServer::start();
        let replicaof = format!("127.0.0.1 {}", primary.port);
        let replicas: Vec<RedisServer> = (0..replicas)
            .map(|_| RedisServer::start_with(&["--replicaof", &replicaof]))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            assert_ne!(port, 6379);
            let conf: PathBuf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = dir.path().display(),
                    primary = primary.port,
                ),
            )
            .expect("write sentinel.conf");
            let child = Command::new(
                std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into()),
            )
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
            sentinels.push(Sentinel { child, port });
        }
        let mut nodes = vec![primary];
        nodes.extend(replicas);
        let set = SentinelSet {
            nodes,
            sentinels,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for s in &set.sentinels {
            loop {
                let replicas = cli(s.port, &["SENTINEL", "REPLICAS", MASTER]);
                let peers = cli(s.port, &["SENTINEL", "SENTINELS", MASTER]);
                let knows_replica = set.nodes[1..]
                    .iter()
                    .all(|n| replicas.contains(&n.port.to_string()));
                let knows_peers = peers.matches("127.0.0.1").count() >= 2;
                if knows_replica && knows_peers {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "sentinel {} never saw the replica and its peers:\n{replicas}\n{peers}",
                    s.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        set.wait_synced();
        set
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/mymaster`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The port of the node the sentinels call the primary now.
    pub fn primary_port(&self) -> u16 {
        let out = cli(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The data node that is the primary now.
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port();
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("the primary is one of the nodes")
    }

    /// Waits until every replica has everything the primary has (`WAIT`).
    pub fn wait_synced(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let n = (self.nodes.len() - 1).to_string();
        while self.primary().cli(&["WAIT", &n, "1000"]).trim() != n {
            assert!(Instant::now() < deadline, "the replica never caught up");
        }
    }

    /// Sends `SENTINEL FAILOVER` (the replica is promoted) and returns the port of the primary
    /// it replaces, for [`SentinelSet::wait_failover`].
    pub fn start_failover(&self) -> u16 {
        let before = self.primary_port();
        let out = cli(self.sentinels[0].port, &["SENTINEL", "FAILOVER", MASTER]);
        assert!(out.trim() == "OK", "SENTINEL FAILOVER: {out}");
        before
    }

    /// Waits until the sentinels name a primary other than `before` and it says it is one;
    /// returns its port.
    pub fn wait_failover(&self, before: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.primary_port();
            if now != before && now != 0 && cli(now, &["ROLE"]).starts_with("master") {
                return now;
            }
            assert!(Instant::now() < deadline, "the failover did not complete");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for s in &mut self.sentinels {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}
