//! Criterion benchmarks for the pure rules code (matching, canonicalisation).
//!
//! `cargo bench --bench rules` — reports time per operation; nothing here asserts on times.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use jitgate_rules::{RequestView, RuleTable};

/// A realistic table of `n` routes: per service an approve route for writes, an allow route
/// for reads, every 10th service a deny `**` subtree, some on their own host, and a final
/// catch-all.
fn table_source(n: usize) -> String {
    let mut s = String::from("[[upstreams]]\nname = \"api\"\nurl = \"http://127.0.0.1:9000\"\n\n");
    let mut i = 0;
    while i + 1 < n {
        let svc = i / 3;
        let host = if svc % 4 == 0 {
            format!("host = \"svc{svc}.example.com\"\n")
        } else {
            String::new()
        };
        match i % 3 {
            0 => s.push_str(&format!(
                "[[routes]]\nname = \"w{i}\"\nmethods = [\"POST\", \"PUT\", \"DELETE\"]\n{host}path = \"/v1/svc{svc}/items/{{id}}\"\nupstream = \"api\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\n\n"
            )),
            1 => s.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\nmethods = [\"GET\", \"HEAD\"]\n{host}path = \"/v1/svc{svc}/items/{{id}}\"\nupstream = \"api\"\naction = \"allow\"\n\n"
            )),
            _ => s.push_str(&format!(
                "[[routes]]\nname = \"d{i}\"\n{host}path = \"/v1/svc{svc}/{}/**\"\nupstream = \"api\"\naction = \"{}\"\n\n",
                if svc % 10 == 0 { "admin" } else { "files" },
                if svc % 10 == 0 { "deny" } else { "allow" },
            )),
        }
        i += 1;
    }
    s.push_str("[[routes]]\nname = \"catch-all\"\npath = \"/**\"\nupstream = \"api\"\naction = \"allow\"\n");
    s
}

fn table(n: usize) -> RuleTable {
    match RuleTable::parse(&table_source(n), Path::new("bench.toml")) {
        Ok(t) => t,
        Err(d) => panic!("bench table does not parse: {}", d[0]),
    }
}

fn bench_match(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let source: IpAddr = [10, 0, 0, 1].into();
    let mut g = c.benchmark_group("match");
    for n in [10usize, 1_000, 10_000] {
        let t = table(n);
        let svc = (n / 3) / 2;
        let hit_path = format!("/v1/svc{svc}/items/12345");
        let deep_path = format!("/v1/svc{svc}/files/a/b/c/d/e/f/g/h");
        let host = format!("svc{svc}.example.com");
        let get = [Method::GET];
        let cases: [(&str, &[Method], String); 4] = [
            ("hit", &get, hit_path.clone()),
            ("hit-write", &[Method::POST], hit_path),
            (
                "miss-to-catch-all",
                &get,
                "/nothing/here/at/all".to_string(),
            ),
            ("deep", &get, deep_path),
        ];
        for (name, methods, path) in &cases {
            let paths = [path.as_str()];
            let req = RequestView {
                methods,
                host: &host,
                paths: &paths,
                headers: &headers,
                source,
            };
            // Sanity: every case matches something (at worst the catch-all).
            if t.match_request(&req).is_none() {
                panic!("bench case {name} matched nothing");
            }
            g.bench_with_input(BenchmarkId::new(*name, n), &req, |b, req| {
                b.iter(|| black_box(t.match_request(black_box(req))).map(|r| r.index))
            });
        }
    }
    g.finish();
}

/// Auto-approval (issue 9): resolving a request against a 10,000-route table whose matching
/// route has 100 `auto_approve` policies, then evaluating them. Worst case: every policy
/// checks every condition (path, method, groups, source, header, a window in Europe/Berlin)
/// and only the last holds; and the case where none does.
fn bench_policy(c: &mut Criterion) {
    use jitgate_rules::policy::{first_match, PolicyInput};
    use jitgate_rules::ticket::Timestamp;
    let mut src = table_source(10_000);
    let mut heavy = String::from(
        "[[routes]]\nname = \"heavy\"\nmethods = [\"POST\"]\npath = \"/v1/heavy/**\"\nupstream = \"api\"\naction = \"approve\"\n[routes.approval]\napprovers = [\"group:ops\"]\n",
    );
    for i in 0..100 {
        let window = if i == 99 {
            "Mon-Fri 09:00-18:00"
        } else {
            "Sat 00:00-01:00"
        };
        heavy.push_str(&format!(
            "[[routes.approval.auto_approve]]\nname = \"p{i}\"\npath_prefix = \"/v1/heavy\"\nmethods = [\"POST\"]\ngroups = [\"dev\", \"team{i}\"]\nsource = [\"10.0.0.0/8\"]\nheaders = {{ \"x-env\" = \"staging\" }}\nwindow = \"{window}\"\ntime_zone = \"Europe/Berlin\"\n"
        ));
    }
    heavy.push('\n');
    let at = src
        .find("[[routes]]\nname = \"catch-all\"")
        .unwrap_or(src.len());
    src.insert_str(at, &heavy);
    let t = match RuleTable::parse(&src, Path::new("bench.toml")) {
        Ok(t) => t,
        Err(d) => panic!("bench table does not parse: {}", d[0]),
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-env", http::HeaderValue::from_static("staging"));
    let source: IpAddr = [10, 0, 0, 1].into();
    let post = [Method::POST];
    let paths = ["/v1/heavy/deploy/web"];
    let req = RequestView {
        methods: &post,
        host: "api.example.com",
        paths: &paths,
        headers: &headers,
        source,
    };
    let groups = vec!["dev".to_string()];
    // Friday 2026-11-27 10:30 UTC (11:30 in Berlin): only p99's window holds.
    let friday = Timestamp(1_795_775_400_000);
    let saturday_noon = Timestamp(friday.0 + 25 * 3_600_000);
    let mut g = c.benchmark_group("policy");
    for (name, now) in [
        ("last-of-100-applies", friday),
        ("none-of-100-applies", saturday_noon),
    ] {
        let route = t.match_request(&req).unwrap_or_else(|| panic!("no route"));
        let policies = &route
            .approval
            .as_ref()
            .unwrap_or_else(|| panic!("no policy"))
            .auto_approve;
        let input = PolicyInput {
            methods: &post,
            paths: &paths,
            user: Some("bob"),
            groups: &groups,
            source,
            headers: &headers,
            duration: None,
            risk: None,
            now,
        };
        let expected = (name == "last-of-100-applies").then_some("p99");
        assert_eq!(
            first_match(policies, &input).map(|p| p.name.as_str()),
            expected
        );
        g.bench_function(BenchmarkId::new(name, "10000-routes"), |b| {
            b.iter(|| {
                let route = t.match_request(black_box(&req))?;
                let policies = &route.approval.as_ref()?.auto_approve;
                first_match(policies, black_box(&input)).map(|p| p.name.len())
            })
        });
    }
    g.finish();
}

fn bench_parse_and_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse+check");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let src = table_source(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &src, |b, src| {
            b.iter(|| {
                RuleTable::parse(black_box(src), Path::new("bench.toml")).map(|t| t.routes().len())
            })
        });
    }
    g.finish();
}

/// Canonicalisation: the fast path (already canonical, no allocation — proven by
/// `crates/jitgate-rules/tests/canon_alloc.rs`) against paths that need rewriting.
fn bench_canon(c: &mut Criterion) {
    use jitgate_rules::canon::{canonicalize_path, CanonOptions};
    let mut g = c.benchmark_group("canonicalize_path");
    for (name, path) in [
        ("already-canonical", "/v1/svc42/items/12345"),
        ("dot-segments", "/v1/./svc42//items/../items/12345"),
        ("encoded-unreserved", "/v1/%73vc42/items/%31%32%33%34%35"),
        (
            "encoded-non-ascii",
            "/v1/caf%C3%A9/%E6%97%A5%E6%9C%AC/items",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                canonicalize_path(black_box(path), CanonOptions::default()).map(|p| p.path.len())
            })
        });
    }
    g.finish();
}

/// The edge: the one canonical request built from what hyper parsed (target, host, header
/// scrubbing, method overrides, client address), then resolved against a 10,000-route table.
/// This is everything the gateway's own code does per pass-through request before forwarding.
fn bench_edge(c: &mut Criterion) {
    use criterion::BatchSize;
    use jitgate_rules::{Canonical, Edge};
    let t = table(10_000);
    let trusted = ["127.0.0.1/32".parse().unwrap_or_else(|_| unreachable!())];
    let edge = Edge {
        peer: [10, 0, 0, 1].into(),
        tls: false,
        trusted_proxies: &trusted,
        identity_headers: &[],
        canon: t.canon_options(),
    };
    let svc = (10_000 / 3) / 2;
    let request = |uri: &str| {
        http::Request::builder()
            .method("GET")
            .uri(uri)
            .header("host", "api.example.com")
            .header("user-agent", "curl/8.5.0")
            .header("accept", "*/*")
            .header("authorization", "Bearer abc.def.ghi")
            .header("x-request-id", "7f9c2ba4e88f827d616045507605853e")
            .body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|e| panic!("bench request: {e}"))
    };
    let mut g = c.benchmark_group("edge");
    for (name, uri) in [
        ("canonical", format!("/v1/svc{svc}/items/12345?expand=1")),
        (
            "rewritten",
            format!("/v1/./svc{svc}//items/%31%32%33%34%35"),
        ),
    ] {
        let parts = request(&uri);
        g.bench_function(BenchmarkId::new("build", name), |b| {
            b.iter_batched(
                || parts.clone(),
                |mut p| Canonical::build(&mut p, &edge).map(|c| c.path().len()),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("build+resolve", name), |b| {
            b.iter_batched(
                || parts.clone(),
                |mut p| {
                    let c = Canonical::build(&mut p, &edge).ok()?;
                    t.resolve(&c).ok().map(|r| r.index)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_match,
    bench_canon,
    bench_edge,
    bench_policy,
    bench_parse_and_check
);
criterion_main!(benches);
