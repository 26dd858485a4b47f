//! Canonicalisation end to end (SPEC 5, invariant 11.1): the published-bypass corpus and
//! generated spellings are sent byte for byte to the real gateway; what the origin receives is
//! exactly the canonical target, and nothing under a denied prefix ever reaches it, however
//! leniently the origin reads its path. Path-override headers never reach the origin.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::RawResponse;
use common::*;
use jitgate_rules::canon::PATH_OVERRIDE_HEADERS;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use unicode_normalization::UnicodeNormalization;

const CORPUS: &str = include_str!("../crates/jitgate-rules/tests/data/bypass_corpus.txt");

/// Prefixes the corpus attacks; denied case-insensitively in the corpus gateway.
const DENIED: &[&str] = &["/admin", "/api", "/secret", "/etc", "/winnt"];

// === helpers ===

/// A deny route per prefix (case-insensitive), then an allow catch-all to `origin`.
fn deny_table(origin: &str, denied: &[&str]) -> String {
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"origin\"\nurl = \"{origin}\"\n"
    );
    for p in denied {
        t.push_str(&format!(
            "\n[[routes]]\nname = \"deny{}\"\npath = \"{p}/**\"\ncase_insensitive = true\n\
             action = \"deny\"\n",
            p.replace('/', "-")
        ));
    }
    t.push_str(
        "\n[[routes]]\nname = \"rest\"\npath = \"/**\"\nupstream = \"origin\"\naction = \"allow\"\n",
    );
    t
}

/// The corpus raw-target notation: `\xHH` is the byte 0xHH, everything else literal.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && b.len() >= i + 4 {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

struct Entry {
    line: usize,
    raw: Vec<u8>,
    /// `None` for `reject`.
    expected: Option<String>,
}

fn corpus() -> Vec<Entry> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let (raw, expected) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("corpus line {}: no TAB: {l:?}", i + 1));
            Entry {
                line: i + 1,
                raw: unescape(raw),
                expected: (expected != "reject").then(|| expected.to_string()),
            }
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The path as the most lenient server could read it: percent-decoded, then folded the way
/// NFKC_Casefold folds (NFKC, case folded through upper then lower case so `ſ` reads as `s` and
/// `ß` as `ss`, invisible characters deleted), again until stable; `\` as `/`; `;` parameters
/// stripped; every segment trimmed of whitespace (Java `trim` drops every char up to U+0020,
/// `strip` and other languages Unicode whitespace; Spring's `trimTokens`); dot segments
/// resolved (clamped at the root); empty segments merged. The query (from the first `?`) is
/// split off first.
fn lenient_path(target: &str) -> String {
    let path = target.split('?').next().unwrap_or("");
    let mut text = path.to_string();
    for _ in 0..8 {
        let decoded = String::from_utf8_lossy(&percent_decode(text.as_bytes())).into_owned();
        let folded = fold(&decoded);
        if folded == text {
            break;
        }
        text = folded;
    }
    let text = text.replace('\\', "/").replace('\0', "");
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg.trim_matches(|c: char| c <= ' ' || c.is_whitespace()) {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/")).to_ascii_lowercase()
}

/// NFKC, full case folding (upper then lower case), NFKC again, and the invisible characters
/// NFKC_Casefold deletes (an independent short list of the default-ignorable ones attackers
/// use, not the canonicaliser's table).
fn fold(s: &str) -> String {
    let nfkc: String = s.nfkc().collect();
    let cased = nfkc.to_uppercase().to_lowercase();
    cased.nfkc().filter(|c| !invisible(*c)).collect()
}

fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether a (lowercase) path is `prefix` or below it, on segment boundaries.
fn under(path: &str, prefix: &str) -> bool {
    let path = path.to_ascii_lowercase();
    let prefix = prefix.to_ascii_lowercase();
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

fn under_any(path: &str, prefixes: &[&str]) -> Option<String> {
    prefixes
        .iter()
        .find(|p| under(path, p))
        .map(|p| p.to_string())
}

fn request_bytes(raw: &[u8]) -> Vec<u8> {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(raw);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\n\r\n");
    req
}

fn show(raw: &[u8]) -> String {
    raw.escape_ascii().to_string()
}

async fn send_raw(addr: SocketAddr, raw: &[u8]) -> RawResponse {
    let bytes = raw_request_timeout_short(addr, &request_bytes(raw)).await;
    RawResponse::parse(&bytes)
}

async fn raw_request_timeout_short(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    common::client::raw_request_timeout(addr, bytes, Duration::from_secs(5)).await
}

#[test]
fn lenient_reading_is_lenient() {
    assert_eq!(lenient_path("/public/%252e%252e/ADMIN;x/y?q"), "/admin/y");
    assert_eq!(lenient_path("/a\\..\\%61dmin"), "/admin");
    assert_eq!(lenient_path("//x/../../admin/."), "/admin");
    assert!(under(&lenient_path("/%41DMIN"), "/admin"));
    assert!(!under(&lenient_path("/administrator"), "/admin"));
    // Trimming matchers (Spring `trimTokens`, Java `trim`/`strip`).
    assert_eq!(lenient_path("/admin%20/x"), "/admin/x");
    assert_eq!(lenient_path("/%09admin"), "/admin");
    assert_eq!(lenient_path("/public/..%20/admin"), "/admin");
    assert_eq!(lenient_path("/%E3%80%80admin%E2%80%A8/x"), "/admin/x");
    // NFKC and case folding.
    assert_eq!(lenient_path("/%EF%BD%81dmin"), "/admin");
    assert_eq!(lenient_path("/public/%EF%BC%8E%EF%BC%8E/admin"), "/admin");
    assert_eq!(lenient_path("/public%EF%BC%8F..%EF%BC%8Fadmin"), "/admin");
    assert_eq!(lenient_path("/public/%E2%80%A5/admin"), "/admin");
    assert_eq!(lenient_path("/%C5%BFecret"), "/secret");
    assert_eq!(lenient_path("/adm%C4%B1n"), "/admin");
    assert_eq!(lenient_path("/pa%C3%9Fword"), "/password");
    assert_eq!(lenient_path("/ad%C2%ADmin"), "/admin");
    // NFKC output decoded again: a fullwidth percent sign starts an escape.
    assert_eq!(
        lenient_path("/public/%EF%BC%85%32%65%EF%BC%85%32%65/admin"),
        "/admin"
    );
    // Ordinary non-ASCII stays what it is.
    assert_eq!(lenient_path("/caf%C3%A9"), "/caf\u{e9}");
    assert!(!under(&lenient_path("/%D0%B0dmin"), "/admin"));
}

// === tests ===

/// Every corpus entry, byte for byte, through the real gateway to a byte-recording origin.
#[tokio::test]
async fn bypass_corpus_end_to_end() {
    let origin = RawOrigin::start();
    let gw = Gateway::start(&deny_table(&origin.url(), DENIED));
    let entries = corpus();
    assert!(entries.len() >= 100, "corpus shrank: {}", entries.len());

    let mut failures = Vec::new();
    let (mut forwarded, mut denied, mut rejected) = (0, 0, 0);
    for e in &entries {
        let before = origin.count();
        let resp = send_raw(gw.data_addr(), &e.raw).await;
        let new: Vec<String> = origin.requests()[before..]
            .iter()
            .map(|r| r.target())
            .collect();
        let what = format!("line {} `{}`", e.line, show(&e.raw));
        let answer = format!("{} ({})", resp.status_line, resp.text().trim());
        match &e.expected {
            None => {
                rejected += 1;
                // 400 from canonicalisation; another 4xx from hyper's own parser is as good,
                // but not 403/404, which would mean the target was accepted and matched.
                if !(400..500).contains(&resp.status) || matches!(resp.status, 403 | 404) {
                    failures.push(format!("{what}: expected 400, got {answer}"));
                }
                if !new.is_empty() {
                    failures.push(format!("{what}: expected reject, but forwarded {new:?}"));
                }
            }
            Some(exp) => {
                let path = exp.split('?').next().unwrap_or("");
                if let Some(prefix) = under_any(path, DENIED) {
                    denied += 1;
                    if resp.status != 403 {
                        failures.push(format!(
                            "{what}: canonical {exp} is under denied {prefix}: expected 403, got {answer}"
                        ));
                    }
                    if !new.is_empty() {
                        failures.push(format!("{what}: denied, but forwarded {new:?}"));
                    }
                } else {
                    forwarded += 1;
                    if resp.status != 200 {
                        failures.push(format!("{what}: expected 200 via {exp}, got {answer}"));
                    }
                    if new != [exp.clone()] {
                        failures.push(format!(
                            "{what}: expected the origin to receive exactly [{exp}], got {new:?}"
                        ));
                    }
                }
            }
        }
    }

    // Invariant 1, globally: nothing the origin ever saw reads as a denied path.
    for r in origin.requests() {
        let target = r.target();
        let lenient = lenient_path(&target);
        if let Some(prefix) = under_any(&lenient, DENIED) {
            failures.push(format!(
                "origin received {target} (reads as {lenient}, under denied {prefix})"
            ));
        }
    }
    println!(
        "bypass corpus: {} entries: {forwarded} forwarded, {denied} denied (403), {rejected} rejected; \
         origin saw {} request(s)",
        entries.len(),
        origin.count()
    );
    assert!(
        failures.is_empty(),
        "{} corpus failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Tokens weighted towards the pieces of published bypasses.
const TOKENS: &[&str] = &[
    "/",
    "/",
    "/",
    "/",
    ".",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    ";",
    "..;",
    "//",
    "admin",
    "admin",
    "ADMIN",
    "Admin",
    "%61dmin",
    "%41DMIN",
    "%61",
    "%252e",
    "%252f",
    "%25",
    "\\",
    "%00",
    "%3b",
    "%3f",
    "?",
    "#",
    "x",
    "public",
    "%7e",
    "%c0%ae",
    "%ef%bc%8f",
    "%20",
    "~",
    // Whitespace a trimming matcher drops at a segment's edge (ASCII and Unicode).
    "%20",
    "%09",
    "%c2%a0",
    "%c2%85",
    "%e2%80%83",
    "%e2%80%a8",
    "%e3%80%80",
    "%ef%bb%bf",
    // Compatibility forms NFKC or case folding turn into ASCII, and invisible characters.
    "%ef%bd%81dmin",
    "%ef%bc%a1DMIN",
    "%e2%93%90dmin",
    "%f0%9d%90%9admin",
    "adm%c4%b1n",
    "ad%c2%admin",
    "ad%e2%80%8bmin",
    "%ef%bc%8f",
    "%ef%bc%8e",
    "%ef%bc%bc",
    "%e2%80%a5",
    "%ef%b9%92",
    "%c5%bf",
    "%e2%84%aa",
    // Ordinary non-ASCII, accepted and opaque.
    "%c3%a9",
    "%d0%b0dmin",
];

/// Invariant 1 as a property: whatever is generated from bypass pieces, the origin never
/// receives a path that a lenient server would read as being under the denied `/admin`.
#[test]
fn generated_spellings_never_reach_a_denied_path() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = Origin::start();
    let gw = Gateway::start(&deny_table(&origin.url(), &["/admin"]));
    let addr = gw.data_addr();

    let strategy = proptest::collection::vec(proptest::sample::select(TOKENS), 1..12)
        .prop_map(|parts| format!("/{}", parts.concat()));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // `run` takes a `Fn`; tallies go through cells.
    let sent = std::cell::Cell::new(0usize);
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&strategy, |target| {
        sent.set(sent.get() + 1);
        let before = origin.count();
        let resp = rt.block_on(send_raw(addr, target.as_bytes()));
        *statuses.borrow_mut().entry(resp.status).or_default() += 1;
        let new = &origin.requests()[before..];
        for r in new {
            let got = r.path_and_query.clone().unwrap_or_else(|| r.target.clone());
            let lenient = lenient_path(&got);
            prop_assert!(
                !under(&lenient, "/admin"),
                "{target:?} reached the origin as {got:?}, which reads as {lenient:?}"
            );
        }
        prop_assert!(
            matches!(resp.status, 200 | 400 | 403),
            "{target:?}: unexpected answer {} ({})",
            resp.status_line,
            resp.text()
        );
        prop_assert_eq!(
            new.len(),
            usize::from(resp.status == 200),
            "{:?}: answered {} but the origin saw {:?}",
            target,
            resp.status,
            new.iter().map(|r| &r.target).collect::<Vec<_>>()
        );
        Ok::<(), TestCaseError>(())
    });
    println!(
        "property: {} targets sent; answers {:?}",
        sent.get(),
        statuses.borrow()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Path-override header names in the public 403-bypass tools (as they spell them): nomore403
/// `payloads/headers` and `simpleheaders`, byp4xx `templates/headers.txt`, 4-ZERO-3
/// `403-bypass.sh` and bypass-url-parser `payloads/header_urls.lst`. Every one of them must be
/// stripped; `PATH_OVERRIDE_HEADERS` holds them and more.
const TOOL_PATH_OVERRIDES: &[&str] = &[
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Override-URL",
    "X-Original-URI",
    "X-Original-Path",
    "X-Forwarded-Path",
    "X-Forwarded-URI",
    "X-Forwarded-URL",
    "X-Envoy-Original-Path",
    "X-HTTP-DestinationURL",
    "X-Http-Destinationurl",
    "X-Proxy-Url",
    "X-Rewrite-URI",
    "Base-Url",
    "Http-Url",
    "Proxy-Url",
    "Request-Uri",
    "Uri",
    "Url",
    "Redirect",
    "Original-Path",
    "Original-URL",
    "Path",
    "Proxy-Request-FullURI",
    "X-Accel-Redirect",
    "X-Cf-URL",
    "X-Flx-Redirect-URL",
    "X-HTTP-Path-Override",
    "X-MS-Endpoint-Absolute-Path",
    "X-Ning-Request-URI",
    "X-Path",
    "X-Proxy-Request",
    "X-Route-Request",
    "X-Sendfile",
    "X-URI",
    "X-URL",
    "X-Waws-Unencoded-URL",
];

/// No path-override header reaches the origin, whichever list names it and however it is
/// spelt (case, `_` for `-`); headers clients legitimately send (`Referer`, WebDAV's
/// `Destination`) are forwarded.
#[tokio::test]
async fn path_override_headers_never_reach_the_origin() {
    let origin = RawOrigin::start();
    let gw = Gateway::start(&deny_table(&origin.url(), DENIED));
    let mut names: Vec<String> = TOOL_PATH_OVERRIDES.iter().map(|n| n.to_string()).collect();
    names.extend(PATH_OVERRIDE_HEADERS.iter().map(|n| n.to_string()));
    names.extend(TOOL_PATH_OVERRIDES.iter().map(|n| n.to_ascii_uppercase()));
    names.extend(TOOL_PATH_OVERRIDES.iter().map(|n| n.replace('-', "_")));
    // hyper refuses more than 100 headers: send them in batches.
    for batch in names.chunks(40) {
        let before = origin.count();
        let mut req = b"GET /public HTTP/1.1\r\nHost: test\r\n".to_vec();
        for name in batch {
            req.extend_from_slice(format!("{name}: /admin/secret\r\n").as_bytes());
        }
        req.extend_from_slice(b"Referer: http://test/admin\r\nDestination: /public/copy\r\n\r\n");
        let resp = RawResponse::parse(&raw_request_timeout_short(gw.data_addr(), &req).await);
        assert_eq!(resp.status, 200, "{} ({})", resp.status_line, resp.text());
        let seen = origin.requests();
        assert_eq!(seen.len(), before + 1);
        let got = &seen[before];
        assert_eq!(got.target(), "/public");
        let leaked: Vec<&String> = batch
            .iter()
            .filter(|n| !got.header_values(n).is_empty())
            .collect();
        assert!(leaked.is_empty(), "forwarded to the origin: {leaked:?}");
        assert_eq!(got.header_values("referer"), ["http://test/admin"]);
        assert_eq!(got.header_values("destination"), ["/public/copy"]);
    }
}

/// A WebDAV `Destination` is a second path the upstream writes to: a MOVE or COPY into a denied
/// prefix is denied like a request to it, in any spelling; one that names another host, or
/// cannot be read, is refused; a copy between allowed paths passes with its Destination.
#[tokio::test]
async fn webdav_destination_into_a_denied_path_is_denied() {
    let origin = RawOrigin::start();
    let gw = Gateway::start(&deny_table(&origin.url(), DENIED));
    for (method, dest, status) in [
        ("COPY", "/admin/stolen", 403),
        ("MOVE", "/%61dmin/stolen", 403),
        ("MOVE", "http://test/public/../admin/stolen", 403),
        ("COPY", "http://elsewhere.example/public/x", 400),
        ("COPY", "/public/%2e%2e/%2e%2e/etc", 400),
    ] {
        let req = format!(
            "{method} /public/doc HTTP/1.1\r\nHost: test\r\nDestination: {dest}\r\nContent-Length: 0\r\n\r\n"
        );
        let resp =
            RawResponse::parse(&raw_request_timeout_short(gw.data_addr(), req.as_bytes()).await);
        assert_eq!(resp.status, status, "{method} -> {dest}: {}", resp.text());
    }
    assert_eq!(
        origin.count(),
        0,
        "a write into a denied path reached the origin"
    );
    let req = b"COPY /public/doc HTTP/1.1\r\nHost: test\r\nDestination: /public/copy\r\nContent-Length: 0\r\n\r\n";
    let resp = RawResponse::parse(&raw_request_timeout_short(gw.data_addr(), req).await);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = origin.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header_values("destination"), ["/public/copy"]);
}

/// Host-override headers (a second opinion on which virtual host is meant) and httpoxy's
/// `Proxy` never reach the upstream.
#[tokio::test]
async fn host_override_headers_never_reach_the_origin() {
    let origin = RawOrigin::start();
    let gw = Gateway::start(&deny_table(&origin.url(), DENIED));
    let req = b"GET /public HTTP/1.1\r\nHost: test\r\nX-Host: admin.internal\r\n\
X-HTTP-Host-Override: admin.internal\r\nX-Original-Host: admin.internal\r\n\
Proxy-Host: admin.internal\r\nProxy: http://evil.example:3128\r\nX-Forwarded-Server: evil\r\n\r\n";
    let resp = RawResponse::parse(&raw_request_timeout_short(gw.data_addr(), req).await);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = &origin.requests()[0];
    for name in [
        "x-host",
        "x-http-host-override",
        "x-original-host",
        "proxy-host",
        "proxy",
        "x-forwarded-server",
    ] {
        assert!(got.header_values(name).is_empty(), "{name} was forwarded");
    }
}
