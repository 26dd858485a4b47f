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
    scrub_request(&mut h, false, false, &[]).unwrap();
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-kept"]);
    let mut trusted = map(&[("x-real-ip", "1.2.3.4")]);
    scrub_request(&mut trusted, false, true, &[]).unwrap();
    assert!(trusted.contains_key("x-real-ip"));
}

#[test]
fn scrub_takes_gateway_headers_and_untrusted_identity() {
    let user = HeaderName::from_static("x-user");
    let mut h = map(&[
        ("jit-ticket", "jit_x"),
        ("Jit-Reason", "hotfix"),
        ("x-user", "alice"),
        ("proxy-authorization", "Basic eDp5"),
        ("x-kept", "1"),
    ]);
    let s = scrub_request(&mut h, false, false, std::slice::from_ref(&user)).unwrap();
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-kept"]);
    let taken: Vec<&str> = s.gateway.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(taken, vec!["jit-ticket", "jit-reason"]);
    assert_eq!(s.proxy_authorization.unwrap(), "Basic eDp5");
    // A trusted proxy may state the identity.
    let mut t = map(&[("x-user", "alice")]);
    scrub_request(&mut t, false, true, std::slice::from_ref(&user)).unwrap();
    assert_eq!(t.get("x-user").unwrap(), "alice");
}

#[test]
fn scrub_trims_optional_whitespace_from_values() {
    let mut h = HeaderMap::new();
    h.append("x-env", HeaderValue::from_static(" prod"));
    h.append("x-env", HeaderValue::from_static("prod\t"));
    h.append("x-other", HeaderValue::from_static("a b"));
    scrub_request(&mut h, false, false, &[]).unwrap();
    let env: Vec<&[u8]> = h
        .get_all("x-env")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    assert_eq!(env, vec![&b"prod"[..], &b"prod"[..]]);
    assert_eq!(h.get("x-other").unwrap(), "a b");
}

#[test]
fn cookie_crumbs_are_joined() {
    let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
    join_cookie_crumbs(&mut h);
    let all: Vec<&HeaderValue> = h.get_all("cookie").iter().collect();
    assert_eq!(all, vec![&HeaderValue::from_static("a=1; b=2")]);
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
    scrub_request(&mut h, false, true, &[]).unwrap();
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["destination", "referer", "x-kept"]);
}

#[test]
fn host_overrides_and_httpoxy_never_pass() {
    let mut h = map(&[
        ("x-host", "admin.internal"),
        ("X-HTTP-Host-Override", "admin.internal"),
        ("x-original-host", "admin.internal"),
        ("proxy-host", "admin.internal"),
        ("proxy", "http://evil.example:3128"),
        ("x-forwarded-server", "evil"),
        ("x-kept", "1"),
    ]);
    scrub_request(&mut h, false, false, &[]).unwrap();
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-kept"]);
    let mut trusted = map(&[("x-forwarded-server", "edge-1"), ("proxy", "x")]);
    scrub_request(&mut trusted, false, true, &[]).unwrap();
    let names: Vec<&str> = trusted.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["x-forwarded-server"]);
}
