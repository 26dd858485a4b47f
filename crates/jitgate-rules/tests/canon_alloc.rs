//! The fast path allocates nothing (SPEC 5: "an already-canonical path is used as it is,
//! without allocating").
//!
//! Counting allocations needs a `#[global_allocator]`, i.e. an `unsafe impl GlobalAlloc`, which
//! this package's `unsafe_code = "forbid"` lint refuses in every target (integration tests
//! included; `forbid` cannot be lowered by an inner `allow`). The `allocation-counter`
//! dev-dependency provides the counting allocator instead; it counts per thread, so tests
//! running in parallel do not disturb each other. It is linked only into this test binary.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, Method, Uri};
use jitgate_rules::canon::{
    canonical_host, canonicalize_path, canonicalize_target, method_overrides, CanonOptions,
};
use std::hint::black_box;

const CANONICAL: &[&str] = &[
    "/",
    "/v1/deployments/prod/web",
    "/v1/deployments/prod/web/",
    "/api/v2/users/42/keys",
    "/a%20b/c%3A",
    "/static/app.min.js",
];

#[test]
fn canonical_paths_do_not_allocate() {
    for opts in [
        CanonOptions::default(),
        CanonOptions {
            allow_encoded_slash: true,
            allow_path_params: true,
        },
    ] {
        for raw in CANONICAL {
            let info = allocation_counter::measure(|| {
                let p = canonicalize_path(black_box(raw), opts).unwrap();
                let mut buf = [""; 3];
                assert_eq!(p.readings(&mut buf).len(), 1);
                assert_eq!(p.forward_path(), *raw);
                black_box(&p);
            });
            assert_eq!(info.count_total, 0, "{raw:?} allocated: {info:?}");
        }
    }
}

#[test]
fn canonical_hosts_do_not_allocate() {
    for (raw, port) in [
        ("api.example.com", 80),
        ("api.example.com.", 80),
        ("api.example.com:80", 80),
        ("api.example.com:443", 443),
        ("api.example.com:8443", 443),
        ("127.0.0.1:9000", 80),
        ("[::1]:8080", 80),
    ] {
        let info = allocation_counter::measure(|| {
            black_box(canonical_host(black_box(raw), port).unwrap());
        });
        assert_eq!(info.count_total, 0, "{raw:?} allocated: {info:?}");
    }
}

#[test]
fn canonical_targets_do_not_allocate() {
    let uris: Vec<Uri> = [
        "/v1/deployments/prod/web?dry_run=1",
        "/",
        "http://api.example.com/x",
    ]
    .iter()
    .map(|u| u.parse().unwrap())
    .collect();
    let host = HeaderValue::from_static("api.example.com");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for uri in &uris {
        let info = allocation_counter::measure(|| {
            let t = canonicalize_target(
                &Method::POST,
                black_box(uri),
                Some(&host),
                false,
                CanonOptions::default(),
            )
            .unwrap();
            let overrides = method_overrides(Some(&headers), t.query).unwrap();
            assert!(overrides.is_empty());
            black_box((&t, overrides));
        });
        assert_eq!(info.count_total, 0, "{uri} allocated: {info:?}");
    }
}

/// The counter is live: the slow path is seen allocating. Without this, a broken counter
/// would make the tests above pass vacuously.
#[test]
fn slow_path_is_seen_allocating() {
    for raw in ["/v1//deployments", "/v1/%64eployments", "/a/./b", "/A%3a"] {
        let info = allocation_counter::measure(|| {
            black_box(canonicalize_path(black_box(raw), CanonOptions::default()).unwrap());
        });
        assert!(info.count_total > 0, "{raw:?}: {info:?}");
    }
    let info = allocation_counter::measure(|| {
        black_box(canonical_host("API.example.com", 80).unwrap());
    });
    assert!(info.count_total > 0, "{info:?}");
}
