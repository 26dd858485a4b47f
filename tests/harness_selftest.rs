//! Proves the test harness on its own, without the gateway: if these fail, an end-to-end failure
//! says nothing about jitgate.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::origin::{large_body_sha256, BEHAVIOR_HEADER};
use common::ws::{Frame, OP_BINARY, OP_CLOSE, OP_TEXT};
use common::*;
use http::{HeaderMap, HeaderValue, Request, Version};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn http1_request_is_recorded_with_its_target_and_headers() {
    let origin = Origin::start();
    let resp = send(
        "POST",
        &format!("{}/v1/things/42?b=2&a=1", origin.url()),
        &[("x-first", "1"), ("x-second", "two"), ("x-first", "again")],
        "hello",
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-origin-seq"), Some("0"));
    let described = resp.json();
    assert_eq!(described["target"], "/v1/things/42?b=2&a=1");
    assert_eq!(described["bodyLen"], 5);

    let reqs = origin.wait_for(1, WAIT).await;
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/v1/things/42?b=2&a=1");
    assert_eq!(r.path_and_query.as_deref(), Some("/v1/things/42?b=2&a=1"));
    assert_eq!(r.path(), "/v1/things/42");
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.body_len, 5);
    assert_eq!(r.body_sha256, sha256_hex(b"hello"));
    assert!(r.body_done && r.body_error.is_none());
    assert_eq!(r.header_all("x-first"), vec![&b"1"[..], &b"again"[..]]);
    assert_eq!(r.header_str("x-second").as_deref(), Some("two"));
    assert_eq!(
        r.header_str("host"),
        Some(origin.addr().to_string()),
        "hyper's client sets Host"
    );
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    let first = names.iter().position(|n| *n == "x-first");
    let second = names.iter().position(|n| *n == "x-second");
    assert!(first < second, "header order kept: {names:?}");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn raw_target_reaches_the_recording_unnormalised() {
    let origin = Origin::start();
    let raw = raw_request(
        origin.addr(),
        b"GET /a/%2e%2e/b//c?x=%2F HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let resp = RawResponse::parse(&raw);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&raw));
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].target, "/a/%2e%2e/b//c?x=%2F");
    assert_eq!(reqs[0].header_str("host").as_deref(), Some("example.test"));
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_recorded() {
    let origin = Origin::start();
    let client = Client::h2c();
    let url = format!("{}/h2/path?q=1", origin.url());
    let resp = client.send("GET", &url, &[("x-h2", "yes")], "").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, Version::HTTP_2);
    let resp2 = client.send("GET", &url, &[], "").await;
    assert_eq!(resp2.header("x-origin-seq"), Some("1"));

    let reqs = origin.wait_for(2, WAIT).await;
    assert_eq!(reqs[0].version, Version::HTTP_2);
    assert_eq!(reqs[0].path_and_query.as_deref(), Some("/h2/path?q=1"));
    assert_eq!(
        reqs[0].target, url,
        "h2 target is rebuilt from the pseudo-headers"
    );
    assert_eq!(reqs[0].header_str("x-h2").as_deref(), Some("yes"));
    assert_eq!(reqs[0].conn, reqs[1].conn, "one multiplexed connection");
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn echo_streams_a_large_body_back_and_records_its_hash() {
    let origin = Origin::start();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for client in [Client::http1(), Client::h2c()] {
        origin.clear();
        let resp = client
            .send(
                "PUT",
                &format!("{}/echo", origin.url()),
                &[("content-type", "application/x-test")],
                payload.clone(),
            )
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/x-test"));
        assert_eq!(resp.body.len(), payload.len());
        assert!(resp.body == payload, "echoed body differs");
        let reqs = origin.wait_for(1, WAIT).await;
        assert_eq!(reqs[0].body_len, payload.len() as u64);
        assert_eq!(reqs[0].body_sha256, sha256_hex(&payload));
    }
}

#[tokio::test]
async fn behaviours_by_path_and_by_header() {
    let origin = Origin::start();
    let c = Client::http1();
    let u = origin.url();

    let r = c.send("GET", &format!("{u}/status/503"), &[], "").await;
    assert_eq!(r.status, 503);
    let r = c.send("GET", &format!("{u}/status/204"), &[], "").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = c
        .send(
            "GET",
            &format!("{u}/any/path"),
            &[(BEHAVIOR_HEADER, "status/418")],
            "",
        )
        .await;
    assert_eq!(r.status, 418);

    let r = c.send("GET", &format!("{u}/large/1000000"), &[], "").await;
    assert_eq!(r.header("content-length"), Some("1000000"));
    assert_eq!(sha256_hex(&r.body), large_body_sha256(1_000_000));

    let started = tokio::time::Instant::now();
    let r = c
        .send("GET", &format!("{u}/slow-headers/150"), &[], "")
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let started = tokio::time::Instant::now();
    let r = c.send("GET", &format!("{u}/slow-body/150"), &[], "").await;
    assert_eq!(r.text(), "partial-rest");
    assert!(started.elapsed() >= Duration::from_millis(150));

    let r = c
        .send(
            "GET",
            &format!("{u}/"),
            &[("x-origin-set-header", "x-from-origin: v1")],
            "",
        )
        .await;
    assert_eq!(r.header("x-from-origin"), Some("v1"));

    assert_eq!(origin.wait_for(7, WAIT).await.len(), 7);
}

#[tokio::test]
async fn slow_body_first_bytes_arrive_before_the_stall() {
    let origin = Origin::start();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let resp = client
        .get(
            format!("{}/slow-body/3000", origin.url())
                .parse()
                .expect("uri"),
        )
        .await
        .expect("response head");
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let first = tokio::time::timeout(Duration::from_secs(1), body.frame())
        .await
        .expect("first chunk without waiting for the stall")
        .expect("frame")
        .expect("ok frame");
    assert_eq!(
        first.into_data().expect("data"),
        Bytes::from_static(b"partial-")
    );
}

#[tokio::test]
async fn grpc_trailers_reach_an_h2_client_and_request_trailers_are_recorded() {
    let origin = Origin::start();
    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-req-trailer", HeaderValue::from_static("t1"));
    let msg = b"\x00\x00\x00\x00\x05hello".to_vec();
    let req = Request::post(format!("{}/grpc", origin.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body_with_trailers(msg.clone(), req_trailers))
        .expect("request");
    let resp = Client::h2c().request(req).await.expect("grpc call");
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.header("content-type"), Some("application/grpc"));
    assert_eq!(resp.body.as_ref(), &msg[..]);
    let trailers = resp.trailers.expect("response trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"ok"[..])
    );

    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(
        reqs[0].trailers,
        vec![("x-req-trailer".to_string(), b"t1".to_vec())]
    );
    assert_eq!(reqs[0].body_sha256, sha256_hex(&msg));
}

#[tokio::test]
async fn websocket_round_trip_with_masked_frames() {
    assert_eq!(
        ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "RFC 6455 section 1.3 example"
    );
    let origin = Origin::start();
    let mut ws = WsClient::connect(origin.addr(), "/ws", &[]).await;
    assert!(ws
        .response_head
        .to_ascii_lowercase()
        .contains("upgrade: websocket"));

    ws.send(&Frame::text("hello through the pipe")).await;
    let back = ws.recv().await.expect("echo frame");
    assert_eq!(back.opcode, OP_TEXT);
    assert!(!back.masked, "server frames are unmasked");
    assert_eq!(back.payload, b"hello through the pipe");

    let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    ws.send(&Frame::binary(&big)).await;
    let back = ws.recv().await.expect("echo frame");
    assert_eq!(back.opcode, OP_BINARY);
    assert_eq!(back.payload, big, "64-bit length frame");

    let close = ws.close().await.expect("close reply");
    assert_eq!(close.opcode, OP_CLOSE);
    assert_eq!(&close.payload[..2], &1000u16.to_be_bytes());

    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].path(), "/ws");
    assert_eq!(reqs[0].header_str("upgrade").as_deref(), Some("websocket"));
}

#[tokio::test]
async fn websocket_unmasked_client_frame_is_refused() {
    let origin = Origin::start();
    let mut stream = tokio::net::TcpStream::connect(origin.addr())
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("head byte"));
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    stream
        .write_all(&ws::encode(&Frame::text("x"), None))
        .await
        .expect("write frame");
    let reply = tokio::time::timeout(WAIT, ws::read_frame(&mut stream))
        .await
        .expect("reply in time")
        .expect("read")
        .expect("a frame");
    assert_eq!(reply.opcode, OP_CLOSE);
    assert_eq!(&reply.payload[..2], &1002u16.to_be_bytes());
}

#[tokio::test]
async fn raw_origin_records_exact_head_bytes_and_keeps_alive() {
    let origin = RawOrigin::start();
    let first: &[u8] = b"POST /x/%2E%2e?q HTTP/1.1\r\nHOST: a.test\r\nx-Mixed-Case:  spaced \r\nContent-Length: 3\r\n\r\nabc";
    let second: &[u8] = b"GET /chunky HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\nT: 1\r\n\r\n";
    let third: &[u8] = b"GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let mut all = first.to_vec();
    all.extend_from_slice(second);
    all.extend_from_slice(third);

    let raw = client::raw_until_close(origin.addr(), &all, WAIT).await;
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");

    let reqs = origin.wait_for(3, WAIT).await;
    assert_eq!(reqs[0].head, &first[..first.len() - 3]);
    assert_eq!(reqs[0].body, b"abc");
    assert_eq!(reqs[0].target(), "/x/%2E%2e?q");
    assert_eq!(reqs[0].header_values("x-mixed-case"), vec!["spaced"]);
    assert_eq!(reqs[0].header_lines()[1], "x-Mixed-Case:  spaced ");
    assert_eq!(reqs[1].body, b"3\r\nxyz\r\n0\r\nT: 1\r\n\r\n");
    assert_eq!(reqs[2].request_line(), "GET /last HTTP/1.1");
    assert!(
        reqs.iter().all(|r| r.conn == 0),
        "one kept-alive connection"
    );

    let single = raw_request(origin.addr(), b"GET / HTTP/1.1\r\nHost: b\r\n\r\n").await;
    let parsed = RawResponse::parse(&single);
    assert_eq!(parsed.status, 200);
    assert_eq!(parsed.header("content-length"), Some("2"));
    assert_eq!(parsed.text(), "ok");
}

#[tokio::test]
async fn tls_origin_negotiates_h2_and_http1_by_alpn() {
    let pki = TestPki::new();
    let origin = Origin::start_tls(&pki);
    assert!(origin.url().starts_with("https://127.0.0.1:"));

    let resp = Client::https(&pki.ca_pem())
        .send("GET", &format!("{}/tls?x", origin.url()), &[], "")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.version, Version::HTTP_2);

    let resp = Client::https_http1(&pki.ca_pem())
        .send(
            "GET",
            &format!("https://localhost:{}/one", origin.addr().port()),
            &[],
            "",
        )
        .await;
    assert_eq!(resp.version, Version::HTTP_11);

    let reqs = origin.wait_for(2, WAIT).await;
    assert!(reqs.iter().all(|r| r.tls));
    assert_eq!(reqs[0].alpn.as_deref(), Some("h2"));
    assert_eq!(reqs[0].version, Version::HTTP_2);
    assert_eq!(reqs[0].path_and_query.as_deref(), Some("/tls?x"));
    assert_eq!(reqs[1].alpn.as_deref(), Some("http/1.1"));
    assert_eq!(reqs[1].target, "/one");

    let untrusted = TestPki::new();
    let err = Client::https(&untrusted.ca_pem())
        .try_send("GET", &origin.url(), &[], "")
        .await
        .expect_err("a certificate from another CA is refused");
    assert!(
        err.contains("Certificate") || err.contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn wait_for_times_out_loudly_and_no_new_requests_holds() {
    let origin = Origin::start();
    origin
        .assert_no_new_requests(Duration::from_millis(50))
        .await;
    let waited = tokio::spawn(async move {
        origin.wait_for(1, Duration::from_millis(100)).await;
    })
    .await;
    let panic = waited.expect_err("wait_for must panic when nothing arrives");
    assert!(panic.is_panic());
}

// === gateway launcher, exercised with a stand-in program ===

fn fake_gateway(script_body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("fake-jitgate.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{script_body}\n")).expect("write script");
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .expect("chmod");
    assert!(status.success());
    (dir, path)
}

#[tokio::test]
async fn launcher_parses_announcements_captures_stderr_and_signals() {
    // $1 = serve, $2 = --config, $3 = path; prove the path is passed and the cwd is its dir.
    let (_keep, script) = fake_gateway(
        r#"[ "$1" = serve ] && [ "$2" = --config ] || exit 64
cat "$3" >&2
echo "cwd=$(pwd)" >&2
echo "env=$JITGATE_TEST_VAR" >&2
trap 'echo "got HUP; config now: $(cat "$3")" >&2' HUP
echo "jitgate: data plane on http://127.0.0.1:41234"
echo "jitgate: admin plane on http://127.0.0.1:41235"
i=0; while [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done"#,
    );
    let mut gw = Gateway::builder("# config v1\n")
        .program(&script)
        .env("JITGATE_TEST_VAR", "42")
        .file("certs/ca.pem", "PEM")
        .start();
    assert_eq!(gw.data_url(), "http://127.0.0.1:41234");
    assert_eq!(gw.admin_url(), "http://127.0.0.1:41235");
    assert_eq!(gw.data_addr().port(), 41234);
    assert_eq!(gw.admin("/healthz"), "http://127.0.0.1:41235/healthz");
    assert!(gw.config_path().ends_with("proxy.toml"));
    assert_eq!(
        std::fs::read_to_string(gw.dir().join("certs/ca.pem")).expect("file"),
        "PEM"
    );
    assert!(
        gw.wait_for_stderr("env=42", WAIT).await,
        "{}",
        gw.stderr_text()
    );
    let stderr = gw.stderr_text();
    assert!(stderr.contains("# config v1"), "{stderr}");
    let dir = gw.dir().canonicalize().expect("canonical dir");
    assert!(
        stderr.contains(&format!("cwd={}", dir.display())),
        "{stderr}"
    );

    gw.rewrite_config("# config v2\n");
    assert_eq!(
        std::fs::read_to_string(gw.config_path()).expect("config"),
        "# config v2\n"
    );
    gw.signal(Sig::Hup);
    assert!(
        gw.wait_for_stderr("got HUP; config now: # config v2", WAIT)
            .await,
        "{}",
        gw.stderr_text()
    );
    assert!(gw.is_running());
    let status = gw.stop(WAIT).expect("exits on SIGTERM");
    assert!(!status.success());
}

#[test]
fn launcher_panics_with_stderr_when_the_gateway_exits_early() {
    let (_keep, script) = fake_gateway("echo 'error: proxy.toml:3:7: unknown key' >&2; exit 2");
    let result = std::panic::catch_unwind(|| {
        Gateway::builder("bad = 1\n").program(&script).start();
    });
    let payload = result.expect_err("start must panic");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        msg.contains("exited early") || msg.contains("closed stdout"),
        "{msg}"
    );
    assert!(msg.contains("proxy.toml:3:7: unknown key"), "{msg}");
}

#[test]
fn launcher_times_out_when_nothing_is_announced() {
    let (_keep, script) = fake_gateway("echo starting >&2; exec sleep 5");
    let result = std::panic::catch_unwind(|| {
        Gateway::builder("")
            .program(&script)
            .startup_timeout(Duration::from_millis(300))
            .start();
    });
    let msg = result
        .expect_err("start must panic")
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("no address announcement"), "{msg}");
    assert!(msg.contains("starting"), "{msg}");
}

#[test]
fn jitgate_binary_is_built_for_the_tests() {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_jitgate"));
    assert!(path.exists(), "{}", path.display());
}
