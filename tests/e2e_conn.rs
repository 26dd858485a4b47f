//! End-to-end tests of connection handling: every phase of reading a request head is under
//! `header_read_timeout` (the HTTP/1-or-h2c sniff, the h2 preface and first request, HTTP/1
//! heads, idle keep-alive), and `max_connections` keeps data-plane connections from starving
//! the admin plane of file descriptors.
//!
//! Nothing here asserts how long something took: connections are polled until the gateway
//! closes them, with deadlines generous enough for a loaded machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface (RFC 9113 section 3.4), without the SETTINGS frame that must
/// follow it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// How long a test waits for the gateway to close what it must close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);

fn config(server_extra: &str, origin_url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server_extra}\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n\n\
         [[routes]]\nname = \"all\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n"
    )
}

/// Opens a connection and writes `bytes` (possibly nothing).
async fn open_with(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    if !bytes.is_empty() {
        s.write_all(bytes).await.expect("write");
    }
    s
}

/// Reads (discarding whatever the gateway sends, such as its h2 SETTINGS) until the gateway
/// closes the connection; false if it is still open at `deadline`.
async fn closed_by_peer(mut s: TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Waits for every connection to be closed by the gateway; panics naming how many of each
/// kind were still open at the deadline.
async fn assert_all_closed(kinds: Vec<(&'static str, Vec<TcpStream>)>) {
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    let mut waits = Vec::new();
    for (kind, streams) in kinds {
        for s in streams {
            waits.push((kind, tokio::spawn(closed_by_peer(s, deadline))));
        }
    }
    let mut open: Vec<&str> = Vec::new();
    for (kind, w) in waits {
        if !w.await.expect("join") {
            open.push(kind);
        }
    }
    assert!(
        open.is_empty(),
        "still open after {CLOSE_DEADLINE:?}: {} connection(s): {open:?}",
        open.len()
    );
}

#[tokio::test]
async fn connections_that_never_finish_a_request_head_are_closed() {
    let origin = Origin::start();
    let gw = Gateway::start(&config("header_read_timeout = \"1s\"", &origin.url()));
    let addr = gw.data_addr();
    let mut kinds = Vec::new();
    let cases: [(&'static str, usize, Vec<u8>); 5] = [
        // One byte that could start the h2 preface: the protocol sniff waits for more.
        ("`P` only", 50, b"P".to_vec()),
        // The whole preface, never followed by SETTINGS.
        ("h2 preface without SETTINGS", 50, H2_PREFACE.to_vec()),
        // A complete h2 handshake, then no request.
        (
            "h2 preface and SETTINGS, no request",
            10,
            [H2_PREFACE, EMPTY_SETTINGS].concat(),
        ),
        // Half an HTTP/1 head.
        (
            "partial HTTP/1 head",
            10,
            b"GET / HTTP/1.1\r\nHost: a".to_vec(),
        ),
        // Nothing at all.
        ("silent", 10, Vec::new()),
    ];
    for (kind, n, bytes) in cases {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            streams.push(open_with(addr, &bytes).await);
        }
        kinds.push((kind, streams));
    }
    assert_all_closed(kinds).await;

    // The gateway still serves.
    let resp = send("GET", &gw.url("/after"), &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    // HTTP/1: hyper starts `header_read_timeout` again as soon as a response is written, so an
    // idle keep-alive connection lasts at most that long. h2: a connection is closed when it
    // has not produced a request within `header_read_timeout` of being accepted.
    let origin = Origin::start();
    let gw = Gateway::start(&config("header_read_timeout = \"1s\"", &origin.url()));
    let addr = gw.data_addr();
    let mut h1 = open_with(addr, b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(CLOSE_DEADLINE, h1.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before answering");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_all_closed(vec![("HTTP/1 keep-alive after one request", vec![h1])]).await;
}

/// A script that runs the real gateway with at most `nofile` open files, so a test can show
/// what happens when descriptors run out.
fn with_open_file_limit(nofile: u32) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("jitgate-limited");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -n {nofile} || exit 111\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_jitgate")
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, script)
}

/// Polls `GET url` (each attempt with a short client timeout) until it answers 200.
async fn eventually_200(url: &str, deadline: Duration) -> Result<(), String> {
    let until = tokio::time::Instant::now() + deadline;
    let mut last = String::new();
    while tokio::time::Instant::now() < until {
        match Client::http1()
            .with_timeout(Duration::from_secs(2))
            .try_send("GET", url, &[], "")
            .await
        {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status, r.text()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[tokio::test]
async fn idle_data_plane_connections_over_max_connections_never_starve_the_admin_plane() {
    let origin = Origin::start();
    // 48 descriptors, about 12 of which the process uses at rest: without a budget, 40 idle
    // client connections exhaust them and neither plane can accept again until the clients
    // give up. With max_connections = 20 there are descriptors to spare.
    let (_keep, limited) = with_open_file_limit(48);
    let gw = Gateway::builder(&config(
        "max_connections = 20\nheader_read_timeout = \"60s\"\nwatch = false",
        &origin.url(),
    ))
    .program(&limited)
    .start();

    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(open_with(gw.data_addr(), b"").await);
    }
    // The admin plane answers while the data plane is at its budget.
    if let Err(last) = eventually_200(&gw.admin("/healthz"), Duration::from_secs(20)).await {
        panic!(
            "GET /healthz did not answer 200 with 40 idle data-plane connections: {last}\n{}",
            gw.stderr_text()
        );
    }
    // Once the idle clients go away, the data plane serves again.
    drop(idle);
    if let Err(last) = eventually_200(&gw.url("/again"), Duration::from_secs(20)).await {
        panic!(
            "the data plane did not serve again: {last}\n{}",
            gw.stderr_text()
        );
    }
}

#[tokio::test]
async fn a_reload_that_changes_max_connections_is_reported_as_needing_a_restart() {
    let origin = Origin::start();
    let gw = Gateway::start(&config(
        "max_connections = 20\nwatch = false",
        &origin.url(),
    ));
    // Logged once the signal handler is installed.
    assert!(
        gw.wait_for_stderr(
            "data plane: at most 20 connections",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        gw.stderr_text()
    );
    gw.rewrite_config(&config(
        "max_connections = 30\nwatch = false",
        &origin.url(),
    ));
    gw.signal(Sig::Hup);
    assert!(
        gw.wait_for_stderr("max_connections", Duration::from_secs(10))
            .await,
        "no restart notice for max_connections\n{}",
        gw.stderr_text()
    );
}

#[tokio::test]
async fn max_connections_must_be_a_positive_integer() {
    let origin = Origin::start();
    for bad in ["0", "-1", "\"many\""] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            config(&format!("max_connections = {bad}"), &origin.url()),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitgate"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run jitgate check");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "max_connections = {bad} accepted");
        assert!(
            said.contains("proxy.toml:4:") && said.contains("max_connections"),
            "max_connections = {bad}: {said}"
        );
    }
}
