#![allow(clippy::unwrap_used)]

use super::*;
use ipnet::IpNet;
use jitgate_rules::headers::client_ip;

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
