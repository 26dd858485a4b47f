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

#[test]
fn a_well_formed_request_id_is_kept() {
    for id in [
        "0b5f7c1e-4a8e-4d55-9f0e-8c1d2b3a4f5e",
        "01HZX8N4M8W4C0Y3V5Q6R7S8T9",
        "trace:abc/def+ghi=",
        &"a".repeat(128),
    ] {
        let h = map(&[("x-request-id", id)]);
        assert_eq!(request_id(&h), id);
    }
}

#[test]
fn a_missing_ambiguous_or_unsafe_request_id_is_replaced() {
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("x-request-id", "")],
        &[("x-request-id", "two words")],
        &[("x-request-id", "quote\"d")],
        &[("x-request-id", "semi;colon")],
        &[("x-request-id", &"a".repeat(129))],
        &[("x-request-id", "one"), ("x-request-id", "two")],
    ];
    let mut seen = std::collections::HashSet::new();
    for pairs in cases {
        let id = request_id(&map(pairs));
        let text = id.to_str().unwrap();
        assert_eq!(text.len(), 32, "{pairs:?}");
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
        assert!(seen.insert(text.to_string()), "ids repeat: {text}");
    }
}
