#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::diag::Location;
use crate::route::{Action, Route};
use crate::RuleTable;

/// An owned request, viewed as a [`RequestView`].
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub methods: Vec<Method>,
    pub host: String,
    pub paths: Vec<String>,
    pub headers: HeaderMap,
    pub source: IpAddr,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Req {
        Req {
            methods: vec![Method::from_bytes(method.as_bytes()).unwrap()],
            host: String::new(),
            paths: vec![path.to_string()],
            headers: HeaderMap::new(),
            source: "192.0.2.1".parse().unwrap(),
        }
    }
    pub fn host(mut self, h: &str) -> Req {
        self.host = h.to_string();
        self
    }
    pub fn also_method(mut self, m: &str) -> Req {
        self.methods.push(Method::from_bytes(m.as_bytes()).unwrap());
        self
    }
    pub fn also_path(mut self, p: &str) -> Req {
        self.paths.push(p.to_string());
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
        self
    }
    pub fn source(mut self, ip: &str) -> Req {
        self.source = ip.parse().unwrap();
        self
    }
    pub fn with<T>(&self, f: impl FnOnce(&RequestView<'_>) -> T) -> T {
        let paths: Vec<&str> = self.paths.iter().map(String::as_str).collect();
        let v = RequestView {
            methods: &self.methods,
            host: &self.host,
            paths: &paths,
            headers: &self.headers,
            source: self.source,
        };
        f(&v)
    }
}

pub(crate) fn table(routes: &str) -> RuleTable {
    let src = format!("[[upstreams]]\nname = \"up\"\nurl = \"http://127.0.0.1:9000\"\n\n{routes}");
    match RuleTable::parse(&src, Path::new("proxy.toml")) {
        Ok(t) => t,
        Err(d) => panic!(
            "{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn route(name: &str, action: &str, extra: &str) -> String {
    let approval = if action == "approve" {
        "[routes.approval]\napprovers = [\"group:ops\"]\n"
    } else {
        ""
    };
    format!("[[routes]]\nname = \"{name}\"\nupstream = \"up\"\naction = \"{action}\"\n{extra}\n{approval}\n")
}

/// The name of the route `req` matches, checking the index against a linear scan and explain.
fn hit(t: &RuleTable, req: &Req) -> Option<String> {
    req.with(|v| {
        let got = t.match_request(v).map(|r| r.name.clone());
        let linear = t
            .routes()
            .iter()
            .find(|r| route_matches(r, v))
            .map(|r| r.name.clone());
        assert_eq!(got, linear, "index and linear scan disagree for {req:?}");
        let ex = t.explain(v);
        assert_eq!(ex.matched.map(|i| t.routes()[i].name.clone()), got);
        got
    })
}

fn hits(t: &RuleTable, req: Req) -> String {
    hit(t, &req).unwrap_or_else(|| "404".to_string())
}

#[test]
fn segment_boundaries_and_trailing_slash() {
    let t = table(
        &(route("admin", "deny", "path = \"/admin/**\"")
            + &route("exact", "allow", "path = \"/a/b\"")),
    );
    for p in ["/admin", "/admin/", "/admin/x/y", "/admin/x/"] {
        assert_eq!(hits(&t, Req::new("GET", p)), "admin", "{p}");
    }
    for p in ["/administrator", "/adminx/y", "/", "/x/admin"] {
        assert_eq!(hits(&t, Req::new("GET", p)), "404", "{p}");
    }
    assert_eq!(hits(&t, Req::new("GET", "/a/b/")), "exact");
    assert_eq!(hits(&t, Req::new("GET", "/a/b")), "exact");
    assert_eq!(hits(&t, Req::new("GET", "/a/b/c")), "404");
    assert_eq!(hits(&t, Req::new("GET", "/a")), "404");
}

#[test]
fn wildcards_and_named_segments() {
    let t = table(
        &(route("one", "deny", "path = \"/v1/*/items\"")
            + &route("named", "allow", "path = \"/v1/{svc}/items/{id}\"")
            + &route("root", "allow", "path = \"/\"")),
    );
    assert_eq!(hits(&t, Req::new("GET", "/v1/x/items")), "one");
    assert_eq!(hits(&t, Req::new("GET", "/v1/items")), "404");
    assert_eq!(hits(&t, Req::new("GET", "/v1/x/items/7")), "named");
    assert_eq!(hits(&t, Req::new("GET", "/")), "root");
    assert_eq!(hits(&t, Req::new("GET", "/v1/x/items/7/8")), "404");
    let ex = Req::new("GET", "/v1/svc3/items/42").with(|v| t.explain(v));
    assert_eq!(
        ex.captures,
        vec![
            ("svc".to_string(), "svc3".to_string()),
            ("id".to_string(), "42".to_string())
        ]
    );
}

#[test]
fn case_insensitive_routes() {
    let t = table(
        &(route(
            "ci",
            "deny",
            "path = \"/Admin/**\"\ncase_insensitive = true",
        ) + &route("cs", "allow", "path = \"/Docs/*\"")),
    );
    assert_eq!(hits(&t, Req::new("GET", "/ADMIN/x")), "ci");
    assert_eq!(hits(&t, Req::new("GET", "/admin")), "ci");
    assert_eq!(hits(&t, Req::new("GET", "/Docs/a")), "cs");
    assert_eq!(hits(&t, Req::new("GET", "/docs/a")), "404");
}

#[test]
fn hosts() {
    let t = table(
        &(route("exact", "deny", "host = \"api.example.com\"\npath = \"/x\"")
            + &route(
                "port",
                "deny",
                "host = \"api.example.com:8443\"\npath = \"/p\"",
            )
            + &route("wild", "deny", "host = \"*.example.com\"\npath = \"/x\"")
            + &route("any", "allow", "path = \"/x\"")),
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/x").host("api.example.com")),
        "exact"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/x").host("api.example.com:8443")),
        "exact",
        "a pattern without port matches any port"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/p").host("api.example.com:8443")),
        "port"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/p").host("api.example.com")),
        "404"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/x").host("a.b.example.com")),
        "wild"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/x").host("example.com")),
        "any",
        "wildcards never match the apex"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/x").host("badexample.com")),
        "any"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/x")),
        "any",
        "no host key matches no host"
    );
}

#[test]
fn headers_any_versus_all() {
    let t = table(
        &(route(
            "deny-debug",
            "deny",
            "headers = { \"x-debug\" = \"*\" }\npath = \"/d\"",
        ) + &route(
            "approve-prod",
            "approve",
            "headers = { \"x-env\" = \"prod\" }\npath = \"/e\"",
        ) + &route(
            "allow-dev",
            "allow",
            "headers = { \"x-env\" = \"dev\" }\npath = \"/e\"",
        )),
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/d").header("x-debug", "")),
        "deny-debug"
    );
    assert_eq!(hits(&t, Req::new("GET", "/d")), "404");
    assert_eq!(
        hits(&t, Req::new("GET", "/e").header("x-env", "prod")),
        "approve-prod"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/e").header("x-env", "dev")),
        "allow-dev"
    );
    // Any value suffices for approve; allow needs every value.
    assert_eq!(
        hits(
            &t,
            Req::new("GET", "/e")
                .header("x-env", "dev")
                .header("x-env", "prod")
        ),
        "approve-prod"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/e").header("x-env", "dev, prod")),
        "approve-prod"
    );
    assert_eq!(
        hits(
            &t,
            Req::new("GET", "/e")
                .header("x-env", "dev")
                .header("x-env", "qa")
        ),
        "404"
    );
    assert_eq!(
        hits(
            &t,
            Req::new("GET", "/e")
                .header("x-env", "dev")
                .header("x-env", "dev")
        ),
        "allow-dev"
    );
    assert_eq!(hits(&t, Req::new("GET", "/e")), "404");
}

#[test]
fn sources() {
    let t = table(
        &(route("internal", "deny", "source = [\"10.0.0.0/8\", \"::1\"]")
            + &route("rest", "allow", "")),
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/").source("10.9.8.7")),
        "internal"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/").source("::ffff:10.9.8.7")),
        "internal",
        "IPv4-mapped addresses count as IPv4"
    );
    assert_eq!(hits(&t, Req::new("GET", "/").source("::1")), "internal");
    assert_eq!(hits(&t, Req::new("GET", "/").source("11.0.0.1")), "rest");
}

#[test]
fn method_overrides() {
    let t = table(
        &(route(
            "approve-delete",
            "approve",
            "methods = [\"DELETE\"]\npath = \"/r/**\"",
        ) + &route(
            "allow-read",
            "allow",
            "methods = [\"GET\", \"HEAD\"]\npath = \"/r/**\"",
        )),
    );
    assert_eq!(hits(&t, Req::new("GET", "/r/1")), "allow-read");
    // POST with `X-HTTP-Method-Override: DELETE`: either spelling triggers the approve route.
    assert_eq!(
        hits(&t, Req::new("POST", "/r/1").also_method("DELETE")),
        "approve-delete"
    );
    // GET overridden to PUT: allow needs every spelling in its set.
    assert_eq!(hits(&t, Req::new("GET", "/r/1").also_method("PUT")), "404");
    assert_eq!(
        hits(&t, Req::new("GET", "/r/1").also_method("HEAD")),
        "allow-read"
    );
}

#[test]
fn head_counts_as_get() {
    let t = table(
        &(route(
            "approve-read",
            "approve",
            "methods = [\"GET\"]\npath = \"/secret/**\"",
        ) + &route("allow-get", "allow", "methods = [\"GET\"]\npath = \"/**\"")),
    );
    // A GET handler answers HEAD, so a GET-only restricting route must catch it...
    assert_eq!(hits(&t, Req::new("HEAD", "/secret/x")), "approve-read");
    // ...and a GET-only allow route admits it.
    assert_eq!(hits(&t, Req::new("HEAD", "/public")), "allow-get");
    assert_eq!(hits(&t, Req::new("POST", "/public")), "404");
}

#[test]
fn path_readings() {
    let t = table(
        &(route("deny-admin", "deny", "path = \"/admin/**\"")
            + &route("allow-api", "allow", "path = \"/api/**\"")),
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/api/x").also_path("/admin/x")),
        "deny-admin"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/api/x").also_path("/other")),
        "404"
    );
    assert_eq!(
        hits(&t, Req::new("GET", "/api/x").also_path("/api/y")),
        "allow-api"
    );
}

#[test]
fn options_star() {
    let t = table(
        &(route("api", "allow", "path = \"/api/**\"")
            + &route("star", "deny", "path = \"/*/**\"")
            + &route("all", "allow", "")),
    );
    assert_eq!(hits(&t, Req::new("OPTIONS", "*")), "all");
    let t = table(&route("api", "allow", "path = \"/api/**\""));
    assert_eq!(hits(&t, Req::new("OPTIONS", "*")), "404");
}

#[test]
fn explain_output() {
    let t = table(
        &(route(
            "writes",
            "approve",
            "methods = [\"POST\", \"PUT\"]\npath = \"/v1/**\"",
        ) + &route("hosted", "deny", "host = \"*.internal\"")
            + &route("other", "deny", "path = \"/x/**\"")
            + &route("item", "allow", "path = \"/v1/items/{id}\"")
            + &route("rest", "allow", "")),
    );
    let ex = Req::new("GET", "/v1/items/9")
        .host("api.example.com")
        .with(|v| t.explain(v));
    assert_eq!(
        ex.to_string(),
        "#0 writes: no, method GET not in [POST, PUT]\n\
         #1 hosted: no, host api.example.com does not match *.internal\n\
         #2 other: no, path /v1/items/9 does not match /x/**\n\
         #3 item: MATCH\n\
         => route `item` (allow) with id=9"
    );
    let t = table(&route(
        "h",
        "allow",
        "path = \"/h\"\nheaders = { \"x-env\" = \"prod\" }\nsource = [\"10.0.0.0/8\"]",
    ));
    let ex = Req::new("GET", "/h").with(|v| t.explain(v));
    assert_eq!(
        ex.to_string(),
        "#0 h: no, header x-env is missing\n=> no route matches: 404"
    );
    let ex = Req::new("GET", "/h")
        .header("x-env", "prod")
        .with(|v| t.explain(v));
    assert_eq!(
        ex.steps[0].why_not.as_deref(),
        Some("source 192.0.2.1 not in [10.0.0.0/8]")
    );
    let ex = Req::new("GET", "/h")
        .header("x-env", "dev")
        .with(|v| t.explain(v));
    assert_eq!(
        ex.steps[0].why_not.as_deref(),
        Some("header x-env does not equal \"prod\" (every value must)")
    );
}

// === property test: the index agrees with a naive reference ===

/// A straightforward, independent reading of the matching semantics.
mod reference {
    use super::*;

    fn strip_port(h: &str) -> &str {
        if let Some(end) = h.strip_prefix('[').and_then(|r| r.find(']')) {
            return &h[..end + 2];
        }
        if h.matches(':').count() == 1 {
            h.split(':').next().unwrap_or(h)
        } else {
            h
        }
    }

    fn host_ok(p: &HostPattern, host: &str) -> bool {
        match p {
            HostPattern::Exact(e) if e.contains(':') && !e.ends_with(']') => host == e,
            HostPattern::Exact(e) => strip_port(host) == e,
            HostPattern::Suffix(s) => {
                let h = strip_port(host);
                h.ends_with(s.as_str()) && h != &s[..] && !h.is_empty() && h.len() > s.len()
            }
        }
    }

    fn path_ok(r: &Route, path: &str) -> bool {
        if path == "*" {
            return r.path.source == "/**" || (r.path.segments.is_empty() && r.path.rest);
        }
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let n = r.path.segments.len();
        let len_ok = if r.path.rest {
            segs.len() >= n
        } else {
            segs.len() == n
        };
        len_ok
            && r.path.segments.iter().zip(&segs).all(|(p, s)| match p {
                Segment::Literal(l) if r.case_insensitive => l.to_lowercase() == s.to_lowercase(),
                Segment::Literal(l) => l == s,
                _ => true,
            })
    }

    fn header_values(h: &HeaderMap, name: &HeaderName) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for v in h.get_all(name) {
            out.push(v.as_bytes().to_vec());
            if v.as_bytes().contains(&b',') {
                for part in v.as_bytes().split(|b| *b == b',') {
                    out.push(part.trim_ascii().to_vec());
                }
            }
        }
        out
    }

    pub fn matches(r: &Route, v: &RequestView<'_>) -> bool {
        let restricting = matches!(r.action, Action::Approve | Action::Deny);
        let method_ok = |m: &Method| match &r.methods {
            MethodSet::Any => true,
            // HEAD is answered by GET handlers, so a GET list admits it.
            MethodSet::Only(s) => s.contains(m) || (*m == Method::HEAD && s.contains(&Method::GET)),
        };
        let methods = if restricting {
            v.methods.iter().any(method_ok)
        } else {
            !v.methods.is_empty() && v.methods.iter().all(method_ok)
        } || r.methods == MethodSet::Any;
        let host = r.host.as_ref().is_none_or(|h| host_ok(h, v.host));
        let paths = if restricting {
            v.paths.iter().any(|p| path_ok(r, p))
        } else {
            !v.paths.is_empty() && v.paths.iter().all(|p| path_ok(r, p))
        };
        let headers = r.headers.iter().all(|h| {
            let vals = header_values(v.headers, &h.name);
            if vals.is_empty() {
                return false;
            }
            match &h.value {
                None => true,
                Some(want) if restricting => vals.iter().any(|x| x == want.as_bytes()),
                Some(want) => vals.iter().all(|x| x == want.as_bytes()),
            }
        });
        let ip = match v.source {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(v.source, IpAddr::V4),
            a => a,
        };
        let source = r.source.is_empty() || r.source.iter().any(|n| n.contains(&ip));
        methods && host && paths && headers && source
    }
}

fn arb_segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "A", "c"]).prop_map(|s| Segment::Literal(s.to_string())),
        1 => Just(Segment::Any),
        1 => Just(Segment::Named("x".to_string())),
    ]
}

pub(crate) fn arb_route() -> impl Strategy<Value = Route> {
    let methods = prop_oneof![
        Just(MethodSet::Any),
        prop::sample::subsequence(vec![Method::GET, Method::POST, Method::DELETE], 1..=2)
            .prop_map(MethodSet::Only),
    ];
    let host = prop::sample::select(vec![
        None,
        Some(HostPattern::Exact("a.com".into())),
        Some(HostPattern::Exact("b.com".into())),
        Some(HostPattern::Exact("a.com:8443".into())),
        Some(HostPattern::Suffix(".com".into())),
        Some(HostPattern::Suffix(".a.com".into())),
    ]);
    let headers = prop::sample::select(vec![
        vec![],
        vec![HeaderRule {
            name: HeaderName::from_static("x-env"),
            value: None,
        }],
        vec![HeaderRule {
            name: HeaderName::from_static("x-env"),
            value: Some("prod".into()),
        }],
        vec![HeaderRule {
            name: HeaderName::from_static("x-env"),
            value: Some("dev".into()),
        }],
    ]);
    let source = prop::sample::select(vec![
        vec![],
        vec!["10.0.0.0/8"],
        vec!["10.1.0.0/16", "::1/128"],
    ]);
    let action = prop::sample::select(vec![Action::Allow, Action::Deny, Action::Approve]);
    (
        prop::collection::vec(arb_segment(), 0..4),
        any::<bool>(),
        methods,
        host,
        headers,
        source,
        action,
        any::<bool>(),
    )
        .prop_map(
            |(segments, rest, methods, host, headers, source, action, case_insensitive)| {
                let mut src = String::new();
                for s in &segments {
                    src.push('/');
                    match s {
                        Segment::Literal(l) => src.push_str(l),
                        Segment::Any => src.push('*'),
                        Segment::Named(n) => src.push_str(&format!("{{{n}}}")),
                    }
                }
                if rest {
                    src.push_str("/**");
                }
                if src.is_empty() {
                    src.push('/');
                }
                Route {
                    index: 0,
                    name: String::new(),
                    action,
                    upstream: Some("up".into()),
                    methods,
                    host,
                    path: PathPattern {
                        source: src,
                        segments,
                        rest,
                    },
                    headers,
                    source: source.iter().map(|s| s.parse::<IpNet>().unwrap()).collect(),
                    case_insensitive,
                    allow_encoded_slash: false,
                    allow_path_params: false,
                    enforce: true,
                    error: None,
                    approval: None,
                    definition_hash: [0; 32],
                    location: Location::default(),
                }
            },
        )
}

fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => (prop::collection::vec(prop::sample::select(vec!["a", "b", "A", "c", "d"]), 0..5), any::<bool>()).prop_map(|(segs, slash)| {
            let mut p = format!("/{}", segs.join("/"));
            if slash && !segs.is_empty() {
                p.push('/');
            }
            p
        }),
        1 => Just("*".to_string()),
    ]
}

/// An unambiguous request: one method, one path reading, at most one header value.
pub(crate) fn arb_simple_req() -> impl Strategy<Value = Req> {
    arb_req().prop_map(|mut r| {
        r.methods.truncate(1);
        r.paths.truncate(1);
        let env = r
            .headers
            .get("x-env")
            .filter(|v| !v.as_bytes().contains(&b','))
            .cloned();
        r.headers.clear();
        if let Some(v) = env {
            r.headers.insert("x-env", v);
        }
        r
    })
}

fn arb_req() -> impl Strategy<Value = Req> {
    let method =
        || prop::sample::select(vec![Method::GET, Method::POST, Method::DELETE, Method::PUT]);
    (
        prop::collection::vec(method(), 1..3),
        prop::sample::select(vec![
            "",
            "a.com",
            "x.a.com",
            "a.com:8443",
            "b.com:8443",
            "b.com",
            "com",
            "[::1]:8443",
        ]),
        prop::collection::vec(arb_path(), 1..3),
        prop::collection::vec(
            prop::sample::select(vec!["prod", "dev", "prod, dev", ""]),
            0..3,
        ),
        prop::sample::select(vec![
            "10.1.2.3",
            "10.2.0.1",
            "192.168.0.1",
            "::ffff:10.1.2.3",
            "::1",
        ]),
    )
        .prop_map(|(methods, host, paths, envs, source)| {
            let mut headers = HeaderMap::new();
            for e in envs {
                headers.append("x-env", HeaderValue::from_str(e).unwrap());
            }
            Req {
                methods,
                host: host.to_string(),
                paths,
                headers,
                source: source.parse().unwrap(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn index_matches_naive_scan(routes in prop::collection::vec(arb_route(), 0..24), reqs in prop::collection::vec(arb_req(), 1..8)) {
        let routes: Vec<Route> = routes.into_iter().enumerate().map(|(i, mut r)| { r.index = i; r.name = format!("r{i}"); r }).collect();
        let m = Matcher::new(&routes);
        for req in &reqs {
            req.with(|v| {
                let want = routes.iter().position(|r| reference::matches(r, v));
                let got = m.find(&routes, v);
                prop_assert_eq!(got, want, "request {:?}", req);
                let explained = routes.iter().position(|r| why_not(r, v).is_none());
                prop_assert_eq!(explained, want);
                Ok(())
            })?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `/a/b/**` covers `/a/b` and everything below it, and never a path that merely
    /// starts with the same characters (`/a/bc`, `/a/b.json`, `/a/b-x`).
    #[test]
    fn prefix_matches_only_on_segment_boundaries(
        segs in prop::collection::vec("[a-z]{1,6}", 1..4),
        glued in "[a-zA-Z0-9._~-]{1,6}",
        below in "[a-z0-9]{1,6}",
        ci in any::<bool>(),
    ) {
        let prefix = format!("/{}", segs.join("/"));
        let ci_line = if ci { "case_insensitive = true\n" } else { "" };
        let t = table(
            &(route("guard", "deny", &format!("path = \"{prefix}/**\"\n{ci_line}"))
                + &route("rest", "allow", "path = \"/**\"")),
        );
        prop_assert_eq!(hits(&t, Req::new("GET", &prefix)), "guard");
        prop_assert_eq!(hits(&t, Req::new("GET", &format!("{prefix}/"))), "guard");
        prop_assert_eq!(hits(&t, Req::new("GET", &format!("{prefix}/{below}"))), "guard");
        prop_assert_eq!(hits(&t, Req::new("GET", &format!("{prefix}{glued}"))), "rest");
        prop_assert_eq!(hits(&t, Req::new("GET", &format!("{prefix}{glued}/{below}"))), "rest");
    }
}
