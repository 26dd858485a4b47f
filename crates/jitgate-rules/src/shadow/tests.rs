#![allow(clippy::unwrap_used)]

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::matcher::route_matches;
use crate::RuleTable;

const UP: &str = "[[upstreams]]\nname = \"up\"\nurl = \"http://127.0.0.1:9000\"\n\n";

fn route(name: &str, action: &str, extra: &str) -> String {
    let approval = if action == "approve" {
        "[routes.approval]\napprovers = [\"group:ops\"]\n"
    } else {
        ""
    };
    format!("[[routes]]\nname = \"{name}\"\nupstream = \"up\"\naction = \"{action}\"\n{extra}\n{approval}\n")
}

/// Diagnostics about shadowing, as `severity: message` without locations.
fn shadow(routes: &[String]) -> Vec<String> {
    let src = format!("{UP}{}", routes.concat());
    let diags = match RuleTable::parse(&src, Path::new("proxy.toml")) {
        Ok(t) => t.warnings().to_vec(),
        Err(d) => d,
    };
    diags
        .iter()
        .filter(|d| d.message.contains("can never match"))
        .map(|d| format!("{:?}: {}", d.severity, d.message))
        .collect()
}

fn covered(a: &str, b: &str) -> bool {
    !shadow(&[route("a", "deny", a), route("b", "deny", b)]).is_empty()
}

#[test]
fn approve_or_deny_under_allow_is_an_error() {
    let d = shadow(&[
        route("all", "allow", ""),
        route("admin", "deny", "path = \"/admin/**\""),
    ]);
    assert_eq!(d, vec!["Error: deny route `admin` can never match: allow route `all` (proxy.toml:5:1) matches every request it would, so they pass unchecked".to_string()]);
    let src = format!(
        "{UP}{}{}",
        route("v1", "allow", "path = \"/v1/**\""),
        route("x", "approve", "path = \"/v1/x\"\nmethods = [\"POST\"]")
    );
    let err = RuleTable::parse(&src, Path::new("proxy.toml")).unwrap_err();
    assert_eq!(
        err[0].to_string(),
        "proxy.toml:11:1: error: approve route `x` can never match: allow route `v1` (proxy.toml:5:1) matches every request it would, so they pass unchecked"
    );
}

#[test]
fn other_shadowing_is_a_warning() {
    let d = shadow(&[
        route("a", "deny", "path = \"/a/**\""),
        route("b", "deny", "path = \"/a/b\""),
    ]);
    assert_eq!(d, vec!["Warning: route `b` can never match: deny route `a` (proxy.toml:5:1) comes first and matches every request it would".to_string()]);
    let d = shadow(&[
        route("a", "approve", "path = \"/a/**\""),
        route("b", "allow", "path = \"/a/b\""),
    ]);
    assert!(d[0].starts_with("Warning: route `b`"), "{d:?}");
    let d = shadow(&[
        route("a", "allow", "path = \"/a/**\""),
        route("b", "allow", "path = \"/a/b\""),
    ]);
    assert!(d[0].starts_with("Warning: route `b`"), "{d:?}");
    // A deny first, then an allow that also covers: still a hole for the later approve.
    let d = shadow(&[
        route("d", "deny", "path = \"/a/**\""),
        route("al", "allow", "path = \"/a/**\""),
        route("ap", "approve", "path = \"/a/x\""),
    ]);
    assert!(
        d.iter()
            .any(|m| m.starts_with("Error: approve route `ap`") && m.contains("allow route `al`")),
        "{d:?}"
    );
}

#[test]
fn paths() {
    assert!(covered("path = \"/{id}\"", "path = \"/x\""));
    assert!(covered("path = \"/*/b\"", "path = \"/{y}/b\""));
    assert!(covered("path = \"/a/**\"", "path = \"/a\""));
    assert!(covered("path = \"/a/**\"", "path = \"/a/**\""));
    assert!(covered("path = \"/a/**\"", "path = \"/a/*/c/**\""));
    assert!(covered("path = \"/a\"", "path = \"/a/\""));
    assert!(
        !covered("path = \"/a/*\"", "path = \"/a/**\""),
        "B's ** also matches /a"
    );
    assert!(!covered("path = \"/a/*/**\"", "path = \"/a/**\""));
    assert!(
        !covered("path = \"/a/*/c\"", "path = \"/a/b/*\""),
        "partial overlap"
    );
    assert!(!covered("path = \"/a/b\"", "path = \"/a/*\""));
    assert!(!covered("path = \"/a\"", "path = \"/a/b\""));
    assert!(!covered("path = \"/a/b\"", "path = \"/a\""));
    assert!(!covered(
        "path = \"/admin/**\"",
        "path = \"/administrator\""
    ));
}

#[test]
fn case_rules() {
    assert!(covered(
        "path = \"/ADMIN/**\"\ncase_insensitive = true",
        "path = \"/admin/x\""
    ));
    assert!(covered(
        "path = \"/ADMIN/**\"\ncase_insensitive = true",
        "path = \"/Admin/x\"\ncase_insensitive = true"
    ));
    assert!(!covered(
        "path = \"/admin/**\"",
        "path = \"/admin/x\"\ncase_insensitive = true"
    ));
    assert!(!covered("path = \"/Admin/**\"", "path = \"/admin/x\""));
}

#[test]
fn methods_hosts_headers_sources() {
    assert!(covered("", "methods = [\"POST\"]"));
    assert!(covered(
        "methods = [\"POST\", \"PUT\"]",
        "methods = [\"PUT\"]"
    ));
    assert!(!covered("methods = [\"GET\"]", ""));
    assert!(!covered(
        "methods = [\"GET\"]",
        "methods = [\"GET\", \"POST\"]"
    ));

    assert!(covered("", "host = \"a.com\""));
    assert!(covered(
        "host = \"*.example.com\"",
        "host = \"api.example.com\""
    ));
    assert!(covered(
        "host = \"*.example.com\"",
        "host = \"*.eu.example.com\""
    ));
    assert!(covered("host = \"a.com\"", "host = \"a.com:8443\""));
    assert!(!covered("host = \"a.com:8443\"", "host = \"a.com\""));
    assert!(!covered(
        "host = \"*.example.com\"",
        "host = \"example.com\""
    ));
    assert!(!covered("host = \"a.com\"", ""));
    assert!(!covered(
        "host = \"api.example.com\"",
        "host = \"*.example.com\""
    ));

    assert!(covered("", "headers = { \"x-env\" = \"prod\" }"));
    assert!(covered(
        "headers = { \"x-env\" = \"*\" }",
        "headers = { \"x-env\" = \"prod\" }"
    ));
    assert!(covered(
        "headers = { \"x-env\" = \"prod\" }",
        "headers = { \"x-env\" = \"prod\", \"x-b\" = \"*\" }"
    ));
    assert!(!covered("headers = { \"x-env\" = \"prod\" }", ""));
    assert!(!covered(
        "headers = { \"x-env\" = \"prod\" }",
        "headers = { \"x-env\" = \"*\" }"
    ));
    assert!(!covered(
        "headers = { \"x-env\" = \"prod\" }",
        "headers = { \"x-env\" = \"dev\" }"
    ));

    assert!(covered("", "source = [\"10.0.0.0/8\"]"));
    assert!(covered(
        "source = [\"10.0.0.0/8\", \"::1\"]",
        "source = [\"10.1.0.0/16\"]"
    ));
    assert!(!covered(
        "source = [\"10.1.0.0/16\"]",
        "source = [\"10.0.0.0/8\"]"
    ));
    assert!(!covered("source = [\"10.0.0.0/8\"]", ""));
}

#[test]
fn opt_ins_do_not_prevent_coverage() {
    assert!(covered(
        "path = \"/a/**\"",
        "path = \"/a/**\"\nallow_encoded_slash = true\nallow_path_params = true"
    ));
}

#[test]
fn ten_thousand_routes_are_checked_quickly() {
    let mut src = String::from(UP);
    for i in 0..10_000 {
        src.push_str(&route(&format!("r{i}"), if i % 2 == 0 { "deny" } else { "approve" }, &format!("path = \"/v1/svc{}/items/{{id}}\"\nmethods = [\"GET\"]\nhost = \"h{}.example.com\"", i % 500, i % 7)));
    }
    src.push_str(&route("rest", "allow", ""));
    let start = std::time::Instant::now();
    let t = RuleTable::parse(&src, Path::new("proxy.toml"))
        .map_err(|d| d.len())
        .unwrap();
    eprintln!("parse + check of 10,000 routes: {:?}", start.elapsed());
    // h{i%7} with svc{i%500} repeats every 3,500 routes: the repeats are shadowed.
    assert_eq!(t.warnings().len(), 10_000 - 3_500);
}

// === property: coverage is sound and the indexed analysis equals the pairwise one ===

fn arb_route() -> impl Strategy<Value = Route> {
    crate::matcher::tests::arb_route()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Whenever `covers(a, b)`, every unambiguous request `b` matches, `a` matches too.
    #[test]
    fn coverage_is_sound(a in arb_route(), b in arb_route(), reqs in prop::collection::vec(crate::matcher::tests::arb_simple_req(), 1..32)) {
        if covers(&a, &b) {
            for r in &reqs {
                r.with(|v| {
                    prop_assert!(!route_matches(&b, v) || route_matches(&a, v), "a={:?}\nb={:?}\nreq={:?}", a, b, r);
                    Ok(())
                })?;
            }
        }
    }

    #[test]
    fn indexed_analysis_equals_pairwise(routes in prop::collection::vec(arb_route(), 0..20)) {
        let routes: Vec<Route> = routes.into_iter().enumerate().map(|(i, mut r)| { r.index = i; r.name = format!("r{i}"); r.location.line = i + 1; r }).collect();
        let got: Vec<(usize, Severity)> = analyse(&routes).iter().map(|d| (d.location.line - 1, d.severity)).collect();
        let mut want = Vec::new();
        for (bi, b) in routes.iter().enumerate() {
            let cov: Vec<&Route> = routes[..bi].iter().filter(|a| covers(a, b)).collect();
            if cov.is_empty() {
                continue;
            }
            let err = b.action.is_restricting() && cov.iter().any(|a| a.action == Action::Allow);
            want.push((bi, if err { Severity::Error } else { Severity::Warning }));
        }
        prop_assert_eq!(got, want);
    }
}
