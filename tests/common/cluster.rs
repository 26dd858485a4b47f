//! A Redis Cluster on loopback: primaries (and replicas) started with `redis-server
//! --cluster-enabled yes` on free ports and joined by `redis-cli --cluster create`, killed on
//! drop. Self-contained (std only), so the store's contract tests use it too.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One cluster node.
pub struct ClusterNode {
    child: Option<Child>,
    /// Its client port (the cluster bus is this + 10000).
    pub port: u16,
}

/// The nodes of one cluster and their working folder.
pub struct RedisCluster {
    /// Primaries first, as `redis-cli --cluster create` was given them.
    pub nodes: Vec<ClusterNode>,
    dir: PathBuf,
    /// What `redis-cli` needs to reach the nodes (`--tls --cacert ...` on a TLS cluster).
    cli_args: Vec<String>,
    tls: bool,
}

/// A free loopback port whose cluster bus port (+10000) is free too; never 6379.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let port = addr.port();
        if port == 6379 || port > 55_535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// `redis-cli -p <port> <extra> <args>`: its standard output (with `-c`, following
/// redirections).
fn run_cli(port: u16, follow: bool, extra: &[String], args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-p", &port.to_string()]).args(extra);
    if follow {
        cmd.arg("-c");
    }
    cmd.args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each, creates the cluster and
    /// waits until every node reports `cluster_state:ok` and agrees on the slots.
    pub fn start(primaries: usize, replicas: usize) -> RedisCluster {
        Self::start_with(primaries, replicas, &[], &[])
    }

    /// [`RedisCluster::start`] with `server_args` for every node and `cli_args` for every
    /// `redis-cli` (TLS: the node's `--tls-port` is added, and `--port 0`, by this harness
    /// when `server_args` has `--tls-cert-file`).
    pub fn start_with(
        primaries: usize,
        replicas: usize,
        server_args: &[String],
        cli_args: &[String],
    ) -> RedisCluster {
        let tls = server_args.iter().any(|a| a == "--tls-cert-file");
        let dir = std::env::temp_dir().join(format!(
            "jitgate-cluster-{}-{}",
            std::process::id(),
            free_cluster_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut nodes = Vec::new();
        for i in 0..primaries * (1 + replicas) {
            let port = free_cluster_port();
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new(
                std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into()),
            )
            .arg(if tls { "--tls-port" } else { "--port" })
            .arg(port.to_string())
            .args(if tls { &["--port", "0"][..] } else { &[][..] })
            .args(["--bind", "127.0.0.1"])
            .args(server_args)
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            // Long enough that a loaded test machine (a whole suite on two cores) does not fail
            // over a primary that is only slow to answer the cluster bus.
            .args(["--cluster-node-timeout", "5000"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .arg("--logfile")
            .arg(node_dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
            nodes.push(ClusterNode {
                child: Some(child),
                port,
            });
        }
        let cluster = RedisCluster {
            nodes,
            dir,
            cli_args: cli_args.to_vec(),
            tls,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &cluster.nodes {
            while !cluster.node_cli(n.port, false, &["PING"]).contains("PONG") {
                assert!(Instant::now() < deadline, "node {} never answered", n.port);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        // `--cluster create` waits for ever for nodes that cannot meet: bounded here.
        let mut create = Command::new("redis-cli")
            .args(&cluster.cli_args)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli is installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = create.try_wait().expect("wait for redis-cli") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = create.wait_with_output().expect("redis-cli output");
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create failed or hung: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok();
        cluster.wait_replicas(primaries * replicas);
        cluster
    }

    /// Waits until `n` replicas are attached (listed as `slave` by every live node's view
    /// through one node) and each has its primary's data.
    fn wait_replicas(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = self.node_cli(self.any(), false, &["CLUSTER", "NODES"]);
            let replicas: Vec<u16> = nodes
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|f| f.contains("slave"))
                })
                .filter_map(|l| {
                    l.split_whitespace()
                        .nth(1)?
                        .split('@')
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()
                })
                .collect();
            let synced = replicas.iter().all(|p| {
                self.node_cli(*p, false, &["INFO", "replication"])
                    .contains("master_link_status:up")
            });
            if replicas.len() >= n && synced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} replicas never attached:\n{nodes}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every live node says `cluster_state:ok`, all slots are assigned, and every
    /// live replica has its primary's data (`master_link_status:up`).
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                let info = self.node_cli(n.port, false, &["CLUSTER", "INFO"]);
                let repl = self.node_cli(n.port, false, &["INFO", "replication"]);
                let synced = repl.contains("role:master") || repl.contains("master_link_status:up");
                if info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && synced
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} never saw the cluster ok:\n{info}",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis-cli -p <port> <args>` with the cluster's client arguments (with `follow`, `-c`).
    pub fn node_cli(&self, port: u16, follow: bool, args: &[&str]) -> String {
        run_cli(port, follow, &self.cli_args, args)
    }

    /// `redis+cluster://127.0.0.1:<p1>,...` (`rediss+cluster://` with TLS) with every node as
    /// a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", hosts.join(","))
    }

    /// A live node's port.
    fn any(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .expect("a live node")
    }

    /// `redis-cli -c` against a live node: follows redirections to the key's owner.
    pub fn cli(&self, args: &[&str]) -> String {
        self.node_cli(self.any(), true, args)
    }

    /// The slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        self.node_cli(self.any(), false, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT")
    }

    /// The node id of the node on `port`.
    pub fn id_of(&self, port: u16) -> String {
        self.node_cli(port, false, &["CLUSTER", "MYID"])
            .trim()
            .to_string()
    }

    /// The port of the primary that serves `slot`, as a live node sees it.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let nodes = self.node_cli(self.any(), false, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") {
                continue;
            }
            let serves = f[8..].iter().any(|r| {
                if r.starts_with('[') {
                    return false;
                }
                match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot)
                            && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => r.parse::<u16>() == Ok(slot),
                }
            });
            if serves {
                let port = f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok());
                if let Some(port) = port {
                    return port;
                }
            }
        }
        panic!("no primary serves slot {slot}:\n{nodes}");
    }

    /// The ports of the primaries.
    pub fn primaries(&self) -> Vec<u16> {
        let nodes = self.node_cli(self.any(), false, &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|f| f.contains("master"))
            })
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Starts moving `slot` from its owner to the primary on `to`: marks it importing and
    /// migrating (the live-resharding protocol `redis-cli --cluster reshard` follows).
    pub fn begin_migration(&self, slot: u16, to: u16) -> Migration {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let s = slot.to_string();
        let ok = |r: String, what: &str| assert!(r.contains("OK"), "{what}: {r}");
        ok(
            self.node_cli(
                to,
                false,
                &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id],
            ),
            "importing",
        );
        ok(
            self.node_cli(
                from,
                false,
                &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id],
            ),
            "migrating",
        );
        Migration {
            slot,
            from,
            to,
            to_id,
        }
    }

    /// Moves up to `n` keys of the migration's slot (`MIGRATE`); how many were left before.
    pub fn migrate_keys(&self, m: &Migration, n: usize) -> usize {
        let keys = self.node_cli(
            m.from,
            false,
            &[
                "CLUSTER",
                "GETKEYSINSLOT",
                &m.slot.to_string(),
                &n.to_string(),
            ],
        );
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return 0;
        }
        let mut args = vec![
            "MIGRATE".to_string(),
            "127.0.0.1".into(),
            m.to.to_string(),
            String::new(),
            "0".into(),
            "5000".into(),
            "KEYS".into(),
        ];
        args.extend(keys.iter().map(|k| k.to_string()));
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &m.from.to_string()])
            .args(&self.cli_args)
            .args(&args);
        let out = cmd.output().expect("redis-cli");
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.contains("OK") || out.contains("NOKEY"),
            "MIGRATE failed: {out}"
        );
        keys.len()
    }

    /// Moves the rest of the slot's keys and assigns it to its new owner on every primary.
    pub fn finish_migration(&self, m: &Migration) {
        while self.migrate_keys(m, 100) > 0 {}
        let s = m.slot.to_string();
        for port in [m.to, m.from] {
            let r = self.node_cli(port, false, &["CLUSTER", "SETSLOT", &s, "NODE", &m.to_id]);
            assert!(r.contains("OK"), "setslot node on {port}: {r}");
        }
        for port in self.primaries() {
            if port != m.to && port != m.from {
                self.node_cli(port, false, &["CLUSTER", "SETSLOT", &s, "NODE", &m.to_id]);
            }
        }
        self.wait_ok();
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A slot being moved between two primaries ([`RedisCluster::begin_migration`]).
pub struct Migration {
    /// The slot.
    pub slot: u16,
    /// The port of the primary it leaves.
    pub from: u16,
    /// The port of the primary it goes to.
    pub to: u16,
    to_id: String,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::env::var_os("JITGATE_KEEP_CLUSTER").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
