#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn message_is_percent_encoded() {
    assert_eq!(percent_encode("a b%c\u{e9}"), "a b%25c%C3%A9");
}

#[test]
fn timeouts_in_every_unit() {
    let t = |v: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static(v));
        timeout(&h)
    };
    assert_eq!(t("2S"), Some(Duration::from_secs(2)));
    assert_eq!(t("1500m"), Some(Duration::from_millis(1500)));
    assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
    assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
    assert_eq!(t("123456789S"), None);
    assert_eq!(t("S"), None);
    assert_eq!(t("5x"), None);
    assert_eq!(timeout(&HeaderMap::new()), None);
}

#[test]
fn grpc_content_types() {
    let mut h = HeaderMap::new();
    for (ct, want) in [
        ("application/grpc", true),
        ("application/grpc+proto", true),
        ("Application/GRPC", true),
        ("application/grpc-web", false),
        ("application/json", false),
    ] {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        assert_eq!(is_call(&h), want, "{ct}");
    }
}
