use std::collections::BTreeSet;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use jitgate_rules::ticket::{AuditKind, Timestamp};

use super::{
    allowed_methods, audit_filter, cursor_of, if_match_versions, parse_cursor, AUDIT_PARAMS,
    ENDPOINTS, OPENAPI,
};

/// The OpenAPI document describes exactly the endpoints the admin plane serves.
#[test]
fn openapi_lists_every_endpoint_and_nothing_else() {
    let doc: serde_json::Value = serde_json::from_str(&OPENAPI).expect("the document is JSON");
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
    let text = OPENAPI.as_str();
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

/// `GET /v1/audit` documents exactly the query parameters it accepts, and every kind.
#[test]
fn openapi_documents_the_audit_query() {
    let doc: serde_json::Value = serde_json::from_str(&OPENAPI).expect("the document is JSON");
    let op = &doc["paths"]["/v1/audit"]["get"];
    let documented: BTreeSet<&str> = op["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    let accepted: BTreeSet<&str> = AUDIT_PARAMS.split(", ").collect();
    assert_eq!(documented, accepted);
    let kinds: BTreeSet<&str> = doc["components"]["schemas"]["AuditKind"]["enum"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| k.as_str().expect("kind"))
        .collect();
    let known: BTreeSet<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, known);
    let list = &doc["components"]["schemas"]["AuditPage"]["properties"];
    assert_eq!(list["nextCursor"]["type"], "string");
    let event = &doc["components"]["schemas"]["AuditEvent"]["properties"];
    for member in ["route", "storeSeq", "storeHash"] {
        assert!(event[member].is_object(), "AuditEvent documents {member}");
    }
}

#[test]
fn cursors_round_trip_and_garbage_is_refused() {
    for seq in [0, 1, 42, u64::MAX] {
        assert_eq!(parse_cursor(&cursor_of(seq)), Some(seq));
    }
    for bad in [
        "",
        "c1.",
        "c1.-1",
        "c1.+1",
        "c1.007",
        "c1.1a",
        "c2.5",
        "5",
        "c1.18446744073709551616",
        "c1.99999999999999999999999",
        "c1. 5",
        "\u{0}",
        "c1.\u{663}",
    ] {
        assert_eq!(parse_cursor(bad), None, "{bad:?}");
    }
}

#[test]
fn audit_queries_are_validated() {
    let ok = |q: &str| audit_filter(Some(q)).unwrap_or_else(|p| panic!("{q}: {}", p.detail));
    let refused = |q: &str| {
        let p = audit_filter(Some(q)).expect_err(q);
        assert_eq!(p.status, http::StatusCode::BAD_REQUEST, "{q}");
        p.detail
    };
    let f = ok("");
    assert_eq!((f.limit, f.after), (1000, 0));
    let f = ok("ticket=jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B&requester=bob&route=prod-deploy&kind=ticket.approved\
                &since=2026-11-22T10:30:00Z&until=2026-11-22T12:00:00%2B01:00&cursor=c1.17&limit=5");
    assert_eq!(
        f.ticket.map(|t| t.to_string()).as_deref(),
        Some("jit_01JD3ZK8Q6W6M7ZC2Y6F8X4T9B")
    );
    assert_eq!(f.requester.as_deref(), Some("bob"));
    assert_eq!(f.route.as_deref(), Some("prod-deploy"));
    assert_eq!(f.kind, Some(AuditKind::TicketApproved));
    assert_eq!(
        f.since,
        Timestamp::parse_rfc3339("2026-11-22T10:30:00Z").ok()
    );
    assert_eq!(
        f.until,
        Timestamp::parse_rfc3339("2026-11-22T11:00:00Z").ok()
    );
    assert_eq!((f.after, f.limit), (17, 5));
    assert!(refused("cursor=garbage").contains("cursor"));
    assert!(refused("cursor=").contains("cursor"));
    assert!(refused("kind=ticket.exploded").contains("ticket.created"));
    assert!(refused("ticket=../../x").contains("ticket id"));
    assert!(refused("since=yesterday").contains("RFC 3339"));
    assert!(refused("until=2026-13-01T00:00:00Z").contains("RFC 3339"));
    assert!(refused("since=2026-11-22T10:30:00Z&until=2026-11-22T10:30:00Z").contains("before"));
    assert!(refused("limit=0").contains("limit"));
    assert!(refused("limit=10001").contains("limit"));
    assert!(refused("route=").contains("route"));
    assert!(refused("kind=ticket.created&kind=ticket.denied").contains("more than once"));
    assert!(refused("status=PENDING").contains(AUDIT_PARAMS));
    assert!(refused("ticket=%ff").contains("malformed"));
}

/// The generated document is OpenAPI 3.1 JSON: unique operation ids, the bearer scheme (and
/// no credential on the unauthenticated endpoints), and every status and header each
/// operation answers with.
#[test]
fn generated_openapi_is_3_1_with_unique_operation_ids() {
    let doc: serde_json::Value = serde_json::from_str(&OPENAPI).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&"http".into(), &"bearer".into())
    );
    assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));
    let mut ids = BTreeSet::new();
    let open = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/.well-known/jwks.json",
        "/v1/notify/slack/actions",
    ];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is not unique");
            let unauthenticated = op["security"] == serde_json::json!([{}]);
            assert_eq!(
                unauthenticated,
                open.contains(&path.as_str()),
                "{method} {path}"
            );
        }
    }
    let op = |m: &str, p: &str| doc["paths"][p][m].clone();
    let statuses = |m: &str, p: &str| -> Vec<String> {
        let mut s: Vec<String> = op(m, p)["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect();
        s.sort();
        s
    };
    let expected: &[(&str, &str, &str)] = &[
        ("get", "/healthz", "200"),
        ("get", "/readyz", "200"),
        ("get", "/.well-known/jwks.json", "200"),
        ("get", "/v1/openapi.json", "200 401"),
        ("get", "/v1/tickets", "200 400 401 503"),
        ("get", "/v1/tickets/{id}", "200 401 404 503"),
        (
            "post",
            "/v1/tickets/{id}/approve",
            "200 400 401 403 404 409 413 503",
        ),
        (
            "post",
            "/v1/tickets/{id}/deny",
            "200 400 401 403 404 409 413 503",
        ),
        ("post", "/v1/tickets/decide", "200 400 401 413"),
        (
            "post",
            "/v1/tickets/{id}/acknowledge",
            "200 400 401 403 404 409 413 503",
        ),
        (
            "post",
            "/v1/access-requests",
            "200 201 400 401 404 413 429 503",
        ),
        ("get", "/v1/audit", "200 400 401 403 503"),
        ("get", "/v1/admin/rules", "200 401 403"),
        ("get", "/v1/admin/rules/source", "200 304 401 403"),
        (
            "put",
            "/v1/admin/rules/source",
            "200 400 401 403 409 412 413 422 428 500",
        ),
        ("post", "/v1/admin/reload", "200 401 403 422"),
        ("get", "/v1/events", "200 400 401"),
        ("post", "/v1/notify/slack/actions", "200 400 401 403"),
    ];
    for (m, p, want) in expected {
        assert_eq!(statuses(m, p).join(" "), *want, "{m} {p}");
    }
    let params = |m: &str, p: &str| -> Vec<String> {
        op(m, p)["parameters"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(params("put", "/v1/admin/rules/source"), ["If-Match"]);
    assert_eq!(params("get", "/v1/admin/rules/source"), ["If-None-Match"]);
    assert_eq!(params("get", "/v1/events"), ["Last-Event-ID"]);
    assert_eq!(
        params("post", "/v1/notify/slack/actions"),
        ["X-Slack-Request-Timestamp", "X-Slack-Signature"]
    );
    for (m, p, status) in [
        ("get", "/v1/admin/rules/source", "200"),
        ("put", "/v1/admin/rules/source", "200"),
        ("put", "/v1/admin/rules/source", "412"),
    ] {
        assert!(
            op(m, p)["responses"][status]["headers"]["ETag"].is_object(),
            "{m} {p} {status}"
        );
    }
    for schema in [
        "Ticket",
        "TicketList",
        "DecideRequest",
        "DecideResult",
        "AuditPage",
        "Problem",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
