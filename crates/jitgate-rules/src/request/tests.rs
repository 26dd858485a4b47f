#![allow(clippy::unwrap_used)]

use super::*;
use std::path::Path;

use crate::RuleTable;

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn edge<'a>(trusted: &'a [IpNet], identity: &'a [HeaderName], canon: CanonOptions) -> Edge<'a> {
    Edge {
        peer: "10.0.0.9".parse().unwrap(),
        tls: false,
        trusted_proxies: trusted,
        identity_headers: identity,
        canon,
    }
}

fn build(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<Canonical, EdgeError> {
    let mut p = parts(method, uri, headers);
    Canonical::build(&mut p, &edge(&[], &[], CanonOptions::default()))
}

#[test]
fn a_canonical_request_is_used_as_sent() {
    let c = build("GET", "/v1/items?x=1", &[("host", "api.example.com")]).unwrap();
    assert_eq!(c.method(), Method::GET);
    assert_eq!(c.methods(), &[Method::GET]);
    assert_eq!(c.host(), "api.example.com");
    assert_eq!(c.path(), "/v1/items");
    assert_eq!(c.query(), Some("x=1"));
    assert_eq!(c.target().as_str(), "/v1/items?x=1");
    assert_eq!(c.headers().get("host").unwrap(), "api.example.com");
    assert_eq!(c.source(), "10.0.0.9".parse::<IpAddr>().unwrap());
}

#[test]
fn the_target_is_rewritten_to_its_canonical_form() {
    let c = build("GET", "/a/./b//%63?q", &[("host", "API.Example.com:80")]).unwrap();
    assert_eq!(c.target().as_str(), "/a/b/c?q");
    assert_eq!(c.host(), "api.example.com");
    assert_eq!(c.host_value(), "api.example.com");
}

#[test]
fn path_parameters_are_matched_without_and_forwarded_with() {
    let opts = CanonOptions {
        allow_encoded_slash: false,
        allow_path_params: true,
    };
    let mut p = parts("POST", "/spring/deploy/web;version=evil", &[("host", "h")]);
    let c = Canonical::build(&mut p, &edge(&[], &[], opts)).unwrap();
    assert_eq!(c.path(), "/spring/deploy/web");
    assert_eq!(c.target().as_str(), "/spring/deploy/web;version=evil");
    assert!(c.has_path_params());
    let mut buf = [""; READINGS];
    assert_eq!(
        c.path_readings(&mut buf),
        &["/spring/deploy/web", "/spring/deploy/web;version=evil"]
    );
}

#[test]
fn edge_refusals() {
    assert_eq!(
        build("delete", "/x", &[("host", "h")]).unwrap_err(),
        EdgeError::LowerCaseMethod
    );
    assert_eq!(
        build("GET", "/x", &[("host", "a"), ("host", "b")]).unwrap_err(),
        EdgeError::DuplicateHost
    );
    assert_eq!(build("GET", "/x", &[]).unwrap_err(), EdgeError::MissingHost);
    assert!(matches!(
        build("GET", "/%2e%2e/x", &[("host", "h")]).unwrap_err(),
        EdgeError::Canon(CanonError::AboveRoot)
    ));
    assert!(matches!(
        build(
            "GET",
            "/x",
            &[("host", "h"), ("jit-ticket", "a"), ("jit-ticket", "b")]
        ),
        Err(EdgeError::GatewayHeader(_))
    ));
}

#[test]
fn gateway_headers_are_taken_not_forwarded() {
    let c = build(
        "POST",
        "/x",
        &[
            ("host", "h"),
            ("jit-ticket", " jit_1 "),
            ("Jit-Reason", "hotfix"),
            ("jit-approval", "tok"),
        ],
    )
    .unwrap();
    assert_eq!(c.gateway_header("jit-ticket"), Some("jit_1"));
    assert_eq!(c.gateway_header("jit-reason"), Some("hotfix"));
    assert_eq!(c.gateway_header("jit-approval"), Some("tok"));
    assert!(c.headers().keys().all(|k| !k.as_str().starts_with("jit-")));
}

#[test]
fn method_readings_and_label() {
    let c = build(
        "POST",
        "/x?_method=delete",
        &[("host", "h"), ("x-http-method-override", "PUT, POST")],
    )
    .unwrap();
    assert_eq!(c.methods(), &[Method::POST, Method::PUT, Method::DELETE]);
    assert_eq!(c.method_label(), "POST+PUT+DELETE");
    assert_eq!(c.method(), Method::POST);
    let mut c = build("POST", "/x", &[("host", "h")]).unwrap();
    assert_eq!(c.method_label(), "POST");
    c.add_method_readings([Method::POST, Method::DELETE, Method::DELETE]);
    assert_eq!(c.methods(), &[Method::POST, Method::DELETE]);
}

#[test]
fn identity_and_address_headers_only_from_trusted_peers() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let identity = [HeaderName::from_static("x-user")];
    let headers = [
        ("host", "h"),
        ("x-user", "alice"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-real-ip", "1.2.3.4"),
    ];
    let mut p = parts("GET", "/x", &headers);
    let c = Canonical::build(&mut p, &edge(&trusted, &identity, CanonOptions::default())).unwrap();
    assert!(c.trusted_peer());
    assert_eq!(c.headers().get("x-user").unwrap(), "alice");
    assert_eq!(c.source(), "203.0.113.7".parse::<IpAddr>().unwrap());
    let mut p = parts("GET", "/x", &headers);
    let c = Canonical::build(&mut p, &edge(&[], &identity, CanonOptions::default())).unwrap();
    assert!(!c.trusted_peer());
    assert!(c.headers().get("x-user").is_none());
    assert!(c.headers().get("x-real-ip").is_none());
    assert_eq!(c.source(), "10.0.0.9".parse::<IpAddr>().unwrap());
}

#[test]
fn padded_values_are_seen_and_forwarded_trimmed() {
    let mut p = parts("GET", "/x", &[("host", "h")]);
    p.headers
        .append("x-env", HeaderValue::from_static(" prod\t"));
    let c = Canonical::build(&mut p, &edge(&[], &[], CanonOptions::default())).unwrap();
    assert_eq!(c.headers().get("x-env").unwrap(), "prod");
}

const TABLE: &str = r#"
[[upstreams]]
name = "u"
url = "http://127.0.0.1:9"

[[routes]]
name = "observe"
path = "/deploy/**"
action = "deny"
enforce = false

[[routes]]
name = "deploy"
methods = ["POST", "DELETE"]
path = "/deploy/**"
upstream = "u"
action = "approve"
allow_path_params = true
[routes.approval]
approvers = ["group:oncall"]

[[routes]]
name = "items-delete"
methods = ["DELETE"]
path = "/items/**"
action = "deny"

[[routes]]
name = "rest"
path = "/**"
upstream = "u"
action = "allow"
"#;

fn table() -> RuleTable {
    RuleTable::parse(TABLE, Path::new("proxy.toml")).unwrap()
}

fn resolve_name(t: &RuleTable, c: &Canonical) -> String {
    match t.resolve(c) {
        Ok(r) => r.name.clone(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shadow_routes_observe_and_matching_goes_on() {
    let t = table();
    let mut p = parts("POST", "/deploy/web", &[("host", "h")]);
    let c = Canonical::build(&mut p, &edge(&[], &[], t.canon_options())).unwrap();
    let r = t.resolve(&c).unwrap();
    assert_eq!(r.name, "deploy");
    assert_eq!(
        r.upstream
            .as_deref()
            .and_then(|u| t.upstream(u))
            .unwrap()
            .name,
        "u"
    );
    let seen: Vec<&str> = t
        .shadows(&c, Some(r.index))
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(seen, vec!["observe"]);
    // The explanation shows the shadow route and still picks the enforcing one.
    let ex = c.with_view(|v| t.explain(v));
    assert_eq!(ex.matched, Some(1));
    assert!(ex.to_string().contains("shadow route"), "{ex}");
}

#[test]
fn resolve_refuses_an_opt_in_the_route_lacks() {
    let t = table();
    let mut p = parts("GET", "/other;x=1", &[("host", "h")]);
    let c = Canonical::build(&mut p, &edge(&[], &[], t.canon_options())).unwrap();
    assert!(matches!(t.resolve(&c), Err(Unresolved::PathParams(r)) if r.name == "rest"));
    let mut p = parts("POST", "/deploy/web;v=1", &[("host", "h")]);
    let c = Canonical::build(&mut p, &edge(&[], &[], t.canon_options())).unwrap();
    assert_eq!(resolve_name(&t, &c), "deploy");
}

#[test]
fn a_body_override_is_worth_reading_only_before_a_method_restricted_route() {
    let t = table();
    let mut c = build("POST", "/items/1", &[("host", "h")]).unwrap();
    let r = t.resolve(&c).unwrap();
    assert_eq!(r.name, "rest");
    assert!(t.may_override_method(&c, Some(r)));
    c.add_method_readings([Method::DELETE]);
    assert_eq!(resolve_name(&t, &c), "items-delete");
    let c = build("POST", "/other", &[("host", "h")]).unwrap();
    let r = t.resolve(&c).unwrap();
    assert!(!t.may_override_method(&c, Some(r)));
}

#[test]
fn a_body_override_is_worth_reading_behind_an_allow_route_with_methods() {
    let t = RuleTable::parse(
        r#"
[[upstreams]]
name = "u"
url = "http://127.0.0.1:9"

[[routes]]
name = "reads-and-posts"
methods = ["GET", "POST"]
path = "/api/**"
upstream = "u"
action = "allow"

[[routes]]
name = "the-rest"
path = "/api/**"
upstream = "u"
action = "approve"
[routes.approval]
approvers = ["group:oncall"]
"#,
        Path::new("proxy.toml"),
    )
    .unwrap();
    let mut c = build("POST", "/api/items/1", &[("host", "h")]).unwrap();
    let r = t.resolve(&c).unwrap();
    assert_eq!(r.name, "reads-and-posts");
    // An override can push the request off the allow route onto the later approve route.
    assert!(t.may_override_method(&c, Some(r)));
    c.add_method_readings([Method::DELETE]);
    assert_eq!(resolve_name(&t, &c), "the-rest");
}

use crate::table::Unresolved;

#[test]
fn binding_covers_every_forwarded_header_but_the_volatile_ones() {
    let c = build(
        "POST",
        "/x",
        &[
            ("host", "h"),
            ("x-tenant", "acct_A"),
            ("content-type", "application/json"),
            ("traceparent", "00-abc-def-01"),
            ("content-length", "2"),
            ("x-custom-trace", "1"),
            ("accept", "a"),
            ("accept", "b"),
        ],
    )
    .unwrap();
    let b = c.bound_headers(|n| n == "x-custom-trace");
    let names: Vec<&str> = b.fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["accept", "accept", "content-type", "x-tenant"]);
    let other = build(
        "POST",
        "/x",
        &[
            ("host", "h"),
            ("x-tenant", "acct_B"),
            ("content-type", "application/json"),
            ("accept", "a"),
            ("accept", "b"),
        ],
    )
    .unwrap();
    assert_ne!(b.digest, other.bound_headers(|_| false).digest);
    let same = build(
        "POST",
        "/x",
        &[
            ("accept", "a"),
            ("x-tenant", "acct_A"),
            ("traceparent", "00-other-01"),
            ("host", "h"),
            ("accept", "b"),
            ("content-type", "application/json"),
        ],
    )
    .unwrap();
    assert_eq!(
        b.digest,
        same.bound_headers(|n| n == "x-custom-trace").digest
    );
}

#[test]
fn a_webdav_destination_is_another_path_the_request_acts_on() {
    let t = RuleTable::parse(
        r#"
[[upstreams]]
name = "u"
url = "http://127.0.0.1:9"

[[routes]]
name = "admin"
path = "/admin/**"
action = "deny"

[[routes]]
name = "public"
path = "/public/**"
upstream = "u"
action = "allow"
"#,
        Path::new("proxy.toml"),
    )
    .unwrap();
    let copy = |dest: &str| {
        let mut p = parts(
            "COPY",
            "/public/a",
            &[("host", "dav.example"), ("destination", dest)],
        );
        Canonical::build(&mut p, &edge(&[], &[], t.canon_options()))
    };
    let inside = copy("/public/b").unwrap();
    assert_eq!(resolve_name(&t, &inside), "public");
    for dest in [
        "/admin/x",
        "http://dav.example/admin/x",
        "http://DAV.example:80/%61dmin/x",
        "/public/../admin/x",
    ] {
        let c = copy(dest).unwrap();
        assert_eq!(resolve_name(&t, &c), "admin", "{dest}");
    }
    for dest in [
        "http://other.example/public/b",
        "/a/%2e%2e/%2e%2e/x",
        "not a uri",
    ] {
        assert!(
            matches!(copy(dest), Err(EdgeError::Destination(_))),
            "{dest}"
        );
    }
}
