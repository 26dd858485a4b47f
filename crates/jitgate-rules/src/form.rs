//! `_method` in request bodies (SPEC section 5, method overrides): Rails (`Rack::MethodOverride`),
//! Laravel and Symfony take a POST's method from a `_method` field of its body. The gateway
//! reads such a body only when an override could change which route matches
//! ([`crate::RuleTable::may_override_method`]), and the overrides found become extra method
//! readings of the [`crate::Canonical`] request.
//!
//! Frameworks disagree on which bodies are forms: Rack parses a POST without a `Content-Type`
//! as one and splits the media type at `,`, PHP at `,` or a space, Laravel reads JSON whenever
//! the type contains `/json`, and PHP takes a multipart boundary from the first parameter
//! whose name merely contains `boundary`. So the body is read every way a framework could read
//! it, whatever it says it is: as a URL-encoded form, as JSON (top-level members, however deep
//! the rest nests), and as multipart under every boundary it could have. Every override any
//! reading finds counts (an ambiguous request can only fall into a stricter route), and a body
//! that mentions `_method` but cannot be read the way its type or shape says is refused.

use http::header::{HeaderMap, CONTENT_TYPE};
use http::Method;

use crate::canon::{form_method_overrides, is_method_param, push_method, CanonError};
use crate::json;

#[cfg(test)]
mod tests;

/// Whether a request's body can carry `_method`: the frameworks that honour it do so on POST.
pub fn may_carry_override(method: &Method) -> bool {
    *method == Method::POST
}

/// The override methods a POST body carries in `_method` fields (uppercase, without
/// duplicates), read every way a framework could read it; empty when it has none. A body that
/// mentions `_method` but is JSON or multipart that cannot be parsed is an error (400).
pub fn body_method_overrides(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Method>, CanonError> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(body);
    // As a URL-encoded form.
    form_method_overrides(&text, &mut out, false)?;
    // As JSON: top-level members only (that is what `$request->get('_method')` sees).
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let mut values = Vec::new();
        let parsed = json::members(&text, |m| {
            if m.depth == 1 {
                if let Some(key) = json::decode_string(m.raw_key) {
                    if is_method_param(&key) {
                        values.push(m.value);
                    }
                }
            }
        });
        if parsed.is_err() && mentions_method(body) {
            return Err(CanonError::InvalidMethodOverride);
        }
        for span in values {
            // A non-string `_method` is not a method; frameworks refuse it or ignore it.
            if let Some(v) = text.get(span).and_then(json::decode_string) {
                lenient(&mut out, v.as_bytes());
            }
        }
    }
    // As multipart, under every boundary it could have.
    let content_type = headers
        .get_all(CONTENT_TYPE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut boundaries = boundary_candidates(&content_type);
    if let Some(first) = body.split(|c| *c == b'\n').next() {
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        if let Some(b) = first.strip_prefix(b"--") {
            if !b.is_empty() && b.len() <= 200 {
                boundaries.push(b.to_vec());
            }
        }
    }
    let mut any_parsed = false;
    for b in &boundaries {
        if let Some(fields) = multipart_fields(body, b) {
            any_parsed = true;
            for (name, value) in fields {
                if is_method_param(&String::from_utf8_lossy(name)) {
                    lenient(&mut out, trim_crlf(value));
                }
            }
        }
    }
    let multipart_expected =
        content_type.to_ascii_lowercase().contains("multipart") || body.starts_with(b"--");
    if multipart_expected && !any_parsed && mentions_method(body) {
        return Err(CanonError::InvalidMethodOverride);
    }
    Ok(out)
}

/// Appends an override, skipping a value that is not a method token (it overrides nothing).
fn lenient(out: &mut Vec<Method>, item: &[u8]) {
    let _ = push_method(out, item);
}

fn trim_crlf(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\r\n").unwrap_or(v);
    v.strip_suffix(b"\n").unwrap_or(v)
}

/// Whether the body has `method` anywhere (any case): every spelling of the field has it.
fn mentions_method(body: &[u8]) -> bool {
    body.windows(6).any(|w| w.eq_ignore_ascii_case(b"method"))
}

/// Every value a framework could take as the boundary: each parameter whose name contains
/// `boundary` (PHP looks for the substring), quotes removed.
fn boundary_candidates(content_type: &str) -> Vec<Vec<u8>> {
    content_type
        .split([';', ','])
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            if !k.to_ascii_lowercase().contains("boundary") {
                return None;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v);
            (!v.is_empty() && v.len() <= 200).then(|| v.as_bytes().to_vec())
        })
        .collect()
}

/// The (name, value) of each part of a multipart body (RFC 7578), or `None` when the body does
/// not have that shape under `boundary`.
fn multipart_fields<'b>(body: &'b [u8], boundary: &[u8]) -> Option<Vec<(&'b [u8], &'b [u8])>> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut rest = &body[find(body, &delim)? + delim.len()..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))?;
        let end = find(rest, &delim)?;
        let part = &rest[..end];
        rest = &rest[end + delim.len()..];
        let (head, value) = split_head(part)?;
        let name = head
            .split(|c| *c == b'\n')
            .find_map(|line| disposition_name(line.strip_suffix(b"\r").unwrap_or(line)))?;
        out.push((name, trim_crlf(value)));
    }
}

fn split_head(part: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = find(part, b"\r\n\r\n") {
        return Some((&part[..i], &part[i + 4..]));
    }
    find(part, b"\n\n").map(|i| (&part[..i], &part[i + 2..]))
}

/// The `name` of a `Content-Disposition: form-data; name="..."` line.
fn disposition_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|c| *c == b':')?;
    if !line[..colon]
        .trim_ascii()
        .eq_ignore_ascii_case(b"content-disposition")
    {
        return None;
    }
    line[colon + 1..]
        .split(|c| *c == b';')
        .skip(1)
        .find_map(|p| {
            let eq = p.iter().position(|c| *c == b'=')?;
            if !p[..eq].trim_ascii().eq_ignore_ascii_case(b"name") {
                return None;
            }
            let v = p[eq + 1..].trim_ascii();
            Some(
                v.strip_prefix(b"\"")
                    .and_then(|x| x.strip_suffix(b"\""))
                    .unwrap_or(v),
            )
        })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
