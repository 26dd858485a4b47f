//! End-to-end tests of the data plane: the real `jitgate` binary between a test client and a
//! recording origin. What is forwarded must be exactly the canonical request that was matched;
//! what is refused must never reach the origin.
//!
//! "Nothing reached the origin" is proved without waiting out a window: after the refusals a
//! sentinel request on an allowed route is sent, and it must be the first and only request the
//! origin recorded (the gateway answers each refusal before the next request is sent).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ws::{Frame, OP_CLOSE, OP_TEXT};
use common::*;
use http::{HeaderMap, HeaderValue, Request, Version};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);
const PROBLEM_JSON: &str = "application/problem+json";

// === config helpers ===

/// A config with loopback listeners, `server_extra` lines under `[server]`, one upstream called
/// `origin` (with `upstream_extra` lines) and `routes`.
fn config(server_extra: &str, origin_url: &str, upstream_extra: &str, routes: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n{upstream_extra}\n\n{routes}"
    )
}

const CATCH_ALL: &str =
    "[[routes]]\nname = \"all\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n";

/// A gateway allowing everything to `origin_url`.
fn allow_all(origin_url: &str) -> Gateway {
    allow_all_with(origin_url, "")
}

/// A gateway allowing everything to `origin_url`, with extra `[[upstreams]]` settings.
fn allow_all_with(origin_url: &str, upstream_extra: &str) -> Gateway {
    Gateway::start(&config("", origin_url, upstream_extra, CATCH_ALL))
}

fn get(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

// === assertion helpers ===

/// Asserts an RFC 9457 answer with `status` and returns the parsed body.
fn assert_problem(status: u16, content_type: Option<&str>, body: &[u8], what: &str) -> Value {
    assert_eq!(
        content_type,
        Some(PROBLEM_JSON),
        "{what}: content-type; body {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(v["status"], status, "{what}: status member in {v}");
    for member in ["type", "title", "detail"] {
        assert!(
            v[member].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: `{member}` must be a non-empty string in {v}"
        );
    }
    v
}

fn assert_problem_resp(resp: &Response, status: u16, what: &str) -> Value {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_problem(status, resp.header("content-type"), &resp.body, what)
}

fn assert_problem_raw(raw: &[u8], status: u16, what: &str) -> Value {
    let r = RawResponse::parse(raw);
    assert_eq!(
        r.status,
        status,
        "{what}: got {:?}",
        String::from_utf8_lossy(raw)
    );
    assert_problem(status, r.header("content-type"), &r.body, what)
}

/// Sends a sentinel through an allowed route and asserts it is the only request the origin has
/// ever seen, i.e. everything before it was refused at the edge.
async fn assert_only_sentinel_reached(gw: &Gateway, origin: &Origin, sentinel_path: &str) {
    let resp = send("GET", &gw.url(sentinel_path), &[], "").await;
    assert_eq!(resp.status, 200, "sentinel: {}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    let seen: Vec<String> = reqs
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        seen,
        vec![format!("GET {sentinel_path}")],
        "only the sentinel may reach the origin"
    );
}

async fn assert_only_raw_sentinel_reached(gw: &Gateway, origin: &RawOrigin) {
    let raw = raw_request(gw.data_addr(), &get("/sentinel", "a.test")).await;
    assert_eq!(
        RawResponse::parse(&raw).status,
        200,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let reqs = origin.wait_for(1, WAIT).await;
    let seen: Vec<String> = reqs.iter().map(|r| r.request_line()).collect();
    assert_eq!(
        seen,
        vec!["GET /sentinel HTTP/1.1".to_string()],
        "only the sentinel may reach the origin"
    );
}

// === 1. forwarded == canonical ===

#[tokio::test]
async fn forwarded_target_and_host_are_the_canonical_form() {
    let origin = RawOrigin::start();
    let gw = allow_all(&origin.url());
    // (what the client sends, what the origin must receive)
    let cases: &[(&str, &str)] = &[
        ("/a/./b//c/../d", "/a/b/d"),
        ("/%61pi/x", "/api/x"),
        ("/api/%7euser", "/api/~user"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E/b", "/a/b"),
        ("//double//slashes///", "/double/slashes/"),
        (
            "/q/./r?b=%2f&a=%7e&c=..%2F&&z",
            "/q/r?b=%2f&a=%7e&c=..%2F&&z",
        ),
        ("/already/canonical?x=1", "/already/canonical?x=1"),
    ];
    for (i, (sent, want)) in cases.iter().enumerate() {
        let raw = raw_request(gw.data_addr(), &get(sent, "api.example.com")).await;
        let resp = RawResponse::parse(&raw);
        assert_eq!(
            resp.status,
            200,
            "{sent}: {}",
            String::from_utf8_lossy(&raw)
        );
        let reqs = origin.wait_for(i + 1, WAIT).await;
        assert_eq!(
            reqs[i].request_line(),
            format!("GET {want} HTTP/1.1"),
            "forwarded target for {sent}"
        );
    }
    assert_eq!(origin.count(), cases.len());
}

#[tokio::test]
async fn forwarded_host_is_canonical_and_absolute_form_is_reduced() {
    let origin = RawOrigin::start();
    let gw = allow_all(&origin.url());
    let cases: &[(&[u8], &str, &str)] = &[
        (
            b"GET /h HTTP/1.1\r\nHost: API.Example.COM.:80\r\n\r\n",
            "GET /h HTTP/1.1",
            "api.example.com",
        ),
        (
            b"GET /h HTTP/1.1\r\nHost: api.example.com:8443\r\n\r\n",
            "GET /h HTTP/1.1",
            "api.example.com:8443",
        ),
        (
            b"GET http://API.example.com/abs/./x?q=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            "GET /abs/x?q=1 HTTP/1.1",
            "api.example.com",
        ),
    ];
    for (i, (sent, line, host)) in cases.iter().enumerate() {
        let raw = raw_request(gw.data_addr(), sent).await;
        assert_eq!(
            RawResponse::parse(&raw).status,
            200,
            "{}: {}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&raw)
        );
        let reqs = origin.wait_for(i + 1, WAIT).await;
        let r = &reqs[i];
        assert_eq!(r.request_line(), *line, "{}", r.head_str());
        assert_eq!(
            r.header_values("host"),
            vec![host.to_string()],
            "{}",
            r.head_str()
        );
        assert_eq!(
            r.header_values("x-forwarded-host"),
            vec![host.to_string()],
            "{}",
            r.head_str()
        );
    }
}

// === 2. allow / deny / approve / no match ===

const POLICY_ROUTES: &str = r#"
[[routes]]
name = "blocked"
path = "/blocked/**"
action = "deny"

[[routes]]
name = "legal-hold"
path = "/custom/**"
action = "deny"
[routes.error]
status = 451
content_type = "text/plain; charset=utf-8"
body = "refused by {rule}"

[[routes]]
name = "prod-deploy"
methods = ["POST", "DELETE"]
path = "/deploy/**"
upstream = "origin"
action = "approve"
[routes.approval]
approvers = ["user:alice"]
quorum = 1

[[routes]]
name = "deploy-read"
path = "/deploy/**"
upstream = "origin"
action = "allow"

[[routes]]
name = "shadow-deny"
path = "/shadow/**"
action = "deny"
enforce = false

[[routes]]
name = "shadow-read"
path = "/shadow/**"
upstream = "origin"
action = "allow"

[[routes]]
name = "api"
path = "/api/**"
upstream = "origin"
action = "allow"
"#;

#[tokio::test]
async fn deny_route_answers_403_problem_json_and_forwards_nothing() {
    let origin = Origin::start();
    let gw = Gateway::start(&config("", &origin.url(), "", POLICY_ROUTES));
    for path in [
        "/blocked",
        "/blocked/x",
        "/BLOCKED/../blocked/y",
        "/%62locked/z",
    ] {
        let resp = send("POST", &gw.url(path), &[], "payload").await;
        let v = assert_problem_resp(&resp, 403, path);
        assert!(
            v["detail"].as_str().unwrap_or("").contains("blocked"),
            "{path}: detail names the route: {v}"
        );
    }
    assert_only_sentinel_reached(&gw, &origin, "/api/sentinel").await;
}

#[tokio::test]
async fn deny_route_with_custom_error_renders_the_template() {
    let origin = Origin::start();
    let gw = Gateway::start(&config("", &origin.url(), "", POLICY_ROUTES));
    let resp = send("GET", &gw.url("/custom/thing"), &[], "").await;
    assert_eq!(resp.status, 451, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(resp.text(), "refused by legal-hold");
    assert_only_sentinel_reached(&gw, &origin, "/api/sentinel").await;
}

#[tokio::test]
async fn unmatched_request_without_catch_all_is_404_problem_json() {
    let origin = Origin::start();
    let gw = Gateway::start(&config("", &origin.url(), "", POLICY_ROUTES));
    for path in ["/", "/other", "/apix", "/ap/i", "/api%2e/x"] {
        let resp = send("GET", &gw.url(path), &[], "").await;
        assert_problem_resp(&resp, 404, path);
    }
    assert_only_sentinel_reached(&gw, &origin, "/api/sentinel").await;
}

#[tokio::test]
async fn approve_route_holds_whatever_the_method_spelling() {
    let origin = Origin::start();
    let routes = format!("[approvals]\nhold_timeout = \"50ms\"\n{POLICY_ROUTES}");
    let gw = Gateway::start(&config("", &origin.url(), "", &routes));
    let addr = gw.data_addr();
    let h = "Host: api.test\r\n";
    let attempts: Vec<(&str, Vec<u8>)> = vec![
        (
            "POST",
            format!("POST /deploy/web HTTP/1.1\r\n{h}Content-Length: 2\r\n\r\n{{}}").into_bytes(),
        ),
        (
            "DELETE",
            format!("DELETE /deploy/web HTTP/1.1\r\n{h}\r\n").into_bytes(),
        ),
        (
            "dot-segments",
            format!("POST /x/../deploy/./web HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n")
                .into_bytes(),
        ),
        (
            "X-HTTP-Method-Override",
            format!("GET /deploy/web HTTP/1.1\r\n{h}X-HTTP-Method-Override: POST\r\n\r\n")
                .into_bytes(),
        ),
        (
            "X-HTTP-Method",
            format!("GET /deploy/web HTTP/1.1\r\n{h}X-HTTP-Method: DELETE\r\n\r\n").into_bytes(),
        ),
        (
            "X-Method-Override",
            format!("GET /deploy/web HTTP/1.1\r\n{h}X-Method-Override: POST\r\n\r\n").into_bytes(),
        ),
        (
            "lowercase override",
            format!("GET /deploy/web HTTP/1.1\r\n{h}X-HTTP-Method-Override: post\r\n\r\n")
                .into_bytes(),
        ),
        (
            "_method query",
            format!("GET /deploy/web?_method=POST HTTP/1.1\r\n{h}\r\n").into_bytes(),
        ),
        (
            "_method lowercase",
            format!("GET /deploy/web?a=1&_method=delete HTTP/1.1\r\n{h}\r\n").into_bytes(),
        ),
    ];
    for (what, bytes) in &attempts {
        // Held, then still pending at hold_timeout: 202 with the ticket, never forwarded.
        let raw = raw_request(addr, bytes).await;
        let v = assert_problem_raw(&raw, 202, what);
        assert_eq!(v["rule"], "prod-deploy", "{what}: names the route: {v}");
        assert!(
            v["ticket"].as_str().unwrap_or("").starts_with("jit_"),
            "{what}: names the ticket: {v}"
        );
    }
    // Method names must be upper case: `post` is not `POST` to the rules but is to many
    // frameworks, so it is refused rather than matched against the allow route below.
    for (what, bytes) in [
        (
            "lowercase method",
            format!("post /deploy/web HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
        ),
        (
            "mixed-case method",
            format!("Delete /deploy/web HTTP/1.1\r\n{h}\r\n"),
        ),
        (
            "lowercase GET",
            format!("get /deploy/web HTTP/1.1\r\n{h}\r\n"),
        ),
    ] {
        let raw = raw_request(addr, bytes.as_bytes()).await;
        assert_problem_raw(&raw, 400, what);
    }
    // A plain read of the same path is allowed by the next route, so the 202s above came from
    // the approve route.
    let resp = send("GET", &gw.url("/deploy/web"), &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs.len(), 1, "only the plain GET reached the origin");
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].target.as_str()),
        ("GET", "/deploy/web")
    );
}

#[tokio::test]
async fn shadow_mode_deny_observes_and_the_next_route_decides() {
    let origin = Origin::start();
    let gw = Gateway::start(&config("", &origin.url(), "", POLICY_ROUTES));
    let resp = send("DELETE", &gw.url("/shadow/thing"), &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].method, "DELETE");
    assert_eq!(reqs[0].target, "/shadow/thing");
    assert!(
        gw.wait_for_stderr("would deny", WAIT).await,
        "shadow mode logs what it would have done: {}",
        gw.stderr_text()
    );
}

// === 3. malformed targets ===

#[tokio::test]
async fn malformed_targets_are_400_problem_json_and_never_forwarded() {
    let origin = RawOrigin::start();
    let gw = allow_all(&origin.url());
    let targets: &[&str] = &[
        "/a%2Fb",
        "/a%2fb",
        "/..",
        "/../etc/passwd",
        "/a/../../b",
        "/%2e%2e/x",
        "/a/%2E%2E/%2e%2e/b",
        "/a%00b",
        "/a%5Cb",
        "/a%25b",
        "/a%3Bb",
        "/a%3Fb",
        "/a%23b",
        "/a;jsessionid=1",
        "/a%zzb",
        "/a%",
        "/a%4",
        "/%C0%AE%C0%AE/x",
        "/%c0%af",
        "/a%ffb",
        "/a%C3",
        "/a\\b",
        "/a\\..\\b",
    ];
    for t in targets {
        let raw = raw_request(gw.data_addr(), &get(t, "a.test")).await;
        assert_problem_raw(&raw, 400, t);
    }
    assert_only_raw_sentinel_reached(&gw, &origin).await;
}

#[tokio::test]
async fn raw_control_bytes_and_non_ascii_in_the_target_are_400() {
    let origin = RawOrigin::start();
    let gw = allow_all(&origin.url());
    // hyper's parser may refuse some of these before the gateway sees them (a bare 400 is
    // fine there); what matters is 400 and that nothing is forwarded.
    let heads: &[&[u8]] = &[
        b"GET /a\x00b HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /a\tb HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ];
    for head in heads {
        let raw = raw_request(gw.data_addr(), head).await;
        assert_eq!(
            RawResponse::parse(&raw).status,
            400,
            "{:?} -> {:?}",
            String::from_utf8_lossy(head),
            String::from_utf8_lossy(&raw)
        );
    }
    assert_only_raw_sentinel_reached(&gw, &origin).await;
}

// === 4. hop-by-hop and forwarding headers ===

const HOP_REQUEST: &[u8] = b"GET /hop HTTP/1.1\r\n\
Host: H.Example\r\n\
Connection: close, X-Custom-Hop\r\n\
X-Custom-Hop: secret\r\n\
Keep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\n\
Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
TE: gzip\r\n\
Upgrade: h2c\r\n\
X-Original-URL: /admin\r\n\
X-Rewrite-URL: /admin\r\n\
X_Original_URL: /admin\r\n\
X-Forwarded-Uri: /admin\r\n\
X-Envoy-Original-Path: /admin\r\n\
HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
Jit-Approval: forged.token.value\r\n\
X-Real-IP: 203.0.113.7\r\n\
True-Client-IP: 203.0.113.7\r\n\
X-Client-IP: 203.0.113.7\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
X-Forwarded-Proto: https\r\n\
X-Forwarded-Host: evil.example\r\n\
Forwarded: for=203.0.113.7;proto=https\r\n\
X-End-To-End: kept\r\n\
\r\n";

const STRIPPED: &[&str] = &[
    "connection",
    "x-custom-hop",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
    "x-original-url",
    "x-rewrite-url",
    "x_original_url",
    "x-forwarded-uri",
    "x-envoy-original-path",
    "http2-settings",
    "jit-approval",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
];

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_untrusted_forwarding_headers_replaced() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        "trusted_proxies = []",
        &origin.url(),
        "",
        CATCH_ALL,
    ));
    let raw = raw_request(gw.data_addr(), HOP_REQUEST).await;
    assert_eq!(
        RawResponse::parse(&raw).status,
        200,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let r = &origin.wait_for(1, WAIT).await[0];
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    for h in STRIPPED {
        assert!(r.header(h).is_none(), "{h} reached the origin: {names:?}");
    }
    assert!(
        r.header("forwarded").is_none(),
        "Forwarded from an untrusted peer: {names:?}"
    );
    assert_eq!(r.header_str("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(r.header_all("x-forwarded-for"), vec![&b"127.0.0.1"[..]]);
    assert_eq!(r.header_all("x-forwarded-proto"), vec![&b"http"[..]]);
    assert_eq!(r.header_all("x-forwarded-host"), vec![&b"h.example"[..]]);
    assert_eq!(r.header_all("via"), vec![&b"1.1 jitgate"[..]]);
    assert_eq!(r.header_all("host"), vec![&b"h.example"[..]]);
    assert_eq!(r.target, "/hop", "path-override headers change nothing");
}

#[tokio::test]
async fn forwarded_for_is_appended_when_the_peer_is_trusted() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        &origin.url(),
        "",
        CATCH_ALL,
    ));
    let resp = send(
        "GET",
        &gw.url("/xff"),
        &[
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
            ("via", "1.1 edge"),
        ],
        "",
    )
    .await;
    assert_eq!(resp.status, 200);
    let r = &origin.wait_for(1, WAIT).await[0];
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec![&b"203.0.113.7, 10.0.0.1, 127.0.0.1"[..]]
    );
    assert_eq!(r.header_all("via"), vec![&b"1.1 edge, 1.1 jitgate"[..]]);
}

#[tokio::test]
async fn h2c_upgrade_request_is_not_passed_on() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let raw = raw_request(
        gw.data_addr(),
        b"GET /up HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let resp = RawResponse::parse(&raw);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&raw));
    let r = &origin.wait_for(1, WAIT).await[0];
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    for h in ["upgrade", "connection", "http2-settings"] {
        assert!(r.header(h).is_none(), "{h} reached the origin: {names:?}");
    }
}

#[tokio::test]
async fn te_trailers_is_kept_and_other_te_values_dropped() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let raw = raw_request(
        gw.data_addr(),
        b"GET /te1 HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\n\r\n",
    )
    .await;
    assert_eq!(RawResponse::parse(&raw).status, 200);
    let raw = raw_request(
        gw.data_addr(),
        b"GET /te2 HTTP/1.1\r\nHost: a.test\r\nTE: trailers, deflate;q=0.5\r\n\r\n",
    )
    .await;
    assert_eq!(RawResponse::parse(&raw).status, 200);
    let reqs = origin.wait_for(2, WAIT).await;
    assert_eq!(reqs[0].header_all("te"), vec![&b"trailers"[..]]);
    let te2: Vec<String> = reqs[1]
        .header_all("te")
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        te2.is_empty() || te2 == ["trailers"],
        "only `trailers` may survive: {te2:?}"
    );
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let raw = raw_request(
        gw.data_addr(),
        b"GET /resp HTTP/1.1\r\nHost: a.test\r\n\
          x-origin-set-header: Connection: x-foo\r\n\
          x-origin-set-header: x-foo: bar\r\n\
          x-origin-set-header: Keep-Alive: timeout=99\r\n\
          x-origin-set-header: Proxy-Authenticate: Basic realm=origin\r\n\
          x-origin-set-header: Proxy-Connection: keep-alive\r\n\
          x-origin-set-header: Upgrade: foo/1\r\n\
          x-origin-set-header: x-end: kept\r\n\r\n",
    )
    .await;
    let resp = RawResponse::parse(&raw);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(resp.header("x-end"), Some("kept"), "{:?}", resp.headers);
    for h in [
        "x-foo",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            resp.header(h).is_none(),
            "{h} reached the client: {:?}",
            resp.headers
        );
    }
    // The gateway may say `Connection: close` or `keep-alive` itself, but never the origin's.
    for v in resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        assert!(!v.1.contains("x-foo"), "origin's Connection leaked: {v:?}");
    }
    assert_eq!(resp.header("via"), Some("1.1 jitgate"));
}

#[tokio::test]
async fn too_many_connection_names_is_400() {
    let origin = RawOrigin::start();
    let gw = allow_all(&origin.url());
    let names: Vec<String> = (0..33).map(|i| format!("x-h{i}")).collect();
    let head = format!(
        "GET /many HTTP/1.1\r\nHost: a.test\r\nConnection: {}\r\n\r\n",
        names.join(", ")
    );
    let raw = raw_request(gw.data_addr(), head.as_bytes()).await;
    assert_problem_raw(&raw, 400, "33 names in Connection");
    // 32 is still fine.
    let head = format!(
        "GET /sentinel HTTP/1.1\r\nHost: a.test\r\nConnection: {}\r\n\r\n",
        names[..32].join(", ")
    );
    let raw = raw_request(gw.data_addr(), head.as_bytes()).await;
    assert_eq!(
        RawResponse::parse(&raw).status,
        200,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].request_line(), "GET /sentinel HTTP/1.1");
}

/// Header conditions judge the headers the upstream will get: a header the client marks as
/// hop-by-hop (or spells with `_`) is gone before matching, so it can neither satisfy an allow
/// condition nor reach the upstream.
#[tokio::test]
async fn header_conditions_see_only_what_is_forwarded() {
    let origin = Origin::start();
    let routes = r#"
[[routes]]
name = "prod-only"
path = "/p/**"
headers = { "x-env" = "prod" }
upstream = "origin"
action = "allow"
"#;
    let gw = Gateway::start(&config("", &origin.url(), "", routes));
    let ok = raw_request(
        gw.data_addr(),
        b"GET /p/sentinel HTTP/1.1\r\nHost: a.test\r\nX-Env: prod\r\n\r\n",
    )
    .await;
    assert_eq!(
        RawResponse::parse(&ok).status,
        200,
        "{}",
        String::from_utf8_lossy(&ok)
    );
    let cases: &[(&str, &[u8])] = &[
        (
            "named in Connection",
            b"GET /p/x HTTP/1.1\r\nHost: a.test\r\nConnection: x-env\r\nX-Env: prod\r\n\r\n",
        ),
        (
            "underscore spelling",
            b"GET /p/x HTTP/1.1\r\nHost: a.test\r\nX_Env: prod\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let raw = raw_request(gw.data_addr(), bytes).await;
        assert_problem_raw(&raw, 404, what);
    }
    let reqs = origin.wait_for(1, WAIT).await;
    let seen: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(seen, ["/p/sentinel"]);
}

#[tokio::test]
async fn a_get_method_list_also_covers_head() {
    let origin = Origin::start();
    let routes = r#"
[[routes]]
name = "no-reads"
methods = ["GET"]
path = "/secret/**"
action = "deny"

[[routes]]
name = "rest"
path = "/**"
upstream = "origin"
action = "allow"
"#;
    let gw = Gateway::start(&config("", &origin.url(), "", routes));
    let raw = raw_request(
        gw.data_addr(),
        b"HEAD /secret/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    let resp = RawResponse::parse(&raw);
    assert_eq!(resp.status, 403, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(resp.header("content-type"), Some(PROBLEM_JSON));
    assert_only_sentinel_reached(&gw, &origin, "/sentinel").await;
}

// === 7. WebSocket ===

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let mut ws = WsClient::connect(gw.data_addr(), "/ws", &[("X-Custom-Hop", "x")]).await;
    assert!(
        ws.response_head
            .to_ascii_lowercase()
            .contains("upgrade: websocket"),
        "{}",
        ws.response_head
    );
    ws.send(&Frame::text("hello through jitgate")).await;
    let back = ws.recv().await.expect("echoed frame");
    assert_eq!(back.opcode, OP_TEXT);
    assert!(!back.masked);
    assert_eq!(back.payload, b"hello through jitgate");
    let close = ws.close().await.expect("close reply");
    assert_eq!(close.opcode, OP_CLOSE);
    assert_eq!(&close.payload[..2], &1000u16.to_be_bytes());

    let r = &origin.wait_for(1, WAIT).await[0];
    assert_eq!(r.target, "/ws");
    assert_eq!(r.header_str("upgrade").as_deref(), Some("websocket"));
    assert_eq!(
        r.header_str("sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
}

#[tokio::test]
async fn websocket_to_a_denied_path_is_refused_before_upgrading() {
    let origin = Origin::start();
    let gw = Gateway::start(&config("", &origin.url(), "", POLICY_ROUTES));
    let err = WsClient::try_connect(gw.data_addr(), "/blocked/ws", &[])
        .await
        .err()
        .expect("no upgrade on a deny route");
    assert!(err.contains("HTTP/1.1 403"), "{err}");
    assert_only_sentinel_reached(&gw, &origin, "/api/sentinel").await;
}

// === 8. gRPC-style h2c with trailers ===

#[tokio::test]
async fn grpc_over_h2c_passes_trailers_both_ways() {
    let origin = Origin::start();
    let gw = allow_all_with(&origin.url(), "protocol = \"h2\"");
    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-req-trailer", HeaderValue::from_static("t1"));
    let msg = b"\x00\x00\x00\x00\x05hello".to_vec();
    let req = Request::post(gw.url("/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body_with_trailers(msg.clone(), req_trailers))
        .expect("request");
    let resp = Client::h2c()
        .with_timeout(WAIT)
        .request(req)
        .await
        .expect("grpc call through the gateway");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.header("content-type"), Some("application/grpc"));
    assert_eq!(resp.body.as_ref(), &msg[..]);
    let trailers = resp.trailers.expect("response trailers reach the client");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"ok"[..])
    );

    let r = &origin.wait_for(1, WAIT).await[0];
    assert_eq!(r.version, Version::HTTP_2, "upstream protocol = h2");
    assert_eq!(r.path(), "/grpc");
    // Over h2 the upstream gets its own authority in `:authority`, no second Host, and the
    // client's host in X-Forwarded-Host.
    assert_eq!(r.target, format!("http://{}/grpc", origin.addr()));
    assert_eq!(r.header("host"), None, "{:?}", r.headers);
    assert_eq!(
        r.header_str("x-forwarded-host"),
        Some(gw.data_addr().to_string())
    );
    assert_eq!(r.header_str("te").as_deref(), Some("trailers"));
    assert_eq!(r.body_sha256, sha256_hex(&msg));
    assert_eq!(
        r.trailers,
        vec![("x-req-trailer".to_string(), b"t1".to_vec())],
        "request trailers reach the origin"
    );
}

// === 9. upstream failures and timeouts ===

#[tokio::test]
async fn refused_upstream_is_502_problem_json() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let gw = allow_all(&format!("http://127.0.0.1:{port}"));
    let resp = send("GET", &gw.url("/x"), &[], "").await;
    let v = assert_problem_resp(&resp, 502, "refused upstream");
    assert_eq!(v["upstream"], "origin", "{v}");
}

/// A loopback listener that never accepts, with backlog 0 and its accept queue filled: Linux
/// then drops further SYNs, so a connect hangs instead of being refused.
async fn black_hole_listener() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            held.push(s);
        }
    }
    (listener, held)
}

#[tokio::test]
async fn connect_timeout_is_504_problem_json() {
    let (listener, _held) = black_hole_listener().await;
    let addr = listener.local_addr().expect("addr");
    // Proof the black hole works: our own connect does not complete either.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr)
        )
        .await
        .is_err(),
        "the accept queue is not full; cannot provoke a connect timeout"
    );
    let gw = allow_all_with(&format!("http://{addr}"), "connect_timeout = \"300ms\"");
    let resp = Client::http1()
        .with_timeout(WAIT)
        .send("GET", &gw.url("/x"), &[], "")
        .await;
    let v = assert_problem_resp(&resp, 504, "connect timeout");
    assert_eq!(v["upstream"], "origin", "{v}");
}

#[tokio::test]
async fn response_timeout_is_504_problem_json() {
    let origin = Origin::start();
    let gw = allow_all_with(&origin.url(), "response_timeout = \"300ms\"");
    let resp = Client::http1()
        .with_timeout(WAIT)
        .send("GET", &gw.url("/slow-headers/3000"), &[], "")
        .await;
    let v = assert_problem_resp(&resp, 504, "slow headers");
    assert_eq!(v["upstream"], "origin", "{v}");
}

#[tokio::test]
async fn idle_response_body_is_cut_off() {
    let origin = Origin::start();
    let gw = allow_all_with(&origin.url(), "idle_timeout = \"300ms\"");
    let started = Instant::now();
    let result = Client::http1()
        .with_timeout(WAIT)
        .try_send("GET", &gw.url("/slow-body/3000"), &[], "")
        .await;
    let took = started.elapsed();
    match result {
        Err(e) => assert!(
            e.starts_with("body"),
            "the head arrived, the body failed: {e}"
        ),
        Ok(resp) => panic!(
            "a stalled body must not end cleanly; got {} {:?} after {took:?}",
            resp.status,
            resp.text()
        ),
    }
}

#[tokio::test]
async fn idle_request_body_is_cut_off_upstream() {
    let origin = Origin::start();
    let gw = allow_all_with(&origin.url(), "idle_timeout = \"300ms\"");
    // Head and 5 of 100 promised bytes, then silence while keeping the connection open.
    let mut stream = tokio::net::TcpStream::connect(gw.data_addr())
        .await
        .expect("connect");
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"POST /stall HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nhello")
        .await
        .expect("write");
    let reqs = origin.wait_for(1, Duration::from_millis(2500)).await;
    assert_eq!(reqs[0].body_len, 5);
    assert!(
        reqs[0].body_error.is_some(),
        "the origin sees the body end early, not complete: {:?}",
        reqs[0]
    );
    drop(stream);
}

/// Asserts a client-fault answer: `status` problem+json that names no upstream, logged as a
/// client fault and not as an upstream error. The problem types are those of a held body
/// that fails while it is buffered.
async fn assert_client_fault(gw: &Gateway, raw: &[u8], status: u16, what: &str) {
    let v = assert_problem_raw(raw, status, what);
    let slug = if status == 408 {
        "body-timeout"
    } else {
        "malformed-request"
    };
    assert_eq!(
        v["type"],
        format!("urn:jitgate:problem:{slug}"),
        "{what}: {v}"
    );
    assert!(
        v.get("upstream").is_none() && !v["type"].as_str().unwrap_or("").contains("upstream"),
        "{what}: a client fault must not be blamed on the upstream: {v}"
    );
    assert!(
        gw.wait_for_stderr("client fault", WAIT).await,
        "{what}: not logged as a client fault\n{}",
        gw.stderr_text()
    );
    assert!(
        !gw.stderr_text().contains("upstream error"),
        "{what}: logged as an upstream error\n{}",
        gw.stderr_text()
    );
}

#[tokio::test]
async fn stalled_request_body_is_408_not_an_upstream_failure() {
    let origin = Origin::start();
    let gw = allow_all_with(&origin.url(), "idle_timeout = \"1s\"");
    // 10 of 100 promised bytes, then silence with the connection open: the client stalled.
    let raw = common::client::raw_request_timeout(
        gw.data_addr(),
        b"POST /stall HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789",
        Duration::from_secs(20),
    )
    .await;
    assert_client_fault(&gw, &raw, 408, "stalled request body").await;
}

#[tokio::test]
async fn overflowing_chunk_size_is_400_not_an_upstream_failure() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let raw = common::client::raw_request_timeout(
        gw.data_addr(),
        b"POST /chunks HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          FFFFFFFFFFFFFFFFFFFF\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert_client_fault(&gw, &raw, 400, "overflowing chunk size").await;
}

#[tokio::test]
async fn truncated_request_body_is_400_not_an_upstream_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    // 10 of 100 promised bytes, then the client closes its sending side.
    let mut stream = tokio::net::TcpStream::connect(gw.data_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"POST /cut HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway answers and closes")
        .expect("read");
    assert_client_fault(&gw, &raw, 400, "truncated request body").await;
}

#[tokio::test]
async fn genuine_upstream_failures_stay_502_with_a_streamed_body() {
    // The origin closes the connection while the gateway is still sending a body: that is the
    // upstream's fault, whatever the request body looked like.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let gw = allow_all(&format!("http://127.0.0.1:{port}"));
    let raw = common::client::raw_request_timeout(
        gw.data_addr(),
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
        Duration::from_secs(20),
    )
    .await;
    let v = assert_problem_raw(&raw, 502, "refused upstream with a body");
    assert_eq!(v["upstream"], "origin", "{v}");
}

// === 10. Host rules ===

#[tokio::test]
async fn host_problems_are_400() {
    let origin = RawOrigin::start();
    let gw = allow_all(&origin.url());
    let cases: &[(&str, &[u8])] = &[
        ("no Host", b"GET /x HTTP/1.1\r\n\r\n"),
        (
            "two Host headers",
            b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        ),
        (
            "two equal Host headers",
            b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
        ),
        (
            "absolute-form disagrees with Host",
            b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ),
        (
            "absolute-form port disagrees with Host",
            b"GET http://a.test:8080/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let raw = raw_request(gw.data_addr(), bytes).await;
        assert_problem_raw(&raw, 400, what);
    }
    assert_only_raw_sentinel_reached(&gw, &origin).await;
}

#[tokio::test]
async fn h2_authority_conflicting_with_host_is_400() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    // The h2 client sends `:authority` from the URL and our Host as a regular header.
    let resp = Client::h2c()
        .send("GET", &gw.url("/x"), &[("host", "other.example")], "")
        .await;
    assert_eq!(resp.version, Version::HTTP_2);
    assert_problem_resp(&resp, 400, "h2 :authority vs Host");
    assert_only_sentinel_reached(&gw, &origin, "/sentinel").await;
}

#[tokio::test]
async fn h2c_prior_knowledge_client_is_proxied_to_an_http1_upstream() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let resp = Client::h2c()
        .send(
            "POST",
            &gw.url("/h2/./in?q=1"),
            &[("x-a", "1")],
            Bytes::from_static(b"abc"),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.version, Version::HTTP_2);
    let r = &origin.wait_for(1, WAIT).await[0];
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.target, "/h2/in?q=1");
    assert_eq!(r.header_str("host"), Some(gw.data_addr().to_string()));
    assert_eq!(r.header_str("via").as_deref(), Some("2 jitgate"));
    assert_eq!(r.body_sha256, sha256_hex(b"abc"));
}

#[tokio::test]
async fn chunked_get_body_reaches_an_http1_upstream() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let raw = raw_request(
        gw.data_addr(),
        b"GET /with-body HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].body_len, 5, "the GET body was dropped");
    assert_eq!(reqs[0].body_sha256, sha256_hex(b"hello"));
}

#[tokio::test]
async fn h2_cookie_crumbs_are_joined_for_an_http1_upstream() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    let resp = Client::h2c()
        .send(
            "GET",
            &gw.url("/cookies"),
            &[("cookie", "a=1"), ("cookie", "b=2")],
            "",
        )
        .await;
    assert_eq!(resp.status, 200);
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].header_all("cookie"), vec![&b"a=1; b=2"[..]]);
}

// === 12. the gateway's own data-plane endpoints ===

#[tokio::test]
async fn well_known_405_answers_carry_allow() {
    let origin = Origin::start();
    let gw = allow_all(&origin.url());
    for (method, path) in [
        ("POST", "/.well-known/jwks.json"),
        ("DELETE", "/.well-known/jwks.json"),
        (
            "DELETE",
            "/.well-known/jitgate/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B",
        ),
        (
            "PUT",
            "/.well-known/jitgate/tickets/jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B",
        ),
    ] {
        let resp = send(method, &gw.url(path), &[], "").await;
        assert_problem_resp(&resp, 405, &format!("{method} {path}"));
        assert_eq!(
            resp.header("allow"),
            Some("GET, HEAD"),
            "{method} {path}: Allow"
        );
    }
    assert_eq!(
        origin.count(),
        0,
        "the gateway's own endpoints are never forwarded"
    );
}
