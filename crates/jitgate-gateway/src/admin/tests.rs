use std::collections::BTreeSet;

use super::{ENDPOINTS, OPENAPI};

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
