#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const DEFAULT: CanonOptions = CanonOptions {
    allow_encoded_slash: false,
    allow_path_params: false,
};
const SLASH: CanonOptions = CanonOptions {
    allow_encoded_slash: true,
    allow_path_params: false,
};
const PARAMS: CanonOptions = CanonOptions {
    allow_encoded_slash: false,
    allow_path_params: true,
};
const BOTH: CanonOptions = CanonOptions {
    allow_encoded_slash: true,
    allow_path_params: true,
};

fn canon(raw: &str) -> Result<String, CanonError> {
    canonicalize_path(raw, DEFAULT).map(|p| p.path.into_owned())
}

// === paths: accepted ===

#[test]
fn accepted_paths() {
    let cases: &[(&str, &str)] = &[
        // already canonical
        ("/", "/"),
        ("/a", "/a"),
        ("/a/b/", "/a/b/"),
        ("/v1/deployments/prod/web", "/v1/deployments/prod/web"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/a%20b", "/a%20b"),
        ("/my%20file/x%20y%20z", "/my%20file/x%20y%20z"),
        ("/a%21b", "/a%21b"),
        ("/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9"),
        ("/{\"json\":1}", "/{\"json\":1}"),
        ("/...", "/..."),
        ("/.a/..b/a.", "/.a/..b/a."),
        // unreserved decoded exactly once
        ("/%61dmin", "/admin"),
        ("/%41%5a%7e%2d%5f%2e%30", "/AZ~-_.0"),
        ("/a%2e", "/a."),
        // other escapes uppercased, never decoded
        ("/a%3a", "/a%3A"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%e2%88%95admin", "/%E2%88%95admin"),
        ("/%F0%9F%98%80", "/%F0%9F%98%80"),
        // non-ASCII that folds only to non-ASCII, or not at all, stays opaque
        ("/%d0%b0dmin", "/%D0%B0dmin"),
        ("/%e4%b8%ad%e6%96%87", "/%E4%B8%AD%E6%96%87"),
        ("/%e2%84%a6", "/%E2%84%A6"),
        ("/%c3%a5ngstr%c3%b6m", "/%C3%A5ngstr%C3%B6m"),
        // Unicode whitespace that NFKC keeps is accepted inside a name
        ("/a%e2%80%a8b", "/a%E2%80%A8b"),
        ("/a%c2%85b", "/a%C2%85b"),
        ("/%7b%7d", "/%7B%7D"),
        // dot segments, raw and encoded, any case
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E%2E/b", "/b"),
        ("/a/%2e./b", "/b"),
        ("/a/.%2E/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/./", "/"),
        // slashes merged, trailing slash kept
        ("//admin", "/admin"),
        ("/a//b///c", "/a/b/c"),
        ("/a//", "/a/"),
        ("//", "/"),
        ("/a/b//../c", "/a/c"),
        ("/a/.//b", "/a/b"),
    ];
    let mut failures = Vec::new();
    for (raw, want) in cases {
        match canon(raw) {
            Ok(got) if got == *want => {}
            other => failures.push(format!("{raw:?}: want {want:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// === paths: refused ===

#[test]
fn refused_paths() {
    use CanonError::*;
    let cases: &[(&str, CanonError)] = &[
        ("", Empty),
        ("a/b", NotOriginForm),
        ("*", NotOriginForm),
        ("/a\tb", ControlChar),
        ("/a\nb", ControlChar),
        ("/a\rb", ControlChar),
        ("/a\0b", ControlChar),
        ("/a\x7fb", ControlChar),
        ("/a b", Space),
        ("/caf\u{e9}", NonAscii),
        ("/\u{ff0f}admin", NonAscii),
        ("/a\\b", Backslash),
        ("/..\\admin", Backslash),
        ("/a#b", Fragment),
        ("/a?b", QuestionMarkInPath),
        ("/a%", MalformedEscape),
        ("/a%2", MalformedEscape),
        ("/a%zz", MalformedEscape),
        ("/a%g0", MalformedEscape),
        ("/a%%41", MalformedEscape),
        ("/a%2Fb", EncodedSlash),
        ("/a%2fb", EncodedSlash),
        ("/..%2fadmin", EncodedSlash),
        ("/a%5Cb", EncodedBackslash),
        ("/a%5cb", EncodedBackslash),
        ("/a%00b", EncodedNul),
        ("/a%25b", EncodedPercent),
        ("/%252e%252e/admin", EncodedPercent),
        ("/a%3Bb", EncodedSemicolon),
        ("/a%3bb", EncodedSemicolon),
        ("/a%3Fb", EncodedQuestionMark),
        ("/a%3fb", EncodedQuestionMark),
        ("/a%23b", EncodedHash),
        ("/admin%0a", EncodedControl),
        ("/admin%0D", EncodedControl),
        ("/admin%09", EncodedControl),
        ("/admin%7f", EncodedControl),
        ("/admin%1F", EncodedControl),
        // overlong and otherwise invalid UTF-8
        ("/%C0%AE%C0%AE/admin", InvalidUtf8),
        ("/%c0%af", InvalidUtf8),
        ("/%C1%9C", InvalidUtf8),
        ("/%E0%80%AE", InvalidUtf8),
        ("/%F0%80%80%AF", InvalidUtf8),
        ("/%ED%A0%80", InvalidUtf8),
        ("/%F4%90%80%80", InvalidUtf8),
        ("/%F5%80%80%80", InvalidUtf8),
        ("/%FF", InvalidUtf8),
        ("/%80", InvalidUtf8),
        ("/%C3", InvalidUtf8),
        ("/%C3a", InvalidUtf8),
        ("/%C3%41", InvalidUtf8),
        ("/%E2%88", InvalidUtf8),
        ("/%C3%A", MalformedEscape),
        // whitespace at a segment name's edge
        ("/admin%20/x", SegmentEdgeWhitespace),
        ("/admin%20", SegmentEdgeWhitespace),
        ("/%20admin", SegmentEdgeWhitespace),
        ("/%20", SegmentEdgeWhitespace),
        ("/a/%20/b", SegmentEdgeWhitespace),
        ("/a/..%20/b", SegmentEdgeWhitespace),
        ("/a/%20../b", SegmentEdgeWhitespace),
        ("/a%20%20", SegmentEdgeWhitespace),
        ("/admin%C2%A0/x", SegmentEdgeWhitespace),
        ("/%e3%80%80admin", SegmentEdgeWhitespace),
        ("/admin%E2%80%A8", SegmentEdgeWhitespace),
        ("/admin%C2%85/x", SegmentEdgeWhitespace),
        ("/%E1%9A%80admin", SegmentEdgeWhitespace),
        ("/admin%20;x", SegmentEdgeWhitespace),
        // compatibility forms of ASCII, wherever they stand
        ("/%ef%bc%8f", EncodedCompatibilityForm),
        ("/%EF%BD%81dmin", EncodedCompatibilityForm),
        ("/public/%EF%BC%8E%EF%BC%8E/admin", EncodedCompatibilityForm),
        ("/a/..%EF%BC%BCb", EncodedCompatibilityForm),
        ("/a/%E2%80%A5/b", EncodedCompatibilityForm),
        ("/a/%E2%80%A4/b", EncodedCompatibilityForm),
        ("/a%EF%B9%92", EncodedCompatibilityForm),
        ("/a%EF%BC%85%32%65", EncodedCompatibilityForm),
        ("/%E2%93%90dmin", EncodedCompatibilityForm),
        ("/%F0%9D%90%9Admin", EncodedCompatibilityForm),
        ("/%E1%B5%83dmin", EncodedCompatibilityForm),
        ("/%EF%AC%80", EncodedCompatibilityForm),
        ("/v%C2%B2", EncodedCompatibilityForm),
        ("/%E2%85%A0", EncodedCompatibilityForm),
        ("/ad%C2%A0min", EncodedCompatibilityForm),
        ("/ad%E3%80%80min", EncodedCompatibilityForm),
        ("/%C5%BFecret", EncodedCompatibilityForm),
        ("/%E2%84%AA", EncodedCompatibilityForm),
        ("/adm%C4%B1n", EncodedCompatibilityForm),
        ("/adm%C4%B0n", EncodedCompatibilityForm),
        ("/stra%C3%9Fe", EncodedCompatibilityForm),
        ("/%E1%BA%9E", EncodedCompatibilityForm),
        ("/%C7%85", EncodedCompatibilityForm),
        ("/%C5%89", EncodedCompatibilityForm),
        // invisible characters
        ("/ad%C2%ADmin", EncodedInvisible),
        ("/ad%E2%80%8Bmin", EncodedInvisible),
        ("/%E2%80%8Badmin", EncodedInvisible),
        ("/admin%EF%BB%BF", EncodedInvisible),
        ("/%E2%80%AEnimda", EncodedInvisible),
        ("/admin%EF%B8%8F", EncodedInvisible),
        ("/admin%E1%A0%8E", EncodedInvisible),
        ("/ad%F3%A0%80%A1min", EncodedInvisible),
        // path parameters
        ("/admin;jsessionid=x/secret", PathParams),
        ("/..;/admin", PathParams),
        ("/;/admin", PathParams),
        ("/admin;", PathParams),
        // above the root
        ("/..", AboveRoot),
        ("/../admin", AboveRoot),
        ("/a/../..", AboveRoot),
        ("/%2e%2e/admin", AboveRoot),
        ("//../admin", AboveRoot),
        ("/a/./../../b", AboveRoot),
    ];
    let mut failures = Vec::new();
    for (raw, want) in cases {
        match canon(raw) {
            Err(e) if e == *want => {}
            other => failures.push(format!("{raw:?}: want Err({want:?}), got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_error_message_is_specific() {
    assert_eq!(
        CanonError::EncodedSlash.to_string(),
        "encoded slash (%2F) in path"
    );
    assert!(CanonError::AboveRoot.to_string().contains(".."));
    assert!(CanonError::HostConflict.to_string().contains("Host"));
    assert_eq!(
        CanonError::SegmentEdgeWhitespace.to_string(),
        "path segment starts or ends with encoded whitespace"
    );
    assert!(CanonError::EncodedCompatibilityForm
        .to_string()
        .contains("compatibility form"));
    assert!(CanonError::EncodedInvisible
        .to_string()
        .contains("invisible"));
}

// === lenient upstreams: trimming, NFKC, case folding ===

/// The percent-encoded UTF-8 of `c`, lowercase hex (canonicalisation uppercases it).
fn enc(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf)
        .bytes()
        .map(|b| format!("%{b:02x}"))
        .collect()
}

#[test]
fn whitespace_at_a_segment_edge_is_refused_wherever_it_stands() {
    // Everything a trimming matcher drops: Java `trim` (every char up to U+0020), Unicode
    // White_Space (`strip`, Python, .NET, Go), and what older trims dropped (U+180E, U+200B,
    // U+FEFF; invisible, so refused anywhere).
    let trimmed: Vec<char> = ('\0'..='\u{10FFFF}')
        .filter(|c| {
            *c <= ' ' || c.is_whitespace() || matches!(c, '\u{180E}' | '\u{200B}' | '\u{FEFF}')
        })
        .collect();
    assert!(trimmed.len() > 50);
    let mut failures = Vec::new();
    for c in trimmed {
        let e = enc(c);
        for opts in [DEFAULT, PARAMS, SLASH] {
            for raw in [
                format!("/admin{e}/x"),
                format!("/{e}admin/x"),
                format!("/admin{e}"),
                format!("/{e}"),
                format!("/a/..{e}/admin"),
                format!("/a/{e}../admin"),
                format!("/a/{e}/admin"),
                format!("/admin{e}{e}"),
                format!("/admin{e};x/y"),
            ] {
                if let Ok(p) = canonicalize_path(&raw, opts) {
                    failures.push(format!(
                        "U+{:04X} {raw} {opts:?}: accepted as {}",
                        u32::from(c),
                        p.path
                    ));
                }
            }
            // With %2F kept opaque, whitespace next to it is at an edge of the decoded reading.
            if opts.allow_encoded_slash {
                let raw = format!("/admin{e}%2Fx");
                if let Ok(p) = canonicalize_path(&raw, opts) {
                    failures.push(format!(
                        "U+{:04X} {raw}: accepted as {}",
                        u32::from(c),
                        p.path
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Inside a name, ASCII space is kept and encoded; so is Unicode whitespace NFKC keeps.
    assert_eq!(canon("/a%20b/c").unwrap(), "/a%20b/c");
    assert_eq!(canon("/a%e2%80%a9b").unwrap(), "/a%E2%80%A9b");
    assert_eq!(
        canon("/a%20b%2Fc%20d").unwrap_err(),
        CanonError::EncodedSlash
    );
    assert_eq!(
        canonicalize_path("/a%20b%2Fc%20d", SLASH)
            .unwrap()
            .decoded_slash
            .as_deref(),
        Some("/a%20b/c%20d")
    );
    // Parameters are not part of the name: whitespace inside them is kept when forwarded.
    let p = canonicalize_path("/admin;x=%20y/z", PARAMS).unwrap();
    assert_eq!(
        (p.path.as_ref(), p.forward.as_deref()),
        ("/admin/z", Some("/admin;x=%20y/z"))
    );
}

/// The model of a lenient upstream's folding: NFKC, then lower case, upper case or both in
/// either order, then NFKC again, over the whole string; `c` in `x{c}y` folds to ASCII when
/// some reading holds more ASCII than the `x` and `y` around it.
fn lenient_readings_add_ascii(c: char) -> bool {
    use unicode_normalization::UnicodeNormalization;
    let s = format!("x{c}y");
    let nfkc = |t: &str| t.nfkc().collect::<String>();
    let lower = |t: &str| t.to_lowercase();
    let upper = |t: &str| t.to_uppercase();
    let mut readings = vec![s.clone(), nfkc(&s)];
    for _ in 0..2 {
        let mut next = Vec::new();
        for r in &readings {
            next.extend([
                nfkc(r),
                lower(r),
                upper(r),
                lower(&upper(r)),
                upper(&lower(r)),
            ]);
        }
        readings.extend(next);
        readings.sort();
        readings.dedup();
    }
    readings
        .iter()
        .any(|r| r.chars().filter(char::is_ascii).count() > 2)
}

#[test]
fn every_character_folding_to_ascii_is_refused_and_no_other() {
    // Every non-ASCII scalar value, against a whole-string model of NFKC and case folding (the
    // implementation folds one character at a time). A refusal the model does not explain
    // would turn away a legitimate path; a miss would be a bypass.
    let mut missed = Vec::new();
    let mut overreach = Vec::new();
    let mut compat = 0;
    for c in '\u{80}'..='\u{10FFFF}' {
        // Most code points (unassigned, CJK, ...) are their own NFKC form and case mappings:
        // no reading can hold new ASCII, so the costly model is skipped for them.
        let fixed = {
            use unicode_normalization::UnicodeNormalization;
            let me = || std::iter::once(c);
            me().nfkc().eq(me()) && c.to_lowercase().eq(me()) && c.to_uppercase().eq(me())
        };
        let raw = format!("/x{}y", enc(c));
        let got = canonicalize_path(&raw, DEFAULT).map(|p| p.path.into_owned());
        let folds = !fixed && lenient_readings_add_ascii(c);
        match got {
            Err(CanonError::EncodedCompatibilityForm) => {
                compat += 1;
                if !folds {
                    overreach.push(format!("U+{:04X}", u32::from(c)));
                }
            }
            Err(CanonError::EncodedInvisible) => assert!(is_default_ignorable(c)),
            Err(e) => panic!("U+{:04X}: {e:?}", u32::from(c)),
            Ok(p) => {
                let want = format!("/x{}y", enc(c).to_ascii_uppercase());
                assert_eq!(p, want, "U+{:04X}: accepted, but not opaque", u32::from(c));
                if folds {
                    missed.push(format!("U+{:04X}", u32::from(c)));
                }
            }
        }
    }
    assert!(missed.is_empty(), "fold to ASCII but accepted: {missed:?}");
    assert!(
        overreach.is_empty(),
        "refused without folding to ASCII: {overreach:?}"
    );
    assert!(compat > 1000, "only {compat} compatibility forms refused");
}

#[test]
fn fold_steps_are_enough() {
    for c in '\u{80}'..='\u{10FFFF}' {
        assert_eq!(
            folds_to_ascii(c, FOLD_STEPS),
            folds_to_ascii(c, FOLD_STEPS + 1),
            "U+{:04X}",
            u32::from(c)
        );
    }
}

#[test]
fn default_ignorable_table_is_sorted_and_disjoint() {
    for w in DEFAULT_IGNORABLE.windows(2) {
        assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
    }
    for c in [
        '\u{AD}',
        '\u{200B}',
        '\u{200D}',
        '\u{2060}',
        '\u{FE0F}',
        '\u{FEFF}',
        '\u{E0001}',
    ] {
        assert!(is_default_ignorable(c), "U+{:04X}", u32::from(c));
    }
    for c in ['a', '\u{A0}', '\u{E9}', '\u{2028}', '\u{3000}', '\u{FFFD}'] {
        assert!(!is_default_ignorable(c), "U+{:04X}", u32::from(c));
    }
}

// === fast path ===

#[test]
fn canonical_input_is_borrowed() {
    for raw in [
        "/",
        "/a",
        "/a/b/",
        "/a%20x",
        "/a%3A",
        "/v1/deployments/prod/web",
    ] {
        let p = canonicalize_path(raw, DEFAULT).unwrap();
        assert!(matches!(p.path, Cow::Borrowed(_)), "{raw}");
        assert_eq!(p.forward_path(), raw);
    }
    // Canonical, but encoded non-ASCII takes the slow path; the result is still unchanged.
    let p = canonicalize_path("/%C3%A9", DEFAULT).unwrap();
    assert_eq!(p.path, "/%C3%A9");
    for raw in ["/%61", "//a", "/a/./b", "/%3a", "/a/.."] {
        let p = canonicalize_path(raw, DEFAULT).unwrap();
        assert!(matches!(p.path, Cow::Owned(_)), "{raw}");
    }
    // `%20` at a segment's edge is ASCII but not canonical: the slow path refuses it.
    for raw in ["/%20", "/%20a", "/a%20", "/a%20/b", "/a/%20b", "/a%20%20"] {
        assert!(!is_canonical(raw), "{raw}");
    }
    for raw in ["/a%20b", "/a%20b/c%20d/"] {
        assert!(is_canonical(raw), "{raw}");
    }
}

// === opt-in: %2F ===

#[test]
fn encoded_slash_opt_in() {
    let cases: &[(&str, &str, &str)] = &[
        // raw, path (opaque %2F), decoded_slash reading
        ("/a%2fb", "/a%2Fb", "/a/b"),
        ("/a%2Fb/", "/a%2Fb/", "/a/b/"),
        (
            "/files/x%2F..%2Fadmin",
            "/files/x%2F..%2Fadmin",
            "/files/admin",
        ),
        ("/%2Fadmin", "/%2Fadmin", "/admin"),
        ("/a/b%2F..", "/a/b%2F..", "/a/"),
    ];
    for (raw, path, decoded) in cases {
        let p = canonicalize_path(raw, SLASH).unwrap();
        assert_eq!(p.path, *path, "{raw}");
        assert!(p.encoded_slash, "{raw}");
        assert!(!p.path_params, "{raw}");
        assert_eq!(p.forward, None, "{raw}");
        assert_eq!(p.forward_path(), *path, "{raw}");
        assert_eq!(p.decoded_slash.as_deref(), Some(*decoded), "{raw}");
    }
    // The decoded reading may not climb above the root either.
    assert_eq!(
        canonicalize_path("/..%2F..%2Fetc", SLASH),
        Err(CanonError::AboveRoot)
    );
    assert_eq!(
        canonicalize_path("/a%2F..%2F..%2Fetc", SLASH),
        Err(CanonError::AboveRoot)
    );
    // A `%2F` segment resolved away by `..` is not forwarded, so it leaves no second reading.
    let p = canonicalize_path("/a/%2F/../b", SLASH).unwrap();
    assert_eq!(p.path, "/a/b");
    assert!(!p.encoded_slash);
    assert_eq!(p.decoded_slash, None);
    // Still refused without the opt-in, and the other ambiguous escapes stay refused with it.
    assert_eq!(canon("/a%2Fb"), Err(CanonError::EncodedSlash));
    assert_eq!(
        canonicalize_path("/a%5Cb", SLASH),
        Err(CanonError::EncodedBackslash)
    );
    assert_eq!(
        canonicalize_path("/a%252Fb", SLASH),
        Err(CanonError::EncodedPercent)
    );
    let p = canonicalize_path("/a%2Fb", SLASH).unwrap();
    let mut buf = [""; 3];
    assert_eq!(p.readings(&mut buf), ["/a%2Fb", "/a/b"]);
}

// === opt-in: ; parameters ===

#[test]
fn path_params_opt_in() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        // raw, path (stripped, matched), forward (kept) when parameters survive
        (
            "/admin;jsessionid=x/secret",
            "/admin/secret",
            Some("/admin;jsessionid=x/secret"),
        ),
        (
            "/app/page;jsessionid=ABC",
            "/app/page",
            Some("/app/page;jsessionid=ABC"),
        ),
        (
            "/app/;jsessionid=ABC",
            "/app/",
            Some("/app/;jsessionid=ABC"),
        ),
        ("/;jsessionid=ABC", "/", Some("/;jsessionid=ABC")),
        ("/;x=1/admin;y=2", "/admin", Some("/admin;y=2")),
        ("/a;x;y=1,2/b", "/a/b", Some("/a;x;y=1,2/b")),
        ("/a;%61=%3a", "/a", Some("/a;a=%3A")),
        ("/admin;.js", "/admin", Some("/admin;.js")),
        ("/a;x//b", "/a/b", Some("/a;x/b")),
        ("/a;", "/a", Some("/a;")),
        // Tomcat: `..;x` is `..`, resolved in both readings, its parameters dropped; nothing
        // of them is forwarded, so no second reading remains.
        ("/public/..;/admin", "/admin", None),
        ("/public/..;x=y/admin", "/admin", None),
        ("/admin/..;/public", "/public", None),
        ("/a/.;x/b", "/a/b", None),
        ("/a/%2e%2e;x/b", "/b", None),
        ("/a/b/..;x", "/a/", None),
        // An empty middle segment merges away with its parameters.
        ("/;/admin", "/admin", None),
        ("/a;x/../b", "/b", None),
    ];
    for (raw, path, forward) in cases {
        let p = canonicalize_path(raw, PARAMS).unwrap();
        assert_eq!(p.path, *path, "{raw}");
        assert_eq!(p.forward.as_deref(), *forward, "{raw}");
        let fwd = forward.unwrap_or(path);
        assert_eq!(p.forward_path(), fwd, "{raw}");
        assert_eq!(p.path_params, forward.is_some(), "{raw}");
        assert!(!p.encoded_slash, "{raw}");
        // Both readings are fixed points.
        let again = canonicalize_path(fwd, PARAMS).unwrap();
        assert_eq!(again.path, *path, "{raw}: path of forward");
        assert_eq!(again.forward_path(), fwd, "{raw}: forward of forward");
        assert_eq!(canon(path).unwrap(), *path, "{raw}: path is canonical");
    }
    assert_eq!(
        canonicalize_path("/..;/admin", PARAMS),
        Err(CanonError::AboveRoot)
    );
    assert_eq!(
        canonicalize_path("/a/..;/..;/b", PARAMS),
        Err(CanonError::AboveRoot)
    );
    assert_eq!(
        canonicalize_path("/a%3Bb", PARAMS),
        Err(CanonError::EncodedSemicolon)
    );
    let p = canonicalize_path("/admin;x/secret", PARAMS).unwrap();
    let mut buf = [""; 3];
    assert_eq!(p.readings(&mut buf), ["/admin/secret", "/admin;x/secret"]);
    // Parameters that all resolved away leave one reading.
    let p = canonicalize_path("/a/..;x/b", PARAMS).unwrap();
    let mut buf = [""; 3];
    assert_eq!(p.readings(&mut buf), ["/b"]);
}

#[test]
fn encoded_slash_with_params_is_refused() {
    assert_eq!(
        canonicalize_path("/a%2F..;x%2Fb", BOTH),
        Err(CanonError::EncodedSlashWithPathParams)
    );
    // Each alone is fine with both opt-ins.
    assert_eq!(canonicalize_path("/a%2Fb", BOTH).unwrap().path, "/a%2Fb");
    assert_eq!(canonicalize_path("/a;b", BOTH).unwrap().path, "/a");
}

#[test]
fn readings_plain() {
    let p = canonicalize_path("/a/b", DEFAULT).unwrap();
    let mut buf = [""; 3];
    assert_eq!(p.readings(&mut buf), ["/a/b"]);
}

// === query ===

#[test]
fn query_validation() {
    for ok in [
        "",
        "a=1&b=2",
        "x=%zz",
        "q=%",
        "a=/../b",
        "a=?b",
        "_method=DELETE",
        "a=%2F",
    ] {
        assert_eq!(validate_query(ok), Ok(()), "{ok}");
    }
    let bad: &[(&str, CanonError)] = &[
        ("a=1 2", CanonError::Space),
        ("a=\t", CanonError::ControlChar),
        ("a=\n", CanonError::ControlChar),
        ("a=\0", CanonError::ControlChar),
        ("a=\x7f", CanonError::ControlChar),
        ("a=\u{e9}", CanonError::NonAscii),
        ("a=1#frag", CanonError::Fragment),
    ];
    for (q, e) in bad {
        assert_eq!(validate_query(q), Err(e.clone()), "{q:?}");
    }
}

// === host ===

#[test]
fn hosts_accepted() {
    let cases: &[(&str, u16, &str, bool)] = &[
        // raw, default port, canonical, borrowed
        ("example.com", 80, "example.com", true),
        ("Example.COM", 80, "example.com", false),
        ("example.com.", 80, "example.com", true),
        ("example.com:80", 80, "example.com", true),
        ("example.com.:80", 80, "example.com", true),
        ("example.com:443", 443, "example.com", true),
        ("example.com:443", 80, "example.com:443", true),
        ("example.com:8080", 443, "example.com:8080", true),
        ("example.com:08080", 443, "example.com:8080", false),
        ("example.com:0080", 80, "example.com", true),
        ("EXAMPLE.com.:8080", 80, "example.com:8080", false),
        ("my_host-1.internal", 80, "my_host-1.internal", true),
        ("localhost", 80, "localhost", true),
        ("127.0.0.1", 80, "127.0.0.1", true),
        ("127.0.0.1:9000", 80, "127.0.0.1:9000", true),
        ("[::1]", 80, "[::1]", true),
        ("[::1]:80", 80, "[::1]", true),
        ("[::1]:8080", 80, "[::1]:8080", true),
        ("[0:0::1]", 80, "[::1]", false),
        ("[2001:DB8::1]", 443, "[2001:db8::1]", false),
        ("[2001:db8:0:0:0:0:0:1]:443", 443, "[2001:db8::1]", false),
        ("a.b.0x1g", 80, "a.b.0x1g", true),
        ("1a.example", 80, "1a.example", true),
    ];
    for (raw, port, want, borrowed) in cases {
        let got = canonical_host(raw, *port).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(got, *want, "{raw}");
        assert_eq!(matches!(got, Cow::Borrowed(_)), *borrowed, "{raw} borrowed");
        // Idempotent.
        assert_eq!(canonical_host(&got, *port).unwrap(), got, "{raw} twice");
    }
}

#[test]
fn hosts_refused() {
    use CanonError::*;
    let cases: &[(&str, CanonError)] = &[
        ("", HostEmpty),
        (".", HostEmpty),
        (":80", HostEmpty),
        ("a..b", HostEmptyLabel),
        (".a", HostEmptyLabel),
        ("a.b..", HostEmptyLabel),
        ("exa mple.com", HostInvalidChar),
        ("exa%6dple.com", HostInvalidChar),
        ("example.com/", HostInvalidChar),
        ("ex\u{e4}mple.com", HostInvalidChar),
        ("a*.com", HostInvalidChar),
        ("::1", HostInvalidChar),
        ("[::1]x", HostInvalidChar),
        ("user@example.com", HostUserinfo),
        ("user:pw@example.com:80", HostUserinfo),
        ("example.com:", HostInvalidPort),
        ("example.com:0", HostInvalidPort),
        ("example.com:65536", HostInvalidPort),
        ("example.com:123456", HostInvalidPort),
        ("example.com:8a", HostInvalidPort),
        ("example.com:+80", HostInvalidPort),
        ("[::1", HostInvalidIpv6),
        ("[::g]", HostInvalidIpv6),
        ("[fe80::1%25eth0]", HostInvalidIpv6),
        ("[v1.x]", HostInvalidIpv6),
        ("[127.0.0.1]", HostInvalidIpv6),
        ("127.1", HostInvalidIpv4),
        ("2130706433", HostInvalidIpv4),
        ("0x7f.0.0.1", HostInvalidIpv4),
        ("127.0.0.0x1", HostInvalidIpv4),
        ("127.000.000.001", HostInvalidIpv4),
        ("256.0.0.1", HostInvalidIpv4),
        ("a.123", HostInvalidIpv4),
    ];
    let mut failures = Vec::new();
    for (raw, want) in cases {
        match canonical_host(raw, 80) {
            Err(e) if e == *want => {}
            other => failures.push(format!("{raw:?}: want Err({want:?}), got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let long_label = format!("{}.com", "a".repeat(64));
    assert_eq!(canonical_host(&long_label, 80), Err(HostTooLong));
    let long_name = vec!["a".repeat(60); 5].join(".");
    assert_eq!(canonical_host(&long_name, 80), Err(HostTooLong));
}

// === target ===

fn target(
    method: &Method,
    uri: &str,
    host: Option<&str>,
    tls: bool,
) -> Result<(String, String, Option<String>), CanonError> {
    let uri: Uri = uri.parse().unwrap();
    let host = host.map(|h| HeaderValue::from_str(h).unwrap());
    let t = canonicalize_target(method, &uri, host.as_ref(), tls, DEFAULT)?;
    Ok((
        t.host.into_owned(),
        t.path.path.into_owned(),
        t.query.map(str::to_owned),
    ))
}

#[test]
fn targets() {
    let get = Method::GET;
    let ok =
        |h: &str, p: &str, q: Option<&str>| Ok((h.to_owned(), p.to_owned(), q.map(str::to_owned)));
    assert_eq!(
        target(&get, "/a/../b?x=1", Some("Example.com"), false),
        ok("example.com", "/b", Some("x=1"))
    );
    assert_eq!(
        target(&get, "/a?", Some("h"), false),
        ok("h", "/a", Some(""))
    );
    assert_eq!(
        target(&get, "/a?q=%zz/../", None, false),
        ok("", "/a", Some("q=%zz/../"))
    );
    // The query is split off before decoding: `%3F` in the path is refused, `?` in the query kept.
    assert_eq!(
        target(&get, "/a%3Fb?c", Some("h"), false),
        Err(CanonError::EncodedQuestionMark)
    );
    assert_eq!(
        target(&get, "/a?b?c", Some("h"), false),
        ok("h", "/a", Some("b?c"))
    );
    // Fragments never reach us: hyper's Uri drops them.
    assert_eq!(
        target(&get, "/public#/../admin", Some("h"), false),
        ok("h", "/public", None)
    );
    // absolute-form: reduced to its path, authority checked against Host
    assert_eq!(
        target(&get, "http://Example.com/a/./b", None, false),
        ok("example.com", "/a/b", None)
    );
    assert_eq!(
        target(&get, "http://example.com:80/x", Some("example.com"), false),
        ok("example.com", "/x", None)
    );
    assert_eq!(
        target(&get, "http://example.com/x", Some("EXAMPLE.com.:80"), false),
        ok("example.com", "/x", None)
    );
    assert_eq!(
        target(&get, "https://example.com:443/x", Some("example.com"), true),
        ok("example.com", "/x", None)
    );
    assert_eq!(
        target(&get, "http://example.com", Some("example.com"), false),
        ok("example.com", "/", None)
    );
    assert_eq!(
        target(&get, "http://example.com/x", Some("evil.com"), false),
        Err(CanonError::HostConflict)
    );
    assert_eq!(
        target(
            &get,
            "http://example.com:8080/x",
            Some("example.com"),
            false
        ),
        Err(CanonError::HostConflict)
    );
    assert_eq!(
        target(
            &get,
            "https://example.com:443/x",
            Some("example.com"),
            false
        ),
        Err(CanonError::HostConflict)
    );
    assert_eq!(
        target(&get, "http://user@example.com/x", None, false),
        Err(CanonError::HostUserinfo)
    );
    assert_eq!(
        target(&get, "ftp://example.com/x", None, false),
        Err(CanonError::UnsupportedScheme)
    );
    assert_eq!(
        target(&get, "/x", Some("a..b"), false),
        Err(CanonError::HostEmptyLabel)
    );
    // asterisk-form only with OPTIONS
    assert_eq!(
        target(&Method::OPTIONS, "*", Some("h"), false),
        ok("h", "*", None)
    );
    assert_eq!(
        target(&get, "*", Some("h"), false),
        Err(CanonError::AsteriskNotOptions)
    );
    assert_eq!(
        target(&Method::POST, "*", Some("h"), false),
        Err(CanonError::AsteriskNotOptions)
    );
    // authority-form (CONNECT) has no path
    assert_eq!(
        target(&Method::CONNECT, "example.com:443", None, true),
        Err(CanonError::Empty)
    );
    // query checks
    assert_eq!(
        target(&get, "/a?b=%C3%A9", Some("h"), false),
        ok("h", "/a", Some("b=%C3%A9"))
    );
    assert_eq!(
        target(&get, "/a?b=\u{e9}", Some("h"), false),
        Err(CanonError::NonAscii)
    );
    assert_eq!(
        target(&get, "/caf\u{e9}", Some("h"), false),
        Err(CanonError::NonAscii)
    );
}

#[test]
fn target_host_header_must_be_visible_ascii() {
    let uri: Uri = "/".parse().unwrap();
    let host = HeaderValue::from_bytes(b"ex\xe4mple.com").unwrap();
    assert_eq!(
        canonicalize_target(&Method::GET, &uri, Some(&host), false, DEFAULT),
        Err(CanonError::HostInvalidChar)
    );
}

#[test]
fn target_borrows_when_canonical() {
    let uri: Uri = "/v1/x?y=1".parse().unwrap();
    let host = HeaderValue::from_static("api.example.com");
    let t = canonicalize_target(&Method::GET, &uri, Some(&host), false, DEFAULT).unwrap();
    assert!(matches!(t.host, Cow::Borrowed("api.example.com")));
    assert!(matches!(t.path.path, Cow::Borrowed("/v1/x")));
    assert_eq!(t.query, Some("y=1"));
}

// === method overrides ===

type Headers = &'static [(&'static str, &'static str)];

fn overrides(headers: &[(&str, &str)], query: Option<&str>) -> Result<Vec<Method>, CanonError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    method_overrides(Some(&map), query)
}

#[test]
fn method_overrides_found() {
    let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
    let cases: &[(Headers, Option<&str>, Vec<Method>)] = &[
        (&[], None, vec![]),
        (&[], Some("a=1"), vec![]),
        (
            &[("x-http-method-override", "delete")],
            None,
            vec![Method::DELETE],
        ),
        (&[("X-HTTP-Method", "PUT")], None, vec![Method::PUT]),
        (&[("x-method-override", "patch")], None, vec![Method::PATCH]),
        (
            &[("x-http-method-override", "GET, delete")],
            None,
            vec![Method::GET, Method::DELETE],
        ),
        (
            &[
                ("x-http-method-override", "GET"),
                ("x-http-method-override", "POST"),
            ],
            None,
            vec![Method::GET, Method::POST],
        ),
        (
            &[("x-http-method-override", "put"), ("x-http-method", "PUT")],
            None,
            vec![Method::PUT],
        ),
        (&[("x-http-method-override", " , ")], None, vec![]),
        (
            &[("x-http-method-override", "purge")],
            None,
            vec![m("PURGE")],
        ),
        (&[], Some("_method=delete"), vec![Method::DELETE]),
        (
            &[],
            Some("a=1&_method=PUT&_method=patch"),
            vec![Method::PUT, Method::PATCH],
        ),
        (&[], Some("a=1;_method=PUT"), vec![Method::PUT]),
        (&[], Some("_method=%44ELETE"), vec![Method::DELETE]),
        (&[], Some("%5Fmethod=DELETE"), vec![Method::DELETE]),
        (&[], Some("_METHOD=DELETE"), vec![Method::DELETE]),
        (&[], Some(".method=DELETE"), vec![Method::DELETE]),
        (&[], Some("+_method=DELETE"), vec![Method::DELETE]),
        (&[], Some("_method=+DELETE+"), vec![Method::DELETE]),
        (&[], Some("_method="), vec![]),
        (&[], Some("_method"), vec![]),
        (&[], Some("x_method=DELETE&method=PUT&_methods=GET"), vec![]),
        (&[], Some("x=%zz&_method=DELETE"), vec![Method::DELETE]),
        (
            &[("x-http-method-override", "PUT")],
            Some("_method=DELETE"),
            vec![Method::PUT, Method::DELETE],
        ),
    ];
    for (headers, query, want) in cases {
        assert_eq!(
            overrides(headers, *query).as_ref(),
            Ok(want),
            "{headers:?} {query:?}"
        );
    }
}

#[test]
fn method_overrides_refused() {
    let bad: &[(Headers, Option<&str>)] = &[
        (&[("x-http-method-override", "DE LETE")], None),
        (&[("x-http-method-override", "GET/1")], None),
        (&[("x-http-method", "(DELETE)")], None),
        (&[], Some("_method=DE%20LETE")),
        (&[], Some("_method=%zz")),
        (&[], Some("_method=%0aDELETE")),
        (&[], Some("_method=GET\"")),
    ];
    for (headers, query) in bad {
        assert_eq!(
            overrides(headers, *query),
            Err(CanonError::InvalidMethodOverride),
            "{headers:?} {query:?}"
        );
    }
    let mut map = HeaderMap::new();
    map.insert(
        "x-http-method-override",
        HeaderValue::from_bytes(b"DEL\xc3\x89TE").unwrap(),
    );
    assert_eq!(
        method_overrides(Some(&map), None),
        Err(CanonError::InvalidMethodOverride)
    );
}

#[test]
fn override_header_lists_are_lowercase_and_distinct() {
    let names = METHOD_OVERRIDE_HEADERS;
    let method_headers: Vec<&str> = names.iter().map(|h| h.as_str()).collect();
    for list in [PATH_OVERRIDE_HEADERS, &method_headers[..]] {
        for (i, h) in list.iter().enumerate() {
            assert_eq!(h.to_ascii_lowercase(), *h);
            assert!(http::header::HeaderName::from_bytes(h.as_bytes()).is_ok());
            assert!(!list[..i].contains(h), "{h} twice");
        }
    }
    for h in [
        "x-original-url",
        "x-rewrite-url",
        "x-override-url",
        "x-original-uri",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-forwarded-prefix",
        "x-envoy-original-path",
        // nomore403, byp4xx, 4-ZERO-3
        "base-url",
        "http-url",
        "proxy-url",
        "request-uri",
        "uri",
        "url",
        "redirect",
        "x-http-destinationurl",
        "x-proxy-url",
        // bypass-url-parser
        "original-path",
        "original-url",
        "path",
        "proxy-request-fulluri",
        "x-accel-redirect",
        "x-cf-url",
        "x-flx-redirect-url",
        "x-http-path-override",
        "x-ms-endpoint-absolute-path",
        "x-ning-request-uri",
        "x-path",
        "x-proxy-request",
        "x-route-request",
        "x-sendfile",
        "x-uri",
        "x-url",
        "x-waws-unencoded-url",
    ] {
        assert!(PATH_OVERRIDE_HEADERS.contains(&h), "{h}");
    }
    // Not path overrides, and clients need them.
    for h in ["referer", "destination", "origin", "host", "forwarded"] {
        assert!(!PATH_OVERRIDE_HEADERS.contains(&h), "{h}");
    }
}

// === properties ===

/// Paths built from the characters that matter to canonicalisation, weighted so that escapes,
/// dots, slashes and parameters meet often.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => Just("/"),
        5 => Just("."),
        3 => Just(".."),
        3 => Just("%2e"),
        2 => Just("%2E"),
        2 => Just("%2f"),
        1 => Just("%2F"),
        1 => Just("%5c"),
        1 => Just("%25"),
        2 => Just("%"),
        2 => Just(";"),
        1 => Just(";x="),
        3 => Just("a"),
        2 => Just("B"),
        1 => Just("~"),
        1 => Just("2e"),
        1 => Just("2f"),
        1 => Just("e"),
        1 => Just("F"),
        1 => Just("0"),
        1 => Just("%41"),
        1 => Just("%7e"),
        1 => Just("%3a"),
        2 => Just("%20"),
        1 => Just("%c3%a9"),
        1 => Just("%C3"),
        1 => Just("%a9"),
        1 => Just("%c0%ae"),
        1 => Just("%ef%bc%8f"),
        1 => Just("%ef%bd%81"),
        1 => Just("%ef%bc%8e"),
        1 => Just("%e2%80%a5"),
        1 => Just("%c5%bf"),
        1 => Just("%c2%a0"),
        1 => Just("%c2%85"),
        1 => Just("%e2%80%a8"),
        1 => Just("%e3%80%80"),
        1 => Just("%e2%80%8b"),
        1 => Just("%c2%ad"),
        1 => Just("%d0%b0"),
        1 => Just("%00"),
        1 => Just("%0a"),
        1 => Just("\\"),
        1 => Just("#"),
        1 => Just("?"),
        1 => Just(" "),
        1 => Just("\t"),
        1 => Just("é"),
        1 => Just(":@!$&'()*+,="),
    ];
    (any::<bool>(), proptest::collection::vec(piece, 0..24)).prop_map(|(slash, pieces)| {
        let mut s = String::from(if slash { "/" } else { "" });
        for p in pieces {
            s.push_str(p);
        }
        s
    })
}

fn any_opts() -> impl Strategy<Value = CanonOptions> {
    (any::<bool>(), any::<bool>()).prop_map(|(s, p)| CanonOptions {
        allow_encoded_slash: s,
        allow_path_params: p,
    })
}

/// The invariants every accepted canonical path holds.
fn check_output(out: &str, opts: CanonOptions, params_allowed_here: bool) {
    assert!(out.starts_with('/'), "{out:?}");
    assert!(!out.contains("//"), "{out:?}");
    assert!(out.bytes().all(|c| (0x21..0x7F).contains(&c)), "{out:?}");
    for c in ['\\', '#', '?'] {
        assert!(!out.contains(c), "{out:?}");
    }
    if !params_allowed_here {
        assert!(!out.contains(';'), "{out:?}");
    }
    for seg in out.split('/') {
        let name = seg.split(';').next().unwrap_or("");
        assert!(name != "." && name != "..", "{out:?}");
        // No name starts or ends with whitespace; no character in it folds to ASCII.
        let decoded = percent_decode_utf8(name);
        let first = decoded.chars().next();
        let last = decoded.chars().next_back();
        for c in [first, last].into_iter().flatten() {
            assert!(!c.is_whitespace(), "{out:?}: whitespace at a segment edge");
        }
        for c in decoded.chars().filter(|c| !c.is_ascii()) {
            assert!(
                !folds_to_ascii(c, FOLD_STEPS),
                "{out:?}: compatibility form"
            );
            assert!(!is_default_ignorable(c), "{out:?}: invisible character");
        }
    }
    let b = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let h = &b[i + 1..i + 3];
        assert!(
            h.iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
            "{out:?}"
        );
        let v = u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap();
        assert!(!is_unreserved(v), "{out:?}: unreserved escape");
        assert!(
            !matches!(v, b'\\' | b'%' | b';' | b'?' | b'#') && v >= 0x20 && v != 0x7F,
            "{out:?}"
        );
        if v == b'/' {
            assert!(opts.allow_encoded_slash, "{out:?}: %2F without opt-in");
        }
    }
}

/// Decode every escape of canonical text (well-formed UTF-8 by construction).
fn percent_decode_utf8(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Decode the unreserved escapes of `s` (which canonical output must not have).
fn decode_unreserved(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
            if is_unreserved(v) {
                out.push(char::from(v));
                i += 3;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics_and_outputs_hold_invariants(raw in tricky_path(), opts in any_opts()) {
        if let Ok(p) = canonicalize_path(&raw, opts) {
            check_output(&p.path, opts, false);
            prop_assert_eq!(p.encoded_slash, p.path.contains("%2F") || p.decoded_slash.is_some());
            if let Some(f) = &p.forward {
                prop_assert!(opts.allow_path_params && p.path_params);
                check_output(f, opts, true);
            }
            if let Some(d) = &p.decoded_slash {
                prop_assert!(opts.allow_encoded_slash && p.encoded_slash);
                check_output(d, CanonOptions::default(), false);
            }
            prop_assert!(!(p.encoded_slash && p.path_params));
        }
    }

    #[test]
    fn idempotent(raw in tricky_path(), opts in any_opts()) {
        if let Ok(p) = canonicalize_path(&raw, opts) {
            let again = canonicalize_path(&p.path, opts).unwrap();
            prop_assert_eq!(&again.path, &p.path);
            // Canonical output is recognised by the fast path unless it holds escapes that
            // need a UTF-8 check or an opaque %2F (which needs its decoded reading).
            if !p.path.contains('%') {
                prop_assert!(matches!(again.path, Cow::Borrowed(_)), "{:?}", p.path);
            }
            prop_assert_eq!(&again.decoded_slash, &p.decoded_slash);
            let fwd = canonicalize_path(p.forward_path(), opts).unwrap();
            prop_assert_eq!(fwd.forward_path(), p.forward_path());
            prop_assert_eq!(&fwd.path, &p.path);
            if let Some(d) = &p.decoded_slash {
                let d2 = canonicalize_path(d, CanonOptions::default()).unwrap();
                prop_assert_eq!(&d2.path, d);
            }
        }
    }

    #[test]
    fn decoding_unreserved_escapes_changes_nothing(raw in tricky_path(), opts in any_opts()) {
        if let Ok(p) = canonicalize_path(&raw, opts) {
            prop_assert_eq!(decode_unreserved(&p.path), p.path.as_ref());
        }
    }

    #[test]
    fn fast_path_agrees_with_slow_path(raw in tricky_path(), opts in any_opts()) {
        if is_canonical(&raw) {
            let built = build(&raw, opts).unwrap();
            prop_assert_eq!(&built.path, &raw);
            prop_assert!(built.forward.is_none() && !built.encoded_slash && !built.path_params);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(raw in "\\PC*", opts in any_opts()) {
        let _ = canonicalize_path(&raw, opts);
        let _ = canonical_host(&raw, 80);
        let _ = validate_query(&raw);
        let _ = method_overrides(Some(&HeaderMap::new()), Some(&raw));
    }

    #[test]
    fn hosts_idempotent(raw in "[a-zA-Z0-9.:\\[\\]_@%-]{0,24}", port in prop_oneof![Just(80u16), Just(443u16)]) {
        if let Ok(h) = canonical_host(&raw, port) {
            prop_assert_eq!(canonical_host(&h, port).unwrap(), h.clone());
            prop_assert!(!h.bytes().any(|c| c.is_ascii_uppercase()));
            prop_assert!(!h.ends_with('.'));
        }
    }
}
