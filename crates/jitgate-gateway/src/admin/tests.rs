use std::collections::BTreeSet;

use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::{allowed_methods, if_match_versions, ENDPOINTS, OPENAPI};

/// The OpenAPI document describes exactly the endpoints the admin plane serves.
#[test]
fn openapi_lists_every_endpoint_and_nothing_else() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    // Every operation documents its responses, and every $ref resolves.
    let text = OPENAPI;
    for (i, _) in text.match_indices("\"$ref\"") {
        let rest = &text[i..];
        let start = rest.find("#/").expect("local ref") + 2;
        let end = rest[start..].find('"').expect("ref end") + start;
        let mut node = &doc;
        for part in rest[start..end].split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling $ref {}", &rest[start..end]);
    }
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no responses"
            );
        }
    }
}

/// `Allow` on a 405 lists what the endpoints serve at that path; unknown paths have none.
#[test]
fn allow_lists_the_methods_of_the_path_s_endpoint() {
    let id = "jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B";
    let cases = [
        ("/healthz".to_string(), Some("GET, HEAD")),
        ("/v1/tickets".to_string(), Some("GET, HEAD")),
        (format!("/v1/tickets/{id}"), Some("GET, HEAD")),
        (format!("/v1/tickets/{id}/approve"), Some("POST")),
        (format!("/v1/tickets/{id}/deny"), Some("POST")),
        // The literal batch endpoint, not a ticket called "decide".
        ("/v1/tickets/decide".to_string(), Some("POST")),
        ("/v1/admin/reload".to_string(), Some("POST")),
        ("/v1/admin/rules".to_string(), Some("GET, HEAD")),
        ("/v1/admin/rules/source".to_string(), Some("GET, HEAD, PUT")),
        (format!("/v1/tickets/{id}/other"), None),
        ("/v1/tickets//approve".to_string(), None),
        ("/nowhere".to_string(), None),
    ];
    for (path, want) in cases {
        assert_eq!(allowed_methods(&path).as_deref(), want, "{path}");
    }
}

fn if_match(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(
            header::IF_MATCH,
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    h
}

/// `If-Match` is required and compared strongly: weak tags never match, `*` (a blind
/// overwrite) is refused like a missing header.
#[test]
fn if_match_names_strong_versions_only() {
    let v = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";
    let ok = |values: &[&str]| if_match_versions(&if_match(values)).expect("versions");
    assert_eq!(ok(&[&format!("\"{v}\"")]), [v]);
    assert_eq!(ok(&[v]), [v]);
    assert_eq!(ok(&[&format!("\"a\", \"{v}\"")]), ["a", v]);
    assert_eq!(ok(&["\"a\"", &format!("\"{v}\"")]), ["a", v]);
    assert!(ok(&[&format!("W/\"{v}\"")]).is_empty());
    assert!(ok(&[""]).is_empty());
    for refused in [
        if_match(&[]),
        if_match(&["*"]),
        if_match(&[&format!("\"{v}\", *")]),
    ] {
        let p = if_match_versions(&refused).expect_err("refused");
        assert_eq!(p.status, StatusCode::PRECONDITION_REQUIRED);
        assert_eq!(p.slug, "precondition-required");
    }
}
