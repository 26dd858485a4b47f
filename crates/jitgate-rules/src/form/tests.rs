#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn overrides(_content_type: &str, body: &[u8]) -> Result<Vec<Method>, CanonError> {
    // The content type changes nothing: bodies are read every way.
    body_method_overrides(body)
}

#[test]
fn only_post_bodies_are_read() {
    assert!(may_carry_override(&Method::POST));
    assert!(!may_carry_override(&Method::PUT));
    assert!(!may_carry_override(&Method::GET));
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
    // PHP cuts names at NUL and reads `_method[...]` as `_method`.
    assert_eq!(
        overrides(form, b"_method%00=DELETE").unwrap(),
        vec![Method::DELETE]
    );
    assert_eq!(
        overrides(form, b"_method%00x=DELETE").unwrap(),
        vec![Method::DELETE]
    );
    assert_eq!(
        overrides(form, b"_method[]=DELETE").unwrap(),
        vec![Method::DELETE]
    );
    assert_eq!(
        overrides(form, b"_method=DELETE&_METHOD=put").unwrap(),
        vec![Method::DELETE, Method::PUT]
    );
    assert!(overrides(form, b"x=1&y=2").unwrap().is_empty());
    assert!(overrides(form, b"_methods=DELETE").unwrap().is_empty());
    // A value that is no method token overrides nothing.
    assert!(overrides(form, b"_method=DEL%0AETE").unwrap().is_empty());
}

#[test]
fn bodies_are_read_as_forms_whatever_their_type_says() {
    // Rack reads a POST without a type as a form; PHP splits types at `,` and spaces.
    for t in [
        "",
        "text/plain",
        "application/x-www-form-urlencoded, text/plain",
        "text/plain,application/x-www-form-urlencoded",
        "application/octet-stream",
    ] {
        assert_eq!(
            overrides(t, b"_method=DELETE").unwrap(),
            vec![Method::DELETE],
            "{t:?}"
        );
    }
    // Laravel reads any `/json` type as JSON.
    for t in [
        "text/json",
        "application/json",
        "application/vnd.api+json",
        "",
    ] {
        assert_eq!(
            overrides(t, br#"{"_method":"DELETE","a":1}"#).unwrap(),
            vec![Method::DELETE],
            "{t:?}"
        );
    }
}

#[test]
fn json_top_level_method_counts_however_deep_the_rest_nests() {
    let json = "application/json";
    assert!(overrides(json, br#"{"a":{"_method":"DELETE"}}"#)
        .unwrap()
        .is_empty());
    assert!(overrides(json, br#"{"_method":7}"#).unwrap().is_empty());
    assert_eq!(
        overrides(json, br#"{"\u005fmethod":"DELETE"}"#).unwrap(),
        vec![Method::DELETE]
    );
    let deep = format!(
        r#"{{"_method":"DELETE","x":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(
        overrides(json, deep.as_bytes()).unwrap(),
        vec![Method::DELETE]
    );
    // Broken JSON that mentions the field: refused, not read as having none.
    assert!(overrides(json, br#"{"_method":"DELETE","#).is_err());
    assert!(overrides(json, b"not json").unwrap().is_empty());
}

#[test]
fn multipart_method_parts_count_under_every_boundary() {
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n";
    for t in [
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data; boundary=\"XyZ\"",
        "multipart/mixed; boundary=XyZ",
        // The body's own first line names its boundary.
        "multipart/form-data",
        "multipart/form-data; boundary=other",
        "text/plain",
    ] {
        assert_eq!(overrides(t, body).unwrap(), vec![Method::DELETE], "{t:?}");
    }
    // PHP takes the first parameter whose name contains "boundary".
    let php =
        b"--php\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--php--\r\n\
--gw\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--gw--\r\n";
    assert_eq!(
        overrides("multipart/form-data; xboundary=php; boundary=gw", php).unwrap(),
        vec![Method::DELETE]
    );
    let plain = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n";
    assert!(overrides("multipart/form-data; boundary=b", plain)
        .unwrap()
        .is_empty());
    assert!(overrides("multipart/form-data; boundary=nope", b"garbage")
        .unwrap()
        .is_empty());
    // Parts after the closing delimiter (PHP and Rack read on), names given twice (they keep
    // the last), folded, escaped or `name*=`, and Rack's Content-ID names all count.
    for body in [
        &b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"[..],
        b"--b\r\nContent-Disposition: form-data; name=\"x\"; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        b"--b\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        b"--b\r\nContent-Disposition: form-data; name=\"\\_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        b"--b\r\nContent-Disposition: form-data; name*=utf-8''%5Fmethod\r\n\r\nDELETE\r\n--b--\r\n",
        b"--b\r\nContent-ID: <_method>\r\n\r\nDELETE\r\n--b--\r\n",
        b"--b\nContent-Disposition: form-data; name=_method\n\nDELETE\n--b--\n",
    ] {
        assert_eq!(
            overrides("multipart/form-data; boundary=b", body).unwrap(),
            vec![Method::DELETE],
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn json_after_a_byte_order_mark_is_read() {
    assert_eq!(
        overrides(
            "application/json",
            "\u{feff}{\"_method\":\"DELETE\"}".as_bytes()
        )
        .unwrap(),
        vec![Method::DELETE]
    );
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        for t in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=a", "application/json", ""] {
            let _ = overrides(t, &body);
        }
    }
}
