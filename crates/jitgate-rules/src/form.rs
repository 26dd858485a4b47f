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
//! the rest nests), and as multipart whatever its boundary (every part header that names the
//! field, wherever it stands in the body). Every override any reading finds counts (an
//! ambiguous request can only fall into a stricter route), and a body that looks like a JSON
//! object and mentions `_method` but cannot be parsed is refused.

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
/// duplicates), read every way a framework could read it, whatever its `Content-Type` says;
/// empty when it has none. A body that looks like a JSON object and mentions `method` but
/// cannot be parsed is an error (400). Linear in the body's size.
pub fn body_method_overrides(body: &[u8]) -> Result<Vec<Method>, CanonError> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(body);
    // As a URL-encoded form.
    form_method_overrides(&text, &mut out, false)?;
    // As JSON: top-level members only (that is what `$request->get('_method')` sees). Some
    // parsers skip a byte-order mark.
    let json_text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if json_text.trim_start().starts_with('{') {
        let mut values = Vec::new();
        let parsed = json::members(json_text, |m| {
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
            if let Some(v) = json_text.get(span).and_then(json::decode_string) {
                lenient(&mut out, v.as_bytes());
            }
        }
    }
    // As multipart, whatever the boundary: PHP skips to any `--B` line under a boundary it
    // picks its own way and reads on past the closing one, Rack picks another; so every part
    // header naming the field counts, wherever it stands (linear in the body's size).
    for value in multipart_method_values(body) {
        lenient(&mut out, value);
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

/// The values of every multipart part whose headers name it as a method field, however the
/// boundary is chosen: each `Content-Disposition` (or `Content-ID`, which Rack uses as the
/// name when the disposition is long) header line, with its folded continuation lines, whose
/// `name` parameters (every one: PHP and Rack keep the last, others the first; quoted values
/// unescaped as Rack does; `name*=` decoded) include a method field; the value runs from the
/// empty line after the part's headers to the next line that starts with `--`.
fn multipart_method_values(body: &[u8]) -> Vec<&[u8]> {
    let lines = line_spans(body);
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &body[lines[i].clone()];
        let lower_starts =
            |p: &[u8]| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p);
        if !(lower_starts(b"content-disposition:") || lower_starts(b"content-id:")) {
            i += 1;
            continue;
        }
        // The header with its folded continuation lines.
        let mut header: Vec<u8> = line.to_vec();
        let mut j = i + 1;
        while j < lines.len() && matches!(body[lines[j].clone()].first(), Some(b' ' | b'\t')) {
            header.push(b' ');
            header.extend_from_slice(&body[lines[j].clone()]);
            j += 1;
        }
        if part_names(&header).iter().any(|n| is_method_param(n)) {
            // The rest of the part's headers, then its value.
            while j < lines.len() && !body[lines[j].clone()].is_empty() {
                j += 1;
            }
            let start = lines.get(j + 1).map_or(body.len(), |r| r.start);
            let mut k = j + 1;
            while k < lines.len() && !body[lines[k].clone()].starts_with(b"--") {
                k += 1;
            }
            let end = lines.get(k).map_or(body.len(), |r| r.start).max(start);
            out.push(trim_crlf(body.get(start..end).unwrap_or(&[])));
        }
        i = j.max(i + 1);
    }
    out
}

/// The byte ranges of the body's lines, without their `\n` or `\r\n`.
fn line_spans(body: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in body.iter().enumerate() {
        if *c == b'\n' {
            let end = if i > start && body[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            out.push(start..end);
            start = i + 1;
        }
    }
    if start < body.len() {
        out.push(start..body.len());
    }
    out
}

/// Every name a part header can give: each `name` / `name*` parameter of a disposition
/// (quoted values unescaped, `name*=charset''value` percent-decoded), and a `Content-ID`
/// value without its angle brackets.
fn part_names(header: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(header);
    let Some((field, rest)) = text.split_once(':') else {
        return Vec::new();
    };
    if field.trim().eq_ignore_ascii_case("content-id") {
        let v = rest.trim();
        let v = v
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(v);
        return vec![v.to_string()];
    }
    let mut names = Vec::new();
    for param in split_params(rest) {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        let v = v.trim();
        if key == "name" {
            names.push(unquote(v));
        } else if key == "name*" {
            let raw = v.rsplit_once('\'').map_or(v, |(_, x)| x);
            let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            names.push(decoded.into_owned());
        }
    }
    names
}

/// Parameters split at `;` outside double quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A parameter value without its quotes, backslash escapes undone.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"') else {
        return v.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => break,
            c => out.push(c),
        }
    }
    out
}
