//! Graceful shutdown (SPEC 11.6): on SIGTERM the gateway stops accepting, lets in-flight
//! requests finish, then exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

fn config(origin_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "20s"

[[upstreams]]
name = "origin"
url = "{origin_url}"

[[routes]]
name = "all"
path = "/**"
upstream = "origin"
action = "allow"
"#
    )
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let origin = Origin::start();
    let mut gw = Gateway::start(&config(&origin.url()));
    let url = gw.url("/slow-headers/1500");

    // A request in flight: the origin holds its answer for 1.5 s.
    let in_flight = tokio::spawn(async move {
        Client::http1()
            .with_timeout(Duration::from_secs(15))
            .try_send("GET", &url, &[], "")
            .await
    });
    origin.wait_for(1, Duration::from_secs(5)).await;

    gw.signal(Sig::Term);
    assert!(
        gw.wait_for_stderr("shutting down", Duration::from_secs(5))
            .await,
        "no shutdown log\n{}",
        gw.stderr_text()
    );

    // No new connections once shutdown began (the listener is closed).
    let refused = tokio::net::TcpStream::connect(gw.data_addr()).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during shutdown"
    );

    // The request that was in flight still gets its answer.
    let resp = in_flight
        .await
        .expect("task")
        .expect("in-flight request failed");
    assert_eq!(resp.status, 200, "{}", resp.text());

    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("gateway did not exit");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        gw.stderr_text()
    );
}
