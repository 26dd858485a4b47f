//! gRPC through the gateway with a real gRPC library (Python grpcio, `tests/grpc/peer.py`), as
//! both the client and the upstream: calls pass with their trailers and streams, and the
//! gateway's own answers (deny, 401, held and still pending, store down) are gRPC statuses a
//! client can act on, with the ticket in `jit-ticket` metadata so the call can be retried.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/peer.py");

/// The Python gRPC echo server; killed on drop.
struct GrpcOrigin {
    child: Child,
    port: u16,
}

impl GrpcOrigin {
    fn start() -> GrpcOrigin {
        let mut child = Command::new("python3")
            .args([PEER, "serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (scripts/test installs grpcio)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the peer prints its port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("gRPC peer did not start: {line:?} (is grpcio installed?)"));
        GrpcOrigin { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Python client (`call` or `chat`) against the gateway; its outcome as JSON.
async fn grpc(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(PEER)
            .args(&args)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "peer output is not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn call(gw: &Gateway, metadata: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["call".to_string(), gw.data_addr().to_string()];
    for (k, v) in metadata {
        args.push("-m".into());
        args.push(format!("{k}={v}"));
    }
    args
}

fn config(origin: &str, hold_timeout: &str, store: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[approvals]
hold_timeout = "{hold_timeout}"

{store}

[[upstreams]]
name = "echo"
url = "{origin}"
protocol = "h2"

[[routes]]
name = "held"
path = "/jitgate.test.Echo/Unary"
headers = {{ "x-held" = "yes" }}
upstream = "echo"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "needs-identity"
path = "/jitgate.test.Echo/Unary"
headers = {{ "x-who" = "*" }}
upstream = "echo"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
require_identity = true

[[routes]]
name = "blocked"
path = "/jitgate.test.Echo/Unary"
headers = {{ "x-blocked" = "yes" }}
action = "deny"

[[routes]]
name = "echo"
path = "/jitgate.test.Echo/**"
upstream = "echo"
action = "allow"

{admin}"#,
        admin = identity_and_admin_toml()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_streams_pass_with_their_trailers() {
    let origin = GrpcOrigin::start();
    let gw = Gateway::start(&config(&origin.url(), "1s", ""));
    let unary = grpc(call(&gw, &[])).await;
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["responses"][0], "echo:ping", "{unary}");
    assert_eq!(unary["trailing"]["x-echo-trailer"], "done", "{unary}");
    let chat = grpc(vec!["chat".into(), gw.data_addr().to_string()]).await;
    assert_eq!(chat["code"], "OK", "{chat}");
    assert_eq!(
        chat["responses"],
        serde_json::json!(["chat:m0", "chat:m1", "chat:m2"]),
        "{chat}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_is_permission_denied() {
    let origin = GrpcOrigin::start();
    let gw = Gateway::start(&config(&origin.url(), "1s", ""));
    let r = grpc(call(&gw, &[("x-blocked", "yes")])).await;
    assert_eq!(r["code"], "PERMISSION_DENIED", "{r}");
    assert!(
        r["details"].as_str().unwrap_or("").contains("blocked"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_the_required_identity_is_unauthenticated() {
    let origin = GrpcOrigin::start();
    let gw = Gateway::start(&config(&origin.url(), "1s", ""));
    let r = grpc(call(&gw, &[("x-who", "someone")])).await;
    assert_eq!(r["code"], "UNAUTHENTICATED", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_names_its_ticket_and_passes_once_approved() {
    let origin = GrpcOrigin::start();
    let gw = Gateway::start(&config(&origin.url(), "1s", ""));
    let held = call(
        &gw,
        &[("x-held", "yes"), ("x-user", "bob"), ("x-groups", "dev")],
    );
    let first = grpc(held.clone()).await;
    assert_eq!(first["code"], "FAILED_PRECONDITION", "{first}");
    let ticket = first["trailing"]["jit-ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("no jit-ticket metadata: {first}"))
        .to_string();
    assert!(ticket.starts_with("jit_"), "{first}");
    assert!(
        first["details"].as_str().unwrap_or("").contains(&ticket),
        "{first}"
    );
    let r = approve(&gw, "alice", &ticket, "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut retry = held;
    retry.extend(["-m".to_string(), format!("jit-ticket={ticket}")]);
    let second = grpc(retry.clone()).await;
    assert_eq!(second["code"], "OK", "{second}");
    assert_eq!(second["responses"][0], "echo:ping", "{second}");
    // Spent: the same retry again is refused.
    let third = grpc(retry).await;
    assert_eq!(third["code"], "PERMISSION_DENIED", "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_when_the_store_is_down_is_unavailable() {
    let origin = GrpcOrigin::start();
    // Nothing listens on the store's port: approve routes fail closed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = format!("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{dead}/0\"\n");
    let gw = Gateway::start(&config(&origin.url(), "1s", &store));
    let r = grpc(call(&gw, &[("x-held", "yes"), ("x-user", "bob")])).await;
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    // Allow routes keep flowing.
    let ok = grpc(call(&gw, &[])).await;
    assert_eq!(ok["code"], "OK", "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_is_answered_before_its_client_deadline() {
    let origin = GrpcOrigin::start();
    // The gateway would hold for 30 s; the client waits 2 s.
    let gw = Gateway::start(&config(&origin.url(), "30s", ""));
    let mut args = call(&gw, &[("x-held", "yes"), ("x-user", "bob")]);
    args.extend(["--timeout".to_string(), "2".to_string()]);
    let r = grpc(args).await;
    assert_eq!(r["code"], "FAILED_PRECONDITION", "{r}");
    let ticket = r["trailing"]["jit-ticket"].as_str().expect("jit-ticket");
    // The client was answered, not cut off: its ticket still waits for a decision.
    let t = admin_call(&gw, "ops", "GET", &format!("/v1/tickets/{ticket}"), "").await;
    assert_eq!(t.json()["status"], "PENDING", "{}", t.text());
}
