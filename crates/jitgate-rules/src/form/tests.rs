#![allow(clippy::unwrap_used)]

use super::*;
use http::HeaderValue;
use proptest::prelude::*;

fn ct(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
    h
}

fn overrides(content_type: &str, body: &[u8]) -> Result<Vec<Method>, CanonError> {
    let h = ct(content_type);
    let kind = form_kind(&Method::POST, &h).expect("a form kind");
    body_method_overrides(kind, &h, body)
}

#[test]
fn only_post_bodies_of_form_and_json_types_are_read() {
    assert_eq!(
        form_kind(
            &Method::POST,
            &ct("application/x-www-form-urlencoded; charset=utf-8")
        ),
        Some(FormKind::UrlEncoded)
    );
    assert_eq!(
        form_kind(&Method::POST, &ct("Multipart/Form-Data; boundary=x")),
        Some(FormKind::Multipart)
    );
    assert_eq!(
        form_kind(&Method::POST, &ct("application/vnd.api+json")),
        Some(FormKind::Json)
    );
    assert_eq!(form_kind(&Method::POST, &ct("text/plain")), None);
    assert_eq!(
        form_kind(&Method::PUT, &ct("application/x-www-form-urlencoded")),
        None
    );
    assert_eq!(form_kind(&Method::POST, &HeaderMap::new()), None);
}

#[test]
fn urlencoded_method_fields_count_in_every_spelling() {
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        overrides(form, b"_method=DELETE&x=1").unwrap(),
        vec![Method::DELETE]
    );
    assert_eq!(
        overrides(form, b"x=1&_method=delete").unwrap(),
        vec![Method::DELETE]
    );
    assert_eq!(
        overrides(form, b"%5Fmethod=PUT").unwrap(),
        vec![Method::PUT]
    );
    assert_eq!(
        overrides(form, b".method=PATCH").unwrap(),
        vec![Method::PATCH]
    );
    assert_eq!(
        overrides(form, b"_method=DELETE&_METHOD=put").unwrap(),
        vec![Method::DELETE, Method::PUT]
    );
    assert!(overrides(form, b"x=1&y=2").unwrap().is_empty());
    assert!(overrides(form, b"_method=DEL%0AETE").is_err());
}

#[test]
fn json_top_level_method_counts() {
    let json = "application/json";
    assert_eq!(
        overrides(json, br#"{"_method":"DELETE","a":1}"#).unwrap(),
        vec![Method::DELETE]
    );
    assert!(overrides(json, br#"{"a":{"_method":"DELETE"}}"#)
        .unwrap()
        .is_empty());
    assert!(overrides(json, br#"{"_method":7}"#).is_err());
    assert!(overrides(json, b"not json").unwrap().is_empty());
}

#[test]
fn multipart_method_parts_count() {
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n";
    assert_eq!(
        overrides("multipart/form-data; boundary=XyZ", body).unwrap(),
        vec![Method::DELETE]
    );
    assert_eq!(
        overrides("multipart/form-data; boundary=\"XyZ\"", body).unwrap(),
        vec![Method::DELETE]
    );
    let plain = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n";
    assert!(overrides("multipart/form-data; boundary=b", plain)
        .unwrap()
        .is_empty());
    // Unparseable but mentioning the field: ambiguous, refused.
    assert!(overrides("multipart/form-data; boundary=nope", body).is_err());
    assert!(overrides("multipart/form-data", body).is_err());
    assert!(overrides("multipart/form-data; boundary=nope", b"garbage")
        .unwrap()
        .is_empty());
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        for t in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=a", "application/json"] {
            let _ = overrides(t, &body);
        }
    }
}
