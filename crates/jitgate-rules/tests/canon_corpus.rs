//! Replays `tests/data/bypass_corpus.txt` (published path-normalisation bypasses) through the
//! same steps the gateway takes: hyper's `Uri` parsing, then `canonicalize_target` with default
//! options. Every line is checked and all failures are reported at once.
#![allow(clippy::unwrap_used)]

use http::{HeaderValue, Method, Uri};
use jitgate_rules::canon::{canonicalize_target, CanonOptions};

/// Decode the corpus notation: `\xHH` is the byte 0xHH, everything else is literal.
fn unescape(field: &str) -> Result<Vec<u8>, String> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = field
                .get(i + 2..i + 4)
                .filter(|_| b.get(i + 1) == Some(&b'x'))
                .ok_or_else(|| format!("bad escape at byte {i}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// What the upstream receives for `raw`, or `reject`.
fn outcome(raw: &[u8]) -> String {
    let Ok(uri) = Uri::try_from(raw) else {
        return "reject".to_owned();
    };
    let host = HeaderValue::from_static("example.com");
    match canonicalize_target(
        &Method::GET,
        &uri,
        Some(&host),
        false,
        CanonOptions::default(),
    ) {
        Err(_) => "reject".to_owned(),
        Ok(t) => match t.query {
            Some(q) => format!("{}?{q}", t.path.forward_path()),
            None => t.path.forward_path().to_owned(),
        },
    }
}

#[test]
fn bypass_corpus() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bypass_corpus.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let mut failures = Vec::new();
    let mut entries = 0;
    let mut sourced = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.starts_with("# source:") {
            sourced = true;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !sourced {
            failures.push(format!("line {n}: entry before any `# source:` line"));
        }
        let Some((raw, expected)) = line.split_once('\t') else {
            failures.push(format!("line {n}: no TAB separator: {line:?}"));
            continue;
        };
        if expected.contains('\t') || expected.is_empty() {
            failures.push(format!("line {n}: malformed expected field {expected:?}"));
            continue;
        }
        let raw_bytes = match unescape(raw) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("line {n}: {e}: {raw:?}"));
                continue;
            }
        };
        entries += 1;
        let got = outcome(&raw_bytes);
        if got != expected {
            failures.push(format!(
                "line {n}: {raw:?}: expected {expected:?}, got {got:?}"
            ));
            continue;
        }
        // An accepted target's result is itself canonical: sent again, it is forwarded unchanged.
        if expected != "reject" {
            let again = outcome(expected.as_bytes());
            if again != expected {
                failures.push(format!(
                    "line {n}: {expected:?} is not a fixed point: {again:?}"
                ));
            }
        }
    }
    assert!(entries >= 80, "corpus has only {entries} entries");
    assert!(
        failures.is_empty(),
        "{} of {entries} corpus entries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
