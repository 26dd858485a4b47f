//! `_method` in request bodies (SPEC section 5, method overrides): Rails (`Rack::MethodOverride`),
//! Laravel and Symfony take a POST's method from a `_method` field of its form body, and
//! Laravel also from a JSON body's top-level `_method`. The gateway reads such a body only when
//! an override could change which route matches ([`crate::RuleTable::may_override_method`]),
//! and the overrides found become extra method readings of the [`crate::Canonical`] request.
//!
//! Parsing is deliberately lenient in what counts: every field whose name reads as `_method`
//! the way [`crate::canon::method_overrides`] reads query parameters; a multipart body that
//! cannot be split but mentions `_method` is refused as ambiguous.

use http::header::{HeaderMap, CONTENT_TYPE};
use http::Method;

use crate::canon::{form_method_overrides, is_method_param, push_method, CanonError};

#[cfg(test)]
mod tests;

/// The body kinds that can carry `_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    /// `application/x-www-form-urlencoded`
    UrlEncoded,
    /// `multipart/form-data`
    Multipart,
    /// `application/json` and `+json` types
    Json,
}

/// Which body kind the request's `Content-Type` announces, if it can carry `_method` (only
/// POST bodies are read by the frameworks that honour it).
pub fn form_kind(method: &Method, headers: &HeaderMap) -> Option<FormKind> {
    if *method != Method::POST {
        return None;
    }
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media = ct.split(';').next()?.trim().to_ascii_lowercase();
    match media.as_str() {
        "application/x-www-form-urlencoded" => Some(FormKind::UrlEncoded),
        "multipart/form-data" => Some(FormKind::Multipart),
        m if m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")) => {
            Some(FormKind::Json)
        }
        _ => None,
    }
}

/// The override methods a POST body carries in `_method` fields (uppercase, without
/// duplicates); empty when it has none. An invalid method token, or a multipart body that
/// mentions `_method` but cannot be parsed, is an error (400).
pub fn body_method_overrides(
    kind: FormKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Method>, CanonError> {
    let mut out = Vec::new();
    match kind {
        FormKind::UrlEncoded => {
            form_method_overrides(&String::from_utf8_lossy(body), &mut out)?;
        }
        FormKind::Json => {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
                for (k, v) in &map {
                    if k == "_method" {
                        match v {
                            serde_json::Value::String(s) => push_method(&mut out, s.as_bytes())?,
                            _ => return Err(CanonError::InvalidMethodOverride),
                        }
                    }
                }
            }
        }
        FormKind::Multipart => {
            let boundary = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(boundary);
            let parsed = boundary.and_then(|b| multipart_fields(body, b.as_bytes()));
            match parsed {
                Some(fields) => {
                    for (name, value) in fields {
                        if is_method_param(&String::from_utf8_lossy(name)) {
                            push_method(&mut out, trim_crlf(value))?;
                        }
                    }
                }
                None if mentions_method(body) => return Err(CanonError::InvalidMethodOverride),
                None => {}
            }
        }
    }
    Ok(out)
}

fn trim_crlf(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\r\n").unwrap_or(v);
    v.strip_suffix(b"\n").unwrap_or(v)
}

fn mentions_method(body: &[u8]) -> bool {
    body.windows(6).any(|w| w.eq_ignore_ascii_case(b"method"))
}

/// The `boundary` parameter of a multipart `Content-Type` (quotes removed).
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty() && v.len() <= 70).then(|| v.to_string())
    })
}

/// The (name, value) of each part of a multipart/form-data body (RFC 7578), or `None` when the
/// body does not have that shape.
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
