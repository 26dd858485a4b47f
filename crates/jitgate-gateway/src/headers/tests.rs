#![allow(clippy::unwrap_used)]

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn strips_hop_by_hop_and_connection_named() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret-hop"),
        ("keep-alive", "timeout=5"),
        ("x-secret-hop", "1"),
        ("proxy-authorization", "Basic x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "trailers"),
        ("x-kept", "yes"),
    ]);
    strip_hop_by_hop(&mut h, false).unwrap();
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["te", "x-kept"]);
}

#[test]
fn te_other_than_trailers_is_dropped() {
    let mut h = map(&[("te", "gzip"), ("te", "trailers")]);
    strip_hop_by_hop(&mut h, false).unwrap();
    assert!(h.get("te").is_none());
}

#[test]
fn upgrade_is_kept_when_upgrading() {
    let mut h = map(&[
        ("connection", "Upgrade, x-hop"),
        ("upgrade", "websocket"),
        ("x-hop", "1"),
    ]);
    assert!(wants_upgrade(Version::HTTP_11, &h));
    strip_hop_by_hop(&mut h, true).unwrap();
    assert_eq!(h.get("connection").unwrap(), "upgrade");
    assert_eq!(h.get("upgrade").unwrap(), "websocket");
    assert!(h.get("x-hop").is_none());
}

#[test]
fn untrusted_peer_cannot_forge_forwarding() {
    let mut h = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil"),
        ("forwarded", "for=1.2.3.4"),
    ]);
    let peer: IpAddr = "10.0.0.9".parse().unwrap();
    assert_eq!(client_ip(&nets(&["127.0.0.1/32"]), peer, &h), peer);
    set_forwarding(
        &mut h,
        &Forwarding {
            peer_value: None,
            peer,
            trusted_peer: false,
            tls: false,
            host: &HeaderValue::from_static("api.example.com"),
            version: Version::HTTP_11,
        },
    );
    assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");
    assert!(h.get("forwarded").is_none());
    assert_eq!(h.get("via").unwrap(), "1.1 jitgate");
}

#[test]
fn trusted_peer_chain_is_walked_from_the_right() {
    let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
    let h = map(&[
        ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
        ("x-forwarded-for", "10.1.1.1"),
    ]);
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        client_ip(&trusted, peer, &h),
        "203.0.113.7".parse::<IpAddr>().unwrap()
    );
    let garbage = map(&[("x-forwarded-for", "6.6.6.6, nonsense, 10.1.1.1")]);
    assert_eq!(
        client_ip(&trusted, peer, &garbage),
        "10.1.1.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn trusted_peer_appends() {
    let mut h = map(&[("x-forwarded-for", "203.0.113.7"), ("via", "1.1 edge")]);
    set_forwarding(
        &mut h,
        &Forwarding {
            peer_value: None,
            peer: "::ffff:127.0.0.1".parse().unwrap(),
            trusted_peer: true,
            tls: true,
            host: &HeaderValue::from_static("h"),
            version: Version::HTTP_2,
        },
    );
    assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.7, 127.0.0.1");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    assert_eq!(h.get("via").unwrap(), "1.1 edge, 2 jitgate");
}

#[test]
fn only_websocket_upgrades_pass() {
    let ws = map(&[("connection", "Upgrade"), ("upgrade", "WebSocket")]);
    assert!(wants_upgrade(Version::HTTP_11, &ws));
    assert!(!wants_upgrade(Version::HTTP_2, &ws));
    let h2c = map(&[
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ]);
    assert!(!wants_upgrade(Version::HTTP_11, &h2c));
    let mut h2c = h2c;
    strip_hop_by_hop(&mut h2c, false).unwrap();
    assert!(h2c.is_empty(), "{h2c:?}");
    let two = map(&[
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("upgrade", "h2c"),
    ]);
    assert!(!wants_upgrade(Version::HTTP_11, &two));
}

#[test]
fn trailer_declaration_is_end_to_end() {
    let mut h = map(&[("trailer", "grpc-status")]);
    strip_hop_by_hop(&mut h, false).unwrap();
    assert_eq!(h.get("trailer").unwrap(), "grpc-status");
}

#[test]
fn connection_token_flood_is_refused() {
    let tokens: Vec<String> = (0..40).map(|i| format!("x-{i}")).collect();
    let mut h = map(&[("connection", &tokens.join(","))]);
    assert_eq!(
        strip_hop_by_hop(&mut h, false),
        Err(HeaderError::TooManyConnectionTokens)
    );
}

#[test]
fn scrub_removes_what_the_upstream_must_not_trust() {
    let mut h = map(&[
        ("x_original_url", "/admin"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("jit-approval", "forged"),
        ("x-real-ip", "1.2.3.4"),
        ("connection", "x-env"),
        ("x-env", "staging"),
        ("x-kept", "1"),
    ]);
    scrub_request(&mut h, false, false).unwrap();
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-kept"]);
    let mut trusted = map(&[("x-real-ip", "1.2.3.4")]);
    scrub_request(&mut trusted, false, true).unwrap();
    assert!(trusted.contains_key("x-real-ip"));
}

/// Every path-override header the public 403-bypass tools send (nomore403 `payloads/headers`,
/// byp4xx `templates/headers.txt`, 4-ZERO-3 `403-bypass.sh`, bypass-url-parser
/// `payloads/header_urls.lst`), spelt as they spell them, is stripped; so is every name in
/// `PATH_OVERRIDE_HEADERS`. What a legitimate client sends (`Referer`, WebDAV's `Destination`)
/// and the host- and address-style names in those lists are left to their own rules.
#[test]
fn scrub_strips_every_path_override_header() {
    let tool_names = [
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-Override-URL",
        "X-Original-URI",
        "X-Original-Path",
        "X-Forwarded-Path",
        "X-Forwarded-URI",
        "X-Forwarded-URL",
        "X-Envoy-Original-Path",
        "X-HTTP-DestinationURL",
        "X-Proxy-Url",
        "X-Rewrite-URI",
        "Base-Url",
        "Http-Url",
        "Proxy-Url",
        "Request-Uri",
        "Uri",
        "Url",
        "Redirect",
        "Original-Path",
        "Original-URL",
        "Path",
        "Proxy-Request-FullURI",
        "X-Accel-Redirect",
        "X-Cf-URL",
        "X-Flx-Redirect-URL",
        "X-HTTP-Path-Override",
        "X-MS-Endpoint-Absolute-Path",
        "X-Ning-Request-URI",
        "X-Path",
        "X-Proxy-Request",
        "X-Route-Request",
        "X-Sendfile",
        "X-URI",
        "X-URL",
        "X-Waws-Unencoded-URL",
    ];
    let mut pairs: Vec<(&str, &str)> = tool_names.iter().map(|n| (*n, "/admin")).collect();
    pairs.extend(PATH_OVERRIDE_HEADERS.iter().map(|n| (*n, "/admin")));
    pairs.extend([
        ("referer", "https://app.example/admin"),
        ("destination", "/public/copy"),
        ("x-kept", "1"),
    ]);
    let mut h = map(&pairs);
    scrub_request(&mut h, false, true).unwrap();
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["destination", "referer", "x-kept"]);
}
