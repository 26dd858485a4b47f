//! TLS on both sides of the gateway: a TLS data plane offering ALPN h2 and http/1.1, and
//! `https://` upstreams verified against a `ca_file`.

mod common;

use std::time::Duration;

use common::*;
use http::Version;

const WAIT: Duration = Duration::from_secs(5);

const CATCH_ALL: &str =
    "[[routes]]\nname = \"all\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n";

/// A gateway with a TLS data plane (certificate for localhost/127.0.0.1 issued by `pki`).
fn tls_gateway(pki: &TestPki, origin_url: &str, upstream_extra: &str) -> GatewayBuilder {
    let cert = pki.issue_server(&["localhost", "127.0.0.1"]);
    Gateway::builder(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"gw.pem\", key = \"gw.key\" }}\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n{upstream_extra}\n\n{CATCH_ALL}"
    ))
    .file("gw.pem", cert.cert_pem)
    .file("gw.key", cert.key_pem)
}

fn plain_gateway(origin_url: &str, upstream_extra: &str) -> GatewayBuilder {
    Gateway::builder(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin_url}\"\n{upstream_extra}\n\n{CATCH_ALL}"
    ))
}

#[tokio::test]
async fn tls_data_plane_speaks_h2_and_http1_by_alpn() {
    let pki = TestPki::new();
    let origin = Origin::start();
    let gw = tls_gateway(&pki, &origin.url(), "").start();
    assert!(gw.data_url().starts_with("https://"), "{}", gw.data_url());

    let resp = Client::https(&pki.ca_pem())
        .with_timeout(WAIT)
        .send("GET", &gw.url("/over/h2?x=1"), &[], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.version, Version::HTTP_2, "ALPN h2 preferred");

    let port = gw.data_addr().port();
    let resp = Client::https_http1(&pki.ca_pem())
        .with_timeout(WAIT)
        .send("GET", &format!("https://localhost:{port}/over/h1"), &[], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.version, Version::HTTP_11);

    let reqs = origin.wait_for(2, WAIT).await;
    assert_eq!(reqs[0].target, "/over/h2?x=1");
    assert_eq!(
        reqs[0].header_str("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        reqs[0].header_str("host"),
        Some(format!("127.0.0.1:{port}")),
        "h2 :authority becomes Host"
    );
    assert_eq!(reqs[0].header_str("via").as_deref(), Some("2 jitgate"));
    assert_eq!(reqs[1].target, "/over/h1");
    assert_eq!(
        reqs[1].header_str("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        reqs[1].header_str("host"),
        Some(format!("localhost:{port}"))
    );
    assert_eq!(reqs[1].header_str("via").as_deref(), Some("1.1 jitgate"));
}

#[tokio::test]
async fn tls_data_plane_drops_the_default_https_port_from_host() {
    let pki = TestPki::new();
    let origin = RawOrigin::start();
    let gw = tls_gateway(&pki, &origin.url(), "").start();
    // Host names port 443 explicitly; over TLS that is the default port and is removed.
    let resp = Client::https_http1(&pki.ca_pem())
        .with_timeout(WAIT)
        .send("GET", &gw.url("/p"), &[("host", "Secure.Example:443")], "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reqs = origin.wait_for(1, WAIT).await;
    assert_eq!(reqs[0].header_values("host"), vec!["secure.example"]);
}

#[tokio::test]
async fn client_distrusting_the_gateway_certificate_gets_no_answer() {
    let pki = TestPki::new();
    let origin = Origin::start();
    let gw = tls_gateway(&pki, &origin.url(), "").start();
    let other = TestPki::new();
    let err = Client::https(&other.ca_pem())
        .with_timeout(WAIT)
        .try_send("GET", &gw.url("/x"), &[], "")
        .await
        .expect_err("certificate from another CA");
    assert!(err.to_ascii_lowercase().contains("certificate"), "{err}");
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn https_upstream_verified_with_ca_file() {
    let pki = TestPki::new();
    let origin = Origin::start_tls(&pki);
    let gw = plain_gateway(&origin.url(), "ca_file = \"ca.pem\"")
        .file("ca.pem", pki.ca_pem())
        .start();
    let resp = Client::http1()
        .with_timeout(WAIT)
        .send("POST", &gw.url("/secure/./up?q=1"), &[], "body")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let r = &origin.wait_for(1, WAIT).await[0];
    assert!(r.tls);
    assert_eq!(
        r.alpn.as_deref(),
        Some("h2"),
        "protocol auto negotiates by ALPN"
    );
    assert_eq!(r.path_and_query.as_deref(), Some("/secure/up?q=1"));
    assert_eq!(r.body_sha256, sha256_hex(b"body"));
    assert_eq!(r.header_str("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn https_upstream_with_untrusted_certificate_is_502() {
    let pki = TestPki::new();
    let origin = Origin::start_tls(&pki);
    let other = TestPki::new();
    let gw = plain_gateway(&origin.url(), "ca_file = \"ca.pem\"")
        .file("ca.pem", other.ca_pem())
        .start();
    let resp = Client::http1()
        .with_timeout(WAIT)
        .send("GET", &gw.url("/x"), &[], "")
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(resp.json()["upstream"], "origin");
    assert_eq!(
        origin.count(),
        0,
        "no request over an unverified connection"
    );
}

#[tokio::test]
async fn grpc_over_tls_h2_end_to_end() {
    let pki = TestPki::new();
    let origin = Origin::start_tls(&pki);
    let gw = tls_gateway(&pki, &origin.url(), "ca_file = \"ca.pem\"")
        .file("ca.pem", pki.ca_pem())
        .start();
    let mut req_trailers = http::HeaderMap::new();
    req_trailers.insert("x-req-trailer", http::HeaderValue::from_static("t1"));
    let msg = b"\x00\x00\x00\x00\x02hi".to_vec();
    let req = http::Request::post(gw.url("/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body_with_trailers(msg.clone(), req_trailers))
        .expect("request");
    let resp = Client::https(&pki.ca_pem())
        .with_timeout(WAIT)
        .request(req)
        .await
        .expect("grpc over TLS");
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.body.as_ref(), &msg[..]);
    let trailers = resp.trailers.expect("response trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let r = &origin.wait_for(1, WAIT).await[0];
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(
        r.trailers,
        vec![("x-req-trailer".to_string(), b"t1".to_vec())]
    );
}

#[tokio::test]
async fn tls_connections_that_send_no_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new();
    let origin = Origin::start();
    let cert = pki.issue_server(&["localhost", "127.0.0.1"]);
    let gw = Gateway::builder(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         header_read_timeout = \"1s\"\n\
         tls = {{ cert = \"gw.pem\", key = \"gw.key\" }}\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{}\"\n\n{CATCH_ALL}",
        origin.url()
    ))
    .file("gw.pem", cert.cert_pem)
    .file("gw.key", cert.key_pem)
    .start();
    // After a complete handshake: nothing (h2 and http/1.1), or only the h2 preface.
    let cases: [(&[u8], &[u8]); 3] = [
        (b"h2", b""),
        (b"h2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (b"http/1.1", b""),
    ];
    for (alpn, send) in cases {
        let mut config = tls::client_config_from_pem(&pki.ca_pem(), None);
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(gw.data_addr())
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
        stream.write_all(send).await.expect("write");
        stream.flush().await.expect("flush");
        let what = String::from_utf8_lossy(alpn);
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "{what} connection without a request still open"
        );
    }
}
