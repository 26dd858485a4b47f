//! The Redis store over TLS (`rediss://`, issue 11): against a real `redis-server` that speaks
//! only TLS, with the CA given by `[store] ca_file`, and with mutual TLS (`[store] tls = { cert,
//! key }`). A gateway that cannot prove the server (another CA) or itself (no client
//! certificate) never reaches the store: approve routes fail closed with 503 while allow
//! routes keep flowing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const ROUTE: &str = "prod-deploy";
const SOON: Duration = Duration::from_secs(10);

/// A gateway on `redis` with `store_extra` under `[store]`: an approve route on
/// `POST /deploy/**` decided by `group:oncall`, and an allow catch-all.
fn config(redis: &RedisServer, origin: &Origin, store_extra: &str) -> String {
    approve_route_config(
        &format!("kind = \"redis\"\nurl = \"{}\"\n{store_extra}", redis.url()),
        "hold_timeout = \"30s\"\nreconcile_interval = \"300ms\"",
        &origin.url(),
    )
}

/// `POST /deploy/web` on the approve route as bob (group dev) to the data plane at `data_url`.
async fn deploy(data_url: String) -> Response {
    Client::http1()
        .with_timeout(Duration::from_secs(60))
        .send(
            "POST",
            &format!("{data_url}/deploy/web"),
            &[
                ("x-user", "bob"),
                ("x-groups", "dev"),
                ("content-type", "application/json"),
            ],
            r#"{"image":"web:1.4.2"}"#.to_string(),
        )
        .await
}

/// Holds a request on `gw`, approves it, and checks it reached the origin once and that the
/// ticket is in `redis`.
async fn approved_through_the_store(gw: &Gateway, redis: &RedisServer, origin: &Origin) {
    let held = tokio::spawn(deploy(gw.data_url().to_string()));
    let ticket = wait_pending(gw, ROUTE, SOON).await;
    let id = ticket["id"].as_str().expect("ticket id").to_string();
    assert_eq!(origin.count(), 0, "forwarded before approval");
    assert!(
        redis.cli(&["EXISTS", &format!("jit:{{{id}}}:t")]).trim() == "1",
        "the ticket is not in the TLS redis"
    );
    let r = approve(gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());
    let resp = tokio::time::timeout(SOON, held)
        .await
        .expect("released in time")
        .expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, SOON).await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
}

/// The store stays unreachable for `gw`: `/readyz` never says ok, the approve route answers
/// 503 without forwarding, and the allow route still answers.
async fn store_refused(gw: &Gateway, origin: &Origin) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let r = send("GET", &gw.admin("/readyz"), &[], "").await;
        assert_ne!(
            r.json()["store"]["status"],
            "ok",
            "the store was reached: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = deploy(gw.data_url().to_string()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(origin.count(), 0, "an approve-route request was forwarded");
    let r = send("GET", &gw.url("/healthcheck"), &[], "").await;
    assert_eq!(r.status, 200, "allow route: {}", r.text());
    assert!(
        gw.stderr_text().contains("redis store unavailable"),
        "{}",
        gw.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_store_with_its_own_ca() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, false);
    let origin = Origin::start();
    let cfg = config(&redis, &origin, r#"ca_file = "redis-ca.pem""#);
    let gw = Gateway::builder(&cfg)
        .file("redis-ca.pem", pki.ca_pem())
        .start();
    wait_store_ok(&gw).await;
    approved_through_the_store(&gw, &redis, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_store_admits_only_a_client_certificate() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, true);
    let origin = Origin::start();
    let client = pki.issue_client("jitgate");
    let with_cert = config(
        &redis,
        &origin,
        r#"ca_file = "redis-ca.pem"
tls = { cert = "client.pem", key = "client.key" }"#,
    );
    let gw = Gateway::builder(&with_cert)
        .file("redis-ca.pem", pki.ca_pem())
        .file("client.pem", client.cert_pem.clone())
        .file("client.key", client.key_pem.clone())
        .start();
    wait_store_ok(&gw).await;
    approved_through_the_store(&gw, &redis, &origin).await;

    // The same gateway without its certificate is turned away by the server.
    let other_origin = Origin::start();
    let without = config(&redis, &other_origin, r#"ca_file = "redis-ca.pem""#);
    let anonymous = Gateway::builder(&without)
        .file("redis-ca.pem", pki.ca_pem())
        .start();
    store_refused(&anonymous, &other_origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, false);
    let origin = Origin::start();
    let stranger = TestPki::new();
    let cfg = config(&redis, &origin, r#"ca_file = "redis-ca.pem""#);
    let gw = Gateway::builder(&cfg)
        .file("redis-ca.pem", stranger.ca_pem())
        .start();
    store_refused(&gw, &origin).await;
    // Nor do the system roots vouch for it.
    let origin2 = Origin::start();
    let gw2 = Gateway::start(&config(&redis, &origin2, ""));
    store_refused(&gw2, &origin2).await;
}

/// `rediss+cluster://`: a three-primary cluster that speaks only TLS (clients, the cluster bus
/// and replication) and wants a client certificate. The gateway with `ca_file` and its
/// certificate holds, approves and releases through it; without the certificate the nodes
/// turn it away and approve routes fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_cluster_admits_only_a_client_certificate() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).expect("write ca");
    let (cert, key) = pki
        .issue_server(&["127.0.0.1"])
        .write_to(dir.path(), "node");
    let (cli_cert, cli_key) = pki.issue_client("redis-cli").write_to(dir.path(), "cli");
    // What a node presents when it connects to another (the bus, replication): a client
    // certificate, since every node wants one.
    let (peer_cert, peer_key) = pki.issue_client("node").write_to(dir.path(), "peer");
    let s = |p: &std::path::Path| p.display().to_string();
    let server_args: Vec<String> = [
        "--tls-client-cert-file",
        &s(&peer_cert),
        "--tls-client-key-file",
        &s(&peer_key),
        "--tls-cluster",
        "yes",
        "--tls-replication",
        "yes",
        "--tls-auth-clients",
        "yes",
        "--tls-cert-file",
        &s(&cert),
        "--tls-key-file",
        &s(&key),
        "--tls-ca-cert-file",
        &s(&ca),
    ]
    .map(String::from)
    .to_vec();
    let cli_args: Vec<String> = [
        "--tls",
        "--cacert",
        &s(&ca),
        "--cert",
        &s(&cli_cert),
        "--key",
        &s(&cli_key),
    ]
    .map(String::from)
    .to_vec();
    let cluster = RedisCluster::start_with(3, 0, &server_args, &cli_args);
    assert!(cluster.url().starts_with("rediss+cluster://"));

    let origin = Origin::start();
    let client = pki.issue_client("jitgate");
    let cfg = |origin: &Origin, extra: &str| {
        approve_route_config(
            &format!(
                "kind = \"redis\"\nurl = \"{}\"\nca_file = \"redis-ca.pem\"\n{extra}",
                cluster.url()
            ),
            "hold_timeout = \"30s\"\nreconcile_interval = \"300ms\"",
            &origin.url(),
        )
    };
    let gw = Gateway::builder(&cfg(
        &origin,
        r#"tls = { cert = "client.pem", key = "client.key" }"#,
    ))
    .file("redis-ca.pem", pki.ca_pem())
    .file("client.pem", client.cert_pem.clone())
    .file("client.key", client.key_pem.clone())
    .start();
    wait_store_ok(&gw).await;
    let held = tokio::spawn(deploy(gw.data_url().to_string()));
    let ticket = wait_pending(&gw, ROUTE, SOON).await;
    let id = ticket["id"].as_str().expect("ticket id").to_string();
    assert_eq!(origin.count(), 0, "forwarded before approval");
    assert_eq!(
        cluster
            .cli(&["EXISTS", &format!("{{jit}}jit:{{{id}}}:t")])
            .trim(),
        "1",
        "the ticket is not in the TLS cluster"
    );
    let r = approve(&gw, "alice", &id, "ok").await;
    assert_eq!(r.status, 200, "approve: {}", r.text());
    let resp = tokio::time::timeout(SOON, held)
        .await
        .expect("released in time")
        .expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(origin.wait_for(1, SOON).await.len(), 1);

    // Without its certificate the same gateway never reaches the cluster.
    let other_origin = Origin::start();
    let anonymous = Gateway::builder(&cfg(&other_origin, ""))
        .file("redis-ca.pem", pki.ca_pem())
        .start();
    store_refused(&anonymous, &other_origin).await;
}
