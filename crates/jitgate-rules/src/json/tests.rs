#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn all(text: &str) -> Result<Vec<(usize, String, String)>, ()> {
    let mut out = Vec::new();
    members(text, |m| {
        out.push((
            m.depth,
            decode_string(m.raw_key).unwrap(),
            text[m.value.clone()].to_string(),
        ))
    })?;
    Ok(out)
}

#[test]
fn members_at_every_depth_with_their_spans() {
    let got = all(r#" {"a": 1, "b": {"c": [true, {"d": "x"}]}, "e": null} "#).unwrap();
    assert_eq!(
        got,
        vec![
            (1, "a".into(), "1".into()),
            (4, "d".into(), r#""x""#.into()),
            (2, "c".into(), r#"[true, {"d": "x"}]"#.into()),
            (1, "b".into(), r#"{"c": [true, {"d": "x"}]}"#.into()),
            (1, "e".into(), "null".into()),
        ]
    );
}

#[test]
fn duplicates_escapes_and_large_numbers_are_kept_as_written() {
    let got =
        all(r#"{"replicas":1000,"replicas":1,"\u005fmethod":"DELETE","n":100000000000000000001}"#)
            .unwrap();
    let keys: Vec<&str> = got.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["replicas", "replicas", "_method", "n"]);
    assert_eq!(got[3].2, "100000000000000000001");
}

#[test]
fn deep_nesting_is_no_limit() {
    let deep = format!(
        r#"{{"_method":"DELETE","x":{}1{}}}"#,
        "[".repeat(600),
        "]".repeat(600)
    );
    assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
    let got = all(&deep).unwrap();
    assert_eq!(got[0].1, "_method");
}

#[test]
fn invalid_json_is_refused() {
    for bad in [
        "",
        "{",
        "}",
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        "[1,]",
        r#"{"a" 1}"#,
        "[1 2]",
        r#"{"a":1}{"#,
        "tru",
        r#"{1:2}"#,
        r#""unterminated"#,
        "{,}",
    ] {
        assert!(all(bad).is_err(), "{bad:?}");
    }
    for good in [
        "{}",
        "[]",
        "1",
        r#""s""#,
        r#"[{}, [], "a", -1.5e3]"#,
        r#"{"a":[]}"#,
    ] {
        assert!(all(good).is_ok(), "{good:?}");
    }
}

proptest! {
    /// Whatever serde_json accepts, the scanner accepts with the same top-level keys.
    #[test]
    fn agrees_with_serde_json(v in json_value(4)) {
        let text = v.to_string();
        let mut top = Vec::new();
        members(&text, |m| if m.depth == 1 { top.push(decode_string(m.raw_key).unwrap()) })
            .map_err(|()| TestCaseError::fail(format!("refused {text}")))?;
        let want: Vec<String> = match &v {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut top_sorted = top.clone();
        top_sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        prop_assert_eq!(top_sorted, want_sorted);
    }

    #[test]
    fn never_panics(s in "\\PC{0,64}") {
        let _ = members(&s, |_| {});
    }
}

fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        "[a-z_\"\\\\]{0,6}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,5}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
