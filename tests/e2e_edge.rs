//! Red-team regressions at the edge (SPEC 3, 5, 6, 11): HTTP/2 header values with surrounding
//! whitespace, connections that never finish their preface, client faults answered as the
//! client's, `Allow` on 405 answers, and gRPC-shaped answers for gRPC clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::redteam::{config, grpc_frame, problem, raw_open, ALLOW_REST, BOB, WAIT};
use common::*;
use tokio::net::TcpStream;

// === finding 5: HTTP/2 header values with surrounding whitespace ===

fn h2_env_config(origin_url: &str) -> String {
    let routes = format!(
        r#"[[routes]]
name = "h2-prod"
path = "/h2/**"
headers = {{ "x-env" = "prod" }}
action = "deny"

{ALLOW_REST}"#
    );
    config(origin_url, "", "", "", &routes)
}

/// RFC 9113 8.2.1: an h2 field value may not start or end with whitespace; HTTP/1.1 parsers
/// strip it. `" prod"` and `"prod\t"` are `prod` to an upstream, so the deny route must see
/// `prod` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2_header_with_surrounding_whitespace_still_matches_a_deny_route() {
    let origin = Origin::start();
    let gw = Gateway::start(&h2_env_config(&origin.url()));
    let client = Client::h2c();
    for value in ["prod", " prod", "prod\t", "\tprod "] {
        let resp = client
            .try_send("GET", &gw.url("/h2/config"), &[("x-env", value)], "")
            .await
            .unwrap_or_else(|e| panic!("x-env {value:?}: {e}"));
        assert_eq!(resp.version, http::Version::HTTP_2);
        problem(&resp, 403, &format!("x-env {value:?} over h2c"));
    }
    origin
        .assert_no_new_requests(Duration::from_millis(100))
        .await;
    let leaked: Vec<_> = origin
        .requests()
        .iter()
        .map(|r| (r.target.clone(), r.header_str("x-env")))
        .collect();
    assert!(
        leaked.is_empty(),
        "forwarded past the deny route: {leaked:?}"
    );
}

/// On an allow route, a value received with surrounding whitespace is either refused or
/// forwarded trimmed: the upstream never sees the padding the matcher did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2_header_whitespace_is_trimmed_before_forwarding() {
    let origin = RawOrigin::start();
    let gw = Gateway::start(&h2_env_config(&origin.url()));
    let resp = Client::h2c()
        .try_send("GET", &gw.url("/other"), &[("x-env", " staging\t")], "")
        .await;
    match resp {
        Ok(r) if r.status == 200 => {
            let reqs = origin.wait_for(1, WAIT).await;
            let lines: Vec<String> = reqs[0]
                .header_lines()
                .into_iter()
                .filter(|l| l.to_ascii_lowercase().starts_with("x-env:"))
                .collect();
            assert_eq!(
                lines,
                ["x-env: staging"],
                "forwarded head: {:?}",
                reqs[0].head_str()
            );
        }
        other => {
            // Refused (4xx or stream reset): then nothing may have been forwarded.
            if let Ok(r) = &other {
                assert!(r.status.is_client_error(), "{r:?}");
            }
            assert_eq!(origin.count(), 0, "refused but forwarded: {other:?}");
        }
    }
}

// === finding 11: slow connections cannot lock everyone out ===

async fn silent_after(bytes: &'static [u8], n: usize) {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "header_read_timeout = \"1s\"",
        "",
        "",
        ALLOW_REST,
    ));
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(raw_open(gw.data_addr(), bytes).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut open = 0;
    let waits: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move { common::redteam::closed_by(&mut c, deadline).await })
        })
        .collect();
    for w in waits {
        if !w.await.unwrap() {
            open += 1;
        }
    }
    assert_eq!(
        open,
        0,
        "{open} of {n} connections that sent {:?} and went silent were still open 8s later \
         (header_read_timeout = 1s)",
        String::from_utf8_lossy(bytes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_stalled_after_one_byte_are_closed() {
    silent_after(b"P", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_stalled_after_the_h2_preface_are_closed() {
    silent_after(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 50).await;
}

/// `[server] max_connections`: data-plane connections beyond it wait or are refused, and the
/// admin plane stays reachable whatever the data plane's clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_beyond_max_connections_do_not_starve_the_admin_plane() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "header_read_timeout = \"5s\"\nmax_connections = 20",
        "",
        "",
        ALLOW_REST,
    ));
    let mut idle = Vec::new();
    for _ in 0..40 {
        if let Ok(c) = TcpStream::connect(gw.data_addr()).await {
            idle.push(c);
        }
    }
    let health = Client::http1()
        .with_timeout(Duration::from_secs(3))
        .try_send("GET", &gw.admin("/healthz"), &[], "")
        .await;
    assert!(
        health.as_ref().is_ok_and(|r| r.status == 200),
        "admin /healthz with 40 idle data-plane connections: {health:?}"
    );
    drop(idle);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = Client::http1()
            .with_timeout(Duration::from_secs(2))
            .try_send("GET", &gw.url("/after"), &[], "")
            .await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "data plane unusable after the idle connections closed: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === finding 12: client faults are the client's ===

fn fault_config(origin: &Origin) -> String {
    config(&origin.url(), "", "", "idle_timeout = \"1s\"", ALLOW_REST)
}

/// A body shorter than its Content-Length, then silence: the client is at fault (408), not
/// the upstream (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_body_that_stalls_is_408() {
    let origin = Origin::start();
    let gw = Gateway::start(&fault_config(&origin));
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        gw.data_addr()
    );
    let raw = raw_request(gw.data_addr(), req.as_bytes()).await;
    let resp = RawResponse::parse(&raw);
    assert_eq!(
        resp.status,
        408,
        "stalled request body: {}",
        String::from_utf8_lossy(&raw)
    );
}

/// A chunk-size line that overflows is a malformed request: 400, not 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overflowing_chunk_size_is_400() {
    let origin = Origin::start();
    let gw = Gateway::start(&fault_config(&origin));
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
        gw.data_addr()
    );
    let raw = raw_request(gw.data_addr(), req.as_bytes()).await;
    let resp = RawResponse::parse(&raw);
    assert_eq!(
        resp.status,
        400,
        "overflowing chunk size: {}",
        String::from_utf8_lossy(&raw)
    );
}

// === finding 13: 405 answers carry Allow ===

fn allow_lists(resp: &Response, methods: &[&str], what: &str) {
    assert_eq!(resp.status, 405, "{what}: {}", resp.text());
    let allow = resp
        .header("allow")
        .unwrap_or_else(|| panic!("{what}: 405 without Allow: {:?}", resp.headers));
    let listed: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    for m in methods {
        assert!(
            listed.iter().any(|l| l == m),
            "{what}: Allow {allow:?} lacks {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_plane_405_lists_allowed_methods() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", "", "", ALLOW_REST));
    let r = send("POST", &gw.url("/.well-known/jwks.json"), &[], "").await;
    allow_lists(&r, &["GET", "HEAD"], "POST /.well-known/jwks.json");
    let r = send(
        "DELETE",
        &gw.url("/.well-known/jitgate/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B"),
        &[],
        "",
    )
    .await;
    allow_lists(
        &r,
        &["GET", "HEAD"],
        "DELETE on the requester's ticket view",
    );
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_plane_405_lists_allowed_methods() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", "", "", ALLOW_REST));
    let r = send("DELETE", &gw.admin("/healthz"), &[], "").await;
    allow_lists(&r, &["GET"], "DELETE /healthz");
    let r = admin_call(
        &gw,
        "alice",
        "GET",
        "/v1/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B/approve",
        "",
    )
    .await;
    allow_lists(&r, &["POST"], "GET /v1/tickets/{id}/approve");
}

// === finding 14: gRPC clients get gRPC answers ===

fn grpc_routes() -> String {
    format!(
        r#"[[routes]]
name = "grpc-drop"
path = "/pkg.Admin/Drop"
action = "deny"

[[routes]]
name = "grpc-auth"
methods = ["POST"]
path = "/pkg.Secure/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
require_identity = true

[[routes]]
name = "grpc-deploy"
methods = ["POST"]
path = "/pkg.Deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]

{ALLOW_REST}"#
    )
}

/// A unary gRPC call over h2c: framed message, `te: trailers`.
async fn grpc_call(gw: &Gateway, path: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    headers.extend_from_slice(extra);
    Client::h2c()
        .with_timeout(Duration::from_secs(10))
        .send("POST", &gw.url(path), &headers, grpc_frame(b"\x0a\x03web"))
        .await
}

/// HTTP 200, trailers-only: `grpc-status` (and a `grpc-message`) in the header block.
fn assert_grpc_status(resp: &Response, code: &str, what: &str) {
    assert_eq!(
        resp.status,
        200,
        "{what}: gRPC answers are HTTP 200; got {} {:?} {}",
        resp.status,
        resp.headers,
        resp.text()
    );
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc")),
        "{what}: content-type {:?}",
        resp.header("content-type")
    );
    assert_eq!(
        resp.header("grpc-status"),
        Some(code),
        "{what}: headers {:?}, trailers {:?}",
        resp.headers,
        resp.trailers
    );
    assert!(
        resp.header("grpc-message").is_some_and(|m| !m.is_empty()),
        "{what}: no grpc-message: {:?}",
        resp.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_call_on_a_deny_route_is_permission_denied() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", "", "", &grpc_routes()));
    let resp = grpc_call(&gw, "/pkg.Admin/Drop", &BOB).await;
    assert_grpc_status(&resp, "7", "deny route");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_call_without_required_identity_is_unauthenticated() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(&origin.url(), "", "", "", &grpc_routes()));
    let resp = grpc_call(&gw, "/pkg.Secure/Rotate", &[]).await;
    assert_grpc_status(&resp, "16", "anonymous on a require_identity route");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_call_still_pending_at_hold_timeout_is_failed_precondition_with_its_ticket() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        &origin.url(),
        "",
        "[approvals]\nhold_timeout = \"300ms\"",
        "",
        &grpc_routes(),
    ));
    let resp = grpc_call(&gw, "/pkg.Deploy/Release", &BOB).await;
    assert_grpc_status(&resp, "9", "pending at hold_timeout");
    let id = resp
        .header("jit-ticket")
        .unwrap_or_else(|| panic!("no jit-ticket metadata: {:?}", resp.headers));
    let t = wait_pending(&gw, "grpc-deploy", WAIT).await;
    assert_eq!(t["id"], id, "jit-ticket names the pending ticket");
    assert_eq!(origin.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_call_when_the_store_is_down_is_unavailable() {
    let origin = Origin::start();
    // A loopback port with nothing listening: the Redis store is never reachable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = format!("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"");
    let gw = Gateway::start(&config(&origin.url(), "", &store, "", &grpc_routes()));
    let resp = grpc_call(&gw, "/pkg.Deploy/Release", &BOB).await;
    assert_grpc_status(&resp, "14", "approval store unreachable");
    assert_eq!(origin.count(), 0);
}
